"""``pwlab serve``: the classroom dashboard (Voila) shows the widgets, live, and no code."""
from __future__ import annotations

import re

import pytest

from _lab import (button, drag_slider, loss_points, plot_data, readout, rendered, shoot, slider_named,
                  status_text, wait_until)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]


def test_dashboard_widgets_live_code_hidden(serve, page):
    server = serve("fixtures/playground.ipynb")
    page.goto(server.url)
    # Voila runs the notebook for this visitor, then the widgets appear.
    page.wait_for_selector(".widget-slider .noUi-handle", timeout=240_000)
    app = page.locator(".jp-OutputArea-output").filter(has=button(page, "Step")).first
    def drawn():
        r = rendered(page)
        return r if r["plots"] >= 3 and r["plots_drawn"] == r["plots"] else None

    got = wait_until(drawn, "three drawn plotly figures", page=page)
    assert not got["widget_errors"], f"widgets failed to display: {got['widget_errors']}"
    assert got["sliders"] >= 3 and got["sliders_drawn"] == got["sliders"], got
    # Code hidden: no input area, and not a word of the source on the page.
    assert page.locator(".jp-InputArea-editor, .jp-Cell-inputWrapper .cm-content").count() == 0
    assert "RoutingPlayground(" not in page.inner_text("body")

    n0 = max(loss_points(app), 0)
    button(app, "Step").click()
    wait_until(lambda: loss_points(app) > n0, "Step to add points to the loss trace", page=page)
    wait_until(lambda: re.search(r"\bstep 1\b", status_text(app)), "the status to read step 1", page=page)

    experts = slider_named(app, "experts")
    was, before = readout(experts), plot_data(app)
    drag_slider(page, experts, 0.45)
    wait_until(lambda: readout(experts) != was, "the experts slider to move", page=page)
    wait_until(lambda: plot_data(app) != before, "the figures to change after the slider moved", page=page)
    wait_until(lambda: re.search(r"\bstep 0\b", status_text(app)), "the model to be rebuilt (step 0)", page=page)
    shoot(page, "dashboard")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"
