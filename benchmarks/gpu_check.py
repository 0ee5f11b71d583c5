"""One GPU check, under 8 minutes on one GPU, with one summary table at the end (``benchmarks/gpu_check.sh`` runs it).

Stages (each timed, each reported PASS/FAIL/SKIP with its figure):

1. **bench**: ``bench_gpu_sampling.run`` (library loop, host and device noise, against diffusers' DDIM pipeline and
   the AnalyticDPMScheduler pipeline) on the google/ddpm-cifar10-32 architecture with random weights, batch 256,
   K = 10 and 100; the figure is the library's overhead per step with a null network as a fraction of the network's
   time per step, and the throughput ratio against diffusers' DDIM pipeline.
2. **f32 vs f64**: ``analytic_dpm.sample`` in float32 on the device against float64 on the CPU, same model (the tiny
   UNet2DModel), same noise (host streams), analytic-DDPM and DDIM at K = 10: max |difference| of the samples.
3. **gamma**: ``estimate_gamma`` on the device for the committed digits network (``results/digits/model.pt``) on
   its training images, against the committed ``results/digits/gamma.npz`` at 20 timesteps: max |Γ̂ − Γ̂_committed|
   (same seeds and noise; only float32 rounding on the device may differ) and the R̂ difference.
4. **pipeline**: the image pipeline's ``digits`` preset on the device into a temporary folder (training included),
   its Table 1 ``ET analytic-ddpm`` at K = 10 against the committed CPU run.

``--device cpu --quick`` runs every stage at toy size on a CPU (the test suite does this), so the script is known to
work before a GPU is lent. Usage:

    bash benchmarks/gpu_check.sh                       # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def stage_bench(device, quick):
    import bench_gpu_sampling as B

    res = B.run(device=device, size="tiny" if quick else "cifar10", batch=8 if quick else 256,
                Ks=(10,) if quick else (10, 100), repeats=1 if quick else 3, seed=0, progress=lambda s: None)
    rows = {(r["impl"], r["method"], r["K"]): r for r in res["rows"]}
    K = max(r["K"] for r in res["rows"])
    ours = rows[("analytic_dpm.sample", "analytic-ddpm", K)]
    dev_noise = rows[("analytic_dpm.sample, noise='device'", "analytic-ddpm", K)]
    ddim_ours = rows[("analytic_dpm.sample", "ddim", K)]
    ddim_diff = rows[("diffusers DDIMPipeline", "ddim (DDIMScheduler)", K)]
    net = ours["network_ms_per_step"]
    fig = (f"K={K}: overhead/step (null net) {ours['overhead_ms_per_step_null_net'] / net:.1%} host noise, "
           f"{dev_noise['overhead_ms_per_step_null_net'] / net:.1%} device noise; DDIM throughput vs diffusers "
           f"{ddim_ours['images_per_s'] / ddim_diff['images_per_s']:.2f}x")
    return "PASS" if res["check_scheduler_vs_sample_max_abs_diff"] < 1e-3 else "FAIL", fig, res


def stage_f32_f64(device, quick):
    import torch

    import analytic_dpm as adpm
    import bench_gpu_sampling as B
    from analytic_dpm.integrations import unet_eps_model

    s = adpm.Schedule.linear(1000)
    traj = adpm.even_trajectory(1000, 10)
    gamma = np.full(1001, 0.5)
    gamma[0] = 0.0
    out = {}
    for method in ("analytic-ddpm", "ddim"):
        xs = {}
        for dev, dtype in ((device, torch.float32), ("cpu", torch.float64)):
            unet = B.build_unet("tiny", dev).to(dtype)
            xs[dtype] = adpm.sample(unet_eps_model(unet, s), s, traj, method, 8 if quick else 64, (1, 8, 8),
                                    gamma=gamma, clip_x0=True, seed=0, backend="torch", device=dev, dtype=dtype,
                                    progress=False)
        out[method] = float((xs[torch.float32].double() - xs[torch.float64]).abs().max())
    ok = all(v < 1e-3 for v in out.values())
    return "PASS" if ok else "FAIL", ", ".join(f"{m}: max|f32-f64| {v:.2e}" for m, v in out.items()), out


def stage_gamma(device, quick):
    from analytic_dpm.data import load_digits, split_dataset
    from analytic_dpm.gamma import GammaEstimate, estimate_gamma
    from analytic_dpm.models import TorchEpsModel, load_model
    from analytic_dpm.schedules import Schedule

    s = Schedule.linear(1000)
    ref = GammaEstimate.load(ROOT / "results/digits/gamma.npz")
    net = load_model(ROOT / "results/digits/model.pt", device=device)
    eps = TorchEpsModel(net, timestep_map="n", schedule=s, batch_size=512)
    train = split_dataset(load_digits(), test_fraction=0.2, seed=0)[0].images[:ref.num_samples]
    ts = np.unique(np.geomspace(1, 1000, 5 if quick else 20).astype(int))
    t0 = time.perf_counter()
    est = estimate_gamma(eps, s, train, timesteps=ts, num_samples=ref.num_samples, batch_size=512,
                         seed=ref.config["seed"], device=device, progress=False)
    wall = time.perf_counter() - t0
    dg = float(np.max(np.abs(est.gamma[ts] - ref.gamma[ts])))
    dr = float(np.max(np.abs(est.residual[ts] - ref.residual[ts]))) if ref.residual is not None else float("nan")
    return ("PASS" if dg < 1e-4 else "FAIL",
            f"{ts.size} timesteps x M={ref.num_samples} in {wall:.1f}s; max|Γ̂-committed| {dg:.1e}, R̂ {dr:.1e}",
            {"max_abs_gamma": dg, "max_abs_residual": dr, "wall_s": wall})


def stage_pipeline(device, quick, out):
    import dataclasses

    from analytic_dpm.pipeline import PRESETS, run_image_experiment

    if quick:
        cfg = dataclasses.replace(PRESETS["digits-ci"], train_steps=20, gamma_samples=8, nll_images=16, ot_images=4,
                                  fd_samples=16, lenet_steps=10, Ks=(10,))
    else:
        cfg = PRESETS["digits"]
    t0 = time.perf_counter()
    res = run_image_experiment(cfg, out / "pipeline", device=device, progress=False, log=lambda *a: None)
    wall = time.perf_counter() - t0
    got = res["nll_bits_per_dim"]["ET analytic-ddpm"]["10"]
    committed = json.loads((ROOT / "results/digits/results.json").read_text())["nll_bits_per_dim"][
        "ET analytic-ddpm"]["10"]
    fig = f"{wall:.0f}s; ET analytic-ddpm K=10 {got:.3f} bits/dim (committed CPU run {committed:.3f})"
    ok = np.isfinite(got) and (quick or abs(got - committed) < 0.2)
    return "PASS" if ok else "FAIL", fig, {"wall_s": wall, "et_analytic_K10": got, "committed": committed}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--quick", action="store_true", help="toy sizes (for a CPU smoke test)")
    ap.add_argument("--out", default=None, help="folder for outputs and summary.json (default: a temporary one)")
    ap.add_argument("--stages", default="bench,f32_f64,gamma,pipeline")
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    out.mkdir(parents=True, exist_ok=True)
    stages = {"bench": lambda: stage_bench(device, a.quick), "f32_f64": lambda: stage_f32_f64(device, a.quick),
              "gamma": lambda: stage_gamma(device, a.quick), "pipeline": lambda: stage_pipeline(device, a.quick, out)}
    summary = []
    for name in a.stages.split(","):
        t0 = time.perf_counter()
        try:
            status, fig, detail = stages[name]()
        except Exception as exc:  # report and go on: one table at the end
            status, fig, detail = "FAIL", f"{type(exc).__name__}: {exc}", traceback.format_exc()
        summary.append({"stage": name, "status": status, "seconds": time.perf_counter() - t0, "figure": fig,
                        "detail": detail})
        print(f"[{name}] {status} {fig}", flush=True)
    dev_name = torch.cuda.get_device_name(0) if torch.device(device).type == "cuda" else "cpu"
    lines = [f"\n| stage | status | s | figure |  ({dev_name}{', quick' if a.quick else ''})", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['status']} | {r['seconds']:.1f} | {r['figure']} |" for r in summary]
    print("\n".join(lines))
    (out / "summary.json").write_text(json.dumps({"device": device, "device_name": dev_name, "quick": a.quick,
                                                  "stages": summary}, indent=2, default=str) + "\n")
    return 0 if all(r["status"] == "PASS" for r in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
