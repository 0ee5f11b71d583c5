"""Forward noise schedules (facts file §1, §5.1).

A :class:`Schedule` holds float64 arrays indexed by the paper's subscript n = 0..N, with β_0 = 0 and ᾱ_0 = 1:

* ``beta[n]`` = β_n, ``alpha[n]`` = α_n = 1 − β_n
* ``alpha_bar[n]`` = ᾱ_n = ∏_{i≤n} α_i, ``beta_bar[n]`` = β̄_n = 1 − ᾱ_n
* ``log_alpha_bar[n]`` = log ᾱ_n, the quantity everything else is computed from.

Skip quantities on a trajectory (s < t, "from t down to s"): α_{t|s} = ᾱ_t/ᾱ_s, β_{t|s} = 1 − α_{t|s},
β̃_{s|t} = (β̄_s/β̄_t) β_{t|s}.

Numerics: log ᾱ is accumulated as Σ log1p(−β_i) and every "1 − something close to 1" is written as −expm1(·),
so that β near 0 (β̄_1 = β_1 exactly) and ᾱ near 0 (N = 4000 cosine) lose no digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._validate import _show, as_float, as_float_array, as_int


def _prefix_sum_double_double(x: np.ndarray):
    """Prefix sums [0, x_1, x_1 + x_2, …] as unevaluated pairs hi + lo (Knuth's TwoSum), error ~ 1 ulp of each sum."""
    hi = np.zeros(x.size + 1)
    lo = np.zeros(x.size + 1)
    h, l = 0.0, 0.0
    for i, v in enumerate(x.tolist(), start=1):
        s = h + v
        bp = s - h
        err = (h - (s - bp)) + (v - bp)
        l += err
        h, l = s + l, l - ((s + l) - s)  # renormalise
        hi[i], lo[i] = h, l
    return hi, lo


def _check_vpsde_rates(beta_min, beta_max) -> tuple[float, float]:
    """(β_min, β_max) of a linear VP SDE as floats with 0 <= β_min <= β_max and β_max > 0."""
    bmin = as_float("beta_min", beta_min, fix="Song et al.'s VP SDE uses beta_min = 0.1.")
    bmax = as_float("beta_max", beta_max, fix="Song et al.'s VP SDE uses beta_max = 20.")
    if bmin < 0.0 or bmax < bmin or bmax <= 0.0:
        raise ValueError(
            f"the VP SDE rate β(τ) = β_min + τ(β_max − β_min) needs 0 <= beta_min <= beta_max and beta_max > 0; got "
            f"beta_min = {bmin:.6g}, beta_max = {bmax:.6g}. Song et al. use beta_min = 0.1, beta_max = 20."
        )
    return bmin, bmax


def _vpsde_betas(N: int, beta_min: float, beta_max: float, return_integrals: bool = False):
    """β_1..β_N of the VP SDE at t_n = n/N: 1 − exp(−∫_{(n−1)/N}^{n/N} β) with ∫ = (2Nβ_min + Δβ(2n − 1))/(2N²)."""
    n = np.arange(1, N + 1, dtype=np.float64)
    integral = (2.0 * N * beta_min + (beta_max - beta_min) * (2.0 * n - 1.0)) / (2.0 * float(N) * float(N))
    beta = -np.expm1(-integral)
    if np.any(beta >= 1.0) or np.any(beta <= 0.0):
        raise ValueError(
            f"the VP SDE with beta_min = {beta_min:.6g}, beta_max = {beta_max:.6g} at N = {N} gives β_n outside (0, 1) "
            "in float64 (a step integral of β above ~37 or equal to 0). Use a larger N or smaller rates."
        )
    return (beta, integral) if return_integrals else beta


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Schedule:
    """A forward noise schedule with arrays indexed n = 0..N (β_0 = 0, ᾱ_0 = 1).

    Build one with :meth:`linear`, :meth:`cosine`, :meth:`vpsde`, :meth:`from_betas` or :meth:`from_alpha_bar`.
    """

    log_alpha_bar: np.ndarray
    name: str = "custom"
    beta_given: np.ndarray | None = field(default=None, repr=False)
    _log_alpha_bar_lo: np.ndarray = field(init=False, repr=False)
    beta: np.ndarray = field(init=False, repr=False)
    alpha: np.ndarray = field(init=False, repr=False)
    alpha_bar: np.ndarray = field(init=False, repr=False)
    beta_bar: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        lab = np.asarray(self.log_alpha_bar, dtype=np.float64)
        if self.beta_given is not None:
            # Built from β: keep the given β exactly and accumulate log ᾱ in double-double precision, so that
            # differences log ᾱ_t − log ᾱ_s (the skip quantities) keep full relative precision.
            beta = np.array(self.beta_given, dtype=np.float64)
            hi, lo = _prefix_sum_double_double(np.log1p(-beta[1:]))
        else:
            beta = 0.0 - np.expm1(np.diff(lab, prepend=0.0))
            hi, lo = lab, np.zeros_like(lab)
        object.__setattr__(self, "log_alpha_bar", _readonly(hi))
        object.__setattr__(self, "_log_alpha_bar_lo", _readonly(lo))
        object.__setattr__(self, "beta", _readonly(beta))
        object.__setattr__(self, "alpha", _readonly(1.0 - beta))
        object.__setattr__(self, "alpha_bar", _readonly(np.exp(hi + lo)))
        object.__setattr__(self, "beta_bar", _readonly(0.0 - np.expm1(hi + lo)))
        object.__setattr__(self, "beta_given", None)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_betas(cls, betas, name: str = "custom") -> "Schedule":
        """Schedule from β_1..β_N (length N, each in the open interval (0, 1))."""
        b = as_float_array("betas", betas, fix="Pass β_1..β_N as a 1-D array (without β_0).")
        if b.size == 0:
            raise ValueError("betas must hold at least one value (N >= 1); got an empty array.")
        bad = ~np.isfinite(b) | (b <= 0.0) | (b >= 1.0)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ValueError(
                f"betas must lie in the open interval (0, 1) and be finite; got {_show(b[idx])} at "
                f"n = {_show(idx + 1)}. Each β_n is a per-step noise variance: use values such as 1e-4..0.02."
            )
        return cls(np.zeros(b.size + 1), name=name, beta_given=np.concatenate([[0.0], b]))

    @classmethod
    def from_alpha_bar(cls, alpha_bar, name: str = "custom") -> "Schedule":
        """Schedule from ᾱ_1..ᾱ_N (length N, strictly decreasing, each in (0, 1)); ᾱ_0 = 1 is implied."""
        ab = as_float_array("alpha_bar", alpha_bar, fix="Pass ᾱ_1..ᾱ_N as a 1-D array (without ᾱ_0 = 1).")
        if ab.size == 0:
            raise ValueError("alpha_bar must hold at least one value (N >= 1); got an empty array.")
        bad = ~np.isfinite(ab) | (ab <= 0.0) | (ab >= 1.0)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ValueError(
                f"alpha_bar must lie in the open interval (0, 1); got {_show(ab[idx])} at n = {_show(idx + 1)}."
            )
        full = np.concatenate([[1.0], ab])
        inc = np.flatnonzero(np.diff(full) >= 0.0)
        if inc.size:
            n = int(inc[0]) + 1
            raise ValueError(
                f"alpha_bar must be strictly decreasing (every β_n > 0); got ᾱ_{n} = {full[n]:.6g} >= "
                f"ᾱ_{n - 1} = {full[n - 1]:.6g}."
            )
        return cls(np.concatenate([[0.0], np.log(ab)]), name=name)

    @classmethod
    def linear(cls, N: int = 1000, beta_start: float | None = None, beta_end: float | None = None) -> "Schedule":
        """Ho et al.'s linear schedule: β_n = linspace(β_start, β_end, N).

        The defaults follow improved-diffusion: β_start = 1e-4·(1000/N), β_end = 0.02·(1000/N), so the schedule
        for N ≠ 1000 covers the same noise range. (For N <= 20 that gives β_end >= 1: pass ``beta_end``.)
        """
        N = as_int("N", N, minimum=1, fix="N is the number of diffusion steps, e.g. 1000.")
        scale = 1000.0 / N
        b0 = 1e-4 * scale if beta_start is None else as_float("beta_start", beta_start)
        b1 = 0.02 * scale if beta_end is None else as_float("beta_end", beta_end)
        for nm, v in (("beta_start", b0), ("beta_end", b1)):
            if not 0.0 < v < 1.0:
                raise ValueError(
                    f"linear schedule with N = {N} needs {nm} in (0, 1); got {v:.6g}"
                    + (" (the default 0.02·1000/N)" if nm == "beta_end" and beta_end is None else "")
                    + ". Use a larger N (> 20) or pass beta_start/beta_end explicitly."
                )
        return cls.from_betas(np.linspace(b0, b1, N, dtype=np.float64), name=f"linear(N={N})")

    @classmethod
    def cosine(cls, N: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "Schedule":
        """Nichol & Dhariwal's cosine schedule: ᾱ(u) = cos²(((u + s)/(1 + s))·π/2),
        β_n = min(1 − ᾱ(n/N)/ᾱ((n−1)/N), max_beta)."""
        N = as_int("N", N, minimum=1, fix="N is the number of diffusion steps, e.g. 1000 or 4000.")
        s = as_float("s", s)
        if s <= 0:
            raise ValueError(f"s must be > 0 (the paper uses 0.008); got {s}.")
        max_beta = as_float("max_beta", max_beta)
        if not 0.0 < max_beta < 1.0:
            raise ValueError(f"max_beta must lie in (0, 1) (the paper uses 0.999); got {max_beta}.")
        u = np.arange(N + 1, dtype=np.float64) / N
        log_f = 2.0 * np.log(np.cos((u + s) / (1.0 + s) * (math.pi / 2.0)))
        # 1 − ᾱ(n/N)/ᾱ((n−1)/N) = −expm1(log f_n − log f_{n−1}), accurate for tiny β at small n
        beta = np.minimum(-np.expm1(np.diff(log_f)), max_beta)
        return cls.from_betas(beta, name=f"cosine(N={N})")

    @classmethod
    def vpsde(cls, N: int = 1000, beta_min: float = 0.1, beta_max: float = 20.0) -> "Schedule":
        """The extended paper's ``vpsde_1000`` (facts §6.3): Song et al.'s VP SDE, β(τ) = β_min + τ(β_max − β_min) on
        τ ∈ [0, 1], discretized at t_n = n/N with β_n = 1 − exp(−∫_{t_{n−1}}^{t_n} β(τ)dτ), so ᾱ_n = ᾱ(n/N) exactly.

        The integral is evaluated as (2Nβ_min + (β_max − β_min)(2n − 1))/(2N²) (exact midpoint rule for a linear
        rate, no cancellation) and β_n = −expm1(−∫). Timestep n means real time n/N; a continuous-time network
        receives t_n·999 (:class:`analytic_dpm.continuous.ContinuousTimeEpsModel`).
        """
        N = as_int("N", N, minimum=1, fix="N is the number of discretization steps, e.g. 1000.")
        bmin, bmax = _check_vpsde_rates(beta_min, beta_max)
        return cls.from_betas(_vpsde_betas(N, bmin, bmax), name=f"vpsde(N={N}, beta_min={bmin:g}, beta_max={bmax:g})")

    # ------------------------------------------------------------------ properties
    @property
    def N(self) -> int:
        """Number of diffusion steps."""
        return int(self.log_alpha_bar.shape[0] - 1)

    def __repr__(self) -> str:
        return f"Schedule({self.name}, N={self.N})"

    @property
    def log_alpha_bar_lo(self) -> np.ndarray:
        """The low part of log ᾱ in double-double precision (log ᾱ_n = ``log_alpha_bar[n]`` + ``log_alpha_bar_lo[n]``
        to ~1e-32 relative); vectorised code computes log α_{t|s} as (hi_t − hi_s) + (lo_t − lo_s)."""
        return self._log_alpha_bar_lo

    # ------------------------------------------------------------------ skip quantities
    def _check_pair(self, s, t):
        s = np.asarray(s)
        t = np.asarray(t)
        if not (np.issubdtype(s.dtype, np.integer) and np.issubdtype(t.dtype, np.integer)):
            raise TypeError(f"timesteps s and t must be integers; got s = {_show(s)}, t = {_show(t)}.")
        if np.any(s < 0) or np.any(t > self.N) or np.any(s >= t):
            raise ValueError(
                f"timestep pairs must satisfy 0 <= s < t <= N = {self.N}; got s = {_show(s)}, t = {_show(t)}. "
                "Pairs are always (s, t) with s < t, meaning the reverse step from t down to s."
            )
        return s, t

    def log_skip_alpha(self, s, t) -> np.ndarray:
        """log α_{t|s} = log ᾱ_t − log ᾱ_s (from the double-double log ᾱ: full relative precision)."""
        s, t = self._check_pair(s, t)
        lo = self._log_alpha_bar_lo
        return (self.log_alpha_bar[t] - self.log_alpha_bar[s]) + (lo[t] - lo[s])

    def skip_alpha(self, s, t) -> np.ndarray:
        """α_{t|s} = ᾱ_t / ᾱ_s (s < t)."""
        return np.exp(self.log_skip_alpha(s, t))

    def skip_beta(self, s, t) -> np.ndarray:
        """β_{t|s} = 1 − α_{t|s} (s < t), computed as −expm1(log α_{t|s})."""
        return -np.expm1(self.log_skip_alpha(s, t))

    def skip_beta_tilde(self, s, t) -> np.ndarray:
        """β̃_{s|t} = (β̄_s / β̄_t) β_{t|s}, the DDPM posterior variance of q(x_s | x_t, x_0); 0 when s = 0."""
        s, t = self._check_pair(s, t)
        return self.beta_bar[s] / self.beta_bar[t] * self.skip_beta(s, t)

    @property
    def beta_tilde(self) -> np.ndarray:
        """β̃_n = (β̄_{n−1}/β̄_n) β_n for n = 1..N, with β̃_0 = 0 (shape (N+1,))."""
        out = np.zeros(self.N + 1)
        out[1:] = self.beta_bar[:-1] / self.beta_bar[1:] * self.beta[1:]
        return out

    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio ᾱ_n/β̄_n (index 0 is +inf)."""
        with np.errstate(divide="ignore"):
            return self.alpha_bar / self.beta_bar

    def to_dict(self) -> dict:
        """A JSON-friendly description (the β_1..β_N as a list) for metadata files."""
        return {"name": self.name, "N": self.N, "betas": self.beta[1:].tolist()}
