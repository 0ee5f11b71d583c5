"""The optimal trajectory: the K-step trajectory that minimizes a variational bound decomposed into one cost per
transition, found exactly by dynamic programming (P eq. 14 / Theorem 3, App. B Algorithm 1; facts file §4.1–§4.4).

Costs. A cost matrix F[s, t] (s < t) prices the reverse transition from t down to s; a trajectory's cost is the sum
over its transitions. Two kinds:

* Analytic-DDPM (Theorem 3, eq. 14): KL(q ‖ p*) = (d/2) Σ_{k=2}^{K} J(τ_{k−1}, τ_k) + c with
  J(s, t) = log(σ*²_{s|t}/λ²_{s|t}), computed as ``log1p((1 − Γ_t)·β_{t|s}/(α_{t|s} β̄_s))`` (``form="log_ratio"``),
  or Corollary 4's J(s, t) = log(1 − β_{t|s} Γ_t/β̄_t) (``form="corollary4"``, the official code's cost; it differs
  by a telescoping term, so the optimal trajectory is the same). Paths start at the fixed τ_1 = 1 (``start = 1``);
  see :func:`analytic_ddpm_cost`.
* Any user matrix F (:func:`cost_matrix`), for example the per-transition bound terms of a handcrafted-variance
  baseline estimated on data (facts file §4.4), with a decoder column F[0, t]. Paths start at node 0 (``start = 0``),
  so the first timestep τ_1 is chosen too.

In both cases a trajectory is the library's usual ``[0, τ_1, …, τ_K = N]`` and K counts its timesteps.

Dynamic programme (Algorithm 1). C_e[n] = min over e-edge paths start → n, C_e[n] = min_s C_{e−1}[s] + F[s, n].
One pass over e = 1..E_max gives the optimal trajectory for every K ≤ K_max (back-pointers, int16 for N < 32768).
The work is triangular (layer e only needs n ≥ start + e and s ≥ start + e − 1). Two exact ways to do a layer:

* ``dense``: the general min-reduction, O(N²) per layer, vectorized in row blocks (numpy), or in torch on a GPU.
* ``monotone``: where F satisfies the quadrangle (Monge) inequality F[a, c] + F[b, d] ≤ F[a, d] + F[b, c]
  (a < b < c < d), the row minima of C_{e−1}[s] + F[s, n] have monotone argmins in n, and a divide-and-conquer over
  the rows finds them with O(N log N) evaluations per layer (level-synchronous and vectorized here).
  :func:`check_monge` verifies the inequality in O(N²) from adjacent quadrangles (they telescope to all others).
  Targets n whose columns break it (for example t = N of a cosine schedule with the exact toy Γ: 1 − Γ_N ≈ 5·10⁻¹²
  keeps only a few digits in float64) are set aside greedily and solved densely in every layer, so the result stays
  exact.

Is the Analytic-DDPM cost Monge? Write x_s = 1/ᾱ_s and r_t = (β̄_t/Γ_t − 1)/ᾱ_t. Then
J(s, t) = log(Γ_t ᾱ_t/β̄_t) + log(x_s + r_t) (Corollary 4 form; the log-ratio form adds terms in s or t alone), and
the quadrangle inequality reduces to (r_d − r_c)(x_b − x_a) ≥ 0: the cost is Monge exactly when r_t is
non-decreasing in t. With the exact Γ of any data distribution it is. Γ_t/β̄_t = E‖∇log q_t‖²/d is the
per-dimension Fisher information of q_t; with Y_v = x_0 + √v ε and v = β̄_t/ᾱ_t (increasing in t) this gives
r_t = 1/I(Y_v) − 1 − v, and Stam's Fisher information inequality 1/I(Y_{v+δ}) ≥ 1/I(Y_v) + δ makes it
non-decreasing. A Monte Carlo Γ is noisy, so r_t wiggles, and the check sends those targets to the dense solver.

Undefined costs. With an imperfect Γ the cost can be undefined: 1 − β_{t|s}Γ_t/β̄_t ≤ 0 needs Γ_t > 1. The official
code cuts the trajectory in two with an undocumented heuristic (facts file §4.3, ``_split``). Here, by default, σ̂²
is clipped into Theorem 2's interval [λ², min(eq. 11, eq. 12)] exactly as the variance used to evaluate the bound is
(:func:`analytic_dpm.reverse_variances`). For the DDPM family both bounds reduce to a bound on Γ_t alone,
max(0, 1 − r²ᾱ_t/β̄_t) ≤ Γ_t ≤ 1 with r = (b − a)/2 the data half-range, so the clip is a clip of Γ_t, the same for
every s; J stays finite (Γ_t = 1 gives σ̂² = λ², J = 0) and the clipped timesteps are reported in a mask.

The network's actual mean. Theorem 3 prices a jump with the optimal mean; an imperfect network's mean error is
invisible to Γ, and where Γ̂_t ≥ 1 (network or Monte Carlo error) every jump into t looks free. With the residual
R_t = E‖ε − ε̂_t‖²/d of the network's own mean, the optimal variance is λ² + g²R_t and the per-transition KL at that
variance is ½ log(1 + g²R_t/λ²) (``theory`` entry ``residual-variance``), the same decomposition with R_t in place of
1 − Γ_t: ``analytic_ddpm_cost(schedule, residual=R)``. R_t is a mean of squares, never negative, and it is not
clipped by Theorem 2 (which holds for the optimal mean only). ``one_minus_gamma=`` takes a directly estimated
1 − Γ_t (the control variate of :func:`analytic_dpm.gamma.estimate_gamma`) for the Theorem 3 cost.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ._validate import _show, as_float, as_int, choice, check_data_range
from .schedules import Schedule

#: Relative tolerance of the quadrangle check: an adjacent quadrangle Δ = F[a,c] + F[b,d] − F[a,d] − F[b,c] counts
#: as violated when Δ > MONGE_RTOL · (|F[a,c]| + |F[b,d]| + |F[a,d]| + |F[b,c]|), i.e. by more than the rounding of
#: evaluating Δ itself.
MONGE_RTOL = 8.0 * float(np.finfo(np.float64).eps)
FORMS = ("log_ratio", "corollary4")
METHODS = ("auto", "monotone", "dense")
BACKENDS = ("numpy", "torch")

_BLOCK_ELEMS = 1 << 18  # elements per row block in the numpy loops (about 2 MB of float64)
_RAGGED_ELEMS = 1 << 22  # elements per chunk of the ragged (set-aside targets) minimum
_BRANCH = 8  # the divide and conquer refines its grid of solved rows by this factor per level
_DENSE_SMALL_E = 2  # with at most this many layers, "auto" skips the O(N²) Monge check (≈ 3 dense layers)
_MAX_EXCEPTION_FRACTION = 0.125  # "auto" uses the monotone path only when at most this share of targets is set aside


# ==================================================================================================== cost matrices
@dataclass(frozen=True, eq=False)
class CostMatrix:
    """Per-transition costs F[s, t] for 0 <= start <= s < t <= N; the cost of a path is Σ F[τ_{k−1}, τ_k].

    Stored transposed (``FT[t, s] = F[s, t]``, C-contiguous, +inf where s >= t or s < start) because the DP reads one
    target's row of predecessors at a time. ``F`` is a read-only (N+1, N+1) view in the paper's orientation.

    Attributes:
        FT: float64 (N+1, N+1), FT[t, s] = F[s, t], +inf outside the read region.
        start: 0 (paths from x_0; F[0, t] is a decoder term) or 1 (Analytic-DDPM: τ_1 = 1 fixed).
        name: what the costs are, e.g. ``"analytic-ddpm (log_ratio)"`` or ``"user"``.
        gamma: for the Analytic-DDPM cost, the Γ actually used (after clipping); None otherwise.
        gamma_clipped: for the Analytic-DDPM cost, bool (N+1,), True where Γ_t was clipped by Theorem 2.
        factor: for the Analytic-DDPM cost, the per-timestep factor of g² actually used: 1 − Γ_t (after clipping) or
            the residual R_t (``name`` says which); None otherwise.
    """

    FT: np.ndarray
    start: int
    name: str = "user"
    gamma: np.ndarray | None = None
    gamma_clipped: np.ndarray | None = None
    factor: np.ndarray | None = None

    @property
    def N(self) -> int:
        """Number of diffusion steps (the matrix is (N+1) × (N+1))."""
        return int(self.FT.shape[0] - 1)

    @property
    def F(self) -> np.ndarray:
        """F[s, t], the cost of the reverse transition t → s (a read-only view of ``FT.T``)."""
        return self.FT.T

    def __repr__(self) -> str:
        return f"CostMatrix({self.name}, N={self.N}, start={self.start})"


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _check_schedule(schedule) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"schedule must be an analytic_dpm.Schedule; got {type(schedule).__name__}. "
            "Build one with Schedule.linear(N) or Schedule.cosine(N)."
        )
    return schedule


def _one_minus_gamma_upper_bound(schedule: Schedule, data_range) -> np.ndarray:
    """Theorem 2 as a bound on 1 − Γ_t (DDPM family): σ̂² <= eq. 12 ⇔ 1 − Γ_t <= r²ᾱ_t/β̄_t (+inf without a range)."""
    out = np.full(schedule.N + 1, np.inf)
    if data_range is None:
        return out
    a, b = check_data_range(data_range)
    out[1:] = ((b - a) / 2.0) ** 2 * schedule.alpha_bar[1:] / schedule.beta_bar[1:]
    return out


def analytic_ddpm_cost(schedule: Schedule, gamma=None, *, form: str = "log_ratio", data_range=(-1.0, 1.0),
                       clip: bool = True, one_minus_gamma=None, residual=None) -> CostMatrix:
    """The Analytic-DDPM transition cost J(s, t), 1 <= s < t <= N (Theorem 3, eq. 14; Corollary 4), as a CostMatrix.

    ``form="log_ratio"``: J = log(σ*²/λ²) = log1p((1 − Γ_t)·β_{t|s}/(α_{t|s}β̄_s)), so that with exact Γ
    KL(q ‖ p*) = (d/2) Σ_{k>=2} J(τ_{k−1}, τ_k) + c exactly. ``form="corollary4"``: J = log(1 − β_{t|s}Γ_t/β̄_t),
    the official code's cost (it differs from log_ratio by log β̄_t − log β̄_s − log α_{t|s}, which telescopes).
    Both are evaluated without cancellation (float64, expm1/log1p, every term non-negative for Γ_t <= 1).

    ``gamma``: Γ in noise form, shape (N+1,), finite at t = 2..N (Γ_1 and Γ_0 are not used: τ_1 = 1 is fixed).
    ``clip=True`` clips σ̂² into Theorem 2's [λ², min(eq. 11, eq. 12)] like :func:`analytic_dpm.reverse_variances`,
    which for the DDPM family is Γ_t ∈ [max(0, 1 − r²ᾱ_t/β̄_t), 1] (r = half the ``data_range``; ``None``: eq. 11
    only); the mask ``gamma_clipped`` reports where it acted. Γ outside [0, 1] also warns. ``clip=False`` raises
    where the cost is undefined.

    Instead of ``gamma`` pass ``one_minus_gamma`` (1 − Γ estimated directly, e.g. ``GammaEstimate.one_minus_gamma``;
    clipped the same way), or ``residual`` R = E‖ε − ε̂‖²/d (``GammaEstimate.residual``) for the cost of the
    network's actual mean, J = log1p(R_t·β_{t|s}/(α_{t|s}β̄_s)) = log(σ²/λ²) with σ² = λ² + g²R_t: never clipped
    (R_t >= 0 is required), exact for the model's own mean rather than for the optimal one. A GammaEstimate passed as
    ``gamma`` stands for its Γ.
    """
    schedule = _check_schedule(schedule)
    choice("form", form, FORMS)
    N = schedule.N
    given = [k for k, v in (("gamma", gamma), ("one_minus_gamma", one_minus_gamma), ("residual", residual))
             if v is not None]
    if len(given) != 1:
        raise ValueError(
            "pass exactly one of gamma (Γ), one_minus_gamma (1 − Γ estimated directly) or residual "
            f"(R = E‖ε − ε̂‖²/d, for the network's own mean); got {given or 'none'}."
        )
    name = given[0]
    value = {"gamma": gamma, "one_minus_gamma": one_minus_gamma, "residual": residual}[name]
    try:
        g = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be an array of real numbers of shape (N+1,) = ({N + 1},); got {value!r}."
        ) from None
    if g.shape != (N + 1,):
        raise ValueError(
            f"{name} must have shape (N+1,) = ({N + 1},) for this schedule, indexed by timestep n with index 0 "
            f"unused; got shape {g.shape}. Use estimate_gamma(...) or data.gamma(schedule) on toy data."
        )
    need = np.arange(2, N + 1)
    bad = ~np.isfinite(g[need])
    if bad.any():
        raise ValueError(
            f"{name} must be finite at every timestep t = 2..N = 2..{N} (the optimal trajectory may visit any of "
            f"them); got {_show(g[need][bad])} at t = {_show(need[bad])}. Estimate it at all timesteps "
            "(estimate_gamma(..., timesteps=None))."
        )
    clipped = np.zeros(N + 1, dtype=bool)
    one_minus_g = np.zeros(N + 1)
    if name == "residual":
        neg = g[need] < 0.0
        if neg.any():
            raise ValueError(
                f"residual R_t = E‖ε − ε̂_t‖²/d is a mean of squares and cannot be negative; got "
                f"{_show(g[need][neg])} at t = {_show(need[neg])}. Pass GammaEstimate.residual (not the "
                "control-variate 1 − Γ estimate)."
            )
        one_minus_g[need] = g[need]  # the factor of g²: R_t in place of 1 − Γ_t, never clipped
        used = None
    else:
        omg_given = g[need] if name == "one_minus_gamma" else 1.0 - g[need]
        out = (omg_given < 0.0) | (omg_given > 1.0)
        if out.any():
            warnings.warn(
                f"{name} lies outside [0, 1] at t = {_show(need[out])} (values {_show(g[need][out])}); Γ = E‖ε̂‖²/d "
                "of the exact noise predictor lies in [0, 1], so these come from model or Monte Carlo error."
                + (" They are clipped by Theorem 2 (see CostMatrix.gamma_clipped)." if clip else ""),
                RuntimeWarning,
                stacklevel=2,
            )
        # 1 − Γ_t is what the cost needs; clip it directly (Theorem 2: 0 <= 1 − Γ_t <= r²ᾱ_t/β̄_t) so that values
        # near Γ_t = 1 keep their digits
        one_minus_g[need] = omg_given
        if clip:
            hi_b = _one_minus_gamma_upper_bound(schedule, data_range)
            omg = np.clip(one_minus_g[need], 0.0, hi_b[need])
            clipped[need] = omg != one_minus_g[need]
            one_minus_g[need] = omg
        if name == "gamma":
            used = g.copy()
            used[need] = np.where(clipped[need], 1.0 - one_minus_g[need], g[need])
        else:
            used = np.zeros(N + 1)
            used[need] = 1.0 - one_minus_g[need]
    # log ᾱ is kept in double-double precision by Schedule (hi + lo); differences L_t − L_s then keep full relative
    # precision, which matters for short jumps (β_{t|s} ~ 1e-4).
    hi = schedule.log_alpha_bar
    lo_dd = schedule.log_alpha_bar_lo
    bb = schedule.beta_bar
    FT = np.empty((N + 1, N + 1))
    FT[:2] = np.inf
    rows = max(1, _BLOCK_ELEMS // max(N, 1))
    for t0 in range(2, N + 1, rows):
        t1 = min(t0 + rows, N + 1)
        blk = FT[t0:t1, 1:t1 - 1]  # J(s, t) for s = 1..t1−2; entries with s >= t are reset below
        np.subtract(hi[t0:t1, None], hi[None, 1:t1 - 1], out=blk)
        blk += lo_dd[t0:t1, None] - lo_dd[None, 1:t1 - 1]  # blk = log α_{t|s} = L_t − L_s (< 0 where s < t)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if form == "log_ratio":
                # J = log1p((1 − Γ_t) β_{t|s}/(α_{t|s} β̄_s)), β_{t|s}/α_{t|s} = expm1(L_s − L_t): all terms >= 0
                np.negative(blk, out=blk)
                np.expm1(blk, out=blk)
                blk /= bb[None, 1:t1 - 1]
                blk *= one_minus_g[t0:t1, None]
                np.log1p(blk, out=blk)
            else:
                # J = log(1 − y), y = β_{t|s}Γ_t/β̄_t; for y > 1/2 use 1 − y = (α_{t|s}β̄_s + β_{t|s}(1 − Γ_t))/β̄_t,
                # free of cancellation when Γ_t <= 1
                b_ts = -np.expm1(blk)
                y = b_ts * ((1.0 - one_minus_g[t0:t1]) / bb[t0:t1])[:, None]
                rest = np.exp(blk) * bb[None, 1:t1 - 1] + b_ts * one_minus_g[t0:t1, None]
                blk[...] = np.where(y <= 0.5, np.log1p(-y), np.log(rest) - np.log(bb[t0:t1])[:, None])
        FT[t0:t1, 0] = np.inf
        FT[t0:t1, t1 - 1:] = np.inf
        sq = FT[t0:t1, t0:t1 - 1]  # s in [t0, t1−2]: invalid where s >= t
        sq[np.arange(t0, t1 - 1)[None, :] >= np.arange(t0, t1)[:, None]] = np.inf
        over = np.flatnonzero(one_minus_g[t0:t1] < 0.0)
        if over.size:  # only possible with clip=False
            sub = FT[t0 + over]
            bad = np.isnan(sub) | (sub == -np.inf)
            if bad.any():
                tt, ss = np.nonzero(bad)
                t_bad = int(t0 + over[tt[0]])
                raise ValueError(
                    f"the Analytic-DDPM cost J(s, t) is undefined (σ̂² <= 0) at {int(bad.sum())} transitions, first "
                    f"(s, t) = ({int(ss[0])}, {t_bad}) with 1 − Γ_t = {one_minus_g[t_bad]:.17g} < 0. Pass clip=True "
                    "to clip σ̂² "
                    "into Theorem 2's bounds (equivalently Γ_t into [max(0, 1 − r²ᾱ_t/β̄_t), 1]), or improve the Γ "
                    "estimate."
                )
    label = "residual-ddpm" if name == "residual" else "analytic-ddpm"
    return CostMatrix(
        FT=_readonly(FT), start=1, name=f"{label} ({form}{', 1 - gamma given' if name == 'one_minus_gamma' else ''})",
        gamma=None if used is None else _readonly(used), gamma_clipped=_readonly(clipped),
        factor=_readonly(one_minus_g),
    )


def cost_matrix(F, *, start: int = 0) -> CostMatrix:
    """Validate a user cost matrix F[s, t] (shape (N+1, N+1)) and wrap it as a :class:`CostMatrix`.

    Only the region start <= s < t <= N is read; entries elsewhere are ignored. In it, entries must be real and not
    NaN or −inf; +inf marks a forbidden transition. ``start=0``: F[0, t] is the decoder term of a jump from t straight
    to x_0 and the first timestep τ_1 is optimized too (facts file §4.4). ``start=1``: τ_1 = 1 is fixed and F[0, ·]
    is not read (the Analytic-DDPM convention).
    """
    if isinstance(F, CostMatrix):
        if start != F.start:
            raise ValueError(f"start = {start} does not match the CostMatrix's start = {F.start}.")
        return F
    start = as_int("start", start, minimum=0, fix="start is 0 (paths from x_0, decoder column) or 1 (τ_1 = 1 fixed).")
    if start > 1:
        raise ValueError(f"start must be 0 (paths from x_0, decoder column F[0, t]) or 1 (τ_1 = 1 fixed); got {start}.")
    if sys.modules.get("torch") is not None and isinstance(F, sys.modules["torch"].Tensor):
        F = F.detach().cpu().numpy()
    try:
        arr = np.asarray(F, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"F must be a square array of real numbers; got {type(F).__name__}.") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 2:
        raise ValueError(
            f"F must be a square matrix of shape (N+1, N+1) with N >= 1, F[s, t] the cost of the transition t → s "
            f"(s < t); got shape {arr.shape}."
        )
    N = arr.shape[0] - 1
    if start >= N and N > 1:
        raise ValueError(f"start = {start} leaves no transition to choose in an N = {N} matrix.")
    FT = np.array(arr.T, dtype=np.float64, order="C")  # FT[t, s] = F[s, t]
    FT[: start + 1] = np.inf  # targets t <= start are never reached
    FT[:, :start] = np.inf  # predecessors s < start are not read
    rows = max(1, _BLOCK_ELEMS // (N + 1))
    for t0 in range(start + 1, N + 1, rows):
        t1 = min(t0 + rows, N + 1)
        blk = FT[t0:t1]
        upper = np.arange(N + 1)[None, :] >= np.arange(t0, t1)[:, None]  # s >= t: not read
        blk[upper] = np.inf
        bad = np.isnan(blk) | (blk == -np.inf)
        if bad.any():
            tt, ss = np.nonzero(bad)
            where = ", ".join(f"({int(ss[i])}, {int(t0 + tt[i])})" for i in range(min(5, tt.size)))
            raise ValueError(
                f"F must not contain NaN or -inf where it is read ({start} <= s < t <= N = {N}); got such entries, "
                f"e.g. F[s, t] at (s, t) = {where}. Use +inf to forbid a transition; entries with s >= t are ignored."
            )
    return CostMatrix(FT=_readonly(FT), start=start, name="user")


def _as_cost(cost, start=None) -> CostMatrix:
    if isinstance(cost, CostMatrix):
        if start is not None and start != cost.start:
            raise ValueError(f"start = {start} does not match the CostMatrix's start = {cost.start}.")
        return cost
    return cost_matrix(cost, start=0 if start is None else start)


# ==================================================================================================== Monge check
@dataclass(frozen=True, eq=False)
class MongeReport:
    """Result of :func:`check_monge`.

    Attributes:
        is_monge: True when every adjacent quadrangle Δ = F[a,c] + F[a+1,c+1] − F[a,c+1] − F[a+1,c] <= tol (then every
            quadrangle a < b < c < d holds, by telescoping) and every read entry is finite.
        exceptions: targets t (int64, sorted) set aside so that F restricted to the other targets is Monge; the
            monotone DP solves these densely. Empty when ``is_monge``.
        violations: number of adjacent quadrangles with Δ > tol.
        max_delta: the largest adjacent Δ (<= 0 for a Monge matrix up to rounding; −inf when there is none).
        worst_quad: (a, a+1, c, c+1) where it occurs, or None.
        nonfinite_targets: targets t with a +inf (forbidden) entry F[s, t]; they are always exceptions.
        rtol: the relative tolerance: tol = rtol·(|F[a,c]| + |F[a+1,c+1]| + |F[a,c+1]| + |F[a+1,c]|).
    """

    is_monge: bool
    exceptions: np.ndarray
    violations: int
    max_delta: float
    worst_quad: tuple | None
    nonfinite_targets: np.ndarray
    rtol: float

    def __repr__(self) -> str:
        return (f"MongeReport(is_monge={self.is_monge}, {self.violations} violated quadrangle(s), "
                f"{self.exceptions.size} exception target(s), max_delta={self.max_delta:.3g} at {self.worst_quad})")


def _pair_violated(FT, c: int, d: int, start: int, rtol: float) -> bool:
    """Whether some quadrangle (a, a+1; c, d), a = start..c−2, has Δ > tol (FT orientation, c < d)."""
    if c - 2 < start:
        return False
    fc0, fc1 = FT[c, start:c - 1], FT[c, start + 1:c]
    fd0, fd1 = FT[d, start:c - 1], FT[d, start + 1:c]
    with np.errstate(invalid="ignore"):
        delta = (fc0 - fc1) - (fd0 - fd1)
        tol = rtol * (np.abs(fc0) + np.abs(fd1) + np.abs(fd0) + np.abs(fc1))
        return bool(np.any(~(delta <= tol)))


def check_monge(cost, *, rtol: float = MONGE_RTOL) -> MongeReport:
    """Check the quadrangle (Monge) inequality F[a,c] + F[b,d] <= F[a,d] + F[b,c], start <= a < b < c < d <= N.

    O(N²): the adjacent quadrangles (b = a+1, d = c+1) are checked in row blocks; summing them gives every other
    quadrangle, which never leaves the region s < t because b < c. A quadrangle counts as violated when
    Δ > rtol·(sum of the four |entries|), the rounding of Δ itself. Where some fail, targets are set aside greedily
    (scan t upwards; keep t when its quadrangles with the last kept target hold, else drop that last target if the
    one before it is compatible with t, else drop t), which leaves a Monge matrix on the kept targets.
    """
    cost = _as_cost(cost)
    rtol = as_float("rtol", rtol)
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0; got {rtol}.")
    FT, start, N = cost.FT, cost.start, cost.N
    W = N + 1
    targets = np.arange(start + 1, N + 1)
    rows = max(1, _BLOCK_ELEMS // W)
    # targets with a forbidden (+inf) entry among their predecessors start..t−1
    finite_ok = np.ones(W, dtype=bool)
    for t0 in range(start + 1, N + 1, rows):
        t1 = min(t0 + rows, N + 1)
        blk = FT[t0:t1, start:t1 - 1]
        inside = np.arange(start, t1 - 1)[None, :] < np.arange(t0, t1)[:, None]
        finite_ok[t0:t1] = ~np.any(inside & np.isinf(blk), axis=1)
    # adjacent quadrangles (a, a+1; j, j+1), start <= a <= j−2, j+1 <= N. With D_j[a] = F[a, j] − F[a+1, j],
    # Δ = D_j[a] − D_{j+1}[a]; outside the region (a >= j−1) Δ is −inf or NaN, so "Δ > 0" ignores it.
    pair_ok = np.ones(W, dtype=bool)  # pair_ok[j]: targets j, j+1 compatible
    n_viol, best, best_quad = 0, -np.inf, None
    for j0 in range(start + 2, N, rows):
        j1 = min(j0 + rows, N)  # j in [j0, j1)
        blk = FT[j0:j1 + 1, start:j1 - 1]
        with np.errstate(invalid="ignore"):
            D = blk[:, :-1] - blk[:, 1:]
            delta = D[:-1] - D[1:]
            pos = delta > 0.0
        if pos.any():
            jj, aa = np.nonzero(pos)
            A = blk[jj, aa], blk[jj + 1, aa + 1], blk[jj + 1, aa], blk[jj, aa + 1]
            tol = rtol * sum(np.abs(x) for x in A)
            bad = ~(delta[jj, aa] <= tol)  # NaN (from +inf entries) counts as violated
            n_viol += int(bad.sum())
            pair_ok[j0 + jj[bad]] = False
        with np.errstate(invalid="ignore"):
            m = np.fmax.reduce(delta, axis=None) if delta.size else -np.inf
        if m > best:
            k = np.unravel_index(np.nanargmax(delta), delta.shape)
            best = float(m)
            best_quad = (int(start + k[1]), int(start + k[1] + 1), int(j0 + k[0]), int(j0 + k[0] + 1))
    nonfinite = targets[~finite_ok[targets]].astype(np.int64)
    if nonfinite.size == 0 and n_viol == 0:
        return MongeReport(True, np.zeros(0, dtype=np.int64), 0, best, best_quad, nonfinite, rtol)

    def compatible(c, d):
        return bool(pair_ok[c]) if d == c + 1 else not _pair_violated(FT, c, d, start, rtol)

    kept, dropped = [], []
    for t in targets.tolist():
        if not finite_ok[t]:
            dropped.append(t)
        elif not kept or compatible(kept[-1], t):
            kept.append(t)
        elif len(kept) >= 2 and compatible(kept[-2], t):
            dropped.append(kept.pop())
            kept.append(t)
        else:
            dropped.append(t)
    return MongeReport(False, np.array(sorted(dropped), dtype=np.int64), n_viol, best, best_quad, nonfinite, rtol)


# ==================================================================================================== DP engines
def _tqdm_disable(progress):
    """tqdm's ``disable`` for a ``progress`` flag: None = only on a terminal."""
    return None if progress is None else not progress


def _ragged_min(Cprev, FTflat, W, rows, cl, ch):
    """For each row n = rows[i]: min and leftmost argmin of Cprev[s] + FT[n, s] over s in [cl[i], ch[i]].

    One pass of ``np.minimum.reduceat`` over complex numbers (value + i·s): numpy orders complex numbers
    lexicographically, so the minimum carries the smallest s among the tied minimal values.
    """
    lens = ch - cl + 1
    ends = np.cumsum(lens)
    tot = int(ends[-1])
    starts = ends - lens
    s = np.arange(tot)
    s += np.repeat(cl - starts, lens)
    z = np.empty(tot, dtype=np.complex128)
    z.real = Cprev[s]
    z.real += FTflat[s + np.repeat(rows * W, lens)]
    z.imag = s
    m = np.minimum.reduceat(z, starts)
    return m.real, m.imag.astype(np.int64)


def _windows_min(Cprev, FTflat, W, rows, cl, ch, out_val, out_arg):
    """:func:`_ragged_min` over arbitrary windows, in chunks of bounded size, writing into out_val/out_arg."""
    i = 0
    while i < rows.size:
        lens = np.cumsum(ch[i:] - cl[i:] + 1)
        j = i + max(1, int(np.searchsorted(lens, _RAGGED_ELEMS, side="right")))
        mins, arg = _ragged_min(Cprev, FTflat, W, rows[i:j], cl[i:j], ch[i:j])
        out_val[rows[i:j]] = mins
        out_arg[rows[i:j]] = arg
        i = j


class _MonotoneGrid:
    """Row minima with monotone argmins (Monge) by a level-synchronous, ``_BRANCH``-way divide and conquer.

    The rows are the kept targets ``rows`` (sorted), at positions 0..P−1. They are solved on ever finer grids: on the
    grid of stride G (positions p with (p + 1) % G == 0) each new row is searched over [argmin of the nearest solved
    row to its left, argmin of the nearest solved row to its right] on the previous grid of stride ``_BRANCH``·G;
    monotone argmins keep a minimum inside that window. Each level is one vectorized ragged minimum, and there are
    ⌈log_B P⌉ levels. The grids are built once over all positions; a layer uses the positions [k0, k1) of its rows,
    treating positions below k0 as solved with argmin c_lo and those from k1 on as unbounded.
    """

    def __init__(self, rows: np.ndarray, W: int):
        self.rows = rows
        self.W = W
        P = rows.size
        G = 1
        while G <= P:
            G *= _BRANCH
        self.opt_ext = np.empty(2 * G + 2, dtype=np.int64)  # opt_ext[p + 1]: argmin of position p
        self.levels = []
        p1 = np.arange(1, P + 1)
        while G > 1:
            Gf = G // _BRANCH
            new = np.flatnonzero((p1 % Gf == 0) & (p1 % G != 0))
            left = (new + 1) // G * G  # ext index of the nearest coarse position to the left (0: none)
            self.levels.append((new, new + 1, rows[new], left, left + G))
            G = Gf

    def solve(self, Cprev, FTflat, k0: int, k1: int, c_lo: int, lower, out_val, out_arg):
        """Minimize rows[k0:k1]; ``lower[n]`` (valid lower bounds on some argmin, or c_lo) raises each window's left
        end, clamped to its right end, which keeps a minimum inside (see :func:`_run_numpy`)."""
        if k1 <= k0:
            return
        W, opt_ext = self.W, self.opt_ext
        opt_ext[: k0 + 1] = c_lo
        opt_ext[k0 + 1:] = W
        for new, ext, r_all, left, right in self.levels:
            i0, i1 = new.searchsorted((k0, k1))
            if i1 <= i0:
                continue
            r = r_all[i0:i1]
            ch = np.minimum(opt_ext[right[i0:i1]], r - 1)
            cl = np.maximum(opt_ext[left[i0:i1]], np.minimum(lower[r], ch))
            mins, arg = _ragged_min(Cprev, FTflat, W, r, cl, ch)
            opt_ext[ext[i0:i1]] = arg
            out_val[r] = mins
            out_arg[r] = arg


def _dense_rows_numpy(Cprev, FT, r_lo, r_hi, c_lo, out_val, out_arg, buf):
    """Exact min over s in [c_lo, n−1] for rows n = r_lo..r_hi, in row blocks (FT is +inf for s >= n)."""
    bs = buf.shape[0]
    for n0 in range(r_lo, r_hi + 1, bs):
        n1 = min(n0 + bs, r_hi + 1)
        w = n1 - 1 - c_lo
        sub = buf[: n1 - n0, :w]
        np.add(FT[n0:n1, c_lo:n1 - 1], Cprev[c_lo:n1 - 1], out=sub)
        idx = np.argmin(sub, axis=1)
        out_val[n0:n1] = sub[np.arange(n1 - n0), idx]
        out_arg[n0:n1] = idx + c_lo


def _run_numpy(cost: CostMatrix, E_max: int, single: bool, monotone: bool, exceptions, progress):
    """The DP on numpy. Layer e holds rows n in [start + e, r_hi] (r_hi = N, or N − (E_max − e) for one K).

    Monotone mode (F Monge on the kept targets, exceptions solved densely) uses two facts, exact for Monge F:
    (i) within a layer, argmins are monotone in n, so a row's minimum lies between the argmins of solved rows on
    either side; (ii) across layers, if an optimal (e−1)-edge path to n ends with the transition from q, some optimal
    e-edge path to n ends with one from s >= q (uncross the two paths at the first point where they swap order;
    the quadrangle inequality makes the swap no worse). (ii) uses quadrangles on targets below n only, so it is
    applied to rows n <= the smallest exception (it halves the work of the divide and conquer).
    """
    FT, start, N = cost.FT, cost.start, cost.N
    W = N + 1
    dtype = np.int16 if N < np.iinfo(np.int16).max else np.int32
    back = np.zeros((E_max + 1, W), dtype=dtype)
    costs = np.full(E_max + 1, np.inf)
    C = np.full(W, np.inf)
    C[start] = 0.0
    costs[0] = 0.0 if start == N else np.inf
    FTflat = FT.reshape(-1)
    if monotone:
        exc_all = np.asarray(exceptions, dtype=np.int64)
        is_exc = np.zeros(W, dtype=bool)
        is_exc[exc_all] = True
        kept_all = np.flatnonzero(~is_exc)
        lb_limit = int(exc_all[0]) if exc_all.size else N
        grid = _MonotoneGrid(kept_all, W)
    else:
        buf = np.empty((max(1, _BLOCK_ELEMS // W), W))
    arg = np.empty(W, dtype=np.int64)
    prev_hi = start
    for e in tqdm(range(1, E_max + 1), disable=_tqdm_disable(progress), desc="optimal trajectory DP", leave=False):
        r_lo = start + e
        r_hi = N - (E_max - e) if single else N
        c_lo = r_lo - 1
        Cn = np.full(W, np.inf)
        if e == 1:
            Cn[r_lo:r_hi + 1] = FT[r_lo:r_hi + 1, start]
            arg[r_lo:r_hi + 1] = start
        elif monotone:
            # q[n]: last transition of the optimal (e−1)-edge path to n, where fact (ii) applies; else c_lo
            q = np.full(W, c_lo, dtype=np.int64)
            q_hi = min(prev_hi, lb_limit)
            q[r_lo:q_hi + 1] = back[e - 1, r_lo:q_hi + 1]
            k0, k1 = kept_all.searchsorted((r_lo, r_hi + 1))
            grid.solve(C, FTflat, int(k0), int(k1), c_lo, q, Cn, arg)
            x0, x1 = np.searchsorted(exc_all, [r_lo, r_hi + 1])
            if x1 > x0:
                xr = exc_all[x0:x1]
                _windows_min(C, FTflat, W, xr, q[xr], xr - 1, Cn, arg)
        else:
            _dense_rows_numpy(C, FT, r_lo, r_hi, c_lo, Cn, arg, buf)
        back[e, r_lo:r_hi + 1] = arg[r_lo:r_hi + 1]
        C = Cn
        costs[e] = C[N]
        prev_hi = r_hi
    return costs, back


def _run_torch(cost: CostMatrix, E_max: int, single: bool, device, progress):
    import torch

    FT_np, start, N = cost.FT, cost.start, cost.N
    W = N + 1
    dev = torch.device(device)
    FT = torch.tensor(FT_np, device=dev)  # a copy: the numpy array is read-only
    C = torch.full((W,), float("inf"), dtype=torch.float64, device=dev)
    C[start] = 0.0
    back = torch.zeros((E_max + 1, W), dtype=torch.int32, device=dev)
    costs = torch.full((E_max + 1,), float("inf"), dtype=torch.float64, device=dev)
    if start == N:
        costs[0] = 0.0
    budget = (1 << 27) if dev.type == "cuda" else _BLOCK_ELEMS
    bs = max(1, budget // W)
    for e in tqdm(range(1, E_max + 1), disable=_tqdm_disable(progress), desc="optimal trajectory DP", leave=False):
        r_lo = start + e
        r_hi = N - (E_max - e) if single else N
        c_lo = r_lo - 1
        Cn = torch.full((W,), float("inf"), dtype=torch.float64, device=dev)
        if e == 1:
            Cn[r_lo:r_hi + 1] = FT[r_lo:r_hi + 1, start]
            back[e, r_lo:r_hi + 1] = start
        else:
            for n0 in range(r_lo, r_hi + 1, bs):
                n1 = min(n0 + bs, r_hi + 1)
                sub = FT[n0:n1, c_lo:n1 - 1] + C[c_lo:n1 - 1]
                vals, idx = torch.min(sub, dim=1)
                Cn[n0:n1] = vals
                back[e, n0:n1] = (idx + c_lo).to(torch.int32)
        C = Cn
        costs[e] = C[N]
    dtype = np.int16 if N < np.iinfo(np.int16).max else np.int32
    return costs.cpu().numpy(), back.cpu().numpy().astype(dtype)


# ==================================================================================================== results
@dataclass(frozen=True, eq=False)
class OptimalTrajectory:
    """One optimal trajectory ``[0, τ_1, …, τ_K = N]`` and its cost Σ F[τ_{k−1}, τ_k] (over s >= start).

    ``np.asarray(result)`` is the trajectory, so the result can be passed wherever a trajectory is expected.
    """

    trajectory: np.ndarray
    cost: float
    K: int
    method: str

    def __array__(self, dtype=None, copy=None):
        out = self.trajectory if dtype is None else self.trajectory.astype(dtype)
        return out.copy() if copy else out

    def __repr__(self) -> str:
        t = self.trajectory
        body = ", ".join(map(str, t.tolist())) if t.size <= 12 else (
            ", ".join(map(str, t[:6].tolist())) + ", …, " + ", ".join(map(str, t[-3:].tolist())))
        return f"OptimalTrajectory(K={self.K}, cost={self.cost:.10g}, [{body}], method={self.method!r})"


@dataclass(frozen=True, eq=False)
class OptimalTrajectories:
    """The optimal trajectories for every K in K_min..K_max, from one DP pass (back-pointers for all layers).

    Attributes:
        costs: float64 (K_max + 1,): ``costs[K]`` is the minimal cost with K timesteps (NaN for K < K_min, +inf where
            no finite-cost trajectory exists).
        K_min, K_max: the range covered (K_min = 1 for start = 0, 2 for start = 1).
        method: 'monotone', 'dense' (numpy) or 'dense-torch:<device>'.
        monge: the :class:`MongeReport` when the Monge check ran, else None.
        cost_matrix: the :class:`CostMatrix` that was minimized.
    """

    costs: np.ndarray
    K_min: int
    K_max: int
    method: str
    monge: MongeReport | None
    cost_matrix: CostMatrix
    _back: np.ndarray

    @property
    def N(self) -> int:
        return self.cost_matrix.N

    @property
    def start(self) -> int:
        return self.cost_matrix.start

    def _check_K(self, K) -> int:
        K = as_int("K", K)
        if not self.K_min <= K <= self.K_max:
            raise ValueError(
                f"K must satisfy {self.K_min} <= K <= K_max = {self.K_max} for these results; got K = {K}. "
                "Solve again with a larger K_max."
            )
        return K

    def cost(self, K: int) -> float:
        """The minimal cost with K timesteps."""
        return float(self.costs[self._check_K(K)])

    def trajectory(self, K: int) -> np.ndarray:
        """The optimal trajectory ``[0, τ_1, …, τ_K = N]`` with K timesteps (backtracking, O(K))."""
        K = self._check_K(K)
        if not np.isfinite(self.costs[K]):
            raise ValueError(f"no trajectory with K = {K} timesteps has a finite cost (every one uses a +inf entry).")
        E = K - self.start
        path = np.empty(E + 1, dtype=np.int64)
        n = self.N
        for e in range(E, 0, -1):
            path[e] = n
            n = int(self._back[e, n])
        path[0] = n
        return np.concatenate([[0], path]) if self.start == 1 else path

    def __getitem__(self, K: int) -> OptimalTrajectory:
        return OptimalTrajectory(self.trajectory(K), self.cost(K), int(K), self.method)

    def trajectories(self) -> dict:
        """All optimal trajectories {K: trajectory} for K = K_min..K_max (finite cost only), backtracked together."""
        Ks = np.arange(self.K_min, self.K_max + 1)
        Ks = Ks[np.isfinite(self.costs[Ks])]
        if Ks.size == 0:
            return {}
        E_k = Ks - self.start
        E_max = int(E_k.max())
        nodes = np.zeros((Ks.size, E_max + 1), dtype=np.int64)
        cur = np.full(Ks.size, self.N, dtype=np.int64)
        for e in range(E_max, 0, -1):
            i0 = int(np.searchsorted(E_k, e))  # paths with at least e edges (E_k sorted)
            c = cur[i0:]
            nodes[i0:, e] = c
            cur[i0:] = self._back[e, c]
        nodes[:, 0] = cur
        lead = [0] if self.start == 1 else []
        return {int(K): np.array(lead + nodes[i, :E + 1].tolist(), dtype=np.int64)
                for i, (K, E) in enumerate(zip(Ks, E_k))}

    def __repr__(self) -> str:
        return (f"OptimalTrajectories({self.cost_matrix.name}, N={self.N}, K={self.K_min}..{self.K_max}, "
                f"method={self.method!r})")


# ==================================================================================================== solver
def _K_range(N: int, start: int):
    K_min = 1 if (start == 0 or N == start) else start + 1
    return K_min, N


def _check_K_arg(name: str, K, N: int, start: int) -> int:
    K_min, K_max = _K_range(N, start)
    K = as_int(name, K)
    if not K_min <= K <= K_max:
        why = (" (τ_1 = 1 and τ_K = N are fixed, so a trajectory has at least 2 timesteps)" if start == 1
               else " (a trajectory [0, τ_1, …, τ_K = N] has 1 to N timesteps)")
        raise ValueError(f"{name} must satisfy {K_min} <= {name} <= N = {N}{why}; got {name} = {K}.")
    return K


def _pick_backend(backend, device):
    if backend is not None:
        choice("backend", backend, BACKENDS)
        if backend == "torch" and device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return backend, device
    if device is not None:
        return "torch", device
    return ("torch", "cuda") if _cuda_available() else ("numpy", None)


def _cuda_available() -> bool:
    """Whether torch sees a CUDA GPU, without paying torch's import time (seconds) on machines that have none."""
    torch = sys.modules.get("torch")
    if torch is None:
        if not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")):
            return False
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return False
    return bool(torch.cuda.is_available())


def solve(cost, K_max: int | None = None, *, K: int | None = None, method: str = "auto", backend: str | None = None,
          device=None, monge_rtol: float = MONGE_RTOL, progress: bool | None = None) -> OptimalTrajectories:
    """Minimize Σ F[τ_{k−1}, τ_k] over trajectories by dynamic programming (Algorithm 1), exactly.

    ``cost``: a :class:`CostMatrix` or an (N+1, N+1) array F (start = 0). Give ``K_max`` (default N) for every
    K <= K_max from one pass, or ``K`` for a single K (the layers are then pruned to nodes that can still reach N).
    ``method``: 'dense' is the general exact DP; 'monotone' checks the quadrangle inequality (:func:`check_monge`) and
    runs the divide and conquer on the Monge targets, the exceptions densely (a matrix with +inf entries always
    takes the dense DP); 'auto' picks 'dense' on a GPU or for at most 2 layers, else 'monotone' when at most 1/8 of
    the targets are exceptions, else 'dense'. ``monge_rtol``: tolerance of the check (:data:`MONGE_RTOL`).
    ``backend``: 'numpy' or 'torch' (dense only); default torch on CUDA when a GPU is present, else numpy.
    ``progress``: tqdm bar over layers (None: only on a terminal).
    """
    cost = _as_cost(cost)
    choice("method", method, METHODS)
    N, start = cost.N, cost.start
    if K is not None and K_max is not None:
        raise ValueError("pass either K (one trajectory) or K_max (all K <= K_max), not both.")
    single = K is not None
    K_top = _check_K_arg("K" if single else "K_max", K if single else (N if K_max is None else K_max), N, start)
    E_max = K_top - start
    if method == "monotone":
        if backend == "torch" or device is not None:
            raise ValueError("method='monotone' runs on numpy only; use backend='numpy' or method='dense' with torch.")
        backend_used = "numpy"
    else:
        backend_used, device = _pick_backend(backend, device)
    monge = None
    if method == "monotone" or (method == "auto" and backend_used == "numpy" and E_max > _DENSE_SMALL_E):
        monge = check_monge(cost, rtol=monge_rtol)
        n_targets = max(1, N - start)
        # forbidden (+inf) transitions can make whole rows infeasible, and an infeasible row's argmin says nothing
        # about its neighbours': such matrices always take the dense DP
        use_monotone = monge.nonfinite_targets.size == 0 and (
            method == "monotone" or monge.exceptions.size <= _MAX_EXCEPTION_FRACTION * n_targets)
    else:
        use_monotone = False
    if use_monotone:
        costs_e, back = _run_numpy(cost, E_max, single, True, monge.exceptions, progress)
        used = "monotone"
    elif backend_used == "torch":
        costs_e, back = _run_torch(cost, E_max, single, device, progress)
        used = f"dense-torch:{device}"
    else:
        costs_e, back = _run_numpy(cost, E_max, single, False, None, progress)
        used = "dense"
    K_min = K_top if single else _K_range(N, start)[0]
    costs = np.full(K_top + 1, np.nan)
    Ks = np.arange(K_min, K_top + 1)
    costs[Ks] = costs_e[Ks - start]
    return OptimalTrajectories(costs=_readonly(costs), K_min=K_min, K_max=K_top, method=used, monge=monge,
                               cost_matrix=cost, _back=_readonly(back))


def trajectory_cost(cost, trajectory) -> float:
    """Σ F[τ_{k−1}, τ_k] over the transitions of ``trajectory`` with τ_{k−1} >= start (re-evaluation of a path).

    For an Analytic-DDPM cost (start = 1) the trajectory must be ``[0, 1, τ_2, …]`` and the (0, 1) step is free.
    """
    cost = _as_cost(cost)
    from .trajectories import validate_trajectory

    traj = validate_trajectory(trajectory, cost.N)
    if cost.start == 1:
        if traj.size < 2 or traj[1] != 1:
            raise ValueError(f"this cost fixes τ_1 = 1 (start = 1); got trajectory {_show(traj)}.")
        traj = traj[1:]
    return float(np.sum(cost.FT[traj[1:], traj[:-1]]))


# ==================================================================================================== public wrappers
def _analytic_cost_from(schedule, gamma, cost_kw):
    if isinstance(gamma, CostMatrix):
        raise TypeError("gamma must be a Γ array; to solve a CostMatrix directly use solve(cost, ...).")
    return analytic_ddpm_cost(schedule, gamma, **cost_kw)


def optimal_trajectory(schedule: Schedule, gamma, K: int, *, form: str = "log_ratio", data_range=(-1.0, 1.0),
                       clip: bool = True, method: str = "auto", backend: str | None = None, device=None,
                       progress: bool | None = None, one_minus_gamma=None, residual=None) -> OptimalTrajectory:
    """The K-step trajectory ``[0, 1, τ_2, …, τ_K = N]`` (τ_1 = 1 fixed) minimizing the Analytic-DDPM bound.

    Minimizes Σ_{k=2}^{K} J(τ_{k−1}, τ_k) with J from :func:`analytic_ddpm_cost` (Theorem 3, eq. 14: with exact Γ and
    ``form="log_ratio"`` the KL is (d/2)·cost + a constant), exactly; see :func:`solve` for ``method``/``backend``.
    2 <= K <= N. The result carries the trajectory (``np.asarray(result)``) and its cost.

    For the network's actual mean pass ``gamma=None, residual=R`` (R = ``GammaEstimate.residual``): the same exact DP
    over J = log(1 + g²R_t/λ²); ``one_minus_gamma=`` takes a directly estimated 1 − Γ (see :func:`analytic_ddpm_cost`).
    """
    cost = _analytic_cost_from(schedule, gamma, dict(form=form, data_range=data_range, clip=clip,
                                                     one_minus_gamma=one_minus_gamma, residual=residual))
    K = _check_K_arg("K", K, cost.N, 1)
    res = solve(cost, K=K, method=method, backend=backend, device=device, progress=progress)
    return res[K]


def optimal_trajectories(schedule: Schedule, gamma, K_max: int | None = None, *, form: str = "log_ratio",
                         data_range=(-1.0, 1.0), clip: bool = True, method: str = "auto", backend: str | None = None,
                         device=None, progress: bool | None = None, one_minus_gamma=None,
                         residual=None) -> OptimalTrajectories:
    """Every optimal Analytic-DDPM trajectory for K = 2..K_max (default N) from one DP pass; see
    :func:`optimal_trajectory` (``residual=``/``one_minus_gamma=`` likewise). ``result.trajectory(K)``,
    ``result.cost(K)``, ``result.trajectories()``."""
    cost = _analytic_cost_from(schedule, gamma, dict(form=form, data_range=data_range, clip=clip,
                                                     one_minus_gamma=one_minus_gamma, residual=residual))
    return solve(cost, K_max=K_max, method=method, backend=backend, device=device, progress=progress)


def optimal_trajectory_from_costs(F, K: int, *, start: int = 0, method: str = "auto", backend: str | None = None,
                                  device=None, progress: bool | None = None) -> OptimalTrajectory:
    """The trajectory ``[0, τ_1, …, τ_K = N]`` minimizing Σ_k F[τ_{k−1}, τ_k] for a user cost matrix F[s, t].

    With ``start=0`` (default) F[0, t] is the decoder term and τ_1 is optimized (facts file §4.4, the baselines' OT);
    with ``start=1`` τ_1 = 1 is fixed. 1 <= K <= N (2 <= K with start = 1).
    """
    cost = _as_cost(F, start)
    K = _check_K_arg("K", K, cost.N, cost.start)
    return solve(cost, K=K, method=method, backend=backend, device=device, progress=progress)[K]


def optimal_trajectories_from_costs(F, K_max: int | None = None, *, start: int = 0, method: str = "auto",
                                    backend: str | None = None, device=None,
                                    progress: bool | None = None) -> OptimalTrajectories:
    """Every optimal trajectory for K <= K_max (default N) of a user cost matrix F, from one DP pass."""
    return solve(_as_cost(F, start), K_max=K_max, method=method, backend=backend, device=device, progress=progress)


__all__ = [
    "MONGE_RTOL", "FORMS", "CostMatrix", "MongeReport", "OptimalTrajectory", "OptimalTrajectories",
    "analytic_ddpm_cost", "cost_matrix", "check_monge", "solve", "trajectory_cost", "optimal_trajectory",
    "optimal_trajectories", "optimal_trajectory_from_costs", "optimal_trajectories_from_costs",
]
