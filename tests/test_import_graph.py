"""The import graph between pionml's packages (benchmarks/import_graph.py): the tool finds a
known cycle, the evaluation packages are in none, the pure metrics import nothing heavy."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVALUATION = {"metrics", "figures", "evaluate", "pipelines", "reference"}
#: Cycles between packages that are still to be broken (a subset of one is allowed; a new cycle
#: or a larger one fails). None is left: the JSON and atomic-write helpers live in
#: pionml.io.atomic, below outputs and runs; cap_jobs lives with the process pool.
KNOWN_CYCLES: tuple = ()


@pytest.fixture(scope="module")
def tool():
    path = ROOT / "benchmarks" / "import_graph.py"
    spec = importlib.util.spec_from_file_location("import_graph", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graph(tool):
    return tool.package_graph(ROOT / "pionml")[0]


def test_the_tool_finds_a_known_cycle(tool, tmp_path):
    pkg = tmp_path / "toy"
    for path, text in {"__init__.py": "VERSION = 1\n", "a/__init__.py": "", "b/__init__.py": "",
                       "a/x.py": "from toy.b import y\n",
                       "b/y.py": "def f():\n    from ..a import x\n",  # lazy and relative
                       "c.py": "import toy.a.x\nfrom toy import VERSION\n",  # a name, no module
                       "b/cli.py": "from toy.c import *\n"}.items():
        (pkg / path).parent.mkdir(parents=True, exist_ok=True)
        (pkg / path).write_text(text)
    g, witness = tool.package_graph(pkg)
    assert g == {"a": ["b"], "b": ["a"], "c": ["a"], "cli": ["c"], "toy": []}
    assert tool.cycles(g) == [["a", "b"]]
    assert witness[("b", "a")].endswith("y.py:2")
    strict = tool.package_graph(pkg, strict=True)[0]  # the command module counted in b
    assert tool.cycles(strict) == [["a", "b", "c"]]


def test_the_evaluation_packages_are_in_no_cycle(tool, graph):
    for comp in tool.cycles(graph):
        assert not EVALUATION & set(comp), f"cycle through {comp}"
        assert any(set(comp) <= known for known in KNOWN_CYCLES), f"new cycle {comp}"


def test_the_layers_of_the_evaluation(graph):
    assert set(graph["metrics"]) <= {"errors", "progress"}  # pure numbers
    assert set(graph["figures"]) <= {"metrics", "geometry", "io", "errors"}
    assert "evaluate" not in graph["reference"] and "pipelines" not in graph["reference"]
    for package in ("tasks", "train", "reco", "studies", "runs", "data", "models"):
        assert not {"evaluate", "pipelines", "reference"} & set(graph[package]), package


def test_no_library_module_imports_a_command_module(tool):
    for module, imports in tool.module_imports(ROOT / "pionml").items():
        if module.split(".")[-1] == "cli":
            continue
        commands = [f"{t} ({path}:{line})" for t, path, line in imports
                    if t.split(".")[-1] == "cli"]
        assert not commands, f"{module} imports {commands}"


def test_metrics_and_figures_import_neither_torch_nor_matplotlib():
    code = ("import sys, pionml.metrics.classification, pionml.metrics.resolution, "
            "pionml.metrics.calibration, pionml.metrics.routing, pionml.metrics.images, "
            "pionml.figures.classification, pionml.figures.regression, "
            "pionml.figures.calibration, pionml.figures.combine; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert out.stdout.strip() == "[]"
