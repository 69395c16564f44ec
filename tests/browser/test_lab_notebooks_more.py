"""The widgets of notebooks 00, 04, 05, 06, 07 and 08 in JupyterLab in headless Chromium.

Each test opens the notebook in a workspace of its own, runs every cell through the Run menu,
saves, compares the page with the saved outputs (``_lab``), then works the notebook's app as a
person does (a slider moved, a dropdown changed, a button clicked) and waits for the drawn
figure to change.
"""
from __future__ import annotations

import re

import pytest

from _lab import (button, drag_slider, open_and_run, plot_data, readout, shoot, slider_named, status_text,
                  wait_kernel_settled, wait_until)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

#: training on a click: the notebook's run length of steps on a shared CPU
TRAIN_TIMEOUT_S = 300.0


def _app(page, *, has_button: str | None = None, has_label: str | None = None):
    """The output element of the app with that button and/or that control label."""
    out = page.locator(".jp-OutputArea-output").filter(has=page.locator(".jupyter-widgets"))
    if has_button is not None:
        out = out.filter(has=button(page, has_button))
    if has_label is not None:
        out = out.filter(has=page.locator(".widget-label", has_text=re.compile(rf"^{re.escape(has_label)}$")))
    return out.first


def _dropdown(root, label: str):
    """The <select> of the Dropdown whose description is ``label``."""
    box = root.locator(".widget-dropdown").filter(
        has=root.page.locator(".widget-label", has_text=re.compile(rf"^{re.escape(label)}$"))).first
    return box.locator("select").first


def _plots_change(page, app, act, what: str, timeout_s: float = 90.0) -> list[str]:
    before = plot_data(app)
    act()
    return wait_until(lambda: (now := plot_data(app)) != before and now, what, timeout_s=timeout_s, page=page)


def test_welcome_pathway_explorer(lab_page):
    """00: the task dropdown and the example slider of the Pathway Explorer redraw its figures."""
    lab, page, workspace = lab_page
    open_and_run(lab, page, workspace, "notebooks/00_welcome.ipynb", min_plots=3, min_sliders=1)
    app = _app(page, has_label="example")
    task = _dropdown(app, "task")
    _plots_change(page, app, lambda: task.select_option(label="wine"), "the figures to follow the task dropdown")
    wait_kernel_settled(page)
    example = slider_named(app, "example")
    was = readout(example)
    _plots_change(page, app, lambda: drag_slider(page, example, 0.5), "the example panel to follow the slider")
    assert readout(example) != was
    shoot(app, "00_welcome-explorer")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"


def test_multitask_task_mix_explorer(lab_page):
    """04: the temperature slider redraws the mix at once; Train adds a run's accuracy bars."""
    lab, page, workspace = lab_page
    open_and_run(lab, page, workspace, "notebooks/04_multitask.ipynb", min_plots=2, min_sliders=1)
    app = _app(page, has_button="Train")
    slider = slider_named(app, "temperature T")
    _plots_change(page, app, lambda: drag_slider(page, slider, 0.1), "the task mix to follow the slider")
    wait_kernel_settled(page)
    _plots_change(page, app, lambda: button(app, "Train").click(), "the accuracy bars of the trained run",
                  timeout_s=TRAIN_TIMEOUT_S)
    wait_until(lambda: "trained" in status_text(app), "the progress line to say trained", page=page)
    assert any('"bar","token routing' in p for p in plot_data(app)), plot_data(app)
    shoot(app, "04_multitask-taskmix")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"


def test_senses_live_routing(lab_page):
    """05: Step trains and redraws the sense bars and the I(E; sense) curve."""
    lab, page, workspace = lab_page
    open_and_run(lab, page, workspace, "notebooks/05_senses.ipynb", min_plots=2)
    app = _app(page, has_button="Step")
    _plots_change(page, app, lambda: button(app, "Step").click(), "the bars to change after Step")
    wait_until(lambda: re.search(r"\bstep 5\b", status_text(app)), "the status to read step 5", page=page)
    wait_kernel_settled(page)
    _plots_change(page, app, lambda: button(app, "Step").click(), "the bars to change after a second Step")
    wait_until(lambda: re.search(r"\bstep 10\b", status_text(app)), "the status to read step 10", page=page)
    shoot(app, "05_senses-live")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"


def test_all_together_tradeoff_explorer(lab_page):
    """08: the task dropdown and the x-axis toggle move the one scatter."""
    lab, page, workspace = lab_page
    open_and_run(lab, page, workspace, "notebooks/08_all_together.ipynb", min_plots=3)
    app = _app(page, has_button="parameters")
    task = _dropdown(app, "task")
    _plots_change(page, app, lambda: task.select_option(label="wine"), "the scatter to follow the task")
    wait_kernel_settled(page)
    _plots_change(page, app, lambda: button(app, "parameters").click(), "the scatter to follow the x axis")
    shoot(app, "08_all_together-tradeoff")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"


def test_pathways_explorer_and_ablation(lab_page):
    """06: the Pathway Explorer follows its task dropdown; Expert Ablation's bars follow a
    switched-off expert."""
    lab, page, workspace = lab_page
    open_and_run(lab, page, workspace, "notebooks/06_pathways.ipynb", min_plots=3, min_sliders=1)
    app = _app(page, has_label="example")
    task = _dropdown(app, "task")
    _plots_change(page, app, lambda: task.select_option(label="wine"), "the explorer to follow the task dropdown")
    wait_kernel_settled(page)
    ablation = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-toggle-button")).last
    toggle = ablation.locator(".widget-toggle-button").first
    _plots_change(page, ablation, lambda: toggle.click(), "the ablation bars to follow a switched expert")
    shoot(ablation, "06_pathways-ablation")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"


def test_swat_explorer_sparsity_slider(lab_page):
    """07: the SWAT Explorer's weight-sparsity slider redraws its figures."""
    lab, page, workspace = lab_page
    open_and_run(lab, page, workspace, "notebooks/07_swat.ipynb", min_plots=2, min_sliders=2)
    app = _app(page, has_button="Retrain")
    slider = slider_named(app, "weight sparsity")
    _plots_change(page, app, lambda: drag_slider(page, slider, 0.9), "the figures to follow the sparsity slider")
    shoot(app, "07_swat-explorer")
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors[:5]}"
