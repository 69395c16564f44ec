"""Distributed training from the command line, launched by torchrun (gloo on CPU, NCCL on GPU):

    torchrun --nproc_per_node=4 -m pwlab.distributed.train --preset tiny --tasks all --steps 300

Experts are sharded over the processes, everything else is replicated and its gradients are
summed (see :class:`~pwlab.distributed.trainer.DistributedTrainer`). ``--save PATH`` writes a
checkpoint at the end (a single-process one: ``pwlab.Trainer.load`` reads it), ``--resume PATH``
continues from one; a run resumed in a group of the same size continues exactly. Rank 0 prints one JSON
line per training record with ``--history``, then a JSON summary with the evaluation.
Without torchrun it runs as a single process (a group of one).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import torch.distributed as dist

from pwlab import config, tasks
from pwlab.distributed.trainer import DistributedTrainer
from pwlab.history import StepRecord


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pwlab.distributed.train",
                                description="Train a preset with expert parallelism (run under torchrun).")
    p.add_argument("--preset", default="tiny", help="tiny, small, tiny-dense or small-dense (default tiny)")
    p.add_argument("--tasks", default="all", help="'all' or comma-separated task names (default all)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="seed of init, sampling and routing noise")
    p.add_argument("--router", default=None, help="router name (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="examples per step over all ranks")
    p.add_argument("--eval-examples", type=int, default=None, help="test examples per task (default: the preset's)")
    p.add_argument("--backend", default=None, choices=["gloo", "nccl"], help="default: nccl with CUDA, else gloo")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="continue from this checkpoint (of this or a single-process run; every rank must see it)")
    p.add_argument("--save", default=None, metavar="PATH", help="write a checkpoint here at the end (rank 0 writes it)")
    p.add_argument("--history", action="store_true", help="print every training record as a JSON line")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds any collective may wait")
    return p


def _init(backend: str | None, timeout: float) -> bool:
    """Join torchrun's group (or make a group of one); True if this call created it."""
    if dist.is_initialized():
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    wait = datetime.timedelta(seconds=timeout)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=wait)
    else:                                   # a group of one needs no rendezvous: an in-process store
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=wait)
    return True


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    created = _init(args.backend, args.timeout)
    rank = dist.get_rank()
    try:
        try:
            cfg = config.preset(args.preset)
            changes = {k: v for k, v in (("seed", args.seed), ("batch_size", args.batch_size),
                                         ("eval_examples", args.eval_examples)) if v is not None}
            if changes:
                cfg = cfg.with_train(**changes)
            if args.router is not None:
                cfg = cfg.with_model(router=args.router)
            if args.steps is not None and args.steps < 0:
                raise ValueError(f"--steps must be >= 0, got {args.steps}")
            names = "all" if args.tasks == "all" else [n.strip() for n in args.tasks.split(",") if n.strip()]
            trainer = DistributedTrainer(tasks.load(names), cfg)
            if args.resume is not None:
                trainer.restore(args.resume)      # collective: raises on every rank if it fails on any
        except ValueError as e:          # the same arguments on every rank: every rank stops here
            if rank == 0:
                print(f"pwlab.distributed.train: {e}", file=sys.stderr)
            return 2
        if args.history and rank == 0:
            trainer.callbacks.append(lambda _t, rec: print(json.dumps(rec), flush=True))
        steps = cfg.train.steps if args.steps is None else args.steps
        trainer.fit(steps, progress=rank == 0 and not args.no_progress)
        if args.save is not None:
            trainer.save(args.save)
        results = trainer.evaluate(record=False)
        if rank == 0:
            losses = [r.loss for r in trainer.history if isinstance(r, StepRecord)]
            print(json.dumps({"world_size": trainer.world_size, "preset": cfg.name, "steps": trainer.step_count,
                              "first_loss": losses[0] if losses else None,
                              "last_loss": losses[-1] if losses else None, "eval": results}), flush=True)
        return 0
    finally:
        if created:
            dist.destroy_process_group()


if __name__ == "__main__":
    code = main()
    # Leave without interpreter finalization. A gloo worker thread releases the tensors of the
    # last collective just after the caller sees it complete, and needs the GIL to do so; if
    # the interpreter is finalizing by then, the thread is killed inside a destructor and the
    # process aborts ("terminate called without an active exception", about 1 run in 15
    # here). The process group is already destroyed and nothing else needs tearing down.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
