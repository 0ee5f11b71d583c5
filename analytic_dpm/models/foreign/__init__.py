"""Networks from other codebases, rebuilt here so that their published checkpoints load without their code.

* :mod:`.ddpm_unet`: :class:`DDPMUNet`, Ho et al.'s U-Net as converted to PyTorch (pytorch_diffusion, DDIM):
  CIFAR10, CelebA 64×64, LSUN Bedroom.
* :mod:`.improved_unet`: :class:`ImprovedUNet`, the improved-diffusion U-Net: Bao et al.'s CIFAR10 models,
  improved-diffusion's ImageNet 64×64 and LSUN models.
* :mod:`.diffusers_unet`: diffusers' ``UNet2DModel`` from a local directory.
* :mod:`.checkpoints`: reading checkpoint files without unpickling code, finding the (EMA) state dict inside
  training checkpoints, strict loading with a full report of differences.
* :mod:`.loading`: :func:`load_pretrained` and :data:`PRETRAINED_PRESETS` (the paper's models, their timestep
  conventions and schedules, and where to get each file). Nothing is ever downloaded.
"""

from .checkpoints import extract_state_dict, fit_state_dict, read_checkpoint
from .ddpm_unet import DDPM_PRESETS, DDPMUNet, DDPMUNetConfig, ddpm_timestep_embedding
from .diffusers_unet import (
    DDPM_CIFAR10_CONFIG,
    DiffusersUNetAdapter,
    build_diffusers_unet,
    diffusers_schedule,
    find_diffusers_files,
    load_diffusers_unet,
)
from .improved_unet import IMPROVED_PRESETS, ImprovedUNet, ImprovedUNetConfig, improved_timestep_embedding
from .loading import (
    FAMILIES,
    FAMILY_TIMESTEP_MAPS,
    PRETRAINED_PRESETS,
    PretrainedEpsModel,
    PretrainedPreset,
    load_pretrained,
    preset_config,
)

__all__ = [
    "extract_state_dict", "fit_state_dict", "read_checkpoint",
    "DDPM_PRESETS", "DDPMUNet", "DDPMUNetConfig", "ddpm_timestep_embedding",
    "DDPM_CIFAR10_CONFIG", "DiffusersUNetAdapter", "build_diffusers_unet", "diffusers_schedule",
    "find_diffusers_files", "load_diffusers_unet",
    "IMPROVED_PRESETS", "ImprovedUNet", "ImprovedUNetConfig", "improved_timestep_embedding",
    "FAMILIES", "FAMILY_TIMESTEP_MAPS", "PRETRAINED_PRESETS", "PretrainedEpsModel", "PretrainedPreset",
    "load_pretrained", "preset_config",
]

# score_sde's NCSN++ / DDPM++ (continuous-time VP models; see analytic_dpm.continuous for the ε-model wrapper)
from .score_sde import (  # noqa: E402
    DDPMPP_CIFAR10_CONTINUOUS,
    NCSNPP_CIFAR10_CONTINUOUS,
    SCORE_SDE_PRESETS,
    NCSNpp,
    ScoreSDEConfig,
    load_score_sde_checkpoint,
    score_sde_config,
)

__all__ += [
    "DDPMPP_CIFAR10_CONTINUOUS", "NCSNPP_CIFAR10_CONTINUOUS", "SCORE_SDE_PRESETS", "NCSNpp", "ScoreSDEConfig",
    "load_score_sde_checkpoint", "score_sde_config",
]
