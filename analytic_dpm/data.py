"""Offline image data in the paper's pixel convention (facts file §4.5).

Images are 8-bit integers u ∈ {0, …, 255} mapped linearly onto [−1, 1]:

    x = u/127.5 − 1,        u = round((x + 1)·127.5)   (the inverse, clipped to 0..255)

and stored as float32 arrays of shape (B, C, H, W), so d = C·H·W. Two data sets, neither downloaded at run time:

* :func:`load_digits`: scikit-learn's 8×8 handwritten digits (1797 images, shipped inside scikit-learn). Their
  pixels are integers 0..16 (4.09 bits); they are first put on the 8-bit scale as u = round(v·255/16), rounding
  half to even (only v = 8 is a tie: 127.5 → 128), so the likelihood's 256-bin decoder applies unchanged.
* :func:`load_fashion_mnist`: Fashion-MNIST (70 000 28×28 images, MIT licence) read from the IDX files installed by
  the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), parsed here with numpy
  (:func:`read_idx`).

:func:`batches` iterates over one epoch of an array in (optionally shuffled) mini-batches, reproducibly from a seed.
"""

from __future__ import annotations

import gzip
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validate import _show, as_float, as_int

#: Where the Debian package ``dataset-fashion-mnist`` installs its files; override with ``root=`` or the
#: environment variable ``ANALYTIC_DPM_FASHION_MNIST``.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "ANALYTIC_DPM_FASHION_MNIST"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
#: IDX type codes (third magic byte) and their big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# ---------------------------------------------------------------------------------------------------- pixel scale
def to_model_range(u, dtype=np.float32):
    """8-bit pixels to the model's range (facts file §4.5): x = u/127.5 − 1 ∈ [−1, 1].

    ``u``: integers in 0..255 (a numpy array of any integer dtype, or a torch integer tensor). Returns ``dtype``
    (numpy float32 by default; float64 allowed) of the same shape; a torch tensor in gives a torch tensor out (float32,
    or float64 when ``dtype`` is float64). :func:`to_uint8` inverts it exactly.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype}. Use np.float32 for networks.")
    if _is_torch(u):
        import torch

        if u.is_floating_point() or u.is_complex() or u.dtype == torch.bool:
            raise TypeError(f"u must hold integer pixel values 0..255; got a {u.dtype} tensor. "
                            "Pass the raw uint8 images (to_uint8 converts model-range floats back).")
        if u.numel() and (int(u.min()) < 0 or int(u.max()) > 255):
            raise ValueError(f"u must lie in 0..255; got values in [{int(u.min())}, {int(u.max())}].")
        tdt = torch.float32 if dtype == np.float32 else torch.float64
        return u.to(tdt) / 127.5 - 1.0
    u = np.asarray(u)
    if not np.issubdtype(u.dtype, np.integer):
        raise TypeError(f"u must hold integer pixel values 0..255; got dtype {u.dtype}. "
                        "Pass the raw uint8 images (to_uint8 converts model-range floats back).")
    if u.size and (u.min() < 0 or u.max() > 255):
        raise ValueError(f"u must lie in 0..255; got values in [{u.min()}, {u.max()}].")
    return (u.astype(dtype) / dtype.type(127.5) - dtype.type(1.0)).astype(dtype, copy=False)


def to_uint8(x):
    """Model-range floats to 8-bit pixels: u = round((x + 1)·127.5) clipped to 0..255, as uint8.

    Inverts :func:`to_model_range` exactly (float32 or float64). Values outside [−1, 1] (e.g. unclipped samples) are
    clipped; NaN raises. numpy in gives numpy out; a torch tensor gives a torch uint8 tensor on its device.
    """
    if _is_torch(x):
        import torch

        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor in [-1, 1]; got dtype {x.dtype}.")
        if bool(torch.isnan(x).any()):
            raise ValueError("x holds NaN values; cannot convert them to pixels. Check the sampler's output.")
        return torch.round((x.to(torch.float64) + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a floating-point array in [-1, 1]; got dtype {x.dtype}.")
    if np.isnan(x).any():
        raise ValueError("x holds NaN values; cannot convert them to pixels. Check the sampler's output.")
    return np.clip(np.rint((x.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- data set type
@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images in the model's range with their labels.

    Attributes:
        images: float32 array (M, C, H, W) with values u/127.5 − 1 for 8-bit u (see :func:`to_model_range`).
        labels: int64 array (M,), the class of each image.
        name: a short name, e.g. ``"digits"`` or ``"fashion-mnist/train"``.
        bits: the bit depth of the pixel grid the images lie on (8: 256 levels), as the discretized decoder needs.
        info: JSON-compatible provenance (source, original pixel range, split seed, ...).
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    bits: int = 8
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        img = np.asarray(self.images)
        lab = np.asarray(self.labels)
        if img.ndim != 4:
            raise ValueError(f"images must have shape (M, C, H, W); got shape {img.shape}. "
                             "Add a channel axis with images[:, None] for grey-scale data.")
        if lab.shape != (img.shape[0],):
            raise ValueError(f"labels must have shape (M,) = ({img.shape[0]},) to match images; got {lab.shape}.")
        if not np.issubdtype(img.dtype, np.floating):
            raise TypeError(f"images must be floating point in [-1, 1]; got dtype {img.dtype}. "
                            "Convert 8-bit pixels with to_model_range(u).")
        object.__setattr__(self, "images", img)
        object.__setattr__(self, "labels", lab.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple:
        """The shape of one image, (C, H, W)."""
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def dim(self) -> int:
        """d = C·H·W, the number of pixel values per image."""
        return math.prod(self.shape)

    def uint8(self) -> np.ndarray:
        """The images as 8-bit integers u = round((x + 1)·127.5), shape (M, C, H, W)."""
        return to_uint8(self.images)

    def subset(self, index, name: str | None = None) -> "ImageDataset":
        """The images and labels at ``index`` (an integer array, slice or boolean mask)."""
        return ImageDataset(self.images[index], self.labels[index], name or self.name, self.bits, dict(self.info))


# ---------------------------------------------------------------------------------------------------- digits
def _digits_raw():
    """(pixels v of shape (1797, 8, 8) as float64 0..16, labels int64): scikit-learn's ``digits.csv.gz`` read
    directly (the same file ``sklearn.datasets.load_digits`` reads; importing scikit-learn itself takes seconds),
    falling back to ``sklearn.datasets.load_digits`` when the file is not where scikit-learn keeps it."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError("load_digits needs scikit-learn, which ships the 8×8 digits: pip install scikit-learn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        raw = np.loadtxt(csv, delimiter=",", dtype=np.float64)
        return raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as _sk_load_digits  # pragma: no cover - layout changed

    bunch = _sk_load_digits()  # pragma: no cover
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)  # pragma: no cover


def load_digits() -> ImageDataset:
    """scikit-learn's 8×8 digits (1797 images, 10 classes) as float32 (1797, 1, 8, 8) in [−1, 1].

    The original pixels v ∈ {0, …, 16} are put on the 8-bit scale u = round(v·255/16) (half to even), then
    x = u/127.5 − 1. Shipped inside scikit-learn: nothing is downloaded.
    """
    v, target = _digits_raw()
    if v.shape[1:] != (8, 8) or v.min() < 0 or v.max() > 16 or not np.array_equal(v, np.round(v)):
        raise RuntimeError(f"unexpected scikit-learn digits: shape {v.shape}, values in [{v.min()}, {v.max()}]; "
                           "expected integers 0..16 of shape (M, 8, 8).")
    u = np.rint(v.astype(np.float64) * (255.0 / 16.0)).astype(np.uint8)
    return ImageDataset(
        images=to_model_range(u[:, None, :, :]),
        labels=target,
        name="digits",
        bits=8,
        info={"source": "scikit-learn digits (sklearn.datasets.load_digits)", "original_levels": 17,
              "to_uint8": "u = round_half_even(v * 255 / 16)"},
    )


def split_dataset(dataset: ImageDataset, test_fraction: float = 0.2, seed: int = 0):
    """A deterministic random split into (train, test) ImageDatasets.

    The permutation is ``np.random.default_rng(seed).permutation(M)``; its first round(M·test_fraction) indices (at
    least one, at most M − 1) form the test set, the rest the train set, each kept in ascending index order.
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"dataset must be an ImageDataset (from load_digits or load_fashion_mnist); "
                        f"got {type(dataset).__name__}.")
    f = as_float("test_fraction", test_fraction)
    if not 0.0 < f < 1.0:
        raise ValueError(f"test_fraction must lie in the open interval (0, 1); got {f}. Use e.g. 0.2.")
    seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer such as 0.")
    M = len(dataset)
    if M < 2:
        raise ValueError(f"dataset must hold at least 2 images to split; got {M}.")
    n_test = min(max(int(round(M * f)), 1), M - 1)
    perm = np.random.default_rng(seed).permutation(M)
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    info = {"split_seed": seed, "test_fraction": f}
    train = dataset.subset(train_idx, f"{dataset.name}/train")
    test = dataset.subset(test_idx, f"{dataset.name}/test")
    train.info.update(info, split="train")
    test.info.update(info, split="test")
    return train, test


# ---------------------------------------------------------------------------------------------------- IDX / Fashion
def read_idx(path) -> np.ndarray:
    """Parse an IDX file (the MNIST format; ``.gz`` files are decompressed) into a numpy array.

    Format: magic = two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64) and the number of dimensions k; then k big-endian uint32 sizes; then the values, big-endian,
    row-major. Returns the values in native byte order (uint8 for image files).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4:
        raise ValueError(f"{path} is not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic number.")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file: magic bytes {raw[:4].hex()} (expected 0000 then a type byte "
                         f"in {sorted(hex(k) for k in _IDX_DTYPES)} and the number of dimensions).")
    dt = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: its header declares {ndim} dimensions but the file has only "
                         f"{len(raw)} bytes.")
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims) * dt.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path} has {len(raw)} bytes; its header (shape {dims}, {dt.newbyteorder('=')}) "
                         f"implies {expected}. The file is truncated or corrupt: reinstall it.")
    arr = np.frombuffer(raw, dtype=dt, count=math.prod(dims), offset=header).reshape(dims)
    return arr.astype(dt.newbyteorder("="))


def _idx_magic(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return int.from_bytes(fh.read(4), "big")


def fashion_mnist_root(root=None) -> Path:
    """The directory searched for Fashion-MNIST: ``root``, else $ANALYTIC_DPM_FASHION_MNIST, else the Debian path."""
    if root is None:
        root = os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_ROOT
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a directory path (str or os.PathLike) or None; got {type(root).__name__}.")
    return Path(root)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        p = root / name
        if p.is_file():
            return p
    return None


def fashion_mnist_available(root=None) -> bool:
    """True when all four Fashion-MNIST IDX files are present under the root (see :func:`fashion_mnist_root`)."""
    r = fashion_mnist_root(root)
    return all(_find(r, s) is not None for img, lab, _ in _FASHION_FILES.values() for s in (img, lab))


def load_fashion_mnist(split: str = "train", root=None) -> ImageDataset:
    """Fashion-MNIST as float32 (M, 1, 28, 28) in [−1, 1] (x = u/127.5 − 1) with labels 0..9.

    ``split``: ``"train"`` (60 000 images) or ``"test"`` (10 000). ``root``: the directory with the IDX files
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; default $ANALYTIC_DPM_FASHION_MNIST or
    /usr/share/datasets/fashion-mnist, where the Debian package ``dataset-fashion-mnist`` installs them.
    Magic numbers (2051 images, 2049 labels), shapes and counts are checked.
    """
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    r = fashion_mnist_root(root)
    img_stem, lab_stem, count = _FASHION_FILES[split]
    paths = {stem: _find(r, stem) for stem in (img_stem, lab_stem)}
    missing = [s for s, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST file(s) {', '.join(m + '.gz' for m in missing)} not found in {r}. Install the Debian "
            f"package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or pass root= (or set "
            f"${FASHION_MNIST_ENV}) to the directory that holds the IDX files."
        )
    for stem, magic in ((img_stem, 2051), (lab_stem, 2049)):
        got = _idx_magic(paths[stem])
        if got != magic:
            raise ValueError(f"{paths[stem]} has magic number {got}; expected {magic} for an IDX "
                             f"{'image' if magic == 2051 else 'label'} file. Reinstall dataset-fashion-mnist.")
    u = read_idx(paths[img_stem])
    y = read_idx(paths[lab_stem])
    if u.dtype != np.uint8 or u.shape != (count, 28, 28):
        raise ValueError(f"{paths[img_stem]} holds {u.dtype} of shape {u.shape}; expected uint8 ({count}, 28, 28).")
    if y.shape != (count,) or y.max(initial=0) > 9:
        raise ValueError(f"{paths[lab_stem]} holds labels of shape {y.shape} in 0..{y.max(initial=0)}; "
                         f"expected ({count},) in 0..9.")
    return ImageDataset(
        images=to_model_range(u[:, None, :, :]),
        labels=y.astype(np.int64),
        name=f"fashion-mnist/{split}",
        bits=8,
        info={"source": "dataset-fashion-mnist (IDX)", "files": [paths[img_stem].name, paths[lab_stem].name],
              "classes": list(FASHION_MNIST_CLASSES)},
    )


def box_downsample(dataset: ImageDataset, factor: int) -> ImageDataset:
    """Shrink every image by ``factor`` in height and width: each output pixel is the mean of a factor×factor block
    of the 8-bit values, rounded half to even back onto the 8-bit grid, so the discretized decoder still applies.

    ``factor = 1`` returns the dataset unchanged. H and W must be divisible by ``factor`` (28 → 14 for factor 2).
    This is how the CPU-sized Fashion-MNIST preset runs at 14×14; the name gains a ``@HxW`` suffix.
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"dataset must be an ImageDataset (from load_digits or load_fashion_mnist); "
                        f"got {type(dataset).__name__}.")
    f = as_int("factor", factor, minimum=1, fix="Use 1 for no downsampling or 2 for 28×28 → 14×14.")
    if f == 1:
        return dataset
    c, h, w = dataset.shape
    if h % f or w % f:
        raise ValueError(f"factor must divide the image size {h}×{w}; got factor={f}. Use a divisor such as "
                         f"{min(d for d in range(2, h + 1) if h % d == 0 and w % d == 0) if math.gcd(h, w) > 1 else 1}.")
    u = dataset.uint8().astype(np.float64).reshape(len(dataset), c, h // f, f, w // f, f)
    v = np.rint(u.mean(axis=(3, 5))).astype(np.uint8)
    info = dict(dataset.info)
    info["downsample"] = f"{f}×{f} box mean of 8-bit values, rounded half to even"
    return ImageDataset(to_model_range(v), dataset.labels, f"{dataset.name}@{h // f}x{w // f}", dataset.bits, info)


# ---------------------------------------------------------------------------------------------------- CIFAR10
#: environment variable naming the directory of the CIFAR10 binary version (``cifar-10-batches-bin``)
CIFAR10_ENV = "ANALYTIC_DPM_CIFAR10"
CIFAR10_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
_CIFAR10_RECORD = 1 + 3 * 32 * 32


def cifar10_root(root=None) -> Path:
    """The CIFAR10 directory: ``root``, else $ANALYTIC_DPM_CIFAR10, else ``data/cifar-10-batches-bin``."""
    if root is None:
        root = os.environ.get(CIFAR10_ENV, "data/cifar-10-batches-bin")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a directory path (str or os.PathLike) or None; got {type(root).__name__}.")
    return Path(root)


def load_cifar10(split: str = "train", root=None) -> ImageDataset:
    """CIFAR10 from its *binary* version (``cifar-10-batches-bin``: ``data_batch_1..5.bin``, ``test_batch.bin``; each
    record is one label byte and 3072 pixel bytes, R, G then B planes of 32×32) as float32 (M, 3, 32, 32) in [−1, 1].

    The binary version is read as plain bytes; the Python version of CIFAR10 is a pickle and is never loaded here.
    Nothing is downloaded: get ``cifar-10-binary.tar.gz`` from the CIFAR10 page of the University of Toronto (Alex
    Krizhevsky), unpack it and pass ``root=`` or set $ANALYTIC_DPM_CIFAR10.
    """
    if split not in CIFAR10_FILES:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    r = cifar10_root(root)
    paths = [r / f for f in CIFAR10_FILES[split]]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR10 file(s) {', '.join(missing)} not found in {r}. Download the binary version "
            "(cifar-10-binary.tar.gz, from the CIFAR10 page of the University of Toronto), unpack it, and pass root= "
            f"(or set ${CIFAR10_ENV}) to its cifar-10-batches-bin directory. The Python (pickle) version is not read."
        )
    us, ys = [], []
    for p in paths:
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size == 0 or raw.size % _CIFAR10_RECORD:
            raise ValueError(f"{p} has {raw.size} bytes, not a multiple of the {_CIFAR10_RECORD}-byte CIFAR10 record "
                             "(1 label byte + 3072 pixels). Is it the binary version?")
        rec = raw.reshape(-1, _CIFAR10_RECORD)
        if rec[:, 0].max() > 9:
            raise ValueError(f"{p} has labels up to {rec[:, 0].max()}; CIFAR10 labels lie in 0..9.")
        ys.append(rec[:, 0].astype(np.int64))
        us.append(rec[:, 1:].reshape(-1, 3, 32, 32))
    u = np.concatenate(us)
    return ImageDataset(images=to_model_range(u), labels=np.concatenate(ys), name=f"cifar10/{split}", bits=8,
                        info={"source": "CIFAR10 binary version", "files": [p.name for p in paths]})


# ---------------------------------------------------------------------------------------------------- batches
def batches(array, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False):
    """Iterate over one epoch of ``array`` (numpy or torch, first axis = samples) in mini-batches.

    With ``shuffle`` the order is ``np.random.default_rng(seed).permutation(M)``; otherwise 0..M−1. Yields arrays of
    ``batch_size`` rows (the last one shorter unless ``drop_last``). An :class:`ImageDataset` yields image batches.
    """
    if isinstance(array, ImageDataset):
        array = array.images
    if not (_is_torch(array) or isinstance(array, np.ndarray)):
        raise TypeError(f"array must be a numpy array, a torch tensor or an ImageDataset; got {type(array).__name__}.")
    if array.ndim < 1:
        raise ValueError(f"array must have a sample axis; got a 0-dimensional array {_show(array)}.")
    batch_size = as_int("batch_size", batch_size, minimum=1, fix="It is the number of rows per batch, e.g. 128.")
    seed = as_int("seed", seed, minimum=0, fix="Use a non-negative integer such as 0.")
    M = int(array.shape[0])
    order = np.random.default_rng(seed).permutation(M) if shuffle else np.arange(M)
    stop = M - M % batch_size if drop_last else M
    for lo in range(0, stop, batch_size):
        idx = order[lo:lo + batch_size]
        if _is_torch(array):
            import torch

            yield array[torch.from_numpy(idx).to(array.device)]
        else:
            yield array[idx]
