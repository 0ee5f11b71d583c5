"""Checkers: test a variance rule, a Γ estimate, an ε-model or a sampler against Analytic-DPM's theory.

Each ``assert_*`` function raises ``AssertionError`` with a readable message that names the offending step (transition
k and its (s, t), timestep n, or coordinate), the value, the bound or the exact value, and by how much it misses;
otherwise it returns what it computed, for further checks. Bad *arguments* (wrong lengths, wrong types) raise
``ValueError``/``TypeError`` as everywhere in the library.

* :func:`assert_variances_within_bounds`: a σ² sequence on a trajectory within Theorem 2's bounds (P eqs. 11–12),
  λ²_{s|t} ≤ σ² ≤ min(λ² + g², λ² + g² r² ᾱ_t/β̄_t). :func:`variance_bounds_report` gives the full per-step report.
* :func:`assert_gamma_consistent`: a Γ vector with Jensen's Γ_n = E‖ε̂_n‖²/d ≤ 1 (P eq. 8, for the exact ε*) within
  its standard errors, and Γ_n ≥ 0.
* :func:`assert_eps_model_gamma_matches`: an ε-model's Monte Carlo Γ̂ (P eq. 9) equals the exact Γ of toy data.
* :func:`assert_sampler_matches_exact`: a sampler's output on toy Gaussian data has the mean and covariance of
  :func:`analytic_dpm.toy.evaluate_exact`'s generated distribution, within Monte Carlo error (any method of
  :data:`~analytic_dpm.variance.ALL_METHODS`, with the exact ε* or a deliberately imperfect ``eps_model``).
* :func:`assert_residual_variance_optimal`: a variance for the network's own mean (the residual form, ``theory``
  entry ``residual-variance``) equals λ² + g²R_t, R_t = E‖ε − ε̂_t‖²/d, and is the per-transition minimiser of the
  expected KL for that mean error (against perturbed σ²); with the exact predictor's 1 − Γ given it must also be
  Theorem 1's σ*². Where it leaves Theorem 2's bounds is reported, never a failure (the bounds hold for the optimal
  mean only). :func:`residual_variance_report` gives the full per-step report; :func:`variance_bounds_report` takes
  ``residual=`` to show the residual variance next to any σ².

Statistical checks use a threshold in standard errors. ``n_sigma=None`` (the default) picks it by Bonferroni's rule so
that a correct input fails with probability at most ``false_alarm`` (default 1e-3) however many values are compared;
the seeds are fixed, so a check that passes once passes every time.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtri

from .._validate import _show, as_float, as_float_array, as_int, check_data_range, choice
from ..likelihood import exact_mean_transition_kl
from ..posterior import check_eta, posterior_coefficients
from ..schedules import Schedule
from ..trajectories import transitions, validate_trajectory
from ..variance import ALL_METHODS, reverse_variances, theorem2_bounds

THEOREM2_TEXT = (
    "Theorem 2 (P eqs. 11–12): λ² ≤ σ*² ≤ λ² + g² with g = √(β̄_t/α_{t|s}) − √(β̄_s − λ²), and for data in "
    "[a, b]^d also σ*² ≤ λ² + g² r² ᾱ_t/β̄_t, r = (b − a)/2. The optimal variance lies within these bounds for any "
    "data, so a σ² outside them is not optimal for any data."
)

RESIDUAL_TEXT = (
    "Residual variance (theory entry residual-variance): for the network's own mean μ̃_{s|t}(x_t, x̂_0(x_t)) the mean "
    "error per dimension is g²R_t with R_t = E‖ε − ε̂_t(x_t)‖²/d, and E KL(q(x_s|x_t, x_0) ‖ N(μ, σ²I))/d = "
    "½[λ²/σ² + g²R_t/σ² − 1 + log(σ²/λ²)] is minimised exactly at σ² = λ² + g²R_t. For the exact predictor "
    "R_t = 1 − Γ_t and this is Theorem 1. Theorem 2's bounds hold for the optimal mean only: a residual variance "
    "outside them is legitimate (reported, not a failure)."
)
#: σ² multipliers :func:`assert_residual_variance_optimal` compares the expected KL against (on both sides of 1)
PERTURBATION_FACTORS = (0.5, 0.9, 0.99, 0.999, 1.001, 1.01, 1.1, 2.0)


# ---------------------------------------------------------------------------------------------------- helpers
def _check_schedule(schedule) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an analytic_dpm.Schedule; got {type(schedule).__name__}. "
                        "Build one with Schedule.linear(N), Schedule.cosine(N) or Schedule.from_betas(betas).")
    return schedule


def normalize_data_range(data_range):
    """``None`` (unbounded data: eq. 11 only), a number r > 0 (data in [−r, r]) or a pair (a, b) with a < b."""
    if data_range is None:
        return None
    if np.ndim(data_range) == 0 and not isinstance(data_range, str):
        r = as_float("data_range", data_range)
        if r <= 0:
            raise ValueError(f"data_range given as one number r means data in [−r, r] and must be > 0; got {r}. "
                             "Pass (a, b) for another interval, or None for unbounded data.")
        return (-r, r)
    return check_data_range(data_range)


def _residual_array(residual, N: int) -> np.ndarray:
    """R as a float64 (N+1,) array from an array or a GammaEstimate (its ``residual``; ValueError if it has none)."""
    if hasattr(residual, "num_samples") and hasattr(residual, "gamma"):  # a GammaEstimate
        if getattr(residual, "residual", None) is None:
            raise ValueError(
                "the GammaEstimate passed as residual has no 'residual' (saved by an older version of analytic_dpm, "
                "or built from Γ alone); rerun estimate_gamma, which returns R̂ = mean ‖ε − ε̂‖²/d from the same "
                "network evaluations."
            )
        residual = residual.residual
    arr = as_float_array("residual", residual,
                         fix=f"Pass R_n = E‖ε − ε̂_n‖²/d as an array of shape (N+1,) = ({N + 1},), index 0 unused, or "
                             "a GammaEstimate.")
    if arr.shape != (N + 1,):
        raise ValueError(f"residual must have shape (N+1,) = ({N + 1},), indexed by timestep n with index 0 unused; "
                         f"got shape {arr.shape}. Pad a length-N array with a leading 0.")
    return arr


def z_threshold(n_sigma=None, count: int = 1, false_alarm: float = 1e-3, two_sided: bool = True) -> float:
    """The threshold in standard errors: ``n_sigma`` if given, else Bonferroni's z for ``count`` comparisons with a
    family-wise false-alarm probability ``false_alarm`` (e.g. 3.29 for one two-sided comparison at 1e-3)."""
    if n_sigma is not None:
        z = as_float("n_sigma", n_sigma)
        if z <= 0:
            raise ValueError(f"n_sigma must be > 0 (a number of standard errors, e.g. 5); got {z}.")
        return z
    fa = as_float("false_alarm", false_alarm)
    if not 0.0 < fa < 1.0:
        raise ValueError(f"false_alarm must lie in (0, 1) (e.g. 1e-3); got {fa}.")
    count = max(int(count), 1)
    return float(-ndtri(fa / (count * (2 if two_sided else 1))))


def _fmt(v) -> str:
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.6g}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.4e}"


def _listing(lines: list[str], limit: int) -> str:
    shown = lines[:limit]
    more = f"\n  … and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join("  " + ln for ln in shown) + more


# ---------------------------------------------------------------------------------------------------- Theorem 2
@dataclass(frozen=True, eq=False)
class VarianceBoundsReport:
    """σ² on a trajectory against Theorem 2's bounds, per transition: entry k−1 is (s, t) = (τ_{k−1}, τ_k).

    ``status[k−1]`` is ``"ok"``, ``"below lower"`` (σ² < λ²), ``"above eq. 11"``, ``"above eq. 12"`` (σ² above the
    smaller upper bound, named) or ``"not finite"``. ``excess`` is by how much σ² misses the violated bound (σ² − upper
    or λ² − σ², > 0), 0 where it is within; ``relative_excess`` is σ²/bound − 1 (NaN when the bound is 0).
    """

    schedule: Schedule
    trajectory: np.ndarray
    family: str  #: "ddpm" (λ² = β̃), "ddim" (λ² = η²β̃) or "custom" (λ² given)
    eta: float | None
    data_range: tuple | None
    rtol: float
    atol: float
    sigma_sq: np.ndarray
    lower: np.ndarray  #: λ²_{s|t}
    upper_eq11: np.ndarray  #: λ² + g²
    upper_eq12: np.ndarray  #: λ² + g² r² ᾱ_t/β̄_t (inf without a data range)
    status: np.ndarray
    sigma_sq_opt: np.ndarray | None = None  #: Theorem 1's σ*² from a given Γ (clipped into the bounds), if given
    gamma_t: np.ndarray | None = field(default=None, repr=False)  #: Γ_t used for sigma_sq_opt
    #: the residual variance λ² + g²R_t from a given R (never clipped), if given
    sigma_sq_residual: np.ndarray | None = None
    residual_t: np.ndarray | None = field(default=None, repr=False)  #: R_t used for sigma_sq_residual

    @property
    def K(self) -> int:
        return int(self.sigma_sq.shape[0])

    @property
    def s(self) -> np.ndarray:
        return self.trajectory[:-1]

    @property
    def t(self) -> np.ndarray:
        return self.trajectory[1:]

    @property
    def upper(self) -> np.ndarray:
        """min(eq. 11, eq. 12): the upper bound σ² is checked against."""
        return np.minimum(self.upper_eq11, self.upper_eq12)

    @property
    def outside(self) -> np.ndarray:
        """True where σ² is outside the bounds (or not finite)."""
        return self.status != "ok"

    @property
    def ok(self) -> bool:
        return not bool(self.outside.any())

    @property
    def excess(self) -> np.ndarray:
        out = np.zeros(self.K)
        above = np.char.startswith(self.status.astype(str), "above")
        below = self.status == "below lower"
        out[above] = (self.sigma_sq - self.upper)[above]
        out[below] = (self.lower - self.sigma_sq)[below]
        out[self.status == "not finite"] = np.nan
        return out

    @property
    def relative_excess(self) -> np.ndarray:
        out = np.zeros(self.K)
        above = np.char.startswith(self.status.astype(str), "above")
        below = self.status == "below lower"
        with np.errstate(divide="ignore", invalid="ignore"):
            out[above] = (self.sigma_sq / self.upper - 1.0)[above]
            rel_lo = np.where(self.lower > 0, self.sigma_sq / np.where(self.lower > 0, self.lower, 1.0) - 1.0, np.nan)
        out[below] = rel_lo[below]
        out[self.status == "not finite"] = np.nan
        return out

    @property
    def residual_outside_bounds(self) -> np.ndarray | None:
        """True where the residual variance λ² + g²R_t leaves the bounds (same tolerances); None without ``residual``.
        Legitimate for an imperfect mean (Theorem 2 holds for the optimal mean only): reported, never a failure."""
        if self.sigma_sq_residual is None:
            return None
        v = self.sigma_sq_residual
        return (v > self.upper * (1 + self.rtol) + self.atol) | (v < self.lower * (1 - self.rtol) - self.atol)

    def format_residual_note(self, limit: int = 20) -> str:
        """One line per transition where the residual variance leaves Theorem 2's bounds ('' without ``residual`` or
        when it stays within): information, not a violation."""
        out = self.residual_outside_bounds
        if out is None or not out.any():
            return ""
        lines = []
        for i in np.flatnonzero(out):
            v = self.sigma_sq_residual[i]
            side, bound = ("below", self.lower[i]) if v < self.lower[i] else ("above", self.upper[i])
            lines.append(f"step k = {i + 1} (s, t) = ({self.s[i]}, {self.t[i]}): λ² + g²R_t = {_fmt(v)} "
                         f"(R_t = {_fmt(self.residual_t[i])}) {side} the bound {_fmt(bound)}")
        return (f"note: the residual variance λ² + g²R_t leaves Theorem 2's bounds at {len(lines)} of {self.K} "
                f"transitions (not a failure: the bounds hold for the optimal mean only):\n{_listing(lines, limit)}")

    def describe_family(self) -> str:
        if self.family == "ddim":
            fam = f"DDIM family, λ² = η²β̃_{{s|t}} with η = {self.eta:g}"
        else:
            fam = "DDPM family, λ² = β̃_{s|t}" if self.family == "ddpm" else "λ² given per transition"
        rng = ("unbounded data: eq. 11 only" if self.data_range is None
               else f"data in [{self.data_range[0]:g}, {self.data_range[1]:g}]: min(eq. 11, eq. 12)")
        return f"{fam}; {rng}; rtol = {self.rtol:g}, atol = {self.atol:g}"

    def violations(self) -> list[dict]:
        """One dict per transition outside the bounds: k, s, t, sigma_sq, bound (name), bound_value, excess,
        relative_excess."""
        out = []
        exc, rel = self.excess, self.relative_excess
        for i in np.flatnonzero(self.outside):
            st = str(self.status[i])
            if st == "below lower":
                name, val = "lower bound λ²", self.lower[i]
            elif st == "not finite":
                name, val = "finite", float("nan")
            else:
                name, val = f"upper bound ({st[6:]})", self.upper[i]
            out.append(dict(k=int(i) + 1, s=int(self.s[i]), t=int(self.t[i]), sigma_sq=float(self.sigma_sq[i]),
                            status=st, bound=name, bound_value=float(val), excess=float(exc[i]),
                            relative_excess=float(rel[i])))
        return out

    def format_violations(self, limit: int = 20) -> str:
        """The message :func:`assert_variances_within_bounds` raises: one line per offending transition."""
        v = self.violations()
        if not v:
            return f"σ² lies within Theorem 2's bounds at all {self.K} transitions ({self.describe_family()})."
        lines = []
        for d in v:
            head = f"step k = {d['k']} (s, t) = ({d['s']}, {d['t']}): σ² = {_fmt(d['sigma_sq'])}"
            if d["status"] == "not finite":
                lines.append(f"{head} is not finite")
                continue
            side = "below" if d["status"] == "below lower" else "above"
            rel = "" if not math.isfinite(d["relative_excess"]) else f" ({100 * d['relative_excess']:+.4g}%)"
            lines.append(f"{head} {side} the {d['bound']} = {_fmt(d['bound_value'])} by {_fmt(d['excess'])}{rel}")
        return (f"σ² outside Theorem 2's bounds at {len(v)} of {self.K} transitions ({self.describe_family()}):\n"
                f"{_listing(lines, limit)}\n{THEOREM2_TEXT}")

    def format_table(self) -> str:
        """A text table of every transition: k, s, t, σ², λ², upper bounds, σ*² (if Γ was given), status."""
        cols = ["k", "s", "t", "sigma_sq", "lower λ²", "upper eq.11", "upper eq.12"]
        if self.sigma_sq_opt is not None:
            cols.append("σ*² (Γ)")
        if self.sigma_sq_residual is not None:
            cols.append("σ² (R)")
        cols += ["excess", "status"]
        rows = []
        exc = self.excess
        for i in range(self.K):
            r = [str(i + 1), str(self.s[i]), str(self.t[i]), _fmt(self.sigma_sq[i]), _fmt(self.lower[i]),
                 _fmt(self.upper_eq11[i]), "—" if not np.isfinite(self.upper_eq12[i]) else _fmt(self.upper_eq12[i])]
            if self.sigma_sq_opt is not None:
                r.append(_fmt(self.sigma_sq_opt[i]))
            if self.sigma_sq_residual is not None:
                r.append(_fmt(self.sigma_sq_residual[i]) + ("!" if self.residual_outside_bounds[i] else " "))
            r += ["" if exc[i] == 0 else _fmt(exc[i]), str(self.status[i])]
            rows.append(r)
        widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(cols)]
        line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
        out = [line, "-" * len(line), *("  ".join(x.rjust(w) for x, w in zip(r, widths)) for r in rows)]
        if self.sigma_sq_residual is not None:
            out.append("(σ² (R) = λ² + g²R_t, the variance for the network's own mean; ! = outside Theorem 2's bounds, "
                       "which hold for the optimal mean only)")
        return "\n".join(out)

    def to_dict(self) -> dict:
        """A JSON-friendly description (inf written as None)."""
        def num(x):
            x = float(x)
            return x if math.isfinite(x) else None

        steps = []
        exc, rel = self.excess, self.relative_excess
        for i in range(self.K):
            d = dict(k=i + 1, s=int(self.s[i]), t=int(self.t[i]), sigma_sq=num(self.sigma_sq[i]),
                     lower=num(self.lower[i]), upper_eq11=num(self.upper_eq11[i]), upper_eq12=num(self.upper_eq12[i]),
                     upper=num(self.upper[i]), status=str(self.status[i]), excess=num(exc[i]),
                     relative_excess=num(rel[i]))
            if self.sigma_sq_opt is not None:
                d["sigma_sq_opt"] = num(self.sigma_sq_opt[i])
            if self.sigma_sq_residual is not None:
                d["residual"] = num(self.residual_t[i])
                d["sigma_sq_residual"] = num(self.sigma_sq_residual[i])
                d["residual_outside_bounds"] = bool(self.residual_outside_bounds[i])
            steps.append(d)
        out = dict(ok=self.ok, schedule=repr(self.schedule), N=self.schedule.N,
                   trajectory=[int(x) for x in self.trajectory], family=self.family, eta=self.eta,
                   data_range=None if self.data_range is None else list(self.data_range), rtol=self.rtol,
                   atol=self.atol, num_outside=int(self.outside.sum()), steps=steps, violations=self.violations())
        if self.sigma_sq_residual is not None:
            out["num_residual_outside"] = int(self.residual_outside_bounds.sum())
        return out


def _custom_bounds(schedule: Schedule, s, t, lam2, r):
    """Theorem 2 for an arbitrary λ² ∈ [0, β̄_s] per transition: g = (β_{t|s}/α_{t|s} + λ²)/(√(β̄_t/α_{t|s}) +
    √(β̄_s − λ²)), which is √(β̄_t/α_{t|s}) − √(β̄_s − λ²) written without cancellation."""
    a_ts = schedule.skip_alpha(s, t)
    b_ts = schedule.skip_beta(s, t)
    residual = np.maximum(schedule.beta_bar[s] - lam2, 0.0)
    g = (b_ts / a_ts + lam2) / (np.sqrt(schedule.beta_bar[t] / a_ts) + np.sqrt(residual))
    ub11 = lam2 + g**2
    if r is None:
        ub12 = np.full(ub11.shape, np.inf)
    else:
        ub12 = lam2 + g**2 * r**2 * schedule.alpha_bar[t] / schedule.beta_bar[t]
    return ub11, ub12, g


def _as_sigma_sq(sigma_sq, K: int, traj) -> np.ndarray:
    """One float64 σ² per transition (numpy, list or torch); ValueError naming K and the trajectory otherwise."""
    sig = np.asarray(sigma_sq, dtype=np.float64) if not hasattr(sigma_sq, "detach") else \
        np.asarray(sigma_sq.detach().cpu().double().numpy())
    if sig.ndim == 2 and 1 in sig.shape:
        sig = sig.reshape(-1)
    if sig.ndim != 1 or sig.size != K:
        raise ValueError(
            f"sigma_sq must hold one variance per transition (τ_{{k−1}}, τ_k), k = 1..K, in trajectory order: K = {K} "
            f"values for trajectory {_show(traj)}; got shape {sig.shape}. A per-timestep array of shape (N+1,) can be "
            "indexed as sigma_sq[trajectory[1:]]."
        )
    return sig


def variance_bounds_report(schedule: Schedule, trajectory, sigma_sq, *, eta=None, lambda_sq=None, data_range=None,
                           gamma=None, rtol: float = 1e-6, atol: float = 0.0, residual=None) -> VarianceBoundsReport:
    """Compare σ²_{s|t} on ``trajectory`` (one value per transition (τ_{k−1}, τ_k), k = 1..K, in that order) with
    Theorem 2's bounds λ² ≤ σ² ≤ min(λ² + g², λ² + g² r² ᾱ_t/β̄_t) (P eqs. 11–12), as computed by
    :func:`analytic_dpm.variance.theorem2_bounds`.

    * λ²: ``eta=None`` and ``lambda_sq=None`` → DDPM family, λ² = β̃_{s|t}; ``eta`` → DDIM family, λ² = η²β̃_{s|t};
      ``lambda_sq`` → any generalised forward process, one λ² ∈ [0, β̄_s] per transition.
    * ``data_range``: None (unbounded data, eq. 11 only), r (data in [−r, r]) or (a, b).
    * ``gamma`` (optional, shape (N+1,) noise form, or a GammaEstimate): also report Theorem 1's σ*² for comparison.
    * ``residual`` (optional, R_n = E‖ε − ε̂_n‖²/d of shape (N+1,), >= 0, or a GammaEstimate carrying it): also report
      the residual variance λ² + g²R_t for the network's own mean (``sigma_sq_residual``), and where it leaves the
      bounds (``residual_outside_bounds``, :meth:`~VarianceBoundsReport.format_residual_note`): information, never
      part of ``ok``, since Theorem 2 holds for the optimal mean only.
    * A value counts as outside when σ² > upper·(1 + rtol) + atol or σ² < λ²·(1 − rtol) − atol. The default rtol suits
      float64 rules; for variances computed in float32 (e.g. a torch scheduler) pass rtol ≈ 1e-3.
    """
    schedule = _check_schedule(schedule)
    traj = validate_trajectory(trajectory, schedule.N)
    s, t = transitions(traj)
    K = int(s.size)
    sig = _as_sigma_sq(sigma_sq, K, traj)
    rtol = as_float("rtol", rtol)
    atol = as_float("atol", atol)
    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol and atol must be >= 0; got rtol = {rtol}, atol = {atol}.")
    dr = normalize_data_range(data_range)
    r = None if dr is None else (dr[1] - dr[0]) / 2.0
    if lambda_sq is not None and eta is not None:
        raise ValueError("pass either eta (DDIM family, λ² = η²β̃) or lambda_sq (λ² per transition), not both; with "
                         "neither, λ² = β̃ (DDPM family).")
    if lambda_sq is not None:
        family, eta_v = "custom", None
        lam2 = as_float_array("lambda_sq", lambda_sq, fix=f"Pass one λ² per transition, K = {K} values.")
        if lam2.shape != (K,):
            raise ValueError(f"lambda_sq must hold one λ² per transition, K = {K} values; got shape {lam2.shape}.")
        bs = schedule.beta_bar[s]
        bad = ~np.isfinite(lam2) | (lam2 < 0) | (lam2 > bs * (1 + 1e-12))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"lambda_sq must lie in [0, β̄_s] (the variance of q(x_s|x_t, x_0) cannot exceed that of x_s); got "
                f"λ² = {lam2[i]:.6g} at step k = {i + 1}, (s, t) = ({s[i]}, {t[i]}), where β̄_s = {bs[i]:.6g}.")
        lam2 = np.minimum(lam2, bs)
        ub11, ub12, g = _custom_bounds(schedule, s, t, lam2, r)
    else:
        family = "ddpm" if eta is None else "ddim"
        eta_v = None if eta is None else check_eta(eta)
        lam2, ub11, ub12 = theorem2_bounds(schedule, s, t, family, 0.0 if eta_v is None else eta_v, dr)
    lam2, ub11, ub12 = (np.asarray(a, dtype=np.float64).reshape(K) for a in (lam2, ub11, ub12))
    upper = np.minimum(ub11, ub12)
    status = np.full(K, "ok", dtype=object)
    finite = np.isfinite(sig)
    with np.errstate(invalid="ignore"):
        above = finite & (sig > upper * (1 + rtol) + atol)
        below = finite & (sig < lam2 * (1 - rtol) - atol)
    status[above] = np.where(ub12 < ub11, "above eq. 12", "above eq. 11")[above]
    status[below] = "below lower"
    status[~finite] = "not finite"

    opt = gamma_t = None
    if gamma is not None:
        gfull = np.asarray(gamma, dtype=np.float64)
        if family == "custom":
            if gfull.shape != (schedule.N + 1,):
                raise ValueError(f"gamma must have shape (N+1,) = ({schedule.N + 1},); got shape {gfull.shape}.")
            gamma_t = gfull[t]
            if not np.all(np.isfinite(gamma_t)):
                raise ValueError(f"gamma must be finite at the trajectory's timesteps; got {_show(gamma_t)}.")
            opt = np.clip(lam2 + g**2 * (1.0 - np.clip(gamma_t, 0.0, 1.0)), lam2, upper)
        else:
            method = "analytic-ddpm" if family == "ddpm" else "analytic-ddim"
            rv = reverse_variances(schedule, traj, method, gamma=gfull, eta=0.0 if eta_v is None else eta_v,
                                   data_range=dr, clip=True)
            opt, gamma_t = rv.sigma_sq, rv.gamma
    res_sig = res_t = None
    if residual is not None:
        rfull = _residual_array(residual, schedule.N)
        if family == "custom":
            res_t = rfull[t]
            if not np.all(np.isfinite(res_t)) or np.any(res_t < 0):
                raise ValueError(f"residual must be finite and >= 0 at the trajectory's timesteps; got {_show(res_t)}.")
            res_sig = lam2 + g**2 * res_t
        else:
            rv = reverse_variances(schedule, traj, "residual-ddpm" if family == "ddpm" else "residual-ddim",
                                   residual=rfull, eta=0.0 if eta_v is None else eta_v, data_range=dr)
            res_sig, res_t = rv.sigma_sq, rv.residual
    return VarianceBoundsReport(
        schedule=schedule, trajectory=traj, family=family, eta=eta_v, data_range=dr, rtol=rtol, atol=atol,
        sigma_sq=sig, lower=lam2, upper_eq11=ub11, upper_eq12=ub12, status=status.astype(str),
        sigma_sq_opt=opt, gamma_t=gamma_t, sigma_sq_residual=res_sig, residual_t=res_t,
    )


def assert_variances_within_bounds(schedule: Schedule, trajectory, sigma_sq, *, eta=None, lambda_sq=None,
                                   data_range=None, rtol: float = 1e-6, atol: float = 0.0,
                                   limit: int = 20) -> VarianceBoundsReport:
    """Assert that σ²_{s|t} (one value per transition of ``trajectory``, in order) lies within Theorem 2's bounds
    λ² ≤ σ² ≤ λ² + g² (eq. 11) and, with ``data_range``, σ² ≤ λ² + g² r² ᾱ_t/β̄_t (eq. 12).

    λ² is β̃_{s|t} (DDPM family) unless ``eta`` (DDIM family, η²β̃) or ``lambda_sq`` (one per transition) is given.
    Raises ``AssertionError`` listing every offending step: k, (s, t), σ², the violated bound and by how much (at most
    ``limit`` lines). Returns the :class:`VarianceBoundsReport` when all steps are within. Arguments as in
    :func:`variance_bounds_report`.
    """
    rep = variance_bounds_report(schedule, trajectory, sigma_sq, eta=eta, lambda_sq=lambda_sq, data_range=data_range,
                                 rtol=rtol, atol=atol)
    if not rep.ok:
        raise AssertionError(rep.format_violations(limit=limit))
    return rep


# ---------------------------------------------------------------------------------------------------- Γ
def _gamma_arrays(gamma, stderr):
    if stderr is None and hasattr(gamma, "stderr") and hasattr(gamma, "gamma"):
        gamma, stderr = gamma.gamma, gamma.stderr
    g = as_float_array("gamma", gamma, fix="Pass Γ as a 1-D array (shape (N+1,), index 0 unused) or a GammaEstimate.")
    if stderr is None:
        se = np.zeros_like(g)
    else:
        se = np.asarray(stderr, dtype=np.float64)
        if se.ndim == 0:
            se = np.full(g.shape, float(se))
        if se.shape != g.shape:
            raise ValueError(f"stderr must be a number or have the shape of gamma {g.shape}; got shape {se.shape}.")
        if np.any(se[np.isfinite(se)] < 0):
            raise ValueError(f"stderr must be >= 0; got {_show(se[se < 0])}.")
    return g, se


def _labels(g, timesteps):
    """(positions to check, timestep label of each)."""
    if timesteps is None:
        pos = np.arange(1, g.size)
        return pos, pos
    ts = np.asarray(timesteps)
    if ts.ndim != 1 or ts.shape != g.shape or not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"timesteps must be integers, one per entry of gamma (shape {g.shape}); got {_show(ts)}. "
                         "Leave it None for the library's (N+1,) arrays indexed by n.")
    return np.arange(g.size), ts


def assert_gamma_consistent(gamma, stderr=None, *, n_sigma=None, false_alarm: float = 1e-3, timesteps=None,
                            limit: int = 20) -> float:
    """Assert that Γ_n = E‖ε̂_n(x_n)‖²/d is consistent with Jensen's inequality Γ_n ≤ 1 within its standard errors,
    Γ_n ≤ 1 + z·stderr_n, and that Γ_n ≥ 0 (a mean of squares; no tolerance).

    For the exact noise predictor ε* = E[ε | x_n], Jensen gives E‖ε*‖² ≤ E‖ε‖² = d, so Γ_n ∈ [0, 1] (P eq. 8 in
    noise form); a Monte Carlo estimate may exceed 1 only by its error. Γ̂ far above 1 means model error (e.g. a
    biased ε-model), which Theorem 2's clipping then hides.

    ``gamma``: a :class:`~analytic_dpm.gamma.GammaEstimate` (its stderr is used) or an array; by default in the
    library's convention (shape (N+1,), index 0 unused), or with ``timesteps`` one label per entry. NaN entries are
    timesteps not estimated and are skipped; ±inf fails. ``stderr``: array, number, or None (Γ exact: no tolerance);
    NaN standard errors count as 0. ``n_sigma``: threshold z; None picks Bonferroni's one-sided z for the number of
    timesteps checked at family-wise false-alarm probability ``false_alarm``. Returns z.
    """
    g, se = _gamma_arrays(gamma, stderr)
    pos, lab = _labels(g, timesteps)
    gv, sv = g[pos], np.nan_to_num(se[pos], nan=0.0)
    checked = ~np.isnan(gv)
    if not checked.any():
        raise ValueError("gamma holds no estimated timestep (all NaN" + (" after index 0" if timesteps is None else "")
                         + "); estimate Γ first, e.g. estimate_gamma(eps_model, schedule, data).")
    z = z_threshold(n_sigma, int(checked.sum()), false_alarm, two_sided=False)
    lines = []
    for i in np.flatnonzero(checked):
        v, e = gv[i], sv[i]
        if not np.isfinite(v):
            lines.append(f"timestep n = {lab[i]}: Γ = {v} is not finite")
        elif v < 0:
            lines.append(f"timestep n = {lab[i]}: Γ = {_fmt(v)} < 0, impossible for a mean of squares E‖ε̂‖²/d")
        elif v > 1.0 + z * e:
            nse = f"{(v - 1) / e:.3g} standard errors" if e > 0 else "no standard error given"
            lines.append(f"timestep n = {lab[i]}: Γ = {_fmt(v)} exceeds Jensen's bound 1 by {_fmt(v - 1)} "
                         f"({nse}; stderr {_fmt(e)}, allowed {z:.3g})")
    if lines:
        raise AssertionError(
            f"Γ inconsistent with Jensen's inequality 0 <= Γ_n <= 1 at {len(lines)} of {int(checked.sum())} "
            f"timesteps (threshold {z:.3g} standard errors):\n{_listing(lines, limit)}\n"
            "Γ_n = E‖ε̂_n(x_n)‖²/d <= 1 for the exact ε* = E[ε|x_n] (Jensen, P eq. 8); an estimate may exceed 1 only "
            "by its Monte Carlo error. Larger excesses point at model error (e.g. a biased or mis-scaled ε-model).")
    return z


def _default_gamma_timesteps(N: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(1, N, min(N, 8))).astype(np.int64))


def exact_gamma(toy_data, schedule: Schedule, timesteps=None) -> np.ndarray:
    """The exact Γ_n of toy data's ε* (shape (N+1,), NaN where not asked): closed form for
    :class:`~analytic_dpm.toy.GaussianData`, quadrature (``gamma_reference``) for a 1-D or 2-D
    :class:`~analytic_dpm.toy.GaussianMixtureData`."""
    from ..toy import GaussianData, GaussianMixtureData

    schedule = _check_schedule(schedule)
    ts = np.arange(1, schedule.N + 1) if timesteps is None else np.asarray(timesteps, dtype=np.int64)
    if isinstance(toy_data, GaussianData):
        out = np.full(schedule.N + 1, np.nan)
        out[0] = 0.0
        out[ts] = toy_data.gamma_at(schedule, ts)
        return out
    if isinstance(toy_data, GaussianMixtureData):
        if toy_data.dim > 2:
            raise ValueError(
                "the exact Γ of a Gaussian mixture is available by quadrature for d <= 2 only; got d = "
                f"{toy_data.dim}. "
                "Pass expected_gamma= (e.g. from toy_data.gamma_monte_carlo(schedule, 10**6) with its error in mind).")
        return toy_data.gamma_reference(schedule, ts)
    raise TypeError(f"toy_data must be analytic_dpm.toy.GaussianData or GaussianMixtureData; got "
                    f"{type(toy_data).__name__}. For other data pass expected_gamma=.")


def assert_eps_model_gamma_matches(eps_model, toy_data, schedule: Schedule, timesteps=None, num_samples: int = 2000, *,
                                   expected_gamma=None, n_sigma=None, false_alarm: float = 1e-3, seed: int = 0,
                                   batch_size: int = 256, device=None, atol: float = 1e-12, limit: int = 20):
    """Assert that ``eps_model``'s Monte Carlo Γ̂_n = (1/M) Σ_m ‖ε̂_n(x_{n,m})‖²/d (P eq. 9, by
    :func:`~analytic_dpm.gamma.estimate_gamma` with M = ``num_samples`` draws of ``toy_data``) equals the exact Γ_n of
    the toy data's ε* within its standard errors: |Γ̂_n − Γ_n| <= z·stderr_n + atol at every timestep.

    A model that predicts the noise exactly (e.g. a correct adapter around ``toy_data.eps_model(schedule)``, or a
    network trained to convergence on the toy data) passes; a biased or mis-scaled one fails. ``timesteps``: default
    up to 8 spread over 1..N. ``expected_gamma``: replaces the exact Γ (shape (N+1,)), e.g.
    :func:`~analytic_dpm.toy.exact_gamma_of_imperfect` for a deliberately imperfect model. ``n_sigma=None``: two-sided
    Bonferroni threshold at family-wise false-alarm probability ``false_alarm``. Returns the
    :class:`~analytic_dpm.gamma.GammaEstimate`.
    """
    from ..gamma import estimate_gamma

    schedule = _check_schedule(schedule)
    ts = _default_gamma_timesteps(schedule.N) if timesteps is None else np.atleast_1d(np.asarray(timesteps))
    est = estimate_gamma(eps_model, schedule, toy_data, timesteps=ts, num_samples=num_samples, batch_size=batch_size,
                         seed=seed, progress=False, device=device)
    ts = est.timesteps
    if expected_gamma is None:
        ref = exact_gamma(toy_data, schedule, ts)
        what, short = "exact Γ of the toy data", "exact Γ"
    else:
        ref = as_float_array("expected_gamma", expected_gamma)
        if ref.shape != (schedule.N + 1,):
            raise ValueError(f"expected_gamma must have shape (N+1,) = ({schedule.N + 1},); got shape {ref.shape}.")
        if not np.all(np.isfinite(ref[ts])):
            raise ValueError(f"expected_gamma must be finite at the timesteps checked {_show(ts)}.")
        what = short = "expected Γ"
    z = z_threshold(n_sigma, ts.size, false_alarm, two_sided=True)
    lines = []
    for n in ts:
        got, want, e = est.gamma[n], ref[n], np.nan_to_num(est.stderr[n], nan=0.0)
        if not np.isfinite(got) or abs(got - want) > z * e + atol:
            zz = f"{(got - want) / e:+.3g} standard errors" if e > 0 else "no standard error"
            lines.append(f"timestep n = {n}: Γ̂ = {_fmt(got)}, {short} = {_fmt(want)}, difference {_fmt(got - want)} "
                         f"({zz}; stderr {_fmt(e)})")
    if lines:
        raise AssertionError(
            f"the ε-model's Γ̂ (M = {est.num_samples}) differs from the {what} at {len(lines)} of {ts.size} timesteps "
            f"(threshold {z:.3g} standard errors):\n{_listing(lines, limit)}\n"
            "Γ_n = E‖ε̂_n(x_n)‖²/d (P eq. 9). A scale error s and a bias b give Γ̂ = s²Γ + ‖b‖²/d "
            "(analytic_dpm.toy.exact_gamma_of_imperfect); check the model's output scale, its timestep convention "
            "(n in 1..N; diffusers uses n − 1) and its input scaling.")
    return est


# ---------------------------------------------------------------------------------------------------- residual form
@dataclass(frozen=True, eq=False)
class ResidualVarianceReport:
    """A σ² sequence against the residual form σ² = λ² + g²R_t, per transition: entry k−1 is (s, t) = (τ_{k−1}, τ_k).

    ``mean_error`` is the per-dimension mean error of the network's own mean, E‖μ̃(x_t, x_0) − μ(x_t)‖²/d =
    c²(β̄_t/ᾱ_t)R_t = g²R_t, with c the x_0-coefficient of the mean. ``kl`` is E KL(q(x_s|x_t, x_0) ‖ N(μ, σ²I))/d at
    the given σ² (+inf where λ² = 0, NaN at s = 0, the decoder) and ``kl_perturbed[k−1, j]`` the same at
    ``factors[j]``·σ²; the minimality check runs where ``kl_defined``. ``bounds`` is the Theorem 2 report of the same
    σ² (``outside_bounds``): information only.
    """

    schedule: Schedule
    trajectory: np.ndarray
    family: str  #: "ddpm" (λ² = β̃) or "ddim" (λ² = η²β̃)
    eta: float | None
    rtol: float
    atol: float
    factors: np.ndarray
    sigma_sq: np.ndarray  #: the σ² checked
    residual_t: np.ndarray  #: R_t at each transition
    lambda_sq: np.ndarray
    mean_error: np.ndarray  #: g²R_t = c²(β̄_t/ᾱ_t)R_t
    sigma_sq_residual: np.ndarray  #: λ² + g²R_t (reverse_variances, 'residual-ddpm'/'residual-ddim')
    kl: np.ndarray
    kl_perturbed: np.ndarray  #: (K, len(factors))
    kl_defined: np.ndarray  #: s >= 1 and λ² > 0
    bounds: VarianceBoundsReport
    sigma_sq_theorem1: np.ndarray | None = None  #: λ² + g²(1 − Γ_t) (unclipped) when the exact 1 − Γ (or Γ) is given
    one_minus_gamma_t: np.ndarray | None = field(default=None, repr=False)

    @property
    def K(self) -> int:
        return int(self.sigma_sq.shape[0])

    @property
    def s(self) -> np.ndarray:
        return self.trajectory[:-1]

    @property
    def t(self) -> np.ndarray:
        return self.trajectory[1:]

    def _close(self, value, ref) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.isfinite(value) & (np.abs(value - ref) <= self.rtol * np.abs(ref) + self.atol)

    @property
    def formula_mismatch(self) -> np.ndarray:
        """True where σ² ≠ λ² + g²R_t beyond rtol/atol (or σ² is not finite)."""
        return ~self._close(self.sigma_sq, self.sigma_sq_residual)

    @property
    def not_minimal(self) -> np.ndarray:
        """True where some perturbed σ² gives a smaller expected KL than σ² (beyond rounding), or σ² <= 0."""
        with np.errstate(invalid="ignore"):
            lower = self.kl_perturbed < (self.kl * (1.0 - 1e-12))[:, None] - 1e-300
            bad = lower.any(axis=1) | ~(self.sigma_sq > 0)
        return self.kl_defined & bad

    @property
    def theorem1_mismatch(self) -> np.ndarray | None:
        """True where σ² ≠ Theorem 1's σ*² (only with the exact predictor's 1 − Γ given; None otherwise)."""
        if self.sigma_sq_theorem1 is None:
            return None
        return ~self._close(self.sigma_sq, self.sigma_sq_theorem1)

    @property
    def outside_bounds(self) -> np.ndarray:
        """True where σ² leaves Theorem 2's bounds: reported, not a failure (the bounds hold for the optimal mean)."""
        return self.bounds.outside

    @property
    def ok(self) -> bool:
        t1 = self.theorem1_mismatch
        return not (self.formula_mismatch.any() or self.not_minimal.any() or (t1 is not None and t1.any()))

    def failures(self) -> list[str]:
        """One line per failed check and transition (what :func:`assert_residual_variance_optimal` raises)."""
        lines = []
        t1 = self.theorem1_mismatch
        for i in range(self.K):
            head = f"step k = {i + 1} (s, t) = ({self.s[i]}, {self.t[i]}): σ² = {_fmt(self.sigma_sq[i])}"
            if self.formula_mismatch[i]:
                ref = self.sigma_sq_residual[i]
                if not np.isfinite(self.sigma_sq[i]):
                    lines.append(f"{head} is not finite; λ² + g²R_t = {_fmt(ref)}")
                else:
                    rel = "" if ref == 0 else f" ({100 * (self.sigma_sq[i] / ref - 1):+.4g}%)"
                    lines.append(f"{head}, but λ² + g²R_t = {_fmt(ref)} (λ² = {_fmt(self.lambda_sq[i])}, "
                                 f"R_t = {_fmt(self.residual_t[i])}): off by {_fmt(self.sigma_sq[i] - ref)}{rel}")
            if self.not_minimal[i]:
                if not self.sigma_sq[i] > 0:
                    lines.append(f"{head} is not a variance (<= 0); the expected KL needs σ² > 0")
                else:
                    j = int(np.nanargmin(self.kl_perturbed[i]))
                    lines.append(f"{head} is not the minimiser of E KL/d for the mean error g²R_t = "
                                 f"{_fmt(self.mean_error[i])}: {_fmt(self.factors[j])}·σ² gives "
                                 f"{_fmt(self.kl_perturbed[i, j])} < {_fmt(self.kl[i])} nats")
            if t1 is not None and t1[i]:
                ref = self.sigma_sq_theorem1[i]
                rel = "" if ref == 0 else f" ({100 * (self.sigma_sq[i] / ref - 1):+.4g}%)"
                lines.append(f"{head} differs from Theorem 1's σ*² = λ² + g²(1 − Γ_t) = {_fmt(ref)} by "
                             f"{_fmt(self.sigma_sq[i] - ref)}{rel} (R_t = {_fmt(self.residual_t[i])}, 1 − Γ_t = "
                             f"{_fmt(self.one_minus_gamma_t[i])}; for the exact predictor R_t = 1 − Γ_t)")
        return lines

    def describe_family(self) -> str:
        fam = ("DDPM family, λ² = β̃_{s|t}" if self.family == "ddpm"
               else f"DDIM family, λ² = η²β̃_{{s|t}} with η = {self.eta:g}")
        nd = int(self.kl_defined.sum())
        return (f"{fam}; KL minimality checked on {nd} of {self.K} transitions (s >= 1, λ² > 0); rtol = "
                f"{self.rtol:g}, atol = {self.atol:g}")

    def format_failures(self, limit: int = 20) -> str:
        lines = self.failures()
        if not lines:
            return (f"σ² is the residual variance λ² + g²R_t and minimises the expected KL at all {self.K} "
                    f"transitions ({self.describe_family()}).")
        return (f"residual-variance check failed: {len(lines)} finding(s) over {self.K} transitions "
                f"({self.describe_family()}):\n{_listing(lines, limit)}\n{RESIDUAL_TEXT}")

    def format_outside_bounds(self, limit: int = 20) -> str:
        """Where σ² leaves Theorem 2's bounds, one line per transition; '' when it stays within. Not a failure."""
        v = self.bounds.violations()
        if not v:
            return ""
        lines = [f"step k = {d['k']} (s, t) = ({d['s']}, {d['t']}): σ² = {_fmt(d['sigma_sq'])} "
                 f"{'below' if d['status'] == 'below lower' else 'above'} the {d['bound']} = "
                 f"{_fmt(d['bound_value'])} (R_t = {_fmt(self.residual_t[d['k'] - 1])})" for d in v]
        return (f"note: σ² leaves Theorem 2's bounds at {len(v)} of {self.K} transitions (legitimate for an imperfect "
                f"mean: the bounds hold for the optimal mean only):\n{_listing(lines, limit)}")

    def format_table(self) -> str:
        """k, s, t, R_t, σ², λ² + g²R_t, σ*² (Theorem 1, if given), E KL/d, min_f KL(f·σ²) − KL(σ²) (> 0 when σ²
        is the minimiser), Theorem 2 status."""
        cols = ["k", "s", "t", "R_t", "sigma_sq", "λ²+g²R"]
        if self.sigma_sq_theorem1 is not None:
            cols.append("σ*² (Thm 1)")
        cols += ["E KL/d", "Δ least perturbed", "Theorem 2"]
        rows = []
        for i in range(self.K):
            r = [str(i + 1), str(self.s[i]), str(self.t[i]), _fmt(self.residual_t[i]), _fmt(self.sigma_sq[i]),
                 _fmt(self.sigma_sq_residual[i])]
            if self.sigma_sq_theorem1 is not None:
                r.append(_fmt(self.sigma_sq_theorem1[i]))
            if self.kl_defined[i]:
                r += [_fmt(self.kl[i]), _fmt(np.nanmin(self.kl_perturbed[i]) - self.kl[i])]
            else:
                r += ["—", "—"]
            r.append(str(self.bounds.status[i]))
            rows.append(r)
        widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(cols)]
        line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
        return "\n".join([line, "-" * len(line), *("  ".join(x.rjust(w) for x, w in zip(r, widths)) for r in rows)])

    def to_dict(self) -> dict:
        """A JSON-friendly description (inf and NaN written as None)."""
        def num(x):
            x = float(x)
            return x if math.isfinite(x) else None

        t1 = self.theorem1_mismatch
        steps = []
        for i in range(self.K):
            d = dict(k=i + 1, s=int(self.s[i]), t=int(self.t[i]), residual=num(self.residual_t[i]),
                     sigma_sq=num(self.sigma_sq[i]), sigma_sq_residual=num(self.sigma_sq_residual[i]),
                     mean_error=num(self.mean_error[i]), kl=num(self.kl[i]),
                     kl_perturbed=[num(v) for v in self.kl_perturbed[i]], kl_defined=bool(self.kl_defined[i]),
                     formula_mismatch=bool(self.formula_mismatch[i]), not_minimal=bool(self.not_minimal[i]),
                     bounds_status=str(self.bounds.status[i]))
            if t1 is not None:
                d["sigma_sq_theorem1"] = num(self.sigma_sq_theorem1[i])
                d["theorem1_mismatch"] = bool(t1[i])
            steps.append(d)
        return dict(ok=self.ok, schedule=repr(self.schedule), N=self.schedule.N,
                    trajectory=[int(x) for x in self.trajectory], family=self.family, eta=self.eta, rtol=self.rtol,
                    atol=self.atol, factors=[float(f) for f in self.factors],
                    num_outside_bounds=int(self.outside_bounds.sum()), failures=self.failures(), steps=steps)


def residual_variance_report(schedule: Schedule, trajectory, sigma_sq, residual, *, eta=None, data_range=None,
                             one_minus_gamma=None, gamma=None, rtol: float = 1e-9, atol: float = 0.0,
                             factors=PERTURBATION_FACTORS) -> ResidualVarianceReport:
    """Compare σ²_{s|t} on ``trajectory`` with the residual form for the network's own mean (``theory`` entry
    ``residual-variance``): σ² = λ² + g²R_t, the per-transition minimiser of
    E KL(q(x_s|x_t, x_0) ‖ N(μ̃_{s|t}(x_t, x̂_0(x_t)), σ²I))/d = ½[λ²/σ² + g²R_t/σ² − 1 + log(σ²/λ²)].

    * ``sigma_sq``: one σ² per transition (K values, trajectory order), or None for the library's own residual
      variance (``reverse_variances(..., 'residual-ddpm'/'residual-ddim', residual=R)``).
    * ``residual``: R_n = E‖ε − ε̂_n(x_n)‖²/d, shape (N+1,) (>= 0, may exceed 1), or a
      :class:`~analytic_dpm.gamma.GammaEstimate` carrying it; for toy data
      :func:`~analytic_dpm.toy.exact_residual_of_imperfect` gives it exactly.
    * ``eta=None``: DDPM family (λ² = β̃); ``eta``: DDIM family (λ² = η²β̃). The KL check needs λ² > 0 and runs on
      the transitions with s >= 1 (DDIM with η = 0 has none: only the formula is checked there).
    * ``one_minus_gamma`` (or ``gamma``, not both): 1 − Γ_n (Γ_n) of the *exact* predictor, e.g.
      ``data.one_minus_gamma(schedule)`` on toy data. Then R_t = 1 − Γ_t and σ² must also equal Theorem 1's
      λ² + g²(1 − Γ_t) within rtol (pass 1 − Γ directly: the Γ route loses its digits where Γ_t is near 1).
    * ``data_range``: for the Theorem 2 report only (None: eq. 11; r or (a, b): eq. 12 too).
    * A σ² matches a reference when |σ² − ref| <= rtol·|ref| + atol; ``factors``: the σ² multipliers the KL is compared
      against (each ≠ 1, > 0).
    """
    schedule = _check_schedule(schedule)
    traj = validate_trajectory(trajectory, schedule.N)
    s, t = transitions(traj)
    K = int(s.size)
    family = "ddpm" if eta is None else "ddim"
    eta_v = None if eta is None else check_eta(eta)
    e = 0.0 if eta_v is None else eta_v
    dr = normalize_data_range(data_range)
    rtol, atol = as_float("rtol", rtol), as_float("atol", atol)
    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol and atol must be >= 0; got rtol = {rtol}, atol = {atol}.")
    f = as_float_array("factors", factors, fix="Pass σ² multipliers such as (0.9, 0.99, 1.01, 1.1).").reshape(-1)
    if f.size == 0 or not np.all(np.isfinite(f) & (f > 0) & (f != 1.0)):
        raise ValueError(f"factors must be a non-empty list of positive numbers other than 1 (σ² multipliers, e.g. "
                         f"{PERTURBATION_FACTORS}); got {_show(f)}.")
    R = _residual_array(residual, schedule.N)
    rv = reverse_variances(schedule, traj, f"residual-{family}", residual=R, eta=e, data_range=dr)
    sig = rv.sigma_sq.copy() if sigma_sq is None else _as_sigma_sq(sigma_sq, K, traj)
    c0, _, lam2 = posterior_coefficients(schedule, s, t, family, e)
    c0, lam2 = np.asarray(c0, dtype=np.float64), np.asarray(lam2, dtype=np.float64)
    err_x0 = schedule.beta_bar[t] / schedule.alpha_bar[t] * rv.residual  # E‖x_0 − x̂_0‖²/d = (β̄_t/ᾱ_t) R_t
    defined = (s >= 1) & (lam2 > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        kl = np.asarray(exact_mean_transition_kl(lam2, sig, c0, err_x0), dtype=np.float64)
        kl_p = np.asarray(exact_mean_transition_kl(lam2[:, None], sig[:, None] * f[None, :], c0[:, None],
                                                   err_x0[:, None]), dtype=np.float64)
    kl = np.where(s >= 1, kl, np.nan)
    kl_p = np.where((s >= 1)[:, None], kl_p, np.nan)
    t1 = omg_t = None
    if one_minus_gamma is not None or gamma is not None:
        if one_minus_gamma is not None and gamma is not None:
            raise ValueError("pass one_minus_gamma or gamma (of the exact predictor), not both; one_minus_gamma keeps "
                             "its digits where Γ is near 1.")
        a = reverse_variances(schedule, traj, f"analytic-{family}", eta=e, data_range=None, clip=False,
                              **({"one_minus_gamma": one_minus_gamma} if one_minus_gamma is not None
                                 else {"gamma": gamma}))
        t1, omg_t = a.sigma_sq_unclipped, a.one_minus_gamma
    bounds = variance_bounds_report(schedule, traj, sig, eta=eta_v, data_range=dr, rtol=rtol, atol=atol)
    return ResidualVarianceReport(
        schedule=schedule, trajectory=traj, family=family, eta=eta_v, rtol=rtol, atol=atol, factors=f,
        sigma_sq=sig, residual_t=rv.residual, lambda_sq=lam2, mean_error=c0**2 * err_x0,
        sigma_sq_residual=rv.sigma_sq, kl=kl, kl_perturbed=kl_p, kl_defined=defined, bounds=bounds,
        sigma_sq_theorem1=t1, one_minus_gamma_t=omg_t,
    )


def assert_residual_variance_optimal(schedule: Schedule, trajectory, sigma_sq, residual, *, eta=None,
                                     data_range=None, one_minus_gamma=None, gamma=None, rtol: float = 1e-9,
                                     atol: float = 0.0, factors=PERTURBATION_FACTORS,
                                     limit: int = 20) -> ResidualVarianceReport:
    """Assert that σ² (one per transition; None: the library's own) is the residual variance for the network's own
    mean: σ² = λ² + g²R_t within rtol/atol, the per-transition minimiser of the expected KL for the mean error g²R_t
    (no σ²·f with f in ``factors`` does better), and, when the exact predictor's ``one_minus_gamma`` (or ``gamma``) is
    given, Theorem 1's σ*² (R_t = 1 − Γ_t).

    Raises ``AssertionError`` naming each offending step k, (s, t), the value, the reference and by how much it misses.
    Steps where σ² leaves Theorem 2's bounds are *not* failures (the bounds hold for the optimal mean only): they are
    in the returned report (``report.outside_bounds``, ``report.format_outside_bounds()``). Arguments as in
    :func:`residual_variance_report`.
    """
    rep = residual_variance_report(schedule, trajectory, sigma_sq, residual, eta=eta, data_range=data_range,
                                   one_minus_gamma=one_minus_gamma, gamma=gamma, rtol=rtol, atol=atol,
                                   factors=factors)
    if not rep.ok:
        raise AssertionError(rep.format_failures(limit=limit))
    return rep


# ---------------------------------------------------------------------------------------------------- sampler
@dataclass(frozen=True, eq=False)
class SamplerComparison:
    """What :func:`assert_sampler_matches_exact` compared: the exact evaluation, the sample moments and z-scores."""

    exact: object  #: analytic_dpm.toy.ExactEvaluation
    num_samples: int
    sample_mean: np.ndarray
    sample_cov: np.ndarray  #: (d, d) for covariance="full", (d,) variances for "diagonal", empty for "none"
    z_mean: np.ndarray
    z_cov: np.ndarray
    threshold: float

    @property
    def max_abs_z(self) -> float:
        zs = [np.abs(self.z_mean).max()] + ([np.abs(self.z_cov).max()] if self.z_cov.size else [])
        return float(max(zs))


def _to_numpy_samples(x, num: int, dim: int) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[0] != num or math.prod(x.shape[1:]) != dim:
        raise ValueError(f"sampler_fn must return num_samples = {num} samples of dimension d = {dim}, shape ({num}, "
                         f"{dim}) or ({num}, *shape) with prod(shape) = {dim}; got shape {x.shape}.")
    return x.reshape(num, dim)


def assert_sampler_matches_exact(sampler_fn, toy_gaussian, schedule: Schedule, trajectory, method: str, *,
                                 eta: float = 0.0, gamma=None, clip: bool = True, num_samples: int = 20000,
                                 seed: int = 0, n_sigma=None, false_alarm: float = 1e-3, covariance: str | None = None,
                                 limit: int = 20, eps_model=None, residual=None,
                                 one_minus_gamma=None) -> SamplerComparison:
    """Assert that a sampler's output on toy Gaussian data has the mean and covariance of the exact generated
    distribution of ``method`` on ``trajectory`` (:func:`analytic_dpm.toy.evaluate_exact`), within Monte Carlo error.

    The sampler is called as ``sampler_fn(eps_model, schedule, trajectory, num_samples=M, seed=seed)`` with
    ``eps_model = toy_gaussian.eps_model(schedule)`` (the exact ε*, numpy or torch, ``(x, n) -> ε̂`` with n in 1..N)
    and must return M samples (numpy or torch) of shape (M, d). It should start from x_{τ_K} ~ N(0, I), use the
    mean of ``eps_model`` without clamping x̂_0 (toy data are unbounded) and σ² from ``reverse_variances(schedule,
    trajectory, method, gamma, eta, data_range=None, clip, one_minus_gamma=..., residual=...)``, and output the mean at
    s = 0. ``method``: any of :data:`~analytic_dpm.variance.ALL_METHODS`. By default the statistic is exact: Γ (or
    1 − Γ) of the exact ε* for the analytic methods, R = 1 − Γ for the residual methods.

    ``eps_model``: a deliberately imperfect predictor ``toy.ImperfectEps(toy_gaussian.eps_model(schedule), scale,
    bias)`` instead of ε*; it is what ``sampler_fn`` receives, the exact distribution uses its mean, and the default
    statistic becomes that model's exact R (:func:`~analytic_dpm.toy.exact_residual_of_imperfect`) or 1 − Γ̂ — so a
    residual-variance sampler can be checked against the exact answer for a network with a known error.
    ``gamma``/``one_minus_gamma``/``residual`` (shape (N+1,)) override the statistic (e.g. a Monte Carlo estimate).

    Compared: every mean coordinate, z = (x̄_i − μ_i)/√(Σ_ii/M), and covariance entries,
    z = (S_ij − Σ_ij)/√((Σ_iiΣ_jj + Σ_ij²)/M) (the Gaussian sampling error of S). ``covariance``: "full" (all i <= j),
    "diagonal" (variances only) or "none"; None chooses "full" for d <= 32. ``n_sigma=None``: two-sided Bonferroni
    threshold over all compared entries at family-wise false-alarm probability ``false_alarm``.
    Returns a :class:`SamplerComparison`.
    """
    from ..toy import GaussianData, evaluate_exact

    if not callable(sampler_fn):
        raise TypeError(f"sampler_fn must be callable as sampler_fn(eps_model, schedule, trajectory, num_samples=M, "
                        f"seed=seed); got {type(sampler_fn).__name__}.")
    if not isinstance(toy_gaussian, GaussianData):
        raise TypeError(f"toy_gaussian must be analytic_dpm.toy.GaussianData (its generated distribution is exact); "
                        f"got {type(toy_gaussian).__name__}.")
    schedule = _check_schedule(schedule)
    choice("method", method, ALL_METHODS)
    M = as_int("num_samples", num_samples, minimum=2, fix="Use e.g. 20000 samples.")
    seed = as_int("seed", seed, minimum=0)
    d = toy_gaussian.dim
    if covariance is None:
        covariance = "full" if d <= 32 else "diagonal"
    choice("covariance", covariance, ("full", "diagonal", "none"))
    traj = validate_trajectory(trajectory, schedule.N)
    exact = evaluate_exact(toy_gaussian, schedule, traj, method, eta=eta, gamma=gamma, clip=clip,
                           one_minus_gamma=one_minus_gamma, residual=residual, eps_model=eps_model)
    model = toy_gaussian.eps_model(schedule) if eps_model is None else eps_model
    x = _to_numpy_samples(sampler_fn(model, schedule, traj, num_samples=M, seed=seed), M, d)
    bad_rows = ~np.isfinite(x).all(axis=1)
    if bad_rows.any():
        raise AssertionError(f"the sampler returned {int(bad_rows.sum())} of {M} samples with NaN or inf (first at row "
                             f"{int(np.flatnonzero(bad_rows)[0])}); the exact generated distribution is finite.")
    U = exact.basis
    var = exact.cov_eigvals if U is None else (U**2) @ exact.cov_eigvals  # diag of U diag(v) Uᵀ
    mean = x.mean(axis=0)
    scale = 1e-12 * (1.0 + float(np.max(np.abs(exact.mean))) + float(np.max(var)))
    se_mean = np.sqrt(var / M)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_mean = (mean - exact.mean) / se_mean
    if covariance == "full":
        cov = exact.cov
        S = np.cov(x.T).reshape(d, d)
        iu = np.triu_indices(d)
        se_cov = np.sqrt((np.outer(var, var) + cov**2) / M)[iu]
        diff_cov, got_cov, want_cov = (S - cov)[iu], S[iu], cov[iu]
        names = [f"cov[{i}, {j}]" for i, j in zip(*iu)]
    elif covariance == "diagonal":
        S = x.var(axis=0, ddof=1)
        se_cov = np.sqrt(2.0 * var**2 / M)
        diff_cov, got_cov, want_cov = S - var, S, var
        names = [f"var[{i}]" for i in range(d)]
    else:
        S = np.empty(0)
        se_cov = diff_cov = got_cov = want_cov = np.empty(0)
        names = []
    with np.errstate(divide="ignore", invalid="ignore"):
        z_cov = diff_cov / se_cov
    z = z_threshold(n_sigma, d + len(names), false_alarm, two_sided=True)
    lines = []
    for i in range(d):
        if abs(mean[i] - exact.mean[i]) > z * se_mean[i] + scale:
            lines.append(f"mean[{i}]: sample {_fmt(mean[i])}, exact {_fmt(exact.mean[i])}, difference "
                         f"{_fmt(mean[i] - exact.mean[i])} = {z_mean[i]:+.3g} standard errors")
    for j, nm in enumerate(names):
        if abs(diff_cov[j]) > z * se_cov[j] + scale:
            lines.append(f"{nm}: sample {_fmt(got_cov[j])}, exact {_fmt(want_cov[j])}, difference "
                         f"{_fmt(diff_cov[j])} = {z_cov[j]:+.3g} standard errors")
    if lines:
        raise AssertionError(
            f"the sampler's output differs from the exact generated distribution of {method!r} (K = {traj.size - 1}, "
            f"trajectory {_show(traj)}, M = {M} samples, threshold {z:.3g} standard errors) in {len(lines)} of "
            f"{d + len(names)} moments:\n{_listing(lines, limit)}\n"
            "The exact distribution is analytic_dpm.toy.evaluate_exact(data, schedule, trajectory, method): start "
            "x_{τ_K} ~ N(0, I), x_s = coef_x0·x̂_0(x_t) + coef_xt·x_t + σ_{s|t}ξ (x̂_0 = E[x_0|x_t] for the exact ε*, "
            "the model's own x̂_0 with eps_model=), output the mean at s = 0.")
    return SamplerComparison(exact=exact, num_samples=M, sample_mean=mean, sample_cov=S, z_mean=z_mean, z_cov=z_cov,
                             threshold=z)


__all__ = [
    "VarianceBoundsReport", "variance_bounds_report", "assert_variances_within_bounds", "assert_gamma_consistent",
    "assert_eps_model_gamma_matches", "assert_sampler_matches_exact", "SamplerComparison", "exact_gamma",
    "normalize_data_range", "z_threshold", "THEOREM2_TEXT", "ResidualVarianceReport", "residual_variance_report",
    "assert_residual_variance_optimal", "RESIDUAL_TEXT", "PERTURBATION_FACTORS",
]
