"""JupyterLab in headless Chromium: open a notebook, Run All, check what the page drew, interact.

The kernel-side notebook tests (nbval) cannot see a widget that fails in the browser; these
can. Each test: open in a workspace of its own, run every cell through the Run menu, save, and
compare the page with the saved outputs (see ``_lab``). Screenshots of the widgets go to
test-artifacts/ with PWLAB_SCREENSHOTS=1 (and of the page whenever a test fails).
"""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest

from _lab import (REPO, button, drag_slider, expert_traces, fixture_slider_drives_bars, loss_points, open_and_run,
                  plot_data, readout, shoot, slider_named, status_text, wait_kernel_settled, wait_until)
from pwlab.widgets.cost import moe_params

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]


def _shoot_outputs(page, prefix: str) -> None:
    """One screenshot per widget/plot output (on demand)."""
    top = ".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output"
    outs = page.locator(f"{top}:has(.jupyter-widgets, .js-plotly-plot), {top}.js-plotly-plot")
    for i in range(outs.count()):
        shoot(outs.nth(i), f"{prefix}-output{i}")


def playground_notebook() -> str:
    """The first lab notebook that builds a RoutingPlayground, else the fixture that does."""
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        if re.search(r"RoutingPlayground\(", nb.read_text(encoding="utf-8")):
            return f"notebooks/{nb.name}"
    return "fixtures/playground.ipynb"


def test_harness_on_fixture_notebook(lab_page):
    """The harness itself, on a notebook whose behaviour we fully know: a slider drives a
    FigureWidget, a button appends one point to a loss trace, plus a static plotly output."""
    lab, page, workspace = lab_page
    got = open_and_run(lab, page, workspace, "fixtures/widgets_demo.ipynb", min_plots=3, min_sliders=1)
    assert got["widget_views"] == 1 and got["plotly_outputs"] == 1
    app = fixture_slider_drives_bars(page)
    n = loss_points(app)
    button(app, "Step").click()
    wait_until(lambda: loss_points(app) == n + 1, "one more point on the loss trace", page=page)
    _shoot_outputs(page, "fixture")


def test_welcome_notebook(lab_page):
    """00_welcome runs in the lab without an error output, and every widget and figure draws."""
    lab, page, workspace = lab_page
    if not (REPO / "notebooks" / "00_welcome.ipynb").is_file():
        pytest.skip("notebooks/00_welcome.ipynb is not written yet")
    open_and_run(lab, page, workspace, "notebooks/00_welcome.ipynb", min_plots=1)
    _shoot_outputs(page, "00_welcome")
    shoot(page, "00_welcome-page")


def test_routing_playground(lab_page):
    """The RoutingPlayground responds in the browser: Step trains (the loss trace gains points),
    the experts slider rebuilds the model (the plots change; after a step the load figure
    shows one line per expert of the new count)."""
    lab, page, workspace = lab_page
    rel = playground_notebook()
    open_and_run(lab, page, workspace, rel, min_plots=3, min_sliders=3)
    app = page.locator(".jp-OutputArea-output").filter(has=button(page, "Step")).filter(
        has=page.locator(".widget-label", has_text=re.compile(r"^experts$"))).first
    step = button(app, "Step")

    n0 = max(loss_points(app), 0)
    step.click()
    n1 = wait_until(lambda: (n := loss_points(app)) > n0 and n, "Step to add points to the loss trace", page=page)
    step.click()
    wait_until(lambda: loss_points(app) > n1, "a second Step to add more points", page=page)
    # The status line is written last by a redraw: once it says "step 2", the redraw is complete.
    wait_until(lambda: re.search(r"\bstep 2\b", status_text(app)), "the status to read step 2", page=page)
    shoot(app, f"playground-{Path(rel).stem}-after-steps")

    experts = slider_named(app, "experts")
    was, before = readout(experts), plot_data(app)
    drag_slider(page, experts, 0.45)
    wait_until(lambda: readout(experts) != was, "the experts slider to move", page=page)
    wait_until(lambda: plot_data(app) != before, "the plots to change after moving the slider", page=page)
    wait_kernel_settled(page)
    step.click()
    e = int(readout(experts))
    wait_until(lambda: expert_traces(app) == e, f"the load figure to show {e} experts", page=page)
    # Moving the experts slider rebuilt the model (Reset): one step since then.
    wait_until(lambda: re.search(r"\bstep 1\b", status_text(app)), "the status to read step 1", page=page)
    shoot(app, f"playground-{Path(rel).stem}")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"


@contextlib.contextmanager
def _console_errors_on_failure(page):
    """Add the page's console errors to a failure's message (a FigureWidget front end that could
    not start says so only there, and its figure stays empty)."""
    errors = []
    page.on("console", lambda m: errors.append(m.text[:300]) if m.type == "error" else None)
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}; console errors: {errors[:5]}") from exc


def _app_with(page, label: str):
    """The output that holds the widget labelled ``label`` (a slider's description)."""
    return page.locator(".jp-OutputArea-output").filter(
        has=page.locator(".widget-label", has_text=re.compile(rf"^{re.escape(label)}$"))).first


def _traces(root, plot: int = 0) -> list:
    """[type, name, x, y, z] of every trace of the ``plot``-th plot under ``root``, as drawn."""
    drawn = plot_data(root)
    return json.loads(drawn[plot]) if len(drawn) > plot else []


def test_dense_vs_sparse_cost_explorer(lab_page):
    """01's CostExplorer: dragging the experts slider redraws the parameter bars to the MoE's
    count at the new E (the formula checked kernel side against the modules' numel)."""
    lab, page, workspace = lab_page
    with _console_errors_on_failure(page):
        open_and_run(lab, page, workspace, "notebooks/01_dense_vs_sparse.ipynb", min_plots=3, min_sliders=4)
        app = _app_with(page, "experts E")
        experts = slider_named(app, "experts E")
        wait_until(lambda: _traces(app), "the cost figure to hold its bars before any change", page=page)
        was, before = readout(experts), plot_data(app)
        drag_slider(page, experts, 0.4)
        wait_until(lambda: re.fullmatch(r"\d+", readout(experts)) and readout(experts) != was,
                   "the experts slider to move (a new number in its readout)", page=page)
        wait_until(lambda: plot_data(app) != before, "the cost figure to change after moving the slider", page=page)
        wait_kernel_settled(page)
        e = int(readout(experts))
        wait_until(lambda: _traces(app)[0][3][0] == moe_params(64, 128, e),
                   f"the parameter bar to show the MoE's parameters at E = {e}", page=page)
        shoot(app, "01_dense_vs_sparse-cost-explorer")
        assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"


def test_balance_and_capacity_explorer(lab_page):
    """03's CapacityExplorer: dragging the capacity slider redraws the load bars and moves the
    marker of the dropped-fraction figure to the new capacity factor."""
    lab, page, workspace = lab_page
    with _console_errors_on_failure(page):
        open_and_run(lab, page, workspace, "notebooks/03_balance_and_capacity.ipynb", min_plots=4, min_sliders=3)
        label = "capacity factor (0=∞)"
        app = _app_with(page, label)
        capacity = slider_named(app, label)
        wait_until(lambda: _traces(app) and _traces(app, 1), "both figures to hold their traces before any change",
                   page=page)
        was, before = readout(capacity), plot_data(app)
        drag_slider(page, capacity, 0.2)
        wait_until(lambda: re.fullmatch(r"\d+\.\d+", readout(capacity)) and readout(capacity) != was,
                   "the capacity slider to move (a new number in its readout)", page=page)
        wait_until(lambda: plot_data(app) != before, "the load figure to change after moving the slider", page=page)
        wait_kernel_settled(page)
        cf = float(readout(capacity))

        def marker_at_cf():
            x = _traces(app, 1)[-1][2]                  # the marker trace of the dropped-fraction figure
            return (len(x) == 1 and abs(x[0] - cf) < 1e-6) if cf else x == []

        wait_until(marker_at_cf, f"the marker to sit at capacity factor {cf}", page=page)
        shoot(app, "03_balance_and_capacity-capacity-explorer")
        assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"


def test_scaling_out_all_to_all_explorer(lab_page):
    """09's AllToAllExplorer: the measured bytes show at the run's setting; dragging the devices
    slider to 64 raises the experts to 64 (E must split over P), extends the cost model's line
    to 64 devices and hides the measured marker (it no longer applies)."""
    lab, page, workspace = lab_page
    with _console_errors_on_failure(page):
        open_and_run(lab, page, workspace, "notebooks/09_scaling_out.ipynb", min_plots=2, min_sliders=6)
        app = _app_with(page, "devices P")
        devices = slider_named(app, "devices P")
        assert _traces(app)[2][1] == "measured" and _traces(app)[2][2] == [2]
        drag_slider(page, devices, 1.0)
        wait_until(lambda: readout(devices) == "64", "the devices slider to read 64", page=page)
        wait_kernel_settled(page)
        wait_until(lambda: readout(slider_named(app, "experts E")) == "64", "the experts to follow to 64", page=page)
        wait_until(lambda: _traces(app)[0][2][-1] == 64, "the cost model's line to reach 64 devices", page=page)
        assert _traces(app)[2][2] == [], "the measured marker should be hidden away from the run's setting"
        shoot(app, "09_scaling_out-a2a-explorer")
        assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"
