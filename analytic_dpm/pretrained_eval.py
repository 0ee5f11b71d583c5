"""Evaluate a pretrained ε-model the way the paper does (P §6, App. F): Γ by Monte Carlo on training images, the
variational bound in bits/dim on held-out images (Table 1: even and optimal trajectories), and the Fréchet distance of
samples for the five methods (Table 2), every long stage resumable.

Unlike :func:`analytic_dpm.pipeline.run_image_experiment`, nothing is trained: the network comes from
:func:`analytic_dpm.models.load_pretrained` (or any ε-model), the data from the user. With the standard Inception
weights as ``extractor`` the distance is FID; with anything else it is reported under the extractor's metric name.

    eps = load_pretrained("improved-cifar10-ls", "checkpoints/cifar10/ls/400000.ckpt.pth")
    res = evaluate_pretrained(eps, eps.schedule, train, test, "out/cifar10-ls", PAPER_SIZE, extractor=inception,
                              clip_sigma_pixel={"analytic-ddpm": 2.0})
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._validate import as_int
from .gamma import GammaEstimate, estimate_gamma
from .image_likelihood import baseline_cost_matrix, collect_bound_statistics, variational_bound
from .optimal_trajectory import optimal_trajectories, optimal_trajectories_from_costs
from .sampling import sample
from .schedules import Schedule
from .trajectories import even_trajectory
from .variance import ALL_METHODS, METHODS, RESIDUAL_METHODS

DDPM_FAMILY = ("ddpm-small", "ddpm-large", "analytic-ddpm", "residual-ddpm")
#: The paper's sampling-only clip of σ² on the step into τ_1 (P App. F.2, facts §3.4): y per method, None for no
#: clip; as in the official run scripts, applied to σ² = β and the analytic methods, not to σ² = β̃ and DDIM.
CLIP_SIGMA_PIXEL = {"ddpm-large": 1.0, "analytic-ddpm": 1.0, "analytic-ddim": 1.0, "ddpm-small": None, "ddim": None,
                    "residual-ddpm": 1.0, "residual-ddim": 1.0,
                    # the extended paper's code keeps the clip for its per-dimension variances (facts §6.2)
                    "sn-ddpm": 1.0, "sn-ddim": 1.0, "npr-ddpm": 1.0, "npr-ddim": 1.0}


def sample_fd_table(eps_model, schedule: Schedule, gamma, methods, Ks, *, num_samples: int, shape, stats_of=None,
                    reference, samples_dir, seed: int, batch_size: int, device=None, progress: bool | None = False,
                    clip_sigma_pixel: dict | None = None, on_result=None, trajectory_rounding: str = "exact",
                    head_models: dict | None = None, features_of=None, fd_stderr: dict | None = None,
                    bootstrap: int = 100) -> dict:
    """Table 2's protocol: for each method and K, ``num_samples`` samples on the even trajectory (x̂_0 clamped, σ₂
    clipped per :data:`CLIP_SIGMA_PIXEL` updated by ``clip_sigma_pixel``, per-sample seeds), written to and resumed
    from ``samples_dir/<method>_K<K>.npy``, scored by ``frechet_distance(reference, stats_of(x))``.

    ``gamma``: a Γ array, or a :class:`~analytic_dpm.gamma.GammaEstimate` (needed for the residual methods, which
    take its ``residual``). ``stats_of(x) -> FeatureStatistics`` extracts the features; ``reference`` is a FeatureStatistics or a (μ, Σ)
    pair. ``on_result(method, K, x, distance)`` is called after each score, with the float32 samples.
    ``trajectory_rounding``: the even trajectory's rounding (:func:`~analytic_dpm.trajectories.even_trajectory`;
    'official' reproduces the official code at every K). ``head_models``: {'sn': model, 'npr': model}, the headed
    models (:mod:`analytic_dpm.covariance`) that sample the per-dimension methods ('sn-ddpm', 'npr-ddim', ...).
    ``features_of(x) -> (B, D) array`` may replace ``stats_of``; then ``fd_stderr`` (a dict) receives
    {method: {K: standard error}}, the spread of ``bootstrap`` resamples of the samples
    (:func:`~analytic_dpm.metrics.frechet_distance_bootstrap`, reference fixed). Returns {method: {K: distance}}.
    """
    from .covariance import COVARIANCE_METHODS, head_kind_of
    from .metrics import FeatureStatistics, frechet_distance, frechet_distance_bootstrap

    if (stats_of is None) == (features_of is None):
        raise ValueError("pass exactly one of stats_of (x -> FeatureStatistics) and features_of (x -> features).")
    if fd_stderr is not None and features_of is None:
        raise ValueError("fd_stderr needs features_of (the bootstrap resamples the feature rows).")

    for m in methods:
        if m in COVARIANCE_METHODS and head_kind_of(m) not in (head_models or {}):
            raise ValueError(f"method {m!r} needs head_models={{{head_kind_of(m)!r}: model}}, a model with that head.")

    clip = {**CLIP_SIGMA_PIXEL, **(clip_sigma_pixel or {})}
    fd = {}
    for m in methods:
        fd[m] = {}
        for K in Ks:
            traj = even_trajectory(schedule.N, K, rounding=trajectory_rounding)
            model = head_models[head_kind_of(m)] if m in COVARIANCE_METHODS else eps_model
            x = sample(model, schedule, traj, m, num_samples=num_samples, shape=shape,
                       gamma=gamma if m.startswith(("analytic", "residual")) else None, clip_x0=True,
                       clip_sigma_pixel=clip[m],
                       seed=seed, batch_size=batch_size, backend="torch", device=device, progress=progress,
                       out=pathlib.Path(samples_dir) / f"{m}_K{K}.npy")
            x = np.asarray(x, dtype=np.float32)
            if features_of is not None:
                f = features_of(x)
                fd[m][K] = frechet_distance(reference, FeatureStatistics.from_features(f))
                if fd_stderr is not None:
                    reps = frechet_distance_bootstrap(reference, f, bootstrap, seed=seed)
                    fd_stderr.setdefault(m, {})[K] = float(np.std(reps, ddof=1))
            else:
                fd[m][K] = frechet_distance(reference, stats_of(x))
            if on_result is not None:
                on_result(m, K, x, fd[m][K])
    return fd


@dataclass(frozen=True)
class PretrainedEvalConfig:
    """Sizes of one evaluation. ``PAPER_SIZE`` is the paper's CIFAR10 protocol; ``QUICK_SIZE`` a first look."""

    Ks: tuple = (10, 25, 50, 100, 200, 400, 1000)
    gamma_samples: int = 50000  #: M training images for Γ (P App. F.3: all 50k for CIFAR10)
    nll_images: int = 10000  #: held-out images for the bound (0: skip Table 1)
    ot_images: int = 0  #: training images for the σ² = β baseline's OT cost matrix (N·M calls; 0: skip that row)
    fid_samples: int = 50000  #: samples per method and K (0: skip Table 2)
    methods: tuple = METHODS + RESIDUAL_METHODS  #: Table 2 rows: the paper's five and the residual variances
    batch_size: int = 500
    seed: int = 1234  #: the official code's sampling seed (facts §5.7)
    #: the decoder's normal CDF: 'tanh', the official approximation the paper's Table 1 was computed with (facts
    #: §4.5), or 'exact' (the library's default elsewhere; 0.002 bits/dim lower on the committed networks)
    decoder_cdf: str = "tanh"
    #: the even trajectory's rounding: 'official' (the official code's float accumulation, equal at every K) or 'exact'
    trajectory_rounding: str = "official"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PAPER_SIZE = PretrainedEvalConfig()
QUICK_SIZE = PretrainedEvalConfig(Ks=(10, 25, 50, 100), gamma_samples=100, nll_images=1000, fid_samples=1000)


@dataclass
class PretrainedEvaluation:
    """What :func:`evaluate_pretrained` measured; also written to ``out_dir/results.json``."""

    gamma: GammaEstimate
    nll_bits_per_dim: dict = field(default_factory=dict)  #: row label -> {K: bits/dim}
    fd: dict = field(default_factory=dict)  #: method -> {K: distance}
    metric_name: str | None = None  #: "FID" only with the standard Inception weights
    wall_s: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        g = self.gamma
        extra = {} if g.residual is None else {
            "one_minus_gamma_direct_below_zero": int(np.sum(g.one_minus_gamma[1:] < 0)),
            "residual_min": float(np.nanmin(g.residual[1:])), "residual_max": float(np.nanmax(g.residual[1:]))}
        return {"gamma": {"M": g.num_samples, "above_one": int(np.sum(g.gamma[1:] > 1)), **extra},
                "nll_bits_per_dim": {k: {str(K): v for K, v in d.items()} for k, d in self.nll_bits_per_dim.items()},
                "fd": {k: {str(K): v for K, v in d.items()} for k, d in self.fd.items()},
                "metric_name": self.metric_name, "wall_s": self.wall_s}

    def markdown(self) -> str:
        out = []
        for title, table in (("Bound (bits/dim)", self.nll_bits_per_dim), (self.metric_name or "FD", self.fd)):
            if not table:
                continue
            Ks = sorted({K for d in table.values() for K in d})
            out.append(f"## {title}\n\n| row | " + " | ".join(f"K={K}" for K in Ks) + " |\n|" + "---|" * (len(Ks) + 1))
            out += [f"| {k} | " + " | ".join(f"{d[K]:.3f}" if K in d else "—" for K in Ks) + " |"
                    for k, d in table.items()]
            out.append("")
        return "\n".join(out) + "\n"


def _images(name, x, need, shape=None):
    if need <= 0:
        return None
    if not hasattr(x, "shape") or len(x.shape) != 4:
        raise ValueError(f"{name} must be an array (M, C, H, W) of images in [-1, 1]; got "
                         f"{getattr(x, 'shape', type(x).__name__)}. Load CIFAR10 with analytic_dpm.data.load_cifar10.")
    if x.shape[0] < need:
        raise ValueError(f"{name} holds {x.shape[0]} images but the configuration needs {need}; lower the size in "
                         "the configuration or pass more images.")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} has images of shape {tuple(x.shape[1:])}; the model expects {tuple(shape)}.")
    return x[:need]


def evaluate_pretrained(eps_model, schedule: Schedule, train_images, test_images, out_dir,
                        config: PretrainedEvalConfig = QUICK_SIZE, *, extractor=None, reference_stats=None,
                        clip_sigma_pixel: dict | None = None, device=None, progress: bool | None = None,
                        log=print) -> PretrainedEvaluation:
    """Γ (with R̂ and the direct 1 − Γ̂ from the same calls) → Table 1 rows (ET: β̃, β, analytic, residual; OT: analytic
    by Theorem 3's DP on Γ̂ — the paper's row, which Monte Carlo noise alone can break where Γ̂ >= 1 —, residual by the
    same exact DP on R̂ (the row to trust for an imperfect network), β by the estimated cost matrix when
    ``config.ot_images``) → Table 2 rows (distance of ``config.fid_samples`` samples per method and K, even trajectory,
    x̂_0 clamped, σ₂ clipped per ``clip_sigma_pixel``, defaults :data:`CLIP_SIGMA_PIXEL`).

    ``train_images`` serve Γ, the OT cost matrix and (when ``reference_stats`` is None) the reference statistics;
    ``test_images`` the bound. ``extractor``: a feature extractor (``analytic_dpm.metrics``); None skips Table 2.
    Every stage writes to ``out_dir`` as it goes (Γ checkpoint, one ``.npy`` per method and K for samples) and an
    interrupted call resumes where it stopped.
    """
    from .metrics import feature_statistics

    if not isinstance(config, PretrainedEvalConfig):
        raise TypeError(f"config must be a PretrainedEvalConfig (e.g. QUICK_SIZE or PAPER_SIZE); got "
                        f"{type(config).__name__}.")
    for name in ("gamma_samples", "nll_images", "ot_images", "fid_samples"):
        as_int(f"config.{name}", getattr(config, name), minimum=0)
    if config.gamma_samples < 1:
        raise ValueError(f"config.gamma_samples must be at least 1; got {config.gamma_samples}. The paper uses 50000 "
                         "for CIFAR10; even 10 is close (P Table 5).")
    if config.decoder_cdf not in ("tanh", "exact"):
        raise ValueError(f"config.decoder_cdf must be 'tanh' (official) or 'exact'; got {config.decoder_cdf!r}.")
    if config.trajectory_rounding not in ("official", "exact"):
        raise ValueError(f"config.trajectory_rounding must be 'official' or 'exact'; got "
                         f"{config.trajectory_rounding!r}.")
    unknown = [m for m in config.methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"config.methods must be drawn from {ALL_METHODS}; got {unknown}.")
    clip = {**CLIP_SIGMA_PIXEL, **(clip_sigma_pixel or {})}
    out = pathlib.Path(out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    shape = tuple(train_images.shape[1:])
    x_gamma = _images("train_images", train_images, config.gamma_samples)
    x_nll = _images("test_images", test_images, config.nll_images, shape)
    x_ot = _images("train_images", train_images, config.ot_images)
    res = PretrainedEvaluation(gamma=None)

    t0 = time.perf_counter()
    gpath = out / "gamma.npz"
    est = GammaEstimate.load(gpath) if gpath.exists() else None
    if est is not None and est.residual is None:
        log(f"  {gpath} has no residual R̂ (saved by an older version): re-estimating it")
        est = None
    if est is None:
        est = estimate_gamma(eps_model, schedule, x_gamma, num_samples=config.gamma_samples,
                             batch_size=config.batch_size, seed=config.seed, checkpoint=out / "gamma.ckpt.npz",
                             device=device, progress=progress)
        est.save(gpath)
    res.gamma, gamma = est, est.gamma
    res.wall_s["gamma"] = time.perf_counter() - t0
    log(f"  Γ from M = {est.num_samples} images in {res.wall_s['gamma']:.0f} s")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Γ̂ outside [0, 1] is clipped; counted in the results
        if x_nll is not None:
            t0 = time.perf_counter()
            nll = {f"ET {m}": {} for m in DDPM_FAMILY}
            ot_an = optimal_trajectories(schedule, gamma, K_max=max(config.Ks), progress=False)
            ot_res = optimal_trajectories(schedule, None, K_max=max(config.Ks), residual=est.residual, progress=False)
            ot_base = None
            if x_ot is not None:
                F = baseline_cost_matrix(eps_model, schedule, x_ot, "ddpm-large", seed=config.seed + 1,
                                         batch_size=config.batch_size, device=device, progress=progress,
                                         cdf=config.decoder_cdf)
                ot_base = optimal_trajectories_from_costs(F.F, K_max=max(config.Ks), progress=False)
                nll["OT ddpm-large"] = {}
            nll["OT analytic-ddpm"] = {}
            nll["OT(R) residual-ddpm"] = {}
            for K in config.Ks:
                et = even_trajectory(schedule.N, K, rounding=config.trajectory_rounding)
                st = collect_bound_statistics(eps_model, schedule, et, x_nll, seed=config.seed,
                                              batch_size=config.batch_size, device=device, progress=progress,
                                              cdf=config.decoder_cdf)
                for m in DDPM_FAMILY:
                    nll[f"ET {m}"][K] = st.bound(m, gamma=est if m in ("analytic-ddpm", "residual-ddpm")
                                                 else None).bits_per_dim
                for label, m, ot in (("OT analytic-ddpm", "analytic-ddpm", ot_an),
                                     ("OT(R) residual-ddpm", "residual-ddpm", ot_res)):
                    nll[label][K] = variational_bound(
                        eps_model, schedule, ot.trajectory(K), m, x_nll, gamma=est, seed=config.seed,
                        batch_size=config.batch_size, device=device, progress=progress,
                        cdf=config.decoder_cdf).bits_per_dim
                if ot_base is not None:
                    nll["OT ddpm-large"][K] = variational_bound(
                        eps_model, schedule, ot_base.trajectory(K), "ddpm-large", x_nll, seed=config.seed,
                        batch_size=config.batch_size, device=device, progress=progress,
                        cdf=config.decoder_cdf).bits_per_dim
                log(f"  bound at K = {K}: " + ", ".join(f"{k} {v[K]:.3f}" for k, v in nll.items()))
            res.nll_bits_per_dim = nll
            res.wall_s["nll"] = time.perf_counter() - t0

        if extractor is not None and config.fid_samples > 0:
            t0 = time.perf_counter()
            res.metric_name = getattr(extractor, "metric_name", "FD")
            ref = reference_stats
            if ref is None:
                ref_path = out / "reference_stats.npz"
                if ref_path.exists():
                    with np.load(ref_path) as z:
                        ref = (z["mu"], z["sigma"])
                else:
                    s = feature_statistics(extractor, train_images, batch_size=config.batch_size, device=device,
                                           progress=progress)
                    ref = (s.mean, s.cov)
                    np.savez(ref_path, mu=ref[0], sigma=ref[1])
            res.fd = sample_fd_table(
                eps_model, schedule, est, config.methods, config.Ks, num_samples=config.fid_samples, shape=shape,
                stats_of=lambda x: feature_statistics(extractor, x, batch_size=config.batch_size, device=device,
                                                      progress=False),
                reference=ref, samples_dir=out / "samples", seed=config.seed, batch_size=config.batch_size,
                device=device, progress=progress, clip_sigma_pixel=clip_sigma_pixel,
                trajectory_rounding=config.trajectory_rounding,
                on_result=lambda m, K, x, d: log(f"  {res.metric_name} {m} K = {K}: {d:.3f}"))
            res.wall_s["fd"] = time.perf_counter() - t0

    (out / "results.json").write_text(json.dumps({**res.to_dict(), "config": config.to_dict(),
                                                  "clip_sigma_pixel": clip}, indent=2) + "\n")
    (out / "tables.md").write_text(res.markdown())
    return res
