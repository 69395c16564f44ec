"""PNG pictures of each app for the docs: ``python -m pwlab.widgets._snapshots [OUT_DIR [APP ...]]``.

Each app is built from its seed and driven a little; its figures go into one standalone HTML
page (plotly.js inlined, so no network) headed by the values of its controls, and headless
Chromium screenshots the page. Needs ``chromium`` on the PATH; writes ``OUT_DIR/<app>.png``
(default ``assets/apps``).
"""
from __future__ import annotations

import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from pwlab.widgets import ExpertAblation, PathwayExplorer, RoutingPlayground, SwatExplorer, trained_trainer

WIDTH = 1200
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars")


def _controls(pairs: list[tuple[str, object]]) -> str:
    cells = "".join(f"<span><b>{html.escape(k)}</b> {html.escape(str(v))}</span>" for k, v in pairs)
    return f"<div class='controls'>{cells}</div>"


def page(title: str, controls: list[tuple[str, object]], rows: list[list[go.FigureWidget]]) -> tuple[str, int]:
    """The HTML of one app (figures in rows, side by side within a row) and its height in pixels."""
    parts, height, first = [], 90, True
    for row in rows:
        cells = []
        w = WIDTH // len(row) - 10
        for f in row:
            fig = go.Figure(f)
            fig.update_layout(width=w)
            cells.append(pio.to_html(fig, include_plotlyjs=first, full_html=False, config={"staticPlot": True}))
            first = False
        parts.append("<div class='row'>" + "".join(f"<div>{c}</div>" for c in cells) + "</div>")
        height += max(int(f.layout.height or 450) for f in row) + 8
    style = ("body{font-family:sans-serif;margin:6px;width:%dpx} h2{margin:2px 0 4px} .row{display:flex;gap:10px}"
             " .controls{font-size:13px;display:flex;flex-wrap:wrap;gap:6px 16px;margin-bottom:6px;color:#333}"
             " .controls span{background:#f2f2f2;padding:2px 6px;border-radius:4px}") % WIDTH
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{style}</style></head><body>"
           f"<h2>{html.escape(title)}</h2>{_controls(controls)}{''.join(parts)}</body></html>")
    return doc, height


def screenshot(doc: str, height: int, out: Path) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise RuntimeError("chromium must be installed to take the pictures")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "app.html"
        src.write_text(doc, encoding="utf-8")
        subprocess.run([browser, *CHROMIUM_ARGS, f"--user-data-dir={tmp}/profile", f"--screenshot={out}",
                        f"--window-size={WIDTH + 12},{height}", src.as_uri()],
                       check=True, capture_output=True, timeout=120)
    return out


def apps(seed: int = 0, only: set[str] | frozenset = frozenset()):
    """(name, title, controls, figure rows) of every app (or those in ``only``), built from ``seed``."""
    if not only or "routing_playground" in only:
        yield _playground(RoutingPlayground(seed=seed))
    if only and not only & {"pathway_explorer", "expert_ablation", "swat_explorer"}:
        return
    tr = trained_trainer(seed=seed, steps=150)
    if not only or "pathway_explorer" in only:
        ex = PathwayExplorer(trainer=tr)
        ex.select(mode="example", choice="digits", example=3)
        yield ("pathway_explorer", "PathwayExplorer", [("show", ex.mode.value), ("task", ex.choice.value),
                                                       ("example", ex.example.value)],
               [[ex.sankey], [ex.heatmap], [ex.tokens]])
    if not only or "expert_ablation" in only:
        ab = ExpertAblation(trainer=tr)
        ab.set_disabled({b: [0, 1] for b in ab.toggles})
        yield ("expert_ablation", "ExpertAblation", [("experts off", ab.disabled())], [[ab.bars]])
    if not only or "swat_explorer" in only:
        yield _swat(SwatExplorer(trainer=tr, retrain_steps=20))


def _playground(pg):
    pg.capacity.value = 1.25
    pg.run(80)
    controls = [(w.description, w.value) for w in pg.controls] + [("step", pg.trainer.step_count)]
    return "routing_playground", "RoutingPlayground", controls, [[pg.curves], [pg.load], [pg.pathways]]


def _swat(sw):
    for ws, acts in ((0.0, 0.0), (0.5, 0.5), (0.8, 0.5), (0.9, 0.9), (0.7, 0.3)):
        sw.weight_sparsity.value, sw.act_sparsity.value = ws, acts
        sw.retrain()
    return ("swat_explorer", "SwatExplorer", [("weight sparsity", sw.weight_sparsity.value),
                                              ("act. sparsity", sw.act_sparsity.value), ("layer", sw.layer.value),
                                              ("FLOPs", sw.flops.value.replace("<b>", "").replace("</b>", ""))],
            [[sw.mask, sw.tradeoff]])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_dir = Path(argv[0] if argv else "assets/apps")
    only = set(argv[1:])                    # app names to redo (default: all)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, title, controls, rows in apps(only=only):
        doc, height = page(title, controls, rows)
        path = screenshot(doc, height, out_dir / f"{name}.png")
        print(path, path.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
