"""Schedules: published definitions, exactness against high precision, and properties on awkward schedules."""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import analytic_dpm as adpm
from conftest import betas

mpmath.mp.dps = 50


def test_linear_matches_definition():
    s = adpm.Schedule.linear(1000)
    ref = np.linspace(1e-4, 0.02, 1000)
    assert s.N == 1000
    assert s.beta[0] == 0.0 and s.alpha_bar[0] == 1.0 and s.beta_bar[0] == 0.0
    np.testing.assert_allclose(s.beta[1:], ref, rtol=1e-13, atol=0)
    np.testing.assert_allclose(s.alpha_bar[1:], np.cumprod(1 - ref), rtol=1e-12)


def test_linear_rescales_for_other_N():
    s = adpm.Schedule.linear(4000)
    assert s.beta[1] == pytest.approx(1e-4 * 0.25, rel=1e-14)
    assert s.beta[-1] == pytest.approx(0.02 * 0.25, rel=1e-14)


def test_cosine_matches_definition():
    N = 1000
    s = adpm.Schedule.cosine(N)

    def f(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    ref = [min(1 - f(n / N) / f((n - 1) / N), 0.999) for n in range(1, N + 1)]
    np.testing.assert_allclose(s.beta[1:], ref, rtol=1e-9)
    assert s.beta[-1] == 0.999  # the cap is active at the last step


@pytest.mark.parametrize("N", [1000, 4000])
def test_cosine_against_high_precision(N):
    s = adpm.Schedule.cosine(N)
    for n in [1, 2, N // 2, N - 2]:
        def f(u):
            return mpmath.cos((mpmath.mpf(u) + mpmath.mpf("0.008")) / mpmath.mpf("1.008") * mpmath.pi / 2) ** 2
        beta = 1 - f(mpmath.mpf(n) / N) / f(mpmath.mpf(n - 1) / N)
        assert float(beta) == pytest.approx(s.beta[n], rel=1e-11)
        # β̄_n = 1 − f(n/N)/f(0) with no cancellation at small n
        beta_bar = 1 - f(mpmath.mpf(n) / N) / f(0)
        assert float(beta_bar) == pytest.approx(s.beta_bar[n], rel=1e-11)


def test_tiny_beta_loses_no_digits():
    b = np.array([1e-12, 3e-12, 1e-10])
    s = adpm.Schedule.from_betas(b)
    assert s.beta_bar[1] == pytest.approx(1e-12, rel=1e-15)
    exact = 1 - (1 - mpmath.mpf(1e-12)) * (1 - mpmath.mpf(3e-12)) * (1 - mpmath.mpf(1e-10))
    assert s.beta_bar[3] == pytest.approx(float(exact), rel=1e-14)
    np.testing.assert_allclose(s.beta[1:], b, rtol=1e-14)
    # skip quantities keep their digits too
    assert s.skip_beta(1, 3) == pytest.approx(float(1 - (1 - mpmath.mpf(3e-12)) * (1 - mpmath.mpf(1e-10))), rel=1e-12)


def test_from_alpha_bar_roundtrip():
    s = adpm.Schedule.cosine(200)
    s2 = adpm.Schedule.from_alpha_bar(s.alpha_bar[1:])
    np.testing.assert_allclose(s2.beta, s.beta, rtol=1e-12, atol=1e-300)


def test_arrays_are_read_only():
    s = adpm.Schedule.linear(10, beta_end=0.2)
    with pytest.raises(ValueError):
        s.beta[1] = 0.5


@given(betas())
def test_alpha_bar_strictly_decreasing(b):
    s = adpm.Schedule.from_betas(b)
    assert np.all(np.diff(s.log_alpha_bar) < 0)
    assert np.all(np.diff(s.alpha_bar) < 0)
    assert np.all((s.beta_bar[1:] > 0) & (s.beta_bar[1:] <= 1))  # β̄ rounds to 1 once ᾱ < 1e-16
    np.testing.assert_allclose(s.alpha_bar + s.beta_bar, 1.0, rtol=0, atol=2e-16)
    np.testing.assert_allclose(s.beta[1:], b, rtol=1e-12)


@given(betas(), st.data())
def test_skip_identities(b, data):
    s = adpm.Schedule.from_betas(b)
    N = s.N
    n = data.draw(st.integers(1, N))
    # single steps reduce to the per-step quantities
    assert s.skip_beta(n - 1, n) == pytest.approx(s.beta[n], rel=1e-12)
    assert s.skip_beta_tilde(n - 1, n) == pytest.approx(s.beta_tilde[n], rel=1e-12, abs=1e-300)
    if N >= 2:
        i, j, k = sorted(data.draw(st.lists(st.integers(0, N), min_size=3, max_size=3, unique=True)))
        # α_{k|i} = α_{k|j} α_{j|i}; ᾱ_j = α_{j|i} ᾱ_i
        assert s.skip_alpha(i, k) == pytest.approx(s.skip_alpha(i, j) * s.skip_alpha(j, k), rel=1e-12)
        assert s.alpha_bar[j] == pytest.approx(s.skip_alpha(i, j) * s.alpha_bar[i], rel=1e-12)
        # β̄_t − α_{t|s} β̄_s = β_{t|s}
        assert s.beta_bar[k] - s.skip_alpha(j, k) * s.beta_bar[j] == pytest.approx(
            s.skip_beta(j, k), rel=1e-9, abs=1e-15)
        # β̃_{s|t} ≤ β_{t|s}
        assert s.skip_beta_tilde(j, k) <= s.skip_beta(j, k) * (1 + 1e-12)


def test_skip_quantities_against_high_precision():
    """β_{t|s} for short hops late in a long schedule: the double-double log ᾱ keeps every digit."""
    s = adpm.Schedule.cosine(4000)
    for (a, b) in [(3990, 3991), (2000, 2001), (1, 2), (5, 3000)]:
        prod = mpmath.mpf(1)
        for i in range(a + 1, b + 1):
            prod *= 1 - mpmath.mpf(s.beta[i])
        assert s.skip_beta(a, b) == pytest.approx(float(1 - prod), rel=1e-14)
        assert s.skip_alpha(a, b) == pytest.approx(float(prod), rel=1e-14)
