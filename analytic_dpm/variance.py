"""Reverse variances: Theorem 1 (optimal variance from Γ), Theorem 2 (bounds) with reported clipping, the DDPM
simplifications (Corollaries 2 and 3) and the handcrafted baselines (facts file §2, §3).

Γ is always in noise form: Γ_n = E‖ε̂_n(x_n)‖²/d = β̄_n E‖s_n(x_n)‖²/d ∈ [0, 1], an array of shape (N+1,) with
index 0 unused. For a transition (s, t) with g = √(β̄_t/α_{t|s}) − √(β̄_s − λ²):

* Theorem 1 (eq. 7 on a trajectory):  σ*² = λ² + g² (1 − Γ_t)
* Theorem 2 (eq. 11):                   λ² ≤ σ*² ≤ λ² + g²
* Theorem 2 (eq. 12), data in [a, b]^d: σ*² ≤ λ² + g² · r² ᾱ_t/β̄_t,  r = (b − a)/2
* the network's actual mean (residual form):  σ²_{s|t} = λ² + g² R_t,   R_t = E‖ε − ε̂_t(x_t)‖²/d

The residual form is the isotropic variance that minimises E KL(q(x_s|x_t, x_0) ‖ N(μ(x_t), σ²I)) for the mean
μ(x_t) = μ̃_{s|t}(x_t, x̂_0(x_t)) of the network one actually has (``theory`` entry ``residual-variance``): the mean
error is c·(x_0 − x̂_0) and E‖x_0 − x̂_0‖²/d = (β̄_t/ᾱ_t) R_t. For the optimal predictor R_t = 1 − Γ_t and it is
Theorem 1; for any other predictor it is the maximum-likelihood variance for that mean (the scalar form of the
extended paper's NPR-DPM). Theorem 2's bounds hold for the optimal mean only, so a residual variance above eq. 11/12
is legitimate: it is reported (``outside_bounds``), never clipped.

Nothing in the chain needs to subtract two numbers near 1: the analytic methods accept 1 − Γ_t directly
(``one_minus_gamma=``, e.g. the control-variate estimate of :func:`analytic_dpm.gamma.estimate_gamma`), and the
residual methods take R_t, which is small where 1 − Γ_t is small and estimated with a small relative error.
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
#: σ² = λ² + g² R_t from the residual R_t = E‖ε − ε̂_t‖²/d of the network's own mean (DDPM and DDIM families)
RESIDUAL_METHODS = ("residual-ddpm", "residual-ddim")
#: every method :func:`reverse_variances` accepts
ALL_METHODS = METHODS + RESIDUAL_METHODS


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
    gamma: np.ndarray  #: Γ_t used at each transition (NaN for the handcrafted baselines and the residual methods)
    one_minus_gamma: np.ndarray | None = None  #: 1 − Γ_t used (analytic methods; NaN elsewhere), kept to full precision
    residual: np.ndarray | None = None  #: R_t used (residual methods; NaN elsewhere)
    outside_bounds: np.ndarray | None = None  #: True where the estimate (before any clip) leaves Theorem 2's interval

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
    """Γ as a float64 (N+1,) array, finite at ``needed``, clipped into [0, 1] there (with a warning)."""
    g = _per_timestep_stat("gamma", gamma, N, needed, "Γ_n = E‖ε̂_n(x_n)‖²/d",
                           shape_fix="Use estimate_gamma(...) or pad a length-N array with a leading 0.",
                           finite_fix="Estimate Γ at those timesteps (estimate_gamma(..., timesteps=...)).").copy()
    # warned at the caller of reverse_variances
    g[needed] = _clip_unit_interval("gamma", g[needed], needed, "Γ = E‖ε̂‖²/d", "as the paper does", stacklevel=4)
    return g


def _per_timestep_stat(name: str, value, N: int, needed: np.ndarray, meaning: str, shape_fix: str,
                       finite_fix: str) -> np.ndarray:
    """``value`` as a float64 (N+1,) array, finite at ``needed`` (ValueError naming the argument otherwise)."""
    arr = as_float_array(name, value, fix=f"{name} must be an array of shape (N+1,) = ({N + 1},), {meaning}, index 0 "
                                         "unused.")
    if arr.shape != (N + 1,):
        raise ValueError(
            f"{name} must have shape (N+1,) = ({N + 1},) for this schedule, indexed by timestep n with index 0 "
            f"unused; got shape {arr.shape}. {shape_fix}"
        )
    bad = ~np.isfinite(arr[needed])
    if bad.any():
        raise ValueError(
            f"{name} must be finite at every timestep of the trajectory; got {_show(arr[needed][bad])} at n = "
            f"{_show(needed[bad])}. {finite_fix}"
        )
    return arr


def _clip_unit_interval(name: str, vals: np.ndarray, needed: np.ndarray, what: str, how: str,
                        stacklevel: int) -> np.ndarray:
    """``vals`` clipped into [0, 1], with a RuntimeWarning where they leave it (``stacklevel`` as for warnings.warn,
    counted from this function)."""
    out = (vals < 0.0) | (vals > 1.0)
    if out.any():
        warnings.warn(
            f"{name} lies outside [0, 1] at n = {_show(needed[out])} (values {_show(vals[out])}); {what} of the exact "
            "noise predictor lies in [0, 1], so these come from model or Monte Carlo error. They are clipped into "
            f"[0, 1], {how}.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    return np.clip(vals, 0.0, 1.0)


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


def residual_sigma_sq(schedule: Schedule, s, t, residual_t, family: str = "ddpm", eta: float = 0.0) -> np.ndarray:
    """The variance for the network's actual mean: σ²_{s|t} = λ² + g² R_t, R_t = E‖ε − ε̂_t(x_t)‖²/d (no clipping).

    It minimises E KL(q(x_s|x_t, x_0) ‖ N(μ̃_{s|t}(x_t, x̂_0(x_t)), σ²I)) over σ² for the given ε̂ (``theory`` entry
    ``residual-variance``); with R_t = 1 − Γ_t (the optimal predictor) it is Theorem 1.
    """
    lam2 = lambda_sq(schedule, s, t, family, eta)
    return lam2 + gap(schedule, s, t, family, eta) ** 2 * np.asarray(residual_t, dtype=np.float64)


def _stat_from_estimate(gamma, attr: str):
    """``gamma.<attr>`` when ``gamma`` is a GammaEstimate that carries it, else None."""
    return getattr(gamma, attr, None) if hasattr(gamma, "num_samples") else None


def reverse_variances(
    schedule: Schedule,
    trajectory,
    method: str,
    gamma=None,
    eta: float = 0.0,
    data_range=(-1.0, 1.0),
    clip: bool = True,
    *,
    one_minus_gamma=None,
    residual=None,
) -> ReverseVariances:
    """Reverse variances σ²_{s|t} along ``trajectory`` for one of the methods in :data:`ALL_METHODS`.

    ``method``: 'ddpm-large' (β_{t|s}), 'ddpm-small' (β̃_{s|t}), 'analytic-ddpm', 'ddim' (η²β̃_{s|t}),
    'analytic-ddim', 'residual-ddpm', 'residual-ddim'.

    * Analytic methods use Theorem 1, σ̂² = λ² + g²(1 − Γ_t), from ``gamma`` (noise form, shape (N+1,)) or from
      ``one_minus_gamma`` = 1 − Γ (shape (N+1,), e.g. ``GammaEstimate.one_minus_gamma``, which keeps its digits
      where Γ_t is near 1); pass one of the two. The estimate is clipped into Theorem 2's [λ², min(eq. 11, eq. 12)]
      when ``clip`` (``data_range=None``: eq. 11 only, for unbounded data). Γ (or 1 − Γ) outside [0, 1] is clipped
      into it with a warning.
    * Residual methods use σ² = λ² + g² R_t from ``residual`` R = E‖ε − ε̂‖²/d (shape (N+1,), >= 0), the
      maximum-likelihood variance for the network's own mean. A :class:`~analytic_dpm.gamma.GammaEstimate` passed as
      ``gamma`` supplies its ``residual``. Never clipped (Theorem 2 holds for the optimal mean only); where σ² leaves
      Theorem 2's interval the transition is reported in ``outside_bounds``.
    * Baselines report their handcrafted σ², never clipped.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an analytic_dpm.Schedule; got {type(schedule).__name__}. "
                        "Build one with Schedule.linear(N) or Schedule.from_betas(betas).")
    choice("method", method, ALL_METHODS)
    traj = validate_trajectory(trajectory, schedule.N)
    eta = check_eta(eta)
    family = family_of(method)
    if family == "ddpm" and eta != 0.0:
        raise ValueError(
            f"eta applies to the DDIM family only ('ddim', 'analytic-ddim', 'residual-ddim'); got eta = {eta} with "
            f"method {method!r}. The DDPM family has λ² = β̃ (η = 1): leave eta at 0 or pick a DDIM method."
        )
    s, t = transitions(traj)
    N = schedule.N
    lam2, ub11, ub12 = theorem2_bounds(schedule, s, t, family, eta, data_range)
    upper = np.minimum(ub11, ub12)
    nan_k = np.full(t.shape, np.nan)
    gamma_t, omg_t, res_t = nan_k, nan_k.copy(), nan_k.copy()
    if method in ANALYTIC_METHODS:
        if residual is not None:
            raise ValueError(
                f"residual applies to the residual methods {RESIDUAL_METHODS}; method {method!r} uses Theorem 1 "
                "(gamma= or one_minus_gamma=). Pick 'residual-ddpm'/'residual-ddim' to use R."
            )
        if gamma is None and one_minus_gamma is None:
            raise ValueError(
                f"method {method!r} needs gamma, Γ_n = E‖ε̂_n(x_n)‖²/d of shape (N+1,) = ({N + 1},), or "
                "one_minus_gamma = 1 − Γ. Estimate it with estimate_gamma(eps_model, schedule, data) or use "
                "data.gamma(schedule) on toy data."
            )
        if gamma is not None and one_minus_gamma is not None:
            raise ValueError(
                f"pass gamma or one_minus_gamma for method {method!r}, not both: they describe the same quantity "
                "(one_minus_gamma = 1 − Γ keeps its digits near Γ = 1)."
            )
        if one_minus_gamma is not None:
            how = "Use GammaEstimate.one_minus_gamma, or data.one_minus_gamma(schedule) on toy data."
            omg = _per_timestep_stat("one_minus_gamma", one_minus_gamma, N, t, "1 − Γ_n", shape_fix=how,
                                     finite_fix=how)[t]
            raw_factor = omg
            omg_t = _clip_unit_interval("one_minus_gamma", omg, t, "1 − Γ", "as the paper does with Γ", stacklevel=3)
            gamma_t = 1.0 - omg_t
        else:
            g = _check_gamma(gamma, N, t)
            raw_factor = 1.0 - np.asarray(gamma, dtype=np.float64)[t]
            gamma_t = g[t]  # clipped into [0, 1]
            omg_t = 1.0 - gamma_t
        g2 = gap(schedule, s, t, family, eta) ** 2
        # the estimate from the Γ as given (Γ > 1 puts it below λ², Γ < 0 above eq. 11): reported, never used
        raw = lam2 + g2 * raw_factor
        sigma_sq = lam2 + g2 * omg_t
        outside = (raw < lam2) | (raw > upper)
        if clip:
            clipped = outside.copy()
            sigma_sq = np.clip(sigma_sq, lam2, upper)
        else:
            clipped = np.zeros(raw.shape, dtype=bool)
    elif method in RESIDUAL_METHODS:
        if one_minus_gamma is not None:
            raise ValueError(
                f"one_minus_gamma applies to the analytic methods {ANALYTIC_METHODS}; method {method!r} needs "
                "residual = E‖ε − ε̂‖²/d (for the optimal predictor R = 1 − Γ: pass it as residual=)."
            )
        if residual is None:
            residual = _stat_from_estimate(gamma, "residual")
        elif gamma is not None and not hasattr(gamma, "num_samples"):
            raise ValueError(f"method {method!r} uses residual, not gamma; pass only residual=.")
        if residual is None:
            raise ValueError(
                f"method {method!r} needs residual, R_n = E‖ε − ε̂_n(x_n)‖²/d of shape (N+1,) = ({N + 1},): "
                "estimate_gamma(...) returns it as GammaEstimate.residual (no extra network evaluations); on toy "
                "data use toy.exact_residual_of_imperfect or data.one_minus_gamma(schedule) for the exact ε*."
            )
        how = "Estimate it at those timesteps with estimate_gamma(..., timesteps=...)."
        R = _per_timestep_stat("residual", residual, N, t, "R_n = E‖ε − ε̂_n(x_n)‖²/d", shape_fix=how,
                               finite_fix=how)[t]
        neg = R < 0.0
        if neg.any():
            raise ValueError(
                f"residual R_n = E‖ε − ε̂_n‖²/d is a mean of squares and cannot be negative; got {_show(R[neg])} at "
                f"n = {_show(t[neg])}. Pass GammaEstimate.residual, not the control-variate 1 − Γ estimate."
            )
        res_t = R
        raw = lam2 + gap(schedule, s, t, family, eta) ** 2 * R
        sigma_sq = raw
        outside = (raw < lam2) | (raw > upper)
        clipped = np.zeros(raw.shape, dtype=bool)
    else:
        raw = handcrafted_sigma_sq(schedule, s, t, method, eta)
        sigma_sq = raw
        clipped = np.zeros(raw.shape, dtype=bool)
        outside = (raw < lam2) | (raw > upper)
    return ReverseVariances(
        trajectory=traj, method=method, eta=eta, sigma_sq=np.asarray(sigma_sq, dtype=np.float64),
        lambda_sq=lam2, lower=lam2.copy(), upper=upper, clipped=clipped, sigma_sq_unclipped=raw,
        upper_eq11=ub11, upper_eq12=ub12, gamma=gamma_t, one_minus_gamma=omg_t, residual=res_t,
        outside_bounds=outside,
    )
