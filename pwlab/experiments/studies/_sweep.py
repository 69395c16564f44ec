"""The studies' shared bookkeeping: one key per sweep point and metric, and the sweep's spread."""
from __future__ import annotations

from pwlab.experiments import common


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
