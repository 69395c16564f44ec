"""Hand-outs of the notebooks: self-contained student copies (``pwlab course student``).

A hand-out is the notebook with each solution replaced by ``raise NotImplementedError("your
turn")``, outputs and widget state cleared, ``# NBVAL_*`` markers dropped, and every local
picture it reads (``SVG(filename=...)``, ``Image(...)``, markdown images) embedded, so that the
file runs alone in any folder. Writing never overwrites a source, nor a hand-out a student
edited (unless ``force``). Errors are :class:`CourseError`, one line each.
"""
from __future__ import annotations

import ast
import base64
import copy
import os
import re
from pathlib import Path

import nbformat
from pwlab._files import write_text_atomically
from pwlab.commands import notebooks as nbt

#: display classes whose ``filename=`` (or first positional) argument the hand-out embeds
EMBEDDABLE = {"SVG": "svg", "Image": "image"}
IMAGE_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
              ".svg": "image/svg+xml"}
_NBVAL_LINE = re.compile(r"^[ \t]*#[ \t]*NBVAL_[A-Z_]+.*(\n|$)", re.MULTILINE)
_MD_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<path>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
_HTML_IMG = re.compile(r"(<img\b[^>]*?\bsrc=)(?P<q>[\"'])(?P<path>[^\"']+)(?P=q)", re.IGNORECASE)
_REMOTE = re.compile(r"^([a-z][a-z0-9+.-]*:|/|#)", re.IGNORECASE)   # URLs, absolute paths, anchors


class CourseError(Exception):
    """Bad input to a course command: reported in one line, exit status 2."""


# -- reading ---------------------------------------------------------------------------------
def read_notebook(path: Path):
    """The notebook at ``path``, or CourseError saying why it is not one."""
    path = Path(path)
    if not path.exists():
        raise CourseError(f"{path}: no such file or folder")
    if path.is_dir():
        raise CourseError(f"{path}: is a folder, not a notebook")
    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        raise CourseError(f"{path}: not a valid notebook ({_first_line(e.message)})") from None
    except Exception as e:     # invalid JSON, not UTF-8, no nbformat version, unreadable: all "not a notebook"
        raise CourseError(f"{path}: not a notebook ({type(e).__name__}: {_first_line(str(e))})") from None
    return nb


def _first_line(text: str, limit: int = 200) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _notebooks(paths: list[str]) -> list[Path]:
    """The notebooks named by ``paths`` (a folder stands for the ``*.ipynb`` in it)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise CourseError(f"{p}: no such file or folder")
        if p.is_dir():
            found = sorted(p.glob("*.ipynb"))
            if not found:
                raise CourseError(f"{p}: folder holds no *.ipynb notebook")
            out += found
        else:
            out.append(p)
    return out


# -- hand-outs -------------------------------------------------------------------------------
def drop_nbval_markers(source: str) -> str:
    """``source`` without its ``# NBVAL_*`` comment lines (they mean something only to the test suite)."""
    return _NBVAL_LINE.sub("", source)


def _python_literal(value: str | bytes) -> str:
    """A Python literal for ``value``: a readable triple-quoted string when that is exact, else ``repr``."""
    if isinstance(value, str) and '"""' not in value and "\\" not in value and not value.endswith('"'):
        literal = '"""' + value + '"""'
        try:
            if ast.literal_eval(literal) == value:
                return literal
        except (SyntaxError, ValueError):
            pass
    return repr(value)


def _parse_keeping_positions(source: str):
    """The AST of a cell; IPython magic lines (``%``, ``!``) are blanked first so that offsets still hold."""
    lines = [(" " * len(ln) if ln.lstrip().startswith(("%", "!")) else ln) for ln in source.split("\n")]
    return ast.parse("\n".join(lines))


def _offset(source: str, lineno: int, col_utf8: int) -> int:
    """The index in ``source`` of an AST position (1-based line, column in UTF-8 bytes)."""
    lines = source.split("\n")
    before = sum(len(ln) + 1 for ln in lines[: lineno - 1])
    return before + len(lines[lineno - 1].encode("utf-8")[:col_utf8].decode("utf-8", errors="ignore"))


def _local_file(text: str, folder: Path) -> Path | None:
    """The file ``text`` names relative to ``folder`` (the notebook's working directory), if it exists."""
    if not text or "\n" in text or len(text) > 400 or _REMOTE.match(text):
        return None
    try:
        candidate = folder / text
        return candidate if candidate.is_file() else None
    except (OSError, ValueError):
        return None


def _looks_relative_path(text: str) -> bool:
    return text.startswith(("../", "./", "..\\", ".\\"))


def _is_reference(text: str, folder: Path) -> bool:
    """Whether a string in a notebook names a file relative to its folder (one there, or a ``../``/``./`` path)."""
    return _looks_relative_path(text) or _local_file(text, folder) is not None


def _embed_call(call: ast.Call, source: str, folder: Path, where: str) -> tuple[int, int, str] | None:
    """A replacement ``(start, end, text)`` turning ``SVG(filename=F)`` / ``Image(filename=F)`` into embedded data."""
    name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
    if name not in EMBEDDABLE:
        return None
    arg = next((k.value for k in call.keywords if k.arg == "filename"), None)
    node = next((k for k in call.keywords if k.arg == "filename"), None)
    if arg is None and call.args and not call.keywords:
        arg = node = call.args[0]            # SVG("file.svg"): IPython reads a path given as data
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        return None
    path = _local_file(arg.value, folder)
    if path is None:
        if _looks_relative_path(arg.value):
            raise CourseError(f"{where}: {name}() reads {arg.value!r}, which does not exist next to the notebook")
        return None
    start = _offset(source, node.lineno, node.col_offset)
    end = _offset(source, node.end_lineno, node.end_col_offset)
    if EMBEDDABLE[name] == "svg":
        text = "data=" + _python_literal(path.read_text(encoding="utf-8"))
    else:
        fmt = path.suffix.lstrip(".").lower().replace("jpg", "jpeg")
        if fmt not in ("png", "jpeg", "gif"):
            raise CourseError(f"{where}: {name}() shows {arg.value!r}; the hand-out embeds png, jpeg or gif images")
        text = f"data=__import__('base64').b64decode({base64.b64encode(path.read_bytes()).decode()!r})"
        if not any(k.arg == "format" for k in call.keywords):
            text += f", format={fmt!r}"
    return start, end, text


def embed_code_files(source: str, folder: Path, where: str) -> tuple[str, list[str]]:
    """``source`` with every diagram it reads from a file embedded as data, and the files embedded.

    Raises CourseError when the cell reads any other file next to the notebook (or any path
    starting with ``../`` or ``./``): a hand-out copied alone would fail there.
    """
    try:
        tree = _parse_keeping_positions(source)
    except SyntaxError:
        if "../" in source:
            raise CourseError(f"{where}: cannot parse the cell to embed the file it reads") from None
        return source, []
    edits, embedded, handled = [], [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            edit = _embed_call(node, source, folder, where)
            if edit is not None:
                edits.append(edit)
                target = next((k.value for k in node.keywords if k.arg == "filename"), None) or node.args[0]
                handled.add(id(target))
                embedded.append(target.value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in handled:
            if _is_reference(node.value, folder):
                raise CourseError(f"{where}: reads the file {node.value!r} next to the notebook; a hand-out "
                                  "copied alone cannot (show it with SVG(filename=...) or make it package data)")
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source, embedded


def embed_markdown_images(cell, folder: Path, where: str) -> list[str]:
    """Turn the cell's images read from files into attachments (SVG: a data URL), in place; the files embedded."""
    embedded: list[str] = []

    def data_for(path_text: str) -> tuple[Path, str] | None:
        path = _local_file(path_text, folder)
        if path is None:
            if _looks_relative_path(path_text):
                raise CourseError(f"{where}: shows {path_text!r}, which does not exist next to the notebook")
            return None
        mime = IMAGE_MIME.get(path.suffix.lower())
        if mime is None:
            raise CourseError(f"{where}: shows {path_text!r}, not an image the hand-out can embed "
                              f"({', '.join(sorted(IMAGE_MIME))})")
        return path, mime

    def svg_url(path: Path) -> str:
        # JupyterLab does not render SVG attachments; an <img> with a data URL it does
        return "data:image/svg+xml;base64," + base64.b64encode(path.read_bytes()).decode()

    def markdown_image(m: re.Match) -> str:
        found = data_for(m.group("path"))
        if found is None:
            return m.group(0)
        path, mime = found
        embedded.append(m.group("path"))
        if mime == "image/svg+xml":
            return f'<img src="{svg_url(path)}" alt="{m.group("alt")}"/>'
        cell.setdefault("attachments", {})[path.name] = {mime: base64.b64encode(path.read_bytes()).decode()}
        return f"![{m.group('alt')}](attachment:{path.name}{m.group('title') or ''})"

    def html_image(m: re.Match) -> str:
        found = data_for(m.group("path"))
        if found is None:
            return m.group(0)
        path, mime = found
        embedded.append(m.group("path"))
        url = svg_url(path) if mime == "image/svg+xml" else f"data:{mime};base64," + base64.b64encode(
            path.read_bytes()).decode()
        return f"{m.group(1)}{m.group('q')}{url}{m.group('q')}"

    cell.source = _HTML_IMG.sub(html_image, _MD_IMAGE.sub(markdown_image, cell.source))
    return embedded


def handout(nb, folder: Path, name: str = "notebook"):
    """The student hand-out of ``nb`` (a notebook whose working directory is ``folder``).

    :func:`pwlab.commands.notebooks.student_version` (solutions → the stub, outputs cleared, no
    widget state), plus: ``# NBVAL_*`` lines and nbval cell tags dropped, and every file the
    notebook shows embedded (``SVG(filename=…)`` → ``SVG(data=…)``, markdown images →
    attachments), so that the file runs on its own in any folder. Raises CourseError on an
    unbalanced solution block or a file the hand-out cannot embed.
    """
    for i, cell in enumerate(nb.cells):
        try:
            if cell.cell_type == "code":
                nbt.strip_solutions(cell.source)
            elif cell.cell_type == "markdown":
                nbt.strip_solutions(cell.source, nbt.MD_BEGIN_SOLUTION, nbt.MD_END_SOLUTION)
        except ValueError as e:
            raise CourseError(f"{name}, cell {i}: {e}") from None
    st = nbt.student_version(nb)
    for i, cell in enumerate(st.cells):
        where = f"{name}, cell {i}"
        tags = cell.get("metadata", {}).get("tags")
        if tags:
            cell.metadata["tags"] = [t for t in tags if not t.lower().startswith("nbval")]
            if not cell.metadata["tags"]:
                del cell.metadata["tags"]
        if cell.cell_type == "code":
            source = drop_nbval_markers(cell.source)
            source, embedded = embed_code_files(source, folder, where)
            if embedded:
                files = ", ".join(Path(e).name for e in embedded)
                source = f"# {files}: embedded so that this notebook runs in any folder\n" + source
                # the data is long: JupyterLab and Notebook 7 show the picture and fold the source
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
                shown = nb.cells[i].get("outputs", [])
                pictures = set(IMAGE_MIME.values())
                if shown and all(o.get("output_type") == "display_data" and set(o.get("data", {})) & pictures
                                 for o in shown):
                    # the stored picture (the output of the new source too): seen before the cell runs
                    cell.outputs = copy.deepcopy(shown)
            cell.source = source
        elif cell.cell_type == "markdown":
            embed_markdown_images(cell, folder, where)
    return st


def relative_references(nb, folder: Path) -> list[str]:
    """Files ``nb`` still reads or shows relative to ``folder``, as ``cell N: path`` (none: self-contained)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            try:
                tree = _parse_keeping_positions(cell.source)
            except SyntaxError:
                found += [f"cell {i}: unparsable, mentions ../"] if "../" in cell.source else []
                continue
            found += [f"cell {i}: {n.value}" for n in ast.walk(tree)
                      if isinstance(n, ast.Constant) and isinstance(n.value, str)
                      and _is_reference(n.value, folder)]
        elif cell.cell_type == "markdown":
            paths = [m.group("path") for m in _MD_IMAGE.finditer(cell.source)]
            paths += [m.group("path") for m in _HTML_IMG.finditer(cell.source)]
            found += [f"cell {i}: {p}" for p in paths if _is_reference(p, folder)]
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def plan_handouts(src: Path, out: Path) -> list[tuple[Path, Path, str]]:
    """``(source, target, text)`` of every hand-out; refuses (CourseError) before anything is written."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise CourseError(f"src {src}: no such file or folder")
    files = sorted(src.glob("*.ipynb")) if src.is_dir() else [src]
    if not files:
        raise CourseError(f"src {src}: folder holds no *.ipynb notebook")
    if out.exists() and not out.is_dir():
        raise CourseError(f"out {out}: is a file; give a folder for the hand-outs")
    plan = []
    for f in files:
        target = out / f.name
        if any(_same_file(target, g) for g in files):
            raise CourseError(f"out {out}: writing {target} would overwrite the source notebook; "
                              "give another folder (nothing written)")
        if target.is_dir():
            raise CourseError(f"out {target}: is a folder, cannot write the hand-out there (nothing written)")
        nb = read_notebook(f)
        text = nbformat.writes(handout(nb, f.parent.resolve(), name=str(f)))
        plan.append((f, target, text if text.endswith("\n") else text + "\n"))
    return plan


def make_handouts(src: Path, out: Path, force: bool = False) -> list[tuple[Path, str]]:
    """Write the hand-out of every notebook in ``src`` (or of the one file ``src``) into ``out``.

    Returns ``(target, status)`` with status ``wrote``, ``unchanged`` or ``kept`` (an existing
    hand-out that differs from the new one, e.g. a student's edits, is kept unless ``force``).
    """
    plan = plan_handouts(src, out)
    Path(out).mkdir(parents=True, exist_ok=True)
    done = []
    for _, target, text in plan:
        if target.exists():
            if target.read_bytes() == text.encode("utf-8"):
                done.append((target, "unchanged"))
                continue
            if not force:
                done.append((target, "kept"))
                continue
        write_text_atomically(target, text)
        done.append((target, "wrote"))
    return done


# -- commands --------------------------------------------------------------------------------
