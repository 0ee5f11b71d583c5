"""The network's actual mean: the residual variance σ² = λ² + g²R_t, R_t = E‖ε − ε̂_t‖²/d, its estimate and the
directly estimated 1 − Γ_t (control variate), and the optimal trajectory on R (``theory`` entry
``residual-variance``).

Oracles: closed forms on Gaussian data (exact R for a scaled/biased ε*, exact 1 − Γ without cancellation, the exact
bound and generated distribution of the imperfect chain), brute-force Monte Carlo of the same chain, exhaustive search
for the DP, and the M^(−1/2) rate of the estimators."""

import itertools
import math
import warnings

import numpy as np
import pytest

import analytic_dpm as adpm
from analytic_dpm import toy
from analytic_dpm.gamma import GammaEstimate, estimate_gamma
from analytic_dpm.likelihood import exact_mean_transition_kl
from analytic_dpm.posterior import posterior_coefficients
from analytic_dpm.trajectories import even_trajectory, transitions
from analytic_dpm.variance import reverse_variances

LINEAR = adpm.Schedule.linear(1000)
COSINE = adpm.Schedule.cosine(1000)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    cov = (q * np.array([0.002, 0.05, 0.3])) @ q.T
    return toy.GaussianData(np.array([0.3, -0.2, 0.1]), 0.5 * (cov + cov.T))


def _imperfect(data, schedule, scale, bias):
    return toy.ImperfectEps(data.eps_model(schedule), scale=scale, bias=bias)


# ------------------------------------------------------------------------------------------------ variances
@pytest.mark.parametrize("method,eta", [("residual-ddpm", 0.0), ("residual-ddim", 0.0), ("residual-ddim", 0.7)])
def test_residual_variance_formula(method, eta):
    rng = np.random.default_rng(0)
    R = np.concatenate([[0.0], rng.uniform(0.0, 2.0, LINEAR.N)])
    traj = even_trajectory(LINEAR.N, 25)
    v = reverse_variances(LINEAR, traj, method, residual=R, eta=eta)
    s, t = transitions(traj)
    fam = "ddim" if "ddim" in method else "ddpm"
    np.testing.assert_array_equal(v.sigma_sq, adpm.residual_sigma_sq(LINEAR, s, t, R[t], fam, eta))
    np.testing.assert_array_equal(v.residual, R[t])
    assert not v.clipped.any()  # never clipped
    # reported where it leaves Theorem 2's interval (R > 1 exceeds eq. 11, R > r²ᾱ/β̄ exceeds eq. 12)
    np.testing.assert_array_equal(v.outside_bounds, (v.sigma_sq > v.upper) | (v.sigma_sq < v.lower))
    assert v.outside_bounds.any() and not v.outside_bounds.all()
    # a GammaEstimate passed as gamma supplies its residual
    est = GammaEstimate(gamma=1 - R, stderr=np.zeros_like(R), num_samples=2, timesteps=np.arange(1, LINEAR.N + 1),
                        config={}, residual=R, residual_stderr=np.zeros_like(R),
                        one_minus_gamma=R, one_minus_gamma_stderr=np.zeros_like(R))
    np.testing.assert_array_equal(reverse_variances(LINEAR, traj, method, gamma=est, eta=eta).sigma_sq, v.sigma_sq)


def test_residual_and_one_minus_gamma_errors():
    traj = even_trajectory(LINEAR.N, 10)
    R = np.full(LINEAR.N + 1, 0.5)
    with pytest.raises(ValueError, match="needs residual"):
        reverse_variances(LINEAR, traj, "residual-ddpm")
    with pytest.raises(ValueError, match="needs residual"):
        reverse_variances(LINEAR, traj, "residual-ddpm",
                          gamma=GammaEstimate(gamma=R, stderr=R, num_samples=1, timesteps=[1], config={}))
    with pytest.raises(ValueError, match="cannot be negative"):
        reverse_variances(LINEAR, traj, "residual-ddpm", residual=np.full(LINEAR.N + 1, -1e-3))
    with pytest.raises(ValueError, match=r"shape \(N\+1,\)"):
        reverse_variances(LINEAR, traj, "residual-ddim", residual=R[1:])
    bad = R.copy()
    bad[traj[3]] = np.nan
    with pytest.raises(ValueError, match="residual must be finite.*n = "):
        reverse_variances(LINEAR, traj, "residual-ddpm", residual=bad)
    with pytest.raises(ValueError, match="not both"):
        reverse_variances(LINEAR, traj, "analytic-ddpm", gamma=R, one_minus_gamma=R)
    with pytest.raises(ValueError, match="residual applies to the residual methods"):
        reverse_variances(LINEAR, traj, "analytic-ddpm", residual=R)
    with pytest.raises(ValueError, match="one_minus_gamma applies to the analytic methods"):
        reverse_variances(LINEAR, traj, "residual-ddpm", one_minus_gamma=R)
    with pytest.raises(ValueError, match="eta applies to the DDIM family"):
        reverse_variances(LINEAR, traj, "residual-ddpm", residual=R, eta=0.5)
    with pytest.warns(RuntimeWarning, match="one_minus_gamma lies outside"):
        v = reverse_variances(LINEAR, traj, "analytic-ddpm", one_minus_gamma=np.full(LINEAR.N + 1, -0.01))
    np.testing.assert_array_equal(v.sigma_sq, v.lambda_sq)  # clipped to λ², like Γ > 1
    assert v.clipped.all() and v.outside_bounds.all()


@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_one_minus_gamma_given_directly_keeps_its_digits(small, schedule):
    """1 − Γ passed directly gives σ² − λ² = g²(1 − Γ_t) to full relative precision at every t (cosine t = N, where
    1 − Γ_N ≈ 1e-11, included), while the route through Γ loses the digits of 1 − Γ_t."""
    traj = np.arange(schedule.N + 1)
    omg = small.one_minus_gamma(schedule)
    v = reverse_variances(schedule, traj, "analytic-ddim", one_minus_gamma=omg, eta=0.3, data_range=None)
    s, t = transitions(traj)
    g2 = adpm.posterior.gap(schedule, s, t, "ddim", 0.3) ** 2
    # the posterior spread route (Lemma 13) is an independent exact form: c² v_t with v_t from the eigenvalues
    c0, _, _ = posterior_coefficients(schedule, s, t, "ddim", 0.3)
    ref = c0**2 * small.posterior_cov_trace_at(schedule, t)
    np.testing.assert_allclose(g2 * v.one_minus_gamma, ref, rtol=1e-10, atol=0)
    np.testing.assert_allclose(v.one_minus_gamma, 1.0 - small.gamma(schedule)[t], rtol=1e-4)
    assert omg[-1] < 1e-3
    # Γ and 1 − Γ of the Gaussian add up to 1
    np.testing.assert_allclose(small.gamma(schedule)[1:] + omg[1:], 1.0, rtol=0, atol=5e-16)


# ------------------------------------------------------------------------------------------------ exact toy values
def test_exact_residual_of_imperfect_matches_monte_carlo(small):
    """R_t = (1 − Γ_t) + (1 − a)²Γ_t + ‖b‖²/d against a direct Monte Carlo average of ‖ε − ε̂‖²/d (4 standard errors),
    and R = 1 − Γ for the exact predictor."""
    rng = np.random.default_rng(5)
    bias = np.array([0.05, -0.1, 0.02])
    np.testing.assert_array_equal(toy.exact_residual_of_imperfect(small, LINEAR), small.one_minus_gamma(LINEAR))
    for scale, b in ((0.9, 0.0), (1.2, bias), (1.0, 0.03)):
        R = toy.exact_residual_of_imperfect(small, LINEAR, scale=scale, bias=b)
        omg_hat = toy.exact_one_minus_gamma_of_imperfect(small, LINEAR, scale=scale, bias=b)
        np.testing.assert_allclose(omg_hat[1:], 1.0 - toy.exact_gamma_of_imperfect(small, LINEAR, scale, b)[1:], atol=1e-14)
        model = _imperfect(small, LINEAR, scale, b)
        for n in (1, 30, 300, 1000):
            x0 = small.sample(40000, seed=n)
            eps = rng.standard_normal(x0.shape)
            xt = math.sqrt(LINEAR.alpha_bar[n]) * x0 + math.sqrt(LINEAR.beta_bar[n]) * eps
            e = model(xt, n)
            r = np.mean((eps - e) ** 2, axis=1)
            w = np.sum((eps - e) * (eps + e), axis=1) / 3
            assert abs(r.mean() - R[n]) <= 4 * r.std() / math.sqrt(r.size)
            assert abs(w.mean() - omg_hat[n]) <= 4 * w.std() / math.sqrt(w.size)


@pytest.mark.parametrize("method,eta", [("residual-ddpm", 0.0), ("residual-ddim", 0.0), ("analytic-ddpm", 0.0)])
def test_imperfect_chain_matches_brute_force(small, method, eta):
    """The generated distribution of the imperfect chain (ε̂ = aε* + b): evaluate_exact against 20000 chains drawn
    by the library's sampler with the same model (mean and covariance within 4 standard errors)."""
    s = adpm.Schedule.linear(100)
    traj = even_trajectory(100, 5)
    model = _imperfect(small, s, 1.15, np.array([0.04, -0.08, 0.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = toy.evaluate_exact(small, s, traj, method, eta=eta, eps_model=model)
        kw = {"residual": toy.exact_residual_of_imperfect(small, s, 1.15, model.bias)} if "residual" in method else {
            "one_minus_gamma": toy.exact_one_minus_gamma_of_imperfect(small, s, 1.15, model.bias)}
        x = adpm.sample(model, s, traj, method, num_samples=20000, shape=(3,), eta=eta, data_range=None, seed=3,
                        progress=False, **kw)
    M = x.shape[0]
    cov = r.cov
    assert np.all(np.abs(x.mean(axis=0) - r.mean) <= 4 * np.sqrt(np.diag(cov) / M))
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / M)
    assert np.all(np.abs(np.cov(x.T) - cov) <= 4 * se_cov)
    # the imperfect model really changes the result
    assert toy.evaluate_exact(small, s, traj, "analytic-ddpm").fd != pytest.approx(r.fd, rel=1e-3)


@pytest.mark.parametrize("scale,bias", [(0.9, 0.0), (1.1, 0.0), (1.0, 0.05), (1.3, -0.02), (0.7, 0.1)])
@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_residual_variance_minimises_the_exact_bound(scale, bias, schedule):
    """For the same imperfect ε-model, the residual variance gives a bound no worse than any other isotropic variance:
    the baselines, Γ-based Analytic-DPM, and every per-transition perturbation of it (exact on the toy)."""
    data = toy.default_gaussian(dim=16, rotate=True, seed=0)
    model = _imperfect(data, schedule, scale, bias)
    for K in (2, 10, 100, 1000):
        traj = even_trajectory(schedule.N, K)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = toy.evaluate_exact(data, schedule, traj, "residual-ddpm", eps_model=model)
            others = [toy.evaluate_exact(data, schedule, traj, m, eps_model=model)
                      for m in ("ddpm-large", "ddpm-small", "analytic-ddpm")]
        for o in others:
            assert res.vb_nats_per_dim <= o.vb_nats_per_dim * (1 + 1e-13)
        inner = traj[:-1] >= 1
        b = res.bound
        # at the minimum the term is ½ log(σ²/λ²) = ½ log1p(g²R/λ²)
        np.testing.assert_allclose(b.kl_terms[inner], 0.5 * np.log1p(b.coef_x0[inner] ** 2 * b.cov_x0[inner]
                                                                       / b.lambda_sq[inner]), rtol=1e-10)
        for f in (0.5, 0.999, 1.001, 2.0):
            kl = exact_mean_transition_kl(b.lambda_sq, b.sigma_sq * f, b.coef_x0, b.cov_x0)
            assert np.all(kl[inner] >= b.kl_terms[inner] * (1 - 1e-13))
    # where the model is biased, Γ-based Analytic-DPM is strictly worse at K = 10
    if bias or scale != 1.0:
        assert res is not None
        traj = even_trajectory(schedule.N, 10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a = toy.evaluate_exact(data, schedule, traj, "analytic-ddpm", eps_model=model).vb_nats_per_dim
        assert toy.evaluate_exact(data, schedule, traj, "residual-ddpm", eps_model=model).vb_nats_per_dim < a


def test_clipping_a_residual_variance_to_theorem2_would_be_wrong():
    """For a biased model (ε̂ = ε* + 1, so R_t = 2 − Γ_t > 1) the residual variance exceeds Theorem 2's eq. 11 on every
    transition; it is reported there, and clipping it into the bound raises the exact bound of the imperfect chain."""
    data = toy.default_gaussian(dim=16, seed=1)
    s = LINEAR
    model = _imperfect(data, s, 1.0, 1.0)
    traj = even_trajectory(s.N, 25)
    r = toy.evaluate_exact(data, s, traj, "residual-ddpm", eps_model=model)
    b = r.bound
    out = r.variances.outside_bounds
    assert out.all() and np.all(r.sigma_sq > r.variances.upper)
    clipped = np.clip(b.sigma_sq, b.lambda_sq, r.variances.upper)
    inner = traj[:-1] >= 1
    kl = exact_mean_transition_kl(b.lambda_sq, clipped, b.coef_x0, b.cov_x0)
    assert kl[inner].sum() > b.kl_terms[inner].sum() + 1e-6


def test_residual_equals_theorem1_for_the_exact_predictor(small):
    """With ε̂ = ε*, R = 1 − Γ and the residual method is Analytic-DPM (bit for bit when unclipped)."""
    for method, eta in (("ddpm", 0.0), ("ddim", 0.4)):
        traj = even_trajectory(1000, 20)
        a = toy.evaluate_exact(small, LINEAR, traj, f"analytic-{method}", eta=eta)
        r = toy.evaluate_exact(small, LINEAR, traj, f"residual-{method}", eta=eta)
        np.testing.assert_array_equal(a.sigma_sq, r.sigma_sq)
        assert a.fd == r.fd and a.vb_nats_per_dim == r.vb_nats_per_dim


def test_evaluate_exact_rejects_other_models(small):
    other = toy.default_gaussian(dim=3)
    with pytest.raises(TypeError, match="eps_model must be None"):
        toy.evaluate_exact(small, LINEAR, even_trajectory(1000, 5), "residual-ddpm",
                           eps_model=toy.ImperfectEps(other.eps_model(LINEAR), 1.1))
    with pytest.raises(TypeError, match="eps_model must be None"):
        toy.evaluate_exact(small, LINEAR, even_trajectory(1000, 5), "residual-ddpm", eps_model=lambda x, n: x)


# ------------------------------------------------------------------------------------------------ estimation
@pytest.fixture(scope="module")
def gauss64():
    return toy.default_gaussian(dim=64)


@pytest.mark.parametrize("scale,bias", [(1.0, 0.0), (1.1, 0.03)])
def test_estimators_agree_with_exact_values(gauss64, scale, bias):
    """R̂ and the direct 1 − Γ̂ from estimate_gamma agree with their exact values within 3 standard errors (z-scores
    over 60 timesteps: at most a few beyond 3, none beyond 4.5), from the same network calls as Γ̂."""
    s = LINEAR
    ts = np.unique(np.geomspace(1, 1000, 60).astype(int))
    model = _imperfect(gauss64, s, scale, bias)
    calls = []

    def counted(x, n):
        calls.append(x.shape[0])
        return model(x, n)

    est = estimate_gamma(counted, s, gauss64, timesteps=ts, num_samples=500, batch_size=250, seed=2, progress=False)
    assert sum(calls) == 500 * ts.size  # no extra evaluation
    exact = {"gamma": toy.exact_gamma_of_imperfect(gauss64, s, scale, bias),
             "one_minus_gamma": toy.exact_one_minus_gamma_of_imperfect(gauss64, s, scale, bias),
             "residual": toy.exact_residual_of_imperfect(gauss64, s, scale, bias)}
    for name, ref in exact.items():
        value = getattr(est, name)
        err = est.stderr if name == "gamma" else getattr(est, f"{name}_stderr")
        z = (value[ts] - ref[ts]) / err[ts]
        assert np.all(np.isfinite(z))
        assert np.sum(np.abs(z) > 3) <= 3 and np.all(np.abs(z) < 4.5), (name, z)


def test_estimators_converge_at_the_monte_carlo_rate(gauss64):
    """The RMS relative error of R̂ and of the direct 1 − Γ̂ over 40 timesteps falls as M^(−1/2) (fitted slope)."""
    s = LINEAR
    ts = np.arange(25, 1001, 25)
    data = toy.default_gaussian(dim=16)
    model = _imperfect(data, s, 1.05, 0.0)
    refs = {"residual": toy.exact_residual_of_imperfect(data, s, 1.05),
            "one_minus_gamma": toy.exact_one_minus_gamma_of_imperfect(data, s, 1.05)}
    Ms = np.array([64, 256, 1024, 4096])
    rms = {k: [] for k in refs}
    for M in Ms:
        est = estimate_gamma(model, s, data, timesteps=ts, num_samples=int(M), batch_size=4096, seed=9,
                             progress=False)
        for k, ref in refs.items():
            rms[k].append(math.sqrt(np.mean(((getattr(est, k)[ts] - ref[ts]) / ref[ts]) ** 2)))
    for k in refs:
        slope = np.polyfit(np.log(Ms), np.log(rms[k]), 1)[0]
        assert -0.65 < slope < -0.35, (k, slope, rms[k])


def test_direct_estimates_reduce_the_variance_where_gamma_is_near_one(gauss64):
    """Where Γ_t → 1 (large t) the standard error of the direct 1 − Γ̂ is far below that of 1 − Γ̂ from Γ̂ (the same
    error as Γ̂), and R̂'s is smaller still; at small t, where Γ_t is well below 1, the control variate adds noise (the
    estimator cannot help there, and the test says so)."""
    est = estimate_gamma(gauss64.eps_model(LINEAR), LINEAR, gauss64, timesteps=[10, 500, 1000], num_samples=512,
                         seed=4, progress=False)
    plain, direct, resid = est.stderr, est.one_minus_gamma_stderr, est.residual_stderr
    assert (plain[1000] / direct[1000]) ** 2 > 1e4 and (plain[500] / direct[500]) ** 2 > 10
    assert (plain[1000] / resid[1000]) ** 2 > 1e8 and (plain[500] / resid[500]) ** 2 > 1e4
    assert direct[10] > plain[10]  # Γ_10 ≈ 0.38: ‖ε‖² − ‖ε̂‖² is noisier than ‖ε̂‖²
    rel = est.relative_stderr("residual")
    assert np.isnan(rel[0]) and rel[1000] == pytest.approx(resid[1000] / est.residual[1000])


def test_estimate_save_load_and_resume(tmp_path, gauss64):
    s = adpm.Schedule.linear(50)
    model = _imperfect(gauss64, s, 1.1, 0.02)
    full = estimate_gamma(model, s, gauss64, num_samples=300, seed=1, progress=False)
    path = full.save(tmp_path / "g.npz")
    back = GammaEstimate.load(path)
    for name in ("gamma", "stderr", "one_minus_gamma", "one_minus_gamma_stderr", "residual", "residual_stderr"):
        np.testing.assert_array_equal(getattr(back, name), getattr(full, name))
    # an interrupted, checkpointed run resumes to the same bits
    ck = tmp_path / "g.ckpt.npz"

    class Stop(Exception):
        pass

    count = [0]

    def flaky(x, n):
        count[0] += 1
        if count[0] == 37:
            raise Stop
        return model(x, n)

    with pytest.raises(Stop):
        estimate_gamma(flaky, s, gauss64, num_samples=300, seed=1, progress=False, checkpoint=ck, batch_size=100)
    resumed = estimate_gamma(model, s, gauss64, num_samples=300, seed=1, progress=False, checkpoint=ck,
                             batch_size=100)
    assert resumed.config["resumed_chunks"] > 0
    for name in ("gamma", "one_minus_gamma", "residual", "residual_stderr"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(full, name))
    # files from before the residual existed load with None, and their statistics say so clearly
    old = tmp_path / "old.npz"
    GammaEstimate(gamma=full.gamma, stderr=full.stderr, num_samples=300, timesteps=full.timesteps,
                  config={}).save(old)
    o = GammaEstimate.load(old)
    assert o.residual is None and o.one_minus_gamma is None
    with pytest.raises(ValueError, match="no 'residual'.*rerun estimate_gamma"):
        o.relative_stderr("residual")


def test_old_checkpoint_format_is_refused_clearly(tmp_path, gauss64):
    ck = tmp_path / "old.ckpt.npz"
    np.savez(ck, format=np.array("analytic_dpm.gamma.checkpoint/1"), key_json=np.array("{}"))
    with pytest.raises(ValueError, match="older version.*Delete the file"):
        estimate_gamma(gauss64.eps_model(LINEAR), LINEAR, gauss64, timesteps=[5], num_samples=8, checkpoint=ck,
                       progress=False)


def test_torch_estimator_matches_numpy(gauss64):
    torch = pytest.importorskip("torch")
    s = adpm.Schedule.linear(20, beta_end=0.5)
    model = _imperfect(gauss64, s, 0.95, 0.01)
    a = estimate_gamma(model, s, gauss64.sample(200, seed=0), num_samples=200, seed=3, progress=False)
    b = estimate_gamma(model, s, torch.from_numpy(gauss64.sample(200, seed=0)), num_samples=200, seed=3,
                       progress=False)
    for name in ("gamma", "one_minus_gamma", "residual"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-12)


# ------------------------------------------------------------------------------------------------ trajectory
def _exhaustive(cost, N, K):
    best, best_path = math.inf, None
    for mid in itertools.combinations(range(2, N), K - 2):
        path = (1,) + mid + (N,)
        c = sum(cost.F[a, b] for a, b in zip(path[:-1], path[1:]))
        if c < best:
            best, best_path = c, path
    return best, best_path


def test_residual_trajectory_is_exact_and_prices_the_imperfect_bound():
    """The DP over J = log1p(R_t β_{t|s}/(α_{t|s}β̄_s)) equals exhaustive search, its cost is exactly twice the
    imperfect chain's bound minus the prior (the Theorem 3 analogue), and it beats the even and random trajectories."""
    s = adpm.Schedule.linear(14, beta_end=0.3)
    data = toy.default_gaussian(dim=8, rotate=True, seed=2)
    model = _imperfect(data, s, 1.2, 0.05)
    R = toy.exact_residual_of_imperfect(data, s, 1.2, 0.05)
    cost = adpm.analytic_ddpm_cost(s, residual=R)
    assert cost.gamma is None and cost.name.startswith("residual-ddpm")
    res = adpm.optimal_trajectories(s, None, residual=R)
    for K in (2, 3, 5, 8):
        best, path = _exhaustive(cost, s.N, K)
        assert res.cost(K) == pytest.approx(best, rel=1e-13)
        ev = toy.evaluate_exact(data, s, res.trajectory(K), "residual-ddpm", eps_model=model)
        assert ev.vb_nats_per_dim - ev.prior_kl == pytest.approx(0.5 * res.cost(K), rel=1e-12)
        even = toy.evaluate_exact(data, s, even_trajectory(s.N, K), "residual-ddpm", eps_model=model)
        assert ev.vb_nats_per_dim <= even.vb_nats_per_dim + 1e-14
    with pytest.raises(ValueError, match="cannot be negative"):
        adpm.analytic_ddpm_cost(s, residual=-R)
    with pytest.raises(ValueError, match="exactly one of"):
        adpm.analytic_ddpm_cost(s, np.zeros(s.N + 1), residual=R)
    # R of the exact predictor is 1 − Γ: the residual cost is Theorem 3's
    exact = adpm.analytic_ddpm_cost(s, one_minus_gamma=data.one_minus_gamma(s), data_range=None)
    np.testing.assert_array_equal(adpm.analytic_ddpm_cost(s, residual=data.one_minus_gamma(s)).FT, exact.FT)


def test_residual_trajectory_survives_monte_carlo_noise(gauss64):
    """The failure of the Γ-only OT under Monte Carlo noise with the exact ε* (N = 1000, d = 64, M = 256: Γ̂ > 1 at
    many t, the clip makes jumps into them free) and its fix: the OT on the estimated R̂ is within 0.5% of the true
    OT's bound, while the Γ̂-OT is worse than the even trajectory."""
    s = LINEAR
    est = estimate_gamma(gauss64.eps_model(s), s, gauss64, num_samples=256, seed=1, progress=False)
    assert np.sum(est.gamma[1:] > 1) > 50
    K = 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        g_ot = adpm.optimal_trajectory(s, est.gamma, K, data_range=None).trajectory
    r_ot = adpm.optimal_trajectory(s, None, K, residual=est.residual).trajectory
    true_ot = adpm.optimal_trajectory(s, None, K, one_minus_gamma=gauss64.one_minus_gamma(s), data_range=None)

    def bound(tr):
        return toy.evaluate_exact(gauss64, s, tr, "analytic-ddpm").vb_bits_per_dim

    et = bound(even_trajectory(s.N, K))
    assert bound(g_ot) > et
    assert bound(r_ot) <= bound(true_ot.trajectory) * 1.005
