"""Benchmark: optimal trajectories by dynamic programming, this library versus the reference algorithm.

The reference is the all-K dynamic programme of the official code as described in the facts file §4.4
(``vectorized_dp``): for k = 1, 2, … one (N+1) × (N+1) broadcast C[k−1, s] + F[s, t] and a min/argmin over s, which
gives the back-pointers for every K in O(N³) time and O(N²) memory. It is written here from that description, in the
fastest plain-numpy layout (the reduction runs over the contiguous axis); as written it runs all N layers, and the
table also shows its time when stopped after the K_max − 1 layers that K <= K_max needs.

Both sides minimize the same Analytic-DDPM cost matrix (``analytic_ddpm_cost``, log-ratio form, τ_1 = 1 fixed), and
the script checks that they return the same optimal costs for every K. "Ours" is the whole pipeline: build the cost
matrix, check the quadrangle inequality, run the DP for every K <= K_max, and backtrack every trajectory.

Usage (from the repository root):

    python benchmarks/bench_optimal_trajectory.py              # everything (about 15 minutes on 2 cores)
    python benchmarks/bench_optimal_trajectory.py --quick      # reference stopped at K_max layers
    python benchmarks/bench_optimal_trajectory.py --cases A,C --json out.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import analytic_dpm as adpm  # noqa: E402
from analytic_dpm.toy import default_gaussian  # noqa: E402

# the module itself: the package also exports a function named optimal_trajectory
ot = importlib.import_module("analytic_dpm.optimal_trajectory")

CASES = {
    # name: (N, schedule, Γ source, K_max)
    "A": (1000, "linear", "exact", 1000),
    "B": (1000, "cosine", "exact", 1000),
    "C": (4000, "cosine", "exact", 1000),
    "D": (4000, "linear", "exact", 1000),
    "E": (1000, "linear", "monte-carlo", 1000),
}
DIM = 64  # toy Gaussian: default_gaussian(dim=64), eigenvalues log-spaced in [1e-4, 0.25]
MC_SAMPLES = 100  # Monte Carlo Γ for case E (noisy, so the cost is not Monge)


def reference_all_k(FT: np.ndarray, start: int, layers: int, mark: int):
    """The reference O(N³) all-K DP: C[k, t] = min_s C[k−1, s] + F[s, t], D[k, t] = argmin, k = 1..layers.

    Returns (C, D, seconds after ``mark`` layers, seconds after all layers)."""
    W = FT.shape[0]
    C = np.full((layers + 1, W), np.inf)
    D = np.zeros((layers + 1, W), dtype=np.int64)
    C[0, start] = 0.0
    rows = np.arange(W)
    t0 = time.perf_counter()
    t_mark = None
    for k in range(1, layers + 1):
        bpds = FT + C[k - 1][None, :]  # bpds[t, s] = C[k−1, s] + F[s, t]: the (N+1) × (N+1) broadcast
        D[k] = np.argmin(bpds, axis=1)
        C[k] = bpds[rows, D[k]]
        if k == mark:
            t_mark = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return C, D, (total if t_mark is None else t_mark), total


def reference_path(D: np.ndarray, N: int, edges: int) -> list:
    path = [N]
    for k in range(edges, 0, -1):
        path.append(int(D[k, path[-1]]))
    return [0] + path[::-1]


def gamma_for(case_schedule, source: str, seed: int = 0) -> np.ndarray:
    data = default_gaussian(dim=DIM)
    if source == "exact":
        return data.gamma(case_schedule)
    g, _ = data.gamma_monte_carlo(case_schedule, MC_SAMPLES, seed=seed)
    return g


def time_ours(schedule, gamma, K_max: int, method: str, repeats: int):
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        cost = ot.analytic_ddpm_cost(schedule, gamma)
        t1 = time.perf_counter()
        res = ot.solve(cost, K_max=K_max, method=method, backend="numpy", progress=False)
        t2 = time.perf_counter()
        trajs = res.trajectories()
        t3 = time.perf_counter()
        rec = dict(total=t3 - t0, build=t1 - t0, solve=t2 - t1, backtrack=t3 - t2)
        if best is None or rec["total"] < best[0]["total"]:
            best = (rec, res, trajs, cost)
    return best


def run_case(name: str, full_reference: bool, dense: bool, repeats: int) -> dict:
    N, sched_name, source, K_max = CASES[name]
    schedule = getattr(adpm.Schedule, sched_name)(N)
    gamma = gamma_for(schedule, source)
    timing, res, trajs, cost = time_ours(schedule, gamma, K_max, "auto", repeats)
    monge = res.monge
    out = dict(case=name, N=N, schedule=sched_name, gamma=source, K_max=K_max, method=res.method,
               monge=bool(monge.is_monge) if monge else None,
               exceptions=int(monge.exceptions.size) if monge else None,
               violations=int(monge.violations) if monge else None, ours=timing)
    if dense:
        t_dense, res_d, _, _ = time_ours(schedule, gamma, K_max, "dense", 1)
        out["ours_dense"] = t_dense
        out["dense_max_abs_cost_diff"] = float(np.nanmax(np.abs(res_d.costs[2:] - res.costs[2:])))
    # the reference: all layers (N − 1 edges for τ_1 = 1 fixed), or only the K_max − 1 that K <= K_max needs
    needed = K_max - 1
    layers = (N - 1) if full_reference else needed
    C, D, t_needed, t_all = reference_all_k(cost.FT, 1, layers, needed)
    out["reference_needed_layers"] = dict(layers=needed, seconds=t_needed)
    if full_reference:
        out["reference_all_layers"] = dict(layers=layers, seconds=t_all)
    Ks = np.arange(2, K_max + 1)
    ref_costs = C[Ks - 1, N]
    out["max_abs_cost_diff"] = float(np.max(np.abs(ref_costs - res.costs[Ks])))
    differ = 0
    for K in Ks:
        if reference_path(D, N, K - 1) != trajs[int(K)].tolist():
            differ += 1
    out["paths_differing"] = differ  # ties only: costs agree
    del C, D
    return out


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(), numpy=np.__version__,
                platform=platform.platform())
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def table(results: list) -> str:
    head = ("| case | N | schedule | Γ | K | Monge? (exceptions) | method | reference, all N layers | "
            "reference, K_max layers | ours | ours: build / check+DP / backtrack | ours, dense DP | "
            "ratio vs all layers | ratio vs K_max layers | max abs. cost diff | paths that differ (ties) |")
    sep = "|" + "|".join("---" for _ in range(16)) + "|"
    lines = [head, sep]
    for r in results:
        o = r["ours"]
        ref_all = r.get("reference_all_layers", {}).get("seconds")
        ref_k = r["reference_needed_layers"]["seconds"]
        monge = "—" if r["monge"] is None else ("yes" if r["monge"] else f"no ({r['exceptions']})")
        lines.append(
            f"| {r['case']} | {r['N']} | {r['schedule']} | {r['gamma']} | 2..{r['K_max']} | {monge} | {r['method']} | "
            + (f"{ref_all:.1f} s" if ref_all is not None else "not run") + f" | {ref_k:.1f} s | {o['total']:.2f} s | "
            f"{o['build']:.2f} / {o['solve']:.2f} / {o['backtrack']:.2f} | "
            + (f"{r['ours_dense']['total']:.1f} s" if "ours_dense" in r else "not run") + " | "
            + (f"{ref_all / o['total']:.0f}×" if ref_all is not None else "—") + f" | {ref_k / o['total']:.0f}× | "
            f"{r['max_abs_cost_diff']:.1e} | {r['paths_differing']} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--quick", action="store_true", help="stop the reference after the K_max − 1 layers needed")
    p.add_argument("--no-dense", action="store_true", help="skip timing our general (dense) DP")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs for ours (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    for n in names:
        if n not in CASES:
            p.error(f"unknown case {n!r}; choose from {', '.join(CASES)}")
    info = machine()
    print(f"# machine: {info['cpu']}, {info['cores']} cores, numpy {info['numpy']}, python {info['python']}; "
          f"load average at start {info.get('load_average_at_start')}", flush=True)
    results = []
    for n in names:
        t0 = time.perf_counter()
        r = run_case(n, full_reference=not args.quick, dense=not args.no_dense, repeats=args.repeats)
        results.append(r)
        print(f"# case {n} done in {time.perf_counter() - t0:.0f} s: {json.dumps(r)}", flush=True)
    try:
        info["load_average_at_end"] = os.getloadavg()
    except OSError:
        pass
    print()
    print(table(results))
    print(f"\nload average at end {info.get('load_average_at_end')}")
    if args.json:
        args.json.write_text(json.dumps(dict(machine=info, results=results), indent=2))


if __name__ == "__main__":
    main()
