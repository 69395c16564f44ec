"""Run a function on P local processes joined in a gloo group: tests, benchmarks, notebooks.

``run_local(fn, world_size, *args)`` spawns P local processes, joins them in a process group
(rendezvous through a file in a fresh temporary folder, so no port can be taken by another
program between choosing it and binding it) and calls ``fn(rank, world_size, *args)`` in each; it returns the P
results in rank order. A rank that raises makes ``run_local`` raise
:class:`DistributedRunError` with every rank's traceback; a run that exceeds ``timeout``
seconds is terminated (its processes, by id) — a broken collective never hangs the caller.
``fn`` must be importable (a module-level function) because the processes are spawned.

Multi-machine or GPU runs use ``torchrun`` instead; see :mod:`pwlab.distributed.train`.
"""
from __future__ import annotations

import datetime
import os
import pickle
import queue as _queue
import shutil
import sys
import tempfile
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class DistributedRunError(RuntimeError):
    """One or more ranks failed; ``errors`` maps rank -> (exception type name, message, traceback)."""

    def __init__(self, errors: dict[int, tuple[str, str, str]]):
        self.errors = errors
        lines = [f"rank {r}: {name}: {msg}\n{tb}" for r, (name, msg, tb) in sorted(errors.items())]
        super().__init__(f"{len(errors)} rank(s) failed\n" + "\n".join(lines))


def _worker(rank, world_size, rendezvous, backend, pg_timeout, threads, fn, args, results):
    try:
        torch.set_num_threads(threads)
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
        dist.init_process_group(backend, init_method=f"file://{rendezvous}", rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=pg_timeout))
        try:
            # plain pickle: tensors travel by value (a shared-memory handle would die with this process)
            results.put((rank, "ok", pickle.dumps(fn(rank, world_size, *args))))
        finally:
            dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, never swallowed
        results.put((rank, "error", (type(exc).__name__, str(exc), traceback.format_exc())))
    # Leave without interpreter finalization, as pwlab.distributed.train does: torch can keep the
    # group's gloo threads alive past destroy_process_group(), and one releasing a tensor during
    # finalization aborts the process. The queue's feeder thread is flushed first, so the result
    # is in the pipe before the process goes.
    results.close()
    results.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_local(fn, world_size: int, *args, backend: str = "gloo", timeout: float = 60.0,
              threads: int = 1) -> list:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` spawned processes; results by rank.

    Args:
        fn: a module-level function (spawned processes import it).
        world_size: P >= 1.
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per rank).
        timeout: seconds for the whole run; also bounds every collective.
        threads: torch threads per process.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be one of 'gloo', 'nccl'; got {backend!r}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    folder = tempfile.mkdtemp(prefix="pwlab-run-local-")
    rendezvous = os.path.join(folder, "rendezvous")
    pg_timeout = max(5.0, float(timeout) * 0.75)
    procs = [ctx.Process(target=_worker, args=(r, world_size, rendezvous, backend, pg_timeout, threads, fn, args,
                                               results), daemon=True) for r in range(world_size)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    got: dict[int, tuple[str, object]] = {}
    try:
        while len(got) < world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"run_local: {world_size - len(got)} rank(s) did not finish within {timeout} s "
                                   f"(finished: {sorted(got)})")
            try:
                rank, status, value = results.get(timeout=min(left, 1.0))
            except _queue.Empty:
                dead = [i for i, p in enumerate(procs) if i not in got and p.exitcode not in (None, 0)]
                if not dead:
                    continue
                try:            # a rank can die on its way out after its result is sent: read it first
                    rank, status, value = results.get(timeout=0.5)
                except _queue.Empty:
                    raise DistributedRunError({i: ("ProcessDied", f"exit code {procs[i].exitcode}", "")
                                               for i in dead}) from None
            got[rank] = (status, value)
    finally:
        for p in procs:
            p.join(timeout=5 if len(got) == world_size else 0.1)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        results.close()
        shutil.rmtree(folder, ignore_errors=True)
    errors = {r: v for r, (s, v) in got.items() if s == "error"}
    if errors:
        raise DistributedRunError(errors)
    return [pickle.loads(got[r][1]) for r in range(world_size)]
