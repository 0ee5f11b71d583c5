"""Tests for analytic_dpm.data: the 8-bit pixel convention (facts file §4.5), digits, IDX parsing, Fashion-MNIST,
splits and batches."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from analytic_dpm.data import (
    ImageDataset,
    batches,
    fashion_mnist_available,
    load_digits,
    load_fashion_mnist,
    read_idx,
    split_dataset,
    to_model_range,
    to_uint8,
)

ALL_U = np.arange(256, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------- pixel scale
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_round_trip_is_exact_for_all_256_levels(dtype):
    x = to_model_range(ALL_U, dtype=dtype)
    assert x.dtype == dtype
    assert x[0] == -1.0 and x[255] == 1.0
    np.testing.assert_allclose(x, ALL_U / 127.5 - 1.0, rtol=0, atol=1e-6 if dtype == np.float32 else 1e-15)
    assert np.all(np.diff(x) > 0)
    np.testing.assert_array_equal(to_uint8(x), ALL_U)


def test_to_uint8_rounds_to_nearest_level_and_clips():
    x = to_model_range(ALL_U, dtype=np.float64)
    half_step = 1.0 / 127.5 / 2
    np.testing.assert_array_equal(to_uint8(x + 0.99 * half_step), ALL_U)
    np.testing.assert_array_equal(to_uint8(x - 0.99 * half_step), ALL_U)
    np.testing.assert_array_equal(to_uint8(np.array([-3.0, 2.5])), [0, 255])
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(np.array([0.0, np.nan]))


def test_pixel_conversions_on_torch_keep_type_and_device():
    u = torch.arange(256, dtype=torch.uint8)
    x = to_model_range(u)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    back = to_uint8(x)
    assert back.dtype == torch.uint8 and torch.equal(back, u)
    assert to_model_range(u, dtype=np.float64).dtype == torch.float64


def test_pixel_conversion_errors_name_the_problem():
    with pytest.raises(TypeError, match="integer pixel values"):
        to_model_range(np.array([0.5]))
    with pytest.raises(ValueError, match="0..255"):
        to_model_range(np.array([0, 256]))
    with pytest.raises(TypeError, match="floating-point"):
        to_uint8(np.array([1, 2]))


# ---------------------------------------------------------------------------------------------------- digits
def test_digits_shape_range_and_levels():
    ds = load_digits()
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == np.float32
    assert ds.shape == (1, 8, 8) and ds.dim == 64 and len(ds) == 1797 and ds.bits == 8
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ds.labels), np.bincount(ds.labels, minlength=10)[:10])
    assert set(ds.labels.tolist()) == set(range(10))
    # 17 original levels 0..16 mapped to round(v·255/16), half to even (v = 8: 127.5 → 128)
    expected = np.rint(np.arange(17) * 255 / 16).astype(np.uint8)
    assert expected[8] == 128
    np.testing.assert_array_equal(np.unique(ds.uint8()), expected)


def test_digits_first_image_matches_the_published_values():
    # the first row of scikit-learn's digits.csv.gz: a "0" whose top pixel row is 0, 0, 5, 13, 9, 1, 0, 0
    ds = load_digits()
    assert ds.labels[0] == 0
    np.testing.assert_array_equal(ds.uint8()[0, 0, 0], np.rint(np.array([0, 0, 5, 13, 9, 1, 0, 0]) * 255 / 16))


@pytest.mark.slow
def test_digits_agree_with_sklearn_pixelwise():
    from sklearn.datasets import load_digits as sk

    bunch = sk()
    ds = load_digits()
    np.testing.assert_array_equal(ds.uint8()[:, 0], np.rint(bunch.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(ds.labels, bunch.target)


def test_split_is_deterministic_disjoint_and_complete():
    ds = load_digits()
    tr, te = split_dataset(ds, test_fraction=0.2, seed=3)
    tr2, te2 = split_dataset(ds, test_fraction=0.2, seed=3)
    tr3, _ = split_dataset(ds, test_fraction=0.2, seed=4)
    assert len(te) == round(1797 * 0.2) and len(tr) + len(te) == 1797
    np.testing.assert_array_equal(tr.images, tr2.images)
    np.testing.assert_array_equal(te.labels, te2.labels)
    assert not np.array_equal(tr.images, tr3.images)
    # disjoint and complete: the multiset of images is preserved
    allk = np.concatenate([tr.uint8(), te.uint8()]).reshape(1797, -1)
    key = lambda a: np.sort(a.view(np.dtype((np.void, a.shape[1]))).ravel())  # noqa: E731
    np.testing.assert_array_equal(key(allk), key(ds.uint8().reshape(1797, -1)))
    assert tr.name == "digits/train" and te.info["split"] == "test"
    with pytest.raises(ValueError, match="test_fraction"):
        split_dataset(ds, test_fraction=1.0)


# ---------------------------------------------------------------------------------------------------- IDX
def _write_idx(path, arr: np.ndarray, type_byte: int, compress: bool):
    header = bytes([0, 0, type_byte, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        fh.write(payload)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_parses_a_file_written_here(tmp_path, compress):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    p = tmp_path / ("imgs.idx3" + (".gz" if compress else ""))
    _write_idx(p, imgs, 0x08, compress)
    np.testing.assert_array_equal(read_idx(p), imgs)
    # multi-byte big-endian types
    f = rng.standard_normal((3, 2)).astype(np.float32)
    _write_idx(tmp_path / "f.idx", f, 0x0D, False)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), f)
    i = np.array([1, -2, 70000], dtype=np.int32)
    _write_idx(tmp_path / "i.idx", i, 0x0C, False)
    np.testing.assert_array_equal(read_idx(tmp_path / "i.idx"), i)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    p = tmp_path / "bad.idx"
    p.write_bytes(bytes([1, 0, 8, 1]) + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)


def _fake_fashion(root, n_train=6, n_test=4):
    rng = np.random.default_rng(1)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        u = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", u, 0x08, True)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y, 0x08, True)
        out[prefix] = (u, y)
    return out


def test_load_fashion_mnist_from_a_directory_written_here(tmp_path, monkeypatch):
    import analytic_dpm.data as data_mod

    monkeypatch.setitem(data_mod._FASHION_FILES, "train", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 6))
    monkeypatch.setitem(data_mod._FASHION_FILES, "test", ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 4))
    raw = _fake_fashion(tmp_path)
    assert fashion_mnist_available(tmp_path)
    ds = load_fashion_mnist("test", root=tmp_path)
    assert ds.images.shape == (4, 1, 28, 28) and ds.images.dtype == np.float32 and ds.name == "fashion-mnist/test"
    np.testing.assert_array_equal(ds.uint8()[:, 0], raw["t10k"][0])
    np.testing.assert_array_equal(ds.labels, raw["t10k"][1])
    # image/label files swapped → magic-number check
    (tmp_path / "x").mkdir()
    for a, b in (("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz")):
        (tmp_path / "x" / b).write_bytes((tmp_path / a).read_bytes())
    with pytest.raises(ValueError, match="magic number 2049; expected 2051"):
        load_fashion_mnist("train", root=tmp_path / "x")


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    assert not fashion_mnist_available(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", root=tmp_path)


@pytest.mark.skipif(not fashion_mnist_available(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_test_split():
    ds = load_fashion_mnist("test")
    assert ds.images.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(ds.labels), np.full(10, 1000))  # the test split is balanced
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    u = ds.uint8()
    assert len(np.unique(u)) == 256


# ---------------------------------------------------------------------------------------------------- batches
def test_batches_cover_one_epoch_reproducibly():
    a = np.arange(10)[:, None] * np.ones((1, 3))
    got = list(batches(a, 4, seed=5))
    assert [len(b) for b in got] == [4, 4, 2]
    rows = np.concatenate(got)[:, 0]
    assert sorted(rows.tolist()) == list(range(10)) and rows.tolist() != list(range(10))
    again = np.concatenate(list(batches(a, 3, seed=5)))[:, 0]
    np.testing.assert_array_equal(rows, again)  # the order depends on the seed, not the batch size
    plain = np.concatenate(list(batches(a, 4, shuffle=False)))[:, 0]
    np.testing.assert_array_equal(plain, np.arange(10))
    assert [len(b) for b in batches(a, 4, drop_last=True)] == [4, 4]
    t = list(batches(torch.from_numpy(a), 4, seed=5))
    assert isinstance(t[0], torch.Tensor)
    np.testing.assert_array_equal(torch.cat(t)[:, 0].numpy(), rows)
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(a, 0))


def test_box_downsample_means_blocks_on_the_8bit_grid():
    from analytic_dpm.data import ImageDataset, box_downsample, to_model_range

    u = np.array([[0, 1, 10, 10], [2, 3, 10, 11], [255, 255, 0, 0], [254, 255, 0, 1]], dtype=np.uint8)
    ds = ImageDataset(to_model_range(u[None, None]), np.array([3]), "toy")
    out = box_downsample(ds, 2)
    # block means 1.5, 10.25, 254.75, 0.25 → rounded half to even: 2, 10, 255, 0
    np.testing.assert_array_equal(out.uint8()[0, 0], [[2, 10], [255, 0]])
    assert out.name == "toy@2x2" and out.labels.tolist() == [3] and "downsample" in out.info
    assert box_downsample(ds, 1) is ds
    with pytest.raises(ValueError, match="factor must divide the image size 4×4; got factor=3"):
        box_downsample(ds, 3)
    with pytest.raises(TypeError, match="dataset must be an ImageDataset"):
        box_downsample(u, 2)


def test_fashion_mnist_cpu_preset_is_14x14():
    from analytic_dpm.pipeline import PRESETS

    cfg = PRESETS["fashion-mnist-cpu"]
    assert cfg.dataset == "fashion-mnist" and cfg.downsample == 2 and cfg.unet["image_size"] == 14
    assert cfg.Ks == (10, 25, 50, 100, 200, 1000)
