"""``pwlab course``: tools for teaching with the notebooks.

    pwlab course student notebooks/ OUT/        student versions: solutions → raise NotImplementedError("your turn"),
                                                outputs cleared, widget state removed
    pwlab course execute notebooks/NN_x.ipynb   run top to bottom in a fresh kernel, store with outputs
                                                (plotly JSON, no widget state), report run time and slowest cells
    pwlab course new notebooks/NN_name.ipynb     a skeleton notebook that follows the conventions
    pwlab course check notebooks/               the notebook conventions, checked on stored notebooks
    pwlab course conventions                    print the conventions a notebook follows

The conventions and the functions behind these commands live in :mod:`pwlab.commands.notebooks`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from pwlab.commands import _args
from pwlab.commands import notebook_checks as checks
from pwlab.commands import notebooks as nbt


def _notebooks(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        found = sorted(p.glob("*.ipynb")) if p.is_dir() else [p]
        if not found:                    # checking nothing must not pass as "all ok"
            raise FileNotFoundError(f"{p} holds no .ipynb notebooks")
        out += found
    return out


def _student(args) -> int:
    for path in nbt.make_student_notebooks(Path(args.src), Path(args.out)):
        print(f"wrote {path}")
    return 0


def _execute(args) -> int:
    status = 0
    for path in _notebooks(args.notebooks):
        try:
            report = nbt.execute_and_store(path, timeout=args.timeout, allow_errors=args.allow_errors)
        except Exception as e:    # a failing cell: say which, keep the stored file unchanged
            print(f"{path}: FAILED, not stored\n{e}", file=sys.stderr)
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
        found = checks.problems(nbt.read(path), path.stat().st_size)
        if not nbt.name_ok(path):
            found.append("name is not NN_short_name.ipynb")
        print(f"{path}: " + ("ok" if not found else "\n    " + "\n    ".join(found)))
        bad += bool(found)
    return 1 if bad else 0


def _new(args) -> int:
    path = Path(args.path)
    if path.exists():
        print(f"pwlab course new: error: {path} exists; not overwritten", file=sys.stderr)
        return 2
    nbt.write(nbt.skeleton(path), path)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = _args.Parser(prog="pwlab course", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="write student versions of the notebooks")
    s.add_argument("src", help="a notebook or a folder of notebooks")
    s.add_argument("out", help="output folder")
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
    c.set_defaults(func=_check)
    v = sub.add_parser("conventions", help="print the notebook conventions")
    v.set_defaults(func=lambda a: print(nbt.convention_text()) or 0)
    args = p.parse_args(argv)
    return int(args.func(args) or 0)
