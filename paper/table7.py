"""Table 7 (P App. G.4): the bounds and the pixel threshold on the (τ_1, τ_2) transition of the even trajectory.

The lower bound, the combined upper bound min(eq. 11, eq. 12) and the threshold need no network, so they are
computed exactly; the σ̂² row needs the authors' Γ and is shown from the paper for comparison only.
"""

from __future__ import annotations

import time

import analytic_dpm as adpm

from ._common import write_csv, write_latex, markdown_table, write_sidecar

CASES = [  # (label, schedule factory, N, K values, DDPM clip_pixel y)
    ("CIFAR10 (LS)", "linear", 1000, [10, 25, 50, 100], 2),
    ("CIFAR10 (CS)", "cosine", 1000, [10, 25, 50, 100], 1),
    ("CelebA 64 (LS)", "linear", 1000, [10, 25, 50, 100], 2),
    ("ImageNet 64 (CS, N=4000)", "cosine", 4000, [25, 50, 100, 200], 1),
]


def compute():
    rows = []
    for label, kind, N, Ks, y in CASES:
        sched = getattr(adpm.Schedule, kind)(N)
        for method, yy in (("ddpm-small", y), ("ddim", 1)):
            thr, ub, lb = [], [], []
            for K in Ks:
                v = adpm.reverse_variances(sched, adpm.even_trajectory(N, K), method)
                thr.append(adpm.pixel_clip_threshold(yy))
                ub.append(v.upper[1])
                lb.append(v.lower[1])
            proc = "DDPM" if method == "ddpm-small" else "DDIM"
            rows.append((label, proc, Ks, f"threshold (y={yy})", thr))
            rows.append((label, proc, Ks, "UB", ub))
            rows.append((label, proc, Ks, "LB", lb))
    return rows


def run(out_dir, fast: bool = False):
    t0 = time.perf_counter()
    rows = compute()
    text = ["# Table 7: bounds on the (τ_1, τ_2) transition, even trajectory\n\n"]
    for label in dict.fromkeys(r[0] for r in rows):
        sub = [r for r in rows if r[0] == label]
        Ks = sub[0][2]
        text.append(f"## {label}\n\n")
        text.append(markdown_table(["process", "row"] + [f"K={k}" for k in Ks],
                                   [[r[1], r[3]] + [("0" if x == 0 else f"{x:.2e}") for x in r[4]] for r in sub]))
        text.append("\n")
    path = out_dir / "table7.md"
    path.write_text("".join(text))
    csv_path = write_csv(out_dir / "table7.csv", ["case", "process", "row", "K", "value"],
                         [[r[0], r[1], r[3], K, float(x)] for r in rows for K, x in zip(r[2], r[4])])
    blocks = [(f"{label} (K = {', '.join(map(str, [r for r in rows if r[0] == label][0][2]))})",
               [[r[1], r[3]] + [("0" if x == 0 else f"{x:.2e}") for x in r[4]] for r in rows if r[0] == label])
              for label in dict.fromkeys(r[0] for r in rows)]
    tex_path = write_latex(out_dir / "table7.tex", ["process", "row", "1st K", "2nd K", "3rd K", "4th K"], blocks,
                           caption="Theorem 2 bounds on the $(\\tau_1, \\tau_2)$ transition, even trajectory.")
    for p in (path, csv_path, tex_path):
        write_sidecar(p, {"cases": [c[:5] for c in CASES]}, started=t0)
    return [path, csv_path, tex_path]
