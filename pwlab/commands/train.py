"""``pwlab train``: train a preset headless, print per-task results, write a checkpoint and a report.

    pwlab train --preset tiny --tasks all --steps 300 --out runs/tiny
    pwlab train --resume runs/tiny --steps 200          # 200 more steps, same configuration
    pwlab train --preset tiny --steps 300 --nproc 4     # expert parallel over 4 local processes

With ``--nproc N`` (N > 1) the run is handed to ``torch.distributed.run`` with
:mod:`pwlab.distributed.train` (experts sharded over N gloo processes, the rest data
parallel); that path prints JSON results and writes no checkpoint.

Writes ``OUT/checkpoint.pt`` (see :mod:`pwlab.checkpoint`) and ``OUT/report.html`` (one
self-contained file: plotly.js embedded, opens without a server or internet).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pwlab train", description="Train a preset on several tasks at once.")
    p.add_argument("--preset", default=None, help="tiny, small, tiny-dense or small-dense (default tiny)")
    p.add_argument("--tasks", default=None, help="'all' or comma-separated task names (default all)")
    p.add_argument("--steps", type=int, default=None, help="training steps to run (default: the preset's)")
    p.add_argument("--out", default=None, help="output folder (default: the --resume folder)")
    p.add_argument("--resume", default=None, help="a folder holding checkpoint.pt: continue that run")
    p.add_argument("--seed", type=int, default=None, help="seed of init, sampling and routing noise (default 0)")
    p.add_argument("--router", default=None, help="router name (default: the preset's)")
    p.add_argument("--eval-examples", type=int, default=None, help="test examples per task (default: all)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the preset's matrices are too small to gain from more, "
                        "and spare threads spin and slow every step down when the cores are shared)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1,
                   help="local processes for expert parallelism (default 1; > 1 runs under torch.distributed.run)")
    return p


def _distributed(args) -> int:
    """Re-run as ``python -m torch.distributed.run --nproc_per_node=N -m pwlab.distributed.train ...``."""
    import subprocess
    if args.resume or args.out:
        print("pwlab train: --nproc > 1 writes no checkpoint: drop --out/--resume", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "pwlab.distributed.train"]
    for flag in ("preset", "tasks", "steps", "seed", "router", "eval_examples"):
        value = getattr(args, flag)
        if value is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
    if args.no_progress:
        cmd.append("--no-progress")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    return subprocess.call(cmd, env=env)


def _task_names(spec: str) -> list[str] | str:
    from pwlab import tasks
    if spec == "all":
        return "all"
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in tasks.names()]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or [spec]}; known tasks: all, {', '.join(tasks.names())}")
    return names


def _build(args):
    from pwlab import config, tasks
    from pwlab.train import Trainer
    if args.resume:
        clash = [f"--{k}" for k in ("preset", "tasks", "seed", "router") if getattr(args, k) is not None]
        if clash:
            raise ValueError(f"{', '.join(clash)} cannot be combined with --resume (the checkpoint fixes them)")
        ckpt = Path(args.resume) / "checkpoint.pt"
        return Trainer.load(ckpt), Path(args.out or args.resume)
    if not args.out:
        raise ValueError("--out is required (or --resume DIR)")
    cfg = config.preset(args.preset or "tiny")
    if args.seed is not None:
        cfg = cfg.with_train(seed=args.seed)
    if args.router is not None:
        cfg = cfg.with_model(router=args.router)
    chosen = tasks.load(_task_names(args.tasks or "all"))
    return Trainer(chosen, cfg), Path(args.out)


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())      # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.nproc < 1:
        print(f"pwlab train: --nproc must be >= 1, got {args.nproc}", file=sys.stderr)
        return 2
    if args.nproc > 1:
        return _distributed(args)
    try:
        if args.steps is not None and args.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {args.steps}")
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        trainer, out = _build(args)
    except ValueError as e:
        print(f"pwlab train: {e}", file=sys.stderr)
        return 2
    import torch

    from pwlab import tasks as registry
    from pwlab.pathways import pathway_map
    from pwlab.viz.report import report_html

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        out.mkdir(parents=True, exist_ok=True)
        steps = trainer.config.train.steps if args.steps is None else args.steps
        t0 = time.perf_counter()
        try:
            trainer.fit(steps, progress=not args.no_progress)
        except KeyboardInterrupt:
            print(f"\ninterrupted after step {trainer.step_count}; saving what is done", file=sys.stderr)
        seconds = time.perf_counter() - t0
        results = trainer.evaluate(max_examples=args.eval_examples)
        chance = {t.name: registry.chance(t) for t in trainer.tasks}
        metric = {t.name: t.metric for t in trainer.tasks}
        print(f"trained {trainer.config.name} to step {trainer.step_count} ({steps} steps in {seconds:.1f} s)")
        print(f"{'task':<15}{'metric':<10}{'result':>8}{'chance':>8}")
        for name, v in results.items():
            print(f"{name:<15}{metric[name]:<10}{v:8.3f}{chance[name]:8.3f}")
        trainer.save(out / "checkpoint.pt")
        pmap = pathway_map(trainer.model, trainer.tasks, max_examples=256)
        notes = [f"preset {trainer.config.name}, router {trainer.config.model.router}, seed {trainer.config.train.seed}, "
                 f"{trainer.step_count} steps; {steps} in this run took {seconds:.1f} s"]
        html = report_html(trainer.history, title=f"pwlab train: {trainer.config.name}", pmap=pmap,
                           results=results, chance=chance, metric=metric, notes=notes)
        _write_text(out / "report.html", html)
        print(f"wrote {out / 'checkpoint.pt'} and {out / 'report.html'}")
    finally:
        torch.set_num_threads(threads)       # main() may run inside a larger process (tests, notebooks)
    return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

