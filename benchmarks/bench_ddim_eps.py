"""DDIM with a clamped x̂_0 on a committed network: the official mean (raw ε̂, ``ddim_eps="raw"``) against the
consistent one (ε̂ re-derived from the clamped x̂_0, ``ddim_eps="consistent"``), scored with FD-LeNet.

Everything as the image pipeline's Table 2 (``analytic_dpm.pipeline``): the preset's Ks, its number of samples, even
trajectory, x̂_0 clamped, σ₂ clip per ``CLIP_SIGMA_PIXEL``, the same seeds, and the stand-in classifier trained the
same way. Both columns are scored with one classifier in one process, so they are comparable with each other (the
classifier does not retrain bit for bit across processes; compare with the committed table2.md only roughly).
Samples are written to and resumed from ``<results>/samples`` (the raw ones are the pipeline's own files).

Usage (from the repository root; about 10 minutes on 2 CPU cores for fashion-mnist-cpu):

    python benchmarks/bench_ddim_eps.py --preset fashion-mnist-cpu --results results/fashion-mnist-cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytic_dpm.gamma import GammaEstimate  # noqa: E402
from analytic_dpm.pipeline import PRESETS, _load, _schedule  # noqa: E402
from analytic_dpm.pretrained_eval import CLIP_SIGMA_PIXEL  # noqa: E402
from analytic_dpm.sampling import sample  # noqa: E402
from analytic_dpm.trajectories import even_trajectory  # noqa: E402

METHODS = ("ddim", "analytic-ddim")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="fashion-mnist-cpu", choices=sorted(PRESETS))
    ap.add_argument("--results", default="results/fashion-mnist-cpu")
    a = ap.parse_args(argv)
    import torch

    from analytic_dpm.metrics import FeatureStatistics, frechet_distance, train_feature_classifier
    from analytic_dpm.models import TorchEpsModel, load_model

    t0 = time.perf_counter()
    cfg = PRESETS[a.preset]
    torch.set_num_threads(cfg.threads or 1)
    out = Path(a.results)
    train_set, test_set = _load(cfg)
    sched = _schedule(cfg)
    eps = TorchEpsModel(load_model(out / "model.pt"), timestep_map="n", schedule=sched, batch_size=cfg.batch_eval)
    est = GammaEstimate.load(out / "gamma.npz")
    clf = train_feature_classifier(train_set.images, train_set.labels, steps=cfg.lenet_steps, seed=cfg.seed,
                                   test_images=test_set.images, test_labels=test_set.labels)
    net = clf.model.eval()

    def stats(x):
        with torch.no_grad():
            return FeatureStatistics.from_features(net(torch.as_tensor(np.asarray(x, dtype=np.float32))).double().numpy())

    ref = stats(test_set.images)
    (out / "samples").mkdir(exist_ok=True)
    fd = {}
    for m in METHODS:
        for mode in ("raw", "consistent"):
            row = fd.setdefault(f"{m} ({mode})", {})
            for K in cfg.Ks:
                name = f"{m}_K{K}.npy" if mode == "raw" else f"{m}_consistent_K{K}.npy"
                x = sample(eps, sched, even_trajectory(sched.N, K), m, num_samples=cfg.fd_samples,
                           shape=train_set.shape, gamma=est if m.startswith("analytic") else None, clip_x0=True,
                           clip_sigma_pixel=CLIP_SIGMA_PIXEL[m], seed=cfg.seed, batch_size=cfg.batch_eval,
                           backend="torch", progress=False, out=out / "samples" / name, ddim_eps=mode)
                row[K] = frechet_distance(ref, stats(x))
                print(f"{m} ({mode}) K = {K}: FD-LeNet {row[K]:.3f}", flush=True)
    Ks = list(cfg.Ks)
    md = ["# DDIM with a clamped x̂_0: official (raw ε̂) against consistent (ε̂ from the clamped x̂_0)\n\n",
          f"FD-LeNet (not FID) of {cfg.fd_samples} samples, even trajectory, preset {a.preset!r}; one classifier "
          f"(test accuracy {clf.test_accuracy:.3f}) for every row. Command: `python benchmarks/bench_ddim_eps.py "
          f"--preset {a.preset} --results {a.results}`.\n\n",
          "| method | " + " | ".join(f"K={K}" for K in Ks) + " |\n|" + "---|" * (len(Ks) + 1) + "\n"]
    md += [f"| {k} | " + " | ".join(f"{v[K]:.3f}" for K in Ks) + " |\n" for k, v in fd.items()]
    (out / "ddim_eps.md").write_text("".join(md))
    (out / "ddim_eps.json").write_text(json.dumps({
        "preset": a.preset, "fd_lenet": {k: {str(K): v for K, v in d.items()} for k, d in fd.items()},
        "lenet_test_accuracy": clf.test_accuracy, "wall_s": time.perf_counter() - t0,
        "command": f"python benchmarks/bench_ddim_eps.py --preset {a.preset} --results {a.results}"}, indent=2) + "\n")
    print("".join(md))


if __name__ == "__main__":
    main()
