"""Training an ε-predictor with the ε-MSE objective, EMA weights, checkpoints and exact resume (P eq. 5, facts §1).

The loss (P eq. 5 up to a constant, facts file §1): for n uniform on 1..N, x_0 from the data and ε ~ N(0, I),

    x_n = √ᾱ_n x_0 + √β̄_n ε,        L = E ‖ε − ε̂(x_n, n)‖²/d

(the mean over all pixel values of the batch). The network is fed t = n itself (``TorchEpsModel(net, "n")``).

Randomness is counter-based: the data order for epoch e comes from ``SeedSequence([seed, DATA_TAG, e])`` and the
timesteps, noise and dropout of step k from a torch generator seeded by ``SeedSequence([seed, STEP_TAG, k])``; the
caller's global torch RNG state is restored after every step. A step is therefore a pure function of (weights,
optimizer state, seed, k), and a run resumed from a checkpoint at step k continues with exactly the numbers an
uninterrupted run would have used: on CPU the result is bit-identical. (On GPU, non-deterministic kernels may
differ in the last bits; set ``torch.use_deterministic_algorithms(True)`` if that matters.) The RNG state stored in a
checkpoint is thus just (seed, step).

Stage 2 of the extended paper's two-stage training (facts file §6.2) is the same loop with ``objective="sn"`` or
``"npr"`` on a :class:`~analytic_dpm.models.heads.HeadedNet` (a frozen stage-1 network plus a new head): only the
head is optimised, averaged and checkpointed, with the losses of :mod:`analytic_dpm.models.heads`.

Checkpoints are plain ``torch.save`` dicts of tensors, numbers and strings, loadable with
``torch.load(path, weights_only=True)``: model, EMA and optimizer state dicts, the step, the loss history and the
run's configuration as a JSON string. :func:`save_model` / :func:`load_model` store just one set of weights (the EMA)
with its :class:`~analytic_dpm.models.unet.UNetConfig`, optionally in float16, for committing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .._validate import as_float, as_int, choice
from ..schedules import Schedule
from .unet import UNet, UNetConfig

CHECKPOINT_FORMAT = "analytic_dpm.models.training.checkpoint/1"
MODEL_FORMAT = "analytic_dpm.models.model/1"
_DATA_TAG = 0x44415441  # "DATA"
_STEP_TAG = 0x53544550  # "STEP"
_CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")
#: Run settings that must agree when resuming (``steps`` may grow: training can be extended).
_RESUME_KEYS = ("seed", "batch_size", "lr", "weight_decay", "ema_decay", "ema_warmup", "grad_clip", "warmup",
                "schedule", "data", "net_class", "net_config", "num_parameters", "objective", "timestep_map",
                "head", "backbone")
#: Values of resume keys added later, for checkpoints written before them.
_RESUME_DEFAULTS = {"objective": "eps", "timestep_map": "n", "head": None, "backbone": None}
#: Training objectives: the ε-MSE (stage 1) and the second-head losses of SN-DPM / NPR-DPM (stage 2, facts §6.2).
OBJECTIVES = ("eps", "sn", "npr")
#: Timestep conventions :func:`train` can feed the network (as :data:`~analytic_dpm.models.protocol.TIMESTEP_MAPS`).
TRAIN_TIMESTEP_MAPS = ("n", "n-1", "n*1000/N", "(n-1)*1000/N")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        ema: the EMA copy of the network (eval mode, on the training device): the one to evaluate.
        net: the raw trained network.
        losses: float64 array (step,), the batch loss of every step from the first (including resumed ones).
        step: the number of completed optimisation steps.
        config: the run's JSON-compatible configuration (also stored in every checkpoint).
        checkpoint: path of the last checkpoint written (None without ``checkpoint_dir``).
        resumed_from: the step the run resumed from (0 for a fresh run).
        wall_s: seconds spent in this call.
    """

    ema: nn.Module
    net: nn.Module
    losses: np.ndarray
    step: int
    config: dict
    checkpoint: Path | None = None
    resumed_from: int = 0
    wall_s: float = 0.0


# ---------------------------------------------------------------------------------------------------- helpers
def default_device(device=None) -> torch.device:
    """``device`` as a torch.device; None: CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(
            f"device must name a torch device such as 'cpu' or 'cuda:0'; got {device!r} ({exc})."
        ) from None


def _seed_int(*key) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .view(np.uint64)[0] & np.uint64(2 ** 63 - 1))


def _schedule_info(schedule: Schedule) -> dict:
    h = hashlib.sha256(np.ascontiguousarray(schedule.beta, dtype=np.float64).tobytes()).hexdigest()
    return {"name": schedule.name, "N": int(schedule.N), "beta_sha256": h}


def _data_info(x: np.ndarray) -> dict:
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
    return {"num": int(x.shape[0]), "shape": [int(s) for s in x.shape[1:]], "sha256": h}


def _prepare_data(data) -> np.ndarray:
    from ..data import ImageDataset

    if isinstance(data, ImageDataset):
        data = data.images
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if not isinstance(data, np.ndarray):
        raise TypeError(f"data must be an ImageDataset, a numpy array or a torch tensor of shape (M, C, H, W); got "
                        f"{type(data).__name__}.")
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"data must be floating point in [-1, 1]; got dtype {data.dtype}. "
                        "Convert 8-bit pixels with analytic_dpm.data.to_model_range.")
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (M, *shape) with M >= 1; got {data.shape}.")
    if not np.isfinite(data).all():
        raise ValueError("data holds non-finite values; training needs finite images in [-1, 1].")
    return np.ascontiguousarray(data, dtype=np.float32)


def _net_config(net) -> dict | None:
    cfg = getattr(net, "config", None)
    if isinstance(cfg, UNetConfig):
        return cfg.to_dict()
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return None


class _DataOrder:
    """Sample position p = k·B + i of the stream → data index perm_e[p mod M], e = p // M, perm_e from the seed."""

    def __init__(self, M: int, seed: int):
        self.M, self.seed = M, seed
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, e: int) -> np.ndarray:
        if e not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _DATA_TAG, e]))
            self._cache[e] = rng.permutation(self.M)
        return self._cache[e]

    def indices(self, step: int, batch_size: int) -> np.ndarray:
        pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
        out = np.empty(batch_size, dtype=np.int64)
        epochs = pos // self.M
        for e in np.unique(epochs):
            m = epochs == e
            out[m] = self._perm(int(e))[pos[m] % self.M]
        return out


@torch.no_grad()
def _ema_update(ema: nn.Module, net: nn.Module, decay: float):
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p, 1.0 - decay)
    for be, b in zip(ema.buffers(), net.buffers()):
        be.copy_(b)


def _atomic_save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def list_checkpoints(checkpoint_dir) -> list[Path]:
    """The checkpoints ``ckpt_XXXXXXXX.pt`` in a directory, by increasing step."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoint_dir) -> Path | None:
    """The checkpoint with the highest step in ``checkpoint_dir`` (None if there is none)."""
    ckpts = list_checkpoints(checkpoint_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path) -> dict:
    """A training checkpoint as a dict (``torch.load(path, weights_only=True)``; ``config`` decoded from JSON)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of this library (format "
                         f"{ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r}; expected "
                         f"{CHECKPOINT_FORMAT!r}).")
    ckpt = dict(ckpt)
    ckpt["config"] = json.loads(ckpt["config"])
    return ckpt


# ---------------------------------------------------------------------------------------------------- training
def train(
    net: nn.Module,
    data,
    schedule: Schedule,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-4,
    ema_decay: float = 0.999,
    seed: int = 0,
    checkpoint_dir=None,
    checkpoint_every: int = 1000,
    device=None,
    progress: bool | None = None,
    log_every: int = 50,
    *,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    warmup: int = 0,
    ema_warmup: bool = True,
    keep_checkpoints: int = 2,
    resume: bool = True,
    callback: Callable[[int, float], None] | None = None,
    objective: str = "eps",
    timestep_map: str = "n",
) -> TrainResult:
    """Train ``net(x, t)`` to predict ε with L = E_{n, x_0, ε} ‖ε − ε̂(√ᾱ_n x_0 + √β̄_n ε, n)‖²/d (P eq. 5).

    Args:
        net: a torch module ``net(x, t) -> eps_hat`` (e.g. :class:`~analytic_dpm.models.unet.UNet`), trained in
            place on ``device``; t is fed as the int64 timestep n ∈ 1..N.
        data: training images in [−1, 1]: an :class:`~analytic_dpm.data.ImageDataset`, or an array/tensor (M, C, H, W).
            Held on ``device`` (as float32) for the whole run.
        schedule: the forward :class:`~analytic_dpm.schedules.Schedule`.
        steps: total optimisation steps (counting those already done when resuming).
        batch_size, lr: mini-batch size and AdamW learning rate (β = (0.9, 0.999), ``weight_decay``).
        ema_decay: EMA of the weights, θ_ema ← d·θ_ema + (1 − d)·θ after each step; with ``ema_warmup`` the decay
            used at step k is min(ema_decay, (1 + k)/(10 + k)), so short runs are not dominated by the initial weights.
        seed: the random stream (data order, timesteps, noise, dropout); see the module docstring.
        checkpoint_dir: where to write ``ckpt_XXXXXXXX.pt`` every ``checkpoint_every`` steps, at the end, and when the
            run is interrupted between steps (an exception, e.g. Ctrl-C or one raised by ``callback``); the newest
            ``keep_checkpoints`` are kept. With ``resume`` (default), training continues from the newest checkpoint
            there, which must come from the same settings (else ValueError), and gives the same result as an
            uninterrupted run.
        device: torch device; None: CUDA when available, else CPU.
        progress: tqdm bar; None shows it only on a terminal. ``log_every``: refresh its mean loss every so many steps.
        grad_clip: clip the global gradient norm to this (None: no clipping). ``warmup``: linear learning-rate
            warm-up over this many steps.
        callback: ``callback(step, loss)`` after every completed step (step counts from 1); an exception it raises
            stops training after a checkpoint of the completed steps is written.
        objective: ``"eps"`` (default): the ε-MSE above (stage 1). ``"sn"`` / ``"npr"``: stage 2 of the extended
            paper's two-stage training (facts file §6.2): ``net`` must be a
            :class:`~analytic_dpm.models.heads.HeadedNet` of that kind (a frozen stage-1 network with a new head);
            only its trainable parameters (the head) are optimised, with the per-element mean of
            :func:`~analytic_dpm.models.heads.sn_loss` (ε² − h)² or :func:`~analytic_dpm.models.heads.npr_loss`
            (stopgrad((ε − ε̂)²) − g)². Checkpoints then hold the head's weights only (model, EMA, optimizer) and
            the backbone's fingerprint (class, size, SHA-256 of its weights), which must match when resuming.
        timestep_map: what the network is fed for timestep n: ``"n"`` (default; this library's networks),
            ``"n-1"``, ``"n*1000/N"`` or ``"(n-1)*1000/N"`` (float32), as
            :class:`~analytic_dpm.models.protocol.TorchEpsModel`; a stage-2 run on a foreign pretrained backbone
            must feed that backbone's own convention.

    Returns:
        :class:`TrainResult` with the EMA network, the raw network, the per-step losses and the configuration.
    """
    t0 = time.perf_counter()
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module called as net(x, t); got {type(net).__name__}.")
    choice("objective", objective, OBJECTIVES)
    choice("timestep_map", timestep_map, TRAIN_TIMESTEP_MAPS)
    headed = objective != "eps"
    if headed:
        from .heads import HEAD_LOSS_FORMULAS, HEAD_LOSSES, HeadedNet, backbone_fingerprint

        if not isinstance(net, HeadedNet):
            raise TypeError(f"objective = {objective!r} trains a second head: net must be a HeadedNet of kind "
                            f"{objective!r}; got {type(net).__name__}. Build one with attach_head(stage1_ema_net, "
                            f"{objective!r}).")
        if net.kind != objective:
            raise ValueError(f"objective = {objective!r} but the HeadedNet's head is of kind {net.kind!r}; pass "
                             f"objective={net.kind!r} or attach a {objective!r} head.")
        unfrozen = [k for k, p in net.backbone.named_parameters() if p.requires_grad]
        if unfrozen:
            raise ValueError(f"stage 2 trains only the head, but {len(unfrozen)} backbone parameters require grad "
                             f"(e.g. {unfrozen[0]!r}); freeze it with net.backbone.requires_grad_(False).")
    elif isinstance(getattr(net, "head_kind", None), str):
        raise ValueError(f"net is a headed network (head kind {net.head_kind!r}); train its head with "
                         f"objective={net.head_kind!r}, or train the ε-network itself (its .backbone) with "
                         "objective='eps'.")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an analytic_dpm.Schedule; got {type(schedule).__name__}. "
                        "Build one with Schedule.linear(N).")
    steps = as_int("steps", steps, minimum=0, fix="It is the total number of optimisation steps.")
    batch_size = as_int("batch_size", batch_size, minimum=1, fix="E.g. 128.")
    lr = as_float("lr", lr)
    if lr <= 0:
        raise ValueError(f"lr must be > 0; got {lr}. E.g. 2e-4.")
    ema_decay = as_float("ema_decay", ema_decay)
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay}. E.g. 0.999.")
    weight_decay = as_float("weight_decay", weight_decay)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay}.")
    if grad_clip is not None:
        grad_clip = as_float("grad_clip", grad_clip)
        if grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None; got {grad_clip}.")
    seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer such as 0.")
    checkpoint_every = as_int("checkpoint_every", checkpoint_every, minimum=1)
    log_every = as_int("log_every", log_every, minimum=1)
    warmup = as_int("warmup", warmup, minimum=0)
    keep_checkpoints = as_int("keep_checkpoints", keep_checkpoints, minimum=1)
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True, False or None (show on a terminal only); got {progress!r}.")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(step, loss); got {type(callback).__name__}.")
    dev = default_device(device)

    x_host = _prepare_data(data)
    M = int(x_host.shape[0])
    d = int(np.prod(x_host.shape[1:]))
    config = {
        "format": CHECKPOINT_FORMAT,
        "seed": seed, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "ema_decay": ema_decay,
        "ema_warmup": bool(ema_warmup), "grad_clip": grad_clip, "warmup": warmup, "steps": steps,
        "schedule": _schedule_info(schedule), "data": _data_info(x_host),
        "net_class": type(net).__name__, "net_config": _net_config(net),
        "num_parameters": int(sum(p.numel() for p in net.parameters())),
        "timestep_map": timestep_map,
        "loss": HEAD_LOSS_FORMULAS[objective] if headed else "mean((eps - eps_hat)^2)",
        "optimizer": "AdamW(betas=(0.9, 0.999))", "torch": torch.__version__, "device": str(dev),
        "objective": objective,
        "head": net.head_settings() if headed else None,
        "backbone": backbone_fingerprint(net.backbone) if headed else None,
    }

    net.to(dev)
    net.train()
    if headed:
        # the EMA network shares the frozen backbone; only the head is copied, averaged and checkpointed
        ema = copy.deepcopy(net, memo={id(net.backbone): net.backbone}).to(dev)
        for p in ema.out2.parameters():
            p.requires_grad_(False)
        params = [p for p in net.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the HeadedNet has no trainable parameters (its head is frozen too); call "
                             "net.out2.requires_grad_(True).")
        train_mod, ema_mod = net.out2, ema.out2
        loss_fn = HEAD_LOSSES[objective]
    else:
        ema = copy.deepcopy(net).to(dev)
        for p in ema.parameters():
            p.requires_grad_(False)
        params = net.parameters()
        train_mod, ema_mod = net, ema
    ema.eval()
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    losses: list[float] = []
    start = 0

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last_ckpt = None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        latest = latest_checkpoint(ckpt_dir) if resume else None
        if latest is not None:
            ck = load_checkpoint(latest)
            old = ck["config"]
            diff = [k for k in _RESUME_KEYS if old.get(k, _RESUME_DEFAULTS.get(k)) != config.get(k)]
            if diff:
                shown = "; ".join(f"{k}: checkpoint {old.get(k, _RESUME_DEFAULTS.get(k))!r} vs now "
                                  f"{config.get(k)!r}" for k in diff)
                raise ValueError(f"cannot resume from {latest}: the run's settings differ ({shown}). Use a new "
                                 "checkpoint_dir, or resume=False to start afresh.")
            if int(ck["step"]) > steps:
                raise ValueError(f"steps = {steps} is fewer than the {int(ck['step'])} steps already done in {latest}; "
                                 "pass steps >= that, or a new checkpoint_dir.")
            train_mod.load_state_dict(ck["model"])
            ema_mod.load_state_dict(ck["ema"])
            opt.load_state_dict(ck["optimizer"])
            start = int(ck["step"])
            losses = [float(v) for v in ck["losses"].tolist()]
            last_ckpt = latest

    x_dev = torch.from_numpy(x_host).to(dev)
    sqrt_ab = torch.tensor(np.sqrt(schedule.alpha_bar), dtype=torch.float32, device=dev)
    sqrt_bb = torch.tensor(np.sqrt(schedule.beta_bar), dtype=torch.float32, device=dev)
    order = _DataOrder(M, seed)
    N = schedule.N
    fork_devices = [dev] if dev.type == "cuda" else []

    def save(step_done: int) -> Path:
        nonlocal last_ckpt
        path = ckpt_dir / f"ckpt_{step_done:08d}.pt"
        _atomic_save({
            "format": CHECKPOINT_FORMAT,
            "step": step_done,
            "model": train_mod.state_dict(),
            "ema": ema_mod.state_dict(),
            "optimizer": opt.state_dict(),
            "losses": torch.tensor(losses[:step_done], dtype=torch.float64),
            "rng": {"seed": seed, "step": step_done},
            "config": json.dumps(config, sort_keys=True),
        }, path)
        for old in list_checkpoints(ckpt_dir)[:-keep_checkpoints]:
            old.unlink(missing_ok=True)
        last_ckpt = path
        return path

    step = start
    updating = False
    bar = tqdm(total=steps, initial=start, disable=(None if progress is None else not progress), desc="train",
               unit="step", dynamic_ncols=True)
    try:
        while step < steps:
            idx = torch.from_numpy(order.indices(step, batch_size)).to(dev)
            x0 = x_dev.index_select(0, idx)
            with torch.random.fork_rng(devices=fork_devices):
                gen_seed = _seed_int(seed, _STEP_TAG, step)
                g = torch.Generator().manual_seed(gen_seed)
                n = torch.randint(1, N + 1, (batch_size,), generator=g)
                eps = torch.randn(x0.shape, generator=g).to(dev)
                n = n.to(dev)
                torch.manual_seed(gen_seed)  # dropout (CPU and the training GPU), restored on exit
                shape = (-1,) + (1,) * (x0.ndim - 1)
                x_n = sqrt_ab[n].view(shape) * x0 + sqrt_bb[n].view(shape) * eps
                if timestep_map == "n":
                    t_in = n
                elif timestep_map == "n-1":
                    t_in = n - 1
                elif timestep_map == "n*1000/N":  # float64 then float32, as TorchEpsModel feeds it
                    t_in = (n.to(torch.float64) * 1000.0 / N).to(torch.float32)
                else:
                    t_in = ((n - 1).to(torch.float64) * 1000.0 / N).to(torch.float32)
                if headed:
                    eps_hat, head = net(x_n, t_in)
                    loss = loss_fn(eps, eps_hat, head)
                else:
                    out = net(x_n, t_in)
                    loss = torch.mean((eps - out) ** 2)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step + 1}; lower lr (now {lr}) or "
                                         "check the data range.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params if headed else net.parameters(), grad_clip)
            lr_now = lr * min(1.0, (step + 1) / warmup) if warmup else lr
            for group in opt.param_groups:
                group["lr"] = lr_now
            loss_val = float(loss.detach())
            updating = True
            opt.step()
            decay = min(ema_decay, (1.0 + step) / (10.0 + step)) if ema_warmup else ema_decay
            _ema_update(ema_mod, train_mod, decay)
            losses.append(loss_val)
            step += 1
            updating = False
            bar.update(1)
            if step % log_every == 0 or step == steps:
                bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.4f}")
            if ckpt_dir is not None and (step % checkpoint_every == 0 or step == steps):
                save(step)
            if callback is not None:
                callback(step, loss_val)
    except BaseException:
        # An interrupt between steps leaves a consistent state: save it so that the run can resume. One inside the
        # parameter update (opt.step / EMA) does not, so the previous periodic checkpoint stays the latest.
        if ckpt_dir is not None and not updating and step > start and (last_ckpt is None or
                                                                        not last_ckpt.name.endswith(f"{step:08d}.pt")):
            save(step)
        raise
    finally:
        bar.close()
    if ckpt_dir is not None and step == start and last_ckpt is None:
        save(step)
    net.eval()
    ema.eval()
    return TrainResult(ema=ema, net=net, losses=np.asarray(losses, dtype=np.float64), step=step, config=config,
                       checkpoint=last_ckpt, resumed_from=start, wall_s=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------- model files
def save_model(net: nn.Module, path, config: UNetConfig | dict | None = None, metadata: dict | None = None,
               half: bool = False) -> Path:
    """Write one set of weights (usually the EMA) with its config: a small file loadable with weights_only=True.

    ``config``: the network's :class:`UNetConfig` (default ``net.config``); ``metadata``: JSON-compatible extras
    (schedule, training steps, data, ...). ``half`` stores floating-point tensors as float16 (half the size; loaded
    back as float32). The write is atomic.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module; got {type(net).__name__}.")
    if config is None:
        config = _net_config(net)
    elif isinstance(config, UNetConfig):
        config = config.to_dict()
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a UNetConfig, a dict or None; got {type(config).__name__}.")
    sd = {k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu()).clone()
          for k, v in net.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save({
        "format": MODEL_FORMAT,
        "net_class": type(net).__name__,
        "state_dict": sd,
        "config": json.dumps(config, sort_keys=True),
        "metadata": json.dumps(metadata or {}, sort_keys=True),
        "half": bool(half),
    }, path)
    return path


def read_model_file(path) -> dict:
    """The raw contents of a :func:`save_model` file (weights_only load), with ``config``/``metadata`` decoded."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model file written by save_model (format "
                         f"{obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r}).")
    obj = dict(obj)
    obj["config"] = json.loads(obj["config"])
    obj["metadata"] = json.loads(obj["metadata"])
    return obj


def load_model(path, config: UNetConfig | dict | None = None, net: nn.Module | None = None, device=None) -> nn.Module:
    """Load a :func:`save_model` file into a network in eval mode.

    Without ``net``, a :class:`UNet` is built from ``config`` (default: the config stored in the file); with
    ``net``, its weights are replaced (shapes must match). float16 files are loaded as float32. ``device``: where
    the network goes (None: CPU).
    """
    obj = read_model_file(path)
    if net is None:
        if config is None:
            config = obj["config"]
            if config is None:
                raise ValueError(f"{path} stores no network config; pass config= or net= to load it.")
        if isinstance(config, dict):
            config = UNetConfig.from_dict(config)
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig or a dict; got {type(config).__name__}.")
        net = UNet(config)
    sd = obj["state_dict"]
    ref = net.state_dict()
    sd = {k: (v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v) for k, v in sd.items()}
    net.load_state_dict(sd)
    net.to(torch.device("cpu") if device is None else default_device(device))
    net.eval()
    return net
