"""Gaussian-mixture toy data: exact score/ε* (numpy and torch, stable far out), the quadrature reference for Γ and the
posterior covariance (against Monte Carlo, its own convergence, the Tweedie identity and the one-component case)."""

import math

import numpy as np
import pytest
import torch

from analytic_dpm.schedules import Schedule
from analytic_dpm.toy.gaussian import GaussianData
from analytic_dpm.toy.mixture import GaussianMixtureData, default_mixture, standard_normal_rule

LINEAR = Schedule.linear(1000)
COSINE = Schedule.cosine(1000)


@pytest.fixture(scope="module")
def mix():
    return default_mixture()


@pytest.fixture(scope="module")
def mix1d():
    return GaussianMixtureData([0.3, 0.7], [[-0.6], [0.4]], [[0.01], [0.04]])


def test_default_mixture_is_2d_inside_unit_square(mix):
    assert mix.dim == 2 and mix.n_components >= 3
    x = mix.sample(4000, seed=0)
    assert np.mean(np.all(np.abs(x) <= 1.0, axis=1)) > 0.97


def test_mixture_moments(mix):
    w, m, c = mix.weights, mix.means, mix.covs
    mean = sum(w[k] * m[k] for k in range(len(w)))
    cov = sum(w[k] * (c[k] + np.outer(m[k] - mean, m[k] - mean)) for k in range(len(w)))
    np.testing.assert_allclose(mix.mean, mean, rtol=1e-14)
    np.testing.assert_allclose(mix.cov, cov, rtol=1e-13)
    M = 40000
    x = mix.sample(M, seed=2)
    assert np.all(np.abs(x.mean(axis=0) - mean) <= 4 * np.sqrt(np.diag(cov) / M))
    assert mix.second_moment_per_dim() == pytest.approx((np.trace(cov) + mean @ mean) / 2, rel=1e-13)
    # chunked seeding: splitting a draw changes nothing
    np.testing.assert_array_equal(mix.sample(600, seed=1),
                                  np.concatenate([mix.sample(250, seed=1), mix.sample(350, seed=1, start=250)]))


@pytest.mark.parametrize("n", [0, 1, 20, 300])
def test_score_matches_finite_differences(mix, n):
    x = np.random.default_rng(n).uniform(-1, 1, (6, 2))
    h = 1e-6
    fd = np.stack([(mix.log_prob(LINEAR, x + e, n) - mix.log_prob(LINEAR, x - e, n)) / (2 * h)
                   for e in (np.array([h, 0.0]), np.array([0.0, h]))], axis=1)
    np.testing.assert_allclose(mix.score(LINEAR, x, n), fd, rtol=1e-5, atol=1e-5)
    if n:
        np.testing.assert_allclose(mix.eps(LINEAR, x, n), -math.sqrt(LINEAR.beta_bar[n]) * fd, rtol=1e-5, atol=1e-6)


def _normal_pdf(x, mean, cov):
    diff = x - mean
    quad = np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)
    return np.exp(-0.5 * quad) / np.sqrt(np.linalg.det(2 * np.pi * cov))


def test_log_prob_against_direct_sum(mix):
    n = 50
    x = np.random.default_rng(0).uniform(-1, 1, (5, 2))
    ab, bb = LINEAR.alpha_bar[n], LINEAR.beta_bar[n]
    p = sum(mix.weights[k] * _normal_pdf(x, math.sqrt(ab) * mix.means[k], ab * mix.covs[k] + bb * np.eye(2))
            for k in range(mix.n_components))
    np.testing.assert_allclose(mix.log_prob(LINEAR, x, n), np.log(p), rtol=1e-12)


def test_eps_numpy_torch_and_stable_far_away(mix):
    x = np.random.default_rng(1).uniform(-1.5, 1.5, (9, 2))
    for n in (1, 10, 999):
        e_np = mix.eps(LINEAR, x, n)
        e_t = mix.eps(LINEAR, torch.tensor(x, dtype=torch.float64), n)
        assert e_t.dtype == torch.float64
        np.testing.assert_allclose(e_t.numpy(), e_np, rtol=0, atol=1e-12)
        np.testing.assert_allclose(mix.x0_posterior_mean(LINEAR, torch.tensor(x), n).numpy(),
                                   mix.x0_posterior_mean(LINEAR, x, n), rtol=0, atol=1e-12)
    far = np.array([[1e4, -1e4], [-3e3, 50.0]])
    for n in (1, 500):
        for out in (mix.eps(LINEAR, far, n), mix.eps(LINEAR, torch.tensor(far), n).numpy()):
            assert np.all(np.isfinite(out))
    # far from everything the score is that of the component with the widest reach in that direction: finite, huge
    assert np.all(np.abs(mix.score(LINEAR, far, 1)) > 1e3)


def test_one_component_mixture_equals_gaussian_data():
    mean = np.array([0.2, -0.1])
    cov = np.array([[0.05, 0.02], [0.02, 0.03]])
    g = GaussianData(mean, cov)
    m = GaussianMixtureData([1.0], [mean], [cov])
    x = np.random.default_rng(0).standard_normal((4, 2))
    for n in (1, 100, 1000):
        np.testing.assert_allclose(m.eps(LINEAR, x, n), g.eps(LINEAR, x, n), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(m.x0_posterior_mean(LINEAR, x, n), g.x0_posterior_mean(LINEAR, x, n), rtol=1e-12)
        np.testing.assert_allclose(m.log_prob(LINEAR, x, n), g.log_prob(LINEAR, x, n), rtol=1e-13)
    steps = np.array([1, 5, 50, 500, 1000])
    ref_g, ref_c = m.references(LINEAR, steps)
    np.testing.assert_allclose(ref_g[steps], g.gamma(LINEAR)[steps], rtol=1e-12)
    np.testing.assert_allclose(ref_c[steps], g.posterior_cov_trace(LINEAR)[steps], rtol=1e-12)
    # and in 1-D
    m1 = GaussianMixtureData([1.0], [[0.3]], [[0.02]])
    g1 = GaussianData([0.3], [0.02])
    np.testing.assert_allclose(m1.gamma_reference(COSINE, steps)[steps], g1.gamma(COSINE)[steps], rtol=1e-12)


@pytest.mark.parametrize("which", ["mix", "mix1d"])
def test_quadrature_reference_vs_monte_carlo_within_3_se(which, request):
    data = request.getfixturevalue(which)
    steps = [1, 10, 50, 200, 1000]
    ref = data.gamma_reference(LINEAR, steps)
    mc, se = data.gamma_monte_carlo(LINEAR, 20000, seed=3, timesteps=steps)
    assert np.all(np.abs(ref[steps] - mc[steps]) <= 3 * se[steps])
    assert ref[0] == 0.0 and np.isnan(ref[2])


def test_posterior_cov_reference_vs_monte_carlo(mix):
    """E tr Cov(x_0|x_n)/d = E‖x_0 − E[x_0|x_n]‖²/d, estimated directly (3 standard errors)."""
    M = 20000
    x0 = mix.sample(M, seed=4)
    for n in (5, 100, 600):
        x = math.sqrt(LINEAR.alpha_bar[n]) * x0 + math.sqrt(LINEAR.beta_bar[n]) * \
            np.random.default_rng(n).standard_normal(x0.shape)
        vals = ((x0 - mix.x0_posterior_mean(LINEAR, x, n)) ** 2).mean(axis=1)
        ref = mix.posterior_cov_trace_reference(LINEAR, [n])[n]
        assert abs(vals.mean() - ref) <= 3 * vals.std(ddof=1) / math.sqrt(M)


def test_quadrature_converges_as_nodes_increase(mix, mix1d):
    """Geometric convergence of the trapezoidal rule: successive differences shrink fast; the adaptive default agrees
    with a fine fixed grid to 1e-10. Gauss–Hermite converges too, but more slowly (why trapezoid is the default)."""
    steps = [3, 30]
    vals = [mix.gamma_reference(LINEAR, steps, nodes=nd)[steps] for nd in (41, 81, 161, 321)]
    diffs = [np.abs(vals[i + 1] - vals[i]).max() for i in range(3)]
    assert diffs[0] > diffs[1] > diffs[2] and diffs[2] < 1e-9 and diffs[1] < 1e-2 * diffs[0]
    np.testing.assert_allclose(mix.gamma_reference(LINEAR, steps)[steps], vals[-1], rtol=0, atol=1e-10)
    herm = [mix.gamma_reference(LINEAR, steps, nodes=nd, rule="hermite")[steps] for nd in (41, 161)]
    assert np.abs(herm[1] - vals[-1]).max() < np.abs(herm[0] - vals[-1]).max()
    assert np.abs(herm[1] - vals[-1]).max() > diffs[2]  # slower than the trapezoidal rule at the same node count
    # 1-D
    v1 = [mix1d.gamma_reference(LINEAR, steps, nodes=nd)[steps] for nd in (81, 321, 1281)]
    assert np.abs(v1[2] - v1[1]).max() < 1e-10 < np.abs(v1[1] - v1[0]).max()


def test_tweedie_identity_for_the_references(mix):
    steps = np.array([1, 20, 100, 400, 1000])
    g, c = mix.references(COSINE, steps)
    ratio = COSINE.beta_bar[steps] / COSINE.alpha_bar[steps]
    # the quadrature error of Γ (< 1e-10) is amplified by β̄/ᾱ in the Tweedie form
    assert np.all(np.abs(c[steps] - ratio * (1.0 - g[steps])) <= 1e-12 * c[steps] + 1e-10 * ratio)
    np.testing.assert_allclose(mix.posterior_cov_trace_reference(COSINE, steps)[steps], c[steps], rtol=0)


def test_standard_normal_rule_moments():
    for rule, nodes in (("trapezoid", 81), ("hermite", 20)):
        z, w = standard_normal_rule(nodes, rule)
        assert w.sum() == pytest.approx(1.0, abs=1e-13)
        assert w @ z**2 == pytest.approx(1.0, abs=1e-13) and w @ z**4 == pytest.approx(3.0, abs=1e-12)


def test_mixture_bad_inputs():
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixtureData([0.5, 0.6], [[0.0], [1.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="positive"):
        GaussianMixtureData([1.5, -0.5], [[0.0], [1.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match=r"means must have shape \(K, d\) = \(2, d\)"):
        GaussianMixtureData([0.5, 0.5], [0.0, 1.0], [[1.0], [1.0]])
    with pytest.raises(ValueError, match=r"covs must have shape"):
        GaussianMixtureData([0.5, 0.5], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"covs\[1\].*positive definite"):
        GaussianMixtureData([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="means must be finite"):
        GaussianMixtureData([1.0], [[np.nan]], [[1.0]])
    m3 = GaussianMixtureData([0.5, 0.5], np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="d = 1 and d = 2 only.*gamma_monte_carlo"):
        m3.gamma_reference(LINEAR, [5])
    with pytest.raises(ValueError, match="rule must be one of"):
        default_mixture().gamma_reference(LINEAR, [5], nodes=41, rule="simpson")
    with pytest.raises(ValueError, match="n must be a timestep in 1..N"):
        default_mixture().eps(LINEAR, np.zeros((1, 2)), 0)
