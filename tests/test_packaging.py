"""The project's own files agree with each other, and the core stays free of UI libraries."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI = ("plotly", "ipywidgets", "anywidget", "IPython", "jupyterlab")
# modules allowed to import UI libraries
UI_OK = ("pwlab/viz/", "pwlab/widgets/", "pwlab/cli.py", "pwlab/commands/", "pwlab/bench/")
CONDA_NAMES = {"torch": "pytorch"}        # conda spells a few packages differently


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_the_same_packages_as_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in meta["dependencies"] + meta["optional-dependencies"]["dev"]}
    conda = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:"):].splitlines():
        m = re.match(r"\s*-\s+([A-Za-z0-9_.\-]+)", line)
        if m and not line.strip().startswith("- pip:"):
            conda.add(m.group(1).lower())
    conda -= {"python", "cpuonly", "pip"}
    expected = {CONDA_NAMES.get(n, n) for n in pip_names}
    assert conda == expected, f"only in environment.yml: {conda - expected}; only in pyproject: {expected - conda}"


def test_importing_the_core_does_not_import_ui_libraries():
    code = ("import sys, pwlab, pwlab.moe, pwlab.routing, pwlab.losses, pwlab.dispatch, pwlab.soft_moe; "
            f"bad = [m for m in {UI!r} if m in sys.modules]; print(bad); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_only_viz_and_widgets_import_plotly_or_ipywidgets():
    offenders = []
    for path in sorted((ROOT / "pwlab").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(UI_OK):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{rel}: {n}" for n in names if n.split(".")[0] in UI]
    assert not offenders, offenders


def test_ci_script_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)
    assert "make lab" in readme


def test_console_script_and_bench_listing():
    from pwlab.cli import bench_names, main
    assert "moe" in bench_names()
    assert main(["bench", "--list"]) == 0
    assert main(["nope"]) == 2


# -- the import graph -------------------------------------------------------------------------------
#
# Layers, lowest first; a module may import its own layer and the layers below it, never above:
#     core  ←  UI  ←  tooling
# Tooling is what runs the core for people (benchmarks, the claims' experiments, notebook
# exercise checks, the command line); UI draws and drives it; the core is everything else,
# including the table of contents ``pwlab/__init__.py``.
TOOLING = ("pwlab.bench", "pwlab.experiments", "pwlab.commands", "pwlab.cli", "pwlab.exercises*")
UI_LAYER = ("pwlab.viz", "pwlab.widgets")
LAYERS = ("core", "UI", "tooling")


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    """Is ``module`` one of ``prefixes`` or inside one (``name*``: any module whose name starts so)?"""
    return any(module.startswith(p[:-1]) if p.endswith("*") else module == p or module.startswith(p + ".")
               for p in prefixes)


def layer(module: str) -> str:
    return "tooling" if _in(module, TOOLING) else "UI" if _in(module, UI_LAYER) else "core"


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name → file of every module of ``package`` under ``root`` (a package is its ``__init__``)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path = ROOT, package: str = "pwlab") -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` of the imports between ``package``'s own modules.

    Every ``import`` statement counts, at any depth (module top, function-local, under ``if``).
    Relative imports are resolved. ``from a.b import c`` is an edge to ``a.b.c`` when that is a
    module, else to ``a.b`` (``c`` is a name defined there); a name that is no module (a
    dotted path past a module) resolves to the longest module prefix. Importing a submodule runs
    its parent packages' ``__init__`` first, but that is Python's doing, not the importer's: it
    is not an edge. Imports by string (``importlib.import_module``) are not seen.
    """
    mods = _modules(root, package)
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].setdefault(t, node.lineno)
    return graph


def find_cycle(graph: dict[str, dict[str, int] | set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}                          # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def area_graph(graph: dict[str, dict[str, int]], package: str = "pwlab") -> dict[str, set[str]]:
    """The graph between areas: a top-level module or subpackage (``pwlab.swat``, ``pwlab.bench``)
    with all its submodules. The package's own ``__init__`` (the table of contents) is left out."""
    area = lambda m: ".".join(m.split(".")[:2])
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        if a == package:
            continue
        out.setdefault(area(a), set())
        out[area(a)] |= {area(b) for b in targets if b != package and area(b) != area(a)}
    return out


def test_the_import_graph_sees_top_level_local_and_package_imports():
    """The graph builder is checked before it is trusted: known edges of pwlab, and a made-up package."""
    g = import_graph()
    assert "pwlab.routing.base" in g["pwlab.moe"]            # from pwlab.routing.base import Router
    assert "pwlab.fused" in g["pwlab.moe"]                   # from pwlab import fused: the submodule
    assert "pwlab.checkpoint" in g["pwlab.train"]            # imported inside a method
    assert layer("pwlab.exercises_systems") == layer("pwlab.bench.moe") == "tooling"
    assert layer("pwlab.viz._common") == "UI" and layer("pwlab.moe") == layer("pwlab") == "core"
    assert layer("pwlab.benchmarks") == "core"               # a prefix of a name is not its package


def test_import_graph_rules_catch_a_cycle_and_a_layer_breach(tmp_path):
    pkg = tmp_path / "pwlab"
    for rel, text in {"__init__.py": "from pwlab import a\n",
                      "a.py": "def f():\n    from .sub import b\n",               # relative and local
                      "sub/__init__.py": "",
                      "sub/b.py": "import pwlab.a\nfrom pwlab.bench import x\n",  # b -> a: a cycle
                      "bench/__init__.py": "",
                      "bench/x.py": "from pwlab.sub.b import name\n"}.items():  # sub ⇄ bench
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    g = import_graph(tmp_path)
    assert g["pwlab.a"] == {"pwlab.sub.b": 2} and g["pwlab.sub.b"] == {"pwlab.a": 1, "pwlab.bench.x": 2}
    assert find_cycle(g) in (["pwlab.a", "pwlab.sub.b", "pwlab.a"], ["pwlab.sub.b", "pwlab.a", "pwlab.sub.b"])
    assert find_cycle(area_graph(g)) is not None
    assert _layer_breaches(g) == ["pwlab.sub.b (core) imports pwlab.bench.x (tooling), line 2"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def _layer_breaches(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{a} ({layer(a)}) imports {b} ({layer(b)}), line {line}"
            for a, targets in sorted(graph.items()) for b, line in sorted(targets.items())
            if LAYERS.index(layer(a)) < LAYERS.index(layer(b))]


def test_no_import_cycle_between_pwlab_modules():
    """No module imports one that (through others) imports it back, at any depth of the code.

    The rule for packages: an edge to a package is an edge to its ``__init__``. A package whose
    ``__init__`` imports its submodules (``pwlab.swat`` → ``pwlab.swat.layers``) is no cycle by
    that alone; it becomes one when a submodule imports that ``__init__`` back (``from
    pwlab.swat import X`` inside ``pwlab/swat/layers.py``), which works only by the order of the
    ``__init__``'s lines. Submodules import each other directly instead.
    """
    g = import_graph()
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {g[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_no_import_cycle_between_areas():
    """Between top-level modules and subpackages (``pwlab.bench`` with all its modules, ...) the
    graph has no cycle either, so each area can be read, tested and moved from the bottom up."""
    cycle = find_cycle(area_graph(import_graph()))
    assert cycle is None, "import cycle between areas: " + " -> ".join(cycle)


def test_core_never_imports_ui_or_tooling_and_ui_never_imports_tooling():
    breaches = _layer_breaches(import_graph())
    assert not breaches, "\n".join(breaches)


# modules that may import inside functions, and why; everywhere else imports sit at the top
LOCAL_IMPORTS_OK = {
    "pwlab.tasks.image": "sklearn.datasets costs about half of torch's import time; paid when a task needs it",
    "pwlab.tasks.tabular": "the same scikit-learn loaders",
    "pwlab.cli": "start-up time of the `pwlab` command: a sub-command's imports are paid when it runs",
    "pwlab.commands": "the same, and the Jupyter server packages only for `pwlab lab` / `pwlab serve`",
    # imports still to move to the top
    "pwlab.config": "",
}


def test_imports_sit_at_module_top_outside_the_listed_modules():
    offenders = []
    for path in sorted((ROOT / "pwlab").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if _in(mod, tuple(LOCAL_IMPORTS_OK)):
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                offenders += [f"{mod}:{n.lineno} {ast.unparse(n)}" for n in ast.walk(fn)
                              if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not offenders, "function-local imports (move them to the top, or list the module with a reason):\n" + \
        "\n".join(offenders)
