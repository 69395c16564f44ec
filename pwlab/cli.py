"""The ``pwlab`` command: ``lab | serve | train | bench NAME | course``.

Each sub-command lives in its own module with a ``main(argv) -> int``; this file only
dispatches, so adding a benchmark means adding ``pwlab/bench/<name>.py`` and nothing else.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: pwlab COMMAND [options]\n\ncommands:")
        for name, (_, help_) in _COMMANDS.items():
            print(f"  {name:<8} {help_}")
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
