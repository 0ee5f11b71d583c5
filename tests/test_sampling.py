"""The sampling loop (analytic_dpm/sampling.py): coefficient table vs posterior.py / variance.py, the exact generated
distribution for Gaussian data, determinism (batch size, backend, resume) and input errors.

Oracle: data x_0 ~ N(m, v·I) in d dims have the exact noise predictor ε*_n(x) = √β̄_n (x − √ᾱ_n m)/(ᾱ_n v + β̄_n) and
Γ_n = β̄_n/(ᾱ_n v + β̄_n). Driven by ε*, every step is linear, x_s = A x_t + B + √σ² ξ, so each coordinate of the
generated x_0 is Gaussian with a mean and variance propagated below in a few lines, independently of the library.
Monte Carlo checks use fixed seeds and a tolerance of Z_TOL standard errors.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytic_dpm.posterior import posterior_coefficients, posterior_mean, residual_var, x0_from_eps
from analytic_dpm.sampling import (
    NOISE_CHUNK, CoefficientTable, coefficient_table, predict_x0, reverse_step, sample,
)
from analytic_dpm.schedules import Schedule
from analytic_dpm.trajectories import ddim_stride_trajectory, even_trajectory
from analytic_dpm.variance import METHODS, pixel_clip_threshold, reverse_variances
from conftest import schedule_and_trajectory

torch = pytest.importorskip("torch")

Z_TOL = 5.0  # Monte Carlo tolerance in standard errors
SCHED = Schedule.linear(100)
M = np.array([0.5, -1.0, 2.0])  # data mean per coordinate
V = 0.3  # data variance per coordinate
D = M.size


class ExactEps:
    """ε*_n for x_0 ~ N(M, V·I); works on numpy arrays and torch tensors; records the timesteps it is called at."""

    def __init__(self, m=M, v=V, schedule=SCHED):
        self.m, self.v, self.s = np.asarray(m, dtype=np.float64), v, schedule
        self.calls = []

    def __call__(self, x, n):
        self.calls.append(n)
        ab, bb = self.s.alpha_bar[n], self.s.beta_bar[n]
        p = math.sqrt(bb) / (ab * self.v + bb)
        shift = math.sqrt(ab) * self.m
        if isinstance(x, torch.Tensor):
            shift = torch.as_tensor(shift, dtype=x.dtype, device=x.device)
        return p * (x - shift)

    def gamma(self):
        ab, bb = self.s.alpha_bar, self.s.beta_bar
        g = bb / (ab * self.v + bb)
        g[0] = 0.0
        return g


GAMMA = ExactEps().gamma()
CASES = [(m, 0.0) for m in METHODS] + [("ddim", 0.5), ("analytic-ddim", 0.5)]


def exact_moments(schedule, traj, method, m, v, eta=0.0):
    """Mean (per coordinate) and variance of x_0 generated with ε* (no clamping, σ² unclipped, last step = mean)."""
    ab, bb = schedule.alpha_bar, schedule.beta_bar
    mean, var = np.zeros_like(m), 1.0
    for k in range(len(traj) - 1, 0, -1):
        s, t = int(traj[k - 1]), int(traj[k])
        a_ts = ab[t] / ab[s]
        b_ts = 1.0 - a_ts
        bt = bb[s] / bb[t] * b_ts  # β̃_{s|t}
        p = math.sqrt(bb[t]) / (ab[t] * v + bb[t])  # ε* = p (x − √ᾱ_t m)
        u, w = (1 - math.sqrt(bb[t]) * p) / math.sqrt(ab[t]), p * math.sqrt(bb[t]) * m  # x̂_0 = u x + w
        gam = bb[t] / (ab[t] * v + bb[t])
        if "ddim" in method:
            lam2 = eta**2 * bt
            r = math.sqrt(bb[s] - lam2)
            A, B = math.sqrt(ab[s]) * u + r * p, math.sqrt(ab[s]) * w - r * p * math.sqrt(ab[t]) * m
        else:
            lam2 = bt
            c0, ct = math.sqrt(ab[s]) * b_ts / bb[t], math.sqrt(a_ts) * bb[s] / bb[t]
            A, B = c0 * u + ct, c0 * w
        sigma_sq = {
            "ddpm-large": b_ts, "ddpm-small": bt, "ddim": lam2,
        }.get(method, lam2 + (math.sqrt(bb[t] / a_ts) - math.sqrt(bb[s] - lam2)) ** 2 * (1 - gam))
        if s == 0:
            sigma_sq = 0.0
        mean, var = A * mean + B, A * A * var + sigma_sq
    return mean, var


def zscores(x, mean, var):
    """z of the sample mean (per coordinate) and of the sample variance (pooled over the iid coordinates)."""
    n = x.shape[0]
    z_mean = (x.mean(0) - mean) / math.sqrt(var / n)
    s2 = ((x - x.mean(0)) ** 2).sum(0) / (n - 1)
    z_var = (s2 - var) / (var * math.sqrt(2.0 / (n - 1)))
    return z_mean, z_var


def rng_arrays(seed, *shapes):
    g = np.random.default_rng(seed)
    return [g.standard_normal(s) for s in shapes]


# ------------------------------------------------------------------------------ the table vs posterior / variance
@pytest.mark.parametrize("method,eta", CASES)
def test_one_step_equals_posterior_mean_plus_noise(method, eta):
    traj = even_trajectory(SCHED.N, 7)
    tab = coefficient_table(SCHED, traj, method, gamma=GAMMA, eta=eta, data_range=None)
    rv = reverse_variances(SCHED, traj, method, gamma=GAMMA, eta=eta, data_range=None)
    family = "ddim" if "ddim" in method else "ddpm"
    x_t, eps, z = rng_arrays(1, (5, D), (5, D), (5, D))
    for k in range(1, tab.K + 1):
        s, t = int(traj[k - 1]), int(traj[k])
        x0 = x0_from_eps(SCHED, t, x_t, eps)
        np.testing.assert_allclose(predict_x0(tab, k, x_t, eps), x0, rtol=1e-12, atol=1e-12)
        got = reverse_step(tab, k, x_t, eps, noise=z)
        if k == 1:  # last step: the mean, no noise; the mean is x̂_0
            want = x0
        else:
            want = posterior_mean(SCHED, s, t, x_t, x0, family, eta) + math.sqrt(rv.sigma_sq[k - 1]) * z
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(tab.sigma_sq[1:], rv.sigma_sq[1:])
    np.testing.assert_array_equal(tab.noise_scale, np.sqrt(tab.sigma_sq))
    np.testing.assert_array_equal(tab.s, traj[:-1])
    np.testing.assert_array_equal(tab.t, traj[1:])
    assert isinstance(tab, CoefficientTable) and tab.K == len(tab) == 7 and tab.family == family


@pytest.mark.parametrize("family,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.3), ("ddim", 1.0)])
def test_ddpm_form_and_ddim_form_coincide_without_clamping(family, eta):
    """coef_x0·x̂_0 + coef_xt·x_t  ==  √ᾱ_s x̂_0 + √(β̄_s − λ²) ε̂  for x̂_0 = x̂_0(x_t, ε̂), in both families."""
    traj = even_trajectory(SCHED.N, 9)
    x_t, eps = rng_arrays(2, (4, D), (4, D))
    for k in range(2, len(traj)):
        s, t = int(traj[k - 1]), int(traj[k])
        x0 = x0_from_eps(SCHED, t, x_t, eps)
        c0, ct, _ = posterior_coefficients(SCHED, s, t, family, eta)
        ddpm_form = c0 * x0 + ct * x_t
        ddim_form = math.sqrt(SCHED.alpha_bar[s]) * x0 + math.sqrt(residual_var(SCHED, s, t, family, eta)) * eps
        np.testing.assert_allclose(ddpm_form, ddim_form, rtol=1e-11, atol=1e-12)
    # and the table's own form (ddim for 'ddim', posterior for 'ddpm') gives that same mean
    method = "ddim" if family == "ddim" else "ddpm-small"
    tab = coefficient_table(SCHED, traj, method, eta=eta)
    assert (tab.coef_xt == 0).all() if family == "ddim" else (tab.coef_eps == 0).all()
    for k in range(2, len(traj)):
        s, t = int(traj[k - 1]), int(traj[k])
        mean = posterior_mean(SCHED, s, t, x_t, x0_from_eps(SCHED, t, x_t, eps), family, eta)
        np.testing.assert_allclose(reverse_step(tab, k, x_t, eps), mean, rtol=1e-11, atol=1e-12)


def test_clamped_ddim_mean_uses_raw_eps():
    """With clamping the two forms differ; the DDIM family keeps the raw ε̂ (facts §3.3), the DDPM family x_t."""
    traj = even_trajectory(SCHED.N, 5)
    x_t = np.full((1, D), 6.0)
    eps = np.zeros((1, D))  # x̂_0 = x_t/√ᾱ_t > 1 everywhere: clamped to 1
    k, s, t = 3, int(traj[2]), int(traj[3])
    ddim = coefficient_table(SCHED, traj, "ddim")
    got = reverse_step(ddim, k, x_t, eps, clip_x0=True)
    np.testing.assert_allclose(got, math.sqrt(SCHED.alpha_bar[s]) * 1.0 + 0.0, rtol=1e-14)
    ddpm = coefficient_table(SCHED, traj, "ddpm-small")
    got = reverse_step(ddpm, k, x_t, eps, clip_x0=True)
    np.testing.assert_allclose(got, posterior_mean(SCHED, s, t, x_t, np.ones((1, D))), rtol=1e-13)
    assert not np.allclose(reverse_step(ddim, k, x_t, eps, clip_x0=True), reverse_step(ddim, k, x_t, eps))


@pytest.mark.parametrize("method", METHODS)
def test_last_step_is_noise_free(method):
    traj = even_trajectory(SCHED.N, 4)
    tab = coefficient_table(SCHED, traj, method, gamma=GAMMA)
    assert tab.s[0] == 0 and tab.sigma_sq[0] == 0.0 and tab.noise_scale[0] == 0.0
    assert tab.coef_x0[0] == 1.0 and tab.coef_xt[0] == 0.0 and tab.coef_eps[0] == 0.0
    x_t, eps, z1, z2 = rng_arrays(3, (6, D), (6, D), (6, D), (6, D))
    a = reverse_step(tab, 1, x_t, eps, noise=z1)
    np.testing.assert_array_equal(a, reverse_step(tab, 1, x_t, eps, noise=z2))
    np.testing.assert_array_equal(a, predict_x0(tab, 1, x_t, eps))
    if method != "ddim":  # the other transitions do use their noise
        assert not np.array_equal(reverse_step(tab, 2, x_t, eps, noise=z1), reverse_step(tab, 2, x_t, eps, noise=z2))


@given(schedule_and_trajectory(), st.sampled_from(CASES), st.floats(0.0, 1.0))
def test_table_on_awkward_schedules(sched_traj, case, gamma_value):
    """Any schedule and trajectory (β near 0 and 1, K = N, τ_K < N): finite coefficients, an exact last step, and
    the one step equal to the posterior mean (the DDPM- and DDIM-form means agree)."""
    sched, traj = sched_traj
    method, eta = case
    gamma = np.full(sched.N + 1, gamma_value)
    tab = coefficient_table(sched, traj, method, gamma=gamma, eta=eta, data_range=None)
    for name in ("coef_x0", "coef_xt", "coef_eps", "noise_scale", "x0_from_xt", "x0_from_eps"):
        assert np.all(np.isfinite(getattr(tab, name))), name
    assert (tab.noise_scale >= 0).all() and tab.noise_scale[0] == 0.0 and tab.coef_x0[0] == 1.0
    family = "ddim" if "ddim" in method else "ddpm"
    x_t, eps = rng_arrays(0, (2, 2), (2, 2))
    for k in range(2, tab.K + 1):
        s, t = int(traj[k - 1]), int(traj[k])
        x0 = predict_x0(tab, k, x_t, eps)
        want = posterior_mean(sched, s, t, x_t, x0, family, eta)
        scale = np.abs(x0).max() + np.abs(x_t).max() + np.abs(eps).max()
        np.testing.assert_allclose(reverse_step(tab, k, x_t, eps), want, rtol=0, atol=1e-9 * scale)


# ------------------------------------------------------------------------------ the σ² clip on (τ_1, τ_2)
@pytest.mark.parametrize("method", ["ddpm-large", "analytic-ddpm", "analytic-ddim"])
def test_pixel_clip_touches_only_the_second_transition(method):
    traj = even_trajectory(SCHED.N, 6)
    base = coefficient_table(SCHED, traj, method, gamma=GAMMA)
    tab = coefficient_table(SCHED, traj, method, gamma=GAMMA, clip_sigma_pixel=1.0)
    thr = pixel_clip_threshold(1.0)
    assert base.sigma_sq[1] > thr  # the clip binds on this schedule, so the test can see it
    assert tab.sigma_sq_clip_threshold == thr and tab.sigma_sq[1] == thr
    np.testing.assert_array_equal(tab.sigma_sq_clipped, np.arange(tab.K) == 1)
    assert (tab.s[1], tab.t[1]) == (traj[1], traj[2])
    rest = np.arange(tab.K) != 1
    for name in ("sigma_sq", "noise_scale"):
        np.testing.assert_array_equal(getattr(tab, name)[rest], getattr(base, name)[rest])
    for name in ("coef_x0", "coef_xt", "coef_eps", "x0_from_xt", "x0_from_eps"):
        np.testing.assert_array_equal(getattr(tab, name), getattr(base, name))
    np.testing.assert_array_equal(tab.variances.sigma_sq, base.variances.sigma_sq)  # the report is unchanged
    assert not base.sigma_sq_clipped.any() and base.sigma_sq_clip_threshold is None

    # in the sampler: every state above τ_1 is identical, x_{τ_1} and x_0 change
    kw = dict(gamma=GAMMA, data_range=None, seed=4, return_trajectory=True)
    _, st0 = sample(ExactEps(), SCHED, traj, method, 64, (D,), **kw)
    _, st1 = sample(ExactEps(), SCHED, traj, method, 64, (D,), clip_sigma_pixel=1.0, **kw)
    np.testing.assert_array_equal(st0[2:], st1[2:])
    assert not np.allclose(st0[1], st1[1]) and not np.allclose(st0[0], st1[0])


def test_pixel_clip_reports_nothing_when_it_does_not_bind():
    traj = even_trajectory(SCHED.N, 6)
    tab = coefficient_table(SCHED, traj, "ddim", clip_sigma_pixel=1.0)  # σ² = 0 already
    assert not tab.sigma_sq_clipped.any() and tab.sigma_sq[1] == 0.0
    one = coefficient_table(SCHED, even_trajectory(SCHED.N, 1), "ddpm-large", clip_sigma_pixel=2.0)  # K = 1
    assert one.K == 1 and not one.sigma_sq_clipped.any()


# ------------------------------------------------------------------------------ exact generated distribution
def _check_exact(x, traj, method, eta):
    mean, var = exact_moments(SCHED, traj, method, M, V, eta)
    z_mean, z_var = zscores(np.asarray(x, dtype=np.float64), mean, var)
    assert np.all(np.abs(z_mean) < Z_TOL), (method, z_mean)
    assert np.all(np.abs(z_var) < Z_TOL), (method, z_var, var)
    return mean, var


@pytest.mark.parametrize("method,eta", CASES)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_exact_gaussian_moments(method, eta, backend):
    n = 20000
    traj = ddim_stride_trajectory(SCHED.N, 6) if "ddim" in method else even_trajectory(SCHED.N, 6)
    model = ExactEps()
    x = sample(model, SCHED, traj, method, n, (D,), gamma=GAMMA, eta=eta, data_range=None, seed=11,
               batch_size=8000, backend=backend)
    assert tuple(x.shape) == (n, D)
    if backend == "torch":
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        x = x.numpy()
    _check_exact(x, traj, method, eta)
    assert model.calls == [int(t) for t in traj[:0:-1]] * 3  # τ_K, …, τ_1 for each of the 3 batches


def test_exact_moments_discriminate_between_methods():
    """The check above has power: the handcrafted methods' exact generated variances differ from each other and from
    the analytic ones by > 10 standard errors of the difference (n = 20000). For isotropic Gaussian data q(x_s | x_t) has exactly the
    variance σ*², so both analytic methods come within 1% of V (only the N(0, I) start and the noise-free last step
    differ), and with K = N the generated mean is M."""
    traj = even_trajectory(SCHED.N, 6)
    var = {m: exact_moments(SCHED, traj, m, M, V)[1] for m in METHODS}
    groups = np.sort([var["ddpm-large"], var["ddpm-small"], var["ddim"], var["analytic-ddpm"]])
    se = groups * math.sqrt(2.0 / 20000)  # standard error of each sample variance
    assert np.all(np.diff(groups) > 10 * np.hypot(se[1:], se[:-1])), var
    for m in ("analytic-ddpm", "analytic-ddim"):
        assert abs(var[m] - V) < 0.01 * V, var
    mean, v_full = exact_moments(SCHED, np.arange(SCHED.N + 1), "analytic-ddpm", M, V)
    np.testing.assert_allclose(mean, M, rtol=1e-3)
    assert abs(v_full - V) < 0.01 * V


# ------------------------------------------------------------------------------ determinism
def test_output_does_not_depend_on_batch_size_num_samples_or_sharding():
    traj = even_trajectory(SCHED.N, 5)
    kw = dict(gamma=GAMMA, data_range=None, seed=5)
    full = sample(ExactEps(), SCHED, traj, "analytic-ddpm", 50, (D,), **kw)
    for bs in (1, 7, NOISE_CHUNK, 33):
        np.testing.assert_array_equal(sample(ExactEps(), SCHED, traj, "analytic-ddpm", 50, (D,), batch_size=bs, **kw),
                                      full)
    np.testing.assert_array_equal(sample(ExactEps(), SCHED, traj, "analytic-ddpm", 9, (D,), **kw), full[:9])
    shard = sample(ExactEps(), SCHED, traj, "analytic-ddpm", 20, (D,), first_index=13, batch_size=6, **kw)
    np.testing.assert_array_equal(shard, full[13:33])
    other = sample(ExactEps(), SCHED, traj, "analytic-ddpm", 50, (D,), gamma=GAMMA, data_range=None, seed=6)
    assert not np.allclose(other, full)
    assert len(np.unique(full[:, 0])) == 50  # every sample has its own noise


@pytest.mark.parametrize("method,eta", [("ddpm-large", 0.0), ("analytic-ddim", 0.5), ("ddim", 0.0)])
def test_numpy_and_torch_float64_agree(method, eta):
    traj = even_trajectory(SCHED.N, 8)
    kw = dict(gamma=GAMMA, eta=eta, data_range=(-1.0, 1.0), clip_x0=True, seed=3, batch_size=20,
              clip_sigma_pixel=1.0, return_trajectory=True)
    xn, sn = sample(ExactEps(), SCHED, traj, method, 50, (D,), **kw)
    xt, stt = sample(ExactEps(), SCHED, traj, method, 50, (D,), backend="torch", dtype=torch.float64, **kw)
    assert xt.dtype == torch.float64 and stt.shape == (9, 50, D)
    np.testing.assert_allclose(xt.numpy(), xn, rtol=0, atol=1e-10)
    np.testing.assert_allclose(stt.numpy(), sn, rtol=0, atol=1e-10)
    x32 = sample(ExactEps(), SCHED, traj, method, 50, (D,), backend="torch", dtype="float32",
                 **{k: v for k, v in kw.items() if k != "return_trajectory"})
    np.testing.assert_allclose(x32.numpy(), xn, rtol=0, atol=1e-4)


def test_trajectory_states_and_given_start():
    traj = ddim_stride_trajectory(SCHED.N, 4)  # ends at τ_K = 76 < N
    kw = dict(gamma=GAMMA, data_range=None, seed=8)
    x, states = sample(ExactEps(), SCHED, traj, "analytic-ddpm", 30, (D,), return_trajectory=True, **kw)
    assert states.shape == (5, 30, D)
    np.testing.assert_array_equal(states[0], x)
    z = zscores(states[-1], np.zeros(D), 1.0)  # the start is N(0, I)
    assert np.all(np.abs(z[0]) < Z_TOL) and np.all(np.abs(z[1]) < Z_TOL)
    # passing the default start as x_T reproduces the run (same noise afterwards); another start changes it
    np.testing.assert_array_equal(sample(ExactEps(), SCHED, traj, "analytic-ddpm", 30, (D,), x_T=states[-1], **kw), x)
    y, st2 = sample(ExactEps(), SCHED, traj, "analytic-ddpm", 30, (D,), x_T=states[-1] + 1.0,
                    return_trajectory=True, **kw)
    np.testing.assert_array_equal(st2[-1], states[-1] + 1.0)
    assert not np.allclose(y, x)


def test_images_shape_and_torch_tensor_start():
    traj = even_trajectory(SCHED.N, 3)
    calls = []

    def model(x, n):
        calls.append(tuple(x.shape))
        return 0.1 * x

    x = sample(model, SCHED, traj, "ddpm-small", 5, (2, 3, 3), seed=1, batch_size=4, backend="torch",
               x_T=torch.zeros(5, 2, 3, 3))
    assert tuple(x.shape) == (5, 2, 3, 3) and calls == [(4, 2, 3, 3)] * 3 + [(1, 2, 3, 3)] * 3


# ------------------------------------------------------------------------------ clamping
def test_clamping_keeps_x0_hat_in_range():
    traj = even_trajectory(SCHED.N, 5)
    model = ExactEps(m=np.array([3.0, -3.0, 0.0]), v=0.5)  # data mostly outside [-1, 1]
    kw = dict(data_range=(-1.0, 1.0), seed=2)
    x = sample(model, SCHED, traj, "ddpm-large", 200, (D,), clip_x0=True, **kw)
    assert x.min() >= -1.0 and x.max() <= 1.0  # the output is the last, clamped x̂_0
    assert (x[:, 0] == 1.0).mean() > 0.3 and (x[:, 1] == -1.0).mean() > 0.3  # the clamp is active
    y = sample(model, SCHED, traj, "ddpm-large", 200, (D,), **kw)  # default: no clamping
    assert y[:, 0].mean() > 2.0
    tab = coefficient_table(SCHED, traj, "ddim")
    x_t, eps = rng_arrays(6, (100, D), (100, D))
    for k in range(1, tab.K + 1):
        x0 = predict_x0(tab, k, 5 * x_t, eps, clip_x0=True)
        assert x0.min() >= -1.0 and x0.max() <= 1.0
        x0_t = predict_x0(tab, k, torch.from_numpy(5 * x_t), torch.from_numpy(eps), clip_x0=True)
        np.testing.assert_array_equal(x0_t.numpy(), x0)


# ------------------------------------------------------------------------------ resume
class Interrupting(ExactEps):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def __call__(self, x, n):
        if len(self.calls) >= self.after:
            raise KeyboardInterrupt
        return super().__call__(x, n)


def test_resume_after_interruption_is_bit_identical(tmp_path):
    traj = even_trajectory(SCHED.N, 4)
    kw = dict(gamma=GAMMA, data_range=None, seed=9, batch_size=8)
    want = sample(ExactEps(), SCHED, traj, "analytic-ddim", 40, (D,), **kw)
    path = tmp_path / "samples.npy"
    with pytest.raises(KeyboardInterrupt):
        sample(Interrupting(after=2 * 4 + 2), SCHED, traj, "analytic-ddim", 40, (D,), out=path, **kw)
    assert path.exists() and (tmp_path / "samples.npy.json").exists()
    model = ExactEps()
    got = sample(model, SCHED, traj, "analytic-ddim", 40, (D,), out=path, **kw)
    np.testing.assert_array_equal(got, want)
    assert len(model.calls) == 3 * 4  # two batches were kept, three were computed
    np.testing.assert_array_equal(np.load(path), want)
    again = ExactEps()  # a finished file: nothing is recomputed
    np.testing.assert_array_equal(sample(again, SCHED, traj, "analytic-ddim", 40, (D,), out=str(path), **kw), want)
    assert again.calls == []
    # another batch size may finish a file (the samples do not depend on it)
    p2 = tmp_path / "b.npy"
    with pytest.raises(KeyboardInterrupt):
        sample(Interrupting(after=4 + 1), SCHED, traj, "analytic-ddim", 40, (D,), out=p2, **kw)
    got2 = sample(ExactEps(), SCHED, traj, "analytic-ddim", 40, (D,), out=p2, **{**kw, "batch_size": 16})
    np.testing.assert_array_equal(got2, want)


def test_resume_with_other_arguments_raises(tmp_path):
    traj = even_trajectory(SCHED.N, 4)
    kw = dict(gamma=GAMMA, data_range=None, batch_size=8)
    path = tmp_path / "s.npy"
    sample(ExactEps(), SCHED, traj, "analytic-ddpm", 16, (D,), out=path, seed=1, **kw)
    with pytest.raises(ValueError, match=r"different arguments \(seed: file has 1, this call has 2\)"):
        sample(ExactEps(), SCHED, traj, "analytic-ddpm", 16, (D,), out=path, seed=2, **kw)
    with pytest.raises(ValueError, match="num_samples"):
        sample(ExactEps(), SCHED, traj, "analytic-ddpm", 17, (D,), out=path, seed=1, **kw)
    with pytest.raises(ValueError, match="table"):  # another Γ gives other coefficients
        sample(ExactEps(), SCHED, traj, "analytic-ddpm", 16, (D,), out=path, seed=1,
               **{**kw, "gamma": 0.9 * GAMMA})
    with pytest.raises(ValueError, match="dtype"):
        sample(ExactEps(), SCHED, traj, "analytic-ddpm", 16, (D,), out=path, seed=1, backend="torch", **kw)
    foreign = tmp_path / "foreign.npy"
    np.save(foreign, np.zeros((16, D)))
    with pytest.raises(ValueError, match="without its partner"):
        sample(ExactEps(), SCHED, traj, "analytic-ddpm", 16, (D,), out=foreign, **kw)
    with pytest.raises(ValueError, match="ending in .npy"):
        sample(ExactEps(), SCHED, traj, "analytic-ddpm", 16, (D,), out=tmp_path / "s.npz", **kw)
    with pytest.raises(ValueError, match="return_trajectory"):
        sample(ExactEps(), SCHED, traj, "analytic-ddpm", 16, (D,), out=tmp_path / "t.npy",
               return_trajectory=True, **kw)


# ------------------------------------------------------------------------------ errors
def _bad(**over):
    kw = dict(eps_model=ExactEps(), schedule=SCHED, trajectory=even_trajectory(SCHED.N, 3), method="ddpm-large",
              num_samples=4, shape=(D,))
    kw.update(over)
    return kw


@pytest.mark.parametrize("over,exc,match", [
    (dict(num_samples=0), ValueError, "num_samples must be an integer >= 1; got 0"),
    (dict(num_samples=2.5), TypeError, "num_samples must be an integer"),
    (dict(shape=()), ValueError, "shape must be a non-empty tuple of positive ints"),
    (dict(shape=(3, 0)), ValueError, r"got \(3, 0\)"),
    (dict(shape="abc"), ValueError, "shape must be"),
    (dict(backend="jax"), ValueError, "backend must be one of 'numpy', 'torch'; got 'jax'"),
    (dict(dtype=np.float32), ValueError, "backend='numpy' computes in float64 only"),
    (dict(device="cpu"), ValueError, "device applies to backend='torch' only"),
    (dict(backend="torch", dtype=torch.float16), ValueError, "torch.float32 or torch.float64"),
    (dict(backend="torch", device="nonsense"), ValueError, "device must be a torch device"),
    (dict(batch_size=0), ValueError, "batch_size must be an integer >= 1"),
    (dict(seed=-1), ValueError, "seed must be an integer >= 0"),
    (dict(method="ddpm"), ValueError, "method must be one of"),
    (dict(method="analytic-ddpm"), ValueError, "needs gamma"),
    (dict(clip_x0=True, data_range=None), ValueError, "clip_x0=True clamps x̂_0 to data_range"),
    (dict(clip_x0="yes"), TypeError, "clip_x0 must be True, False or None"),
    (dict(clip_sigma_pixel=0.0), ValueError, "clip_pixel must be > 0"),
    (dict(x_T=np.zeros((3, D))), ValueError, r"x_T must have shape \(num_samples, \*shape\) = \(4, 3\)"),
    (dict(eps_model="model"), TypeError, "eps_model must be callable"),
    (dict(eps_model=lambda x, n: x[:, :2]), ValueError, r"must return ε̂ with the shape of x, \(4, 3\); got \(4, 2\)"),
    (dict(eps_model=lambda x, n: x.tolist()), TypeError, "must return a numpy array for backend='numpy'"),
    (dict(eps_model=lambda x, n: np.asarray(x), backend="torch"), TypeError, "must return a torch.Tensor"),
    (dict(eps_model=lambda x, n: x * np.nan), ValueError, "non-finite"),
    (dict(progress="yes"), TypeError, "progress must be True or False or None"),
])
def test_clear_errors(over, exc, match):
    with pytest.raises(exc, match=match):
        sample(**_bad(**over))


def test_step_errors():
    tab = coefficient_table(SCHED, even_trajectory(SCHED.N, 3), "ddim")
    x = np.zeros((1, D))
    with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= K = 3; got k = 4"):
        reverse_step(tab, 4, x, x)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        predict_x0(tab, 0, x, x)
    with pytest.raises(TypeError, match="table must be a CoefficientTable"):
        reverse_step(tab.variances, 1, x, x)


def test_progress_bar_counts_steps_times_batches(capsys):
    traj = even_trajectory(SCHED.N, 3)
    sample(ExactEps(), SCHED, traj, "ddim", 10, (D,), batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "9/9" in err  # 3 batches × 3 steps
    sample(ExactEps(), SCHED, traj, "ddim", 10, (D,), batch_size=4, progress=False)
    assert capsys.readouterr().err == ""


def test_ddim_consistent_eps_against_diffusers_formula():
    """ddim_eps='consistent' re-derives ε̃ = (x_t − √ᾱ_t clamp(x̂_0))/√β̄_t for the DDIM mean (diffusers' DDIM with
    clipping); 'raw' (default) keeps the network's ε̂ (the official code). Without clamping they are identical."""
    import analytic_dpm as adpm
    from analytic_dpm.sampling import coefficient_table, reverse_step

    s = adpm.Schedule.linear(1000)
    traj = adpm.even_trajectory(1000, 10)
    rng = np.random.default_rng(0)
    x_t = rng.standard_normal((5, 7)) * 1.5
    eps = rng.standard_normal((5, 7))
    raw = coefficient_table(s, traj, "ddim")
    con = coefficient_table(s, traj, "ddim", ddim_eps="consistent")
    assert raw.fingerprint() != con.fingerprint()
    k = 6
    t, sv = int(traj[k]), int(traj[k - 1])
    ab_t, ab_s = s.alpha_bar[t], s.alpha_bar[sv]
    x0 = np.clip((x_t - np.sqrt(1 - ab_t) * eps) / np.sqrt(ab_t), -1, 1)
    eps_c = (x_t - np.sqrt(ab_t) * x0) / np.sqrt(1 - ab_t)
    np.testing.assert_allclose(reverse_step(con, k, x_t, eps, clip_x0=True),
                               np.sqrt(ab_s) * x0 + np.sqrt(1 - ab_s) * eps_c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reverse_step(raw, k, x_t, eps, clip_x0=True),
                               np.sqrt(ab_s) * x0 + np.sqrt(1 - ab_s) * eps, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reverse_step(con, k, x_t, eps), reverse_step(raw, k, x_t, eps), rtol=1e-12)
    # DDPM family: the mean has no ε̂ term, so the option changes nothing
    np.testing.assert_array_equal(reverse_step(coefficient_table(s, traj, "ddpm-small", ddim_eps="consistent"), k,
                                               x_t, eps, clip_x0=True),
                                  reverse_step(coefficient_table(s, traj, "ddpm-small"), k, x_t, eps, clip_x0=True))
    with pytest.raises(ValueError, match="ddim_eps must be 'raw'"):
        coefficient_table(s, traj, "ddim", ddim_eps="diffusers")


def test_ddim_consistent_matches_diffusers_ddim_scheduler():
    """Against diffusers' own DDIMScheduler (clip_sample=True, eta=0) on a trajectory of its timesteps: 'raw' is its
    default step, 'consistent' its step with use_clipped_model_output=True, to float32 round-off."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    import analytic_dpm as adpm
    from analytic_dpm.sampling import coefficient_table, reverse_step

    ds = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                                 set_alpha_to_one=False, timestep_spacing="leading")
    ds.set_timesteps(10)
    steps = sorted(int(t) for t in ds.timesteps)  # diffusers' t = the paper's n − 1
    sched = adpm.Schedule.from_betas(ds.betas.double().numpy())
    traj = np.array([0] + [t + 1 for t in steps])
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64) * 2
    eps = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    for mode, clipped_output in (("raw", False), ("consistent", True)):
        tab = coefficient_table(sched, traj, "ddim", ddim_eps=mode)
        for k in range(2, len(traj)):  # skip k = 1 (s = 0): diffusers uses ᾱ_prev = ᾱ_0 of its table there
            ref = ds.step(eps.float(), steps[k - 1], x_t.float(), eta=0.0,
                          use_clipped_model_output=clipped_output).prev_sample.double()
            torch.testing.assert_close(reverse_step(tab, k, x_t, eps, clip_x0=True), ref, rtol=1e-5, atol=1e-5)


def test_device_noise_is_per_sample_and_batch_independent(tmp_path):
    """noise='device': torch generators on the device, seeded per chunk of NOISE_CHUNK samples from the seed; the
    samples do not depend on batch_size or on first_index sharding, differ from the host streams, and resume."""
    torch = pytest.importorskip("torch")
    import analytic_dpm as adpm
    from analytic_dpm import toy
    from analytic_dpm.sampling import NOISE_CHUNK, DeviceNoiseStream, sample

    s = adpm.Schedule.linear(100)
    data = toy.default_gaussian(dim=6)
    eps = data.eps_model(s)
    traj = adpm.even_trajectory(100, 5)
    kw = dict(shape=(6,), gamma=data.gamma(s), data_range=None, backend="torch", dtype=torch.float64, seed=4,
              progress=False, noise="device")
    a = sample(eps, s, traj, "analytic-ddpm", 40, batch_size=40, **kw)
    b = sample(eps, s, traj, "analytic-ddpm", 40, batch_size=7, **kw)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    tail = sample(eps, s, traj, "analytic-ddpm", 13, first_index=27, batch_size=5, **kw)
    torch.testing.assert_close(tail, a[27:], rtol=0, atol=0)
    host = sample(eps, s, traj, "analytic-ddpm", 40, **{**kw, "noise": "host"})
    assert not torch.allclose(a, host)
    # the same distribution: mean and variance of many draws of one stream
    z = torch.cat([DeviceNoiseStream(0, 0, 4 * NOISE_CHUNK, (50,), "cpu", torch.float64).draw() for _ in range(3)])
    assert abs(float(z.mean())) < 0.05 and abs(float(z.var()) - 1.0) < 0.05
    # resumable through out=, keyed on the noise source
    path = tmp_path / "x.npy"
    c = sample(eps, s, traj, "analytic-ddpm", 40, batch_size=16, out=path, **kw)
    torch.testing.assert_close(c, a, rtol=0, atol=0)
    with pytest.raises(ValueError):
        sample(eps, s, traj, "analytic-ddpm", 40, batch_size=16, out=path, **{**kw, "noise": "host"})
    with pytest.raises(ValueError, match="noise='device'.*backend='torch'"):
        sample(eps, s, traj, "analytic-ddpm", 4, shape=(6,), gamma=data.gamma(s), data_range=None, noise="device")
    with pytest.raises(ValueError, match="noise must be one of"):
        sample(eps, s, traj, "analytic-ddpm", 4, **{**kw, "noise": "gpu"})


def test_pixel_clip_compares_the_variance_not_its_square_root():
    """The σ₂ clip acts on σ² (P App. F.2: σ² ≤ (y·2/255·√(π/2))²). Linear schedule, K = 1000, y = 2: σ² at
    (τ_1, τ_2) = (1, 2) is 1.1e-4, below the threshold 3.87e-4 but with √σ² above it, so it must stay unclipped
    (comparing √σ² with the threshold would clip it; this test kills that mutant)."""
    import analytic_dpm as adpm
    from analytic_dpm import toy
    from analytic_dpm.sampling import coefficient_table
    from analytic_dpm.variance import pixel_clip_threshold

    s = adpm.Schedule.linear(1000)
    d = toy.default_gaussian(dim=64)
    tab = coefficient_table(s, adpm.even_trajectory(1000, 1000), "analytic-ddpm", gamma=d.gamma(s),
                            clip_sigma_pixel=2)
    th = pixel_clip_threshold(2)
    s2 = tab.variances.sigma_sq[1]
    assert th**2 < s2 < th < np.sqrt(s2)
    assert not tab.sigma_sq_clipped[1] and tab.sigma_sq[1] == s2
    # and above the threshold it is clipped to it exactly
    tab10 = coefficient_table(s, adpm.even_trajectory(1000, 10), "ddpm-large", clip_sigma_pixel=2)
    assert tab10.sigma_sq_clipped[1] and tab10.sigma_sq[1] == th
