"""Feature extractors, streaming feature statistics of image sets, and honestly named scores (FID only when earned).

A feature extractor is any callable ``extractor(images) -> features`` taking a float tensor (B, C, H, W) in [−1, 1]
and returning (B, D), with two attributes (the :class:`FeatureExtractor` protocol):

* ``metric_name``: the name its Fréchet distance is reported under: ``"FID"`` only for the pytorch-fid Inception
  loaded from the verified weights file (:func:`analytic_dpm.metrics.load_fid_inception`), ``"FD-LeNet"`` for the
  offline stand-in (:class:`analytic_dpm.metrics.LeNetFeatures`), ``"FD-<name>"`` for anything else;
* ``feature_dim``: D.

:func:`fd_score` refuses to report "FID" for any extractor but the verified Inception, so a stand-in can never be
reported as FID by accident.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from tqdm import tqdm

from .._validate import as_int
from .frechet import frechet_distance, kid
from .statistics import FeatureStatistics

#: |x| above this in an image batch means the images are not in [−1, 1] (e.g. raw 0..255 values).
_RANGE_LIMIT = 2.0


@runtime_checkable
class FeatureExtractor(Protocol):
    """``extractor(images (B, C, H, W) float tensor in [−1, 1]) -> features (B, D)``, with a name for its metric."""

    metric_name: str
    feature_dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class MetricResult:
    """One score: ``name`` (e.g. "FID", "FD-LeNet", "KID", "KD-LeNet"), ``value`` and its provenance.

    ``std`` is the spread over subsets for kernel distances (None for Fréchet distances); ``n_reference`` and
    ``n_samples`` count the feature vectors on each side; ``extractor`` names the network.
    """

    name: str
    value: float
    n_reference: int | None
    n_samples: int | None
    feature_dim: int
    extractor: str
    std: float | None = None

    def __float__(self):
        return self.value

    def __str__(self):
        spread = "" if self.std is None else f" ± {self.std:.4g}"
        n_s = "?" if self.n_samples is None else self.n_samples
        n_r = "?" if self.n_reference is None else self.n_reference
        return f"{self.name} = {self.value:.4f}{spread} ({n_s} samples vs {n_r} reference, {self.extractor} features)"

    def as_dict(self) -> dict:
        return asdict(self)


def _check_extractor(extractor):
    if not callable(extractor) or not isinstance(getattr(extractor, "metric_name", None), str):
        raise TypeError(
            "extractor must be a callable images -> features with a str attribute metric_name (the FeatureExtractor "
            f"protocol), e.g. load_fid_inception(path) or LeNetFeatures; got {type(extractor).__name__}."
        )


def _extractor_device(extractor, device):
    if device is not None:
        return torch.device(device)
    if isinstance(extractor, torch.nn.Module):
        for p in extractor.parameters():
            return p.device
    return torch.device("cpu")


def _image_batches(images_or_iterable, batch_size: int):
    """Yield torch float tensors (b, C, H, W) from an array/tensor (sliced) or an iterable of batches."""
    data = images_or_iterable
    if isinstance(data, (np.ndarray, torch.Tensor)):
        if data.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W); got shape {tuple(data.shape)}.")
        for i in range(0, data.shape[0], batch_size):
            yield data[i : i + batch_size]
        return
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            "images must be an array/tensor (N, C, H, W) or an iterable of such batches (a DataLoader yielding "
            f"images or (images, labels)); got {type(data).__name__}."
        ) from None
    for item in iterator:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 3:
            raise ValueError(
                f"each batch must have shape (b, C, H, W); got shape {tuple(item.shape)}. "
                "Pass the whole array instead of iterating over it, or add the batch axis."
            )
        yield item


def _to_input(batch, device, index: int) -> torch.Tensor:
    if isinstance(batch, np.ndarray):
        if not np.issubdtype(batch.dtype, np.floating):
            raise TypeError(
                f"images must be floating point in [-1, 1]; got dtype {batch.dtype} (batch {index}). "
                "Convert 8-bit images with x = u / 127.5 - 1."
            )
        batch = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            f"each batch must be a numpy array or torch tensor; got {type(batch).__name__} (batch {index})."
        )
    if not batch.is_floating_point():
        raise TypeError(
            f"images must be floating point in [-1, 1]; got dtype {batch.dtype} (batch {index}). "
            "Convert 8-bit images with x = u / 127.5 - 1."
        )
    if batch.ndim != 4:
        raise ValueError(f"each batch must have shape (b, C, H, W); got shape {tuple(batch.shape)} (batch {index}).")
    batch = batch.to(device=device, dtype=torch.float32)
    if batch.numel() and float(batch.abs().max()) > _RANGE_LIMIT:
        raise ValueError(
            f"images must be scaled to [-1, 1]; batch {index} has max |x| = {float(batch.abs().max()):.4g}. "
            "Convert 8-bit images with x = u / 127.5 - 1."
        )
    return batch


def _run(extractor, images_or_iterable, batch_size, device, progress, sink, desc):
    _check_extractor(extractor)
    batch_size = as_int("batch_size", batch_size, minimum=1)
    device = _extractor_device(extractor, device)
    is_module = isinstance(extractor, torch.nn.Module)
    was_training = extractor.training if is_module else False
    if is_module:
        extractor.eval()
    total = None
    if isinstance(images_or_iterable, (np.ndarray, torch.Tensor)):
        total = -(-images_or_iterable.shape[0] // batch_size)
    try:
        bar = tqdm(_image_batches(images_or_iterable, batch_size), total=total, desc=desc, unit="batch",
                   disable=None if progress is None else not progress)
        with torch.no_grad():
            for i, batch in enumerate(bar):
                feats = extractor(_to_input(batch, device, i))
                if feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
                    raise ValueError(
                        f"the extractor must return features of shape (batch, dim); got {tuple(feats.shape)} "
                        f"for a batch of {batch.shape[0]} images."
                    )
                sink(feats)
    finally:
        if is_module:
            extractor.train(was_training)


def feature_statistics(extractor, images_or_iterable, batch_size: int = 256, device=None,
                       progress=None) -> FeatureStatistics:
    """Streaming float64 mean and covariance of ``extractor`` features over a set of images.

    ``images_or_iterable``: float images in [−1, 1], an array/tensor (N, C, H, W) cut into ``batch_size`` batches, or
    an iterable of batches (arrays, tensors, or tuples whose first item is the images, as a DataLoader yields).
    ``device``: where to run the extractor (default: where its parameters are). Features are accumulated without
    being stored; merge the result with statistics from other batches or processes via ``FeatureStatistics.merge``.
    """
    stats = FeatureStatistics()
    _run(extractor, images_or_iterable, batch_size, device, progress, stats.update, "features")
    return stats


def extract_features(extractor, images_or_iterable, batch_size: int = 256, device=None, progress=None) -> np.ndarray:
    """All features as a float64 array (N, D) (needed by KID; FD needs only :func:`feature_statistics`)."""
    parts = []
    _run(extractor, images_or_iterable, batch_size, device, progress,
         lambda f: parts.append(f.detach().to("cpu", torch.float64).numpy()), "features")
    dim = getattr(extractor, "feature_dim", 0)
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, dim), dtype=np.float64)


def _assert_fid_allowed(extractor):
    """Only the pytorch-fid Inception loaded from the verified weights file may report "FID"."""
    if extractor.metric_name not in ("FID", "KID"):
        return
    from . import inception

    ok = (isinstance(extractor, inception.InceptionV3Features)
          and extractor.weights_sha256 == inception.FID_WEIGHTS_SHA256)
    if not ok:
        raise ValueError(
            f"extractor {type(extractor).__name__} claims metric_name {extractor.metric_name!r}, but only the "
            "pytorch-fid InceptionV3 loaded with load_fid_inception from the verified weights file may report FID. "
            "Give other extractors an honest name such as 'FD-LeNet'."
        )


def _stats_of(name, extractor, data, batch_size, device, progress):
    if isinstance(data, FeatureStatistics):
        if data.dim != getattr(extractor, "feature_dim", data.dim):
            raise ValueError(
                f"{name} statistics have dimension {data.dim} but the extractor gives {extractor.feature_dim}; "
                "compute both with the same extractor."
            )
        return data, (data.mean, data.cov), data.count
    if (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(a, np.ndarray) for a in data)
            and data[0].ndim == 1 and data[1].ndim == 2):
        return None, (data[0], data[1]), None  # (mu, sigma) from a pytorch-fid statistics file; count unknown
    stats = feature_statistics(extractor, data, batch_size=batch_size, device=device, progress=progress)
    return stats, (stats.mean, stats.cov), stats.count


def fd_score(extractor, stats_data, samples, batch_size: int = 256, device=None, progress=None) -> MetricResult:
    """Fréchet distance of ``samples`` to the data in ``extractor``'s features, named ``extractor.metric_name``.

    ``stats_data``: the reference, as :class:`FeatureStatistics` (precomputed with the same extractor), a
    ``(mu, sigma)`` pair of arrays (e.g. from :func:`load_mu_sigma`), or images / an iterable of batches.
    ``samples``: images / an iterable of batches, or their FeatureStatistics.
    The value is ‖μ_d − μ_s‖² + tr Σ_d + tr Σ_s − 2 tr (Σ_d^½ Σ_s Σ_d^½)^½ (:func:`frechet_distance`). The result is
    called "FID" only for the verified pytorch-fid Inception; "FD-LeNet" for the stand-in.
    """
    _check_extractor(extractor)
    _assert_fid_allowed(extractor)
    _, (mu_d, sigma_d), n_d = _stats_of("stats_data", extractor, stats_data, batch_size, device, progress)
    _, (mu_s, sigma_s), n_s = _stats_of("samples", extractor, samples, batch_size, device, progress)
    value = frechet_distance(mu_d, sigma_d, mu_s, sigma_s)
    return MetricResult(name=extractor.metric_name, value=value, n_reference=n_d, n_samples=n_s,
                        feature_dim=int(mu_d.shape[0]), extractor=getattr(extractor, "name", type(extractor).__name__))


def kernel_metric_name(metric_name: str) -> str:
    """The kernel-distance name that goes with a Fréchet metric name: "FID" → "KID", "FD-LeNet" → "KD-LeNet"."""
    if metric_name == "FID":
        return "KID"
    if metric_name.startswith("FD-"):
        return "KD-" + metric_name[3:]
    return "KD-" + metric_name


def kid_score(extractor, data, samples, subsets: int = 100, subset_size: int | None = None, seed: int = 0,
              batch_size: int = 256, device=None, progress=None) -> MetricResult:
    """Kernel distance (unbiased polynomial MMD², :func:`kid`) of ``samples`` to ``data`` in ``extractor`` features.

    ``data``/``samples``: images or iterables of batches, or precomputed (N, D) feature arrays. Named "KID" only for
    the verified Inception, else "KD-<name>" (e.g. "KD-LeNet"); ``std`` is the spread over subsets.
    """
    _check_extractor(extractor)
    _assert_fid_allowed(extractor)

    def feats(x):
        if isinstance(x, np.ndarray) and x.ndim == 2:
            return x
        return extract_features(extractor, x, batch_size=batch_size, device=device, progress=progress)

    f_d, f_s = feats(data), feats(samples)
    res = kid(f_d, f_s, subsets=subsets, subset_size=subset_size, seed=seed)
    return MetricResult(name=kernel_metric_name(extractor.metric_name), value=res.mean, std=res.std,
                        n_reference=f_d.shape[0], n_samples=f_s.shape[0], feature_dim=int(f_d.shape[1]),
                        extractor=getattr(extractor, "name", type(extractor).__name__))
