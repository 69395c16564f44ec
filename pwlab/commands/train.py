"""``pwlab train``: train a preset headless, print per-task results, write a checkpoint and a report.

    pwlab train --preset tiny --tasks all --steps 300 --out runs/tiny
    pwlab train --resume runs/tiny --steps 200          # 200 more steps, same configuration
    pwlab train --preset tiny --steps 300 --nproc 4     # expert parallel over 4 local processes

An ``--out`` folder that already holds a run (``checkpoint.pt`` or ``report.html``) is left
alone unless the run is continued there (``--resume DIR``) or ``--force`` says to replace it.
A loss that turns NaN or Inf stops the run with the step and task named and nothing saved;
``--skip-nonfinite`` skips such batches instead (the Trainer's ``skip_nonfinite``).

With ``--nproc N`` (N > 1) the run is handed to ``torch.distributed.run`` with
:mod:`pwlab.distributed.train` (experts sharded over N gloo processes, the rest data
parallel); that path prints JSON results and writes no checkpoint.

Writes ``OUT/checkpoint.pt`` (see :mod:`pwlab.checkpoint`) and ``OUT/report.html`` (one
self-contained file: plotly.js embedded, opens without a server or internet).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from pwlab._files import write_text_atomically
from pwlab.commands import _args

PROG = "pwlab train"
# files a run writes into --out: any of them there means another run's output
OUTPUTS = ("checkpoint.pt", "report.html")


def _parser() -> _args.Parser:
    p = _args.Parser(prog=PROG, description="Train a preset on several tasks at once.")
    p.add_argument("--preset", default=None, help="tiny, small, tiny-dense or small-dense (default tiny)")
    p.add_argument("--tasks", default=None, help="'all' or comma-separated task names (default all)")
    p.add_argument("--steps", type=_args.nonnegative_int, default=None,
                   help="training steps to run (default: the preset's)")
    p.add_argument("--out", default=None, help="output folder (default: the --resume folder)")
    p.add_argument("--resume", default=None, help="a folder holding checkpoint.pt: continue that run")
    p.add_argument("--seed", type=_args.seed, default=None,
                   help="seed of init, sampling and routing noise (default 0)")
    p.add_argument("--router", default=None, help="router name (default: the preset's)")
    p.add_argument("--eval-examples", type=_args.positive_int, default=None,
                   help="test examples per task (default: all)")
    p.add_argument("--threads", type=_args.positive_int, default=1,
                   help="torch CPU threads (default 1: the preset's matrices are too small to gain from more, "
                        "and spare threads spin and slow every step down when the cores are shared)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="skip a batch whose loss is NaN or Inf instead of stopping the run "
                        "(this invocation only: give it again with --resume)")
    p.add_argument("--force", action="store_true",
                   help="replace the checkpoint and report of another run in --out")
    p.add_argument("--nproc", type=_args.positive_int, default=1,
                   help="local processes for expert parallelism (default 1; > 1 runs under torch.distributed.run)")
    return p


def _distributed(args) -> int:
    """Re-run as ``python -m torch.distributed.run --nproc_per_node=N -m pwlab.distributed.train ...``."""
    import subprocess
    if args.resume or args.out:
        return _args.fail(PROG, "--nproc > 1 writes no checkpoint: drop --out/--resume")
    if args.skip_nonfinite:
        return _args.fail(PROG, "--skip-nonfinite is not available with --nproc > 1")
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


def _check_out(out: Path, resume: str | None, force: bool) -> None:
    """Refuse an ``--out`` that is not a folder, or that holds another run (unless ``force``)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ValueError(f"--out {str(out)!r} cannot be made: {str(above)!r} is a file, not a folder")
    found = [name for name in OUTPUTS if (out / name).exists()]
    continued = resume is not None and out.resolve() == Path(resume).resolve()
    if found and not continued and not force:
        raise ValueError(f"--out {str(out)!r} holds another run ({', '.join(found)}); continue it with "
                         f"--resume {str(out)!r}, or pass --force to replace it")


def _make_out(out: Path) -> None:
    """Create ``out`` and check a file can be written there, before any training time is spent."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pwlab-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"--out {str(out)!r} is not writable: {e.strerror or e}") from None


def _build(args):
    from pwlab import config, tasks
    from pwlab.train import Trainer
    if args.resume:
        clash = [f"--{k}" for k in ("preset", "tasks", "seed", "router") if getattr(args, k) is not None]
        if clash:
            raise ValueError(f"{', '.join(clash)} cannot be combined with --resume (the checkpoint fixes them)")
        out = Path(args.out or args.resume)
        _check_out(out, args.resume, args.force)
        trainer = Trainer.load(Path(args.resume) / "checkpoint.pt")
        if trainer.config.train.skip_nonfinite != args.skip_nonfinite:
            # the flag holds for this invocation only, whatever the checkpoint's run used; it is
            # one of the settings a resumed run may change (config.RESUMABLE_DIFFERENCES)
            trainer.config = trainer.config.with_train(skip_nonfinite=args.skip_nonfinite)
        return trainer, out
    if not args.out:
        raise ValueError("--out is required (or --resume DIR)")
    out = Path(args.out)
    _check_out(out, None, args.force)
    cfg = config.preset(args.preset or "tiny")
    if args.seed is not None:
        cfg = cfg.with_train(seed=args.seed)
    if args.router is not None:
        cfg = cfg.with_model(router=args.router)
    if args.skip_nonfinite:
        cfg = cfg.with_train(skip_nonfinite=True)
    chosen = tasks.load(_task_names(args.tasks or "all"))
    return Trainer(chosen, cfg), out


def _nonfinite_message(e: FloatingPointError, skipping: bool) -> str:
    """One line: where the loss went NaN/Inf, that nothing was saved, and what to try."""
    where = (f"the loss became {getattr(e, 'value', 'non-finite')} at step {e.step} in task {e.task!r}"
             if hasattr(e, "step") and hasattr(e, "task") else " ".join(str(e).split()))
    fix = ("lower the learning rate" if skipping
           else "lower the learning rate, or pass --skip-nonfinite to skip such batches")
    return f"{where}; nothing was saved ({fix})"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.nproc > 1:
        return _distributed(args)
    try:
        trainer, out = _build(args)
        _make_out(out)
    except ValueError as e:
        return _args.fail(PROG, str(e))
    import torch

    from pwlab import tasks as registry
    from pwlab.pathways import pathway_map
    from pwlab.viz.report import report_html

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        steps = trainer.config.train.steps if args.steps is None else args.steps
        t0 = time.perf_counter()
        try:
            trainer.fit(steps, progress=not args.no_progress)
        except KeyboardInterrupt:
            print(f"\ninterrupted after step {trainer.step_count}; saving what is done", file=sys.stderr)
        except FloatingPointError as e:       # the Trainer's NonFiniteLossError and its kin
            return _args.fail(PROG, _nonfinite_message(e, args.skip_nonfinite))
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
        write_text_atomically(out / "report.html", html)
        print(f"wrote {out / 'checkpoint.pt'} and {out / 'report.html'}")
    finally:
        torch.set_num_threads(threads)       # main() may run inside a larger process (tests, notebooks)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

