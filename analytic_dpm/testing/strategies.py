"""Hypothesis strategies for property-testing code against Analytic-DPM's theory.

Every strategy draws only valid objects (what the library's constructors accept) and reaches the awkward ones:

* :func:`betas`, :func:`schedules`: β anywhere in [1e-8, 0.999] (some near 0, some near 1), N = 1 up to thousands;
  the linear and cosine schedules of the paper at any N.
* :func:`trajectories`, :func:`schedule_and_trajectory`: strictly increasing ``[0, τ_1, …, τ_K]`` with K = 1 .. N,
  ending at N or earlier (DDIM-style), including the paper's even, quadratic and DDIM-stride trajectories.
* :func:`gamma_vectors`: Γ_n = E‖ε̂_n‖²/d (noise form, shape (N+1,), index 0 unused) with standard errors: valid
  (Γ ∈ [0, 1]), slightly invalid but consistent with Jensen (Γ̂ above 1 by less than its error, as Monte Carlo gives),
  or invalid beyond its error.
* :func:`residual_vectors`: R_n = E‖ε − ε̂_n‖²/d of a network's own mean (shape (N+1,), index 0 unused) with
  standard errors: never negative, possibly above 1 (a biased network, whose residual variance exceeds Theorem 2's
  eq. 11), exactly 0, or tiny (down to 1e-14, where 1 − Γ_n of a near-perfect predictor lives).
* :func:`gaussian_data`, :func:`gaussian_mixtures`: toy data with an exact score (:mod:`analytic_dpm.toy`).
* :func:`etas`: DDIM's η ∈ [0, 1], with 0 and 1 drawn often.

Usage in your own test suite::

    from hypothesis import given
    from analytic_dpm.testing import strategies as adst, assert_variances_within_bounds

    @given(adst.schedule_and_trajectory(schedules=adst.schedules()))
    def test_my_rule(sched_traj):
        sched, traj = sched_traj
        assert_variances_within_bounds(sched, traj, my_variances(sched, traj))

Large N (above :data:`SMALL_N`) draws arrays from a numpy generator seeded by hypothesis, so that drawing thousands
of values stays fast; small N draws every value through hypothesis, so failures shrink to readable examples.
"""

from __future__ import annotations

import math

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised only without hypothesis
    raise ImportError(
        "analytic_dpm.testing.strategies needs the hypothesis package, which the core library does not: "
        "pip install hypothesis (or pip install 'analytic-dpm[test]'). The checkers in analytic_dpm.testing and the "
        "check-variances command work without it."
    ) from exc

from ..schedules import Schedule
from ..toy import GaussianData, GaussianMixtureData
from ..trajectories import ddim_stride_trajectory, even_trajectory, quadratic_trajectory

#: Smallest and largest β the strategies draw (Schedule.from_betas accepts the open interval (0, 1)).
BETA_MIN = 1e-8
BETA_MAX = 0.999
#: Up to this N every value is drawn through hypothesis; above it, from a numpy generator seeded by hypothesis.
SMALL_N = 64
#: Largest −log ᾱ_N that the large-N β arrays reach, so that ᾱ_N stays a normal float64 (> 1e-300).
MAX_NEG_LOG_ALPHA_BAR = 650.0

TRAJECTORY_KINDS = ("random", "even", "quadratic", "ddim-stride", "full")
SCHEDULE_KINDS = ("linear", "cosine", "betas")


def _seeded_rng(draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


# ---------------------------------------------------------------------------------------------------- schedules
@st.composite
def betas(draw, max_n: int = 40, min_n: int = 1):
    """β_1..β_N (float64, length N in ``min_n..max_n``) for :meth:`Schedule.from_betas`: N = 1 included, β anywhere in
    [1e-8, 0.999], in one of four regimes: spread ("uniform"), all tiny (≤ 1e-4), all large (≥ 0.5), or "mixed".

    Up to N = :data:`SMALL_N` every β is a hypothesis float (shrinks well); above it the values come from a seeded
    generator, log-uniform in the regime's range, scaled so that ᾱ_N stays above ~1e-282.
    """
    if not 1 <= min_n <= max_n:
        raise ValueError(f"betas needs 1 <= min_n <= max_n; got min_n = {min_n}, max_n = {max_n}.")
    n = draw(st.integers(min_value=min_n, max_value=max_n))
    kind = draw(st.sampled_from(["uniform", "tiny", "large", "mixed"]))
    lo, hi = {"tiny": (BETA_MIN, 1e-4), "large": (0.5, BETA_MAX)}.get(kind, (BETA_MIN, BETA_MAX))
    if n <= SMALL_N:
        return np.array(draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n)), dtype=np.float64)
    rng = _seeded_rng(draw)
    if kind == "large":
        b = rng.uniform(lo, hi, n)
    else:
        b = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    neg_log = -np.log1p(-b)
    total = neg_log.sum()
    if total > MAX_NEG_LOG_ALPHA_BAR:  # keep ᾱ_N representable: shrink every −log(1 − β_n) by the same factor
        b = -np.expm1(-neg_log * (MAX_NEG_LOG_ALPHA_BAR / total))
    return np.clip(b, BETA_MIN, BETA_MAX)


@st.composite
def schedules(draw, min_n: int = 1, max_n: int = 4000, kinds=SCHEDULE_KINDS):
    """A :class:`Schedule` with N in ``min_n..max_n``: ``"linear"`` (Ho et al.; β from 1e-4·1000/N to
    min(0.02·1000/N, 0.999), so N <= 20 works too), ``"cosine"`` (Nichol & Dhariwal, β capped at 0.999) or
    ``"betas"`` (any β from :func:`betas`)."""
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in SCHEDULE_KINDS]
    if not kinds or bad:
        raise ValueError(f"kinds must be a non-empty subset of {SCHEDULE_KINDS}; got {kinds!r}.")
    kind = draw(st.sampled_from(kinds))
    if kind == "betas":
        return Schedule.from_betas(draw(betas(max_n=max_n, min_n=min_n)))
    N = draw(st.integers(min_n, max_n))
    if kind == "linear":
        return Schedule.linear(N, beta_start=1e-4 * 1000.0 / N, beta_end=min(0.02 * 1000.0 / N, BETA_MAX))
    return Schedule.cosine(N)


# ---------------------------------------------------------------------------------------------------- trajectories
@st.composite
def trajectories(draw, N: int, end_at_n: bool | None = None, kinds=TRAJECTORY_KINDS):
    """A valid trajectory ``[0, τ_1, …, τ_K]`` (int64, strictly increasing, τ_K <= N) for a schedule with N steps.

    Up to N = :data:`SMALL_N`: a random non-empty subset of 1..N (K = N possible). Above it, one of ``kinds``:
    "random" (a seeded random subset of any size), "even", "quadratic", "ddim-stride" (the paper's trajectories at a
    drawn K) or "full" (K = N). ``end_at_n``: True always includes N; None (default) includes it when a drawn boolean
    says so (it may also be in the subset by chance), so DDIM-style trajectories with τ_K < N are drawn too.
    """
    N = int(N)
    if N < 1:
        raise ValueError(f"trajectories needs N >= 1; got N = {N}.")
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in TRAJECTORY_KINDS]
    if not kinds or bad:
        raise ValueError(f"kinds must be a non-empty subset of {TRAJECTORY_KINDS}; got {kinds!r}.")
    if N <= SMALL_N:
        steps = set(draw(st.sets(st.integers(1, N), min_size=1, max_size=N)))
    else:
        kind = draw(st.sampled_from(kinds))
        if kind == "full":
            steps = set(range(1, N + 1))
        else:
            K = draw(st.integers(1, N))
            if kind == "random":
                steps = set((_seeded_rng(draw).choice(N, size=K, replace=False) + 1).tolist())
            else:
                fn = {"even": even_trajectory, "quadratic": quadratic_trajectory,
                      "ddim-stride": ddim_stride_trajectory}[kind]
                steps = set(fn(N, K)[1:].tolist())
    include_n = draw(st.booleans()) if end_at_n is None else bool(end_at_n)
    if include_n:
        steps.add(N)
    return np.array([0] + sorted(steps), dtype=np.int64)


@st.composite
def schedule_and_trajectory(draw, max_n: int = 40, schedules=None, end_at_n: bool | None = None):
    """(schedule, trajectory): by default a schedule from :func:`betas` (N = 1..``max_n``, β near 0 and 1) with a
    random strictly increasing trajectory (K = N possible, τ_K = N or earlier); pass ``schedules=`` (e.g.
    :func:`schedules`) to draw the schedule from another strategy."""
    if schedules is None:
        sched = Schedule.from_betas(draw(betas(max_n)))
    else:
        sched = draw(schedules)
        if not isinstance(sched, Schedule):
            raise TypeError(f"schedules must be a strategy of analytic_dpm.Schedule; it drew {type(sched).__name__}.")
    return sched, draw(trajectories(sched.N, end_at_n=end_at_n))


# ---------------------------------------------------------------------------------------------------- Γ and η
def etas():
    """DDIM's η ∈ [0, 1] (λ² = η²β̃): the ends 0 (deterministic DDIM) and 1 (DDPM's λ²) drawn often."""
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


GAMMA_VALIDITY = ("valid", "within_error", "beyond_error")


@st.composite
def gamma_vectors(draw, N: int, validity: str = "valid", n_sigma: float = 3.0, max_stderr: float = 0.05):
    """(gamma, stderr): float64 arrays of shape (N+1,) in the library's convention (Γ_n = E‖ε̂_n‖²/d, noise form,
    index 0 unused and 0.0), with a standard error per timestep, as :func:`~analytic_dpm.gamma.estimate_gamma` gives.

    ``validity``:

    * ``"valid"``: every Γ_n in [0, 1] (the ends included), stderr in [0, ``max_stderr``];
    * ``"within_error"``: slightly invalid, as Monte Carlo produces: at least one Γ_n above 1, but every Γ_n <= 1 +
      ``n_sigma``·stderr_n/2 (consistent with Jensen's Γ <= 1 within its error; ``reverse_variances`` clips it);
    * ``"beyond_error"``: at least one Γ_n > 1 + 2·``n_sigma``·stderr_n (or below 0): inconsistent with Jensen.
    """
    N = int(N)
    if N < 1:
        raise ValueError(f"gamma_vectors needs N >= 1; got N = {N}.")
    if validity not in GAMMA_VALIDITY:
        raise ValueError(f"validity must be one of {GAMMA_VALIDITY}; got {validity!r}.")
    if not (n_sigma > 0 and max_stderr > 0):
        raise ValueError(f"n_sigma and max_stderr must be > 0; got {n_sigma}, {max_stderr}.")
    if N <= SMALL_N:
        g = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=N, max_size=N)), dtype=np.float64)
        se = np.array(draw(st.lists(st.floats(0.0, max_stderr), min_size=N, max_size=N)), dtype=np.float64)
    else:
        rng = _seeded_rng(draw)
        g = rng.uniform(0.0, 1.0, N)
        g[rng.random(N) < 0.05] = 1.0
        se = rng.uniform(0.0, max_stderr, N)
    if validity != "valid":
        # pick the timesteps that leave [0, 1], and by how many standard errors
        i = draw(st.integers(0, N - 1))
        others = draw(st.lists(st.integers(0, N - 1), max_size=min(N, 5)))
        idx = sorted({i, *others})
        se[idx] = np.maximum(se[idx], draw(st.floats(1e-4, max_stderr)))
        if validity == "within_error":
            frac = draw(st.floats(0.01, 0.5))  # at most n_sigma/2 standard errors above 1
            g[idx] = 1.0 + frac * n_sigma * se[idx]
        else:
            factor = draw(st.floats(2.0, 100.0))
            g[i] = 1.0 + factor * n_sigma * se[i]
            if draw(st.booleans()):  # Γ̂ is a mean of squares: a negative value is never consistent
                j = draw(st.integers(0, N - 1))
                if j != i:
                    g[j] = -draw(st.floats(1e-6, 1.0))
    gamma = np.concatenate([[0.0], g])
    stderr = np.concatenate([[0.0], se])
    return gamma, stderr


RESIDUAL_KINDS = ("any", "exact", "above_one", "tiny")
#: Smallest positive R the strategies draw: 1 − Γ_N of the cosine schedule on toy data is ≈ 1e-11.
RESIDUAL_TINY = 1e-14


@st.composite
def residual_vectors(draw, N: int, kind: str = "any", max_value: float = 4.0, max_relative_stderr: float = 0.1):
    """(residual, stderr): float64 arrays of shape (N+1,) in the library's convention (R_n = E‖ε − ε̂_n(x_n)‖²/d,
    index 0 unused and 0.0), with a standard error per timestep, as :func:`~analytic_dpm.gamma.estimate_gamma` gives
    (``GammaEstimate.residual``, ``residual_stderr``). R_n >= 0 always (a mean of squares); stderr_n = q·R_n with q in
    [0, ``max_relative_stderr``].

    ``kind``:

    * ``"any"``: R_n in [0, ``max_value``]: exactly 0, tiny (log-uniform down to :data:`RESIDUAL_TINY`), exactly 1,
      and above 1 all reachable;
    * ``"exact"``: R_n in [0, 1], as R = 1 − Γ of the exact predictor (then the residual variance is Theorem 1's);
    * ``"above_one"``: at least one R_n in (1, ``max_value``] (an imperfect mean: the residual variance exceeds
      Theorem 2's eq. 11 there, legitimately), the others as for "any";
    * ``"tiny"``: every R_n log-uniform in [:data:`RESIDUAL_TINY`, 1e-3], where 1 − Γ̂ computed from Γ̂ loses its
      digits and R̂ does not.
    """
    N = int(N)
    if N < 1:
        raise ValueError(f"residual_vectors needs N >= 1; got N = {N}.")
    if kind not in RESIDUAL_KINDS:
        raise ValueError(f"kind must be one of {RESIDUAL_KINDS}; got {kind!r}.")
    if not (max_value > 1.0 and max_relative_stderr >= 0):
        raise ValueError(f"max_value must be > 1 and max_relative_stderr >= 0; got {max_value}, "
                         f"{max_relative_stderr}.")
    hi = 1.0 if kind == "exact" else (1e-3 if kind == "tiny" else float(max_value))
    log_lo, log_hi = math.log(RESIDUAL_TINY), math.log(hi)
    if N <= SMALL_N:
        if kind == "tiny":
            value = st.floats(log_lo, log_hi).map(math.exp)
        else:
            value = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, hi),
                              st.floats(log_lo, log_hi).map(math.exp))
        r = np.array(draw(st.lists(value, min_size=N, max_size=N)), dtype=np.float64)
        q = np.array(draw(st.lists(st.floats(0.0, max_relative_stderr), min_size=N, max_size=N)), dtype=np.float64)
    else:
        rng = _seeded_rng(draw)
        r = np.exp(rng.uniform(log_lo, log_hi, N))
        if kind != "tiny":
            lin = rng.random(N) < 0.5
            r[lin] = rng.uniform(0.0, hi, int(lin.sum()))
            r[rng.random(N) < 0.03] = 0.0
            r[rng.random(N) < 0.03] = 1.0
        q = rng.uniform(0.0, max_relative_stderr, N)
    r = np.clip(r, RESIDUAL_TINY if kind == "tiny" else 0.0, hi)  # exp(log(x)) may round just outside
    if kind == "above_one":
        idx = sorted({draw(st.integers(0, N - 1)), *draw(st.lists(st.integers(0, N - 1), max_size=min(N, 5)))})
        r[idx] = draw(st.floats(1.0, float(max_value), exclude_min=True))
    residual = np.concatenate([[0.0], r])
    stderr = np.concatenate([[0.0], q * r])
    return residual, stderr


# ---------------------------------------------------------------------------------------------------- toy data
def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@st.composite
def gaussian_data(draw, min_dim: int = 1, max_dim: int = 4, rotate: bool | None = None,
                  min_var: float = 1e-4, max_var: float = 4.0):
    """:class:`~analytic_dpm.toy.GaussianData` N(m, U diag(λ) Uᵀ) with d in ``min_dim..max_dim``, mean entries in
    [−1, 1], variances log-uniform in [``min_var``, ``max_var``] (spread spectra, as images have) and, when ``rotate``
    (None: drawn), a random orthogonal eigenbasis. Exact score, ε*, Γ and generated distribution are known."""
    if not 1 <= min_dim <= max_dim:
        raise ValueError(f"gaussian_data needs 1 <= min_dim <= max_dim; got {min_dim}, {max_dim}.")
    if not 0 < min_var <= max_var:
        raise ValueError(f"gaussian_data needs 0 < min_var <= max_var; got {min_var}, {max_var}.")
    d = draw(st.integers(min_dim, max_dim))
    mean = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=d, max_size=d)), dtype=np.float64)
    log_var = draw(st.lists(st.floats(math.log(min_var), math.log(max_var)), min_size=d, max_size=d))
    lam = np.exp(np.array(log_var, dtype=np.float64))
    rot = draw(st.booleans()) if rotate is None else bool(rotate)
    basis = _orthogonal(_seeded_rng(draw), d) if rot and d > 1 else None
    return GaussianData.from_spectrum(mean, lam, basis)


@st.composite
def gaussian_mixtures(draw, min_dim: int = 1, max_dim: int = 2, max_components: int = 3,
                      min_var: float = 1e-3, max_var: float = 1.0):
    """:class:`~analytic_dpm.toy.GaussianMixtureData` with 1..``max_components`` components, d in
    ``min_dim..max_dim`` (the default d <= 2 has quadrature-exact Γ via ``gamma_reference``), weights bounded away
    from 0, means in [−2, 2] and diagonal variances log-uniform in [``min_var``, ``max_var``]."""
    if not 1 <= min_dim <= max_dim:
        raise ValueError(f"gaussian_mixtures needs 1 <= min_dim <= max_dim; got {min_dim}, {max_dim}.")
    if max_components < 1:
        raise ValueError(f"max_components must be >= 1; got {max_components}.")
    d = draw(st.integers(min_dim, max_dim))
    k = draw(st.integers(1, max_components))
    w = np.array(draw(st.lists(st.floats(0.05, 1.0), min_size=k, max_size=k)), dtype=np.float64)
    w = w / w.sum()
    means = np.array(draw(st.lists(st.lists(st.floats(-2.0, 2.0), min_size=d, max_size=d), min_size=k, max_size=k)),
                     dtype=np.float64)
    lv = draw(st.lists(st.lists(st.floats(math.log(min_var), math.log(max_var)), min_size=d, max_size=d),
                       min_size=k, max_size=k))
    return GaussianMixtureData(w, means, np.exp(np.array(lv, dtype=np.float64)))


__all__ = [
    "betas", "schedules", "trajectories", "schedule_and_trajectory", "gamma_vectors", "residual_vectors", "etas",
    "gaussian_data", "gaussian_mixtures", "BETA_MIN", "BETA_MAX", "SMALL_N", "TRAJECTORY_KINDS", "SCHEDULE_KINDS",
    "GAMMA_VALIDITY", "RESIDUAL_KINDS", "RESIDUAL_TINY",
]
