"""Theorem 1 and 2 on trajectories: published Table 7 numbers, high-precision checks, properties, clipping."""

import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import analytic_dpm as adpm
from conftest import schedule_and_trajectory

mpmath.mp.dps = 50

# Paper App. G.4, Table 7 (facts file §3.5): (τ_1 = 1, τ_2) transition of the even trajectory.
# rows: (schedule, N, K values, DDPM UB, DDPM LB, DDIM UB); DDIM's LB is 0.
TABLE7 = [
    ("linear", 1000, [10, 25, 50, 100], [1.45e-1, 2.24e-2, 6.20e-3, 2.10e-3], [9.99e-5, 9.96e-5, 9.84e-5, 9.55e-5],
     [1.37e-1, 1.96e-2, 4.82e-3, 1.36e-3]),
    ("cosine", 1000, [10, 25, 50, 100], [3.56e-2, 6.15e-3, 1.85e-3, 6.80e-4], [4.12e-5, 4.10e-5, 4.04e-5, 3.89e-5],
     [3.33e-2, 5.22e-3, 1.37e-3, 4.18e-4]),
    ("cosine", 4000, [25, 50, 100, 200], [5.93e-3, 1.84e-3, 6.44e-4, 2.61e-4], [9.85e-6, 9.81e-6, 9.72e-6, 9.51e-6],
     [5.46e-3, 1.59e-3, 5.03e-4, 1.77e-4]),
]


def _sig3(x):
    return float(f"{x:.2e}")


@pytest.mark.parametrize("name,N,Ks,ub_ddpm,lb_ddpm,ub_ddim", TABLE7)
def test_table7_bounds(name, N, Ks, ub_ddpm, lb_ddpm, ub_ddim):
    sched = getattr(adpm.Schedule, name)(N)
    for K, ub, lb, ubi in zip(Ks, ub_ddpm, lb_ddpm, ub_ddim):
        tr = adpm.even_trajectory(N, K)
        v = adpm.reverse_variances(sched, tr, "ddpm-small")  # baselines report the same bounds
        assert (v.s[1], v.t[1]) == (1, tr[2])
        assert _sig3(v.lower[1]) == lb and _sig3(v.upper[1]) == ub
        vi = adpm.reverse_variances(sched, tr, "ddim")
        assert vi.lower[1] == 0.0 and _sig3(vi.upper[1]) == ubi


def test_table7_example_both_upper_bounds():
    """Facts file §3.5: LS, K = 10 is the transition (1, 112): UB11 = 0.145, UB12 = 0.999 (DDPM); 0.137, 0.948 (DDIM)."""
    sched = adpm.Schedule.linear(1000)
    tr = adpm.even_trajectory(1000, 10)
    v = adpm.reverse_variances(sched, tr, "ddpm-large")
    assert _sig3(v.upper_eq11[1]) == 1.45e-1 and float(f"{v.upper_eq12[1]:.3g}") == 0.999
    vi = adpm.reverse_variances(sched, tr, "ddim")
    assert _sig3(vi.upper_eq11[1]) == 1.37e-1 and float(f"{vi.upper_eq12[1]:.3g}") == 0.948


@pytest.mark.parametrize("y,expected", [(1, 9.66e-5), (2, 3.87e-4)])
def test_table7_pixel_threshold(y, expected):
    assert _sig3(adpm.pixel_clip_threshold(y)) == expected


def _mp_sigma_sq(sched, s, t, gamma_t, eta2):
    """Theorem 1 evaluated in 50-digit arithmetic from the same β."""
    ab = [mpmath.mpf(1)]
    for b in sched.beta[1:t + 1]:
        ab.append(ab[-1] * (1 - mpmath.mpf(b)))
    abs_, abt = ab[s], ab[t]
    bbs, bbt = 1 - abs_, 1 - abt
    a_ts = abt / abs_
    lam2 = eta2 * bbs / bbt * (1 - a_ts)
    g = mpmath.sqrt(bbt / a_ts) - mpmath.sqrt(bbs - lam2)
    return lam2 + g**2 * (1 - mpmath.mpf(gamma_t)), lam2, g


@pytest.mark.parametrize("sched", [adpm.Schedule.linear(1000), adpm.Schedule.cosine(1000)], ids=["linear", "cosine"])
@pytest.mark.parametrize("pair", [(1, 2), (1, 112), (500, 501), (998, 1000), (0, 1), (0, 40)])
@pytest.mark.parametrize("method", ["analytic-ddpm", "analytic-ddim"])
def test_sigma_sq_against_high_precision(sched, pair, method):
    s, t = pair
    gamma = np.full(sched.N + 1, 0.3)
    tr = np.array([0, t]) if s == 0 else np.array([0, s, t])
    v = adpm.reverse_variances(sched, tr, method, gamma=gamma, data_range=None, clip=False)
    ref, lam2, g = _mp_sigma_sq(sched, s, t, 0.3, 1 if method == "analytic-ddpm" else 0)
    assert v.sigma_sq[-1] == pytest.approx(float(ref), rel=1e-13)
    assert v.lambda_sq[-1] == pytest.approx(float(lam2), rel=1e-13, abs=1e-300)
    fam = adpm.posterior.family_of(method)
    assert adpm.gap(sched, s, t, fam) == pytest.approx(float(g), rel=1e-13)


def test_corollaries_match_general_formula_cosine_4000():
    sched = adpm.Schedule.cosine(4000)
    tr = adpm.even_trajectory(4000, 100)
    s, t = adpm.transitions(tr)
    gamma_t = np.linspace(0, 1, t.size)
    general = adpm.sigma_sq_opt(sched, s, t, gamma_t, "ddpm")
    np.testing.assert_allclose(adpm.ddpm_sigma_sq_opt(sched, s, t, gamma_t), general, rtol=1e-11)
    lo, ub11, ub12 = adpm.ddpm_bounds(sched, s, t)
    glo, gub11, gub12 = adpm.theorem2_bounds(sched, s, t, "ddpm")
    np.testing.assert_allclose(lo, glo, rtol=1e-12)
    np.testing.assert_allclose(ub11, gub11, rtol=1e-11)
    np.testing.assert_allclose(ub12, gub12, rtol=1e-11)


@given(schedule_and_trajectory(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_bounds_hold_for_every_gamma(st_pair, gamma_value, eta):
    sched, tr = st_pair
    gamma = np.full(sched.N + 1, gamma_value)
    for method, e in [("analytic-ddpm", 0.0), ("analytic-ddim", eta)]:
        v = adpm.reverse_variances(sched, tr, method, gamma=gamma, eta=e, data_range=None, clip=False)
        assert np.all(v.lower <= v.sigma_sq * (1 + 1e-12))
        assert np.all(v.sigma_sq <= v.upper * (1 + 1e-12))
        assert not v.clipped.any()
        vc = adpm.reverse_variances(sched, tr, method, gamma=gamma, eta=e, clip=True)
        assert np.all((vc.lower <= vc.sigma_sq) & (vc.sigma_sq <= vc.upper))
        assert np.all(vc.upper <= vc.upper_eq11) and np.all(vc.upper <= vc.upper_eq12)


@given(schedule_and_trajectory(), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_sigma_sq_non_increasing_in_gamma(st_pair, g1, g2, eta):
    sched, tr = st_pair
    lo, hi = sorted([g1, g2])
    for method, e in [("analytic-ddpm", 0.0), ("analytic-ddim", eta)]:
        va = adpm.reverse_variances(sched, tr, method, gamma=np.full(sched.N + 1, lo), eta=e, clip=False)
        vb = adpm.reverse_variances(sched, tr, method, gamma=np.full(sched.N + 1, hi), eta=e, clip=False)
        assert np.all(vb.sigma_sq <= va.sigma_sq)


@given(schedule_and_trajectory(), st.floats(0.0, 1.0))
def test_ddpm_simplifications_equal_general_formula(st_pair, gamma_value):
    sched, tr = st_pair
    s, t = adpm.transitions(tr)
    gamma_t = np.full(t.shape, gamma_value)
    general = adpm.sigma_sq_opt(sched, s, t, gamma_t, "ddpm")
    cor2 = adpm.ddpm_sigma_sq_opt(sched, s, t, gamma_t)
    np.testing.assert_allclose(cor2, general, rtol=1e-9, atol=1e-300)
    lo, ub11, ub12 = adpm.ddpm_bounds(sched, s, t)
    glo, gub11, gub12 = adpm.theorem2_bounds(sched, s, t, "ddpm")
    np.testing.assert_allclose(lo, glo, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(ub11, gub11, rtol=1e-9)
    np.testing.assert_allclose(ub12, gub12, rtol=1e-9)


@given(schedule_and_trajectory(), st.floats(0.0, 1.0))
def test_lemma13_form_equals_theorem1(st_pair, gamma_value):
    """λ² + c²·(β̄_t/ᾱ_t)(1 − Γ) (law of total variance + Tweedie) equals Theorem 1's noise form."""
    sched, tr = st_pair
    s, t = adpm.transitions(tr)
    cov = sched.beta_bar[t] / sched.alpha_bar[t] * (1 - gamma_value)
    for fam in ("ddpm", "ddim"):
        a = adpm.sigma_sq_from_posterior_cov(sched, s, t, cov, fam)
        b = adpm.sigma_sq_opt(sched, s, t, np.full(t.shape, gamma_value), fam)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-300)


def test_baselines_and_lambda():
    sched = adpm.Schedule.linear(1000)
    tr = adpm.even_trajectory(1000, 10)
    s, t = adpm.transitions(tr)
    large = adpm.reverse_variances(sched, tr, "ddpm-large")
    small = adpm.reverse_variances(sched, tr, "ddpm-small")
    ddim = adpm.reverse_variances(sched, tr, "ddim")
    ddim_eta = adpm.reverse_variances(sched, tr, "ddim", eta=0.5)
    np.testing.assert_allclose(large.sigma_sq, sched.skip_beta(s, t))
    np.testing.assert_allclose(small.sigma_sq, sched.skip_beta_tilde(s, t))
    np.testing.assert_array_equal(ddim.sigma_sq, 0.0)
    np.testing.assert_allclose(ddim_eta.sigma_sq, 0.25 * sched.skip_beta_tilde(s, t))
    assert small.lambda_sq[0] == 0.0  # s = 0
    assert np.isnan(large.gamma).all() and not large.clipped.any()
    # N = 1000, K = N: the DDPM per-step quantities
    full = adpm.reverse_variances(sched, adpm.even_trajectory(1000, 1000), "ddpm-large")
    np.testing.assert_allclose(full.sigma_sq, sched.beta[1:], rtol=1e-12)


def test_clipping_is_reported():
    sched = adpm.Schedule.linear(1000)
    tr = adpm.even_trajectory(1000, 10)
    gamma = np.zeros(1001)  # Γ = 0: σ² = eq. 11, above eq. 12 at large t
    v = adpm.reverse_variances(sched, tr, "analytic-ddpm", gamma=gamma)
    assert v.clipped.any()
    np.testing.assert_array_equal(v.sigma_sq[v.clipped], v.upper[v.clipped])
    np.testing.assert_array_equal(v.sigma_sq_unclipped[~v.clipped], v.sigma_sq[~v.clipped])
    # unbounded data: eq. 11 only, Γ = 0 sits exactly on it, so nothing is clipped
    v2 = adpm.reverse_variances(sched, tr, "analytic-ddpm", gamma=gamma, data_range=None)
    assert not v2.clipped.any() and np.isinf(v2.upper_eq12).all()


def test_gamma_outside_unit_interval_warns_and_clips():
    sched = adpm.Schedule.linear(1000)
    tr = adpm.even_trajectory(1000, 10)
    gamma = np.full(1001, 1.2)
    with pytest.warns(RuntimeWarning, match=r"outside \[0, 1\]"):
        v = adpm.reverse_variances(sched, tr, "analytic-ddpm", gamma=gamma)
    np.testing.assert_allclose(v.sigma_sq, v.lower)
    np.testing.assert_array_equal(v.gamma, 1.0)


def test_gamma_nan_outside_trajectory_is_fine():
    sched = adpm.Schedule.linear(1000)
    tr = adpm.even_trajectory(1000, 10)
    gamma = np.full(1001, np.nan)
    gamma[tr[1:]] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = adpm.reverse_variances(sched, tr, "analytic-ddim", gamma=gamma)
    assert np.isfinite(v.sigma_sq).all()


def test_gamma_above_one_is_reported_as_clipped():
    sched = adpm.Schedule.linear(1000)
    tr = adpm.even_trajectory(1000, 10)
    gamma = np.full(1001, 0.5)
    gamma[tr[3]] = 1.05
    with pytest.warns(RuntimeWarning):
        v = adpm.reverse_variances(sched, tr, "analytic-ddpm", gamma=gamma, data_range=None)
    assert v.clipped[2] and v.clipped.sum() == 1
    assert v.sigma_sq_unclipped[2] < v.lower[2] and v.sigma_sq[2] == v.lower[2]
