"""The variational bound on images (analytic_dpm/image_likelihood.py): the discretized Gaussian decoder, the bound
along a trajectory, and the cost matrix F[s, t] of the baselines' optimal trajectory.

Oracles:
* decoder: the 256 bin probabilities telescope to Φ(+∞) − Φ(−∞) = 1; every bin kind against mpmath at 300 digits;
* bound: with the exact ε* of Gaussian data and no clamping, every transition term's mean equals the closed form of
  toy.exact_mean_bound (Monte Carlo, tolerance Z_TOL standard errors); one image's terms recomputed by hand from the
  sampler's own mean (sampling.reverse_step) and posterior.posterior_mean;
* cost matrix: the path sums of F equal variational_bound on the same draws (rounding only).
"""

import math
import warnings

import numpy as np
import pytest

from analytic_dpm.image_likelihood import (
    BIN_WIDTH, NOISE_CHUNK, BaselineCostMatrix, VariationalBound, baseline_cost_matrix, collect_bound_statistics,
    decoder_variance, discretized_gaussian_log_likelihood, variational_bound, variational_bounds,
)
from analytic_dpm.likelihood import gaussian_kl
from analytic_dpm.posterior import posterior_mean
from analytic_dpm.sampling import coefficient_table, predict_x0, reverse_step
from analytic_dpm.schedules import Schedule
from analytic_dpm.toy import default_gaussian, exact_mean_bound
from analytic_dpm.trajectories import even_trajectory
from analytic_dpm.variance import reverse_variances

torch = pytest.importorskip("torch")

Z_TOL = 5.0  # Monte Carlo tolerance in standard errors
GRID = np.arange(256) / 127.5 - 1.0  # the 8-bit values in [-1, 1]
DDPM_FAMILY = ("ddpm-large", "ddpm-small", "analytic-ddpm")

# a short schedule for the network-driven tests (N = 20: β from 1e-3 to 0.3)
SCHED20 = Schedule.from_betas(np.linspace(1e-3, 0.3, 20))
# Gaussian "images" 1×4×4 (d = 16) with an exact ε*
GAUSS = default_gaussian(dim=16)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny convolutions are ~50x slower with several threads on a busy 2-core machine; restore afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def eight_bit_images(M, shape=(1, 4, 4), seed=0):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 256, size=(M, *shape))
    u[:, ..., 0] = 0  # make sure both edge bins occur
    u[:, ..., -1] = 255
    return u / 127.5 - 1.0


class CountingEps:
    """Wraps an ε-model, counts calls and records the inputs."""

    def __init__(self, model):
        self.model, self.calls, self.inputs = model, 0, []

    def __call__(self, x, n):
        self.calls += 1
        self.inputs.append((n, np.array(x.detach().cpu() if torch.is_tensor(x) else x, copy=True)))
        return self.model(x, n)


class TinyNet(torch.nn.Module):
    """A small fixed conv net standing in for an image ε-model (deterministic weights from a fixed seed)."""

    def __init__(self, N):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.N = N
        self.c1 = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = torch.nn.Conv2d(6, 1, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g))

    def forward(self, x, n):
        h = torch.tanh(self.c1(x) + float(n) / self.N)
        return 0.5 * x + self.c2(h)


def net_eps(dtype=torch.float32):
    net = TinyNet(SCHED20.N).to(dtype)
    return lambda x, n: net(x, n)


# ==================================================================================================== decoder
MEANS = [-1e6, -5.0, -1.0, -0.999, -0.3, 0.0, 1.0 / 255.0, 0.5, 1.0, 5.0, 1e6]
VARS = [1e-12, 1e-8, 1e-4, 0.01, 1.0, 1e4, 1e12]


@pytest.mark.parametrize("var", VARS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_decoder_probabilities_sum_to_one(var, backend):
    for mean in MEANS:
        if backend == "numpy":
            lp = discretized_gaussian_log_likelihood(GRID, mean, var)
        else:
            lp = discretized_gaussian_log_likelihood(torch.tensor(GRID), torch.full((256,), mean, dtype=torch.float64),
                                                     var).numpy()
        assert np.all(np.isfinite(lp))
        # the 1e-12 floor may add at most 256e-12
        assert abs(np.exp(lp).sum() - 1.0) < 1e-9, (mean, var, np.exp(lp).sum())


def test_decoder_sum_with_per_pixel_variance_and_floor_off():
    rng = np.random.default_rng(3)
    means = rng.uniform(-1.5, 1.5, size=(20, 1))
    var = 10.0 ** rng.uniform(-8, 3, size=(20, 1))
    lp = discretized_gaussian_log_likelihood(GRID[None, :], means, var, min_prob=0.0)
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_decoder_matches_high_precision_reference():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 300  # enough digits that 1 − Φ(a) and Φ(b) − Φ(a) do not cancel in the reference
    h = 1.0 / 255.0

    def ref(x, mean, var):
        sd = mp.sqrt(mp.mpf(var))
        b = (mp.mpf(x) + h - mean) / sd
        a = (mp.mpf(x) - h - mean) / sd
        if x < -0.999:
            return mp.log(mp.ncdf(b))
        if x > 0.999:
            return mp.log(1 - mp.ncdf(a))
        return mp.log(mp.ncdf(b) - mp.ncdf(a))

    cases = [(GRID[100], -0.2, 1e-3), (GRID[100], 0.3, 1e-3), (GRID[200], 0.2, 1e-3), (GRID[3], GRID[3], 1e-6),
             (GRID[128], 0.9, 0.01), (GRID[50], -0.9, 0.02), (GRID[0], 0.5, 0.01), (GRID[255], -0.5, 0.01),
             (GRID[200], 0.0, 1e6), (GRID[10], 0.0, 1e-2),
             # edge bins with the mean on either side of the bin centre (both branches of the reflection)
             (GRID[0], -1.3, 0.01), (GRID[0], -0.9, 1e-4), (GRID[255], 1.3, 0.01), (GRID[255], 0.9, 1e-4),
             (GRID[0], -1.0, 1e-8), (GRID[255], 1.0, 1e4)]
    for x, mean, var in cases:
        got = float(discretized_gaussian_log_likelihood(np.array([x]), mean, var, min_prob=0.0)[0])
        want = float(ref(x, mean, var))
        assert math.isfinite(got)
        assert abs(got - want) <= 1e-11 * max(1.0, abs(want)), (x, mean, var, got, want)


def test_decoder_finite_and_floored_everywhere():
    means = np.array([-1e30, -1e6, -2.0, -1.0, 0.0, 1.0, 2.0, 1e6, 1e30])[:, None, None]
    var = np.array([1e-30, 1e-12, 1e-4, 1.0, 1e12, 1e30])[None, :, None]
    for cdf in ("exact", "tanh"):
        lp = discretized_gaussian_log_likelihood(GRID[None, None, :], means, var, cdf=cdf)
        assert lp.shape == (9, 6, 256)
        assert np.all(np.isfinite(lp))
        assert np.all(lp <= 0.0) and np.all(lp >= math.log(1e-12) - 1e-12)


def test_decoder_exact_vs_tanh_close():
    rng = np.random.default_rng(0)
    for var in (1e-5, 1e-4, 1e-3, 0.05, 1.0):
        mean = np.clip(GRID + rng.normal(0, math.sqrt(var), size=256), -1, 1)
        pe = np.exp(discretized_gaussian_log_likelihood(GRID, mean, var))
        pt = np.exp(discretized_gaussian_log_likelihood(GRID, mean, var, cdf="tanh"))
        assert np.max(np.abs(pe - pt)) < 5e-4  # the tanh formula is accurate to about 2e-4 in Φ
        assert not np.array_equal(pe, pt)
    # a whole image's log-likelihood at the paper's decoder variance: within 0.1 % of the exact one
    var = decoder_variance(Schedule.linear(1000), 1)
    x = eight_bit_images(4, (3, 8, 8))
    mean = np.clip(x + rng.normal(0, 0.01, size=x.shape), -1, 1)
    le = discretized_gaussian_log_likelihood(x, mean, var).sum()
    lt = discretized_gaussian_log_likelihood(x, mean, var, cdf="tanh").sum()
    assert abs(le - lt) < 1e-3 * abs(le)


def test_decoder_torch_matches_numpy_and_keeps_device_dtype():
    rng = np.random.default_rng(1)
    x = eight_bit_images(3, (2, 5, 5))
    mean = rng.uniform(-1.2, 1.2, size=x.shape)
    for cdf in ("exact", "tanh"):
        ref = discretized_gaussian_log_likelihood(x, mean, 3e-3, cdf=cdf)
        got = discretized_gaussian_log_likelihood(torch.tensor(x), torch.tensor(mean), 3e-3, cdf=cdf)
        assert got.dtype == torch.float64 and got.shape == x.shape
        # the tanh formula subtracts two numbers near 1 (as the official code does): only ~8 digits survive in tails
        tol = 1e-12 if cdf == "exact" else 1e-6
        np.testing.assert_allclose(got.numpy(), ref, rtol=tol, atol=tol)
        got32 = discretized_gaussian_log_likelihood(torch.tensor(x, dtype=torch.float32),
                                                    torch.tensor(mean, dtype=torch.float32), 3e-3, cdf=cdf)
        assert got32.dtype == torch.float32
        if cdf == "exact":  # float32 tanh loses the tails entirely (1 − tanh ≈ 0): only the exact form is compared
            np.testing.assert_allclose(got32.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_decoder_edge_bins_are_open():
    from scipy.special import ndtr

    sd = 0.05
    lo = discretized_gaussian_log_likelihood(np.array([-1.0]), -1.0, sd ** 2)[0]
    hi = discretized_gaussian_log_likelihood(np.array([1.0]), 1.0, sd ** 2)[0]
    want = math.log(ndtr((1.0 / 255.0) / sd))  # P(X < −1 + 1/255), the whole left tail included
    assert lo == pytest.approx(want, rel=1e-13) and hi == pytest.approx(want, rel=1e-13)


def test_decoder_errors():
    with pytest.raises(ValueError, match="var must be finite and > 0"):
        discretized_gaussian_log_likelihood(GRID, 0.0, 0.0)
    with pytest.raises(ValueError, match="var must be finite and > 0"):
        discretized_gaussian_log_likelihood(GRID, 0.0, np.array([1.0, -1.0])[:, None])
    with pytest.raises(ValueError, match="cdf must be one of"):
        discretized_gaussian_log_likelihood(GRID, 0.0, 1.0, cdf="erf")
    with pytest.raises(ValueError, match="bin_width"):
        discretized_gaussian_log_likelihood(GRID, 0.0, 1.0, bin_width=0.0)
    with pytest.raises(TypeError, match="both be numpy arrays or both torch"):
        discretized_gaussian_log_likelihood(torch.tensor(GRID), np.zeros(256), 1.0)


def test_decoder_variance_convention():
    s = Schedule.linear(1000)
    assert decoder_variance(s, 1) == pytest.approx(s.beta[2] * s.beta_bar[1] / s.beta_bar[2], rel=1e-14)
    assert decoder_variance(s, 112) == s.beta_bar[112]
    one = Schedule.from_betas([0.1])
    assert decoder_variance(one, 1) == pytest.approx(0.1, rel=1e-15)
    with pytest.raises(ValueError, match="1..N"):
        decoder_variance(s, 1001)


# ==================================================================================================== the bound
def gauss_images(M, seed=1):
    return GAUSS.sample(M, seed=seed).reshape(M, 1, 4, 4)


@pytest.fixture(scope="module")
def exact_setting():
    """Exact ε* of Gaussian data, no clamping, no data range: K = 10 on a linear N = 100 schedule."""
    sch = Schedule.linear(100)
    M = 3000
    traj = even_trajectory(100, 10)
    res = variational_bounds(GAUSS.eps_model(sch), sch, traj, DDPM_FAMILY, gauss_images(M), gamma=GAUSS.gamma(sch),
                             data_range=None, clamp_x0=False, batch_size=1000)
    return sch, traj, res


def test_transition_terms_match_exact_gaussian_kl(exact_setting):
    sch, traj, res = exact_setting
    for method, vb in res.items():
        # the same Γ as the Monte Carlo pass (exact_mean_bound's default is the exact 1 − Γ, equal to ~1e-16)
        ex = exact_mean_bound(GAUSS, sch, traj, method, data_range=None,
                              gamma=GAUSS.gamma(sch) if method.startswith("analytic") else None)
        d = vb.dim
        assert d == 16 and vb.K == 10
        mc = vb.transition_nats.mean(axis=0) / d
        se = vb.transition_nats.std(axis=0, ddof=1) / math.sqrt(vb.num_images) / d
        z = (mc - ex.kl_terms[1:]) / se
        assert np.all(np.abs(z) < Z_TOL), (method, z)
        np.testing.assert_array_equal(vb.variances.sigma_sq, ex.variances.sigma_sq)
        pz = (vb.prior_nats.mean() / d - ex.prior_kl) / (vb.prior_nats.std(ddof=1) / math.sqrt(vb.num_images) / d)
        assert abs(pz) < Z_TOL


def test_analytic_bound_below_both_ddpm_baselines_at_K10(exact_setting):
    _, _, res = exact_setting
    a, large, small = res["analytic-ddpm"], res["ddpm-large"], res["ddpm-small"]
    # prior and decoder do not depend on the method (same draws, same decoder variance)
    np.testing.assert_array_equal(a.prior_nats, large.prior_nats)
    np.testing.assert_array_equal(a.decoder_nats, small.decoder_nats)
    assert a.bits_per_dim < large.bits_per_dim - 5 * large.bits_per_dim_stderr
    assert a.bits_per_dim < small.bits_per_dim - 5 * small.bits_per_dim_stderr
    assert np.all(a.mean_terms_nats[1:] <= large.mean_terms_nats[1:] + 1e-12)
    assert np.all(a.mean_terms_nats[1:] <= small.mean_terms_nats[1:] + 1e-12)


def test_generalised_ddim_bound_matches_exact_gaussian_kl():
    sch = Schedule.linear(100)
    traj = even_trajectory(100, 5)
    M = 2000
    vb = variational_bound(GAUSS.eps_model(sch), sch, traj, "analytic-ddim", gauss_images(M, seed=7),
                           gamma=GAUSS.gamma(sch), eta=0.5, data_range=None, clamp_x0=False, batch_size=512)
    ex = exact_mean_bound(GAUSS, sch, traj, "analytic-ddim", eta=0.5)
    se = vb.transition_nats.std(axis=0, ddof=1) / math.sqrt(M)
    z = (vb.transition_nats.mean(axis=0) - vb.dim * ex.kl_terms[1:]) / se
    assert np.all(np.abs(z) < Z_TOL), z


def wild_eps(x, n):
    """A poor ε-model whose x̂_0 often leaves [−1, 1], so that clamping matters."""
    return 0.3 * x + 0.1


@pytest.mark.parametrize("method,eta", [("ddpm-large", 0.0), ("analytic-ddpm", 0.0), ("analytic-ddim", 0.7)])
def test_terms_recomputed_by_hand_from_the_sampler(method, eta):
    """Two transitions and the decoder of three images, rebuilt from the model's recorded inputs with the sampler's
    mean (reverse_step, x̂_0 clamped) and posterior_mean: the module's sums-based KL must give the same numbers."""
    sch = SCHED20
    traj = np.array([0, 2, 9, 20])
    x0 = eight_bit_images(3, seed=5)
    gamma = np.full(sch.N + 1, 0.3)
    eps = CountingEps(wild_eps)
    vb = variational_bound(eps, sch, traj, method, x0, gamma=gamma, eta=eta)
    tab = coefficient_table(sch, traj, method, gamma=gamma, eta=eta)
    family = "ddim" if "ddim" in method else "ddpm"
    seen = dict(eps.inputs)  # one batch: timestep -> x_t
    d = 16
    some_clamped = False
    for k in (2, 3):  # transitions (τ_1, τ_2), (τ_2, τ_3)
        s, t = int(traj[k - 1]), int(traj[k])
        x_t = seen[t]
        e_hat = wild_eps(x_t, t)
        x0_hat = predict_x0(tab, k, x_t, e_hat)
        some_clamped |= bool(np.any(np.abs(x0_hat) > 1) and np.any(np.abs(x0_hat) < 1))
        mu_p = reverse_step(tab, k, x_t, e_hat, clip_x0=True)
        mu_q = posterior_mean(sch, s, t, x_t, x0, family, eta)
        kl = gaussian_kl(((mu_q - mu_p) ** 2).reshape(3, -1).sum(1), tab.variances.lambda_sq[k - 1],
                         tab.variances.sigma_sq[k - 1], d)
        np.testing.assert_allclose(vb.terms_nats[:, k - 1], kl, rtol=1e-9)
    assert some_clamped  # the check covers both clamped and unclamped pixels
    x_1 = seen[int(traj[1])]
    mean = predict_x0(tab, 1, x_1, wild_eps(x_1, int(traj[1])), clip_x0=True)
    dec = -discretized_gaussian_log_likelihood(x0, mean, sch.beta_bar[2]).reshape(3, -1).sum(1)
    np.testing.assert_allclose(vb.decoder_nats, dec, rtol=1e-12)
    assert vb.decoder_var == sch.beta_bar[2]  # τ_1 = 2 > 1: β̄_{τ_1}
    prior = 0.5 * (sch.alpha_bar[20] * ((x0 ** 2).reshape(3, -1).sum(1) - d) - d * math.log(sch.beta_bar[20]))
    np.testing.assert_allclose(vb.prior_nats, prior, rtol=1e-12)
    # unclamped, the DDPM- and DDIM-form means are the same number; clamped they are not
    if method == "analytic-ddim":
        free = variational_bound(wild_eps, sch, traj, method, x0, gamma=gamma, eta=eta, clamp_x0=False)
        assert not np.allclose(free.terms_nats[:, 1:], vb.terms_nats[:, 1:])


@pytest.mark.parametrize("K", [1, 2, 5, 20])
def test_bound_finite_for_every_method_with_a_conv_net(K):
    x0 = torch.tensor(eight_bit_images(6, (1, 6, 6), seed=K), dtype=torch.float32)
    traj = even_trajectory(SCHED20.N, K)
    gamma = np.full(SCHED20.N + 1, 0.6)
    eps = net_eps()
    res = variational_bounds(eps, SCHED20, traj, DDPM_FAMILY, x0, gamma=gamma, batch_size=4)
    res.update(variational_bounds(eps, SCHED20, traj, ("ddim", "analytic-ddim"), x0, gamma=gamma, eta=0.5))
    for m, vb in res.items():
        assert isinstance(vb, VariationalBound)
        assert vb.terms_nats.shape == (6, K) and vb.dim == 36
        assert np.all(np.isfinite(vb.total_nats)) and np.all(vb.terms_nats >= 0), m
        assert math.isfinite(vb.bits_per_dim) and vb.bits_per_dim > 0
        assert vb.config["dtype"] == "float32" and vb.config["backend"] == "torch"
        assert vb.bits_per_dim == pytest.approx(vb.total_nats.mean() / (36 * math.log(2)), rel=1e-14)
        rows = vb.breakdown()
        assert [r["term"] for r in rows] == ["prior"] + ["transition"] * (K - 1) + ["decoder"]
        assert sum(r["nats"] for r in rows) == pytest.approx(vb.nats, rel=1e-12)
        assert vb.to_dict()["K"] == K


def test_batch_size_and_sharding_independence():
    x0 = eight_bit_images(70, seed=2)
    traj = even_trajectory(SCHED20.N, 5)
    eps = GAUSS.eps_model(SCHED20)
    ref = variational_bound(eps, SCHED20, traj, "ddpm-large", x0, batch_size=70)
    for bs in (1, 7, 64):
        got = variational_bound(eps, SCHED20, traj, "ddpm-large", x0, batch_size=bs)
        np.testing.assert_allclose(got.terms_nats, ref.terms_nats, rtol=1e-12, atol=0)
    # the same images split over two "processes" with first_index
    cut = 23
    a = variational_bound(eps, SCHED20, traj, "ddpm-large", x0[:cut], batch_size=5)
    b = variational_bound(eps, SCHED20, traj, "ddpm-large", x0[cut:], batch_size=9, first_index=cut)
    np.testing.assert_allclose(np.concatenate([a.total_nats, b.total_nats]), ref.total_nats, rtol=1e-12)
    # a float32 torch network: batch size changes only the network's own rounding
    xt = torch.tensor(x0, dtype=torch.float32)
    n1 = variational_bound(net_eps(), SCHED20, traj, "ddpm-large", xt, batch_size=70)
    n2 = variational_bound(net_eps(), SCHED20, traj, "ddpm-large", xt, batch_size=8)
    np.testing.assert_allclose(n1.total_nats, n2.total_nats, rtol=1e-5)
    # another seed gives other draws
    other = variational_bound(eps, SCHED20, traj, "ddpm-large", x0, seed=1)
    assert not np.allclose(other.terms_nats[:, 1:], ref.terms_nats[:, 1:])


def test_noise_depends_on_timestep_not_on_trajectory():
    x0 = eight_bit_images(5, seed=4)
    eps = GAUSS.eps_model(SCHED20)
    a = variational_bound(eps, SCHED20, [0, 1, 8, 20], "ddpm-small", x0)
    b = variational_bound(eps, SCHED20, [0, 1, 5, 8, 20], "ddpm-small", x0)
    np.testing.assert_array_equal(a.decoder_nats, b.decoder_nats)
    # the transition (8, 20) is in both: same draw of x_20, same term
    np.testing.assert_array_equal(a.terms_nats[:, 2], b.terms_nats[:, 3])


def test_numpy_and_torch_agree():
    x0 = eight_bit_images(9, seed=6)
    traj = even_trajectory(SCHED20.N, 4)
    gamma = GAUSS.gamma(SCHED20)
    cases = [(GAUSS.eps_model(SCHED20), m) for m in DDPM_FAMILY] + [(wild_eps, "ddpm-large")]  # wild: clamping
    for eps, method in cases:
        a = variational_bound(eps, SCHED20, traj, method, x0, gamma=gamma, batch_size=4)
        b = variational_bound(eps, SCHED20, traj, method, torch.tensor(x0), gamma=gamma, batch_size=4)
        c = variational_bound(eps, SCHED20, traj, method, x0, gamma=gamma, batch_size=4, device="cpu")
        for other in (b, c):
            assert other.config["backend"] == "torch"
            np.testing.assert_allclose(other.terms_nats, a.terms_nats, rtol=1e-10)
            np.testing.assert_allclose(other.prior_nats, a.prior_nats, rtol=1e-12)


def test_decoder_options():
    x0 = eight_bit_images(4, seed=8)
    traj = np.array([0, 1, 20])
    eps = GAUSS.eps_model(SCHED20)
    base = variational_bound(eps, SCHED20, traj, "ddpm-large", x0)
    assert base.decoder_var == pytest.approx(decoder_variance(SCHED20, 1), rel=1e-15)
    big = variational_bound(eps, SCHED20, traj, "ddpm-large", x0, decoder_var=0.05)
    assert big.decoder_var == 0.05
    np.testing.assert_array_equal(big.terms_nats[:, 1:], base.terms_nats[:, 1:])
    assert not np.allclose(big.decoder_nats, base.decoder_nats)
    per_t = np.full(SCHED20.N + 1, 0.05)
    np.testing.assert_array_equal(
        variational_bound(eps, SCHED20, traj, "ddpm-large", x0, decoder_var=per_t).decoder_nats, big.decoder_nats)
    tanh = variational_bound(eps, SCHED20, traj, "ddpm-large", x0, cdf="tanh")
    np.testing.assert_allclose(tanh.decoder_nats, base.decoder_nats, rtol=2e-2)


def test_statistics_reprice_without_network_calls():
    x0 = eight_bit_images(6, seed=9)
    traj = even_trajectory(SCHED20.N, 6)
    eps = CountingEps(GAUSS.eps_model(SCHED20))
    stats = collect_bound_statistics(eps, SCHED20, traj, x0)
    calls = eps.calls
    assert calls == 6  # K calls, one batch
    for m in ("ddpm-large", "ddpm-small"):
        np.testing.assert_allclose(stats.bound(m).terms_nats,
                                   variational_bound(GAUSS.eps_model(SCHED20), SCHED20, traj, m, x0).terms_nats,
                                   rtol=1e-13)
    assert eps.calls == calls


# ==================================================================================================== cost matrix
@pytest.fixture(scope="module")
def cost_setting():
    x0 = eight_bit_images(40, seed=11)
    eps = GAUSS.eps_model(SCHED20)
    F = baseline_cost_matrix(eps, SCHED20, x0, method="ddpm-large", batch_size=16)
    return x0, eps, F


PATHS = [even_trajectory(20, 5), np.array([0, 3, 7, 20]), np.array([0, 20]), np.arange(21)]


def test_cost_matrix_shape_and_infinities(cost_setting):
    _, _, F = cost_setting
    assert isinstance(F, BaselineCostMatrix)
    assert F.F.shape == (21, 21) and F.N == 20 and F.dim == 16 and F.num_images == 40
    s, t = np.indices(F.F.shape)
    assert np.all(np.isposinf(F.F[s >= t]))
    assert np.all(np.isfinite(F.F[(s < t)])) and np.all(F.F[s < t] >= 0)
    assert np.all(np.isfinite(F.F_stderr[s < t])) and np.all(F.F_stderr[s < t] > 0)
    assert np.all(np.isfinite(F.rec[1:])) and np.isnan(F.rec[0])
    assert F.decoder_var[1] == pytest.approx(decoder_variance(SCHED20, 1)) and F.decoder_var[7] == SCHED20.beta_bar[7]


@pytest.mark.parametrize("method", DDPM_FAMILY)
def test_cost_matrix_path_sum_equals_variational_bound(cost_setting, method):
    x0, eps, F0 = cost_setting
    # a poor Γ: above 1 at small t (clipped into [0, 1] with a warning), far too small at large t (σ² above
    # Theorem 2's eq. 12, clipped): both paths must clip the same way
    gamma = GAUSS.gamma(SCHED20)
    gamma[1:6] *= 1.3
    gamma[10:] *= 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "gamma lies outside [0, 1]", wanted here
        F = F0.with_method(method, gamma=gamma if method == "analytic-ddpm" else None)
        for path in PATHS:
            vb = variational_bound(eps, SCHED20, path, method, x0, gamma=gamma, batch_size=7)
            assert F.path_nats(path) == pytest.approx(vb.nats, rel=1e-12, abs=1e-9)
            assert F.path_bits_per_dim(path) == pytest.approx(vb.bits_per_dim, rel=1e-12, abs=1e-12)
            np.testing.assert_allclose(F.sigma_sq[path[1:-1], path[2:]], vb.variances.sigma_sq[1:], rtol=1e-15)
            np.testing.assert_allclose(F.F[path[:-1], path[1:]], vb.mean_terms_nats, rtol=1e-12)
        if method == "analytic-ddpm":
            assert reverse_variances(SCHED20, np.arange(21), method, gamma=gamma).clipped.any()


def test_cost_matrix_subgrid_matches_full(cost_setting):
    x0, eps, F = cost_setting
    sub = baseline_cost_matrix(eps, SCHED20, x0, timesteps=[1, 5, 12], batch_size=40)
    np.testing.assert_array_equal(sub.timesteps, [1, 5, 12, 20])  # N is always added
    on = np.array([0, 1, 5, 12, 20])
    np.testing.assert_allclose(sub.F[np.ix_(on, on)], F.F[np.ix_(on, on)], rtol=1e-12)
    off = np.setdiff1d(np.arange(21), on)
    assert np.all(np.isposinf(sub.F[:, off])) and np.all(np.isposinf(sub.F[off, :]))
    assert sub.path_nats([0, 5, 20]) == pytest.approx(F.path_nats([0, 5, 20]), rel=1e-12)
    assert math.isinf(sub.path_nats([0, 6, 20]))
    ot = pytest.importorskip("analytic_dpm.optimal_trajectory")
    best = np.asarray(ot.optimal_trajectory_from_costs(sub.F, 3))
    assert set(best.tolist()) <= set(on.tolist())
    assert math.isfinite(sub.path_nats(best))


def test_cost_matrix_equals_the_official_formula(cost_setting):
    """facts §4.4: F[s, t] = ½d(β̃_{s|t}/σ² + log(σ²/β̃_{s|t}) − 1) + ½ ᾱ_s β_{t|s}²/(β̄_t² σ²) · rec[t], σ² = β_{t|s}."""
    _, _, F = cost_setting
    sch, d = SCHED20, F.dim
    for s, t in [(1, 2), (1, 20), (4, 9), (12, 13), (19, 20)]:
        bt = sch.skip_beta_tilde(s, t)
        sig = sch.skip_beta(s, t)
        want = 0.5 * d * (bt / sig + math.log(sig / bt) - 1.0) \
            + 0.5 * sch.alpha_bar[s] * sch.skip_beta(s, t) ** 2 / (sch.beta_bar[t] ** 2 * sig) * F.rec[t]
        assert F.F[s, t] == pytest.approx(want, rel=1e-10)
    assert F.prior_nats == pytest.approx(F.path_nats([0, 20]) - F.F[0, 20], rel=1e-14)


def test_cost_matrix_feeds_the_optimal_trajectory_dp(cost_setting):
    ot = pytest.importorskip("analytic_dpm.optimal_trajectory")
    x0, eps, F = cost_setting
    for K in (2, 4):
        res = ot.optimal_trajectory_from_costs(F.F, K)
        path = np.asarray(res)
        assert path[0] == 0 and path[-1] == 20 and path.size == K + 1
        vb = variational_bound(eps, SCHED20, path, "ddpm-large", x0)
        assert F.path_nats(path) == pytest.approx(vb.nats, rel=1e-12)
        assert F.path_nats(path) <= F.path_nats(even_trajectory(20, K)) + 1e-9


def test_cost_matrix_generalised_ddim(cost_setting):
    x0, eps, F = cost_setting
    G = F.with_method("ddim", eta=0.5)
    path = PATHS[1]
    vb = variational_bound(eps, SCHED20, path, "ddim", x0, eta=0.5)
    assert G.path_nats(path) == pytest.approx(vb.nats, rel=1e-12)
    with pytest.raises(ValueError, match="undefined"):
        F.with_method("ddim")


# ==================================================================================================== errors
def test_errors_come_before_any_network_call():
    x0 = eight_bit_images(3)
    traj = even_trajectory(20, 4)
    eps = CountingEps(GAUSS.eps_model(SCHED20))
    cases = [
        (ValueError, "undefined", dict(method="ddim")),
        (ValueError, "undefined", dict(method="analytic-ddim", gamma=np.full(21, 0.5))),
        (ValueError, "needs gamma", dict(method="analytic-ddpm")),
        (ValueError, "eta applies to the DDIM family", dict(method="ddpm-large", eta=0.5)),
        (ValueError, "method must be one of", dict(method="ddpm")),
        (ValueError, "x0 must be a batch", dict(x0=np.zeros(16))),
        (ValueError, "x0 must lie in data_range", dict(x0=x0 * 2.0)),
        (ValueError, "x0 must be finite", dict(x0=np.full((2, 1, 4, 4), np.nan))),
        (TypeError, "floating-point", dict(x0=np.zeros((2, 1, 4, 4), dtype=np.uint8))),
        (ValueError, "data_range is None", dict(data_range=None)),
        (ValueError, "decoder_var must be finite and > 0", dict(decoder_var=0.0)),
        (ValueError, "decoder_var must be None", dict(decoder_var=np.ones(5))),
        (ValueError, "trajectory must", dict(trajectory=[0, 5, 3])),
        (ValueError, "batch_size", dict(batch_size=0)),
        (ValueError, "cdf must be one of", dict(cdf="normal")),
        (TypeError, "eps_model must be callable", dict(eps_model="net")),
    ]
    for exc, msg, kw in cases:
        args = dict(eps_model=eps, schedule=SCHED20, trajectory=traj, method="ddpm-large", x0=x0)
        args.update(kw)
        with pytest.raises(exc, match=msg):
            variational_bound(**args)
    assert eps.calls == 0
    for exc, msg, kw in [(ValueError, "undefined", dict(method="ddim")),
                         (ValueError, "timesteps must lie in 1..N", dict(timesteps=[0, 3])),
                         (ValueError, "needs gamma", dict(method="analytic-ddpm"))]:
        with pytest.raises(exc, match=msg):
            baseline_cost_matrix(eps, SCHED20, x0, **kw)
    assert eps.calls == 0


def test_bad_model_outputs():
    x0 = eight_bit_images(3)
    traj = even_trajectory(20, 3)
    with pytest.raises(ValueError, match="shape of x"):
        variational_bound(lambda x, n: x[:, :, :2], SCHED20, traj, "ddpm-large", x0)
    with pytest.raises(TypeError, match="numpy array"):
        variational_bound(lambda x, n: torch.tensor(x), SCHED20, traj, "ddpm-large", x0)
    with pytest.raises(ValueError, match="non-finite"):
        variational_bound(lambda x, n: x * np.nan, SCHED20, traj, "ddpm-large", x0)


def test_noise_chunk_is_a_format_constant():
    assert NOISE_CHUNK == 64 and BIN_WIDTH == 2.0 / 255.0
