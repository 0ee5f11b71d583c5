"""Extended Analytic-DPM (SN-DPM, NPR-DPM) on the committed image networks: Table 1/2 analogues with per-dimension
variances, against the scalar analytic-DPM and residual variances (``analytic_dpm.covariance_experiment``).

For each of the committed base runs (results/digits, results/fashion-mnist-cpu) the SN and NPR heads are trained on
the frozen network, then the bound in bits/dim (± standard error over images, ET and OT) and FD-LeNet (DDPM and DDIM
families) are measured at K ∈ {10, 25, 50, 100, 200, 1000}. Outputs: extended.md/csv (both datasets), extended.png
(bound against K with error bars, and the heads' averages against 1 − Γ̂ and R̂), with sidecars.

Full mode: rendered from the committed runs results/extended-<preset>/results.json when their configuration matches
(seconds); ADPM_PAPER_RERUN=1 recomputes (about 15 min for digits and 40 min for Fashion-MNIST on one CPU core each).
Fast mode: the 'digits-ci' preset on the committed digits network (half a minute), into paper/out/extended-ci/.
"""

from __future__ import annotations

import json
import os
import time

from analytic_dpm.covariance_experiment import shown_bounds

from ._common import fmt, markdown_table, pyplot, save_figure, write_csv, write_sidecar
from ._images import RESULTS

BASES = ("digits", "fashion-mnist-cpu")


def _results(out_dir, preset: str, fast: bool):
    from analytic_dpm.covariance_experiment import PRESETS, run_covariance_experiment, same_config

    if fast:
        return run_covariance_experiment("digits-ci", base_dir=RESULTS / "digits", out_dir=out_dir / "extended-ci",
                                         progress=False, log=lambda *a: None), "digits-ci"
    committed = RESULTS / f"extended-{preset}" / "results.json"
    if committed.exists() and os.environ.get("ADPM_PAPER_RERUN") != "1":
        saved = json.loads(committed.read_text())
        if same_config(saved.get("config"), PRESETS[preset]):
            print(f"extended: {preset} from the committed run {committed.relative_to(RESULTS.parent)} "
                  "(ADPM_PAPER_RERUN=1 recomputes)")
            return saved, preset
    return run_covariance_experiment(preset, base_dir=RESULTS / preset, out_dir=out_dir / f"extended-{preset}",
                                     progress=False), preset


def run(out_dir, fast: bool = False):
    t0 = time.perf_counter()
    runs = []
    if fast:
        runs.append(_results(out_dir, "digits", True))
    else:
        from analytic_dpm.data import fashion_mnist_available

        for preset in BASES:
            if preset.startswith("fashion") and not fashion_mnist_available():
                print("extended: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); digits only")
                continue
            runs.append(_results(out_dir, preset, False))
    rows, md = [], ["# Extended Analytic-DPM: per-dimension variances (SN-DPM, NPR-DPM) against the scalar ones\n\n"]
    for res, name in runs:
        Ks = [int(k) for k in res["config"]["Ks"]]
        md.append(f"## {res['base_config']['dataset']} ({name})\n\n### bound (bits/dim ± standard error over "
                  f"{res['config']['nll_images']} held-out images)\n\n")
        nll, se = shown_bounds(res)
        md.append(markdown_table(["trajectory, method"] + [f"K={k}" for k in Ks],
                                 [[m] + [(f"{fmt(d[str(K)], 4)} ± {fmt(se[m][str(K)], 2)}" if str(K) in d else "—")
                                         for K in Ks] for m, d in nll.items()]) + "\n")
        md.append(f"### FD-LeNet (not FID), {res['config']['fd_samples']} samples; real training images score "
                  f"{fmt(res['fd_lenet_floor'])}\n\n")
        fse = res.get("fd_lenet_stderr", {})
        md.append(markdown_table(["method"] + [f"K={k}" for k in Ks],
                                 [[m] + [fmt(d[str(K)]) + (f" ± {fmt(fse[m][str(K)], 2)}" if str(K) in fse.get(m, {})
                                                           else "") for K in Ks]
                                  for m, d in res["fd_lenet"].items()]) + "\n")
        for m, d in nll.items():
            rows += [[name, "bits_per_dim", m, int(K), v, se[m][K]] for K, v in d.items()]
        rows += [[name, "fd_lenet", m, int(K), v, res.get("fd_lenet_stderr", {}).get(m, {}).get(K, "")]
                 for m, d in res["fd_lenet"].items() for K, v in d.items()]
    csv_path = write_csv(out_dir / "extended.csv", ["run", "quantity", "method", "K", "value", "stderr"], rows)
    md_path = out_dir / "extended.md"
    md_path.write_text("".join(md))

    plt = pyplot()
    fig, axes = plt.subplots(2, len(runs), figsize=(5.5 * len(runs), 8), squeeze=False)
    for j, (res, name) in enumerate(runs):
        ax = axes[0, j]
        nll, se = shown_bounds(res)
        for m, d in nll.items():
            if not m.startswith("ET"):
                continue
            Ks = sorted(int(k) for k in d)
            ax.errorbar(Ks, [d[str(k)] for k in Ks], yerr=[se[m][str(k)] for k in Ks], marker="o", capsize=3,
                        label=m)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K")
        ax.set_ylabel("bits/dim (ET)")
        ax.set_title(name)
        ax.legend(fontsize=8)
        ax = axes[1, j]
        hc = res["head_check"]
        ts = [r["t"] for r in hc]
        ax.loglog(ts, [max(r["sn_mean"], 1e-6) for r in hc], "o-", label="SN mean(h − ε̂²)")
        ax.loglog(ts, [r["one_minus_gamma"] for r in hc], "k--", label="1 − Γ̂_t")
        ax.loglog(ts, [r["npr_mean"] for r in hc], "s-", label="NPR mean(g)")
        ax.loglog(ts, [r["residual"] for r in hc], "k:", label="R̂_t")
        ax.set_xlabel("t")
        ax.set_title("heads averaged over images and dimensions")
        ax.legend(fontsize=8)
    fig.tight_layout()
    figs = save_figure(fig, out_dir / "extended.png")
    cfg = {"fast": fast, "runs": {name: res["config"] for res, name in runs}}
    for p in (csv_path, md_path, *figs):
        write_sidecar(p, cfg, seeds=[res["config"]["seed"] for res, _ in runs], started=t0)
    return [csv_path, md_path, *figs]
