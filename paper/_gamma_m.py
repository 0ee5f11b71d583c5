"""Monte Carlo Γ̂ from M data samples on the toy Gaussian (exact ε*), cached per (schedule, d, M, seed, timesteps)."""

from __future__ import annotations

import numpy as np

from analytic_dpm.gamma import estimate_gamma

from . import _toy as T
from ._common import cached_arrays

MS = (1, 10, 100, 1000)
MS_FAST = (1, 10, 100)
SEEDS = (0, 1, 2, 3, 4)
DIM, DIM_FAST = 3072, 64


def settings(fast: bool) -> dict:
    return {"N": T.N, "Ms": list(MS_FAST if fast else MS), "dim": DIM_FAST if fast else DIM, "seeds": list(SEEDS)}


def gamma_hat(out_dir, sched_name: str, dim: int, M: int, seed: int, timesteps=None) -> dict:
    """{'gamma': (N+1,), 'stderr': (N+1,)} from ``estimate_gamma`` (NaN outside ``timesteps``), cached."""
    ts = None if timesteps is None else [int(t) for t in timesteps]
    cfg = {"what": "gamma-hat", "data": "toy.default_gaussian", "dim": dim, "schedule": sched_name, "N": T.N,
           "M": M, "seed": seed, "timesteps": ts, "version": 1}

    def compute():
        sched = T.schedule(sched_name)
        data = T.data(dim)
        est = estimate_gamma(data.eps_model(sched), sched, data, timesteps=ts, num_samples=M, seed=seed,
                             batch_size=max(1, min(1024, 4_000_000 // dim)), progress=False)
        return {"gamma": np.asarray(est.gamma), "stderr": np.asarray(est.stderr)}

    return cached_arrays(out_dir, "gamma-hat", cfg, compute)
