"""A compact U-Net noise predictor for small images (after Ho et al. 2020 / the DDIM and pytorch_diffusion U-Net).

Structure (all sizes from :class:`UNetConfig`):

* time: sinusoidal embedding of t (dimension ``base_channels``) → Linear → SiLU → Linear (dimension 4·base), fed to
  every residual block as a per-channel scale and shift after its second GroupNorm;
* input 3×3 conv to ``base_channels``;
* down path: per resolution level ℓ (channels ``base_channels·channel_mult[ℓ]``) ``num_res_blocks`` residual blocks
  (GroupNorm → SiLU → conv; GroupNorm with time scale-shift → SiLU → dropout → conv; a 1×1 skip when the width
  changes), each followed by self-attention when the current side length is in
  ``attention_resolutions``; a stride-2 3×3 conv between levels;
* middle: residual block, attention, residual block;
* up path: mirror image with ``num_res_blocks + 1`` blocks per level, each taking the concatenated skip, nearest
  up-sampling ×2 + 3×3 conv between levels;
* output: GroupNorm → SiLU → 3×3 conv to ``channels`` (zero-initialised, so an untrained net predicts ε̂ = 0).

Image sizes: each of the ``len(channel_mult) − 1`` down-samplings halves the side, so ``image_size`` must be divisible
by 2^(len(channel_mult) − 1). 8×8 digits: channel_mult (1, 2) (8 → 4) or (1, 2, 2) (8 → 4 → 2). 28×28
Fashion-MNIST: at most three levels, 28 → 14 → 7 (channel_mult of length ≤ 3); a fourth level would need 7 → 3.5,
which the config rejects with a message rather than silently padding.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import as_float, as_int


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of a :class:`UNet` (JSON-serialisable with :meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        image_size: side length H = W of the (square) input.
        channels: image channels C (input and output).
        base_channels: width of the first level; level ℓ has ``base_channels·channel_mult[ℓ]`` channels.
        channel_mult: width multipliers, one per resolution level (its length − 1 down-samplings).
        num_res_blocks: residual blocks per level on the down path (one more on the up path).
        attention_resolutions: side lengths at which self-attention follows each residual block (the middle block
            always has attention).
        dropout: dropout probability inside the residual blocks (training only).
        num_heads: attention heads (must divide every width that has attention).
    """

    image_size: int = 8
    channels: int = 1
    base_channels: int = 16
    channel_mult: tuple = (1, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple = (4,)
    dropout: float = 0.0
    num_heads: int = 1

    def __post_init__(self):
        for name in ("image_size", "channels", "base_channels", "num_heads"):
            object.__setattr__(self, name, as_int(name, getattr(self, name), minimum=1))
        object.__setattr__(self, "num_res_blocks", as_int("num_res_blocks", self.num_res_blocks, minimum=1))
        mult = tuple(self.channel_mult) if not isinstance(self.channel_mult, int) else (self.channel_mult,)
        if not mult:
            raise ValueError("channel_mult must hold at least one multiplier, e.g. (1, 2).")
        mult = tuple(as_int("channel_mult", m, minimum=1) for m in mult)
        object.__setattr__(self, "channel_mult", mult)
        attn = tuple(sorted({as_int("attention_resolutions", r, minimum=1) for r in self.attention_resolutions}))
        object.__setattr__(self, "attention_resolutions", attn)
        p = as_float("dropout", self.dropout)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {p}.")
        object.__setattr__(self, "dropout", p)
        factor = 2 ** (len(mult) - 1)
        if self.image_size % factor:
            deepest = max(k for k in range(len(mult)) if self.image_size % 2 ** k == 0) + 1
            raise ValueError(
                f"image_size = {self.image_size} cannot be halved {len(mult) - 1} times (channel_mult {mult} has "
                f"{len(mult)} levels); image_size must be divisible by {factor}. Use at most {deepest} levels "
                f"(e.g. 28 → 14 → 7 with channel_mult of length 3)."
            )
        sizes = self.resolutions
        bad = [r for r in attn if r not in sizes]
        if bad:
            raise ValueError(f"attention_resolutions {bad} are not side lengths of this U-Net; its levels have sides "
                             f"{sizes}.")
        for w in {self.base_channels * m for m in mult}:
            if w % self.num_heads:
                raise ValueError(f"num_heads = {self.num_heads} must divide every level width; {w} is not divisible.")

    @property
    def resolutions(self) -> tuple:
        """Side length of each level, e.g. (28, 14, 7)."""
        return tuple(self.image_size // 2 ** k for k in range(len(self.channel_mult)))

    def to_dict(self) -> dict:
        """A JSON-compatible dict (tuples become lists)."""
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown UNetConfig fields {sorted(extra)}; known: {sorted(known)}.")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    @classmethod
    def digits(cls) -> "UNetConfig":
        """The default tiny model for 8×8 digits (the dataclass defaults): widths 16/32 at 8×8/4×4, one residual
        block per level, attention at 4×4, no dropout; 190 369 parameters. At a fixed CPU budget it beat a twice
        wider net (ε-MSE 0.085 after 700 steps vs 0.091 after 250 steps of the 755k-parameter width-32 model)."""
        return cls(image_size=8, channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                   attention_resolutions=(4,), dropout=0.0)

    @classmethod
    def fashion_mnist(cls) -> "UNetConfig":
        """A model for 28×28 Fashion-MNIST: 28 → 14 → 7 with widths 32/64/64, two residual blocks per level,
        attention at 7×7, dropout 0.1 (the paper's CIFAR10 model uses 0.1)."""
        return cls(image_size=28, channels=1, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
                   attention_resolutions=(7,), dropout=0.1)


def _groups(ch: int) -> int:
    """GroupNorm groups: the largest divisor of ch that is ≤ 32 and leaves at least 4 channels per group (DDPM uses
    32 groups of ≥ 4 channels); 1 for fewer than 8 channels."""
    return max(g for g in range(1, min(32, ch // 4) + 1) if ch % g == 0) if ch >= 8 else 1


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t·f_k), sin(t·f_k)], f_k = max_period^(−k/(dim/2)), k = 0..dim/2−1 (Vaswani et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))); h = GN(h)·(1 + a) + b with (a, b) = W·SiLU(temb) (scale-shift time conditioning);
    out = skip(x) + conv(dropout(SiLU(h))).

    The time embedding acts after the second normalisation, as improved-diffusion's ``use_scale_shift_norm``: an
    additive embedding before a GroupNorm with one channel per group would be normalised away."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.temb(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over the H·W positions, residual, with a zero-initialised output projection."""

    def __init__(self, ch: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W).unbind(1)
        # (B, heads, HW, c) layout for scaled_dot_product_attention
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """A U-Net ε-predictor ``net(x, t) -> eps_hat`` for x of shape (B, C, H, W) and t of shape (B,) (or a scalar).

    Build it from a :class:`UNetConfig`; :attr:`num_parameters` reports its size. Wrap it with
    ``TorchEpsModel(net, "n")`` to evaluate it with the library (training feeds t = n ∈ 1..N).
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        if config is None:
            config = UNetConfig.digits()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig; got {type(config).__name__}.")
        self.config = config
        c = config
        ch0 = c.base_channels
        temb_dim = 4 * ch0
        self.time_mlp = nn.Sequential(nn.Linear(ch0, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(c.channels, ch0, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [ch0]
        ch = ch0
        res = c.image_size
        for lvl, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                out = ch0 * mult
                self.down.append(nn.ModuleList([ResBlock(ch, out, temb_dim, c.dropout),
                                                AttnBlock(out, c.num_heads) if res in c.attention_resolutions
                                                else nn.Identity()]))
                ch = out
                skips.append(ch)
            if lvl != len(c.channel_mult) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                res //= 2

        self.mid1 = ResBlock(ch, ch, temb_dim, c.dropout)
        self.mid_attn = AttnBlock(ch, c.num_heads)
        self.mid2 = ResBlock(ch, ch, temb_dim, c.dropout)

        self.up = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(c.channel_mult))):
            for _ in range(c.num_res_blocks + 1):
                out = ch0 * mult
                self.up.append(nn.ModuleList([ResBlock(ch + skips.pop(), out, temb_dim, c.dropout),
                                              AttnBlock(out, c.num_heads) if res in c.attention_resolutions
                                              else nn.Identity()]))
                ch = out
            if lvl != 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))
                res *= 2
        assert not skips, "internal: unbalanced skip connections"
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = _zero(nn.Conv2d(ch, c.channels, 3, padding=1))

    @property
    def num_parameters(self) -> int:
        """The number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.ndim != 4 or tuple(x.shape[1:]) != (c.channels, c.image_size, c.image_size):
            raise ValueError(f"x must have shape (B, {c.channels}, {c.image_size}, {c.image_size}) for this UNet; "
                             f"got {tuple(x.shape)}.")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},) or be a scalar; got {tuple(t.shape)}.")
        temb = self.time_mlp(timestep_embedding(t, c.base_channels).to(x.dtype))
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, temb))
            else:
                h = layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](torch.cat([h, hs.pop()], dim=1), temb))
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(net: nn.Module) -> int:
    """The number of trainable scalars of any torch module."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
