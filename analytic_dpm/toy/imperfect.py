"""A deliberately imperfect noise predictor, for studying how ε-model error reaches Γ and σ² (facts file §2, §3).

``ImperfectEps(eps_model, scale, bias)`` returns ε̂_n(x) = scale · ε_n(x) + bias. Wrapped around the exact ε* of toy
data it gives an ε-model whose Γ is known exactly:

    Γ̂_n = E‖scale·ε*_n + bias‖²/d = scale² Γ_n + ‖bias‖²/d,

because the cross term 2·scale·E[ε*_n(x_n)]·bias/d vanishes: E[ε*_n(x_n)] = E[E[ε | x_n]] = E[ε] = 0 for any data.
Its residual, the statistic of the network's own mean that the residual variance needs, is known exactly too:

    R_n = E‖ε − scale·ε*_n − bias‖²/d = (1 − Γ_n) + (1 − scale)² Γ_n + ‖bias‖²/d,

because ε − ε* is orthogonal to every function of x_n (E[ε − ε* | x_n] = 0) and E[ε] = E[ε*] = 0. With the exact
1 − Γ_n (:meth:`GaussianData.one_minus_gamma`) every term is positive, so R_n keeps full precision where it is tiny.

Why Theorem 2's clipping matters. Theorem 1 turns Γ̂ into σ̂² = λ² + g²(1 − Γ̂) with g = √(β̄_t/α_{t|s}) − √(β̄_s − λ²).
For the exact predictor Γ ∈ [0, 1], so λ² ≤ σ*² ≤ λ² + g² (eq. 11). A scale > 1 (or any bias) inflates Γ̂; at large n,
where Γ_n → 1, Γ̂_n = scale²Γ_n + bias² exceeds 1 and σ̂² falls below the lower bound λ² — for DDIM with η = 0
(λ² = 0) it becomes a negative "variance". A scale < 1 deflates Γ̂ and inflates σ̂², which can exceed the bounded-data
bound of eq. 12 at large n. ``reverse_variances`` therefore clips Γ̂ into [0, 1] (with a warning) and σ̂² into
Theorem 2's [λ², min(eq. 11, eq. 12)], reporting which transitions were clipped.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import as_float
from ..schedules import Schedule
from .gaussian import GaussianData, _check_schedule, _is_torch


class ImperfectEps:
    """ε̂_n(x) = scale · eps_model(x, n) + bias, for numpy arrays and torch tensors (the ε-model protocol).

    ``bias`` is a scalar or an array that broadcasts against one sample (shape (d,) or the sample shape), so that its
    contribution to Γ̂ is mean(bias²) over the d coordinates. See the module docstring for what this does to Γ.
    """

    def __init__(self, eps_model, scale: float = 1.0, bias=0.0):
        if not callable(eps_model):
            raise TypeError(f"eps_model must be callable as eps_model(x, n); got {type(eps_model).__name__}.")
        self.eps_model = eps_model
        self.scale = as_float("scale", scale, fix="scale multiplies the predicted noise, e.g. 1.1.")
        b = np.asarray(bias, dtype=np.float64)
        if not np.all(np.isfinite(b)):
            raise ValueError(f"bias must be finite; got {bias!r}.")
        self.bias = b
        self._torch_bias = {}

    def bias_sq_per_dim(self, dim: int) -> float:
        """‖bias‖²/d for data of dimension ``dim`` (bias broadcast to d coordinates)."""
        if self.bias.ndim == 0:
            return float(self.bias**2)
        if self.bias.size != dim:
            raise ValueError(
                f"bias has {self.bias.size} entries but the data have d = {dim} coordinates; pass a scalar or an "
                "array with one entry per coordinate."
            )
        return float(np.mean(self.bias**2))

    def __call__(self, x, n):
        eps = self.eps_model(x, n)
        out = eps * self.scale if self.scale != 1.0 else eps
        if self.bias.ndim == 0:
            return out + float(self.bias) if self.bias != 0.0 else out
        feat = tuple(eps.shape[1:])
        if math.prod(feat) != self.bias.size:
            raise ValueError(
                f"bias has {self.bias.size} entries but each sample has shape {feat}; pass a scalar or one entry per "
                "coordinate."
            )
        if _is_torch(eps):
            key = (eps.dtype, eps.device, feat)
            b = self._torch_bias.get(key)
            if b is None:
                import torch

                b = torch.as_tensor(self.bias.reshape(feat), dtype=eps.dtype, device=eps.device)
                self._torch_bias[key] = b
        else:
            b = self.bias.reshape(feat)
        return out + b

    def __repr__(self) -> str:
        b = float(self.bias) if self.bias.ndim == 0 else f"array{self.bias.shape}"
        return f"ImperfectEps({self.eps_model!r}, scale={self.scale}, bias={b})"


def exact_gamma_of_imperfect(data, schedule: Schedule, scale: float = 1.0, bias=0.0) -> np.ndarray:
    """Γ̂_n = E‖scale·ε*_n(x_n) + bias‖²/d = scale²Γ_n + ‖bias‖²/d exactly (shape (N+1,), Γ̂_0 = 0).

    ``data``: :class:`GaussianData` (exact Γ) or a 1-D/2-D :class:`GaussianMixtureData` (quadrature reference Γ).
    The values may exceed 1: that is the point (see the module docstring); ``reverse_variances`` clips them.
    """
    schedule = _check_schedule(schedule)
    wrapper = ImperfectEps(lambda x, n: x, scale, bias)  # validates scale and bias
    if isinstance(data, GaussianData):
        gamma = data.gamma(schedule)
    elif hasattr(data, "gamma_reference"):
        gamma = data.gamma_reference(schedule)
    else:
        raise TypeError(
            f"data must be GaussianData or GaussianMixtureData; got {type(data).__name__}. For other data estimate Γ̂ "
            "by Monte Carlo with the wrapped model."
        )
    out = wrapper.scale**2 * gamma + wrapper.bias_sq_per_dim(data.dim)
    out[0] = 0.0
    return out


def _reference_stats_at(data, schedule: Schedule, timesteps):
    """(v_t, Γ_t, 1 − Γ_t) of the exact predictor at the int array ``timesteps``: v_t = E tr Cov(x_0|x_t)/d, and
    1 − Γ_t without cancellation (GaussianData: from the eigenvalues; a 1-D/2-D GaussianMixtureData: from the
    quadrature references, Lemma 11: 1 − Γ = (ᾱ/β̄) v)."""
    t = np.asarray(timesteps, dtype=np.int64)
    if isinstance(data, GaussianData):
        return (data.posterior_cov_trace_at(schedule, t), data.gamma_at(schedule, t),
                data.one_minus_gamma_at(schedule, t))
    if hasattr(data, "references"):
        gamma, cov = data.references(schedule, t)
        return cov[t], gamma[t], schedule.alpha_bar[t] / schedule.beta_bar[t] * cov[t]
    raise TypeError(
        f"data must be GaussianData or GaussianMixtureData; got {type(data).__name__}. Build one with "
        "GaussianData(mean, cov) or toy.default_gaussian(); for other data estimate Γ and R by Monte Carlo with "
        "estimate_gamma (GammaEstimate.residual)."
    )


def _imperfect_stats(gamma, one_minus_gamma, scale: float, bias_sq: float):
    """(R, 1 − Γ̂) of ε̂ = scale·ε* + bias from the exact predictor's Γ and 1 − Γ (``bias_sq`` = ‖bias‖²/d):
    R = (1 − Γ) + (1 − scale)²Γ + ‖b‖²/d and 1 − Γ̂ = (1 − Γ) − (scale² − 1)Γ − ‖b‖²/d (module docstring)."""
    return (one_minus_gamma + (1.0 - scale) ** 2 * gamma + bias_sq,
            one_minus_gamma - (scale**2 - 1.0) * gamma - bias_sq)


def _imperfect_arrays(data, schedule, scale, bias):
    """(R, 1 − Γ̂) as (N+1,) arrays with index 0 = 0.0, scale and bias validated as ImperfectEps does."""
    schedule = _check_schedule(schedule)
    wrapper = ImperfectEps(lambda x, n: x, scale, bias)
    _, gamma, omg = _reference_stats_at(data, schedule, np.arange(1, schedule.N + 1))
    stats = _imperfect_stats(gamma, omg, wrapper.scale, wrapper.bias_sq_per_dim(data.dim))
    return tuple(np.concatenate([[0.0], a]) for a in stats)


def exact_residual_of_imperfect(data, schedule: Schedule, scale: float = 1.0, bias=0.0) -> np.ndarray:
    """R_n = E‖ε − (scale·ε*_n(x_n) + bias)‖²/d = (1 − Γ_n) + (1 − scale)²Γ_n + ‖bias‖²/d exactly (shape (N+1,),
    R_0 = 0): the residual of :class:`ImperfectEps` around the exact ε* (module docstring). scale = 1, bias = 0 gives
    1 − Γ_n. ``data``: :class:`GaussianData` or a 1-D/2-D :class:`GaussianMixtureData` (quadrature references)."""
    return _imperfect_arrays(data, schedule, scale, bias)[0]


def exact_one_minus_gamma_of_imperfect(data, schedule: Schedule, scale: float = 1.0, bias=0.0) -> np.ndarray:
    """1 − Γ̂_n for Γ̂ of :func:`exact_gamma_of_imperfect`, as (1 − Γ_n) − (scale² − 1)Γ_n − ‖bias‖²/d, so that the
    exact predictor's 1 − Γ_n keeps its digits (negative where Γ̂_n > 1); shape (N+1,), index 0 = 0.0."""
    return _imperfect_arrays(data, schedule, scale, bias)[1]


__all__ = ["ImperfectEps", "exact_gamma_of_imperfect", "exact_residual_of_imperfect",
           "exact_one_minus_gamma_of_imperfect"]
