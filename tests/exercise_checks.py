"""Shared by the exercise tests: a check must reject a wrong answer with a pointed hint."""
from __future__ import annotations

import pytest

from pwlab.exercises import ExerciseError


def rejects(check, answer, hint: str) -> str:
    """Assert ``check(answer)`` raises an :class:`ExerciseError` whose message holds ``hint``; return the message."""
    with pytest.raises(ExerciseError) as info:
        check(answer)
    assert hint in str(info.value), str(info.value)
    return str(info.value)
