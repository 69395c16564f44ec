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
