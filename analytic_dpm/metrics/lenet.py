"""An offline stand-in for the Inception network: a small LeNet-style classifier trained on the same data.

Without the user-supplied Inception weights there is no FID. What can be computed offline is the Fréchet distance in
the penultimate-layer features of a small classifier trained on the data set itself (digits 8×8, Fashion-MNIST 28×28):
a useful relative measure between samplers on the same data, reported under its own name, "FD-LeNet", and never as
FID. Its numbers are not comparable with any published FID.

Architecture (:class:`LeNetFeatures`), for C × H × W inputs in [−1, 1] with H, W >= 4:

    conv 3×3 (C → w) → ReLU → max pool 2 → conv 3×3 (w → 2w) → ReLU → max pool 2
    → flatten (2w · ⌊H/4⌋ · ⌊W/4⌋) → linear → ReLU  =: features (feature_dim)  → linear → logits (num_classes)

The features are the ReLU output of the penultimate layer (non-negative; dead units make the covariance singular,
which :func:`analytic_dpm.metrics.frechet_distance` handles).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .._validate import as_float, as_int

_FORMAT = "analytic_dpm.metrics.LeNetFeatures/1"


class LeNetFeatures(nn.Module):
    """LeNet-style classifier whose ``forward`` returns penultimate-layer features (B, feature_dim).

    Args:
        in_channels: C of the images (1 for digits and Fashion-MNIST).
        image_size: H (= W) or (H, W); at least 4.
        num_classes: number of labels.
        width: channels of the first convolution (the second has 2·width).
        feature_dim: length of the feature vector (the penultimate layer).

    ``forward(x)`` gives features, ``logits(x)`` the class scores. ``metric_name`` is "FD-LeNet".
    """

    name = "LeNet"
    metric_name = "FD-LeNet"

    def __init__(self, in_channels: int = 1, image_size=8, num_classes: int = 10, width: int = 32,
                 feature_dim: int = 128):
        super().__init__()
        self.in_channels = as_int("in_channels", in_channels, minimum=1)
        if isinstance(image_size, (tuple, list)):
            if len(image_size) != 2:
                raise ValueError(f"image_size must be an int or a pair (H, W); got {image_size!r}.")
            h, w = (as_int("image_size", s, minimum=4, fix="LeNetFeatures pools twice by 2.") for s in image_size)
        else:
            h = w = as_int("image_size", image_size, minimum=4, fix="LeNetFeatures pools twice by 2.")
        self.image_size = (h, w)
        self.num_classes = as_int("num_classes", num_classes, minimum=2)
        self.width = as_int("width", width, minimum=1)
        self.feature_dim = as_int("feature_dim", feature_dim, minimum=1)
        self.conv1 = nn.Conv2d(self.in_channels, self.width, 3, padding=1)
        self.conv2 = nn.Conv2d(self.width, 2 * self.width, 3, padding=1)
        self.fc1 = nn.Linear(2 * self.width * (h // 4) * (w // 4), self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, self.num_classes)
        self.test_accuracy = None  # set by train_feature_classifier and load
        self.metadata = {}

    @property
    def config(self) -> dict:
        return {"in_channels": self.in_channels, "image_size": list(self.image_size),
                "num_classes": self.num_classes, "width": self.width, "feature_dim": self.feature_dim}

    def _check(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch tensor of shape (B, C, H, W); got {type(x).__name__}.")
        expected = (self.in_channels, *self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}) for this LeNetFeatures "
                f"(in_channels={self.in_channels}, image_size={self.image_size}); got shape {tuple(x.shape)}. "
                "Train a classifier for this image size with train_feature_classifier."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ReLU(fc1(·)), shape (B, feature_dim), of images in [−1, 1]."""
        self._check(x)
        w = self.conv1.weight
        x = x.to(device=w.device, dtype=w.dtype)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(torch.flatten(x, 1)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, num_classes)."""
        return self.fc2(self.forward(x))

    # ------------------------------------------------------------------------------------------ I/O
    def save(self, path, test_accuracy: float | None = None, metadata: dict | None = None) -> Path:
        """Write config, weights and (optionally) the test accuracy; readable with ``torch.load(weights_only=True)``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "format": _FORMAT,
            "config": self.config,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "test_accuracy": None if test_accuracy is None else float(test_accuracy),
            "metadata": dict(metadata or {}),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path, device="cpu") -> "LeNetFeatures":
        """Read a classifier written by :meth:`save` (``weights_only=True``); ``model.test_accuracy`` is restored."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no LeNet feature classifier at {str(path)!r}; train one with train_feature_classifier(...) "
                "and save it with model.save(path)."
            )
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
            raise ValueError(f"{str(path)!r} is not a LeNetFeatures file (expected format {_FORMAT!r}).")
        cfg = blob["config"]
        model = cls(in_channels=cfg["in_channels"], image_size=tuple(cfg["image_size"]),
                    num_classes=cfg["num_classes"], width=cfg["width"], feature_dim=cfg["feature_dim"])
        model.load_state_dict(blob["state_dict"], strict=True)
        model.test_accuracy = blob.get("test_accuracy")
        model.metadata = blob.get("metadata", {})
        return model.to(device).eval()


class TrainedClassifier(NamedTuple):
    """Result of :func:`train_feature_classifier`; unpacks as ``model, test_accuracy = ...``."""

    model: LeNetFeatures
    test_accuracy: float


def _as_image_tensor(name, images) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(
                f"{name} must be floating point images in [-1, 1]; got dtype {images.dtype}. "
                "Convert 8-bit images with x = u / 127.5 - 1."
            )
        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor (N, C, H, W); got {type(images).__name__}.")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point images in [-1, 1]; got dtype {images.dtype}.")
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W); got shape {tuple(images.shape)}.")
    return images.float()


def _as_labels(name, labels, n) -> torch.Tensor:
    arr = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array of shape ({n},); got dtype {arr.dtype}, shape {arr.shape}.")
    if arr.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices; got minimum {arr.min()}.")
    return torch.from_numpy(arr.astype(np.int64))


@torch.no_grad()
def classifier_accuracy(model: LeNetFeatures, images, labels, batch_size: int = 1024) -> float:
    """Fraction of ``images`` whose arg-max logit equals the label."""
    x = _as_image_tensor("images", images)
    y = _as_labels("labels", labels, x.shape[0])
    was_training = model.training
    model.eval()
    device = model.conv1.weight.device
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        pred = model.logits(x[i : i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(x.shape[0], 1)


def train_feature_classifier(images, labels, steps: int = 500, seed: int = 0, *, test_images=None, test_labels=None,
                             test_fraction: float = 0.2, batch_size: int = 64, lr: float = 5e-3,
                             weight_decay: float = 1e-4, width: int = 32, feature_dim: int = 128,
                             num_classes: int | None = None, device="cpu", progress=None) -> TrainedClassifier:
    """Train a :class:`LeNetFeatures` by Adam on cross-entropy; returns ``(model, test_accuracy)``.

    Args:
        images: float (N, C, H, W) in [−1, 1], numpy or torch.
        labels: int (N,) class indices.
        steps: optimiser steps (mini-batches of ``batch_size``, drawn by epochs of seeded permutations).
        seed: fixes the initial weights, the train/test split and the batch order.
        test_images, test_labels: a held-out set; if absent, a seeded ``test_fraction`` of ``images`` is held out.
        lr, weight_decay, width, feature_dim: optimiser and network sizes.
        num_classes: default max(label) + 1.
        device: where to train. progress: tqdm bar (None: only on a terminal).

    The model is returned in eval mode on ``device``, with ``model.test_accuracy`` set.
    """
    steps = as_int("steps", steps, minimum=1)
    seed = as_int("seed", seed, minimum=0)
    batch_size = as_int("batch_size", batch_size, minimum=1)
    lr = as_float("lr", lr)
    x = _as_image_tensor("images", images)
    y = _as_labels("labels", labels, x.shape[0])
    gen = torch.Generator().manual_seed(seed)
    if test_images is None and test_labels is None:
        test_fraction = as_float("test_fraction", test_fraction)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(
                f"test_fraction must lie in (0, 1) when no test set is given; got {test_fraction}. "
                "Pass test_images and test_labels, or a fraction such as 0.2."
            )
        perm = torch.randperm(x.shape[0], generator=gen)
        n_test = max(1, int(round(test_fraction * x.shape[0])))
        x_test, y_test = x[perm[:n_test]], y[perm[:n_test]]
        x, y = x[perm[n_test:]], y[perm[n_test:]]
    elif test_images is None or test_labels is None:
        raise ValueError("pass both test_images and test_labels, or neither (then test_fraction is held out).")
    else:
        x_test = _as_image_tensor("test_images", test_images)
        y_test = _as_labels("test_labels", test_labels, x_test.shape[0])
        if tuple(x_test.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(f"test_images must have image shape {tuple(x.shape[1:])}; got {tuple(x_test.shape[1:])}.")
    if num_classes is None:
        num_classes = int(max(int(y.max()), int(y_test.max()))) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LeNetFeatures(in_channels=x.shape[1], image_size=tuple(x.shape[2:]), num_classes=num_classes,
                              width=width, feature_dim=feature_dim)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    x_dev, y_dev = x.to(device), y.to(device)
    n = x.shape[0]
    batch_size = min(batch_size, n)
    per_epoch = max(1, n // batch_size)
    order = None
    model.train()
    for step in tqdm(range(steps), disable=None if progress is None else not progress, desc="LeNet", unit="step"):
        k = step % per_epoch
        if k == 0:
            order = torch.randperm(n, generator=gen).to(device)
        idx = order[k * batch_size : (k + 1) * batch_size]
        # cosine learning-rate decay to 0 over the run
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        loss = F.cross_entropy(model.logits(x_dev[idx]), y_dev[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    acc = classifier_accuracy(model, x_test, y_test)
    model.test_accuracy = acc
    return TrainedClassifier(model, acc)
