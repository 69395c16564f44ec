"""Notebook tooling behind ``pwlab course``: execute and store, student versions (checks of a
stored notebook: :mod:`pwlab.commands.notebook_checks`).

Conventions every notebook in ``notebooks/`` follows (``pwlab course check`` tests the
mechanical ones):

1. Name ``NN_short_name.ipynb``; the first cell is a markdown title ``# NN · Title`` with a
   two-line summary. Imports come next, in one code cell: ``pwlab`` and ``pwlab.exercises``,
   torch, numpy, plotly (``plotly.express as px`` for ``imshow``, ``plotly.graph_objects as
   go`` otherwise: ``px.line``/``px.bar`` need pandas, which we do not depend on).
2. Seed everything: ``torch.manual_seed(0)`` in the import cell and an explicit
   ``torch.Generator().manual_seed(...)`` for every random router or sampler. Notebooks whose
   layers are small call ``torch.set_num_threads(1)`` there too: two threads synchronising
   after every small op cost 10× or more CPU time on a busy machine, for the same results.
3. A markdown cell starting with ``**Claim.**`` states the headline claim; a code cell
   starting with ``# CLAIM`` asserts it (``assert ..., "message"``), so the notebook fails the
   day the claim stops holding. If an effect does not reproduce in miniature, the notebook
   says so in prose and asserts what does hold.
4. The paper's number sits next to ours in a markdown table ("paper says / we measure").
   A number of ours quoted in the prose comes from a cell: printed by it, or an asserted range
   (``assert lo <= x <= hi``), so the prose cannot drift from the outputs; ``pwlab course
   check`` lists the prose numbers no cell prints or checks (``--strict`` fails on them).
5. Exercises (1–3 per notebook): one code cell each, holding the student's code between
   ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines (the nbgrader convention) and ending
   with a ``check_*`` call from :mod:`pwlab.exercises`. Later cells never use what an
   exercise cell defines, so a student version fails only at its exercise cells. The
   student version replaces each solution block by ``raise NotImplementedError("your turn")``.
6. Cells whose printed text is deterministic (seeded numbers, few decimals) start with
   ``# NBVAL_CHECK_OUTPUT``: ``make test`` (``pytest --nbval-lax``) compares only those.
   Numbers that come out of training are not such text: the same seed gives different last
   digits under other versions of PyTorch, NumPy or scikit-learn, or on another CPU, and
   training amplifies them (seen: a multi-task run's accuracies moving by 0.01-0.03 between
   two installs of the same requirements). Those cells are not compared; their ``# CLAIM``
   asserts carry what must hold. Timings are printed, never checked and never asserted.
7. Figures are plotly, shown as the cell's last expression; they are stored as plotly JSON
   (``application/vnd.plotly.v1+json``), never as HTML with plotly.js. Diagrams are SVG files
   in ``assets/diagrams/``, shown with ``IPython.display.SVG(filename="../assets/diagrams/…")``
   so that the stored notebook carries them.
8. Widgets end a notebook; their state is not saved (the stored output is a one-line note
   saying to run the cell).
9. Start a new notebook with ``pwlab course new notebooks/NN_name.ipynb`` (a skeleton with
   each kind of cell above, which runs). Run time ≤ 60 s on 2 CPU cores (aim for 30 s).
   Store it with outputs with ``pwlab course execute notebooks/NN_name.ipynb``: it runs it
   top to bottom in a fresh kernel (``TQDM_DISABLE=1``, ``PLOTLY_RENDERER=plotly_mimetype``),
   strips widget state, writes it back and reports the wall time, the kernel's CPU time (a
   steadier measure on a busy machine) and the slowest cells. ``pwlab course check`` then
   checks the stored file (claim cells, exercises, errors, unrun cells, size under 2 MB,
   widget state, plotly HTML, cells reading what only an exercise defines).
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
STUDENT_STUB = 'raise NotImplementedError("your turn")'
MD_BEGIN_SOLUTION = "<!-- BEGIN SOLUTION -->"
MD_END_SOLUTION = "<!-- END SOLUTION -->"
CLAIM_MARKDOWN = "**Claim.**"
CLAIM_CODE = "# CLAIM"
MAX_BYTES = 2_000_000
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_PLACEHOLDER = "(an interactive widget: run this cell in JupyterLab to use it)"
#: environment of the kernel that executes a notebook for storing
EXECUTION_ENV = {"TQDM_DISABLE": "1", "PLOTLY_RENDERER": "plotly_mimetype", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def read(path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def write(nb, path) -> None:
    import nbformat

    nbformat.write(nb, str(path))


# -- student versions ---------------------------------------------------------------------
def is_exercise(cell) -> bool:
    """Whether a code cell holds a solution block."""
    return cell.get("cell_type") == "code" and BEGIN_SOLUTION in cell.get("source", "")


def strip_solutions(source: str, begin: str = BEGIN_SOLUTION, end: str = END_SOLUTION,
                    stub: str | None = STUDENT_STUB) -> str:
    """``source`` with every ``begin … end`` block replaced by ``stub`` at the block's indentation.

    Raises ValueError on an unbalanced or nested block.
    """
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped.startswith(begin):
            if inside:
                raise ValueError(f"source has a nested {begin!r}")
            inside = True
            if stub is not None:
                out.append(line[: len(line) - len(line.lstrip())] + stub)
        elif stripped.startswith(end):
            if not inside:
                raise ValueError(f"source has {end!r} without {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"source has {begin!r} without {end!r}")
    return "\n".join(out)


def student_version(nb):
    """A copy of ``nb`` for students: solutions replaced by the stub, outputs cleared, no widget state."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        elif cell.cell_type == "markdown":
            cell.source = strip_solutions(cell.source, MD_BEGIN_SOLUTION, MD_END_SOLUTION,
                                          stub="*(your answer here)*")
    return nb


def make_student_notebooks(src: Path, out: Path) -> list[Path]:
    """Write the student version of every ``*.ipynb`` in ``src`` (or of the one file ``src``) to ``out``."""
    src, out = Path(src), Path(out)
    files = sorted(src.glob("*.ipynb")) if src.is_dir() else [src]
    if not files:
        raise ValueError(f"src must be a notebook or a folder with notebooks, found none in {src}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        target = out / f.name
        write(student_version(read(f)), target)
        written.append(target)
    return written


# -- a new notebook ------------------------------------------------------------------------
_SKELETON = [
    ("markdown", "# {number} · {title}\n\nWhat this notebook shows, in two lines, for a student."),
    ("code", "import torch\nimport plotly.graph_objects as go\nfrom IPython.display import SVG\n\n"
             "import pwlab\nfrom pwlab.exercises import check_capacity   # the check_* of your exercises\n\n"
             "_ = torch.manual_seed(0)"),
    ("markdown", "## A section\n\nProse in our own words. Show a diagram with "
                 "`SVG(filename=\"../assets/diagrams/NAME.svg\")`."),
    ("code", "# NBVAL_CHECK_OUTPUT\nprint(f\"a seeded number: {torch.rand(()).item():.3f}\")"),
    ("markdown", "## Exercise 1 · a title\n\nWhat to write, and what a right answer satisfies."),
    ("code", "# NBVAL_CHECK_OUTPUT\nimport math\n\n\ndef capacity(num_tokens, num_experts, top_k, capacity_factor, convention):\n"
             "    ### BEGIN SOLUTION\n    per_token = top_k if convention == \"k_tokens\" else 1\n"
             "    return math.ceil(capacity_factor * per_token * num_tokens / num_experts)\n    ### END SOLUTION\n\n\n"
             "check_capacity(capacity)   # replace by your exercise and its check_* in pwlab.exercises"),
    ("markdown", "**Claim.** The headline claim, stated so that a cell can check it."),
    ("code", "# CLAIM: the headline claim\nassert True, \"replace with the check of the claim\""),
    ("markdown", "## The papers and us\n\n| | the papers say | we measure here |\n|---|---|---|\n"
                 "| a result | the paper's number (see PAPERS.md) | ours, or why it does not reproduce in miniature |"),
]


def skeleton(path):
    """A new notebook following the conventions, with placeholder cells (title from the file name)."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    name = Path(path).stem
    if not name_ok(Path(path).with_suffix(".ipynb")):
        raise ValueError(f"path must be named NN_short_name.ipynb, got {Path(path).name!r}")
    number, title = name[:2], name[3:].replace("_", " ").capitalize()
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in _SKELETON:
        src = src.format(number=number, title=title) if kind == "markdown" else src
        nb.cells.append(new_markdown_cell(src) if kind == "markdown" else new_code_cell(src))
    return nb


# -- storing outputs ----------------------------------------------------------------------
def clean_outputs(nb):
    """Remove saved widget state and keep outputs small, in place; returns ``nb``.

    A plotly bundle keeps its JSON and drops any HTML (which would embed plotly.js); a widget
    view becomes a one-line text note (its state is not saved, so the view could not render).
    """
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("widgets", None)
        for output in cell.get("outputs", []):
            data = output.get("data")
            if not data:
                continue
            if PLOTLY_MIME in data:
                data.pop("text/html", None)
            if WIDGET_MIME in data:    # its repr ("VBox(children=...") tells a reader nothing
                data.pop(WIDGET_MIME)
                data["text/plain"] = WIDGET_PLACEHOLDER
    return nb


@contextlib.contextmanager
def _environment(extra: dict[str, str]):
    before = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class RunReport:
    """What executing one notebook took."""

    path: Path
    seconds: float
    cpu_seconds: float | None = None      # the kernel's CPU time (user + system): robust to a busy machine
    cell_seconds: list[tuple[int, float, str]] = field(default_factory=list)   # (index, seconds, first line)
    errors: list[tuple[int, str, str]] = field(default_factory=list)          # (index, ename, first line)
    size_bytes: int = 0

    def slowest(self, n: int = 3) -> list[tuple[int, float, str]]:
        return sorted(self.cell_seconds, key=lambda c: -c[1])[:n]

    def summary(self) -> str:
        cpu = f" (kernel CPU time {self.cpu_seconds:.1f} s)" if self.cpu_seconds is not None else ""
        lines = [f"{self.path}: {self.seconds:.1f} s{cpu}, {self.size_bytes / 1e3:.0f} kB, {len(self.errors)} error(s)"]
        for i, s, first in self.slowest():
            lines.append(f"    cell {i:>3}: {s:6.2f} s  {first[:60]}")
        for i, ename, first in self.errors:
            lines.append(f"    ERROR cell {i}: {ename}  {first[:60]}")
        return "\n".join(lines)


def execute(nb, *, cwd, timeout: int = 600, allow_errors: bool = False, env: dict[str, str] | None = None):
    """Run ``nb`` top to bottom in a fresh ``python3`` kernel started in ``cwd``.

    Returns ``(nb, seconds, cpu_seconds, cell_seconds, errors)``: wall time from kernel start to the
    last cell, the kernel's CPU time (None when it cannot be read), per-cell wall times and the
    failing cells. With ``allow_errors=False`` the first failing cell raises
    ``nbclient.exceptions.CellExecutionError``. On a machine shared with other work, wall time
    overstates the notebook's cost; CPU time does not (with 2 threads it bounds wall time on 2
    idle cores from above for mostly single-threaded work).
    """
    from nbclient import NotebookClient

    starts: dict[int, float] = {}
    cell_seconds: list[tuple[int, float, str]] = []
    errors: list[tuple[int, str, str]] = []

    def first_line(cell) -> str:
        return next((ln for ln in cell.source.split("\n") if ln.strip()), "")

    def on_start(cell, cell_index, **_):
        starts[cell_index] = time.perf_counter()

    cpu = [None]

    def on_done(cell, cell_index, execute_reply=None, **_):
        cpu[0] = _kernel_cpu_seconds(client)
        cell_seconds.append((cell_index, time.perf_counter() - starts.get(cell_index, time.perf_counter()),
                             first_line(cell)))

    def on_error(cell, cell_index, execute_reply=None, **_):
        content = (execute_reply or {}).get("content", {})
        errors.append((cell_index, content.get("ename", "error"), first_line(cell)))

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            store_widget_state=False, record_timing=False,
                            resources={"metadata": {"path": str(cwd)}},
                            on_cell_start=on_start, on_cell_executed=on_done, on_cell_error=on_error)
    t0 = time.perf_counter()
    with _environment({**EXECUTION_ENV, **(env or {})}):
        client.execute()
    return nb, time.perf_counter() - t0, cpu[0], cell_seconds, errors


def _kernel_cpu_seconds(client) -> float | None:
    try:
        import psutil

        t = psutil.Process(client.km.provisioner.process.pid).cpu_times()
        return float(t.user + t.system)
    except Exception:   # another provisioner, or psutil missing: CPU time is a nicety
        return None


def execute_and_store(path, out=None, *, timeout: int = 600, allow_errors: bool = False) -> RunReport:
    """Execute the notebook at ``path``, clean its outputs and write it to ``out`` (default: in place)."""
    path = Path(path)
    nb = read(path)
    nb, seconds, cpu_seconds, cell_seconds, errors = execute(nb, cwd=path.parent.resolve(), timeout=timeout,
                                                allow_errors=allow_errors)
    clean_outputs(nb)
    target = Path(out) if out else path
    write(nb, target)
    return RunReport(target, seconds, cpu_seconds, cell_seconds, errors, target.stat().st_size)


def convention_text() -> str:
    """The notebook conventions (this module's docstring, from the list on)."""
    doc = __doc__ or ""
    return doc[doc.index("1. "):] if "1. " in doc else doc


_NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")


def name_ok(path) -> bool:
    return bool(_NAME.match(Path(path).name))
