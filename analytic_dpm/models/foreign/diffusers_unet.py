"""diffusers' ``UNet2DModel`` from a local directory, with no network access and no unpickling.

A diffusers model directory (what ``save_pretrained`` writes, or a downloaded Hub repository such as
google/ddpm-cifar10-32) holds ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or the older
``diffusion_pytorch_model.bin``); a pipeline directory has them under ``unet/`` and the noise schedule in
``scheduler/scheduler_config.json`` (a single-model Hub repository may keep ``scheduler_config.json`` beside
``config.json``).

:func:`load_diffusers_unet` builds the network with ``UNet2DModel.from_config`` (no download is possible), reads the
weights itself (safetensors, or ``torch.load(weights_only=True)``), renames the attention parameters of checkpoints
saved by diffusers before 0.15 (``query``/``key``/``value``/``proj_attn`` → ``to_q``/``to_k``/``to_v``/``to_out.0``)
and loads them strictly. :func:`diffusers_schedule` turns the scheduler config into a
:class:`~analytic_dpm.schedules.Schedule` and a prediction type.

Timestep convention: diffusers' schedulers index the training timesteps t = 0..N−1, with ᾱ at index t equal to the
paper's ᾱ_{t+1}; so the network takes t = n − 1 (``timestep_map="n-1"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...schedules import Schedule
from .checkpoints import fit_state_dict, read_checkpoint

#: Weight file names tried in order (a "variant" such as fp16 is tried after the plain files).
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")
#: Renames of the attention parameters in checkpoints written before diffusers 0.15.
LEGACY_ATTENTION_RENAMES = ((".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."),
                            (".proj_attn.", ".to_out.0."))
#: diffusers' ``prediction_type`` → this library's ``prediction``.
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}

#: The published config.json of google/ddpm-cifar10-32 (diffusers' port of Ho et al.'s CIFAR10 model), as a
#: reference configuration: ``UNet2DModel.from_config(DDPM_CIFAR10_CONFIG)`` has 35,746,307 parameters.
DDPM_CIFAR10_CONFIG = {
    "_class_name": "UNet2DModel",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}


def _import_unet2d():
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ImportError("loading a diffusers model needs the diffusers package: pip install diffusers safetensors "
                          "(or this package's [diffusers] extra).") from None
    return UNet2DModel


class DiffusersUNetAdapter(nn.Module):
    """``net(x, t) -> tensor`` around a diffusers ``UNet2DModel`` (which returns an output object)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, return_dict=False)[0]


def find_diffusers_files(path) -> dict:
    """The files of a local diffusers ``UNet2DModel``: ``{"config", "weights", "scheduler_config"}`` (Paths; the
    scheduler config may be None).

    ``path`` is a model directory (config.json + weights), a pipeline directory (with ``unet/``), or the model's
    ``config.json`` itself.

    Raises:
        FileNotFoundError: naming what is missing and what the directory must hold.
    """
    p = Path(os.fspath(path))
    if p.is_file() and p.name == "config.json":
        p = p.parent
    if not p.is_dir():
        raise FileNotFoundError(f"no diffusers model directory at {str(p)!r}: pass the directory that holds "
                                "config.json and diffusion_pytorch_model.safetensors (or .bin), e.g. a local copy "
                                "of google/ddpm-cifar10-32 or the output of UNet2DModel.save_pretrained.")
    model_dir, sched = p, None
    if not (p / "config.json").is_file() and (p / "unet" / "config.json").is_file():
        model_dir = p / "unet"
        if (p / "scheduler" / "scheduler_config.json").is_file():
            sched = p / "scheduler" / "scheduler_config.json"
    if sched is None:
        for cand in (model_dir / "scheduler_config.json", model_dir.parent / "scheduler" / "scheduler_config.json"):
            if cand.is_file():
                sched = cand
                break
    config = model_dir / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{str(p)!r} has no config.json (nor unet/config.json): it is not a diffusers model "
                                f"directory. It holds: {sorted(x.name for x in p.iterdir())[:12]}.")
    for name in WEIGHT_NAMES:
        if (model_dir / name).is_file():
            return {"config": config, "weights": model_dir / name, "scheduler_config": sched}
    if (model_dir / "diffusion_pytorch_model.safetensors.index.json").is_file():
        raise ValueError(f"{model_dir} holds a sharded checkpoint (an .index.json and several files); only "
                         "single-file UNet2DModel weights are supported.")
    raise FileNotFoundError(f"{str(model_dir)!r} has config.json but no weights: expected one of {WEIGHT_NAMES}.")


def read_diffusers_config(path) -> dict:
    """The model's config.json as a dict (``path``: as in :func:`find_diffusers_files`); it must describe a
    ``UNet2DModel``."""
    cfg_path = find_diffusers_files(path)["config"]
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cls = cfg.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise ValueError(f"{cfg_path} describes a {cls}; only diffusers' UNet2DModel (an unconditional image "
                         "U-Net, net(x, t)) is supported.")
    return cfg


def build_diffusers_unet(config: dict) -> nn.Module:
    """``UNet2DModel.from_config(config)`` with random weights (no file or network access)."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (the contents of config.json); got {type(config).__name__}.")
    return _import_unet2d().from_config(dict(config))


def _rename_legacy_keys(state_dict: dict, expected: set) -> tuple[dict, int]:
    out, renamed = {}, 0
    for k, v in state_dict.items():
        if k not in expected:
            for old, new in LEGACY_ATTENTION_RENAMES:
                cand = k.replace(old, new)
                if cand != k and cand in expected:
                    k, renamed = cand, renamed + 1
                    break
        out[k] = v
    return out, renamed


def load_diffusers_unet(path) -> tuple[nn.Module, dict]:
    """A diffusers ``UNet2DModel`` with its weights from a local directory (CPU, float32, eval mode).

    Returns:
        ``(unet, info)`` where info has the file paths, the config dict and the number of renamed legacy keys.
    """
    files = find_diffusers_files(path)
    cfg = read_diffusers_config(path)
    unet = build_diffusers_unet(cfg)
    sd = read_checkpoint(files["weights"])
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{files['weights']} is not a state dict (name → tensor).")
    sd, renamed = _rename_legacy_keys(sd, set(unet.state_dict()))
    report = fit_state_dict(unet, sd, what=f"diffusers weights {str(files['weights'])!r} (config {files['config']})")
    unet.eval()
    return unet, {**{k: (str(v) if v is not None else None) for k, v in files.items()}, "config_dict": cfg,
                  "renamed_legacy_keys": renamed, **report}


def diffusers_schedule(scheduler_config) -> tuple[Schedule | None, str]:
    """The forward schedule and prediction type described by a diffusers ``scheduler_config.json``.

    Supported ``beta_schedule`` values: ``linear`` (β = linspace(beta_start, beta_end, N), in float64),
    ``scaled_linear`` (β = linspace(√beta_start, √beta_end, N)²), ``squaredcos_cap_v2`` (Nichol & Dhariwal's cosine,
    max β 0.999) and explicit ``trained_betas``. Others give ``None`` (pass ``schedule=`` yourself).

    Returns:
        ``(schedule or None, prediction)`` with prediction ``"eps"``, ``"v"`` or ``"x0"``.
    """
    if isinstance(scheduler_config, (str, os.PathLike)):
        with open(scheduler_config, encoding="utf-8") as f:
            cfg = json.load(f)
    elif isinstance(scheduler_config, dict):
        cfg = scheduler_config
    else:
        raise TypeError(f"scheduler_config must be a path or a dict; got {type(scheduler_config).__name__}.")
    ptype = cfg.get("prediction_type", "epsilon")
    if ptype not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {ptype!r} is not supported; expected one of {sorted(PREDICTION_TYPES)}.")
    N = int(cfg.get("num_train_timesteps", 1000))
    kind = cfg.get("beta_schedule", "linear")
    b0, b1 = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    if cfg.get("trained_betas") is not None:
        sched = Schedule.from_betas(np.asarray(cfg["trained_betas"], dtype=np.float64), name="diffusers trained_betas")
    elif kind == "linear":
        sched = Schedule.linear(N, beta_start=b0, beta_end=b1)
    elif kind == "scaled_linear":
        sched = Schedule.from_betas(np.linspace(b0 ** 0.5, b1 ** 0.5, N, dtype=np.float64) ** 2,
                                    name=f"scaled_linear(N={N})")
    elif kind == "squaredcos_cap_v2":
        sched = Schedule.cosine(N)
    else:
        sched = None
    return sched, PREDICTION_TYPES[ptype]
