"""The variational bound on 8-bit images in bits/dim, with the discretized Gaussian decoder (P eq. 4, §6.1; facts
file §4.4, §4.5), and the per-transition cost matrix F[s, t] of the handcrafted baselines' optimal trajectory.

Images are float arrays in [−1, 1] obtained from 8-bit integers u ∈ {0..255} as x = u/127.5 − 1, shape (M, *shape)
with d = prod(shape) (for example (M, C, H, W)). On a trajectory 0 = τ_0 < τ_1 < … < τ_K the bound of one image is,
in nats,

    L = KL(q(x_{τ_K}|x_0) ‖ N(0, I))                                             prior, analytic
      + Σ_{k>=2} KL(q(x_{τ_{k−1}}|x_{τ_k}, x_0) ‖ p(x_{τ_{k−1}}|x_{τ_k}))       transitions (s, t), s >= 1
      − log p(x_0|x_{τ_1})                                                         decoder

and bits/dim = nats/(d ln 2). Conventions of the official evaluation (facts file §4.5):

* each transition term draws its own x_t = √ᾱ_t x_0 + √β̄_t ε (one Monte Carlo sample per term and image); here ε
  depends only on (seed, image index, t), so a result does not depend on the batch size, on the other timesteps of
  the trajectory, or on the method — and the cost matrix F of :func:`baseline_cost_matrix` sees the same draws;
* KL(N(μ̃_{s|t}, λ² I) ‖ N(μ_p, σ² I)) is analytic, with μ_p the method's mean at the clamped x̂_0 (facts §3.3) and
  σ² from :func:`~analytic_dpm.variance.reverse_variances` (Theorem 2's clip for the analytic methods; never the
  sampling-only pixel clip of σ_2);
* the decoder is the Gaussian N(clamp(x̂_0(x_{τ_1})), v) discretized to the 256 bins [x − 1/255, x + 1/255], the
  edge bins open to ±∞; v = β̃_2 = β_2 β̄_1/β̄_2 when τ_1 = 1 and β̄_{τ_1} otherwise (:func:`decoder_variance`),
  for every method.

Only per-image sums leave the device: with r = x_0 − clamp(x̂_0) and δ = ε − ε̂ the mean difference of a transition
is μ̃ − μ_p = a·r + e·δ (DDPM family: a = coef_x0 of μ̃, e = 0; DDIM family: a = √ᾱ_s, e = √(β̄_s − λ²)), so the
three sums ‖r‖², ⟨r, δ⟩, ‖δ‖² per image and timestep determine every method's KL, which is then evaluated in float64
on the host. Where x̂_0 is not clamped, r = √(β̄_t/ᾱ_t)(ε̂ − ε) is formed from the noise, which keeps its digits at
small t.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_ndtr as _np_log_ndtr
from tqdm.auto import tqdm

from ._validate import _show, as_float, as_int, choice, check_data_range
from .likelihood import gaussian_kl, prior_kl_per_dim
from .posterior import family_of, posterior_coefficients, residual_var
from .schedules import Schedule
from .trajectories import validate_trajectory
from .posterior import gap as _gap
from .covariance import (COVARIANCE_METHODS, base_method, check_headed_model, cov_scale, cov_upper, cov_x0,
                         head_kind_of)
from .variance import (ALL_METHODS, RESIDUAL_METHODS, ReverseVariances, handcrafted_sigma_sq, reverse_variances,
                       theorem2_bounds)

#: Bin width of 8-bit data scaled to [−1, 1]: neighbouring values u/127.5 − 1 are 2/255 apart.
BIN_WIDTH = 2.0 / 255.0
#: The official code's edge test: x < −EDGE is the lowest bin (open to −∞), x > EDGE the highest (open to +∞).
EDGE = 0.999
#: The official floor on bin probabilities.
MIN_PROB = 1e-12
CDFS = ("exact", "tanh")
#: Images per random stream: image i at timestep t uses stream (seed, t, ⌊i/NOISE_CHUNK⌋), row i mod NOISE_CHUNK.
#: Changing it changes every draw, so it is a fixed constant of the format.
NOISE_CHUNK = 64
_NOISE_TAG = 0x4E4C4C  # "NLL": keeps these streams apart from the sampler's and Γ's
_LN2 = math.log(2.0)


# ======================================================================================== backend helpers
def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _log1mexp(u, xp):
    """log(1 − e^u) for u <= 0 (Mächler's two branches; −inf at u = 0)."""
    if xp is np:
        u = np.asarray(u, dtype=np.float64)
        out = np.empty_like(u)
        near = u > -_LN2
        with np.errstate(divide="ignore"):
            out[near] = np.log(-np.expm1(u[near]))
        far = ~near
        out[far] = np.log1p(-np.exp(u[far]))
        return out
    return xp.where(u > -_LN2, xp.log(-xp.expm1(u)), xp.log1p(-xp.exp(xp.clamp(u, max=0.0))))


# ======================================================================================== decoder
def discretized_gaussian_log_likelihood(x, mean, var, bin_width: float = BIN_WIDTH, cdf: str = "exact",
                                        min_prob: float = MIN_PROB):
    """Per-element log P(x) of data on the 8-bit grid in [−1, 1] under N(mean, var) discretized to bins
    [x − w/2, x + w/2], w = ``bin_width`` (P §6.1; facts file §4.5), elementwise and broadcast:

        log P = log(Φ(b) − Φ(a)),  a = (x − w/2 − mean)/√var,  b = (x + w/2 − mean)/√var,

    with the edge bins open to ±∞: x < −0.999 gives log Φ(b), x > 0.999 gives log(1 − Φ(a)). Probabilities are
    floored at ``min_prob`` (1e-12, as the official code does), so the result lies in [log min_prob, 0].

    ``cdf="exact"``: Φ through log_ndtr and log(1 − e^u) so that tails and narrow bins keep their digits (the bin is
    reflected to the left half-line first, Φ(b) − Φ(a) = Φ(−a) − Φ(−b)); the 256 probabilities of any Gaussian sum
    to 1. ``cdf="tanh"``: the official code's approximation Φ(z) ≈ ½(1 + tanh(√(2/π)(z + 0.044715 z³))), to
    reproduce its numbers (error up to about 2e-4 in Φ).

    ``x``, ``mean``: numpy arrays, or torch tensors (computed in their dtype on their device; pass float64 for full
    accuracy). ``var`` > 0: a number or an array/tensor broadcastable to them. Returns an array of the broadcast shape.
    """
    choice("cdf", cdf, CDFS)
    w = as_float("bin_width", bin_width)
    if not 0.0 < w <= 2.0:
        raise ValueError(f"bin_width must lie in (0, 2] (2/255 for 8-bit data in [-1, 1]); got {w}.")
    min_prob = as_float("min_prob", min_prob)
    if not 0.0 <= min_prob < 1.0:
        raise ValueError(f"min_prob must lie in [0, 1) (the official floor is 1e-12; 0 disables it); got {min_prob}.")
    torch_in = [_is_torch(v) for v in (x, mean)]
    if any(torch_in) and not all(torch_in):
        raise TypeError("x and mean must both be numpy arrays or both torch tensors; got "
                        f"{type(x).__name__} and {type(mean).__name__}.")
    if all(torch_in):
        import torch as xp

        if not (x.is_floating_point() and mean.is_floating_point()):
            raise TypeError(f"x and mean must be floating-point tensors; got {x.dtype} and {mean.dtype}.")
        dtype = xp.promote_types(x.dtype, mean.dtype)
        x, mean = x.to(dtype), mean.to(dtype)
        if _is_torch(var):
            var = var.to(device=x.device, dtype=dtype)
            bad = bool((~(var > 0) | ~xp.isfinite(var)).any())
        else:
            v = np.asarray(var, dtype=np.float64)
            bad = bool(np.any(~(v > 0)) or not np.all(np.isfinite(v)))
            var = xp.as_tensor(v, dtype=dtype, device=x.device)
        log_ndtr = xp.special.log_ndtr
    else:
        xp = np
        x = np.asarray(x, dtype=np.float64)
        mean = np.asarray(mean, dtype=np.float64)
        var = np.asarray(var, dtype=np.float64)
        bad = bool(np.any(~(var > 0)) or not np.all(np.isfinite(var)))
        log_ndtr = _np_log_ndtr
    if bad:
        raise ValueError(f"var must be finite and > 0 everywhere (a Gaussian variance); got {_show(_host(var))}.")
    half = 0.5 * w
    inv_sd = 1.0 / xp.sqrt(var)
    centered = x - mean
    upper = (centered + half) * inv_sd  # b
    lower = (centered - half) * inv_sd  # a
    floor = -math.inf if min_prob == 0.0 else math.log(min_prob)
    if cdf == "exact":
        # reflect the bin so that its centre is <= 0 (Φ(b) − Φ(a) = Φ(−a) − Φ(−b)), where Φ keeps its relative
        # precision; then P = Φ(hi) − Φ(lo) = Φ(hi)(1 − Φ(lo)/Φ(hi)) with two log_ndtr calls
        flip = (upper + lower) > 0
        hi_z = xp.where(flip, -lower, upper)
        lo_z = xp.where(flip, -upper, lower)
        l_hi = log_ndtr(hi_z)
        l_lo = log_ndtr(lo_z)
        out = l_hi + _log1mexp(l_lo - l_hi, xp)
        # edge bins: lowest P = Φ(b), highest P = Φ(−a); each is Φ(hi) on one side of the reflection and
        # 1 − Φ(lo) = exp(log1mexp(log Φ(lo))) on the other
        left = x < -EDGE
        if xp is np:  # only the edge pixels (numpy: masked, to save transcendental calls on the CPU)
            left = np.broadcast_to(left, out.shape)
            edge = left | np.broadcast_to(x > EDGE, out.shape)
            if edge.any():
                out[edge] = np.where(left[edge] != flip[edge], l_hi[edge], _log1mexp(l_lo[edge], np))
            return np.maximum(out, floor)
        edge = xp.where(left != flip, l_hi, _log1mexp(l_lo, xp))
        out = xp.where(left | (x > EDGE), edge, out)
        return xp.maximum(out, xp.full_like(out, floor))

    # the official approximation, step for step
    c = math.sqrt(2.0 / math.pi)

    def approx_cdf(z):
        return 0.5 * (1.0 + xp.tanh(c * (z + 0.044715 * z ** 3)))

    if xp is np:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            cdf_plus, cdf_min = approx_cdf(upper), approx_cdf(lower)
            log_cdf_plus = np.log(np.maximum(cdf_plus, min_prob))
            log_one_minus = np.log(np.maximum(1.0 - cdf_min, min_prob))
            log_delta = np.log(np.maximum(cdf_plus - cdf_min, min_prob))
    else:
        cdf_plus, cdf_min = approx_cdf(upper), approx_cdf(lower)
        log_cdf_plus = xp.log(xp.clamp(cdf_plus, min=min_prob))
        log_one_minus = xp.log(xp.clamp(1.0 - cdf_min, min=min_prob))
        log_delta = xp.log(xp.clamp(cdf_plus - cdf_min, min=min_prob))
    return xp.where(x < -EDGE, log_cdf_plus, xp.where(x > EDGE, log_one_minus, log_delta))


def _host(a):
    return a.detach().cpu().numpy() if _is_torch(a) else np.asarray(a)


def decoder_variance(schedule: Schedule, t: int) -> float:
    """The decoder variance of p(x_0 | x_t) used by the official evaluation for every method (facts §4.4, §4.5):
    β̃_2 = β_2 β̄_1/β̄_2 when t = 1, else β̄_t (the "large" variance of a jump from t straight to 0).
    With N = 1 there is no β̃_2 and t = 1 gets β̄_1 = β_1."""
    _check_schedule(schedule)
    t = as_int("t", t, minimum=1, fix=f"t is the timestep τ_1 the decoder starts from, 1..N = 1..{schedule.N}.")
    if t > schedule.N:
        raise ValueError(f"t must be a timestep in 1..N = 1..{schedule.N}; got {t}.")
    if t == 1 and schedule.N >= 2:
        return float(schedule.skip_beta_tilde(1, 2))
    return float(schedule.beta_bar[t])


# ======================================================================================== argument checks
def _check_schedule(schedule) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an analytic_dpm.Schedule; got {type(schedule).__name__}. "
                        "Build one with Schedule.linear(N) or Schedule.cosine(N).")
    return schedule


def _check_data_range(data_range):
    return check_data_range(data_range)


def _check_bool(name, v, allow_none=False):
    if allow_none and v is None:
        return v
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False{' or None' if allow_none else ''}; got {v!r}.")
    return bool(v)


def _check_decoder_var(decoder_var, schedule: Schedule, needed) -> np.ndarray:
    """Decoder variance per timestep as an (N+1,) float64 array, valid (finite, > 0) at ``needed``."""
    N = schedule.N
    needed = np.asarray(needed, dtype=np.int64)
    if decoder_var is None:
        out = np.full(N + 1, np.nan)
        for t in needed.tolist():
            out[t] = decoder_variance(schedule, t)
        return out
    try:
        arr = np.asarray(_host(decoder_var), dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"decoder_var must be None, a number or an (N+1,) array of variances; got {decoder_var!r}.") \
            from None
    if np.ndim(arr) == 0:
        out = np.full(N + 1, float(arr))
    elif arr.shape == (N + 1,):
        out = arr.copy()
    else:
        raise ValueError(
            f"decoder_var must be None (the official rule, decoder_variance(schedule, t)), a number, or an array of "
            f"shape (N+1,) = ({N + 1},) indexed by the decoder's timestep t; got shape {np.shape(arr)}."
        )
    vals = out[needed]
    bad = ~np.isfinite(vals) | ~(vals > 0)
    if bad.any():
        raise ValueError(f"decoder_var must be finite and > 0 at the decoder timesteps; got {_show(vals[bad])} at "
                         f"t = {_show(needed[bad])}.")
    return out


def _check_x0(x0, data_range, device):
    """(x0 as numpy float64 or a torch tensor, backend, model device, model dtype)."""
    if _is_torch(x0):
        import torch

        if not x0.is_floating_point():
            raise TypeError(f"x0 must be a floating-point tensor of images in [-1, 1] (x = u/127.5 − 1 from 8-bit u); "
                            f"got dtype {x0.dtype}.")
        x = x0.detach()
    elif isinstance(x0, np.ndarray):
        if not np.issubdtype(x0.dtype, np.floating):
            raise TypeError(f"x0 must be a floating-point array of images in [-1, 1] (x = u/127.5 − 1 from 8-bit u); "
                            f"got dtype {x0.dtype}.")
        x = x0
    else:
        raise TypeError(f"x0 must be a numpy array or a torch tensor of shape (M, *shape); got {type(x0).__name__}.")
    if x.ndim < 2 or x.shape[0] < 1 or any(int(v) < 1 for v in x.shape[1:]):
        raise ValueError(f"x0 must be a batch of images of shape (M, *shape), e.g. (M, C, H, W), with M >= 1; got "
                         f"shape {tuple(x.shape)}. Add a batch dimension for a single image (x0[None]).")
    lo_v, hi_v = (float(x.min()), float(x.max())) if not _is_torch(x) else (float(x.min().item()),
                                                                            float(x.max().item()))
    if not (math.isfinite(lo_v) and math.isfinite(hi_v)):
        raise ValueError("x0 must be finite; it holds NaN or inf values.")
    if data_range is not None:
        a, b = data_range
        tol = 1e-6 * (b - a)
        if lo_v < a - tol or hi_v > b + tol:
            raise ValueError(
                f"x0 must lie in data_range = {data_range} (8-bit images scale as x = u/127.5 − 1); got values in "
                f"[{lo_v:.6g}, {hi_v:.6g}]. Rescale the data, or pass data_range=None (and clamp_x0=False) for "
                "unbounded data."
            )
    if device is None and not _is_torch(x):
        return np.asarray(x, dtype=np.float64), "numpy", None, None
    import torch

    if device is None:
        dev = x.device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda:0'; got {device!r} ({exc}).") \
                from None
    is32 = (x.dtype == torch.float32) if _is_torch(x) else (x.dtype == np.float32)
    dtype = torch.float32 if is32 else torch.float64
    if not _is_torch(x):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x, "torch", dev, dtype


def _check_common(eps_model, schedule, seed, batch_size, first_index, progress, cdf, bin_width, clamp_x0, data_range):
    if not callable(eps_model):
        raise TypeError(f"eps_model must be callable as eps_model(x, n) -> eps_hat; got {type(eps_model).__name__}. "
                        "Wrap a network with an adapter from analytic_dpm.models.")
    _check_schedule(schedule)
    seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer seed.")
    batch_size = as_int("batch_size", batch_size, minimum=1, fix="It is the number of images per model call.")
    first_index = as_int("first_index", first_index, minimum=0,
                         fix="first_index is the global index of x0[0] (0 unless the data are sharded).")
    _check_bool("progress", progress, allow_none=True)
    choice("cdf", cdf, CDFS)
    w = as_float("bin_width", bin_width)
    if not 0.0 < w <= 2.0:
        raise ValueError(f"bin_width must lie in (0, 2] (2/255 for 8-bit data in [-1, 1]); got {w}.")
    clamp_x0 = _check_bool("clamp_x0", clamp_x0)
    data_range = _check_data_range(data_range)
    if clamp_x0 and data_range is None:
        raise ValueError("clamp_x0=True clamps x̂_0 to data_range, but data_range is None. Pass data_range=(-1.0, 1.0) "
                         "for images, or clamp_x0=False for unbounded data.")
    return seed, batch_size, first_index, w, clamp_x0, data_range


def _check_defined(rv: ReverseVariances, method: str):
    """The bound is undefined where a transition with s >= 1 has λ² = 0 (DDIM, η = 0) or σ² <= 0."""
    s, t = rv.s, rv.t
    inner = s >= 1
    bad_lam = inner & ~(rv.lambda_sq > 0.0)
    if bad_lam.any():
        i = int(np.flatnonzero(bad_lam)[0])
        raise ValueError(
            f"the variational bound is undefined for method {method!r} with eta = {rv.eta}: λ²_{{s|t}} = 0 on "
            f"{int(bad_lam.sum())} transition(s) with s >= 1 (first (s, t) = ({s[i]}, {t[i]})), so q(x_s|x_t, x_0) is "
            "a point mass and its KL to p(x_s|x_t) is +inf (P §6.1 reports NLL for the DDPM forward process only). Use "
            "a DDPM-family method ('ddpm-large', 'ddpm-small', 'analytic-ddpm') or eta > 0 (the generalised forward "
            "process q_λ with λ² = η²β̃)."
        )
    bad_sig = inner & ~(rv.sigma_sq > 0.0)
    if bad_sig.any():
        i = int(np.flatnonzero(bad_sig)[0])
        raise ValueError(
            f"σ² <= 0 on {int(bad_sig.sum())} transition(s) with s >= 1 for method {method!r} (first (s, t) = "
            f"({s[i]}, {t[i]}), σ² = {rv.sigma_sq[i]:.6g}): p(x_s|x_t) is not a density. Pass clip=True to clip σ² "
            "into Theorem 2's bounds, or improve the Γ estimate."
        )


def _mean_coefficients(schedule: Schedule, s, t, family: str, eta: float):
    """(a, e, λ²) with μ̃_{s|t} − μ_p = a·(x_0 − x̂_0) + e·(ε − ε̂) for the method's mean (facts §3.3)."""
    if family == "ddpm":
        c0, _, lam2 = posterior_coefficients(schedule, s, t, family, eta)
        return np.asarray(c0, dtype=np.float64), np.zeros(np.shape(c0)), np.asarray(lam2, dtype=np.float64)
    _, _, lam2 = posterior_coefficients(schedule, s, t, family, eta)
    a = np.sqrt(schedule.alpha_bar[np.asarray(s)])
    e = np.sqrt(residual_var(schedule, s, t, family, eta))
    return np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64), np.asarray(lam2, dtype=np.float64)


# ======================================================================================== the Monte Carlo pass
def _stream(seed: int, t: int, chunk: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_NOISE_TAG, t, chunk))))


def _noise(seed: int, t: int, lo: int, hi: int, shape: tuple) -> np.ndarray:
    """ε for global image indices lo..hi−1 at timestep t: whole chunks are drawn, so image i always gets the same ε."""
    c0, c1 = lo // NOISE_CHUNK, (hi - 1) // NOISE_CHUNK
    buf = np.empty(((c1 - c0 + 1) * NOISE_CHUNK, *shape))
    for j, c in enumerate(range(c0, c1 + 1)):
        _stream(seed, t, c).standard_normal(out=buf[j * NOISE_CHUNK:(j + 1) * NOISE_CHUNK])
    return buf[lo - c0 * NOISE_CHUNK:hi - c0 * NOISE_CHUNK]


class _Pass:
    """Runs the model on x_t = √ᾱ_t x_0 + √β̄_t ε for a batch and returns per-image float64 sums on the host.

    Work precision is float64 (numpy, or torch on the batch's device; on an MPS device, on the CPU); the model sees
    x_t in its own dtype.
    """

    def __init__(self, eps_model, schedule, x0, backend, device, dtype, clamp, seed, first_index, dec_var, bin_width,
                 cdf):
        self.eps_model, self.schedule, self.x0 = eps_model, schedule, x0
        self.backend, self.device, self.dtype = backend, device, dtype
        self.clamp, self.seed, self.first_index = clamp, seed, first_index
        self.dec_var, self.bin_width, self.cdf = dec_var, bin_width, cdf
        self.shape = tuple(int(v) for v in x0.shape[1:])
        self.checked = False
        if backend == "torch":
            import torch

            self.torch = torch
            self.work = torch.device("cpu") if device.type == "mps" else device

    def batch_x0(self, lo, hi):
        if self.backend == "numpy":
            return self.x0[lo:hi]
        return self.x0[lo:hi].to(device=self.work, dtype=self.torch.float64)

    def sq_norms(self, x0b) -> np.ndarray:
        if self.backend == "numpy":
            return np.einsum("ij,ij->i", x0b.reshape(x0b.shape[0], -1), x0b.reshape(x0b.shape[0], -1))
        f = x0b.flatten(1)
        return (f * f).sum(1).cpu().numpy()

    def _sum(self, u, v):
        if self.backend == "numpy":
            B = u.shape[0]
            return np.einsum("ij,ij->i", u.reshape(B, -1), v.reshape(B, -1))
        return (u.flatten(1) * v.flatten(1)).sum(1).cpu().numpy()

    def _check_eps(self, e, x, t):
        if self.backend == "numpy":
            if not isinstance(e, np.ndarray):
                raise TypeError(f"eps_model(x, {t}) must return a numpy array for numpy x (the same type as x); got "
                                f"{type(e).__name__}.")
        else:
            if not _is_torch(e):
                raise TypeError(f"eps_model(x, {t}) must return a torch.Tensor for tensor x (the same type as x); got "
                                f"{type(e).__name__}.")
        if tuple(e.shape) != tuple(x.shape):
            raise ValueError(
                f"eps_model(x, {t}) must return ε̂ with the shape of x, {tuple(x.shape)}; got {tuple(e.shape)}. A "
                "model that also outputs variances (2C channels) needs an adapter that returns only ε̂."
            )

    def _diagonal_kl(self, diag: _DiagSpec, t, r, delta, e_hat, head):
        """(B, S) per-image KL(N(μ̃, λ²I) ‖ N(μ_p, diag σ²)) summed over dimensions, σ²_i = λ² + c²·clip(Cov_x0,i, 0, up):
        ½ Σ_i [log1p(u_i) − u_i/(1 + u_i) + m_i²/σ²_i], u = c²·Cov/λ², m = a·r + e·δ (no cancellation for small u)."""
        cov = cov_x0(diag.kind, self.schedule, t, e_hat, head)
        if self.backend == "numpy":
            cov = np.clip(cov, 0.0, np.inf if diag.upper is None else diag.upper)
            flat = lambda v: v.reshape(v.shape[0], -1)  # noqa: E731
            log1p = np.log1p
        else:
            cov = cov.clamp(0.0, diag.upper)
            flat = lambda v: v.flatten(1)  # noqa: E731
            log1p = self.torch.log1p
        cov, r, delta = flat(cov), flat(r), flat(delta)
        out = np.empty((r.shape[0], diag.s.size))
        for j in range(diag.s.size):
            a, e, lam2, c2 = (float(v[j]) for v in (diag.a, diag.e, diag.lam2, diag.c2))
            m = a * r if e == 0.0 else a * r + e * delta
            u = (c2 / lam2) * cov
            var = lam2 * (1.0 + u)
            kl = 0.5 * (log1p(u) - u / (1.0 + u) + m * m / var)
            out[:, j] = kl.sum(1) if self.backend == "numpy" else kl.sum(1).cpu().numpy()
        return out

    def __call__(self, x0b, lo, hi, t, want_stats: bool, want_decoder: bool, diag=None):
        """dict of per-image float64 arrays: r00, r0e, ree (want_stats), dec (−log p(x_0|x_t), want_decoder) and,
        for a per-dimension covariance (``diag``, a :class:`_DiagSpec` for this t), dkl (B, S): the KL of each
        transition (s, t), s in ``diag.s``, summed over dimensions."""
        sch = self.schedule
        sa, sb = math.sqrt(sch.alpha_bar[t]), math.sqrt(sch.beta_bar[t])
        k = math.sqrt(sch.beta_bar[t] / sch.alpha_bar[t])
        eps_np = _noise(self.seed, t, self.first_index + lo, self.first_index + hi, self.shape)
        if self.backend == "numpy":
            eps = eps_np
            x_t = sa * x0b + sb * eps
            if diag is not None:
                e_hat, head = self.eps_model.eps_and_head(x_t, t)
            else:
                e_hat, head = self.eps_model(x_t, t), None
            if not self.checked:
                self._check_eps(e_hat, x_t, t)
                if head is not None:
                    self._check_eps(head, x_t, t)
                self.checked = True
            e_hat = np.asarray(e_hat, dtype=np.float64)
            if head is not None:
                head = np.asarray(head, dtype=np.float64)
        else:
            torch = self.torch
            eps = torch.from_numpy(eps_np).to(self.work)
            x_t = sa * x0b + sb * eps
            x_in = x_t.to(device=self.device, dtype=self.dtype)
            if diag is not None:
                e_hat, head = self.eps_model.eps_and_head(x_in, t)
            else:
                e_hat, head = self.eps_model(x_in, t), None
            if not self.checked:
                self._check_eps(e_hat, x_in, t)
                if head is not None:
                    self._check_eps(head, x_in, t)
                self.checked = True
            e_hat = e_hat.detach().to(device=self.work, dtype=torch.float64)
            if head is not None:
                head = head.detach().to(device=self.work, dtype=torch.float64)
        x0_hat = x_t / sa - k * e_hat
        delta = eps - e_hat
        r = -k * delta  # x_0 − x̂_0 exactly, without the cancellation of x_0 − x̂_0 at small t
        if self.clamp is not None:
            if self.backend == "numpy":
                x0c = np.clip(x0_hat, *self.clamp)
                r = np.where(x0c != x0_hat, x0b - x0c, r)
            else:
                x0c = x0_hat.clamp(*self.clamp)
                r = torch.where(x0c != x0_hat, x0b - x0c, r)
        else:
            x0c = x0_hat
        out = {}
        if want_stats:
            out["r00"], out["r0e"], out["ree"] = self._sum(r, r), self._sum(r, delta), self._sum(delta, delta)
        if diag is not None and diag.s.size:
            out["dkl"] = self._diagonal_kl(diag, t, r, delta, e_hat, head)
        if want_decoder:
            ll = discretized_gaussian_log_likelihood(x0b, x0c, float(self.dec_var[t]), bin_width=self.bin_width,
                                                     cdf=self.cdf)
            if self.backend == "numpy":
                out["dec"] = -ll.reshape(ll.shape[0], -1).sum(1)
            else:
                out["dec"] = -ll.flatten(1).sum(1).cpu().numpy()
        for name, v in out.items():
            if not np.all(np.isfinite(v)):
                if name == "dkl":
                    raise ValueError(
                        f"the per-dimension bound is not finite at timestep t = {t}: the head's variance makes σ² <= 0 "
                        "somewhere. Check the head (its output scale and kind) or pass clip=True."
                    )
                bad = np.flatnonzero(~np.isfinite(v)) + lo
                raise ValueError(
                    f"eps_model returned ε̂ that makes the bound non-finite ({name}) at timestep t = {t} for images "
                    f"{_show(bad)} (0-based indices into x0). Check the model, its input scaling and the timestep "
                    "convention (n in 1..N)."
                )
        return out


@dataclass(frozen=True)
class _DiagSpec:
    """What the per-dimension KL of the transitions (s, t), s in ``s``, needs at one t: the head kind, the mean
    coefficients a, e and λ² of :func:`_mean_coefficients`, c² (:func:`analytic_dpm.covariance.cov_scale`) and the
    upper clip of Cov_x0 (None: open)."""

    kind: str
    s: np.ndarray
    a: np.ndarray
    e: np.ndarray
    lam2: np.ndarray
    c2: np.ndarray
    upper: float | None


def _diag_spec(schedule, method, s, t, eta, upper) -> _DiagSpec:
    s = np.asarray(s, dtype=np.int64)
    tt = np.full(s.shape, t, dtype=np.int64)
    family = family_of(method)
    a, e, lam2 = _mean_coefficients(schedule, s, tt, family, eta)
    return _DiagSpec(kind=head_kind_of(method), s=s, a=np.atleast_1d(a), e=np.atleast_1d(e),
                     lam2=np.atleast_1d(lam2), c2=np.atleast_1d(cov_scale(schedule, s, tt, family, eta)), upper=upper)


def _run(eps_model, schedule, x0, backend, device, dtype, clamp, seed, first_index, dec_var, bin_width, cdf,
         batch_size, plan, progress, desc, on_result):
    """For every batch and every (t, want_stats, want_decoder) in ``plan``: on_result(lo, hi, i, t, out, x0_sq)."""
    runner = _Pass(eps_model, schedule, x0, backend, device, dtype, clamp, seed, first_index, dec_var, bin_width, cdf)
    M = int(x0.shape[0])
    batches = [(lo, min(lo + batch_size, M)) for lo in range(0, M, batch_size)]
    bar = tqdm(total=len(batches) * len(plan), disable=(None if progress is None else not progress), unit="call",
               desc=desc)
    grad_off = runner.torch.no_grad() if backend == "torch" else _nullcontext()
    try:
        with grad_off:
            for lo, hi in batches:
                x0b = runner.batch_x0(lo, hi)
                x0_sq = runner.sq_norms(x0b)
                for i, (t, want_stats, want_dec, *diag) in enumerate(plan):
                    on_result(lo, hi, i, t, runner(x0b, lo, hi, t, want_stats, want_dec, *diag), x0_sq)
                    bar.update(1)
    finally:
        bar.close()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ======================================================================================== bound along a trajectory
def _readonly(a):
    a = np.asarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class VariationalBound:
    """The variational bound of each image along one trajectory, in nats, with its per-term breakdown.

    ``terms_nats[:, k−1]`` belongs to transition (s, t) = (τ_{k−1}, τ_k), k = 1..K: column 0 is the decoder
    −log p(x_0|x_{τ_1}) (s = 0), columns 1..K−1 are the KL terms of the transitions with s >= 1. The prior term
    KL(q(x_{τ_K}|x_0) ‖ N(0, I)) is ``prior_nats``. Totals: ``total_nats`` (per image), ``nats`` (mean) and
    ``bits_per_dim`` = nats/(d ln 2), each with a standard error over images.
    """

    trajectory: np.ndarray  #: [0, τ_1, …, τ_K]
    method: str
    eta: float
    dim: int  #: d = prod(image shape)
    prior_nats: np.ndarray  #: (M,) KL(N(√ᾱ_{τ_K} x_0, β̄_{τ_K} I) ‖ N(0, I)), analytic
    terms_nats: np.ndarray  #: (M, K) decoder (column 0) and transition KLs (columns 1..K−1)
    variances: ReverseVariances = field(repr=False)  #: σ² per transition (entry 0, s = 0, is not used)
    decoder_var: float  #: the decoder's variance at τ_1
    config: dict = field(repr=False)  #: seed, clamp_x0, data_range, cdf, bin_width, first_index, backend

    @property
    def K(self) -> int:
        return int(self.trajectory.size - 1)

    @property
    def num_images(self) -> int:
        return int(self.prior_nats.shape[0])

    @property
    def s(self) -> np.ndarray:
        return self.trajectory[:-1]

    @property
    def t(self) -> np.ndarray:
        return self.trajectory[1:]

    @property
    def decoder_nats(self) -> np.ndarray:
        """(M,) −log p(x_0|x_{τ_1}) per image (discretized Gaussian, summed over the d pixels)."""
        return self.terms_nats[:, 0]

    @property
    def transition_nats(self) -> np.ndarray:
        """(M, K−1) KL terms of the transitions (τ_{k−1}, τ_k), k = 2..K."""
        return self.terms_nats[:, 1:]

    @property
    def total_nats(self) -> np.ndarray:
        """(M,) the bound of each image, prior + transitions + decoder, in nats."""
        return self.prior_nats + self.terms_nats.sum(axis=1)

    @property
    def bits_per_dim_per_image(self) -> np.ndarray:
        return self.total_nats / (self.dim * _LN2)

    @property
    def nats(self) -> float:
        """Mean bound over the images, nats per image."""
        return float(self.total_nats.mean())

    @property
    def nats_stderr(self) -> float:
        """Standard error of :attr:`nats` over images (NaN for one image)."""
        M = self.num_images
        return float(self.total_nats.std(ddof=1) / math.sqrt(M)) if M > 1 else math.nan

    @property
    def bits_per_dim(self) -> float:
        """Mean bound in bits/dim, nats/(d ln 2)."""
        return self.nats / (self.dim * _LN2)

    @property
    def bits_per_dim_stderr(self) -> float:
        return self.nats_stderr / (self.dim * _LN2)

    @property
    def mean_terms_nats(self) -> np.ndarray:
        """(K,) mean of each column of ``terms_nats``."""
        return self.terms_nats.mean(axis=0)

    def breakdown(self) -> list:
        """One dict per term — prior, each transition from t = τ_K down, decoder — with s, t, mean nats, its standard
        error and bits/dim."""
        M, scale = self.num_images, 1.0 / (self.dim * _LN2)

        def row(term, s, t, v):
            se = float(v.std(ddof=1) / math.sqrt(M)) if M > 1 else math.nan
            m = float(v.mean())
            return {"term": term, "s": s, "t": t, "nats": m, "nats_stderr": se, "bits_per_dim": m * scale,
                    "bits_per_dim_stderr": se * scale}

        rows = [row("prior", int(self.trajectory[-1]), None, self.prior_nats)]
        for k in range(self.K - 1, 0, -1):
            rows.append(row("transition", int(self.s[k]), int(self.t[k]), self.terms_nats[:, k]))
        rows.append(row("decoder", 0, int(self.t[0]), self.terms_nats[:, 0]))
        return rows

    def to_dict(self) -> dict:
        """JSON-friendly summary: totals, the per-term breakdown, σ², and the configuration."""
        return {
            "method": self.method, "eta": self.eta, "trajectory": self.trajectory.tolist(), "K": self.K,
            "dim": self.dim, "num_images": self.num_images, "nats": self.nats,
            "nats_stderr": _nan_none(self.nats_stderr),
            "bits_per_dim": self.bits_per_dim, "bits_per_dim_stderr": _nan_none(self.bits_per_dim_stderr),
            "decoder_var": self.decoder_var, "sigma_sq": self.variances.sigma_sq.tolist(),
            "sigma_sq_clipped": self.variances.clipped.tolist(),
            "terms": [{k: _nan_none(v) for k, v in r.items()} for r in self.breakdown()], "config": dict(self.config),
        }

    def __repr__(self) -> str:
        return (f"VariationalBound({self.method}, K={self.K}, M={self.num_images}, {self.bits_per_dim:.4f} ± "
                f"{self.bits_per_dim_stderr:.4f} bits/dim)")


def _nan_none(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass(frozen=True, eq=False)
class BoundStatistics:
    """The per-image sums one Monte Carlo pass along a trajectory leaves behind; every method's bound follows from
    them on the host (:meth:`bound`), so the DDPM-family methods can share one set of network calls.

    Column k−1 belongs to transition (τ_{k−1}, τ_k); the r-sums are NaN in column 0 (the decoder column).
    """

    schedule: Schedule = field(repr=False)
    trajectory: np.ndarray
    dim: int
    x0_sq: np.ndarray  #: (M,) ‖x_0‖²
    r00: np.ndarray  #: (M, K) ‖x_0 − x̂_0‖² (x̂_0 clamped when clamp_x0)
    r0e: np.ndarray  #: (M, K) ⟨x_0 − x̂_0, ε − ε̂⟩
    ree: np.ndarray  #: (M, K) ‖ε − ε̂‖²
    decoder_nats: np.ndarray  #: (M,) −log p(x_0|x_{τ_1})
    decoder_var: float
    data_range: tuple | None
    config: dict = field(repr=False)

    @property
    def num_images(self) -> int:
        return int(self.x0_sq.shape[0])

    def variances(self, method: str, *, gamma=None, eta: float = 0.0, clip: bool = True, one_minus_gamma=None,
                  residual=None) -> ReverseVariances:
        """σ² along the trajectory for ``method`` (reverse_variances with this pass's data_range), checked to give a
        defined bound."""
        rv = reverse_variances(self.schedule, self.trajectory, method, gamma=gamma, eta=eta,
                               data_range=self.data_range, clip=clip, one_minus_gamma=one_minus_gamma,
                               residual=residual)
        _check_defined(rv, method)
        return rv

    def bound(self, method: str, *, gamma=None, eta: float = 0.0, clip: bool = True, one_minus_gamma=None,
              residual=None) -> VariationalBound:
        """The :class:`VariationalBound` of ``method`` from these sums (no network calls); ``residual`` (or a
        GammaEstimate as ``gamma``) for the residual methods, ``one_minus_gamma`` as in reverse_variances."""
        rv = self.variances(method, gamma=gamma, eta=eta, clip=clip, one_minus_gamma=one_minus_gamma,
                            residual=residual)
        s, t = rv.s, rv.t
        M, K = self.num_images, rv.K
        terms = np.empty((M, K))
        terms[:, 0] = self.decoder_nats
        if K > 1:
            a, e, lam2 = _mean_coefficients(self.schedule, s[1:], t[1:], family_of(method), rv.eta)
            mds = a ** 2 * self.r00[:, 1:] + 2.0 * a * e * self.r0e[:, 1:] + e ** 2 * self.ree[:, 1:]
            terms[:, 1:] = gaussian_kl(mds, lam2, rv.sigma_sq[1:], self.dim)
        prior = self.dim * np.asarray(prior_kl_per_dim(self.schedule, int(self.trajectory[-1]), self.x0_sq / self.dim))
        return VariationalBound(
            trajectory=self.trajectory, method=method, eta=rv.eta, dim=self.dim, prior_nats=_readonly(prior),
            terms_nats=_readonly(terms), variances=rv, decoder_var=self.decoder_var,
            config={**self.config, "clip": bool(clip)},
        )


def collect_bound_statistics(eps_model, schedule: Schedule, trajectory, x0, *, data_range=(-1.0, 1.0),
                             clamp_x0: bool = True, seed: int = 0, batch_size: int = 128, decoder_var=None,
                             cdf: str = "exact", bin_width: float = BIN_WIDTH, first_index: int = 0, device=None,
                             progress: bool | None = None) -> BoundStatistics:
    """The Monte Carlo pass of :func:`variational_bound` without a method: K network calls per image.

    Returns :class:`BoundStatistics`; ``stats.bound(method, gamma=..., eta=..., clip=...)`` then gives any method's
    bound on the same draws. Arguments as in :func:`variational_bound`.
    """
    seed, batch_size, first_index, bin_width, clamp_x0, data_range = _check_common(
        eps_model, schedule, seed, batch_size, first_index, progress, cdf, bin_width, clamp_x0, data_range)
    traj = validate_trajectory(trajectory, schedule.N)
    x, backend, dev, dtype = _check_x0(x0, data_range, device)
    dec_var = _check_decoder_var(decoder_var, schedule, [int(traj[1])])
    return _collect(eps_model, schedule, traj, x, backend, dev, dtype, data_range, clamp_x0, seed, batch_size,
                    dec_var, cdf, bin_width, first_index, progress)


def _collect(eps_model, schedule, traj, x, backend, dev, dtype, data_range, clamp_x0, seed, batch_size, dec_var, cdf,
             bin_width, first_index, progress) -> BoundStatistics:
    M, K = int(x.shape[0]), int(traj.size - 1)
    dim = int(math.prod(int(v) for v in x.shape[1:]))
    r00, r0e, ree = (np.full((M, K), np.nan) for _ in range(3))
    dec = np.empty(M)
    x0_sq = np.empty(M)
    plan = [(int(traj[k]), k >= 2, k == 1) for k in range(1, K + 1)]

    def on_result(lo, hi, i, t, out, sq):
        x0_sq[lo:hi] = sq
        if i == 0:
            dec[lo:hi] = out["dec"]
        else:
            r00[lo:hi, i], r0e[lo:hi, i], ree[lo:hi, i] = out["r00"], out["r0e"], out["ree"]

    _run(eps_model, schedule, x, backend, dev, dtype, data_range if clamp_x0 else None, seed, first_index, dec_var,
         bin_width, cdf, batch_size, plan, progress, "variational bound", on_result)
    config = _run_config(seed, clamp_x0, data_range, cdf, bin_width, first_index, backend, dev, dtype)
    return BoundStatistics(
        schedule=schedule, trajectory=traj, dim=dim, x0_sq=_readonly(x0_sq), r00=_readonly(r00), r0e=_readonly(r0e),
        ree=_readonly(ree), decoder_nats=_readonly(dec), decoder_var=float(dec_var[traj[1]]), data_range=data_range,
        config=config,
    )


def _run_config(seed, clamp_x0, data_range, cdf, bin_width, first_index, backend, dev, dtype) -> dict:
    return {"seed": seed, "clamp_x0": clamp_x0, "data_range": None if data_range is None else list(data_range),
            "cdf": cdf, "bin_width": bin_width, "first_index": first_index, "noise_chunk": NOISE_CHUNK,
            "backend": backend, "device": None if dev is None else str(dev),
            "dtype": "float64" if dtype is None else str(dtype).replace("torch.", "")}


def _diagonal_bound(eps_model, schedule, traj, method, x, backend, dev, dtype, data_range, clamp_x0, seed, batch_size,
                    dec_var, cdf, bin_width, first_index, progress, eta, clip) -> VariationalBound:
    """The bound of a per-dimension covariance method (SN/NPR) along ``traj``: one head call per image and step; each
    transition's KL summed over dimensions with σ²_i(x_t) from the head (:mod:`analytic_dpm.covariance`)."""
    rv = reverse_variances(schedule, traj, base_method(method), eta=eta, data_range=data_range, clip=clip)
    _check_defined(rv, method)
    M, K = int(x.shape[0]), rv.K
    dim = int(math.prod(int(v) for v in x.shape[1:]))
    upper = cov_upper(data_range, clip)
    plan = [(int(traj[1]), False, True)]
    plan += [(int(rv.t[k]), False, False, _diag_spec(schedule, method, [int(rv.s[k])], int(rv.t[k]), rv.eta, upper))
             for k in range(1, K)]
    terms = np.empty((M, K))
    x0_sq = np.empty(M)

    def on_result(lo, hi, i, t, out, sq):
        x0_sq[lo:hi] = sq
        terms[lo:hi, i] = out["dec"] if i == 0 else out["dkl"][:, 0]

    _run(eps_model, schedule, x, backend, dev, dtype, data_range if clamp_x0 else None, seed, first_index, dec_var,
         bin_width, cdf, batch_size, plan, progress, f"variational bound {method}", on_result)
    prior = dim * np.asarray(prior_kl_per_dim(schedule, int(traj[-1]), x0_sq / dim))
    config = {**_run_config(seed, clamp_x0, data_range, cdf, bin_width, first_index, backend, dev, dtype),
              "clip": bool(clip), "cov_upper": upper}
    return VariationalBound(
        trajectory=traj, method=method, eta=rv.eta, dim=dim, prior_nats=_readonly(prior), terms_nats=_readonly(terms),
        variances=rv, decoder_var=float(dec_var[traj[1]]), config=config,
    )


def variational_bounds(eps_model, schedule: Schedule, trajectory, methods, x0, *, gamma=None, eta: float = 0.0,
                       data_range=(-1.0, 1.0), clip: bool = True, clamp_x0: bool = True, seed: int = 0,
                       batch_size: int = 128, decoder_var=None, cdf: str = "exact", bin_width: float = BIN_WIDTH,
                       first_index: int = 0, device=None, progress: bool | None = None, residual=None) -> dict:
    """:func:`variational_bound` for several methods on one set of network calls: {method: VariationalBound}.

    ``gamma`` serves the analytic methods (and, as a GammaEstimate, supplies R to the residual methods unless
    ``residual`` is given), and ``eta`` every method (so mix DDPM-family methods with η = 0 only;
    for other mixes use :func:`collect_bound_statistics` and ``stats.bound(...)``). Every method is validated before
    the first network call. The scalar methods share one pass; each per-dimension covariance method
    ('sn-ddpm', 'npr-ddpm', ...; ``eps_model`` with that head) takes a pass of its own.
    """
    if isinstance(methods, str):
        methods = [methods]
    methods = list(methods)
    if not methods:
        raise ValueError("methods must name at least one method, e.g. ['ddpm-large', 'ddpm-small', 'analytic-ddpm'].")
    seed, batch_size, first_index, bin_width, clamp_x0, data_range = _check_common(
        eps_model, schedule, seed, batch_size, first_index, progress, cdf, bin_width, clamp_x0, data_range)
    traj = validate_trajectory(trajectory, schedule.N)
    def stat_kw(m):
        if m in RESIDUAL_METHODS:
            return {"gamma": gamma if residual is None else None, "residual": residual}
        return {"gamma": gamma}

    for m in methods:
        choice("method", m, ALL_METHODS + COVARIANCE_METHODS)
        if m in COVARIANCE_METHODS:
            check_headed_model(eps_model, m)
            rv = reverse_variances(schedule, traj, base_method(m), eta=eta, data_range=data_range, clip=clip)
        else:
            rv = reverse_variances(schedule, traj, m, eta=eta, data_range=data_range, clip=clip, **stat_kw(m))
        _check_defined(rv, m)
    x, backend, dev, dtype = _check_x0(x0, data_range, device)
    dec_var = _check_decoder_var(decoder_var, schedule, [int(traj[1])])
    out = {}
    scalar = [m for m in methods if m not in COVARIANCE_METHODS]
    if scalar:
        stats = _collect(eps_model, schedule, traj, x, backend, dev, dtype, data_range, clamp_x0, seed, batch_size,
                         dec_var, cdf, bin_width, first_index, progress)
        out.update({m: stats.bound(m, eta=eta, clip=clip, **stat_kw(m)) for m in scalar})
    for m in methods:
        if m in COVARIANCE_METHODS:
            out[m] = _diagonal_bound(eps_model, schedule, traj, m, x, backend, dev, dtype, data_range, clamp_x0, seed,
                                     batch_size, dec_var, cdf, bin_width, first_index, progress, eta, clip)
    return {m: out[m] for m in methods}


def variational_bound(eps_model, schedule: Schedule, trajectory, method: str, x0, *, gamma=None, eta: float = 0.0,
                      data_range=(-1.0, 1.0), clip: bool = True, clamp_x0: bool = True, seed: int = 0,
                      batch_size: int = 128, decoder_var=None, cdf: str = "exact", bin_width: float = BIN_WIDTH,
                      first_index: int = 0, device=None, progress: bool | None = None,
                      residual=None) -> VariationalBound:
    """The variational bound L_vb (P eq. 4) of 8-bit images ``x0`` along ``trajectory`` for one method, in nats and
    bits/dim, with a per-term breakdown: L = prior KL + Σ_{s>=1} KL(q(x_s|x_t, x_0) ‖ p(x_s|x_t)) − log p(x_0|x_{τ_1}).

    * ``eps_model(x, n) -> ε̂``: numpy in, numpy out (``x0`` a numpy array, float64), or torch in, torch out (``x0`` a
      tensor or ``device`` given; the model gets x_t in float32 when the data are float32, else float64, on the data's
      device or ``device``). Runs under ``torch.no_grad()``. K model calls per image.
    * ``method``: 'ddpm-large', 'ddpm-small', 'analytic-ddpm' (needs ``gamma``), 'residual-ddpm' (needs ``residual``
      R = E‖ε − ε̂‖²/d, or a GammaEstimate as ``gamma``), 'sn-ddpm' / 'npr-ddpm' (per-dimension σ²_i(x_t) from the
      model's second head, :mod:`analytic_dpm.covariance`; each KL term summed over dimensions, Cov_x0 clipped to
      [0, r²] when ``clip``; ``variances`` of the result then holds the λ² of the shared mean), or the DDIM family
      with ``eta`` > 0
      (the bound of the generalised forward process with λ² = η²β̃); DDIM with η = 0 has λ² = 0 and an undefined
      bound: ValueError. σ² = reverse_variances(schedule, trajectory, method, gamma, eta, data_range, ``clip``):
      Theorem 2's clip for analytic variances, never the sampling-only pixel clip.
    * ``x0``: images of shape (M, *shape) in ``data_range`` (x = u/127.5 − 1 for 8-bit u). ``data_range=None`` with
      ``clamp_x0=False``: unbounded continuous data (toy checks); the decoder then still uses the 8-bit bins.
    * ``clamp_x0``: clamp x̂_0 to ``data_range`` in the means and the decoder (the official evaluation does).
    * ``decoder_var``: None (:func:`decoder_variance`: β̃_2 when τ_1 = 1, else β̄_{τ_1}), a number, or an (N+1,)
      array indexed by τ_1. ``cdf``: 'exact' or 'tanh' (the official approximation), see
      :func:`discretized_gaussian_log_likelihood`.
    * Randomness: image ``first_index + i`` at timestep t uses ε from a stream fixed by (seed, t, image), so the
      result does not depend on ``batch_size``, on the method, or on the other timesteps of the trajectory.
    * ``progress``: a tqdm bar over model calls; None shows it only on a terminal.

    Returns a :class:`VariationalBound` (``.bits_per_dim``, ``.total_nats``, ``.breakdown()``, ...).
    """
    choice("method", method, ALL_METHODS + COVARIANCE_METHODS)
    return variational_bounds(eps_model, schedule, trajectory, [method], x0, gamma=gamma, eta=eta,
                              data_range=data_range, clip=clip, clamp_x0=clamp_x0, seed=seed, batch_size=batch_size,
                              decoder_var=decoder_var, cdf=cdf, bin_width=bin_width, first_index=first_index,
                              device=device, progress=progress, residual=residual)[method]


# ======================================================================================== cost matrix F[s, t]
def _pair_variances(schedule: Schedule, s, t, method: str, factor_t, eta: float, data_range, clip: bool):
    """σ²_{s|t} for arrays of pairs, exactly as reverse_variances computes it on a trajectory (inputs already checked):
    λ² + g²·factor_t with factor_t = 1 − Γ_t (analytic, clipped by Theorem 2 when ``clip``) or R_t (residual)."""
    family = family_of(method)
    if method in ("analytic-ddpm", "analytic-ddim") or method in RESIDUAL_METHODS:
        lam2, ub11, ub12 = theorem2_bounds(schedule, s, t, family, eta, data_range)
        raw = lam2 + _gap(schedule, s, t, family, eta) ** 2 * factor_t
        return np.clip(raw, lam2, np.minimum(ub11, ub12)) if clip and method not in RESIDUAL_METHODS else raw
    return handcrafted_sigma_sq(schedule, s, t, method, eta)


@dataclass(frozen=True, eq=False)
class BaselineCostMatrix:
    """The per-transition bound terms F[s, t] estimated on data (facts file §4.4), in nats per image.

    F[0, t] = E −log p(x_0|x_t) (the decoder of a jump from t to 0), F[s, t] = E KL(q(x_s|x_t, x_0) ‖ p(x_s|x_t)) for
    1 <= s < t, +inf for s >= t and wherever s or t is off the ``timesteps`` grid; the prior KL at N is
    ``prior_nats``. The bound of a trajectory [0, τ_1, …, τ_K = N] is prior_nats + Σ_k F[τ_{k−1}, τ_k]
    (:meth:`path_nats`), the same number :func:`variational_bound` gives with the same seed and data. Feed ``F`` to
    ``optimal_trajectory_from_costs(F, K)`` (start = 0: τ_1 is chosen too) for the baselines' optimal trajectory.
    """

    F: np.ndarray  #: (N+1, N+1) nats per image
    F_stderr: np.ndarray  #: (N+1, N+1) Monte Carlo standard error of each entry (NaN where F is +inf)
    prior_nats: float  #: E KL(q(x_N|x_0) ‖ N(0, I)) in nats per image
    method: str
    eta: float
    timesteps: np.ndarray  #: the grid of t (always contains N)
    dim: int
    num_images: int
    rec: np.ndarray  #: (N+1,) E‖x_0 − clamp(x̂_0(x_t))‖² per image (NaN off the grid)
    decoder_var: np.ndarray  #: (N+1,) the decoder variance at each t (NaN off the grid)
    sigma_sq: np.ndarray = field(repr=False)  #: (N+1, N+1) σ²_{s|t} used (NaN where not a KL entry)
    config: dict = field(repr=False)
    _stats: dict = field(repr=False)

    @property
    def N(self) -> int:
        return int(self.F.shape[0] - 1)

    @property
    def F_bits_per_dim(self) -> np.ndarray:
        """F in bits/dim, F/(d ln 2)."""
        return self.F / (self.dim * _LN2)

    def path_nats(self, trajectory) -> float:
        """prior(τ_K) + Σ_k F[τ_{k−1}, τ_k], nats per image (+inf if the path leaves the grid)."""
        traj = validate_trajectory(trajectory, self.N)
        prior = self.dim * float(prior_kl_per_dim(self._stats["schedule"], int(traj[-1]),
                                                  self._stats["x0_sq_mean"] / self.dim))
        return prior + float(np.sum(self.F[traj[:-1], traj[1:]]))

    def path_bits_per_dim(self, trajectory) -> float:
        return self.path_nats(trajectory) / (self.dim * _LN2)

    def with_method(self, method: str, *, gamma=None, eta: float = 0.0, clip: bool = True, one_minus_gamma=None,
                    residual=None) -> "BaselineCostMatrix":
        """The same Monte Carlo statistics priced with another method's σ² (no network calls); ``residual`` (or a
        GammaEstimate as ``gamma``) for the residual methods."""
        st = self._stats
        if st.get("diagonal"):
            raise ValueError(
                f"with_method needs the scalar statistics of a scalar method's cost matrix; this one ({self.method!r}) "
                "holds per-dimension KL sums only. Build baseline_cost_matrix(..., method=...) for the other method."
            )
        return _assemble(st["schedule"], method, gamma, eta, clip, st["data_range"], self.timesteps, st, self.dim,
                         self.num_images, self.decoder_var, self.config,
                         dict(one_minus_gamma=one_minus_gamma, residual=residual))

    def __repr__(self) -> str:
        return (f"BaselineCostMatrix({self.method}, N={self.N}, {self.timesteps.size} timesteps, "
                f"M={self.num_images})")


def _check_grid(timesteps, N: int) -> np.ndarray:
    if timesteps is None:
        return np.arange(1, N + 1, dtype=np.int64)
    arr = np.atleast_1d(np.asarray(timesteps))
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"timesteps must be a non-empty 1-D array of integer timesteps in 1..N = 1..{N} (the grid of "
                         f"allowed τ's; N is always added); got {_show(arr)}. Pass None for all of them.")
    bad = (arr < 1) | (arr > N)
    if bad.any():
        raise ValueError(f"timesteps must lie in 1..N = 1..{N}; got {_show(arr[bad])}. (0 is the data; it is always a "
                         "node of the path.)")
    return np.unique(np.concatenate([arr.astype(np.int64), [N]]))


def _assemble(schedule, method, gamma, eta, clip, data_range, grid, st, dim, M, dec_var, config, stats_kw=None):
    choice("method", method, ALL_METHODS)
    N = schedule.N
    family = family_of(method)
    # reverse_variances on the whole grid validates method/eta/gamma once and gives the factor of g² it uses:
    # 1 − Γ_t (Γ clipped to [0, 1]) for the analytic methods, R_t for the residual ones
    rv = reverse_variances(schedule, np.concatenate([[0], grid]), method, gamma=gamma, eta=eta,
                           data_range=data_range, clip=clip, **(stats_kw or {}))
    _check_defined(rv, method)
    gamma_used = np.full(N + 1, np.nan)
    gamma_used[rv.t] = rv.residual if method in RESIDUAL_METHODS else rv.one_minus_gamma
    F = np.full((N + 1, N + 1), np.inf)
    F_se = np.full((N + 1, N + 1), np.nan)
    sig = np.full((N + 1, N + 1), np.nan)
    Mf = float(M)
    corr = Mf / (Mf - 1.0) if M > 1 else math.nan
    mean, second = st["mean"], st["second"]  # (N+1, 3), (N+1, 3, 3)
    F[0, grid] = st["dec_mean"][grid]
    F_se[0, grid] = np.sqrt(np.maximum(st["dec_second"][grid] - st["dec_mean"][grid] ** 2, 0.0) * corr / Mf)
    for t in grid.tolist():
        s = grid[grid < t]
        if s.size == 0:
            continue
        tt = np.full(s.shape, t, dtype=np.int64)
        sigma_sq = _pair_variances(schedule, s, tt, method, gamma_used[t], rv.eta, data_range, clip)
        bad = ~(sigma_sq > 0.0)
        if bad.any():
            raise ValueError(
                f"σ² <= 0 for method {method!r} at (s, t) = ({int(s[bad][0])}, {t}): p(x_s|x_t) is not a density. Pass "
                "clip=True to clip σ² into Theorem 2's bounds, or improve the Γ estimate."
            )
        a, e, lam2 = _mean_coefficients(schedule, s, tt, family, rv.eta)
        w = np.stack([a * a, 2.0 * a * e, e * e], axis=1)  # (S, 3)
        mds = w @ mean[t]
        F[s, t] = gaussian_kl(mds, lam2, sigma_sq, dim)
        cov = (second[t] - np.outer(mean[t], mean[t])) * corr
        var_mds = np.maximum(np.einsum("si,ij,sj->s", w, cov, w), 0.0)
        F_se[s, t] = np.sqrt(var_mds / Mf) / (2.0 * sigma_sq)
        sig[s, t] = sigma_sq
    prior = dim * float(prior_kl_per_dim(schedule, N, st["x0_sq_mean"] / dim))
    rec = np.full(N + 1, np.nan)
    rec[grid] = mean[grid, 0]
    return BaselineCostMatrix(
        F=_readonly(F), F_stderr=_readonly(F_se), prior_nats=prior, method=method, eta=rv.eta,
        timesteps=_readonly(grid.copy()), dim=dim, num_images=M, rec=_readonly(rec), decoder_var=dec_var,
        sigma_sq=_readonly(sig), config={**config, "clip": bool(clip)}, _stats=st,
    )


def baseline_cost_matrix(eps_model, schedule: Schedule, x0, method: str = "ddpm-large", *, gamma=None, eta: float = 0.0,
                         timesteps=None, data_range=(-1.0, 1.0), clip: bool = True, clamp_x0: bool = True,
                         seed: int = 0, batch_size: int = 128, decoder_var=None, cdf: str = "exact",
                         bin_width: float = BIN_WIDTH, first_index: int = 0, device=None,
                         progress: bool | None = None) -> BaselineCostMatrix:
    """The (N+1) × (N+1) cost matrix F[s, t] of the variational bound, estimated on the images ``x0`` (facts §4.4),
    in nats per image, for the optimal trajectory of a method with its own σ² (P §6: the baselines' OT).

    For every t on the grid (``timesteps``, default 1..N; N is always included) and every image: one x_t =
    √ᾱ_t x_0 + √β̄_t ε and one model call — |grid| × M calls in all. Then

    * F[0, t] = E −log p(x_0|x_t), the discretized Gaussian decoder with mean clamp(x̂_0(x_t)) and variance
      ``decoder_var`` (default :func:`decoder_variance`: β̃_2 at t = 1, β̄_t otherwise);
    * F[s, t] = E KL(q(x_s|x_t, x_0) ‖ p(x_s|x_t)) for s < t on the grid: ½[‖μ̃ − μ_p‖²/σ² + d(λ²/σ² − 1 −
      log(λ²/σ²))] with E‖μ̃ − μ_p‖² from the per-t averages (for the DDPM family c²·rec[t], rec[t] =
      E‖x_0 − clamp(x̂_0(x_t))‖²) and σ²_{s|t} of ``method`` (Theorem 2's clip for analytic ones when ``clip``);
    * +inf for s >= t and off the grid; the prior KL at N is ``prior_nats``.

    The noise is the one :func:`variational_bound` draws (fixed by seed, t and image), so for any trajectory on the
    grid ``result.path_nats(trajectory)`` equals ``variational_bound(...).nats`` up to rounding. ``with_method``
    reprices the same statistics for another method. Other arguments as in :func:`variational_bound`.

    Per-dimension covariance methods ('sn-ddpm', 'npr-ddpm', or the DDIM family with η > 0; ``eps_model`` carrying
    that head): σ²_i(x_t) depends on the image, so F[s, t] is the mean over images of the per-dimension KL summed
    over dimensions, computed on the device for every s < t of the grid from the one head call at t (|grid|²/2 × M
    element-wise passes: use a grid of ~100 timesteps, not all N); ``with_method`` is then unavailable, and
    ``sigma_sq`` holds λ² only.
    """
    choice("method", method, ALL_METHODS + COVARIANCE_METHODS)
    seed, batch_size, first_index, bin_width, clamp_x0, data_range = _check_common(
        eps_model, schedule, seed, batch_size, first_index, progress, cdf, bin_width, clamp_x0, data_range)
    N = schedule.N
    grid = _check_grid(timesteps, N)
    if method in COVARIANCE_METHODS:
        check_headed_model(eps_model, method)
        _check_defined(reverse_variances(schedule, np.concatenate([[0], grid]), base_method(method), eta=eta,
                                         data_range=data_range, clip=clip), method)
        for nm, v in (("gamma", gamma),):
            if v is not None:
                raise ValueError(f"{nm} does not apply to method {method!r}: its σ² comes from the model's head.")
        x, backend, dev, dtype = _check_x0(x0, data_range, device)
        dec_var = _check_decoder_var(decoder_var, schedule, grid)
        return _diagonal_cost_matrix(eps_model, schedule, method, grid, x, backend, dev, dtype, data_range, clamp_x0,
                                     seed, batch_size, dec_var, cdf, bin_width, first_index, progress, eta, clip)
    # validate the method before any network call
    _check_defined(reverse_variances(schedule, np.concatenate([[0], grid]), method, gamma=gamma, eta=eta,
                                     data_range=data_range, clip=clip), method)
    x, backend, dev, dtype = _check_x0(x0, data_range, device)
    dec_var = _check_decoder_var(decoder_var, schedule, grid)
    M = int(x.shape[0])
    dim = int(math.prod(int(v) for v in x.shape[1:]))
    n = grid.size
    s1 = np.zeros((n, 3))
    s2 = np.zeros((n, 3, 3))
    d1 = np.zeros(n)
    d2 = np.zeros(n)
    x0_sq_sum = [0.0]
    seen = set()

    def on_result(lo, hi, i, t, out, sq):
        if lo not in seen:
            seen.add(lo)
            x0_sq_sum[0] += float(sq.sum())
        v = np.stack([out["r00"], out["r0e"], out["ree"]], axis=1)
        s1[i] += v.sum(0)
        s2[i] += v.T @ v
        d1[i] += out["dec"].sum()
        d2[i] += (out["dec"] ** 2).sum()

    plan = [(int(t), True, True) for t in grid]
    _run(eps_model, schedule, x, backend, dev, dtype, data_range if clamp_x0 else None, seed, first_index, dec_var,
         bin_width, cdf, batch_size, plan, progress, "cost matrix", on_result)
    mean = np.full((N + 1, 3), np.nan)
    second = np.full((N + 1, 3, 3), np.nan)
    dec_mean = np.full(N + 1, np.nan)
    dec_second = np.full(N + 1, np.nan)
    mean[grid], second[grid] = s1 / M, s2 / M
    dec_mean[grid], dec_second[grid] = d1 / M, d2 / M
    stats = {"schedule": schedule, "data_range": data_range, "mean": mean, "second": second, "dec_mean": dec_mean,
             "dec_second": dec_second, "x0_sq_mean": x0_sq_sum[0] / M}
    dv = np.full(N + 1, np.nan)
    dv[grid] = dec_var[grid]
    config = _run_config(seed, clamp_x0, data_range, cdf, bin_width, first_index, backend, dev, dtype)
    return _assemble(schedule, method, gamma, eta, clip, data_range, grid, stats, dim, M, _readonly(dv), config)


def _diagonal_cost_matrix(eps_model, schedule, method, grid, x, backend, dev, dtype, data_range, clamp_x0, seed,
                          batch_size, dec_var, cdf, bin_width, first_index, progress, eta, clip) -> BaselineCostMatrix:
    N = schedule.N
    M = int(x.shape[0])
    dim = int(math.prod(int(v) for v in x.shape[1:]))
    eta = float(eta)
    upper = cov_upper(data_range, clip)
    specs = [_diag_spec(schedule, method, grid[grid < t], int(t), eta, upper) for t in grid]
    sums = [np.zeros(sp.s.size) for sp in specs]
    sqs = [np.zeros(sp.s.size) for sp in specs]
    d1, d2, rec = np.zeros(grid.size), np.zeros(grid.size), np.zeros(grid.size)
    x0_sq_sum = [0.0]
    seen = set()

    def on_result(lo, hi, i, t, out, sq):
        if lo not in seen:
            seen.add(lo)
            x0_sq_sum[0] += float(sq.sum())
        d1[i] += out["dec"].sum()
        d2[i] += (out["dec"] ** 2).sum()
        rec[i] += out["r00"].sum()
        if "dkl" in out:
            sums[i] += out["dkl"].sum(0)
            sqs[i] += (out["dkl"] ** 2).sum(0)

    plan = [(int(t), True, True, sp) for t, sp in zip(grid, specs)]
    _run(eps_model, schedule, x, backend, dev, dtype, data_range if clamp_x0 else None, seed, first_index, dec_var,
         bin_width, cdf, batch_size, plan, progress, f"cost matrix {method}", on_result)
    Mf = float(M)
    corr = Mf / (Mf - 1.0) if M > 1 else math.nan
    F = np.full((N + 1, N + 1), np.inf)
    F_se = np.full((N + 1, N + 1), np.nan)
    sig = np.full((N + 1, N + 1), np.nan)
    F[0, grid] = d1 / Mf
    F_se[0, grid] = np.sqrt(np.maximum(d2 / Mf - (d1 / Mf) ** 2, 0.0) * corr / Mf)
    for i, (t, sp) in enumerate(zip(grid.tolist(), specs)):
        if sp.s.size:
            mean = sums[i] / Mf
            F[sp.s, t] = mean
            F_se[sp.s, t] = np.sqrt(np.maximum(sqs[i] / Mf - mean ** 2, 0.0) * corr / Mf)
            sig[sp.s, t] = sp.lam2
    rec_full = np.full(N + 1, np.nan)
    rec_full[grid] = rec / Mf
    dv = np.full(N + 1, np.nan)
    dv[grid] = dec_var[grid]
    x0_sq_mean = x0_sq_sum[0] / Mf
    prior = dim * float(prior_kl_per_dim(schedule, N, x0_sq_mean / dim))
    config = {**_run_config(seed, clamp_x0, data_range, cdf, bin_width, first_index, backend, dev, dtype),
              "clip": bool(clip), "cov_upper": upper}
    stats = {"schedule": schedule, "data_range": data_range, "x0_sq_mean": x0_sq_mean, "diagonal": True}
    return BaselineCostMatrix(
        F=_readonly(F), F_stderr=_readonly(F_se), prior_nats=prior, method=method, eta=eta,
        timesteps=_readonly(grid.copy()), dim=dim, num_images=M, rec=_readonly(rec_full), decoder_var=_readonly(dv),
        sigma_sq=_readonly(sig), config=config, _stats=stats,
    )


__all__ = [
    "BIN_WIDTH", "CDFS", "NOISE_CHUNK", "discretized_gaussian_log_likelihood", "decoder_variance",
    "VariationalBound", "BoundStatistics", "collect_bound_statistics", "variational_bound", "variational_bounds",
    "BaselineCostMatrix", "baseline_cost_matrix",
]
