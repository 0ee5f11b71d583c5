"""Figure 13 analogue (P App. G.5, Fig. 13) and the OT rows of Table 1 as curves: the even trajectory (ET) against the
optimal trajectory (OT) of Theorem 3's DP, on the toy Gaussian with the exact Γ.

(a, b) The bound (bits/dim, decoder excluded) against K for ET and OT, analytic-DDPM and DDPM (σ² = β), per schedule.
(c, d) The exact Fréchet distance against K for ET and OT analytic-DDPM / analytic-DDIM. The paper reports that OT,
which minimizes the bound, does not improve FID on images (its Fig. 13: ET is better); on the toy Gaussian, where the
bound and the FD measure the same Gaussian, it can.
(e) The OT timesteps τ_k for K = 10 and 25 (linear schedule) against the even ones.

Full mode: d = 3072, N = 1000, K ∈ {10, 25, 50, 100, 200, 400, 1000} (the table1/table2 cache is shared); expected
wall time about 10–30 s on 2 CPU cores. Fast mode: d = 64, K ∈ {10, 25, 100}: a few seconds.
"""

from __future__ import annotations

import time

import numpy as np

from analytic_dpm.trajectories import even_trajectory

from . import _toy as T
from ._common import fmt, markdown_table, pyplot, save_figure, write_csv, write_sidecar

BOUND_ROWS = [("ET ddpm-large", "OT ddpm-large"), ("ET analytic-ddpm", "OT analytic-ddpm")]
FD_ROWS = [("ET analytic-ddpm", "OT analytic-ddpm"), ("ET analytic-ddim", "OT analytic-ddim")]


def run(out_dir, fast: bool = False):
    t0 = time.perf_counter()
    z = T.sizes(fast)
    Ks = list(z["Ks"])
    plt = pyplot()
    fig, grid = plt.subplots(2, 3, figsize=(15, 8.5))
    axes = [grid[0, 0], grid[0, 1], grid[1, 0], grid[1, 1], grid[0, 2]]
    grid[1, 2].axis("off")
    csv_rows, md_rows = [], []
    for j, name in enumerate(T.SCHEDULES):
        res = T.evaluate_cached(out_dir, name, z["dim"], Ks)
        for ax, rows, key, ylabel in ((axes[j], BOUND_ROWS, "bound", "bound (bits/dim)"),
                                      (axes[2 + j], FD_ROWS, "fd", "Fréchet distance")):
            for c, (et, ot) in enumerate(rows):
                ax.loglog(Ks, res[f"{et}/{key}"], "-o", color=f"C{c}", ms=3, label=et)
                ax.loglog(Ks, res[f"{ot}/{key}"], "--s", color=f"C{c}", ms=3, label=ot)
                for K, a, b in zip(Ks, res[f"{et}/{key}"], res[f"{ot}/{key}"]):
                    csv_rows.append([name, key, et.split(" ", 1)[1], K, float(a), float(b)])
                    md_rows.append([name, key, et.split(" ", 1)[1], K, fmt(a), fmt(b),
                                    "tie" if abs(b - a) <= 1e-12 * abs(a) else ("OT" if b < a else "ET")])
            ax.set(xlabel="K", ylabel=ylabel, title=f"({'abcd'[j if key == 'bound' else 2 + j]}) {ylabel}, {name}")
            ax.legend(fontsize=7)
    sched = T.schedule("linear")
    ots = T.trajectories(T.data(z["dim"]), sched, max(Ks))
    ax = axes[4]
    for c, K in enumerate((10, 25)):
        ax.plot(range(K + 1), even_trajectory(sched.N, K), "-o", color=f"C{c}", ms=3, label=f"ET, K = {K}")
        ax.plot(range(K + 1), ots["ot-analytic"].trajectory(K), "--s", color=f"C{c}", ms=3,
                label=f"OT analytic-ddpm, K = {K}")
    ax.set(xlabel="k", ylabel="τ_k", yscale="log", title="(e) timesteps, linear")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = save_figure(fig, out_dir / "fig_et_ot.png")
    paths.append(write_csv(out_dir / "fig_et_ot.csv", ["schedule", "quantity", "method", "K", "ET", "OT"], csv_rows))
    md = out_dir / "fig_et_ot.md"
    md.write_text(f"# ET against OT (toy Gaussian d = {z['dim']}, N = {T.N}, exact Γ)\n\n"
                  + markdown_table(["schedule", "quantity", "method", "K", "ET", "OT", "better"], md_rows)
                  + "\nOT timesteps, linear schedule: "
                  + "; ".join(f"K = {K}: {list(map(int, ots['ot-analytic'].trajectory(K)))}" for K in (10, 25))
                  + "\n")
    paths.append(md)
    for p in paths:
        write_sidecar(p, {**z, "schedules": list(T.SCHEDULES), "fast": fast}, seeds=None, started=t0)
    return paths
