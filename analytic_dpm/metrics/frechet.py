"""The Fréchet distance between two Gaussians (FID when the features are Inception pool3), and the kernel distance KID.

Fréchet distance (Heusel et al. 2017; Dowson & Landau 1982), the squared 2-Wasserstein distance between
N(μ_1, Σ_1) and N(μ_2, Σ_2):

    FD = ‖μ_1 − μ_2‖² + tr Σ_1 + tr Σ_2 − 2 tr (Σ_1^½ Σ_2 Σ_1^½)^½.

The usual implementation takes ``scipy.linalg.sqrtm(Σ_1 Σ_2)`` of a non-symmetric product, which returns complex
parts and fails (or silently errs) for rank-deficient covariances, e.g. fewer samples than feature dimensions. Here the
trace is computed from symmetric eigen-decompositions only:

1. Σ_1 = V diag(w) Vᵀ (``eigh``), eigenvalues below rounding level (|w| ≤ D·ε·max w, including small negatives)
   set to 0, so Σ_1^½ = V diag(√w) Vᵀ;
2. the eigenvalues ν of the symmetric PSD matrix Σ_1^½ Σ_2 Σ_1^½ (``eigvalsh``, computed on the range of Σ_1 as
   the r × r matrix Bᵀ Σ_2 B with B = V_+ diag(√w_+), r = rank Σ_1), again with rounding-level values set to 0;
3. tr (Σ_1^½ Σ_2 Σ_1^½)^½ = Σ_k √ν_k.

Everything is real float64; the result is finite and non-negative for any PSD input, and symmetric in its arguments up
to rounding (the ν are the eigenvalues of Σ_1 Σ_2, whatever the order).

KID (Bińkowski et al. 2018): the unbiased estimate of the squared MMD with the polynomial kernel
k(x, y) = (xᵀy/D + 1)³, averaged over random subsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import as_int
from .statistics import FeatureStatistics, _as_feature_matrix


def _to_numpy(x):
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().to("cpu").double().numpy()
    return x


def _mean_cov(name: str, stats):
    """(μ, Σ) from a FeatureStatistics or a (mu, sigma) pair."""
    if isinstance(stats, FeatureStatistics):
        return stats.mean, stats.cov
    if isinstance(stats, (tuple, list)) and len(stats) == 2:
        return stats[0], stats[1]
    raise TypeError(
        f"{name} must be a FeatureStatistics or a (mu, sigma) pair; got {type(stats).__name__}. "
        "Call frechet_distance(mu1, sigma1, mu2, sigma2) or frechet_distance(stats1, stats2)."
    )


def _check_mean_cov(i: int, mu, sigma, dim: int | None):
    mu = np.asarray(_to_numpy(mu), dtype=np.float64)
    sigma = np.asarray(_to_numpy(sigma), dtype=np.float64)
    if mu.ndim != 1 or mu.size == 0:
        raise ValueError(f"mu{i} must be a non-empty 1-dimensional array (the feature mean); got shape {mu.shape}.")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(f"sigma{i} must have shape ({d}, {d}) to match mu{i}; got shape {sigma.shape}.")
    if dim is not None and d != dim:
        raise ValueError(
            f"mu{i} has dimension {d} but the other distribution has dimension {dim}; "
            "both statistics must come from the same feature extractor."
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"mu{i} and sigma{i} must be finite; got NaN or inf.")
    scale = max(float(np.max(np.abs(sigma))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(sigma - sigma.T)))
    if asym > 1e-5 * scale:  # float32-computed covariances are symmetric only to ~1e-7
        raise ValueError(
            f"sigma{i} must be a symmetric covariance matrix; max |sigma - sigma.T| = {asym:.3g} "
            f"(relative {asym / scale:.3g}). Pass a covariance, e.g. FeatureStatistics.cov or np.cov(f, rowvar=False)."
        )
    return mu, 0.5 * (sigma + sigma.T)


def _psd_eigvalsh_clipped(name: str, a: np.ndarray, vectors: bool, scale: float | None = None):
    """Eigen-decomposition of symmetric PSD ``a``; eigenvalues at rounding level (incl. small negatives) set to 0.

    Rounding level is D·ε·scale, with ``scale`` the size of the entries' errors' source (default: max |eigenvalue|).
    An eigenvalue below −10³ times that means ``a`` is not PSD: ValueError naming ``name``.
    """
    if vectors:
        w, v = np.linalg.eigh(a)
    else:
        w, v = np.linalg.eigvalsh(a), None
    if scale is None:
        scale = float(np.max(np.abs(w))) if w.size else 0.0
    tol = a.shape[0] * np.finfo(np.float64).eps * scale
    if w.size and w[0] < -1e3 * max(tol, np.finfo(np.float64).tiny):
        raise ValueError(
            f"{name} must be positive semi-definite; its smallest eigenvalue is {w[0]:.6g} "
            f"(scale {scale:.6g}), far below rounding level. Pass a covariance matrix."
        )
    w = np.where(w > tol, w, 0.0)
    return w, v


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr (Σ_1^½ Σ_2 Σ_1^½)^½ = Σ_k √ν_k (ν the eigenvalues of Σ_1 Σ_2), by symmetric eigen-decompositions only.

    With Σ_1 = V diag(w) Vᵀ and B = V_+ diag(√w_+) (the columns whose w is above rounding level), Σ_1^½ = B V_+ᵀ and
    Σ_1^½ Σ_2 Σ_1^½ = V_+ (Bᵀ Σ_2 B) V_+ᵀ; V_+ has orthonormal columns, so the non-zero ν are the eigenvalues of the
    r × r PSD matrix Bᵀ Σ_2 B, r = rank Σ_1. No matrix is inverted and nothing complex appears.
    """
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    w1, v1 = _psd_eigvalsh_clipped("sigma1", sigma1, vectors=True)
    keep = w1 > 0.0
    if not np.any(keep):
        return 0.0
    b = v1[:, keep] * np.sqrt(w1[keep])
    m = b.T @ sigma2 @ b
    m = 0.5 * (m + m.T)
    # errors in m are relative to ‖Σ_1‖‖Σ_2‖, not to m itself (m may vanish when the supports are orthogonal)
    scale = float(np.max(w1)) * float(np.linalg.norm(sigma2))
    nu, _ = _psd_eigvalsh_clipped("sigma2 (seen through sigma1^1/2 sigma2 sigma1^1/2)", m, vectors=False,
                                  scale=scale)
    return float(np.sum(np.sqrt(nu)))


def frechet_distance(mu1, sigma1, mu2=None, sigma2=None) -> float:
    """Fréchet distance ‖μ_1 − μ_2‖² + tr Σ_1 + tr Σ_2 − 2 tr (Σ_1^½ Σ_2 Σ_1^½)^½ between two Gaussians, float64.

    Call as ``frechet_distance(mu1, sigma1, mu2, sigma2)`` with arrays (numpy or torch) or as
    ``frechet_distance(stats1, stats2)`` with two :class:`FeatureStatistics` (or two ``(mu, sigma)`` pairs).
    The matrix square root uses symmetric eigen-decompositions (see the module docstring): no complex parts, stable
    for singular covariances. Returns a Python float >= 0.
    """
    if mu2 is None and sigma2 is None:
        mu1, sigma1, (mu2, sigma2) = (*_mean_cov("stats1", mu1), _mean_cov("stats2", sigma1))
    elif mu2 is None or sigma2 is None:
        raise TypeError("frechet_distance takes (mu1, sigma1, mu2, sigma2) or (stats1, stats2); got three arguments.")
    mu1, sigma1 = _check_mean_cov(1, mu1, sigma1, None)
    mu2, sigma2 = _check_mean_cov(2, mu2, sigma2, mu1.shape[0])
    diff = mu1 - mu2
    tr_sqrt = trace_sqrt_product(sigma1, sigma2)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt)
    # W2² >= 0 exactly; a negative value here is cancellation at rounding level (identical inputs).
    return max(value, 0.0)


def _bootstrap_distances(reference, feature_sets, num_resamples: int, seed: int) -> np.ndarray:
    """(num_resamples, len(feature_sets)) Fréchet distances to ``reference`` (held fixed) of the Gaussians fitted to
    each set resampled with the same B row indices (the sets are checked to have B >= 2 rows each)."""
    R = as_int("num_resamples", num_resamples, minimum=2, fix="E.g. 100.")
    mu_r, sig_r = _mean_cov("reference", reference)
    rng = np.random.default_rng(as_int("seed", seed, minimum=0))
    B = feature_sets[0].shape[0]
    out = np.empty((R, len(feature_sets)))
    for i in range(R):
        idx = rng.integers(0, B, B)
        for j, f in enumerate(feature_sets):
            st = FeatureStatistics.from_features(f[idx])
            out[i, j] = frechet_distance(mu_r, sig_r, st.mean, st.cov)
    return out


def frechet_distance_bootstrap(reference, features, num_resamples: int = 100, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the Fréchet distance between ``reference`` (FeatureStatistics or (μ, Σ), held fixed:
    the reference set is large and shared by every row of a table) and the Gaussian fitted to ``features`` (B, D),
    resampled B rows with replacement ``num_resamples`` times. Their standard deviation is the standard error of the
    distance over sample sets of this size; their mean exceeds the plug-in distance by about its finite-sample bias,
    so report the plug-in value with the bootstrap spread. Returns the (num_resamples,) replicates."""
    feats = _as_feature_matrix("features", features, None)
    if feats.shape[0] < 2:
        raise ValueError(f"features must have at least 2 rows to resample; got {feats.shape[0]}.")
    return _bootstrap_distances(reference, [feats], num_resamples, seed)[:, 0]


def frechet_distance_paired_bootstrap(reference, features_a, features_b, num_resamples: int = 200,
                                      seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of FD(reference, a) − FD(reference, b) for two sample sets whose rows are paired (row i of
    both drawn with the same noise, as :func:`analytic_dpm.sample` does for any two methods with one seed): each
    replicate resamples the same row indices in both. Pairing removes the noise the two sets share, so the spread of
    the difference is usually far below that of either distance. Returns the (num_resamples,) replicates."""
    fa = _as_feature_matrix("features_a", features_a, None)
    fb = _as_feature_matrix("features_b", features_b, fa.shape[1])
    if fa.shape != fb.shape or fa.shape[0] < 2:
        raise ValueError(f"features_a and features_b must be paired: the same shape with at least 2 rows; got "
                         f"{fa.shape} and {fb.shape}.")
    d = _bootstrap_distances(reference, [fa, fb], num_resamples, seed)
    return d[:, 0] - d[:, 1]


# ------------------------------------------------------------------------------------------------------------ KID
@dataclass(frozen=True)
class KIDResult:
    """Kernel distance: mean and standard deviation (ddof = 0, as torch-fidelity) of the unbiased MMD² over subsets.

    ``values`` holds the per-subset estimates. The subsets overlap, so ``std`` is the spread of a single-subset
    estimate, an upper bound on the error of ``mean`` rather than its standard error.
    """

    mean: float
    std: float
    values: np.ndarray
    subsets: int
    subset_size: int
    degree: int

    def __float__(self):
        return self.mean


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                             coef0: float = 1.0) -> float:
    """Unbiased MMD² of two equal-size samples with k(a, b) = (γ aᵀb + c)^degree, γ = 1/D by default.

    MMD²_u = Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(m(m−1)) − 2 Σ_{i,j} k(x_i, y_j)/m².
    """
    m = x.shape[0]
    if gamma is None:
        gamma = 1.0 / x.shape[1]

    def kernel(a, b):
        base = a @ b.T
        base *= gamma
        base += coef0
        out = base.copy()
        for _ in range(degree - 1):  # integer power by products: much faster than ** on large matrices
            out *= base
        return out

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(features1, features2, subsets: int = 100, subset_size: int | None = 1000, degree: int = 3,
        seed: int = 0) -> KIDResult:
    """Kernel Inception distance: unbiased polynomial-kernel MMD² (k = (xᵀy/D + 1)^degree) over random subsets.

    Each of ``subsets`` rounds draws ``subset_size`` rows of each feature matrix without replacement
    (``numpy.random.default_rng(seed)``) and computes :func:`polynomial_mmd2_unbiased`. ``subset_size=None`` uses
    min(1000, n1, n2). Returns a :class:`KIDResult` (mean, std over subsets, the per-subset values).
    """
    f1 = _as_feature_matrix("features1", _to_numpy(features1), None)
    f2 = _as_feature_matrix("features2", _to_numpy(features2), f1.shape[1])
    subsets = as_int("subsets", subsets, minimum=1)
    degree = as_int("degree", degree, minimum=1)
    n1, n2 = f1.shape[0], f2.shape[0]
    if subset_size is None:
        subset_size = min(1000, n1, n2)
    subset_size = as_int("subset_size", subset_size, minimum=2,
                         fix="The unbiased estimate needs at least 2 samples per subset.")
    if subset_size > min(n1, n2):
        raise ValueError(
            f"subset_size must be at most the number of feature vectors in each set (n1 = {n1}, n2 = {n2}); "
            f"got {subset_size}. Pass subset_size <= {min(n1, n2)} or subset_size=None."
        )
    rng = np.random.default_rng(seed)
    values = np.empty(subsets, dtype=np.float64)
    for s in range(subsets):
        i1 = rng.choice(n1, subset_size, replace=False)
        i2 = rng.choice(n2, subset_size, replace=False)
        values[s] = polynomial_mmd2_unbiased(f1[i1], f2[i2], degree=degree)
    return KIDResult(mean=float(values.mean()), std=float(values.std()), values=values, subsets=subsets,
                     subset_size=subset_size, degree=degree)
