"""docs/tutorial.ipynb: committed without outputs, and executed here with nbclient (the python3
kernel of this environment, in a temporary working folder) so that it cannot rot."""

import json
import os
import sys
import time
from pathlib import Path

import h5py
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
CELL_TIMEOUT = 600  # seconds per cell; the whole notebook takes a few minutes on 2 cores


def test_the_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 8
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} has outputs"
        assert cell.execution_count is None, f"code cell {i} has an execution count"
    assert nb.metadata.kernelspec.name == "python3"
    assert all("attachments" not in c for c in nb.cells)


def _repo_files(skip: Path) -> set[str]:
    """Every file of the checkout outside .git, the compiled caches (numba writes its cache
    beside the modules it compiles) and ``skip`` (the test's own folder, wherever pytest puts
    it)."""
    out = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".pytest_cache",
                                                ".ruff_cache")
                   and Path(folder, d) != skip]
        out.update(os.path.join(folder, f) for f in files)
    return out


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    work = tmp_path_factory.mktemp("tutorial")
    before = _repo_files(work)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the python3 kernel of this environment (the one the ipykernel wheel installs under
    # sys.prefix, else ipykernel's own), never a user-level kernelspec of another Python
    specs = KernelSpecManager(kernel_dirs=[os.path.join(sys.prefix, "share", "jupyter",
                                                        "kernels")])
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(work)}})
    # the kernel and the commands it starts import pionml from this checkout; the models are
    # tiny, and torch's threads fighting other work for the cores would cost more than they save
    # (on a loaded 2-core machine 7x the CPU time of one thread), so one thread unless asked
    env = {**os.environ, "PIONML_TUTORIAL_DIR": str(work / "work"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    try:
        client.execute(env=env, cleanup_kc=True)  # cleanup_kc: shut the kernel down after
    finally:  # the executed copy, outputs and all, to look at when a cell failed
        nbformat.write(nb, work / "tutorial_executed.ipynb")
    return nb, work, before, time.perf_counter() - start


def test_the_tutorial_runs_and_gives_its_results(executed, capsys):
    nb, top, _, seconds = executed
    work = top / "work"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    first = _text(code[0])
    assert first.strip() == f"working folder: {work}"

    last = _text(code[-1]).strip().splitlines()[-1]
    assert last.startswith("tutorial summary: ")
    s = json.loads(last[len("tutorial summary: "):])
    with capsys.disabled():  # in the suite's output, not asserted
        print(f"\ndocs/tutorial.ipynb: {seconds:.0f} s of wall time, {s['cpu_seconds']:.0f} s of "
              f"CPU (executed copy: {top / 'tutorial_executed.ipynb'})")

    # the dataset it made, read back here
    with h5py.File(work / "tiny.h5", "r") as f:
        assert s["clusters"] == len(f["clusters"]["label"]) > 500
    # the classifier learned (P_EM, the LCW baseline, reaches about 0.95 on this sample), and the
    # numbers from Python are those `pionml evaluate` wrote
    assert s["classifier_auc"] > 0.85
    assert s["classifier_auc"] == pytest.approx(s["classifier_auc_evaluate"], abs=1e-9)
    assert s["rejection_at_eff90"] > 2
    assert 0.7 < s["pi0_median_response"] < 1.3
    combined = json.loads((work / "combined" / "metrics.json").read_text())
    assert s["combine_clusters"] == combined["n_clusters"] > 0
    assert 0 < s["combine_threshold"] < 1
    # every cluster built from the new ROOT file was predicted
    with h5py.File(work / "more.h5", "r") as f:
        assert s["more_root_clusters"] == len(f["clusters"]["label"]) > 0
    for png in ("my_plot.png", "models/dnn/eval/plots/rejection_vs_efficiency.png",
                "combined/plots/median_response.png"):
        assert (work / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert s["my_plot"] == str(work / "my_plot.png")
    # the figures are in the notebook: the training curve, the rejection plot, the curve drawn by
    # hand, the combined response and the last figure
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 5


def test_the_tutorial_writes_nothing_into_the_repository(executed):
    _, top, before, _ = executed
    assert (top / "work" / "tiny.h5").is_file()  # it wrote into its working folder, and only there
    assert _repo_files(top) == before
