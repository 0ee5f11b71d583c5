"""Sampling trajectories 0 = τ_0 < τ_1 < … < τ_K ≤ N (facts file §4.6).

Every function returns an int64 array ``[0, τ_1, …, τ_K]`` of length K + 1, so that ``trajectory[k]`` is τ_k and the
k-th reverse transition is (s, t) = (τ_{k−1}, τ_k). Most trajectories end at τ_K = N; the DDIM-style ones end
earlier (τ_K < N), and the sampler then starts from x_{τ_K} ~ N(0, I) exactly as DDIM's code does.
"""

from __future__ import annotations

import numpy as np

from ._validate import _show, as_int


def _check_NK(N, K):
    N = as_int("N", N, minimum=1, fix="N is the number of diffusion steps of the schedule.")
    K = as_int("K", K, minimum=1, fix="K is the number of sampling steps, 1 <= K <= N.")
    if K > N:
        raise ValueError(f"K must satisfy 1 <= K <= N = {N}; got K = {K}. A trajectory cannot have more steps than N.")
    return N, K


def _round_half_even(num: np.ndarray, den: int) -> np.ndarray:
    """round(num/den) with ties to even, in exact integer arithmetic (num >= 0, den > 0)."""
    q, r = np.divmod(num, den)
    twice = 2 * r
    up = (twice > den) | ((twice == den) & (q % 2 == 1))
    return q + up


#: the rounding conventions of :func:`even_trajectory`
ROUNDINGS = ("exact", "official")


def even_trajectory(N: int, K: int, rounding: str = "exact") -> np.ndarray:
    """The paper's even trajectory (ET, App. F.4): τ_k = round(1 + (k−1)(N−1)/(K−1)), k = 1..K.

    It always contains 1 and N; K = 1 gives ``[0, N]``. Ties round half to even (N = 1000, K = 25 gives
    τ_13 = 500, not 501).

    ``rounding="exact"`` (default) rounds the exact fraction, in integer arithmetic, as the paper's formula says.
    ``rounding="official"`` reproduces the official code bit for bit: it accumulates the float64 stride
    a = (N − 1)/(K − 1) (``cur += a`` from 1.0) and applies Python's ``round`` to the drifted value, so where the
    exact value is a tie x.5 the drift can push it either way. The two agree for every K of the paper's tables, but
    not everywhere: at N = 1000, 301 of the 999 values K = 2..1000 differ by one at a tie (K = 15: τ_8 = 500 here,
    501 there); at N = 4000, 1228 of 3999. Use ``"official"`` to reproduce the official code's runs at other K.
    """
    N, K = _check_NK(N, K)
    if rounding not in ROUNDINGS:
        raise ValueError(
            f"rounding must be 'exact' (the paper's formula, exact ties half to even) or 'official' (the official "
            f"code's floating-point accumulation); got {rounding!r}."
        )
    if K == 1:
        return np.array([0, N], dtype=np.int64)
    if rounding == "official":
        a = (N - 1) / (K - 1)
        cur, tau = 1.0, []
        for _ in range(K):
            tau.append(round(cur))
            cur += a
        return np.concatenate([[0], tau]).astype(np.int64)
    k = np.arange(K, dtype=np.int64)  # k − 1 = 0..K−1
    num = (K - 1) + k * (N - 1)  # (1 + (k−1)(N−1)/(K−1)) · (K−1)
    tau = _round_half_even(num, K - 1)
    return np.concatenate([[0], tau]).astype(np.int64)


def quadratic_trajectory(N: int, K: int, fraction: float = 0.8) -> np.ndarray:
    """DDIM's quadratic trajectory: τ_k = ⌊v_k⌋ + 1 with v = linspace(0, √(fraction·N), K)², k = 1..K.

    It ends at ⌊fraction·N⌋ + 1 (801 for N = 1000), not at N. Difference from the official code: there, small
    values collide (K = 30 gives 1, 1, 4, 9, …; K = 90 gives 1, 1, 1, 1, 2, 3, …) and the repeated entries become
    degenerate steps that still call the network. Here each collision is bumped to one more than its predecessor
    (τ_k = max(τ_k, τ_{k−1} + 1)), so the trajectory is strictly increasing and still has exactly K steps.
    """
    N, K = _check_NK(N, K)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in the open interval (0, 1); got {fraction}. DDIM uses 0.8.")
    v = np.linspace(0.0, np.sqrt(fraction * N), K) ** 2
    tau = np.floor(v).astype(np.int64) + 1
    for k in range(1, K):
        tau[k] = max(tau[k], tau[k - 1] + 1)
    # ⌊fraction·N⌋ + 1 <= N and bumping gives at most K <= N, so τ_K <= N always holds.
    return np.concatenate([[0], tau]).astype(np.int64)


def ddim_stride_trajectory(N: int, K: int) -> np.ndarray:
    """DDIM's stride trajectory (the paper's Table 9): a = ⌊N/K⌋, τ_k = 1 + (k−1)a, k = 1..K.

    It ends at 1 + (K−1)a <= N, usually below N (N = 1000, K = 10 gives 1, 101, …, 901).
    """
    N, K = _check_NK(N, K)
    a = N // K
    tau = 1 + a * np.arange(K, dtype=np.int64)
    return np.concatenate([[0], tau]).astype(np.int64)


def make_trajectory(timesteps, N: int) -> np.ndarray:
    """A validated trajectory from user-given τ_1 < … < τ_K (without the leading 0), each in 1..N."""
    N = as_int("N", N, minimum=1)
    arr = np.asarray(timesteps)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D sequence τ_1 < … < τ_K; got {_show(arr)}.")
    if arr.size and arr[0] == 0:
        raise ValueError(
            "timesteps must not include the leading 0 (make_trajectory adds it); got "
            f"{_show(arr)}. Pass τ_1..τ_K, or call validate_trajectory on a full trajectory."
        )
    return validate_trajectory(np.concatenate([[0], arr]), N)


def validate_trajectory(trajectory, N: int) -> np.ndarray:
    """Check a full trajectory ``[0, τ_1, …, τ_K]``: integers, strictly increasing, τ_K <= N; return it as int64."""
    N = as_int("N", N, minimum=1)
    arr = np.asarray(trajectory)
    hint = "Build one with even_trajectory(N, K) or make_trajectory([τ_1, …, τ_K], N)."
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"trajectory must be a 1-D array [0, τ_1, …, τ_K] with K >= 1; got {_show(arr)}. {hint}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"trajectory must hold integer timesteps; got {_show(arr)}. {hint}")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"trajectory must hold integers; got dtype {arr.dtype}. {hint}")
    arr = arr.astype(np.int64)
    if arr[0] != 0:
        raise ValueError(f"trajectory must start at 0 (the data, x_0); got {arr[0]} first. {hint}")
    steps = np.diff(arr)
    if np.any(steps <= 0):
        i = int(np.flatnonzero(steps <= 0)[0])
        what = "twice" if steps[i] == 0 else f"after {arr[i]}"
        raise ValueError(
            f"trajectory must be strictly increasing from 0 to at most N = {N}; got {arr[i + 1]} {what} "
            f"(positions {i}, {i + 1}). {hint}"
        )
    if arr[-1] > N:
        raise ValueError(f"trajectory must end at or before N = {N}; got τ_K = {arr[-1]}. {hint}")
    return arr


def transitions(trajectory) -> tuple[np.ndarray, np.ndarray]:
    """The reverse transitions (s, t) = (τ_{k−1}, τ_k), k = 1..K, as two int64 arrays."""
    arr = np.asarray(trajectory, dtype=np.int64)
    return arr[:-1], arr[1:]
