"""The forward family's posterior q(x_s | x_t, x_0) on a trajectory and the ε ↔ x̂_0 conversions (facts file §1).

For s < t and λ² ∈ [0, β̄_s]:

    q_λ(x_s | x_t, x_0) = N(μ̃_{s|t}, λ²_{s|t} I),
    μ̃_{s|t} = √ᾱ_s x_0 + √(β̄_s − λ²) (x_t − √ᾱ_t x_0)/√β̄_t = coef_x0 · x_0 + coef_xt · x_t.

Families: DDPM λ² = β̃_{s|t} = (β̄_s/β̄_t) β_{t|s}; DDIM λ² = η² β̃_{s|t} with η ∈ [0, 1] (η = 0 by default).
All quantities are float64 numpy and written without catastrophic cancellation:

* β̄_s − η²β̃_{s|t} = β̄_s ((1 − η²) β̄_t + η² α_{t|s} β̄_s) / β̄_t     (every term non-negative)
* √(β̄_t/α_{t|s}) − √(β̄_s − λ²) = (β_{t|s}/α_{t|s} + λ²) / (√(β̄_t/α_{t|s}) + √(β̄_s − λ²))
"""

from __future__ import annotations

import numpy as np

from ._validate import as_float, choice
from .schedules import Schedule

FAMILIES = ("ddpm", "ddim")


def check_eta(eta) -> float:
    eta = as_float("eta", eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(
            f"eta must lie in [0, 1] (λ² = η²β̃ must not exceed β̄_s); got {eta}. "
            "η = 0 is DDIM (deterministic), η = 1 has the DDPM posterior variance."
        )
    return eta


def lambda_sq(schedule: Schedule, s, t, family: str = "ddpm", eta: float = 0.0) -> np.ndarray:
    """λ²_{s|t}: β̃_{s|t} for the DDPM family, η²β̃_{s|t} for the DDIM family (0 when s = 0)."""
    choice("family", family, FAMILIES)
    bt = schedule.skip_beta_tilde(s, t)
    if family == "ddpm":
        return bt
    return check_eta(eta) ** 2 * bt


def residual_var(schedule: Schedule, s, t, family: str = "ddpm", eta: float = 0.0) -> np.ndarray:
    """β̄_s − λ²_{s|t}, the variance left for the x_t direction, computed without cancellation."""
    choice("family", family, FAMILIES)
    e2 = 1.0 if family == "ddpm" else check_eta(eta) ** 2
    bs, bt = schedule.beta_bar[s], schedule.beta_bar[t]
    a_ts = schedule.skip_alpha(s, t)
    return bs * ((1.0 - e2) * bt + e2 * a_ts * bs) / bt


def posterior_coefficients(schedule: Schedule, s, t, family: str = "ddpm", eta: float = 0.0):
    """(coef_x0, coef_xt, λ²) with μ̃_{s|t}(x_t, x_0) = coef_x0·x_0 + coef_xt·x_t.

    coef_x0 = √ᾱ_s − √((β̄_s − λ²) ᾱ_t/β̄_t) (the coefficient c of Theorem 1), coef_xt = √((β̄_s − λ²)/β̄_t).
    For DDPM these are the familiar √ᾱ_s β_{t|s}/β̄_t and √α_{t|s} β̄_s/β̄_t.
    """
    lam2 = lambda_sq(schedule, s, t, family, eta)
    coef_xt = np.sqrt(residual_var(schedule, s, t, family, eta) / schedule.beta_bar[t])
    coef_x0 = np.sqrt(schedule.alpha_bar[t] / schedule.beta_bar[t]) * gap(schedule, s, t, family, eta)
    return coef_x0, coef_xt, lam2


def gap(schedule: Schedule, s, t, family: str = "ddpm", eta: float = 0.0) -> np.ndarray:
    """g_{s|t} = √(β̄_t/α_{t|s}) − √(β̄_s − λ²_{s|t}) > 0, the factor of Theorem 1 and of the bounds (eq. 11).

    Written as (β_{t|s}/α_{t|s} + λ²)/(√(β̄_t/α_{t|s}) + √(β̄_s − λ²)) so that no digits cancel.
    """
    lam2 = lambda_sq(schedule, s, t, family, eta)
    a_ts = schedule.skip_alpha(s, t)
    b_ts = schedule.skip_beta(s, t)
    num = b_ts / a_ts + lam2
    den = np.sqrt(schedule.beta_bar[t] / a_ts) + np.sqrt(residual_var(schedule, s, t, family, eta))
    return num / den


def posterior_mean(schedule: Schedule, s: int, t: int, x_t, x_0, family: str = "ddpm", eta: float = 0.0):
    """μ̃_{s|t}(x_t, x_0) for arrays (numpy or torch) x_t, x_0."""
    c0, ct, _ = posterior_coefficients(schedule, s, t, family, eta)
    return float(c0) * x_0 + float(ct) * x_t


def x0_from_eps(schedule: Schedule, t: int, x_t, eps):
    """x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t."""
    return (x_t - float(np.sqrt(schedule.beta_bar[t])) * eps) / float(np.sqrt(schedule.alpha_bar[t]))


def eps_from_x0(schedule: Schedule, t: int, x_t, x_0):
    """ε̂ = (x_t − √ᾱ_t x̂_0)/√β̄_t."""
    return (x_t - float(np.sqrt(schedule.alpha_bar[t])) * x_0) / float(np.sqrt(schedule.beta_bar[t]))


def score_from_eps(schedule: Schedule, t: int, eps):
    """s_t(x) = −ε̂/√β̄_t."""
    return -eps / float(np.sqrt(schedule.beta_bar[t]))


def sample_marginal(schedule: Schedule, t: int, x_0, eps):
    """x_t = √ᾱ_t x_0 + √β̄_t ε, a draw from q(x_t | x_0) (the marginal does not depend on λ)."""
    return float(np.sqrt(schedule.alpha_bar[t])) * x_0 + float(np.sqrt(schedule.beta_bar[t])) * eps


def family_of(method: str) -> str:
    """'ddpm' for the DDPM-family methods, 'ddim' for the DDIM-family ones."""
    return "ddim" if "ddim" in method else "ddpm"


__all__ = [
    "FAMILIES", "lambda_sq", "residual_var", "posterior_coefficients", "gap", "posterior_mean",
    "x0_from_eps", "eps_from_x0", "score_from_eps", "sample_marginal", "check_eta", "family_of",
]
