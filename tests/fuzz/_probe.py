"""The fuzz suite's oracle and tally: each probe ends in a clear error or a correct result.

A *clear error* is an exception of a documented type whose message names the offending
argument; a *correct result* passes the probe's own check (finite, the right shape). Anything
else is an *unhelpful crash* (another exception type, or a message that does not name the
argument) or a *silent* result (returned, but non-finite or of the wrong shape). Every probe is
counted in :data:`COUNTS`; ``conftest.py`` prints the tally and writes it to
``test-artifacts/fuzz_counts.json``.
"""
from __future__ import annotations

import contextlib
import signal
from collections import Counter

import pytest
import torch

from pwlab.checkpoint import CheckpointIntegrityError
from pwlab.train import NonFiniteGradientError, NonFiniteLossError

# the exception types pwlab documents for bad input (KeyError: an unknown name; the OSErrors: a path)
DOCUMENTED = (ValueError, TypeError, KeyError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
              PermissionError, CheckpointIntegrityError, NonFiniteLossError, NonFiniteGradientError)
OUTCOMES = ("probes", "clear_errors", "correct_results", "unhelpful_crashes", "silent_results")
COUNTS: Counter = Counter({k: 0 for k in OUTCOMES})
TIMEOUT_S = 20.0


class ProbeTimeout(Exception):
    """A probe ran past its time limit (a hang or a huge allocation in progress)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`ProbeTimeout` in the main thread after ``seconds`` (SIGALRM)."""
    def on_alarm(signum, frame):
        raise ProbeTimeout(f"probe ran longer than {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _record(outcome: str) -> str:
    COUNTS["probes"] += 1
    COUNTS[outcome] += 1
    return outcome


def classify(call, names, check=None, *, timeout: float = TIMEOUT_S):
    """Run ``call()``; return ``(outcome, detail)``, outcome one of the last four of :data:`OUTCOMES`.

    ``names``: the argument name(s) an error message must mention (any one of them).
    ``check(result)``: asserts the result is correct; an ``AssertionError`` makes it silent.
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    try:
        with time_limit(timeout):
            result = call()
    except DOCUMENTED as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        text = str(text)
        if any(n in text for n in names):
            return _record("clear_errors"), e
        return _record("unhelpful_crashes"), f"{type(e).__name__} not naming {names}: {text[:300]}"
    except Exception as e:          # noqa: BLE001 -- any other type is the finding
        return _record("unhelpful_crashes"), f"{type(e).__name__}: {str(e)[:300]}"
    if check is not None:
        try:
            check(result)
        except AssertionError as e:
            return _record("silent_results"), f"silent result: {e}"
    return _record("correct_results"), result


def probe(call, names, check=None, *, timeout: float = TIMEOUT_S, expect: str | None = None):
    """Classify one probe and fail the test unless it is a clear error or a correct result.

    ``expect="error"`` also fails a probe whose input has no correct result (garbage) but returned;
    ``expect="result"`` fails one that should have worked but raised.
    """
    outcome, detail = classify(call, names, check, timeout=timeout)
    if outcome in ("unhelpful_crashes", "silent_results"):
        pytest.fail(f"{outcome}: {detail}")
    if expect == "error" and outcome != "clear_errors":
        COUNTS["correct_results"] -= 1
        COUNTS["silent_results"] += 1
        pytest.fail(f"silent_results: garbage accepted, returned {type(detail).__name__}")
    if expect == "result" and outcome != "correct_results":
        pytest.fail(f"valid input refused: {detail}")
    return detail


def finite_of_shape(shape):
    """A check: a tensor (or the first item of a tuple) that is finite and of ``shape``."""
    def check(result):
        y = result[0] if isinstance(result, tuple) else result
        assert isinstance(y, torch.Tensor), f"not a tensor: {type(y).__name__}"
        assert tuple(y.shape) == tuple(shape), f"shape {tuple(y.shape)}, expected {tuple(shape)}"
        assert not y.is_floating_point() or bool(torch.isfinite(y).all()), "non-finite values"
    return check
