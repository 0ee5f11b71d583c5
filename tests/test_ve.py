"""analytic_dpm.ve: VE and Kingma-form processes as rescaled VP processes, against closed forms in their own
coordinates (Gaussian conditioning, never via the VP schedule)."""

import numpy as np
import pytest

from analytic_dpm import toy
from analytic_dpm.ve import ScaledProcess


def _ve_posterior(sig_s, sig_t):
    """VE q(x_s|x_t,x_0) = N(x_0 + (σ_s²/σ_t²)(x_t − x_0), σ_s²(σ_t² − σ_s²)/σ_t²)."""
    r = sig_s**2 / sig_t**2
    return 1.0 - r, r, sig_s**2 * (sig_t**2 - sig_s**2) / sig_t**2


def test_geometric_ve_schedule():
    p = ScaledProcess.geometric_ve(1000, 0.01, 50.0)
    assert p.noise_std[0] == 0.0 and p.noise_std[1] == pytest.approx(0.01) and p.noise_std[-1] == pytest.approx(50.0)
    ab = 1.0 / (1.0 + p.noise_std[1:] ** 2)
    np.testing.assert_allclose(p.schedule.alpha_bar[1:], ab, rtol=1e-14)
    np.testing.assert_allclose(p.schedule.beta_bar[1:], p.noise_std[1:] ** 2 * ab, rtol=1e-13)
    np.testing.assert_allclose(p.vp_factor, np.sqrt(1.0 + p.noise_std**2), rtol=1e-15)


def test_ve_posterior_closed_form():
    p = ScaledProcess.geometric_ve(200, 0.02, 30.0)
    s, t = np.array([0, 1, 5, 50, 150]), np.array([3, 7, 60, 199, 200])
    c0, ct, lam2 = p.posterior(s, t)
    e0, et, el = _ve_posterior(p.noise_std[s], p.noise_std[t])
    np.testing.assert_allclose(c0, e0, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ct, et, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(lam2, el, rtol=1e-12, atol=1e-300)


def test_kingma_form_posterior_by_gaussian_conditioning():
    """General x_n = a_n x_0 + s_n ε: q(x_s|x_t,x_0) from conditioning the joint Gaussian of (x_s, x_t) given x_0."""
    rng = np.random.default_rng(0)
    N = 50
    snr = np.sort(rng.uniform(1e-3, 1e3, N))[::-1]
    a = rng.uniform(0.3, 3.0, N)
    p = ScaledProcess.from_snr(snr, a)
    A, S = p.scale, p.noise_std
    s, t = np.array([1, 4, 10, 30]), np.array([2, 20, 11, 50])
    # x_t = (a_t/a_s) x_s + n, Var n = s_t² − (a_t/a_s)² s_s²
    at_s = A[t] / A[s]
    v_ts = S[t] ** 2 - at_s**2 * S[s] ** 2
    ct = at_s * S[s] ** 2 / S[t] ** 2
    c0 = A[s] * v_ts / S[t] ** 2
    lam2 = v_ts * S[s] ** 2 / S[t] ** 2
    g0, gt, gl = p.posterior(s, t)
    np.testing.assert_allclose(g0, c0, rtol=1e-10)
    np.testing.assert_allclose(gt, ct, rtol=1e-10)
    np.testing.assert_allclose(gl, lam2, rtol=1e-10)


def test_gamma_and_sigma_opt_in_ve_coordinates():
    """Γ of the VE ε* (mean σ²/(λ + σ²)) equals the VP Γ; σ*² = mean_i Var(x_s|x_t) of the joint VE Gaussian."""
    p = ScaledProcess.geometric_ve(500, 0.01, 50.0)
    data = toy.default_gaussian(dim=32)
    lam = data.eigvals
    n = np.arange(1, 501)
    sig2 = p.noise_std[n, None] ** 2
    gamma_ve = np.mean(sig2 / (lam + sig2), axis=1)
    np.testing.assert_allclose(data.gamma(p.schedule)[1:], gamma_ve, rtol=1e-12)
    s, t = np.array([0, 1, 10, 100, 400]), np.array([2, 10, 100, 400, 500])
    ss, st = p.noise_std[s, None] ** 2, p.noise_std[t, None] ** 2
    direct = np.mean((lam + ss) * (st - ss) / (lam + st), axis=1)
    np.testing.assert_allclose(p.sigma_sq_opt(s, t, data.gamma_at(p.schedule, t)), direct, rtol=1e-9)


def test_vp_eps_model_wrapper():
    """ε̂_VP(y, n) = ε̂_VE(r_n y, n): the VE exact ε*(x) = σ_n(x − m)/(λ + σ_n²) maps onto the VP exact ε*."""
    p = ScaledProcess.geometric_ve(100, 0.05, 20.0)
    data = toy.default_gaussian(dim=8)
    lam, m = data.eigvals, data.mean

    def ve_eps(x, n):
        sg = p.noise_std[n]
        return sg * (x - m) / (lam + sg**2)

    vp = p.vp_eps_model(ve_eps)
    y = np.random.default_rng(1).standard_normal((5, 8))
    for n in (1, 30, 100):
        np.testing.assert_allclose(vp(y, n), data.eps(p.schedule, y, n), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(p.from_vp(p.to_vp(y, n), n), y, rtol=1e-15)


@pytest.mark.parametrize(
    "call, msg",
    [(lambda: ScaledProcess.variance_exploding([0.1, 0.1]), "strictly increasing"),
     (lambda: ScaledProcess.variance_exploding([0.0, 1.0]), "finite and > 0"),
     (lambda: ScaledProcess.variance_exploding([]), "at least one"),
     (lambda: ScaledProcess.from_snr([1.0, 2.0]), "strictly decreasing"),
     (lambda: ScaledProcess.from_snr([2.0, 1.0], [1.0, -1.0]), "scale a_n"),
     (lambda: ScaledProcess.geometric_ve(10, 1.0, 0.5), "sigma_min < sigma_max")],
)
def test_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()
