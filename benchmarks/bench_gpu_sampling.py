"""Benchmark: sampling throughput and per-step overhead, this library versus diffusers, on the same UNet2DModel.

What runs, for each K (default 10 and 100), on one device in one process:

* ``network only``: K calls ``unet(x, t)`` on the batch, nothing else: the floor every sampler pays.
* ``analytic_dpm.sample``: :func:`analytic_dpm.sampling.sample` with the model wrapped by
  :func:`analytic_dpm.integrations.unet_eps_model`, backend torch on the device, ``clip_x0=True``; method 'ddim'
  (η = 0, no noise after the start) and 'analytic-ddpm' (noise at every step, drawn on the host from the per-sample
  streams and copied to the device, the default ``noise='host'``); and 'analytic-ddpm' with ``noise='device'``
  (per-chunk torch generators on the device: no host work or copy per step).
* ``diffusers DDIMPipeline``: ``DDIMPipeline(unet, DDIMScheduler)(batch_size=B, num_inference_steps=K, eta=0,
  output_type="np")``.
* ``diffusers + AnalyticDPMScheduler``: ``DDPMPipeline(unet, AnalyticDPMScheduler)`` with 'analytic-ddpm', noise
  from a ``torch.Generator`` on the device (diffusers' way).

Columns: images/s = B / wall time of the whole call (start noise to host array); ms/step = wall time / K;
overhead/step (null net) = the same sampler driven by a network that returns zeros instantly, divided by K (pure
loop cost: coefficients, noise, bookkeeping, launches); overhead/step (diff) = (wall time − network only) / K.
Each cell is the median of ``--repeats`` runs after one warm-up run. First, a correctness check on the device: the
diffusers loop with :class:`AnalyticDPMScheduler` and :class:`SeededNoise` against ``analytic_dpm.sample`` (max |diff|).
Γ is a constant 0.5 placeholder: timing does not depend on its values. Weights are random (``--size cifar10`` builds
the google/ddpm-cifar10-32 architecture from its config; nothing is downloaded).

Usage (from the repository root):

    python benchmarks/bench_gpu_sampling.py --device cuda --size cifar10 --batch 256 --json bench_gpu.json
    python benchmarks/bench_gpu_sampling.py --device cpu --size tiny --K 10 --batch 8      # quick check on a CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {
    # tiny: a few thousand parameters, for tests and CPU smoke runs
    "tiny": dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                 norm_num_groups=4, attention_head_dim=8),
    # the architecture of google/ddpm-cifar10-32 (Ho et al.'s CIFAR10 model, 35.7M parameters), random weights
    "cifar10": dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                    block_out_channels=(128, 256, 256, 256),
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                    norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1),
}
N_TRAIN = 1000


def build_unet(size: str, device, seed: int = 0):
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**SIZES[size]).to(device).eval()
    unet.requires_grad_(False)
    return unet


class _Out:
    __slots__ = ("sample",)

    def __init__(self, sample):
        self.sample = sample


def null_unet(unet):
    """A stand-in with the UNet's config, device and dtype whose forward returns zeros at once."""
    import torch

    class NullUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros((), device=unet.device, dtype=unet.dtype),
                                             requires_grad=False)
            self.config = unet.config

        def forward(self, x, t):
            return _Out(torch.zeros_like(x))

    return NullUNet()


def _sync(device):
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call (device synchronised around each)."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def diffusers_loop(unet, scheduler, batch: int, K: int, generator, device, dtype, **step_kw):
    """The body of diffusers' DDIMPipeline/DDPMPipeline __call__ (start noise, loop, rescale, to host)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    cfg = unet.config
    x = randn_tensor((batch, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=generator, device=device,
                     dtype=dtype)
    scheduler.set_timesteps(K)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(x, t).sample
            x = scheduler.step(out, t, x, generator=generator, **step_kw).prev_sample
    return (x / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()


def verify(unet, schedule, gamma, device, K: int = 10, batch: int = 8, seed: int = 0) -> float:
    """max |x_diffusers − x_library| on the device: DDPMPipeline-style loop with AnalyticDPMScheduler and SeededNoise
    against analytic_dpm.sampling.sample (same model, seed, trajectory, 'analytic-ddpm' with the σ² pixel clip)."""
    import torch

    import analytic_dpm as adpm
    from analytic_dpm.integrations import AnalyticDPMScheduler, SeededNoise, unet_eps_model

    C, H = unet.config.in_channels, unet.config.sample_size
    sched = AnalyticDPMScheduler.from_schedule(schedule, gamma=gamma, method="analytic-ddpm", num_inference_steps=K,
                                               clip_sigma_pixel=1.0)
    sched.set_timesteps(K, device=device)
    ref = adpm.sample(unet_eps_model(unet), schedule, sched.trajectory, "analytic-ddpm", batch, (C, H, H), gamma=gamma,
                      clip_x0=True, clip_sigma_pixel=1.0, seed=seed, backend="torch", device=device, dtype=unet.dtype,
                      progress=False)
    noise = SeededNoise(seed, batch, (C, H, H), device=device, dtype=unet.dtype)
    x = noise.initial()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x, generator=noise).prev_sample
    return float((x.cpu() - ref).abs().max())


def run(device: str = "cuda", size: str = "cifar10", batch: int = 256, Ks=(10, 100), repeats: int = 3,
        seed: int = 0, progress=print) -> dict:
    import torch
    import diffusers
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline

    import analytic_dpm as adpm
    from analytic_dpm.integrations import AnalyticDPMScheduler, unet_eps_model

    dev = torch.device(device)
    unet = build_unet(size, dev, seed)
    null = null_unet(unet)
    dtype = unet.dtype
    C, H = unet.config.in_channels, unet.config.sample_size
    shape = (C, H, H)
    schedule = adpm.Schedule.linear(N_TRAIN)
    gamma = np.full(N_TRAIN + 1, 0.5)
    gamma[0] = 0.0
    eps_model, eps_null = unet_eps_model(unet), unet_eps_model(null)
    gen = torch.Generator(device=dev)

    ddim = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=N_TRAIN))
    ddim.set_progress_bar_config(disable=True)
    adpm_sched = AnalyticDPMScheduler.from_schedule(schedule, gamma=gamma, method="analytic-ddpm")
    adpm_pipe = DDPMPipeline(unet=unet, scheduler=adpm_sched)
    adpm_pipe.set_progress_bar_config(disable=True)

    max_diff = verify(unet, schedule, gamma, dev, K=min(10, max(Ks)), batch=min(batch, 8), seed=seed)
    progress(f"check: AnalyticDPMScheduler loop vs analytic_dpm.sample on {dev}: max |diff| = {max_diff:.3g}")
    rows = []
    for K in Ks:
        traj = adpm.even_trajectory(N_TRAIN, K)
        ts = [torch.tensor(int(v) - 1, device=dev) for v in traj[1:][::-1]]
        x0 = torch.randn((batch, *shape), device=dev, dtype=dtype)

        def net_only():
            with torch.no_grad():
                for t in ts:
                    unet(x0, t)

        net_s = _time(net_only, dev, repeats)
        progress(f"K = {K}: network only {net_s:.4f} s")

        def ours(method, model, noise="host"):
            def f():
                adpm.sample(model, schedule, traj, method, batch, shape, gamma=gamma, clip_x0=True, seed=seed,
                            backend="torch", device=dev, dtype=dtype, progress=False, noise=noise)
            return f

        def diffusers_ddim(model=None):
            if model is None:
                return lambda: ddim(batch_size=batch, generator=gen.manual_seed(seed), num_inference_steps=K, eta=0.0,
                                    output_type="np")
            sched = DDIMScheduler(num_train_timesteps=N_TRAIN)
            return lambda: diffusers_loop(model, sched, batch, K, gen.manual_seed(seed), dev, dtype, eta=0.0)

        def diffusers_adpm(model=None):
            if model is None:
                return lambda: adpm_pipe(batch_size=batch, generator=gen.manual_seed(seed), num_inference_steps=K,
                                         output_type="np")
            return lambda: diffusers_loop(model, adpm_sched, batch, K, gen.manual_seed(seed), dev, dtype)

        cases = [
            ("analytic_dpm.sample", "ddim", ours("ddim", eps_model), ours("ddim", eps_null)),
            ("analytic_dpm.sample", "analytic-ddpm", ours("analytic-ddpm", eps_model), ours("analytic-ddpm", eps_null)),
            ("analytic_dpm.sample, noise='device'", "analytic-ddpm", ours("analytic-ddpm", eps_model, "device"),
             ours("analytic-ddpm", eps_null, "device")),
            ("diffusers DDIMPipeline", "ddim (DDIMScheduler)", diffusers_ddim(), diffusers_ddim(null)),
            ("diffusers + AnalyticDPMScheduler", "analytic-ddpm", diffusers_adpm(), diffusers_adpm(null)),
        ]
        for impl, method, full, loop_only in cases:
            total = _time(full, dev, repeats)
            null_s = _time(loop_only, dev, repeats)
            row = dict(impl=impl, method=method, K=K, batch=batch, seconds=total, images_per_s=batch / total,
                       ms_per_step=1e3 * total / K, network_ms_per_step=1e3 * net_s / K,
                       overhead_ms_per_step_null_net=1e3 * null_s / K,
                       overhead_ms_per_step_diff=1e3 * (total - net_s) / K)
            rows.append(row)
            progress(f"K = {K}: {impl} [{method}] {total:.4f} s, loop only {null_s:.4f} s")

    if dev.type == "cuda":
        dev_name = torch.cuda.get_device_name(dev)
    else:
        dev_name = platform.processor() or platform.machine()
    return {
        "rows": rows,
        "check_scheduler_vs_sample_max_abs_diff": max_diff,
        "config": dict(device=str(dev), device_name=dev_name, size=size, batch=batch, Ks=list(Ks), repeats=repeats,
                       dtype=str(dtype).replace("torch.", ""),
                       parameters=int(sum(p.numel() for p in unet.parameters())),
                       torch_threads=torch.get_num_threads(), gamma="constant 0.5 placeholder (timing only)"),
        "versions": dict(python=platform.python_version(), torch=torch.__version__, diffusers=diffusers.__version__,
                         numpy=np.__version__, analytic_dpm=adpm.__version__),
    }


def format_table(result: dict) -> str:
    cols = ["impl", "method", "K", "batch", "images/s", "ms/step", "net ms/step", "overhead ms/step (null net)",
            "overhead ms/step (diff)"]
    body = []
    for r in result["rows"]:
        body.append([r["impl"], r["method"], str(r["K"]), str(r["batch"]), f"{r['images_per_s']:.1f}",
                     f"{r['ms_per_step']:.3f}", f"{r['network_ms_per_step']:.3f}",
                     f"{r['overhead_ms_per_step_null_net']:.3f}", f"{r['overhead_ms_per_step_diff']:.3f}"])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    c = result["config"]
    lines.append(f"\n{c['device_name']} ({c['device']}), {c['size']} UNet2DModel ({c['parameters']:,} parameters, "
                 f"{c['dtype']}), median of {c['repeats']} after a warm-up; torch {result['versions']['torch']}, "
                 f"diffusers {result['versions']['diffusers']}. Check: AnalyticDPMScheduler loop vs "
                 f"analytic_dpm.sample, max |diff| = {result['check_scheduler_vs_sample_max_abs_diff']:.3g}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--size", choices=list(SIZES), default="cifar10", help="model size (default cifar10)")
    ap.add_argument("--batch", type=int, default=256, help="images per call (default 256)")
    ap.add_argument("--K", default="10,100", help="comma-separated numbers of steps (default 10,100)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per cell, after one warm-up (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    Ks = tuple(int(k) for k in args.K.split(","))
    if args.batch < 1 or args.repeats < 1 or any(k < 1 or k > N_TRAIN for k in Ks):
        print(f"error: --batch and --repeats must be >= 1 and every K in 1..{N_TRAIN}", file=sys.stderr)
        return 2
    progress = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    result = run(device=device, size=args.size, batch=args.batch, Ks=Ks, repeats=args.repeats, seed=args.seed,
                 progress=progress)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
