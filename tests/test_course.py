"""``pwlab course``: student versions, storing executed notebooks, convention checks."""
from __future__ import annotations

import ast
import base64
import os
import time
from pathlib import Path

import nbformat
import pytest
from IPython.display import Image
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from pwlab.commands import course, handout
from pwlab.commands import notebook_checks as checks
from pwlab.commands import notebooks as nbt

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STUB = 'raise NotImplementedError("your turn")'
SVG_TEXT = '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect width="40" height="20"/></svg>\n'
PNG_BYTES = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJ"
                             "RU5ErkJggg==")

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


def test_cli_student_rejects_empty_folder(tmp_path, capsys):
    assert course.main(["student", str(tmp_path), str(tmp_path / "out")]) == 2
    assert _one_line_error(capsys).startswith("pwlab course student: src ")
    assert not (tmp_path / "out").exists()


def _one_line_error(capsys) -> str:
    """stderr of the last command: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def _course_tree(tmp_path) -> Path:
    """A teacher's folder ``course/notebooks/01_a.ipynb`` beside ``course/assets/``: a diagram shown from a
    file in code and in markdown, NBVAL markers, an exercise."""
    root = tmp_path / "course"
    (root / "assets").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "assets" / "d.svg").write_text(SVG_TEXT)
    (root / "assets" / "p.png").write_bytes(PNG_BYTES)
    nb = _notebook()
    nb.cells[1].source = "# NBVAL_CHECK_OUTPUT\n" + SETUP + "\nfrom IPython.display import SVG"
    nb.cells[1].metadata["tags"] = ["nbval-ignore-output", "keep-me"]
    nb.cells.insert(2, new_code_cell('SVG(filename="../assets/d.svg")', execution_count=9, outputs=[
        new_output("display_data", data={"image/svg+xml": SVG_TEXT, "text/plain": "<SVG>"})]))
    nb.cells.insert(3, new_markdown_cell('A picture ![the dot](../assets/p.png) and <img src="../assets/d.svg">'))
    nbformat.write(nb, str(root / "notebooks" / "01_a.ipynb"))
    return root / "notebooks"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- hand-outs: self-contained ------------------------------------------------------------------
def test_handout_embeds_files_and_drops_nbval_markers(tmp_path):
    src = _course_tree(tmp_path)
    out = tmp_path / "elsewhere"
    assert course.main(["student", str(src), str(out)]) == 0
    text = (out / "01_a.ipynb").read_text()
    assert "../" not in text and "NBVAL" not in text and "nbval" not in text
    st = nbformat.read(str(out / "01_a.ipynb"), as_version=4)
    assert st.cells[1].source == SETUP + "\nfrom IPython.display import SVG"       # the marker line only
    assert st.cells[1].metadata["tags"] == ["keep-me"]
    diagram = st.cells[2]
    call = ast.parse(diagram.source).body[-1].value
    assert call.func.id == "SVG" and [k.arg for k in call.keywords] == ["data"]
    assert ast.literal_eval(call.keywords[0].value) == SVG_TEXT                # the file, byte for byte
    assert diagram.metadata["jupyter"]["source_hidden"] is True
    assert diagram.outputs[0].data["image/svg+xml"] == SVG_TEXT                # seen before it is run
    md = st.cells[3]
    assert "![the dot](attachment:p.png)" in md.source
    assert base64.b64decode(md.attachments["p.png"]["image/png"]) == PNG_BYTES
    url = md.source.split('src="')[1].split('"')[0]
    assert url.startswith("data:image/svg+xml;base64,") and base64.b64decode(url.split(",", 1)[1]).decode() == SVG_TEXT
    assert STUB in st.cells[4].source and "check_square(square)" in st.cells[4].source


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_handout_files_get_the_mode_a_plain_open_would_give(tmp_path, umask):
    """Hand-outs are written atomically (from mkstemp's 0600) but end at 0666 less the umask, so
    students sharing the instructor's folder can read them when the umask allows it."""
    import stat
    src = _course_tree(tmp_path)
    old = os.umask(umask)
    try:
        assert course.main(["student", str(src), str(tmp_path / "out")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "01_a.ipynb").stat().st_mode) == 0o666 & ~umask


def test_handout_embeds_an_image_that_ipython_reads_back(tmp_path):
    src = _course_tree(tmp_path)
    nb = new_notebook(cells=[new_code_cell('from IPython.display import Image\nImage(filename="../assets/p.png")')])
    st = handout.handout(nb, src, name="x")
    assert "../" not in st.cells[0].source
    shown = eval(st.cells[0].source.splitlines()[-1], {"Image": Image})
    assert shown.data == PNG_BYTES and shown.format == "png"


@pytest.mark.parametrize("cell, words", [
    ('SVG(filename="../assets/missing.svg")', "missing.svg"),
    ('rows = open("../assets/d.svg").read()', "d.svg"),
    ('import numpy\nx = numpy.loadtxt("../data/table.csv")', "table.csv")])
def test_handout_refuses_a_file_it_cannot_embed(tmp_path, capsys, cell, words):
    src = _course_tree(tmp_path)
    nb = nbformat.read(str(src / "01_a.ipynb"), as_version=4)
    nb.cells.append(new_code_cell(cell))
    nbformat.write(nb, str(src / "01_a.ipynb"))
    assert course.main(["student", str(src), str(tmp_path / "out")]) == 2
    err = _one_line_error(capsys)
    assert words in err and "01_a.ipynb, cell 6" in err
    assert not (tmp_path / "out").exists()


# -- hand-outs: never overwrite -------------------------------------------------------------
@pytest.mark.parametrize("how", ["same folder", "same file", "folder given twice", "link to the folder"])
def test_student_into_its_source_is_refused_and_leaves_it_byte_identical(tmp_path, capsys, how):
    src = _course_tree(tmp_path)
    nbformat.write(_notebook(), str(src / "02_b.ipynb"))
    before = _files(src.parent)
    args = {"same folder": [str(src), str(src)],
            "same file": [str(src / "02_b.ipynb"), str(src)],
            "folder given twice": [str(src), str(src / ".." / "notebooks")],
            "link to the folder": [str(src), str(tmp_path / "link")]}[how]
    (tmp_path / "link").symlink_to(src, target_is_directory=True)
    assert course.main(["student", *args]) == 2
    assert "would overwrite the source" in _one_line_error(capsys)
    assert _files(src.parent) == before


def test_student_into_a_subfolder_of_the_source_is_fine(tmp_path):
    src = _course_tree(tmp_path)
    assert course.main(["student", str(src), str(src / "student")]) == 0
    assert (src / "student" / "01_a.ipynb").exists()
    assert course.main(["student", str(src), str(src / "student")]) == 0       # the hand-outs are not sources


def test_rerun_keeps_a_students_edits_unless_force(tmp_path, capsys):
    src, out = _course_tree(tmp_path), tmp_path / "out"
    assert course.main(["student", str(src), str(out)]) == 0
    target = out / "01_a.ipynb"
    first = target.read_bytes()
    assert "wrote" in capsys.readouterr().out
    assert course.main(["student", str(src), str(out)]) == 0                     # nothing new: untouched
    assert capsys.readouterr().out.startswith("unchanged") and target.read_bytes() == first
    st = nbformat.read(str(target), as_version=4)
    st.cells[4].source = st.cells[4].source.replace(STUB, "return x * x")       # the student's answer
    nbformat.write(st, str(target))
    edited = target.read_bytes()
    assert course.main(["student", str(src), str(out)]) == 0
    notice = _one_line_error(capsys)
    assert notice.startswith(f"kept {target}") and "--force" in notice
    assert target.read_bytes() == edited
    assert course.main(["student", str(src), str(out), "--force"]) == 0
    assert target.read_bytes() == first


# -- one-line errors, exit 2 ------------------------------------------------------------------
def _bad_inputs(tmp_path) -> dict[str, tuple[list[str], str]]:
    good = _course_tree(tmp_path) / "01_a.ipynb"
    (tmp_path / "bad.ipynb").write_text("{not json")
    (tmp_path / "other.ipynb").write_text('{"cells": 3}')
    (tmp_path / "a_file").write_text("x")
    unbalanced = _notebook()
    unbalanced.cells[2].source = EXERCISE.replace("    ### END SOLUTION\n", "")
    nbformat.write(unbalanced, str(tmp_path / "03_unbalanced.ipynb"))
    missing = str(tmp_path / "nowhere.ipynb")
    return {
        "student, missing source": (["student", missing, str(tmp_path / "o")], "no such file"),
        "student, invalid JSON": (["student", str(tmp_path / "bad.ipynb"), str(tmp_path / "o")], "not a notebook"),
        "student, JSON not a notebook": (["student", str(tmp_path / "other.ipynb"), str(tmp_path / "o")], "notebook"),
        "student, OUT is a file": (["student", str(good), str(tmp_path / "a_file")], "is a file"),
        "student, unbalanced": (["student", str(tmp_path / "03_unbalanced.ipynb"), str(tmp_path / "o")],
                                "cell 2: source has '### BEGIN SOLUTION' without '### END SOLUTION'"),
        "execute, missing": (["execute", missing], "no such file"),
        "execute, invalid JSON": (["execute", str(tmp_path / "bad.ipynb")], "not a notebook"),
        "check, missing": (["check", missing], "no such file"),
        "check, invalid JSON": (["check", str(tmp_path / "bad.ipynb")], "not a notebook"),
        "check, empty folder": (["check", str(tmp_path / "o2")], "no *.ipynb"),
        "new, exists": (["new", str(good)], "exists"),
        "new, bad name": (["new", str(tmp_path / "topic.ipynb")], "NN_short_name"),
        "new, no folder": (["new", str(tmp_path / "none" / "07_x.ipynb")], "does not exist"),
    }


@pytest.mark.parametrize("case", [
    "student, missing source", "student, invalid JSON", "student, JSON not a notebook", "student, OUT is a file",
    "student, unbalanced", "execute, missing", "execute, invalid JSON", "check, missing", "check, invalid JSON",
    "check, empty folder", "new, exists", "new, bad name", "new, no folder"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    (tmp_path / "o2").mkdir()
    argv, words = _bad_inputs(tmp_path)[case]
    before = _files(tmp_path)
    assert course.main(argv) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f"pwlab course {argv[0]}: ") and words in err, err
    assert _files(tmp_path) == before                                            # nothing written


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
    before = path.read_bytes()
    assert course.main(["new", str(path)]) == 2                  # never overwrites
    assert path.read_bytes() == before
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


def _svg_files(nb) -> dict[int, str]:
    """``{cell index: file}`` of the teacher's ``SVG(filename=...)`` cells."""
    out = {}
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code" and "SVG(filename=" in c.source:
            out[i] = c.source.split("SVG(filename=")[1].split(")")[0].strip("\"'")
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_real_handout_is_self_contained_and_checkable(path):
    nb = nbt.read(path)
    st = handout.handout(nb, path.parent, name=path.name)
    for cell in st.cells:
        assert "../" not in cell.source and "NBVAL" not in cell.source
    assert handout.relative_references(st, path.parent) == []
    for i, rel in _svg_files(nb).items():                      # each diagram: the file's text, embedded
        call = ast.parse(st.cells[i].source).body[-1].value
        assert ast.literal_eval(call.keywords[0].value) == (path.parent / rel).read_text()
    exercises = [i for i, c in enumerate(nb.cells) if nbt.is_exercise(c)]
    assert exercises and [i for i, c in enumerate(st.cells) if STUB in c.source] == exercises
    for i in exercises:
        assert "check_" in st.cells[i].source.split(STUB)[-1]


#: hand-outs executed by default. All ten run alone in about 4.5 min of kernel CPU (18 min wall on a busy
#: 2-core machine); every notebook shows a diagram, so the default is one per kind of risk: 01 the cheapest
#: (its diagram, its timings), 03 trains a model and has two exercises, 09 starts worker processes from the
#: hand-out's folder. The others are checked statically above; PWLAB_ALL_HANDOUTS=1 executes all of them.
EXECUTED = ("01_dense_vs_sparse", "03_balance_and_capacity", "09_scaling_out")
HANDOUTS_RUN = [p for p in NOTEBOOKS if os.environ.get("PWLAB_ALL_HANDOUTS") == "1" or p.stem in EXECUTED]


@pytest.mark.slow
@pytest.mark.parametrize("path", HANDOUTS_RUN, ids=[p.name for p in HANDOUTS_RUN])
def test_handout_runs_alone_in_an_empty_folder(tmp_path_factory, path):
    """The hand-out, copied alone into an empty folder outside the repository, runs top to bottom in a
    fresh ``python3`` kernel started there; its only errors are the exercises' NotImplementedError."""
    made = tmp_path_factory.mktemp("made")
    assert course.main(["student", str(path), str(made)]) == 0
    alone = tmp_path_factory.mktemp("alone")
    assert ROOT not in alone.resolve().parents
    (alone / path.name).write_bytes((made / path.name).read_bytes())
    assert [p.name for p in alone.iterdir()] == [path.name]
    nb = nbt.read(alone / path.name)
    # the kernel imports this checkout's pwlab (the installed package); nothing else of the repository
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    nb, _, cpu, _, _ = nbt.execute(nb, cwd=alone, allow_errors=True, env=env)
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s wall, kernel CPU {cpu or float('nan'):.1f} s")
    raised = {}
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.output_type == "error":
                raised[i] = (o.ename, o.evalue)
    exercises = [i for i, c in enumerate(nb.cells) if STUB in c.get("source", "")]
    assert raised == {i: ("NotImplementedError", "your turn") for i in exercises}
    svg_cells = _svg_files(nbt.read(path))
    for i in svg_cells:                                       # the diagram is drawn from the embedded data
        assert any("image/svg+xml" in o.get("data", {}) for o in nb.cells[i].outputs)
    # every notebook that draws a diagram has it found (10, the language model, draws none)
    assert bool(svg_cells) == any("SVG(" in c.source for c in nbt.read(path).cells if c.cell_type == "code")


def _md_nb(markdown: str, code: str = "", output: str = ""):
    import nbformat
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(code, execution_count=1)
    if output:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), cell]
    return nb


def test_unchecked_numbers_flags_prose_numbers_no_cell_prints_or_asserts():
    from pwlab.commands.notebook_checks import unchecked_numbers
    prose = "Training mixes the senses: I(E;M) falls from 0.47 to 0.11 bits, and 85.6% of the rest."
    flagged = unchecked_numbers(_md_nb(prose))
    assert [f.split(": ")[1].split(" ")[0] for f in flagged] == ["0.47", "0.11", "85.6%"]
    assert unchecked_numbers(_md_nb(prose, "assert mi < 0.11 and share > 85.6", "I(E;M) 0.47\n")) == []


def test_unchecked_numbers_leaves_papers_suggestions_integers_code_and_paper_columns_alone():
    from pwlab.commands.notebook_checks import unchecked_numbers
    prose = ("Switch Transformer (Fedus et al. 2021) reports 7.5× faster pre-training. Try 0.5 or 0.8 "
             "yourself. We use 8 experts and `cf=1.25`.\n\n"
             "| | the papers say | we measure here |\n|---|---|---|\n| speed | 4.4× (GShard) | 0.93 |\n")
    assert [f.split(": ")[1].split(" ")[0] for f in unchecked_numbers(_md_nb(prose))] == ["0.93"]


def test_course_check_lists_unchecked_numbers_for_review_and_fails_on_them_with_strict(tmp_path, capsys):
    import nbformat
    from pwlab.commands.course import main
    src = tmp_path / "00_probe.ipynb"
    nbformat.write(_md_nb("**Claim.** it holds: 0.47 bits.", "# CLAIM\nassert True"), src)
    main(["check", str(src)])
    assert "to review" in capsys.readouterr().out
    assert main(["check", "--strict", str(src)]) == 1
    assert "0.47 in the prose" in capsys.readouterr().out
