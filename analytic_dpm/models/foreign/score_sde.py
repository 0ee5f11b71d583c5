"""score_sde's NCSN++ / DDPM++ network (Song et al., ICLR 2021) and a loader for its CIFAR-10 VP checkpoints.

The extended Analytic-DPM paper (facts file §6.3) evaluates the CIFAR-10 VP-SDE model of score_sde_pytorch
(yang-song/score_sde_pytorch). This module rebuilds that network, class :class:`NCSNpp` (score_sde's
``models/ncsnpp.py``; DDPM++ and NCSN++ are the same class with different configs), with score_sde's parameter names
(``sigmas``, ``all_modules.{i}.…``; see :mod:`.score_sde_layers`) so that its ``checkpoint_N.pth`` files load with
``strict=True``, without score_sde's code.

Presets (score_sde ``configs/vp/cifar10_ddpmpp_continuous.py`` and ``configs/vp/cifar10_ncsnpp_continuous.py`` on top
of ``configs/default_cifar10_configs.py``), read-only mappings of :class:`ScoreSDEConfig` fields:

* :data:`DDPMPP_CIFAR10_CONTINUOUS`: nf 128, ch_mult (1, 2, 2, 2), 4 residual blocks per level, attention at 16×16,
  BigGAN residual blocks with naive re-sampling (``fir=False``), ``progressive='none'``, ``progressive_input='none'``,
  positional (sinusoidal) embedding, skip rescaling; 61,804,419 parameters.
* :data:`NCSNPP_CIFAR10_CONTINUOUS`: the same with FIR re-sampling (``fir=True``, kernel (1, 3, 3, 1)) and
  ``progressive_input='residual'`` (an FIR-down-sampled input pyramid added to the trunk at every level);
  ``progressive='none'`` and the positional embedding as well (the VP config overrides the default Fourier
  embedding; the NCSN++ VE configs use ``output_skip`` / ``input_skip`` and Fourier features instead); 62,693,251
  parameters (the pyramid's three FIR-fused 3×3 convolutions add 888,832).

Both use ``data.centered = True``: score_sde's data scaler maps images in [0, 1] to 2x − 1 ∈ [−1, 1] before the network,
which is this library's data range, so x goes in unchanged. (A ``centered=False`` network applies 2x − 1 itself and
expects x ∈ [0, 1]; :class:`NCSNpp` reproduces that.)

What the network computes for the VP SDE (score_sde ``models/utils.py:get_score_fn`` with ``continuous=True``): for
t ∈ [ε, 1] it is called as ``net(x_t, 999·t)`` and the score is ``−net(x_t, 999·t)/σ(t)`` with
σ(t) = √(1 − exp(−½t²(β_max − β_min) − tβ_min)), β_min = 0.1, β_max = 20. Since ∇log q_t(x_t) = −ε/σ(t) for
x_t = m(t)x_0 + σ(t)ε, the raw output **is the ε-prediction** ε̂(x_t, t); ``scale_by_sigma`` is False in both configs.
score_sde samples on t ∈ [10⁻³, 1] (``sampling_eps``); it trained on t ~ U[10⁻⁵, 1].

Intended use with the continuous-time wrapper (``analytic_dpm.continuous``, written separately)::

    from analytic_dpm.models.foreign import load_score_sde_checkpoint, NCSNPP_CIFAR10_CONTINUOUS
    from analytic_dpm.continuous import ContinuousTimeEpsModel, VPSDE

    net = load_score_sde_checkpoint("checkpoint_8.pth", config=NCSNPP_CIFAR10_CONTINUOUS, device="cuda")
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    eps_model = ContinuousTimeEpsModel(net, sde, times, time_scale=999.0)   # times: t_n for n = 0..N
    # eps_model(x, n) = net(x, 999·t_n): the library's discrete protocol; Γ, σ*², analytic_dpm.sample(...) as usual.

Checkpoint format (score_sde ``utils.save_checkpoint``): ``{'optimizer': Adam state, 'model': DataParallel state dict
('module.'-prefixed keys), 'ema': {'decay', 'num_updates', 'shadow_params': [tensors in model.parameters() order]},
'step': int}``; every value is a tensor, container or number, so ``torch.load(weights_only=True)`` reads it whole.
score_sde evaluates the EMA weights (``ema.copy_to(model.parameters())``); :func:`load_score_sde_checkpoint` does the
same with ``use_ema=True``.
"""

from __future__ import annotations

import math
import os
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..._validate import as_float, as_int, choice
from .checkpoints import _describe, fit_state_dict, read_checkpoint
from .score_sde_layers import (
    AttnBlockpp,
    Combine,
    Downsample,
    GaussianFourierProjection,
    ResnetBlockBigGANpp,
    ResnetBlockDDPMpp,
    Upsample,
    conv3x3,
    group_norm,
    positional_embedding,
)

RESBLOCK_TYPES = ("biggan", "ddpm")
PROGRESSIVE = ("none", "output_skip")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
COMBINE_METHODS = ("sum", "cat")
EMBEDDING_TYPES = ("positional", "fourier")
NONLINEARITIES = ("swish", "elu", "relu", "lrelu")


# ---------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ScoreSDEConfig:
    """The fields of score_sde's ``config.data`` / ``config.model`` that fix the NCSN++ architecture (same names).

    Attributes:
        image_size: side H = W of the input (``data.image_size``).
        num_channels: image channels (``data.num_channels``).
        centered: the data are in [−1, 1] (True); False: the network maps x ∈ [0, 1] to 2x − 1 itself.
        nf: width of the first level; ch_mult: width multipliers per level; num_res_blocks: blocks per level (one more
            on the way up); attn_resolutions: sides with attention; dropout; resamp_with_conv; conditional (on t).
        fir, fir_kernel: FIR re-sampling and its 1-D kernel.
        skip_rescale: divide residual sums by √2.
        resblock_type: ``"biggan"`` (re-sampling inside residual blocks) or ``"ddpm"``.
        progressive: ``"none"`` or ``"output_skip"`` (``"residual"`` is not supported: score_sde_pytorch's own
            FIR up-sampling convolution cannot run in PyTorch).
        progressive_input: ``"none"``, ``"input_skip"`` or ``"residual"``; progressive_combine: ``"sum"`` or ``"cat"``.
        embedding_type: ``"positional"`` (sinusoidal, of the label 999·t) or ``"fourier"`` (of log label);
            fourier_scale: std of the Fourier frequencies.
        nonlinearity: ``"swish"`` (SiLU), ``"elu"``, ``"relu"`` or ``"lrelu"``.
        scale_by_sigma: divide the output by σ (VE models); False for the VP models.
        sigma_min, sigma_max, num_scales: the ``sigmas`` buffer, exp(linspace(log σ_max, log σ_min, num_scales)).
        beta_min, beta_max: the VP SDE the model was trained with (β(t) = β_min + t(β_max − β_min)); not used by the
            network, recorded for building the SDE.
    """

    image_size: int = 32
    num_channels: int = 3
    centered: bool = True
    nf: int = 128
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = False
    fir_kernel: tuple = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "none"
    progressive_combine: str = "sum"
    embedding_type: str = "positional"
    fourier_scale: float = 16.0
    nonlinearity: str = "swish"
    scale_by_sigma: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        fix = "See DDPMPP_CIFAR10_CONTINUOUS / NCSNPP_CIFAR10_CONTINUOUS for the published configurations."
        for name in ("image_size", "num_channels", "nf", "num_res_blocks", "num_scales"):
            object.__setattr__(self, name, as_int(name, getattr(self, name), minimum=1, fix=fix))
        for name in ("ch_mult", "attn_resolutions", "fir_kernel"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)):
                raise TypeError(f"{name} must be a tuple; got {v!r}. {fix}")
        mult = tuple(as_int("ch_mult", m, minimum=1, fix=fix) for m in self.ch_mult)
        if not mult:
            raise ValueError(f"ch_mult must be a non-empty tuple of positive ints; got {self.ch_mult!r}. {fix}")
        object.__setattr__(self, "ch_mult", mult)
        object.__setattr__(self, "attn_resolutions",
                           tuple(as_int("attn_resolutions", a, minimum=1) for a in self.attn_resolutions))
        kern = tuple(as_float("fir_kernel", f) for f in self.fir_kernel)
        if len(kern) < 2 or sum(kern) == 0:
            raise ValueError(f"fir_kernel must have at least 2 taps and a non-zero sum, e.g. (1, 3, 3, 1); got "
                             f"{self.fir_kernel!r}.")
        object.__setattr__(self, "fir_kernel", tuple(int(f) if float(f).is_integer() else f for f in kern))
        for name in ("centered", "resamp_with_conv", "conditional", "fir", "skip_rescale", "scale_by_sigma"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False; got {v!r}.")
            object.__setattr__(self, name, bool(v))
        for name, opts in (("resblock_type", RESBLOCK_TYPES), ("progressive_input", PROGRESSIVE_INPUT),
                           ("progressive_combine", COMBINE_METHODS), ("embedding_type", EMBEDDING_TYPES),
                           ("nonlinearity", NONLINEARITIES)):
            v = getattr(self, name)
            object.__setattr__(self, name, choice(name, v.lower() if isinstance(v, str) else v, opts))
        prog = self.progressive.lower() if isinstance(self.progressive, str) else self.progressive
        if prog == "residual":
            raise NotImplementedError("progressive='residual' is not supported: it needs score_sde's FIR up-sampling "
                                      "convolution (upsample_conv_2d), which score_sde_pytorch itself cannot run. "
                                      "The published VP configs use progressive='none'.")
        object.__setattr__(self, "progressive", choice("progressive", prog, PROGRESSIVE))
        if self.resblock_type == "ddpm" and self.fir and self.resamp_with_conv:
            raise NotImplementedError("resblock_type='ddpm' with fir=True and resamp_with_conv=True is not supported "
                                      "(score_sde_pytorch's FIR up-sampling convolution cannot run in PyTorch).")
        dropout = as_float("dropout", self.dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
        object.__setattr__(self, "dropout", dropout)
        for name in ("fourier_scale", "sigma_min", "sigma_max", "beta_min", "beta_max"):
            object.__setattr__(self, name, as_float(name, getattr(self, name)))
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max; got sigma_min = {self.sigma_min}, sigma_max = "
                             f"{self.sigma_max}.")
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max; got beta_min = {self.beta_min}, beta_max = "
                             f"{self.beta_max}.")
        if self.nf < 4:
            raise ValueError(f"nf must be at least 4 (GroupNorm uses nf/4 groups); got {self.nf}.")
        for m in mult:
            c = self.nf * m
            if c % min(c // 4, 32):
                raise ValueError(f"every width nf·ch_mult must be divisible by its GroupNorm group count "
                                 f"min(width/4, 32); got width {c} (nf = {self.nf}, ch_mult = {mult}). Use a "
                                 f"multiple of 4 below 128 or of 32 above.")
        factor = 2 ** (len(mult) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size = {self.image_size} must be divisible by 2^(len(ch_mult) − 1) = {factor}: "
                             f"there are {len(mult) - 1} down-samplings. {fix}")

    @property
    def all_resolutions(self) -> tuple:
        """Side length at each level: image_size / 2^level."""
        return tuple(self.image_size // 2 ** i for i in range(len(self.ch_mult)))

    def sigmas(self) -> np.ndarray:
        """The ``sigmas`` buffer (float64): exp(linspace(log σ_max, log σ_min, num_scales)) (score_sde get_sigmas)."""
        return np.exp(np.linspace(np.log(self.sigma_max), np.log(self.sigma_min), self.num_scales))

    def to_dict(self) -> dict:
        """JSON-compatible dict of the fields (tuples as lists)."""
        d = asdict(self)
        for k in ("ch_mult", "attn_resolutions", "fir_kernel"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d) -> "ScoreSDEConfig":
        """From a mapping of fields (e.g. a preset); unknown keys raise a TypeError naming them."""
        if not isinstance(d, Mapping):
            raise TypeError(f"config must be a ScoreSDEConfig or a mapping of its fields; got {type(d).__name__}.")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown ScoreSDEConfig field(s) {unknown}; the fields are "
                            f"{sorted(f.name for f in fields(cls))}.")
        return cls(**dict(d))


def _preset(**over) -> types.MappingProxyType:
    d = ScoreSDEConfig(**over).to_dict()
    for k in ("ch_mult", "attn_resolutions", "fir_kernel"):
        d[k] = tuple(d[k])
    return types.MappingProxyType(d)


#: score_sde ``configs/vp/cifar10_ddpmpp_continuous.py`` (a read-only mapping; ``dict(preset, nf=64)`` to vary it).
DDPMPP_CIFAR10_CONTINUOUS = _preset(fir=False, progressive="none", progressive_input="none")
#: score_sde ``configs/vp/cifar10_ncsnpp_continuous.py``.
NCSNPP_CIFAR10_CONTINUOUS = _preset(fir=True, progressive="none", progressive_input="residual")
#: The presets by name.
SCORE_SDE_PRESETS = types.MappingProxyType({
    "ddpmpp-cifar10-vp-continuous": DDPMPP_CIFAR10_CONTINUOUS,
    "ncsnpp-cifar10-vp-continuous": NCSNPP_CIFAR10_CONTINUOUS,
})


def score_sde_config(config) -> ScoreSDEConfig:
    """``config`` (a :class:`ScoreSDEConfig`, a mapping of its fields, or a name in :data:`SCORE_SDE_PRESETS`) as a
    validated :class:`ScoreSDEConfig`."""
    if isinstance(config, ScoreSDEConfig):
        return config
    if isinstance(config, str):
        if config not in SCORE_SDE_PRESETS:
            raise ValueError(f"config = {config!r} is not a score_sde preset; the presets are "
                             f"{', '.join(repr(k) for k in SCORE_SDE_PRESETS)}.")
        config = SCORE_SDE_PRESETS[config]
    if isinstance(config, Mapping):
        return ScoreSDEConfig.from_dict(config)
    raise TypeError(f"config must be a ScoreSDEConfig, a mapping of its fields (e.g. DDPMPP_CIFAR10_CONTINUOUS) or a "
                    f"preset name ({', '.join(repr(k) for k in SCORE_SDE_PRESETS)}); got {type(config).__name__}.")


def _activation(name: str) -> nn.Module:
    return {"swish": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU}.get(name, lambda: nn.LeakyReLU(0.2))()


# ---------------------------------------------------------------------------------------------------- network
class NCSNpp(nn.Module):
    """score_sde's NCSN++ / DDPM++ network, ``net(x, time_cond) -> out`` (score_sde ``models/ncsnpp.py``).

    ``x``: (B, C, H, W), in [−1, 1] for ``centered`` configs; ``time_cond``: (B,) (or a scalar) label: 999·t for VP
    models (positional embedding of the label; Fourier embedding of log label). For VP models ``out`` is the
    ε-prediction: score = −out/σ(t) (see the module docstring).

    Args:
        config: a :class:`ScoreSDEConfig`, a mapping of its fields or a preset name (default: DDPM++ CIFAR-10 VP).
    """

    def __init__(self, config=None):
        super().__init__()
        self.config = cfg = score_sde_config(DDPMPP_CIFAR10_CONTINUOUS if config is None else config)
        self.act = act = _activation(cfg.nonlinearity)
        self.register_buffer("sigmas", torch.tensor(cfg.sigmas()))
        nf, nrb, levels = cfg.nf, cfg.num_res_blocks, len(cfg.ch_mult)
        fir, fk, skip = cfg.fir, cfg.fir_kernel, cfg.skip_rescale
        resolutions = cfg.all_resolutions
        temb_dim = 4 * nf

        modules = []
        if cfg.embedding_type == "fourier":
            modules.append(GaussianFourierProjection(nf, cfg.fourier_scale))
            embed_dim = 2 * nf
        else:
            embed_dim = nf
        if cfg.conditional:
            modules += [nn.Linear(embed_dim, temb_dim), nn.Linear(temb_dim, temb_dim)]

        def resblock(in_ch, out_ch=None, up=False, down=False):
            if cfg.resblock_type == "ddpm":
                return ResnetBlockDDPMpp(act, in_ch, out_ch, temb_dim, dropout=cfg.dropout, skip_rescale=skip)
            return ResnetBlockBigGANpp(act, in_ch, out_ch, temb_dim, up=up, down=down, dropout=cfg.dropout, fir=fir,
                                       fir_kernel=fk, skip_rescale=skip)

        if cfg.progressive == "output_skip":
            self.pyramid_upsample = Upsample(cfg.num_channels, fir=fir, fir_kernel=fk, with_conv=False)
        if cfg.progressive_input == "input_skip":
            self.pyramid_downsample = Downsample(cfg.num_channels, fir=fir, fir_kernel=fk, with_conv=False)

        channels = cfg.num_channels
        input_pyramid_ch = channels
        modules.append(conv3x3(channels, nf))
        hs_c = [nf]
        in_ch = nf
        for lvl in range(levels):
            for _ in range(nrb):
                out_ch = nf * cfg.ch_mult[lvl]
                modules.append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if resolutions[lvl] in cfg.attn_resolutions:
                    modules.append(AttnBlockpp(in_ch, skip_rescale=skip))
                hs_c.append(in_ch)
            if lvl != levels - 1:
                if cfg.resblock_type == "ddpm":
                    modules.append(Downsample(in_ch, with_conv=cfg.resamp_with_conv, fir=fir, fir_kernel=fk))
                else:
                    modules.append(resblock(in_ch, down=True))
                if cfg.progressive_input == "input_skip":
                    modules.append(Combine(input_pyramid_ch, in_ch, method=cfg.progressive_combine))
                    if cfg.progressive_combine == "cat":
                        in_ch *= 2
                elif cfg.progressive_input == "residual":
                    modules.append(Downsample(input_pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fk))
                    input_pyramid_ch = in_ch
                hs_c.append(in_ch)

        in_ch = hs_c[-1]
        modules += [resblock(in_ch), AttnBlockpp(in_ch, skip_rescale=skip), resblock(in_ch)]

        for lvl in reversed(range(levels)):
            for _ in range(nrb + 1):
                out_ch = nf * cfg.ch_mult[lvl]
                modules.append(resblock(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if resolutions[lvl] in cfg.attn_resolutions:
                modules.append(AttnBlockpp(in_ch, skip_rescale=skip))
            if cfg.progressive == "output_skip":
                modules += [group_norm(in_ch), conv3x3(in_ch, channels)]
            if lvl != 0:
                if cfg.resblock_type == "ddpm":
                    modules.append(Upsample(in_ch, with_conv=cfg.resamp_with_conv, fir=fir, fir_kernel=fk))
                else:
                    modules.append(resblock(in_ch, up=True))
        assert not hs_c
        if cfg.progressive != "output_skip":
            modules += [group_norm(in_ch), conv3x3(in_ch, channels)]
        self.all_modules = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor, time_cond) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.num_channels or x.shape[2] != x.shape[3]:
            raise ValueError(f"x must have shape (B, {cfg.num_channels}, H, H); got {tuple(x.shape)}.")
        if x.shape[2] % (2 ** (len(cfg.ch_mult) - 1)):
            raise ValueError(f"the side {x.shape[2]} must be divisible by 2^{len(cfg.ch_mult) - 1}.")
        t = torch.as_tensor(time_cond, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"time_cond must be a scalar or have shape ({x.shape[0]},); got {tuple(t.shape)}.")
        modules = self.all_modules
        m = 0
        if cfg.embedding_type == "fourier":
            used_sigmas = t
            temb = modules[m](torch.log(t.float()))
            m += 1
        else:
            used_sigmas = self.sigmas[t.long()] if cfg.scale_by_sigma else None
            temb = positional_embedding(t, cfg.nf)
        if cfg.conditional:
            temb = temb.to(modules[m].weight.dtype)
            temb = modules[m + 1](self.act(modules[m](temb)))
            m += 2
        else:
            temb = None
        if not cfg.centered:
            x = 2 * x - 1.0

        input_pyramid = x if cfg.progressive_input != "none" else None
        hs = [modules[m](x)]
        m += 1
        levels = len(cfg.ch_mult)
        for lvl in range(levels):
            for _ in range(cfg.num_res_blocks):
                h = modules[m](hs[-1], temb)
                m += 1
                if h.shape[-1] in cfg.attn_resolutions:
                    h = modules[m](h)
                    m += 1
                hs.append(h)
            if lvl != levels - 1:
                if cfg.resblock_type == "ddpm":
                    h = modules[m](hs[-1])
                else:
                    h = modules[m](hs[-1], temb)
                m += 1
                if cfg.progressive_input == "input_skip":
                    input_pyramid = self.pyramid_downsample(input_pyramid)
                    h = modules[m](input_pyramid, h)
                    m += 1
                elif cfg.progressive_input == "residual":
                    input_pyramid = modules[m](input_pyramid)
                    m += 1
                    input_pyramid = (input_pyramid + h) / math.sqrt(2.0) if cfg.skip_rescale else input_pyramid + h
                    h = input_pyramid
                hs.append(h)

        h = modules[m](hs[-1], temb)
        h = modules[m + 1](h)
        h = modules[m + 2](h, temb)
        m += 3

        pyramid = None
        for lvl in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = modules[m](torch.cat([h, hs.pop()], dim=1), temb)
                m += 1
            if h.shape[-1] in cfg.attn_resolutions:
                h = modules[m](h)
                m += 1
            if cfg.progressive == "output_skip":
                pyramid_h = modules[m + 1](self.act(modules[m](h)))
                m += 2
                pyramid = pyramid_h if lvl == levels - 1 else self.pyramid_upsample(pyramid) + pyramid_h
            if lvl != 0:
                h = modules[m](h) if cfg.resblock_type == "ddpm" else modules[m](h, temb)
                m += 1

        if cfg.progressive == "output_skip":
            h = pyramid
        else:
            h = modules[m + 1](self.act(modules[m](h)))
            m += 2
        assert m == len(modules), (m, len(modules))
        if cfg.scale_by_sigma:
            h = h / used_sigmas.to(h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
        return h

    def extra_repr(self) -> str:
        return f"config={self.config}"


# ---------------------------------------------------------------------------------------------------- loading
_SOURCE = ("the score_sde_pytorch README (github.com/yang-song/score_sde_pytorch) links the checkpoints on Google "
           "Drive: vp/cifar10_ddpmpp_continuous/checkpoint_*.pth (DDPM++ cont., VP) and "
           "vp/cifar10_ncsnpp_continuous/checkpoint_*.pth (NCSN++ cont., VP)")


def _trainable_names(net: nn.Module) -> list:
    """Names of the parameters score_sde's EMA tracks: ``model.parameters()`` with ``requires_grad`` (so not the
    fixed Fourier frequencies), in order."""
    return [k for k, p in net.named_parameters() if p.requires_grad]


def load_score_sde_checkpoint(path, config=DDPMPP_CIFAR10_CONTINUOUS, *, use_ema: bool = True, device=None,
                              dtype=None) -> NCSNpp:
    """A score_sde ``checkpoint_N.pth`` (or a plain state dict) as an :class:`NCSNpp` in eval mode.

    The file is read with ``torch.load(weights_only=True)`` (nothing is unpickled); the raw weights ``'model'``
    (``module.`` prefix stripped) are loaded strictly, then with ``use_ema`` the EMA's ``shadow_params`` replace the
    trainable parameters. score_sde's EMA stores a bare list in ``model.parameters()`` order; it is matched by name
    through the order of the file's own ``'model'`` keys (buffers and the fixed Fourier frequencies skipped), and
    every shape is checked before anything is copied.

    Args:
        path: the checkpoint file.
        config: the architecture: :data:`DDPMPP_CIFAR10_CONTINUOUS` (default), :data:`NCSNPP_CIFAR10_CONTINUOUS`, a
            preset name, a :class:`ScoreSDEConfig` or a mapping of its fields.
        use_ema: use the EMA weights (what score_sde evaluates); False: the raw training weights. A file holding a
            bare state dict needs ``use_ema=False`` (it cannot say whether its weights are EMA weights).
        device: where to put the network (None: CUDA when available, else CPU).
        dtype: floating dtype of the network (None: float32).

    Returns:
        the network; ``net.load_info`` records the step, the EMA decay and update count, the stripped prefixes and the
        parameter count.

    Raises:
        FileNotFoundError: no file at ``path`` (the message says where the published checkpoints are).
        ValueError: not a score_sde checkpoint, parameters missing/unexpected/mis-shaped, an EMA that does not fit,
            or a file that would need unpickling.
    """
    cfg = score_sde_config(config)
    if not isinstance(use_ema, (bool, np.bool_)):
        raise TypeError(f"use_ema must be True or False; got {use_ema!r}.")
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or Path); got {type(path).__name__}.")
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"no score_sde checkpoint file at {str(p)!r}" + (" (it is a directory)" if p.is_dir()
                                else "") + f". Nothing is downloaded by this library; {_SOURCE}.")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float16; got {dtype!r}.")
    from ..training import default_device

    dev = default_device(device)
    obj = read_checkpoint(p)
    expected = "a score_sde checkpoint {'optimizer', 'model', 'ema', 'step'} (utils.save_checkpoint) or a state dict"
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{p} is not {expected}; it holds {_describe(obj)}.")
    is_sd = all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values())
    info = {"path": str(p), "step": None, "ema_decay": None, "ema_num_updates": None, "used_ema": False}
    if is_sd:
        if use_ema:
            raise ValueError(f"{p} holds a bare state dict, not a score_sde training checkpoint with an 'ema' entry, "
                             "so its EMA weights cannot be picked out. If these are the weights you want (e.g. EMA "
                             "weights saved on their own), pass use_ema=False.")
        model_sd = dict(obj)
        info["location"] = ""
    else:
        if "model" not in obj or not isinstance(obj["model"], Mapping):
            raise ValueError(f"{p} is not {expected}: no 'model' state dict; it holds {_describe(obj)}.")
        model_sd = dict(obj["model"])
        info["location"] = "['model']"
        step = obj.get("step")
        info["step"] = int(step) if isinstance(step, (int, np.integer)) or (
            isinstance(step, torch.Tensor) and step.numel() == 1) else step

    with torch.device("meta"):
        net = NCSNpp(cfg)
    net = net.to_empty(device="cpu")
    what = f"score_sde checkpoint {str(p)!r}{' at ' + info['location'] if info['location'] else ''}"

    def hints(missing, unexpected, mismatched):
        out = []
        keys = set(model_sd)
        if any("Conv2d_0" in k for k in keys) != any("Conv2d_0" in k for k in net.state_dict()):
            out.append("FIR-fused convolutions (Conv2d_0) are present in only one of the two: NCSN++ "
                       "(NCSNPP_CIFAR10_CONTINUOUS) vs DDPM++ (DDPMPP_CIFAR10_CONTINUOUS)?")
        if mismatched:
            out.append(f"check nf (= {cfg.nf}), ch_mult (= {cfg.ch_mult}) and num_res_blocks (= {cfg.num_res_blocks}).")
        if missing or unexpected:
            out.append("check num_res_blocks, attn_resolutions, progressive / progressive_input and embedding_type "
                       "against the config file the model was trained with.")
        return out

    report = fit_state_dict(net, model_sd, what=what, hints=hints)
    info.update(report)

    if use_ema:
        ema = obj.get("ema")
        if not isinstance(ema, Mapping) or not isinstance(ema.get("shadow_params"), (list, tuple)):
            raise ValueError(f"{p} has no usable 'ema' entry (expected ExponentialMovingAverage.state_dict(): "
                             f"{{'decay', 'num_updates', 'shadow_params': [tensors]}}); it holds "
                             f"{_describe(ema)}. Pass use_ema=False to load the raw weights.")
        shadow = list(ema["shadow_params"])
        if not all(isinstance(s, torch.Tensor) for s in shadow):
            raise ValueError(f"{p}: ema['shadow_params'] must be a list of tensors; got {_describe(shadow)}.")
        ours = _trainable_names(net)
        trainable = set(ours)
        # The file's own key order is score_sde's parameters() order (a state dict lists each module's parameters
        # before its buffers and children, as parameters() does); fall back to ours for a file without it.
        prefixes = report.get("stripped_prefixes", [])

        def strip(k):
            for pre in prefixes:
                k = k[len(pre):] if k.startswith(pre) else k
            return k

        names = [n for n in (strip(k) for k in model_sd) if n in trainable]
        if sorted(names) != sorted(ours):
            names = ours
        if len(shadow) != len(names):
            raise ValueError(f"{p}: the EMA holds {len(shadow)} shadow tensors but the network has {len(names)} "
                             "trainable parameters; the EMA does not belong to this architecture (or the file is "
                             "damaged). Pass use_ema=False to load the raw weights.")
        params = dict(net.named_parameters())
        bad = [(i, n, tuple(s.shape), tuple(params[n].shape)) for i, (n, s) in enumerate(zip(names, shadow))
               if tuple(s.shape) != tuple(params[n].shape)]
        if bad:
            shown = ", ".join(f"#{i} {n}: {a} vs {b}" for i, n, a, b in bad[:8])
            raise ValueError(f"{p}: {len(bad)} EMA shadow tensor(s) do not fit the network (index name: EMA vs "
                             f"network): {shown}{' ...' if len(bad) > 8 else ''}. Pass use_ema=False to load the raw "
                             "weights.")
        with torch.no_grad():
            for n, s in zip(names, shadow):
                params[n].copy_(s)
        info.update(used_ema=True, ema_decay=ema.get("decay"), ema_num_updates=ema.get("num_updates"))
    info["num_parameters"] = sum(q.numel() for q in net.parameters())
    net = net.to(device=dev, dtype=dtype) if dtype is not None else net.to(device=dev)
    net.eval()
    net.load_info = info
    return net
