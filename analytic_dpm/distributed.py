"""Many processes and GPUs through ``torch.distributed`` (launched with ``torchrun``): Γ, samples, feature statistics.

Design (DESIGN.md §8, "Scale-out"): work is cut into units whose random numbers depend only on the unit's global
index, never on the process that runs it, so results do not change with the number of processes.

* :func:`distributed_gamma`: the (timestep, chunk) units of :func:`~analytic_dpm.gamma.estimate_gamma` (chunks of
  :data:`~analytic_dpm.gamma.CHUNK_SIZE` samples, noise from ``SeedSequence([seed, tag, n, c])``) are split into
  contiguous blocks over the ranks; each rank reduces its chunks to (count, Σv, Σ(v − v̄)²), the per-chunk sums are
  all-reduced, and every rank merges them in chunk order exactly as ``estimate_gamma`` does. The result equals the
  single-process estimate up to the network's batch-dependent rounding (bit for bit where the network gives the
  same values per sample whatever the batch).
* :func:`distributed_sample`: samples are cut into shards of ``shard_size`` consecutive indices; shard j always holds
  samples j·S … and runs :func:`~analytic_dpm.sampling.sample` with ``first_index = j·S``, so its noise is the
  library's per-sample stream and its batches are the same on any number of processes: the output is identical for
  any world size. Each shard is written to ``out_dir/shard_JJJJJJ.npz`` as it finishes (atomically); a rerun skips
  finished shards, so an interrupted run resumes. Rank 0 assembles ``out_dir/samples.npy``.
* :func:`distributed_feature_statistics`: each rank streams the features of its block of images into a float64
  :class:`~analytic_dpm.metrics.FeatureStatistics`; the (count, mean, co-moment) of the ranks are gathered and merged
  (Chan et al.) by :func:`~analytic_dpm.metrics.all_gather_statistics`.

Launch::

    torchrun --nproc_per_node=4 -m analytic_dpm.distributed sample --model model.pt --gamma gamma.npz \\
        --method analytic-ddpm --K 10 --num-samples 50000 --out samples/
    torchrun --nproc_per_node=4 -m analytic_dpm.distributed gamma --model model.pt --data train.npy \\
        --num-samples 50000 --out gamma.npz

Every function also runs without a process group (one process, world size 1). The backend is NCCL on CUDA and gloo
otherwise; the network runs in its own precision, the coefficients and reductions in float64.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import gamma as _gamma  # read CHECKPOINT_INTERVAL_S from the module at run time (tests lower it)
from ._io import atomic_savez
from ._validate import as_int, choice
from .gamma import (
    CHUNK_SIZE,
    ChunkNoise,
    GammaEstimate,
    check_timesteps,
    chunk_moments,
    merge_chunk_moments,
    prepare_data,
    schedule_sha256,
    software_versions,
    sq_norm_runner,
)
from .sampling import (
    BACKENDS,
    NOISE_CHUNK,
    check_sample_shape,
    coefficient_table,
    sample,
    torch_device_dtype,
    x0_clamp_range,
)
from .schedules import Schedule

_SHARD_FORMAT = "analytic_dpm.distributed.sample_shard/1"
_RUN_FORMAT = "analytic_dpm.distributed.sample_run/1"


# ======================================================================================== process group
@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, the torch ``device`` it
    should use, the ``backend`` ('nccl', 'gloo' or None without a process group) and whether
    :func:`init_distributed` created the group (then :func:`shutdown` destroys it)."""

    rank: int
    world_size: int
    local_rank: int
    device: str
    backend: str | None
    initialized_here: bool

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes shared files and prints)."""
        return self.rank == 0


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() else None


def _active(group=None) -> bool:
    dist = _dist()
    return dist is not None and dist.is_initialized()


def get_rank(group=None) -> int:
    """This process's rank in ``group`` (0 without a process group)."""
    return _dist().get_rank(group) if _active() else 0


def get_world_size(group=None) -> int:
    """Number of processes in ``group`` (1 without a process group)."""
    return _dist().get_world_size(group) if _active() else 1


def barrier(group=None):
    """Wait for every process of ``group`` (no-op without a process group)."""
    if _active() and get_world_size(group) > 1:
        _dist().barrier(group=group)


def init_distributed(backend: str | None = None, timeout_s: float = 3600.0) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT), or run as a single process when those are absent.

    ``backend``: 'nccl' or 'gloo'; default NCCL when CUDA is available, else gloo. With CUDA each process uses
    ``cuda:LOCAL_RANK``. ``timeout_s`` bounds every collective (sampling ranks wait for each other at the end).
    An already initialized group is used as it is.
    """
    import torch

    dist = _dist()
    if dist is None:  # pragma: no cover - torch built without distributed support
        raise RuntimeError("this torch build has no torch.distributed; run with one process.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if dist.is_initialized():
        be = dist.get_backend()
        dev = f"cuda:{torch.cuda.current_device()}" if cuda and be == "nccl" else (
            f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}" if cuda else "cpu")
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, be, False)
    if not all(v in os.environ for v in ("RANK", "WORLD_SIZE")):
        return DistContext(0, 1, 0, "cuda:0" if cuda else "cpu", None, False)
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    choice("backend", backend, ("nccl", "gloo"))
    if backend == "nccl" and not cuda:
        raise ValueError("backend='nccl' needs CUDA, but torch.cuda.is_available() is False; use backend='gloo'.")
    device = "cpu"
    if cuda:
        idx = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(idx)
        device = f"cuda:{idx}"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=float(timeout_s)))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, backend, True)


def shutdown(ctx: DistContext | None = None):
    """Destroy the process group if :func:`init_distributed` created it (``ctx``) or, without ``ctx``, if any."""
    if _active() and (ctx is None or ctx.initialized_here):
        _dist().destroy_process_group()


def _collective_device(group):
    import torch

    if _dist().get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values, group=None) -> np.ndarray:
    """Σ over the ranks of ``group`` of a float64 array (each rank passes its own; every rank gets the sum).

    Without a process group (or with one process) returns a float64 copy.
    """
    arr = np.array(values, dtype=np.float64)
    if not _active() or get_world_size(group) == 1:
        return arr
    import torch

    t = torch.from_numpy(arr).to(_collective_device(group))
    _dist().all_reduce(t, op=_dist().ReduceOp.SUM, group=group)
    return t.cpu().numpy().reshape(arr.shape)


def _block(total: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous block [lo, hi) of ``total`` items that ``rank`` of ``world`` handles (sizes differ by <= 1)."""
    return total * rank // world, total * (rank + 1) // world


# ======================================================================================== Γ
def distributed_gamma(
    eps_model,
    schedule: Schedule,
    data,
    timesteps=None,
    num_samples: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
    device=None,
    group=None,
    checkpoint=None,
) -> GammaEstimate:
    """Γ_n = (1/M) Σ_m ‖ε̂_n(√ᾱ_n x_0^{(m)} + √β̄_n ε_{n,m})‖²/d (paper eq. 9, noise form) over all processes.

    Arguments as :func:`~analytic_dpm.gamma.estimate_gamma` (same noise: chunk c of timestep n draws from
    ``SeedSequence([seed, tag, n, c])``; same data handling; every rank must pass the same ``data``). The
    T·⌈M/128⌉ (timestep, chunk) units are split into contiguous blocks over the ranks; each chunk is reduced to
    (count, Σv, Σ(v − v̄)²), v = ‖ε̂‖²/d; these sums are all-reduced and merged in chunk order on every rank, exactly
    as the single-process estimator merges them. Every rank returns the same :class:`GammaEstimate`.
    ``device``: as in ``estimate_gamma`` (None with numpy data runs the float64 numpy path; pass the rank's device,
    e.g. ``init_distributed().device``, to run in torch on the GPU).

    ``checkpoint``: a path stem; each rank keeps its finished (timestep, chunk) sums in
    ``<stem>.rank<r>of<w>.npz`` (written atomically at most every ``gamma.CHECKPOINT_INTERVAL_S`` seconds and at the
    end), and a rerun with the same arguments and world size skips them, so an interrupted run loses at most that
    interval. A checkpoint written for other arguments raises ValueError naming the file.
    """
    t_start = time.perf_counter()
    sched_sha = schedule_sha256(schedule)  # raises TypeError unless schedule is a Schedule
    if not callable(eps_model):
        raise TypeError(f"eps_model must be callable as eps_model(x, n) -> eps_hat; got {type(eps_model).__name__}.")
    N = schedule.N
    ts = check_timesteps(timesteps, N)
    batch_size = as_int("batch_size", batch_size, minimum=1, fix="It is the number of samples per model call.")
    seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer such as 0.")
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True, False or None (show on a terminal only); got {progress!r}.")
    x0, M, data_info = prepare_data(data, num_samples, seed)
    shape = tuple(int(s) for s in x0.shape[1:])
    dim = math.prod(shape)
    runner = sq_norm_runner(x0, device)
    rank, world = get_rank(group), get_world_size(group)

    T, C = len(ts), -(-M // CHUNK_SIZE)
    u_lo, u_hi = _block(T * C, rank, world)
    plan = []  # (i, c0, c1): chunks c0..c1-1 of timestep ts[i]
    for i in range(T):
        lo, hi = max(u_lo, i * C), min(u_hi, (i + 1) * C)
        if lo < hi:
            plan.append((i, lo - i * C, hi - i * C))
    n_calls = sum(-(-(min(c1 * CHUNK_SIZE, M) - c0 * CHUNK_SIZE) // batch_size) for _, c0, c1 in plan)
    disable = (None if progress is None else not bool(progress)) if rank == 0 else True
    bar = tqdm(total=n_calls, disable=disable, desc=f"Γ_n (rank 0 of {world})", unit="batch", dynamic_ncols=True)
    sqrt_ab, sqrt_bb = np.sqrt(schedule.alpha_bar), np.sqrt(schedule.beta_bar)
    S = len(_gamma.STATISTICS)
    moments = np.zeros((S, T, C, 3), dtype=np.float64)  # per statistic and chunk: count, Σv, Σ(v − mean_c)²
    done = np.zeros(len(plan), dtype=bool)
    ck_path, ck_key = None, None
    if checkpoint is not None:
        ck_path = Path(f"{os.fspath(checkpoint)}.rank{rank}of{world}.npz")
        ck_key = json.dumps({"schedule": sched_sha, "timesteps": ts.tolist(), "M": M, "seed": seed, "data": data_info,
                             "plan": plan, "dim": dim, "statistics": list(_gamma.STATISTICS)},
                            sort_keys=True, default=str)
        if ck_path.exists():
            with np.load(ck_path) as z:
                if str(z["key"]) != ck_key:
                    raise ValueError(f"checkpoint {ck_path} was written by a run with other arguments (schedule, "
                                     "timesteps, M, seed, data or world size); delete it or pass another checkpoint=.")
                moments, done = z["moments"].copy(), z["done"].copy()
            bar.update(sum(-(-(min(c1 * CHUNK_SIZE, M) - c0 * CHUNK_SIZE) // batch_size)
                           for (_, c0, c1), d in zip(plan, done) if d))
    last_write = time.perf_counter()

    def write_checkpoint():
        if ck_path is not None:
            ck_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_savez(ck_path, {"key": np.array(ck_key), "moments": moments, "done": done})

    try:
        for j, (i, c0, c1) in enumerate(plan):
            if done[j]:
                continue
            n = int(ts[i])
            noise = ChunkNoise(seed, n, M, shape)
            r_lo, r_hi = c0 * CHUNK_SIZE, min(c1 * CHUNK_SIZE, M)
            values = np.empty((r_hi - r_lo, S), dtype=np.float64)
            for a in range(r_lo, r_hi, batch_size):
                b = min(a + batch_size, r_hi)
                values[a - r_lo:b - r_lo] = runner(float(sqrt_ab[n]), float(sqrt_bb[n]), a, b, noise.rows(a, b),
                                                   eps_model, n)
                bar.update(1)
            for c in range(c0, c1):
                rows = values[c * CHUNK_SIZE - r_lo:min((c + 1) * CHUNK_SIZE, M) - r_lo]
                for q in range(S):
                    moments[q, i, c] = chunk_moments(rows[:, q])
            done[j] = True
            if ck_path is not None and time.perf_counter() - last_write >= _gamma.CHECKPOINT_INTERVAL_S:
                write_checkpoint()
                last_write = time.perf_counter()
        write_checkpoint()
    except BaseException:
        write_checkpoint()  # keep what is finished (KeyboardInterrupt included)
        raise
    finally:
        bar.close()
    moments = all_reduce_sum(moments, group)

    arrays = _gamma._empty_arrays(N)
    for q in range(S):  # the chunk-order merge of estimate_gamma, per statistic
        arrays[2 * q][ts], arrays[2 * q + 1][ts] = merge_chunk_moments(moments[q])
    config = {
        "estimator": "analytic_dpm.distributed.distributed_gamma",
        "formula": _gamma._FORMULA,
        "schedule": schedule.to_dict(),
        "schedule_sha256": sched_sha,
        "N": N, "seed": seed, "num_samples": M, "batch_size": batch_size, "timesteps": ts.tolist(),
        "chunk_size": CHUNK_SIZE, "dim": dim, "data_shape": list(shape), "data": data_info,
        "backend": runner.backend, "device": runner.device_name, "dtype": runner.dtype_name,
        "model": getattr(eps_model, "__qualname__", type(eps_model).__qualname__),
        "world_size": world, "versions": software_versions(),
        "wall_time_s": time.perf_counter() - t_start,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return _gamma.estimate_from_arrays(arrays, M, ts, config)


# ======================================================================================== feature statistics
def distributed_feature_statistics(extractor, images, batch_size: int = 256, device=None, progress=None, group=None):
    """Float64 feature statistics (count, mean, co-moment) of ``images`` computed over all processes.

    Every rank passes the same ``images`` (an array or tensor (M, C, H, W) in [−1, 1], e.g. a memory-mapped
    ``samples.npy``) and reads only its contiguous block; the per-rank statistics are merged in rank order by
    :func:`~analytic_dpm.metrics.all_gather_statistics`, so every rank returns the same
    :class:`~analytic_dpm.metrics.FeatureStatistics`, equal to a single pass up to rounding.
    """
    from .metrics import FeatureStatistics, all_gather_statistics, feature_statistics

    if not hasattr(images, "shape") or len(images.shape) != 4:
        raise TypeError(f"images must be an array or tensor of shape (M, C, H, W) (every rank passes the same one); "
                        f"got {type(images).__name__} of shape {getattr(images, 'shape', None)}.")
    rank, world = get_rank(group), get_world_size(group)
    lo, hi = _block(int(images.shape[0]), rank, world)
    show = progress if rank == 0 else False
    stats = feature_statistics(extractor, images[lo:hi], batch_size=batch_size, device=device, progress=show) \
        if hi > lo else FeatureStatistics()
    if not _active() or world == 1:
        return stats
    if stats.dim is None:  # an empty block: learn the dimension from one image so that every rank agrees on it
        dim = getattr(extractor, "feature_dim", None)
        if dim is None:
            dim = feature_statistics(extractor, images[:1], batch_size=1, device=device, progress=False).dim
        stats = FeatureStatistics(int(dim))
    return all_gather_statistics(stats, group)


# ======================================================================================== sampling
def _shard_path(out_dir: Path, j: int) -> Path:
    return out_dir / f"shard_{j:06d}.npz"


def _read_shard_meta(path: Path):
    """(meta dict, lo, hi) of a shard file, or None when it is unreadable (a crash mid-write of a foreign file)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta_json" not in z.files:
                return None
            return json.loads(str(z["meta_json"])), int(z["lo"]), int(z["hi"])
    except Exception:
        return None


def _shard_done(path: Path, meta: dict, lo: int, hi: int) -> bool:
    if not path.exists():
        return False
    got = _read_shard_meta(path)
    if got is None:
        warnings.warn(f"{str(path)!r} is not a readable shard file; it is recomputed and overwritten.",
                      RuntimeWarning, stacklevel=3)
        return False
    old, olo, ohi = got
    diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
    if diff:
        show = "; ".join(f"{k}: file has {old.get(k)!r}, this call has {meta.get(k)!r}" for k in diff)
        raise ValueError(
            f"{str(path)!r} holds samples made with different arguments ({show}). Rerun with the original arguments "
            "to resume, or pass another out_dir (or delete its shard files) to start afresh."
        )
    return (olo, ohi) == (lo, hi)  # only the last shard changes when num_samples changes: then recompute it


def distributed_sample(
    eps_model,
    schedule: Schedule,
    trajectory,
    method: str,
    num_samples: int,
    shape,
    out_dir,
    gamma=None,
    eta: float = 0.0,
    data_range=(-1.0, 1.0),
    clip: bool = True,
    clip_x0=None,
    clip_sigma_pixel: float | None = None,
    seed: int = 0,
    shard_size: int = 256,
    batch_size: int | None = None,
    backend: str = "torch",
    device=None,
    dtype=None,
    progress: bool | None = None,
    group=None,
):
    """:func:`~analytic_dpm.sampling.sample` spread over all processes, resumable, identical for any world size.

    Samples 0..num_samples−1 are cut into shards of ``shard_size``; shard j (samples j·S … min((j+1)·S, M) − 1)
    is one call ``sample(..., num_samples=len, first_index=j·S, batch_size=batch_size)``, so its noise comes from
    the library's per-sample streams and its batches never depend on the number of processes. The unfinished shards
    are dealt round-robin to the ranks; each is written to ``out_dir/shard_JJJJJJ.npz`` (samples, range, arguments)
    as soon as it is done, atomically. A rerun with the same arguments skips finished shards (an interrupted run
    resumes where it stopped; a larger ``num_samples`` extends a finished run); different arguments raise
    ValueError. ``out_dir`` must be visible to every rank (a shared file system on several nodes).

    Arguments as :func:`~analytic_dpm.sampling.sample`; ``batch_size`` defaults to ``shard_size`` and ``backend`` to
    'torch' (``device`` default: where ``eps_model`` runs, e.g. the rank's GPU from :func:`init_distributed`).
    Rank 0 assembles and returns the float array (num_samples, *shape) (also written to ``out_dir/samples.npy``);
    the other ranks return None. The model is not fingerprinted: resuming with another model is the caller's mistake.
    """
    table = coefficient_table(schedule, trajectory, method, gamma=gamma, eta=eta, data_range=data_range,
                              clip=clip, clip_sigma_pixel=clip_sigma_pixel)
    clamp = x0_clamp_range(clip_x0, table.data_range)
    num_samples = as_int("num_samples", num_samples, minimum=1, fix="Ask for at least one sample.")
    shape = check_sample_shape(shape)
    seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer seed.")
    shard_size = as_int("shard_size", shard_size, minimum=1,
                        fix="It is the number of samples per shard file, e.g. 256 (a multiple of 16 is tidiest).")
    batch_size = shard_size if batch_size is None else as_int("batch_size", batch_size, minimum=1,
                                                              fix="Pass a positive batch size, or None.")
    choice("backend", backend, BACKENDS)
    if out_dir is None or not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path (str or os.PathLike); got {type(out_dir).__name__}.")
    if backend == "numpy":
        np_dtype = np.dtype(np.float64)
    else:
        import torch

        _, tdtype = torch_device_dtype(getattr(eps_model, "device", None) if device is None else device, dtype)
        np_dtype = np.dtype(np.float32 if tdtype == torch.float32 else np.float64)
    out_dir = Path(os.fspath(out_dir))
    rank, world = get_rank(group), get_world_size(group)
    meta = {
        "format": _SHARD_FORMAT, "table": table.fingerprint(), "method": method, "shape": list(shape), "seed": seed,
        "noise_chunk": NOISE_CHUNK, "shard_size": shard_size, "clip_x0": clamp is not None,
        "clamp_range": None if clamp is None else list(clamp), "backend": backend, "dtype": str(np_dtype),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    n_shards = -(-num_samples // shard_size)
    ranges = [(j * shard_size, min((j + 1) * shard_size, num_samples)) for j in range(n_shards)]
    todo = [j for j, (lo, hi) in enumerate(ranges) if not _shard_done(_shard_path(out_dir, j), meta, lo, hi)]
    barrier(group)  # every rank has listed the finished shards before any rank writes a new one
    mine = todo[rank::world]
    disable = (None if progress is None else not bool(progress)) if rank == 0 else True
    bar = tqdm(mine, disable=disable, desc=f"shards (rank 0 of {world}; {n_shards - len(todo)} reused)", unit="shard")
    kw = dict(gamma=gamma, eta=eta, data_range=data_range, clip=clip, clip_x0=clip_x0,
              clip_sigma_pixel=clip_sigma_pixel, seed=seed, batch_size=batch_size, backend=backend, progress=False)
    if backend == "torch":
        if device is None:  # run where the model runs (TorchEpsModel.device), not on the CPU by default
            device = getattr(eps_model, "device", None)
        kw.update(device=device, dtype=dtype)
    for j in bar:
        lo, hi = ranges[j]
        x = sample(eps_model, schedule, trajectory, method, hi - lo, shape, first_index=lo, **kw)
        x = x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else np.asarray(x)
        atomic_savez(_shard_path(out_dir, j), {
            "samples": x.astype(np_dtype, copy=False), "lo": np.array(lo), "hi": np.array(hi),
            "meta_json": np.array(json.dumps(meta, sort_keys=True)),
        })
    bar.close()
    barrier(group)
    if rank != 0:
        return None
    out = np.empty((num_samples, *shape), dtype=np_dtype)
    for j, (lo, hi) in enumerate(ranges):
        path = _shard_path(out_dir, j)
        if not _shard_done(path, meta, lo, hi):
            raise RuntimeError(f"shard {str(path)!r} is missing after all ranks finished; rerun to complete it.")
        with np.load(path, allow_pickle=False) as z:
            out[lo:hi] = z["samples"]
    tmp = out_dir / f".samples.npy.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, out)
    os.replace(tmp, out_dir / "samples.npy")
    run = {"format": _RUN_FORMAT, "meta": meta, "num_samples": num_samples, "shards": n_shards,
           "reused_shards": n_shards - len(todo), "world_size": world, "trajectory": table.trajectory.tolist(),
           "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    (out_dir / "run.json").write_text(json.dumps(run, indent=1))
    return out


# ======================================================================================== command line
def _load_eps_model(args, ctx: DistContext):
    from .models import TorchEpsModel, load_model, read_model_file

    info = read_model_file(args.model)
    net = load_model(args.model, device=ctx.device if args.device is None else args.device)
    sched = None
    meta_sched = (info.get("metadata") or {}).get("schedule")
    if isinstance(meta_sched, dict) and "betas" in meta_sched and args.schedule is None:
        sched = Schedule.from_betas(np.asarray(meta_sched["betas"], dtype=np.float64),
                                    name=meta_sched.get("name", "custom"))
    if sched is None:
        kind = args.schedule or "linear"
        sched = Schedule.linear(args.N) if kind == "linear" else Schedule.cosine(args.N)
    eps = TorchEpsModel(net, timestep_map=args.timestep_map, schedule=sched, batch_size=args.batch_size)
    cfg = info.get("config") or {}
    shape = (int(cfg["channels"]), int(cfg["image_size"]), int(cfg["image_size"])) if cfg else None
    return eps, sched, shape


def _trajectory(args, sched, gamma):
    from .trajectories import ddim_stride_trajectory, even_trajectory, quadratic_trajectory

    t = args.trajectory
    if t == "even":
        return even_trajectory(sched.N, args.K)
    if t == "quadratic":
        return quadratic_trajectory(sched.N, args.K)
    if t == "ddim-stride":
        return ddim_stride_trajectory(sched.N, args.K)
    if t == "optimal":
        if gamma is None:
            raise ValueError("--trajectory optimal needs --gamma (the optimal trajectory minimizes the Analytic-DDPM "
                             "bound computed from Γ).")
        from .optimal_trajectory import optimal_trajectory

        return np.asarray(optimal_trajectory(sched, gamma, args.K))
    path = Path(t)
    if not path.exists():
        raise ValueError(f"--trajectory must be even, quadratic, ddim-stride, optimal or a file with [0, τ_1, …, τ_K] "
                         f"(.npy or whitespace-separated text); got {t!r}, which is not a file.")
    arr = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.int64)
    return np.asarray(arr, dtype=np.int64).reshape(-1)


def _load_data(spec: str):
    if spec == "digits":
        from .data import load_digits

        return load_digits().images
    if spec == "fashion-mnist":
        from .data import load_fashion_mnist

        return load_fashion_mnist("train").images
    path = Path(spec)
    if path.suffix != ".npy" or not path.exists():
        raise ValueError(f"--data must be 'digits', 'fashion-mnist' or an existing .npy file of x_0 (M, C, H, W) in "
                         f"the model's range; got {spec!r}.")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def cmd_sample(args, ctx: DistContext) -> int:
    eps, sched, shape = _load_eps_model(args, ctx)
    if args.shape:
        shape = tuple(int(v) for v in args.shape.split(","))
    if shape is None:
        raise ValueError("the model file stores no config to read the image shape from; pass --shape C,H,W.")
    gamma = GammaEstimate.load(args.gamma).gamma if args.gamma else None
    traj = _trajectory(args, sched, gamma)
    x = distributed_sample(
        eps, sched, traj, args.method, args.num_samples, shape, args.out, gamma=gamma, eta=args.eta,
        clip_x0=args.clip_x0, clip_sigma_pixel=args.clip_sigma_pixel, seed=args.seed, shard_size=args.shard_size,
        batch_size=args.batch_size, backend="torch", device=eps.device, progress=None,
    )
    if ctx.is_main:
        print(f"{x.shape[0]} samples of shape {tuple(x.shape[1:])} ({args.method}, K = {len(traj) - 1}) written to "
              f"{os.path.join(args.out, 'samples.npy')} by {ctx.world_size} process(es)")
    return 0


def cmd_gamma(args, ctx: DistContext) -> int:
    eps, sched, _ = _load_eps_model(args, ctx)
    data = _load_data(args.data)
    ts = None
    if args.K is not None:
        ts = _trajectory(args, sched, None)[1:]
    est = distributed_gamma(eps, sched, np.array(data, dtype=np.float32), timesteps=ts,
                            num_samples=args.num_samples, batch_size=args.batch_size or 256, seed=args.seed,
                            device=eps.device, checkpoint=f"{args.out}.ckpt")  # a rerun resumes
    if ctx.is_main:
        est.save(args.out)
        print(f"Γ at {est.timesteps.size} timesteps from M = {est.num_samples} samples on {ctx.world_size} "
              f"process(es) written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m analytic_dpm.distributed",
        description="Γ and samples on many processes; launch with torchrun --nproc_per_node=G -m "
                    "analytic_dpm.distributed ... (or plainly with python for one process).")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--model", required=True, help="a model file written by analytic_dpm.models.save_model")
        p.add_argument("--timestep-map", default="n", help="what the network gets for timestep n: n (this library's "
                       "training), n-1 (diffusers, DDIM checkpoints), n*1000/N, (n-1)*1000/N (default n)")
        p.add_argument("--schedule", choices=["linear", "cosine"], default=None,
                       help="forward schedule (default: the one stored in the model file, else linear)")
        p.add_argument("--N", type=int, default=1000, help="diffusion steps N (default 1000)")
        p.add_argument("--K", type=int, default=None, help="number of sampling steps K")
        p.add_argument("--trajectory", default="even",
                       help="even (the paper's ET), quadratic, ddim-stride, optimal (needs --gamma) or a file with "
                            "[0, τ_1, …, τ_K] (default even)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--batch-size", type=int, default=None, help="images per network call")
        p.add_argument("--device", default=None, help="torch device (default: cuda:LOCAL_RANK when available)")
        p.add_argument("--backend", choices=["nccl", "gloo"], default=None,
                       help="process-group backend (default nccl with CUDA, else gloo)")

    p = sub.add_parser("sample", help="distributed_sample: resumable sharded sampling")
    common(p)
    p.add_argument("--method", choices=["analytic-ddpm", "analytic-ddim", "ddpm-large", "ddpm-small", "ddim"],
                   default="analytic-ddpm")
    p.add_argument("--gamma", default=None, help="a Γ file from estimate_gamma(...).save / the gamma sub-command")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η (DDIM methods only)")
    p.add_argument("--num-samples", type=int, required=True)
    p.add_argument("--shape", default=None, help="C,H,W (default: from the model file's config)")
    p.add_argument("--out", required=True, help="output folder: shard files, samples.npy, run.json")
    p.add_argument("--shard-size", type=int, default=256, help="samples per shard file (default 256)")
    p.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=True,
                   help="clamp x̂_0 to [-1, 1] at every step (default on, as the official code for images)")
    p.add_argument("--clip-sigma-pixel", type=float, default=None,
                   help="y of the σ² clip on the step into τ_1 (App. F.2; the paper uses 1 or 2)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("gamma", help="distributed_gamma: Γ_n = E‖ε̂_n‖²/d, all-reduced")
    common(p)
    p.add_argument("--data", required=True, help="digits, fashion-mnist, or a .npy of x_0 (M, C, H, W) in [-1, 1]")
    p.add_argument("--num-samples", type=int, default=None, help="M (default: all of --data)")
    p.add_argument("--out", required=True, help="output .npz (GammaEstimate.save; per-rank checkpoints OUT.ckpt.rank*; "
                   "a rerun resumes); with --K only the trajectory's "
                   "timesteps are estimated")
    p.set_defaults(func=cmd_gamma)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sample" and args.K is None and args.trajectory in ("even", "quadratic", "ddim-stride",
                                                                            "optimal"):
        print("error: --K is required with --trajectory even/quadratic/ddim-stride/optimal", file=sys.stderr)
        return 2
    ctx = init_distributed(backend=args.backend)
    try:
        return args.func(args, ctx)
    except (ValueError, TypeError) as exc:
        print(f"error (rank {ctx.rank}): {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown(ctx)


__all__ = [
    "DistContext", "init_distributed", "shutdown", "get_rank", "get_world_size", "barrier", "all_reduce_sum",
    "distributed_gamma", "distributed_sample", "distributed_feature_statistics", "main",
]

if __name__ == "__main__":
    sys.exit(main())
