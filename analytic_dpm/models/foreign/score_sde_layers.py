"""Layers of score_sde's NCSN++ / DDPM++ network (Song et al. 2021, yang-song/score_sde_pytorch ``models/layerspp.py``,
``models/layers.py``, ``models/up_or_down_sampling.py``), written here from their published description.

Parameter names and their registration order are those of score_sde_pytorch, so that (i) its state dicts load with
``strict=True`` and (ii) the EMA's ``shadow_params`` (a list in ``model.parameters()`` order) line up with
``parameters()``:

* ``NIN``: ``W`` (in, out), ``b`` (out): a 1×1 "network in network" layer, y = xᵀW + b per pixel;
* ``AttnBlockpp``: ``GroupNorm_0``, ``NIN_0`` (q), ``NIN_1`` (k), ``NIN_2`` (v), ``NIN_3`` (output);
* ``ResnetBlockBigGANpp``: ``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``GroupNorm_1``, ``Conv_1``, ``Conv_2`` (1×1, when
  the width changes or the block resamples);
* ``ResnetBlockDDPMpp``: the same without resampling; the shortcut is ``NIN_0`` (or a 3×3 ``Conv_2``);
* ``Upsample`` / ``Downsample``: ``Conv_0`` (plain 3×3 conv) or ``Conv2d_0`` (FIR-fused conv: ``weight``, ``bias``);
* ``Combine``: ``Conv`` (1×1); ``GaussianFourierProjection``: ``W`` (fixed random frequencies, not trained).

GroupNorm has min(C/4, 32) groups and eps 1e-6. With ``skip_rescale`` residual sums are divided by √2.

FIR resampling (StyleGAN2's ``upfirdn2d``, used when ``fir=True``; kernel k = outer(f, f)/Σ(f)², f = (1, 3, 3, 1)):

* ``upsample_2d``: insert a zero after every pixel, pad, convolve with 4k: a smooth ×2 up-sampling;
* ``downsample_2d``: pad, convolve with k, keep every second pixel;
* ``conv_downsample_2d``: pad by 2, convolve with k, then a stride-2 3×3 convolution with the layer's weight.

With f = (1, 1) the first two are nearest-neighbour up-sampling and 2×2 average pooling (``tests/test_score_sde.py``
checks this and the (1, 3, 3, 1) case against ``scipy.signal``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ddpm_unet import GroupNorm32

_SQRT2 = math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------------- FIR ops
def fir_kernel_2d(fir_kernel, *, gain: float = 1.0, device=None, dtype=torch.float32) -> torch.Tensor:
    """The 2-D FIR kernel of score_sde's ``_setup_kernel``: outer(f, f) normalised to sum ``gain``."""
    f = np.asarray(fir_kernel, dtype=np.float64)
    if f.ndim != 1 or f.size < 1 or not np.all(np.isfinite(f)) or f.sum() == 0:
        raise ValueError(f"fir_kernel must be a non-empty 1-D sequence of finite numbers with a non-zero sum, such "
                         f"as (1, 3, 3, 1); got {fir_kernel!r}.")
    k = np.outer(f, f)
    k = k / k.sum() * gain
    return torch.as_tensor(k, dtype=dtype, device=device)


def upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """StyleGAN2's upfirdn2d (the native form score_sde falls back to on CPU), the same pad on both axes.

    Up-sample by inserting ``up − 1`` zeros after every pixel, pad ``pad[0]`` before and ``pad[1]`` after (negative:
    crop), convolve (true convolution: the kernel is flipped) each channel with ``k``, keep every ``down``-th pixel.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0):x.shape[2] - max(-p1, 0), max(-p0, 0):x.shape[3] - max(-p1, 0)]
    kh, kw = k.shape
    weight = torch.flip(k, [0, 1]).to(dtype=x.dtype, device=x.device).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down]


def upsample_2d(x: torch.Tensor, fir_kernel=(1, 3, 3, 1), factor: int = 2) -> torch.Tensor:
    """FIR up-sampling by ``factor`` (score_sde ``up_or_down_sampling.upsample_2d``)."""
    k = fir_kernel_2d(fir_kernel, gain=factor ** 2, device=x.device)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, fir_kernel=(1, 3, 3, 1), factor: int = 2) -> torch.Tensor:
    """FIR down-sampling by ``factor`` (score_sde ``up_or_down_sampling.downsample_2d``)."""
    k = fir_kernel_2d(fir_kernel, device=x.device)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def conv_downsample_2d(x: torch.Tensor, weight: torch.Tensor, fir_kernel=(1, 3, 3, 1), factor: int = 2):
    """FIR filtering then a stride-``factor`` convolution with ``weight`` (score_sde ``conv_downsample_2d``)."""
    k = fir_kernel_2d(fir_kernel, device=x.device)
    p = (k.shape[0] - factor) + (weight.shape[-1] - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=factor, padding=0)


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour up-sampling (each pixel repeated factor × factor times)."""
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Mean over factor × factor blocks."""
    return F.avg_pool2d(x, factor, stride=factor)


# ---------------------------------------------------------------------------------------------------- layers
def group_norm(channels: int) -> nn.GroupNorm:
    """score_sde's GroupNorm: min(C/4, 32) groups, eps 1e-6 (evaluated in float32)."""
    return GroupNorm32(min(channels // 4, 32), channels, eps=1e-6)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding)


def conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1)


class NIN(nn.Module):
    """score_sde's per-pixel linear layer: ``W`` of shape (in, out), ``b`` of shape (out,); y = xᵀW + b."""

    def __init__(self, in_dim: int, num_units: int):
        super().__init__()
        self.W = nn.Parameter(torch.randn(in_dim, num_units) / math.sqrt(in_dim))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x):
        return torch.einsum("bchw,co->bohw", x, self.W.to(x.dtype)) + self.b.to(x.dtype)[None, :, None, None]


class GaussianFourierProjection(nn.Module):
    """[sin(2π x W), cos(2π x W)] with fixed random frequencies ``W`` (not trained: not in the EMA)."""

    def __init__(self, embedding_size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x):
        proj = x.float()[:, None] * self.W.float()[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def positional_embedding(timesteps: torch.Tensor, dim: int, max_positions: float = 10000.0) -> torch.Tensor:
    """DDPM's sinusoidal embedding (score_sde ``layers.get_timestep_embedding``): [sin(t f_k), cos(t f_k)],
    f_k = max_positions^(−k/(dim/2 − 1)), k = 0..dim/2 − 1 (an odd ``dim`` is zero-padded)."""
    half = dim // 2
    if half < 2:
        raise ValueError(f"the positional embedding needs nf >= 4; got nf = {dim}.")
    scale = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device) * -scale)
    args = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class Combine(nn.Module):
    """Merge a pyramid branch into the trunk: 1×1 ``Conv`` of the branch, then sum or concatenation."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        self.Conv = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x, y):
        h = self.Conv(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all pixels, softmax(qᵀk/√C) v, residual (÷√2 with ``skip_rescale``)."""

    def __init__(self, channels: int, skip_rescale: bool = False):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels)
        self.skip_rescale = skip_rescale

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (m(h).reshape(b, 1, c, hh * ww).transpose(2, 3) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        h = F.scaled_dot_product_attention(q, k, v)  # scale 1/√C, as score_sde's einsum form
        h = self.NIN_3(h.transpose(2, 3).reshape(b, c, hh, ww))
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class Upsample(nn.Module):
    """×2 up-sampling: nearest (+ ``Conv_0``) or FIR (+ fused ``Conv2d_0``, not supported: see NCSNpp)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:  # score_sde_pytorch's upsample_conv_2d cannot run in PyTorch (negative-stride flip)
            raise NotImplementedError("FIR up-sampling fused with a convolution (resblock_type='ddpm' with fir=True "
                                      "and resamp_with_conv=True, or progressive='residual') is not supported.")
        if with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        self.fir, self.with_conv, self.fir_kernel = fir, with_conv, tuple(fir_kernel)

    def forward(self, x):
        if self.fir:
            return upsample_2d(x, self.fir_kernel)
        h = naive_upsample_2d(x)
        return self.Conv_0(h) if self.with_conv else h


class FIRConv2d(nn.Module):
    """score_sde's ``up_or_down_sampling.Conv2d`` with ``down=True``: ``weight`` (out, in, k, k), ``bias``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel) / math.sqrt(in_ch * kernel * kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.fir_kernel = tuple(fir_kernel)

    def forward(self, x):
        x = conv_downsample_2d(x, self.weight.to(x.dtype), self.fir_kernel)
        return x + self.bias.to(x.dtype)[None, :, None, None]


class Downsample(nn.Module):
    """×½ down-sampling: zero-pad right/bottom + stride-2 ``Conv_0`` (or 2×2 mean), or FIR (+ fused ``Conv2d_0``)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv:
            if fir:
                self.Conv2d_0 = FIRConv2d(in_ch, out_ch, 3, fir_kernel)
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.fir, self.with_conv, self.fir_kernel = fir, with_conv, tuple(fir_kernel)

    def forward(self, x):
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else downsample_2d(x, self.fir_kernel)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return naive_downsample_2d(x)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM's residual block (score_sde ``ResnetBlockDDPMpp``): GN → act → conv, + Dense(act(temb)), GN → act →
    dropout → conv; shortcut ``NIN_0`` (or 3×3 ``Conv_2``) when the width changes."""

    def __init__(self, act, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None,
                 conv_shortcut: bool = False, dropout: float = 0.1, skip_rescale: bool = False):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = nn.Linear(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.in_ch, self.out_ch = act, in_ch, out_ch
        self.conv_shortcut, self.skip_rescale = conv_shortcut, skip_rescale

    def forward(self, x, temb=None):
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block (score_sde ``ResnetBlockBigGANpp``), optionally re-sampling both branches
    (FIR or naive) after the first GN → act; 1×1 ``Conv_2`` shortcut when the width changes or it resamples."""

    def __init__(self, act, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None, up: bool = False,
                 down: bool = False, dropout: float = 0.1, fir: bool = False, fir_kernel=(1, 3, 3, 1),
                 skip_rescale: bool = True):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.up, self.down, self.fir, self.fir_kernel = up, down, fir, tuple(fir_kernel)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = nn.Linear(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.in_ch, self.out_ch, self.skip_rescale = act, in_ch, out_ch, skip_rescale

    def _resample(self, x):
        if self.up:
            return upsample_2d(x, self.fir_kernel) if self.fir else naive_upsample_2d(x)
        if self.down:
            return downsample_2d(x, self.fir_kernel) if self.fir else naive_downsample_2d(x)
        return x

    def forward(self, x, temb=None):
        h = self.act(self.GroupNorm_0(x))
        h, x = self._resample(h), self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h
