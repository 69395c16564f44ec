"""A self-contained HTML training report: results table, per-task curves, expert load, pathways.

The figures are the :mod:`pwlab.viz` ones; this module only lays them out in one HTML
string. plotly.js is embedded once (with the first figure) and the others reuse it, so the
file opens from disk with no server and no internet.
"""
from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.io as pio

from pwlab.viz.pathways import expert_heatmaps, pathway_sankey, sense_bars
from pwlab.viz.training import load_over_training, task_curves


def results_table(results: dict[str, float], chance: dict[str, float] | None = None,
                  metric: dict[str, str] | None = None) -> str:
    """An HTML table: task, metric, result, chance level (a constant guess on the test split)."""
    chance = chance or {}
    metric = metric or {}
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{html.escape(metric.get(t, ''))}</td><td>{v:.3f}</td>"
        f"<td>{chance[t]:.3f}</td></tr>" if t in chance else
        f"<tr><td>{html.escape(t)}</td><td>{html.escape(metric.get(t, ''))}</td><td>{v:.3f}</td><td></td></tr>"
        for t, v in results.items())
    return ("<table><thead><tr><th>task</th><th>metric</th><th>test</th><th>chance</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def report_html(history: Sequence[dict], *, title: str = "pwlab training report", pmap=None,
                results: dict[str, float] | None = None, chance: dict[str, float] | None = None,
                metric: dict[str, str] | None = None, notes: Sequence[str] = ()) -> str:
    """The whole report as one HTML document (plotly.js embedded once).

    Args:
        history: :class:`pwlab.train.Trainer` records.
        pmap: a :class:`pwlab.pathways.PathwayMap` (pathway figures are left out without one).
        results, chance, metric: task name → test metric, its chance level, the metric's name.
        notes: lines of text shown under the title.
    """
    figs = [task_curves(history), load_over_training(history)]
    if pmap is not None and pmap.blocks:
        figs += [expert_heatmaps(pmap, "task"), pathway_sankey(pmap, "task"), expert_heatmaps(pmap, "sense"),
                 sense_bars(pmap)]
    parts = [pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False) for i, fig in enumerate(figs)]
    body = [f"<p>{html.escape(n)}</p>" for n in notes]
    if results:
        body.append(results_table(results, chance, metric))
    if pmap is not None and pmap.blocks:
        mi_t, mi_m = pmap.mutual_information("task"), pmap.mutual_information("sense")
        body.append("<p>Expert specialisation, mutual information in bits per MoE block: "
                    + "; ".join(f"block {b}: I(E;task) = {t:.3f}, I(E;sense) = {m:.3f}"
                                for b, t, m in zip(pmap.blocks, mi_t, mi_m)) + "</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto} table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right} td:first-child{text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(body) + "".join(f"<div>{p}</div>" for p in parts) + "</body></html>")
