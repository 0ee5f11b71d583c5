"""Exact evaluation of a reverse process on Gaussian data: the generated distribution, its Fréchet distance to the
data, and the variational bound, all in closed form (facts file §1–§4).

The sampler described: x_{τ_K} ~ N(0, I) (τ_K may be < N: the chain starts there), then for each transition
(s, t) = (τ_{k−1}, τ_k), k = K..1,

    x_s = coef_x0 · x̂_0(x_t) + coef_xt · x_t + σ_{s|t} ξ,   ξ ~ N(0, I),

with x̂_0(x_t) = E[x_0 | x_t] the exact posterior mean (no clamping), (coef_x0, coef_xt) from
``posterior_coefficients`` and σ² from ``reverse_variances``. The last step (s = 0) adds no noise: it outputs x̂_0.

For data N(m, U diag(λ_i) Uᵀ), E[x_0|x_t] = m + U diag(k_i) Uᵀ(x_t − √ᾱ_t m), k_i = √ᾱ_tλ_i/(ᾱ_tλ_i + β̄_t), so every
step is affine and diagonal in the eigen-coordinates z = Uᵀx:

    z_s,i = a_i z_t,i + b_i + σ ξ_i,   a_i = coef_x0 k_i + coef_xt,   b_i = coef_x0 (Uᵀm)_i β̄_t/(ᾱ_tλ_i + β̄_t).

The generated distribution is therefore Gaussian, N(U μ_z, U diag(v) Uᵀ), with mean and variance per coordinate
propagated exactly in O(K·d).

The variational bound (P eq. 4, decoder term left out), per dimension in nats, uses that the mean is exact:
E KL(q(x_s|x_t,x_0) ‖ p(x_s|x_t))/d = ½[λ²/σ² + c²v_t/σ² − 1 + log(σ²/λ²)], c = coef_x0, v_t = E tr Cov(x_0|x_t)/d
(:func:`analytic_dpm.likelihood.exact_mean_transition_kl`). It is defined only if λ² > 0 on every transition with
s >= 1; for DDIM with η = 0 it is reported as undefined (None with a reason), never as a number.

An imperfect ε-model ``ImperfectEps(data.eps_model(schedule), scale, bias)`` (ε̂ = scale·ε* + bias) keeps every step
affine and diagonal, x̂_0 = z/√ᾱ_t − √(β̄_t/ᾱ_t)(scale·ε*_t + bias) with ε*_{t,i} = √β̄_t(z_i − √ᾱ_t μ_i)/(ᾱ_tλ_i + β̄_t),
so the generated distribution stays Gaussian and its Fréchet distance exact. The bound keeps the same form with the
mean error in place of the posterior spread: E‖μ̃(x_t, x_0) − μ(x_t)‖²/d = c² E‖x_0 − x̂_0‖²/d = c²(β̄_t/ᾱ_t) R_t,
R_t = E‖ε − ε̂_t‖²/d (exact, :func:`~analytic_dpm.toy.exact_residual_of_imperfect`), so
E KL/d = ½[λ²/σ² + c²(β̄_t/ᾱ_t)R_t/σ² − 1 + log(σ²/λ²)], minimised over σ² by the residual variance λ² + g²R_t.

Precision: the exact 1 − Γ_t is computed without cancellation (:meth:`GaussianData.one_minus_gamma`) and fed to
the analytic methods as ``one_minus_gamma``, so σ² − λ² = g²(1 − Γ_t) keeps its digits at every t, including
t = N of a cosine schedule where 1 − Γ_N ≈ 10⁻¹¹.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..likelihood import exact_mean_transition_kl, prior_kl_per_dim
from ..posterior import family_of, posterior_coefficients
from ..schedules import Schedule
from ..trajectories import transitions, validate_trajectory
from ..variance import ANALYTIC_METHODS, RESIDUAL_METHODS, ReverseVariances, reverse_variances
from .gaussian import ExactEpsModel, GaussianData, _check_schedule
from .imperfect import ImperfectEps, _imperfect_stats, _reference_stats_at
from .mixture import GaussianMixtureData


# ---------------------------------------------------------------------------------------------------- bound
@dataclass(frozen=True, eq=False)
class ExactMeanBound:
    """The variational bound along a trajectory with the exact posterior mean, per dimension in nats.

    ``kl_terms[k−1]`` belongs to transition (s, t) = (τ_{k−1}, τ_k); it is NaN for s = 0 (the decoder, left out) and
    +inf where λ² = 0. ``vb_nats_per_dim`` = prior_kl + Σ_{s>=1} kl_terms, or None with ``vb_undefined_reason``.
    """

    trajectory: np.ndarray
    method: str
    eta: float
    variances: ReverseVariances
    prior_kl: float  #: E KL(q(x_{τ_K}|x_0) ‖ N(0, I))/d
    kl_terms: np.ndarray  #: per transition, nats per dimension
    cov_x0: np.ndarray  #: E‖x_0 − x̂_0(x_t)‖²/d at each t: v_t = E tr Cov(x_0|x_t)/d for ε*, (β̄_t/ᾱ_t)R_t otherwise
    coef_x0: np.ndarray  #: c = coef_x0 at each transition
    vb_nats_per_dim: float | None
    vb_undefined_reason: str | None

    @property
    def vb_bits_per_dim(self) -> float | None:
        """The bound in bits per dimension (nats / ln 2), None where undefined."""
        return None if self.vb_nats_per_dim is None else self.vb_nats_per_dim / math.log(2.0)

    @property
    def sigma_sq(self) -> np.ndarray:
        return self.variances.sigma_sq

    @property
    def lambda_sq(self) -> np.ndarray:
        return self.variances.lambda_sq


def _check_eps_model(eps_model, data, schedule):
    """(scale, bias array or float) of an ImperfectEps around this data's exact ε*, or (1.0, 0.0) for None/ε*."""
    if eps_model is None:
        return 1.0, 0.0
    inner, scale, bias = eps_model, 1.0, 0.0
    if isinstance(eps_model, ImperfectEps):
        inner, scale, bias = eps_model.eps_model, eps_model.scale, eps_model.bias
    if not (isinstance(inner, ExactEpsModel) and inner.data is data
            and np.array_equal(inner.schedule.beta, schedule.beta)):
        raise TypeError(
            f"eps_model must be None (the exact ε*), data.eps_model(schedule) or ImperfectEps(data.eps_model("
            f"schedule), scale, bias) for this data and schedule; got {eps_model!r}. Only these keep the generated "
            "distribution Gaussian and the evaluation exact."
        )
    if np.ndim(bias) and np.size(bias) != data.dim:
        raise ValueError(f"the ImperfectEps bias has {np.size(bias)} entries; the data have d = {data.dim}.")
    return float(scale), (np.asarray(bias, dtype=np.float64).reshape(-1) if np.ndim(bias) else float(bias))


def _full(N: int, t: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(N + 1, np.nan)
    out[0] = 0.0
    out[t] = values
    return out


def exact_mean_bound(data, schedule: Schedule, trajectory, method: str, eta: float = 0.0, gamma=None,
                     clip: bool = True, data_range=None, *, one_minus_gamma=None, residual=None,
                     eps_model=None) -> ExactMeanBound:
    """The variational bound (decoder left out) of the reverse process with the exact mean E[x_0|x_t] and the
    variances of ``method`` along ``trajectory``, per dimension in nats (P eq. 4; Theorem 3 for analytic-ddpm).

    ``eps_model``: None (the exact ε*) or ``ImperfectEps(data.eps_model(schedule), scale, bias)``; then the mean is
    that model's and the bound exact for it (module docstring). Variances: analytic methods use, unless ``gamma`` or
    ``one_minus_gamma`` is given, the model's exact 1 − Γ̂ (for ε*, 1 − Γ without cancellation); residual methods
    use, unless ``residual`` is given, the model's exact R = E‖ε − ε̂‖²/d.

    ``data``: :class:`GaussianData` (exact) or a 1-D/2-D :class:`GaussianMixtureData` (quadrature references of Γ and
    E tr Cov(x_0|x_t)). σ² = ``reverse_variances(schedule, trajectory, method, gamma, eta, data_range, clip)``
    with the exact Γ unless ``gamma`` is given; ``data_range=(a, b)`` adds Theorem 2's bounded-data clip (eq. 12),
    which matters when ``gamma`` is an estimate (the default ``None`` suits Gaussian data, which are unbounded). For the DDIM family with η > 0 this is the bound of the generalised
    forward process q_λ with λ² = η²β̃ (P §2); with η = 0 it is undefined (None, with the reason), except for K = 1,
    where only the prior term remains.
    """
    schedule = _check_schedule(schedule)
    traj = validate_trajectory(trajectory, schedule.N)
    s, t = transitions(traj)
    v_t, g_t, omg_t = _reference_stats_at(data, schedule, t)
    scale, bias = _check_eps_model(eps_model, data, schedule)
    # the model's residual R_t and its 1 − Γ̂_t (both equal to 1 − Γ_t for the exact ε*)
    res_t, omg_hat_t = (omg_t, omg_t) if eps_model is None else _imperfect_stats(
        g_t, omg_t, scale, float(np.mean(np.square(bias))))
    N = schedule.N
    if method in ANALYTIC_METHODS and gamma is None and one_minus_gamma is None:
        one_minus_gamma = _full(N, t, omg_hat_t)
    elif method in RESIDUAL_METHODS and residual is None and gamma is None:
        residual = _full(N, t, res_t)
    rv = reverse_variances(schedule, traj, method, gamma=gamma, eta=eta, data_range=data_range, clip=clip,
                           one_minus_gamma=one_minus_gamma, residual=residual)
    family = family_of(method)
    c0, _, lam2 = posterior_coefficients(schedule, s, t, family, rv.eta)
    # E‖x_0 − x̂_0(x_t)‖²/d: the posterior spread v_t for ε*, (β̄_t/ᾱ_t) R_t for an imperfect model
    err_t = v_t if eps_model is None else schedule.beta_bar[t] / schedule.alpha_bar[t] * res_t
    kl = np.asarray(exact_mean_transition_kl(lam2, rv.sigma_sq, c0, err_t), dtype=np.float64)
    inner = s >= 1
    kl[~inner] = np.nan
    prior = float(prior_kl_per_dim(schedule, int(traj[-1]), data.second_moment_per_dim()))
    reason = None
    bad_lam = inner & ~(lam2 > 0.0)
    bad_sig = inner & ~(rv.sigma_sq > 0.0)
    if bad_lam.any():
        idx = np.flatnonzero(bad_lam)
        reason = (
            f"λ²_{{s|t}} = 0 on {idx.size} transition(s) with s >= 1 (first (s, t) = ({s[idx[0]]}, {t[idx[0]]})): "
            f"q(x_s|x_t, x_0) is a point mass for method {method!r} with eta = {rv.eta}, so its KL to any Gaussian "
            "is +inf and the variational bound is undefined. Use a DDPM-family method or eta > 0."
        )
    elif bad_sig.any():
        idx = np.flatnonzero(bad_sig)
        reason = (
            f"σ² <= 0 on {idx.size} transition(s) with s >= 1 (first (s, t) = ({s[idx[0]]}, {t[idx[0]]})): the "
            "reverse transition is not a density, so the bound is undefined. Clip σ² into Theorem 2's bounds."
        )
    vb = None if reason is not None else prior + float(kl[inner].sum())
    return ExactMeanBound(
        trajectory=traj, method=method, eta=rv.eta, variances=rv, prior_kl=prior, kl_terms=kl, cov_x0=err_t,
        coef_x0=np.asarray(c0, dtype=np.float64), vb_nats_per_dim=vb, vb_undefined_reason=reason,
    )


# ---------------------------------------------------------------------------------------------------- evaluation
def frechet_distance_same_basis(mean_1, eigvals_1, mean_2, eigvals_2) -> float:
    """Fréchet distance between N(m_1, U diag(v_1) Uᵀ) and N(m_2, U diag(v_2) Uᵀ), two Gaussians whose covariances
    share an eigenbasis: ‖m_1 − m_2‖² + Σ_i (√v_1,i − √v_2,i)² (the general
    ‖Δm‖² + tr(Σ_1 + Σ_2 − 2(Σ_1^½Σ_2Σ_1^½)^½) when Σ_1, Σ_2 commute). Means in any common orthonormal coordinates."""
    m1, m2 = np.asarray(mean_1, dtype=np.float64), np.asarray(mean_2, dtype=np.float64)
    v1, v2 = np.asarray(eigvals_1, dtype=np.float64), np.asarray(eigvals_2, dtype=np.float64)
    if m1.shape != m2.shape or v1.shape != v2.shape:
        raise ValueError(f"shapes must match: means {m1.shape} vs {m2.shape}, eigenvalues {v1.shape} vs {v2.shape}.")
    if np.any(v1 < 0) or np.any(v2 < 0):
        raise ValueError("covariance eigenvalues must be >= 0.")
    dm = m1 - m2
    return float(dm @ dm + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2))


@dataclass(frozen=True, eq=False)
class ExactEvaluation:
    """What :func:`evaluate_exact` returns: the generated Gaussian N(mean, cov), its Fréchet distance to the data,
    and the variational bound (see :class:`ExactMeanBound`).

    Arrays indexed by transition have length K, entry k−1 for (s, t) = (τ_{k−1}, τ_k). ``sigma_sq[0]`` (s = 0) is what
    the method prescribes for the decoder step; the sampler ignores it (the last step outputs its mean).
    """

    trajectory: np.ndarray
    method: str
    eta: float
    mean: np.ndarray  #: (d,) mean of the generated distribution
    cov_eigvals: np.ndarray  #: (d,) its covariance eigenvalues, in the data's eigenbasis (column i of basis)
    mean_eig: np.ndarray  #: (d,) its mean in the data's eigen-coordinates
    fd: float  #: Fréchet distance to N(data mean, data cov)
    bound: ExactMeanBound = field(repr=False)
    basis: np.ndarray | None = field(repr=False)  #: the data's eigenbasis U (None: identity)

    @cached_property
    def cov(self) -> np.ndarray:
        """The generated covariance U diag(cov_eigvals) Uᵀ, (d, d), built on first use."""
        if self.basis is None:
            return np.diag(self.cov_eigvals)
        c = (self.basis * self.cov_eigvals) @ self.basis.T
        return 0.5 * (c + c.T)

    def as_gaussian(self) -> GaussianData:
        """The generated distribution as :class:`GaussianData` (to sample from it or to compare)."""
        return GaussianData.from_spectrum(self.mean, self.cov_eigvals, self.basis)

    # the bound, for convenience
    @property
    def vb_nats_per_dim(self) -> float | None:
        """Variational bound without the decoder, nats per dimension; None where undefined (see the reason)."""
        return self.bound.vb_nats_per_dim

    @property
    def vb_bits_per_dim(self) -> float | None:
        return self.bound.vb_bits_per_dim

    @property
    def vb_undefined_reason(self) -> str | None:
        return self.bound.vb_undefined_reason

    @property
    def kl_terms(self) -> np.ndarray:
        """Per-transition E KL/d in nats (NaN at s = 0, the decoder; +inf where λ² = 0)."""
        return self.bound.kl_terms

    @property
    def prior_kl(self) -> float:
        """E KL(q(x_{τ_K}|x_0) ‖ N(0, I))/d in nats."""
        return self.bound.prior_kl

    @property
    def sigma_sq(self) -> np.ndarray:
        return self.bound.variances.sigma_sq

    @property
    def lambda_sq(self) -> np.ndarray:
        return self.bound.variances.lambda_sq

    @property
    def variances(self) -> ReverseVariances:
        return self.bound.variances


def evaluate_exact(data: GaussianData, schedule: Schedule, trajectory, method: str, eta: float = 0.0, gamma=None,
                   clip: bool = True, *, one_minus_gamma=None, residual=None, eps_model=None) -> ExactEvaluation:
    """Exact generated distribution, Fréchet distance and variational bound of the sampler on Gaussian data.

    The sampler starts from x_{τ_K} ~ N(0, I), takes x_s = coef_x0·E[x_0|x_t] + coef_xt·x_t + σ_{s|t}ξ on each transition
    and outputs the mean at s = 0 (module docstring). σ² comes from ``reverse_variances(schedule, trajectory, method,
    gamma, eta, data_range=None, clip)`` with the exact Γ unless ``gamma`` (shape (N+1,)) is given, e.g. an imperfect
    Γ̂ from :func:`exact_gamma_of_imperfect`; the mean stays exact either way. ``eps_model`` =
    ``ImperfectEps(data.eps_model(schedule), scale, bias)`` makes the mean that imperfect model's (still Gaussian and
    exact, module docstring); ``one_minus_gamma``/``residual`` as in :func:`exact_mean_bound`. Cost O(K·d) after the
    data's eigendecomposition (d = 3072, K = 1000 takes well under a second).
    """
    if isinstance(data, GaussianMixtureData):
        raise TypeError(
            "evaluate_exact needs GaussianData: on mixture data the generated distribution is not Gaussian. For the "
            "variational bound use exact_mean_bound(data, schedule, trajectory, method)."
        )
    if not isinstance(data, GaussianData):
        raise TypeError(f"data must be GaussianData; got {type(data).__name__}.")
    schedule = _check_schedule(schedule)
    bound = exact_mean_bound(data, schedule, trajectory, method, eta=eta, gamma=gamma, clip=clip,
                             one_minus_gamma=one_minus_gamma, residual=residual, eps_model=eps_model)
    scale, bias = _check_eps_model(eps_model, data, schedule)
    bias = np.broadcast_to(np.asarray(bias, dtype=np.float64), (data.dim,))
    bias_eig = bias if data.is_diagonal else data.basis.T @ bias
    traj = bound.trajectory
    s, t = transitions(traj)
    c0, ct, _ = posterior_coefficients(schedule, s, t, family_of(method), bound.eta)
    sigma_sq = bound.variances.sigma_sq
    lam, mu = data.eigvals, data.mean_eig
    z_mean = np.zeros(data.dim)
    z_var = np.ones(data.dim)
    for k in range(traj.size - 2, -1, -1):  # transitions K..1, i.e. t = τ_K first
        tk = int(t[k])
        ab, bb = schedule.alpha_bar[tk], schedule.beta_bar[tk]
        denom = ab * lam + bb
        if eps_model is None:
            a = c0[k] * (math.sqrt(ab) * lam / denom) + ct[k]
            b = c0[k] * mu * (bb / denom)
        else:  # x̂_0 = z/√ᾱ − √(β̄/ᾱ)(scale·ε* + bias), ε* = √β̄(z − √ᾱμ)/(ᾱλ + β̄)
            a = c0[k] * ((ab * lam + (1.0 - scale) * bb) / (math.sqrt(ab) * denom)) + ct[k]
            b = c0[k] * (scale * bb * mu / denom - math.sqrt(bb / ab) * bias_eig)
        z_mean = a * z_mean + b
        z_var = a * a * z_var
        if s[k] > 0:
            z_var = z_var + sigma_sq[k]
    U = None if data.is_diagonal else data.basis
    mean = z_mean if U is None else U @ z_mean
    fd = frechet_distance_same_basis(mu, lam, z_mean, z_var)
    return ExactEvaluation(
        trajectory=traj, method=method, eta=bound.eta, mean=mean, cov_eigvals=z_var, mean_eig=z_mean, fd=fd,
        bound=bound, basis=U,
    )


__all__ = ["evaluate_exact", "ExactEvaluation", "exact_mean_bound", "ExactMeanBound", "frechet_distance_same_basis"]
