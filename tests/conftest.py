"""Shared fixtures: seeded generators and a fast hypothesis profile."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# The test models are small: a second intra-op thread only spins (and, on shared cores, makes
# every op wait for a time slice). Tests that need more threads set them themselves.
torch.set_num_threads(1)

settings.register_profile("pwlab", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pwlab"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: faster than two on a shared 2-core
    machine (use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
