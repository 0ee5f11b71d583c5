"""Table 2 analogue (P Table 2, FID → exact Fréchet distance): FD between the toy Gaussian and the generated Gaussian.

Rows: ET for the five methods (ddpm-small, ddpm-large, analytic-ddpm, ddim, analytic-ddim; Γ exact), OT
ddpm-large (DP over its exact bound terms), and OT analytic-ddpm / analytic-ddim (both on the Theorem 3 trajectory of
analytic-ddpm). The FD is closed form (``toy.evaluate_exact(...).fd``), no sampling.

Full mode: d = 3072, N = 1000, K ∈ {10, 25, 50, 100, 200, 400, 1000}; expected wall time about 10–30 s on 2 CPU cores
(under a second when table1 ran first: shared cache). Fast mode: d = 64, K ∈ {10, 25, 100}: measured < 0.1 s
after table1.
"""

from __future__ import annotations

import time

from . import _toy as T
from ._common import fmt, markdown_table, write_csv, write_latex, write_sidecar

ROWS = [r[0] for r in T.ET_ROWS + T.OT_ROWS]


def run(out_dir, fast: bool = False):
    t0 = time.perf_counter()
    z = T.sizes(fast)
    Ks = z["Ks"]
    csv_rows, md = [], [f"# Table 2 analogue: exact Fréchet distance, toy Gaussian d = {z['dim']}, N = {z['N']}\n\n"]
    blocks = []
    for name in T.SCHEDULES:
        res = T.evaluate_cached(out_dir, name, z["dim"], Ks)
        md.append(f"## {name} schedule\n\n")
        body = []
        for label in ROWS:
            vals = res[f"{label}/fd"]
            body.append([label] + [fmt(v) for v in vals])
            csv_rows += [[name, label, K, float(v)] for K, v in zip(Ks, vals)]
        md.append(markdown_table(["method"] + [f"K={k}" for k in Ks], body) + "\n")
        blocks.append((f"{name} schedule", body))
    csv_path = write_csv(out_dir / "table2.csv", ["schedule", "method", "K", "fd"], csv_rows)
    md_path = out_dir / "table2.md"
    md_path.write_text("".join(md))
    tex_path = write_latex(out_dir / "table2.tex", ["method"] + [f"K={k}" for k in Ks], blocks,
                           caption="Exact Fr\\'echet distance on the toy Gaussian.")
    cfg = {**z, "schedules": list(T.SCHEDULES), "rows": ROWS, "fast": fast}
    for p in (csv_path, md_path, tex_path):
        write_sidecar(p, cfg, seeds=None, started=t0)
    return [csv_path, md_path, tex_path]
