"""The U-Net of improved-diffusion (Nichol & Dhariwal 2021), as used by the paper's CIFAR10 and ImageNet 64 models.

Written here from the published description of the architecture; parameter names follow the improved-diffusion
checkpoints (openai/improved-diffusion ``UNetModel``, copied into the official Analytic-DPM code), so their state dicts
load with ``strict=True``:

``time_embed.{0,2}``, ``input_blocks.{i}.{j}``, ``middle_block.{0,1,2}``, ``output_blocks.{i}.{j}``, ``out.{0,2}``;
residual blocks ``in_layers.{0,2}``, ``emb_layers.1``, ``out_layers.{0,3}``, ``skip_connection``; attention
``norm``, ``qkv`` (a 1-D conv C → 3C), ``proj_out``; ``op`` (down-sampling conv), ``conv`` (up-sampling conv).

Architecture (all widths from :class:`ImprovedUNetConfig`):

* time: sinusoidal embedding of t (width ``model_channels``; cos half then sin half, frequencies 10000^(−k/half)) →
  Linear → SiLU → Linear (width 4·model_channels);
* residual block: GroupNorm(32) → SiLU → 3×3 conv; the time embedding → SiLU → Linear gives either a per-channel shift
  (added) or, with ``use_scale_shift_norm``, a scale and shift applied as GroupNorm(h)·(1 + scale) + shift; then
  SiLU → dropout → 3×3 conv; a 1×1 skip conv when the width changes;
* attention with ``num_heads`` heads: the qkv channels are grouped per head as [q, k, v] (the "legacy" order),
  softmax(qᵀk/√d_head);
* ``input_blocks``: the input conv, then per level ``num_res_blocks`` × (residual block [+ attention when the
  down-sampling rate is in ``attention_resolutions``]) and a stride-2 3×3 conv (padding 1) between levels;
  ``middle_block``: block, attention, block; ``output_blocks``: ``num_res_blocks + 1`` per level on the concatenated
  skips, the last of each level (but the first level) ending in nearest ×2 up-sampling + 3×3 conv;
  ``out``: GroupNorm → SiLU → 3×3 conv to ``out_channels``.

Outputs and timesteps (facts file §5.1–5.2): models trained with L_hybrid (``learn_sigma``; the ImageNet 64 model)
have ``out_channels = 6``: ε̂ is the first 3 channels and the variance head is ignored (``learned_sigma=True`` in
:class:`~analytic_dpm.models.protocol.TorchEpsModel`). improved-diffusion feeds t·1000/N for its t = n − 1
(``rescale_timesteps=True``): ``"(n-1)*1000/N"``. Bao et al.'s own CIFAR10 models were trained on n·1000/N with
N = 1000, i.e. n itself: ``"n*1000/N"``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..._validate import as_float, as_int
from .ddpm_unet import GroupNorm32


# ---------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ImprovedUNetConfig:
    """Sizes of an :class:`ImprovedUNet` (field names as improved-diffusion's ``UNetModel`` arguments).

    Attributes:
        image_size: side length of the square input (checked against the number of down-samplings only).
        in_channels: image channels.
        model_channels: width of the first level (a multiple of 32: GroupNorm has 32 groups).
        out_channels: output channels; 2·in_channels for learned-variance (L_hybrid) models, whose second half is
            ignored here.
        num_res_blocks: residual blocks per level on the down path (one more on the up path).
        attention_resolutions: down-sampling rates (1, 2, 4, ...) at which attention follows each residual block;
            improved-diffusion's ``--attention_resolutions 16,8`` at image size 64 means rates (4, 8).
        dropout: dropout probability (training only).
        channel_mult: width multipliers, one per level.
        conv_resample: learned convs for down/up-sampling (True in every published model).
        num_heads: attention heads (must divide every width that has attention).
        num_heads_upsample: heads on the up path; −1: same as ``num_heads``.
        use_scale_shift_norm: FiLM-style time conditioning (True in the paper's models).
    """

    image_size: int = 32
    in_channels: int = 3
    model_channels: int = 128
    out_channels: int = 3
    num_res_blocks: int = 3
    attention_resolutions: tuple = (2, 4)
    dropout: float = 0.0
    channel_mult: tuple = (1, 2, 2, 2)
    conv_resample: bool = True
    num_heads: int = 4
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True

    def __post_init__(self):
        fix = "See IMPROVED_PRESETS for the published configurations."
        for name in ("image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks", "num_heads"):
            object.__setattr__(self, name, as_int(name, getattr(self, name), minimum=1, fix=fix))
        nhu = as_int("num_heads_upsample", self.num_heads_upsample, minimum=-1, fix="−1 means num_heads.")
        if nhu == 0:
            raise ValueError("num_heads_upsample must be ≥ 1, or −1 for 'same as num_heads'; got 0.")
        object.__setattr__(self, "num_heads_upsample", nhu)
        mult = tuple(self.channel_mult) if isinstance(self.channel_mult, (list, tuple)) else None
        if not mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints; got {self.channel_mult!r}. "
                             f"{fix}")
        object.__setattr__(self, "channel_mult", mult)
        attn = self.attention_resolutions
        if not isinstance(attn, (list, tuple)):
            raise TypeError(f"attention_resolutions must be a tuple of down-sampling rates such as (2, 4); got "
                            f"{attn!r}.")
        object.__setattr__(self, "attention_resolutions",
                           tuple(as_int("attention_resolutions", a, minimum=1) for a in attn))
        dropout = as_float("dropout", self.dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
        object.__setattr__(self, "dropout", dropout)
        object.__setattr__(self, "conv_resample", bool(self.conv_resample))
        object.__setattr__(self, "use_scale_shift_norm", bool(self.use_scale_shift_norm))
        for m in mult:
            if (self.model_channels * m) % 32:
                raise ValueError(f"every width model_channels·channel_mult must be a multiple of 32 (GroupNorm(32)); "
                                 f"got model_channels = {self.model_channels}, channel_mult = {mult}.")
        heads = {self.num_heads, self.heads_upsample}
        widths = {self.model_channels * m for lvl, m in enumerate(mult) if 2 ** lvl in self.attention_resolutions}
        widths.add(self.model_channels * mult[-1])  # the middle block always has attention
        for h in heads:
            bad = sorted(w for w in widths if w % h)
            if bad:
                raise ValueError(f"num_heads = {h} must divide every width with attention; it does not divide {bad}.")
        factor = 2 ** (len(mult) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size = {self.image_size} must be divisible by 2^(len(channel_mult) − 1) = "
                             f"{factor}. {fix}")

    @property
    def heads_upsample(self) -> int:
        """Heads on the up path (``num_heads`` when ``num_heads_upsample`` is −1)."""
        return self.num_heads if self.num_heads_upsample == -1 else self.num_heads_upsample

    def to_dict(self) -> dict:
        """JSON-compatible dict of the fields (tuples as lists)."""
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ImprovedUNetConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise a TypeError naming them."""
        if not isinstance(d, dict):
            raise TypeError(f"config must be an ImprovedUNetConfig or a dict of its fields; got {type(d).__name__}.")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown ImprovedUNetConfig field(s) {unknown}; the fields are "
                            f"{sorted(cls.__dataclass_fields__)}.")
        return cls(**d)


#: The published configurations (facts file §5.2; C ``profiles/ddpm/{cifar10,imagenet64}/base.py``).
IMPROVED_PRESETS = {
    # Bao et al.'s own CIFAR10 models (LS and CS): ε only (out 3), attention at 16×16 and 8×8, dropout 0.3.
    "improved-cifar10": ImprovedUNetConfig(image_size=32, model_channels=128, out_channels=3, num_res_blocks=3,
                                           attention_resolutions=(2, 4), dropout=0.3, channel_mult=(1, 2, 2, 2),
                                           num_heads=4, use_scale_shift_norm=True),
    # improved-diffusion's unconditional ImageNet 64 L_hybrid model (imagenet64_uncond_100M_1500K.pt): out 6.
    "improved-imagenet64": ImprovedUNetConfig(image_size=64, model_channels=128, out_channels=6, num_res_blocks=3,
                                              attention_resolutions=(4, 8), dropout=0.0, channel_mult=(1, 2, 3, 4),
                                              num_heads=4, use_scale_shift_norm=True),
}


# ---------------------------------------------------------------------------------------------------- layers
def improved_timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """improved-diffusion's sinusoidal embedding (B,) → (B, dim) float32: [cos(t·f_k), sin(t·f_k)],
    f_k = max_period^(−k/half), half = dim // 2 (t may be fractional; an odd ``dim`` is zero-padded)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _norm(channels: int) -> nn.GroupNorm:
    return GroupNorm32(32, channels)  # eps 1e-5, evaluated in float32 (improved-diffusion's GroupNorm32)


class ResBlock(nn.Module):
    """Residual block with additive or scale-shift time conditioning (parameter names as improved-diffusion)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(_norm(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x, emb):
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(e, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions; qkv channels ordered per head as [q, k, v] (legacy order)."""

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        T, H = x.shape[-1], self.num_heads
        d = c // H
        qkv = self.qkv(self.norm(x)).reshape(b, H, 3 * d, T)
        q, k, v = (qkv[:, :, i * d:(i + 1) * d].transpose(2, 3) for i in range(3))  # (B, H, T, d) each
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ/√d) v
        h = h.transpose(2, 3).reshape(b, c, T)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class Downsample(nn.Module):
    """Halve the side: a stride-2 3×3 conv with padding 1 (``op``), or 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Double the side: nearest ×2, then a 3×3 conv when ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class EmbSequential(nn.Sequential):
    """A sequence of layers; residual blocks also receive the time embedding."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


# ---------------------------------------------------------------------------------------------------- network
class ImprovedUNet(nn.Module):
    """improved-diffusion's U-Net, ``net(x, t) -> out`` (x: (B, C, H, W); t: (B,) float timesteps as trained).

    ``out`` has ``out_channels`` channels: for learned-variance models the first ``in_channels`` are ε̂.

    Args:
        config: an :class:`ImprovedUNetConfig` or a dict of its fields (default: the paper's CIFAR10 configuration).
    """

    def __init__(self, config: ImprovedUNetConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = ImprovedUNetConfig()
        elif isinstance(config, dict):
            config = ImprovedUNetConfig.from_dict(config)
        elif not isinstance(config, ImprovedUNetConfig):
            raise TypeError(f"config must be an ImprovedUNetConfig or a dict of its fields; got "
                            f"{type(config).__name__}.")
        self.config = cfg = config
        mc, nrb, ss = cfg.model_channels, cfg.num_res_blocks, cfg.use_scale_shift_norm
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        self.input_blocks = nn.ModuleList([EmbSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        skip_chans = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(nrb):
                layers = [ResBlock(ch, emb_dim, cfg.dropout, mult * mc, ss)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg.num_heads))
                self.input_blocks.append(EmbSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(EmbSequential(Downsample(ch, cfg.conv_resample)))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = EmbSequential(ResBlock(ch, emb_dim, cfg.dropout, None, ss),
                                          AttentionBlock(ch, cfg.num_heads),
                                          ResBlock(ch, emb_dim, cfg.dropout, None, ss))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(nrb + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_dim, cfg.dropout, mc * mult, ss)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg.heads_upsample))
                if level and i == nrb:
                    layers.append(Upsample(ch, cfg.conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbSequential(*layers))

        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W); got {tuple(x.shape)}.")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"the sides {tuple(x.shape[2:])} must be divisible by 2^{len(cfg.channel_mult) - 1}.")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = improved_timestep_embedding(t, cfg.model_channels).to(self.time_embed[0].weight.dtype)
        emb = self.time_embed(emb)
        hs = []
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)

    def extra_repr(self) -> str:
        return f"config={self.config}"
