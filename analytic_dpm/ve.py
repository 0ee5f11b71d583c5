"""Variance-exploding (VE) and Kingma-form processes as rescaled VP processes (facts §1; Song et al. 2021 §3.4,
Kingma et al. 2021 "Variational diffusion models" §2).

A Kingma-form forward process is x_n = a_n x_0 + s_n ε, n = 0..N, a_0 = 1, s_0 = 0, with signal-to-noise ratio
SNR_n = a_n²/s_n² strictly decreasing. VE (NCSN/SMLD) is a_n = 1, s_n = σ_n; VP (DDPM) is a_n² + s_n² = 1. With
r_n = √(a_n² + s_n²) the rescaled y_n = x_n / r_n is the VP process with

    ᾱ_n = a_n²/(a_n² + s_n²) = SNR_n/(1 + SNR_n),    β̄_n = 1/(1 + SNR_n)      (VE: ᾱ_n = 1/(1 + σ_n²)),

and the same ε. So every Analytic-DPM quantity of the process follows from the VP one on :attr:`ScaledProcess.schedule`:
Γ_n = E‖ε̂_n‖²/d is the same number (the ε-model of the process at x_n is the VP ε-model at x_n/r_n), the reverse mean
is r_s · μ_VP(x_t/r_t), and the variances scale by r_s²: σ*²_{s|t} (process) = r_s² σ*²_{s|t} (VP) (Theorem 1), with
the VP Theorem 2 bounds scaled the same way. For VE the DDPM-family posterior is q(x_s|x_t,x_0) =
N(x_0 + (σ_s²/σ_t²)(x_t − x_0), σ_s²(σ_t² − σ_s²)/σ_t²), SMLD's ancestral sampler (Song et al. App. F).

Naming: ``noise_std`` is s_n (what k-diffusion and EDM call σ); variances stay ``sigma_sq`` as elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import _show, as_float, as_float_array, as_int
from .posterior import posterior_coefficients
from .schedules import Schedule
from .variance import sigma_sq_opt as _vp_sigma_sq_opt


def _readonly(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ScaledProcess:
    """x_n = a_n x_0 + s_n ε (arrays ``scale`` = a, ``noise_std`` = s, index n = 0..N, a_0 = 1, s_0 = 0) and the VP
    :class:`~analytic_dpm.schedules.Schedule` it rescales to (module docstring). Build with
    :meth:`variance_exploding`, :meth:`geometric_ve` or :meth:`from_snr`."""

    scale: np.ndarray
    noise_std: np.ndarray
    schedule: Schedule
    name: str = "custom"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_snr(cls, snr, scale=None, name: str = "kingma") -> "ScaledProcess":
        """From SNR_1..SNR_N (strictly decreasing, > 0, finite) and a_1..a_N (``scale``, > 0; default 1, i.e. VE):
        s_n = a_n/√SNR_n and the VP schedule log ᾱ_n = −log1p(1/SNR_n) (no cancellation)."""
        snr = as_float_array("snr", snr, fix="Pass SNR_1..SNR_N = a_n²/s_n² as a 1-D array (without n = 0).")
        if snr.size == 0:
            raise ValueError("snr must hold at least one value (N >= 1); got an empty array.")
        bad = ~np.isfinite(snr) | (snr <= 0.0)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ValueError(f"snr must be finite and > 0; got {_show(snr[idx])} at n = {_show(idx + 1)}.")
        inc = np.flatnonzero(np.diff(snr) >= 0.0)
        if inc.size:
            n = int(inc[0]) + 2
            raise ValueError(
                f"snr must be strictly decreasing in n (more noise at every step); got SNR_{n} = {snr[n - 1]:.6g} >= "
                f"SNR_{n - 1} = {snr[n - 2]:.6g}. For VE pass strictly increasing noise levels."
            )
        if scale is None:
            a = np.ones_like(snr)
        else:
            a = np.broadcast_to(as_float_array("scale", scale, fix="Pass a_1..a_N (without a_0 = 1)."),
                                snr.shape).astype(np.float64)
            bad_a = ~np.isfinite(a) | (a <= 0.0)
            if bad_a.any():
                idx = np.flatnonzero(bad_a)
                raise ValueError(f"scale a_n must be finite and > 0; got {_show(a[idx])} at n = {_show(idx + 1)}.")
        s = a / np.sqrt(snr)
        sched = Schedule(np.concatenate([[0.0], -np.log1p(1.0 / snr)]), name=f"vp-of({name})")
        return cls(scale=_readonly(np.concatenate([[1.0], a])), noise_std=_readonly(np.concatenate([[0.0], s])),
                   schedule=sched, name=name)

    @classmethod
    def variance_exploding(cls, noise_std, name: str = "ve") -> "ScaledProcess":
        """VE: x_n = x_0 + σ_n ε from σ_1..σ_N (strictly increasing, > 0); ᾱ_n = 1/(1 + σ_n²)."""
        s = as_float_array("noise_std", noise_std, fix="Pass σ_1..σ_N (without σ_0 = 0) as a 1-D array.")
        if s.size == 0:
            raise ValueError("noise_std must hold at least one value (N >= 1); got an empty array.")
        bad = ~np.isfinite(s) | (s <= 0.0)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ValueError(f"noise_std must be finite and > 0; got {_show(s[idx])} at n = {_show(idx + 1)}.")
        inc = np.flatnonzero(np.diff(s) <= 0.0)
        if inc.size:
            n = int(inc[0]) + 2
            raise ValueError(f"noise_std must be strictly increasing; got σ_{n} = {s[n - 1]:.6g} <= "
                             f"σ_{n - 1} = {s[n - 2]:.6g}.")
        out = cls.from_snr(1.0 / (s * s), None, name=name)
        object.__setattr__(out, "noise_std", _readonly(np.concatenate([[0.0], s])))  # exact, not a/√SNR
        return out

    @classmethod
    def geometric_ve(cls, N: int = 1000, sigma_min: float = 0.01, sigma_max: float = 50.0) -> "ScaledProcess":
        """SMLD/NCSN's geometric noise levels σ_n = σ_min (σ_max/σ_min)^((n−1)/(N−1)), n = 1..N (Song et al. 2021's VE
        SDE discretized; σ_max = 50 for CIFAR-10), with σ_0 = 0 for the data."""
        N = as_int("N", N, minimum=1, fix="N is the number of noise levels, e.g. 1000.")
        lo, hi = as_float("sigma_min", sigma_min), as_float("sigma_max", sigma_max)
        if not (0.0 < lo < hi or (N == 1 and 0.0 < lo)):
            raise ValueError(f"need 0 < sigma_min < sigma_max; got sigma_min = {lo}, sigma_max = {hi}.")
        s = np.array([lo]) if N == 1 else lo * (hi / lo) ** (np.arange(N, dtype=np.float64) / (N - 1))
        return cls.variance_exploding(s, name=f"geometric-ve(N={N}, {lo:g}..{hi:g})")

    # ------------------------------------------------------------------ conversions
    @property
    def N(self) -> int:
        return self.schedule.N

    @property
    def vp_factor(self) -> np.ndarray:
        """r_n = √(a_n² + s_n²) (index 0..N, r_0 = 1): y_n = x_n / r_n is the VP process."""
        return np.hypot(self.scale, self.noise_std)

    def to_vp(self, x, n: int):
        """y_n = x_n / r_n."""
        return x / float(self.vp_factor[int(n)])

    def from_vp(self, y, n: int):
        """x_n = r_n y_n."""
        return y * float(self.vp_factor[int(n)])

    def vp_eps_model(self, eps_model):
        """The VP ε-model of an ε-model of this process: ε̂_VP(y, n) = ε̂(r_n y, n) (the same ε, so the same Γ)."""
        r = self.vp_factor

        def vp(y, n):
            return eps_model(y * float(r[int(n)]), n)

        return vp

    # ------------------------------------------------------------------ Analytic-DPM in the process's coordinates
    def posterior(self, s, t):
        """(coef_x0, coef_xt, λ²) of the Markov posterior q(x_s | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, λ² I) in
        the process's coordinates: r_s times the VP (DDPM-family) coefficients, coef_xt divided by r_t."""
        s, t = np.asarray(s), np.asarray(t)
        c0, ct, lam2 = posterior_coefficients(self.schedule, s, t, "ddpm")
        r = self.vp_factor
        return r[s] * c0, r[s] * ct / r[t], r[s] ** 2 * lam2

    def sigma_sq_opt(self, s, t, gamma_t, family: str = "ddpm", eta: float = 0.0) -> np.ndarray:
        """Theorem 1 in the process's coordinates: σ*²_{s|t} = r_s² · σ*²_{s|t}(VP schedule, Γ_t) (no clipping)."""
        s = np.asarray(s)
        return self.vp_factor[s] ** 2 * _vp_sigma_sq_opt(self.schedule, s, t, gamma_t, family, eta)

    def __repr__(self) -> str:
        return f"ScaledProcess({self.name}, N={self.N})"


__all__ = ["ScaledProcess"]
