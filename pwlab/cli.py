"""The ``pwlab`` command: ``lab | serve | train | bench NAME | course``.

Each sub-command lives in its own module with a ``main(argv) -> int``; this file only
dispatches, so adding a benchmark means adding ``pwlab/bench/<name>.py`` and nothing else.

Exit status: 0 done, 1 a check failed, 2 a usage error. A user's mistake that reaches this
file as an exception (a bad value or name, a file that is missing, unreadable or unwritable:
:data:`USER_ERRORS`) is printed as one line, ``pwlab: error: ...``, with status 2; any other
exception is a bug of the lab and keeps its traceback. ``PWLAB_TRACEBACK=1`` in the
environment shows the traceback of user errors too.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys

# Exceptions that mean "the input was wrong" (pwlab raises ValueError/TypeError naming the
# argument, KeyError for an unknown name) or "the file system said no" (OSError: missing,
# unreadable, unwritable, full).
USER_ERRORS = (ValueError, TypeError, KeyError, OSError)

_COMMANDS = {
    "lab": ("pwlab.commands.lab", "start JupyterLab on the notebooks (checks the front-end set-up first)"),
    "serve": ("pwlab.commands.serve", "classroom dashboard: one notebook with code hidden, widgets live"),
    "train": ("pwlab.commands.train", "train a preset headless; writes a checkpoint and an HTML report"),
    "bench": (None, "measured ratios: pwlab bench NAME [options] (NAME: see `pwlab bench --list`)"),
    "course": ("pwlab.commands.course", "course tools: `pwlab course student notebooks/ OUT/`"),
}


def bench_names() -> list[str]:
    """Names of the benchmarks in :mod:`pwlab.bench` (module ``swat_accuracy`` is ``swat-accuracy``)."""
    import pwlab.bench as pkg

    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def _run_module(module: str, argv: list[str]) -> int:
    return int(importlib.import_module(module).main(argv) or 0)


def _message(e: BaseException) -> str:
    # str(KeyError("x")) is "'x'": show the name's own text
    text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    text = " ".join(text.split()) or type(e).__name__        # one line
    return text


def main(argv: list[str] | None = None) -> int:
    """Run ``pwlab COMMAND [options]``; the exit status (see the module's docstring)."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:                  # argparse inside a sub-command: it has printed why
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except USER_ERRORS as e:
        if os.environ.get("PWLAB_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"pwlab: error: {_message(e)}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: pwlab COMMAND [options]\n\ncommands:")
        for name, (_, help_) in _COMMANDS.items():
            print(f"  {name:<8} {help_}")
        print("\nA mistake in the input is one line, 'pwlab: error: ...', exit status 2;\n"
              "PWLAB_TRACEBACK=1 shows its Python traceback too.")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in _COMMANDS:
        print(f"pwlab: unknown command {cmd!r}; choose one of {', '.join(_COMMANDS)}", file=sys.stderr)
        return 2
    if cmd != "bench":
        return _run_module(_COMMANDS[cmd][0], rest)
    names = bench_names()
    if not rest or rest[0] in ("-h", "--help", "--list"):
        print("usage: pwlab bench NAME [options]\n\nbenchmarks: " + ", ".join(names))
        return 0
    if rest[0] not in names:
        print(f"pwlab bench: unknown benchmark {rest[0]!r}; choose one of {', '.join(names)}", file=sys.stderr)
        return 2
    return _run_module("pwlab.bench." + rest[0].replace("-", "_"), rest[1:])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
