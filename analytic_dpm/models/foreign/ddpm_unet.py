"""The DDPM U-Net of Ho et al. (2020) as converted to PyTorch (pesser/pytorch_diffusion, ermongroup/ddim).

This is the network behind the paper's CelebA 64×64 (DDIM repository) and LSUN Bedroom (Ho et al. via the
pytorch_diffusion conversion) results, and the original DDPM CIFAR10 model (facts file §5.2). It is written here
from the published description of the architecture; its parameter names are those of the PyTorch checkpoints, so
their state dicts load with ``strict=True``:

``temb.dense.{0,1}``, ``conv_in``, ``down.{level}.block.{i}.{norm1,conv1,temb_proj,norm2,conv2,nin_shortcut}``,
``down.{level}.attn.{i}.{norm,q,k,v,proj_out}``, ``down.{level}.downsample.conv``, ``mid.{block_1,attn_1,block_2}``,
``up.{level}.block.{i}``, ``up.{level}.attn.{i}``, ``up.{level}.upsample.conv``, ``norm_out``, ``conv_out``.

Architecture (all widths from :class:`DDPMUNetConfig`):

* time: sinusoidal embedding of t (width ``ch``; sin half then cos half, frequencies 10000^(−k/(ch/2 − 1))) →
  Linear(ch, 4ch) → swish → Linear(4ch, 4ch);
* residual block: GroupNorm(32, eps 1e-6) → swish → 3×3 conv; + Linear(swish(temb)) per channel; GroupNorm → swish →
  dropout → 3×3 conv; a 1×1 ``nin_shortcut`` when the width changes;
* attention (one head): GroupNorm → 1×1 convs q, k, v → softmax(qᵀk/√C) → 1×1 ``proj_out``, residual;
* down path: per level ``num_res_blocks`` residual blocks (each followed by attention when the side length is in
  ``attn_resolutions``), then a stride-2 3×3 conv after zero padding right and bottom by one pixel (all levels but
  the last);
* middle: block, attention, block; up path: ``num_res_blocks + 1`` blocks per level on the concatenated skips,
  nearest ×2 up-sampling + 3×3 conv between levels; output GroupNorm → swish → 3×3 conv to ``out_ch``.

Timestep convention (facts file §5.1, official code C ``celeba_lsun_codes/interface/runner.py``): these networks were
trained with t = n − 1 ∈ 0..N−1 for the paper's n ∈ 1..N, i.e. ``TorchEpsModel(net, "n-1")``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..._validate import as_float, as_int


# ---------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DDPMUNetConfig:
    """Sizes of a :class:`DDPMUNet` (field names as in pytorch_diffusion's model config).

    Attributes:
        resolution: side length H = W of the square input (32 CIFAR10, 64 CelebA, 256 LSUN).
        in_channels: image channels.
        out_ch: output channels (3: ε only).
        ch: width of the first level (a multiple of 32: GroupNorm has 32 groups).
        ch_mult: width multipliers, one per resolution level.
        num_res_blocks: residual blocks per level on the down path (one more on the up path).
        attn_resolutions: side lengths at which attention follows each residual block.
        dropout: dropout probability (training only; inference ignores it).
        resamp_with_conv: learned 3×3 convs for down/up-sampling (True in every published model).
    """

    resolution: int = 32
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True

    def __post_init__(self):
        fix = "See DDPM_PRESETS for the published configurations."
        for name in ("resolution", "in_channels", "out_ch", "ch", "num_res_blocks"):
            object.__setattr__(self, name, as_int(name, getattr(self, name), minimum=1, fix=fix))
        mult = tuple(self.ch_mult) if isinstance(self.ch_mult, (list, tuple)) else None
        if not mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mult):
            raise ValueError(f"ch_mult must be a non-empty tuple of positive ints; got {self.ch_mult!r}. {fix}")
        object.__setattr__(self, "ch_mult", mult)
        attn = self.attn_resolutions
        if not isinstance(attn, (list, tuple)):
            raise TypeError(f"attn_resolutions must be a tuple of side lengths such as (16,); got {attn!r}.")
        object.__setattr__(self, "attn_resolutions", tuple(as_int("attn_resolutions", a, minimum=1) for a in attn))
        dropout = as_float("dropout", self.dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
        object.__setattr__(self, "dropout", dropout)
        object.__setattr__(self, "resamp_with_conv", bool(self.resamp_with_conv))
        for m in mult:
            if (self.ch * m) % 32:
                raise ValueError(f"every width ch·ch_mult must be a multiple of 32 (GroupNorm(32)); got ch = {self.ch},"
                                 f" ch_mult = {mult}. Use ch = 32, 64, 128, ...")
        factor = 2 ** (len(mult) - 1)
        if self.resolution % factor:
            raise ValueError(f"resolution = {self.resolution} must be divisible by 2^(len(ch_mult) − 1) = {factor}: "
                             f"there are {len(mult) - 1} down-samplings. {fix}")

    def to_dict(self) -> dict:
        """JSON-compatible dict of the fields (tuples as lists)."""
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DDPMUNetConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise a TypeError naming them."""
        if not isinstance(d, dict):
            raise TypeError(f"config must be a DDPMUNetConfig or a dict of its fields; got {type(d).__name__}.")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown DDPMUNetConfig field(s) {unknown}; the fields are "
                            f"{sorted(cls.__dataclass_fields__)}.")
        return cls(**d)


#: The published configurations (pytorch_diffusion's model configs; facts file §5.2).
DDPM_PRESETS = {
    # Ho et al.'s CIFAR10 model (the pytorch_diffusion conversion "ema_cifar10", model-790000.ckpt).
    "ddpm-cifar10": DDPMUNetConfig(resolution=32, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                                   attn_resolutions=(16,), dropout=0.1),
    # The DDIM repository's CelebA 64×64 model (the paper's CelebA results; C's workspace/ckpts/ema_celeba.pth).
    "ddim-celeba64": DDPMUNetConfig(resolution=64, ch=128, ch_mult=(1, 2, 2, 2, 4), num_res_blocks=2,
                                    attn_resolutions=(16,), dropout=0.1),
    # Ho et al.'s LSUN Bedroom 256×256 model (pytorch_diffusion's "ema_lsun_bedroom", model-2388000.ckpt).
    "ddpm-lsun-bedroom": DDPMUNetConfig(resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                                        attn_resolutions=(16,), dropout=0.0),
}


# ---------------------------------------------------------------------------------------------------- layers
def ddpm_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """DDPM's sinusoidal embedding (B,) → (B, dim) float32: [sin(t·f_k), cos(t·f_k)], f_k = 10000^(−k/(dim/2 − 1)).

    (Ho et al.'s tensor2tensor form; an odd ``dim`` is zero-padded. It differs from improved-diffusion's, which puts
    cos first and uses the exponent k/(dim/2).)
    """
    half = dim // 2
    if half < 2:
        raise ValueError(f"the embedding width must be at least 4; got dim = {dim}.")
    scale = math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -scale)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 whatever the input dtype (stable under float16/bfloat16 inference)."""

    def forward(self, x):
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def _norm(channels: int) -> nn.GroupNorm:
    return GroupNorm32(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """Pre-activation residual block with an additive time embedding (parameter names as pytorch_diffusion)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, dropout: float):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1×1-conv projections q, k, v, proj_out and a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        # (B, 1, HW, C) each: attention over the HW positions with scale 1/√C (the default of SDPA).
        q, k, v = (f(h).reshape(b, 1, c, hh * ww).transpose(2, 3) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve the side: zero-pad right/bottom by one then a stride-2 3×3 conv (or 2×2 average pooling)."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """Double the side: nearest-neighbour ×2, then a 3×3 conv when ``with_conv``."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


# ---------------------------------------------------------------------------------------------------- network
class DDPMUNet(nn.Module):
    """Ho et al.'s DDPM U-Net, ``net(x, t) -> ε̂`` (x: (B, C, H, W); t: (B,) integer or float timesteps t = n − 1).

    Args:
        config: a :class:`DDPMUNetConfig` or a dict of its fields (default: the CIFAR10 configuration).
    """

    def __init__(self, config: DDPMUNetConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = DDPMUNetConfig()
        elif isinstance(config, dict):
            config = DDPMUNetConfig.from_dict(config)
        elif not isinstance(config, DDPMUNetConfig):
            raise TypeError(f"config must be a DDPMUNetConfig or a dict of its fields; got {type(config).__name__}.")
        self.config = cfg = config
        ch, mult, nrb = cfg.ch, cfg.ch_mult, cfg.num_res_blocks
        temb_ch = 4 * ch
        levels = len(mult)

        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb_ch), nn.Linear(temb_ch, temb_ch)])
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        res = cfg.resolution
        in_mult = (1,) + mult
        self.down = nn.ModuleList()
        for lvl in range(levels):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            c_in, c_out = ch * in_mult[lvl], ch * mult[lvl]
            for _ in range(nrb):
                level.block.append(ResnetBlock(c_in, c_out, temb_ch, cfg.dropout))
                c_in = c_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(c_in))
            if lvl != levels - 1:
                level.downsample = Downsample(c_in, cfg.resamp_with_conv)
                res //= 2
            self.down.append(level)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(c_in, c_in, temb_ch, cfg.dropout)
        self.mid.attn_1 = AttnBlock(c_in)
        self.mid.block_2 = ResnetBlock(c_in, c_in, temb_ch, cfg.dropout)

        ups = []
        for lvl in reversed(range(levels)):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            c_out = ch * mult[lvl]
            for i in range(nrb + 1):
                skip = ch * (in_mult[lvl] if i == nrb else mult[lvl])
                level.block.append(ResnetBlock(c_in + skip, c_out, temb_ch, cfg.dropout))
                c_in = c_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(c_in))
            if lvl != 0:
                level.upsample = Upsample(c_in, cfg.resamp_with_conv)
                res *= 2
            ups.append(level)
        self.up = nn.ModuleList(reversed(ups))  # index = level, as in the checkpoints

        self.norm_out = _norm(c_in)
        self.conv_out = nn.Conv2d(c_in, cfg.out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.shape[2] != x.shape[3]:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, H); got {tuple(x.shape)}.")
        if x.shape[2] % (2 ** (len(cfg.ch_mult) - 1)):
            raise ValueError(f"the side {x.shape[2]} must be divisible by 2^{len(cfg.ch_mult) - 1}.")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        dense = self.temb.dense
        temb = ddpm_timestep_embedding(t, cfg.ch).to(dense[0].weight.dtype)
        temb = dense[1](F.silu(dense[0](temb)))

        hs = [self.conv_in(x)]
        for lvl, level in enumerate(self.down):
            for i, block in enumerate(level.block):
                h = block(hs[-1], temb)
                if len(level.attn):
                    h = level.attn[i](h)
                hs.append(h)
            if hasattr(level, "downsample"):
                hs.append(level.downsample(hs[-1]))

        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)

        for lvl in reversed(range(len(self.up))):
            level = self.up[lvl]
            for i, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(level.attn):
                    h = level.attn[i](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def extra_repr(self) -> str:
        return f"config={self.config}"
