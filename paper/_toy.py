"""Shared set-up of the toy-Gaussian targets (table1, table2, fig1, fig_gamma_M, table5).

The toy Gaussian (``toy.default_gaussian``) has an exact ε*, Γ, generated distribution and bound
(``toy.evaluate_exact``), so every number here except the Monte Carlo Γ̂ of fig_gamma_M / table5 is exact.
"""

from __future__ import annotations

import math

import numpy as np

from analytic_dpm import toy
from analytic_dpm.likelihood import exact_mean_transition_kl, prior_kl_per_dim
from analytic_dpm.optimal_trajectory import optimal_trajectories, optimal_trajectories_from_costs
from analytic_dpm.posterior import posterior_coefficients
from analytic_dpm.schedules import Schedule
from analytic_dpm.trajectories import even_trajectory

LN2 = math.log(2.0)
N = 1000
KS = (10, 25, 50, 100, 200, 400, 1000)
KS_FAST = (10, 25, 100)
DIM, DIM_FAST = 3072, 64
SCHEDULES = ("linear", "cosine")

#: rows of Tables 1/2: (label, method, trajectory kind)
ET_ROWS = [("ET ddpm-small", "ddpm-small", "et"), ("ET ddpm-large", "ddpm-large", "et"),
           ("ET analytic-ddpm", "analytic-ddpm", "et"), ("ET ddim", "ddim", "et"),
           ("ET analytic-ddim", "analytic-ddim", "et")]
OT_ROWS = [("OT ddpm-large", "ddpm-large", "ot-large"), ("OT analytic-ddpm", "analytic-ddpm", "ot-analytic"),
           ("OT analytic-ddim", "analytic-ddim", "ot-analytic")]


def sizes(fast: bool):
    return {"N": N, "Ks": list(KS_FAST if fast else KS), "dim": DIM_FAST if fast else DIM}


def schedule(name: str, n: int = N) -> Schedule:
    return getattr(Schedule, name)(n)


def data(dim: int):
    return toy.default_gaussian(dim=dim)


def ddpm_large_cost(data, sched: Schedule) -> np.ndarray:
    """F[s, t] = exact E KL(q(x_s|x_t,x_0) ‖ p(x_s|x_t))/d (nats) of the ddpm-large transition t → s (σ² = β_{t|s},
    exact mean) for 1 <= s < t <= N; +inf elsewhere. The OT ddpm-large bound is prior_kl + Σ F (start = 1)."""
    n = sched.N
    F = np.full((n + 1, n + 1), np.inf)
    v = np.zeros(n + 1)
    v[1:] = data.posterior_cov_trace_at(sched, np.arange(1, n + 1))
    for s in range(1, n):
        t = np.arange(s + 1, n + 1)
        ss = np.full(t.shape, s)
        c0, _, lam2 = posterior_coefficients(sched, ss, t, "ddpm", 0.0)
        F[s, s + 1:] = exact_mean_transition_kl(lam2, sched.skip_beta(ss, t), c0, v[t])
    return F


def trajectories(data, sched: Schedule, K_max: int) -> dict:
    """{'ot-analytic': OptimalTrajectories (Theorem 3 DP on the exact Γ), 'ot-large': the DP over ddpm_large_cost}."""
    g = data.gamma(sched)
    ot_a = optimal_trajectories(sched, g, K_max=K_max, data_range=None, progress=False)
    ot_l = optimal_trajectories_from_costs(ddpm_large_cost(data, sched), K_max=K_max, start=1, progress=False)
    return {"ot-analytic": ot_a, "ot-large": ot_l}


def evaluate_rows(data, sched: Schedule, Ks) -> dict:
    """label -> {'bound': [bits/dim or None per K], 'fd': [...], 'traj': [...]} for ET and OT rows, exact."""
    ots = trajectories(data, sched, max(Ks))
    out = {}
    for label, method, kind in ET_ROWS + OT_ROWS:
        rec = {"bound": [], "fd": [], "traj": []}
        for K in Ks:
            tr = even_trajectory(sched.N, K) if kind == "et" else ots[kind].trajectory(K)
            r = toy.evaluate_exact(data, sched, tr, method)
            rec["bound"].append(r.vb_bits_per_dim)
            rec["fd"].append(float(r.fd))
            rec["traj"].append(tr)
        out[label] = rec
    out["_ots"] = ots
    out["_prior"] = {K: float(prior_kl_per_dim(sched, sched.N, data.second_moment_per_dim())) for K in Ks}
    return out


def evaluate_cached(out_dir, sched_name: str, dim: int, Ks) -> dict:
    """:func:`evaluate_rows` as arrays {'<label>/bound': (len(Ks),) bits/dim (NaN: undefined), '<label>/fd': ...,
    'ot_large_cost': prior + DP cost per K in bits/dim}, cached under out_dir/cache (shared by table1 and table2)."""
    from ._common import cached_arrays

    cfg = {"what": "toy-gaussian-rows", "schedule": sched_name, "N": N, "dim": dim, "Ks": list(Ks),
           "rows": [r[0] for r in ET_ROWS + OT_ROWS], "version": 1}

    def compute():
        sched = schedule(sched_name)
        rows = evaluate_rows(data(dim), sched, Ks)
        arr = {}
        for label, _, _ in ET_ROWS + OT_ROWS:
            arr[f"{label}/bound"] = np.array([np.nan if b is None else b for b in rows[label]["bound"]])
            arr[f"{label}/fd"] = np.array(rows[label]["fd"])
        ot = rows["_ots"]["ot-large"]
        arr["ot_large_dp_bits"] = np.array([(rows["_prior"][K] + ot.cost(K)) / LN2 for K in Ks])
        return arr

    return cached_arrays(out_dir, "toy-rows", cfg, compute)
