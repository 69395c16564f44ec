"""``pwlab serve``: the classroom dashboard (Voila) shows the widgets, live, and no code."""
from __future__ import annotations

import re

import pytest

from _lab import (button, expert_traces, fixture_slider_drives_bars, loss_points, lost_anywidget_race, rendered, shoot,
                  status_text, wait_until)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]


def _open(page, url: str, plots: int) -> dict:
    """Load the dashboard (Voila runs the notebook for this visitor); wait for the figures."""
    page.js_errors.clear()
    page.goto(url, wait_until="commit")
    page.wait_for_selector(".widget-slider .noUi-handle", timeout=240_000)

    def drawn():
        r = rendered(page)
        return r if (r["plots"] >= plots and r["plots_drawn"] == r["plots"]) or lost_anywidget_race(page) else None

    got = wait_until(drawn, f"{plots} drawn plotly figures", page=page)
    page.wait_for_timeout(2500)          # past anywidget's 2 s initialization window
    if lost_anywidget_race(page):
        print(f"FigureWidget front end timed out on load ({page.js_errors[:1]}); reloading once")
        return _open(page, url, plots)
    return got


def _assert_dashboard(page, got: dict, sliders: int) -> None:
    assert not got["widget_errors"], f"widgets failed to display: {got['widget_errors']}"
    assert got["sliders"] >= sliders and got["sliders_drawn"] == got["sliders"], got
    # Code hidden: no input area, and not a word of the source on the page.
    code = page.locator(".jp-CodeCell .jp-InputArea, .jp-InputArea-editor, .cm-content, .highlight pre")
    assert code.count() == 0, f"code on the dashboard: {code.first.inner_text()[:200]}"
    assert "import " not in page.inner_text("body")


def test_dashboard_slider_updates_figure(serve, page):
    """Widgets render with the code hidden, and a slider drives a FigureWidget, live."""
    server = serve("fixtures/widgets_demo.ipynb")
    got = _open(page, server.url, plots=3)
    _assert_dashboard(page, got, sliders=1)
    fixture_slider_drives_bars(page)
    shoot(page, "dashboard-fixture")
    js = [e for e in page.js_errors if "setData is not a function" not in e]
    assert not js, f"JavaScript errors on the page: {js[:5]}"


@pytest.mark.xfail(raises=AssertionError, strict=False, reason=(
    "intermittent under Voila 0.5 with plotly 7's anywidget FigureWidget: after Step the kernel "
    "answers (status line) but a figure sometimes receives no update; the same app passes in "
    "JupyterLab (test_routing_playground)"))
def test_dashboard_playground_steps(serve, page):
    """The RoutingPlayground as a dashboard: it renders, Step trains and the plots follow."""
    server = serve("fixtures/playground.ipynb")
    got = _open(page, server.url, plots=3)
    _assert_dashboard(page, got, sliders=3)
    shoot(page, "dashboard-playground")
    app = page.locator(".jp-OutputArea-output").filter(has=button(page, "Step")).first
    n0 = max(loss_points(app), 0)
    button(app, "Step").click()
    wait_until(lambda: re.search(r"\bstep 1\b", status_text(app)), "the status to read step 1", page=page)
    wait_until(lambda: loss_points(app) > n0, "Step to add points to the loss trace", timeout_s=30, page=page)
    # The second FigureWidget of the page: one line per expert once a step has run.
    wait_until(lambda: expert_traces(app) == 4, "the load figure to show the 4 experts", timeout_s=30, page=page)
    button(app, "Step").click()
    wait_until(lambda: re.search(r"\bstep 2\b", status_text(app)), "the status to read step 2", page=page)
    shoot(page, "dashboard-playground-after-steps")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"
