"""Exact per-dimension (diagonal) covariance on Gaussian data: the ground truth for SN-DPM and NPR-DPM (facts file
§6.2; extended paper E, Bao et al. ICML 2022).

Data x_0 ~ N(m, Σ), Σ = U diag(λ_j) Uᵀ, forward x_n = √ᾱ_n x_0 + √β̄_n ε. (ε, x_n) is jointly Gaussian with
Cov(x_n) = A_n = ᾱ_nΣ + β̄_nI and Cov(ε, x_n) = √β̄_n I, so

* E[ε | x_n]   = ε*_n(x_n) = √β̄_n A_n⁻¹ (x_n − √ᾱ_n m)                       (affine in x_n)
* Cov[ε | x_n] = I − β̄_n A_n⁻¹ = U diag(ᾱ_nλ_j/(ᾱ_nλ_j + β̄_n)) Uᵀ           (the same for every x_n)
* E[ε² | x_n]  = diag Cov[ε | x_n] + ε*_n(x_n)²                               (elementwise: the SN head target)
* Cov[x_0 | x_n] = (β̄_n/ᾱ_n) Cov[ε | x_n] = U diag(λ_jβ̄_n/(ᾱ_nλ_j + β̄_n)) Uᵀ

and for the linear imperfect model ε̂ = a·ε* + b of :class:`~analytic_dpm.toy.ImperfectEps`,

* E[(ε − ε̂)² | x_n] = diag Cov[ε | x_n] + ((1 − a) ε*_n(x_n) − b)²            (the NPR head target)
* E_{x_n} E[(ε − ε̂)_i² | x_n] = diag Cov[ε|x_n]_i + (1 − a)² diag(β̄_nA_n⁻¹)_i + b_i²   (mean over i: the scalar R_n)

(``diag(β̄_nA_n⁻¹)_i = E[ε*_{n,i}²]`` is the per-dimension Γ: its mean over i is Γ_n, and it adds to diag Cov[ε|x_n]
to give 1, i.e. E[ε_i²] = 1.) All diagonals are sums of positive terms Σ_j U_ij² (·), so nothing cancels.

The reverse chain with per-dimension variance (DDPM family, λ² = β̃_{s|t}), on transitions (s, t) = (τ_{k−1}, τ_k):

    x_s = c·x̂_0(x_t) + b·x_t + diag(σ_{s|t}) ξ,   c = √ᾱ_s β_{t|s}/β̄_t,  b = √α_{t|s} β̄_s/β̄_t,

with x̂_0 the (unclamped) estimate of the ε-model, is linear-Gaussian: :func:`evaluate_exact_diagonal` propagates
its mean and covariance exactly and sums the expected KL terms per dimension,

    E KL(q(x_s|x_t,x_0) ‖ N(μ(x_t), diag σ²)) = ½ Σ_i [λ²/σ_i² + c² e_i/σ_i² − 1 + log(σ_i²/λ²)],
    e_i = E[(x_0 − x̂_0(x_t))_i²],

minimised dimension by dimension by σ_i² = λ² + c² e_i (:func:`optimal_diagonal_sigma_sq`; the contract's
per-dimension variance with Cov_x0 = e). By concavity of log this bound is never above the scalar Analytic-DPM bound
(Theorem 3), with equality when e_i does not depend on i.

The coefficients c, b, λ² are derived here from the schedule arrays (``log_alpha_bar``, ``beta_bar``), not taken from
:mod:`analytic_dpm.posterior`, so the tests comparing this module with :func:`~analytic_dpm.toy.evaluate_exact` check
two independent implementations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .._validate import _show, choice
from ..covariance import HEAD_KINDS  # the head kinds of a headed model
from ..likelihood import prior_kl_per_dim, ratio_minus_1_minus_log
from ..schedules import Schedule
from ..trajectories import transitions, validate_trajectory
from .exact import _check_eps_model, frechet_distance_same_basis
from .gaussian import ExactEpsModel, GaussianData, _as_batch, _check_schedule, _check_timestep
from .imperfect import ImperfectEps


# ---------------------------------------------------------------------------------------------------- helpers
def _check_data(data) -> GaussianData:
    if not isinstance(data, GaussianData):
        raise TypeError(
            f"data must be GaussianData (the closed forms need Gaussian data); got {type(data).__name__}. Build one "
            "with GaussianData(mean, cov) or toy.default_gaussian()."
        )
    return data


def _diag_of(data: GaussianData, eig_values: np.ndarray) -> np.ndarray:
    """diag(U diag(v) Uᵀ)_i = Σ_j U_ij² v_j (v itself for a diagonal covariance)."""
    if data.is_diagonal:
        return np.array(eig_values, dtype=np.float64)
    U = data.basis
    return (U * U) @ eig_values


def _check_scale_bias(data: GaussianData, scale, bias):
    """(scale as float, bias as a (d,) float64 array), validated as ImperfectEps does."""
    w = ImperfectEps(lambda x, n: x, scale, bias)
    b = w.bias
    if b.ndim and b.size != data.dim:
        raise ValueError(
            f"bias has {b.size} entries but the data have d = {data.dim} coordinates; pass a scalar or one entry per "
            "coordinate."
        )
    return w.scale, np.broadcast_to(b.reshape(-1) if b.ndim else b, (data.dim,)).astype(np.float64)


def _check_kind(kind, scale, bias) -> str:
    choice("kind", kind, HEAD_KINDS)
    if kind == "sn" and (float(scale) != 1.0 or np.any(np.asarray(bias) != 0.0)):
        raise ValueError(
            f"kind 'sn' assumes the exact mean ε̂ = ε* (SN-DPM's perfect-mean assumption), so scale and bias must be "
            f"1 and 0; got scale = {scale!r}, bias = {bias!r}. Use kind='npr' for the imperfect ε̂ = scale·ε* + bias."
        )
    return kind


def _as_const(value: np.ndarray, like, torch_in: bool):
    if torch_in:
        import torch

        return torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value


# ---------------------------------------------------------------------------------------------------- diagonals
def posterior_eps_cov_diag(data: GaussianData, schedule: Schedule, n: int) -> np.ndarray:
    """diag Cov[ε | x_n] = Σ_j U_ij² ᾱ_nλ_j/(ᾱ_nλ_j + β̄_n), shape (d,), the same for every x_n (module docstring).

    Its mean over i is 1 − Γ_n (:meth:`GaussianData.one_minus_gamma`)."""
    data, schedule = _check_data(data), _check_schedule(schedule)
    n = _check_timestep(schedule, n)
    al = schedule.alpha_bar[n] * data.eigvals
    return _diag_of(data, al / (al + schedule.beta_bar[n]))


def eps_star_sq_diag(data: GaussianData, schedule: Schedule, n: int) -> np.ndarray:
    """E_{x_n}[ε*_{n,i}(x_n)²] = diag(β̄_nA_n⁻¹)_i = Σ_j U_ij² β̄_n/(ᾱ_nλ_j + β̄_n), shape (d,): the per-dimension Γ
    (mean over i = Γ_n, eq. 8 in noise form); it also is the variance of the Gaussian ε*_{n,i}(x_n), x_n ~ q_n."""
    data, schedule = _check_data(data), _check_schedule(schedule)
    n = _check_timestep(schedule, n)
    bb = schedule.beta_bar[n]
    return _diag_of(data, bb / (schedule.alpha_bar[n] * data.eigvals + bb))


def cov_x0_diag(data: GaussianData, schedule: Schedule, n: int) -> np.ndarray:
    """diag Cov[x_0 | x_n] = (β̄_n/ᾱ_n) diag Cov[ε | x_n] = Σ_j U_ij² λ_jβ̄_n/(ᾱ_nλ_j + β̄_n), shape (d,), the same
    for every x_n; its mean over i is E tr Cov(x_0|x_n)/d = (β̄_n/ᾱ_n)(1 − Γ_n) (Lemma 11)."""
    data, schedule = _check_data(data), _check_schedule(schedule)
    n = _check_timestep(schedule, n)
    bb = schedule.beta_bar[n]
    lam = data.eigvals
    return _diag_of(data, lam * bb / (schedule.alpha_bar[n] * lam + bb))


def expected_residual_sq_diag(data: GaussianData, schedule: Schedule, n: int, scale: float = 1.0,
                              bias=0.0) -> np.ndarray:
    """E_{x_n} E[(ε − ε̂_n)_i² | x_n] for ε̂ = scale·ε* + bias, per dimension (shape (d,)):
    diag Cov[ε|x_n]_i + (1 − scale)² E[ε*_{n,i}²] + bias_i² (module docstring); its mean over i is the scalar
    residual R_n of :func:`~analytic_dpm.toy.exact_residual_of_imperfect`."""
    data = _check_data(data)
    a, b = _check_scale_bias(data, scale, bias)
    return posterior_eps_cov_diag(data, schedule, n) + (1.0 - a) ** 2 * eps_star_sq_diag(data, schedule, n) + b * b


def expected_cov_x0_diag(data: GaussianData, schedule: Schedule, n: int, kind: str = "sn", scale: float = 1.0,
                         bias=0.0) -> np.ndarray:
    """E_{x_n}[Cov_x0,i(x_n)] of the contract, per dimension (shape (d,)), for the exact head of ``kind``:
    'sn' (ε̂ = ε*): diag Cov[x_0|x_n], constant in x_n; 'npr' (ε̂ = scale·ε* + bias):
    (β̄_n/ᾱ_n) E_{x_n} E[(ε − ε̂)_i² | x_n] = diag Cov[x_0|x_n]_i + (β̄_n/ᾱ_n)((1 − scale)² E[ε*_i²] + bias_i²)
    = E[(x_0 − x̂_0(x_n))_i²]."""
    _check_kind(kind, scale, bias)
    data = _check_data(data)
    a, b = _check_scale_bias(data, scale, bias)
    out = cov_x0_diag(data, schedule, n)
    if kind == "npr" and (a != 1.0 or np.any(b != 0.0)):
        ratio = schedule.beta_bar[n] / schedule.alpha_bar[n]
        out = out + ratio * ((1.0 - a) ** 2 * eps_star_sq_diag(data, schedule, n) + b * b)
    return out


# ---------------------------------------------------------------------------------------------------- heads
def exact_eps_sq(data: GaussianData, schedule: Schedule, x, n: int):
    """E[ε² | x_n = x] = diag Cov[ε|x_n] + ε*_n(x)² elementwise (the SN-DPM head target), for a batch x (numpy or
    torch, shape (B, d), (B, *shape) with prod(shape) = d, or one point (d,)); same type, shape, dtype and device."""
    return exact_residual_sq(data, schedule, x, n, 1.0, 0.0, _eps_sq=True)


def exact_residual_sq(data: GaussianData, schedule: Schedule, x, n: int, scale: float = 1.0, bias=0.0,
                      *, _eps_sq: bool = False):
    """E[(ε − ε̂_n(x))² | x_n = x] = diag Cov[ε|x_n] + ((1 − scale)·ε*_n(x) − bias)² elementwise for
    ε̂ = scale·ε* + bias (the NPR-DPM head target); numpy or torch, the shape of x (see :func:`exact_eps_sq`)."""
    data, schedule = _check_data(data), _check_schedule(schedule)
    n = _check_timestep(schedule, n)
    a, b = _check_scale_bias(data, scale, bias)
    x2, restore, torch_in = _as_batch(x, data.dim)
    e = data.eps(schedule, x2, n)
    v = _as_const(posterior_eps_cov_diag(data, schedule, n), x2, torch_in)
    if _eps_sq:
        u = e
    else:
        u = e * (1.0 - a) if a != 1.0 else e * 0.0
        if np.any(b != 0.0):
            u = u - _as_const(b, x2, torch_in)
    return restore(v + u * u)


class ExactHeadModel:
    """A headed model (the contract of :mod:`analytic_dpm.covariance`) with the exact head of Gaussian data.

    ``kind='sn'``: ε̂ = ε* and head = E[ε² | x_n] (:func:`exact_eps_sq`); ``kind='npr'``: ε̂ = scale·ε* + bias
    (:class:`~analytic_dpm.toy.ImperfectEps`) and head = E[(ε − ε̂)² | x_n] (:func:`exact_residual_sq`).
    ``model(x, n)`` returns ε̂ and ``model.eps_and_head(x, n)`` returns (ε̂, head), for numpy arrays (float64 out) and
    torch tensors (same dtype and device), of shape (B, d) or (B, *shape) with prod(shape) = d.
    """

    def __init__(self, data: GaussianData, schedule: Schedule, kind: str = "sn", scale: float = 1.0, bias=0.0):
        self.data = _check_data(data)
        self.schedule = _check_schedule(schedule)
        self.head_kind = _check_kind(kind, scale, bias)
        self._scale, self._bias_vec = _check_scale_bias(self.data, scale, bias)
        inner = ExactEpsModel(self.data, self.schedule)
        # the ε-model protocol part, usable wherever an ImperfectEps around ε* is accepted
        self.eps_model = inner if kind == "sn" else ImperfectEps(inner, scale, bias)

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def bias(self) -> np.ndarray:
        """The bias as a (d,) float64 array (zeros for kind 'sn')."""
        return self._bias_vec

    def __call__(self, x, n):
        return self.eps_model(x, n)

    def eps_and_head(self, x, n):
        """(ε̂_n(x), head_n(x)), each of the type and shape of x (class docstring)."""
        n = _check_timestep(self.schedule, n)
        x2, restore, torch_in = _as_batch(x, self.data.dim)
        e = self.data.eps(self.schedule, x2, n)
        v = _as_const(posterior_eps_cov_diag(self.data, self.schedule, n), x2, torch_in)
        if self.head_kind == "sn":
            return restore(e), restore(v + e * e)
        a, b = self._scale, self._bias_vec
        eps_hat = e * a if a != 1.0 else e
        u = e * (1.0 - a) if a != 1.0 else e * 0.0
        if np.any(b != 0.0):
            bt = _as_const(b, x2, torch_in)
            eps_hat = eps_hat + bt
            u = u - bt
        return restore(eps_hat), restore(v + u * u)

    def __repr__(self) -> str:
        extra = "" if self.head_kind == "sn" else f", scale={self._scale}, bias=array({self.data.dim},)"
        return f"ExactHeadModel({self.data!r}, {self.schedule!r}, kind={self.head_kind!r}{extra})"


# ---------------------------------------------------------------------------------------------------- coefficients
def _ddpm_coefficients(schedule: Schedule, s: np.ndarray, t: np.ndarray):
    """(c, b, λ²) of the DDPM-family posterior q(x_s|x_t, x_0) = N(c x_0 + b x_t, λ² I) from the schedule arrays:
    α_{t|s} = exp(log ᾱ_t − log ᾱ_s) (double-double log ᾱ), β_{t|s} = −expm1(log α_{t|s}),
    c = √ᾱ_s β_{t|s}/β̄_t, b = √α_{t|s} β̄_s/β̄_t, λ² = β̃_{s|t} = β̄_s β_{t|s}/β̄_t (derived independently of
    :func:`analytic_dpm.posterior.posterior_coefficients`)."""
    la, lo = schedule.log_alpha_bar, schedule.log_alpha_bar_lo
    log_a_ts = (la[t] - la[s]) + (lo[t] - lo[s])
    a_ts = np.exp(log_a_ts)
    b_ts = -np.expm1(log_a_ts)
    bs, bt = schedule.beta_bar[s], schedule.beta_bar[t]
    c = np.exp(0.5 * la[s]) * b_ts / bt
    b = np.sqrt(a_ts) * bs / bt
    lam2 = bs * b_ts / bt
    return c, b, lam2


def optimal_diagonal_sigma_sq(data: GaussianData, schedule: Schedule, trajectory, kind: str = "sn",
                              scale: float = 1.0, bias=0.0) -> np.ndarray:
    """The optimal state-independent per-dimension variances on ``trajectory`` (DDPM family), shape (K, d), row k−1
    for (s, t) = (τ_{k−1}, τ_k): σ_i² = λ²_{s|t} + c²_{s|t} E_{x_t}[Cov_x0,i(x_t)], c² = ᾱ_s β_{t|s}²/β̄_t²
    (contract; facts §6.2), with E[Cov_x0] from :func:`expected_cov_x0_diag`.

    'sn': Cov_x0 = diag Cov[x_0|x_t] is constant in x_t, so this is the exact SN-DPM variance. 'npr' with
    ε̂ = scale·ε* + bias: the exact head makes Cov_x0(x_t) quadratic in x_t; its expectation E[(x_0 − x̂_0)_i²] gives
    the variance minimising the expected KL over constant diagonal variances for that mean. Row 0 (s = 0, λ² = 0)
    is c² e: the sampler ignores it."""
    data, schedule = _check_data(data), _check_schedule(schedule)
    _check_kind(kind, scale, bias)
    traj = validate_trajectory(trajectory, schedule.N)
    s, t = transitions(traj)
    c, _, lam2 = _ddpm_coefficients(schedule, s, t)
    e = np.stack([expected_cov_x0_diag(data, schedule, int(tk), kind, scale, bias) for tk in t])
    return lam2[:, None] + (c * c)[:, None] * e


# ---------------------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True, eq=False)
class DiagonalEvaluation:
    """What :func:`evaluate_exact_diagonal` returns. Arrays indexed by transition have K rows, row k−1 for
    (s, t) = (τ_{k−1}, τ_k); KL rows for s = 0 (the decoder, left out as in :func:`evaluate_exact`) are NaN."""

    trajectory: np.ndarray
    sigma_sq: np.ndarray  #: (K, d) the per-dimension variances given (row 0 ignored by the chain)
    lambda_sq: np.ndarray  #: (K,) β̃_{s|t}
    coef_x0: np.ndarray  #: (K,) c_{s|t} = √ᾱ_s β_{t|s}/β̄_t
    coef_xt: np.ndarray  #: (K,) √α_{t|s} β̄_s/β̄_t
    cov_x0: np.ndarray  #: (K, d) e_i = E[(x_0 − x̂_0(x_t))_i²] at each t
    kl_terms_by_dim: np.ndarray  #: (K, d) per-coordinate E KL in nats (their sum over i is the transition's KL)
    prior_kl: float  #: E KL(q(x_{τ_K}|x_0) ‖ N(0, I))/d in nats
    vb_nats_per_dim: float  #: prior_kl + Σ_{s>=1} kl_terms (decoder left out)
    mean: np.ndarray  #: (d,) mean of the generated Gaussian
    cov_eig: np.ndarray = None  #: (d,) or (d, d): its covariance in the data's eigen-coordinates (vector if diagonal)
    mean_eig: np.ndarray = None  #: (d,) its mean in eigen-coordinates
    fd: float = math.nan  #: Fréchet distance to the data N(m, Σ)
    basis: np.ndarray | None = None  #: U (None: identity, Σ diagonal)

    @property
    def kl_terms(self) -> np.ndarray:
        """(K,) per-transition E KL summed over dimensions and divided by d (nats/dim, as evaluate_exact's)."""
        return self.kl_terms_by_dim.mean(axis=1)

    @property
    def kl_terms_total(self) -> np.ndarray:
        """(K,) per-transition E KL summed over dimensions (nats)."""
        return self.kl_terms_by_dim.sum(axis=1)

    @property
    def vb_bits_per_dim(self) -> float:
        return self.vb_nats_per_dim / math.log(2.0)

    @cached_property
    def cov(self) -> np.ndarray:
        """The generated covariance (d, d) in the standard basis."""
        c = np.diag(self.cov_eig) if self.cov_eig.ndim == 1 else self.cov_eig
        if self.basis is not None:
            c = self.basis @ c @ self.basis.T
        return 0.5 * (c + c.T)


def _check_sigma_sq(sigma_sq, K: int, d: int, s: np.ndarray) -> np.ndarray:
    try:
        arr = np.asarray(sigma_sq, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"sigma_sq must be an array of real numbers of shape (K, d) = ({K}, {d}); got "
                        f"{sigma_sq!r}.") from None
    if arr.ndim == 1 and arr.shape == (K,):
        arr = np.repeat(arr[:, None], d, axis=1)
    if arr.shape != (K, d):
        raise ValueError(
            f"sigma_sq must have shape (K, d) = ({K}, {d}): one row of per-dimension variances per transition "
            f"(τ_(k−1), τ_k), or shape (K,) for the same variance in every dimension; got shape {arr.shape}. Build "
            "one with optimal_diagonal_sigma_sq(data, schedule, trajectory)."
        )
    inner = arr[s >= 1]
    bad = ~(np.isfinite(inner) & (inner > 0.0))
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)) + int(np.sum(s < 1))
        raise ValueError(
            f"sigma_sq must be finite and > 0 on every transition with s >= 1; got {_show(inner[bad])} in rows "
            f"{_show(rows)}. A variance <= 0 is not a density (row 0, s = 0, is ignored and may be anything)."
        )
    return arr


def evaluate_exact_diagonal(data: GaussianData, schedule: Schedule, trajectory, sigma_sq,
                            eps_model=None) -> DiagonalEvaluation:
    """Exact generated Gaussian and variational bound of the DDPM-family chain with per-dimension variances.

    The chain: x_{τ_K} ~ N(0, I); on each transition (s, t) = (τ_{k−1}, τ_k), k = K..1,
    x_s = c·x̂_0(x_t) + b·x_t + diag(√σ²_{k−1}) ξ (module docstring), x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t unclamped; the last
    step (s = 0) outputs its mean x̂_0. ``sigma_sq``: (K, d) (or (K,) for isotropic), row k−1 for transition k; row 0
    is ignored. ``eps_model``: None (exact ε*), ``data.eps_model(schedule)``, ``ImperfectEps(data.eps_model(schedule),
    scale, bias)`` or an :class:`ExactHeadModel` (its ε̂). In the data's eigen-coordinates z = Uᵀx,
    x̂_0 = diag(k) z + h with k_j = (ᾱλ_j + (1 − a)β̄)/(√ᾱ(ᾱλ_j + β̄)), h = aβ̄(Uᵀm)_j/(ᾱλ_j + β̄) − √(β̄/ᾱ)(Uᵀb)_j;
    the covariance recursion C ← F C F + Uᵀ diag(σ²) U, F = diag(c k + b), is O(K d³) for a rotated Σ (O(K d) when Σ
    is diagonal). The bound is the prior term plus the transitions with s >= 1 (decoder left out, as
    :func:`~analytic_dpm.toy.evaluate_exact`), with the per-dimension E KL of the module docstring. With σ² constant
    across dimensions every output equals evaluate_exact's.
    """
    data, schedule = _check_data(data), _check_schedule(schedule)
    if isinstance(eps_model, ExactHeadModel):
        eps_model = eps_model.eps_model
    a, bias = _check_eps_model(eps_model, data, schedule)
    bias = np.broadcast_to(np.asarray(bias, dtype=np.float64), (data.dim,)).copy()
    traj = validate_trajectory(trajectory, schedule.N)
    s, t = transitions(traj)
    K, d = s.size, data.dim
    sig = _check_sigma_sq(sigma_sq, K, d, s)
    c, b, lam2 = _ddpm_coefficients(schedule, s, t)
    # e_i = E[(x_0 − x̂_0)_i²]: diag Cov[x_0|x_t] + (β̄/ᾱ)((1 − a)² E[ε*_i²] + b_i²)
    e = np.stack([expected_cov_x0_diag(data, schedule, int(tk), "npr", a, bias) for tk in t])
    kl = np.full((K, d), np.nan)
    inner = s >= 1
    s2, l2 = sig[inner], lam2[inner][:, None]
    kl[inner] = 0.5 * ((c[inner] ** 2)[:, None] * e[inner] / s2 + ratio_minus_1_minus_log(l2, s2))
    prior = float(prior_kl_per_dim(schedule, int(traj[-1]), data.second_moment_per_dim()))
    vb = prior + float(kl[inner].sum() / d)

    # ---- the generated Gaussian, in eigen-coordinates
    lam, mu = data.eigvals, data.mean_eig
    U = None if data.is_diagonal else data.basis
    bias_eig = bias if U is None else U.T @ bias
    z_mean = np.zeros(d)
    z_cov = np.ones(d) if U is None else np.eye(d)
    for k in range(K - 1, -1, -1):
        tk = int(t[k])
        ab, bb = schedule.alpha_bar[tk], schedule.beta_bar[tk]
        den = ab * lam + bb
        kk = (ab * lam + (1.0 - a) * bb) / (math.sqrt(ab) * den)
        h = a * bb * mu / den - math.sqrt(bb / ab) * bias_eig
        F = c[k] * kk + b[k]
        z_mean = F * z_mean + c[k] * h
        if U is None:
            z_cov = F * F * z_cov
            if s[k] > 0:
                z_cov = z_cov + sig[k]
        else:
            z_cov = F[:, None] * z_cov * F[None, :]
            if s[k] > 0:
                z_cov = z_cov + (U.T * sig[k]) @ U
            z_cov = 0.5 * (z_cov + z_cov.T)
    mean = z_mean if U is None else U @ z_mean
    if U is None:
        fd = frechet_distance_same_basis(mu, lam, z_mean, z_cov)
    else:  # ‖Δm‖² + tr(Λ + C − 2(Λ^½ C Λ^½)^½) in eigen-coordinates
        r = np.sqrt(lam)
        ev = np.linalg.eigvalsh(r[:, None] * z_cov * r[None, :])
        dm = mu - z_mean
        fd = float(dm @ dm + lam.sum() + np.trace(z_cov) - 2.0 * np.sqrt(np.clip(ev, 0.0, None)).sum())
    return DiagonalEvaluation(
        trajectory=traj, sigma_sq=sig, lambda_sq=lam2, coef_x0=c, coef_xt=b, cov_x0=e, kl_terms_by_dim=kl,
        prior_kl=prior, vb_nats_per_dim=vb, mean=mean, cov_eig=z_cov, mean_eig=z_mean, fd=fd, basis=U,
    )


# ---------------------------------------------------------------------------------------------------- state-dependent
_GH_RULES = {}


def _gh_rule(nodes: int):
    """Probabilists' Gauss–Hermite nodes and weights normalised to sum 1 (E f(Z), Z ~ N(0, 1))."""
    rule = _GH_RULES.get(nodes)
    if rule is None:
        z, w = np.polynomial.hermite_e.hermegauss(nodes)
        rule = _GH_RULES[nodes] = (z, w / w.sum())
    return rule


def _e_log1p_quadratic(p, q, mu, sd):
    """E log(1 + p + q·W²), W ~ N(mu, sd²), p >= 0, q >= 0, elementwise over broadcast arrays (to ~1e-12 absolute).

    Gauss–Hermite (probabilists', ``hermite_e``; 64 nodes where ρ >= 4, else 200) wherever the integrand's complex
    singularities W = ±i√((1 + p)/q) are far from the Gaussian's bulk on its own scale (ρ = √((1 + p)/q)/sd >= 1) or
    the bulk is far from W = 0 (|mu|/sd >= 8). Elsewhere the integrand has a narrow peak of width ρ (in
    z = (W − mu)/sd) near z_0 = −mu/sd, which Gauss–Hermite cannot resolve (200 nodes give only ~1e-2 at ρ = 0.05);
    there W = sd·ρ·sinh(u) maps it to a function analytic in a strip of fixed width, integrated by the trapezoidal
    rule (exponentially convergent; step 0.1, finer when the peak is off-centre):
    E log(1 + p + qW²) = log1p(p) + 2 ∫ φ(z_0 + ρ sinh u) ρ cosh u · log cosh u du."""
    p, q, mu, sd = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (p, q, mu, sd)))
    shape = p.shape
    p, q, mu, sd = (v.ravel() for v in (p, q, mu, sd))
    out = np.empty(p.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.sqrt((1.0 + p) / q) / sd
        z0 = -mu / sd
    use_gh = ~(rho < 1.0) | ~(np.abs(z0) < 8.0)  # NaN-safe: sd = 0 or q = 0 go to the (then exact) GH branch
    smooth = ~(rho < 4.0)  # singularities >= 4 standard deviations away: 64 nodes reach ~1e-16
    for sel, nodes in ((use_gh & smooth, 64), (use_gh & ~smooth, 200)):
        if sel.any():
            z, w = _gh_rule(nodes)
            W = mu[sel, None] + sd[sel, None] * z[None, :]
            out[sel] = np.log1p(p[sel, None] + q[sel, None] * W * W) @ w
    for i in np.flatnonzero(~use_gh):
        r, zc = float(rho[i]), float(z0[i])
        h = 0.1 / max(1.0, (abs(zc) + 1.0) / 2.0)
        umax = math.asinh((abs(zc) + 40.0) / r)
        u = np.arange(-umax, umax + h, h)
        zz = zc + r * np.sinh(u)
        au = np.abs(u)
        log_cosh = au + np.log1p(np.exp(-2.0 * au)) - math.log(2.0)
        wts = np.exp(-0.5 * zz * zz) * (r * np.cosh(u) * h / math.sqrt(2.0 * math.pi))
        out[i] = math.log1p(p[i]) + 2.0 * float(wts @ log_cosh)
    return out.reshape(shape)


def npr_state_dependent_kl_terms(data: GaussianData, schedule: Schedule, trajectory, scale: float = 1.0, bias=0.0,
                                 by_dim: bool = False) -> np.ndarray:
    """Per-transition expected KL of the DDPM-family chain whose mean uses ε̂ = scale·ε* + bias and whose variance is
    NPR-DPM's state-dependent σ_i²(x_t) = λ² + c² Cov_x0,i(x_t) with the exact head, Cov_x0,i(x_t) =
    (β̄_t/ᾱ_t) E[(ε − ε̂)_i² | x_t] (contract, no clip: Gaussian data are unbounded).

    The generated distribution is then not Gaussian, but each step's expected KL is exact: given x_t the expected
    squared mean error is c² Cov_x0,i(x_t), so E KL = ½ Σ_i E_{x_t}[log(σ_i²(x_t)/λ²)], x_t ~ q_t. With
    u_i = (1 − scale) ε*_i(x_t) − bias_i ~ N(−bias_i, (1 − scale)² E[ε*_i²]) (ε*_i(x_t) is a 1-D Gaussian coordinate
    for any Σ, diagonal or rotated), σ_i²/λ² = 1 + p_i + q u_i², p_i = c² diag Cov[x_0|x_t]_i/λ²,
    q = c² β̄_t/(ᾱ_t λ²), and the expectation is a 1-D integral (:func:`_e_log1p_quadratic`: Gauss–Hermite, or a
    sinh-mapped trapezoid where the integrand is sharply peaked).

    Returns (K,) nats per dimension (the mean over i), or (K, d) per coordinate with ``by_dim``; rows for s = 0
    (the decoder, left out) are NaN.
    """
    data, schedule = _check_data(data), _check_schedule(schedule)
    a, b = _check_scale_bias(data, scale, bias)
    traj = validate_trajectory(trajectory, schedule.N)
    s, t = transitions(traj)
    c, _, lam2 = _ddpm_coefficients(schedule, s, t)
    out = np.full((s.size, data.dim), np.nan)
    for k in np.flatnonzero(s >= 1):
        tk = int(t[k])
        c2l = c[k] ** 2 / lam2[k]
        p = c2l * cov_x0_diag(data, schedule, tk)
        q = c2l * schedule.beta_bar[tk] / schedule.alpha_bar[tk]
        sd = abs(1.0 - a) * np.sqrt(eps_star_sq_diag(data, schedule, tk))
        out[k] = 0.5 * _e_log1p_quadratic(p, q, -b, sd)
    return out if by_dim else out.mean(axis=1)


def npr_state_dependent_bound(data: GaussianData, schedule: Schedule, trajectory, scale: float = 1.0,
                              bias=0.0) -> float:
    """The variational bound (nats/dim, decoder left out) of the chain of :func:`npr_state_dependent_kl_terms`:
    E KL(q(x_{τ_K}|x_0) ‖ N(0, I))/d + Σ_{s>=1} kl_terms."""
    data, schedule = _check_data(data), _check_schedule(schedule)
    traj = validate_trajectory(trajectory, schedule.N)
    kl = npr_state_dependent_kl_terms(data, schedule, traj, scale, bias)
    prior = float(prior_kl_per_dim(schedule, int(traj[-1]), data.second_moment_per_dim()))
    return prior + float(np.nansum(kl[traj[:-1] >= 1]))


__all__ = [
    "HEAD_KINDS", "posterior_eps_cov_diag", "eps_star_sq_diag", "cov_x0_diag", "expected_residual_sq_diag",
    "expected_cov_x0_diag", "exact_eps_sq", "exact_residual_sq", "ExactHeadModel", "optimal_diagonal_sigma_sq",
    "DiagonalEvaluation", "evaluate_exact_diagonal", "npr_state_dependent_kl_terms", "npr_state_dependent_bound",
]
