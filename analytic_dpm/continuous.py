"""Continuous time: the VP SDE, its discretization at arbitrary real times, continuous-time networks, and Γ between
grid points (P App. E; facts file §6.3).

The VP SDE of Song et al. (score_sde), dz = −½β(τ)z dτ + √β(τ) dw on τ ∈ [0, 1] with the linear rate
β(τ) = β_min + τ(β_max − β_min) (β_min = 0.1, β_max = 20), has q(z_t | x_0) = N(√ᾱ(t) x_0, β̄(t) I) with

    log ᾱ(t) = −∫_0^t β = −(β_min t + ½(β_max − β_min) t²),      β̄(t) = 1 − ᾱ(t) = −expm1(log ᾱ(t)),
    α(t|s) = ᾱ(t)/ᾱ(s) = exp(−∫_s^t β),                            β(t|s) = 1 − α(t|s).

Everything discrete in this library runs unchanged in continuous time once the real times are fixed: on any increasing
0 = t_0 < t_1 < … < t_N <= 1, :meth:`VPSDE.discretize` builds the :class:`~analytic_dpm.Schedule` with
β_n = 1 − ᾱ(t_n)/ᾱ(t_{n−1}) = −expm1(−∫_{t_{n−1}}^{t_n} β), so that its ᾱ_n is ᾱ(t_n) and its skip quantities are
App. E's α(t|s), β(t|s) at real times. Timestep n of that schedule *means* real time t_n (it keeps them in
:attr:`DiscretizedSchedule.times`). The extended paper's ``vpsde_1000`` is the case t_n = n/N, N = 1000
(:meth:`analytic_dpm.Schedule.vpsde`).

App. E.1: σ*²(s|t) = (β(t|s)/α(t|s))(1 − β(t|s) E‖∇log q_t‖²/d), Corollary 2 at real times, with
Γ_t = β̄(t)E‖∇log q_t‖²/d (noise form) estimated on a grid of times and linearly interpolated in t between grid
points (:class:`GammaCurve`).
App. E.2: the optimal trajectory minimizes Σ J(s, t), J(s, t) = log(1 − β(t|s) E‖∇log q_t‖²/d), restricted to a
finite grid: :func:`continuous_optimal_trajectory` calls :func:`analytic_dpm.optimal_trajectory` with
``form="corollary4"`` on the grid's discretized schedule.

Continuous-time networks (score_sde's VP models receive t·999) enter the discrete ε-model protocol through
:class:`ContinuousTimeEpsModel`, the official ``CT2DTWrapper`` with timestep n → t_n of any grid.

The toy laboratory: for :class:`~analytic_dpm.toy.GaussianData` Γ depends on ᾱ(t) only, so :func:`exact_gamma` gives
the exact Γ(t) at any real t, :func:`exact_sigma_sq` the exact Analytic-DPM σ² at real (s, t), and
:func:`interpolation_error` measures what linear interpolation of Γ (P App. E.1) costs, in Γ and in the exact bound.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._validate import _show, as_float, as_float_array, as_int, choice
from .schedules import Schedule, _check_vpsde_rates, _prefix_sum_double_double, _vpsde_betas

#: Song et al.'s VP SDE labels: a continuous-time VP network receives t·999 (score_sde ``get_score_fn``; the
#: official ``CT2DTWrapper`` feeds ``model(x, n/N·999)``).
SCORE_SDE_TIME_SCALE = 999.0

_TIME_FIX = "The VP SDE runs on real times t in [0, 1]."


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _real_times(name: str, t, lo: float = 0.0, hi: float = 1.0, open_lo: bool = False):
    """``t`` as a float64 array (and whether it was a scalar), finite and in [lo, hi] (or (lo, hi])."""
    try:
        arr = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number or an array of real numbers; got {t!r}. {_TIME_FIX}") from None
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} must be finite; got {_show(arr[bad])}. {_TIME_FIX}")
    below = (arr <= lo) if open_lo else (arr < lo)
    out = below | (arr > hi)
    if out.any():
        interval = f"({lo:g}, {hi:g}]" if open_lo else f"[{lo:g}, {hi:g}]"
        raise ValueError(
            f"{name} must lie in {interval}; got {_show(arr[out])}. {_TIME_FIX}"
            + (" t = 0 is the data itself: Γ, ε̂ and σ² are defined for t > 0 only." if open_lo and lo == 0.0 else "")
        )
    return arr, arr.ndim == 0


def _ret(arr: np.ndarray, scalar: bool):
    return float(arr) if scalar else arr


def _readonly(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _increasing(name: str, arr: np.ndarray, hint: str):
    steps = np.diff(arr)
    if np.any(steps <= 0.0):
        i = int(np.flatnonzero(steps <= 0.0)[0])
        raise ValueError(
            f"{name} must be strictly increasing; got {float(arr[i + 1])!r} after {float(arr[i])!r} "
            f"(positions {i}, {i + 1}). {hint}"
        )


# ==================================================================================================== schedules
@dataclass(frozen=True, eq=False, repr=False)
class DiscretizedSchedule(Schedule):
    """A :class:`~analytic_dpm.Schedule` whose timestep n means the real time ``times[n]`` of an SDE.

    Everything that takes a Schedule (``reverse_variances``, ``sample``, ``estimate_gamma``, ``optimal_trajectory``,
    ``toy.evaluate_exact``) takes this one; ``times`` (float64, shape (N+1,), ``times[0] = 0``) and ``sde`` say which
    real times the integer timesteps stand for. Build it with :meth:`VPSDE.discretize` or :meth:`VPSDE.schedule`.
    """

    times: np.ndarray | None = None
    sde: object = None
    #: ∫_{t_{n−1}}^{t_n} β, n = 1..N (shape (N,)); when given, log ᾱ_n = −Σ_{i<=n} ∫ in double-double precision
    #: (instead of Σ log1p(−β_i), which loses digits where β_i is near 1, e.g. one step over [0, 1])
    step_integrals: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        super().__post_init__()
        if self.times is None:
            raise ValueError("times must be given: the real times t_0 = 0 < t_1 < … < t_N of the timesteps.")
        times = _readonly(self.times)
        if times.shape != (self.N + 1,):
            raise ValueError(f"times must have shape (N+1,) = ({self.N + 1},); got shape {times.shape}.")
        object.__setattr__(self, "times", times)
        if self.step_integrals is not None:
            inc = _readonly(self.step_integrals)
            if inc.shape != (self.N,):
                raise ValueError(f"step_integrals must have shape (N,) = ({self.N},); got shape {inc.shape}.")
            hi, lo = _prefix_sum_double_double(-inc)
            object.__setattr__(self, "step_integrals", inc)
            object.__setattr__(self, "log_alpha_bar", _readonly(hi))
            object.__setattr__(self, "_log_alpha_bar_lo", _readonly(lo))
            object.__setattr__(self, "alpha_bar", _readonly(np.exp(hi + lo)))
            object.__setattr__(self, "beta_bar", _readonly(0.0 - np.expm1(hi + lo)))

    def __repr__(self) -> str:
        return f"DiscretizedSchedule({self.name}, N={self.N}, t in [{self.times[1]:.6g}, {self.times[-1]:.6g}])"

    def timestep_of(self, t) -> np.ndarray:
        """The timestep n with times[n] == t exactly, for each t (ValueError where a time is not a grid time)."""
        arr = np.atleast_1d(np.asarray(t, dtype=np.float64))
        idx = np.searchsorted(self.times, arr)
        ok = (idx <= self.N) & (self.times[np.minimum(idx, self.N)] == arr)
        if not ok.all():
            raise ValueError(f"times {_show(arr[~ok])} are not grid times of {self!r}; pick them from schedule.times.")
        return idx.astype(np.int64)


@dataclass(frozen=True)
class VPSDE:
    """Song et al.'s variance-preserving SDE on t ∈ [0, 1]: β(t) = β_min + t(β_max − β_min) (score_sde ``VPSDE``).

    Methods take a real t (float → float, array → float64 array) in [0, 1]; t outside it or non-finite raises.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        bmin, bmax = _check_vpsde_rates(self.beta_min, self.beta_max)
        object.__setattr__(self, "beta_min", bmin)
        object.__setattr__(self, "beta_max", bmax)

    T = 1.0  #: the end time of the SDE

    # ------------------------------------------------------------------ closed forms
    def beta(self, t):
        """The rate β(t) = β_min + t(β_max − β_min)."""
        a, sc = _real_times("t", t)
        return _ret(self.beta_min + a * (self.beta_max - self.beta_min), sc)

    def integral(self, s, t):
        """∫_s^t β(τ)dτ = (t − s)(β_min + ½(β_max − β_min)(s + t)) for 0 <= s <= t <= 1 (broadcast)."""
        a, sc_s = _real_times("s", s)
        b, sc_t = _real_times("t", t)
        if np.any(a > b):
            raise ValueError(f"integral(s, t) needs s <= t; got s = {_show(a)}, t = {_show(b)}.")
        out = (b - a) * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * (a + b))
        return _ret(out, sc_s and sc_t)

    def log_alpha_bar(self, t):
        """log ᾱ(t) = −∫_0^t β = −t(β_min + ½(β_max − β_min)t)."""
        a, sc = _real_times("t", t)
        return _ret(-a * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * a), sc)

    def alpha_bar(self, t):
        """ᾱ(t) = exp(log ᾱ(t)), the signal coefficient squared of q(z_t | x_0)."""
        a, sc = _real_times("t", t)
        return _ret(np.exp(self.log_alpha_bar(a)), sc)

    def beta_bar(self, t):
        """β̄(t) = 1 − ᾱ(t), computed as −expm1(log ᾱ(t)) (no cancellation at small t)."""
        a, sc = _real_times("t", t)
        return _ret(-np.expm1(self.log_alpha_bar(a)), sc)

    def marginal_std(self, t):
        """√β̄(t), the standard deviation of q(z_t | x_0) (score_sde ``marginal_prob``'s std)."""
        a, sc = _real_times("t", t)
        return _ret(np.sqrt(self.beta_bar(a)), sc)

    def log_skip_alpha(self, s, t):
        """log α(t|s) = −∫_s^t β (s <= t)."""
        v = -np.asarray(self.integral(s, t))
        return float(v) if v.ndim == 0 else v

    def skip_alpha(self, s, t):
        """α(t|s) = ᾱ(t)/ᾱ(s) = exp(−∫_s^t β)."""
        v = np.exp(self.log_skip_alpha(s, t))
        return float(v) if np.ndim(v) == 0 else v

    def skip_beta(self, s, t):
        """β(t|s) = 1 − α(t|s) = −expm1(−∫_s^t β)."""
        v = -np.expm1(self.log_skip_alpha(s, t))
        return float(v) if np.ndim(v) == 0 else v

    # ------------------------------------------------------------------ discretization
    def discretize(self, times, name: str | None = None) -> DiscretizedSchedule:
        """The Schedule on the real times 0 = t_0 < t_1 < … < t_N <= 1 (``times`` includes t_0 = 0):
        β_n = 1 − ᾱ(t_n)/ᾱ(t_{n−1}) = −expm1(−∫_{t_{n−1}}^{t_n} β), so ᾱ_n = ᾱ(t_n) and timestep n means t_n.

        β is kept exactly and log ᾱ_n = −Σ_{i<=n} ∫_{t_{i−1}}^{t_i} β accumulated in double-double precision from the
        step integrals, so ᾱ_n and the skip quantities between any two timesteps keep full relative precision.
        """
        hint = "Pass the real times 0 = t_0 < t_1 < … < t_N <= 1, e.g. np.linspace(0, 1, N + 1)."
        arr = as_float_array("times", times, fix=hint)
        if arr.size < 2:
            raise ValueError(f"times must hold t_0 = 0 and at least one more time (N >= 1); got {_show(arr)}. {hint}")
        _real_times("times", arr)
        if arr[0] != 0.0:
            raise ValueError(
                f"times must start at t_0 = 0 (timestep 0 is the data); got times[0] = {arr[0]!r}. Prepend it: "
                "np.concatenate([[0.0], times])."
            )
        _increasing("times", arr, hint)
        inc = np.diff(arr) * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * (arr[1:] + arr[:-1]))
        beta = -np.expm1(-inc)
        bad = ~((beta > 0.0) & (beta < 1.0))
        if bad.any():
            n = int(np.flatnonzero(bad)[0]) + 1
            raise ValueError(
                f"the step from t = {float(arr[n - 1])!r} to {float(arr[n])!r} gives β_{n} = "
                f"{float(beta[n - 1])!r}, outside (0, 1) in float64 (its integral of β is 0 or above ~37). Use "
                "times closer together or smaller rates."
            )
        nm = name or f"VPSDE({self.beta_min:g}, {self.beta_max:g}) at {arr.size - 1} times"
        return DiscretizedSchedule(np.zeros(arr.size), name=nm, beta_given=np.concatenate([[0.0], beta]),
                                   times=arr, sde=self, step_integrals=inc)

    def schedule(self, N: int = 1000) -> DiscretizedSchedule:
        """The uniform discretization t_n = n/N, the extended paper's ``vpsde_1000`` for N = 1000: the same β as
        :meth:`analytic_dpm.Schedule.vpsde` (midpoint formula in exact 1/N steps), with the times kept; log ᾱ from
        the step integrals (as :meth:`discretize`), which matters only where β_n is near 1 (tiny N)."""
        N = as_int("N", N, minimum=1, fix="N is the number of discretization steps, e.g. 1000.")
        beta, inc = _vpsde_betas(N, self.beta_min, self.beta_max, return_integrals=True)
        return DiscretizedSchedule(np.zeros(N + 1), name=f"vpsde(N={N}, beta_min={self.beta_min:g}, "
                                   f"beta_max={self.beta_max:g})", beta_given=np.concatenate([[0.0], beta]),
                                   times=np.arange(N + 1, dtype=np.float64) / N, sde=self, step_integrals=inc)


def vpsde_schedule(N: int = 1000, beta_min: float = 0.1, beta_max: float = 20.0) -> DiscretizedSchedule:
    """``VPSDE(beta_min, beta_max).schedule(N)``: the official ``vpsde_1000`` (t_n = n/N) with its real times."""
    return VPSDE(beta_min, beta_max).schedule(N)


def _schedule_and_times(sde, times) -> DiscretizedSchedule:
    if isinstance(times, DiscretizedSchedule):
        return times
    if isinstance(times, Schedule):
        raise TypeError(
            f"times must be a DiscretizedSchedule (it knows the real time of each timestep) or an array of real times "
            f"0 = t_0 < … < t_N; got the plain {times!r}. Use sde.discretize(times) or sde.schedule(N)."
        )
    if not isinstance(sde, VPSDE):
        raise TypeError(f"sde must be an analytic_dpm.continuous.VPSDE; got {type(sde).__name__}.")
    return sde.discretize(times)


# ==================================================================================================== networks
class ContinuousTimeEpsModel:
    """A continuous-time ε-predictor ``model(x, t_scaled)`` as the discrete ε-model ``eps_model(x, n)`` (the official
    ``CT2DTWrapper``): timestep n means the real time t_n = ``times[n]``, and the network receives
    ``t_n · time_scale`` (score_sde's VP models: t·999, :data:`SCORE_SDE_TIME_SCALE`) as a tensor/array of shape (B,).

    Args:
        model: a ``torch.nn.Module`` ``net(x, t)`` (wrapped with :class:`~analytic_dpm.models.protocol.TorchEpsModel`
            and a timestep map n → t_n·time_scale: numpy and torch inputs, eval mode, no_grad, batching), or any
            callable ``model(x, t)`` that takes the batch as given (numpy or torch) and t of shape (B,) of the same
            kind (numpy float array of x's dtype; torch tensor of x's dtype and device).
        sde: the :class:`VPSDE` the network was trained with.
        times: the real times of the timesteps: a :class:`DiscretizedSchedule` or an array 0 = t_0 < … < t_N
            (then ``sde.discretize(times)``). Default: ``sde.schedule(1000)`` (the paper's ``vpsde_1000``).
        time_scale: the factor applied to t before the network sees it (999 for score_sde's VP models; 1 for
            networks trained on t itself).
        prediction: 'eps' (default; score_sde's VP networks output ε, their score is −output/√β̄(t)), 'x0', 'v' or
            'score', converted to ε at timestep n of :attr:`schedule`.
        batch_size, timestep_dtype: as in TorchEpsModel (torch modules only); the default timestep dtype is the
            network's floating dtype (the official wrapper casts t to the input's dtype).

    :attr:`schedule` is the discretized Schedule to use with it (``estimate_gamma(m, m.schedule, data)``,
    ``sample(m, m.schedule, ...)``). A torch network with a second head (``head_kind`` 'sn'/'npr', e.g. the extended
    paper's SN-/NPR-DPM heads trained in continuous time) keeps the headed-model protocol: :attr:`head_kind` and
    :meth:`eps_and_head`.
    """

    def __init__(self, model, sde: VPSDE | None = None, times=None, time_scale: float = SCORE_SDE_TIME_SCALE, *,
                 prediction: str = "eps", batch_size: int | None = None, timestep_dtype=None):
        from .models.protocol import PREDICTIONS, TorchEpsModel

        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t); got {type(model).__name__}.")
        sde = VPSDE() if sde is None else sde
        if not isinstance(sde, VPSDE):
            raise TypeError(f"sde must be an analytic_dpm.continuous.VPSDE; got {type(sde).__name__}.")
        schedule = sde.schedule(1000) if times is None else _schedule_and_times(sde, times)
        self.time_scale = as_float("time_scale", time_scale, fix="score_sde's VP models use 999.")
        if self.time_scale <= 0.0:
            raise ValueError(f"time_scale must be > 0 (score_sde's VP models use 999); got {self.time_scale}.")
        choice("prediction", prediction, PREDICTIONS)
        self.model = model
        self.sde = sde
        self.schedule = schedule
        self.prediction = prediction
        self._scaled = schedule.times * self.time_scale
        self._torch = None
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(model, torch.nn.Module):
            inner = TorchEpsModel(model, timestep_map=self.network_timestep, schedule=schedule,
                                  prediction=prediction, batch_size=batch_size,
                                  timestep_dtype=torch.float32 if timestep_dtype is None else timestep_dtype)
            if timestep_dtype is None:
                inner.timestep_dtype = inner._device_dtype()[1]
            self._torch = inner
            if getattr(inner, "head_kind", None) is not None:
                #: a network with a second head (SN-/NPR-DPM, trained in continuous time): the headed-model protocol
                self.head_kind = inner.head_kind
        elif batch_size is not None or timestep_dtype is not None:
            raise ValueError("batch_size and timestep_dtype apply to torch.nn.Module networks only; a plain callable "
                             "model(x, t) gets the whole batch and t of x's dtype.")

    @property
    def times(self) -> np.ndarray:
        """The real times t_0 = 0 < … < t_N of the timesteps."""
        return self.schedule.times

    def network_timestep(self, n: int) -> float:
        """What the network receives for timestep n: t_n · time_scale."""
        return float(self._scaled[n])

    def __call__(self, x, n):
        from .models.protocol import _check_n, _check_output, eps_from_prediction

        n = _check_n(n, self.schedule.N)
        if self._torch is not None:
            return self._torch(x, n)
        B = int(x.shape[0]) if getattr(x, "ndim", 0) >= 1 else None
        if B is None:
            raise ValueError(f"x must be a batch of shape (B, ...); got {type(x).__name__} of shape "
                             f"{getattr(x, 'shape', None)}.")
        if _is_torch(x):
            import torch

            t = torch.full((B,), self.network_timestep(n), dtype=x.dtype, device=x.device)
        else:
            x = np.asarray(x)
            if not np.issubdtype(x.dtype, np.floating):
                raise TypeError(f"x must be a floating-point array; got dtype {x.dtype}.")
            t = np.full((B,), self.network_timestep(n), dtype=x.dtype)
        out = self.model(x, t)
        _check_output(out, x, n, "continuous-time")
        return eps_from_prediction(self.schedule, n, x, out, self.prediction)

    def eps_and_head(self, x, n):
        """(ε̂_n(x), head_n(x)) of a headed continuous-time network (attribute ``head_kind``; the shared contract's
        headed-model protocol), the network called at t_n·time_scale."""
        if getattr(self, "head_kind", None) is None:
            raise TypeError(f"{type(self.model).__name__} has no second head: eps_and_head needs a torch network with "
                            "head_kind 'sn' or 'npr' returning (eps_hat, head) (analytic_dpm.models.heads.HeadedNet).")
        return self._torch.eps_and_head(x, n)

    def __repr__(self) -> str:
        return (f"ContinuousTimeEpsModel({self.model!r}, {self.sde!r}, {self.schedule!r}, "
                f"time_scale={self.time_scale:g}, prediction={self.prediction!r})")


# ==================================================================================================== Γ at real t
_STATS = ("gamma", "one_minus_gamma", "residual")


@dataclass(frozen=True, eq=False)
class GammaCurve:
    """Γ(t) = E‖ε̂(z_t, t)‖²/d (noise form) on a grid of real times, linearly interpolated in t between grid points
    (P App. E.1); likewise R(t) = E‖ε − ε̂‖²/d and 1 − Γ(t) where given. No extrapolation: a t outside
    [times[0], times[-1]] raises.

    Build one from arrays (``GammaCurve(times, gamma, one_minus_gamma=..., residual=...)``), from a
    :class:`~analytic_dpm.gamma.GammaEstimate` on a discretized schedule (:meth:`from_estimate`) or exactly on toy
    data (:func:`exact_gamma_curve`). Stderr arrays, where given, are interpolated linearly too: for correlated or
    independent errors at the two neighbours that is an upper bound on the standard error of the interpolated value
    (triangle inequality).
    """

    times: np.ndarray
    gamma: np.ndarray
    one_minus_gamma: np.ndarray | None = None
    residual: np.ndarray | None = None
    gamma_stderr: np.ndarray | None = None
    one_minus_gamma_stderr: np.ndarray | None = None
    residual_stderr: np.ndarray | None = None
    num_samples: int | None = None
    source: str = "arrays"

    def __post_init__(self):
        hint = "Pass the grid's real times in increasing order, e.g. schedule.times[estimate.timesteps]."
        t = as_float_array("times", self.times, fix=hint)
        if t.size < 2:
            raise ValueError(f"times must hold at least 2 grid points to interpolate between; got {_show(t)}.")
        if not np.all(np.isfinite(t)):
            raise ValueError(f"times must be finite; got {_show(t)}. {hint}")
        _increasing("times", t, hint)
        object.__setattr__(self, "times", _readonly(t))
        for name in ("gamma", "one_minus_gamma", "residual", "gamma_stderr", "one_minus_gamma_stderr",
                     "residual_stderr"):
            value = getattr(self, name)
            if value is None:
                if name == "gamma":
                    raise ValueError("gamma must be given: Γ at each grid time.")
                continue
            a = as_float_array(name, value, fix=f"{name} holds one value per grid time, shape ({t.size},).")
            if a.shape != t.shape:
                raise ValueError(f"{name} must have the shape of times {t.shape} (one value per grid time); got "
                                 f"shape {a.shape}.")
            bad = ~np.isfinite(a)
            if bad.any():
                raise ValueError(f"{name} must be finite at every grid time; got {_show(a[bad])} at t = "
                                 f"{_show(t[bad])}. Estimate it at those times or leave them out of the grid.")
            object.__setattr__(self, name, _readonly(a))
        if self.num_samples is not None:
            object.__setattr__(self, "num_samples", as_int("num_samples", self.num_samples, minimum=1))

    @classmethod
    def from_estimate(cls, estimate, times) -> "GammaCurve":
        """The curve through a :class:`~analytic_dpm.gamma.GammaEstimate` at its estimated timesteps; ``times`` is
        the :class:`DiscretizedSchedule` it was estimated on (or its real times, shape (N+1,)): grid time of
        timestep n = ``times[n]``. Carries Γ̂, the control-variate 1 − Γ̂ and R̂ with their standard errors."""
        if not hasattr(estimate, "num_samples") or not hasattr(estimate, "timesteps"):
            raise TypeError(f"estimate must be an analytic_dpm.GammaEstimate; got {type(estimate).__name__}. For "
                            "plain arrays use GammaCurve(times, gamma, ...).")
        real = times.times if isinstance(times, DiscretizedSchedule) else as_float_array(
            "times", times, fix="Pass the DiscretizedSchedule the estimate was made on.")
        if real.shape != (estimate.N + 1,):
            raise ValueError(f"times must give the real time of each timestep 0..N = 0..{estimate.N} of the estimate "
                             f"(shape ({estimate.N + 1},)); got shape {real.shape}.")
        ts = np.asarray(estimate.timesteps, dtype=np.int64)
        if ts.size < 2:
            raise ValueError(f"the estimate covers {ts.size} timestep(s); interpolation needs at least 2.")
        pick = {k: (None if getattr(estimate, k, None) is None else np.asarray(getattr(estimate, k))[ts])
                for k in ("one_minus_gamma", "one_minus_gamma_stderr", "residual", "residual_stderr")}
        return cls(times=real[ts], gamma=np.asarray(estimate.gamma)[ts], gamma_stderr=np.asarray(estimate.stderr)[ts],
                   num_samples=estimate.num_samples, source="monte-carlo", **pick)

    # ------------------------------------------------------------------ evaluation
    def _check_t(self, t):
        arr = np.asarray(t, dtype=np.float64) if not isinstance(t, np.ndarray) else t.astype(np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"t must be finite; got {_show(arr[bad])}.")
        lo, hi = self.times[0], self.times[-1]
        out = (arr < lo) | (arr > hi)
        if out.any():
            raise ValueError(
                f"t must lie in this GammaCurve's grid range [{lo!r}, {hi!r}] (linear interpolation, P App. E.1, "
                f"does not extrapolate); got {_show(arr[out])}. Estimate Γ on a grid that covers these times."
            )
        return arr

    def _interp(self, values, t):
        arr = self._check_t(t)
        out = np.interp(arr, self.times, values)
        return float(out) if np.ndim(out) == 0 else out

    def at(self, t):
        """Γ(t), linearly interpolated between the grid points (P App. E.1)."""
        return self._interp(self.gamma, t)

    def one_minus_gamma_at(self, t):
        """1 − Γ(t): the interpolated 1 − Γ column where given (it keeps its digits near Γ = 1), else 1 − Γ(t)."""
        if self.one_minus_gamma is None:
            return self._interp(1.0 - self.gamma, t)
        return self._interp(self.one_minus_gamma, t)

    def residual_at(self, t):
        """R(t) = E‖ε − ε̂‖²/d, linearly interpolated (needs ``residual``)."""
        if self.residual is None:
            raise ValueError("this GammaCurve has no residual; build it from a GammaEstimate (which carries R̂) or "
                             "pass residual= (for the exact predictor R = 1 − Γ).")
        return self._interp(self.residual, t)

    def stderr_at(self, t, statistic: str = "gamma"):
        """The linearly interpolated standard error of ``statistic`` ('gamma', 'one_minus_gamma', 'residual'): an
        upper bound on the standard error of the interpolated value."""
        choice("statistic", statistic, _STATS)
        err = getattr(self, f"{statistic}_stderr")
        if err is None:
            raise ValueError(f"this GammaCurve has no {statistic}_stderr (built from exact values or plain arrays).")
        return self._interp(err, t)

    def __repr__(self) -> str:
        return (f"GammaCurve({self.source}, {self.times.size} grid times in [{self.times[0]:.6g}, "
                f"{self.times[-1]:.6g}])")


# ==================================================================================================== trajectories
@dataclass(frozen=True, eq=False)
class ContinuousTrajectory:
    """A sampling trajectory of real times as the library's discrete objects.

    ``schedule`` is the SDE discretized on [0, t_1, …, t_K] (so N = K), ``trajectory`` = [0, 1, …, K], and the
    per-timestep arrays (shape (K+1,), index 0 = 0) hold Γ, 1 − Γ and R interpolated at t_k: pass them to
    ``reverse_variances(schedule, trajectory, ...)``, ``sample(...)`` or ``toy.evaluate_exact(...)`` unchanged
    (:meth:`reverse_variances` does it). Wrap a continuous-time network with :meth:`eps_model`.
    """

    sde: VPSDE
    times: np.ndarray  #: [0, t_1, …, t_K]
    schedule: DiscretizedSchedule
    trajectory: np.ndarray
    gamma: np.ndarray | None = None
    one_minus_gamma: np.ndarray | None = None
    residual: np.ndarray | None = None

    @property
    def K(self) -> int:
        return int(self.trajectory.size - 1)

    def reverse_variances(self, method: str = "analytic-ddpm", eta: float = 0.0, data_range=(-1.0, 1.0),
                          clip: bool = True):
        """``reverse_variances(schedule, trajectory, method, ...)`` with this trajectory's interpolated 1 − Γ
        (analytic methods) or R (residual methods)."""
        from .variance import ANALYTIC_METHODS, RESIDUAL_METHODS, reverse_variances

        kw = {}
        if method in ANALYTIC_METHODS:
            if self.one_minus_gamma is None:
                raise ValueError(f"method {method!r} needs Γ: build the trajectory with a gamma_curve.")
            kw["one_minus_gamma"] = self.one_minus_gamma
        elif method in RESIDUAL_METHODS:
            if self.residual is None:
                raise ValueError(f"method {method!r} needs the residual R: build the trajectory with a gamma_curve "
                                 "that carries one (GammaCurve.from_estimate).")
            kw["residual"] = self.residual
        return reverse_variances(self.schedule, self.trajectory, method, eta=eta, data_range=data_range, clip=clip,
                                 **kw)

    def eps_model(self, model, time_scale: float = SCORE_SDE_TIME_SCALE, **kw) -> ContinuousTimeEpsModel:
        """``ContinuousTimeEpsModel(model, sde, schedule, time_scale)``: the network at this trajectory's times."""
        return ContinuousTimeEpsModel(model, self.sde, self.schedule, time_scale, **kw)


def _check_trajectory_times(times) -> np.ndarray:
    hint = "Pass 0 < t_1 < … < t_K <= 1 (without the leading 0)."
    try:
        arr = np.atleast_1d(np.asarray(times, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"times must be an array of real numbers; got {times!r}. {hint}") from None
    if arr.ndim != 1:
        raise ValueError(f"times must be a 1-D array; got shape {arr.shape}. {hint}")
    if arr.size == 0:
        raise ValueError(f"times must hold at least one time t_1; got an empty array. {hint}")
    if arr[0] == 0.0:
        raise ValueError(f"times must not include t_0 = 0 (it is added); got {_show(arr)}. {hint}")
    _real_times("times", arr, open_lo=True)
    _increasing("times", arr, hint)
    return arr


def continuous_trajectory(sde: VPSDE, times, gamma_curve: GammaCurve | None = None) -> ContinuousTrajectory:
    """Analytic-DPM at arbitrary real timesteps 0 < t_1 < … < t_K <= 1 (P App. E.1).

    Returns a :class:`ContinuousTrajectory`: the Schedule discretized on [0, t_1, …, t_K] (exact ᾱ(t_k) and skip
    quantities of the SDE), the trajectory [0, 1, …, K] and, with ``gamma_curve``, Γ(t_k), 1 − Γ(t_k) and R(t_k)
    linearly interpolated from the curve's grid, as arrays of shape (K+1,) for the existing discrete functions.
    """
    if not isinstance(sde, VPSDE):
        raise TypeError(f"sde must be an analytic_dpm.continuous.VPSDE; got {type(sde).__name__}.")
    t = _check_trajectory_times(times)
    full = np.concatenate([[0.0], t])
    sched = sde.discretize(full)
    K = t.size
    arrays = {}
    if gamma_curve is not None:
        if not isinstance(gamma_curve, GammaCurve):
            raise TypeError(f"gamma_curve must be a GammaCurve; got {type(gamma_curve).__name__}.")
        g = np.zeros(K + 1)
        g[1:] = gamma_curve.at(t)
        omg = np.zeros(K + 1)
        omg[1:] = gamma_curve.one_minus_gamma_at(t)
        arrays = {"gamma": g, "one_minus_gamma": omg}
        if gamma_curve.residual is not None:
            r = np.zeros(K + 1)
            r[1:] = gamma_curve.residual_at(t)
            arrays["residual"] = r
    return ContinuousTrajectory(sde=sde, times=_readonly(full), schedule=sched,
                                trajectory=np.arange(K + 1, dtype=np.int64),
                                **{k: _readonly(v) for k, v in arrays.items()})


@dataclass(frozen=True, eq=False)
class ContinuousOptimalTrajectory:
    """The optimal K-step trajectory on a grid of real times (App. E.2): ``times`` = [0, t_1, …, t_K] (t_1 = grid[0]
    and t_K = grid[-1] fixed), ``grid_trajectory`` its timesteps in ``schedule`` (the grid's), ``cost`` Σ J."""

    times: np.ndarray
    grid_trajectory: np.ndarray
    cost: float
    schedule: DiscretizedSchedule
    form: str
    result: object = field(repr=False, default=None)

    @property
    def K(self) -> int:
        return int(self.times.size - 1)


def continuous_optimal_trajectory(sde: VPSDE, gamma_curve: GammaCurve, K: int, grid=None, *,
                                  form: str = "corollary4", statistic: str = "one_minus_gamma",
                                  data_range=(-1.0, 1.0), clip: bool = True, **solve_kw) -> ContinuousOptimalTrajectory:
    """App. E.2: minimize Σ_k J(t_{k−1}, t_k), J(s, t) = log(1 − β(t|s) E‖∇log q_t‖²/d) = log(1 − β(t|s)Γ_t/β̄(t)),
    over K-point trajectories on a finite grid of real times (``grid``, increasing, in (0, 1]; default the curve's
    own grid; it must lie in the curve's range). τ_1 = grid[0] and τ_K = grid[-1] are fixed, as in the discrete DP.

    Calls :func:`analytic_dpm.optimal_trajectory` on ``sde.discretize([0, *grid])`` with Γ from the curve
    (``statistic``: 'one_minus_gamma' (default, 1 − Γ with its digits), 'gamma', or 'residual' for the network's own
    mean). ``form="corollary4"`` is App. E.2's J; ``"log_ratio"`` (log σ*²/λ²) differs by a telescoping term and
    has the same argmin. Then build the sampler with ``continuous_trajectory(sde, result.times[1:], gamma_curve)``.
    """
    from .optimal_trajectory import optimal_trajectory

    if not isinstance(gamma_curve, GammaCurve):
        raise TypeError(f"gamma_curve must be a GammaCurve; got {type(gamma_curve).__name__}.")
    choice("statistic", statistic, _STATS)
    g = gamma_curve.times if grid is None else _check_trajectory_times(grid)
    sched = sde.discretize(np.concatenate([[0.0], g]))
    values = np.zeros(g.size + 1)
    values[1:] = {"gamma": gamma_curve.at, "one_minus_gamma": gamma_curve.one_minus_gamma_at,
                  "residual": gamma_curve.residual_at}[statistic](g)
    K = as_int("K", K, minimum=2, fix=f"K counts the trajectory's times, 2 <= K <= {g.size} (the grid size).")
    if K > g.size:
        raise ValueError(f"K must be at most the grid size {g.size}; got K = {K}. Use a finer grid.")
    res = optimal_trajectory(sched, values if statistic == "gamma" else None, K, form=form, data_range=data_range,
                             clip=clip, **({statistic: values} if statistic != "gamma" else {}), **solve_kw)
    traj = np.asarray(res.trajectory if hasattr(res, "trajectory") else res, dtype=np.int64)
    return ContinuousOptimalTrajectory(times=_readonly(sched.times[traj]), grid_trajectory=traj,
                                       cost=float(res.cost), schedule=sched, form=form, result=res)


# ==================================================================================================== toy laboratory
def _check_gaussian(data):
    from .toy import GaussianData

    if not isinstance(data, GaussianData):
        raise TypeError(f"data must be analytic_dpm.toy.GaussianData (exact Γ at any ᾱ); got {type(data).__name__}.")
    return data


def _exact_at(data, sde, t, what: str):
    data = _check_gaussian(data)
    if not isinstance(sde, VPSDE):
        raise TypeError(f"sde must be an analytic_dpm.continuous.VPSDE; got {type(sde).__name__}.")
    arr, scalar = _real_times("t", t, open_lo=True)
    u, inv = np.unique(arr.reshape(-1), return_inverse=True)
    sched = sde.discretize(np.concatenate([[0.0], u]))
    steps = np.arange(1, u.size + 1)
    vals = data.gamma_at(sched, steps) if what == "gamma" else data.one_minus_gamma_at(sched, steps)
    out = vals[inv].reshape(arr.shape)
    return _ret(out, scalar)


def exact_gamma(data, sde: VPSDE, t):
    """The exact Γ(t) = (1/d) Σ_i β̄(t)/(ᾱ(t)λ_i + β̄(t)) of Gaussian data at real times t in (0, 1], via the
    schedule discretized at those times (Γ depends on ᾱ(t) only)."""
    return _exact_at(data, sde, t, "gamma")


def exact_one_minus_gamma(data, sde: VPSDE, t):
    """The exact 1 − Γ(t) = (1/d) Σ_i ᾱ(t)λ_i/(ᾱ(t)λ_i + β̄(t)) at real times t (no cancellation; = R(t) of ε*)."""
    return _exact_at(data, sde, t, "one_minus_gamma")


def exact_gamma_curve(data, sde: VPSDE, grid) -> GammaCurve:
    """A :class:`GammaCurve` through the exact Γ, 1 − Γ and R = 1 − Γ (the exact predictor) at the grid times."""
    g = as_float_array("grid", grid, fix="Pass the grid's real times in (0, 1], increasing.")
    omg = exact_one_minus_gamma(data, sde, g)
    return GammaCurve(times=g, gamma=exact_gamma(data, sde, g), one_minus_gamma=omg, residual=omg, source="exact")


def exact_sigma_sq(data, sde: VPSDE, s, t, method: str = "analytic-ddpm", eta: float = 0.0) -> float:
    """The exact Analytic-DPM variance σ*²(s|t) at real times 0 <= s < t <= 1 on Gaussian data: Theorem 1 with
    the exact 1 − Γ(t) on the schedule discretized at [0, s, t] (App. E.1; for 'analytic-ddpm'
    (β(t|s)/α(t|s))(1 − β(t|s)Γ_t/β̄(t))). No clipping (the exact value lies within Theorem 2's bounds)."""
    from .variance import ANALYTIC_METHODS, reverse_variances

    choice("method", method, ANALYTIC_METHODS)
    s = as_float("s", s)
    t = as_float("t", t)
    _real_times("t", t, open_lo=True)
    _real_times("s", s)
    if not s < t:
        raise ValueError(f"need 0 <= s < t <= 1 (the reverse step from t down to s); got s = {s!r}, t = {t!r}.")
    times = [0.0, t] if s == 0.0 else [0.0, s, t]
    sched = sde.discretize(times)
    K = len(times) - 1
    omg = np.zeros(K + 1)
    omg[1:] = exact_one_minus_gamma(data, sde, np.asarray(times[1:]))
    rv = reverse_variances(sched, np.arange(K + 1), method, eta=eta, data_range=None,
                           clip=False, one_minus_gamma=omg)
    return float(rv.sigma_sq[-1])


#: the grid spacings :func:`interpolation_error` knows: uniform in t, or quadratic (t = t_min + (t_max − t_min)u²,
#: denser near t_min where Γ changes fastest)
SPACINGS = ("uniform", "quadratic")


def grid_times(size: int, t_min: float = 1e-3, t_max: float = 1.0, spacing: str = "uniform") -> np.ndarray:
    """``size`` real times from t_min to t_max (both included): uniform in t, or quadratic t_min + (t_max − t_min)u²."""
    size = as_int("size", size, minimum=2, fix="A grid needs at least its two end points.")
    choice("spacing", spacing, SPACINGS)
    t_min, t_max = as_float("t_min", t_min), as_float("t_max", t_max)
    if not 0.0 < t_min < t_max <= 1.0:
        raise ValueError(f"need 0 < t_min < t_max <= 1; got t_min = {t_min!r}, t_max = {t_max!r}.")
    u = np.linspace(0.0, 1.0, size)
    out = t_min + (t_max - t_min) * (u if spacing == "uniform" else u * u)
    out[0], out[-1] = t_min, t_max
    return out


def interpolation_error(data, sde: VPSDE | None = None, grid_sizes=(11, 21, 51, 101), *, K_values=(10, 50),
                        t_min: float = 1e-3, t_max: float = 1.0, spacing: str = "uniform", fine_size: int = 2001,
                        num_samples: int = 0, seed: int = 0, method: str = "analytic-ddpm") -> list[dict]:
    """What linear interpolation of Γ between grid points (P App. E.1) costs, measured exactly on Gaussian data.

    For each grid size G: Γ on ``grid_times(G, t_min, t_max, spacing)``, exact (and, with ``num_samples`` = M > 0,
    a Monte Carlo :func:`~analytic_dpm.estimate_gamma` of the exact ε* on the grid's discretized schedule, M samples),
    interpolated to ``fine_size`` uniform times in [t_min, t_max] and to the midpoint of every grid interval (where
    the error of linear interpolation, ≈ (h²/8)|Γ''|, peaks) and compared with the exact Γ there. Then for each K
    in ``K_values``: the K real times uniform in [t_min, t_max], the exact bound and Fréchet distance of
    :func:`analytic_dpm.toy.evaluate_exact` with σ² from the interpolated 1 − Γ, against those with the exact Γ at
    the same times.

    Returns one dict per (G, K) with: grid_size, h (largest grid step), K, spacing, max_abs_err_gamma
    (max |Γ_interp − Γ_exact| over those times), max_rel_err_one_minus_gamma, vb_exact (nats/dim, decoder left out),
    vb_interp_minus_exact, fd_exact, fd_interp_minus_exact, max_rel_err_sigma_sq (over the K transitions with
    s >= 1); and with Monte Carlo: num_samples, mc_max_abs_err_gamma, mc_max_abs_err_one_minus_gamma (control variate),
    mc_max_stderr_gamma, mc_vb_minus_exact, mc_fd_minus_exact.
    """
    from .gamma import estimate_gamma
    from .toy import evaluate_exact

    data = _check_gaussian(data)
    sde = VPSDE() if sde is None else sde
    if not isinstance(sde, VPSDE):
        raise TypeError(f"sde must be an analytic_dpm.continuous.VPSDE; got {type(sde).__name__}.")
    sizes = [as_int("grid_sizes", G, minimum=2) for G in np.atleast_1d(grid_sizes).tolist()]
    Ks = [as_int("K_values", K, minimum=1) for K in np.atleast_1d(K_values).tolist()]
    M = as_int("num_samples", num_samples, minimum=0, fix="0 means no Monte Carlo estimate.")
    fine = grid_times(as_int("fine_size", fine_size, minimum=2), t_min, t_max, "uniform")
    g_fine = exact_gamma(data, sde, fine)
    omg_fine = exact_one_minus_gamma(data, sde, fine)
    refs = {}
    for K in Ks:
        times = grid_times(K, t_min, t_max, "uniform") if K >= 2 else np.array([t_max])
        ct = continuous_trajectory(sde, times)
        ref = evaluate_exact(data, ct.schedule, ct.trajectory, method)
        refs[K] = (times, ct, ref)
    rows = []
    for G in sizes:
        grid = grid_times(G, t_min, t_max, spacing)
        curve = exact_gamma_curve(data, sde, grid)
        # the fine grid plus every interval's midpoint (where the linear-interpolation error peaks)
        ev_t = np.concatenate([fine, 0.5 * (grid[1:] + grid[:-1])])
        g_ev = np.concatenate([g_fine, exact_gamma(data, sde, ev_t[fine.size:])])
        omg_ev = np.concatenate([omg_fine, exact_one_minus_gamma(data, sde, ev_t[fine.size:])])
        common = {"grid_size": G, "h": float(np.diff(grid).max()), "spacing": spacing,
                  "max_abs_err_gamma": float(np.max(np.abs(curve.at(ev_t) - g_ev))),
                  "max_rel_err_one_minus_gamma": float(np.max(np.abs(curve.one_minus_gamma_at(ev_t) - omg_ev)
                                                              / omg_ev))}
        mc_curve = None
        if M > 0:
            gsched = sde.discretize(np.concatenate([[0.0], grid]))
            est = estimate_gamma(data.eps_model(gsched), gsched, data, num_samples=M, seed=seed, progress=False)
            mc_curve = GammaCurve.from_estimate(est, gsched)
            common.update({"num_samples": M,
                           "mc_max_abs_err_gamma": float(np.max(np.abs(mc_curve.at(ev_t) - g_ev))),
                           "mc_max_abs_err_one_minus_gamma": float(np.max(np.abs(mc_curve.one_minus_gamma_at(ev_t)
                                                                                 - omg_ev))),
                           "mc_max_stderr_gamma": float(np.max(mc_curve.gamma_stderr))})
        for K in Ks:
            times, ct0, ref = refs[K]
            ct = continuous_trajectory(sde, times, curve)
            ev = evaluate_exact(data, ct.schedule, ct.trajectory, method, one_minus_gamma=ct.one_minus_gamma)
            inner = ct.trajectory[:-1] >= 1
            rel = (np.abs(ev.sigma_sq - ref.sigma_sq) / ref.sigma_sq)[inner]
            row = dict(common, K=K, vb_exact=ref.vb_nats_per_dim,
                       vb_interp_minus_exact=_diff(ev.vb_nats_per_dim, ref.vb_nats_per_dim),
                       fd_exact=ref.fd, fd_interp_minus_exact=ev.fd - ref.fd,
                       max_rel_err_sigma_sq=float(rel.max()) if rel.size else 0.0)
            if mc_curve is not None:
                ctm = continuous_trajectory(sde, times, mc_curve)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # MC 1 − Γ̂ slightly outside [0, 1]: clipped
                    evm = evaluate_exact(data, ctm.schedule, ctm.trajectory, method,
                                         one_minus_gamma=ctm.one_minus_gamma)
                row.update(mc_vb_minus_exact=_diff(evm.vb_nats_per_dim, ref.vb_nats_per_dim),
                           mc_fd_minus_exact=evm.fd - ref.fd)
            rows.append(row)
    return rows


def _diff(a, b):
    return None if a is None or b is None else float(a - b)


def toy_continuous_eps(data, sde: VPSDE | None = None, time_scale: float = SCORE_SDE_TIME_SCALE):
    """The exact ε*(z, t) = √β̄(t)(ᾱ(t)Σ + β̄(t)I)⁻¹(z − √ᾱ(t)m) of Gaussian data as a continuous-time network
    ``model(x, t_scaled)`` (t_scaled = t·time_scale, shape (B,), numpy or torch; rows may differ in t), the toy
    stand-in for a score_sde VP model."""
    data = _check_gaussian(data)
    sde = VPSDE() if sde is None else sde
    scale = as_float("time_scale", time_scale)

    def model(x, t_scaled):
        tt = np.asarray(t_scaled.detach().cpu().double().numpy() if _is_torch(t_scaled) else t_scaled,
                        dtype=np.float64).reshape(-1) / scale
        if tt.shape[0] != x.shape[0]:
            raise ValueError(f"t must have one entry per row of x, shape ({x.shape[0]},); got shape {tt.shape}.")
        u, inv = np.unique(tt, return_inverse=True)
        sched = sde.discretize(np.concatenate([[0.0], u]))
        if u.size == 1:
            return data.eps(sched, x, 1)
        parts = [None] * x.shape[0]
        for j in range(u.size):
            rows = np.flatnonzero(inv == j)
            e = data.eps(sched, x[rows], j + 1)
            for r, v in zip(rows, e):
                parts[r] = v
        if _is_torch(x):
            import torch

            return torch.stack(parts)
        return np.stack(parts)

    model.__qualname__ = f"toy_continuous_eps({data!r})"
    return model


__all__ = [
    "SCORE_SDE_TIME_SCALE", "SPACINGS", "VPSDE", "DiscretizedSchedule", "vpsde_schedule", "ContinuousTimeEpsModel",
    "GammaCurve", "ContinuousTrajectory", "continuous_trajectory", "ContinuousOptimalTrajectory",
    "continuous_optimal_trajectory", "exact_gamma", "exact_one_minus_gamma", "exact_gamma_curve", "exact_sigma_sq",
    "grid_times", "interpolation_error", "toy_continuous_eps",
]
