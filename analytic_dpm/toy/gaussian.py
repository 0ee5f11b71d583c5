"""Gaussian data with a known score: q_0 = N(m, Σ), Σ = U diag(λ_i) Uᵀ (facts file §1, §2).

Every forward marginal is Gaussian, q_n = N(√ᾱ_n m, A_n) with A_n = ᾱ_n Σ + β̄_n I = U diag(ᾱ_n λ_i + β̄_n) Uᵀ,
so in the eigenbasis of Σ each quantity is a diagonal scaling:

* score                ∇log q_n(x)  = −A_n⁻¹ (x − √ᾱ_n m)                            (eigen factor −1/(ᾱ_nλ_i+β̄_n))
* noise predictor      ε*_n(x)      = E[ε | x_n = x] = √β̄_n A_n⁻¹ (x − √ᾱ_n m)       (√β̄_n/(ᾱ_nλ_i+β̄_n))
* posterior mean       E[x_0 | x_n] = m + √ᾱ_n Σ A_n⁻¹ (x − √ᾱ_n m)                  (√ᾱ_nλ_i/(ᾱ_nλ_i+β̄_n))
* Γ (eq. 8, noise form) Γ_n         = E‖ε*_n‖²/d = (1/d) Σ_i β̄_n/(ᾱ_nλ_i+β̄_n)
* posterior covariance Cov(x_0|x_n) = U diag(λ_iβ̄_n/(ᾱ_nλ_i+β̄_n)) Uᵀ, the same for every x_n.

The eigendecomposition is computed once, at construction; after that a call costs O(d²) per sample (O(d) for a
diagonal covariance, which keeps no basis at all).

Sampling uses a fixed-size chunk scheme: sample i is drawn by the generator of chunk ⌊i/256⌋, seeded from
(seed, chunk), so ``sample(100, seed)`` equals ``sample(40, seed)`` followed by ``sample(60, seed, start=40)``.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from .._validate import _show, as_int
from ..schedules import Schedule

_CHUNK = 256  # samples per generator in the chunked seeding scheme


# ---------------------------------------------------------------------------------------------------- helpers
def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _check_schedule(schedule) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"schedule must be an analytic_dpm.Schedule; got {type(schedule).__name__}. "
            "Build one with Schedule.linear(N) or Schedule.cosine(N)."
        )
    return schedule


def _check_timestep(schedule: Schedule, n, minimum: int = 1) -> int:
    n = as_int("n", n, fix="n is a timestep of the schedule.")
    if not minimum <= n <= schedule.N:
        raise ValueError(
            f"n must be a timestep in {minimum}..N = {minimum}..{schedule.N}; got n = {n}."
            + (" n = 0 is the data itself: ε_0 is not defined." if n == 0 and minimum == 1 else "")
        )
    return n


def _check_timesteps(schedule: Schedule, timesteps) -> np.ndarray:
    """``timesteps`` as a sorted int64 array of distinct values in 1..N (None: all of 1..N)."""
    if timesteps is None:
        return np.arange(1, schedule.N + 1, dtype=np.int64)
    arr = np.atleast_1d(np.asarray(timesteps))
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"timesteps must be a non-empty 1-D array of integer timesteps in 1..N = 1..{schedule.N}; "
            f"got {_show(arr)}. Pass None for all of them."
        )
    bad = (arr < 1) | (arr > schedule.N)
    if bad.any():
        raise ValueError(
            f"timesteps must lie in 1..N = 1..{schedule.N}; got {_show(arr[bad])}. Γ_0 is not defined (index 0 unused)."
        )
    return np.unique(arr.astype(np.int64))


def _check_finite_vector(name: str, value, fix: str = "") -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of real numbers; got {value!r}. {fix}".strip()) from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {arr.shape}. {fix}".strip())
    if not np.all(np.isfinite(arr)):
        idx = np.flatnonzero(~np.isfinite(arr))
        raise ValueError(f"{name} must be finite; got {_show(arr[idx])} at positions {_show(idx)}. {fix}".strip())
    return arr


def _check_num_seed(num, seed, start):
    num = as_int("num", num, minimum=0, fix="num is the number of samples to draw.")
    seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer seed.")
    start = as_int("start", start, minimum=0, fix="start is the index of the first sample (chunked seeding).")
    return num, seed, start


def _chunked_draw(seed: int, key: tuple, start: int, num: int, draw):
    """Items start..start+num−1 of a stream in which chunk j (items j·256 … j·256+255) comes from a generator seeded by
    (seed, key, j). ``draw(rng, count)`` returns a tuple of arrays with leading length ``count``."""
    if num <= 0:
        return None
    parts = []
    for j in range(start // _CHUNK, (start + num - 1) // _CHUNK + 1):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key) + (j,)))
        block = draw(rng, _CHUNK)
        lo = max(start - j * _CHUNK, 0)
        hi = min(start + num - j * _CHUNK, _CHUNK)
        parts.append(tuple(b[lo:hi] for b in block))
    return tuple(np.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0])))


def _as_batch(x, dim: int, name: str = "x"):
    """(x2d, restore, is_torch): x as a (B, d) float array (float64 for numpy; its own float dtype for torch) and a
    function that gives an output back the shape of x. Accepts (B, d), (B, *shape) with prod(shape) = d, a single
    point of shape (d,), and (B,) when d = 1."""
    torch_in = _is_torch(x)
    if torch_in:
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}. Use x.double().")
    else:
        if not isinstance(x, np.ndarray) and not isinstance(x, (list, tuple, float, int, np.floating)):
            raise TypeError(f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}.")
        x = np.asarray(x, dtype=np.float64)
    shape = tuple(x.shape)
    hint = (f"{name} must be a batch of shape (B, d) = (B, {dim}) or (B, *shape) with prod(shape) = {dim}"
            f"{', or (B,) since d = 1' if dim == 1 else ''}; got shape {shape}.")
    if len(shape) == 0:
        raise ValueError(hint)
    if len(shape) == 1:
        if dim == 1:
            x2 = x.reshape(shape[0], 1)
        elif shape[0] == dim:
            x2 = x.reshape(1, dim)
        else:
            raise ValueError(hint)
    else:
        if math.prod(shape[1:]) != dim:
            raise ValueError(hint)
        x2 = x.reshape(shape[0], dim)
    return x2, (lambda y: y.reshape(shape)), torch_in


class _TorchCache:
    """Copies of float64 numpy constants as tensors, one per (dtype, device)."""

    def __init__(self):
        self._store = {}

    def get(self, key: str, value: np.ndarray, like):
        import torch

        k = (key, like.dtype, like.device)
        out = self._store.get(k)
        if out is None:
            out = torch.tensor(np.array(value, dtype=np.float64), dtype=like.dtype, device=like.device)
            self._store[k] = out
        return out


# ---------------------------------------------------------------------------------------------------- base
class ExactEpsModel:
    """The exact noise predictor ε*_n(x) = E[ε | x_n = x] = −√β̄_n ∇log q_n(x) of toy data, as an ε-model.

    Call it as ``eps_model(x, n)`` with x a batch (numpy array or torch tensor, shape (B, d) or (B, *shape) with
    prod(shape) = d) and n an int timestep in 1..N; it returns an array of the same type, shape, dtype and device.
    """

    def __init__(self, data, schedule: Schedule):
        self.data = data
        self.schedule = _check_schedule(schedule)

    def __call__(self, x, n):
        return self.data.eps(self.schedule, x, n)

    def __repr__(self) -> str:
        return f"ExactEpsModel({self.data!r}, {self.schedule!r})"


class _ToyData:
    """Shared by the toy distributions: the Monte Carlo Γ and the ε-model factory."""

    dim: int

    def eps_model(self, schedule: Schedule) -> ExactEpsModel:
        """The exact ε*_n(x) = E[ε | x_n = x] as a callable ``(x, n) -> eps`` for numpy arrays and torch tensors."""
        return ExactEpsModel(self, schedule)

    def gamma_monte_carlo(self, schedule: Schedule, num_samples: int, seed: int = 0, timesteps=None,
                          batch_size: int | None = None):
        """Monte Carlo Γ_n = (1/M) Σ_m ‖ε*_n(x_{n,m})‖²/d (eq. 9 in noise form) with its standard error.

        x_{n,m} = √ᾱ_n x_0^{(m)} + √β̄_n ε^{(m)}: x_0 from :meth:`sample` (the same M data points for every n), a fresh ε
        for every (n, m), seeded per timestep so Γ_n does not depend on which other timesteps are asked for.
        Returns ``(gamma, stderr)``, each float64 of shape (N+1,): index 0 is 0.0, timesteps not asked for are NaN;
        stderr = std(‖ε*‖²/d)/√M. ``batch_size`` (default: about 4·10⁶/d samples) changes memory use, not the result.
        """
        schedule = _check_schedule(schedule)
        M = as_int("num_samples", num_samples, minimum=2, fix="The standard error needs at least 2 samples.")
        seed = as_int("seed", seed, minimum=0)
        if batch_size is None:
            batch_size = max(1, min(8192, 4_000_000 // self.dim))
        batch_size = as_int("batch_size", batch_size, minimum=1)
        steps = _check_timesteps(schedule, timesteps)
        gamma = np.full(schedule.N + 1, np.nan)
        stderr = np.full(schedule.N + 1, np.nan)
        gamma[0] = stderr[0] = 0.0
        d = self.dim
        for n in steps:
            a, b = math.sqrt(schedule.alpha_bar[n]), math.sqrt(schedule.beta_bar[n])
            vals = np.empty(M)
            for lo in range(0, M, batch_size):
                cnt = min(batch_size, M - lo)
                x0 = self.sample(cnt, seed=seed, start=lo)
                (eps,) = _chunked_draw(seed, (1, int(n)), lo, cnt, lambda r, c: (r.standard_normal((c, d)),))
                e = self.eps(schedule, a * x0 + b * eps, int(n))
                vals[lo:lo + cnt] = np.einsum("ij,ij->i", e, e) / d
            gamma[n] = vals.mean()
            stderr[n] = vals.std(ddof=1) / math.sqrt(M)
        return gamma, stderr


# ---------------------------------------------------------------------------------------------------- Gaussian
class GaussianData(_ToyData):
    """Gaussian data N(mean, cov) in any dimension d with an exact score, ε*, Γ and posterior.

    ``cov`` is a full (d, d) symmetric positive definite matrix or a 1-D array of d positive variances (a diagonal
    covariance). :meth:`from_spectrum` builds one from eigenvalues and an orthogonal basis without a decomposition.
    The eigendecomposition Σ = U diag(λ_i) Uᵀ is computed once here; every other method is O(d²) or less per call.
    """

    def __init__(self, mean, cov):
        mean = _check_finite_vector("mean", mean, fix="mean is the data mean, a vector of length d.")
        d = mean.size
        try:
            c = np.asarray(cov, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"cov must be an array of real numbers; got {cov!r}.") from None
        if c.ndim == 0 and d == 1:
            c = c.reshape(1)
        if c.ndim == 1:
            if c.shape != (d,):
                raise ValueError(
                    f"cov given as a 1-D array means a diagonal covariance and must have length d = {d} (the length "
                    f"of mean); got shape {c.shape}."
                )
            self._setup(mean, self._check_eigvals(c, "cov"), None, "diagonal")
            return
        if c.ndim != 2 or c.shape != (d, d):
            raise ValueError(
                f"cov must be a (d, d) = ({d}, {d}) matrix or a length-{d} vector of variances (d = len(mean)); "
                f"got shape {c.shape}."
            )
        if not np.all(np.isfinite(c)):
            idx = np.argwhere(~np.isfinite(c))[0]
            raise ValueError(f"cov must be finite; got {c[tuple(idx)]} at position {tuple(int(i) for i in idx)}.")
        asym = np.abs(c - c.T)
        scale = max(float(np.abs(c).max()), np.finfo(float).tiny)
        if asym.max() > 1e-10 * scale:
            i, j = np.unravel_index(np.argmax(asym), asym.shape)
            raise ValueError(
                f"cov must be symmetric; got cov[{i}, {j}] = {c[i, j]:.6g} but cov[{j}, {i}] = {c[j, i]:.6g} "
                f"(max |cov − covᵀ| = {asym.max():.3g}). If the asymmetry is rounding, pass (cov + cov.T)/2."
            )
        c = 0.5 * (c + c.T)
        off = c - np.diag(np.diag(c))
        if not off.any():
            self._setup(mean, self._check_eigvals(np.diag(c).copy(), "cov (its diagonal)"), None, "diagonal")
            return
        lam, U = np.linalg.eigh(c)
        if lam[0] <= 0.0:
            raise ValueError(
                f"cov must be positive definite; its smallest eigenvalue is {lam[0]:.6g}. Add a small multiple of "
                "the identity (cov + 1e-6·I) or build the data with GaussianData.from_spectrum(mean, eigvals, basis) "
                "and positive eigenvalues."
            )
        self._setup(mean, lam, U, "full")
        c.setflags(write=False)
        self._cov = c

    @staticmethod
    def _check_eigvals(lam, name: str) -> np.ndarray:
        lam = _check_finite_vector(name, lam)
        if np.any(lam <= 0.0):
            idx = np.flatnonzero(lam <= 0.0)
            raise ValueError(
                f"{name} must be positive (a positive definite covariance); got {_show(lam[idx])} at positions "
                f"{_show(idx)}. A zero variance makes the score undefined: use a tiny positive value instead."
            )
        return lam

    @classmethod
    def from_spectrum(cls, mean, eigvals, basis=None) -> "GaussianData":
        """N(mean, U diag(eigvals) Uᵀ) with U = ``basis`` (orthogonal (d, d), columns are eigenvectors) or the identity.

        No decomposition is done, so this is the fast way to build high-dimensional data (d = 3072).
        """
        mean = _check_finite_vector("mean", mean, fix="mean is the data mean, a vector of length d.")
        d = mean.size
        lam = cls._check_eigvals(eigvals, "eigvals")
        if lam.shape != (d,):
            raise ValueError(f"eigvals must have length d = {d} (the length of mean); got shape {lam.shape}.")
        obj = cls.__new__(cls)
        if basis is None:
            obj._setup(mean, lam, None, "diagonal")
            return obj
        U = np.asarray(basis, dtype=np.float64)
        if U.shape != (d, d):
            raise ValueError(f"basis must be an orthogonal (d, d) = ({d}, {d}) matrix or None; got shape {U.shape}.")
        if not np.all(np.isfinite(U)):
            raise ValueError("basis must be finite; it contains NaN or inf.")
        # O(d²) orthogonality check with a few random probes: ‖Uᵀ(U v) − v‖ for v of unit scale
        probe = np.random.default_rng(12345).standard_normal((d, 4))
        err = np.abs(U.T @ (U @ probe) - probe).max() / np.abs(probe).max()
        if err > 1e-8:
            raise ValueError(
                f"basis must be orthogonal (Uᵀ U = I); a probe gives max |UᵀU v − v| = {err:.3g}. Orthonormalise it, "
                "e.g. U = np.linalg.qr(basis)[0], or pass the covariance to GaussianData(mean, cov)."
            )
        obj._setup(mean, lam, np.array(U, dtype=np.float64, order="C", copy=True), "full")
        return obj

    def _setup(self, mean, lam, U, kind):
        self._mean = mean.copy()
        self._mean.setflags(write=False)
        self._lam = np.asarray(lam, dtype=np.float64).copy()
        self._lam.setflags(write=False)
        self._U = U
        if U is not None:
            U.setflags(write=False)
        self._kind = kind
        self._mean_eig = self._mean.copy() if U is None else U.T @ self._mean
        self._cov = None
        self._torch = _TorchCache()

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """d, the data dimension."""
        return int(self._mean.size)

    @property
    def mean(self) -> np.ndarray:
        """m, the data mean (read-only, shape (d,))."""
        return self._mean

    @property
    def eigvals(self) -> np.ndarray:
        """λ_i, the eigenvalues of Σ (read-only, shape (d,)); column i of :attr:`basis` is their eigenvector."""
        return self._lam

    @property
    def basis(self) -> np.ndarray:
        """U, the orthogonal eigenbasis of Σ (the identity for a diagonal covariance)."""
        return np.eye(self.dim) if self._U is None else self._U

    @property
    def is_diagonal(self) -> bool:
        """True when Σ is diagonal in the standard basis (no basis is stored)."""
        return self._U is None

    @property
    def mean_eig(self) -> np.ndarray:
        """Uᵀm, the mean in eigen-coordinates."""
        return self._mean_eig

    @property
    def cov(self) -> np.ndarray:
        """Σ = U diag(λ) Uᵀ (built on first use, then cached)."""
        if self._cov is None:
            if self._U is None:
                self._cov = np.diag(self._lam)
            else:
                self._cov = (self._U * self._lam) @ self._U.T
                self._cov = 0.5 * (self._cov + self._cov.T)
            self._cov.setflags(write=False)
        return self._cov

    def second_moment_per_dim(self) -> float:
        """E‖x_0‖²/d = (‖m‖² + Σ_i λ_i)/d, the data term of the prior KL."""
        return float((self._mean @ self._mean + self._lam.sum()) / self.dim)

    def __repr__(self) -> str:
        return (f"GaussianData(dim={self.dim}, {self._kind} covariance, eigenvalues in "
                f"[{self._lam.min():.3g}, {self._lam.max():.3g}])")

    # ------------------------------------------------------------------ eigenbasis plumbing
    def _to_eig(self, x2, torch_in):
        if self._U is None:
            return x2
        return x2 @ (self._torch.get("U", self._U, x2) if torch_in else self._U)

    def _from_eig(self, y, torch_in):
        if self._U is None:
            return y
        return y @ (self._torch.get("U", self._U, y).T if torch_in else self._U.T)

    def _const(self, name, value, like, torch_in):
        return self._torch.get(name, value, like) if torch_in else value

    def _scaled(self, x, shift: float, factor: np.ndarray, offset: np.ndarray | None):
        """offset + U diag(factor) Uᵀ (x − shift·m) on a batch, numpy or torch."""
        x2, restore, torch_in = _as_batch(x, self.dim)
        y = self._to_eig(x2, torch_in)
        if shift != 0.0:
            y = y - self._const("mean_eig", self._mean_eig, x2, torch_in) * shift
        # factor changes with n: convert directly rather than caching per n
        if torch_in:
            import torch

            f = torch.as_tensor(factor, dtype=x2.dtype, device=x2.device)
        else:
            f = factor
        out = self._from_eig(y * f, torch_in)
        if offset is not None:
            out = out + self._const("mean", offset, x2, torch_in)
        return restore(out)

    def _a(self, schedule: Schedule, n: int) -> np.ndarray:
        """Eigenvalues of A_n = ᾱ_nΣ + β̄_nI."""
        return schedule.alpha_bar[n] * self._lam + schedule.beta_bar[n]

    # ------------------------------------------------------------------ exact quantities
    def score(self, schedule: Schedule, x, n: int):
        """∇log q_n(x) = −(ᾱ_nΣ + β̄_nI)⁻¹(x − √ᾱ_n m), q_n = N(√ᾱ_n m, ᾱ_nΣ + β̄_nI); n in 0..N (n = 0: the data)."""
        schedule = _check_schedule(schedule)
        n = _check_timestep(schedule, n, minimum=0)
        return self._scaled(x, math.sqrt(schedule.alpha_bar[n]), -1.0 / self._a(schedule, n), None)

    def eps(self, schedule: Schedule, x, n: int):
        """ε*_n(x) = E[ε | x_n = x] = √β̄_n (ᾱ_nΣ + β̄_nI)⁻¹ (x − √ᾱ_n m), n in 1..N; numpy or torch."""
        schedule = _check_schedule(schedule)
        n = _check_timestep(schedule, n)
        factor = math.sqrt(schedule.beta_bar[n]) / self._a(schedule, n)
        return self._scaled(x, math.sqrt(schedule.alpha_bar[n]), factor, None)

    def x0_posterior_mean(self, schedule: Schedule, x, n: int):
        """E[x_0 | x_n = x] = m + √ᾱ_n Σ (ᾱ_nΣ + β̄_nI)⁻¹ (x − √ᾱ_n m) (Tweedie), n in 0..N; numpy or torch."""
        schedule = _check_schedule(schedule)
        n = _check_timestep(schedule, n, minimum=0)
        ab = schedule.alpha_bar[n]
        factor = math.sqrt(ab) * self._lam / self._a(schedule, n)
        return self._scaled(x, math.sqrt(ab), factor, self._mean)

    def log_prob(self, schedule: Schedule, x, n: int) -> np.ndarray:
        """log q_n(x) = log N(x; √ᾱ_n m, ᾱ_nΣ + β̄_nI), n in 0..N, for a numpy batch; returns shape (B,)."""
        schedule = _check_schedule(schedule)
        n = _check_timestep(schedule, n, minimum=0)
        x2, _, torch_in = _as_batch(x, self.dim)
        if torch_in:
            raise TypeError("log_prob takes numpy arrays; convert with x.detach().cpu().numpy().")
        a = self._a(schedule, n)
        y = self._to_eig(x2, False) - math.sqrt(schedule.alpha_bar[n]) * self._mean_eig
        return -0.5 * (self.dim * math.log(2.0 * math.pi) + np.log(a).sum() + (y * y / a).sum(axis=1))

    def _per_timestep(self, schedule: Schedule, timesteps, fn) -> np.ndarray:
        """(1/d) Σ_i fn(ᾱ_n, β̄_n, λ_i) for n in ``timesteps`` (an int array), in row chunks to bound memory."""
        out = np.empty(len(timesteps))
        rows = max(1, 2_000_000 // self.dim)
        for lo in range(0, len(timesteps), rows):
            t = timesteps[lo:lo + rows]
            ab = schedule.alpha_bar[t][:, None]
            bb = schedule.beta_bar[t][:, None]
            out[lo:lo + rows] = fn(ab, bb, self._lam[None, :]).mean(axis=1)
        return out

    def gamma(self, schedule: Schedule) -> np.ndarray:
        """Exact Γ_n = E‖ε*_n(x_n)‖²/d = (1/d) Σ_i β̄_n/(ᾱ_nλ_i + β̄_n) (eq. 8 in noise form); shape (N+1,), Γ_0 = 0."""
        schedule = _check_schedule(schedule)
        out = np.zeros(schedule.N + 1)
        out[1:] = self.gamma_at(schedule, np.arange(1, schedule.N + 1))
        return out

    def gamma_at(self, schedule: Schedule, timesteps) -> np.ndarray:
        """Exact Γ_n at the given timesteps (an int array in 1..N), in their order."""
        _check_schedule(schedule)
        t = np.asarray(timesteps, dtype=np.int64)
        return self._per_timestep(schedule, t, lambda ab, bb, lam: bb / (ab * lam + bb))

    def one_minus_gamma(self, schedule: Schedule) -> np.ndarray:
        """Exact 1 − Γ_n = (1/d) Σ_i ᾱ_nλ_i/(ᾱ_nλ_i + β̄_n) = (ᾱ_n/β̄_n) E tr Cov(x_0|x_n)/d, computed without the
        cancellation of 1 − Γ_n near Γ_n = 1 (every term is positive); shape (N+1,), index 0 = 0.0.

        It is also the residual R_n = E‖ε − ε*_n(x_n)‖²/d of the exact predictor."""
        schedule = _check_schedule(schedule)
        out = np.zeros(schedule.N + 1)
        out[1:] = self.one_minus_gamma_at(schedule, np.arange(1, schedule.N + 1))
        return out

    def one_minus_gamma_at(self, schedule: Schedule, timesteps) -> np.ndarray:
        """Exact 1 − Γ_n at the given timesteps (an int array in 1..N), in their order."""
        _check_schedule(schedule)
        t = np.asarray(timesteps, dtype=np.int64)
        return self._per_timestep(schedule, t, lambda ab, bb, lam: ab * lam / (ab * lam + bb))

    def posterior_cov_trace(self, schedule: Schedule) -> np.ndarray:
        """Exact E tr Cov(x_0|x_n)/d = (1/d) Σ_i λ_iβ̄_n/(ᾱ_nλ_i + β̄_n) (Lemma 11: = (β̄_n/ᾱ_n)(1 − Γ_n));
        shape (N+1,), index 0 = 0."""
        schedule = _check_schedule(schedule)
        out = np.zeros(schedule.N + 1)
        out[1:] = self.posterior_cov_trace_at(schedule, np.arange(1, schedule.N + 1))
        return out

    def posterior_cov_trace_at(self, schedule: Schedule, timesteps) -> np.ndarray:
        """E tr Cov(x_0|x_n)/d at the given timesteps (an int array in 0..N), in their order."""
        _check_schedule(schedule)
        t = np.asarray(timesteps, dtype=np.int64)
        return self._per_timestep(schedule, t, lambda ab, bb, lam: lam * bb / (ab * lam + bb))

    def posterior_cov_eigvals(self, schedule: Schedule, n: int) -> np.ndarray:
        """Eigenvalues of Cov(x_0 | x_n) (the same for every x_n): λ_iβ̄_n/(ᾱ_nλ_i + β̄_n), in the basis of Σ."""
        schedule = _check_schedule(schedule)
        n = _check_timestep(schedule, n, minimum=0)
        return self._lam * schedule.beta_bar[n] / self._a(schedule, n)

    def sample(self, num: int, seed: int = 0, start: int = 0) -> np.ndarray:
        """``num`` samples x_0 ~ N(m, Σ) as float64 of shape (num, d): samples start..start+num−1 of the stream for
        ``seed`` (chunked seeding, so the result does not depend on how the draws are split into calls)."""
        num, seed, start = _check_num_seed(num, seed, start)
        d = self.dim
        if num == 0:
            return np.empty((0, d))
        (z,) = _chunked_draw(seed, (0,), start, num, lambda r, c: (r.standard_normal((c, d)),))
        return self._mean + self._from_eig(z * np.sqrt(self._lam), False)


def default_gaussian(dim: int = 64, min_var: float = 1e-4, max_var: float = 0.25, rotate: bool = False,
                     seed: int = 0) -> GaussianData:
    """A built-in Gaussian with a spread spectrum of variances, as image data have: eigenvalues log-spaced from ``min_var`` to
    ``max_var``, a non-zero mean 0.4·cos(2π·(i + 0.5)/d + 1) (values in [−0.4, 0.4]), so the data lie roughly in
    [−1, 1] (the largest standard deviation is 0.5). With ``rotate`` the eigenbasis is a random orthogonal matrix
    (Haar, from ``seed``; an O(d³) QR: seconds to tens of seconds at d = 3072); otherwise Σ is diagonal.
    """
    dim = as_int("dim", dim, minimum=1)
    if not (0.0 < min_var <= max_var):
        raise ValueError(f"need 0 < min_var <= max_var; got min_var = {min_var}, max_var = {max_var}.")
    lam = np.geomspace(min_var, max_var, dim) if dim > 1 else np.array([max_var], dtype=np.float64)
    i = np.arange(dim)
    mean = 0.4 * np.cos(2.0 * math.pi * (i + 0.5) / dim + 1.0)
    if not rotate:
        return GaussianData.from_spectrum(mean, lam)
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))  # Haar measure
    return GaussianData.from_spectrum(mean, lam, q)


__all__ = ["GaussianData", "ExactEpsModel", "default_gaussian"]
