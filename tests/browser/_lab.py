"""Driving JupyterLab and Voila pages as a person does: open, Run All, look, move, click.

What "rendered" means here (each a failure seen in the wild, none visible kernel-side):
- every widget-view output of the saved notebook is drawn by the widget manager in the page
  (a missing ``jupyterlab_widgets`` leaves the text repr ``VBox(children=...)`` instead);
- no ``Error displaying widget`` / error-widget views (a model class that did not load, e.g.
  FigureWidget without the anywidget front end);
- every plotly output and every ``.js-plotly-plot`` has drawn its SVG with a non-zero size;
- every slider has its noUiSlider handle.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PWLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("PWLAB_ARTIFACTS", REPO / "test-artifacts"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
RUN_TIMEOUT_MS = 240_000        # a notebook runs in <= 60 s on 2 free cores; CI shares them
UI_TIMEOUT_MS = 90_000


def screenshots_wanted() -> bool:
    """Screenshots on demand: PWLAB_SCREENSHOTS=1 (failures always get one)."""
    return os.environ.get("PWLAB_SCREENSHOTS", "") not in ("", "0", "false", "no")


def shoot(target, name: str, force: bool = False) -> Path | None:
    """Screenshot a page or a locator into test-artifacts/NAME.png when wanted (or forced)."""
    if not (force or screenshots_wanted()):
        return None
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    target.screenshot(path=str(path))
    return path


# --- JupyterLab -------------------------------------------------------------------------

_STATUS_IDLE = """() => {
  const bar = document.querySelector('#jp-main-statusbar');
  return !!bar && /\\|\\s*Idle/.test(bar.innerText);
}"""

_ALL_EXECUTED = """() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const todo = cells.filter(c => (c.querySelector('.cm-content')?.textContent || '').trim() !== '');
  return todo.length > 0 && todo.every(c => /\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt')?.textContent || ''));
}"""


def open_notebook(page, base: str, token: str, path: str, workspace: str) -> None:
    """Open ``path`` in its own JupyterLab workspace and wait until its kernel is idle."""
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{path}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=UI_TIMEOUT_MS)
    _accept_kernel_dialog(page)
    page.wait_for_function(_STATUS_IDLE, timeout=UI_TIMEOUT_MS)


def _accept_kernel_dialog(page) -> None:
    # A notebook without kernel metadata asks which kernel to start; take the default.
    dialog = page.locator(".jp-Dialog .jp-mod-accept")
    if dialog.count():
        dialog.first.click()


def run_all(page) -> float:
    """Run > Run All Cells through the menu; wait until every cell ran and the kernel is idle."""
    t0 = time.monotonic()
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(_ALL_EXECUTED, timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(_STATUS_IDLE, timeout=RUN_TIMEOUT_MS)
    return time.monotonic() - t0


def wait_kernel_settled(page, quiet_s: float = 3.0, timeout_s: float = 120.0) -> None:
    """Wait until the kernel has stayed idle for ``quiet_s``.

    The widget manager sends a slider's latest value only once the kernel has handled the
    previous one, so a drag can leave updates in flight after the first redraw arrives; a
    click sent meanwhile would be handled before them.
    """
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        if page.evaluate(_STATUS_IDLE):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_s:
                return
        else:
            quiet_since = None
        page.wait_for_timeout(200)
    raise AssertionError(f"the kernel did not settle within {timeout_s:.0f} s")


def save(page) -> None:
    """Save the notebook (Ctrl+S in command mode) and wait until the tab is clean."""
    page.locator(".jp-Notebook").first.press("Escape")
    page.keyboard.press("Control+s")
    page.wait_for_selector(".lm-TabBar-tab.jp-mod-current:not(.jp-mod-dirty)", timeout=UI_TIMEOUT_MS)


def saved_outputs(path: Path) -> dict:
    """What the kernel produced, read from the saved notebook: the oracle for the page."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    outs = [o for c in code for o in c.get("outputs", [])]
    return {
        "unexecuted": [i for i, c in enumerate(code)
                       if "".join(c["source"]).strip() and c.get("execution_count") is None],
        "errors": [f"{o.get('ename')}: {o.get('evalue')}" for o in outs if o["output_type"] == "error"],
        "widget_views": sum(WIDGET_MIME in o.get("data", {}) for o in outs),
        "plotly_outputs": sum(PLOTLY_MIME in o.get("data", {}) for o in outs),
    }


# --- what the page drew -----------------------------------------------------------------

_RENDERED = """(root) => {
  root = root || document;
  const top = [...root.querySelectorAll('.jp-OutputArea-child > .jp-OutputArea-output')]
      .filter(o => !o.parentElement.closest('.jp-OutputArea-output'));   // not inside an Output widget
  const failed = t => /Error displaying widget|Could not instantiate widget|Failed to (create view|load model)/.test(t);
  const isWidget = o => (o.classList.contains('jupyter-widgets') || o.querySelector('.jupyter-widgets'))
      && !failed(o.textContent.slice(0, 200));
  const plots = [...root.querySelectorAll('.js-plotly-plot')];
  const drawn = p => { const r = p.getBoundingClientRect();
      return !!p.querySelector('svg.main-svg') && r.width > 10 && r.height > 10; };
  const sliders = [...root.querySelectorAll('.widget-slider')];
  return {
    widget_views: top.filter(isWidget).length,
    plotly_outputs: [...root.querySelectorAll('.jp-RenderedPlotly')].filter(drawn).length,
    plots: plots.length,
    plots_drawn: plots.filter(drawn).length,
    sliders: sliders.length,
    sliders_drawn: sliders.filter(s => s.querySelector('.noUi-handle')).length,
    widget_errors: [...root.querySelectorAll('.jupyter-widgets-error-widget')].map(e => e.textContent.slice(0, 200))
        .concat(top.filter(o => failed(o.textContent.slice(0, 200))).map(o => o.textContent.slice(0, 200))),
  };
}"""


def rendered(page, root_selector: str | None = None) -> dict:
    """Counts of what the page (or the element ``root_selector``) drew; see module docstring."""
    if root_selector is None:
        return page.evaluate(_RENDERED)
    return page.locator(root_selector).first.evaluate(_RENDERED)


def wait_rendered(page, expected: dict, timeout_s: float = 60.0) -> dict:
    """Wait until the page drew what the saved notebook holds; return the last counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = rendered(page)
        ok = (got["widget_views"] >= expected["widget_views"]
              and got["plotly_outputs"] >= expected["plotly_outputs"]
              and got["plots_drawn"] == got["plots"] and got["sliders_drawn"] == got["sliders"])
        if ok or got["widget_errors"] or time.monotonic() > deadline:
            return got
        page.wait_for_timeout(500)


def assert_notebook_rendered(page, saved: dict, min_plots: int = 0, min_sliders: int = 0) -> dict:
    """The checks of the module docstring, with what went wrong in the message."""
    assert not saved["unexecuted"], f"code cells not executed: {saved['unexecuted']}"
    assert not saved["errors"], f"error outputs: {saved['errors']}"
    got = wait_rendered(page, saved)
    assert not got["widget_errors"], f"widgets failed to display: {got['widget_errors']}"
    assert got["widget_views"] == saved["widget_views"], (
        f"{saved['widget_views']} widget views in the notebook, {got['widget_views']} drawn by the widget manager")
    assert got["plotly_outputs"] == saved["plotly_outputs"], (
        f"{saved['plotly_outputs']} plotly outputs in the notebook, {got['plotly_outputs']} drawn")
    assert got["plots_drawn"] == got["plots"], f"{got['plots'] - got['plots_drawn']} plotly plots not drawn"
    assert got["sliders_drawn"] == got["sliders"], f"{got['sliders'] - got['sliders_drawn']} sliders not drawn"
    assert got["plots"] >= min_plots, f"expected at least {min_plots} plots, found {got['plots']}"
    assert got["sliders"] >= min_sliders, f"expected at least {min_sliders} sliders, found {got['sliders']}"
    return got


def open_and_run(lab, page, workspace: str, rel: str, **expect) -> dict:
    """Open ``rel`` (a path under the lab's root) in ``workspace``, Run All, save, and check the page
    against the saved outputs (:func:`assert_notebook_rendered`, ``expect`` its minimums) with no
    JavaScript error; what was drawn is returned. A notebook this checkout lacks skips the test."""
    if not (lab.root / rel).is_file():
        pytest.skip(f"{rel} is not in this checkout")
    open_notebook(page, lab.base, lab.token, rel, workspace)
    seconds = run_all(page)
    save(page)
    got = assert_notebook_rendered(page, saved_outputs(lab.root / rel), **expect)
    print(f"{rel}: ran in {seconds:.1f} s; drew {got}")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"
    return got


# --- interaction ------------------------------------------------------------------------

_PLOT_DATA = """(root) => [...root.querySelectorAll('.js-plotly-plot')].map(p =>
    JSON.stringify((p.data || []).map(t => [t.type, t.name, t.x, t.y, t.z])))"""

_LOSS_POINTS = """(root) => {
  // Points on the loss panel: traces of a figure whose title or y axis speaks of loss or
  // training curves (before the first step the panel may hold no trace at all: 0 points).
  const speaks = p => /loss|training curve/i.test(JSON.stringify([p.layout?.title, p.layout?.yaxis?.title]));
  const fig = [...root.querySelectorAll('.js-plotly-plot')].find(speaks);
  if (!fig) return -1;
  return (fig.data || []).filter(t => !t.yaxis || t.yaxis === 'y')
      .reduce((n, t) => n + (t.y ? t.y.length : 0), 0);
}"""


def plot_data(root) -> list[str]:
    """The data of every plot under a locator, as drawn (``gd.data`` of each plotly div)."""
    return root.evaluate(_PLOT_DATA)


def loss_points(root) -> int:
    """Points of the loss traces drawn under a locator (-1: no loss figure)."""
    return root.evaluate(_LOSS_POINTS)


def wait_until(fn, what: str, timeout_s: float = 90.0, page=None):
    """Poll ``fn()`` until it is truthy; AssertionError naming ``what`` when it never is."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for: {what}")
        if page is not None:
            page.wait_for_timeout(250)
        else:
            time.sleep(0.25)


def drag_slider(page, slider, fraction: float) -> None:
    """Drag a slider's handle with the mouse to ``fraction`` of its track (0 = left, 1 = right)."""
    handle = slider.locator(".noUi-handle").first
    track = slider.locator(".noUi-base").first
    handle.scroll_into_view_if_needed()
    h, t = handle.bounding_box(), track.bounding_box()
    page.mouse.move(h["x"] + h["width"] / 2, h["y"] + h["height"] / 2)
    page.mouse.down()
    page.mouse.move(t["x"] + fraction * t["width"], h["y"] + h["height"] / 2, steps=8)
    page.mouse.up()


def slider_named(root, label: str):
    """The slider whose description is ``label``."""
    return root.locator(".widget-slider").filter(
        has=root.page.locator(".widget-label", has_text=re.compile(rf"^{re.escape(label)}$"))).first


def readout(slider) -> str:
    return slider.locator(".widget-readout").first.inner_text().strip()


_EXPERT_TRACES = """(root) => {
  const names = new Set();
  for (const p of root.querySelectorAll('.js-plotly-plot'))
    for (const t of (p.data || [])) if (/^expert \\d+$/.test(t.name || '')) names.add(t.name);
  return names.size;
}"""


def expert_traces(root) -> int:
    """Distinct ``expert i`` traces drawn under a locator (the load-per-expert figure)."""
    return root.evaluate(_EXPERT_TRACES)


def button(root, label: str):
    """The widget button labelled ``label`` (by its text: an icon font's glyph is not part of it)."""
    return root.locator("button", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")).first


def status_text(root) -> str:
    """Text of the app's status line (an ipywidgets HTML widget)."""
    html = root.locator(".widget-html-content")
    return " ".join(html.all_inner_texts())


# plotly's FigureWidget is an anywidget whose front end imports a ~5 MB module (plotly.js) per
# figure and gives up after 2 s ("[anywidget] Failed to initialize model."): on a machine whose
# CPUs are saturated a page load can lose that race, and a person would reload the page.
ANYWIDGET_TIMEOUT = "[anywidget] Failed to initialize model"


def lost_anywidget_race(page) -> bool:
    return any(ANYWIDGET_TIMEOUT in e for e in page.js_errors)


def fixture_slider_drives_bars(page):
    """On fixtures/widgets_demo.ipynb: dragging ``top_k`` to 8 redraws the bars as ``[1]*8``.

    The kernel's callback sets y = [1]*k + [0]*(8-k), so the drawn data says which k arrived.
    Returns the app's output element for further checks.
    """
    app = page.locator(".jp-OutputArea-output").filter(has=button(page, "Step")).first
    slider = slider_named(app, "top_k")
    before = plot_data(app)
    drag_slider(page, slider, 1.0)
    wait_until(lambda: readout(slider) == "8", "the top_k slider to read 8", page=page)
    expected = '[["bar","load",[0,1,2,3,4,5,6,7],[1,1,1,1,1,1,1,1],null]]'
    wait_until(lambda: plot_data(app)[0] == expected, "the bar plot to show top_k = 8", page=page)
    assert plot_data(app)[0] != before[0]
    return app
