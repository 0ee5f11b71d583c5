"""Shared test configuration: hypothesis profiles and common strategies."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

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


@st.composite
def betas(draw, max_n=40):
    """Awkward schedules: N = 1 included, β anywhere in [1e-8, 0.999], some near 0 and some near 1."""
    n = draw(st.integers(min_value=1, max_value=max_n))
    kind = draw(st.sampled_from(["uniform", "tiny", "large", "mixed"]))
    if kind == "tiny":
        elem = st.floats(1e-8, 1e-4)
    elif kind == "large":
        elem = st.floats(0.5, 0.999)
    else:
        elem = st.floats(1e-8, 0.999)
    return np.array(draw(st.lists(elem, min_size=n, max_size=n)), dtype=np.float64)


@st.composite
def schedule_and_trajectory(draw, max_n=40):
    """A schedule with a random strictly increasing trajectory [0, τ_1, …, τ_K] (K = N possible)."""
    import analytic_dpm as adpm

    b = draw(betas(max_n))
    sched = adpm.Schedule.from_betas(b)
    N = sched.N
    steps = draw(st.sets(st.integers(1, N), min_size=1, max_size=N))
    end_at_N = draw(st.booleans())
    steps = set(steps) | ({N} if end_at_N else set())
    traj = np.array([0] + sorted(steps), dtype=np.int64)
    return sched, traj


@pytest.fixture(autouse=True)
def _mpmath_precision():
    """Tests set mpmath's global precision at import time; restore 50 digits before each test so that the order in
    which test files run cannot lower it."""
    import mpmath

    old = mpmath.mp.dps
    mpmath.mp.dps = 50
    yield
    mpmath.mp.dps = old
