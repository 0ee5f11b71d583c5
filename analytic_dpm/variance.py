"""Reverse variances: Theorem 1 (optimal variance from Γ), Theorem 2 (bounds) with reported clipping, the DDPM
simplifications (Corollaries 2 and 3) and the handcrafted baselines (facts file §2, §3).

Γ is always in noise form: Γ_n = E‖ε̂_n(x_n)‖²/d = β̄_n E‖s_n(x_n)‖²/d ∈ [0, 1], an array of shape (N+1,) with
index 0 unused. For a transition (s, t) with g = √(β̄_t/α_{t|s}) − √(β̄_s − λ²):

* Theorem 1 (eq. 7 on a trajectory):  σ*² = λ² + g² (1 − Γ_t)
* Theorem 2 (eq. 11):                   λ² ≤ σ*² ≤ λ² + g²
* Theorem 2 (eq. 12), data in [a, b]^d: σ*² ≤ λ² + g² · r² ᾱ_t/β̄_t,  r = (b − a)/2
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ._validate import _show, as_float, as_float_array, check_data_range, choice
from .posterior import check_eta, family_of, gap, lambda_sq
from .schedules import Schedule
from .trajectories import transitions, validate_trajectory

METHODS = ("ddpm-large", "ddpm-small", "analytic-ddpm", "ddim", "analytic-ddim")
ANALYTIC_METHODS = ("analytic-ddpm", "analytic-ddim")


@dataclass(frozen=True, eq=False)
class ReverseVariances:
    """Per-transition variances along a trajectory: entry k−1 belongs to (s, t) = (τ_{k−1}, τ_k), k = 1..K."""

    trajectory: np.ndarray
    method: str
    eta: float
    sigma_sq: np.ndarray  #: the variance the sampler uses (clipped if ``clip`` and analytic)
    lambda_sq: np.ndarray  #: λ²_{s|t}: β̃_{s|t} (DDPM family) or η²β̃_{s|t} (DDIM family)
    lower: np.ndarray  #: Theorem 2 lower bound, = λ²
    upper: np.ndarray  #: Theorem 2 upper bound, min(eq. 11, eq. 12) (eq. 11 alone without a data range)
    clipped: np.ndarray  #: True where the analytic estimate (from Γ as given) fell outside [lower, upper]: clipped
    sigma_sq_unclipped: np.ndarray  #: analytic estimate from Γ as given, before any clipping (= sigma_sq for baselines)
    upper_eq11: np.ndarray  #: λ² + g²
    upper_eq12: np.ndarray  #: λ² + g² r² ᾱ_t/β̄_t (inf when ``data_range`` is None)
    gamma: np.ndarray  #: Γ_t used at each transition (NaN for the handcrafted baselines)

    @property
    def K(self) -> int:
        return int(self.sigma_sq.shape[0])

    @property
    def s(self) -> np.ndarray:
        return self.trajectory[:-1]

    @property
    def t(self) -> np.ndarray:
        return self.trajectory[1:]

    def __len__(self) -> int:
        return self.K


def _check_gamma(gamma, N: int, needed: np.ndarray) -> np.ndarray:
    g = as_float_array(
        "gamma", gamma,
        fix=f"Γ must be an array of shape (N+1,) = ({N + 1},), Γ_n = E‖ε̂_n(x_n)‖²/d, index 0 unused.",
    )
    if g.shape != (N + 1,):
        raise ValueError(
            f"gamma must have shape (N+1,) = ({N + 1},) for this schedule, indexed by timestep n with index 0 "
            f"unused; got shape {g.shape}. Use estimate_gamma(...) or pad a length-N array with a leading 0."
        )
    vals = g[needed]
    bad = ~np.isfinite(vals)
    if bad.any():
        raise ValueError(
            f"gamma must be finite at every timestep of the trajectory; got {_show(vals[bad])} at n = "
            f"{_show(needed[bad])}. Estimate Γ at those timesteps (estimate_gamma(..., timesteps=...))."
        )
    out_lo, out_hi = vals < 0.0, vals > 1.0
    if out_lo.any() or out_hi.any():
        where = needed[out_lo | out_hi]
        warnings.warn(
            f"gamma lies outside [0, 1] at n = {_show(where)} (values {_show(vals[out_lo | out_hi])}); "
            "Γ = E‖ε̂‖²/d of the exact noise predictor lies in [0, 1], so these come from model or Monte Carlo "
            "error. They are clipped into [0, 1], as the paper does.",
            RuntimeWarning,
            stacklevel=3,
        )
    g = g.copy()
    g[needed] = np.clip(vals, 0.0, 1.0)
    return g


def _check_data_range(data_range):
    """r = (b − a)/2 for ``data_range = (a, b)``, None without a range."""
    ab = check_data_range(data_range)
    return None if ab is None else (ab[1] - ab[0]) / 2.0


def theorem2_bounds(schedule: Schedule, s, t, family: str = "ddpm", eta: float = 0.0, data_range=(-1.0, 1.0)):
    """(lower, upper_eq11, upper_eq12) of Theorem 2 for transitions (s, t); upper_eq12 is inf without a data range."""
    lam2 = lambda_sq(schedule, s, t, family, eta)
    g2 = gap(schedule, s, t, family, eta) ** 2
    r = _check_data_range(data_range)
    ub11 = lam2 + g2
    if r is None:
        ub12 = np.full(np.shape(ub11), np.inf)
    else:
        ub12 = lam2 + g2 * r**2 * schedule.alpha_bar[t] / schedule.beta_bar[t]
    return lam2, ub11, ub12


def sigma_sq_opt(schedule: Schedule, s, t, gamma_t, family: str = "ddpm", eta: float = 0.0) -> np.ndarray:
    """Theorem 1 in noise form: σ*²_{s|t} = λ² + (√(β̄_t/α_{t|s}) − √(β̄_s − λ²))² (1 − Γ_t). No clipping."""
    lam2 = lambda_sq(schedule, s, t, family, eta)
    return lam2 + gap(schedule, s, t, family, eta) ** 2 * (1.0 - np.asarray(gamma_t, dtype=np.float64))


def sigma_sq_from_posterior_cov(schedule: Schedule, s, t, cov_x0, family: str = "ddpm", eta: float = 0.0):
    """Lemma 13: σ*² = λ² + c² · E tr Cov(x_0|x_t)/d, with c = √ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t)."""
    lam2 = lambda_sq(schedule, s, t, family, eta)
    c2 = schedule.alpha_bar[t] / schedule.beta_bar[t] * gap(schedule, s, t, family, eta) ** 2
    return lam2 + c2 * np.asarray(cov_x0, dtype=np.float64)


def ddpm_sigma_sq_opt(schedule: Schedule, s, t, gamma_t) -> np.ndarray:
    """Corollary 2 on a trajectory: σ*²_{s|t} = (β_{t|s}/α_{t|s})(1 − β_{t|s} Γ_t/β̄_t) (DDPM family).

    Evaluated as the equal convex combination (1 − Γ_t)·β_{t|s}/α_{t|s} + Γ_t·β̃_{s|t} of Corollary 3's two bounds
    (use β̄_t − β_{t|s} = α_{t|s} β̄_s), which avoids the cancellation in 1 − β_{t|s}/β̄_t when both are near 1.
    """
    g = np.asarray(gamma_t, dtype=np.float64)
    b_ts = schedule.skip_beta(s, t)
    return (1.0 - g) * (b_ts / schedule.skip_alpha(s, t)) + g * schedule.skip_beta_tilde(s, t)


def ddpm_bounds(schedule: Schedule, s, t, data_range=(-1.0, 1.0)):
    """Corollary 3 on a trajectory: β̃_{s|t} ≤ σ*² ≤ β_{t|s}/α_{t|s}, and with data in [a, b]^d
    σ*² ≤ β̃_{s|t} + (ᾱ_s β_{t|s}²/β̄_t²) r². Returns (lower, upper_eq11, upper_eq12)."""
    b_ts = schedule.skip_beta(s, t)
    lower = schedule.skip_beta_tilde(s, t)
    ub11 = b_ts / schedule.skip_alpha(s, t)
    r = _check_data_range(data_range)
    if r is None:
        ub12 = np.full(np.shape(ub11), np.inf)
    else:
        ub12 = lower + schedule.alpha_bar[s] * b_ts**2 / schedule.beta_bar[t] ** 2 * r**2
    return lower, ub11, ub12


def handcrafted_sigma_sq(schedule: Schedule, s, t, method: str, eta: float = 0.0) -> np.ndarray:
    """The baselines: 'ddpm-large' σ² = β_{t|s}, 'ddpm-small' σ² = β̃_{s|t}, 'ddim' σ² = η²β̃_{s|t}."""
    choice("method", method, ("ddpm-large", "ddpm-small", "ddim"))
    if method == "ddpm-large":
        return schedule.skip_beta(s, t)
    if method == "ddpm-small":
        return schedule.skip_beta_tilde(s, t)
    return lambda_sq(schedule, s, t, "ddim", eta)


def pixel_clip_threshold(clip_pixel: float = 1.0) -> float:
    """The sampling-only clip of σ² on the step into τ_1 (P App. F.2): E|σε| ≤ y·2/255 per channel, i.e.
    σ² ≤ (y · (2/255) · √(π/2))². y = 1 gives 9.66e-5, y = 2 gives 3.87e-4 (Table 7)."""
    y = as_float("clip_pixel", clip_pixel)
    if y <= 0:
        raise ValueError(f"clip_pixel must be > 0 (the paper uses 1 or 2); got {y}.")
    return (y * 2.0 / 255.0 * math.sqrt(math.pi / 2.0)) ** 2


def reverse_variances(
    schedule: Schedule,
    trajectory,
    method: str,
    gamma=None,
    eta: float = 0.0,
    data_range=(-1.0, 1.0),
    clip: bool = True,
) -> ReverseVariances:
    """Reverse variances σ²_{s|t} along ``trajectory`` for one of the five methods.

    ``method``: 'ddpm-large' (β_{t|s}), 'ddpm-small' (β̃_{s|t}), 'analytic-ddpm', 'ddim' (η²β̃_{s|t}),
    'analytic-ddim'. Analytic methods need ``gamma`` (noise form, shape (N+1,)) and use Theorem 1, clipped into
    Theorem 2's [λ², min(eq. 11, eq. 12)] when ``clip`` (``data_range=None``: eq. 11 only, for unbounded data).
    Γ outside [0, 1] is clipped into it with a warning. Baselines report their handcrafted σ², never clipped.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an analytic_dpm.Schedule; got {type(schedule).__name__}. "
                        "Build one with Schedule.linear(N) or Schedule.from_betas(betas).")
    choice("method", method, METHODS)
    traj = validate_trajectory(trajectory, schedule.N)
    eta = check_eta(eta)
    family = family_of(method)
    if family == "ddpm" and eta != 0.0:
        raise ValueError(
            f"eta applies to the DDIM family only ('ddim', 'analytic-ddim'); got eta = {eta} with method "
            f"{method!r}. The DDPM family has λ² = β̃ (η = 1): leave eta at 0 or pick a DDIM method."
        )
    s, t = transitions(traj)
    lam2, ub11, ub12 = theorem2_bounds(schedule, s, t, family, eta, data_range)
    upper = np.minimum(ub11, ub12)
    if method in ANALYTIC_METHODS:
        if gamma is None:
            raise ValueError(
                f"method {method!r} needs gamma, Γ_n = E‖ε̂_n(x_n)‖²/d of shape (N+1,) = ({schedule.N + 1},). "
                "Estimate it with estimate_gamma(eps_model, schedule, data) or use data.gamma(schedule) on toy data."
            )
        g = _check_gamma(gamma, schedule.N, t)
        gamma_t = g[t]  # clipped into [0, 1]
        g2 = gap(schedule, s, t, family, eta) ** 2
        # the estimate from the Γ as given (Γ > 1 puts it below λ², Γ < 0 above eq. 11): reported, never used
        raw = lam2 + g2 * (1.0 - np.asarray(gamma, dtype=np.float64)[t])
        sigma_sq = lam2 + g2 * (1.0 - gamma_t)
        if clip:
            clipped = (raw < lam2) | (raw > upper)
            sigma_sq = np.clip(sigma_sq, lam2, upper)
        else:
            clipped = np.zeros(raw.shape, dtype=bool)
    else:
        gamma_t = np.full(t.shape, np.nan)
        raw = handcrafted_sigma_sq(schedule, s, t, method, eta)
        sigma_sq = raw
        clipped = np.zeros(raw.shape, dtype=bool)
    return ReverseVariances(
        trajectory=traj, method=method, eta=eta, sigma_sq=np.asarray(sigma_sq, dtype=np.float64),
        lambda_sq=lam2, lower=lam2.copy(), upper=upper, clipped=clipped, sigma_sq_unclipped=raw,
        upper_eq11=ub11, upper_eq12=ub12, gamma=gamma_t,
    )
