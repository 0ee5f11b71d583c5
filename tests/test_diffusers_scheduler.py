"""AnalyticDPMScheduler (diffusers) against this library's own sampler, on a tiny random UNet2DModel, offline.

Also: diffusers' DDPMPipeline runs with it, the config round-trips, diffusers' timestep convention (t = n − 1),
the lazy import, and a smoke run of benchmarks/bench_gpu_sampling.py.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

import analytic_dpm as adpm  # noqa: E402
from analytic_dpm.integrations import AnalyticDPMScheduler, SeededNoise, unet_eps_model  # noqa: E402
from analytic_dpm.sampling import coefficient_table, reverse_step  # noqa: E402
from analytic_dpm.variance import reverse_variances  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N = 100
SCHED = adpm.Schedule.linear(N)
SHAPE = (1, 8, 8)
TRAJ = adpm.even_trajectory(N, 6)
METHODS = ["analytic-ddpm", "analytic-ddim", "residual-ddpm", "residual-ddim", "ddpm-large", "ddpm-small", "ddim"]


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    net = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                      down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8).eval()
    with torch.no_grad():
        net.conv_out.weight.mul_(2.5)  # Γ of the random network ≈ 0.4: inside [0, 1], so nothing is clipped
    return net


@pytest.fixture(scope="module")
def gamma(unet):
    data = np.random.default_rng(0).uniform(-1, 1, (32, *SHAPE)).astype(np.float32)
    opt_ts = np.arange(1, N + 1)
    est = adpm.estimate_gamma(unet_eps_model(unet), SCHED, data, timesteps=opt_ts, batch_size=32, seed=1,
                              progress=False)
    assert 0.1 < est.gamma[1:].min() and est.gamma[1:].max() < 0.9
    return est


def _diffusers_loop(unet, sched, x, generator=None):
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("trajectory", ["even", "optimal"])
def test_same_samples_as_library_sampler(unet, gamma, method, trajectory):
    """Same model, seeds, trajectory and coefficients: the diffusers loop reproduces analytic_dpm.sampling.sample."""
    traj = TRAJ if trajectory == "even" else np.asarray(adpm.optimal_trajectory(SCHED, gamma, 6))
    if trajectory == "optimal":
        assert not np.array_equal(traj, TRAJ)
    kw = dict(eta=0.5) if method in ("analytic-ddim", "residual-ddim") else {}
    pix = 1.0 if method == "analytic-ddpm" else None
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method=method, trajectory=traj,
                                               clip_sigma_pixel=pix, **kw)
    B = 20  # two noise chunks of 16
    ref = adpm.sample(unet_eps_model(unet, SCHED), SCHED, traj, method, B, SHAPE, gamma=gamma, clip_x0=True,
                      clip_sigma_pixel=pix, seed=3, backend="torch", **kw)
    noise = SeededNoise(seed=3, num_samples=B, shape=SHAPE)
    x = _diffusers_loop(unet, sched, noise.initial(), generator=noise)
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-6)
    assert ref.std() > 0.1  # not a degenerate chain
    if pix is not None:
        assert sched.table.sigma_sq_clipped[1]  # the σ² pixel clip was active on (τ_1, τ_2)
    assert sched.table.fingerprint() == coefficient_table(SCHED, traj, method, gamma=gamma, clip_sigma_pixel=pix,
                                                          **kw).fingerprint()
    if method.startswith("residual"):  # the GammaEstimate passed as gamma supplied its residual
        np.testing.assert_array_equal(sched.residual, gamma.residual)
        np.testing.assert_array_equal(sched.table.variances.residual, gamma.residual[traj[1:]])


def test_first_index_and_subbatch(unet, gamma):
    """A SeededNoise for samples 16..19 reproduces rows 16..19 of a larger run (per-sample streams)."""
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddpm", num_inference_steps=4)
    traj = adpm.even_trajectory(N, 4)
    ref = adpm.sample(unet_eps_model(unet, SCHED), SCHED, traj, "analytic-ddpm", 4, SHAPE, gamma=gamma,
                      clip_x0=True, seed=9, backend="torch", first_index=16)
    noise = SeededNoise(seed=9, num_samples=4, shape=SHAPE, first_index=16)
    x = _diffusers_loop(unet, sched, noise.initial(), generator=noise)
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-6)


def test_analytic_ddim_mean_and_noise_have_different_variances(unet, gamma):
    """Analytic-DDIM: mean √ᾱ_s x̂_0 + √(β̄_s − λ²) ε̂ with λ² = η²β̃, noise σ*² from Theorem 1 (≠ λ²)."""
    eta = 0.3
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddim", eta=eta, trajectory=TRAJ)
    tab = sched.table
    s, t = tab.s, tab.t
    var = reverse_variances(SCHED, TRAJ, "analytic-ddim", gamma=gamma, eta=eta)
    inner = slice(1, None)  # every step but the last (s = 0)
    np.testing.assert_allclose(tab.coef_eps[inner] ** 2, SCHED.beta_bar[s[inner]] - var.lambda_sq[inner], rtol=1e-12)
    np.testing.assert_allclose(tab.sigma_sq[inner], var.sigma_sq[inner], rtol=1e-12)
    assert np.all(tab.sigma_sq[inner] > var.lambda_sq[inner])  # the noise is not the mean's λ²
    assert np.all(tab.sigma_sq[1:3] > 10 * var.lambda_sq[1:3])
    # one step by hand, with explicit noise
    k = 3
    ts_ = int(t[k - 1]) - 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, *SHAPE), generator=g)
    z = torch.randn((2, *SHAPE), generator=g)
    with torch.no_grad():
        eps = unet(x, torch.tensor(ts_)).sample
    out = sched.step(eps, ts_, x, variance_noise=z)
    sab_t, sbb_t = np.sqrt(SCHED.alpha_bar[t[k - 1]]), np.sqrt(SCHED.beta_bar[t[k - 1]])
    x0 = ((x.double() - sbb_t * eps.double()) / sab_t).clamp(-1, 1)
    sk = s[k - 1]
    want = (np.sqrt(SCHED.alpha_bar[sk]) * x0 + np.sqrt(SCHED.beta_bar[sk] - var.lambda_sq[k - 1]) * eps.double()
            + np.sqrt(var.sigma_sq[k - 1]) * z.double())
    torch.testing.assert_close(out.prev_sample.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.pred_original_sample.double(), x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.prev_sample, reverse_step(tab, k, x, eps, noise=z, clip_x0=True))


@pytest.mark.parametrize("method,eta", [("residual-ddpm", 0.0), ("residual-ddim", 0.0), ("residual-ddim", 0.3)])
def test_residual_step_equals_library_reverse_step(unet, gamma, method, eta):
    """A residual-* scheduler's step is reverse_step with coefficient_table(..., residual=R): σ² = λ² + g²R_t, never
    clipped (R of the random network exceeds 1 at some t: σ² above eq. 11 there, reported in outside_bounds)."""
    R = np.array(gamma.residual)
    sched = AnalyticDPMScheduler.from_schedule(SCHED, residual=R, method=method, eta=eta, trajectory=TRAJ)
    tab = coefficient_table(SCHED, TRAJ, method, residual=R, eta=eta)
    assert sched.table.fingerprint() == tab.fingerprint()
    np.testing.assert_array_equal(sched.residual, R)
    var = sched.table.variances
    s, t = adpm.transitions(TRAJ)
    fam = "ddim" if "ddim" in method else "ddpm"
    np.testing.assert_array_equal(var.sigma_sq, adpm.residual_sigma_sq(SCHED, s, t, R[t], fam, eta))
    assert not var.clipped.any()
    np.testing.assert_array_equal(var.outside_bounds, (var.sigma_sq > var.upper) | (var.sigma_sq < var.lower))
    # the GammaEstimate itself, passed as gamma, gives the same table
    via_est = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method=method, eta=eta, trajectory=TRAJ)
    assert via_est.table.fingerprint() == tab.fingerprint()
    g = torch.Generator().manual_seed(2)
    x = torch.randn((3, *SHAPE), generator=g)
    z = torch.randn((3, *SHAPE), generator=g)
    for k in (len(TRAJ) - 1, 3, 1):
        ts_ = int(TRAJ[k]) - 1
        with torch.no_grad():
            eps = unet(x, torch.tensor(ts_)).sample
        out = sched.step(eps, ts_, x, variance_noise=z)
        torch.testing.assert_close(out.prev_sample, reverse_step(tab, k, x, eps, noise=z, clip_x0=True))


@pytest.mark.parametrize("family,eta", [("ddpm", 0.0), ("ddim", 0.4)])
def test_residual_with_exact_predictor_equals_analytic(family, eta):
    """With R = 1 − Γ (exact ε* of toy data, computed without cancellation), residual-* is analytic-* bit for bit
    (unclipped: unbounded data), and so is every step."""
    data = adpm.toy.default_gaussian(dim=64)
    omg = data.one_minus_gamma(SCHED)
    kw = dict(eta=eta, trajectory=TRAJ, data_range=None, clip_sample=False)
    res = AnalyticDPMScheduler.from_schedule(SCHED, residual=omg, method=f"residual-{family}", **kw)
    ana = AnalyticDPMScheduler.from_schedule(SCHED, one_minus_gamma=omg, method=f"analytic-{family}", **kw)
    via_gamma = AnalyticDPMScheduler.from_schedule(SCHED, gamma=data.gamma(SCHED), method=f"analytic-{family}", **kw)
    assert not ana.table.variances.clipped.any()
    np.testing.assert_array_equal(res.table.sigma_sq, ana.table.sigma_sq)
    assert res.table.fingerprint() == ana.table.fingerprint()
    np.testing.assert_allclose(via_gamma.table.sigma_sq, ana.table.sigma_sq, rtol=1e-6)  # Γ route: digits lost
    eps_model = data.eps_model(SCHED)
    g = torch.Generator().manual_seed(4)
    x = torch.randn((2, *SHAPE), generator=g, dtype=torch.float64)
    z = torch.randn((2, *SHAPE), generator=g, dtype=torch.float64)
    for t in res.timesteps:
        eps = torch.from_numpy(eps_model(x.reshape(2, -1).numpy(), int(t) + 1).reshape(x.shape))
        a = ana.step(eps, t, x, variance_noise=z).prev_sample
        torch.testing.assert_close(res.step(eps, t, x, variance_noise=z).prev_sample, a, rtol=0, atol=0)
        x = a


def test_residual_and_one_minus_gamma_config_round_trip(tmp_path, gamma):
    R = np.array(gamma.residual)
    R[7] = np.nan  # not estimated: saved as null
    sched = AnalyticDPMScheduler.from_schedule(SCHED, residual=R, method="residual-ddim", eta=0.2, trajectory=TRAJ)
    sched.save_pretrained(tmp_path / "res")
    cfg = json.loads((tmp_path / "res" / "scheduler_config.json").read_text())
    assert cfg["method"] == "residual-ddim" and cfg["residual"][7] is None and cfg["residual"][1] == R[1]
    assert cfg["gamma"] is None and cfg["one_minus_gamma"] is None
    back = AnalyticDPMScheduler.from_pretrained(tmp_path / "res")
    np.testing.assert_array_equal(back.residual, R)
    assert back.gamma is None and back.one_minus_gamma is None
    assert back.table.fingerprint() == sched.table.fingerprint()

    omg = np.array(gamma.one_minus_gamma)
    ana = AnalyticDPMScheduler.from_schedule(SCHED, one_minus_gamma=omg, method="analytic-ddpm", num_inference_steps=5)
    ana.save_pretrained(tmp_path / "omg")
    back = AnalyticDPMScheduler.from_pretrained(tmp_path / "omg")
    np.testing.assert_array_equal(back.one_minus_gamma, omg)
    back.set_timesteps(5)
    assert back.table.fingerprint() == ana.table.fingerprint()
    assert ana.table.fingerprint() == coefficient_table(SCHED, adpm.even_trajectory(N, 5), "analytic-ddpm",
                                                        one_minus_gamma=omg).fingerprint()
    # a statistic the method does not use is kept, so from_config can switch methods
    both = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma.gamma, residual=gamma.residual,
                                              method="analytic-ddpm", trajectory=TRAJ)
    switched = AnalyticDPMScheduler.from_config(both.config, method="residual-ddpm")
    assert switched.table.fingerprint() == coefficient_table(SCHED, TRAJ, "residual-ddpm",
                                                             residual=gamma.residual).fingerprint()


def test_residual_errors(gamma):
    old = adpm.GammaEstimate(gamma=gamma.gamma, stderr=gamma.stderr, num_samples=gamma.num_samples,
                             timesteps=gamma.timesteps, config={})  # a file from before R existed
    with pytest.raises(ValueError, match=r"method 'residual-ddpm' needs residual, R_n = E‖ε − ε̂_n\(x_n\)‖²/d of shape "
                                         r"\(N\+1,\) = \(101,\).*GammaEstimate.residual"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="residual-ddpm")
    with pytest.raises(ValueError, match="needs residual"):
        AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma.gamma, method="residual-ddim")  # a Γ array is not R
    with pytest.raises(ValueError, match=r"GammaEstimate passed as gamma, but that estimate has no 'residual'.*"
                                         r"Rerun estimate_gamma"):
        AnalyticDPMScheduler.from_schedule(SCHED, gamma=old, method="residual-ddpm")
    with pytest.raises(ValueError, match=r"GammaEstimate passed for residual has no 'residual'"):
        AnalyticDPMScheduler.from_schedule(SCHED, residual=old, method="residual-ddpm")
    with pytest.raises(ValueError, match=r"residual R_n = .* must be >= 0; got \[-0\.001\].* at n = \[5\].*not the "
                                         r"control-variate"):
        AnalyticDPMScheduler.from_schedule(SCHED, residual=np.r_[np.zeros(5), -1e-3, np.ones(95)],
                                           method="residual-ddpm")
    with pytest.raises(ValueError, match=r"residual must have shape \(N\+1,\) = \(101,\)"):
        AnalyticDPMScheduler.from_schedule(SCHED, residual=np.ones(100), method="residual-ddpm")
    with pytest.raises(TypeError, match="residual must be an array"):
        AnalyticDPMScheduler.from_schedule(SCHED, residual="R.npy", method="residual-ddpm")
    with pytest.raises(ValueError, match="got both gamma and one_minus_gamma"):
        AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, one_minus_gamma=gamma.one_minus_gamma)
    with pytest.raises(ValueError, match="needs gamma.*A residual was given: .*pick method='residual-ddpm'"):
        AnalyticDPMScheduler.from_schedule(SCHED, residual=gamma.residual, method="analytic-ddpm")
    with pytest.raises(ValueError, match="eta applies to the DDIM family only"):
        AnalyticDPMScheduler.from_schedule(SCHED, residual=gamma.residual, method="residual-ddpm", eta=0.5)
    R = np.array(gamma.residual)
    R[int(TRAJ[2])] = np.nan  # not estimated at a timestep the trajectory uses
    sched = AnalyticDPMScheduler.from_schedule(SCHED, residual=R, method="residual-ddpm")
    with pytest.raises(ValueError, match=rf"residual must be finite at every timestep .* n = \[{TRAJ[2]}\]"):
        sched.set_trajectory(TRAJ)


def test_ddpm_pipeline_runs_with_the_scheduler(unet, gamma):
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddpm")
    pipe = DDPMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=3, generator=torch.Generator().manual_seed(5), num_inference_steps=5,
                  output_type="np").images
    np.testing.assert_array_equal(sched.trajectory, adpm.even_trajectory(N, 5))
    gen = torch.Generator().manual_seed(5)
    x = _diffusers_loop(unet, sched, torch.randn((3, *SHAPE), generator=gen), generator=gen)
    np.testing.assert_allclose(images, (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-6)
    assert images.shape == (3, 8, 8, 1)


def test_timestep_convention_and_add_noise():
    sched = AnalyticDPMScheduler.from_schedule(SCHED, method="ddpm-small", num_inference_steps=10)
    TRAJ_10 = adpm.even_trajectory(N, 10)[1:][::-1] - 1
    np.testing.assert_array_equal(sched.timesteps.numpy(), TRAJ_10)
    assert sched.timesteps[-1] == 0 and sched.timesteps[0] == N - 1 and len(sched) == N
    assert sched.previous_timestep(int(TRAJ_10[0])) == int(TRAJ_10[1]) and sched.previous_timestep(0) == -1
    # diffusers' alphas_cumprod[t] is the paper's ᾱ_{t+1}
    np.testing.assert_allclose(sched.alphas_cumprod.numpy(), SCHED.alpha_bar[1:].astype(np.float32))
    x0 = torch.rand((4, *SHAPE)) * 2 - 1
    eps = torch.randn((4, *SHAPE))
    t = torch.tensor([0, 10, 50, 99])
    want = (np.sqrt(SCHED.alpha_bar[t.numpy() + 1])[:, None, None, None] * x0.double().numpy()
            + np.sqrt(SCHED.beta_bar[t.numpy() + 1])[:, None, None, None] * eps.double().numpy())
    np.testing.assert_allclose(sched.add_noise(x0, eps, t).numpy(), want, rtol=1e-5, atol=1e-6)
    ref = DDPMScheduler(num_train_timesteps=N, trained_betas=SCHED.beta[1:].tolist())
    torch.testing.assert_close(sched.add_noise(x0, eps, t), ref.add_noise(x0, eps, t), rtol=1e-5, atol=1e-5)
    # custom diffusers-style timesteps (decreasing, 0-based)
    sched.set_timesteps(timesteps=[99, 49, 0])
    np.testing.assert_array_equal(sched.trajectory, [0, 1, 50, 100])
    assert sched.scale_model_input(x0, 5) is x0 and sched.init_noise_sigma == 1.0


def test_config_round_trip(tmp_path, unet, gamma):
    g = np.array(gamma.gamma)
    g[7] = np.nan  # not estimated: saved as null
    traj = np.asarray(adpm.optimal_trajectory(SCHED, gamma, 5))
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=g, method="analytic-ddim", eta=0.2, trajectory=traj,
                                               clip_sigma_pixel=2.0)
    sched.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert cfg["_class_name"] == "AnalyticDPMScheduler" and cfg["gamma"][7] is None
    assert cfg["trajectory"] == traj.tolist() and cfg["method"] == "analytic-ddim"
    back = AnalyticDPMScheduler.from_pretrained(tmp_path)
    np.testing.assert_array_equal(back.gamma, g)
    np.testing.assert_array_equal(back.schedule.alpha_bar, SCHED.alpha_bar)
    np.testing.assert_array_equal(back.trajectory, traj)
    assert back.table.fingerprint() == sched.table.fingerprint()
    back.set_timesteps(5)  # K of the fixed trajectory: accepted
    with pytest.raises(ValueError, match="fixed trajectory with K = 5 steps"):
        back.set_timesteps(7)


def test_from_diffusers_config_uses_diffusers_betas():
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    g = np.full(1001, 0.3)
    sched = AnalyticDPMScheduler.from_config(ddpm.config, gamma=g, method="analytic-ddpm")
    np.testing.assert_array_equal(sched.schedule.beta[1:], ddpm.betas.double().numpy())
    torch.testing.assert_close(sched.alphas_cumprod, ddpm.alphas_cumprod, rtol=1e-6, atol=1e-7)
    cos = AnalyticDPMScheduler.from_config(DDIMScheduler(beta_schedule="squaredcos_cap_v2").config, method="ddim")
    np.testing.assert_array_equal(cos.schedule.beta[1:],
                                  DDIMScheduler(beta_schedule="squaredcos_cap_v2").betas.double().numpy())


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_prediction_types(unet, gamma, prediction_type):
    """An x_0- or v-predicting model converted to ε gives the ε-model's step."""
    base = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddpm", trajectory=TRAJ)
    other = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddpm", trajectory=TRAJ,
                                               prediction_type=prediction_type)
    t = int(base.timesteps[2])
    n = t + 1
    x = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eps = unet(x, torch.tensor(t)).sample
    sab, sbb = float(np.sqrt(SCHED.alpha_bar[n])), float(np.sqrt(SCHED.beta_bar[n]))
    out = (x - sbb * eps) / sab if prediction_type == "sample" else (eps - sbb * x) / sab  # x̂_0 or v̂
    z = torch.randn_like(x)
    torch.testing.assert_close(other.step(out, t, x, variance_noise=z).prev_sample,
                               base.step(eps, t, x, variance_noise=z).prev_sample, rtol=1e-4, atol=1e-5)


def test_errors(gamma):
    with pytest.raises(ValueError, match="method 'analytic-ddpm' needs gamma"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="analytic-ddpm")
    with pytest.raises(ValueError, match=r"method must be one of"):
        AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic")
    with pytest.raises(ValueError, match=r"gamma must have shape \(N\+1,\) = \(101,\)"):
        AnalyticDPMScheduler.from_schedule(SCHED, gamma=np.zeros(100), method="analytic-ddpm")
    with pytest.raises(ValueError, match="eta applies to the DDIM family only"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="ddpm-small", eta=0.5)
    with pytest.raises(ValueError, match="clip_sample=True clamps"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", data_range=None)
    sched = AnalyticDPMScheduler.from_schedule(SCHED, method="ddim")
    x = torch.zeros((1, *SHAPE))
    assert sched.step(x, 99, x).prev_sample.shape == x.shape  # before set_timesteps: the full trajectory
    g = np.array(gamma.gamma)
    g[7] = np.nan
    partial = AnalyticDPMScheduler.from_schedule(SCHED, gamma=g, method="analytic-ddpm")
    with pytest.raises(ValueError, match=r"step\(\) before set_timesteps runs the constructor's timesteps 99, …, 0.*"
                                         r"Call set_timesteps"):
        partial.step(x, 99, x)
    sched.set_timesteps(4)
    with pytest.raises(ValueError, match="timestep 50 is not on the current trajectory"):
        sched.step(x, 50, x)
    with pytest.raises(ValueError, match="strictly decreasing diffusers timesteps"):
        sched.set_timesteps(timesteps=[0, 50])
    with pytest.raises(ValueError, match="model_output must have the shape of sample"):
        sched.step(torch.zeros((1, 3, 8, 8)), 99, x)
    noise = SeededNoise(seed=0, num_samples=1, shape=SHAPE)
    with pytest.raises(ValueError, match=r"draw\(\) before initial\(\)"):
        noise.draw()


def test_core_imports_without_diffusers():
    code = ("import sys, analytic_dpm, analytic_dpm.integrations, analytic_dpm.distributed; "
            "assert 'diffusers' not in sys.modules, 'diffusers was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_missing_diffusers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    monkeypatch.delitem(sys.modules, "analytic_dpm.integrations.diffusers_scheduler")
    with pytest.raises(ImportError, match=r"pip install analytic-dpm\[diffusers\]"):
        importlib.import_module("analytic_dpm.integrations.diffusers_scheduler")


def test_benchmark_smoke(tmp_path):
    """benchmarks/bench_gpu_sampling.py end to end at tiny size on the CPU (K = 2, batch 2, one timed run)."""
    spec = importlib.util.spec_from_file_location("bench_gpu_sampling", ROOT / "benchmarks" / "bench_gpu_sampling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--size", "tiny", "--K", "2", "--batch", "2", "--repeats", "1",
                       "--json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    impls = {r["impl"] for r in res["rows"]}
    assert impls == {"analytic_dpm.sample", "analytic_dpm.sample, noise='device'", "diffusers DDIMPipeline",
                     "diffusers + AnalyticDPMScheduler"}
    assert len(res["rows"]) == 5 and all(r["images_per_s"] > 0 and r["K"] == 2 for r in res["rows"])
    assert all(r["overhead_ms_per_step_null_net"] > 0 for r in res["rows"])
    assert bench.SIZES["cifar10"]["block_out_channels"] == (128, 256, 256, 256)
    assert res["check_scheduler_vs_sample_max_abs_diff"] < 1e-5


def test_ddim_eps_option_reaches_the_table_and_the_config(tmp_path):
    import analytic_dpm as adpm
    from analytic_dpm.integrations import AnalyticDPMScheduler
    from analytic_dpm.sampling import coefficient_table, reverse_step

    s = adpm.Schedule.linear(100)
    traj = adpm.even_trajectory(100, 5)
    sched = AnalyticDPMScheduler.from_schedule(s, method="ddim", trajectory=traj, ddim_eps="consistent")
    assert sched.table.ddim_eps == "consistent"
    assert sched.table.fingerprint() == coefficient_table(s, traj, "ddim", ddim_eps="consistent").fingerprint()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64) * 3
    e = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    t = int(traj[3]) - 1
    out = sched.step(e, t, x).prev_sample
    torch.testing.assert_close(out, reverse_step(sched.table, 3, x, e, clip_x0=True))
    raw = AnalyticDPMScheduler.from_schedule(s, method="ddim", trajectory=traj)
    assert not torch.allclose(raw.step(e, t, x).prev_sample, out)
    sched.save_pretrained(tmp_path)
    assert AnalyticDPMScheduler.from_pretrained(tmp_path).config.ddim_eps == "consistent"
    with pytest.raises(ValueError, match="ddim_eps must be one of"):
        AnalyticDPMScheduler.from_schedule(s, method="ddim", trajectory=traj, ddim_eps="clipped")


# ---------------------------------------------------------------------------------------------------- diffusers compat
def test_step_before_set_timesteps_runs_the_constructor_timesteps(unet):
    """The constructor's timesteps N−1..0 are the full trajectory [0, 1, …, N]; step() works on them at once."""
    sched = AnalyticDPMScheduler.from_schedule(SCHED, method="ddpm-small")
    assert sched.table is None and sched.num_inference_steps is None
    np.testing.assert_array_equal(sched.timesteps.numpy(), np.arange(N - 1, -1, -1))
    ref = AnalyticDPMScheduler.from_schedule(SCHED, method="ddpm-small", trajectory=np.arange(N + 1))
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, *SHAPE), generator=g)
    z = torch.randn((2, *SHAPE), generator=g)
    for t in (N - 1, 50, 0):
        e = torch.randn((2, *SHAPE), generator=g)
        torch.testing.assert_close(sched.step(e, t, x, variance_noise=z).prev_sample,
                                   ref.step(e, t, x, variance_noise=z).prev_sample, rtol=0, atol=0)
    np.testing.assert_array_equal(sched.trajectory, np.arange(N + 1))
    np.testing.assert_array_equal(sched.timesteps.numpy(), np.arange(N - 1, -1, -1))  # unchanged
    assert sched.num_inference_steps is None
    # previous_timestep before set_timesteps: t − 1, like DDPMScheduler's
    fresh = AnalyticDPMScheduler.from_schedule(SCHED, method="ddpm-small")
    assert int(fresh.previous_timestep(57)) == int(DDPMScheduler(num_train_timesteps=N).previous_timestep(57)) == 56
    # a whole loop without set_timesteps
    full = AnalyticDPMScheduler.from_schedule(SCHED, method="ddim")
    out = _diffusers_loop(unet, full, torch.randn((1, *SHAPE), generator=g))
    assert torch.isfinite(out).all()


def test_previous_timestep_is_a_tensor_like_ddpm_scheduler():
    sched = AnalyticDPMScheduler.from_schedule(SCHED, method="ddpm-small")
    ref = DDPMScheduler(num_train_timesteps=N, timestep_spacing="trailing")
    sched.set_timesteps(timesteps=[99, 66, 33, 0])
    ref.set_timesteps(timesteps=[99, 66, 33, 0])
    for t in [99, 66, 33, 0]:
        for arg in (t, torch.tensor(t)):
            got, want = sched.previous_timestep(arg), ref.previous_timestep(torch.tensor(t))
            assert isinstance(got, torch.Tensor) and got.dtype == torch.int64 and got.ndim == 0
            assert int(got) == int(want) and got == int(want)
    assert int(sched.previous_timestep(0)) == -1
    assert sched.previous_timestep(sched.timesteps[1]).device == sched.timesteps.device


@pytest.mark.parametrize("method", ["ddim", "analytic-ddim", "residual-ddim"])
def test_step_eta_and_use_clipped_model_output(gamma, method):
    """step(eta=, use_clipped_model_output=) as DDIMScheduler.step: another η rebuilds the table for it, True is
    ddim_eps='consistent' for that step."""
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method=method, eta=0.0, trajectory=TRAJ)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, *SHAPE), generator=g) * 2
    e = torch.randn((2, *SHAPE), generator=g)
    z = torch.randn((2, *SHAPE), generator=g)
    t = int(TRAJ[4]) - 1
    base = sched.step(e, t, x, variance_noise=z).prev_sample
    torch.testing.assert_close(sched.step(e, t, x, variance_noise=z, eta=0.0).prev_sample, base, rtol=0, atol=0)
    for eta in (0.3, 1.0):
        other = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method=method, eta=eta, trajectory=TRAJ)
        want = other.step(e, t, x, variance_noise=z).prev_sample
        torch.testing.assert_close(sched.step(e, t, x, variance_noise=z, eta=eta).prev_sample, want, rtol=0, atol=0)
        assert not torch.allclose(want, base)
    assert sched.table.eta == 0.0  # the configured table is unchanged
    cons = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method=method, trajectory=TRAJ,
                                              ddim_eps="consistent")
    got = sched.step(e, t, x, variance_noise=z, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(got, cons.step(e, t, x, variance_noise=z).prev_sample, rtol=0, atol=0)
    assert not torch.allclose(got, base)
    torch.testing.assert_close(cons.step(e, t, x, variance_noise=z, use_clipped_model_output=False).prev_sample,
                               base, rtol=0, atol=0)
    with pytest.raises(TypeError, match="use_clipped_model_output must be True, False or None"):
        sched.step(e, t, x, use_clipped_model_output="yes")


def test_step_eta_for_ddpm_family(gamma):
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddpm", trajectory=TRAJ)
    x = torch.randn((1, *SHAPE))
    t = int(TRAJ[3]) - 1
    z = torch.randn_like(x)
    base = sched.step(x, t, x, variance_noise=z).prev_sample
    torch.testing.assert_close(sched.step(x, t, x, variance_noise=z, eta=0.0, use_clipped_model_output=True)
                               .prev_sample, base, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"step\(eta=0.5\) applies to the DDIM family only.*'analytic-ddpm'"):
        sched.step(x, t, x, eta=0.5)


def test_ddim_pipeline_with_the_scheduler_assigned_after_construction(unet, gamma):
    """DDIMPipeline.__init__ converts any scheduler to a DDIMScheduler; assigning ours afterwards runs ours."""
    from diffusers import DDIMPipeline

    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddim", eta=0.5)
    pipe = DDIMPipeline(unet=unet, scheduler=sched)
    assert type(pipe.scheduler) is DDIMScheduler  # the documented conversion
    pipe.scheduler = sched
    assert pipe.scheduler is sched
    pipe.set_progress_bar_config(disable=True)
    for eta in (0.0, 0.5):
        images = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=3, eta=eta,
                      output_type="np").images
        np.testing.assert_array_equal(sched.trajectory, adpm.even_trajectory(N, 3))
        gen = torch.Generator().manual_seed(3)
        x = torch.randn((2, *SHAPE), generator=gen)
        with torch.no_grad():
            for t in sched.timesteps:
                x = sched.step(unet(x, t).sample, t, x, eta=eta, generator=gen).prev_sample
        np.testing.assert_allclose(images, (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-6)
    # with a DDPM-family method, DDIMPipeline's default eta=0.0 is accepted
    pipe.scheduler = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddpm")
    assert pipe(batch_size=1, num_inference_steps=2, output_type="np").images.shape == (1, 8, 8, 1)


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
@pytest.mark.parametrize("ref_cls", [DDPMScheduler, DDIMScheduler])
def test_timestep_spacing_matches_diffusers(spacing, ref_cls):
    for n_train, offset in ((N, 0), (N, 1), (1000, 1)):
        kw = dict(num_train_timesteps=n_train, timestep_spacing=spacing, steps_offset=offset)
        ref = ref_cls(**kw)
        ours = AnalyticDPMScheduler.from_config(ref.config, method="ddim")
        assert ours.config.timestep_spacing == spacing and ours.config.steps_offset == offset
        for K in (1, 3, 7, 10, 50, n_train // 2):
            ref.set_timesteps(K)
            ours.set_timesteps(K)
            np.testing.assert_array_equal(ours.timesteps.numpy(), ref.timesteps.numpy())
            assert ours.num_inference_steps == K


def test_timestep_spacing_library_values_and_default():
    # the library's spacings by name, and None (default) deferring to trajectory_type
    for name, fn in (("even", adpm.even_trajectory), ("quadratic", adpm.quadratic_trajectory)):
        s = AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", timestep_spacing=name)
        s.set_timesteps(8)
        np.testing.assert_array_equal(s.trajectory, fn(N, 8))
    s = AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", trajectory_type="ddim-stride")
    s.set_timesteps(8)
    np.testing.assert_array_equal(s.trajectory, adpm.ddim_stride_trajectory(N, 8))
    # a default DDPMScheduler config carries no explicit timestep_spacing (diffusers' _use_default_values)
    assert "timestep_spacing" not in AnalyticDPMScheduler.from_config(DDPMScheduler(num_train_timesteps=N).config,
                                                                      method="ddim").config
    # a library spacing given as timestep_spacing is stored as trajectory_type (diffusers never reads it)
    lib = AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", timestep_spacing="quadratic")
    assert lib.config.trajectory_type == "quadratic" and "timestep_spacing" not in lib.config
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", timestep_spacing="uniform")
    with pytest.raises(ValueError, match=r"timestep_spacing='leading' with steps_offset=1 gives timestep 100 at "
                                         r"K = 100, beyond N−1 = 99"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", timestep_spacing="leading",
                                           steps_offset=1).set_timesteps(N)
    with pytest.raises(ValueError, match="cannot exceed num_train_timesteps"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", timestep_spacing="leading").set_timesteps(N + 1)
    # round trip of the new options
    s = AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", timestep_spacing="leading", steps_offset=1)
    back = AnalyticDPMScheduler.from_config(s.config)
    back.set_timesteps(10)
    np.testing.assert_array_equal(back.timesteps.numpy(), np.arange(91, 0, -10))


def test_clip_sample_range():
    ref = DDPMScheduler(num_train_timesteps=N, clip_sample_range=2.0)
    sched = AnalyticDPMScheduler.from_config(ref.config, method="ddim")
    assert sched.config.data_range == [-2.0, 2.0] and sched.config.clip_sample_range == 2.0
    sched.set_timesteps(5)
    t = int(sched.timesteps[0])
    x = torch.full((1, *SHAPE), 50.0)
    e = torch.zeros((1, *SHAPE))
    x0 = sched.step(e, t, x).pred_original_sample
    assert float(x0.max()) == 2.0
    ref.set_timesteps(timesteps=sched.timesteps.tolist())
    torch.testing.assert_close(x0, ref.step(e, t, x).pred_original_sample)
    assert sched.table.data_range == (-2.0, 2.0) or tuple(sched.table.data_range) == (-2.0, 2.0)
    back = AnalyticDPMScheduler.from_config(sched.config)
    assert back.config.data_range == [-2.0, 2.0]
    with pytest.raises(ValueError, match=r"clip_sample_range = 2.0 sets data_range = \(-2.0, 2.0\), but data_range"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", clip_sample_range=2.0, data_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="clip_sample_range must be > 0"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", clip_sample_range=0.0)


def test_rescale_betas_zero_snr():
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    from analytic_dpm.integrations.diffusers_scheduler import _rescale_zero_terminal_snr

    b = SCHED.beta[1:]
    ours = _rescale_zero_terminal_snr(b)
    want = rescale_zero_terminal_snr(torch.from_numpy(np.array(b))).numpy()
    np.testing.assert_allclose(ours, want, rtol=1e-12, atol=1e-15)
    assert ours[-1] == 1.0  # ᾱ_N = 0 exactly in float64
    ref = DDPMScheduler(num_train_timesteps=N, rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match=r"rescale_betas_zero_snr=True .* ᾱ_N = 0 .* cannot be used"):
        AnalyticDPMScheduler.from_config(ref.config, method="ddim")
    assert AnalyticDPMScheduler.from_config(ref.config, method="ddim",
                                            rescale_betas_zero_snr=False).schedule.N == N


@pytest.mark.parametrize("option,value", [("thresholding", True), ("dynamic_thresholding_ratio", 0.9),
                                          ("sample_max_value", 2.0), ("set_alpha_to_one", False),
                                          ("variance_type", "fixed_large")])
def test_ignored_diffusers_options_warn(option, value):
    cls = DDIMScheduler if option == "set_alpha_to_one" else DDPMScheduler
    ref = cls(num_train_timesteps=N, **{option: value})
    with pytest.warns(UserWarning, match=rf"ignores the diffusers option {option}={value!r}"):
        sched = AnalyticDPMScheduler.from_config(ref.config, method="ddim")
    assert sched.config[option] == value


def test_harmless_diffusers_options_do_not_warn():
    import warnings

    cfg = dict(DDPMScheduler(num_train_timesteps=N, thresholding=False, variance_type="fixed_small").config)
    cfg.pop("variance_type")  # fixed_small is still ignored (the method picks the variance): see the next check
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AnalyticDPMScheduler.from_config(cfg, method="ddim")
        AnalyticDPMScheduler.from_config(DDIMScheduler(num_train_timesteps=N, set_alpha_to_one=True).config,
                                         method="ddim")
    with pytest.warns(UserWarning, match="variance_type='fixed_small'.*comes from `method`"):
        AnalyticDPMScheduler.from_config(DDPMScheduler(num_train_timesteps=N, variance_type="fixed_small").config,
                                         method="ddim")


def test_saved_pipeline_loads_in_a_fresh_process(tmp_path, unet, gamma):
    """diffusers resolves a non-diffusers class from sys.modules only: with the one documented import line a fresh
    process loads the pipeline with our scheduler; without it, diffusers' ValueError names the module to import."""
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddpm")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["scheduler"] == ["analytic_dpm.integrations.diffusers_scheduler", "AnalyticDPMScheduler"]
    load = f"from diffusers import DDPMPipeline; pipe = DDPMPipeline.from_pretrained({str(tmp_path / 'pipe')!r}); "
    code = ("import sys; import analytic_dpm.integrations.diffusers_scheduler; " + load +
            "s = pipe.scheduler; assert type(s).__name__ == 'AnalyticDPMScheduler', type(s); "
            "s.set_timesteps(4); print(s.table.fingerprint())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    sched.set_timesteps(4)
    assert out.stdout.strip().splitlines()[-1] == sched.table.fingerprint()
    bare = subprocess.run([sys.executable, "-c", load], cwd=ROOT, capture_output=True, text=True)
    assert bare.returncode != 0
    assert "import analytic_dpm.integrations.diffusers_scheduler before calling `from_pretrained`" in bare.stderr


def test_seeded_noise_as_pipeline_generator_fails_clearly(unet, gamma):
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddpm")
    pipe = DDPMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(TypeError, match=r"(?s)randn\(\) received an invalid combination of arguments.*"
                                        r"generator=SeededNoise.*torch\.Generator generator"):
        pipe(batch_size=2, num_inference_steps=3, generator=SeededNoise(seed=0, num_samples=2, shape=SHAPE))


@pytest.mark.parametrize("method", ["analytic-ddpm", "analytic-ddim", "residual-ddpm", "residual-ddim"])
def test_optimal_timestep_spacing(unet, gamma, method):
    """timestep_spacing='optimal' (or trajectory_type): Theorem 3's DP at set_timesteps(K), from Γ or from R."""
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method=method, timestep_spacing="optimal")
    for K in (4, 6):
        if method.startswith("residual"):
            want = adpm.optimal_trajectory(SCHED, None, K, residual=gamma.residual)
        else:
            want = adpm.optimal_trajectory(SCHED, gamma.gamma, K)
        pipe = DDPMPipeline(unet=unet, scheduler=sched)
        pipe.set_progress_bar_config(disable=True)
        pipe(batch_size=1, num_inference_steps=K, output_type="np")
        np.testing.assert_array_equal(sched.trajectory, np.asarray(want))
    via_type = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method=method, trajectory_type="optimal",
                                                  num_inference_steps=6)
    np.testing.assert_array_equal(via_type.trajectory, sched._optimal_trajectory(6))


def test_optimal_timestep_spacing_errors(gamma):
    with pytest.raises(ValueError, match="'optimal' runs Theorem 3's DP, which needs gamma"):
        AnalyticDPMScheduler.from_schedule(SCHED, method="ddim", timestep_spacing="optimal").set_timesteps(5)
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="ddim", timestep_spacing="optimal")
    sched.set_timesteps(5)  # a baseline with Γ given: the DP from Γ
    np.testing.assert_array_equal(sched.trajectory, np.asarray(adpm.optimal_trajectory(SCHED, gamma.gamma, 5)))
    with pytest.raises(ValueError, match="needs K >= 2"):
        sched.set_timesteps(1)
    g = np.array(gamma.gamma)
    g[7] = np.nan
    with pytest.raises(ValueError, match=r"needs gamma Γ at every n = 1..N = 100; .* n = \[7\]"):
        AnalyticDPMScheduler.from_schedule(SCHED, gamma=g, method="analytic-ddpm",
                                           timestep_spacing="optimal").set_timesteps(5)


def test_scheduler_alone_loads_from_a_saved_pipeline(tmp_path, unet, gamma):
    sched = AnalyticDPMScheduler.from_schedule(SCHED, gamma=gamma, method="analytic-ddim", eta=0.3, trajectory=TRAJ)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path)
    back = AnalyticDPMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert back.table.fingerprint() == sched.table.fingerprint()
