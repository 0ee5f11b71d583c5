"""Monte Carlo estimate of Γ_n = E‖ε̂_n(x_n)‖²/d, the one number per timestep that Theorem 1 needs
(paper eqs. 8–9, facts file §2.2).

Γ is in noise form throughout: Γ_n = E_{q_n(x_n)} ‖ε̂_n(x_n)‖²/d = β̄_n E‖s_n(x_n)‖²/d ∈ [0, 1] (for the optimal
model), stored as a float64 array of shape (N+1,) indexed by the timestep n, with index 0 unused (0.0). The official
code calls this array ``ms_eps``.

The estimator follows the paper's code: for every requested timestep n and every data point x_0^{(m)}, m = 1..M, draw
one fresh ε_{n,m} ~ N(0, I), form x_{n,m} = √ᾱ_n x_0^{(m)} + √β̄_n ε_{n,m} and run the model once:

    Γ̂_n = (1/M) Σ_m ‖ε̂_n(x_{n,m})‖²/d,      stderr_n = std_m(‖ε̂_n(x_{n,m})‖²/d) / √M.

That is N × M model evaluations for all timesteps. From the same ε and ε̂ (no extra evaluation) the estimator also
returns two statistics of the network's actual mean (``theory`` entry ``residual-variance``):

    R̂_n = (1/M) Σ_m ‖ε_{n,m} − ε̂_n(x_{n,m})‖²/d                    (the residual, for σ² = λ² + g²R)
    (1 − Γ)^_n = (1/M) Σ_m ⟨ε_{n,m} − ε̂_n, ε_{n,m} + ε̂_n⟩/d          (= mean(‖ε‖² − ‖ε̂‖²)/d, a control variate)

each with its standard error. The second uses E‖ε‖²/d = 1 exactly: it estimates 1 − Γ_n directly, without
subtracting two numbers near 1, and where ε̂ ≈ ε (large n) its spread is far smaller than that of Γ̂_n. For the exact
predictor E R̂_n = E (1 − Γ)^_n = 1 − Γ_n.

 Reproducibility and resumption rest on one design choice: the
samples m = 0..M−1 are cut into fixed chunks of :data:`CHUNK_SIZE`, and chunk c at timestep n draws its noise from
``default_rng(SeedSequence([seed, tag, n, c]))``. The noise therefore does not depend on the batch size, on the order
of the timesteps, or on which other timesteps are requested, and the running sums are merged chunk by chunk in a fixed
order, so a checkpointed run that is interrupted and resumed gives bit-identical results to an uninterrupted one.

The building blocks are public so that other drivers (:func:`analytic_dpm.distributed.distributed_gamma`) run the
same units with the same numbers: :func:`check_timesteps`, :func:`prepare_data`, :class:`ChunkNoise` (the noise of
one timestep), :func:`sq_norm_runner` (‖ε̂‖²/d for a batch), :func:`chunk_moments` (one chunk's count, sum and
centred sum of squares) and :func:`merge_chunk_moments` (the chunk-order merge into Γ̂ and its standard error),
plus :func:`schedule_sha256` and :func:`software_versions` for the metadata.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ._io import atomic_savez
from ._validate import _show, as_float_array, as_int, choice
from .schedules import Schedule

#: Samples per random-number chunk. Part of the random stream: changing it changes every estimate.
CHUNK_SIZE = 128
#: A checkpoint is rewritten at most this often (seconds) while running, and always at the end or on an error.
CHECKPOINT_INTERVAL_S = 5.0

_FORMAT = "analytic_dpm.gamma.GammaEstimate/1"
_CKPT_FORMAT = "analytic_dpm.gamma.checkpoint/2"
_OLD_CKPT_FORMATS = ("analytic_dpm.gamma.checkpoint/1",)
#: The per-sample statistics the estimator averages, in the column order of :func:`sq_norm_runner`'s output:
#: ‖ε̂‖²/d (Γ), ⟨ε − ε̂, ε + ε̂⟩/d (1 − Γ, control variate), ‖ε − ε̂‖²/d (R).
STATISTICS = ("gamma", "one_minus_gamma", "residual")
_S = len(STATISTICS)
_NOISE_TAG = 0x47414D4D  # "GAMM": keeps this noise stream apart from other users of SeedSequence([seed, ...])
_DATA_TAG = 0x44415441  # "DATA": seed handed to data.sample(...)
_HASH_BLOCK = 4096  # rows hashed at a time, to bound the memory of the float64 copy


# ---------------------------------------------------------------------------------------------------- result type
@dataclass(frozen=True, eq=False)
class GammaEstimate:
    """A Monte Carlo estimate of Γ_n = E‖ε̂_n(x_n)‖²/d (paper eq. 9, noise form).

    Attributes:
        gamma: float64 array (N+1,); ``gamma[n]`` = Γ̂_n, ``gamma[0]`` = 0.0, NaN at timesteps not estimated.
        stderr: float64 array (N+1,); standard error of the mean std_m(‖ε̂‖²/d)/√M, NaN where not estimated
            (and where M = 1, which gives no spread); ``stderr[0]`` = 0.0.
        num_samples: M, the number of x_0 samples (one ε per sample and timestep).
        timesteps: int64 array, the estimated timesteps in increasing order.
        config: JSON-compatible metadata (schedule, seed, M, batch size, data fingerprint, versions, wall time).

        one_minus_gamma: float64 (N+1,) or None: 1 − Γ_n estimated directly, mean_m(‖ε‖² − ‖ε̂‖²)/d (control
            variate; may be slightly negative where 1 − Γ_n is tiny); index 0 = 0.0, NaN where not estimated.
        one_minus_gamma_stderr: its standard error, like ``stderr``.
        residual: float64 (N+1,) or None: R̂_n = mean_m ‖ε − ε̂_n‖²/d, the residual of the network's mean.
        residual_stderr: its standard error.

    The last four are None for estimates saved before they existed (and for estimates built from Γ alone).
    ``np.asarray(estimate)`` is ``estimate.gamma``, so an estimate can be passed wherever a Γ array is expected.
    """

    gamma: np.ndarray
    stderr: np.ndarray
    num_samples: int
    timesteps: np.ndarray
    config: dict
    one_minus_gamma: np.ndarray | None = None
    one_minus_gamma_stderr: np.ndarray | None = None
    residual: np.ndarray | None = None
    residual_stderr: np.ndarray | None = None

    def __post_init__(self):
        gamma = np.array(self.gamma, dtype=np.float64)
        stderr = np.array(self.stderr, dtype=np.float64)
        if gamma.ndim != 1 or gamma.shape[0] < 2:
            raise ValueError(f"gamma must have shape (N+1,) with N >= 1; got shape {gamma.shape}.")
        if stderr.shape != gamma.shape:
            raise ValueError(f"stderr must have the shape of gamma {gamma.shape}; got shape {stderr.shape}.")
        ts = np.array(self.timesteps)
        if ts.ndim != 1 or not (ts.size == 0 or np.issubdtype(ts.dtype, np.integer)):
            raise ValueError(f"timesteps must be a 1-D integer array; got {_show(ts)}.")
        ts = ts.astype(np.int64)
        try:
            config = json.loads(json.dumps(self.config, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"config must be JSON-serializable (dicts, lists, str, finite numbers); {exc}.") from None
        for a in (gamma, stderr, ts):
            a.setflags(write=False)
        for name in ("one_minus_gamma", "one_minus_gamma_stderr", "residual", "residual_stderr"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.array(value, dtype=np.float64)
            if arr.shape != gamma.shape:
                raise ValueError(f"{name} must have the shape of gamma {gamma.shape}; got shape {arr.shape}.")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if (self.one_minus_gamma is None) != (self.one_minus_gamma_stderr is None) or (
                (self.residual is None) != (self.residual_stderr is None)):
            raise ValueError("one_minus_gamma and residual come with their standard errors: pass both or neither.")
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "stderr", stderr)
        object.__setattr__(self, "timesteps", ts)
        object.__setattr__(self, "num_samples", as_int("num_samples", self.num_samples, minimum=1))
        object.__setattr__(self, "config", config)

    @property
    def N(self) -> int:
        """Number of diffusion steps of the schedule the estimate belongs to."""
        return int(self.gamma.shape[0] - 1)

    def __array__(self, dtype=None, copy=None):
        out = self.gamma if dtype is None else self.gamma.astype(dtype)
        return out.copy() if copy else out

    def __repr__(self) -> str:
        return f"GammaEstimate(N={self.N}, M={self.num_samples}, {self.timesteps.size} timesteps)"

    def save(self, path) -> Path:
        """Write a ``.npz`` file (arrays plus the configuration as JSON text; no pickle) atomically to ``path``.

        The file is written exactly at ``path`` (no suffix is added). :meth:`load` restores it exactly.
        """
        path = Path(os.fspath(path))
        atomic_savez(path, {
            "format": np.array(_FORMAT),
            "gamma": self.gamma,
            "stderr": self.stderr,
            "timesteps": self.timesteps,
            "num_samples": np.array(self.num_samples, dtype=np.int64),
            "config_json": np.array(json.dumps(self.config, sort_keys=True, allow_nan=False)),
            **{name: getattr(self, name) for name in ("one_minus_gamma", "one_minus_gamma_stderr", "residual",
                                                      "residual_stderr") if getattr(self, name) is not None},
        })
        return path

    def relative_stderr(self, statistic: str = "gamma") -> np.ndarray:
        """stderr/|value| per timestep for ``statistic`` in 'gamma', 'one_minus_gamma' (direct),
        'one_minus_gamma_plain' (1 − Γ̂, whose error is Γ̂'s) or 'residual'; index 0 and unestimated steps are NaN."""
        value, err = self._value_stderr(statistic)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = err / np.abs(value)
        out[0] = np.nan
        return out

    def _value_stderr(self, statistic):
        choice("statistic", statistic, ("gamma", "one_minus_gamma", "one_minus_gamma_plain", "residual"))
        if statistic == "gamma":
            return self.gamma, self.stderr
        if statistic == "one_minus_gamma_plain":
            return 1.0 - self.gamma, self.stderr
        value = getattr(self, statistic)
        if value is None:
            raise ValueError(
                f"this estimate has no {statistic!r} (saved by an older version or built from Γ alone); rerun "
                "estimate_gamma, which returns it from the same network evaluations."
            )
        return value, getattr(self, f"{statistic}_stderr")

    @classmethod
    def load(cls, path) -> "GammaEstimate":
        """Read a file written by :meth:`save` (with ``allow_pickle=False``)."""
        path = Path(os.fspath(path))
        with np.load(path, allow_pickle=False) as z:
            fmt = str(z["format"]) if "format" in z.files else None
            if fmt != _FORMAT:
                what = "a Γ checkpoint (pass it as checkpoint= to estimate_gamma)" if fmt == _CKPT_FORMAT else (
                    f"format {fmt!r}" if fmt else "not a saved GammaEstimate")
                raise ValueError(
                    f"path {str(path)!r} is {what}; GammaEstimate.load expects a file written by "
                    f"GammaEstimate.save (format {_FORMAT!r})."
                )
            extra = {name: (z[name] if name in z.files else None) for name in (
                "one_minus_gamma", "one_minus_gamma_stderr", "residual", "residual_stderr")}
            return cls(
                gamma=z["gamma"], stderr=z["stderr"], num_samples=int(z["num_samples"]),
                timesteps=z["timesteps"], config=json.loads(str(z["config_json"])), **extra,
            )


# ---------------------------------------------------------------------------------------------------- conversions
def gamma_from_mean_sq_score(mean_sq_score, schedule: Schedule) -> np.ndarray:
    """Score form → noise form (paper eq. 8): Γ_n = β̄_n · E‖s_n(x_n)‖²/d, because s_n = −ε̂_n/√β̄_n.

    ``mean_sq_score`` has shape (N+1,) and holds E‖s_n‖²/d (the paper's Γ_n of eq. 8) at index n; index 0 is
    ignored and the result has 0.0 there. NaN (not estimated) passes through.
    """
    a = _check_per_timestep("mean_sq_score", mean_sq_score, schedule, "E‖s_n(x_n)‖²/d")
    out = np.zeros_like(a)
    out[1:] = schedule.beta_bar[1:] * a[1:]
    return out


def mean_sq_score_from_gamma(gamma, schedule: Schedule) -> np.ndarray:
    """Noise form → score form, the inverse of :func:`gamma_from_mean_sq_score`: E‖s_n‖²/d = Γ_n / β̄_n.

    ``gamma`` is an array of shape (N+1,) or a :class:`GammaEstimate`; index 0 of the result is 0.0.
    """
    g = _check_per_timestep("gamma", gamma.gamma if isinstance(gamma, GammaEstimate) else gamma, schedule,
                            "Γ_n = E‖ε̂_n(x_n)‖²/d")
    out = np.zeros_like(g)
    out[1:] = g[1:] / schedule.beta_bar[1:]
    return out


def _check_per_timestep(name, value, schedule, meaning) -> np.ndarray:
    _check_schedule(schedule)
    N = schedule.N
    a = as_float_array(name, value, fix=f"Pass an array of shape (N+1,) = ({N + 1},) holding {meaning} at index n.")
    if a.shape != (N + 1,):
        raise ValueError(
            f"{name} must have shape (N+1,) = ({N + 1},) for this schedule (index = timestep n, index 0 unused); "
            f"got shape {a.shape}. Pad a length-N array with a leading 0."
        )
    neg = a[1:] < 0.0
    if neg.any():
        raise ValueError(
            f"{name} holds {meaning}, which cannot be negative; got {_show(a[1:][neg])} at n = "
            f"{_show(np.flatnonzero(neg) + 1)}."
        )
    return a


# ---------------------------------------------------------------------------------------------------- estimator
def estimate_gamma(
    eps_model,
    schedule: Schedule,
    data,
    timesteps=None,
    num_samples: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
    checkpoint=None,
    device=None,
) -> GammaEstimate:
    """Monte Carlo Γ_n = (1/M) Σ_m ‖ε̂_n(√ᾱ_n x_0^{(m)} + √β̄_n ε_{n,m})‖²/d (paper eq. 9 in noise form).

    Args:
        eps_model: the ε-model protocol ``eps_model(x, n) -> eps_hat``; ``x`` has shape (B, *shape), ``n`` is a
            Python int in 1..N, and the result has the type, shape and device of ``x``.
        schedule: the forward :class:`~analytic_dpm.schedules.Schedule` the model was trained with.
        data: x_0 samples, either an array (numpy or torch) of shape (M_total, *shape), of which the first
            ``num_samples`` are used, or an object with ``sample(num, seed) -> array (num, *shape)`` (then
            ``num_samples`` is required; the seed passed is derived from ``seed``). Values must be floating point,
            finite, and in the range the model expects (usually [-1, 1]).
        timesteps: the timesteps n in 1..N to estimate (no duplicates; any order); default all of 1..N. The others
            are NaN in the result. A timestep's value does not depend on which others are requested.
        num_samples: M, the number of x_0 samples; default all of ``data`` when it is an array.
        batch_size: samples per model call. The result does not depend on it.
        seed: non-negative int; the noise of chunk c at timestep n comes from SeedSequence([seed, tag, n, c]).
        progress: show a tqdm bar over model calls; None (default) shows it only on a terminal, False never.
        checkpoint: optional path. Running sums and finished (timestep, chunk) units are written there atomically
            every :data:`CHECKPOINT_INTERVAL_S` seconds, at the end, and when the run stops with an error or
            Ctrl-C. Calling again with the same arguments resumes and gives bit-identical results; a checkpoint
            from different arguments (schedule, seed, M, timesteps, data, compute dtype) raises ValueError. The
            checkpoint cannot see the model: use a fresh path for a different model. The file is kept after a
            finished run; calling again then returns the result without evaluating the model.
        device: run in torch on this device (e.g. "cuda"). Torch is also used when ``data`` is a torch tensor
            (on its device). Torch runs in float32 when the data are float32, else float64; the noise is drawn in
            float64 with numpy and converted; ‖ε̂‖²/d is reduced in float64. Without torch, numpy float64.

    Returns:
        :class:`GammaEstimate` with ``gamma`` and ``stderr`` of shape (N+1,).

    The data are held in memory (on ``device`` for torch) for the whole run: M·d values.
    """
    t_start = time.perf_counter()
    _check_schedule(schedule)
    if not callable(eps_model):
        raise TypeError(
            f"eps_model must be callable as eps_model(x, n) -> eps_hat; got {type(eps_model).__name__}. "
            "Wrap a network in a function or use an adapter from analytic_dpm.models."
        )
    N = schedule.N
    ts = check_timesteps(timesteps, N)
    batch_size = as_int("batch_size", batch_size, minimum=1,
                        fix="It is the number of samples per model call, e.g. 256.")
    seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer such as 0.")
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True, False or None (show on a terminal only); got {progress!r}.")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint must be a file path (str or os.PathLike) or None; got {type(checkpoint).__name__}."
        )

    x0, M, data_info = prepare_data(data, num_samples, seed)
    shape = tuple(int(s) for s in x0.shape[1:])
    dim = math.prod(shape)
    runner = sq_norm_runner(x0, device)

    n_chunks = -(-M // CHUNK_SIZE)
    key = {
        "N": N,
        "schedule_sha256": schedule_sha256(schedule),
        "seed": seed,
        "num_samples": M,
        "timesteps": ts.tolist(),
        "chunk_size": CHUNK_SIZE,
        "data_sha256": data_info["sha256"],
        "data_shape": list(shape),
        "compute_dtype": runner.dtype_name,
    }
    state = _State.empty(len(ts))
    ckpt_path = None
    resumed_chunks = 0
    if checkpoint is not None:
        ckpt_path = Path(os.fspath(checkpoint))
        if ckpt_path.exists():
            state = _State.read(ckpt_path, key, n_chunks)
            resumed_chunks = int(sum(r[3] for r in state.rows))

    def write_checkpoint():
        state.write(ckpt_path, key, state.wall_before + (time.perf_counter() - t_start))

    if ckpt_path is not None and resumed_chunks == 0:
        if not ckpt_path.parent.is_dir():
            raise ValueError(
                f"checkpoint {os.fspath(checkpoint)!r} cannot be written: the folder {str(ckpt_path.parent)!r} does "
                "not exist. Create it first or choose another path."
            )
        write_checkpoint()  # fail now, not after the first interval, if the path is not writable

    starts = [r[3] * CHUNK_SIZE for r in state.rows]
    total_calls = sum(-(-(M - s) // batch_size) for s in starts if s < M)
    disable = None if progress is None else not bool(progress)
    bar = tqdm(total=total_calls, disable=disable, desc="Γ_n", unit="batch", dynamic_ncols=True)
    last_write = time.monotonic()
    sqrt_ab = np.sqrt(schedule.alpha_bar)
    sqrt_bb = np.sqrt(schedule.beta_bar)
    try:
        for i, n in enumerate(ts.tolist()):
            start = starts[i]
            if start >= M:
                continue
            noise = ChunkNoise(seed, n, M, shape)
            values = np.empty((M - start, _S), dtype=np.float64)
            a = start
            while a < M:
                b = min(a + batch_size, M)
                v = runner(float(sqrt_ab[n]), float(sqrt_bb[n]), a, b, noise.rows(a, b), eps_model, n)
                values[a - start:b - start] = v
                bar.update(1)
                # merge every chunk finished by this batch, in chunk order
                while True:
                    c = state.rows[i][3]
                    c_end = min((c + 1) * CHUNK_SIZE, M)
                    if c >= n_chunks or c_end > b:
                        break
                    state.merge(i, values[c * CHUNK_SIZE - start:c_end - start])
                if ckpt_path is not None and time.monotonic() - last_write >= CHECKPOINT_INTERVAL_S:
                    write_checkpoint()
                    last_write = time.monotonic()
                a = b
    except BaseException:
        if ckpt_path is not None:
            try:
                write_checkpoint()
            except Exception:  # never hide the original error behind a failed save
                pass
        raise
    finally:
        bar.close()
    if ckpt_path is not None:
        write_checkpoint()

    arrays = _empty_arrays(N)
    for i, n in enumerate(ts.tolist()):
        count, total, m2, _ = state.rows[i]
        for j in range(_S):
            arrays[2 * j][n], arrays[2 * j + 1][n] = _mean_stderr(count, total[j], m2[j])

    config = {
        "estimator": "analytic_dpm.gamma.estimate_gamma",
        "formula": _FORMULA,
        "schedule": schedule.to_dict(),
        "schedule_sha256": key["schedule_sha256"],
        "N": N,
        "seed": seed,
        "num_samples": M,
        "batch_size": batch_size,
        "timesteps": ts.tolist(),
        "chunk_size": CHUNK_SIZE,
        "dim": dim,
        "data_shape": list(shape),
        "data": data_info,
        "backend": runner.backend,
        "device": runner.device_name,
        "dtype": runner.dtype_name,
        "model": getattr(eps_model, "__qualname__", type(eps_model).__qualname__),
        "checkpoint": None if ckpt_path is None else os.fspath(checkpoint),
        "resumed_chunks": resumed_chunks,
        "versions": software_versions(),
        "wall_time_s": state.wall_before + (time.perf_counter() - t_start),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return estimate_from_arrays(arrays, M, ts, config)


_FORMULA = {
    "gamma": "mean_m ||eps_hat_n(x_nm)||^2 / d, x_nm = sqrt(alpha_bar_n) x0_m + sqrt(beta_bar_n) eps_nm",
    "one_minus_gamma": "mean_m <eps_nm - eps_hat_n(x_nm), eps_nm + eps_hat_n(x_nm)> / d  (control variate)",
    "residual": "mean_m ||eps_nm - eps_hat_n(x_nm)||^2 / d",
}


def _empty_arrays(N: int) -> list:
    """[value, stderr] × STATISTICS, each (N+1,) NaN with index 0 = 0.0."""
    out = []
    for _ in range(2 * _S):
        a = np.full(N + 1, np.nan)
        a[0] = 0.0
        out.append(a)
    return out


def estimate_from_arrays(arrays, M: int, timesteps, config: dict) -> GammaEstimate:
    """A :class:`GammaEstimate` from [Γ, stderr, 1 − Γ, stderr, R, stderr] (the order of :data:`STATISTICS`)."""
    g, ge, o, oe, r, re_ = arrays
    return GammaEstimate(gamma=g, stderr=ge, num_samples=M, timesteps=timesteps, config=config,
                         one_minus_gamma=o, one_minus_gamma_stderr=oe, residual=r, residual_stderr=re_)


# ------------------------------------------------------------------------------ building blocks and internals
def _check_schedule(schedule):
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"schedule must be an analytic_dpm Schedule; got {type(schedule).__name__}. "
            "Build one with Schedule.linear(N), Schedule.cosine(N) or Schedule.from_betas(betas)."
        )


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def check_timesteps(timesteps, N: int) -> np.ndarray:
    """The timesteps n to estimate Γ_n at, validated: distinct integers in 1..N, returned sorted as int64.

    ``None`` means all of 1..N. Accepts any integer sequence (also a torch tensor, or integral floats) in any order;
    repeats, values outside 1..N (Γ_0 is not defined), non-integers and empty input raise ValueError/TypeError.
    """
    if timesteps is None:
        return np.arange(1, N + 1, dtype=np.int64)
    if _is_torch(timesteps):
        timesteps = timesteps.detach().cpu().numpy()
    try:
        arr = np.asarray(timesteps)
    except (TypeError, ValueError):
        arr = np.asarray(timesteps, dtype=object)
    arr = arr.reshape(-1) if arr.ndim == 0 else arr
    fix = f"Pass distinct integers in 1..N = 1..{N}, e.g. even_trajectory(N, K)[1:] or range(1, N + 1)."
    if arr.ndim != 1:
        raise ValueError(f"timesteps must be a 1-D sequence of integers; got shape {arr.shape}. {fix}")
    if arr.size == 0:
        raise ValueError(f"timesteps must name at least one timestep; got an empty sequence. {fix}")
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"timesteps must be integers; got {_show(arr) if arr.dtype != object else arr!r}. {fix}")
    if np.issubdtype(arr.dtype, np.floating):
        frac = ~np.isfinite(arr) | (arr != np.round(arr))
        if frac.any():
            raise TypeError(f"timesteps must be integers; got {_show(arr[frac])}. {fix}")
    arr = arr.astype(np.int64)
    bad = (arr < 1) | (arr > N)
    if bad.any():
        raise ValueError(
            f"timesteps must lie in 1..N = 1..{N}; got {_ints(arr[bad])} (at position {_ints(np.flatnonzero(bad))}). "
            f"Γ_0 is not defined (index 0 is unused). {fix}"
        )
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        rep = counts > 1
        what = ", ".join(f"{int(u)} ({int(c)} times)" for u, c in zip(uniq[rep][:8], counts[rep][:8]))
        raise ValueError(f"timesteps must not repeat; got {what}{', ...' if rep.sum() > 8 else ''}. {fix}")
    return uniq.astype(np.int64)


def prepare_data(data, num_samples, seed):
    """The M samples x_0^{(m)} that :func:`estimate_gamma` uses, validated: returns ``(x0, M, info)``.

    ``data`` is an array (numpy or torch) of shape (M_total, *shape), of which the first ``num_samples`` (default:
    all) are taken as they are (no copy), or an object with ``sample(num, seed)``; then ``num_samples`` is required
    and the sampler gets a seed derived from ``seed`` alone (``SeedSequence([seed, tag])``).
    ``x0`` is the floating point array of shape (M, *shape), still numpy or torch; ``info`` is JSON metadata
    (source, type, dtype, and ``sha256`` of the shape and float64 values, which checkpoints use to recognise the
    data). Non-floating, non-finite or empty data raise ValueError/TypeError.
    """
    info: dict = {}
    sampler = getattr(data, "sample", None)
    if not isinstance(data, np.ndarray) and not _is_torch(data) and callable(sampler):
        if num_samples is None:
            raise ValueError(
                f"num_samples is required when data is a sampler ({type(data).__name__} with a sample(num, seed) "
                "method); pass e.g. num_samples=10000."
            )
        M = as_int("num_samples", num_samples, minimum=1, fix="It is the number M of x_0 samples to draw.")
        data_seed = int(np.random.SeedSequence([seed, _DATA_TAG]).generate_state(1)[0])
        x = sampler(M, data_seed)
        if not _is_torch(x):
            x = np.asarray(x)
        if x.ndim < 2 or x.shape[0] != M:
            raise ValueError(
                f"data.sample(num, seed) must return an array of shape (num, *shape) with at least one data "
                f"dimension; for num = {M} it returned shape {tuple(x.shape)}."
            )
        info.update(source="sampler", type=type(data).__qualname__, data_seed=data_seed)
    else:
        if _is_torch(data) or isinstance(data, np.ndarray):
            x = data
        else:
            try:
                x = np.asarray(data)
            except (TypeError, ValueError):
                x = None
            if x is None or x.dtype == object:
                raise TypeError(
                    f"data must be an array (numpy or torch) of x_0 samples with shape (M, *shape), or an object "
                    f"with a sample(num, seed) method; got {type(data).__name__}."
                )
        if x.ndim < 2:
            raise ValueError(
                f"data must have shape (M, *shape) with at least one data dimension; got shape {tuple(x.shape)}. "
                "For scalar data use shape (M, 1)."
            )
        total = int(x.shape[0])
        if total == 0:
            raise ValueError("data must hold at least one sample; got shape with M = 0.")
        if num_samples is None:
            M = total
        else:
            M = as_int("num_samples", num_samples, minimum=1, fix="It is the number M of x_0 samples to use.")
            if M > total:
                raise ValueError(
                    f"num_samples = {M} exceeds the {total} samples in data (shape {tuple(x.shape)}). Pass "
                    f"num_samples <= {total}, or None to use them all."
                )
            x = x[:M]
        info.update(source="array", type=type(data).__qualname__, available=total)
    if any(int(s) == 0 for s in x.shape[1:]):
        raise ValueError(f"data must have a non-empty sample shape; got shape {tuple(x.shape)}.")
    floating = x.is_floating_point() if _is_torch(x) else np.issubdtype(x.dtype, np.floating)
    if not floating:
        raise TypeError(
            f"data must be floating point; got dtype {x.dtype}. Convert it to float in the range the model was "
            "trained on, e.g. images as x.astype(np.float32) / 127.5 - 1."
        )
    info["dtype"] = str(x.dtype).replace("torch.", "")
    info["sha256"], finite = _fingerprint(x)
    if not finite:
        raise ValueError(
            "data must be finite; it contains NaN or inf values. Remove or repair those samples."
        )
    return x, M, info


def _fingerprint(x):
    """(sha256 of the shape and float64 values of x, all finite?) computed in blocks of rows."""
    h = hashlib.sha256(repr(tuple(int(s) for s in x.shape)).encode())
    finite = True
    for a in range(0, int(x.shape[0]), _HASH_BLOCK):
        blk = x[a:a + _HASH_BLOCK]
        if _is_torch(blk):
            import torch

            blk = blk.detach().to(device="cpu", dtype=torch.float64).numpy()
        blk = np.ascontiguousarray(blk, dtype=np.float64)
        finite = finite and bool(np.isfinite(blk).all())
        h.update(blk.tobytes())
    return h.hexdigest(), finite


def _ints(a, limit: int = 8) -> str:
    """'3, 7, 9' (at most ``limit`` values, then '...') for integer arrays in messages."""
    a = np.asarray(a).ravel()
    return ", ".join(str(int(v)) for v in a[:limit]) + (", ..." if a.size > limit else "")


def schedule_sha256(schedule: Schedule) -> str:
    """SHA-256 (hex) of the float64 bytes of β_1..β_N: the schedule's fingerprint in Γ configs and checkpoints.

    Raises TypeError when ``schedule`` is not a :class:`~analytic_dpm.schedules.Schedule`.
    """
    _check_schedule(schedule)
    return hashlib.sha256(np.ascontiguousarray(schedule.beta[1:], dtype=np.float64).tobytes()).hexdigest()


def software_versions() -> dict:
    """Versions of Python, numpy, analytic_dpm and (when imported) torch, for the ``versions`` entry of a config."""
    out = {"python": platform.python_version(), "numpy": np.__version__}
    pkg = sys.modules.get("analytic_dpm")
    out["analytic_dpm"] = getattr(pkg, "__version__", None)
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.__version__
    return out


class ChunkNoise:
    """The noise ε_{n,m} ~ N(0, I) of :func:`estimate_gamma` at one timestep n, for samples m = 0..M−1.

    Samples come in chunks of :data:`CHUNK_SIZE`; chunk c (samples c·CHUNK_SIZE … min((c+1)·CHUNK_SIZE, M) − 1)
    is ``default_rng(SeedSequence([seed, tag, n, c])).standard_normal((length, *shape))`` in float64, with a fixed
    tag that keeps this stream apart from other users of the seed. So the rows of sample m depend only on
    (seed, n, m, M mod CHUNK_SIZE for the last chunk), never on batching or on which process asks. The most recent
    chunk is cached, so consecutive batches inside one chunk draw it once.
    """

    def __init__(self, seed: int, n: int, M: int, shape: tuple):
        self.seed, self.n, self.M, self.shape = seed, n, M, shape
        self.cached = (-1, None)

    def chunk(self, c: int) -> np.ndarray:
        """All rows of chunk c, shape (length, *shape)."""
        if self.cached[0] != c:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _NOISE_TAG, self.n, c]))
            length = min(CHUNK_SIZE, self.M - c * CHUNK_SIZE)
            self.cached = (c, rng.standard_normal((length, *self.shape)))
        return self.cached[1]

    def rows(self, a: int, b: int) -> np.ndarray:
        """ε for samples a..b−1 (0 <= a < b <= M), shape (b − a, *shape); a view when inside one chunk."""
        pieces = []
        for c in range(a // CHUNK_SIZE, (b - 1) // CHUNK_SIZE + 1):
            lo = max(a, c * CHUNK_SIZE) - c * CHUNK_SIZE
            hi = min(b, (c + 1) * CHUNK_SIZE) - c * CHUNK_SIZE
            pieces.append(self.chunk(c)[lo:hi])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)


def sq_norm_runner(x0, device=None):
    """The per-batch work of :func:`estimate_gamma`: a callable
    ``runner(sqrt_ab, sqrt_bb, a, b, noise, eps_model, n)`` returning the float64 numpy array (b − a, 3) whose
    columns are the statistics of :data:`STATISTICS` for samples m = a..b−1, with ε = noise[m − a] and
    ε̂ = ε̂_n(√ᾱ_n x0[m] + √β̄_n ε): ‖ε̂‖²/d, ⟨ε − ε̂, ε + ε̂⟩/d (= (‖ε‖² − ‖ε̂‖²)/d without cancellation) and
    ‖ε − ε̂‖²/d. The noise is taken in float64 for the last two (the model sees it in the compute dtype).

    ``x0`` is the data from :func:`prepare_data`. Without ``device`` and with numpy data the work is float64 numpy;
    otherwise torch on ``device`` (default: the tensor's device), in float32 when x0 is float32, else float64, with
    the reduction in float64. The model output is checked (type, shape, finite values: ValueError naming the
    timestep and samples). Attributes ``backend``, ``device_name``, ``dtype_name`` describe the choice.
    """
    dim = math.prod(int(s) for s in x0.shape[1:])
    if device is None and not _is_torch(x0):
        return _NumpyRunner(np.asarray(x0, dtype=np.float64), dim)
    import torch

    if device is None:
        dev = x0.device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"device must name a torch device such as 'cpu' or 'cuda:0'; got {device!r} ({exc})."
            ) from None
    is32 = x0.dtype == torch.float32 if _is_torch(x0) else np.asarray(x0).dtype == np.float32
    dtype = torch.float32 if is32 else torch.float64
    t = x0 if _is_torch(x0) else torch.from_numpy(np.ascontiguousarray(x0))
    t = t.detach().to(device=dev, dtype=dtype)
    return _TorchRunner(t, dim, dev, dtype)


def _check_output(e, x, n, want):
    if not want(e):
        raise TypeError(
            f"eps_model must return the same type as its input x ({type(x).__module__}.{type(x).__name__}); "
            f"got {type(e).__module__}.{type(e).__name__} at timestep n = {n}."
        )
    if tuple(e.shape) != tuple(x.shape):
        raise ValueError(
            f"eps_model must return ε̂ of the same shape as its input x; got shape {tuple(e.shape)} for x of shape "
            f"{tuple(x.shape)} at timestep n = {n}."
        )


def _check_values(v, n, a, b):
    if not np.isfinite(v).all():
        bad = np.flatnonzero(~np.isfinite(v).all(axis=-1) if v.ndim > 1 else ~np.isfinite(v)) + a
        raise ValueError(
            f"eps_model returned non-finite ε̂ (NaN or inf, or too large to square) at timestep n = {n} for "
            f"samples {_ints(bad)} (0-based indices into the data). Check the model, its input scaling and the "
            "timestep convention (n in 1..N)."
        )
    return v


class _NumpyRunner:
    backend = "numpy"
    device_name = "cpu"
    dtype_name = "float64"

    def __init__(self, x0: np.ndarray, dim: int):
        self.x0, self.dim = x0, dim

    def __call__(self, sab, sbb, a, b, noise, eps_model, n):
        x = sab * self.x0[a:b] + sbb * noise
        e = eps_model(x, n)
        _check_output(e, x, n, lambda e: isinstance(e, np.ndarray))
        e = np.asarray(e, dtype=np.float64).reshape(b - a, -1)
        z = np.asarray(noise, dtype=np.float64).reshape(b - a, -1)
        v = np.empty((b - a, _S))
        with np.errstate(over="ignore", invalid="ignore"):
            diff = z - e
            v[:, 0] = np.square(e).sum(axis=1) / self.dim
            v[:, 1] = np.einsum("ij,ij->i", diff, z + e) / self.dim
            v[:, 2] = np.square(diff).sum(axis=1) / self.dim
        return _check_values(v, n, a, b)


class _TorchRunner:
    backend = "torch"

    def __init__(self, x0, dim, dev, dtype):
        self.x0, self.dim, self.dev, self.dtype = x0, dim, dev, dtype
        self.device_name = str(dev)
        self.dtype_name = str(dtype).replace("torch.", "")

    def __call__(self, sab, sbb, a, b, noise, eps_model, n):
        import torch

        host = noise if self.dtype == torch.float64 else noise.astype(np.float32)
        with torch.no_grad():
            z = torch.from_numpy(np.ascontiguousarray(host)).to(self.dev)
            x = sab * self.x0[a:b] + sbb * z
            e = eps_model(x, n)
            _check_output(e, x, n, lambda e: isinstance(e, torch.Tensor))
            e64 = e.detach().to(torch.float64).reshape(b - a, -1)
            z64 = (z if self.dtype == torch.float64 else torch.from_numpy(np.ascontiguousarray(noise)).to(self.dev))
            z64 = z64.reshape(b - a, -1)
            diff = z64 - e64
            v = torch.stack([e64.square().sum(dim=1), (diff * (z64 + e64)).sum(dim=1), diff.square().sum(dim=1)],
                            dim=1).div(self.dim)
        return _check_values(v.cpu().numpy(), n, a, b)


# ---------------------------------------------------------------------------------------------------- chunk moments
def chunk_moments(values) -> tuple[int, float, float]:
    """(count k, Σ v, Σ (v − v̄)²) of one chunk of values v = ‖ε̂_n(x_{n,m})‖²/d, in float64.

    The spread is the centred sum M2 (not Σ v², which loses digits to cancellation when the spread is small relative
    to the mean). :func:`estimate_gamma` reduces every chunk of :data:`CHUNK_SIZE` samples with this function and
    merges the triples in chunk order, exactly as :func:`merge_chunk_moments` does; a distributed run that reduces
    its chunks here and merges them there therefore reproduces the single-process numbers.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] == 0:
        raise ValueError(f"values must be a non-empty 1-D array (one chunk of ‖ε̂‖²/d); got shape {v.shape}.")
    k = int(v.shape[0])
    s = float(v.sum())
    return k, s, float(np.square(v - s / k).sum())


def merge_chunk_moments(moments) -> tuple[np.ndarray, np.ndarray]:
    """Γ̂ and its standard error from per-chunk moments: ``moments`` (T, C, 3) → (gamma (T,), stderr (T,)).

    ``moments[i, c]`` is :func:`chunk_moments` of chunk c at the i-th timestep: (count, Σv, Σ(v − v̄)²), counts
    positive integers (stored as floats, e.g. after an all-reduce). The chunks of each timestep are merged in the
    order c = 0..C−1 with Chan et al.'s pairwise update, the same arithmetic :func:`estimate_gamma` applies as its
    chunks finish; then Γ̂ = Σv / M (paper eq. 9, noise form) and stderr = √(M2 / (M − 1) / M), NaN when M = 1.
    """
    m = np.asarray(moments, dtype=np.float64)
    if m.ndim != 3 or m.shape[2] != 3 or m.shape[1] == 0:
        raise ValueError(
            f"moments must have shape (T, C, 3) with C >= 1: (count, sum, centred sum of squares) per timestep and "
            f"chunk, from chunk_moments; got shape {m.shape}."
        )
    counts = m[..., 0]
    bad = ~np.isfinite(counts) | (counts < 1) | (counts != np.round(counts))
    if bad.any():
        raise ValueError(
            f"moments[..., 0] must hold chunk sizes (integers >= 1); got {_show(counts[bad])}. Every chunk must be "
            "reduced (by some process) before the merge."
        )
    T, C = m.shape[:2]
    gamma = np.empty(T, dtype=np.float64)
    stderr = np.empty(T, dtype=np.float64)
    for i in range(T):
        acc = (0, 0.0, 0.0)
        for c in range(C):
            acc = _merge_moments(acc, (int(round(m[i, c, 0])), float(m[i, c, 1]), float(m[i, c, 2])))
        gamma[i], stderr[i] = _mean_stderr(*acc)
    return gamma, stderr


def _merge_moments(acc, chunk):
    """(count, Σv, M2) of ``acc`` merged with a non-empty chunk's (k, s, M2_c) (Chan et al.); acc may be empty."""
    count, total, m2 = acc
    k, s, m2_c = chunk
    if count:
        delta = s / k - total / count
        m2 = m2 + m2_c + delta * delta * (count * k / (count + k))
    else:
        m2 = m2_c
    return count + k, total + s, m2


def _mean_stderr(count, total, m2) -> tuple[float, float]:
    """(mean, standard error of the mean) from merged (count, Σv, M2); the stderr is NaN for count = 1."""
    return total / count, (math.sqrt(m2 / (count - 1) / count) if count > 1 else math.nan)


class _State:
    """Per requested timestep i: (count, Σ v, Σ (v − mean)², chunks done) for each of the :data:`STATISTICS`
    (Σ v and Σ (v − mean)² are tuples with one entry per statistic), merged chunk by chunk
    (:func:`chunk_moments`, then the pairwise merge that :func:`merge_chunk_moments` uses).

    Each row is one tuple replaced in a single assignment, so an interrupt never leaves a half-updated row.
    """

    def __init__(self, rows, wall_before=0.0):
        self.rows = rows
        self.wall_before = wall_before

    @classmethod
    def empty(cls, T: int) -> "_State":
        return cls([(0, (0.0,) * _S, (0.0,) * _S, 0) for _ in range(T)])

    def merge(self, i: int, v: np.ndarray):
        count, total, m2, done = self.rows[i]
        merged = [_merge_moments((count, total[j], m2[j]), chunk_moments(v[:, j])) for j in range(_S)]
        self.rows[i] = (merged[0][0], tuple(x[1] for x in merged), tuple(x[2] for x in merged), done + 1)

    def write(self, path: Path, key: dict, wall: float):
        rows = list(self.rows)
        atomic_savez(path, {
            "format": np.array(_CKPT_FORMAT),
            "key_json": np.array(json.dumps(key, sort_keys=True)),
            "count": np.array([r[0] for r in rows], dtype=np.int64),
            "sum": np.array([r[1] for r in rows], dtype=np.float64).reshape(len(rows), _S),
            "m2": np.array([r[2] for r in rows], dtype=np.float64).reshape(len(rows), _S),
            "chunks_done": np.array([r[3] for r in rows], dtype=np.int64),
            "wall_time_s": np.array(wall, dtype=np.float64),
        })

    @classmethod
    def read(cls, path: Path, key: dict, n_chunks: int) -> "_State":
        fix = "Delete the file to start over, or pass a new checkpoint path."
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ValueError(
                f"checkpoint {str(path)!r} exists but is not a readable .npz file ({exc}). {fix}"
            ) from None
        with z:
            fmt = str(z["format"]) if "format" in z.files else None
            if fmt in _OLD_CKPT_FORMATS:
                raise ValueError(
                    f"checkpoint {str(path)!r} was written by an older version of estimate_gamma (format {fmt!r}, "
                    "Γ only, without the residual and 1 − Γ sums), so it cannot be resumed. " + fix
                )
            if fmt != _CKPT_FORMAT:
                raise ValueError(
                    f"checkpoint {str(path)!r} is not a Γ checkpoint (format {fmt!r}, expected {_CKPT_FORMAT!r}). "
                    + ("It is a saved GammaEstimate; load it with GammaEstimate.load. " if fmt == _FORMAT else "")
                    + fix
                )
            old = json.loads(str(z["key_json"]))
            diffs = []
            for k in sorted(set(old) | set(key)):
                if old.get(k) != key.get(k):
                    a, b = old.get(k), key.get(k)
                    if isinstance(a, list) and isinstance(b, list) and (len(a) > 8 or len(b) > 8):
                        a, b = f"<{len(a)} values>", f"<{len(b)} values>"
                    diffs.append(f"{k}: checkpoint has {a!r}, this call has {b!r}")
            if diffs:
                raise ValueError(
                    f"checkpoint {str(path)!r} was written with different arguments, so its partial sums cannot be "
                    f"reused: {'; '.join(diffs)}. Call again with the original arguments to resume, or {fix[0].lower()}"
                    f"{fix[1:]}"
                )
            count, total, m2, done = (z[k] for k in ("count", "sum", "m2", "chunks_done"))
            T = len(key["timesteps"])
            if (not all(arr.shape == (T,) for arr in (count, done)) or total.shape != (T, _S)
                    or m2.shape != (T, _S) or (done > n_chunks).any()):
                raise ValueError(f"checkpoint {str(path)!r} is inconsistent (array shapes or chunk counts). {fix}")
            rows = [(int(c), tuple(float(x) for x in s), tuple(float(x) for x in q), int(d))
                    for c, s, q, d in zip(count, total, m2, done)]
            return cls(rows, wall_before=float(z["wall_time_s"]))


__all__ = [
    "CHUNK_SIZE",
    "CHECKPOINT_INTERVAL_S",
    "STATISTICS",
    "estimate_from_arrays",
    "GammaEstimate",
    "estimate_gamma",
    "gamma_from_mean_sq_score",
    "mean_sq_score_from_gamma",
    # building blocks of estimate_gamma, shared with analytic_dpm.distributed
    "ChunkNoise",
    "check_timesteps",
    "chunk_moments",
    "merge_chunk_moments",
    "prepare_data",
    "schedule_sha256",
    "software_versions",
    "sq_norm_runner",
]
