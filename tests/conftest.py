"""Shared test configuration: hypothesis profiles; the common strategies come from analytic_dpm.testing.strategies."""

import os

import pytest
from hypothesis import HealthCheck, settings

# The shared strategies live in the public toolkit (no second copy here): awkward β (N = 1 included, β in
# [1e-8, 0.999]) and random strictly increasing trajectories (K = N possible, τ_K = N or earlier).
from analytic_dpm.testing.strategies import betas, schedule_and_trajectory  # noqa: F401

settings.register_profile(
    "ci", derandomize=True, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Small convolutions run fastest on one thread; with two, OpenMP threads spin-wait on a busy 2-core machine.
try:
    import torch

    torch.set_num_threads(int(os.environ.get("ADPM_TORCH_THREADS", "1")))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _mpmath_precision():
    """Tests set mpmath's global precision at import time; restore 50 digits before each test so that the order in
    which test files run cannot lower it."""
    import mpmath

    old = mpmath.mp.dps
    mpmath.mp.dps = 50
    yield
    mpmath.mp.dps = old
