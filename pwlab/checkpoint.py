"""Trainer checkpoints: what one holds, and how it is checked against a trainer and applied.

A checkpoint is the dict :func:`trainer_state` captures from a trainer, written and read as
a file by :mod:`pwlab.checkpoint_file` (atomic write, digest, reading without executing
code; its names are re-exported here). The dict holds only plain containers and tensors::

    format "pwlab-checkpoint", version 1, config (Config.to_dict()), tasks (names),
    router {"name": config's router name, "class": "module.QualName" of its class},
    task_seeds (the data seeds, to rebuild the tasks), step,
    model (state_dict), optimizer (state_dict), sampler (state_dict),
    rng {"generator": routing-noise generator state, "torch": the trainer's dropout RNG state},
    history (list of plain dict records: each typed record's ``as_dict()``, rebuilt with
             :func:`pwlab.history.from_dict` on load)

plus ``digest``, ``"sha256:<hex>"`` over everything else (:func:`payload_digest`), so
``torch.load(weights_only=True)`` reads it: the unpickler refuses anything else, and a
file crafted to run code on load is rejected before any of it runs. Everything is checked
before anything is changed, so a bad file leaves the trainer as it was.

Routers: a checkpoint names its router (the config's ``router``) and records the class it
was registered to. A router registered with :func:`pwlab.routing.register_router` loads back
in a new process once the same registration has run there (import the module that makes
it); without it, loading fails with an error naming the name, the class and its module.
The checkpoint never imports that module itself: loading executes no code from the file.

Integrity and files (see :mod:`pwlab.checkpoint_file`): a file whose contents changed after
it was written raises :class:`CheckpointIntegrityError` (a ``ValueError``), one without a
digest (older pwlab) loads with a :class:`UserWarning`; a save goes to a temporary file
renamed over the target, and stale temporary files of killed saves are removed
(``STALE_TEMP_AGE_S``).

Devices: tensors are read onto the CPU (``map_location="cpu"``), so a checkpoint written on
a GPU reads on a machine without one; :meth:`pwlab.train.Trainer.load` then builds the
trainer on ``device`` (default: the checkpoint's device when it is available, else the CPU).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from pwlab import tasks as registry
from pwlab.checkpoint_file import (DIGEST, FORMAT, STALE_TEMP_AGE_S, VERSION, CheckpointIntegrityError,
                                   clean_stale_temps, payload_digest, read_state, write_state)
from pwlab.config import RESUMABLE_DIFFERENCES, Config
from pwlab.history import from_dict
from pwlab.routing import ROUTERS

__all__ = ["FORMAT", "VERSION", "DIGEST", "STALE_TEMP_AGE_S", "CheckpointIntegrityError", "payload_digest",
           "write_state", "clean_stale_temps", "read_checkpoint", "trainer_state", "save_trainer",
           "restore_trainer", "load_state", "load_trainer", "available_device"]

_KEYS = ("format", "version", "config", "tasks", "step", "model", "optimizer", "sampler", "rng", "history")


def trainer_state(trainer, **parts) -> dict:
    """The checkpoint dict of a trainer (plain containers only), with its ``digest``.

    ``parts`` replace entries (``model``, ``optimizer``, ``rng``) or add ones of plain
    containers, before the digest: a trainer whose state is spread over processes writes the
    whole of it (:class:`pwlab.distributed.trainer.ExpertParallelStrategy`).
    """
    state = {
        "format": FORMAT, "version": VERSION,
        "config": trainer.config.to_dict(),
        "tasks": [t.name for t in trainer.tasks],
        "router": _router_record(trainer.config.model.router),
        "task_seeds": [int(t.meta.get("seed", 0)) for t in trainer.tasks],
        "step": int(trainer.step_count),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "sampler": trainer.sampler.state_dict(),
        "rng": {"generator": trainer.generator.get_state(), "torch": trainer.torch_rng.clone()},
        "history": [r.as_dict() for r in trainer.history],      # plain dicts: loading runs no code
    }
    state.update(parts)
    state["digest"] = payload_digest(state)
    return state


def save_trainer(trainer, path) -> None:
    """Write ``trainer``'s checkpoint to ``path`` atomically (temp file + rename)."""
    write_state(trainer_state(trainer), path)


def read_checkpoint(path) -> dict:
    """Read and validate a checkpoint file; a clear ``ValueError`` for anything else.

    Never executes code from the file (``weights_only=True``); tensors are read onto the CPU.
    Raises :class:`CheckpointIntegrityError` (a ``ValueError``) when the contents do not match
    the recorded digest; warns when the file has none (written by an older pwlab).
    """
    path = Path(path)
    state = read_state(path)            # the file: format, version, digest
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise ValueError(f"{str(path)!r} is an incomplete pwlab checkpoint: missing {missing}")
    _check_router_registered(state, path)
    try:
        Config.from_dict(state["config"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{str(path)!r} holds an invalid configuration: {e}") from None
    return state


def _router_record(name: str) -> dict:
    """``{"name", "class"}`` of the router a config names (the class as ``module.QualName``)."""
    cls = ROUTERS[name]
    return {"name": name, "class": f"{cls.__module__}.{cls.__qualname__}"}


def _check_router_registered(state: dict, path) -> None:
    """A clear error when the checkpoint's router is not registered in this process."""
    model = state.get("config", {}).get("model", {}) if isinstance(state.get("config"), dict) else {}
    name = model.get("router") if isinstance(model, dict) else None
    if not isinstance(name, str) or name in ROUTERS:
        return          # a malformed config is reported by the config check
    record = state.get("router") if isinstance(state.get("router"), dict) else {}
    qualified = str(record.get("class", "")) or "its class"
    module, _, cls = qualified.rpartition(".")
    how = (f"import {module} (or whichever module calls pwlab.register_router({name!r}, {cls}))"
           if module else f"call pwlab.register_router({name!r}, <its class>)")
    raise ValueError(f"{str(path)!r} uses router {name!r} ({qualified}), which is not registered in this process: "
                     f"{how} before loading; registered routers: {', '.join(map(repr, ROUTERS))}")


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
        trainer.make_optimizer(dummy).load_state_dict(state["optimizer"])
        s = trainer.sampler
        type(s)(trainer.tasks, batch_size=s.batch_size, strategy=s.strategy, temperature=s.temperature,
                seed=s.seed).load_state_dict(state["sampler"])
        gen_state = _generator_state(trainer, state, path)
        rng = state["rng"]["torch"]
        if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8):
            raise ValueError("rng['torch'] is not a generator state")
        torch.Generator().set_state(rng)
        history = [from_dict(r) for r in state["history"]]     # typed records rebuilt from plain dicts
        step = int(state["step"])
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as e:
        raise ValueError(f"{str(path)!r} does not fit this trainer: {str(e).splitlines()[0]}") from None
    # all checks passed: commit
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.sampler.load_state_dict(state["sampler"])
    if gen_state is not None:
        trainer.generator.set_state(gen_state)
    else:
        trainer.generator.manual_seed(trainer.config.train.seed + 1 + step)
    trainer.torch_rng = rng.clone()
    trainer.history = history
    trainer.step_count = step


def _generator_state(trainer, state: dict, path):
    """The routing-noise generator state to restore, or None when it belongs to another device type.

    A CUDA generator's state (Philox seed and offset) does not fit a CPU generator, nor the
    reverse: a checkpoint moved between device types resumes with the generator reseeded
    from ``seed + 1 + step`` (a warning says so); only noisy routers draw from it.
    """
    gen = state["rng"]["generator"]
    try:
        torch.Generator(device=trainer.generator.device).set_state(gen)
        return gen
    except (RuntimeError, ValueError, TypeError):
        saved = str(state["config"]["train"].get("device", "cpu"))
        if torch.device(saved).type == trainer.generator.device.type:
            raise
    warnings.warn(f"{str(path)!r} was saved on {saved!r}; its routing-noise generator state does not fit "
                  f"{str(trainer.generator.device)!r}, so the generator is reseeded: the run continues, "
                  "but noisy routing differs from an uninterrupted run on the original device", UserWarning,
                  stacklevel=5)
    return None


def available_device(device: str) -> str:
    """``device`` when this machine has it, else ``"cpu"`` (for loading a GPU checkpoint anywhere)."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        return "cpu"
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return "cpu"
    return device


def restore_trainer(trainer, path, state: dict | None = None) -> None:
    """Load a checkpoint of the same configuration and tasks into ``trainer``.

    ``state``: the checkpoint as :func:`read_checkpoint` returned it, when already read.
    """
    state = read_checkpoint(path) if state is None else state
    load_state(trainer, state, path)


def load_state(trainer, state: dict, path) -> None:
    """Load a checkpoint dict of ``trainer``'s configuration and tasks into it: every piece is
    checked first (``ValueError``), so nothing changes on error."""
    _check_matches(trainer, state, path)
    _apply(trainer, state, path)


def load_trainer(cls, path, tasks=None, *, callbacks=(), device=None, **kwargs):
    """A new ``cls`` trainer from a checkpoint; ``tasks`` default to the checkpoint's task names.

    ``device`` (e.g. ``"cpu"``) overrides the checkpoint's; by default the checkpoint's device
    is used when this machine has it, else the CPU (with a warning).
    """
    state = read_checkpoint(path)
    config = Config.from_dict(state["config"])
    saved = config.train.device
    if device is None:
        device = available_device(saved)
        if device != saved:
            warnings.warn(f"{str(path)!r} was saved for device {saved!r}, which this machine does not have; "
                          f"loading it onto {device!r} (pass device= to choose)", UserWarning, stacklevel=3)
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a device name such as 'cpu' or 'cuda', got {device!r}")
    try:
        device = str(torch.device(device))
    except RuntimeError as e:
        raise ValueError(f"device must be a device name such as 'cpu' or 'cuda', got {device!r}: {e}") from None
    if device != saved:
        config = config.with_train(device=device)
    if tasks is None:
        unknown = [n for n in state["tasks"] if n not in registry.names()]
        if unknown:
            raise ValueError(f"{str(path)!r} names tasks {unknown} that are not in the registry "
                             f"({', '.join(registry.names())}); pass tasks=")
        seeds = state.get("task_seeds") or [0] * len(state["tasks"])
        tasks = [registry.get(n, seed=int(sd)) for n, sd in zip(state["tasks"], seeds)]
    trainer = cls(tasks, config, callbacks=callbacks, **kwargs)
    trainer.strategy.restore(trainer, path, state)
    return trainer
