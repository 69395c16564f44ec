"""The checkpoint file: written atomically, hashed, read back without executing code.

Separate from :mod:`pwlab.checkpoint` (what a trainer's checkpoint holds, and how it is
checked against a trainer and applied) because this is the file alone: how a dict of plain
containers reaches the disk and comes back, whatever the dict holds.

The file is ``torch.save`` of a dict holding only dicts, lists, tuples, strings, numbers,
booleans, None and tensors, marked ``format`` :data:`FORMAT`, ``version`` :data:`VERSION`,
plus ``digest``, ``"sha256:<hex>"`` over everything else (:func:`payload_digest`), so
``torch.load(weights_only=True)`` reads it: the unpickler refuses anything else, and a
file crafted to run code on load is rejected before any of it runs.

Integrity: the digest is recomputed on load; a file whose contents changed after it was
written (flipped bytes that still unpickle, an edited value) raises
:class:`CheckpointIntegrityError` (a ``ValueError``). A file written before digests existed
loads with a :class:`UserWarning` saying it could not be checked.

Files are written to a temporary file ``.<name>.<pid>.<random>.tmp`` in the same folder and
renamed over the target (atomic on POSIX), so an interrupted save never leaves a half-written
checkpoint behind. A save killed outright (SIGKILL, power loss) leaves its temporary file;
the next save or load of that checkpoint removes such files when they are stale: the process
that wrote them is no longer running on this machine, or they are older than
``STALE_TEMP_AGE_S`` (older pwlab names, ``.<name>.<random>.tmp``, carry no process id).

Devices: tensors are read onto the CPU (``map_location="cpu"``), so a checkpoint written on
a GPU reads on a machine without one.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import warnings
from pathlib import Path

import torch

from pwlab._files import usual_file_mode

FORMAT = "pwlab-checkpoint"
VERSION = 1
DIGEST = "sha256"
#: a temporary file of a save is stale after this many seconds even if its process id is in use
STALE_TEMP_AGE_S = 600.0
_IN_FLIGHT: set[str] = set()        # temporary files this process is writing right now




class CheckpointIntegrityError(ValueError):
    """A checkpoint's contents do not match the digest written with them (changed or damaged file)."""


def payload_digest(state: dict) -> str:
    """``"sha256:<hex>"`` over every entry of ``state`` except ``"digest"``.

    The hash covers the contents, not the file's bytes: keys (in sorted order), types, and
    every tensor's dtype, shape and raw data (on the CPU), so it is the same for a state
    saved from a GPU and read onto the CPU. Lists and tuples hash alike.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "digest"})
    return f"{DIGEST}:{h.hexdigest()}"


def _feed(h, obj) -> None:
    # a tag and a length before every value, so no two different states share a byte stream
    def tagged(tag: bytes, data: bytes) -> None:
        h.update(tag + len(data).to_bytes(8, "little") + data)

    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, int):
        tagged(b"I", str(obj).encode())
    elif isinstance(obj, float):
        tagged(b"F", obj.hex().encode())
    elif isinstance(obj, str):
        tagged(b"S", obj.encode("utf-8", "surrogatepass"))
    elif isinstance(obj, bytes):
        tagged(b"Y", obj)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided:
            raise TypeError(f"cannot digest a {t.layout} tensor")
        tagged(b"T", f"{t.dtype}{tuple(t.shape)}".encode())
        data = t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        h.update(len(data).to_bytes(8, "little"))
        h.update(memoryview(data))
    elif isinstance(obj, dict):
        items = [(_key_bytes(k), v) for k, v in obj.items()]
        items.sort(key=lambda kv: kv[0])
        h.update(b"D" + len(items).to_bytes(8, "little"))
        for kb, v in items:
            h.update(kb)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(b"L" + len(obj).to_bytes(8, "little"))
        for v in obj:
            _feed(h, v)
    else:
        raise TypeError(f"cannot digest a value of type {type(obj).__name__}")


def _key_bytes(key) -> bytes:
    sub = hashlib.sha256()
    _feed(sub, key)
    return sub.digest()


def _check_digest(state: dict, path) -> None:
    recorded = state.get("digest")
    if recorded is None:
        warnings.warn(f"{str(path)!r} has no integrity digest (written by an older pwlab): it is loaded "
                      "unchecked; save it again to add one", UserWarning, stacklevel=6)
        return
    try:
        actual = payload_digest(state)
    except TypeError as e:
        raise CheckpointIntegrityError(f"{str(path)!r} failed its integrity check: {e}") from None
    if not isinstance(recorded, str) or recorded != actual:
        raise CheckpointIntegrityError(
            f"{str(path)!r} failed its integrity check: its contents hash to {actual}, the file records "
            f"{recorded!r}; it was changed or damaged after it was written (use another copy)")


def write_state(state: dict, path) -> None:
    """Write a checkpoint dict (e.g. :func:`pwlab.checkpoint.trainer_state`) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    _IN_FLIGHT.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, usual_file_mode())      # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _IN_FLIGHT.discard(tmp)


def clean_stale_temps(path) -> list[Path]:
    """Remove stale temporary files of saves of ``path`` (see the module docstring); returns them.

    Best effort: a file that cannot be removed (read-only folder) is left in place.
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(?:(\d+)\.)?[A-Za-z0-9_]+\.tmp")
    removed = []
    try:
        candidates = list(path.parent.iterdir()) if path.parent.is_dir() else []
    except OSError:
        return removed
    now = time.time()
    for f in candidates:
        m = pattern.fullmatch(f.name)
        if m is None or str(f) in _IN_FLIGHT:
            continue
        try:
            old = now - f.stat().st_mtime > STALE_TEMP_AGE_S
            pid = int(m.group(1)) if m.group(1) else None
            if old or (pid is not None and not _running(pid)):
                f.unlink()
                removed.append(f)
        except OSError:
            continue
    return removed


def _running(pid: int) -> bool:
    # this process's own files are in _IN_FLIGHT while written; any other of them is left over
    if pid == os.getpid():
        return False
    if os.name != "posix":
        return True                 # no cheap probe: only the age rule applies
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def read_state(path) -> dict:
    """Read a checkpoint file's dict: the format, the version and the digest checked.

    Never executes code from the file (``weights_only=True``); tensors are read onto the CPU.
    Raises ``ValueError`` for a missing, unreadable or foreign file, and
    :class:`CheckpointIntegrityError` (a ``ValueError``) when the contents do not match the
    recorded digest; warns when the file has none (written by an older pwlab). What the dict
    holds is checked by :func:`pwlab.checkpoint.read_checkpoint`.
    """
    path = Path(path)
    clean_stale_temps(path)
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:      # any parse failure (unpickling refused, truncated zip, OSError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{str(path)!r} is not a readable pwlab checkpoint (corrupt, or not a checkpoint): "
                         f"{first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a pwlab checkpoint (no format marker {FORMAT!r})")
    if state.get("version") != VERSION:
        raise ValueError(f"{str(path)!r} has checkpoint version {state.get('version')!r}; this pwlab reads version {VERSION}")
    _check_digest(state, path)
    return state
