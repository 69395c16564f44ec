"""Small file helpers shared by the modules that write files (checkpoints, reports, hand-outs)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def usual_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0o666 less the umask.

    Files written atomically come from :func:`tempfile.mkstemp`, which makes them 0600; they are
    given this mode before they replace their target. (Reading the umask means setting it, so it
    is set back at once.)"""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder, so a reader
    sees the old file or the new one, never half of one; the new file gets :func:`usual_file_mode`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, usual_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
