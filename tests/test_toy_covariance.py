"""Per-dimension covariance ground truth on Gaussian data (analytic_dpm.toy.covariance; facts §6.2).

Oracles: brute-force Gaussian conditioning with dense linear algebra (np.linalg), conditional and marginal Monte
Carlo, the scalar library (GaussianData Γ, exact_residual_of_imperfect, evaluate_exact with its own coefficients),
Jensen's inequality, perturbations of the optimum, a brute-force matrix recursion of the chain built by probing the
ε-model itself, a Monte Carlo of the chain, and mpmath quadrature."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analytic_dpm.posterior import posterior_coefficients, x0_from_eps
from analytic_dpm.schedules import Schedule
from analytic_dpm.trajectories import even_trajectory, make_trajectory, transitions
from analytic_dpm.toy import (
    ExactHeadModel,
    GaussianData,
    ImperfectEps,
    cov_x0_diag,
    default_gaussian,
    default_mixture,
    eps_star_sq_diag,
    evaluate_exact,
    evaluate_exact_diagonal,
    exact_eps_sq,
    exact_residual_of_imperfect,
    exact_residual_sq,
    expected_cov_x0_diag,
    expected_residual_sq_diag,
    npr_state_dependent_bound,
    npr_state_dependent_kl_terms,
    optimal_diagonal_sigma_sq,
    posterior_eps_cov_diag,
)
from analytic_dpm.toy.covariance import _ddpm_coefficients, _e_log1p_quadratic

LINEAR = Schedule.linear(1000)
COSINE = Schedule.cosine(1000)


def _rotated(d=3, seed=7, lam=(0.002, 0.05, 0.3), mean=(0.3, -0.2, 0.1)):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return GaussianData.from_spectrum(np.asarray(mean, dtype=float), np.asarray(lam, dtype=float), q)


DATAS = {
    "diag": lambda: GaussianData(np.array([0.3, -0.2, 0.1]), np.array([0.002, 0.05, 0.3])),
    "rotated": _rotated,
}


def _brute_posterior(data, schedule, n):
    """Cov[ε|x_n], Cov[x_0|x_n] and the map x ↦ E[x_0|x_n = x] by dense Gaussian conditioning from data.cov."""
    ab, bb = schedule.alpha_bar[n], schedule.beta_bar[n]
    S = np.array(data.cov)
    A = ab * S + bb * np.eye(data.dim)
    cov_eps = np.eye(data.dim) - bb * np.linalg.inv(A)
    cov_x0 = S - ab * S @ np.linalg.solve(A, S)
    gain = math.sqrt(ab) * S @ np.linalg.inv(A)
    mean_x0 = lambda x: data.mean + (x - math.sqrt(ab) * data.mean) @ gain.T  # noqa: E731
    return cov_eps, cov_x0, mean_x0, A


# ------------------------------------------------------------------------------------------ closed-form diagonals
@pytest.mark.parametrize("kind", list(DATAS))
@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_diagonals_against_dense_conditioning_and_scalars(kind, schedule):
    data = DATAS[kind]()
    for n in (1, 17, 250, 999, 1000):
        cov_eps, cov_x0, _, A = _brute_posterior(data, schedule, n)
        v = posterior_eps_cov_diag(data, schedule, n)
        np.testing.assert_allclose(v, np.diag(cov_eps), rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(cov_x0_diag(data, schedule, n), np.diag(cov_x0), rtol=1e-8, atol=1e-15)
        g = eps_star_sq_diag(data, schedule, n)
        np.testing.assert_allclose(g, schedule.beta_bar[n] * np.diag(np.linalg.inv(A)), rtol=1e-12)
        # E[ε_i²] = diag Cov[ε|x] + E[ε*_i²] = 1 per dimension
        np.testing.assert_allclose(v + g, 1.0, rtol=0, atol=1e-14)
        # dimension averages are the scalar quantities of GaussianData
        assert v.mean() == pytest.approx(data.one_minus_gamma_at(schedule, [n])[0], rel=1e-12)
        assert g.mean() == pytest.approx(data.gamma_at(schedule, [n])[0], rel=1e-12)
        assert cov_x0_diag(data, schedule, n).mean() == pytest.approx(
            data.posterior_cov_trace_at(schedule, [n])[0], rel=1e-12)
        # Cov[x_0|x_n] = (β̄/ᾱ) Cov[ε|x_n]
        np.testing.assert_allclose(cov_x0_diag(data, schedule, n),
                                   schedule.beta_bar[n] / schedule.alpha_bar[n] * v, rtol=1e-12)


@pytest.mark.parametrize("kind", list(DATAS))
@pytest.mark.parametrize("scale, bias", [(1.0, 0.0), (0.9, 0.05), (1.2, np.array([0.1, -0.03, 0.0]))])
def test_expected_residual_diag_averages_to_scalar_residual(kind, scale, bias):
    data = DATAS[kind]()
    R = exact_residual_of_imperfect(data, LINEAR, scale, bias)
    for n in (1, 100, 600, 1000):
        r = expected_residual_sq_diag(data, LINEAR, n, scale, bias)
        assert r.mean() == pytest.approx(R[n], rel=1e-12)
        e = expected_cov_x0_diag(data, LINEAR, n, "npr", scale, bias)
        np.testing.assert_allclose(e, LINEAR.beta_bar[n] / LINEAR.alpha_bar[n] * r, rtol=1e-12)
    np.testing.assert_array_equal(expected_cov_x0_diag(data, LINEAR, 5), cov_x0_diag(data, LINEAR, 5))


# ------------------------------------------------------------------------------------------ head targets, Monte Carlo
@pytest.mark.parametrize("kind", list(DATAS))
def test_heads_against_conditional_sampling(kind):
    """For fixed x_n draw x_0 from the exact posterior (dense conditioning), ε = (x_n − √ᾱ x_0)/√β̄, and average."""
    data = DATAS[kind]()
    rng = np.random.default_rng(3)
    M = 200_000
    scale, bias = 0.8, np.array([0.1, -0.05, 0.02])
    for n in (30, 400):
        ab, bb = LINEAR.alpha_bar[n], LINEAR.beta_bar[n]
        _, cov_x0, mean_x0, _ = _brute_posterior(data, LINEAR, n)
        L = np.linalg.cholesky(cov_x0)
        x_n = math.sqrt(ab) * data.sample(2, seed=n) + math.sqrt(bb) * rng.standard_normal((2, data.dim))
        target_sq = exact_eps_sq(data, LINEAR, x_n, n)
        target_res = exact_residual_sq(data, LINEAR, x_n, n, scale, bias)
        eps_hat = ImperfectEps(data.eps_model(LINEAR), scale, bias)(x_n, n)
        for j in range(2):
            x0 = mean_x0(x_n[j]) + rng.standard_normal((M, data.dim)) @ L.T
            eps = (x_n[j] - math.sqrt(ab) * x0) / math.sqrt(bb)
            for samples, target in ((eps**2, target_sq[j]), ((eps - eps_hat[j]) ** 2, target_res[j])):
                se = samples.std(axis=0, ddof=1) / math.sqrt(M)
                assert np.all(np.abs(samples.mean(axis=0) - target) < 5 * se), (n, j, samples.mean(0), target, se)


def test_heads_marginal_identities_monte_carlo():
    """E_x[E[ε²|x]] = 1 per dimension; E_x[E[(ε − ε̂)²|x]] = the closed-form per-dimension residual (mean: R_n)."""
    data = _rotated()
    M = 100_000
    scale, bias = 1.15, 0.04
    for n in (10, 500):
        ab, bb = LINEAR.alpha_bar[n], LINEAR.beta_bar[n]
        x0 = data.sample(M, seed=1)
        eps = np.random.default_rng(n).standard_normal((M, 3))
        x = math.sqrt(ab) * x0 + math.sqrt(bb) * eps
        for samples, target in ((exact_eps_sq(data, LINEAR, x, n), np.ones(3)),
                                (exact_residual_sq(data, LINEAR, x, n, scale, bias),
                                 expected_residual_sq_diag(data, LINEAR, n, scale, bias))):
            se = samples.std(axis=0, ddof=1) / math.sqrt(M)
            assert np.all(np.abs(samples.mean(axis=0) - target) < 5 * se)
        # and against the raw squared residual of the same draws (the regression target of the head)
        raw = (eps - ImperfectEps(data.eps_model(LINEAR), scale, bias)(x, n)) ** 2
        se = raw.std(axis=0, ddof=1) / math.sqrt(M)
        assert np.all(np.abs(raw.mean(axis=0) - expected_residual_sq_diag(data, LINEAR, n, scale, bias)) < 5 * se)
        assert raw.mean() == pytest.approx(exact_residual_of_imperfect(data, LINEAR, scale, bias)[n], rel=0.02)


# ------------------------------------------------------------------------------------------ headed model protocol
def test_exact_head_model_protocol_numpy_and_torch():
    data = default_gaussian(4, rotate=True, seed=2)
    x = np.random.default_rng(0).standard_normal((5, 2, 2))
    sn = ExactHeadModel(data, LINEAR, "sn")
    npr = ExactHeadModel(data, LINEAR, "npr", scale=0.9, bias=np.array([0.1, 0.0, -0.1, 0.2]))
    assert sn.head_kind == "sn" and npr.head_kind == "npr"
    n = 123
    e, h = sn.eps_and_head(x, n)
    assert e.shape == h.shape == x.shape and e.dtype == h.dtype == np.float64
    np.testing.assert_array_equal(e, data.eps(LINEAR, x, n))
    np.testing.assert_allclose(h, exact_eps_sq(data, LINEAR, x, n), rtol=1e-14)
    # contract: Cov_x0 = (β̄/ᾱ)(head − ε̂²) for SN is the exact posterior variance, for every x
    ratio = LINEAR.beta_bar[n] / LINEAR.alpha_bar[n]
    np.testing.assert_allclose((ratio * (h - e**2)).reshape(5, 4), np.tile(cov_x0_diag(data, LINEAR, n), (5, 1)),
                               rtol=1e-9)
    e2, h2 = npr.eps_and_head(x, n)
    np.testing.assert_allclose(e2, ImperfectEps(data.eps_model(LINEAR), 0.9, npr.bias)(x.reshape(5, 4), n).reshape(
        x.shape), rtol=1e-14)
    np.testing.assert_allclose(npr(x, n), e2, rtol=1e-14)
    np.testing.assert_allclose(h2, exact_residual_sq(data, LINEAR, x, n, 0.9, npr.bias), rtol=1e-14)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        xt = torch.tensor(x, dtype=dtype)
        for model, (en, hn) in ((sn, (e, h)), (npr, (e2, h2))):
            et, ht = model.eps_and_head(xt, n)
            assert isinstance(ht, torch.Tensor) and ht.dtype == dtype and ht.shape == xt.shape
            np.testing.assert_allclose(et.numpy(), en, rtol=tol, atol=tol)
            np.testing.assert_allclose(ht.numpy(), hn, rtol=tol, atol=tol)
        np.testing.assert_allclose(exact_eps_sq(data, LINEAR, xt, n).numpy(), h, rtol=tol)
    # a single point (d,) and d = 1 with shape (B,)
    assert exact_eps_sq(data, LINEAR, x[0].reshape(4), n).shape == (4,)
    one = GaussianData([0.1], [0.2])
    assert exact_residual_sq(one, LINEAR, np.zeros(3), 5, 0.5, 0.1).shape == (3,)


def test_head_model_errors():
    data = default_gaussian(3)
    with pytest.raises(ValueError, match="kind must be one of 'sn', 'npr'"):
        ExactHeadModel(data, LINEAR, "eps2")
    with pytest.raises(ValueError, match="kind 'sn' assumes the exact mean"):
        ExactHeadModel(data, LINEAR, "sn", scale=0.9)
    with pytest.raises(ValueError, match="bias has 2 entries but the data have d = 3"):
        ExactHeadModel(data, LINEAR, "npr", bias=[0.1, 0.2])
    with pytest.raises(TypeError, match="data must be GaussianData"):
        cov_x0_diag(default_mixture(), LINEAR, 3)
    with pytest.raises(ValueError, match="n must be a timestep in 1..N"):
        posterior_eps_cov_diag(data, LINEAR, 0)


# ------------------------------------------------------------------------------------------ the diagonal chain
def test_coefficients_are_independent_but_agree():
    for schedule in (LINEAR, COSINE):
        s, t = transitions(even_trajectory(schedule.N, 37))
        c, b, lam2 = _ddpm_coefficients(schedule, s, t)
        c0, ct, l2 = posterior_coefficients(schedule, s, t, "ddpm")
        np.testing.assert_allclose(c, c0, rtol=1e-12)
        np.testing.assert_allclose(b, ct, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(lam2, l2, rtol=1e-12)


CASES = [
    ("analytic-ddpm", None, {"clip": False}),
    ("ddpm-large", None, {}),
    ("ddpm-small", None, {}),
    ("residual-ddpm", (0.9, 0.05), {}),
    ("analytic-ddpm", (1.1, np.array([0.02, -0.04, 0.0])), {"clip": False}),
]


@pytest.mark.filterwarnings("ignore:one_minus_gamma lies outside")  # scale 1.1: 1 − Γ̂ < 0, clipped by the library
@pytest.mark.parametrize("kind", list(DATAS))
@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
@pytest.mark.parametrize("K", [1, 2, 10, 100])
@pytest.mark.parametrize("method, imperfect, kw", CASES)
def test_constant_sigma_equals_evaluate_exact(kind, schedule, K, method, imperfect, kw):
    data = DATAS[kind]()
    traj = even_trajectory(schedule.N, K)
    model = None if imperfect is None else ImperfectEps(data.eps_model(schedule), *imperfect)
    ev = evaluate_exact(data, schedule, traj, method, eps_model=model, **kw)
    sig = np.repeat(ev.sigma_sq[:, None], data.dim, axis=1)
    dv = evaluate_exact_diagonal(data, schedule, traj, sig, eps_model=model)
    # (a scale > 1 makes σ² = λ² against a large mean error: bounds up to ~1e6, hence the relative part)
    assert dv.vb_nats_per_dim == pytest.approx(ev.vb_nats_per_dim, rel=1e-13, abs=1e-10)
    assert dv.prior_kl == pytest.approx(ev.prior_kl, abs=1e-12)
    inner = traj[:-1] >= 1
    np.testing.assert_allclose(dv.kl_terms[inner], ev.kl_terms[inner], rtol=1e-10, atol=1e-13)
    assert np.all(np.isnan(dv.kl_terms[~inner]))
    # (K = 1 on the cosine schedule with a bias: x̂_0 from x_N has a variance of ~4e6, hence the relative part)
    np.testing.assert_allclose(dv.mean, ev.mean, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(dv.cov, ev.cov, rtol=1e-12, atol=1e-10)
    assert dv.fd == pytest.approx(ev.fd, rel=1e-12, abs=1e-10)
    # a (K,) sigma_sq is the same as its broadcast
    dv1 = evaluate_exact_diagonal(data, schedule, traj, ev.sigma_sq, eps_model=model)
    assert dv1.vb_nats_per_dim == dv.vb_nats_per_dim


def _brute_chain(data, schedule, traj, sigma_sq, eps_model):
    """Mean and covariance of the chain by full matrices in the standard basis: x̂_0(x) = M x + h found by probing
    the ε-model at 0 and the unit vectors (with the library's x0_from_eps), coefficients from posterior.py."""
    d = data.dim
    s, t = transitions(traj)
    c0, ct, _ = posterior_coefficients(schedule, s, t, "ddpm")
    mean, cov = np.zeros(d), np.eye(d)
    probe = np.vstack([np.zeros(d), np.eye(d)])
    for k in range(len(s) - 1, -1, -1):
        tk = int(t[k])
        x0 = x0_from_eps(schedule, tk, probe, eps_model(probe, tk))
        h = x0[0]
        M = (x0[1:] - h).T
        F = c0[k] * M + ct[k] * np.eye(d)
        mean = F @ mean + c0[k] * h
        cov = F @ cov @ F.T + (np.diag(sigma_sq[k]) if s[k] > 0 else 0.0)
    return mean, cov


@pytest.mark.parametrize("kind", list(DATAS))
def test_generated_distribution_brute_force_and_monte_carlo(kind):
    data = DATAS[kind]()
    traj = make_trajectory([40, 200, 500, 1000], 1000)
    for model in (data.eps_model(LINEAR), ImperfectEps(data.eps_model(LINEAR), 0.85, np.array([0.05, 0.0, -0.1]))):
        sig = optimal_diagonal_sigma_sq(data, LINEAR, traj, "npr", model.scale, model.bias) if isinstance(
            model, ImperfectEps) else optimal_diagonal_sigma_sq(data, LINEAR, traj)
        sig = sig * np.array([1.3, 0.7, 1.0])  # anisotropic and not the optimum
        dv = evaluate_exact_diagonal(data, LINEAR, traj, sig, eps_model=model)
        m_ref, c_ref = _brute_chain(data, LINEAR, traj, sig, model)
        np.testing.assert_allclose(dv.mean, m_ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(dv.cov, c_ref, rtol=0, atol=1e-10)
    # Monte Carlo of the chain itself (imperfect model, last sig)
    rng = np.random.default_rng(11)
    M = 100_000
    x = rng.standard_normal((M, 3))
    s, t = transitions(traj)
    c0, ct, _ = posterior_coefficients(LINEAR, s, t, "ddpm")
    for k in range(len(s) - 1, -1, -1):
        x0 = x0_from_eps(LINEAR, int(t[k]), x, model(x, int(t[k])))
        x = c0[k] * x0 + ct[k] * x + (np.sqrt(sig[k]) * rng.standard_normal((M, 3)) if s[k] > 0 else 0.0)
    se_mean = np.sqrt(np.diag(dv.cov) / M)
    assert np.all(np.abs(x.mean(0) - dv.mean) < 5 * se_mean)
    emp = np.cov(x.T)
    se_cov = np.sqrt((dv.cov**2 + np.outer(np.diag(dv.cov), np.diag(dv.cov))) / M)
    assert np.all(np.abs(emp - dv.cov) < 5 * se_cov)


@pytest.mark.parametrize("kind", list(DATAS))
def test_fd_against_scipy(kind):
    import scipy.linalg

    data = DATAS[kind]()
    traj = even_trajectory(1000, 6)
    sig = optimal_diagonal_sigma_sq(data, LINEAR, traj) * np.array([2.0, 0.5, 1.0])
    dv = evaluate_exact_diagonal(data, LINEAR, traj, sig)
    r1 = scipy.linalg.sqrtm(np.array(data.cov))
    cross = np.real(scipy.linalg.sqrtm(r1 @ dv.cov @ r1))
    ref = np.sum((data.mean - dv.mean) ** 2) + np.trace(data.cov + dv.cov - 2 * cross)
    assert dv.fd == pytest.approx(ref, rel=1e-8, abs=1e-12)


# ------------------------------------------------------------------------------------------ optimal diagonal variances
def _scalar_analytic_vb(data, traj, schedule=LINEAR):
    return evaluate_exact(data, schedule, traj, "analytic-ddpm", clip=False).vb_nats_per_dim


@st.composite
def _data_and_traj(draw, isotropic=False):
    d = draw(st.integers(2, 4))
    if isotropic:
        lam = np.full(d, draw(st.floats(1e-3, 2.0)))
    else:
        base = draw(st.floats(1e-3, 0.1))
        lam = base * np.cumprod(np.r_[1.0, [draw(st.floats(2.0, 20.0)) for _ in range(d - 1)]])
    mean = np.array([draw(st.floats(-1, 1)) for _ in range(d)])
    rotate = draw(st.booleans())
    basis = None
    if rotate:
        q, _ = np.linalg.qr(np.random.default_rng(draw(st.integers(0, 1000))).standard_normal((d, d)))
        basis = q
    steps = draw(st.lists(st.integers(1, 1000), min_size=2, max_size=12, unique=True))
    return GaussianData.from_spectrum(mean, lam, basis), make_trajectory(sorted(steps), 1000), rotate


@settings(max_examples=25, deadline=None)
@given(_data_and_traj())
def test_sn_diagonal_bound_below_scalar_analytic(case):
    """Jensen: ½ mean_i log(1 + c²e_i/λ²) <= ½ log(1 + c² mean_i e_i/λ²), strictly unless e_i is constant in i."""
    data, traj, rotate = case
    dv = evaluate_exact_diagonal(data, LINEAR, traj, optimal_diagonal_sigma_sq(data, LINEAR, traj))
    scalar = _scalar_analytic_vb(data, traj)
    inner = traj[:-1] >= 1
    e = dv.cov_x0[inner]
    spread = np.ptp(e, axis=1) / e.mean(axis=1)
    if not rotate or np.all(spread > 1e-2):  # diagonal Σ with distinct eigenvalues: e_i differ on every transition
        assert dv.vb_nats_per_dim < scalar - 1e-14
    else:
        assert dv.vb_nats_per_dim <= scalar + 1e-12


@settings(max_examples=15, deadline=None)
@given(_data_and_traj(isotropic=True))
def test_sn_diagonal_bound_equals_scalar_when_isotropic(case):
    data, traj, _ = case
    dv = evaluate_exact_diagonal(data, LINEAR, traj, optimal_diagonal_sigma_sq(data, LINEAR, traj))
    assert dv.vb_nats_per_dim == pytest.approx(_scalar_analytic_vb(data, traj), rel=0, abs=1e-10)


@pytest.mark.parametrize("trajectory", [even_trajectory(1000, 10), make_trajectory([3, 50, 300, 1000], 1000),
                                        even_trajectory(1000, 100)])
def test_sn_strict_on_default_data(trajectory):
    for data in (default_gaussian(16), default_gaussian(16, rotate=True, seed=3)):
        dv = evaluate_exact_diagonal(data, LINEAR, trajectory, optimal_diagonal_sigma_sq(data, LINEAR, trajectory))
        scalar = _scalar_analytic_vb(data, trajectory)
        assert dv.vb_nats_per_dim < scalar - 1e-3 * abs(scalar)
        # Theorem 3 per dimension: at the optimum the KL term is ½ mean_i log(σ_i²/λ²)
        inner = trajectory[:-1] >= 1
        ratio = dv.coef_x0[inner, None] ** 2 * dv.cov_x0[inner] / dv.lambda_sq[inner, None]  # (σ_i² − λ²)/λ²
        np.testing.assert_allclose(dv.kl_terms[inner], 0.5 * np.log1p(ratio).mean(1), rtol=1e-10)


@pytest.mark.parametrize("kind, scale, bias", [("sn", 1.0, 0.0), ("npr", 0.9, np.array([0.05, -0.1, 0.0]))])
def test_diagonal_optimum_beats_perturbations(kind, scale, bias):
    data = _rotated()
    traj = make_trajectory([20, 150, 600, 1000], 1000)
    model = None if kind == "sn" else ImperfectEps(data.eps_model(LINEAR), scale, bias)
    opt = optimal_diagonal_sigma_sq(data, LINEAR, traj, kind, scale, bias)
    best = evaluate_exact_diagonal(data, LINEAR, traj, opt, eps_model=model).vb_nats_per_dim
    for k in range(1, len(traj) - 1):
        for i in range(3):
            for f in (0.99, 1.01):
                sig = opt.copy()
                sig[k, i] *= f
                assert evaluate_exact_diagonal(data, LINEAR, traj, sig, eps_model=model).vb_nats_per_dim > best
    # row 0 (s = 0) is ignored
    sig = opt.copy()
    sig[0] = np.nan
    assert evaluate_exact_diagonal(data, LINEAR, traj, sig, eps_model=model).vb_nats_per_dim == best


def test_optimal_sigma_matches_contract_formula():
    """σ² = λ² + c² Cov_x0 with the DDPM c² = ᾱ_s β_{t|s}²/β̄_t² (contract), and c² = g²ᾱ_t/β̄_t (library gap)."""
    from analytic_dpm.posterior import gap

    data = _rotated()
    traj = even_trajectory(1000, 8)
    s, t = transitions(traj)
    opt = optimal_diagonal_sigma_sq(data, LINEAR, traj)
    c2 = LINEAR.alpha_bar[s] * LINEAR.skip_beta(s, t) ** 2 / LINEAR.beta_bar[t] ** 2
    np.testing.assert_allclose(c2, gap(LINEAR, s, t) ** 2 * LINEAR.alpha_bar[t] / LINEAR.beta_bar[t], rtol=1e-10)
    ref = LINEAR.skip_beta_tilde(s, t)[:, None] + c2[:, None] * np.stack([cov_x0_diag(data, LINEAR, n) for n in t])
    np.testing.assert_allclose(opt, ref, rtol=1e-10)


# ------------------------------------------------------------------------------------------ state-dependent NPR
@pytest.mark.parametrize("rho, z0", [(1e-6, 0.0), (1e-3, 1.3), (0.05, -3.0), (0.3, 5.5), (0.7, 9.0), (1.5, 0.4),
                                     (20.0, 2.0), (0.01, 30.0), (0.99, 0.0), (1.0, 0.0), (1e-6, 7.9), (1e-6, 8.0)])
def test_quadrature_against_mpmath(rho, z0):
    p = 0.37
    sd = 0.2
    mu = -z0 * sd
    q = (1.0 + p) / (rho * sd) ** 2
    mpmath.mp.dps = 30
    f = lambda z: mpmath.log1p(p + q * (mu + sd * z) ** 2) * mpmath.npdf(z)  # noqa: E731
    # break points at the Gaussian bulk and at the integrand's peak (width ρ around z0)
    pts = [-10.0, -3.0, 0.0, 3.0, 10.0, z0 - 10 * rho - 1, z0 - rho, z0, z0 + rho, z0 + 10 * rho + 1]
    ref = float(mpmath.quad(f, [-mpmath.inf] + sorted(set(pts)) + [mpmath.inf]))
    assert float(_e_log1p_quadratic(p, q, mu, sd)) == pytest.approx(ref, rel=1e-11, abs=1e-11)
    # sd = 0 and q = 0 are exact
    assert float(_e_log1p_quadratic(p, q, mu, 0.0)) == pytest.approx(math.log1p(p + q * mu * mu), rel=1e-15)
    assert float(_e_log1p_quadratic(p, 0.0, mu, sd)) == pytest.approx(math.log1p(p), rel=1e-15)


@pytest.mark.parametrize("kind", list(DATAS))
def test_state_dependent_kl_against_monte_carlo(kind):
    """Per-sample KL(q(x_s|x_t, x_0) ‖ N(μ(x_t), diag σ²(x_t))) with the exact NPR head, averaged over (x_0, ε)."""
    data = DATAS[kind]()
    scale, bias = 0.7, np.array([0.1, -0.2, 0.05])
    traj = make_trajectory([10, 100, 400, 1000], 1000)
    exact = npr_state_dependent_kl_terms(data, LINEAR, traj, scale, bias, by_dim=True)
    head = ExactHeadModel(data, LINEAR, "npr", scale, bias)
    s, t = transitions(traj)
    c0, ct, lam2 = posterior_coefficients(LINEAR, s, t, "ddpm")
    M = 100_000
    for k in range(1, len(s)):
        tk = int(t[k])
        ab, bb = LINEAR.alpha_bar[tk], LINEAR.beta_bar[tk]
        x0 = data.sample(M, seed=k)
        eps = np.random.default_rng(100 + k).standard_normal((M, 3))
        x = math.sqrt(ab) * x0 + math.sqrt(bb) * eps
        eps_hat, h = head.eps_and_head(x, tk)
        x0_hat = x0_from_eps(LINEAR, tk, x, eps_hat)
        var = lam2[k] + c0[k] ** 2 * (bb / ab) * h
        kl = 0.5 * (lam2[k] / var + (c0[k] * (x0 - x0_hat)) ** 2 / var - 1.0 + np.log(var / lam2[k]))
        se = kl.std(axis=0, ddof=1) / math.sqrt(M)
        assert np.all(np.abs(kl.mean(axis=0) - exact[k]) < 5 * se), (k, kl.mean(0), exact[k], se)
    assert np.all(np.isnan(exact[0]))


@pytest.mark.parametrize("kind", list(DATAS))
def test_state_dependent_ordering_and_exact_limit(kind):
    """E log σ²(x) <= log E σ²(x): state-dependent <= constant diagonal optimum <= scalar residual variance; for the
    exact mean the state-dependent variance is constant and equals the SN optimum."""
    data = DATAS[kind]()
    traj = even_trajectory(1000, 20)
    inner = traj[:-1] >= 1
    scale, bias = 0.85, np.array([0.05, 0.1, -0.05])
    model = ImperfectEps(data.eps_model(LINEAR), scale, bias)
    state = npr_state_dependent_kl_terms(data, LINEAR, traj, scale, bias)
    diag = evaluate_exact_diagonal(data, LINEAR, traj, optimal_diagonal_sigma_sq(data, LINEAR, traj, "npr", scale,
                                                                                  bias), eps_model=model)
    scalar = evaluate_exact(data, LINEAR, traj, "residual-ddpm", eps_model=model)
    assert np.all(state[inner] < diag.kl_terms[inner])
    assert np.all(diag.kl_terms[inner] < scalar.kl_terms[inner])
    sb = npr_state_dependent_bound(data, LINEAR, traj, scale, bias)
    assert sb == pytest.approx(diag.prior_kl + state[inner].sum(), rel=1e-14)
    assert sb < diag.vb_nats_per_dim < scalar.vb_nats_per_dim
    exact = npr_state_dependent_kl_terms(data, LINEAR, traj)
    sn = evaluate_exact_diagonal(data, LINEAR, traj, optimal_diagonal_sigma_sq(data, LINEAR, traj))
    np.testing.assert_allclose(exact[inner], sn.kl_terms[inner], rtol=1e-12)


# ------------------------------------------------------------------------------------------ errors
def test_evaluator_errors():
    data = _rotated()
    traj = even_trajectory(1000, 4)
    with pytest.raises(ValueError, match=r"sigma_sq must have shape \(K, d\) = \(4, 3\)"):
        evaluate_exact_diagonal(data, LINEAR, traj, np.ones((4, 2)))
    bad = np.full((4, 3), 1e-3)
    bad[2, 1] = -1.0
    with pytest.raises(ValueError, match="sigma_sq must be finite and > 0 on every transition with s >= 1"):
        evaluate_exact_diagonal(data, LINEAR, traj, bad)
    with pytest.raises(TypeError, match="eps_model must be None"):
        evaluate_exact_diagonal(data, LINEAR, traj, np.ones((4, 3)), eps_model=lambda x, n: x)
    with pytest.raises(ValueError, match="kind 'sn' assumes the exact mean"):
        optimal_diagonal_sigma_sq(data, LINEAR, traj, "sn", scale=0.9)
    # an ExactHeadModel is accepted as the mean
    m = ExactHeadModel(data, LINEAR, "npr", 0.9, 0.1)
    a = evaluate_exact_diagonal(data, LINEAR, traj, np.ones((4, 3)), eps_model=m)
    b = evaluate_exact_diagonal(data, LINEAR, traj, np.ones((4, 3)), eps_model=ImperfectEps(data.eps_model(LINEAR),
                                                                                             0.9, 0.1))
    assert a.vb_nats_per_dim == b.vb_nats_per_dim
