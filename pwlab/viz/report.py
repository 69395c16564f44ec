"""A self-contained HTML training report: per-task curves, expert load and pathway heatmaps.

plotly.js is embedded once (with the first figure), so the file opens from disk with no
server and no internet. Inputs are the plain records of :class:`pwlab.train.Trainer`
(see :mod:`pwlab.train` for the keys) and an optional :class:`pwlab.pathways.PathwayMap`.
"""
from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def loss_figure(history: Sequence[dict], smooth: int = 10) -> go.Figure:
    """Training loss per task (moving average over ``smooth`` steps where the task was present)."""
    train = [r for r in history if "loss" in r and not r.get("eval")]
    tasks = sorted({k[5:] for r in train for k in r if k.startswith("loss/")})
    fig = go.Figure()
    for t in tasks:
        pts = [(r["step"], r[f"loss/{t}"]) for r in train if f"loss/{t}" in r]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=_smooth([p[1] for p in pts], smooth), name=t, mode="lines"))
    fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=_smooth([r["aux_loss"] for r in train], smooth),
                             name="aux loss (all MoE blocks)", mode="lines", line=dict(dash="dot", color="black")))
    fig.update_layout(title="Training loss per task", xaxis_title="step", yaxis_title="loss", yaxis_type="log",
                      height=420)
    return fig


def metric_figure(history: Sequence[dict]) -> go.Figure | None:
    """Evaluation metrics over steps (accuracy and MSE side by side); None without evaluations."""
    evals = [r for r in history if r.get("eval")]
    if not evals:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy (classification)", "MSE (regression)"))
    keys = sorted({k for r in evals for k in r if k.startswith(("acc/", "mse/"))})
    for k in keys:
        pts = [(r["step"], r[k]) for r in evals if k in r]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=k, mode="lines+markers"),
                      row=1, col=1 if k.startswith("acc/") else 2)
    fig.update_layout(title="Evaluation", height=380)
    return fig


def load_figure(history: Sequence[dict]) -> go.Figure | None:
    """Per-expert load of each MoE block over training (heatmaps); None for a dense model."""
    train = [r for r in history if "loss" in r and not r.get("eval")]
    blocks = sorted({k for r in train for k in r if k.startswith("load/")}, key=lambda k: int(k.split("/")[1]))
    if not blocks:
        return None
    fig = make_subplots(rows=len(blocks), cols=1, subplot_titles=[f"block {b.split('/')[1]}" for b in blocks],
                        shared_xaxes=True)
    for i, b in enumerate(blocks):
        pts = [(r["step"], r[b]) for r in train if b in r]
        z = [list(col) for col in zip(*[p[1] for p in pts])]          # (E, steps)
        fig.add_trace(go.Heatmap(x=[p[0] for p in pts], y=[f"expert {e}" for e in range(len(z))], z=z,
                                 coloraxis="coloraxis"), row=i + 1, col=1)
    fig.update_layout(title="Fraction of assignments per expert", coloraxis=dict(colorscale="Viridis"),
                      height=200 + 160 * len(blocks))
    return fig


def pathway_figure(pmap, by: str = "task") -> go.Figure | None:
    """Heatmaps expert × task (or modality) of each MoE block: each column is that task's share."""
    if pmap is None or not pmap.blocks:
        return None
    share = pmap.share(by)
    names = list(pmap.tasks if by == "task" else pmap.modalities)
    counts = pmap.task_counts if by == "task" else pmap.modality_counts
    used = [j for j in range(len(names)) if int(counts[:, :, j].sum()) > 0]
    mi = pmap.mutual_information(by)
    fig = make_subplots(rows=1, cols=len(pmap.blocks),
                        subplot_titles=[f"block {b}: I(E;{by[0].upper()}) = {m:.2f} bits" for b, m in zip(pmap.blocks, mi)])
    for i in range(len(pmap.blocks)):
        z = share[i][:, used].tolist()
        fig.add_trace(go.Heatmap(x=[names[j] for j in used], y=[f"expert {e}" for e in range(share.shape[1])], z=z,
                                 coloraxis="coloraxis", text=[[f"{v:.2f}" for v in row] for row in z],
                                 texttemplate="%{text}"), row=1, col=i + 1)
    fig.update_layout(title=f"Pathways: share of each {by}'s assignments per expert",
                      coloraxis=dict(colorscale="Blues", cmin=0, cmax=1), height=420)
    return fig


def results_table(results: dict[str, float], chance: dict[str, float], metric: dict[str, str]) -> str:
    """An HTML table: task, metric, result, chance level."""
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{html.escape(metric[t])}</td><td>{v:.3f}</td><td>{chance[t]:.3f}</td></tr>"
        for t, v in results.items())
    return ("<table><thead><tr><th>task</th><th>metric</th><th>result</th><th>chance</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def report_html(history: Sequence[dict], *, title: str = "pwlab training report", pmap=None,
                results: dict[str, float] | None = None, chance: dict[str, float] | None = None,
                metric: dict[str, str] | None = None, notes: Sequence[str] = ()) -> str:
    """The whole report as one HTML string with plotly.js embedded once."""
    figs = [f for f in (loss_figure(history), metric_figure(history), load_figure(history),
                        pathway_figure(pmap, "task"), pathway_figure(pmap, "modality")) if f is not None]
    parts = []
    for i, fig in enumerate(figs):
        parts.append(pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False))
    body = []
    if results:
        body.append(results_table(results, chance or {t: float("nan") for t in results},
                                  metric or {t: "" for t in results}))
    body += [f"<p>{html.escape(n)}</p>" for n in notes]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto} table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right} td:first-child{text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(body) + "".join(f"<div>{p}</div>" for p in parts) + "</body></html>")
