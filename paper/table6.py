"""Table 6 analogue (P App. G.2, Table 6): Analytic-DDPM with Γ̂ from only M = 10 Monte Carlo samples against the
DDPM baselines, even trajectory, K ∈ {10, 25, 50, 100, 200, 400}, on the toy Gaussian.

Rows as in the paper: the bound (bits/dim, decoder excluded) of analytic-DDPM (M = 10, mean ± std over 5 seeds) and
of DDPM with σ² = β (the paper's "DDPM" NLL row is its β_n row); the exact Fréchet distance of analytic-DDPM (M = 10)
and of DDPM, where DDPM is the better of σ² = β and σ² = β̃ at each K (how the facts file reads the paper's FID row;
the paper does not say). Also the exact-Γ analytic-DDPM row for reference. The mean is exact; only σ² uses Γ̂
(clipped by eq. 11 since the toy data are unbounded).

Full mode: d = 3072, N = 1000; expected wall time about 10–30 s on 2 CPU cores (Γ̂ cached, shared with table5).
Fast mode: d = 64: about a second.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from analytic_dpm import toy
from analytic_dpm.trajectories import even_trajectory

from . import _gamma_m as G
from . import _toy as T
from ._common import fmt, markdown_table, write_csv, write_latex, write_sidecar

M = 10
KS = (10, 25, 50, 100, 200, 400)


def _exact(data, sched, K, method, gamma=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Γ̂ > 1 at a few steps: clipped, reported by the library
        return toy.evaluate_exact(data, sched, even_trajectory(sched.N, K), method, gamma=gamma)


def compute(out_dir, fast: bool = False) -> dict:
    """{schedule: {row: array (len(KS),) or (seeds, len(KS))}}."""
    z = G.settings(fast)
    out = {}
    for name in T.SCHEDULES:
        sched, data = T.schedule(name), T.data(z["dim"])
        g_hat = [G.gamma_hat(out_dir, name, z["dim"], M, seed)["gamma"] for seed in z["seeds"]]
        rows = {"nll analytic": [], "fd analytic": []}
        for g in g_hat:
            r = [_exact(data, sched, K, "analytic-ddpm", gamma=g) for K in KS]
            rows["nll analytic"].append([x.vb_bits_per_dim for x in r])
            rows["fd analytic"].append([float(x.fd) for x in r])
        large = [_exact(data, sched, K, "ddpm-large") for K in KS]
        small = [_exact(data, sched, K, "ddpm-small") for K in KS]
        exact = [_exact(data, sched, K, "analytic-ddpm") for K in KS]
        out[name] = {
            "nll analytic": np.array(rows["nll analytic"]),
            "nll ddpm": np.array([x.vb_bits_per_dim for x in large]),
            "fd analytic": np.array(rows["fd analytic"]),
            "fd ddpm": np.minimum([float(x.fd) for x in large], [float(x.fd) for x in small]),
            "fd ddpm which": np.array(["β" if float(a.fd) <= float(b.fd) else "β̃" for a, b in zip(large, small)]),
            "nll exact": np.array([x.vb_bits_per_dim for x in exact]),
            "fd exact": np.array([float(x.fd) for x in exact]),
        }
    return out


def _pm(a: np.ndarray, k: int) -> str:
    col = a[:, k]
    return f"{fmt(col.mean())} ± {fmt(col.std(ddof=1))}"


def run(out_dir, fast: bool = False):
    t0 = time.perf_counter()
    z = G.settings(fast)
    res = compute(out_dir, fast)
    header = ["row"] + [f"K={k}" for k in KS]
    md = [f"# Table 6 analogue: analytic-DDPM with Γ̂ from M = {M} vs DDPM, ET, toy Gaussian d = {z['dim']}, "
          f"N = {T.N} (M = {M}: mean ± std over {len(z['seeds'])} seeds)\n\n"]
    csv_rows, tex = [], []
    for name in T.SCHEDULES:
        r = res[name]
        body = [
            [f"bound analytic-DDPM (M={M})"] + [_pm(r["nll analytic"], k) for k in range(len(KS))],
            ["bound DDPM (σ²=β)"] + [fmt(v) for v in r["nll ddpm"]],
            ["bound analytic-DDPM (exact Γ)"] + [fmt(v) for v in r["nll exact"]],
            [f"FD analytic-DDPM (M={M})"] + [_pm(r["fd analytic"], k) for k in range(len(KS))],
            ["FD DDPM (better of β, β̃)"] + [f"{fmt(v)} ({w})" for v, w in zip(r["fd ddpm"], r["fd ddpm which"])],
            ["FD analytic-DDPM (exact Γ)"] + [fmt(v) for v in r["fd exact"]],
        ]
        md.append(f"## {name} schedule\n\n" + markdown_table(header, body) + "\n")
        tex.append((f"{name} schedule", body))
        for k, K in enumerate(KS):
            for key in ("nll analytic", "fd analytic"):
                csv_rows.append([name, f"{key} M={M}", K, r[key][:, k].mean(), r[key][:, k].std(ddof=1)])
            for key in ("nll ddpm", "fd ddpm", "nll exact", "fd exact"):
                csv_rows.append([name, key, K, float(r[key][k]), 0.0])
    md.append("Paper (CIFAR10 LS, Table 6): analytic-DDPM with M = 10 has the lower bound and FID at every K "
              "(bound 5.47 → 3.71 against DDPM's 6.99 → 4.07 bits/dim for K = 10 → 400).\n\nHere (mean over seeds):\n")
    for name in T.SCHEDULES:
        r = res[name]
        for key, what in (("nll", "bound"), ("fd", "FD")):
            wins = [K for k, K in enumerate(KS) if r[f"{key} analytic"][:, k].mean() < r[f"{key} ddpm"][k]]
            md.append(f"- {name}, {what}: analytic-DDPM (M = {M}) is lower at K ∈ {wins or 'none'} "
                      f"of {list(KS)}.\n")
    md.append("\nWhere M = 10 loses (the cosine schedule) the cause is the one table5 measures: the toy Gaussian is "
              "unbounded, so only eq. (11) clips σ̂², and near t = N, where 1 − Γ_n is about 10⁻¹¹, a Γ̂ from 10 "
              "samples cannot resolve it. Image data are bounded and the eq. (12) clip removes this (results/ and "
              "the demo's mixture rows show it).\n")
    csv_path = write_csv(out_dir / "table6.csv", ["schedule", "row", "K", "mean", "std"], csv_rows)
    md_path = out_dir / "table6.md"
    md_path.write_text("".join(md))
    tex_path = write_latex(out_dir / "table6.tex", header, tex,
                           caption=f"Analytic-DDPM with $\\hat\\Gamma$ from $M={M}$ against DDPM (toy Gaussian).")
    cfg = {**z, "M": M, "Ks": list(KS), "schedules": list(T.SCHEDULES), "fast": fast}
    for p in (csv_path, md_path, tex_path):
        write_sidecar(p, cfg, seeds=z["seeds"], started=t0)
    return [csv_path, md_path, tex_path]
