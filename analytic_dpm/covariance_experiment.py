"""Extended Analytic-DPM on the committed image networks: SN-DPM and NPR-DPM heads, bounds and FD-LeNet.

``run_covariance_experiment(preset, base_dir, out_dir)`` takes a finished run of
:func:`analytic_dpm.pipeline.run_image_experiment` (its ``model.pt`` and ``gamma.npz``, e.g. the committed
``results/digits`` and ``results/fashion-mnist-cpu``) and

1. trains the two second heads of the extended paper on the frozen ε-network (stage 2 of its two-stage training,
   facts file §6.2; the official 'simple' head, zero-initialised): SN (E[ε²|x_t]) and NPR (E[(ε − ε̂)²|x_t]), each
   resumable from its checkpoints, saved as ``head_sn.pt`` / ``head_npr.pt``;
2. checks the heads against the Monte Carlo statistics of the scalar methods: averaged over images and dimensions,
   SN's h − ε̂² should match 1 − Γ̂_t and NPR's head R̂_t (the reduction to the scalar forms, ``theory`` entry
   ``diagonal-covariance``), measured on held-out images on a grid of t;
3. Table 1 analogue: the bound in bits/dim (with its standard error over images) on held-out images for
   analytic-ddpm, residual-ddpm (scalar, from the committed Γ̂/R̂), sn-ddpm and npr-ddpm (per dimension), on the even
   trajectory at every K, and on optimal trajectories from per-step costs estimated on training images over a grid
   of timesteps (every method priced on the same grid and draws);
4. Table 2 analogue: FD-LeNet of samples for the same four methods and their DDIM (η = 0) counterparts, with the σ₂
   pixel clip, in one process with one feature classifier (so the rows are comparable with each other), and the
   fraction of elements whose Cov_x0 the sampler clipped.

Outputs in ``out_dir``: ``results.json`` (numbers, configuration, versions, wall times), ``table_nll.md``,
``table_fd.md``, ``head_check.md``, the heads and resumable sample files.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import platform
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .covariance import COVARIANCE_METHODS
from .gamma import GammaEstimate
from .image_likelihood import baseline_cost_matrix, collect_bound_statistics, variational_bound
from .optimal_trajectory import optimal_trajectories_from_costs
from .pipeline import PRESETS as IMAGE_PRESETS, _finished_model, _load, _md_table, _schedule, fd_lenet_setup
from .sampling import sample
from .trajectories import even_trajectory

NLL_METHODS = ("analytic-ddpm", "residual-ddpm", "sn-ddpm", "npr-ddpm")
FD_METHODS = ("analytic-ddpm", "residual-ddpm", "sn-ddpm", "npr-ddpm",
              "analytic-ddim", "residual-ddim", "sn-ddim", "npr-ddim")


@dataclass(frozen=True)
class CovarianceExperimentConfig:
    """Sizes of one extended (per-dimension covariance) experiment on a finished image run."""

    base: str = "digits"  #: the :data:`analytic_dpm.pipeline.PRESETS` entry whose model.pt / gamma.npz are used
    Ks: tuple = (10, 25, 50, 100, 200, 1000)
    head_mode: str = "simple"
    head_steps: int = 2000
    head_batch_size: int = 128
    head_lr: float = 1e-3
    head_ema_decay: float = 0.999
    head_warmup: int = 20
    nll_images: int = 256
    ot_images: int = 64  #: training images for the per-step cost matrices
    ot_grid: int = 100  #: timesteps on the cost matrices' grid (even, plus 1 and N); OT rows for K <= half of it
    check_images: int = 128  #: held-out images for the head check
    check_grid: int = 20
    fd_samples: int = 1000
    report_samples: int = 64  #: samples for the Cov_x0 clipping report (at min and max K)
    fd_bootstrap: int = 100  #: bootstrap resamples of each sample set for FD-LeNet's standard error
    batch_eval: int = 512
    seed: int = 0
    threads: int | None = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS = {
    "digits": CovarianceExperimentConfig(head_steps=3000),
    "fashion-mnist-cpu": CovarianceExperimentConfig(
        base="fashion-mnist-cpu", head_steps=3000, head_batch_size=64, nll_images=128, ot_images=64, fd_samples=256,
        batch_eval=256),
    # the suite's end-to-end check (digits, a few hundred steps; needs only a trained digits model)
    "digits-ci": CovarianceExperimentConfig(Ks=(10, 25), head_steps=60, nll_images=32, ot_images=8, ot_grid=20,
                                            check_images=16, check_grid=4, fd_samples=64, report_samples=8,
                                            batch_eval=256),
}


def same_config(saved: dict | None, config: CovarianceExperimentConfig) -> bool:
    """Whether a saved configuration is ``config``; keys added after it was saved take their default values."""
    if saved is None:
        return False
    base = json.loads(json.dumps(CovarianceExperimentConfig().to_dict()))
    return {k: saved.get(k, v) for k, v in base.items()} == json.loads(json.dumps(config.to_dict()))


def _base_run(config: CovarianceExperimentConfig, base_dir: pathlib.Path, base_config=None):
    """(train set, test set, schedule, EMA ε-network, GammaEstimate, base config) of the finished run in base_dir."""
    from .models import UNetConfig

    bcfg = base_config or IMAGE_PRESETS[config.base]
    train_set, test_set = _load(bcfg)
    sched = _schedule(bcfg)
    shape = train_set.shape
    ucfg = UNetConfig(**{**bcfg.unet, "channels": shape[0], "image_size": shape[1]})
    model_path, gamma_path = base_dir / "model.pt", base_dir / "gamma.npz"
    missing = [str(p) for p in (model_path, gamma_path) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"the extended experiment starts from a finished image run; missing {', '.join(missing)}. Run "
            f"`python -m analytic_dpm images --preset {config.base} --out {base_dir}` first (or point base_dir at "
            "the committed results/<preset>)."
        )
    ema, _ = _finished_model(model_path, ucfg, bcfg)
    est = GammaEstimate.load(gamma_path)
    if est.residual is None:
        raise ValueError(f"{gamma_path} has no residual R̂ (written by an older version); rerun the image experiment.")
    return train_set, test_set, sched, ema, est, bcfg


def _train_head(ema, kind, train_set, sched, config, out, device, progress, log):
    from .models import attach_head, load_headed, save_headed, train

    path = out / f"head_{kind}.pt"
    if path.exists():
        net = load_headed(path, ema)
        log(f"  reusing the trained {kind} head {path}; delete it to retrain")
        return net, json.loads(json.dumps((_read_meta(path) or {}).get("train", {})))
    t0 = time.perf_counter()
    net = attach_head(ema, kind, mode=config.head_mode)
    res = train(net, train_set, sched, steps=config.head_steps, batch_size=config.head_batch_size, lr=config.head_lr,
                ema_decay=config.head_ema_decay, warmup=config.head_warmup, seed=config.seed + 11,
                checkpoint_dir=out / f"checkpoints_{kind}", checkpoint_every=500, device=device, progress=progress,
                objective=kind)
    summary = {"steps": res.step, "final_loss": float(np.mean(res.losses[-100:])),
               "first_loss": float(np.mean(res.losses[:20])), "wall_s": time.perf_counter() - t0}
    save_headed(res.ema, path, metadata={"train": summary, "config": config.to_dict()})
    log(f"  trained the {kind} head: {res.step} steps, loss {summary['first_loss']:.4g} -> {summary['final_loss']:.4g}"
        f" in {summary['wall_s']:.0f} s")
    return res.ema, summary


def _read_meta(path):
    from .models import read_headed

    return read_headed(path).get("metadata")


def head_check(models: dict, sched, x0, est: GammaEstimate, timesteps, seed: int = 0) -> list:
    """Per t: the heads' averages over images and dimensions against the scalar Monte Carlo statistics.

    SN: mean(h − ε̂²) against 1 − Γ̂_t; NPR: mean(g) against R̂_t (and the Monte Carlo mean of (ε − ε̂)² on these
    same images, which the NPR head regresses on). Rows: {t, sn_mean, one_minus_gamma, npr_mean, residual,
    residual_here, sn_negative_fraction}.
    """
    import torch

    rng = np.random.default_rng(seed)
    rows = []
    x0 = np.asarray(x0, dtype=np.float32)
    for t in [int(v) for v in timesteps]:
        eps = rng.standard_normal(x0.shape).astype(np.float32)
        x_t = torch.from_numpy(np.sqrt(sched.alpha_bar[t]) * x0 + np.sqrt(sched.beta_bar[t]) * eps).float()
        row = {"t": t, "one_minus_gamma": float(est.one_minus_gamma[t]), "residual": float(est.residual[t])}
        with torch.no_grad():
            e_sn, h = models["sn"].eps_and_head(x_t, t)
            e_npr, g = models["npr"].eps_and_head(x_t, t)
        e_sn, h, g, e_npr = (v.double().numpy() for v in (e_sn, h, g, e_npr))
        row["sn_mean"] = float(np.mean(h - e_sn ** 2))
        row["sn_negative_fraction"] = float(np.mean(h - e_sn ** 2 < 0))
        row["npr_mean"] = float(np.mean(g))
        row["residual_here"] = float(np.mean((eps - e_npr) ** 2))
        rows.append(row)
    return rows


def ot_Ks(config, grid_size: int) -> list:
    """The K with an OT row: at most half the grid, so that the DP has a real choice (with K close to the grid size
    it must take nearly every grid point and the row is the grid's ET, not an optimum)."""
    return [K for K in config.Ks if K <= grid_size // 2]


def _bounds(models, sched, est, config, x_ot, x_nll, grid, progress, log):
    """ET and OT bounds (bits/dim and standard errors) for :data:`NLL_METHODS`; the OTs from per-step costs on
    ``x_ot`` over ``grid`` (the scalar methods share one cost pass, each head takes its own)."""
    F_base = baseline_cost_matrix(models["sn"], sched, x_ot, "ddpm-large", timesteps=grid, seed=config.seed + 1,
                                  batch_size=config.batch_eval, progress=progress)
    costs = {"analytic-ddpm": F_base.with_method("analytic-ddpm", gamma=est.gamma),
             "residual-ddpm": F_base.with_method("residual-ddpm", gamma=est)}
    for kind in ("sn", "npr"):
        costs[f"{kind}-ddpm"] = baseline_cost_matrix(models[kind], sched, x_ot, f"{kind}-ddpm", timesteps=grid,
                                                     seed=config.seed + 1, batch_size=config.batch_eval,
                                                     progress=progress)
    K_ot = ot_Ks(config, grid.size)
    ots = {m: optimal_trajectories_from_costs(F.F, K_max=max(K_ot), progress=False) for m, F in costs.items()}
    nll, nll_se = {}, {}
    for K in config.Ks:
        traj = even_trajectory(sched.N, K)
        stats = collect_bound_statistics(models["sn"], sched, traj, x_nll, seed=config.seed,
                                         batch_size=config.batch_eval, progress=False)
        bounds = {m: stats.bound(m, gamma=est) for m in ("analytic-ddpm", "residual-ddpm")}
        for kind in ("sn", "npr"):
            bounds[f"{kind}-ddpm"] = variational_bound(models[kind], sched, traj, f"{kind}-ddpm", x_nll,
                                                       seed=config.seed, batch_size=config.batch_eval)
        for m, b in bounds.items():
            nll.setdefault(f"ET {m}", {})[K] = b.bits_per_dim
            nll_se.setdefault(f"ET {m}", {})[K] = b.bits_per_dim_stderr
        if K in K_ot:
            for m in NLL_METHODS:
                model = models["npr"] if m.startswith("npr") else models["sn"]
                b = variational_bound(model, sched, ots[m].trajectory(K), m, x_nll, seed=config.seed,
                                      batch_size=config.batch_eval,
                                      gamma=est if m in ("analytic-ddpm", "residual-ddpm") else None)
                nll.setdefault(f"OT {m}", {})[K] = b.bits_per_dim
                nll_se.setdefault(f"OT {m}", {})[K] = b.bits_per_dim_stderr
        log(f"  bounds at K = {K}: " + ", ".join(f"{k} {d[K]:.3f}" for k, d in nll.items() if K in d))
    return nll, nll_se


def run_covariance_experiment(config: CovarianceExperimentConfig | str = "digits", base_dir=None, out_dir="cov_out",
                              device=None, progress: bool | None = None, log=print, base_config=None) -> dict:
    """Heads → head check → bounds (ET and OT) → samples → FD-LeNet; returns the results (also results.json)."""
    import torch

    from .models import TorchHeadedModel
    from .pretrained_eval import sample_fd_table

    preset = config if isinstance(config, str) else None
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"config must be a CovarianceExperimentConfig or one of {', '.join(PRESETS)}; "
                             f"got {config!r}.")
        config = PRESETS[config]
    if config.threads:
        torch.set_num_threads(config.threads)
    base_dir = pathlib.Path(base_dir if base_dir is not None else pathlib.Path("results") / config.base)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    walls = {}
    t_all = time.perf_counter()
    train_set, test_set, sched, ema, est, bcfg = _base_run(config, base_dir, base_config)
    shape = train_set.shape
    log(f"[{bcfg.dataset} extended] base run {base_dir}: {sched}, images {shape}")

    # 1. the two heads (stage 2; the backbone stays frozen)
    t0 = time.perf_counter()
    models, head_train = {}, {}
    for kind in ("sn", "npr"):
        net, head_train[kind] = _train_head(ema, kind, train_set, sched, config, out, device, progress, log)
        models[kind] = TorchHeadedModel(net.eval(), timestep_map="n", schedule=sched, batch_size=config.batch_eval)
    walls["heads"] = time.perf_counter() - t0

    # 2. the heads against the scalar statistics
    grid_check = np.unique(np.round(np.geomspace(1, sched.N, config.check_grid)).astype(int))
    check = head_check(models, sched, test_set.images[: config.check_images], est, grid_check, seed=config.seed)

    # 3. bounds: ET and OT on a shared grid (reused from an earlier results.json of the same configuration)
    t0 = time.perf_counter()
    grid = np.unique(np.concatenate([[1], even_trajectory(sched.N, config.ot_grid)[1:]]))
    old = out / "results.json"
    old = json.loads(old.read_text()) if old.exists() else {}
    if same_config(old.get("config"), config) and "nll_bits_per_dim" in old:
        nll = {k: {int(K): v for K, v in d.items()} for k, d in old["nll_bits_per_dim"].items()}
        nll_se = {k: {int(K): v for K, v in d.items()} for k, d in old["nll_bits_per_dim_stderr"].items()}
        log(f"  bounds reused from {out / 'results.json'} (same configuration); delete it to recompute")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # Γ̂ outside [0, 1] is clipped, as in the base run
            nll, nll_se = _bounds(models, sched, est, config, train_set.images[: config.ot_images],
                                  test_set.images[: config.nll_images], grid, progress, log)
    walls["nll"] = time.perf_counter() - t0

    # 4. FD-LeNet of samples, one classifier for all rows
    t0 = time.perf_counter()
    (out / "samples").mkdir(exist_ok=True)
    clf, features, ref, n_floor, floor = fd_lenet_setup(train_set, test_set, bcfg.lenet_steps, bcfg.seed,
                                                        config.fd_samples)
    fd_se = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fd = sample_fd_table(models["sn"], sched, est, FD_METHODS, config.Ks, num_samples=config.fd_samples,
                             shape=shape, features_of=features, fd_stderr=fd_se, bootstrap=config.fd_bootstrap,
                             reference=ref, samples_dir=out / "samples", seed=config.seed,
                             batch_size=config.batch_eval, device=device, progress=False, head_models=models)
    # paired differences against the scalar method of the same family (same seeds: row i shares its noise)
    from .metrics import frechet_distance_paired_bootstrap

    paired = {}
    for m in FD_METHODS:
        base = "analytic-" + m.split("-")[1]
        if m == base:
            continue
        for K in config.Ks:
            fa, fb = (features(np.load(out / "samples" / f"{mm}_K{K}.npy").astype(np.float32)) for mm in (m, base))
            reps = frechet_distance_paired_bootstrap(ref, fa, fb, 2 * config.fd_bootstrap, seed=config.seed)
            paired.setdefault(f"{m} − {base}", {})[K] = {"difference": fd[m][K] - fd[base][K],
                                                        "stderr": float(np.std(reps, ddof=1))}
    walls["fd"] = time.perf_counter() - t0

    # the sampler's clipping of Cov_x0, at the smallest and largest K (reused from a results.json of this config)
    t0 = time.perf_counter()
    clipping = {}
    if same_config(old.get("config"), config) and "cov_clipping" in old:
        clipping = {m: {int(K): v for K, v in d.items()} for m, d in old["cov_clipping"].items()}
    for m in COVARIANCE_METHODS if not clipping else ():
        for K in sorted({min(config.Ks), max(config.Ks)}):
            rep = {}
            sample(models[m.split("-")[0]], sched, even_trajectory(sched.N, K), m, config.report_samples, shape,
                   clip_x0=True, clip_sigma_pixel=1.0, seed=config.seed + 2, batch_size=config.batch_eval,
                   backend="torch", cov_report=rep)
            el = rep["elements"]
            clipping.setdefault(m, {})[K] = {
                "cov_low": float(np.sum(rep["cov_low_fraction"] * el) / max(el.sum(), 1)),
                "cov_high": float(np.sum(rep["cov_high_fraction"] * el) / max(el.sum(), 1)),
                "pixel_at_tau2": float(rep["pixel_fraction"][1]) if K > 1 else 0.0}
    walls["report"] = time.perf_counter() - t0
    walls["total"] = time.perf_counter() - t_all

    results = {
        "preset": preset, "config": config.to_dict(), "base_dir": base_dir.as_posix(), "base_config": bcfg.to_dict(),
        "schedule": str(sched), "heads": head_train, "head_check": check,
        "nll_bits_per_dim": {k: {str(K): v for K, v in d.items()} for k, d in nll.items()},
        "nll_bits_per_dim_stderr": {k: {str(K): v for K, v in d.items()} for k, d in nll_se.items()},
        "ot_grid": grid.tolist(),
        "fd_lenet": {k: {str(K): v for K, v in d.items()} for k, d in fd.items()},
        "fd_lenet_stderr": {k: {str(K): v for K, v in d.items()} for k, d in fd_se.items()},
        "fd_lenet_paired_difference": {k: {str(K): v for K, v in d.items()} for k, d in paired.items()},
        "fd_lenet_floor": floor, "fd_floor_images": n_floor, "lenet_test_accuracy": clf.test_accuracy, "cov_clipping": {
            m: {str(K): v for K, v in d.items()} for m, d in clipping.items()},
        "wall_s": walls, "wall_s_earlier_runs": ([old["wall_s"]] + old.get("wall_s_earlier_runs", [])
                                                 if same_config(old.get("config"), config) and "wall_s" in old else []),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                       "numpy": np.__version__},
        "device": str(device or "cpu"),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_tables(results, out)
    log(f"  done in {walls['total']:.0f} s")
    return results


def shown_bounds(results: dict):
    """(bits/dim, stderr) tables of a results dictionary with the OT rows limited to :func:`ot_Ks` (runs written
    before that limit held rows up to the grid size)."""
    keep = set(ot_Ks(CovarianceExperimentConfig(Ks=tuple(results["config"]["Ks"])), len(results["ot_grid"])))
    out = []
    for key in ("nll_bits_per_dim", "nll_bits_per_dim_stderr"):
        out.append({m: {K: v for K, v in d.items() if not m.startswith("OT") or int(K) in keep}
                    for m, d in results[key].items()})
    return tuple(out)


def write_tables(results: dict, out) -> list:
    """table_nll.md, table_fd.md and head_check.md from a results dictionary."""
    out = pathlib.Path(out)
    Ks = [int(k) for k in results["config"]["Ks"]]
    nll, se = shown_bounds(results)
    rows = [[k] + [(f"{d[str(K)]:.3f} ± {se[k][str(K)]:.3f}" if str(K) in d else "—") for K in Ks]
            for k, d in nll.items()]
    base = results["base_config"]
    t1 = (f"# Bound on held-out {base['dataset']} images (bits/dim ± standard error over "
          f"{results['config']['nll_images']} images)\n\nOT rows: optimal trajectories from per-step costs on "
          f"{results['config']['ot_images']} training images over a grid of {len(results['ot_grid'])} timesteps, for "
          "K up to half the grid.\n\n"
          + _md_table(["trajectory, method"] + [f"K={k}" for k in Ks], rows))
    fd, fse = results["fd_lenet"], results.get("fd_lenet_stderr", {})
    t2 = (f"# FD-LeNet (not FID) of {results['config']['fd_samples']} samples, even trajectory, σ₂ pixel clip y = 1; "
          f"{results.get('fd_floor_images', results['config']['fd_samples'])} real training images score "
          f"{results['fd_lenet_floor']:.3f}\n\n"
          + _md_table(["method"] + [f"K={k}" for k in Ks],
                      [[m] + [f"{d[str(K)]:.3f}" + (f" ± {fse[m][str(K)]:.3f}" if str(K) in fse.get(m, {}) else "")
                              for K in Ks] for m, d in fd.items()]))
    t3 = ("# The heads against the scalar statistics (held-out images)\n\nSN: mean over images and dimensions of "
          "h − ε̂² against the committed 1 − Γ̂_t; NPR: mean head against R̂_t and the mean (ε − ε̂)² on the same "
          "images.\n\n" + _md_table(
              ["t", "SN mean(h − ε̂²)", "1 − Γ̂_t", "SN fraction < 0", "NPR mean(g)", "R̂_t", "(ε − ε̂)² here"],
              [[r["t"], f"{r['sn_mean']:.4g}", f"{r['one_minus_gamma']:.4g}", f"{r['sn_negative_fraction']:.3f}",
                f"{r['npr_mean']:.4g}", f"{r['residual']:.4g}", f"{r['residual_here']:.4g}"]
               for r in results["head_check"]]))
    pd = results.get("fd_lenet_paired_difference", {})
    if pd:
        t2 += ("\nPaired differences against the analytic method of the same family (same seeds, so row i of both "
               "sets shares its noise; ± the bootstrap standard error of the difference, resampling the same rows "
               "in both):\n\n" + _md_table(["difference"] + [f"K={k}" for k in Ks],
                                            [[m] + [f"{d[str(K)]['difference']:+.3f} ± {d[str(K)]['stderr']:.3f}"
                                                    for K in Ks] for m, d in pd.items()]))
    paths = []
    for name, text in (("table_nll.md", t1), ("table_fd.md", t2), ("head_check.md", t3)):
        (out / name).write_text(text)
        paths.append(out / name)
    return paths


__all__ = ["CovarianceExperimentConfig", "PRESETS", "run_covariance_experiment", "head_check", "write_tables",
           "NLL_METHODS", "FD_METHODS"]
