"""One entry point for pretrained networks from other codebases: :func:`load_pretrained` → an ε-model.

Nothing is downloaded: the user supplies the file (or, for diffusers, the directory). A preset
(:data:`PRETRAINED_PRESETS`) records, for each model the paper used, the architecture, the timestep convention the
network was trained with, its forward schedule, whether it has a learned-variance head, and where to get the file.

Timestep conventions (what the network receives for the paper's n; facts file §5.1, official code C):

* ``ddpm`` presets (pytorch_diffusion, DDIM): n − 1. C: ``eps_model = lambda x, t: diffusion.model(x, t - 1)``
  with t = n·1000/N = n.
* ``improved-cifar10-*`` (Bao et al.'s own models): n·1000/N = n (N = 1000); trained with
  ``rescale_timesteps=True`` on n itself.
* ``improved-imagenet64``: (n − 1)·1000/N with N = 4000: improved-diffusion's t = n − 1, rescaled (C's ``shift1``).
* ``improved-lsun-bedroom``: n − 1 (improved-diffusion with ``rescale_timesteps=False``).
* ``diffusers``: n − 1 (diffusers' schedulers index t = 0..N−1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from ...schedules import Schedule
from ..protocol import TIMESTEP_MAPS, TorchEpsModel
from .checkpoints import extract_state_dict, fit_state_dict, read_checkpoint
from .ddpm_unet import DDPM_PRESETS, DDPMUNet, DDPMUNetConfig
from .improved_unet import IMPROVED_PRESETS, ImprovedUNet, ImprovedUNetConfig

#: The network families :func:`load_pretrained` builds.
FAMILIES = ("ddpm", "improved", "diffusers")
#: Timestep convention of each family when no preset says otherwise.
FAMILY_TIMESTEP_MAPS = {"ddpm": "n-1", "improved": "(n-1)*1000/N", "diffusers": "n-1"}


@dataclass(frozen=True)
class PretrainedPreset:
    """A published model: architecture, conventions and where the file comes from.

    Attributes:
        name: the preset's key in :data:`PRETRAINED_PRESETS`.
        family: ``"ddpm"``, ``"improved"`` or ``"diffusers"``.
        config: the architecture (:class:`DDPMUNetConfig` / :class:`ImprovedUNetConfig`); None for diffusers
            (read from the directory's config.json).
        timestep_map: what the network receives for the paper's n (see :data:`~analytic_dpm.models.TIMESTEP_MAPS`).
        schedule: a zero-argument callable returning the forward schedule the model was trained with, or None when
            the preset covers several (then ``schedule=`` must be passed).
        learned_sigma: the network outputs 2C channels (ε̂ and a variance head, which is ignored).
        image_shape: (C, H, W) of the data.
        dataset: the data set, in words.
        source: where the user can get the file, in words.
        file_name: the file's published name.
    """

    name: str
    family: str
    config: object | None
    timestep_map: str
    schedule: Callable[[], Schedule] | None
    learned_sigma: bool
    image_shape: tuple
    dataset: str
    source: str
    file_name: str
    notes: str = field(default="")


def _linear1000() -> Schedule:
    return Schedule.linear(1000)


def _cosine1000() -> Schedule:
    return Schedule.cosine(1000)


def _cosine4000() -> Schedule:
    return Schedule.cosine(4000)


_BAO_DRIVE = ("the Google Drive link for the CIFAR10 checkpoints in the README of the official Analytic-DPM code "
              "(github.com/baofff/Analytic-DPM)")

#: The published models the paper used (facts file §5.2), by name.
PRETRAINED_PRESETS = {
    "ddpm-cifar10": PretrainedPreset(
        "ddpm-cifar10", "ddpm", DDPM_PRESETS["ddpm-cifar10"], "n-1", _linear1000, False, (3, 32, 32),
        "CIFAR10 32×32",
        "the pesser/pytorch_diffusion conversion of Ho et al.'s CIFAR10 EMA model (the file pytorch_diffusion's "
        "Diffusion.from_pretrained('ema_cifar10') downloads from heibox.uni-heidelberg.de into "
        "~/.cache/diffusion_models_converted/ema_diffusion_cifar10_model/)",
        "model-790000.ckpt",
        "Ho et al.'s original model. The paper's CIFAR10 tables use Bao et al.'s own models instead: see "
        "'improved-cifar10-ls' / 'improved-cifar10-cs'."),
    "ddim-celeba64": PretrainedPreset(
        "ddim-celeba64", "ddpm", DDPM_PRESETS["ddim-celeba64"], "n-1", _linear1000, False, (3, 64, 64),
        "CelebA 64×64",
        "the DDIM authors' CelebA 64×64 checkpoint (ermongroup/ddim), linked from the README of the official "
        "Analytic-DPM code as ema_celeba.pth; the DDIM repository's own ckpt.pth (a [model, optimizer, epoch, step, "
        "ema] list, whose EMA weights are used) loads too",
        "ema_celeba.pth"),
    "ddpm-lsun-bedroom": PretrainedPreset(
        "ddpm-lsun-bedroom", "ddpm", DDPM_PRESETS["ddpm-lsun-bedroom"], "n-1", _linear1000, False, (3, 256, 256),
        "LSUN Bedroom 256×256",
        "the pesser/pytorch_diffusion conversion of Ho et al.'s LSUN Bedroom EMA model (the file "
        "Diffusion.from_pretrained('ema_lsun_bedroom') downloads into "
        "~/.cache/diffusion_models_converted/ema_diffusion_lsun_bedroom_model/)",
        "model-2388000.ckpt"),
    "improved-cifar10-ls": PretrainedPreset(
        "improved-cifar10-ls", "improved", IMPROVED_PRESETS["improved-cifar10"], "n*1000/N", _linear1000, False,
        (3, 32, 32), "CIFAR10 32×32, linear schedule (LS)",
        f"Bao et al.'s CIFAR10 (LS) model, iteration 400000, from {_BAO_DRIVE}; the EMA weights inside the "
        "training checkpoint are used",
        "400000.ckpt.pth"),
    "improved-cifar10-cs": PretrainedPreset(
        "improved-cifar10-cs", "improved", IMPROVED_PRESETS["improved-cifar10"], "n*1000/N", _cosine1000, False,
        (3, 32, 32), "CIFAR10 32×32, cosine schedule (CS)",
        f"Bao et al.'s CIFAR10 (CS) model, iteration 160000, from {_BAO_DRIVE}; the EMA weights inside the "
        "training checkpoint are used",
        "160000.ckpt.pth"),
    "improved-cifar10": PretrainedPreset(
        "improved-cifar10", "improved", IMPROVED_PRESETS["improved-cifar10"], "n*1000/N", None, False, (3, 32, 32),
        "CIFAR10 32×32",
        f"Bao et al.'s CIFAR10 models from {_BAO_DRIVE}: 400000.ckpt.pth (LS, Schedule.linear(1000)) or "
        "160000.ckpt.pth (CS, Schedule.cosine(1000))",
        "400000.ckpt.pth",
        "The architecture of both CIFAR10 models (pass schedule=); prefer 'improved-cifar10-ls' / 'improved-cifar10-cs', which also "
        "fix the schedule."),
    "improved-imagenet64": PretrainedPreset(
        "improved-imagenet64", "improved", IMPROVED_PRESETS["improved-imagenet64"], "(n-1)*1000/N", _cosine4000,
        True, (3, 64, 64), "ImageNet 64×64 (unconditional)",
        "improved-diffusion's unconditional ImageNet-64 L_hybrid model (the checkpoint linked in the README of "
        "openai/improved-diffusion, served from openaipublic.blob.core.windows.net/diffusion/march-2021/)",
        "imagenet64_uncond_100M_1500K.pt"),
    "improved-diffusion-cifar10": PretrainedPreset(
        "improved-diffusion-cifar10", "improved",
        replace(IMPROVED_PRESETS["improved-cifar10"], out_channels=6), "(n-1)*1000/N", _cosine4000, True,
        (3, 32, 32), "CIFAR10 32×32 (improved-diffusion, N = 4000)",
        "improved-diffusion's unconditional CIFAR-10 L_hybrid model (the checkpoint linked in the README of "
        "openai/improved-diffusion)",
        "cifar10_uncond_50M_500K.pt",
        "Nichol & Dhariwal's model (cosine, N = 4000, learned variances), not Bao et al.'s: the same network with a "
        "6-channel output."),
    "improved-lsun-bedroom": PretrainedPreset(
        "improved-lsun-bedroom", "improved", ImprovedUNetConfig(
            image_size=256, model_channels=128, out_channels=6, num_res_blocks=2, attention_resolutions=(16,),
            dropout=0.0, channel_mult=(1, 1, 2, 2, 4, 4), num_heads=1, use_scale_shift_norm=False),
        "n-1", _linear1000, True, (3, 256, 256), "LSUN Bedroom 256×256",
        "improved-diffusion's LSUN bedroom model (lr 1e-4; the checkpoint linked in the README of "
        "openai/improved-diffusion), the 'Improved DDPM' row of the paper's Table 4",
        "lsun_uncond_100M_1200K_bs128.pt",
        "Trained with rescale_timesteps=False, so the network takes n − 1 unscaled."),
    "diffusers-ddpm-cifar10": PretrainedPreset(
        "diffusers-ddpm-cifar10", "diffusers", None, "n-1", _linear1000, False, (3, 32, 32), "CIFAR10 32×32",
        "the google/ddpm-cifar10-32 repository of the Hugging Face Hub (diffusers' port of Ho et al.'s CIFAR10 "
        "model): a directory with config.json and diffusion_pytorch_model.safetensors (or .bin)",
        "google/ddpm-cifar10-32/ (a directory)"),
}


class PretrainedEpsModel(TorchEpsModel):
    """A :class:`~analytic_dpm.models.TorchEpsModel` built by :func:`load_pretrained`, with where it came from.

    Extra attributes: ``family``, ``preset`` (name or None), ``path``, ``config`` (the architecture: a config
    dataclass, or diffusers' config dict), ``image_shape`` (C, H, W) or None, ``info`` (file details: where the
    weights sat inside the file, stripped prefixes, parameter count).
    """

    def __init__(self, net, *, family, preset, path, config, image_shape, info, **kwargs):
        super().__init__(net, **kwargs)
        self.family, self.preset, self.path = family, preset, path
        self.config, self.image_shape, self.info = config, image_shape, info

    def __repr__(self) -> str:
        return (f"PretrainedEpsModel(family={self.family!r}, preset={self.preset!r}, path={self.path!r}, "
                f"timestep_map={self.timestep_map!r}, num_timesteps={self.num_timesteps}, "
                f"learned_sigma={self.learned_sigma}, prediction={self.prediction!r})")


def _preset_list(family: str | None = None) -> str:
    return ", ".join(repr(k) for k, p in PRETRAINED_PRESETS.items() if family is None or p.family == family)


def _resolve(family, config):
    """(family, preset or None, architecture config or None) from the user's arguments."""
    if not isinstance(family, str):
        raise TypeError(f"family must be a string: one of {FAMILIES} or a preset name ({_preset_list()}); got "
                        f"{family!r}.")
    preset = None
    if family in PRETRAINED_PRESETS:
        preset = PRETRAINED_PRESETS[family]
        family = preset.family
    elif family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES} or a preset name ({_preset_list()}); got {family!r}.")
    if isinstance(config, str):
        if config not in PRETRAINED_PRESETS:
            raise ValueError(f"config = {config!r} is not a preset; the presets of family {family!r} are "
                             f"{_preset_list(family)}.")
        named = PRETRAINED_PRESETS[config]
        if named.family != family:
            raise ValueError(f"config = {config!r} is a preset of family {named.family!r}, not {family!r}.")
        if preset is not None and named.name != preset.name:
            raise ValueError(f"two different presets given: {preset.name!r} (family) and {config!r} (config).")
        preset, config = named, None
    if family == "diffusers":
        if config is not None:
            raise ValueError("config must be None for family 'diffusers': the architecture is read from the "
                             "directory's config.json.")
        return family, preset, None
    cls = DDPMUNetConfig if family == "ddpm" else ImprovedUNetConfig
    if config is None:
        if preset is None:
            raise ValueError(f"family {family!r} needs the architecture: pass config= a preset name "
                             f"({_preset_list(family)}), a {cls.__name__}, or a dict of its fields.")
        return family, preset, preset.config
    if isinstance(config, dict):
        config = cls.from_dict(config)
    if not isinstance(config, cls):
        raise TypeError(f"config for family {family!r} must be a preset name, a {cls.__name__} or a dict of its "
                        f"fields; got {type(config).__name__}.")
    return family, preset, config


def _missing_file_message(path, family, preset) -> str:
    where = (f"Get it from {preset.source}, then call load_pretrained({preset.name!r}, 'path/to/{preset.file_name}')."
             if preset is not None else
             f"The presets of family {family!r} name the public sources of the paper's models: "
             f"{_preset_list(family)} (see analytic_dpm.models.PRETRAINED_PRESETS[name].source).")
    what = "model directory" if family == "diffusers" else "checkpoint file"
    model = f"the {preset.dataset} model '{preset.name}'" if preset is not None else f"a {family!r} model"
    return f"no {what} at {str(path)!r} for {model}. Nothing is downloaded by this library. {where}"


def _hints(family: str, config):
    def hints(missing, unexpected, mismatched):
        keys = set(missing) | set(unexpected)
        out = []
        if family == "ddpm" and any(k.startswith(("input_blocks.", "output_blocks.", "time_embed.")) for k in
                                    unexpected):
            out.append("the checkpoint has improved-diffusion parameter names: use family 'improved'.")
        if family == "improved" and any(k.startswith(("down.", "up.", "temb.", "mid.")) for k in unexpected):
            out.append("the checkpoint has DDPM (pytorch_diffusion / DDIM) parameter names: use family 'ddpm'.")
        if any(k.startswith(("down_blocks.", "up_blocks.", "mid_block.")) for k in unexpected):
            out.append("the checkpoint has diffusers parameter names: use family 'diffusers' with its directory.")
        if "label_emb.weight" in unexpected:
            out.append("the checkpoint is class-conditional (label_emb); only unconditional models are supported.")
        for k, a, _ in mismatched:
            if k in ("conv_out.weight", "out.2.weight"):
                field = "out_ch" if family == "ddpm" else "out_channels"
                out.append(f"the checkpoint's output has {a[0]} channels: set {field}={a[0]}"
                           + (" (a learned-variance model: ε̂ is the first half)." if a[0] % 2 == 0 else "."))
                break
        if out:
            return out
        if mismatched:
            out.append("the widths differ: check ch/model_channels and the channel multipliers.")
        if keys:
            out.append("the depth or attention placement differs: check num_res_blocks, the number of levels and "
                       "the attention resolutions.")
        out.append(f"the network was built from {config}.")
        return out
    return hints


def _check_schedule_for_map(timestep_map, schedule, preset):
    if isinstance(timestep_map, str) and "N" in timestep_map and schedule is None:
        hint = (f" The preset {preset.name!r} covers several schedules: {preset.source}." if preset is not None
                else "")
        raise ValueError(f"timestep_map {timestep_map!r} needs N: pass schedule= the forward schedule the network "
                         f"was trained with (e.g. Schedule.linear(1000) or Schedule.cosine(4000)).{hint}")


def load_pretrained(family: str, path, config=None, *, device=None, dtype=None, schedule: Schedule | None = None,
                    timestep_map=None, learned_sigma: bool | None = None, batch_size: int | None = None,
                    prefer_ema: bool = True) -> PretrainedEpsModel:
    """A published (or any compatible) pretrained network as an ε-model ``(x, n) -> ε̂`` for the paper's n ∈ 1..N.

    Examples::

        eps = load_pretrained("improved-cifar10-ls", "ckpts/400000.ckpt.pth")      # Bao et al.'s CIFAR10 (LS)
        eps = load_pretrained("ddpm", "model-790000.ckpt", "ddpm-cifar10")          # family + preset
        eps = load_pretrained("diffusers", "ddpm-cifar10-32/")                      # a diffusers directory
        eps = load_pretrained("improved", "my.pt", {"model_channels": 64, ...},    # your own configuration
                              schedule=Schedule.cosine(4000))

    Args:
        family: ``"ddpm"`` (Ho et al. / pytorch_diffusion / DDIM U-Net), ``"improved"`` (improved-diffusion U-Net),
            ``"diffusers"`` (``UNet2DModel``), or a preset name from :data:`PRETRAINED_PRESETS`, which fixes the
            family, architecture, timestep convention and schedule.
        path: the checkpoint file (``.pt``/``.pth``/``.ckpt``/``.bin`` read with ``torch.load(weights_only=True)``,
            or ``.safetensors``); for diffusers, the model (or pipeline) directory.
        config: the architecture for ``"ddpm"``/``"improved"``: a preset name, a config dataclass or a dict of its
            fields; None with a preset. Must be None for diffusers.
        device: where to put the network (None: CUDA when available, else CPU).
        dtype: the network's floating dtype (None: float32); inputs are cast to it and outputs back.
        schedule: the forward schedule the network was trained with; default: the preset's (for diffusers, the
            directory's scheduler config when there is one). Needed for the rescaled timestep maps.
        timestep_map: override the convention (one of :data:`~analytic_dpm.models.TIMESTEP_MAPS` or a callable);
            default: the preset's, else ``"n-1"`` (ddpm, diffusers) or ``"(n-1)*1000/N"`` (improved).
        learned_sigma: keep the first C of 2C output channels; default: the preset's, else whether the output has
            twice the input channels.
        batch_size: at most this many images per network call.
        prefer_ema: take the EMA weights of a training checkpoint that holds both.

    Returns:
        a :class:`PretrainedEpsModel` (a :class:`~analytic_dpm.models.TorchEpsModel`) in eval mode.

    Raises:
        FileNotFoundError: no file/directory at ``path``; the message names the model and where to get it.
        ValueError: the file's parameters do not fit the architecture (all differences listed), the file needs
            unpickling, or an argument is invalid.
    """
    family, preset, arch = _resolve(family, config)
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or Path); got {type(path).__name__}.")
    p = Path(os.fspath(path))
    exists = p.exists() if family == "diffusers" else p.is_file()
    if not exists:
        raise FileNotFoundError(_missing_file_message(p, family, preset))
    if timestep_map is None:
        timestep_map = preset.timestep_map if preset is not None else FAMILY_TIMESTEP_MAPS[family]
    elif not (callable(timestep_map) or timestep_map in TIMESTEP_MAPS):
        raise ValueError(f"timestep_map must be one of {TIMESTEP_MAPS} or a callable n -> number; got "
                         f"{timestep_map!r}.")
    if schedule is None and preset is not None and preset.schedule is not None:
        schedule = preset.schedule()
    if schedule is not None and not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an analytic_dpm.Schedule; got {type(schedule).__name__}.")

    if family != "diffusers":  # diffusers may still get its schedule from the scheduler config
        _check_schedule_for_map(timestep_map, schedule, preset)
    prediction = "eps"
    if family == "diffusers":
        from .diffusers_unet import DiffusersUNetAdapter, diffusers_schedule, load_diffusers_unet

        unet, info = load_diffusers_unet(p)
        if info["scheduler_config"] is not None:
            sched_file, prediction = diffusers_schedule(info["scheduler_config"])
            if schedule is None:
                schedule = sched_file
        if prediction != "eps" and schedule is None:
            raise ValueError(f"the model predicts {prediction!r} (scheduler prediction_type); converting to ε needs "
                             "its schedule, which the scheduler config does not give: pass schedule=.")
        net = DiffusersUNetAdapter(unet)
        arch_config = info.pop("config_dict")
        in_ch, out_ch = arch_config.get("in_channels", 3), arch_config.get("out_channels", 3)
        size = arch_config.get("sample_size")
        image_shape = (in_ch, size, size) if isinstance(size, int) else None
    else:
        net = DDPMUNet(arch) if family == "ddpm" else ImprovedUNet(arch)
        obj = read_checkpoint(p)
        sd, location = extract_state_dict(obj, prefer_ema=prefer_ema)
        what = (f"checkpoint {str(p)!r}{' at ' + location if location else ''} (family {family!r}"
                + (f", preset {preset.name!r}" if preset is not None else "") + ")")
        report = fit_state_dict(net, sd, what=what, hints=_hints(family, arch))
        info = {"location": location, **report}
        arch_config = arch
        in_ch = arch.in_channels
        out_ch = arch.out_ch if family == "ddpm" else arch.out_channels
        size = arch.resolution if family == "ddpm" else arch.image_size
        image_shape = preset.image_shape if preset is not None else (in_ch, size, size)
    info["num_parameters"] = sum(q.numel() for q in net.parameters())
    if learned_sigma is None:
        learned_sigma = preset.learned_sigma if preset is not None else out_ch == 2 * in_ch
    if learned_sigma and out_ch != 2 * in_ch:
        raise ValueError(f"learned_sigma=True needs 2·{in_ch} = {2 * in_ch} output channels; the network has {out_ch}."
                         " Pass learned_sigma=False for an ε-only network.")
    if not learned_sigma and out_ch != in_ch:
        raise ValueError(f"the network outputs {out_ch} channels for {in_ch} input channels; pass "
                         f"learned_sigma=True if the first {in_ch} are ε̂ (a learned-variance model).")
    _check_schedule_for_map(timestep_map, schedule, preset)
    from ..training import default_device

    dev = default_device(device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float16; got {dtype!r}.")
    net = net.to(device=dev, dtype=dtype) if dtype is not None else net.to(device=dev)
    net.eval()
    return PretrainedEpsModel(
        net, family=family, preset=preset.name if preset is not None else None, path=str(p), config=arch_config,
        image_shape=image_shape, info=info, timestep_map=timestep_map, schedule=schedule, prediction=prediction,
        learned_sigma=learned_sigma, batch_size=batch_size)


def preset_config(name: str):
    """The architecture config of preset ``name`` (a copy-free frozen dataclass; use ``dataclasses.replace`` to vary
    it), or the diffusers reference config dict for diffusers presets."""
    if name not in PRETRAINED_PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {_preset_list()}.")
    p = PRETRAINED_PRESETS[name]
    if p.family == "diffusers":
        from .diffusers_unet import DDPM_CIFAR10_CONFIG

        return dict(DDPM_CIFAR10_CONFIG)
    return replace(p.config)
