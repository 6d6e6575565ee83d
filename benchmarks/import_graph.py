"""The import graph between pionml's packages, its cycles, and the sizes of its modules.

    python benchmarks/import_graph.py [--root pionml] [--strict] [--sizes N]

Reads every ``.py`` file under ``--root`` with :mod:`ast` (nothing is imported), collects every
``import pionml...`` / ``from pionml... import`` (at module level and inside functions: a lazy
import is a dependency all the same) and prints, per package, the packages it imports, then the
cycles (strongly connected components of more than one package) with one import that makes
each edge of them (file:line).

A node is a sub-package of pionml (``pionml/evaluate/`` -> ``evaluate``) or a top-level module
(``pionml/errors.py`` -> ``errors``). The command modules (``pionml/cli.py`` and every
``pionml/<part>/cli.py``: the thin command line that parses arguments and calls the library)
form one node, ``cli``, above the library: ``pionml train`` evaluates the run it trained, so the
train command imports evaluate while evaluate may train a reference. ``--strict`` counts each
command module in its own package instead, to show what that layering changes.

``--sizes N``: the N largest modules (lines) and the N longest functions (lines, decorators
excluded).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

CLI = "cli"


def module_name(path: Path, root: Path) -> str:
    """``pionml/evaluate/report.py`` -> ``pionml.evaluate.report`` (``__init__`` dropped)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def node_of(module: str, strict: bool = False) -> str:
    """The node of a module: its sub-package, its own name for a top-level module, ``cli`` for
    a command module unless ``strict``."""
    parts = module.split(".")
    if not strict and parts[-1] == CLI:
        return CLI
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(tree: ast.AST, module: str, is_package: bool, top: str):
    """(imported module, line) of every import of ``top`` in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == top or alias.name.startswith(top + "."):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == top or target.startswith(top + "."):
                if target == top:  # from pionml import evaluate: the names are modules
                    for alias in node.names:
                        yield f"{top}.{alias.name}", node.lineno
                else:
                    yield target, node.lineno


def module_imports(root: Path) -> dict:
    """module -> list of (imported module, file, line) for every module under ``root``."""
    root = Path(root)
    top = root.name
    out = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        out[module] = [(_existing(target, root), str(path), line) for target, line in
                       _imports(tree, module, path.name == "__init__.py", top)]
    return out


def _existing(target: str, root: Path) -> str:
    """``target`` cut to its longest prefix that is a module or package under ``root``
    (``from pionml import __version__`` imports the package ``pionml``, not a module)."""
    parts = target.split(".")
    while len(parts) > 1:
        rel = Path(*parts[1:])
        if (root / rel).is_dir() or (root / rel).with_suffix(".py").is_file():
            break
        parts.pop()
    return ".".join(parts)


def package_graph(root: Path, strict: bool = False) -> tuple[dict, dict]:
    """(graph, witnesses): node -> sorted imported nodes, and (node, node) -> the first import
    (file:line) that makes that edge."""
    graph, witness = {}, {}
    for module, imports in module_imports(root).items():
        a = node_of(module, strict)
        graph.setdefault(a, set())
        for target, path, line in imports:
            b = node_of(target, strict)
            if b == a or b == Path(root).name:
                continue
            graph[a].add(b)
            witness.setdefault((a, b), f"{path}:{line}")
    return {k: sorted(v) for k, v in sorted(graph.items())}, witness


def cycles(graph: dict) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for v in graph:
        if v not in index:
            visit(v)
    return sorted(out)


def module_sizes(root: Path) -> list[tuple[int, str]]:
    """(lines, file) of every module, largest first."""
    return sorted(((len(p.read_text().splitlines()), str(p)) for p in Path(root).rglob("*.py")),
                  reverse=True)


def function_sizes(root: Path) -> list[tuple[int, str]]:
    """(lines, file:line name) of every function and method, longest first."""
    out = []
    for path in Path(root).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "pionml"))
    ap.add_argument("--strict", action="store_true",
                    help="count each command module (<part>/cli.py) in its own package")
    ap.add_argument("--sizes", type=int, default=0, metavar="N",
                    help="also the N largest modules and N longest functions")
    ap.add_argument("--under", default=None, metavar="PACKAGE",
                    help="with --sizes: only modules under this sub-package or module prefix")
    args = ap.parse_args(argv)
    root = Path(args.root)
    graph, witness = package_graph(root, args.strict)
    width = max(map(len, graph))
    mode = "strict" if args.strict else "command modules as one cli node"
    print(f"import graph of {root} ({mode})")
    for node, deps in graph.items():
        print(f"  {node.ljust(width)} -> {', '.join(deps) or '-'}")
    found = cycles(graph)
    if not found:
        print("no cycle")
    for comp in found:
        print(f"cycle: {' <-> '.join(comp)}")
        for a in comp:
            for b in graph[a]:
                if b in comp:
                    print(f"    {a} -> {b}: {witness[(a, b)]}")
    if args.sizes:
        under = str(root / args.under) if args.under else str(root)
        mods = [(n, p) for n, p in module_sizes(root) if p.startswith(under)]
        print(f"\n{len(mods)} modules, {sum(n for n, _ in mods)} lines; the largest:")
        for n, p in mods[: args.sizes]:
            print(f"  {n:5d}  {p}")
        print("the longest functions:")
        funcs = [(n, f) for n, f in function_sizes(root) if f.startswith(under)]
        for n, f in funcs[: args.sizes]:
            print(f"  {n:5d}  {f}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
