"""Image experiments end to end: train an ε-network, estimate Γ, bound the likelihood, sample, score.

``run_image_experiment(config, out_dir)`` reproduces the shape of the paper's Tables 1 and 2 on data we can have
offline (scikit-learn digits, Fashion-MNIST from the Debian package ``dataset-fashion-mnist``):

* Table 1 analogue: the variational bound in bits/dim on held-out images (discretized decoder, facts file §4.5) for
  the DDPM-family methods on the even trajectory (ET), and on optimal trajectories (OT). The OT rows minimize the
  bound's terms estimated on training images (facts file §4.4), priced with each method's σ²: this accounts for
  the network's mean error. The row "OT(Γ only)" is the paper's DP over J(s, t) from Γ alone (Theorem 3), which
  assumes the optimal mean: with an imperfect network, where Γ̂_t ≥ 1 it prices any jump into t at zero and can
  pick a trajectory with a far worse bound — the failure the official code avoids with an undocumented split.
* The network's actual mean: the rows "residual-ddpm" use σ² = λ² + g²R̂_t with R̂_t = E‖ε − ε̂_t‖²/d estimated from
  the same network calls as Γ̂ (``theory`` entry ``residual-variance``); "OT(R only) residual-ddpm" is the exact DP
  over J = log(1 + g²R̂_t/λ²), which needs no bound matrix, and "OT residual-ddpm" the bound-matrix OT priced with
  the residual variance; "OT(τ1=1) residual-ddpm" is that bound-matrix OT with τ_1 = 1 fixed, as in Theorem 3's
  DP and in OT(R only), so that the two are compared like for like (the bound matrix may also choose τ_1, i.e. jump
  straight to the decoder from a large t, which the Theorem 3 cost cannot price). R̂ is measured on the raw ε̂; the sampler and the bound clamp x̂_0, which can only shrink
  the mean error, so the residual variance is then slightly conservative.
* Table 2 analogue: the Fréchet distance of samples from the five methods and the two residual methods, measured
  with the offline stand-in feature extractor "FD-LeNet" (a small classifier trained on the same data). It is never
  called FID.

Every long stage can be interrupted and resumed: training keeps checkpoints, Γ a checkpoint of its running sums,
each sampling run an incremental ``.npy``. Outputs go to ``out_dir``: ``results.json`` (all numbers, configuration,
versions, wall times), ``table1.md``/``table2.md``/``*.csv``, ``samples_<method>_K<k>.png`` grids, the EMA weights
``model.pt`` and ``gamma.npz``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import platform
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .data import box_downsample, load_digits, load_fashion_mnist, split_dataset
from .gamma import GammaEstimate, estimate_gamma
from .image_likelihood import baseline_cost_matrix, collect_bound_statistics, variational_bound
from .models.training import read_model_file
from .optimal_trajectory import optimal_trajectories, optimal_trajectories_from_costs
from .pretrained_eval import sample_fd_table
from .schedules import Schedule
from .trajectories import even_trajectory
from .variance import METHODS, RESIDUAL_METHODS

LN2 = math.log(2.0)
DDPM_FAMILY = ("ddpm-large", "ddpm-small", "analytic-ddpm", "residual-ddpm")
#: the sampling methods of Table 2: the paper's five and the residual variances for the network's own mean
FD_METHODS = METHODS + RESIDUAL_METHODS


@dataclass(frozen=True)
class ImageExperimentConfig:
    """Sizes of one image experiment (see :data:`PRESETS`)."""

    dataset: str = "digits"  #: 'digits' or 'fashion-mnist'
    downsample: int = 1  #: box-downsampling factor of the images (2: Fashion-MNIST at 14×14), see data.box_downsample
    N: int = 1000
    schedule: str = "linear"
    Ks: tuple = (10, 25, 50, 100)
    unet: dict = field(default_factory=lambda: {"image_size": 8, "base_channels": 16, "channel_mult": (1, 2),
                                                  "num_res_blocks": 1, "attention_resolutions": (4,)})
    train_steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.995
    warmup: int = 20
    gamma_samples: int = 256  #: M images of the training set, each at every timestep (N·M evaluations)
    nll_images: int = 256  #: held-out images for the bound
    ot_images: int = 128  #: training images for the baseline cost matrix (N·M evaluations)
    fd_samples: int = 1000  #: samples per method and K
    lenet_steps: int = 300
    batch_eval: int = 512
    seed: int = 0
    threads: int | None = 1  #: torch CPU threads (small convolutions run fastest on one; None: torch's default)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS = {
    # the test suite's end-to-end check: a couple of minutes on 2 cores
    "digits-ci": ImageExperimentConfig(train_steps=300, gamma_samples=32, nll_images=128, ot_images=16,
                                       fd_samples=200, lenet_steps=150, Ks=(10, 25, 50, 100)),
    "digits": ImageExperimentConfig(),
    "fashion-mnist": ImageExperimentConfig(
        dataset="fashion-mnist", Ks=(10, 25, 50, 100, 200, 1000),
        unet={"image_size": 28, "base_channels": 32, "channel_mult": (1, 2, 2), "num_res_blocks": 1,
              "attention_resolutions": (7,)},
        train_steps=6000, batch_size=128, lr=5e-4, ema_decay=0.999, gamma_samples=200, nll_images=500, ot_images=64,
        fd_samples=1000, lenet_steps=600,
    ),
    # What a 2-core CPU finishes in about an hour (the committed results/fashion-mnist-cpu): 14×14 images
    # (2×2 box mean on the 8-bit grid), a 180k-parameter U-Net, 256 samples per method and K.
    "fashion-mnist-cpu": ImageExperimentConfig(
        dataset="fashion-mnist", downsample=2, Ks=(10, 25, 50, 100, 200, 1000),
        unet={"image_size": 14, "base_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1,
              "attention_resolutions": ()},
        train_steps=4000, batch_size=64, lr=1e-3, ema_decay=0.999, gamma_samples=128, nll_images=128, ot_images=64,
        fd_samples=256, lenet_steps=600, batch_eval=256,
    ),
}


def _load(config: ImageExperimentConfig):
    if config.dataset == "digits":
        train, test = split_dataset(load_digits(), test_fraction=0.2, seed=config.seed)
    elif config.dataset == "fashion-mnist":
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    else:
        raise ValueError(f"dataset must be 'digits' or 'fashion-mnist'; got {config.dataset!r}.")
    return box_downsample(train, config.downsample), box_downsample(test, config.downsample)


def _schedule(config) -> Schedule:
    if config.schedule == "linear":
        return Schedule.linear(config.N)
    if config.schedule == "cosine":
        return Schedule.cosine(config.N)
    raise ValueError(f"schedule must be 'linear' or 'cosine'; got {config.schedule!r}.")


def _save_grid(x: np.ndarray, path: pathlib.Path, rows: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(x), rows * rows)
    c, h, w = x.shape[1:]
    grid = np.ones((rows * (h + 1), rows * (w + 1)))
    for i in range(n):
        r, q = divmod(i, rows)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = (np.clip(x[i, 0], -1, 1) + 1) / 2
    plt.imsave(path, grid, cmap="gray", vmin=0, vmax=1)


def _md_table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _finished_model(path: pathlib.Path, ucfg, config):
    """(EMA network, training summary) from a model.pt written by an earlier run with this network configuration and
    number of training steps, else None."""
    if not path.exists():
        return None
    from .models import load_model

    obj = read_model_file(path)
    meta = obj.get("metadata") or {}
    stored = obj.get("config") or {}
    want = json.loads(json.dumps(dataclasses.asdict(ucfg)))
    if stored != want or meta.get("steps") != config.train_steps or meta.get("dataset") != config.dataset:
        raise ValueError(
            f"{path} was trained with another configuration (network {stored}, {meta.get('steps')} steps on "
            f"{meta.get('dataset')!r}); this run asks for {want}, {config.train_steps} steps on {config.dataset!r}. "
            "Delete it (and the checkpoints folder) to retrain, or use another out_dir."
        )
    loss = meta.get("final_loss")
    old = path.parent / "results.json"
    if loss is None and old.exists():  # models saved before the loss was stored: the earlier run's summary
        loss = json.loads(old.read_text()).get("train", {}).get("final_loss")
    return load_model(path), {"steps": int(meta["steps"]), "final_loss": loss}


def fd_lenet_setup(train_set, test_set, lenet_steps: int, seed: int, fd_samples: int):
    """The FD-LeNet scorer of the image tables: (classifier, features(x) -> (B, D) float64, reference statistics of
    the test images, number of training images for the floor, floor = FD of that many real training images)."""
    import torch

    from .metrics import FeatureStatistics, frechet_distance, train_feature_classifier

    clf = train_feature_classifier(train_set.images, train_set.labels, steps=lenet_steps, seed=seed,
                                   test_images=test_set.images, test_labels=test_set.labels)
    extractor = clf.model.eval()

    def features(x):
        with torch.no_grad():
            return extractor(torch.as_tensor(np.asarray(x, dtype=np.float32))).double().numpy()

    ref = FeatureStatistics.from_features(features(test_set.images))
    n_floor = min(fd_samples, len(train_set))
    floor = frechet_distance(ref, FeatureStatistics.from_features(features(train_set.images[:n_floor])))
    return clf, features, ref, n_floor, floor


def run_image_experiment(config: ImageExperimentConfig | str = "digits", out_dir="image_out", device=None,
                         progress: bool | None = None, log=print) -> dict:
    """Train → Γ → bounds (ET and OT) → samples → FD-LeNet; returns the results dictionary (also saved as JSON)."""
    import torch

    from .models import TorchEpsModel, UNet, UNetConfig, save_model, train

    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"config must be an ImageExperimentConfig or one of {', '.join(PRESETS)}; got {config!r}.")
        preset = config
        config = PRESETS[config]
    else:
        preset = None
    if config.threads:
        torch.set_num_threads(config.threads)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    walls = {}
    t_all = time.perf_counter()
    train_set, test_set = _load(config)
    sched = _schedule(config)
    shape = train_set.shape
    log(f"[{config.dataset}] {len(train_set)} training and {len(test_set)} test images of shape {shape}; {sched}")

    # 1. train (resumable); a finished model.pt of the same configuration is reused (its training summary with it)
    t0 = time.perf_counter()
    ucfg = UNetConfig(**{**config.unet, "channels": shape[0], "image_size": shape[1]})
    model_path = out / "model.pt"
    previous = _finished_model(model_path, ucfg, config)
    if previous is not None:
        ema, train_summary = previous
        log(f"  reusing the trained network {model_path} ({train_summary['steps']} steps); delete it to retrain")
    else:
        torch.manual_seed(config.seed)
        net = UNet(ucfg)
        res = train(net, train_set, sched, steps=config.train_steps, batch_size=config.batch_size, lr=config.lr,
                    ema_decay=config.ema_decay, warmup=config.warmup, seed=config.seed,
                    checkpoint_dir=out / "checkpoints", checkpoint_every=500, device=device, progress=progress)
        train_summary = {"steps": res.step, "final_loss": float(np.mean(res.losses[-100:]))}
        save_model(res.ema, model_path, ucfg, metadata={"dataset": config.dataset, "steps": res.step,
                                                         "final_loss": train_summary["final_loss"],
                                                         "config": config.to_dict()})
        ema = res.ema
        log(f"  trained {res.step} steps (final loss {train_summary['final_loss']:.4f}) in "
            f"{time.perf_counter() - t0:.0f} s")
    walls["train"] = time.perf_counter() - t0
    eps = TorchEpsModel(ema, timestep_map="n", schedule=sched, batch_size=config.batch_eval)

    # 2. Γ by Monte Carlo on training images (resumable)
    t0 = time.perf_counter()
    gamma_path = out / "gamma.npz"
    est = GammaEstimate.load(gamma_path) if gamma_path.exists() else None
    if est is not None and est.residual is None:
        log(f"  {gamma_path} has no residual R̂ (saved by an older version): re-estimating (same seeds and noise)")
        est = None
    if est is None:
        est = estimate_gamma(eps, sched, train_set.images[: config.gamma_samples], num_samples=config.gamma_samples,
                             batch_size=config.batch_eval, seed=config.seed, checkpoint=out / "gamma.ckpt.npz",
                             progress=progress)
        est.save(gamma_path)
    gamma = est.gamma
    walls["gamma"] = time.perf_counter() - t0
    log(f"  Γ from M = {est.num_samples} images at {sched.N} timesteps in {walls['gamma']:.0f} s "
        f"(Γ̂ > 1 at {int(np.sum(gamma[1:] > 1))} timesteps; direct 1 − Γ̂ < 0 at "
        f"{int(np.sum(est.one_minus_gamma[1:] < 0))}; R̂ in [{np.min(est.residual[1:]):.3g}, "
        f"{np.max(est.residual[1:]):.3g}])")

    # 3. Table 1 analogue: bits/dim on held-out images
    t0 = time.perf_counter()
    x_nll = test_set.images[: config.nll_images]
    nll = {f"ET {m}": {} for m in DDPM_FAMILY}
    nll_se = {}  # standard errors over the held-out images, same keys
    nll.update({"OT ddpm-large": {}, "OT analytic-ddpm": {}, "OT(Γ only) analytic-ddpm": {},
                "OT residual-ddpm": {}, "OT(τ1=1) residual-ddpm": {}, "OT(R only) residual-ddpm": {}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Γ̂ outside [0, 1] is clipped; counted above
        # The bound's terms estimated on training images (facts file §4.4), priced for σ² = β and for the analytic
        # σ̂²: the DP then minimizes the estimated bound of the actual model, mean error included.
        F = baseline_cost_matrix(eps, sched, train_set.images[: config.ot_images], method="ddpm-large",
                                 seed=config.seed + 1, batch_size=config.batch_eval, progress=progress)
        ot_base = optimal_trajectories_from_costs(F.F, K_max=max(config.Ks), progress=False)
        F_an = F.with_method("analytic-ddpm", gamma=gamma)
        ot_an = optimal_trajectories_from_costs(F_an.F, K_max=max(config.Ks), progress=False)
        # The paper's DP over J(s, t) from Γ alone assumes the optimal mean (Theorem 3); shown for comparison.
        ot_gamma = optimal_trajectories(sched, gamma, K_max=max(config.Ks), progress=False)
        # The same exact DP on the residual R̂ of the network's own mean: no bound matrix needed
        ot_res = optimal_trajectories(sched, None, K_max=max(config.Ks), residual=est.residual, progress=False)
        F_res = F.with_method("residual-ddpm", gamma=est)
        ot_res_F = optimal_trajectories_from_costs(F_res.F, K_max=max(config.Ks), progress=False)
        # the same bound matrix with τ_1 = 1 fixed, as Theorem 3's DP (and OT(R only)) has it: the like-for-like check
        ot_res_F1 = optimal_trajectories_from_costs(F_res.F, K_max=max(config.Ks), start=1, progress=False)
        for K in config.Ks:
            stats = collect_bound_statistics(eps, sched, even_trajectory(sched.N, K), x_nll, seed=config.seed,
                                             batch_size=config.batch_eval, progress=False)
            for m in DDPM_FAMILY:
                b = stats.bound(m, gamma=est if m in ("analytic-ddpm", "residual-ddpm") else None)
                nll[f"ET {m}"][K] = b.bits_per_dim
                nll_se.setdefault(f"ET {m}", {})[K] = b.bits_per_dim_stderr
            for label, ot, m in (("OT analytic-ddpm", ot_an, "analytic-ddpm"),
                                 ("OT(Γ only) analytic-ddpm", ot_gamma, "analytic-ddpm"),
                                 ("OT residual-ddpm", ot_res_F, "residual-ddpm"),
                                 ("OT(τ1=1) residual-ddpm", ot_res_F1, "residual-ddpm"),
                                 ("OT(R only) residual-ddpm", ot_res, "residual-ddpm")):
                b = variational_bound(eps, sched, ot.trajectory(K), m, x_nll, gamma=est, seed=config.seed,
                                      batch_size=config.batch_eval)
                nll[label][K] = b.bits_per_dim
                nll_se.setdefault(label, {})[K] = b.bits_per_dim_stderr
            b = variational_bound(eps, sched, ot_base.trajectory(K), "ddpm-large", x_nll, seed=config.seed,
                                  batch_size=config.batch_eval)
            nll["OT ddpm-large"][K] = b.bits_per_dim
            nll_se.setdefault("OT ddpm-large", {})[K] = b.bits_per_dim_stderr
    walls["nll"] = time.perf_counter() - t0
    log(f"  bounds for K in {list(config.Ks)} in {walls['nll']:.0f} s")

    # 4. Table 2 analogue: FD-LeNet of samples
    t0 = time.perf_counter()
    (out / "samples").mkdir(exist_ok=True)
    clf, features, ref, n_floor, floor = fd_lenet_setup(train_set, test_set, config.lenet_steps, config.seed,
                                                        config.fd_samples)

    def save_grids(m, K, x, _):
        if K == min(config.Ks) or K == max(config.Ks):
            _save_grid(x, out / f"samples_{m}_K{K}.png")

    fd_se = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fd = sample_fd_table(eps, sched, est, FD_METHODS, config.Ks, num_samples=config.fd_samples, shape=shape,
                             features_of=features, fd_stderr=fd_se, bootstrap=100, reference=ref,
                             samples_dir=out / "samples", seed=config.seed, batch_size=config.batch_eval,
                             device=device, progress=False, on_result=save_grids)
    walls["fd"] = time.perf_counter() - t0
    walls["total"] = time.perf_counter() - t_all
    log(f"  FD-LeNet for the five methods in {walls['fd']:.0f} s (classifier test accuracy "
        f"{clf.test_accuracy:.3f}; {n_floor} training images score {floor:.3f})")

    results = {
        "preset": preset, "config": config.to_dict(), "schedule": str(sched),
        "train": train_summary,
        "gamma": {"M": est.num_samples, "above_one": int(np.sum(gamma[1:] > 1)),
                  "one_minus_gamma_direct_below_zero": int(np.sum(est.one_minus_gamma[1:] < 0)),
                  "residual_min": float(np.min(est.residual[1:])), "residual_max": float(np.max(est.residual[1:])),
                  "residual_above_theorem2_eq11": int(np.sum(est.residual[1:] > 1))},
        "nll_bits_per_dim": {k: {str(K): v for K, v in d.items()} for k, d in nll.items()},
        "nll_bits_per_dim_stderr": {k: {str(K): v for K, v in d.items()} for k, d in nll_se.items()},
        "fd_lenet": {k: {str(K): v for K, v in d.items()} for k, d in fd.items()},
        "fd_lenet_stderr": {k: {str(K): v for K, v in d.items()} for k, d in fd_se.items()},
        "fd_lenet_floor": floor, "lenet_test_accuracy": clf.test_accuracy,
        "wall_s": walls, "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                       "numpy": np.__version__},
        "device": str(device or "cpu"),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    Ks = list(config.Ks)
    t1 = _md_table(["trajectory, method"] + [f"K={k}" for k in Ks],
                   [[k] + [f"{d[K]:.3f} ± {nll_se[k][K]:.3f}" for K in Ks] for k, d in nll.items()])
    t2 = _md_table(["method"] + [f"K={k}" for k in Ks],
                   [[m] + [f"{d[K]:.3f} ± {fd_se[m][K]:.3f}" for K in Ks] for m, d in fd.items()])
    (out / "table1.md").write_text(f"# Bound on held-out {config.dataset} images (bits/dim ± standard error over "
                                   f"the {len(x_nll)} images)\n\n" + t1)
    (out / "table2.md").write_text(f"# FD-LeNet (not FID) of {config.fd_samples} samples, even trajectory (± the "
                                   "standard deviation of 100 bootstrap resamples of the samples); "
                                   f"{n_floor} real training images score {floor:.3f}\n\n" + t2)
    log("\n" + t1 + "\n" + t2)
    return results
