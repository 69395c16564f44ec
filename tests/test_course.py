"""``pwlab course``: student versions, storing executed notebooks, convention checks."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from pwlab.commands import course
from pwlab.commands import notebook_checks as checks
from pwlab.commands import notebooks as nbt

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STUB = 'raise NotImplementedError("your turn")'

SETUP = "x = 2\nprint(x)\ndef check_square(f):\n    assert f(3) == 9"
EXERCISE = '''def square(x):
    """The square of x."""
    ### BEGIN SOLUTION
    y = x * x
    return y
    ### END SOLUTION


check_square(square)'''


def _notebook() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.cells = [new_markdown_cell("# 99 · Test\n\n**Claim.** squares are squares."),
                new_code_cell(SETUP, outputs=[new_output("stream", name="stdout", text="2\n")],
                              execution_count=1),
                new_code_cell(EXERCISE, execution_count=2),
                new_code_cell("# CLAIM\nassert x * x == 4\nprint('after')", execution_count=3)]
    return nb


# -- strip_solutions -------------------------------------------------------------------------
def test_strip_keeps_indentation_and_surroundings():
    out = nbt.strip_solutions(EXERCISE)
    assert out.split("\n") == ['def square(x):', '    """The square of x."""', "    " + STUB, "", "",
                               "check_square(square)"]


def test_strip_top_level_block_and_several_blocks():
    src = "a = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION\nc = 3\n  ### BEGIN SOLUTION\n  d\n  ### END SOLUTION"
    assert nbt.strip_solutions(src) == f"a = 1\n{STUB}\nc = 3\n  {STUB}"


def test_strip_without_markers_is_identity():
    src = "x = 1\n# a comment\n"
    assert nbt.strip_solutions(src) == src


@pytest.mark.parametrize("src", ["### BEGIN SOLUTION\nx", "x\n### END SOLUTION",
                                 "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION"])
def test_strip_rejects_unbalanced(src):
    with pytest.raises(ValueError, match="SOLUTION"):
        nbt.strip_solutions(src)


# -- student versions ------------------------------------------------------------------------
def test_student_version_replaces_solutions_and_clears_outputs():
    nb = _notebook()
    st = nbt.student_version(nb)
    assert "widgets" not in st.metadata
    code = [c for c in st.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert STUB in code[1].source and "x * x\n" not in code[1].source and "BEGIN SOLUTION" not in code[1].source
    assert code[0].source == SETUP                               # other cells untouched
    # the teacher's notebook is unchanged
    assert "y = x * x" in nb.cells[2].source and nb.cells[1].outputs and "widgets" in nb.metadata


def test_markdown_solutions_are_hidden():
    nb = new_notebook(cells=[new_markdown_cell("Why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->")])
    assert nbt.student_version(nb).cells[0].source == "Why?\n*(your answer here)*"


def test_cli_student_writes_every_notebook(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        nbformat.write(_notebook(), str(src / name))
    assert course.main(["student", str(src), str(out)]) == 0
    written = sorted(p.name for p in out.glob("*.ipynb"))
    assert written == ["01_a.ipynb", "02_b.ipynb"]
    st = nbformat.read(str(out / "01_a.ipynb"), as_version=4)
    assert STUB in st.cells[2].source and not st.cells[1].outputs


def test_cli_student_rejects_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="src"):
        course.main(["student", str(tmp_path), str(tmp_path / "out")])


# -- storing ---------------------------------------------------------------------------------
def test_clean_outputs_drops_plotly_html_and_widget_views():
    nb = new_notebook(cells=[new_code_cell("fig", outputs=[
        new_output("display_data", data={nbt.PLOTLY_MIME: {"data": []}, "text/html": "<script>plotly.js</script>"}),
        new_output("display_data", data={nbt.WIDGET_MIME: {"model_id": "abc"}, "text/plain": "VBox()"}),
        new_output("display_data", data={nbt.WIDGET_MIME: {"model_id": "def"}})])])
    nb.metadata["widgets"] = {}
    nbt.clean_outputs(nb)
    outs = nb.cells[0].outputs
    assert list(outs[0].data) == [nbt.PLOTLY_MIME]
    assert dict(outs[1].data) == dict(outs[2].data) == {"text/plain": nbt.WIDGET_PLACEHOLDER}
    assert "widgets" not in nb.metadata


def test_problems_lists_breaches():
    nb = _notebook()
    nb.cells[3].source = "assert True"              # no '# CLAIM' cell any more
    nb.cells[1].outputs.append(new_output("error", ename="ValueError", evalue="x", traceback=[]))
    found = "\n".join(checks.problems(nb, size_bytes=3_000_000))
    for words in ("widget state", "MB", "asserts the claim", "stored error ValueError"):
        assert words in found
    assert checks.problems(nbt.clean_outputs(_notebook()), size_bytes=1000) == []


def test_new_skeleton_follows_the_conventions(tmp_path):
    path = tmp_path / "07_some_topic.ipynb"
    assert course.main(["new", str(path)]) == 0
    nb = nbformat.read(str(path), as_version=4)
    assert nb.cells[0].source.startswith("# 07 · Some topic")
    # only "not run" remains once executed: every other convention holds from the start
    assert {p.split(": ", 1)[1] for p in checks.problems(nb)} == {"code cell not run"}
    assert course.main(["new", str(path)]) == 2                  # never overwrites (a usage error)
    with pytest.raises(ValueError, match="path"):
        nbt.skeleton(tmp_path / "topic.ipynb")


@pytest.mark.slow
def test_execute_and_store_runs_and_stores_plotly_json(tmp_path):
    nb = _notebook()
    nb.cells.append(new_code_cell("import os, plotly.graph_objects as go\nprint(os.environ['TQDM_DISABLE'])\n"
                                  "go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))"))
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, str(path))
    report = nbt.execute_and_store(path)
    stored = nbformat.read(str(path), as_version=4)
    assert report.errors == [] and report.seconds > 0 and report.size_bytes == path.stat().st_size
    assert [c.execution_count for c in stored.cells if c.cell_type == "code"] == [1, 2, 3, 4]
    last = stored.cells[-1].outputs
    assert last[0].text == "1\n"
    assert list(last[1].data) == [nbt.PLOTLY_MIME] or set(last[1].data) == {nbt.PLOTLY_MIME, "text/plain"}
    assert "widgets" not in stored.metadata and checks.problems(stored, path.stat().st_size) == []


@pytest.mark.slow
def test_skeleton_runs_and_its_student_version_fails_only_at_the_exercise(tmp_path):
    nb = nbt.skeleton(tmp_path / "07_x.ipynb")
    _, _, _, _, errors = nbt.execute(nb, cwd=tmp_path)
    assert errors == [] and checks.problems(nb) == []
    exercise = [i for i, c in enumerate(nb.cells) if nbt.is_exercise(c)]
    _, _, _, _, errors = nbt.execute(nbt.student_version(nb), cwd=tmp_path, allow_errors=True)
    assert [(i, e) for i, e, _ in errors] == [(exercise[0], "NotImplementedError")]


@pytest.mark.slow
def test_student_notebook_fails_only_at_exercise_cells(tmp_path):
    st = nbt.student_version(_notebook())
    nb, _, _, _, errors = nbt.execute(st, cwd=tmp_path, allow_errors=True)
    assert [(i, e) for i, e, _ in errors] == [(2, "NotImplementedError")]
    after = "".join(o.text for o in nb.cells[3].outputs if o.output_type == "stream")
    assert after == "after\n"                                 # the cells after the exercise still run


# -- the real notebooks ----------------------------------------------------------------------
def test_exercise_leaks_found():
    nb = _notebook()
    nb.cells.append(new_code_cell("print(square(4))"))                 # reads the exercise's function
    nb.cells.append(new_code_cell("def helper():\n    return y"))     # y: a local of the solution, not top level
    assert checks.exercise_leaks(nb) == ["cell 4: uses 'square', defined only in exercise cell 2"]
    nb.cells.insert(1, new_code_cell("def square(x):\n    return x ** 2"))   # defined elsewhere too: fine
    assert checks.exercise_leaks(nb) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_real_student_notebook_uses_nothing_from_exercises(path):
    """The student version fails only at exercise cells: exercise cells raise NotImplementedError (the stub,
    called by their check) and no later cell reads what an exercise cell defines. Executing each
    student notebook would say the same at the cost of running every notebook twice in ``make test``;
    the synthetic and skeleton notebooks above are executed."""
    nb = nbt.read(path)
    assert checks.exercise_leaks(nb) == []
    for cell in nbt.student_version(nb).cells:
        if cell.cell_type == "code" and STUB in cell.source:
            assert "check_" in cell.source.split(STUB)[-1], "the stub must be reached by the cell's check_* call"
