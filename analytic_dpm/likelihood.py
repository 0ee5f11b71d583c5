"""Variational-bound pieces: Gaussian KL divergences in closed form (facts file §4.1, §4.5).

All results are in nats. The bound of a reverse process p on the trajectory 0 = τ_0 < … < τ_K is (P eq. 4)

    L_vb = E KL(q(x_{τ_K}|x_0) ‖ N(0, I)) + Σ_{k≥2} E KL(q(x_{τ_{k−1}}|x_{τ_k}, x_0) ‖ p(x_{τ_{k−1}}|x_{τ_k}))
           − E log p(x_0|x_{τ_1}),

the first term the prior, the sum the transitions with s = τ_{k−1} >= 1, the last the decoder. The helpers here are
per-dimension (divided by d) and vectorised over numpy arrays; none of them draws samples.
"""

from __future__ import annotations

import numpy as np

from .schedules import Schedule


def _x_minus_log1p_series(x):
    # x − log1p(x) = Σ_{k=2}^∞ (−1)^k x^k / k; 20 terms leave < 1e-21 relative for |x| < 0.1
    acc = np.zeros_like(x)
    for k in range(21, 1, -1):
        acc = acc * x + (-1.0) ** k / k
    return acc * x * x


def x_minus_log1p(x):
    """x − log(1 + x) for x > −1, accurate to full relative precision also for |x| ≪ 1 (where it is ≈ x²/2 and the
    direct difference would cancel): a power series for |x| < 0.1, the direct form elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 0.1
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(small, _x_minus_log1p_series(np.where(small, x, 0.0)), x - np.log1p(x))
    return out[()] if out.ndim == 0 else out


def ratio_minus_1_minus_log(num, den):
    """r − 1 − log r for r = num/den > 0 (num, den > 0), the shape of every Gaussian variance-ratio KL term.

    Near r = 1 it uses the series of :func:`x_minus_log1p` at x = (num − den)/den (no cancellation); elsewhere
    r − 1 − (log num − log den), which keeps its digits also when r ≪ 1 or r ≫ 1."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (num - den) / den
        small = np.abs(x) < 0.1
        direct = x - (np.log(num) - np.log(den))
        out = np.where(small, _x_minus_log1p_series(np.where(small, x, 0.0)), direct)
    return out[()] if out.ndim == 0 else out


def gaussian_kl(mean_diff_sq, var_q, var_p, dim):
    """KL(N(μ_q, var_q I_d) ‖ N(μ_p, var_p I_d)) in nats (total, not per dimension), vectorised.

    = ½ [ d var_q/var_p + ‖μ_q − μ_p‖²/var_p − d + d log(var_p/var_q) ], with ``mean_diff_sq`` = ‖μ_q − μ_p‖²
    (or its expectation: the formula is linear in it, so E KL over random means takes E‖μ_q − μ_p‖²).
    Computed as ½ [ ‖Δμ‖²/var_p + d (r − 1 − log r) ], r = var_q/var_p, with :func:`ratio_minus_1_minus_log`, a sum
    of non-negative terms, so that neither var_q ≈ var_p nor var_q ≪ var_p loses digits.
    var_q = 0 < var_p gives +inf (a point mass against a density); var_p = 0 gives +inf unless var_q = 0 and
    Δμ = 0 (0 then).
    """
    m = np.asarray(mean_diff_sq, dtype=np.float64)
    vq = np.asarray(var_q, dtype=np.float64)
    vp = np.asarray(var_p, dtype=np.float64)
    d = np.asarray(dim, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 0.5 * (m / vp + d * ratio_minus_1_minus_log(vq, vp))
    out = np.where((vq == 0) & (vp > 0), np.inf, out)
    out = np.where(vp == 0, np.where((vq == 0) & (m == 0), 0.0, np.inf), out)
    return out[()] if out.ndim == 0 else out


def prior_kl_per_dim(schedule: Schedule, t, second_moment_per_dim):
    """E_{x_0} KL(q(x_t|x_0) ‖ N(0, I))/d in nats, with q(x_t|x_0) = N(√ᾱ_t x_0, β̄_t I) (the prior term of L_vb).

    = ½ [ β̄_t + ᾱ_t E‖x_0‖²/d − 1 − log β̄_t ] = ½ [ ᾱ_t (E‖x_0‖²/d − 1) − log1p(−ᾱ_t) ], the second form exact for
    ᾱ_t → 0. ``second_moment_per_dim`` = E‖x_0‖²/d (‖mean‖²/d + tr Cov/d); ``t`` an int or an int array.
    """
    t = np.asarray(t)
    ab = schedule.alpha_bar[t]
    m2 = np.asarray(second_moment_per_dim, dtype=np.float64)
    out = 0.5 * (ab * (m2 - 1.0) - np.log1p(-ab))
    return out[()] if np.ndim(out) == 0 else out


def exact_mean_transition_kl(lambda_sq, sigma_sq, coef_x0, cov_x0):
    """E KL(q(x_s|x_t, x_0) ‖ p(x_s|x_t))/d in nats when p's mean uses the exact E[x_0|x_t] (P App. A.4).

    q(x_s|x_t, x_0) = N(c x_0 + b x_t, λ² I) and p(x_s|x_t) = N(c E[x_0|x_t] + b x_t, σ² I), c = ``coef_x0``, so the mean
    difference is c (x_0 − E[x_0|x_t]) and E‖·‖²/d = c² v_t with v_t = E tr Cov(x_0|x_t)/d = ``cov_x0``:

        ½ [ λ²/σ² + c² v_t/σ² − 1 + log(σ²/λ²) ].

    At σ² = σ*² = λ² + c² v_t (Theorem 1) this is ½ log(σ*²/λ²) (Theorem 3), the minimum over σ². Evaluated as the
    sum of two non-negative terms ½ [ c² v_t/σ² + (r − 1 − log r) ], r = λ²/σ², with :func:`ratio_minus_1_minus_log`,
    so it keeps full relative accuracy for every σ², including σ² ≈ λ² and σ² ≫ λ². λ² = 0 (DDIM with η = 0,
    or the decoder step s = 0) and σ² <= 0 give +inf: the bound is undefined there. Vectorised over all arguments.
    """
    lam2 = np.asarray(lambda_sq, dtype=np.float64)
    s2 = np.asarray(sigma_sq, dtype=np.float64)
    mdiff = np.asarray(coef_x0, dtype=np.float64) ** 2 * np.asarray(cov_x0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 0.5 * (mdiff / s2 + ratio_minus_1_minus_log(lam2, s2))
    out = np.where((lam2 <= 0.0) | (s2 <= 0.0), np.inf, out)
    return out[()] if out.ndim == 0 else out


__all__ = ["x_minus_log1p", "ratio_minus_1_minus_log", "gaussian_kl", "prior_kl_per_dim", "exact_mean_transition_kl"]
