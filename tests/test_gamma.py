"""Tests for analytic_dpm.gamma: the Monte Carlo estimate of Γ_n = E‖ε̂_n(x_n)‖²/d (paper eqs. 8–9).

Oracle: isotropic Gaussian data x_0 ~ N(μ, v·I) in d dimensions (built here, independent of the toy package). Then
q_n = N(√ᾱ_n μ, (ᾱ_n v + β̄_n) I), the exact noise predictor is ε*_n(x) = √β̄_n (x − √ᾱ_n μ)/(ᾱ_n v + β̄_n), and each
coordinate of ε*_n(x_n) is N(0, Γ_n) with Γ_n = β̄_n/(ᾱ_n v + β̄_n). So ‖ε*_n‖²/d = Γ_n χ²_d/d: the per-sample
standard deviation is Γ_n √(2/d) and the estimate's standard error is Γ_n √(2/d)/√M exactly.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

import analytic_dpm.gamma as gamma_mod
from analytic_dpm.gamma import (
    CHUNK_SIZE,
    GammaEstimate,
    estimate_gamma,
    gamma_from_mean_sq_score,
    mean_sq_score_from_gamma,
)
from analytic_dpm.schedules import Schedule

SCHED = Schedule.cosine(100)
N = SCHED.N


class IsoGaussian:
    """x_0 ~ N(μ, v·I) with a per-coordinate mean μ, sample shape (2, 3) (d = 6)."""

    def __init__(self, var: float = 0.5, shape=(2, 3)):
        self.var = var
        self.shape = shape
        self.dim = math.prod(shape)
        self.mean = np.linspace(-0.6, 0.4, self.dim).reshape(shape)

    def sample(self, num, seed):
        rng = np.random.default_rng(seed)
        return self.mean + math.sqrt(self.var) * rng.standard_normal((num, *self.shape))

    def gamma(self, schedule):
        """Exact Γ_n = β̄_n/(ᾱ_n v + β̄_n), index 0 = 0."""
        return schedule.beta_bar / (schedule.alpha_bar * self.var + schedule.beta_bar)

    def eps_model(self, schedule, calls=None):
        """The exact ε*_n, for numpy arrays and torch tensors; appends (type, dtype, batch) to ``calls``."""

        def model(x, n):
            if calls is not None:
                calls.append((type(x), x.dtype, x.shape[0]))
            ab, bb = float(schedule.alpha_bar[n]), float(schedule.beta_bar[n])
            mu = self.mean if isinstance(x, np.ndarray) else torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
            return (x - math.sqrt(ab) * mu) * (math.sqrt(bb) / (ab * self.var + bb))

        return model


TOY = IsoGaussian()
MODEL = TOY.eps_model(SCHED)
DATA = TOY.sample(300, seed=123)  # 300 = 2 full chunks of 128 and a partial one of 44
assert CHUNK_SIZE == 128  # the sizes above are chosen to cross chunk boundaries


def _equal(a: GammaEstimate, b: GammaEstimate):
    np.testing.assert_array_equal(a.gamma, b.gamma)
    np.testing.assert_array_equal(a.stderr, b.stderr)
    np.testing.assert_array_equal(a.timesteps, b.timesteps)
    assert a.num_samples == b.num_samples


# ---------------------------------------------------------------------------------------------------- accuracy
def test_estimate_matches_exact_gamma_within_3_standard_errors():
    ts = [1, 2, 10, 50, 90, 100]
    M = 2000
    est = estimate_gamma(MODEL, SCHED, TOY, timesteps=ts, num_samples=M, seed=7, progress=False)
    exact = TOY.gamma(SCHED)
    z = (est.gamma[ts] - exact[ts]) / est.stderr[ts]
    assert np.all(np.abs(z) < 3.0), z
    # the reported standard error agrees with the exact one, Γ√(2/d)/√M (its own relative spread here is ≈ 2 %)
    theory = exact[ts] * math.sqrt(2.0 / TOY.dim) / math.sqrt(M)
    np.testing.assert_allclose(est.stderr[ts], theory, rtol=0.10)


def test_monte_carlo_error_falls_as_inverse_sqrt_M_and_stderr_matches_spread():
    """Slope of log RMS error vs log M is −1/2; the reported stderr matches the observed spread.

    Errors are normalised by the exact per-sample sd Γ_n√(2/d) and pooled over 4 timesteps × 40 seeds (independent
    data and noise per replicate), so the RMS at each M has ≈ 6 % relative error and the fitted slope ≈ 0.03.
    """
    Ms = np.array([64, 128, 256, 1024])
    ts = [2, 10, 50, 100]
    exact = TOY.gamma(SCHED)
    rms, ratio = [], []
    for M in Ms:
        err, se = [], []
        for j, n in enumerate(ts):
            for r in range(40):
                est = estimate_gamma(MODEL, SCHED, TOY, timesteps=[n], num_samples=int(M),
                                     seed=10_000 * int(M) + 100 * j + r, progress=False)
                unit = exact[n] * math.sqrt(2.0 / TOY.dim)
                err.append((est.gamma[n] - exact[n]) / unit)
                se.append(est.stderr[n] / unit)
        err, se = np.array(err), np.array(se)
        rms.append(math.sqrt(np.mean(err**2)))
        ratio.append(math.sqrt(np.mean(se**2)) / rms[-1])
    slope = np.polyfit(np.log(Ms), np.log(rms), 1)[0]
    assert abs(slope + 0.5) < 0.15, (slope, rms)
    # absolute level: RMS error ≈ 1/√M in these units (tolerance ≈ 4 of its standard errors)
    np.testing.assert_allclose(np.array(rms) * np.sqrt(Ms), 1.0, rtol=0.25)
    # reported stderr vs observed spread of the estimates
    np.testing.assert_allclose(ratio, 1.0, rtol=0.25)


def test_estimator_formula_and_fresh_noise_per_timestep():
    """With x_0 = 0, x_n = √β̄_n ε, so a model returning x/√β̄_n hands back the noise ε itself.

    Checks (i) Γ̂ and stderr are the sample mean and std/√M of the recorded ‖ε̂‖²/d, (ii) each x_n is formed
    as √ᾱ_n x_0 + √β̄_n ε with ε ~ N(0, I), and (iii) every timestep draws fresh noise.
    """
    ts = [2, 30, 100]
    seen = {}

    def model(x, n):
        eps = x / math.sqrt(SCHED.beta_bar[n])
        seen.setdefault(n, []).append(eps.copy())
        return eps

    zeros = np.zeros((300, 2, 3))
    est = estimate_gamma(model, SCHED, zeros, timesteps=ts, batch_size=50, progress=False)
    noise = {n: np.concatenate(seen[n]).reshape(300, -1) for n in ts}
    for n in ts:
        v = np.sum(noise[n] ** 2, axis=1) / 6
        np.testing.assert_allclose(est.gamma[n], v.mean(), rtol=1e-13)
        np.testing.assert_allclose(est.stderr[n], v.std(ddof=1) / math.sqrt(300), rtol=1e-12)
        z = noise[n].ravel()  # 1800 standard normals: mean 0 ± 0.024, variance 1 ± 0.033
        assert abs(z.mean()) < 4 / math.sqrt(z.size) and abs(z.var() - 1) < 4 * math.sqrt(2 / z.size)
    for n1, n2 in ((2, 30), (30, 100)):
        corr = np.corrcoef(noise[n1].ravel(), noise[n2].ravel())[0, 1]
        assert abs(corr) < 4 / math.sqrt(noise[n1].size), corr  # independent draws per timestep


# ---------------------------------------------------------------------------------------------------- reproducibility
def test_result_does_not_depend_on_batch_size_numpy():
    ts = [1, 37, 100]
    ref = estimate_gamma(MODEL, SCHED, DATA, timesteps=ts, batch_size=128, progress=False)
    for bs in (1, 7, 129, 1000):
        _equal(estimate_gamma(MODEL, SCHED, DATA, timesteps=ts, batch_size=bs, progress=False), ref)


def test_result_does_not_depend_on_batch_size_torch():
    ts = [5, 60]
    x = torch.from_numpy(DATA)
    ref = estimate_gamma(MODEL, SCHED, x, timesteps=ts, batch_size=256, progress=False)
    for bs in (3, 100, 300):
        other = estimate_gamma(MODEL, SCHED, x, timesteps=ts, batch_size=bs, progress=False)
        np.testing.assert_allclose(other.gamma[ts], ref.gamma[ts], rtol=1e-15, atol=0)
        np.testing.assert_allclose(other.stderr[ts], ref.stderr[ts], rtol=1e-12, atol=0)


def test_numpy_and_torch_agree():
    ts = [1, 20, 100]
    ref = estimate_gamma(MODEL, SCHED, DATA, timesteps=ts, batch_size=64, progress=False)
    assert ref.config["backend"] == "numpy"
    for data, device in ((DATA, "cpu"), (torch.from_numpy(DATA), None)):
        calls = []
        est = estimate_gamma(TOY.eps_model(SCHED, calls), SCHED, data, timesteps=ts, batch_size=64,
                             progress=False, device=device)
        assert {c[:2] for c in calls} == {(torch.Tensor, torch.float64)}
        assert est.config["backend"] == "torch" and est.config["dtype"] == "float64"
        np.testing.assert_allclose(est.gamma, ref.gamma, rtol=1e-12, atol=0)
        np.testing.assert_allclose(est.stderr, ref.stderr, rtol=1e-12, atol=0)
    # float32 data run in float32 torch with the same noise: equal to float32 precision
    calls = []
    est32 = estimate_gamma(TOY.eps_model(SCHED, calls), SCHED, DATA.astype(np.float32), timesteps=ts,
                           batch_size=64, progress=False, device="cpu")
    assert {c[:2] for c in calls} == {(torch.Tensor, torch.float32)}
    assert est32.config["dtype"] == "float32"
    np.testing.assert_allclose(est32.gamma[ts], ref.gamma[ts], rtol=1e-5)


def test_timesteps_subset_is_nan_elsewhere_and_equal_where_asked():
    full = estimate_gamma(MODEL, SCHED, DATA, progress=False)
    assert np.all(np.isfinite(full.gamma)) and full.gamma[0] == 0.0
    np.testing.assert_array_equal(full.timesteps, np.arange(1, N + 1))
    sub = estimate_gamma(MODEL, SCHED, DATA, timesteps=[100, 7, 50], progress=False)
    ts = [7, 50, 100]
    np.testing.assert_array_equal(sub.timesteps, ts)
    np.testing.assert_array_equal(sub.gamma[ts], full.gamma[ts])
    np.testing.assert_array_equal(sub.stderr[ts], full.stderr[ts])
    rest = np.setdiff1d(np.arange(1, N + 1), ts)
    assert np.all(np.isnan(sub.gamma[rest])) and np.all(np.isnan(sub.stderr[rest]))
    assert sub.gamma[0] == 0.0 and sub.stderr[0] == 0.0


def test_seed_and_num_samples():
    a = estimate_gamma(MODEL, SCHED, DATA, timesteps=[10], seed=0, progress=False)
    b = estimate_gamma(MODEL, SCHED, DATA, timesteps=[10], seed=1, progress=False)
    assert a.gamma[10] != b.gamma[10]
    c = estimate_gamma(MODEL, SCHED, DATA, timesteps=[10], num_samples=200, progress=False)
    assert c.num_samples == 200 and c.config["num_samples"] == 200
    one = estimate_gamma(MODEL, SCHED, DATA, timesteps=[10], num_samples=1, progress=False)
    assert np.isfinite(one.gamma[10]) and np.isnan(one.stderr[10])  # one sample has no spread


# ---------------------------------------------------------------------------------------------------- checkpoints
class Interrupt(RuntimeError):
    pass


def _failing_after(k, model=MODEL):
    calls = [0]

    def m(x, n):
        calls[0] += 1
        if calls[0] > k:
            raise Interrupt(f"simulated crash at call {calls[0]}")
        return model(x, n)

    return m


def _counting(model=MODEL):
    calls = []

    def m(x, n):
        calls.append(n)
        return model(x, n)

    return m, calls


CK_TS = [3, 40, 77, 100]  # with batch_size 50: 6 calls per timestep, 24 in all


@pytest.mark.parametrize("k", [1, 5, 13])
def test_interrupted_run_resumes_bit_identical(tmp_path, k):
    """k successful calls of 50 samples, then a crash: k = 1 finishes no chunk, 5 one chunk, 13 two timesteps."""
    ref = estimate_gamma(MODEL, SCHED, DATA, timesteps=CK_TS, batch_size=50, seed=3, progress=False)
    ck = tmp_path / "gamma.ckpt"
    with pytest.raises(Interrupt):
        estimate_gamma(_failing_after(k), SCHED, DATA, timesteps=CK_TS, batch_size=50, seed=3, progress=False,
                       checkpoint=ck)
    assert ck.exists()
    model, calls = _counting()
    res = estimate_gamma(model, SCHED, DATA, timesteps=CK_TS, batch_size=64, seed=3, progress=False, checkpoint=ck)
    _equal(res, ref)
    per_ts, rem = divmod(k, 6)  # 6 calls of 50 per timestep; chunks end at samples 128, 256, 300
    done = 3 * per_ts + (rem * 50) // CHUNK_SIZE
    assert res.config["resumed_chunks"] == done
    # finished (timestep, chunk) units were not redone: each timestep restarts at its first unfinished chunk
    first_unfinished = [3] * per_ts + [done - 3 * per_ts] + [0] * (len(CK_TS) - per_ts - 1)
    expected_calls = sum(math.ceil(max(0, 300 - c * CHUNK_SIZE) / 64) for c in first_unfinished)
    assert len(calls) == expected_calls


def test_periodic_checkpoint_survives_a_hard_kill(tmp_path, monkeypatch):
    """A snapshot of the checkpoint taken mid-run (as if the process had been killed) resumes exactly."""
    monkeypatch.setattr(gamma_mod, "CHECKPOINT_INTERVAL_S", 0.0)
    ck, snap = tmp_path / "run.ckpt", tmp_path / "snapshot.ckpt"
    count = [0]

    def model(x, n):
        count[0] += 1
        if count[0] == 10 and ck.exists():
            shutil.copyfile(ck, snap)
        return MODEL(x, n)

    ref = estimate_gamma(model, SCHED, DATA, timesteps=CK_TS, batch_size=50, seed=3, progress=False, checkpoint=ck)
    with np.load(snap, allow_pickle=False) as z:
        done = int(z["chunks_done"].sum())
    assert 0 < done < len(CK_TS) * 3  # the snapshot holds partial progress
    res = estimate_gamma(MODEL, SCHED, DATA, timesteps=CK_TS, batch_size=17, seed=3, progress=False, checkpoint=snap)
    _equal(res, ref)
    assert res.config["resumed_chunks"] == done


def test_finished_checkpoint_returns_without_calling_the_model(tmp_path):
    ck = tmp_path / "done.ckpt"
    ref = estimate_gamma(MODEL, SCHED, DATA, timesteps=CK_TS, progress=False, checkpoint=ck)
    again = estimate_gamma(_failing_after(0), SCHED, DATA, timesteps=CK_TS, progress=False, checkpoint=ck)
    _equal(again, ref)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"seed": 1}, "seed"),
        ({"num_samples": 200}, "num_samples"),
        ({"timesteps": [3, 40, 77]}, "timesteps"),
        ({"schedule": Schedule.linear(100)}, "schedule_sha256"),
        ({"data": np.where(np.arange(DATA.size).reshape(DATA.shape) == 5, 0.0, DATA)}, "data_sha256"),
        ({"data": DATA.astype(np.float32), "device": "cpu"}, "compute_dtype"),
    ],
)
def test_checkpoint_from_other_arguments_raises(tmp_path, change, field):
    ck = tmp_path / "c.ckpt"
    args = dict(eps_model=MODEL, schedule=SCHED, data=DATA, timesteps=CK_TS, seed=0, progress=False)
    with pytest.raises(Interrupt):
        estimate_gamma(**{**args, "eps_model": _failing_after(2)}, checkpoint=ck)
    with pytest.raises(ValueError, match=f"written with different arguments.*{field}"):
        estimate_gamma(**{**args, **change}, checkpoint=ck)
    # batch size is not part of the key: resuming with another one is fine
    estimate_gamma(**{**args, "batch_size": 33}, checkpoint=ck)


def test_checkpoint_path_holding_something_else_raises(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint .* not a readable"):
        estimate_gamma(MODEL, SCHED, DATA, timesteps=[1], progress=False, checkpoint=junk)
    with pytest.raises(ValueError, match="checkpoint .* folder .* does not exist"):
        estimate_gamma(MODEL, SCHED, DATA, timesteps=[1], progress=False, checkpoint=tmp_path / "no" / "c.ckpt")
    saved = estimate_gamma(MODEL, SCHED, DATA, timesteps=[1], progress=False).save(tmp_path / "est.npz")
    with pytest.raises(ValueError, match="not a Γ checkpoint.*GammaEstimate.load"):
        estimate_gamma(MODEL, SCHED, DATA, timesteps=[1], progress=False, checkpoint=saved)


# ---------------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    est = estimate_gamma(MODEL, SCHED, TOY, timesteps=[1, 50, 100], num_samples=100, progress=False)
    path = est.save(tmp_path / "gamma_estimate")  # no suffix is added
    assert path == tmp_path / "gamma_estimate" and path.exists()
    back = GammaEstimate.load(path)
    _equal(back, est)
    assert back.config == est.config
    assert back.gamma.dtype == np.float64 and back.timesteps.dtype == np.int64
    with np.load(path, allow_pickle=False) as z:  # plain arrays, no pickled objects
        assert {"gamma", "stderr", "timesteps", "num_samples", "config_json"} <= set(z.files)
    ck = tmp_path / "c.ckpt"
    estimate_gamma(MODEL, SCHED, DATA, timesteps=[1], progress=False, checkpoint=ck)
    with pytest.raises(ValueError, match="checkpoint"):
        GammaEstimate.load(ck)


def test_config_records_the_run():
    est = estimate_gamma(MODEL, SCHED, TOY, timesteps=[4, 8], num_samples=50, batch_size=16, seed=5, progress=False)
    cfg = est.config
    assert cfg["schedule"] == SCHED.to_dict() and cfg["N"] == N and len(cfg["schedule_sha256"]) == 64
    assert (cfg["seed"], cfg["num_samples"], cfg["batch_size"], cfg["timesteps"]) == (5, 50, 16, [4, 8])
    assert cfg["data"]["source"] == "sampler" and cfg["data"]["dtype"] == "float64"
    assert cfg["data_shape"] == [2, 3] and cfg["dim"] == 6
    assert {"python", "numpy"} <= set(cfg["versions"]) and cfg["wall_time_s"] >= 0.0
    assert np.asarray(est) is est.gamma and est.N == N


@pytest.mark.filterwarnings("ignore:gamma lies outside")  # Monte Carlo Γ̂ slightly above 1 near n = N
def test_estimate_feeds_reverse_variances():
    from analytic_dpm.trajectories import even_trajectory
    from analytic_dpm.variance import reverse_variances

    traj = even_trajectory(N, 10)
    est = estimate_gamma(MODEL, SCHED, DATA, timesteps=traj[1:], progress=False)
    rv = reverse_variances(SCHED, traj, "analytic-ddpm", gamma=est.gamma)
    exact = reverse_variances(SCHED, traj, "analytic-ddpm", gamma=TOY.gamma(SCHED))
    np.testing.assert_allclose(rv.sigma_sq, exact.sigma_sq, rtol=0.2)


def test_progress_bar(capsys):
    estimate_gamma(MODEL, SCHED, DATA, timesteps=[1, 2], batch_size=100, progress=True)
    err = capsys.readouterr().err
    assert "6/6" in err  # total = model calls: 2 timesteps × ⌈300/100⌉
    estimate_gamma(MODEL, SCHED, DATA, timesteps=[1, 2], batch_size=100, progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------------- conversions
def test_score_form_conversions():
    ab, bb = SCHED.alpha_bar, SCHED.beta_bar
    mean_sq_score = np.zeros(N + 1)
    mean_sq_score[1:] = 1.0 / (ab[1:] * TOY.var + bb[1:])  # E‖∇log q_n‖²/d for the Gaussian
    g = gamma_from_mean_sq_score(mean_sq_score, SCHED)
    exact = TOY.gamma(SCHED)
    np.testing.assert_allclose(g, exact, rtol=1e-14)
    assert g[0] == 0.0
    back = mean_sq_score_from_gamma(g, SCHED)
    np.testing.assert_allclose(back[1:], mean_sq_score[1:], rtol=1e-14)
    est = estimate_gamma(MODEL, SCHED, DATA, timesteps=[5], progress=False)
    s = mean_sq_score_from_gamma(est, SCHED)
    assert s[5] == est.gamma[5] / bb[5] and np.isnan(s[6])
    with pytest.raises(ValueError, match=r"mean_sq_score must have shape \(N\+1,\)"):
        gamma_from_mean_sq_score(mean_sq_score[1:], SCHED)
    with pytest.raises(ValueError, match="gamma .*cannot be negative"):
        mean_sq_score_from_gamma(-g, SCHED)


# ---------------------------------------------------------------------------------------------------- bad inputs
def _nan_model(x, n):
    out = MODEL(x, n)
    out[-1, 0, 0] = np.nan
    return out


class WrongShapeSampler:
    def sample(self, num, seed):
        return np.zeros((num + 1, 3))


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        ({"timesteps": [0, 5]}, ValueError, r"timesteps must lie in 1\.\.N = 1\.\.100; got 0 \(at position 0\)"),
        ({"timesteps": [5, N + 1]}, ValueError, r"timesteps must lie in 1\.\.N = 1\.\.100; got 101 \(at position 1\)"),
        ({"timesteps": [3, 9, 3]}, ValueError, r"timesteps must not repeat; got 3 \(2 times\)"),
        ({"timesteps": []}, ValueError, "timesteps must name at least one"),
        ({"timesteps": [2.5]}, TypeError, "timesteps must be integers"),
        ({"timesteps": [[1, 2]]}, ValueError, "timesteps must be a 1-D"),
        ({"data": DATA[:, 0, 0]}, ValueError, r"data must have shape \(M, \*shape\)"),
        ({"data": np.where(DATA > 1.5, np.inf, DATA)}, ValueError, "data must be finite"),
        ({"data": np.ones((10, 6), dtype=np.int64)}, TypeError, "data must be floating point"),
        ({"data": object()}, TypeError, "data must be an array"),
        ({"num_samples": 301}, ValueError, "num_samples = 301 exceeds the 300 samples"),
        ({"num_samples": 0}, ValueError, "num_samples must be an integer >= 1"),
        ({"data": TOY}, ValueError, "num_samples is required when data is a sampler"),
        ({"data": WrongShapeSampler(), "num_samples": 4}, ValueError, r"data\.sample\(num, seed\) must return"),
        ({"eps_model": lambda x, n: x[:, 0]}, ValueError, "eps_model must return ε̂ of the same shape"),
        ({"eps_model": _nan_model, "batch_size": 300}, ValueError,
         r"eps_model returned non-finite .* n = 1 .*samples 299 "),
        ({"eps_model": lambda x, n: torch.from_numpy(x)}, TypeError, "eps_model must return the same type"),
        ({"eps_model": "model"}, TypeError, "eps_model must be callable"),
        ({"schedule": SCHED.beta}, TypeError, "schedule must be an analytic_dpm Schedule"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
        ({"progress": "yes"}, TypeError, "progress must be"),
        ({"device": "no-such-device"}, ValueError, "device must name a torch device"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, exc, pattern):
    args = dict(eps_model=MODEL, schedule=SCHED, data=DATA, timesteps=[1, 2], progress=False)
    with pytest.raises(exc, match=pattern):
        estimate_gamma(**{**args, **kwargs})
