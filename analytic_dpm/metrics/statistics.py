"""Streaming mean and covariance of feature vectors, in float64, mergeable across batches, processes and GPUs.

A :class:`FeatureStatistics` holds three numbers per data set: the count n, the mean μ and the centred co-moment
matrix M = Σ_i (f_i − μ)(f_i − μ)ᵀ. Two summaries (n_a, μ_a, M_a) and (n_b, μ_b, M_b) combine exactly
(Chan, Golub & LeVeque 1979, the "parallel" variance update):

    n = n_a + n_b,   δ = μ_b − μ_a,   μ = μ_a + δ n_b/n,   M = M_a + M_b + δ δᵀ n_a n_b / n.

The update is associative and commutative up to rounding, so the statistics of a data set do not depend on how it was
cut into batches or spread over GPUs. Each batch is first reduced to its own (n, μ, M) by a two-pass computation in
float64 and then merged; no raw sums Σf fᵀ are accumulated, which avoids the cancellation of the textbook formula
Σf fᵀ/n − μμᵀ when the features have a large mean.

The covariance is the unbiased Σ = M/(n − 1), as ``np.cov`` and pytorch-fid compute it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_savez
from .._validate import as_int

_FORMAT = "analytic_dpm.metrics.FeatureStatistics/1"


def _as_feature_matrix(name: str, features, dim: int | None) -> np.ndarray:
    """``features`` (numpy array or torch tensor, any device/dtype) as a float64 numpy array of shape (B, D)."""
    if hasattr(features, "detach") and hasattr(features, "cpu"):  # a torch tensor, without importing torch here
        features = features.detach().to("cpu")
        if features.is_floating_point() or features.is_complex():
            features = features.double()
        features = features.numpy()
    try:
        arr = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a numpy array or torch tensor of real numbers with shape (batch, dim); "
            f"got {type(features).__name__}."
        ) from None
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must have shape (batch, dim); got shape {arr.shape}. "
            "Flatten each feature vector, e.g. features.reshape(len(features), -1)."
        )
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(
            f"{name} must have {dim} columns (the feature dimension of these statistics); got shape {arr.shape}. "
            "Use one FeatureStatistics per feature extractor."
        )
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[:3].tolist()
        raise ValueError(
            f"{name} must be finite; got NaN or inf at (row, column) {bad}. "
            "Check the feature extractor and the input images (expected in [-1, 1])."
        )
    return arr


class FeatureStatistics:
    """Streaming count, mean and centred co-moment of D-dimensional features, in float64.

    Usage::

        stats = FeatureStatistics()          # the dimension is fixed by the first update
        for batch in batches:
            stats.update(features(batch))    # numpy (B, D) or torch (B, D) on any device
        mu, sigma = stats.mean, stats.cov    # sigma unbiased: M / (n - 1)

        total = stats_gpu0.merge(stats_gpu1) # exact parallel merge (Chan et al.); associative up to rounding

    Attributes (read-only properties): ``count`` (int), ``dim`` (int or None before the first update), ``mean`` (D,),
    ``comoment`` (D, D) = Σ_i (f_i − μ)(f_i − μ)ᵀ, ``cov`` (D, D) = comoment/(count − 1).
    """

    __slots__ = ("_count", "_mean", "_comoment")

    def __init__(self, dim: int | None = None):
        self._count = 0
        self._mean = None
        self._comoment = None
        if dim is not None:
            dim = as_int("dim", dim, minimum=1, fix="dim is the length of one feature vector.")
            self._mean = np.zeros(dim, dtype=np.float64)
            self._comoment = np.zeros((dim, dim), dtype=np.float64)

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_features(cls, features) -> "FeatureStatistics":
        """The statistics of a (B, D) feature matrix in one pass (B >= 0)."""
        arr = _as_feature_matrix("features", features, None)
        out = cls(arr.shape[1])
        out._update_array(arr)
        return out

    @classmethod
    def from_moments(cls, count, mean, comoment) -> "FeatureStatistics":
        """Rebuild statistics from (count, mean, comoment), e.g. after gathering them from other processes."""
        count = as_int("count", count, minimum=0)
        mean = np.array(mean, dtype=np.float64)
        comoment = np.array(comoment, dtype=np.float64)
        if mean.ndim != 1 or mean.size == 0:
            raise ValueError(f"mean must be a non-empty 1-dimensional array; got shape {mean.shape}.")
        d = mean.shape[0]
        if comoment.shape != (d, d):
            raise ValueError(f"comoment must have shape ({d}, {d}) to match mean; got shape {comoment.shape}.")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(comoment))):
            raise ValueError("mean and comoment must be finite; got NaN or inf.")
        out = cls(d)
        out._count = count
        out._mean = mean
        out._comoment = comoment
        return out

    def copy(self) -> "FeatureStatistics":
        out = FeatureStatistics()
        out._count = self._count
        out._mean = None if self._mean is None else self._mean.copy()
        out._comoment = None if self._comoment is None else self._comoment.copy()
        return out

    # ------------------------------------------------------------------------------------------ accumulation
    def update(self, features) -> "FeatureStatistics":
        """Add a batch of features, shape (B, D), numpy or torch on any device; B may be 0. Returns ``self``."""
        arr = _as_feature_matrix("features", features, self.dim)
        if self._mean is None:
            self._mean = np.zeros(arr.shape[1], dtype=np.float64)
            self._comoment = np.zeros((arr.shape[1], arr.shape[1]), dtype=np.float64)
        self._update_array(arr)
        return self

    def _update_array(self, arr: np.ndarray):
        b = arr.shape[0]
        if b == 0:
            return
        batch_mean = arr.mean(axis=0)
        centred = arr - batch_mean
        batch_comoment = centred.T @ centred
        self._merge_moments(b, batch_mean, batch_comoment)

    def _merge_moments(self, n_b: int, mean_b: np.ndarray, comoment_b: np.ndarray):
        n_a = self._count
        if n_b == 0:
            return
        if n_a == 0:
            self._count = n_b
            self._mean = np.array(mean_b, dtype=np.float64)
            self._comoment = np.array(comoment_b, dtype=np.float64)
            return
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._comoment = self._comoment + comoment_b + np.outer(delta, delta) * (n_a * n_b / n)
        self._count = n

    def merge(self, other: "FeatureStatistics") -> "FeatureStatistics":
        """A new ``FeatureStatistics`` for the union of both data sets (Chan et al. parallel update); inputs unchanged.

        M = M_a + M_b + δδᵀ n_a n_b/(n_a + n_b), δ = μ_b − μ_a. Associative and commutative up to rounding.
        """
        if not isinstance(other, FeatureStatistics):
            raise TypeError(f"other must be a FeatureStatistics; got {type(other).__name__}.")
        if self.dim is not None and other.dim is not None and self.dim != other.dim:
            raise ValueError(
                f"cannot merge statistics of dimension {self.dim} with statistics of dimension {other.dim}; "
                "merge only statistics computed with the same feature extractor."
            )
        out = self.copy()
        if other._mean is not None:
            if out._mean is None:
                out._mean = np.zeros_like(other._mean)
                out._comoment = np.zeros_like(other._comoment)
            out._merge_moments(other._count, other._mean, other._comoment)
        return out

    def __add__(self, other):
        if not isinstance(other, FeatureStatistics):
            return NotImplemented
        return self.merge(other)

    @staticmethod
    def merge_all(parts) -> "FeatureStatistics":
        """Merge an iterable of statistics left to right (e.g. the per-rank statistics gathered in rank order)."""
        out = FeatureStatistics()
        for i, part in enumerate(parts):
            if not isinstance(part, FeatureStatistics):
                raise TypeError(f"parts[{i}] must be a FeatureStatistics; got {type(part).__name__}.")
            out = out.merge(part)
        return out

    # ------------------------------------------------------------------------------------------ results
    @property
    def count(self) -> int:
        return self._count

    @property
    def dim(self) -> int | None:
        return None if self._mean is None else int(self._mean.shape[0])

    def _require(self, what: str, minimum: int):
        if self._count < minimum:
            raise ValueError(
                f"{what} needs at least {minimum} feature vector(s); these statistics hold {self._count}. "
                "Call update(features) with more data first."
            )

    @property
    def mean(self) -> np.ndarray:
        """μ = (1/n) Σ_i f_i, float64 (D,) (a copy)."""
        self._require("mean", 1)
        return self._mean.copy()

    @property
    def comoment(self) -> np.ndarray:
        """M = Σ_i (f_i − μ)(f_i − μ)ᵀ, float64 (D, D) (a copy)."""
        self._require("comoment", 1)
        return self._comoment.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance Σ = M/(n − 1), float64 (D, D), exactly symmetric; equals ``np.cov(f, rowvar=False)``."""
        self._require("cov (unbiased, divides by n - 1)", 2)
        c = self._comoment / (self._count - 1)
        return 0.5 * (c + c.T)

    def __repr__(self):
        return f"FeatureStatistics(count={self._count}, dim={self.dim})"

    # ------------------------------------------------------------------------------------------ I/O
    def save(self, path) -> Path:
        """Write ``count``, ``mean`` and ``comoment`` to an ``.npz`` (no pickle), atomically. Returns the path."""
        if self._mean is None:
            raise ValueError("cannot save empty statistics of unknown dimension; call update(features) first.")
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(path, {"format": np.array(_FORMAT), "count": np.array(self._count, dtype=np.int64),
                            "mean": self._mean, "comoment": self._comoment})
        return path

    @classmethod
    def load(cls, path) -> "FeatureStatistics":
        """Read statistics written by :meth:`save` (``allow_pickle=False``)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"no feature statistics file at {str(path)!r}; write one with FeatureStatistics.save."
            )
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "format" not in keys or str(z["format"]) != _FORMAT:
                hint = ""
                if {"mu", "sigma"} <= keys:
                    hint = (" It holds 'mu' and 'sigma' (the pytorch-fid format) but no count; read it with "
                            "analytic_dpm.metrics.load_mu_sigma(path) and pass (mu, sigma) to frechet_distance.")
                raise ValueError(f"{str(path)!r} is not a FeatureStatistics file (keys {sorted(keys)}).{hint}")
            return cls.from_moments(int(z["count"]), z["mean"], z["comoment"])


def load_mu_sigma(path) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) as float64 from a FeatureStatistics ``.npz`` or a pytorch-fid style ``.npz`` with keys 'mu', 'sigma'."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no statistics file at {str(path)!r}.")
    with np.load(path, allow_pickle=False) as z:
        if "format" in z.files and str(z["format"]) == _FORMAT:
            stats = FeatureStatistics.from_moments(int(z["count"]), z["mean"], z["comoment"])
            return stats.mean, stats.cov
        if {"mu", "sigma"} <= set(z.files):
            return np.asarray(z["mu"], dtype=np.float64), np.asarray(z["sigma"], dtype=np.float64)
        raise ValueError(
            f"{str(path)!r} holds neither FeatureStatistics nor pytorch-fid statistics ('mu', 'sigma'); "
            f"keys {sorted(z.files)}."
        )


def all_gather_statistics(stats: FeatureStatistics, group=None) -> FeatureStatistics:
    """Merge the statistics of every rank of a ``torch.distributed`` process group, identically on every rank.

    Each rank contributes its (count, mean, comoment); they are gathered as float64 tensors and merged in rank order,
    so every rank returns the same result and the result equals a single-process pass up to rounding. All ranks must
    have statistics of the same dimension (an empty rank passes ``FeatureStatistics(dim)``).
    """
    import torch
    import torch.distributed as dist

    if not isinstance(stats, FeatureStatistics):
        raise TypeError(f"stats must be a FeatureStatistics; got {type(stats).__name__}.")
    if stats.dim is None:
        raise ValueError("stats must know its dimension; create empty statistics as FeatureStatistics(dim).")
    world = dist.get_world_size(group)
    backend = dist.get_backend(group)
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    d = stats.dim
    packed = torch.empty(1 + d + d * d, dtype=torch.float64, device=device)
    packed[0] = float(stats.count)
    packed[1 : 1 + d] = torch.from_numpy(stats._mean)
    packed[1 + d :] = torch.from_numpy(stats._comoment.reshape(-1))
    gathered = [torch.empty_like(packed) for _ in range(world)]
    dist.all_gather(gathered, packed, group=group)
    parts = []
    for t in gathered:
        a = t.cpu().numpy()
        parts.append(FeatureStatistics.from_moments(int(round(a[0])), a[1 : 1 + d], a[1 + d :].reshape(d, d)))
    return FeatureStatistics.merge_all(parts)
