"""``pwlab course``: tools for teaching with the notebooks.

    pwlab course student notebooks/ OUT/        hand-outs: solutions → raise NotImplementedError("your turn"),
                                                outputs cleared, widget state and NBVAL markers removed,
                                                diagrams embedded, so that each file runs on its own anywhere;
                                                never overwrites a source or a hand-out a student edited
                                                (unless --force)
    pwlab course execute notebooks/NN_x.ipynb   run top to bottom in a fresh kernel, store with outputs
                                                (plotly JSON, no widget state), report run time and slowest cells
    pwlab course new notebooks/NN_name.ipynb     a skeleton notebook that follows the conventions
    pwlab course check notebooks/               the notebook conventions, checked on stored notebooks
    pwlab course conventions                    print the conventions a notebook follows

Bad input (a missing or unreadable notebook, OUT a file, an unbalanced ``### BEGIN SOLUTION``,
a hand-out that would overwrite its source) is reported in one line on stderr with exit
status 2. ``execute`` and ``check`` exit with 1 when a notebook fails or breaks a convention.

The conventions and the functions behind these commands live in :mod:`pwlab.commands.notebooks`;
hand-outs are built by :mod:`pwlab.commands.handout`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from pwlab.commands import _args
from pwlab.commands import notebook_checks as checks
from pwlab.commands import notebooks as nbt
from pwlab.commands.handout import CourseError, _first_line, _notebooks, make_handouts, read_notebook


def _student(args) -> int:
    for target, status in make_handouts(Path(args.src), Path(args.out), force=args.force):
        if status == "kept":
            print(f"kept {target}: it differs from the new hand-out (a student's edits?); --force replaces it",
                  file=sys.stderr)
        else:
            print(f"{status} {target}")
    return 0


def _execute(args) -> int:
    status = 0
    paths = _notebooks(args.notebooks)
    for path in paths:
        read_notebook(path)                 # every input is a notebook before the first (slow) run
    for path in paths:
        try:
            report = nbt.execute_and_store(path, timeout=args.timeout, allow_errors=args.allow_errors)
        except Exception as e:    # a failing cell or kernel: say which, keep the stored file unchanged
            what = f"{e.ename}: {_first_line(e.evalue)}" if getattr(e, "ename", None) else \
                f"{type(e).__name__}: {_first_line(str(e))}"
            print(f"{path}: FAILED, not stored ({what}); --allow-errors stores it with the error", file=sys.stderr)
            status = 1
            continue
        print(report.summary())
        if report.seconds > args.budget:
            print(f"    over the {args.budget:.0f} s budget", file=sys.stderr)
            status = 1
        if report.size_bytes >= nbt.MAX_BYTES:
            print(f"    file over {nbt.MAX_BYTES / 1e6:.0f} MB", file=sys.stderr)
            status = 1
    return status


def _check(args) -> int:
    bad = 0
    for path in _notebooks(args.notebooks):
        found = checks.problems(read_notebook(path), path.stat().st_size)
        if not nbt.name_ok(path):
            found.append("name is not NN_short_name.ipynb")
        review = checks.unchecked_numbers(read_notebook(path))
        if args.strict:
            found, review = found + review, []
        print(f"{path}: " + ("ok" if not found else "\n    " + "\n    ".join(found)))
        if review:
            print("    to review (numbers in the prose that no cell prints or checks; --strict fails on them):\n      "
                  + "\n      ".join(review))
        bad += bool(found)
    return 1 if bad else 0


def _new(args) -> int:
    path = Path(args.path)
    if path.exists():
        raise CourseError(f"path {path}: exists; not overwritten")
    if not path.parent.is_dir():
        raise CourseError(f"path {path}: folder {path.parent} does not exist")
    try:
        nb = nbt.skeleton(path)
    except ValueError as e:
        raise CourseError(str(e)) from None
    nbt.write(nb, path)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = _args.Parser(prog="pwlab course", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="write self-contained student hand-outs of the notebooks")
    s.add_argument("src", help="a notebook or a folder of notebooks")
    s.add_argument("out", help="output folder (not the source folder)")
    s.add_argument("--force", action="store_true",
                   help="replace hand-outs in OUT that differ from the new ones (a student's edits are lost)")
    s.set_defaults(func=_student)
    e = sub.add_parser("execute", help="run notebooks top to bottom and store them with outputs")
    e.add_argument("notebooks", nargs="+", help="notebooks or folders")
    e.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds (default 600)")
    e.add_argument("--budget", type=float, default=60.0, help="warn and fail above this run time (default 60 s)")
    e.add_argument("--allow-errors", action="store_true", help="store even when cells fail")
    e.set_defaults(func=_execute)
    n = sub.add_parser("new", help="write a skeleton notebook that follows the conventions")
    n.add_argument("path", help="notebooks/NN_short_name.ipynb")
    n.set_defaults(func=_new)
    c = sub.add_parser("check", help="check stored notebooks against the conventions")
    c.add_argument("notebooks", nargs="+", help="notebooks or folders")
    c.add_argument("--strict", action="store_true",
                   help="also fail on numbers in the prose that no cell prints or checks (listed for review otherwise)")
    c.set_defaults(func=_check)
    v = sub.add_parser("conventions", help="print the notebook conventions")
    v.set_defaults(func=lambda a: print(nbt.convention_text()) or 0)
    args = p.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CourseError as e:
        print(f"pwlab course {args.command}: {_first_line(str(e), limit=1000)}", file=sys.stderr)
    except OSError as e:           # unwritable OUT, disk full: the operation and the path, no traceback
        where = f" {e.filename}" if e.filename else ""
        print(f"pwlab course {args.command}: {e.strerror or type(e).__name__}{where}", file=sys.stderr)
    return 2
