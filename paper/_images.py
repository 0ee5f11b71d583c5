"""Shared by the image targets: run ``run_image_experiment`` and write CSV + Markdown + sidecars from its results."""

from __future__ import annotations

import time

from ._common import fmt, markdown_table, write_csv, write_sidecar


def run_preset(out_dir, preset: str, sub: str, stem: str):
    from analytic_dpm.pipeline import PRESETS, run_image_experiment

    t0 = time.perf_counter()
    dest = out_dir / sub
    res = run_image_experiment(preset, dest, progress=False)
    rows, md = [], [f"# Image experiment, preset {preset!r} (bound in bits/dim and FD-LeNet, not FID)\n\n"]
    for key, title in (("nll_bits_per_dim", "bound (bits/dim)"), ("fd_lenet", "FD-LeNet")):
        table = res[key]
        Ks = sorted({int(K) for d in table.values() for K in d})
        md.append(f"## {title}\n\n")
        md.append(markdown_table(["method"] + [f"K={k}" for k in Ks],
                                 [[m] + [fmt(d.get(str(K))) for K in Ks] for m, d in table.items()]) + "\n")
        rows += [[key, m, int(K), v] for m, d in table.items() for K, v in d.items()]
    csv_path = write_csv(out_dir / f"{stem}.csv", ["quantity", "method", "K", "value"], rows)
    md_path = out_dir / f"{stem}.md"
    md_path.write_text("".join(md) + f"Full outputs (figures, results.json): {sub}/\n")
    cfg = {"preset": preset, **PRESETS[preset].to_dict()}
    for p in (csv_path, md_path):
        write_sidecar(p, cfg, seeds=[PRESETS[preset].seed], started=t0)
    return [csv_path, md_path, dest / "results.json"]
