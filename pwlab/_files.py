"""Small file helpers shared by the modules that write files (checkpoints, reports)."""
from __future__ import annotations

import os


def usual_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0o666 less the umask.

    Files written atomically come from :func:`tempfile.mkstemp`, which makes them 0600; they are
    given this mode before they replace their target. (Reading the umask means setting it, so it
    is set back at once.)"""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
