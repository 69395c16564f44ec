"""Trainer checkpoints: one file of plain containers, loaded without executing code.

The file is ``torch.save`` of a dict holding only dicts, lists, tuples, strings, numbers,
booleans, None and tensors::

    format "pwlab-checkpoint", version 1, config (Config.to_dict()), tasks (names),
    task_seeds (the data seeds, to rebuild the tasks), step,
    model (state_dict), optimizer (state_dict), sampler (state_dict),
    rng {"generator": routing-noise generator state, "torch": the trainer's dropout RNG state},
    history (list of plain dict records)

so ``torch.load(weights_only=True)`` reads it: the unpickler refuses anything else, and a
file crafted to run code on load is rejected before any of it runs. Everything is checked
before anything is changed, so a bad file leaves the trainer as it was. Files are written
to a temporary file in the same folder and renamed over the target (atomic on POSIX), so an
interrupted save never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from pwlab.config import RESUMABLE_DIFFERENCES, Config

FORMAT = "pwlab-checkpoint"
VERSION = 1
_KEYS = ("format", "version", "config", "tasks", "step", "model", "optimizer", "sampler", "rng", "history")


def trainer_state(trainer) -> dict:
    """The checkpoint dict of a trainer (plain containers only)."""
    return {
        "format": FORMAT, "version": VERSION,
        "config": trainer.config.to_dict(),
        "tasks": [t.name for t in trainer.tasks],
        "task_seeds": [int(t.meta.get("seed", 0)) for t in trainer.tasks],
        "step": int(trainer.step_count),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "sampler": trainer.sampler.state_dict(),
        "rng": {"generator": trainer.generator.get_state(), "torch": trainer.torch_rng.clone()},
        "history": [dict(r) for r in trainer.history],
    }


def save_trainer(trainer, path) -> None:
    """Write ``trainer``'s checkpoint to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = trainer_state(trainer)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())      # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path) -> dict:
    """Read and validate a checkpoint file; a clear ``ValueError`` for anything else.

    Never executes code from the file (``weights_only=True``).
    """
    path = Path(path)
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
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise ValueError(f"{str(path)!r} is an incomplete pwlab checkpoint: missing {missing}")
    try:
        Config.from_dict(state["config"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{str(path)!r} holds an invalid configuration: {e}") from None
    return state


def _differences(a: dict, b: dict, prefix: str = "", ignore=()) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if k in ignore:
            continue
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict) and k not in ("router_kwargs", "aux_weights"):
            out += _differences(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: checkpoint {a.get(k)!r} vs trainer {b.get(k)!r}")
    return out


def _check_matches(trainer, state: dict, path) -> None:
    diffs = []
    names = [t.name for t in trainer.tasks]
    if list(state["tasks"]) != names:
        diffs.append(f"tasks: checkpoint {list(state['tasks'])} vs trainer {names}")
    mine = trainer.config.to_dict()
    diffs += _differences(state["config"]["model"], mine["model"], "model.")
    diffs += _differences(state["config"]["train"], mine["train"], "train.", ignore=RESUMABLE_DIFFERENCES)
    if diffs:
        raise ValueError(f"{str(path)!r} is a checkpoint of another configuration:\n  " + "\n  ".join(diffs))


def _apply(trainer, state: dict, path) -> None:
    """Load ``state`` into ``trainer``; checks every piece on copies first."""
    mine = trainer.model.state_dict()
    try:
        theirs = state["model"]
        if set(theirs) != set(mine):
            raise ValueError(f"model parameters differ: missing {sorted(set(mine) - set(theirs))[:5]}, "
                             f"unexpected {sorted(set(theirs) - set(mine))[:5]}")
        bad = [k for k in mine if not isinstance(theirs[k], torch.Tensor) or theirs[k].shape != mine[k].shape]
        if bad:
            raise ValueError(f"model parameters of other shapes: {bad[:5]}")
        # optimizer, sampler and generator states are tried on stand-ins first
        dummy = [torch.zeros_like(p) for p in trainer.model.parameters()]
        trainer._make_optimizer(dummy).load_state_dict(state["optimizer"])
        s = trainer.sampler
        type(s)(trainer.tasks, batch_size=s.batch_size, strategy=s.strategy, temperature=s.temperature,
                seed=s.seed).load_state_dict(state["sampler"])
        torch.Generator(device=trainer.generator.device).set_state(state["rng"]["generator"])
        rng = state["rng"]["torch"]
        if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8):
            raise ValueError("rng['torch'] is not a generator state")
        torch.Generator().set_state(rng)
        history = [dict(r) for r in state["history"]]
        step = int(state["step"])
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as e:
        raise ValueError(f"{str(path)!r} does not fit this trainer: {str(e).splitlines()[0]}") from None
    # all checks passed: commit
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.generator.set_state(state["rng"]["generator"])
    trainer.torch_rng = rng.clone()
    trainer.history = history
    trainer.step_count = step


def restore_trainer(trainer, path) -> None:
    """Load a checkpoint of the same configuration and tasks into ``trainer``."""
    state = read_checkpoint(path)
    _check_matches(trainer, state, path)
    _apply(trainer, state, path)


def load_trainer(cls, path, tasks=None, *, callbacks=()):
    """A new ``cls`` trainer from a checkpoint; ``tasks`` default to the checkpoint's task names."""
    state = read_checkpoint(path)
    config = Config.from_dict(state["config"])
    if tasks is None:
        from pwlab import tasks as registry
        unknown = [n for n in state["tasks"] if n not in registry.names()]
        if unknown:
            raise ValueError(f"{str(path)!r} names tasks {unknown} that are not in the registry "
                             f"({', '.join(registry.names())}); pass tasks=")
        seeds = state.get("task_seeds") or [0] * len(state["tasks"])
        tasks = [registry.get(n, seed=int(sd)) for n, sd in zip(state["tasks"], seeds)]
    trainer = cls(tasks, config, callbacks=callbacks)
    _check_matches(trainer, state, path)
    _apply(trainer, state, path)
    return trainer


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

