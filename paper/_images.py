"""Shared by the image targets: run ``run_image_experiment`` and write CSV + Markdown + sidecars from its results.

When the repository holds the committed run of the same preset (``results/<preset>/results.json`` with an identical
configuration), the tables are rendered from it instead of recomputing for an hour; set ADPM_PAPER_RERUN=1 to
recompute into paper/out/ anyway.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

from ._common import fmt, markdown_table, write_csv, write_sidecar


#: where committed image runs live (the repository's results/ directory)
RESULTS = pathlib.Path(__file__).resolve().parent.parent / "results"


def run_preset(out_dir, preset: str, sub: str, stem: str):
    from analytic_dpm.pipeline import PRESETS, ImageExperimentConfig, run_image_experiment

    t0 = time.perf_counter()
    dest = out_dir / sub
    committed = RESULTS / preset / "results.json"
    res = None
    if committed.exists() and os.environ.get("ADPM_PAPER_RERUN") != "1":
        saved = json.loads(committed.read_text())
        # keys added to the configuration after a run was committed take their default values
        base = json.loads(json.dumps(ImageExperimentConfig().to_dict()))
        old = {k: saved.get("config", {}).get(k, v) for k, v in base.items()}
        if old == json.loads(json.dumps(PRESETS[preset].to_dict())):
            res, dest = saved, committed.parent
            print(f"{stem}: tables from the committed run results/{preset}/results.json (ADPM_PAPER_RERUN=1 "
                  "recomputes)")
    if res is None:
        res = run_image_experiment(preset, dest, progress=False)
    rows, md = [], [f"# Image experiment, preset {preset!r} (bound in bits/dim and FD-LeNet, not FID)\n\n"]
    for key, title in (("nll_bits_per_dim", "bound (bits/dim ± standard error over images)"),
                       ("fd_lenet", "FD-LeNet (± bootstrap standard error over samples)")):
        table, se = res[key], res.get(f"{key}_stderr", {})
        Ks = sorted({int(K) for d in table.values() for K in d})
        md.append(f"## {title}\n\n")
        md.append(markdown_table(["method"] + [f"K={k}" for k in Ks],
                                 [[m] + [fmt(d.get(str(K))) + (f" ± {fmt(se[m][str(K)], 2)}" if str(K) in se.get(m, {})
                                                               else "") for K in Ks]
                                  for m, d in table.items()]) + "\n")
        rows += [[key, m, int(K), v, se.get(m, {}).get(K, "")] for m, d in table.items() for K, v in d.items()]
    csv_path = write_csv(out_dir / f"{stem}.csv", ["quantity", "method", "K", "value", "stderr"], rows)
    md_path = out_dir / f"{stem}.md"
    where = f"results/{preset}/" if dest.parent == RESULTS else f"{sub}/"
    md_path.write_text("".join(md) + f"Full outputs (sample grids, results.json with wall times): {where}\n")
    cfg = {"preset": preset, **PRESETS[preset].to_dict()}
    for p in (csv_path, md_path):
        write_sidecar(p, cfg, seeds=[PRESETS[preset].seed], started=t0)
    return [csv_path, md_path, dest / "results.json"]
