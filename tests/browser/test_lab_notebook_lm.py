"""Notebook 10 in JupyterLab in headless Chromium: it runs, draws, and its LM Explorer recolours
the text when a dropdown changes."""
from __future__ import annotations

import re

import pytest

from _lab import open_and_run, plot_data, shoot, wait_kernel_settled, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

REL = "notebooks/10_language_model.ipynb"


def test_language_model_notebook_and_its_explorer(lab_page):
    """Run all: no error output, every figure of the stored notebook drawn; then the explorer's
    layer and router dropdowns each change its figures in place."""
    lab, page, workspace = lab_page
    open_and_run(lab, page, workspace, REL, min_plots=2)
    wait_kernel_settled(page)
    app = page.locator(".jp-OutputArea-output").filter(
        has=page.locator(".widget-dropdown", has_text=re.compile(r"^layer"))).last
    for label, pick in (("layer", 1), ("router", 1)):
        select = app.locator(".widget-dropdown", has_text=re.compile(f"^{label}")).locator("select")
        before = plot_data(app)
        value = select.locator("option").nth(pick).get_attribute("value")
        select.select_option(value)
        wait_until(lambda: plot_data(app) != before, f"the explorer's figures to change with the {label}", page=page)
    shoot(app, "10_language_model-explorer")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"
