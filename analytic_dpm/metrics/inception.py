"""The InceptionV3 feature extractor of pytorch-fid (the "FID Inception"), written here, run only on weights you supply.

FID is the Fréchet distance between Gaussians fitted to the 2048-dimensional pool3 features of a specific InceptionV3:
the TensorFlow graph ``inception-2015-12-05`` used by the original TTUR code, ported to PyTorch by pytorch-fid as the
file ``pt_inception-2015-12-05-6726825d.pth``. Scores from any other network (torchvision's ImageNet Inception, random
weights, a LeNet) are not FID and are not comparable with published FIDs.

This module rebuilds that network with the same parameter names as the weights file (the layout of torchvision's
``Inception3`` with 1008 classes and no auxiliary head; 566 state-dict entries), including the three places where the
TensorFlow graph differs from torchvision's Inception:

* the average pools inside the A, C and first E blocks exclude the zero padding (``count_include_pad=False``);
* the pool branch of the last E block (``Mixed_7c``) is a 3×3 *max* pool, not an average pool.

Input convention (as pytorch-fid, which takes [0, 1] and rescales): images in [−1, 1], shape (B, C, H, W) with C = 3 or
C = 1 (grayscale is repeated to 3 channels), resized to 299 × 299 bilinearly (``align_corners=False``, no antialias).
Output: the (B, 2048) pool3 features (global average of ``Mixed_7c``).

Nothing is downloaded: :func:`load_fid_inception` reads a local file, checks its SHA-256, and loads it with
``torch.load(path, weights_only=True)``. The file is published in the pytorch-fid GitHub releases
(:data:`FID_WEIGHTS_URL`). The name's suffix ``6726825d`` is the start of its SHA-256 (the torch.hub naming
convention); the full digest :data:`FID_WEIGHTS_SHA256` is the one recorded for this file (95,628,359 bytes) by several
independent projects that verify it before use; it was not re-computed here, since the file cannot be fetched offline.
Only a file whose SHA-256 equals :data:`FID_WEIGHTS_SHA256` yields an extractor whose ``metric_name`` is ``"FID"``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Where the weights are published (pytorch-fid GitHub release "fid_weights"). Never fetched by this library.
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
#: The file name pytorch-fid uses.
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
#: First 8 hex digits of the file's SHA-256, as encoded in its name.
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
#: Full SHA-256 of the file (starts with the prefix in its name).
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
#: Environment variable consulted by :func:`load_fid_inception` when no path is given.
FID_WEIGHTS_ENV = "ANALYTIC_DPM_FID_WEIGHTS"

FEATURE_DIM = 2048
INPUT_SIZE = 299


def _where_to_get() -> str:
    return (
        f"FID needs the pytorch-fid InceptionV3 weights file {FID_WEIGHTS_FILENAME!r} "
        f"(SHA-256 {FID_WEIGHTS_SHA256}), published in the pytorch-fid GitHub releases: {FID_WEIGHTS_URL} . "
        "Nothing is downloaded at run time: fetch the file yourself and pass its path "
        f"(or set {FID_WEIGHTS_ENV}). Offline, report an honestly named stand-in such as FD-LeNet "
        "(analytic_dpm.metrics.lenet), never 'FID'."
    )


# -------------------------------------------------------------------------------------------------- building blocks
class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (ε = 0.001, as TensorFlow), ReLU. Parameters: ``conv``, ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    """3×3 stride-1 average pool that, like TensorFlow's, ignores the zero padding in the average."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35×35 block (Mixed_5b/c/d): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | TF avg pool→1×1; 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], 1)


class InceptionB(nn.Module):
    """Grid reduction 35→17 (Mixed_6a): 3×3/2 | 1×1→3×3→3×3/2 | max pool 3×3/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], 1)


class FIDInceptionC(nn.Module):
    """17×17 block (Mixed_6b–e) with factorised 7×7 convolutions and a TF avg pool branch; 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], 1)


class InceptionD(nn.Module):
    """Grid reduction 17→8 (Mixed_7a): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max pool 3×3/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], 1)


class FIDInceptionE(nn.Module):
    """8×8 block (Mixed_7b with ``pool="avg"``, TF average pool; Mixed_7c with ``pool="max"``); 2048 channels.

    Branches: 1×1 (320) | 1×1→{1×3, 3×1} (768) | 1×1→3×3→{1×3, 3×1} (768) | pool→1×1 (192). The max pool of the
    second block reproduces the TensorFlow graph (pytorch-fid's ``FIDInceptionE_2``).
    """

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max'; got {pool!r}.")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        if self.pool == "avg":
            p = _tf_avg_pool(x)
        else:
            p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        d = self.branch_pool(p)
        return torch.cat([a, b, c, d], 1)


# -------------------------------------------------------------------------------------------------- the network
class InceptionV3Features(nn.Module):
    """pytorch-fid's FID InceptionV3 up to pool3: images in [−1, 1] (B, 1 or 3, H, W) → features (B, 2048).

    A freshly constructed instance has random weights and ``metric_name = "FD-Inception-unverified"``; build the real
    extractor with :func:`load_fid_inception`, which sets ``metric_name = "FID"`` only for the verified weights file.
    The parameter names match ``pt_inception-2015-12-05-6726825d.pth`` (``fc`` is kept only so that the file loads
    strictly; it is not used for features).

    Attributes: ``metric_name`` (str), ``name`` = "InceptionV3", ``feature_dim`` = 2048, ``resize_input`` (bool,
    default True: bilinear resize to 299 × 299, as pytorch-fid), ``weights_sha256`` (str or None).
    """

    name = "InceptionV3"
    feature_dim = FEATURE_DIM

    def __init__(self, resize_input: bool = True):
        super().__init__()
        self.resize_input = bool(resize_input)
        self.metric_name = "FD-Inception-unverified"
        self.weights_sha256 = None
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)  # the TF graph's 1008-way classifier; unused for features
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool3 features (B, 2048) of images in [−1, 1], shape (B, 1 or 3, H, W)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch tensor of shape (B, C, H, W); got {type(x).__name__}.")
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"x must have shape (B, 1 or 3, H, W) with values in [-1, 1]; got shape {tuple(x.shape)}."
            )
        w = self.Conv2d_1a_3x3.conv.weight
        x = x.to(device=w.device, dtype=w.dtype)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize_input:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# -------------------------------------------------------------------------------------------------- loading
def sha256_of_file(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_fid_inception(path=None, *, expected_sha256: str | None = None, device="cpu",
                       resize_input: bool = True) -> InceptionV3Features:
    """The FID InceptionV3 with weights from the local file ``path``, verified by SHA-256 before loading.

    Args:
        path: the weights file ``pt_inception-2015-12-05-6726825d.pth`` (from :data:`FID_WEIGHTS_URL`); None reads
            the environment variable ``ANALYTIC_DPM_FID_WEIGHTS``. Never downloaded.
        expected_sha256: hex digest (full, or a prefix of at least 8 digits) the file must have. None (default)
            requires the published file: prefix ``6726825d`` and the full :data:`FID_WEIGHTS_SHA256`. Tests pass the
            digest of a synthetic file here; such an extractor is not labelled "FID".
        device: where to put the network.
        resize_input: bilinear resize to 299 × 299 first (pytorch-fid's default; keep it for FID).

    Returns an :class:`InceptionV3Features` in eval mode with ``metric_name = "FID"`` if and only if the file's
    SHA-256 is :data:`FID_WEIGHTS_SHA256`, else ``"FD-Inception-<first 8 digits>"``.

    Raises:
        FileNotFoundError: no file (the message says which file is needed and where it is published).
        ValueError: the file's SHA-256 differs from the expected one, or its tensors do not match the architecture.
    """
    if path is None:
        path = os.environ.get(FID_WEIGHTS_ENV)
        if not path:
            raise FileNotFoundError(
                f"no Inception weights path given and {FID_WEIGHTS_ENV} is not set. " + _where_to_get()
            )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file {str(path)!r} does not exist. " + _where_to_get())

    official = expected_sha256 is None
    if official:
        expected = FID_WEIGHTS_SHA256
    else:
        expected = str(expected_sha256).strip().lower()
        if len(expected) < 8 or len(expected) > 64 or any(ch not in "0123456789abcdef" for ch in expected):
            raise ValueError(
                f"expected_sha256 must be 8 to 64 hex digits (a SHA-256 digest or its prefix); got {expected_sha256!r}."
            )
    digest = sha256_of_file(path)
    if official and not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
        raise ValueError(
            f"Inception weights file {str(path)!r} has SHA-256 {digest}, which does not start with "
            f"{FID_WEIGHTS_SHA256_PREFIX} (the suffix of the name {FID_WEIGHTS_FILENAME!r}): it is not the FID "
            "Inception file, or it is corrupted. " + _where_to_get()
        )
    if not digest.startswith(expected):
        raise ValueError(
            f"Inception weights file {str(path)!r} has SHA-256 {digest}; expected {expected}. "
            "Refusing to load it. " + _where_to_get()
        )

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict (got {type(state).__name__}).")
    model = InceptionV3Features(resize_input=resize_input)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape_errors = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shape_errors:
        raise ValueError(
            f"{str(path)!r} does not match the FID InceptionV3 architecture: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"shape mismatches {shape_errors[:5]}."
        )
    model.load_state_dict(state, strict=True)
    model.weights_sha256 = digest
    model.metric_name = "FID" if digest == FID_WEIGHTS_SHA256 else f"FD-Inception-{digest[:8]}"
    return model.to(device).eval()
