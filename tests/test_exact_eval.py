"""Exact evaluation on Gaussian data: the generated Gaussian (hand calculations, brute-force Monte Carlo of the same
chain), the Fréchet distance (scipy.linalg.sqrtm), the variational bound (optimality of Analytic-DDPM, Theorem 3,
undefined for DDIM η = 0) and the Gaussian-KL helpers of likelihood.py."""

import math
import time

import numpy as np
import pytest
import scipy.fft
import scipy.linalg

from analytic_dpm.likelihood import exact_mean_transition_kl, gaussian_kl, prior_kl_per_dim
from analytic_dpm.posterior import family_of, gap, posterior_coefficients
from analytic_dpm.schedules import Schedule
from analytic_dpm.trajectories import even_trajectory, transitions
from analytic_dpm.variance import reverse_variances
from analytic_dpm.toy.exact import evaluate_exact, exact_mean_bound, frechet_distance_same_basis
from analytic_dpm.toy.gaussian import GaussianData, default_gaussian
from analytic_dpm.toy.imperfect import exact_gamma_of_imperfect
from analytic_dpm.toy.mixture import default_mixture

LINEAR = Schedule.linear(1000)
COSINE = Schedule.cosine(1000)


def _generic_fd(m1, c1, m2, c2):
    root1 = scipy.linalg.sqrtm(c1)
    cross = scipy.linalg.sqrtm(root1 @ c2 @ root1)
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * np.real(cross)))


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    cov = (q * np.array([0.002, 0.05, 0.3])) @ q.T
    return GaussianData(np.array([0.3, -0.2, 0.1]), 0.5 * (cov + cov.T))


# ------------------------------------------------------------------------------------------------ hand calculations
def test_k1_ddpm_small_by_hand():
    """K = 1: x_N ~ N(0, 1), x_0 = E[x_0|x_N] = μ + k (x_N − √ᾱ_N μ), k = √ᾱ_N λ/(ᾱ_N λ + β̄_N); the bound is the prior."""
    betas = np.linspace(0.1, 0.2, 10)
    s = Schedule.from_betas(betas)
    ab = float(np.prod(1.0 - betas))
    bb = 1.0 - ab
    mu, lam = 0.4, 0.09
    r = evaluate_exact(GaussianData([mu], [lam]), s, [0, 10], "ddpm-small")
    k = math.sqrt(ab) * lam / (ab * lam + bb)
    assert r.mean[0] == pytest.approx(mu * (1 - math.sqrt(ab) * k), rel=1e-12)
    assert r.cov[0, 0] == pytest.approx(k * k, rel=1e-12)
    assert r.fd == pytest.approx((math.sqrt(lam) - k) ** 2 + (mu * math.sqrt(ab) * k) ** 2, rel=1e-12)
    prior = 0.5 * (bb + ab * (mu**2 + lam) - 1 - math.log(bb))
    assert r.vb_nats_per_dim == pytest.approx(prior, rel=1e-12)
    assert r.prior_kl == pytest.approx(prior, rel=1e-12)
    assert r.kl_terms.shape == (1,) and np.isnan(r.kl_terms[0])
    assert r.vb_undefined_reason is None


def test_k2_ddpm_small_by_hand():
    betas = np.linspace(0.05, 0.3, 10)
    s = Schedule.from_betas(betas)
    abar = np.concatenate([[1.0], np.cumprod(1.0 - betas)])
    bbar = 1.0 - abar
    mu, lam = -0.3, 0.2
    r = evaluate_exact(GaussianData([mu], [lam]), s, [0, 4, 10], "ddpm-small")
    # transition (4, 10), DDPM posterior: c0 = √ᾱ_4 β_{10|4}/β̄_10, ct = √α_{10|4} β̄_4/β̄_10, σ² = β̃ = β̄_4 β_{10|4}/β̄_10
    a_ts = abar[10] / abar[4]
    b_ts = 1 - a_ts
    c0 = math.sqrt(abar[4]) * b_ts / bbar[10]
    ct = math.sqrt(a_ts) * bbar[4] / bbar[10]
    sig2 = bbar[4] * b_ts / bbar[10]
    k10 = math.sqrt(abar[10]) * lam / (abar[10] * lam + bbar[10])
    k4 = math.sqrt(abar[4]) * lam / (abar[4] * lam + bbar[4])
    mean4 = c0 * mu * (1 - math.sqrt(abar[10]) * k10)
    var4 = (c0 * k10 + ct) ** 2 + sig2
    mean0 = mu + k4 * (mean4 - math.sqrt(abar[4]) * mu)
    var0 = k4**2 * var4
    assert r.mean[0] == pytest.approx(mean0, rel=1e-12)
    assert r.cov_eigvals[0] == pytest.approx(var0, rel=1e-12)
    v10 = lam * bbar[10] / (abar[10] * lam + bbar[10])
    kl = 0.5 * c0**2 * v10 / sig2  # σ² = λ²: only the mean term is left
    prior = 0.5 * (bbar[10] + abar[10] * (mu**2 + lam) - 1 - math.log(bbar[10]))
    assert r.kl_terms[1] == pytest.approx(kl, rel=1e-12)
    assert r.vb_nats_per_dim == pytest.approx(prior + kl, rel=1e-12)


# ------------------------------------------------------------------------------------------------ brute force
def _coefficients_by_conditioning(schedule, s, t, family, eta):
    """(coef_x0, coef_xt) of the mean of q(x_s | x_t, x_0), derived here without posterior.py.

    DDPM family: condition the joint Gaussian of (x_s, x_t) given x_0 (x_s = √ᾱ_s x_0 + √β̄_s ε_1,
    x_t = √α_{t|s} x_s + √β_{t|s} ε_2) numerically with a 2×2 covariance solve. DDIM family: the paper's definition
    √ᾱ_s x_0 + √(β̄_s − λ²)(x_t − √ᾱ_t x_0)/√β̄_t with λ² = η²·(β̄_s/β̄_t)(1 − ᾱ_t/ᾱ_s), from ᾱ alone."""
    ab = np.cumprod(np.concatenate([[1.0], 1.0 - schedule.beta[1:]]))
    c0, ct = np.empty(len(s)), np.empty(len(s))
    for i, (a, b) in enumerate(zip(s, t)):
        ab_s, ab_t = ab[a], ab[b]
        bb_s, bb_t = 1.0 - ab_s, 1.0 - ab_t
        if family == "ddpm":
            a_ts = ab_t / ab_s
            cov_st = math.sqrt(a_ts) * bb_s  # Cov(x_s, x_t | x_0)
            ct[i] = cov_st / bb_t if b > 0 else 0.0  # regression of x_s on x_t given x_0
            c0[i] = math.sqrt(ab_s) - ct[i] * math.sqrt(ab_t)
        else:
            lam2 = eta**2 * (bb_s / bb_t) * (1.0 - ab_t / ab_s)
            ct[i] = math.sqrt(max(bb_s - lam2, 0.0)) / math.sqrt(bb_t)
            c0[i] = math.sqrt(ab_s) - ct[i] * math.sqrt(ab_t)
    return c0, ct


def test_posterior_coefficients_match_the_independent_derivation():
    for sched in (LINEAR, COSINE):
        traj = even_trajectory(1000, 25)
        sv, tv = transitions(traj)
        for family, eta in (("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.6)):
            c0, ct, _ = posterior_coefficients(sched, sv, tv, family, eta)
            r0, rt = _coefficients_by_conditioning(sched, sv, tv, family, eta)
            np.testing.assert_allclose(c0, r0, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(ct, rt, rtol=1e-9, atol=1e-12)


def _simulate(data, schedule, traj, method, eta, M, seed):
    rv = reverse_variances(schedule, traj, method, gamma=data.gamma(schedule), eta=eta, data_range=None)
    sv, tv = transitions(traj)
    # the chain's coefficients from the independent derivation, so that a wrong posterior.py shows up here
    c0, ct = _coefficients_by_conditioning(schedule, sv, tv, family_of(method), eta)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, data.dim))
    for k in range(len(tv) - 1, -1, -1):
        x0_hat = data.x0_posterior_mean(schedule, x, int(tv[k]))
        x = c0[k] * x0_hat + ct[k] * x
        if sv[k] > 0:
            x = x + math.sqrt(rv.sigma_sq[k]) * rng.standard_normal(x.shape)
    return x


@pytest.mark.parametrize("method,eta,traj", [
    ("analytic-ddpm", 0.0, even_trajectory(100, 5)),
    ("ddpm-large", 0.0, even_trajectory(100, 3)),
    ("ddim", 0.0, even_trajectory(100, 5)),
    ("analytic-ddim", 0.5, np.array([0, 3, 20, 60])),  # ends before N: the chain starts at x_60 ~ N(0, I)
])
def test_generated_distribution_matches_brute_force_chain(small, method, eta, traj):
    """Mean and covariance of 20000 simulated chains within 4 standard errors of the exact propagation."""
    s = Schedule.linear(100)
    r = evaluate_exact(small, s, traj, method, eta=eta)
    M = 20000
    x = _simulate(small, s, traj, method, eta, M, seed=11)
    cov = r.cov
    se_mean = np.sqrt(np.diag(cov) / M)
    assert np.all(np.abs(x.mean(axis=0) - r.mean) <= 4 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / M)
    assert np.all(np.abs(np.cov(x.T) - cov) <= 4 * se_cov)


# ------------------------------------------------------------------------------------------------ Fréchet distance
def test_frechet_distance(small):
    lam = np.array([0.1, 0.5, 2.0])
    m = np.array([0.3, -0.1, 0.0])
    assert frechet_distance_same_basis(m, lam, m, lam) == 0.0
    assert frechet_distance_same_basis(m, lam, m + 0.1, lam) == pytest.approx(0.03, rel=1e-12)
    r = evaluate_exact(small, LINEAR, even_trajectory(1000, 10), "analytic-ddpm")
    generic = _generic_fd(small.mean, small.cov, r.mean, r.cov)
    assert r.fd == pytest.approx(generic, rel=1e-8)
    g = r.as_gaussian()
    assert _generic_fd(g.mean, g.cov, r.mean, r.cov) == pytest.approx(0.0, abs=1e-12)
    assert _generic_fd(small.mean, small.cov, small.mean, small.cov) == pytest.approx(0.0, abs=1e-12)


def test_more_steps_approach_the_data():
    data = default_gaussian(dim=16, rotate=True, seed=0)
    fds = [evaluate_exact(data, LINEAR, even_trajectory(1000, K), "analytic-ddpm").fd for K in (10, 100, 1000)]
    assert fds[0] > fds[1] > fds[2] and fds[2] < 1e-2 * fds[0]


# ------------------------------------------------------------------------------------------------ variational bound
@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_analytic_ddpm_bound_below_both_baselines(schedule):
    """Optimality (Theorem 1): with the exact mean, σ*² minimises every transition's KL, so the bound is ≤ both
    baselines' at every K, term by term (equal at K = 1, where only the prior remains)."""
    data = default_gaussian(dim=16, rotate=True, seed=0)
    for K in (1, 2, 5, 10, 50, 100, 1000):
        traj = even_trajectory(schedule.N, K)
        ana = evaluate_exact(data, schedule, traj, "analytic-ddpm")
        for base in ("ddpm-large", "ddpm-small"):
            b = evaluate_exact(data, schedule, traj, base)
            assert ana.vb_nats_per_dim <= b.vb_nats_per_dim * (1 + 1e-12)
            inner = traj[:-1] >= 1
            assert np.all(ana.kl_terms[inner] <= b.kl_terms[inner] * (1 + 1e-12) + 1e-16)
        if K == 1:
            assert ana.vb_nats_per_dim == ana.prior_kl


@pytest.mark.parametrize("method", ["ddim", "analytic-ddim"])
def test_bound_undefined_for_ddim_eta_zero(small, method):
    r = evaluate_exact(small, LINEAR, even_trajectory(1000, 10), method, eta=0.0)
    assert r.vb_nats_per_dim is None and r.vb_bits_per_dim is None
    assert isinstance(r.vb_undefined_reason, str) and "undefined" in r.vb_undefined_reason
    assert np.all(np.isinf(r.kl_terms[1:]))
    assert np.isfinite(r.fd)  # the samples are still well defined
    # with η > 0 the bound exists, and the analytic variance is again optimal
    ana = evaluate_exact(small, LINEAR, even_trajectory(1000, 10), "analytic-ddim", eta=0.5)
    base = evaluate_exact(small, LINEAR, even_trajectory(1000, 10), "ddim", eta=0.5)
    assert ana.vb_nats_per_dim is not None and ana.vb_nats_per_dim <= base.vb_nats_per_dim


@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_theorem3_terms(small, schedule):
    """Analytic-DDPM with exact Γ: each transition term equals ½ log(σ*²/λ²) (Theorem 3), to 1e-10 relative at every
    t, cosine t = N included: the exact 1 − Γ_t enters σ² directly (no 1 − Γ cancellation)."""
    for K in (2, 10, 1000):
        traj = even_trajectory(schedule.N, K)
        r = evaluate_exact(small, schedule, traj, "analytic-ddpm")
        assert not r.variances.clipped.any()
        inner = r.trajectory[:-1] >= 1
        # ½ log(σ*²/λ²) = ½ log1p(c²v_t/λ²), evaluated from the exact v_t (not from the rounded σ²)
        expect = 0.5 * np.log1p(r.bound.coef_x0[inner] ** 2 * r.bound.cov_x0[inner] / r.lambda_sq[inner])
        np.testing.assert_allclose(r.kl_terms[inner], expect, rtol=1e-10, atol=0)
        assert r.vb_nats_per_dim == pytest.approx(r.prior_kl + r.kl_terms[inner].sum(), rel=1e-13)


def test_given_gamma_and_imperfect_gamma(small):
    traj = even_trajectory(1000, 10)
    exact = evaluate_exact(small, LINEAR, traj, "analytic-ddpm")
    same = evaluate_exact(small, LINEAR, traj, "analytic-ddpm", one_minus_gamma=small.one_minus_gamma(LINEAR))
    assert same.vb_nats_per_dim == exact.vb_nats_per_dim and same.fd == exact.fd
    via_gamma = evaluate_exact(small, LINEAR, traj, "analytic-ddpm", gamma=small.gamma(LINEAR))
    assert via_gamma.vb_nats_per_dim == pytest.approx(exact.vb_nats_per_dim, rel=1e-12)
    assert via_gamma.fd == pytest.approx(exact.fd, rel=1e-10)
    for scale in (0.8, 1.05):
        g_hat = exact_gamma_of_imperfect(small, LINEAR, scale=scale)
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning) if scale > 1 else _nullcontext():
            worse = evaluate_exact(small, LINEAR, traj, "analytic-ddpm", gamma=g_hat)
        assert worse.vb_nats_per_dim > exact.vb_nats_per_dim


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_mixture_bound_uses_quadrature_references():
    mix = default_mixture()
    traj = even_trajectory(1000, 10)
    ana = exact_mean_bound(mix, LINEAR, traj, "analytic-ddpm")
    for base in ("ddpm-large", "ddpm-small"):
        assert ana.vb_nats_per_dim <= exact_mean_bound(mix, LINEAR, traj, base).vb_nats_per_dim
    inner = traj[:-1] >= 1
    np.testing.assert_allclose(ana.kl_terms[inner], 0.5 * np.log(ana.sigma_sq[inner] / ana.lambda_sq[inner]),
                               rtol=1e-8)
    with pytest.raises(TypeError, match="not Gaussian.*exact_mean_bound"):
        evaluate_exact(mix, LINEAR, traj, "analytic-ddpm")


# ------------------------------------------------------------------------------------------------ likelihood helpers
def test_gaussian_kl_helpers():
    # d = 1 against the textbook scalar formula
    mq, vq, mp, vp = 0.3, 0.04, -0.1, 0.09
    scalar = math.log(math.sqrt(vp / vq)) + (vq + (mq - mp) ** 2) / (2 * vp) - 0.5
    assert gaussian_kl((mq - mp) ** 2, vq, vp, 1) == pytest.approx(scalar, rel=1e-14)
    assert gaussian_kl(0.0, 0.5, 0.5, 7) == 0.0
    assert gaussian_kl(1.0, 0.0, 0.5, 3) == math.inf and gaussian_kl(1.0, 0.5, 0.0, 3) == math.inf
    np.testing.assert_allclose(gaussian_kl(np.array([0.0, 1.0]), 0.5, 0.25, 4),
                               [2 * (2 - 1 + math.log(0.5)), 2 * (2 - 1 + math.log(0.5)) + 2.0], rtol=1e-14)
    # the exact-mean transition KL is gaussian_kl with E‖Δμ‖² = c² v d
    lam2, sig2, c, v, d = 1e-4, 3e-4, 0.7, 2e-4, 10
    assert exact_mean_transition_kl(lam2, sig2, c, v) * d == pytest.approx(gaussian_kl(c * c * v * d, lam2, sig2, d),
                                                                          rel=1e-13)
    assert exact_mean_transition_kl(0.0, sig2, c, v) == math.inf
    # σ² = σ*² gives ½ log(σ*²/λ²) even when σ*² is within 1e-12 of λ²
    tiny = 1e-12 * lam2
    assert exact_mean_transition_kl(lam2, lam2 + tiny, 1.0, tiny) == pytest.approx(0.5 * math.log1p(1e-12), rel=1e-9)
    # prior: E over x_0 of gaussian_kl(ᾱ‖x_0‖², β̄, 1, d)/d (linear in ‖x_0‖², so plug in the mean)
    data = default_gaussian(dim=8)
    t = 700
    expect = gaussian_kl(LINEAR.alpha_bar[t] * data.second_moment_per_dim() * 8, LINEAR.beta_bar[t], 1.0, 8) / 8
    assert prior_kl_per_dim(LINEAR, t, data.second_moment_per_dim()) == pytest.approx(expect, rel=1e-10)
    np.testing.assert_allclose(prior_kl_per_dim(LINEAR, np.array([t, t]), 0.3), prior_kl_per_dim(LINEAR, t, 0.3))


# ------------------------------------------------------------------------------------------------ speed and errors
def test_d3072_k1000_is_fast():
    d = 3072
    basis = scipy.fft.dct(np.eye(d), norm="ortho", axis=0)  # a dense orthogonal basis without an O(d³) QR
    data = GaussianData.from_spectrum(0.3 * np.cos(np.arange(d)), np.geomspace(1e-4, 0.25, d), basis)
    traj = even_trajectory(1000, 1000)
    evaluate_exact(data, LINEAR, traj, "analytic-ddpm")  # warm-up
    t0 = time.perf_counter()
    r = evaluate_exact(data, LINEAR, traj, "analytic-ddpm")
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0, f"evaluate_exact took {elapsed:.2f} s for d = 3072, K = 1000"
    assert np.isfinite(r.fd) and r.mean.shape == (d,) and r.cov_eigvals.shape == (d,)


def test_bad_inputs_raise_clear_errors(small):
    traj = even_trajectory(1000, 10)
    with pytest.raises(ValueError, match="method must be one of"):
        evaluate_exact(small, LINEAR, traj, "analytic")
    with pytest.raises(ValueError, match="eta applies to the DDIM family only"):
        evaluate_exact(small, LINEAR, traj, "ddpm-small", eta=0.3)
    with pytest.raises(ValueError, match="strictly increasing"):
        evaluate_exact(small, LINEAR, [0, 5, 5, 10], "ddpm-small")
    with pytest.raises(ValueError, match="must end at or before N"):
        evaluate_exact(small, LINEAR, [0, 5, 2000], "ddpm-small")
    with pytest.raises(TypeError, match="GaussianData"):
        evaluate_exact("data", LINEAR, traj, "ddpm-small")
    with pytest.raises(TypeError, match="Schedule"):
        evaluate_exact(small, None, traj, "ddpm-small")
    with pytest.raises(ValueError, match="gamma must have shape"):
        evaluate_exact(small, LINEAR, traj, "analytic-ddpm", gamma=np.zeros(10))
    with pytest.raises(ValueError, match="shapes must match"):
        frechet_distance_same_basis([0.0], [1.0], [0.0, 1.0], [1.0, 1.0])


def test_x_minus_log1p_against_high_precision():
    import mpmath

    from analytic_dpm.likelihood import x_minus_log1p

    mpmath.mp.dps = 40
    for x in [1e-12, -1e-9, 3e-5, -0.05, 0.0999, 0.1, -0.5, 2.0, 40.0]:
        ref = mpmath.mpf(x) - mpmath.log1p(mpmath.mpf(x))
        assert float(x_minus_log1p(x)) == pytest.approx(float(ref), rel=1e-14)


def test_ratio_minus_1_minus_log_against_high_precision():
    import mpmath

    from analytic_dpm.likelihood import ratio_minus_1_minus_log

    mpmath.mp.dps = 40
    for num, den in [(1.0, 1.0 + 1e-9), (3e-7, 2.0), (2.0, 3e-7), (1.05, 1.0), (0.5, 0.7), (1e-300, 1e-290)]:
        r = mpmath.mpf(num) / mpmath.mpf(den)
        ref = r - 1 - mpmath.log(r)
        assert float(ratio_minus_1_minus_log(num, den)) == pytest.approx(float(ref), rel=1e-13)
