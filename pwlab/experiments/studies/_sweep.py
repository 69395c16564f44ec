"""The studies' shared bookkeeping: one key per sweep point and metric, and the sweep's spread."""
from __future__ import annotations

from collections.abc import Sequence

from pwlab.config import Config, tiny
from pwlab.experiments import common


def values(chosen: Sequence | None, default: Sequence) -> tuple:
    """The sweep points a ``run`` measures: ``chosen`` (a subset of the study's ``VALUES``, so
    the points of one seed can run in separate processes) or else ``default`` (``VALUES``, or
    ``QUICK_VALUES`` with ``quick``). Each point is measured on its own — its models are built
    from the seed alone — so a run of some points equals those points of the whole run."""
    if chosen is None:
        return tuple(default)
    chosen = tuple(chosen)
    unknown = [v for v in chosen if v not in default]
    if not chosen or unknown:
        raise ValueError(f"values must be a non-empty subset of {list(default)}, got {list(chosen)}")
    return chosen


def merge(parts: list[dict]) -> dict:
    """One run from the runs of some points each (:func:`values`), points in the order given."""
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            if not k.startswith("sweep/") and k in out and out[k] != v:
                raise ValueError(f"the parts disagree on {k!r}: {out[k]!r} vs {v!r}")
            out[k] = v
    return out


def key(value, metric: str) -> str:
    """``sweep/<value>/<metric>``: the run key of one metric at one point of the sweep."""
    return f"sweep/{value}/{metric}"


def points(run: dict) -> list[str]:
    """The sweep points present in a run, in the order they were run."""
    seen: list[str] = []
    for k in run:
        if k.startswith("sweep/"):
            v = k.split("/")[1]
            if v not in seen:
                seen.append(v)
    return seen


def sweep(runs: list[dict], metric: str) -> dict:
    """Per sweep point: :func:`pwlab.experiments.common.spread` of ``metric`` over the runs."""
    return {v: common.collect(runs, key(v, metric)) for v in points(runs[0]) if key(v, metric) in runs[0]}


def numbers(runs: list[dict]) -> dict:
    """:func:`pwlab.experiments.common.spread` of every numeric sweep key over the runs."""
    return {k: common.collect(runs, k) for k, v in runs[0].items()
            if k.startswith("sweep/") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def summary(runs: list[dict], numbers: dict, measured: str, holds, *, knob: str, paper_value, metric: str,
            headline: str, **extra) -> dict:
    """What every study's ``summarize`` returns: ``measured`` text, ``held`` (``holds`` of the
    mean of every number over the seeds), ``seeds_held`` (``holds`` of each run), ``numbers``
    and ``sweep`` (the ``knob``, its ``paper_value``, ``metric`` naming the sweep of the
    ``headline`` metric per point, and ``extra`` entries: threshold, paper number, second sweeps)."""
    return {"measured": measured, "held": bool(holds({k: v["mean"] for k, v in numbers.items()})),
            "seeds_held": sum(bool(holds(r)) for r in runs), "numbers": numbers,
            "sweep": {"knob": knob, "metric": metric, "paper_value": paper_value, **extra,
                      "points": sweep(runs, headline)}}


def routing_level_config(seed: int, point: str, top_k: int = 2) -> Config:
    """The config of a ``"<level>-E<experts>"`` sweep point (the task-subnetwork and ablation
    studies): learned task-level routing (``"task"``) or token-level top-k (``"token"``) over
    that many experts in every block, the claims' shared training settings."""
    level, experts = point.split("-E")
    router = {"router": "task", "router_kwargs": {"mode": "learned"}} if level == "task" else {"router": "topk"}
    return tiny().with_model(top_k=top_k, num_experts=int(experts), moe_layers="all", **router).with_train(
        seed=seed, **common.TRAIN)
