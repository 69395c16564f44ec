"""The fuzz suite's tally: probes and their outcomes, printed at the end and kept as JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fuzz._probe import COUNTS, OUTCOMES

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "fuzz_counts.json"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the tally and write it to ``test-artifacts/fuzz_counts.json`` (only when probes ran)."""
    if not COUNTS["probes"]:
        return
    counts = {k: COUNTS[k] for k in OUTCOMES}
    terminalreporter.write_sep("=", "pwlab fuzz probes")
    terminalreporter.write_line(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(counts, indent=2) + "\n")


# Probes that still fail, each with why it is not fixed here; strict, so a fix makes them fail
# until they are taken off this list. Keyed by the end of the test id.
KNOWN: dict[str, str] = {}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for suffix, reason in KNOWN.items():
            if item.nodeid.endswith(suffix):
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
