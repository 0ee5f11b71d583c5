"""The public property-testing toolkit analytic_dpm.testing: every checker fails on a deliberately wrong input and
passes on the correct one; the strategies draw only valid objects and reach the edge cases; the check-variances command
works on files written here."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, find, given, settings
from hypothesis import strategies as st

import analytic_dpm as adpm
from analytic_dpm import toy
from analytic_dpm.cli import main as adpm_main
from analytic_dpm.testing import (
    assert_eps_model_gamma_matches,
    assert_gamma_consistent,
    assert_residual_variance_optimal,
    assert_sampler_matches_exact,
    assert_variances_within_bounds,
    check_variance_file,
    residual_variance_report,
    variance_bounds_report,
    z_threshold,
)
from analytic_dpm.testing import strategies as adst
from analytic_dpm.testing.check_variances import main as cv_main

S1000 = adpm.Schedule.linear(1000)
ET10 = adpm.even_trajectory(1000, 10)
S200 = adpm.Schedule.linear(200)
DATA4 = toy.GaussianData.from_spectrum([0.3, -0.2, 0.1, 0.5], [0.002, 0.02, 0.1, 0.4],
                                       np.linalg.qr(np.random.default_rng(3).standard_normal((4, 4)))[0])

# pinned edge cases: N = 1; K = N; β near 1 (and near 0)
N1 = (adpm.Schedule.from_betas([0.5]), np.array([0, 1]))
K_EQ_N = (adpm.Schedule.from_betas(np.linspace(1e-8, 0.3, 12)), np.arange(13))
BETA_NEAR_1 = (adpm.Schedule.from_betas([0.999, 1e-8, 0.999, 0.998]), np.array([0, 1, 3]))


def _find(strategy, condition):
    """The first drawn example satisfying ``condition`` (no shrinking: this only shows the strategy reaches it)."""
    return find(strategy, condition, settings=settings(derandomize=True, max_examples=3000, database=None,
                                                      phases=[Phase.generate], suppress_health_check=list(HealthCheck)))


# ====================================================================================== Theorem 2 checker
def test_variance_checker_fails_just_above_the_upper_bound_and_names_the_step():
    v = adpm.reverse_variances(S1000, ET10, "ddpm-small", data_range=None)
    sig = v.upper.copy()
    assert_variances_within_bounds(S1000, ET10, sig)  # the upper bound itself is within
    sig[3] *= 1 + 1e-4
    with pytest.raises(AssertionError) as exc:
        assert_variances_within_bounds(S1000, ET10, sig)
    msg = str(exc.value)
    assert "at 1 of 10 transitions" in msg
    assert f"step k = 4 (s, t) = ({ET10[3]}, {ET10[4]}): σ² = " in msg
    assert "above the upper bound (eq. 11)" in msg and "(+0.01%)" in msg and "Theorem 2" in msg
    rep = variance_bounds_report(S1000, ET10, sig)
    (viol,) = rep.violations()
    assert viol["k"] == 4 and viol["excess"] == pytest.approx(sig[3] - v.upper[3], rel=1e-9)


def test_variance_checker_fails_just_below_the_lower_bound():
    v = adpm.reverse_variances(S1000, ET10, "ddpm-small", data_range=None)
    assert_variances_within_bounds(S1000, ET10, v.lower)
    sig = v.lower * (1 - 1e-4)
    with pytest.raises(AssertionError, match=r"(?s)at 9 of 10 .*step k = 2 \(s, t\) = \(1, 112\).*below the lower "
                                             r"bound λ² = .* \(-0\.01%\)"):
        assert_variances_within_bounds(S1000, ET10, sig)  # k = 1 has λ² = 0, so 9 steps fail
    sig = v.lower.copy()
    sig[0] = -1e-12  # a negative variance at s = 0, where λ² = 0
    with pytest.raises(AssertionError, match=r"step k = 1 \(s, t\) = \(0, 1\): σ² = -1\.0000e-12 below"):
        assert_variances_within_bounds(S1000, ET10, sig)
    sig[0] = np.nan
    with pytest.raises(AssertionError, match=r"step k = 1 .* is not finite"):
        assert_variances_within_bounds(S1000, ET10, sig)


def test_variance_checker_names_eq12_and_ddim_family():
    ddim = adpm.reverse_variances(S1000, ET10, "ddim", eta=0.5, data_range=(-1.0, 1.0))
    assert_variances_within_bounds(S1000, ET10, ddim.upper, eta=0.5, data_range=1)
    assert ddim.upper_eq12[-1] < ddim.upper_eq11[-1]  # at t = N eq. 12 is the tighter bound
    sig = ddim.lower.copy()
    sig[-1] = ddim.upper_eq12[-1] * (1 + 1e-5)
    with pytest.raises(AssertionError, match=r"(?s)at 1 of 10 transitions \(DDIM family, λ² = η²β̃_\{s\|t\} with "
                                             r"η = 0\.5; data in \[-1, 1\].*step k = 10 .*above the upper bound "
                                             r"\(eq\. 12\)"):
        assert_variances_within_bounds(S1000, ET10, sig, eta=0.5, data_range=(-1, 1))
    # without the data range only eq. 11 applies, and the same σ² is within
    assert_variances_within_bounds(S1000, ET10, sig, eta=0.5)
    # λ² given per transition reproduces the η family's bounds (a second formula for g)
    a = variance_bounds_report(S1000, ET10, sig, eta=0.5, data_range=1)
    b = variance_bounds_report(S1000, ET10, sig, lambda_sq=ddim.lambda_sq, data_range=1)
    np.testing.assert_allclose(b.upper_eq11, a.upper_eq11, rtol=1e-12)
    np.testing.assert_allclose(b.upper_eq12, a.upper_eq12, rtol=1e-12)
    assert b.family == "custom" and np.array_equal(a.status, b.status)


def test_variance_checker_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"sigma_sq must hold one variance per transition .* K = 10 values .*"
                                         r"got shape \(11,\)"):
        assert_variances_within_bounds(S1000, ET10, np.ones(11))
    with pytest.raises(ValueError, match="either eta .* or lambda_sq"):
        assert_variances_within_bounds(S1000, ET10, np.ones(10), eta=0.1, lambda_sq=np.zeros(10))
    with pytest.raises(ValueError, match=r"lambda_sq must lie in \[0, β̄_s\].*step k = 2"):
        assert_variances_within_bounds(S1000, ET10, np.ones(10), lambda_sq=np.r_[0.0, np.ones(9)])
    with pytest.raises(ValueError, match=r"data_range given as one number r .* must be > 0"):
        assert_variances_within_bounds(S1000, ET10, np.ones(10), data_range=0)
    with pytest.raises(TypeError, match="schedule must be an analytic_dpm.Schedule"):
        assert_variances_within_bounds("linear", ET10, np.ones(10))


@given(adst.schedule_and_trajectory(schedules=adst.schedules()), adst.etas(), st.data())
@example(N1, 0.0, None).via("N = 1")
@example(K_EQ_N, 1.0, None).via("K = N")
@example(BETA_NEAR_1, 0.5, None).via("β near 1")
def test_library_variances_pass_the_checker(sched_traj, eta, data):
    """Property: on any schedule and trajectory, the library's baselines and Theorem 1 (any valid Γ) lie within the
    bounds; β_{t|s} (DDPM's σ² = β on a trajectory) even within eq. 12 for data in [−1, 1]."""
    sched, traj = sched_traj
    if data is None:
        gamma = np.linspace(0.0, 1.0, sched.N + 1)
    else:
        gamma, _ = data.draw(adst.gamma_vectors(sched.N))
    large = adpm.reverse_variances(sched, traj, "ddpm-large", data_range=None)
    assert_variances_within_bounds(sched, traj, large.sigma_sq, data_range=1)
    assert_variances_within_bounds(sched, traj, adpm.reverse_variances(sched, traj, "ddim", eta=eta).sigma_sq,
                                   eta=eta)
    for method, e in (("analytic-ddpm", None), ("analytic-ddim", eta)):
        v = adpm.reverse_variances(sched, traj, method, gamma=gamma, eta=e or 0.0, data_range=None, clip=False)
        rep = assert_variances_within_bounds(sched, traj, v.sigma_sq, eta=e)
        np.testing.assert_array_equal(rep.lower, v.lower)


# ====================================================================================== Γ checker
def test_gamma_checker_passes_monte_carlo_noise_and_fails_beyond_it():
    est = adpm.estimate_gamma(DATA4.eps_model(S200), S200, DATA4, timesteps=[1, 50, 150, 200], num_samples=500,
                              progress=False)
    assert DATA4.gamma(S200)[150] > 0.999  # Γ_n ≈ 1 at large n: there Monte Carlo alone may cross 1
    z = assert_gamma_consistent(est)
    assert z == pytest.approx(z_threshold(None, 4, 1e-3, two_sided=False)) and 3.3 < z < 3.8
    g = est.gamma.copy()
    g[150] = 1 + 10 * est.stderr[150]
    with pytest.raises(AssertionError, match=r"at 1 of 4 timesteps(.|\n)*timestep n = 150: Γ = .* exceeds "
                                             r"Jensen's bound 1 by .* \(10 standard errors"):
        assert_gamma_consistent(g, est.stderr)
    assert_gamma_consistent(g, est.stderr, n_sigma=11)
    g[50] = -1e-9
    with pytest.raises(AssertionError, match=r"n = 50: Γ = -1\.0000e-09 < 0"):
        assert_gamma_consistent(g, est.stderr, n_sigma=11)
    # Γ without standard errors is exact: any excess fails; labels by timesteps
    with pytest.raises(AssertionError, match=r"timestep n = 7: Γ = 1\.001 exceeds .*no standard error"):
        assert_gamma_consistent([0.5, 1.001], timesteps=np.array([3, 7]))
    with pytest.raises(ValueError, match="no estimated timestep"):
        assert_gamma_consistent(np.r_[0.0, np.nan, np.nan])


@given(st.integers(1, 200), st.sampled_from(adst.GAMMA_VALIDITY), st.data())
@example(1, "within_error", None)
def test_gamma_vectors_are_what_they_claim(N, validity, data):
    if data is None:
        gamma, stderr = np.array([0.0, 1.01]), np.array([0.0, 0.01])
    else:
        gamma, stderr = data.draw(adst.gamma_vectors(N, validity, n_sigma=3.0))
    assert gamma.shape == stderr.shape == (N + 1,) and gamma[0] == 0.0 and np.all(stderr >= 0)
    if validity == "valid":
        assert np.all((gamma >= 0) & (gamma <= 1))
    if validity == "beyond_error":
        with pytest.raises(AssertionError, match="inconsistent with Jensen"):
            assert_gamma_consistent(gamma, stderr, n_sigma=3.0)
        return
    assert_gamma_consistent(gamma, stderr, n_sigma=3.0)
    if validity == "within_error":
        assert np.any(gamma > 1)
        with pytest.warns(RuntimeWarning, match="outside"):  # the library clips Monte Carlo excess into [0, 1]
            v = adpm.reverse_variances(adpm.Schedule.linear(N, 0.01, 0.5), np.arange(N + 1), "analytic-ddpm",
                                       gamma=gamma)
        assert_variances_within_bounds(adpm.Schedule.linear(N, 0.01, 0.5), np.arange(N + 1), v.sigma_sq,
                                       data_range=1)


# ====================================================================================== ε-model checker
def test_eps_model_checker_passes_the_exact_model_and_fails_a_biased_one():
    est = assert_eps_model_gamma_matches(DATA4.eps_model(S200), DATA4, S200, num_samples=2000)
    assert est.timesteps.size == 8 and est.num_samples == 2000
    biased = toy.ImperfectEps(DATA4.eps_model(S200), scale=1.0, bias=0.3)  # Γ̂ = Γ + 0.09
    with pytest.raises(AssertionError, match=r"differs from the exact Γ of the toy data at \d of 8 timesteps(.|\n)*"
                                             r"timestep n = 200: Γ̂ = .*difference 0\.0"):
        assert_eps_model_gamma_matches(biased, DATA4, S200, num_samples=2000)
    scaled = toy.ImperfectEps(DATA4.eps_model(S200), scale=1.2)
    with pytest.raises(AssertionError, match="at 8 of 8 timesteps"):
        assert_eps_model_gamma_matches(scaled, DATA4, S200, num_samples=2000)
    # the imperfect model's own Γ̂ is known exactly: with it as the expectation, the check passes
    assert_eps_model_gamma_matches(scaled, DATA4, S200, num_samples=2000,
                                   expected_gamma=toy.exact_gamma_of_imperfect(DATA4, S200, scale=1.2))


def test_eps_model_checker_on_a_mixture_and_with_torch():
    torch = pytest.importorskip("torch")
    mix = toy.GaussianMixtureData([0.3, 0.7], [[-0.5], [0.6]], [[0.01], [0.04]])
    sched = adpm.Schedule.linear(100)
    exact = mix.eps_model(sched)

    def torch_model(x, n):  # a user's torch module, fed numpy data through a device
        assert isinstance(x, torch.Tensor)
        return exact(x, n)

    assert_eps_model_gamma_matches(torch_model, mix, sched, [1, 20, 100], 1000, device="cpu")
    with pytest.raises(AssertionError, match="differs from the exact Γ"):
        assert_eps_model_gamma_matches(lambda x, n: 0.8 * exact(x, n), mix, sched, [1, 20, 100], 1000)


# ====================================================================================== sampler checker
def _hand_written_ddpm_large(bug: bool):
    """A user's own ancestral DDPM sampler with σ² = β_{t|s}, written from the paper; ``bug`` uses the one-step α_t
    where the strided α_{t|s} belongs (a wrong coefficient)."""

    def sampler(eps_model, schedule, trajectory, num_samples, seed):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((num_samples, DATA4.dim))
        for k in range(len(trajectory) - 1, 0, -1):
            s, t = int(trajectory[k - 1]), int(trajectory[k])
            ab_s, ab_t = schedule.alpha_bar[s], schedule.alpha_bar[t]
            a_ts = schedule.alpha[t] if bug else ab_t / ab_s
            x0 = (x - np.sqrt(1 - ab_t) * eps_model(x, t)) / np.sqrt(ab_t)
            x = np.sqrt(ab_s) * (1 - a_ts) / (1 - ab_t) * x0 + np.sqrt(a_ts) * (1 - ab_s) / (1 - ab_t) * x
            if s > 0:
                x = x + np.sqrt(1 - a_ts) * rng.standard_normal(x.shape)
        return x

    return sampler


def test_sampler_checker_passes_a_correct_sampler_and_fails_a_wrong_coefficient():
    tr = adpm.even_trajectory(S200.N, 5)
    res = assert_sampler_matches_exact(_hand_written_ddpm_large(False), DATA4, S200, tr, "ddpm-large")
    assert res.max_abs_z < res.threshold and res.sample_cov.shape == (4, 4) and 3.5 < res.threshold < 4.5
    with pytest.raises(AssertionError, match=r"differs from the exact generated distribution of 'ddpm-large' "
                                             r"\(K = 5(.|\n)*(mean|cov)\[\d.*standard errors"):
        assert_sampler_matches_exact(_hand_written_ddpm_large(True), DATA4, S200, tr, "ddpm-large")
    # the right sampler against the wrong method's distribution fails too
    with pytest.raises(AssertionError, match="'ddpm-small'"):
        assert_sampler_matches_exact(_hand_written_ddpm_large(False), DATA4, S200, tr, "ddpm-small",
                                     covariance="diagonal")
    with pytest.raises(ValueError, match=r"must return num_samples = 100 samples of dimension d = 4"):
        assert_sampler_matches_exact(lambda *a, **k: np.zeros((100, 3)), DATA4, S200, tr, "ddpm-large",
                                     num_samples=100)


def _library_sampler(method, eta, gamma):
    def sampler(eps_model, schedule, trajectory, num_samples, seed):
        return adpm.sample(eps_model, schedule, trajectory, method, num_samples=num_samples, shape=(DATA4.dim,),
                           gamma=gamma, eta=eta, data_range=None, seed=seed, progress=False)

    return sampler


@settings(max_examples=6)
@given(adst.gaussian_data(max_dim=3), adst.trajectories(30, end_at_n=None),
       st.sampled_from(["ddpm-large", "analytic-ddpm", "analytic-ddim"]), adst.etas())
def test_library_sampler_matches_exact_on_drawn_data(data, traj, method, eta):
    sched = adpm.Schedule.linear(30, 1e-3, 0.4)
    eta = eta if "ddim" in method else 0.0

    def sampler(eps_model, schedule, trajectory, num_samples, seed):
        return adpm.sample(eps_model, schedule, trajectory, method, num_samples=num_samples, shape=(data.dim,),
                           gamma=data.gamma(schedule) if "analytic" in method else None, eta=eta, data_range=None,
                           seed=seed, progress=False)

    assert_sampler_matches_exact(sampler, data, sched, traj, method, eta=eta, num_samples=4000)


# ====================================================================================== residual form
def _imperfect(scale=1.3, bias=0.2, schedule=S1000):
    """A biased, mis-scaled ε-model around DATA4's exact ε* and its exact residual R and 1 − Γ̂."""
    model = toy.ImperfectEps(DATA4.eps_model(schedule), scale=scale, bias=bias)
    return (model, toy.exact_residual_of_imperfect(DATA4, schedule, scale, bias),
            toy.exact_one_minus_gamma_of_imperfect(DATA4, schedule, scale, bias))


@pytest.mark.parametrize("eta", [None, 0.5])
def test_residual_checker_passes_the_library_and_reports_bounds_without_failing(eta):
    """The library's residual variance passes; its expected KL equals the exact toy bound's per-transition terms for
    the same imperfect model (an independent oracle); it leaves Theorem 2's eq. 12 at large t, which is reported,
    not failed (while the Theorem 2 checker does fail on the same σ²)."""
    model, R, _ = _imperfect()
    method = "residual-ddpm" if eta is None else "residual-ddim"
    v = adpm.reverse_variances(S1000, ET10, method, residual=R, eta=eta or 0.0, data_range=(-1, 1))
    rep = assert_residual_variance_optimal(S1000, ET10, v.sigma_sq, R, eta=eta, data_range=1)
    assert rep.ok and rep.kl_defined.sum() == 9 and not rep.kl_defined[0]  # s = 0: the decoder
    np.testing.assert_array_equal(rep.sigma_sq_residual, v.sigma_sq)
    ex = toy.evaluate_exact(DATA4, S1000, ET10, method, eta=eta or 0.0, eps_model=model)
    np.testing.assert_allclose(rep.kl[1:], ex.kl_terms[1:], rtol=1e-12)
    assert np.all(rep.kl_perturbed[1:] > rep.kl[1:, None])  # every perturbation is worse
    np.testing.assert_array_equal(rep.outside_bounds, v.outside_bounds)
    assert rep.outside_bounds.any() and rep.bounds.status[-1] == "above eq. 12"
    note = rep.format_outside_bounds()
    assert f"at {int(v.outside_bounds.sum())} of 10 transitions" in note and "legitimate" in note
    assert f"step k = 10 (s, t) = (889, 1000): σ² = " in note
    with pytest.raises(AssertionError, match="above the upper bound"):
        assert_variances_within_bounds(S1000, ET10, v.sigma_sq, eta=eta, data_range=1)
    # sigma_sq=None checks the library's own; the table and JSON carry every step
    again = assert_residual_variance_optimal(S1000, ET10, None, R, eta=eta, data_range=1)
    np.testing.assert_array_equal(again.sigma_sq, v.sigma_sq)
    assert "Δ least perturbed" in rep.format_table() and "above eq. 12" in rep.format_table()
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert d["ok"] and d["num_outside_bounds"] == int(v.outside_bounds.sum()) and d["steps"][0]["kl"] is None


def test_residual_checker_fails_a_wrong_variance_and_names_the_step():
    model, R, omg_hat = _imperfect()
    v = adpm.reverse_variances(S1000, ET10, "residual-ddpm", residual=R)
    sig = v.sigma_sq.copy()
    sig[4] *= 1.01
    with pytest.raises(AssertionError) as exc:
        assert_residual_variance_optimal(S1000, ET10, sig, R)
    msg = str(exc.value)
    assert "2 finding(s) over 10 transitions" in msg
    assert (f"step k = 5 (s, t) = ({ET10[4]}, {ET10[5]}): σ² = {sig[4]:.6g}, but λ² + g²R_t = {v.sigma_sq[4]:.6g}"
            in msg) and "(+1%)" in msg
    assert "is not the minimiser of E KL/d for the mean error g²R_t" in msg and "0.99·σ²" in msg
    assert "theory entry residual-variance" in msg
    # a deviation below the finest perturbation (0.1%) is caught by the formula alone
    sig = v.sigma_sq.copy()
    sig[2] *= 1 + 1e-5
    rep = residual_variance_report(S1000, ET10, sig, R)
    assert rep.formula_mismatch.tolist() == [k == 2 for k in range(10)] and not rep.not_minimal.any()
    assert residual_variance_report(S1000, ET10, sig, R, rtol=1e-4).ok
    # Theorem 1 with the model's own Γ̂ (clipped as the library does) is not the variance for the model's mean
    with pytest.warns(RuntimeWarning, match="outside"):
        a = adpm.reverse_variances(S1000, ET10, "analytic-ddpm", one_minus_gamma=omg_hat)
    rep = residual_variance_report(S1000, ET10, a.sigma_sq, R)
    assert rep.formula_mismatch[1:].all() and rep.not_minimal[1:].all() and not rep.ok
    assert np.all(rep.kl[1:] > toy.evaluate_exact(DATA4, S1000, ET10, "residual-ddpm", eps_model=model).kl_terms[1:])
    sig = v.sigma_sq.copy()
    sig[3] = -1.0
    with pytest.raises(AssertionError, match=r"step k = 4 .*: σ² = -1 is not a variance"):
        assert_residual_variance_optimal(S1000, ET10, sig, R)


@pytest.mark.parametrize("eta", [None, 0.3])
def test_residual_checker_for_the_exact_predictor_is_theorem1(eta):
    """With R = 1 − Γ (exact ε*), the residual variance is Theorem 1's σ*² and the checker confirms it; claiming the
    exact predictor for an imperfect model's R fails at every step, naming both numbers."""
    omg = DATA4.one_minus_gamma(S1000)
    rep = assert_residual_variance_optimal(S1000, ET10, None, omg, eta=eta, one_minus_gamma=omg)
    np.testing.assert_array_equal(rep.sigma_sq, rep.sigma_sq_theorem1)
    method = "analytic-ddpm" if eta is None else "analytic-ddim"
    theorem1 = adpm.reverse_variances(S1000, ET10, method, one_minus_gamma=omg, eta=eta or 0.0, data_range=None)
    assert_residual_variance_optimal(S1000, ET10, theorem1.sigma_sq, omg, eta=eta, one_minus_gamma=omg)
    # Γ instead of 1 − Γ: the same within the digits Γ keeps
    assert_residual_variance_optimal(S1000, ET10, None, omg, eta=eta, gamma=DATA4.gamma(S1000), rtol=1e-6)
    _, R, _ = _imperfect()
    with pytest.raises(AssertionError, match=r"at 10 of 10|10 finding\(s\)") as exc:
        assert_residual_variance_optimal(S1000, ET10, None, R, eta=eta, one_minus_gamma=omg)
    assert "differs from Theorem 1's σ*² = λ² + g²(1 − Γ_t)" in str(exc.value)
    assert "for the exact predictor R_t = 1 − Γ_t" in str(exc.value)


def test_residual_checker_ddim_eta0_and_bad_arguments():
    _, R, _ = _imperfect()
    rep = assert_residual_variance_optimal(S1000, ET10, None, R, eta=0.0)  # λ² = 0: the KL is undefined everywhere
    assert not rep.kl_defined.any() and "checked on 0 of 10" in rep.describe_family()
    sig = rep.sigma_sq.copy()
    sig[5] *= 2
    with pytest.raises(AssertionError, match=r"step k = 6 .*off by"):  # the formula is still checked
        assert_residual_variance_optimal(S1000, ET10, sig, R, eta=0.0)
    old = adpm.GammaEstimate(gamma=1 - R, stderr=np.zeros_like(R), num_samples=1, timesteps=np.arange(1, 1001),
                             config={})
    with pytest.raises(ValueError, match="GammaEstimate passed as residual has no 'residual'.*rerun estimate_gamma"):
        assert_residual_variance_optimal(S1000, ET10, None, old)
    est = adpm.GammaEstimate(gamma=1 - R, stderr=np.zeros_like(R), num_samples=1, timesteps=np.arange(1, 1001),
                             config={}, residual=R, residual_stderr=np.zeros_like(R), one_minus_gamma=R,
                             one_minus_gamma_stderr=np.zeros_like(R))
    np.testing.assert_array_equal(assert_residual_variance_optimal(S1000, ET10, None, est).residual_t, R[ET10[1:]])
    with pytest.raises(ValueError, match="cannot be negative"):
        assert_residual_variance_optimal(S1000, ET10, None, -R)
    with pytest.raises(ValueError, match=r"residual must have shape \(N\+1,\) = \(1001,\)"):
        assert_residual_variance_optimal(S1000, ET10, None, R[1:])
    with pytest.raises(ValueError, match="factors must be a non-empty list of positive numbers other than 1"):
        assert_residual_variance_optimal(S1000, ET10, None, R, factors=(0.9, 1.0))
    with pytest.raises(ValueError, match="not both"):
        assert_residual_variance_optimal(S1000, ET10, None, R, gamma=1 - R, one_minus_gamma=R)
    with pytest.raises(ValueError, match="K = 10 values"):
        assert_residual_variance_optimal(S1000, ET10, np.ones(11), R)


@settings(max_examples=40, deadline=None)
@given(adst.schedule_and_trajectory(schedules=adst.schedules()), st.sampled_from(adst.RESIDUAL_KINDS), adst.etas(),
       st.booleans(), st.data())
@example(N1, "any", 0.5, True, None).via("N = 1")
@example(BETA_NEAR_1, "above_one", 1.0, False, None).via("β near 1")
def test_library_residual_variances_pass_the_checker(sched_traj, kind, eta, ddim, data):
    """Property: on any schedule, trajectory and R >= 0 (above 1 and tiny included), the library's residual
    variance is λ² + g²R_t and the expected-KL minimiser; with R in [0, 1] taken as 1 − Γ, it is Theorem 1's."""
    sched, traj = sched_traj
    if data is None:
        R = np.r_[0.0, np.linspace(0.0, 3.0, sched.N)]
    else:
        R, _ = data.draw(adst.residual_vectors(sched.N, kind))
    e = eta if ddim else None
    rep = assert_residual_variance_optimal(sched, traj, None, R, eta=e, data_range=1)
    if kind == "exact" or R.max() <= 1.0:
        assert_residual_variance_optimal(sched, traj, None, R, eta=e, one_minus_gamma=R)
    b = variance_bounds_report(sched, traj, rep.sigma_sq, eta=e, data_range=1, residual=R)
    np.testing.assert_array_equal(b.sigma_sq_residual, rep.sigma_sq)
    np.testing.assert_array_equal(b.residual_outside_bounds, b.outside)  # σ² is the residual variance itself


def test_variance_bounds_report_shows_the_residual_variance():
    """variance_bounds_report(..., residual=R): the residual variance beside any σ², flagged where it leaves the
    bounds, never part of ok; the custom-λ² path gives the same numbers as the DDIM family."""
    _, R, _ = _imperfect()
    large = adpm.reverse_variances(S1000, ET10, "ddpm-large", data_range=None).sigma_sq
    rep = variance_bounds_report(S1000, ET10, large, data_range=1, residual=R)
    v = adpm.reverse_variances(S1000, ET10, "residual-ddpm", residual=R, data_range=(-1, 1))
    assert rep.ok and rep.residual_outside_bounds.any()
    np.testing.assert_array_equal(rep.sigma_sq_residual, v.sigma_sq)
    np.testing.assert_array_equal(rep.residual_outside_bounds, v.outside_bounds)
    table = rep.format_table()
    assert "σ² (R)" in table and "!" in table and "for the optimal mean only" in table
    note = rep.format_residual_note()
    assert note.startswith("note: the residual variance λ² + g²R_t leaves Theorem 2's bounds") and "k = 10" in note
    d = rep.to_dict()
    assert d["num_residual_outside"] == int(v.outside_bounds.sum()) and d["steps"][-1]["residual_outside_bounds"]
    ddim = adpm.reverse_variances(S1000, ET10, "residual-ddim", residual=R, eta=0.4, data_range=(-1, 1))
    custom = variance_bounds_report(S1000, ET10, large, lambda_sq=ddim.lambda_sq, data_range=1, residual=R)
    np.testing.assert_allclose(custom.sigma_sq_residual, ddim.sigma_sq, rtol=1e-12)
    assert variance_bounds_report(S1000, ET10, large).format_residual_note() == ""


def _library_residual_sampler(method, **kw):
    def sampler(eps_model, schedule, trajectory, num_samples, seed):
        return adpm.sample(eps_model, schedule, trajectory, method, num_samples=num_samples, shape=(DATA4.dim,),
                           data_range=None, seed=seed, progress=False, **kw)

    return sampler


def test_sampler_checker_with_an_imperfect_model_and_the_residual_variance():
    """The residual-ddpm sampler with an imperfect model matches the exact distribution of that model's chain; the
    same model with Theorem 1's variance from its Γ̂, or the exact ε* in place of the model, does not."""
    model, R, omg_hat = _imperfect(schedule=S200)
    tr = adpm.even_trajectory(S200.N, 5)
    res = assert_sampler_matches_exact(_library_residual_sampler("residual-ddpm", residual=R), DATA4, S200, tr,
                                       "residual-ddpm", eps_model=model)
    assert res.max_abs_z < res.threshold
    np.testing.assert_array_equal(res.exact.variances.residual, R[tr[1:]])  # the model's exact R by default
    with pytest.warns(RuntimeWarning, match="outside"):
        wrong_var = _library_residual_sampler("analytic-ddpm", one_minus_gamma=omg_hat)
        with pytest.raises(AssertionError, match=r"differs from the exact generated distribution of 'residual-ddpm'"):
            assert_sampler_matches_exact(wrong_var, DATA4, S200, tr, "residual-ddpm", eps_model=model)

    def wrong_model(eps_model, schedule, trajectory, num_samples, seed):
        return _library_residual_sampler("residual-ddpm", residual=R)(DATA4.eps_model(schedule), schedule,
                                                                       trajectory, num_samples, seed)

    with pytest.raises(AssertionError, match=r"mean\[\d\]"):
        assert_sampler_matches_exact(wrong_model, DATA4, S200, tr, "residual-ddpm", eps_model=model)
    # with the exact ε* the residual method is Analytic-DDIM's chain (R = 1 − Γ)
    assert_sampler_matches_exact(_library_residual_sampler("residual-ddim", residual=DATA4.one_minus_gamma(S200),
                                                           eta=0.5),
                                 DATA4, S200, tr, "residual-ddim", eta=0.5, num_samples=8000)


# ====================================================================================== strategies
@given(adst.schedule_and_trajectory(schedules=adst.schedules()))
@example(N1).via("N = 1")
@example(K_EQ_N).via("K = N")
@example(BETA_NEAR_1).via("β near 1")
def test_strategies_draw_valid_schedules_and_trajectories(sched_traj):
    sched, traj = sched_traj
    b = sched.beta[1:]
    assert np.all((b > 0) & (b < 1)) and np.all(np.diff(sched.log_alpha_bar) < 0)
    assert sched.alpha_bar[-1] > 1e-300 and np.all(np.isfinite(sched.beta_bar))
    np.testing.assert_array_equal(adpm.validate_trajectory(traj, sched.N), traj)
    assert traj.dtype == np.int64 and 1 <= traj.size - 1 <= sched.N


def test_strategies_reach_the_edge_cases():
    sat = adst.schedule_and_trajectory()
    assert _find(sat, lambda p: p[0].N == 1)[1].tolist() == [0, 1]
    sched, traj = _find(sat, lambda p: p[0].N >= 3 and traj_is_full(p))
    assert traj.size == sched.N + 1
    assert _find(adst.betas(), lambda b: b.max() > 0.99).max() <= adst.BETA_MAX
    assert _find(adst.betas(), lambda b: b.min() < 1e-7).min() >= adst.BETA_MIN
    sched, traj = _find(sat, lambda p: p[1][-1] < p[0].N)  # DDIM-style: τ_K < N
    big = _find(adst.schedules(), lambda s: s.N >= 1000)
    assert big.N >= 1000
    assert _find(adst.schedules(kinds=["cosine"]), lambda s: s.N >= 1000).beta[-1] == pytest.approx(0.999)
    assert _find(adst.trajectories(2000), lambda t: t.size == 2001).size == 2001  # K = N at N = 2000
    assert _find(adst.etas(), lambda e: e == 0.0) == 0.0 and _find(adst.etas(), lambda e: e == 1.0) == 1.0
    assert _find(adst.gamma_vectors(5), lambda gs: gs[0][1:].max() == 1.0)[0].max() == 1.0  # Γ = 1 exactly
    assert _find(adst.gamma_vectors(5), lambda gs: gs[0][1:].min() == 0.0)[0][1:].min() == 0.0  # Γ = 0 exactly
    assert _find(adst.gamma_vectors(100), lambda gs: gs[0].max() == 1.0)[0].max() == 1.0  # the large-N path too


@given(st.integers(1, 200), st.sampled_from(adst.RESIDUAL_KINDS), st.data())
def test_residual_vectors_are_what_they_claim(N, kind, data):
    R, se = data.draw(adst.residual_vectors(N, kind, max_value=4.0, max_relative_stderr=0.1))
    assert R.shape == se.shape == (N + 1,) and R[0] == 0.0 == se[0]
    assert np.all(R >= 0) and np.all(R <= 4.0) and np.all((se >= 0) & (se <= 0.1 * R + 1e-300))
    if kind == "exact":
        assert R.max() <= 1.0
    if kind == "above_one":
        assert R.max() > 1.0
    if kind == "tiny":
        assert np.all((R[1:] >= adst.RESIDUAL_TINY) & (R[1:] <= 1e-3))
    adpm.reverse_variances(adpm.Schedule.linear(N, 0.01, 0.5), np.arange(N + 1), "residual-ddpm", residual=R)


def test_residual_vectors_reach_the_edge_cases():
    rv = adst.residual_vectors
    assert _find(rv(5), lambda r: r[0][1:].min() == 0.0)[0][1:].min() == 0.0  # R = 0 exactly
    assert _find(rv(5), lambda r: r[0].max() == 1.0)[0].max() == 1.0  # R = 1 exactly (eq. 11 itself)
    assert _find(rv(5), lambda r: r[0].max() > 2.0)[0].max() > 2.0  # well above 1
    assert _find(rv(5), lambda r: 0 < r[0][1:].min() < 1e-10)[0][1:].min() < 1e-10  # tiny
    assert _find(rv(100), lambda r: r[0].max() > 2.0 and 0 < r[0][1:].min() < 1e-10) is not None  # large-N path
    with pytest.raises(ValueError, match="kind must be one of"):
        _find(rv(3, "negative"), lambda r: True)


def traj_is_full(pair):
    sched, traj = pair
    return traj.size == sched.N + 1


@settings(max_examples=20)
@given(adst.gaussian_data(), adst.gaussian_mixtures())
def test_toy_data_strategies_draw_valid_data(gauss, mix):
    sched = adpm.Schedule.linear(50, 1e-3, 0.3)
    g = gauss.gamma(sched)
    assert np.all((g[1:] >= 0) & (g[1:] <= 1)) and 1 <= gauss.dim <= 4
    x = mix.sample(16, seed=0)
    assert x.shape == (16, mix.dim) and np.all(np.isfinite(mix.eps(sched, x, 25)))
    assert mix.weights.sum() == pytest.approx(1.0) and mix.dim <= 2


def test_strategies_reject_bad_arguments():
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        _find(adst.schedules(kinds=["quadratic"]), lambda s: True)
    with pytest.raises(ValueError, match="validity must be one of"):
        _find(adst.gamma_vectors(3, "nearly"), lambda g: True)


def test_core_imports_without_hypothesis():
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import analytic_dpm, analytic_dpm.testing\n"
        "from analytic_dpm.testing import assert_variances_within_bounds\n"
        "try:\n    import analytic_dpm.testing.strategies\nexcept ImportError as e:\n"
        "    assert 'pip install hypothesis' in str(e), e\n    print('clear error')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "clear error" in out.stdout


# ====================================================================================== an outside rule: diffusers
def test_diffusers_fixed_large_is_inside_the_bounds_but_not_the_upper_bound():
    diffusers = pytest.importorskip("diffusers")
    ddpm = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", variance_type="fixed_large")
    ddpm.set_timesteps(10)  # "leading" spacing: 0-based 900, 800, …, 0
    ts = ddpm.timesteps.numpy()
    var = np.array([float(ddpm._get_variance(int(t))) for t in ts])[::-1]  # in increasing t
    traj = np.concatenate([[0], np.sort(ts) + 1])  # paper n = t + 1
    np.testing.assert_array_equal(traj, adpm.ddim_stride_trajectory(1000, 10))
    rep = assert_variances_within_bounds(S1000, traj, var, data_range=1, rtol=1e-3)  # float32 rule
    # not the upper bound: fixed_large = β_{t|s} = α_{t|s} · (β_{t|s}/α_{t|s}), a factor α_{t|s} inside eq. 11
    s, t = adpm.transitions(traj)
    np.testing.assert_allclose(var / rep.upper_eq11, S1000.skip_alpha(s, t), rtol=1e-3)
    assert np.all(var[1:] < 0.95 * rep.upper_eq11[1:])
    # the per-step rule σ² = β_t on the same strided trajectory is below λ² = β̃_{s|t}
    with pytest.raises(AssertionError, match="below the lower bound"):
        assert_variances_within_bounds(S1000, traj, S1000.beta[traj[1:]], rtol=1e-3)


# ====================================================================================== command line
def _write_files(tmp_path):
    v = adpm.reverse_variances(S1000, ET10, "ddpm-large", data_range=None)
    np.save(tmp_path / "ok.npy", v.sigma_sq)
    bad = v.sigma_sq.copy()
    bad[3] = v.upper_eq11[3] * 1.01  # above eq. 11 by 1 %
    np.savetxt(tmp_path / "bad.csv", np.c_[ET10[1:] - 1, bad], delimiter=",", header="t,sigma_sq", comments="")
    np.savetxt(tmp_path / "bad_desc.txt", bad[::-1])
    np.savez(tmp_path / "ok.npz", sigma_sq=v.sigma_sq, other=np.zeros(3))
    return v, bad


def test_cli_reports_steps_outside_the_bounds(tmp_path, capsys):
    v, bad = _write_files(tmp_path)
    base = ["check-variances", "--schedule", "linear", "--N", "1000"]
    assert cv_main(base + ["--trajectory", "even:10", "--variances", str(tmp_path / "ok.npy")]) == 0
    assert "OK: all 10 steps lie within" in capsys.readouterr().out

    png = tmp_path / "out.png"
    rc = cv_main(base + ["--variances", str(tmp_path / "bad.csv"), "--zero-based", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "at 1 of 10 transitions" in out and "step k = 4 (s, t) = (223, 334)" in out and "(+1%)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rc = cv_main(base + ["--trajectory", "even:10", "--descending", "--variances", str(tmp_path / "bad_desc.txt"),
                         "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 1 and rep["ok"] is False and rep["num_outside"] == 1
    (viol,) = rep["violations"]
    assert (viol["k"], viol["s"], viol["t"]) == (4, 223, 334)
    assert viol["excess"] == pytest.approx(0.01 * v.upper_eq11[3])
    assert rep["steps"][0]["upper_eq12"] is None  # no data range: inf written as null

    # the main CLI delegates; .npz with a default key; eq. 12 with --data-range
    rc = adpm_main(base + ["--trajectory", "1,112,223,334,445,556,667,778,889,1000", "--variances",
                           str(tmp_path / "ok.npz"), "--data-range", "-1", "1", "--all"])
    out = capsys.readouterr().out
    assert rc == 0 and "upper eq.12" in out and "min(eq. 11, eq. 12)" in out


def test_cli_with_residual(tmp_path, capsys):
    """--residual FILE (a GammaEstimate with R̂, or an array) adds the residual variance and a note where it leaves
    the bounds, without changing the exit status; a file from before R̂ existed is refused with the fix (exit 2)."""
    _write_files(tmp_path)
    _, R, omg_hat = _imperfect()
    est = adpm.GammaEstimate(gamma=1 - omg_hat, stderr=np.zeros_like(R), num_samples=1, timesteps=np.arange(1, 1001),
                             config={"source": "exact"}, residual=R, residual_stderr=np.zeros_like(R),
                             one_minus_gamma=omg_hat, one_minus_gamma_stderr=np.zeros_like(R))
    est.save(tmp_path / "est.npz")
    base = ["check-variances", "--trajectory", "even:10", "--variances", str(tmp_path / "ok.npy"), "--data-range", "1"]
    png = tmp_path / "res.png"
    rc = cv_main(base + ["--residual", str(tmp_path / "est.npz"), "--all", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and "OK: all 10 steps lie within" in out and "σ² (R)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "note: the residual variance λ² + g²R_t leaves Theorem 2's bounds" in out and "not a failure" in out
    v = adpm.reverse_variances(S1000, ET10, "residual-ddpm", residual=R, data_range=(-1, 1))
    rc = cv_main(base + ["--residual", str(tmp_path / "est.npz"), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["num_residual_outside"] == int(v.outside_bounds.sum()) > 0
    assert [st_["sigma_sq_residual"] for st_ in rep["steps"]] == pytest.approx(v.sigma_sq.tolist(), rel=1e-15)
    # a plain array of R_n (N values, n = 1..N) and the same through the main CLI
    np.save(tmp_path / "R.npy", R[1:])
    rc = adpm_main(base + ["--residual", str(tmp_path / "R.npy"), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["num_residual_outside"] == rep["num_residual_outside"]
    rep2 = check_variance_file(tmp_path / "ok.npy", schedule=S1000, trajectory="even:10", data_range=1, residual=est)
    np.testing.assert_array_equal(rep2.sigma_sq_residual, v.sigma_sq)
    # an old GammaEstimate file: no residual
    adpm.GammaEstimate(gamma=est.gamma, stderr=est.stderr, num_samples=1, timesteps=est.timesteps,
                       config={}).save(tmp_path / "old.npz")
    assert cv_main(base + ["--residual", str(tmp_path / "old.npz")]) == 2
    err = capsys.readouterr().err
    assert "is a GammaEstimate without 'residual'" in err and "older version" in err and "Rerun estimate_gamma" in err
    np.save(tmp_path / "neg.npy", -R)
    assert cv_main(base + ["--residual", str(tmp_path / "neg.npy")]) == 2
    assert "cannot be negative" in capsys.readouterr().err


def test_cli_with_gamma_and_as_a_function(tmp_path, capsys):
    _write_files(tmp_path)
    exact = DATA4.gamma(S1000)
    est = adpm.GammaEstimate(gamma=exact, stderr=np.zeros_like(exact), num_samples=1,
                             timesteps=np.arange(1, 1001), config={"source": "exact"})
    est.save(tmp_path / "gamma.npz")
    rc = cv_main(["check-variances", "--trajectory", "even:10", "--variances", str(tmp_path / "ok.npy"),
                  "--gamma", str(tmp_path / "gamma.npz"), "--all"])
    assert rc == 0 and "σ*² (Γ)" in capsys.readouterr().out
    rep = check_variance_file(tmp_path / "bad.csv", schedule=S1000, zero_based=True, gamma=est.gamma)
    assert not rep.ok and rep.violations()[0]["k"] == 4 and rep.sigma_sq_opt.shape == (10,)
    np.testing.assert_array_equal(rep.trajectory, ET10)


@pytest.mark.parametrize(
    "make,args,match",
    [
        (None, ["--variances", "missing.npy", "--trajectory", "even:10"], "missing.npy' does not exist"),
        (lambda p: np.save(p / "v.npy", np.ones(9)), ["--variances", "v.npy", "--trajectory", "even:10"],
         r"holds 9 values but the trajectory has K = 10 transitions"),
        (lambda p: np.save(p / "v.npy", np.ones(1001)), ["--variances", "v.npy", "--trajectory", "even:10"],
         r"a per-timestep array: pick the trajectory's entries"),
        (lambda p: np.save(p / "v.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
         ["--variances", "v.npy", "--trajectory", "even:1"], r"cannot read variances file"),
        (lambda p: (p / "v.json").write_text("[1]"), ["--variances", "v.json", "--trajectory", "even:1"],
         r"has suffix '\.json'"),
        (lambda p: (p / "v.txt").write_text("t sigma\n1 0.1\n2 oops\n"), ["--variances", "v.txt"],
         r"line 3: not a number"),
        (lambda p: np.save(p / "v.npy", np.ones(10)), ["--variances", "v.npy", "--trajectory", "even:ten"],
         r"expected even:K with an integer K"),
        (lambda p: np.save(p / "v.npy", np.ones(10)), ["--variances", "v.npy"], r"--trajectory is needed"),
        (lambda p: np.savez(p / "v.npz", a=np.ones(10), b=np.ones(10)),
         ["--variances", "v.npz", "--trajectory", "even:10"], r"holds arrays \['a', 'b'\] and none named .*--key"),
        (lambda p: np.savetxt(p / "v.csv", np.c_[[1, 5], [0.1, 0.2]], delimiter=","),
         ["--variances", "v.csv", "--trajectory", "1,3,5"], r"no variance for t = \[3\]"),
        (lambda p: np.save(p / "v.npy", np.ones(10)),
         ["--variances", "v.npy", "--trajectory", "even:10", "--data-range", "1", "2", "3"], r"one number r"),
    ],
)
def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path, monkeypatch, capsys, make, args, match):
    monkeypatch.chdir(tmp_path)
    if make is not None:
        make(tmp_path)
    assert cv_main(["check-variances", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert __import__("re").search(match, err), err


def test_python_dash_m_entry_point(tmp_path):
    _write_files(tmp_path)
    out = subprocess.run([sys.executable, "-m", "analytic_dpm.testing", "check-variances", "--variances",
                          str(tmp_path / "bad.csv"), "--zero-based"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "step k = 4" in out.stdout
