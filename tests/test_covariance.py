"""Per-dimension covariance (SN-DPM / NPR-DPM) in the sampler, the bound and the cost matrix.

The oracle here is the scalar path: a head that predicts the same Cov_x0 in every dimension and for every x_t,
Cov_x0 ≡ (β̄_t/ᾱ_t)(1 − Γ_t) (SN) or (β̄_t/ᾱ_t)R_t (NPR), must reproduce analytic-DPM and the residual variance
exactly — in the samples (same noise), in the bound and in the cost matrix. The toy ground truth of the head targets
themselves is in tests/test_toy_covariance.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from analytic_dpm import Schedule, even_trajectory, sample
from analytic_dpm.covariance import COVARIANCE_METHODS, cov_scale, cov_x0, diagonal_sigma_sq
from analytic_dpm.image_likelihood import baseline_cost_matrix, variational_bound
from analytic_dpm.likelihood import gaussian_kl
from analytic_dpm.posterior import gap, lambda_sq
from analytic_dpm.sampling import coefficient_table
from analytic_dpm.toy import default_gaussian

N = 100
SCHED = Schedule.linear(N)
DATA = default_gaussian(dim=6, rotate=False)


class ConstantHead:
    """A headed model over an ε-model whose head makes Cov_x0 ≡ (β̄_t/ᾱ_t)·value_t in every dimension."""

    def __init__(self, eps_model, kind, value):
        self.eps_model, self.head_kind, self.value = eps_model, kind, np.asarray(value, dtype=np.float64)

    def __call__(self, x, n):
        return self.eps_model(x, n)

    def eps_and_head(self, x, n):
        e = self.eps_model(x, n)
        v = float(self.value[n])
        if self.head_kind == "sn":
            return e, e * e + v
        return e, np.full_like(e, v)


def _headed(kind):
    eps = DATA.eps_model(SCHED)
    gamma = DATA.gamma(SCHED)
    return ConstantHead(eps, kind, 1.0 - gamma if kind == "sn" else 1.0 - gamma), gamma


def test_cov_scale_is_g_squared_times_snr_and_ddpm_closed_form():
    s, t = np.array([0, 3, 10, 50]), np.array([5, 20, 60, 100])
    c2 = cov_scale(SCHED, s, t, "ddpm")
    np.testing.assert_allclose(c2, SCHED.alpha_bar[s] * SCHED.skip_beta(s, t) ** 2 / SCHED.beta_bar[t] ** 2,
                               rtol=1e-13)
    np.testing.assert_allclose(cov_scale(SCHED, s, t, "ddim", 0.3),
                               (np.sqrt(SCHED.alpha_bar[s]) - np.sqrt((SCHED.beta_bar[s] - lambda_sq(
                                   SCHED, s, t, "ddim", 0.3)) * SCHED.alpha_bar[t] / SCHED.beta_bar[t])) ** 2,
                               rtol=1e-10)
    g2 = gap(SCHED, s, t, "ddpm") ** 2
    np.testing.assert_allclose(c2, g2 * SCHED.alpha_bar[t] / SCHED.beta_bar[t], rtol=1e-14)


def test_diagonal_sigma_sq_reduces_to_theorem1():
    gamma = DATA.gamma(SCHED)
    s, t = 10, 40
    cov = np.full(5, SCHED.beta_bar[t] / SCHED.alpha_bar[t] * (1.0 - gamma[t]))
    lam2 = lambda_sq(SCHED, s, t)
    want = lam2 + gap(SCHED, s, t) ** 2 * (1.0 - gamma[t])
    np.testing.assert_allclose(diagonal_sigma_sq(SCHED, s, t, cov), want, rtol=1e-13)
    # clipping: negative entries go to 0, large ones to the upper bound
    got = diagonal_sigma_sq(SCHED, s, t, np.array([-1.0, 5.0]), upper=1.0)
    np.testing.assert_allclose(got, [lam2, lam2 + cov_scale(SCHED, s, t) * 1.0], rtol=1e-13)


@pytest.mark.parametrize("kind,scalar", [("sn", "analytic-ddpm"), ("npr", "residual-ddpm")])
def test_constant_head_samples_equal_scalar_method(kind, scalar):
    model, gamma = _headed(kind)
    traj = even_trajectory(N, 10)
    kw = dict(num_samples=20, shape=(DATA.dim,), data_range=None, clip=False, seed=3)
    stat = {"gamma": gamma} if scalar == "analytic-ddpm" else {"residual": 1.0 - gamma}
    want = sample(model, SCHED, traj, scalar, **kw, **stat)
    report = {}
    got = sample(model, SCHED, traj, f"{kind}-ddpm", cov_report=report, **kw)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert report["cov_low_fraction"].shape == (10,) and not report["cov_low_fraction"].any()


def test_constant_head_ddim_family_equals_analytic_ddim():
    model, gamma = _headed("sn")
    traj = even_trajectory(N, 8)
    kw = dict(num_samples=10, shape=(DATA.dim,), data_range=None, clip=False, seed=1, eta=0.5)
    want = sample(model, SCHED, traj, "analytic-ddim", gamma=gamma, **kw)
    got = sample(model, SCHED, traj, "sn-ddim", **kw)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # η = 0: only the head's part of σ² is random; still equal
    kw["eta"] = 0.0
    np.testing.assert_allclose(sample(model, SCHED, traj, "sn-ddim", **kw),
                               sample(model, SCHED, traj, "analytic-ddim", gamma=gamma, **kw), rtol=0, atol=1e-12)


def test_torch_backend_matches_numpy():
    torch = pytest.importorskip("torch")

    class TorchHead(ConstantHead):
        def eps_and_head(self, x, n):
            e, h = super().eps_and_head(x.numpy(), n)
            return torch.from_numpy(e).to(x.dtype), torch.from_numpy(h).to(x.dtype)

        def __call__(self, x, n):
            return torch.from_numpy(self.eps_model(x.numpy(), n)).to(x.dtype)

    model, gamma = _headed("sn")
    tmodel = TorchHead(model.eps_model, "sn", model.value)
    traj = even_trajectory(N, 5)
    kw = dict(num_samples=6, shape=(DATA.dim,), data_range=None, clip=False, seed=2)
    a = sample(model, SCHED, traj, "sn-ddpm", **kw)
    b = sample(tmodel, SCHED, traj, "sn-ddpm", backend="torch", dtype=torch.float64, **kw).numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_pixel_clip_is_elementwise_and_reported():
    class RampHead:
        head_kind = "npr"

        def __call__(self, x, n):
            return np.zeros_like(x)

        def eps_and_head(self, x, n):
            # Cov_x0 = (β̄/ᾱ)·head from tiny to large across the dimensions
            return np.zeros_like(x), np.broadcast_to(np.geomspace(1e-8, 1.0, x.shape[1]), x.shape).copy()

    sched = Schedule.linear(1000)
    traj = np.array([0, 1, 2, 500, 1000])
    rep = {}
    tab = coefficient_table(sched, traj, "npr-ddpm", clip_sigma_pixel=1, data_range=(-1, 1))
    sample(RampHead(), sched, traj, "npr-ddpm", num_samples=4, shape=(8,), clip_sigma_pixel=1, cov_report=rep)
    thr = tab.sigma_sq_clip_threshold
    assert tab.sigma_sq[1] == lambda_sq(sched, 1, 2) < thr
    var = tab.sigma_sq[1] + tab.cov_scale[1] * np.clip(cov_x0("npr", sched, 2, 0.0, np.geomspace(1e-8, 1.0, 8)), 0, 1)
    assert 0 < (var > thr).sum() < 8  # some but not all elements clipped: the clip is per element
    np.testing.assert_allclose(rep["pixel_fraction"][1], (var > thr).mean())
    assert rep["pixel_fraction"].sum() == rep["pixel_fraction"][1]
    # the upper clip of Cov_x0 at r² = 1 is reported too
    assert rep["cov_high_fraction"].max() > 0


@pytest.mark.parametrize("kind,scalar", [("sn", "analytic-ddpm"), ("npr", "residual-ddpm")])
def test_constant_head_bound_and_cost_matrix_equal_scalar(kind, scalar):
    model, gamma = _headed(kind)
    x0 = DATA.sample(16, seed=4)
    traj = even_trajectory(N, 6)
    kw = dict(data_range=None, clamp_x0=False, clip=False, seed=5)
    stat = {"gamma": gamma} if scalar == "analytic-ddpm" else {"residual": 1.0 - gamma}
    want = variational_bound(model, SCHED, traj, scalar, x0, **kw, **stat)
    got = variational_bound(model, SCHED, traj, f"{kind}-ddpm", x0, **kw)
    np.testing.assert_allclose(got.terms_nats, want.terms_nats, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(got.bits_per_dim, want.bits_per_dim, rtol=1e-12)
    assert np.isfinite(got.bits_per_dim_stderr)
    grid = np.unique(np.concatenate([traj[1:], [7, 33, 71]]))
    F_want = baseline_cost_matrix(model, SCHED, x0, "ddpm-large", timesteps=grid, **kw).with_method(
        scalar, clip=False, **stat)
    F_got = baseline_cost_matrix(model, SCHED, x0, f"{kind}-ddpm", timesteps=grid, **kw)
    fin = np.isfinite(F_want.F)
    assert (np.isfinite(F_got.F) == fin).all()
    np.testing.assert_allclose(F_got.F[fin], F_want.F[fin], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(F_got.path_nats(traj), got.nats, rtol=1e-12)
    with pytest.raises(ValueError, match="with_method"):
        F_got.with_method("ddpm-large")


def test_varying_head_bound_matches_cost_matrix_path_and_beats_wrong_variance():
    """A head with per-dimension variances: the bound on a trajectory equals the cost matrix's path sum (same draws);
    the exact SN target on Gaussian data with a non-isotropic covariance gives a smaller bound than a constant head."""
    from analytic_dpm.toy.covariance import ExactHeadModel

    model = ExactHeadModel(DATA, SCHED, "sn")
    x0 = DATA.sample(64, seed=6)
    traj = even_trajectory(N, 5)
    kw = dict(data_range=None, clamp_x0=False, clip=False, seed=7)
    vb = variational_bound(model, SCHED, traj, "sn-ddpm", x0, **kw)
    F = baseline_cost_matrix(model, SCHED, x0, "sn-ddpm", timesteps=traj[1:], **kw)
    np.testing.assert_allclose(F.path_nats(traj), vb.nats, rtol=1e-12)
    scalar = variational_bound(model, SCHED, traj, "analytic-ddpm", x0, gamma=DATA.gamma(SCHED), **kw)
    diff = scalar.total_nats - vb.total_nats  # same draws: a paired comparison
    assert diff.mean() > 5 * diff.std(ddof=1) / np.sqrt(diff.size)


@pytest.mark.parametrize("bad,err,match", [
    (dict(eps_model=lambda x, n: x), TypeError, "needs a model with a second head"),
    (dict(method="npr-ddpm"), ValueError, "needs a 'npr' head"),
    (dict(gamma=np.zeros(N + 1)), ValueError, "gamma does not apply"),
    (dict(cov_report=[]), TypeError, "cov_report must be a dict"),
])
def test_errors(bad, err, match):
    model, _ = _headed("sn")
    kw = dict(eps_model=model, schedule=SCHED, trajectory=even_trajectory(N, 4), method="sn-ddpm", num_samples=2,
              shape=(DATA.dim,), data_range=None)
    kw.update(bad)
    with pytest.raises(err, match=match):
        sample(**kw)


def test_methods_listed():
    assert COVARIANCE_METHODS == ("sn-ddpm", "sn-ddim", "npr-ddpm", "npr-ddim")
    with pytest.raises(ValueError, match="undefined"):
        variational_bound(_headed("sn")[0], SCHED, even_trajectory(N, 4), "sn-ddim", DATA.sample(2), data_range=None,
                          clamp_x0=False)


# ------------------------------------------------------------------------------ against theory/ and the toy truth
def test_library_matches_theory_diagonal_covariance():
    """cov_x0, cov_scale and diagonal_sigma_sq (library) against the registry's sympy expressions at 50 digits, and
    the toy's exact Cov[x_0|x_t] diagonal through the SN form of the exact head (theory entry diagonal-covariance)."""
    import theory
    from analytic_dpm.toy.covariance import ExactHeadModel, cov_x0_diag, exact_eps_sq, optimal_diagonal_sigma_sq

    res = theory.get("diagonal-covariance")
    sched = Schedule.cosine(200)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s, t = sorted(rng.choice(np.arange(0, 201), 2, replace=False).tolist())
        if t == 0:
            continue
        e = float(rng.uniform(0, 2))
        ab_s, ab_t = sched.alpha_bar[s], sched.alpha_bar[t]
        got = diagonal_sigma_sq(sched, s, t, np.array([e]))[0]
        want = float(res.expression("diag_sigma_sq_ddpm").mp(ab_s, ab_t, e))
        np.testing.assert_allclose(got, want, rtol=1e-11)
        for eta in (0.0, 0.4, 1.0):
            got = diagonal_sigma_sq(sched, s, t, np.array([e]), family="ddim", eta=eta)[0]
            want = float(res.expression("diag_sigma_sq_ddim").mp(ab_s, ab_t, eta, e))
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)
        h, eh = float(rng.uniform(0, 3)), float(rng.normal())
        np.testing.assert_allclose(cov_x0("sn", sched, t, np.array([eh]), np.array([h]))[0],
                                   float(res.expression("sn_covariance").mp(ab_t, h, eh)), rtol=1e-12)
        np.testing.assert_allclose(cov_x0("npr", sched, t, None, np.array([h]))[0],
                                   float(res.expression("npr_covariance").mp(ab_t, h)), rtol=1e-12)
        if s >= 1:  # the minimal expected KL of one coordinate: gaussian_kl at σ² = λ² + c²e with mean error c²e
            lam2 = float(lambda_sq(sched, s, t))
            c2e = float(cov_scale(sched, s, t)) * e
            np.testing.assert_allclose(gaussian_kl(c2e, lam2, lam2 + c2e, 1),
                                       float(res.expression("diag_kl_min").mp(ab_s, ab_t, lam2, e)), rtol=1e-9)
    # exact SN head on Gaussian data: (β̄/ᾱ)(E[ε²|x] − E[ε|x]²) is the constant diag Cov[x_0|x_t]
    model = ExactHeadModel(DATA, SCHED, "sn")
    x = DATA.sample(5, seed=1) * 0.9 + 0.1
    for n in (1, 17, 60, 100):
        e_hat, head = model.eps_and_head(x, n)
        np.testing.assert_allclose(head, exact_eps_sq(DATA, SCHED, x, n), rtol=1e-14)
        np.testing.assert_allclose(cov_x0("sn", SCHED, n, e_hat, head), np.broadcast_to(cov_x0_diag(DATA, SCHED, n),
                                   x.shape), rtol=1e-9, atol=1e-14)
    traj = even_trajectory(N, 7)
    opt = optimal_diagonal_sigma_sq(DATA, SCHED, traj, "sn")
    for k in range(1, 7):
        s, t = int(traj[k]), int(traj[k + 1])
        np.testing.assert_allclose(opt[k], diagonal_sigma_sq(SCHED, s, t, cov_x0_diag(DATA, SCHED, t)), rtol=1e-11)


def test_sampler_with_exact_heads_matches_exact_diagonal_chain():
    """The one sampling loop with the exact SN head on a non-isotropic Gaussian produces the exact generated
    distribution of the diagonal chain (toy.evaluate_exact_diagonal, an independent linear-Gaussian recursion), and the
    Monte Carlo bound's transition terms match its exact KL terms (DDPM family)."""
    from analytic_dpm.toy.covariance import ExactHeadModel, evaluate_exact_diagonal, optimal_diagonal_sigma_sq

    model = ExactHeadModel(DATA, SCHED, "sn")
    traj = even_trajectory(N, 6)
    M = 20000
    x = sample(model, SCHED, traj, "sn-ddpm", M, (DATA.dim,), data_range=None, clip=False, seed=11)
    ev = evaluate_exact_diagonal(DATA, SCHED, traj, optimal_diagonal_sigma_sq(DATA, SCHED, traj, "sn"))
    mean_se = np.sqrt(np.diag(ev.cov) / M)
    assert np.all(np.abs(x.mean(0) - ev.mean) < 5 * mean_se)
    var_se = np.sqrt(2.0 / M) * np.diag(ev.cov)
    assert np.all(np.abs(x.var(0, ddof=1) - np.diag(ev.cov)) < 5 * var_se)
    # bound terms: the MC per-image KL sums over dims, the exact evaluator reports them per dimension
    x0 = DATA.sample(4000, seed=12)
    vb = variational_bound(model, SCHED, traj, "sn-ddpm", x0, data_range=None, clamp_x0=False, clip=False, seed=13)
    mc = vb.terms_nats[:, 1:] / DATA.dim
    se = mc.std(0, ddof=1) / np.sqrt(mc.shape[0])
    assert np.all(np.abs(mc.mean(0) - ev.kl_terms[1:]) < 5 * se + 1e-12)
