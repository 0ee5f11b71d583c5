"""Per-dimension (diagonal) reverse covariance: SN-DPM and NPR-DPM of the extended paper (Bao et al., ICML 2022,
"Estimating the Optimal Covariance with Imperfect Mean in Diffusion Probabilistic Models"; facts file §6.2).

Analytic-DPM gives every transition one number σ²_{s|t}; the extension gives every coordinate of every x_t its own,

    σ²_{s|t,i}(x_t) = λ²_{s|t} + c²_{s|t} · clip(Cov_{x_0,i}(x_t), 0, r²),

where c_{s|t} is the coefficient of x̂_0 in the reverse mean written in (x_t, x̂_0) (DDPM: c² = ᾱ_s β_{t|s}²/β̄_t²;
DDIM: c = √ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t); in both c² = g²ᾱ_t/β̄_t with Theorem 1's g), r the half-width of the data
range (r = 1 for images in [−1, 1]; the official code's ``clip_cov_x0`` clips to [0, 1]), and Cov_x0 the per-dimension
mean-square error of x̂_0 given x_t, predicted by a second network head:

* **SN-DPM** ('sn', "squared noise", for the optimal mean): the head h_t(x_t) ≈ E[ε²|x_t] elementwise, and
  Cov_x0 = (β̄_t/ᾱ_t)(h − ε̂²), the diagonal of Cov[x_0|x_t] (Tweedie: x_0 = (x_t − √β̄_t ε)/√ᾱ_t);
* **NPR-DPM** ('npr', "noise prediction residual", for the network's own mean): the head g_t(x_t) ≈
  E[(ε − ε̂_t(x_t))²|x_t] and Cov_x0 = (β̄_t/ᾱ_t)·g = E[(x_0 − x̂_0)²|x_t], the variance that minimises the expected
  KL of the step for the fixed, imperfect mean (``theory`` entry ``diagonal-covariance``).

Averaged over x_t and dimensions, SN's Cov_x0 becomes (β̄_t/ᾱ_t)(1 − Γ_t) (Theorem 1) and NPR's (β̄_t/ᾱ_t)R_t (the
residual variance of :mod:`analytic_dpm.variance`): the scalar methods are the special case of a constant head.

A *headed model* ``m`` carries the second head: ``m.head_kind`` ∈ :data:`HEAD_KINDS`, ``m(x, n) -> ε̂`` (the ordinary
ε-model protocol) and ``m.eps_and_head(x, n) -> (ε̂, head)``, both of x's shape and type.
:class:`analytic_dpm.models.heads.HeadedNet` (a head on a frozen pretrained network) and
:class:`analytic_dpm.toy.covariance.ExactHeadModel` (the closed-form targets on Gaussian data) are such models. The
methods :data:`COVARIANCE_METHODS` enter the existing functions as ``method=``: :func:`analytic_dpm.sample`,
:func:`analytic_dpm.sampling.coefficient_table`, :func:`analytic_dpm.image_likelihood.variational_bound` and
:func:`analytic_dpm.image_likelihood.baseline_cost_matrix` (whose F feeds the optimal trajectory).
"""

from __future__ import annotations

import numpy as np

from ._validate import as_int, choice
from .posterior import family_of, gap, lambda_sq
from .schedules import Schedule

#: the per-dimension methods: SN (E[ε²|x_t] head) and NPR (E[(ε − ε̂)²|x_t] head), DDPM and DDIM families
COVARIANCE_METHODS = ("sn-ddpm", "sn-ddim", "npr-ddpm", "npr-ddim")
#: what a second head predicts: 'sn' E[ε²|x_t], 'npr' E[(ε − ε̂_t(x_t))²|x_t] (both elementwise)
HEAD_KINDS = ("sn", "npr")


def head_kind_of(method: str) -> str:
    """'sn' or 'npr' for a method of :data:`COVARIANCE_METHODS`."""
    choice("method", method, COVARIANCE_METHODS)
    return method.split("-")[0]


def base_method(method: str) -> str:
    """The scalar method whose λ² and mean a covariance method shares: 'ddpm-small' (λ² = β̃) or 'ddim' (λ² = η²β̃)."""
    head_kind_of(method)
    return "ddpm-small" if family_of(method) == "ddpm" else "ddim"


def check_headed_model(model, method: str):
    """``model`` if it carries the head ``method`` needs (``head_kind`` and ``eps_and_head``), else a clear error."""
    kind = head_kind_of(method)
    have = getattr(model, "head_kind", None)
    if not callable(getattr(model, "eps_and_head", None)) or have is None:
        raise TypeError(
            f"method {method!r} needs a model with a second head: an object with head_kind = {kind!r} and "
            f"eps_and_head(x, n) -> (eps_hat, head); got {type(model).__name__}. Attach and train one with "
            "analytic_dpm.models.heads.attach_head(net, kind) and train(..., objective=kind), or use "
            "analytic_dpm.toy.ExactHeadModel on toy data."
        )
    if have != kind:
        raise ValueError(
            f"method {method!r} needs a {kind!r} head (SN predicts E[ε²|x_t], NPR E[(ε − ε̂)²|x_t]); the model's head "
            f"is {have!r}. Use method {have + '-' + family_of(method)!r} for it, or train a {kind!r} head."
        )
    return model


def cov_scale(schedule: Schedule, s, t, family: str = "ddpm", eta: float = 0.0) -> np.ndarray:
    """c²_{s|t} = g²ᾱ_t/β̄_t, the factor of Cov_x0 in σ²: DDPM ᾱ_s β_{t|s}²/β̄_t², DDIM (√ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t))²."""
    return schedule.alpha_bar[t] / schedule.beta_bar[t] * gap(schedule, s, t, family, eta) ** 2


def cov_x0(kind: str, schedule: Schedule, n: int, eps_hat, head):
    """The per-dimension covariance of x_0 given x_n predicted by a head (no clipping):
    SN (β̄_n/ᾱ_n)(head − ε̂²), NPR (β̄_n/ᾱ_n)·head. Works on numpy arrays and torch tensors."""
    choice("kind", kind, HEAD_KINDS)
    n = as_int("n", n, minimum=1)
    k = float(schedule.beta_bar[n] / schedule.alpha_bar[n])
    if kind == "sn":
        return k * (head - eps_hat * eps_hat)
    return k * head


def cov_upper(data_range, clip: bool) -> float | None:
    """The upper clip of Cov_x0: r² for a data range (a, b), r = (b − a)/2, when ``clip`` (the official
    ``clip_cov_x0`` to [0, 1] for images in [−1, 1]); None (no upper clip) without a range or without ``clip``."""
    if not clip or data_range is None:
        return None
    r = (data_range[1] - data_range[0]) / 2.0
    return r * r


def clip_cov(cov, upper: float | None):
    """clip(Cov_x0, 0, upper) (the official ``clip_cov_x0``; ``upper`` = r², None: no upper clip), and the numbers of
    elements clipped below and above: (clipped, n_low, n_high)."""
    if isinstance(cov, np.ndarray):
        n_low = int(np.count_nonzero(cov < 0.0))
        n_high = 0 if upper is None else int(np.count_nonzero(cov > upper))
        return np.clip(cov, 0.0, np.inf if upper is None else upper), n_low, n_high
    n_low = int((cov < 0.0).sum())
    n_high = 0 if upper is None else int((cov > upper).sum())
    return cov.clamp(0.0, upper), n_low, n_high


def diagonal_sigma_sq(schedule: Schedule, s, t, cov, family: str = "ddpm", eta: float = 0.0, upper: float | None = None):
    """σ²_{s|t,i} = λ²_{s|t} + c²_{s|t} · clip(cov_i, 0, upper) for one transition (s, t) and a per-dimension
    covariance ``cov`` of x_0 (numpy or torch, any shape); ``upper=None`` leaves the top open."""
    s, t = as_int("s", s, minimum=0), as_int("t", t, minimum=1)
    if not s < t:
        raise ValueError(f"s must be < t; got (s, t) = ({s}, {t}).")
    lam2 = float(lambda_sq(schedule, s, t, family, eta))
    c2 = float(cov_scale(schedule, s, t, family, eta))
    return lam2 + c2 * clip_cov(cov, upper)[0]


__all__ = [
    "COVARIANCE_METHODS", "HEAD_KINDS", "head_kind_of", "base_method", "check_headed_model", "cov_scale", "cov_x0",
    "cov_upper", "clip_cov", "diagonal_sigma_sq",
]
