"""Bad input gets a clear error naming the argument, the value, the constraint and the fix (DESIGN §7)."""

import numpy as np
import pytest

import analytic_dpm as adpm

S = adpm.Schedule.linear(1000)
TR = adpm.even_trajectory(1000, 10)


@pytest.mark.parametrize(
    "betas,match",
    [
        ([0.1, 1.0], r"betas must lie in the open interval \(0, 1\).*1.*n = \[2\]"),
        ([0.0, 0.1], r"betas must lie in the open interval \(0, 1\).*n = \[1\]"),
        ([-0.1], r"betas must lie in the open interval"),
        ([0.1, np.nan], r"betas must lie in the open interval \(0, 1\) and be finite.*nan"),
        ([], r"betas must hold at least one value"),
        ([[0.1, 0.2]], r"betas must be a 1-dimensional array"),
    ],
)
def test_bad_betas(betas, match):
    with pytest.raises(ValueError, match=match):
        adpm.Schedule.from_betas(betas)


def test_bad_alpha_bar():
    with pytest.raises(ValueError, match=r"alpha_bar must be strictly decreasing.*ᾱ_2"):
        adpm.Schedule.from_alpha_bar([0.9, 0.95])
    with pytest.raises(ValueError, match=r"alpha_bar must lie in the open interval"):
        adpm.Schedule.from_alpha_bar([0.9, 0.0])


def test_linear_with_small_N_explains():
    with pytest.raises(ValueError, match=r"linear schedule with N = 10 needs beta_end in \(0, 1\).*pass beta_start/beta_end"):
        adpm.Schedule.linear(10)
    assert adpm.Schedule.linear(10, beta_end=0.2).N == 10


@pytest.mark.parametrize(
    "N,K,exc,match",
    [
        (10, 11, ValueError, r"K must satisfy 1 <= K <= N = 10; got K = 11"),
        (10, 0, ValueError, r"K must be an integer >= 1; got 0"),
        (0, 1, ValueError, r"N must be an integer >= 1; got 0"),
        (10, 2.5, TypeError, r"K must be an integer; got 2.5"),
    ],
)
def test_bad_trajectory_sizes(N, K, exc, match):
    with pytest.raises(exc, match=match):
        adpm.even_trajectory(N, K)


@pytest.mark.parametrize(
    "traj,match",
    [
        ([0, 5, 5, 10], r"strictly increasing from 0 to at most N = 1000; got 5 twice \(positions 1, 2\).*even_trajectory"),
        ([0, 5, 3, 10], r"strictly increasing.*got 3 after 5"),
        ([1, 5, 10], r"trajectory must start at 0"),
        ([0, 5, 1001], r"trajectory must end at or before N = 1000; got τ_K = 1001"),
        ([0], r"with K >= 1"),
        ([0, 1.5, 3], r"integer timesteps"),
    ],
)
def test_bad_trajectories(traj, match):
    with pytest.raises(ValueError, match=match):
        adpm.reverse_variances(S, traj, "ddpm-large")


def test_make_trajectory_rejects_leading_zero():
    with pytest.raises(ValueError, match="must not include the leading 0"):
        adpm.make_trajectory([0, 5, 10], 10)


def test_unknown_method():
    with pytest.raises(ValueError, match=r"method must be one of 'ddpm-large', .*got 'analytic'"):
        adpm.reverse_variances(S, TR, "analytic")


def test_missing_gamma():
    with pytest.raises(ValueError, match=r"method 'analytic-ddpm' needs gamma.*shape \(N\+1,\) = \(1001,\).*estimate_gamma"):
        adpm.reverse_variances(S, TR, "analytic-ddpm")


@pytest.mark.parametrize("shape", [(1000,), (1002,), (1001, 1)])
def test_wrong_gamma_shape(shape):
    with pytest.raises(ValueError, match=r"gamma must (have shape \(N\+1,\) = \(1001,\)|be a 1-dimensional array)"):
        adpm.reverse_variances(S, TR, "analytic-ddim", gamma=np.zeros(shape))


def test_gamma_nan_on_trajectory():
    g = np.full(1001, 0.5)
    g[112] = np.nan
    with pytest.raises(ValueError, match=r"gamma must be finite at every timestep of the trajectory.*n = \[112\]"):
        adpm.reverse_variances(S, TR, "analytic-ddpm", gamma=g)


def test_eta_errors():
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\].*got 1.5"):
        adpm.reverse_variances(S, TR, "ddim", eta=1.5)
    with pytest.raises(ValueError, match=r"eta applies to the DDIM family only.*'analytic-ddpm'"):
        adpm.reverse_variances(S, TR, "analytic-ddpm", gamma=np.zeros(1001), eta=0.5)


def test_bad_data_range():
    with pytest.raises(ValueError, match=r"data_range must be \(a, b\) with a < b"):
        adpm.reverse_variances(S, TR, "ddpm-large", data_range=(1.0, -1.0))


def test_bad_schedule_type():
    with pytest.raises(TypeError, match=r"schedule must be an analytic_dpm.Schedule"):
        adpm.reverse_variances(np.linspace(1e-4, 0.02, 1000), TR, "ddpm-large")


def test_bad_skip_pair():
    with pytest.raises(ValueError, match=r"0 <= s < t <= N = 1000; got s = 5, t = 5"):
        S.skip_alpha(5, 5)
