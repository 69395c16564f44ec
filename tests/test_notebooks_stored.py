"""The stored notebooks read well on GitHub: run top to bottom, no errors, small, no widget state.

These read the ``.ipynb`` files only (nothing is executed here; ``make test`` runs the notebooks
themselves through nbval).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


ids = [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_small_file(path):
    assert path.stat().st_size < 2_000_000, f"{path.name} is {path.stat().st_size / 1e6:.2f} MB"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_no_widget_state(path):
    nb = _load(path)
    assert "widgets" not in nb.get("metadata", {}), "saved widget state in the notebook metadata"
    for cell in nb["cells"]:
        assert "widgets" not in cell.get("metadata", {})
        for out in cell.get("outputs", []):
            assert WIDGET_VIEW not in out.get("data", {}), "a widget view whose state is not saved cannot render"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_every_code_cell_ran_in_order_without_error(path):
    cells = [c for c in _code_cells(_load(path)) if _source(c).strip()]
    counts = [c["execution_count"] for c in cells]
    assert None not in counts, f"code cells not run: {[i for i, n in enumerate(counts) if n is None]}"
    assert counts == list(range(1, len(cells) + 1)), f"not run top to bottom in one kernel: {counts}"
    for c in cells:
        for out in c.get("outputs", []):
            assert out["output_type"] != "error", f"stored error {out.get('ename')} in cell {c['execution_count']}"
            if out["output_type"] == "stream":
                assert out["name"] != "stderr" or "Traceback" not in "".join(out["text"]), "a traceback on stderr"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_figures_stored_as_plotly_json(path):
    for c in _code_cells(_load(path)):
        for out in c.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY in data:
                assert "text/html" not in data, "plotly figure stored with an HTML copy"
            html = "".join(data.get("text/html", ""))
            assert "plotly.js" not in html and "Plotly.newPlot" not in html, "HTML embedding plotly.js"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_claim_stated_and_asserted(path):
    nb = _load(path)
    assert any(c["cell_type"] == "markdown" and "**Claim.**" in _source(c) for c in nb["cells"])
    claims = [_source(c) for c in _code_cells(nb) if _source(c).lstrip().startswith("# CLAIM")]
    assert claims and all(re.search(r"^\s*assert ", s, re.M) for s in claims), "a '# CLAIM' cell must assert"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_exercises_have_solutions_and_checks(path):
    ex = [_source(c) for c in _code_cells(_load(path)) if "### BEGIN SOLUTION" in _source(c)]
    if path.name.startswith("00_"):
        return                      # the welcome notebook may have no exercise
    assert 1 <= len(ex) <= 3, f"{len(ex)} exercise cells"
    for s in ex:
        assert s.count("### BEGIN SOLUTION") == s.count("### END SOLUTION")
        assert re.search(r"\bcheck_\w+\(", s.split("### END SOLUTION")[-1]), "an exercise ends with a check_* call"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_referenced_assets_exist(path):
    for c in _load(path)["cells"]:
        for ref in re.findall(r"\.\./assets/[\w./-]+", _source(c)):
            assert (path.parent / ref).resolve().exists(), f"missing {ref}"
