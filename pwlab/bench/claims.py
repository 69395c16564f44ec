"""``pwlab bench claims``: the papers' headline claims, measured in miniature.

Runs each experiment of :mod:`pwlab.experiments` for seeds 0..N-1 (``--seeds``, default 3;
``--quick``: smaller step counts and one seed) and prints one row per claim and regime
(``--regime``: ``default``, the lab's tiny setting, and ``paper``, the paper-like study with
its sweep, :mod:`pwlab.experiments.studies`): the paper's number, our measurement (mean ±
sample standard deviation over the seeds) and whether it held by the criterion fixed in the
experiment's module. ``--json`` prints one JSON object per row instead of the table (with the
regime, criterion, headline mean and sd, seeds held and, for the paper regime, the sweep).
Progress goes to stderr, the table to stdout.

Experiments run in ``--jobs`` worker processes (default 2, one per core) with one torch
thread each: the models are small, so two single-threaded processes get more done on two
cores than one process with two threads. The unit of work is one seed of a claim, or, for a
study whose sweep points are independent (its ``run`` takes ``values``), one point of one
seed: three seeds of a two-point sweep are six jobs that keep both cores busy to the end,
where three whole seeds would leave one core idle for the last.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

import torch
from tqdm.auto import tqdm

from pwlab import experiments
from pwlab.experiments import CLAIMS, REGIMES, common
from pwlab.experiments import names as claim_names
from pwlab.experiments.studies import _sweep
from pwlab.commands import _args


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _points(name: str, regime: str, quick: bool) -> list[tuple | None]:
    """The jobs of one seed: ``[None]`` (the whole run), or one 1-tuple per sweep point where the
    experiment's ``run`` takes ``values`` (its points are independent)."""
    mod = experiments.experiment(name, regime)
    if "values" not in inspect.signature(mod.run).parameters:
        return [None]
    return [(v,) for v in (mod.QUICK_VALUES if quick else mod.VALUES)]


def _run_one(name: str, regime: str, seed: int, quick: bool,
             values: tuple | None = None) -> tuple[tuple[str, str], int, dict, float, float]:
    """One experiment, regime and seed (``values``: only those sweep points); returns its result,
    wall seconds and CPU seconds of this process (the CPU time tells what a run costs on a core of
    its own when the machine is shared)."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        mod = experiments.experiment(name, regime)
        result = mod.run(seed=seed, quick=quick) if values is None else mod.run(seed=seed, quick=quick, values=values)
    except Exception as e:      # one broken experiment must not hide the other rows
        result = {"error": f"{type(e).__name__}: {e}"}
    return (name, regime), seed, result, time.perf_counter() - t0, time.process_time() - c0


def _combine(parts: dict) -> dict:
    """One seed's run from its jobs' results (keyed by the job's points, in sweep order)."""
    results = [parts[p] for p in parts]
    errors = [r for r in results if "error" in r]
    return errors[0] if errors else results[0] if len(results) == 1 else _sweep.merge(results)


def row(name: str, regime: str, runs: list[dict], quick: bool, time_s: float = 0.0, cpu_s: float = 0.0) -> dict:
    """The table row of claim ``name`` in ``regime`` from its runs (one per seed, seeds 0..N-1)."""
    claim = CLAIMS[name]
    mod = experiments.experiment(name, regime)
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        summary = {"measured": f"not measured: {errors[0]}", "held": False, "seeds_held": 0, "numbers": {}}
        head = None
    else:
        summary = mod.summarize(runs)
        head = common.spread([experiments.headline(name, regime, r) for r in runs])
    return {"number": claim.number, "name": name, "regime": regime, "setting": experiments.setting(name, regime),
            "title": claim.title, "claim": claim.statement, "reference": claim.reference,
            "criterion": experiments.criterion(name, regime), "headline": experiments.headline_label(name, regime),
            "mean": None if head is None else head["mean"], "sd": None if head is None else head["std"],
            "measured": summary["measured"], "held": bool(summary["held"]),
            "seeds": len(runs), "seeds_held": int(summary["seeds_held"]), "quick": quick,
            "regimes_tried": int(getattr(mod, "REGIMES_TRIED", 1)), "sweep": summary.get("sweep", {}),
            "time_s": round(time_s, 1), "cpu_s": round(cpu_s, 1), "numbers": summary["numbers"]}


def run_claims(names: list[str], seeds: int, quick: bool, jobs: int = 2, threads: int = 1,
               progress: bool = True, regimes: tuple[str, ...] = ("default",)) -> list[dict]:
    """Run every (claim, regime, seed) and return one row dict per claim and regime, in table order.

    ``time_s`` and ``cpu_s`` of a row are the wall and CPU seconds of its jobs, summed."""
    keys = [(n, g) for n in names for g in REGIMES if g in regimes]
    work = [(k, s, p) for k in keys for s in range(seeds) for p in _points(*k, quick)]
    parts: dict[tuple, dict[int, dict]] = {k: {s: {} for s in range(seeds)} for k in keys}
    for k, s, p in work:
        parts[k][s][p] = None                                   # keeps the sweep order
    seconds = {k: 0.0 for k in keys}
    cpu = {k: 0.0 for k in keys}
    with tqdm(total=len(work), desc="claims", file=sys.stderr, disable=not progress) as bar:
        def record(point, done):
            key, seed, res, sec, c = done
            parts[key][seed][point], seconds[key], cpu[key] = res, seconds[key] + sec, cpu[key] + c
            where = "" if point is None else f" at {point[0]}"
            bar.set_postfix_str(f"{key[0]} ({key[1]}) seed {seed}{where}: {sec:.0f}s")
            bar.update(1)
        if jobs <= 1:
            _init_worker(threads)
            for (n, g), s, p in work:
                record(p, _run_one(n, g, s, quick, p))
        else:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                                     initializer=_init_worker, initargs=(threads,)) as pool:
                futures = {pool.submit(_run_one, n, g, s, quick, p): p for (n, g), s, p in work}
                for fut in as_completed(futures):
                    record(futures[fut], fut.result())
    return [row(n, g, [_combine(parts[(n, g)][s]) for s in range(seeds)], quick, seconds[(n, g)], cpu[(n, g)])
            for n, g in keys]


def table(rows: list[dict]) -> str:
    """A Markdown table of the rows (the form ``docs/claims.md`` quotes)."""
    lines = ["| # | claim | regime | paper | measured (mean ± sd over seeds) | held | seeds held | time (cpu) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['number']} | {r['title']} | {r.get('regime', 'default')} | {r['reference']} | "
                     f"{r['measured']} | {'yes' if r['held'] else 'no'} | {r['seeds_held']}/{r['seeds']} | "
                     f"{r['time_s']:.0f}s ({r['cpu_s']:.0f}s) |")
    return "\n".join(lines)


def sweeps(rows: list[dict]) -> str:
    """Markdown lines, one per row with a sweep: the criterion, then mean ± sd at each knob value."""
    lines = []
    for r in rows:
        sw = r.get("sweep") or {}
        if not sw.get("points"):
            continue
        pts = "; ".join(f"{'**' if str(v) == str(sw.get('paper_value')) else ''}{v}: "
                        f"{common.fmt(s, 3)}{'**' if str(v) == str(sw.get('paper_value')) else ''}"
                        for v, s in sw["points"].items())
        lines.append(f"- **{r['number']}. {r['title']}** ({r.get('regimes_tried', 1)} regimes tried; criterion: "
                     f"{r['criterion']}; held: {'yes' if r['held'] else 'no'}, {r['seeds_held']}/{r['seeds']} seeds). "
                     f"{sw.get('metric', '')} by {sw.get('knob', '')}: {pts}")
    return "\n".join(lines)


#: the saved ``--json`` outputs of the full runs, shipped with the package (docs/claims.md is
#: made from them with ``--from``; notebooks and hand-outs read them with :func:`saved_rows`)
RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "results"


def saved_rows(name: str) -> list[dict]:
    """The rows of a saved run shipped with pwlab: ``name`` is one of ``default_full``,
    ``default_quick``, ``paper_full``, ``paper_quick``."""
    names = sorted(p.stem for p in RESULTS.glob("*.jsonl"))
    if name not in names:
        raise ValueError(f"name must be one of {names}, got {name!r}")
    return load_rows(str(RESULTS / f"{name}.jsonl"))


def load_rows(path: str) -> list[dict]:
    """The rows of a saved ``--json`` output (one JSON object per line; blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for i, r in enumerate(rows):
        missing = {"number", "title", "reference", "measured", "held", "seeds_held", "seeds"} - set(r)
        if missing:
            raise ValueError(f"--from {path}: line {i + 1} is not a claims row, it lacks {sorted(missing)}")
    return sorted(rows, key=lambda r: (r["number"], REGIMES.index(r.get("regime", "default"))))


def main(argv: list[str] | None = None) -> int:
    p = _args.Parser(prog="pwlab bench claims", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per row instead of the table")
    p.add_argument("--quick", action="store_true", help="smaller step counts, one seed (unless --seeds)")
    p.add_argument("--seeds", type=_args.positive_int, default=None,
                   help="seeds 0..N-1 (default 3, or 1 with --quick)")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=claim_names(),
                   help="only these claims: " + ", ".join(claim_names()))
    p.add_argument("--regime", nargs="+", choices=REGIMES, default=list(REGIMES),
                   help="which regimes: default (the lab's tiny setting), paper (the paper-like study and its "
                        "sweep); default both")
    p.add_argument("--from", dest="source", metavar="FILE", nargs="+",
                   help="print the table and sweeps of saved --json output (one or more files) instead of running")
    p.add_argument("--jobs", type=_args.positive_int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=_args.positive_int, default=1, help="torch threads per worker (default 1)")
    args = p.parse_args(argv)
    if args.source:
        rows = [r for path in args.source for r in load_rows(path)]
        rows.sort(key=lambda r: (r["number"], REGIMES.index(r.get("regime", "default"))))
        print(table(rows))
        text = sweeps(rows)
        print(f"\n{text}" if text else "")
        return 0
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    chosen = [n for n in claim_names() if args.only is None or n in args.only]
    t0 = time.perf_counter()
    rows = run_claims(chosen, seeds, args.quick, jobs=args.jobs, threads=args.threads, regimes=tuple(args.regime))
    wall = time.perf_counter() - t0
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(table(rows))
        cpu = sum(r["cpu_s"] for r in rows)
        print(f"\n{len(rows)} rows ({', '.join(args.regime)}), {sum(r['held'] for r in rows)} held; {seeds} seed(s)"
              f"{', quick' if args.quick else ''}; wall {wall:.0f}s with {args.jobs} worker(s); "
              f"experiments' CPU time {cpu:.0f}s (time per row: wall of its jobs summed, CPU in brackets)")
    print(f"claims: wall {wall:.1f}s", file=sys.stderr)
    return 1 if any(r["measured"].startswith("not measured") for r in rows) else 0
