"""Argument parsing shared by the ``pwlab`` sub-commands: one-line errors and checked numbers.

A bad option value is refused while parsing, with one line naming the option, what it
accepts and what it got, instead of a Python traceback from deep inside a run::

    pwlab bench swat: error: argument --threads: must be an integer >= 1, got '0' (see pwlab bench swat --help)

The type functions below go to ``add_argument(type=...)``; argparse names the option.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

# torch.Generator.manual_seed takes up to 2**64 - 1, and the trainer seeds its generators with
# seed + 1 and seed + 2: below 2**63 every derived seed fits.
MAX_SEED = 2**63 - 1


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit status 2), pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts of threads, steps, repeats, sizes)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (steps where 0 means 'none', warm-up steps)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def seed(text: str) -> int:
    """A seed: an integer in 0 .. 2**63 - 1."""
    value = _int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in 0 .. 2**63-1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, learning rates, capacity factors)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def sparsity(text: str) -> float:
    """A sparsity: a number in [0, 1) (1 would keep nothing)."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port: an integer in 1 .. 65535."""
    value = _int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {text!r}")
    return value


def fail(prog: str, message: str) -> int:
    """Print ``prog: error: message`` as one line on stderr; the exit status 2, to return."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
