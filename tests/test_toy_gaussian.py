"""Gaussian toy data: exact ε*, score, Γ and posterior against independent computations (dense linear algebra,
finite differences, Monte Carlo with stated standard errors), plus the imperfect ε-model wrapper."""

import math
import warnings

import numpy as np
import pytest
import torch

from analytic_dpm.posterior import gap, posterior_coefficients, x0_from_eps
from analytic_dpm.schedules import Schedule
from analytic_dpm.trajectories import even_trajectory, transitions
from analytic_dpm.variance import reverse_variances, sigma_sq_opt
from analytic_dpm.toy.gaussian import GaussianData, default_gaussian
from analytic_dpm.toy.imperfect import ImperfectEps, exact_gamma_of_imperfect

LINEAR = Schedule.linear(1000)
COSINE = Schedule.cosine(1000)


def _random_spd(d, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    # spread spectrum 1e-3..0.3 in a random basis
    q, _ = np.linalg.qr(a)
    lam = np.geomspace(1e-3, 0.3, d)
    cov = (q * lam) @ q.T
    return 0.5 * (cov + cov.T), rng.uniform(-0.5, 0.5, d)


@pytest.fixture(scope="module")
def data():
    cov, mean = _random_spd(6, 1)
    return GaussianData(mean, cov)


def _dense_A(data, schedule, n):
    return schedule.alpha_bar[n] * data.cov + schedule.beta_bar[n] * np.eye(data.dim)


# ------------------------------------------------------------------------------------------------ exact quantities
@pytest.mark.parametrize("n", [1, 7, 100, 600, 1000])
def test_eps_score_posterior_mean_match_dense_formulas(data, n):
    s = LINEAR
    x = np.random.default_rng(n).standard_normal((5, data.dim))
    A = _dense_A(data, s, n)
    centred = (x - math.sqrt(s.alpha_bar[n]) * data.mean).T
    eps = math.sqrt(s.beta_bar[n]) * np.linalg.solve(A, centred).T
    np.testing.assert_allclose(data.eps(s, x, n), eps, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(data.score(s, x, n), -eps / math.sqrt(s.beta_bar[n]), rtol=1e-10, atol=1e-12)
    post = data.mean + math.sqrt(s.alpha_bar[n]) * (data.cov @ np.linalg.solve(A, centred)).T
    np.testing.assert_allclose(data.x0_posterior_mean(s, x, n), post, rtol=1e-10, atol=1e-12)
    # x̂_0 from ε* is the posterior mean (Tweedie)
    np.testing.assert_allclose(x0_from_eps(s, n, x, data.eps(s, x, n)), post, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n", [1, 10, 100, 500, 1000])
def test_gamma_equals_monte_carlo_within_3_se(data, n):
    """Γ_n = E‖ε*_n(x_n)‖²/d against a direct Monte Carlo average, M = 20000, tolerance 3 standard errors."""
    s = LINEAR
    M = 20000
    rng = np.random.default_rng(100 + n)
    x0 = data.sample(M, seed=n)
    x = math.sqrt(s.alpha_bar[n]) * x0 + math.sqrt(s.beta_bar[n]) * rng.standard_normal(x0.shape)
    vals = (data.eps(s, x, n) ** 2).mean(axis=1)
    se = vals.std(ddof=1) / math.sqrt(M)
    assert abs(vals.mean() - data.gamma(s)[n]) <= 3 * se


def test_gamma_monte_carlo_method_agrees_and_is_batch_independent(data):
    s = COSINE
    steps = [3, 400]
    g1, se1 = data.gamma_monte_carlo(s, 4000, seed=1, timesteps=steps, batch_size=4000)
    g2, se2 = data.gamma_monte_carlo(s, 4000, seed=1, timesteps=steps, batch_size=333)
    np.testing.assert_allclose(g1[steps], g2[steps], rtol=1e-13)
    g3, _ = data.gamma_monte_carlo(s, 4000, seed=1, timesteps=[400])  # does not depend on the other timesteps
    assert g3[400] == pytest.approx(g1[400], rel=1e-13)
    exact = data.gamma(s)
    assert np.all(np.abs(g1[steps] - exact[steps]) <= 3 * se1[steps])
    assert g1[0] == 0.0 and np.isnan(g1[1])


def test_gamma_closed_form_and_range(data):
    for s in (LINEAR, COSINE):
        g = data.gamma(s)
        assert g.shape == (s.N + 1,) and g[0] == 0.0
        assert np.all((g[1:] > 0) & (g[1:] < 1))
        n = 250
        A = _dense_A(data, s, n)
        assert g[n] == pytest.approx(s.beta_bar[n] * np.trace(np.linalg.inv(A)) / data.dim, rel=1e-12)
        # Γ_n is increasing in n (more noise, less predictable)
        assert np.all(np.diff(g[1:]) > 0)


def test_tweedie_identity(data):
    """E tr Cov(x_0|x_n)/d = (β̄_n/ᾱ_n)(1 − Γ_n) (Lemma 11), to 1e-12 relative at every n (cosine n = N included):
    1 − Γ_n is computed directly (one_minus_gamma), not as a difference of two numbers near 1."""
    for s in (LINEAR, COSINE):
        v = data.posterior_cov_trace(s)
        g = data.gamma(s)
        omg = data.one_minus_gamma(s)
        ratio = s.beta_bar[1:] / s.alpha_bar[1:]
        np.testing.assert_allclose(v[1:], ratio * omg[1:], rtol=1e-12, atol=0)
        np.testing.assert_allclose(g[1:] + omg[1:], 1.0, rtol=0, atol=5e-16)  # and Γ + (1 − Γ) = 1
        assert v[0] == 0.0
        # and the trace of the dense Gaussian posterior covariance
        n = 40
        A = _dense_A(data, s, n)
        post = data.cov - s.alpha_bar[n] * data.cov @ np.linalg.solve(A, data.cov)
        assert v[n] == pytest.approx(np.trace(post) / data.dim, rel=1e-10)


@pytest.mark.parametrize("n", [0, 1, 50, 1000])
def test_score_matches_finite_differences_of_log_prob(data, n):
    s = LINEAR
    x = np.random.default_rng(3).standard_normal((3, data.dim)) * 0.5
    h = 1e-5
    fd = np.empty_like(x)
    for i in range(data.dim):
        e = np.zeros(data.dim)
        e[i] = h
        fd[:, i] = (data.log_prob(s, x + e, n) - data.log_prob(s, x - e, n)) / (2 * h)
    np.testing.assert_allclose(data.score(s, x, n), fd, rtol=1e-6, atol=1e-6)
    # log_prob against scipy
    from scipy.stats import multivariate_normal

    ref = multivariate_normal(math.sqrt(s.alpha_bar[n]) * data.mean, _dense_A(data, s, n)).logpdf(x)
    np.testing.assert_allclose(data.log_prob(s, x, n), ref, rtol=1e-10)


def test_eps_numpy_and_torch_agree(data):
    s = LINEAR
    x = np.random.default_rng(4).standard_normal((7, data.dim))
    for n in (1, 33, 1000):
        e_np = data.eps(s, x, n)
        e_t = data.eps(s, torch.tensor(x, dtype=torch.float64), n)
        assert isinstance(e_t, torch.Tensor) and e_t.dtype == torch.float64
        np.testing.assert_allclose(e_t.numpy(), e_np, rtol=0, atol=1e-12)
        m_t = data.x0_posterior_mean(s, torch.tensor(x), n)
        np.testing.assert_allclose(m_t.numpy(), data.x0_posterior_mean(s, x, n), rtol=0, atol=1e-12)
    # float32 stays float32, and (B, *shape) with prod(shape) = d keeps its shape
    x32 = torch.tensor(x, dtype=torch.float32).reshape(7, 2, 3)
    out = data.eps_model(s)(x32, 5)
    assert out.dtype == torch.float32 and out.shape == (7, 2, 3)
    np.testing.assert_allclose(out.reshape(7, 6).numpy(), data.eps(s, x, 5), atol=1e-5)


def test_sigma_sq_from_gamma_equals_direct_posterior_covariance(data):
    """Theorem 1 from the exact 1 − Γ = λ² + c²·(trace of the Gaussian posterior covariance, computed densely, not via
    Γ), to 1e-10 relative on every transition: σ*² − λ² = g²(1 − Γ_t) with 1 − Γ_t given directly."""
    for s in (LINEAR, COSINE):
        traj = even_trajectory(s.N, 20)
        sv, tv = transitions(traj)
        cov_direct = np.array([
            np.trace(data.cov - s.alpha_bar[t] * data.cov @ np.linalg.solve(_dense_A(data, s, t), data.cov))
            / data.dim for t in tv
        ])
        for method, eta, family in (("analytic-ddpm", 0.0, "ddpm"), ("analytic-ddim", 0.0, "ddim"),
                                    ("analytic-ddim", 0.5, "ddim")):
            rv = reverse_variances(s, traj, method, one_minus_gamma=data.one_minus_gamma(s), eta=eta,
                                   data_range=None, clip=False)
            c0, _, lam2 = posterior_coefficients(s, sv, tv, family, eta)
            np.testing.assert_allclose(rv.sigma_sq, lam2 + c0**2 * cov_direct, rtol=1e-10, atol=0)
            # the excess over λ² too, where it is tiny (the last transitions, ᾱ_t → 0)
            np.testing.assert_allclose(rv.sigma_sq_unclipped - lam2, c0**2 * cov_direct, rtol=1e-9, atol=0)


def test_one_dimensional_and_diagonal_forms_agree():
    mean = np.array([0.1, -0.3, 0.25])
    var = np.array([0.04, 0.001, 0.2])
    a = GaussianData(mean, var)
    b = GaussianData(mean, np.diag(var))
    c = GaussianData.from_spectrum(mean, var)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    d_rot = GaussianData.from_spectrum(q.T @ mean, var, q.T)  # rotate, then compare rotated quantities
    x = np.random.default_rng(1).standard_normal((4, 3))
    for g in (b, c):
        np.testing.assert_allclose(g.gamma(LINEAR), a.gamma(LINEAR), rtol=1e-14)
        np.testing.assert_allclose(g.eps(LINEAR, x, 9), a.eps(LINEAR, x, 9), rtol=1e-14)
    assert a.is_diagonal and b.is_diagonal
    np.testing.assert_allclose(d_rot.gamma(LINEAR), a.gamma(LINEAR), rtol=1e-12)
    np.testing.assert_allclose(d_rot.eps(LINEAR, x @ q, 9), a.eps(LINEAR, x, 9) @ q, atol=1e-12)
    # d = 1: scalar forms and (B,) batches
    one = GaussianData([0.2], [0.05])
    assert one.eps(LINEAR, np.array([0.1, 0.3]), 10).shape == (2,)
    assert one.gamma(LINEAR)[10] == pytest.approx(
        LINEAR.beta_bar[10] / (LINEAR.alpha_bar[10] * 0.05 + LINEAR.beta_bar[10]), rel=1e-14)


def test_sample_moments_and_chunked_seeding(data):
    x = data.sample(1000, seed=3)
    np.testing.assert_array_equal(x, np.concatenate([data.sample(300, seed=3), data.sample(700, seed=3, start=300)]))
    assert not np.array_equal(x, data.sample(1000, seed=4))
    M = 40000
    big = data.sample(M, seed=11)
    se = np.sqrt(np.diag(data.cov) / M)
    assert np.all(np.abs(big.mean(axis=0) - data.mean) <= 4 * se)
    emp = np.cov(big.T)
    se_cov = np.sqrt((np.outer(np.diag(data.cov), np.diag(data.cov)) + data.cov**2) / M)
    assert np.all(np.abs(emp - data.cov) <= 4 * se_cov)
    assert data.sample(0).shape == (0, data.dim)


def test_default_gaussian():
    g = default_gaussian(dim=32)
    assert g.dim == 32 and g.is_diagonal
    assert g.eigvals.min() == pytest.approx(1e-4) and g.eigvals.max() == pytest.approx(0.25)
    assert np.all(np.diff(np.log(g.eigvals)) > 0) and np.linalg.norm(g.mean) > 0.5
    r = default_gaussian(dim=32, rotate=True, seed=1)
    np.testing.assert_allclose(r.basis.T @ r.basis, np.eye(32), atol=1e-12)
    np.testing.assert_allclose(r.gamma(LINEAR), g.gamma(LINEAR), rtol=1e-12)  # Γ depends on the spectrum only
    x = r.sample(2000, seed=0)
    assert np.mean(np.abs(x) > 1.0) < 0.01  # roughly in [−1, 1]


# ------------------------------------------------------------------------------------------------ imperfect ε-model
def test_imperfect_eps_gamma_exact_vs_monte_carlo(data):
    s = LINEAR
    scale, bias = 1.2, np.linspace(-0.1, 0.2, data.dim)
    model = ImperfectEps(data.eps_model(s), scale=scale, bias=bias)
    g_hat = exact_gamma_of_imperfect(data, s, scale, bias)
    np.testing.assert_allclose(g_hat[1:], scale**2 * data.gamma(s)[1:] + np.mean(bias**2), rtol=1e-14)
    M = 20000
    for n in (2, 300, 1000):
        rng = np.random.default_rng(n)
        x0 = data.sample(M, seed=n + 1)
        x = math.sqrt(s.alpha_bar[n]) * x0 + math.sqrt(s.beta_bar[n]) * rng.standard_normal(x0.shape)
        vals = (model(x, n) ** 2).mean(axis=1)
        assert abs(vals.mean() - g_hat[n]) <= 3 * vals.std(ddof=1) / math.sqrt(M)
    # numpy and torch
    x = np.random.default_rng(0).standard_normal((3, data.dim))
    np.testing.assert_allclose(model(torch.tensor(x), 4).numpy(), model(x, 4), atol=1e-12)
    np.testing.assert_allclose(model(x, 4), scale * data.eps(s, x, 4) + bias, rtol=1e-14)


def test_imperfect_gamma_above_one_needs_theorem2_clipping(data):
    s = LINEAR
    g_hat = exact_gamma_of_imperfect(data, s, scale=1.1)
    assert g_hat[-1] > 1.0
    traj = even_trajectory(s.N, 10)
    sv, tv = transitions(traj)
    raw = sigma_sq_opt(s, sv, tv, g_hat[tv], "ddpm")
    lam2 = posterior_coefficients(s, sv, tv, "ddpm")[2]
    assert raw[-1] < lam2[-1]  # Theorem 1 with Γ̂ > 1 falls below the lower bound
    with pytest.warns(RuntimeWarning, match="outside"):
        rv = reverse_variances(s, traj, "analytic-ddpm", gamma=g_hat, data_range=None)
    assert np.all(rv.sigma_sq >= rv.lower)


# ------------------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="symmetric"):
        GaussianData([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="positive definite"):
        GaussianData([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match=r"\(d, d\) = \(2, 2\)"):
        GaussianData([0.0, 0.0], np.eye(3))
    with pytest.raises(ValueError, match="length d = 2"):
        GaussianData([0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="mean must be finite"):
        GaussianData([0.0, np.nan], [1.0, 1.0])
    with pytest.raises(ValueError, match="cov must be finite"):
        GaussianData([0.0, 0.0], [[1.0, np.nan], [np.nan, 1.0]])
    with pytest.raises(ValueError, match="positive"):
        GaussianData([0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="orthogonal"):
        GaussianData.from_spectrum([0.0, 0.0], [1.0, 2.0], [[1.0, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="eigvals must be positive"):
        GaussianData.from_spectrum([0.0, 0.0], [1.0, -2.0])
    g = GaussianData([0.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="n must be a timestep in 1..N"):
        g.eps(LINEAR, np.zeros((1, 2)), 0)
    with pytest.raises(ValueError, match="n must be a timestep"):
        g.score(LINEAR, np.zeros((1, 2)), 1001)
    with pytest.raises(ValueError, match=r"batch of shape \(B, d\) = \(B, 2\)"):
        g.eps(LINEAR, np.zeros((4, 3)), 5)
    with pytest.raises(TypeError, match="Schedule"):
        g.gamma("linear")
    with pytest.raises(TypeError, match="floating-point tensor"):
        g.eps(LINEAR, torch.zeros((1, 2), dtype=torch.int64), 5)
    with pytest.raises(ValueError, match="num_samples"):
        g.gamma_monte_carlo(LINEAR, 1)
    with pytest.raises(ValueError, match="timesteps must lie in 1..N"):
        g.gamma_monte_carlo(LINEAR, 10, timesteps=[0, 5])
    with pytest.raises(ValueError, match="bias has 3 entries"):
        ImperfectEps(g.eps_model(LINEAR), bias=[0.1, 0.2, 0.3])(np.zeros((1, 2)), 3)
    with pytest.raises(TypeError, match="callable"):
        ImperfectEps(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GaussianData([0.0, 0.0], [[1.0, 1e-13], [0.0, 1.0]])  # rounding-level asymmetry is accepted silently
