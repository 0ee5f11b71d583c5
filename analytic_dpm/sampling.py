"""The one ancestral sampling loop, for numpy and torch (P §2, §4; facts file §1, §3.3, §3.4).

The reverse process on a trajectory is p(x_{τ_K}) = N(0, I), p(x_s | x_t) = N(μ_{s|t}(x_t), σ²_{s|t} I) with the
mean of Theorem 1 (P eq. 6 on a trajectory) evaluated at the network's ε̂ and σ² from Theorem 1 or a baseline.

Every per-timestep quantity is a scalar, so it is computed once in float64 numpy for the whole trajectory and stored
in a :class:`CoefficientTable`. The loop over k = K..1, transition (s, t) = (τ_{k−1}, τ_k), then only does

    x̂_0 = x0_from_xt · x_t + x0_from_eps · ε̂          (= (x_t − √β̄_t ε̂)/√ᾱ_t, optionally clamped to the data range)
    x_s = coef_x0 · x̂_0 + coef_xt · x_t + coef_eps · ε̂ + noise_scale · z,   z ~ N(0, I)

on whatever array it is given (a numpy float64 array, or a torch tensor on any device); :func:`reverse_step_with_x0`
is that step, returning x̂_0 as well. The mean follows the official code: DDPM family μ = μ̃_{s|t}(x_t, x̂_0), the
mean of q(x_s | x_t, x_0) (coef_eps = 0), DDIM family μ = √ᾱ_s x̂_0 + √(β̄_s − λ²) ε̂ with the raw ε̂ (coef_xt = 0).
Without clamping the two forms are the same number. The last step (s = 0) returns its mean, x̂_0, without noise.

Random numbers: sample i (counted from ``first_index``) draws its start x_{τ_K} and all its noise from a numpy
generator determined by (seed, i) only — precisely, samples come in fixed chunks of :data:`NOISE_CHUNK` and each chunk
has its own ``SeedSequence(seed, spawn_key=(tag, chunk))`` stream (:class:`NoiseStream`). So the random numbers do
not depend on ``batch_size``, on ``num_samples`` or on how a run is split over processes, and the torch backend sees
the same numbers as numpy. (A float32 network's own rounding can change with the batch it is called on, about 1e-6
relative on CPU; ``distributed_sample`` keeps shards at a fixed batch so that its output is identical bit for bit.)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ._validate import as_float, as_int, choice, check_data_range
from .covariance import (COVARIANCE_METHODS, base_method, check_headed_model, clip_cov, cov_scale, cov_upper,
                         cov_x0, head_kind_of)
from .posterior import family_of, posterior_coefficients, residual_var
from .schedules import Schedule
from .variance import ALL_METHODS, ReverseVariances, pixel_clip_threshold, reverse_variances

#: Samples per random stream: sample i uses stream ⌊i / NOISE_CHUNK⌋, row i mod NOISE_CHUNK. Changing it changes
#: every sample, so it is a fixed constant of the format.
NOISE_CHUNK = 16
_STREAM_TAG = 0x73616D70  # "samp": keeps these streams apart from other users of SeedSequence(seed).spawn(...)
BACKENDS = ("numpy", "torch")
_FILE_FORMAT = "analytic_dpm.sampling/1"
#: how the DDIM-family mean treats ε̂ when x̂_0 is clamped: 'raw' (the official code and diffusers' default) or
#: 'consistent' (diffusers' DDIMScheduler.step(..., use_clipped_model_output=True))
DDIM_EPS = ("raw", "consistent")


# ======================================================================================== coefficient table
@dataclass(frozen=True, eq=False)
class CoefficientTable:
    """Per-transition float64 coefficients of the reverse chain; entry k−1 belongs to (s, t) = (τ_{k−1}, τ_k).

    One step is x_s = coef_x0·x̂_0 + coef_xt·x_t + coef_eps·ε̂ + noise_scale·z with
    x̂_0 = x0_from_xt·x_t + x0_from_eps·ε̂. ``sigma_sq`` is the variance the sampler uses: ``variances.sigma_sq``
    with the optional pixel clip on (τ_1, τ_2) applied and 0 on the last step (s = 0), which outputs its mean.
    """

    schedule: Schedule
    trajectory: np.ndarray  #: [0, τ_1, …, τ_K]
    method: str
    family: str  #: 'ddpm' or 'ddim'
    eta: float
    data_range: tuple | None  #: the (a, b) used for Theorem 2's eq. 12 and for clamping x̂_0
    s: np.ndarray  #: τ_{k−1}, int64 (K,)
    t: np.ndarray  #: τ_k, int64 (K,)
    coef_x0: np.ndarray  #: a: multiplies x̂_0
    coef_xt: np.ndarray  #: b: multiplies x_t (0 for the DDIM family)
    coef_eps: np.ndarray  #: e: multiplies the raw ε̂ (0 for the DDPM family)
    noise_scale: np.ndarray  #: c = √sigma_sq, multiplies z ~ N(0, I)
    sigma_sq: np.ndarray  #: σ² used by the sampler (0 at s = 0; pixel clip applied)
    x0_from_xt: np.ndarray  #: 1/√ᾱ_t
    x0_from_eps: np.ndarray  #: −√(β̄_t/ᾱ_t)
    variances: ReverseVariances  #: the Theorem 1/2 variances this table came from
    sigma_sq_clip_threshold: float | None  #: (y·(2/255)·√(π/2))² when ``clip_sigma_pixel = y`` was given
    sigma_sq_clipped: np.ndarray  #: True where the pixel clip lowered σ² (only ever entry 1, i.e. (τ_1, τ_2))
    #: DDIM family with x̂_0 clamped: 'raw' uses the network's ε̂ in the mean (the official code, the default);
    #: 'consistent' re-derives ε̃ = (x_t − √ᾱ_t clamp(x̂_0))/√β̄_t from the clamped x̂_0, as diffusers' DDIMScheduler
    #: does with use_clipped_model_output=True. Without clamping the two are identical; the DDPM family's mean has no
    #: ε̂ term and ignores it.
    ddim_eps: str = "raw"
    eps_from_xt: np.ndarray | None = None  #: 1/√β̄_t (for 'consistent')
    eps_from_x0: np.ndarray | None = None  #: −√(ᾱ_t/β̄_t) (for 'consistent')
    #: per-dimension covariance methods (:data:`~analytic_dpm.covariance.COVARIANCE_METHODS`): 'sn' or 'npr', the
    #: head the model must carry; None for the scalar methods. For these ``sigma_sq`` holds λ² only: each step adds
    #: ``cov_scale``·clip(Cov_x0(x_t), 0, ``cov_upper``) per dimension from the head's output.
    head_kind: str | None = None
    cov_scale: np.ndarray | None = None  #: c²_{s|t} = g²ᾱ_t/β̄_t (0 at s = 0), the factor of Cov_x0 in σ²
    cov_upper: float | None = None  #: upper clip of Cov_x0, r² of the data range when ``clip`` (None: open)

    @property
    def K(self) -> int:
        """Number of reverse transitions."""
        return int(self.s.shape[0])

    def __len__(self) -> int:
        return self.K

    def fingerprint(self) -> str:
        """SHA-256 of everything that determines the chain (timesteps and every coefficient)."""
        h = hashlib.sha256()
        for name in ("s", "t", "coef_x0", "coef_xt", "coef_eps", "noise_scale", "x0_from_xt", "x0_from_eps"):
            h.update(name.encode())
            h.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        if self.ddim_eps != "raw" and self.family == "ddim":  # 'raw' keeps the fingerprints of earlier versions
            h.update(f"ddim_eps={self.ddim_eps}".encode())
        if self.head_kind is not None:  # scalar methods keep the fingerprints of earlier versions
            h.update(f"head={self.head_kind};upper={self.cov_upper}".encode())
            h.update(np.ascontiguousarray(self.cov_scale).tobytes())
            h.update(np.float64(-1.0 if self.sigma_sq_clip_threshold is None else
                                self.sigma_sq_clip_threshold).tobytes())
        return h.hexdigest()

    def needs_noise(self, i: int) -> bool:
        """Whether transition index i = k − 1 adds noise (σ² > 0 somewhere)."""
        return bool(self.noise_scale[i] > 0.0 or (self.cov_scale is not None and self.cov_scale[i] > 0.0))


def _check_data_range(data_range):
    return check_data_range(data_range)


def coefficient_table(
    schedule: Schedule,
    trajectory,
    method: str,
    gamma=None,
    eta: float = 0.0,
    data_range=(-1.0, 1.0),
    clip: bool = True,
    clip_sigma_pixel: float | None = None,
    *,
    one_minus_gamma=None,
    residual=None,
    ddim_eps: str = "raw",
) -> CoefficientTable:
    """The sampler's coefficients along ``trajectory`` for one of the methods of
    :data:`~analytic_dpm.variance.ALL_METHODS`, in float64.

    σ² comes from :func:`~analytic_dpm.variance.reverse_variances` (same ``method``, ``gamma``, ``eta``,
    ``data_range``, ``clip``, ``one_minus_gamma``, ``residual``); the residual methods ('residual-ddpm',
    'residual-ddim') have the means of their families and σ² = λ² + g²R_t. Means (facts §3.3): DDPM family μ̃_{s|t} = coef_x0·x̂_0 + coef_xt·x_t
    (:func:`~analytic_dpm.posterior.posterior_coefficients`); DDIM family μ = √ᾱ_s x̂_0 + √(β̄_s − λ²) ε̂.
    ``clip_sigma_pixel = y`` (P App. F.2) sets σ² = min(σ², (y·(2/255)·√(π/2))²) on the transition (τ_1, τ_2) only,
    the second one (k = 2); with K = 1 there is no such transition and nothing is clipped. The last transition
    (s = 0) gets coef_x0 = 1, coef_xt = coef_eps = 0 and σ² = 0: it outputs x̂_0.

    ``ddim_eps`` (DDIM family, matters only when the sampler clamps x̂_0): 'raw' (default, the official code:
    √ᾱ_s clamp(x̂_0) + √(β̄_s − λ²) ε̂ with the network's ε̂) or 'consistent' (the ε̂ term re-derived from the
    clamped x̂_0, ε̃ = (x_t − √ᾱ_t clamp(x̂_0))/√β̄_t, as diffusers' DDIMScheduler does with
    ``use_clipped_model_output=True``). The raw form lets a clamped
    x̂_0 and an unclamped ε̂ disagree, which accumulates over many deterministic steps on a weak model.
    """
    if ddim_eps not in DDIM_EPS:
        raise ValueError(
            f"ddim_eps must be 'raw' (the official code: the network's ε̂ in the DDIM mean) or 'consistent' (ε̂ "
            f"re-derived from the clamped x̂_0, as diffusers does); got {ddim_eps!r}."
        )
    if method in COVARIANCE_METHODS:
        head_kind = head_kind_of(method)
        for nm, v in (("gamma", gamma), ("one_minus_gamma", one_minus_gamma), ("residual", residual)):
            if v is not None:
                raise ValueError(
                    f"{nm} does not apply to method {method!r}: its σ² comes from the model's {head_kind!r} head at "
                    f"each x_t, not from a per-timestep statistic. Drop {nm}=, or pick a scalar method "
                    "('analytic-ddpm', 'residual-ddpm', ...)."
                )
        var = reverse_variances(schedule, trajectory, base_method(method), eta=eta, data_range=data_range, clip=clip)
    elif method not in ALL_METHODS:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in ALL_METHODS + COVARIANCE_METHODS)}; "
                         f"got {method!r}.")
    else:
        head_kind = None
        var = reverse_variances(schedule, trajectory, method, gamma=gamma, eta=eta, data_range=data_range, clip=clip,
                                one_minus_gamma=one_minus_gamma, residual=residual)
    data_range = _check_data_range(data_range)
    if not isinstance(clip, (bool, np.bool_)):
        raise TypeError(f"clip must be True or False; got {clip!r}.")
    s, t = var.s.copy(), var.t.copy()
    family = family_of(method)
    eta = var.eta
    if family == "ddpm":
        coef_x0, coef_xt, _ = posterior_coefficients(schedule, s, t, family, eta)
        coef_eps = np.zeros_like(coef_x0)
    else:
        coef_x0 = np.sqrt(schedule.alpha_bar[s])
        coef_eps = np.sqrt(residual_var(schedule, s, t, family, eta))
        coef_xt = np.zeros_like(coef_x0)
    coef_x0, coef_xt, coef_eps = (np.array(c, dtype=np.float64) for c in (coef_x0, coef_xt, coef_eps))
    sigma_sq = np.array(var.sigma_sq, dtype=np.float64)

    threshold = None
    clipped = np.zeros(sigma_sq.shape, dtype=bool)
    if clip_sigma_pixel is not None:
        threshold = pixel_clip_threshold(clip_sigma_pixel)
        if sigma_sq.shape[0] >= 2 and sigma_sq[1] > threshold:
            sigma_sq[1] = threshold
            clipped[1] = True

    # last step, s = τ_0 = 0: β̄_0 = 0 so coef_xt = coef_eps = 0 and coef_x0 = 1 analytically; store them exactly
    assert s[0] == 0
    coef_x0[0], coef_xt[0], coef_eps[0], sigma_sq[0] = 1.0, 0.0, 0.0, 0.0

    extra = {}
    if head_kind is not None:
        c2 = np.array(cov_scale(schedule, s, t, family, eta), dtype=np.float64)
        c2[0] = 0.0  # the last step outputs its mean
        c2.setflags(write=False)
        extra = dict(head_kind=head_kind, cov_scale=c2, cov_upper=cov_upper(data_range, clip))
    arrays = dict(
        coef_x0=coef_x0, coef_xt=coef_xt, coef_eps=coef_eps, noise_scale=np.sqrt(sigma_sq), sigma_sq=sigma_sq,
        x0_from_xt=np.exp(-0.5 * schedule.log_alpha_bar[t]),
        x0_from_eps=-np.sqrt(schedule.beta_bar[t] / schedule.alpha_bar[t]),
        eps_from_xt=1.0 / np.sqrt(schedule.beta_bar[t]),
        eps_from_x0=-np.sqrt(schedule.alpha_bar[t] / schedule.beta_bar[t]),
    )
    for a in (*arrays.values(), s, t, clipped):
        a.setflags(write=False)
    return CoefficientTable(
        schedule=schedule, trajectory=var.trajectory, method=method, family=family, eta=eta, data_range=data_range,
        s=s, t=t, variances=var, sigma_sq_clip_threshold=threshold, sigma_sq_clipped=clipped, ddim_eps=ddim_eps,
        **arrays, **extra,
    )


# ======================================================================================== one step
def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _clamp(x, lo: float, hi: float):
    if isinstance(x, np.ndarray):
        return np.clip(x, lo, hi)
    return x.clamp(lo, hi)


def _predict_x0(tab: CoefficientTable, i: int, x_t, eps_hat, clamp):
    x0 = float(tab.x0_from_xt[i]) * x_t + float(tab.x0_from_eps[i]) * eps_hat
    return x0 if clamp is None else _clamp(x0, *clamp)


def _diagonal_noise_scale(tab: CoefficientTable, i: int, eps_hat, head, counts=None):
    """√σ²_i(x_t) per dimension for a covariance method: λ² + c²·clip(Cov_x0(x_t), 0, r²), with the pixel clip on
    (τ_1, τ_2) elementwise. ``counts`` (a dict) accumulates the numbers of clipped elements."""
    t = int(tab.t[i])
    cov, n_low, n_high = clip_cov(cov_x0(tab.head_kind, tab.schedule, t, eps_hat, head), tab.cov_upper)
    var = float(tab.sigma_sq[i]) + float(tab.cov_scale[i]) * cov
    n_pix = 0
    thr = tab.sigma_sq_clip_threshold
    if thr is not None and i == 1:
        if isinstance(var, np.ndarray):
            n_pix = int(np.count_nonzero(var > thr))
            var = np.minimum(var, thr)
        else:
            n_pix = int((var > thr).sum())
            var = var.clamp(max=thr)
    if counts is not None:
        for key, v in (("cov_low", n_low), ("cov_high", n_high), ("pixel", n_pix)):
            counts[key][i] += v
        counts["elements"][i] += int(np.prod(tuple(eps_hat.shape)))
    return np.sqrt(var) if isinstance(var, np.ndarray) else var.sqrt()


def _step_with_x0(tab: CoefficientTable, i: int, x_t, eps_hat, noise, clamp, head=None, counts=None):
    """(x̂_0, x_s) for transition index i = k − 1 (no checks; the loop calls this, once per step). ``head``: the
    second head's output at x_t, for the covariance methods."""
    x0 = _predict_x0(tab, i, x_t, eps_hat, clamp)
    a, b, e, c = (float(v[i]) for v in (tab.coef_x0, tab.coef_xt, tab.coef_eps, tab.noise_scale))
    out = x0 if a == 1.0 else a * x0
    if b != 0.0:
        out = out + b * x_t
    if e != 0.0:
        if clamp is not None and tab.ddim_eps == "consistent":  # ε̃ from the clamped x̂_0 (diffusers' DDIM)
            eps_hat = float(tab.eps_from_xt[i]) * x_t + float(tab.eps_from_x0[i]) * x0
        out = out + e * eps_hat
    if tab.head_kind is not None:
        if noise is not None and tab.cov_scale[i] > 0.0:
            if head is None:
                raise ValueError(f"method {tab.method!r} needs the model's {tab.head_kind!r} head output at each step: "
                                 "pass head= (from model.eps_and_head(x, n)).")
            out = out + _diagonal_noise_scale(tab, i, eps_hat, head, counts) * noise
        elif c != 0.0 and noise is not None:
            out = out + c * noise
        return x0, out
    if c != 0.0 and noise is not None:
        out = out + c * noise
    return x0, out


def x0_clamp_range(clip_x0, data_range):
    """The interval x̂_0 is clamped to: ``data_range`` when ``clip_x0`` is True, None when it is None or False.

    ``clip_x0=True`` with ``data_range=None`` raises ValueError (unbounded data cannot be clamped); anything but
    True/False/None raises TypeError. ``data_range`` is a checked (a, b) such as ``CoefficientTable.data_range``.
    """
    if clip_x0 is None or clip_x0 is False:
        return None
    if clip_x0 is not True:
        raise TypeError(f"clip_x0 must be True, False or None; got {clip_x0!r}.")
    if data_range is None:
        raise ValueError(
            "clip_x0=True clamps x̂_0 to data_range, but data_range is None. Pass data_range=(a, b), e.g. "
            "(-1.0, 1.0) for images, or leave clip_x0 off for unbounded data."
        )
    return data_range


def _check_k(table, k) -> int:
    if not isinstance(table, CoefficientTable):
        raise TypeError(f"table must be a CoefficientTable from coefficient_table(...); got {type(table).__name__}.")
    k = as_int("k", k, minimum=1, fix=f"k numbers the transitions (τ_{{k−1}}, τ_k), 1 <= k <= K = {table.K}.")
    if k > table.K:
        raise ValueError(f"k must satisfy 1 <= k <= K = {table.K}; got k = {k}.")
    return k


def predict_x0(table: CoefficientTable, k: int, x_t, eps_hat, clip_x0=None):
    """x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t at t = τ_k, clamped to ``table.data_range`` when ``clip_x0``."""
    k = _check_k(table, k)
    return _predict_x0(table, k - 1, x_t, eps_hat, x0_clamp_range(clip_x0, table.data_range))


def reverse_step(table: CoefficientTable, k: int, x_t, eps_hat, noise=None, clip_x0=None, head=None):
    """One reverse transition from x_{τ_k} to x_{τ_{k−1}} (k = 1..K): μ(x_t, ε̂) + √σ² · noise.

    μ is the DDPM posterior mean μ̃_{s|t}(x_t, x̂_0) or the DDIM mean √ᾱ_s x̂_0 + √(β̄_s − λ²) ε̂; ``noise=None``
    returns the mean. Works on numpy arrays and torch tensors alike; this is the exact step :func:`sample` runs.
    For a covariance method (``table.head_kind`` set) ``head`` is the model's second head at x_t and σ² is per
    dimension (:mod:`analytic_dpm.covariance`).
    """
    k = _check_k(table, k)
    return _step_with_x0(table, k - 1, x_t, eps_hat, noise, x0_clamp_range(clip_x0, table.data_range), head)[1]


def reverse_step_with_x0(table: CoefficientTable, k: int, x_t, eps_hat, noise=None, clip_x0=None, head=None):
    """:func:`reverse_step` that also returns the x̂_0 it used: ``(x̂_0, x_s)`` for the transition τ_k → τ_{k−1}.

    x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t at t = τ_k (clamped to ``table.data_range`` when ``clip_x0``), computed once and
    shared by the mean, so ``x̂_0`` equals :func:`predict_x0` and ``x_s`` equals :func:`reverse_step` bit for bit.
    On the last transition (s = 0) x_s is x̂_0 itself (the same array object).
    """
    k = _check_k(table, k)
    return _step_with_x0(table, k - 1, x_t, eps_hat, noise, x0_clamp_range(clip_x0, table.data_range), head)


# ======================================================================================== noise streams
def _stream(seed: int, chunk: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_STREAM_TAG, chunk))))


class NoiseStream:
    """The per-sample random numbers of :func:`sample` for the global sample indices lo..hi−1.

    Sample i belongs to stream j = ⌊i / NOISE_CHUNK⌋, the float64 PCG64 generator of
    ``SeedSequence(seed, spawn_key=(tag, j))`` (a fixed tag keeps it apart from other users of the seed), and is
    row i mod NOISE_CHUNK of it. Every :meth:`draw` takes one whole (NOISE_CHUNK, *shape) standard-normal block
    from each stream the range touches and returns rows lo..hi−1, so sample i sees the same numbers whatever the
    batch boundaries, ``num_samples`` or number of processes. :func:`sample` draws x_{τ_K} first, then once per
    step with σ > 0, in the order k = K..1.
    """

    def __init__(self, seed: int, lo: int, hi: int, shape: tuple):
        seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer seed.")
        lo = as_int("lo", lo, minimum=0, fix="lo is the global index of the first sample.")
        hi = as_int("hi", hi, minimum=lo + 1, fix=f"hi is one past the last sample index; it must exceed lo = {lo}.")
        shape = check_sample_shape(shape)
        self.seed, self.lo, self.hi, self.shape = seed, lo, hi, shape
        c0, c1 = lo // NOISE_CHUNK, (hi - 1) // NOISE_CHUNK
        self.gens = [_stream(seed, c) for c in range(c0, c1 + 1)]
        self.buf = np.empty((len(self.gens) * NOISE_CHUNK, *shape), dtype=np.float64)
        self.rows = slice(lo - c0 * NOISE_CHUNK, hi - c0 * NOISE_CHUNK)

    def draw(self) -> np.ndarray:
        """The next draw for samples lo..hi−1, float64 (hi − lo, *shape): a view into a reused buffer, valid until
        the next draw (copy it to keep it)."""
        C = NOISE_CHUNK
        for j, g in enumerate(self.gens):
            g.standard_normal(out=self.buf[j * C:(j + 1) * C])
        return self.buf[self.rows]


_DEVICE_TAG = 0x64657663  # "devc": the device streams are a separate family from the host ones
#: where :func:`sample` draws its noise with backend='torch': 'host' (numpy PCG64 streams, the same numbers on every
#: device and backend) or 'device' (torch generators on the device: no host work or copy per step)
NOISE_SOURCES = ("host", "device")


class DeviceNoiseStream:
    """The per-sample random numbers of :func:`sample` with ``noise='device'``: like :class:`NoiseStream`, but each
    stream j = ⌊i / NOISE_CHUNK⌋ is a ``torch.Generator`` on ``device`` seeded from
    ``SeedSequence(seed, spawn_key=(tag, j))``, and :meth:`draw` returns a tensor of ``dtype`` on the device.

    Sample i still sees the same numbers whatever the batch boundaries, ``num_samples`` or number of processes, on
    a given device type and torch version; the numbers differ from the host streams and between device types
    (torch's CPU and CUDA generators are different algorithms).
    """

    def __init__(self, seed: int, lo: int, hi: int, shape: tuple, device, dtype):
        import torch

        seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer seed.")
        shape = check_sample_shape(shape)
        self.lo, self.hi, self.shape = lo, hi, shape
        c0, c1 = lo // NOISE_CHUNK, (hi - 1) // NOISE_CHUNK
        self.gens = []
        for c in range(c0, c1 + 1):
            state = np.random.SeedSequence(seed, spawn_key=(_DEVICE_TAG, c)).generate_state(1, np.uint64)[0]
            self.gens.append(torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1)))
        self.device, self.dtype = device, dtype
        self.buf = torch.empty((len(self.gens) * NOISE_CHUNK, *shape), dtype=dtype, device=device)
        self.rows = slice(lo - c0 * NOISE_CHUNK, hi - c0 * NOISE_CHUNK)

    def draw(self):
        """The next draw for samples lo..hi−1, a (hi − lo, *shape) view into a reused device buffer."""
        import torch

        C = NOISE_CHUNK
        for j, g in enumerate(self.gens):
            torch.randn((C, *self.shape), generator=g, dtype=self.dtype, device=self.device,
                        out=self.buf[j * C:(j + 1) * C])
        return self.buf[self.rows]


# ======================================================================================== argument checks
def check_sample_shape(shape) -> tuple:
    """One sample's shape as a tuple of positive ints (an int n means (n,)); TypeError/ValueError otherwise."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of positive ints (one sample's shape, e.g. (2,) or (3, 32, 32)); "
                        f"got {shape!r}.") from None
    if len(shape) == 0 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                                  for v in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints (one sample's shape, e.g. (2,) or "
                         f"(3, 32, 32), without the batch dimension); got {shape!r}.")
    return tuple(int(v) for v in shape)


def torch_device_dtype(device=None, dtype=None):
    """The ``(torch.device, dtype)`` that ``backend='torch'`` runs the chain in: ``device`` (default CPU) and
    ``dtype`` torch.float32 (default) or torch.float64 (also the names 'float32', 'float64', 'float', 'double').
    Other dtypes raise ValueError: lower precision belongs inside the ε-model."""
    return _torch_setup(device, dtype)[1:]


def _torch_setup(device, dtype):
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        raise ImportError("backend='torch' needs PyTorch; install it or use backend='numpy'.") from None
    names = {"float32": torch.float32, "float64": torch.float64, "float": torch.float32, "double": torch.float64}
    if dtype is None:
        dtype = torch.float32
    elif isinstance(dtype, str):
        if dtype not in names:
            raise ValueError(f"dtype for backend='torch' must be torch.float32 or torch.float64; got {dtype!r}.")
        dtype = names[dtype]
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype for backend='torch' must be torch.float32 or torch.float64; got {dtype!r}. "
                         "Lower precision belongs inside the eps_model (e.g. autocast), not in the chain.")
    try:
        device = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0'; got {device!r}.") from None
    return torch, device, dtype


def _check_eps_output(eps, x, backend: str, t: int, what: str = "ε̂"):
    call = f"eps_model(x, {t})" if what == "ε̂" else f"eps_model.eps_and_head(x, {t})"
    if backend == "numpy":
        if not isinstance(eps, np.ndarray):
            raise TypeError(f"{call} must return a numpy array for backend='numpy' (the same type as x) as {what}; "
                            f"got {type(eps).__name__}.")
    else:
        if not _is_torch(eps) or not hasattr(eps, "device"):
            raise TypeError(f"{call} must return a torch.Tensor for backend='torch' (the same type as x) as {what}; "
                            f"got {type(eps).__name__}.")
        if eps.device != x.device:
            raise ValueError(f"{call} returned {what} on {eps.device}, but x is on {x.device}; "
                             "return it on the same device as x.")
    if tuple(eps.shape) != tuple(x.shape):
        raise ValueError(
            f"{call} must return {what} with the shape of x, {tuple(x.shape)}; got {tuple(eps.shape)}. "
            "A model that also outputs variances (2C channels) needs an adapter that returns only ε̂."
        )
    finite = bool(np.isfinite(eps).all()) if backend == "numpy" else bool(eps.isfinite().all())
    if not finite:
        raise ValueError(f"{call} returned non-finite values ({what}) on its first call; check the model and x.")


# ======================================================================================== resumable output file
def _merge(ranges):
    out = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def _covered(ranges, lo, hi) -> bool:
    return any(a <= lo and hi <= b for a, b in ranges)


class _OutFile:
    """Samples in a .npy file (memory-mapped, written batch by batch) plus ``<path>.json`` recording which
    sample ranges are complete and the arguments that produced them."""

    def __init__(self, path, meta: dict, np_dtype, full_shape: tuple):
        path = os.fspath(path)
        if not path.endswith(".npy"):
            raise ValueError(f"out must be a path ending in .npy (written in place batch by batch, with a "
                             f"'{os.path.basename(path)}.json' progress file beside it); got {path!r}.")
        self.path, self.json_path, self.meta = path, path + ".json", meta
        have_npy, have_json = os.path.exists(path), os.path.exists(self.json_path)
        if have_npy and have_json:
            with open(self.json_path) as f:
                saved = json.load(f)
            old = saved.get("meta", {})
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            if diff:
                show = "; ".join(f"{k}: file has {old.get(k)!r}, this call has {meta.get(k)!r}" for k in diff)
                if "table" in diff:
                    show += (" — 'table' fingerprints the coefficients: schedule, trajectory, method, gamma, eta, "
                             "data_range, clip and clip_sigma_pixel")
                raise ValueError(
                    f"out={path!r} holds samples from different arguments ({show}). Rerun with the original "
                    "arguments to resume, or pass another out path (or delete both files) to start afresh."
                )
            self.mm = np.lib.format.open_memmap(path, mode="r+")
            if self.mm.shape != full_shape or self.mm.dtype != np_dtype:
                raise ValueError(f"out={path!r} has shape {self.mm.shape} and dtype {self.mm.dtype}; expected "
                                 f"{full_shape} and {np.dtype(np_dtype)}. Delete it or pass another out path.")
            self.done = _merge(saved.get("done", []))
        elif have_npy or have_json:
            which = path if have_npy else self.json_path
            raise ValueError(
                f"out={path!r}: found {which!r} without its partner ({'.json progress file' if have_npy else '.npy'}"
                "), so it was not written by an interrupted sample() run. Delete it or pass another out path."
            )
        else:
            self.mm = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype, shape=full_shape)
            self.done = []
            self._save()

    def _save(self):
        tmp = self.json_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"meta": self.meta, "done": self.done}, f)
        os.replace(tmp, self.json_path)

    def write(self, lo: int, hi: int, values: np.ndarray):
        self.mm[lo:hi] = values
        self.mm.flush()
        self.done = _merge(self.done + [[lo, hi]])
        self._save()

    def result(self) -> np.ndarray:
        out = np.array(self.mm)
        del self.mm
        return out


def _sha(arr) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


# ======================================================================================== the loop
def sample(
    eps_model,
    schedule: Schedule,
    trajectory,
    method: str,
    num_samples: int,
    shape,
    gamma=None,
    eta: float = 0.0,
    data_range=(-1.0, 1.0),
    clip: bool = True,
    clip_x0=None,
    clip_sigma_pixel: float | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    backend: str = "numpy",
    device=None,
    dtype=None,
    progress: bool | None = None,
    return_trajectory: bool = False,
    x_T=None,
    out=None,
    first_index: int = 0,
    *,
    one_minus_gamma=None,
    residual=None,
    ddim_eps: str = "raw",
    noise: str = "host",
    cov_report: dict | None = None,
):
    """Draw ``num_samples`` samples of ``shape`` by ancestral sampling along ``trajectory`` (P §4, mean of eq. 6 with
    σ² from Theorem 1 or a baseline): x_{τ_K} ~ N(0, I), then x_s = μ(x_t, ε̂_t(x_t)) + √σ²_{s|t} z for k = K..1.

    * ``eps_model(x, n) -> ε̂``: x of shape (B, *shape), n a Python int; numpy in, numpy out (``backend='numpy'``,
      float64) or torch in, torch out (``backend='torch'``, on ``device``, ``dtype`` torch.float32 by default or
      torch.float64). Runs under ``torch.no_grad()``.
    * ``method``, ``gamma``, ``eta``, ``data_range``, ``clip``, ``clip_sigma_pixel``, ``one_minus_gamma``,
      ``residual``: as in :func:`coefficient_table` (e.g. ``method='residual-ddpm', gamma=estimate`` takes R from a
      :class:`~analytic_dpm.gamma.GammaEstimate`).
    * ``noise``: with backend='torch', 'host' (default) draws every sample's noise from the numpy streams of
      :class:`NoiseStream` (the same numbers as backend='numpy') and copies it to the device each step; 'device'
      draws it with torch generators on the device (:class:`DeviceNoiseStream`), with no host work or copy per
      step; still the same samples for any batch size on a given device type, but other numbers than 'host'.
    * ``ddim_eps``: with ``clip_x0=True`` and a DDIM-family method, 'raw' (default, the official code) keeps the
      network's ε̂ in the mean, 'consistent' re-derives it from the clamped x̂_0 (diffusers'
      ``use_clipped_model_output=True``; see
      :func:`coefficient_table`).
    * ``clip_x0=True`` clamps x̂_0 to ``data_range`` at every step, as the official code does for images. The default
      (None) does not clamp, because toy data are unbounded; pass ``clip_x0=True`` for images in [−1, 1].
    * Randomness: sample ``first_index + i`` takes x_{τ_K} and its noise from a stream fixed by (seed, index), so the
      result is the same for every ``batch_size`` and rows can be split over processes with ``first_index``.
      ``x_T`` (shape (num_samples, *shape)) replaces the start; the noise stays the same.
    * ``out='samples.npy'``: write each finished batch into that file (plus a ``.json`` progress file). Rerunning
      with the same arguments skips finished samples and returns the same array bit for bit; other arguments raise
      ValueError. The model is not fingerprinted: resuming with another model is the caller's mistake.
    * ``progress``: a tqdm bar over steps × batches; None shows it only on a terminal.
    * Per-dimension covariance (``method`` in :data:`~analytic_dpm.covariance.COVARIANCE_METHODS`: 'sn-ddpm',
      'sn-ddim', 'npr-ddpm', 'npr-ddim'): ``eps_model`` must carry the matching second head
      (``eps_model.eps_and_head(x, n) -> (ε̂, head)``, e.g. :class:`~analytic_dpm.models.heads.HeadedNet` wrapped by
      TorchEpsModel); σ²_i(x_t) = λ² + c²·clip(Cov_x0,i(x_t), 0, r²) per dimension (r² only when ``clip``), and the
      pixel clip applies elementwise. ``cov_report``: pass a dict to receive, per transition, the fractions of
      elements whose Cov_x0 was clipped below 0 ('cov_low_fraction') and above r² ('cov_high_fraction') and whose σ²
      the pixel clip lowered ('pixel_fraction'), as arrays of shape (K,) (entry k−1 for (τ_{k−1}, τ_k)).

    Returns an array of shape (num_samples, *shape): numpy float64, or for ``backend='torch'`` a CPU tensor of
    ``dtype`` (finished batches leave the device). With ``return_trajectory=True`` returns (samples, states) where
    ``states[k]`` holds x_{τ_k}, k = 0..K, shape (K + 1, num_samples, *shape), on the same backend.
    """
    # ---------------------------------------------------------------- validate everything once
    if not callable(eps_model):
        raise TypeError(f"eps_model must be callable as eps_model(x, n) -> eps_hat; got {type(eps_model).__name__}.")
    if method in COVARIANCE_METHODS:
        check_headed_model(eps_model, method)
    if cov_report is not None and not isinstance(cov_report, dict):
        raise TypeError(f"cov_report must be a dict to fill (or None); got {type(cov_report).__name__}.")
    table = coefficient_table(schedule, trajectory, method, gamma=gamma, eta=eta, data_range=data_range, clip=clip,
                              clip_sigma_pixel=clip_sigma_pixel, one_minus_gamma=one_minus_gamma, residual=residual,
                              ddim_eps=ddim_eps)
    clamp = x0_clamp_range(clip_x0, table.data_range)
    num_samples = as_int("num_samples", num_samples, minimum=1, fix="Ask for at least one sample.")
    shape = check_sample_shape(shape)
    seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer seed.")
    first_index = as_int("first_index", first_index, minimum=0,
                         fix="first_index is the global index of the first sample (0 unless the run is sharded).")
    if batch_size is None:
        batch_size = num_samples
    batch_size = as_int("batch_size", batch_size, minimum=1, fix="Pass a positive batch size, or None for one batch.")
    choice("backend", backend, BACKENDS)
    choice("noise", noise, NOISE_SOURCES)
    if noise == "device" and backend != "torch":
        raise ValueError("noise='device' draws the noise with torch generators on the device: it needs "
                         "backend='torch'. Use noise='host' with backend='numpy'.")
    if noise == "device" and x_T is not None:
        raise ValueError("x_T replaces the start, which noise='device' draws on the device; pass noise='host' to "
                         "give x_T.")
    for nm, v in (("progress", progress), ("return_trajectory", return_trajectory)):
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{nm} must be True or False{' or None' if nm == 'progress' else ''}; got {v!r}.")
    if backend == "numpy":
        if device is not None:
            raise ValueError(f"device applies to backend='torch' only; got device={device!r} with backend='numpy'.")
        try:
            is_f64 = dtype is None or np.dtype(dtype) == np.float64
        except TypeError:
            is_f64 = False
        if not is_f64:
            raise ValueError(f"backend='numpy' computes in float64 only; got dtype={dtype!r}. Leave dtype at None, "
                             "or use backend='torch' with dtype=torch.float32.")
        torch = None
        np_dtype = np.dtype(np.float64)
    else:
        torch, device, dtype = _torch_setup(device, dtype)
        np_dtype = np.dtype(np.float32 if dtype == torch.float32 else np.float64)
    full_shape = (num_samples, *shape)
    if x_T is not None:
        if _is_torch(x_T):
            x_T = x_T.detach().cpu().numpy()
        x_T = np.asarray(x_T, dtype=np.float64)
        if x_T.shape != full_shape:
            raise ValueError(f"x_T must have shape (num_samples, *shape) = {full_shape}; got {x_T.shape}.")
        if not np.isfinite(x_T).all():
            raise ValueError("x_T must be finite; it holds NaN or inf values.")
    if return_trajectory and out is not None:
        raise ValueError("return_trajectory=True cannot be combined with out=...: the file holds final samples only. "
                         "Drop one of the two.")

    K = table.K
    timesteps = [int(v) for v in table.t]
    batches = [(lo, min(lo + batch_size, num_samples)) for lo in range(0, num_samples, batch_size)]
    store = None
    if out is not None:
        meta = {
            "format": _FILE_FORMAT, "table": table.fingerprint(), "method": method, "num_samples": num_samples,
            "shape": list(shape), "seed": seed, "first_index": first_index, "noise_chunk": NOISE_CHUNK,
            "clip_x0": clamp is not None, "clamp_range": None if clamp is None else list(clamp),
            "backend": backend, "dtype": str(np_dtype), "x_T": None if x_T is None else _sha(x_T),
        }
        if noise == "device":  # only then: files written with host noise keep their keys
            meta["noise"] = f"device:{torch.device(device).type}"
        store = _OutFile(out, meta, np_dtype, full_shape)
        samples = None
        todo = [b for b in batches if not _covered(store.done, *b)]
    else:
        samples = np.empty(full_shape, dtype=np_dtype)
        todo = batches
    states = np.empty((K + 1, *full_shape), dtype=np_dtype) if return_trajectory else None

    if backend == "numpy":
        def to_backend(a, copy):
            return np.array(a, dtype=np.float64, copy=True) if copy else a

        def to_numpy(x):
            return np.asarray(x, dtype=np.float64)
    else:
        def to_backend(a, copy):
            return torch.from_numpy(a).to(device=device, dtype=dtype, copy=copy)

        def to_numpy(x):
            return x.detach().to("cpu").numpy().astype(np_dtype, copy=False)

    # ---------------------------------------------------------------- the loop
    checked = False
    headed = table.head_kind is not None
    counts = {key: np.zeros(K, dtype=np.int64) for key in ("cov_low", "cov_high", "pixel", "elements")} if headed \
        else None
    bar = tqdm(total=len(todo) * K, disable=(None if progress is None else not progress), unit="step",
               desc=f"sampling {method}")
    grad_off = torch.no_grad() if torch is not None else _nullcontext()
    try:
        with grad_off:
            for lo, hi in todo:
                on_device = noise == "device"
                stream = (DeviceNoiseStream(seed, first_index + lo, first_index + hi, shape, device, dtype)
                          if on_device else NoiseStream(seed, first_index + lo, first_index + hi, shape))
                start = stream.draw()  # always drawn, so the noise below is the same with or without x_T
                x = start.clone() if on_device else to_backend(start if x_T is None else x_T[lo:hi], copy=True)
                if states is not None:
                    states[K, lo:hi] = to_numpy(x)
                for i in range(K - 1, -1, -1):
                    if headed:
                        eps, head = eps_model.eps_and_head(x, timesteps[i])
                    else:
                        eps, head = eps_model(x, timesteps[i]), None
                    if not checked:
                        _check_eps_output(eps, x, backend, timesteps[i])
                        if headed:
                            _check_eps_output(head, x, backend, timesteps[i], what="the head output")
                        checked = True
                    if table.needs_noise(i):
                        z = stream.draw() if on_device else to_backend(stream.draw(), copy=False)
                    else:
                        z = None
                    _, x = _step_with_x0(table, i, x, eps, z, clamp, head, counts)
                    if states is not None:
                        states[i, lo:hi] = to_numpy(x)
                    bar.update(1)
                result = to_numpy(x)
                if store is not None:
                    store.write(lo, hi, result)
                else:
                    samples[lo:hi] = result
    finally:
        bar.close()
    if store is not None:
        samples = store.result()
    if cov_report is not None and counts is not None:
        el = np.maximum(counts["elements"], 1)
        cov_report.update({f"{key}_fraction": counts[key] / el for key in ("cov_low", "cov_high", "pixel")})
        cov_report.update({"method": method, "trajectory": table.trajectory.copy(), "elements": counts["elements"]})
    if backend == "torch":
        samples = torch.from_numpy(samples)
        if states is not None:
            states = torch.from_numpy(states)
    return (samples, states) if return_trajectory else samples


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


__all__ = [
    "CoefficientTable", "coefficient_table", "predict_x0", "reverse_step", "reverse_step_with_x0", "sample",
    "NoiseStream", "DeviceNoiseStream", "NOISE_CHUNK", "NOISE_SOURCES", "BACKENDS", "x0_clamp_range",
    "check_sample_shape", "torch_device_dtype", "DDIM_EPS",
]
