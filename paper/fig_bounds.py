"""Figures 7 and 9 analogue (P App. G.3): Theorem 2's bounds against the timestep, and how often σ̂² gets clipped.

(a, b) For the linear and cosine schedules, even trajectories K = N and K = 100: the lower bound λ² (= β̃ for the DDPM
family), the upper bounds of eq. (11) (any data) and eq. (12) (data in [−1, 1]), their minimum, and σ*² from the
exact Γ of the toy Gaussian, plotted as ratios to λ² so that the gap is visible (the paper's Fig. 7 observation:
for K = N the bounds nearly coincide, the gap opening only at small n).
(c) Figure 9 analogue: the fraction of trials in which σ̂²_n from a Monte Carlo Γ̂ with M samples fell outside the
bounds and was clipped (linear schedule, K = N), for the exact ε (clipping from Monte Carlo noise alone) and for an
imperfect ε̂ = 1.01·ε* (the paper attributes its clipping to model error: the curves hardly depend on M).

Full mode: d = 256, 20 trials, M ∈ {1, 10, 100}; expected wall time about 1–2 min on 2 CPU cores (Γ̂ cached).
Fast mode: d = 16, 3 trials, M = 10: a few seconds.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from analytic_dpm import toy
from analytic_dpm.gamma import estimate_gamma
from analytic_dpm.trajectories import even_trajectory
from analytic_dpm.variance import reverse_variances

from . import _toy as T
from ._common import cached_arrays, fmt, markdown_table, pyplot, save_figure, write_csv, write_sidecar

SCALE = 1.01  #: the imperfect model's ε̂ = SCALE · ε*


def settings(fast: bool) -> dict:
    return {"N": T.N, "dim": 16 if fast else 256, "trials": 3 if fast else 20, "Ms": [10] if fast else [1, 10, 100],
            "Ks": [T.N, 100], "scale": SCALE}


def bound_curves(sched, K: int, dim: int) -> dict:
    tr = even_trajectory(sched.N, K)
    g = T.data(dim).gamma(sched)
    fam = reverse_variances(sched, tr, "analytic-ddpm", gamma=g, data_range=(-1.0, 1.0))
    # the first transition (0 → τ_1) has λ² = 0 and is left out of the ratios
    return {"t": tr[2:], "lower": fam.lower[1:], "ub11": fam.upper_eq11[1:], "ub12": fam.upper_eq12[1:],
            "upper": fam.upper[1:], "sigma_sq": fam.sigma_sq_unclipped[1:]}


def clip_fractions(out_dir, z: dict) -> dict:
    """{(model, M): fraction of trials clipped per timestep n = 1..N} (linear schedule, K = N, data_range None)."""
    sched = T.schedule("linear")
    data = T.data(z["dim"])
    tr = even_trajectory(sched.N, sched.N)
    out = {}
    for model, scale in (("exact", 1.0), ("imperfect", z["scale"])):
        eps = data.eps_model(sched) if scale == 1.0 else toy.ImperfectEps(data.eps_model(sched), scale=scale)
        for M in z["Ms"]:
            cfg = {"what": "clip-fraction", "dim": z["dim"], "N": sched.N, "M": M, "scale": scale,
                   "trials": z["trials"], "version": 1}

            def compute():
                hits = np.zeros(sched.N)
                for trial in range(z["trials"]):
                    est = estimate_gamma(eps, sched, data, num_samples=M, seed=1000 + trial,
                                         batch_size=max(1, min(4096, 2_000_000 // z["dim"])), progress=False)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        rv = reverse_variances(sched, tr, "analytic-ddpm", gamma=est.gamma, data_range=None)
                    hits += rv.clipped
                return {"fraction": hits / z["trials"]}

            out[(model, M)] = cached_arrays(out_dir, "clip-fraction", cfg, compute)["fraction"]
    return out


def run(out_dir, fast: bool = False):
    t0 = time.perf_counter()
    z = settings(fast)
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    csv_rows, md_rows = [], []
    for j, name in enumerate(T.SCHEDULES):
        sched = T.schedule(name)
        ax = axes[j]
        for K, style in zip(z["Ks"], ("-", ":")):
            c = bound_curves(sched, K, z["dim"])
            lam = c["lower"]
            ax.loglog(c["t"], c["ub11"] / lam, style, color="C1", label=f"eq. 11 / λ², K = {K}")
            ax.loglog(c["t"], c["ub12"] / lam, style, color="C2", label=f"eq. 12 (data ∈ [−1, 1]) / λ², K = {K}")
            ax.loglog(c["t"], c["sigma_sq"] / lam, style, color="C0", label=f"σ*² / λ² (toy, exact Γ), K = {K}")
            for i in range(c["t"].size):
                csv_rows.append([name, K, int(c["t"][i]), c["lower"][i], c["ub11"][i], c["ub12"][i], c["upper"][i],
                                 c["sigma_sq"][i]])
            inside = bool(np.all((c["sigma_sq"] >= c["lower"] * (1 - 1e-12))
                                 & (c["sigma_sq"] <= c["ub11"] * (1 + 1e-12))))
            ratio = c["upper"] / c["lower"]
            md_rows.append([name, K, fmt(float(np.median(ratio))), fmt(float(ratio.max())),
                            "yes" if inside else "NO"])
        ax.set(xlabel="τ_k (timestep of the transition τ_{k−1} → τ_k)", ylabel="ratio to the lower bound λ²",
               title=f"({'ab'[j]}) Theorem 2 bounds, {name}")
        ax.legend(fontsize=6)
    frac = clip_fractions(out_dir, z)
    ax = axes[2]
    n = np.arange(1, T.N + 1)
    edges = np.unique(np.round(np.logspace(0, np.log10(T.N + 1), 40)).astype(int))  # log-spaced bins of n
    for (model, M), f in frac.items():
        centers = [np.sqrt(a * (b - 1)) for a, b in zip(edges[:-1], edges[1:])]
        binned = [f[a - 1:b - 1].mean() for a, b in zip(edges[:-1], edges[1:])]
        ax.semilogx(centers, binned, "-o" if model == "exact" else "--s", ms=3, label=f"{model} ε, M = {M}")
        csv_rows += [["clip-fraction", f"{model} M={M}", int(k), float(v), None, None, None, None]
                     for k, v in zip(n, f)]
    ax.set(xlabel="timestep n (K = N, linear)", ylabel="fraction clipped (trials × log-spaced bins of n)",
           title=f"(c) P(σ̂² clipped), {z['trials']} trials, d = {z['dim']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = save_figure(fig, out_dir / "fig_bounds.png")
    paths.append(write_csv(out_dir / "fig_bounds.csv", ["schedule", "K", "t", "lower", "ub_eq11", "ub_eq12",
                                                      "upper", "sigma_sq_exact"], csv_rows))
    clip_rows = [[model, M, fmt(float(f.mean())), fmt(float(f[: T.N // 10].mean())), fmt(float(f[-T.N // 10:].mean()))]
                 for (model, M), f in frac.items()]
    md = out_dir / "fig_bounds.md"
    md.write_text(
        f"# Figures 7 and 9 analogue: Theorem 2 bounds (toy Gaussian d = {z['dim']}, N = {T.N})\n\n"
        + markdown_table(["schedule", "K", "median upper/lower", "max upper/lower", "exact σ*² inside"], md_rows)
        + f"\n## How often σ̂² is clipped (linear, K = N, {z['trials']} trials)\n\n"
        + markdown_table(["ε-model", "M", "mean over n", "n ≤ N/10", "n > 9N/10"], clip_rows))
    paths.append(md)
    for p in paths:
        write_sidecar(p, {**z, "fast": fast}, seeds=[1000 + i for i in range(z["trials"])], started=t0)
    return paths
