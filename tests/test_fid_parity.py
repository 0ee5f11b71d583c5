"""Parity of our FID pipeline with independent implementations: pytorch-fid 0.3.0 and torch-fidelity 0.4.0.

Both packages declare ``torchvision`` as a requirement, and torchvision must not be installed beside our torch, so
neither can go into the ``test`` extra (``pip install`` would pull torchvision and possibly another torch). The
Makefile installs them with ``pip install --no-deps`` (pinned versions), and this file loads their *unmodified* source
from the installed distributions:

* torch-fidelity's ``feature_extractor_inceptionv3.py`` is self-contained (torch only); its package ``__init__``
  imports everything (torchvision included), so the package is registered here as a bare namespace (``__path__``
  only) and the submodule is imported from it.
* pytorch-fid's ``inception.py`` subclasses ``torchvision.models.inception.InceptionA/C/E`` and builds its trunk with
  ``torchvision.models.inception_v3``. Inside the fixture only, a stub ``torchvision`` is put in ``sys.modules``
  whose classes are *torch-fidelity's* blocks (layers only: pytorch-fid overrides the forwards of A, C, E; the
  forwards of BasicConv2d, B and D are torch-fidelity's). The stub contains no numerics of its own and no line of
  ``analytic_dpm``; everything is removed from ``sys.modules`` afterwards.

When either distribution is missing, the tests that need it skip and say how to install it.

Tolerance. Everything runs in float32 on the CPU with the same convolution kernels, but the two pipelines order the
arithmetic differently (pytorch-fid resizes u/255 and then maps 2x − 1; we map u/127.5 − 1 and then resize), so the
resized inputs differ by float32 rounding (~6e-8 relative), carried through 94 conv+bn+relu layers. Required:
max |ours − theirs| <= 1e-5 · max |theirs| (measured: 3.0e-7 on the 32×32 batch; exactly 0 on the 299×299 image,
where the resize is the identity, and exactly 0 against torch-fidelity's network). Real design differences are far
above it: dividing by 128 instead of 127.5 moves the features by 2.8e-3 relative, an average instead of a max pool
in Mixed_7c by 0.31. The same comparison in float64 must agree to 1e-12 (measured 1.3e-15): the float32 difference
is rounding, not a design difference.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import sys
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from analytic_dpm.metrics import FeatureStatistics, frechet_distance
from analytic_dpm.metrics.inception import InceptionV3Features, load_fid_inception

PYTORCH_FID_VERSION = "0.3.0"
TORCH_FIDELITY_VERSION = "0.4.0"
_INSTALL = (f'pip install --no-deps "pytorch-fid=={PYTORCH_FID_VERSION}" '
            f'"torch-fidelity=={TORCH_FIDELITY_VERSION}" (as the Makefile does; never with its deps: torchvision)')

#: float32 features: max |ours − theirs| <= F32_RTOL * max |theirs| (see the module docstring).
F32_RTOL = 1e-5
#: float64 features: the same comparison in double precision.
F64_RTOL = 1e-12


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _package_dir(name: str, version: str):
    """Directory of an installed distribution's top-level package, or skip (without importing the package)."""
    from importlib import metadata

    try:
        got = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed; the parity test needs its source: {_INSTALL}")
    if got != version:
        pytest.skip(f"{name} {got} is installed; this parity test is written against {version}: {_INSTALL}")
    spec = importlib.util.find_spec(name.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is installed but its package directory was not found: {_INSTALL}")
    return list(spec.submodule_search_locations)


@contextlib.contextmanager
def _restore_sys_modules(prefixes):
    before = {k: v for k, v in sys.modules.items() if k.split(".")[0] in prefixes}
    try:
        yield
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] in prefixes]:
            del sys.modules[k]
        sys.modules.update(before)


# ============================================================================================ the independent modules
@pytest.fixture(scope="module")
def independent():
    """(torch-fidelity's feature_extractor_inceptionv3 module, pytorch-fid's inception module, its fid_score module)."""
    tfi_path = _package_dir("torch-fidelity", TORCH_FIDELITY_VERSION)
    pfid_path = _package_dir("pytorch-fid", PYTORCH_FID_VERSION)
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed; this test stubs it and must not shadow a real one")
    with _restore_sys_modules({"torch_fidelity", "pytorch_fid", "torchvision"}):
        # torch-fidelity, as a bare package (its __init__ imports torchvision-based extractors)
        pkg = types.ModuleType("torch_fidelity")
        pkg.__path__ = tfi_path
        sys.modules["torch_fidelity"] = pkg
        tfi = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")

        # a stub torchvision whose Inception pieces are torch-fidelity's (layer definitions; see the module docstring)
        class Inception3(nn.Module):
            """torchvision's Inception3 trunk without the aux head (the modules pytorch-fid uses), from tfi blocks."""

            def __init__(self, num_classes=1000, aux_logits=True, weights=None, init_weights=None):
                super().__init__()
                assert not aux_logits and weights is None
                C = tfi.BasicConv2d
                self.Conv2d_1a_3x3 = C(3, 32, kernel_size=3, stride=2)
                self.Conv2d_2a_3x3 = C(32, 32, kernel_size=3)
                self.Conv2d_2b_3x3 = C(32, 64, kernel_size=3, padding=1)
                self.Conv2d_3b_1x1 = C(64, 80, kernel_size=1)
                self.Conv2d_4a_3x3 = C(80, 192, kernel_size=3)
                self.Mixed_5b = tfi.InceptionA(192, pool_features=32)
                self.Mixed_5c = tfi.InceptionA(256, pool_features=64)
                self.Mixed_5d = tfi.InceptionA(288, pool_features=64)
                self.Mixed_6a = tfi.InceptionB(288)
                self.Mixed_6b = tfi.InceptionC(768, channels_7x7=128)
                self.Mixed_6c = tfi.InceptionC(768, channels_7x7=160)
                self.Mixed_6d = tfi.InceptionC(768, channels_7x7=160)
                self.Mixed_6e = tfi.InceptionC(768, channels_7x7=192)
                self.Mixed_7a = tfi.InceptionD(768)
                self.Mixed_7b = tfi.InceptionE_1(1280)
                self.Mixed_7c = tfi.InceptionE_1(2048)
                self.fc = nn.Linear(2048, num_classes)

        tv = types.ModuleType("torchvision")
        tv.__version__ = "0.18.0"
        tv_models = types.ModuleType("torchvision.models")
        tv_inception = types.ModuleType("torchvision.models.inception")
        tv_inception.InceptionA = tfi.InceptionA
        tv_inception.InceptionC = tfi.InceptionC
        tv_inception.InceptionE = tfi.InceptionE_1
        tv_inception.Inception3 = Inception3
        tv_models.inception = tv_inception
        tv_models.inception_v3 = lambda **kw: Inception3(**kw)
        tv_transforms = types.ModuleType("torchvision.transforms")  # fid_score imports it; only its CLI uses it
        tv.models, tv.transforms = tv_models, tv_transforms
        sys.modules.update({"torchvision": tv, "torchvision.models": tv_models,
                            "torchvision.models.inception": tv_inception, "torchvision.transforms": tv_transforms})
        pfid = importlib.import_module("pytorch_fid.inception")
        fid_score = importlib.import_module("pytorch_fid.fid_score")
    return types.SimpleNamespace(tfi=tfi, pfid=pfid, fid_score=fid_score)


def _random_inception_state(model: nn.Module, seed: int) -> dict:
    """He-normal convolutions and non-trivial batch norms, so that features are O(1) and every entry matters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            out[k] = v.clone()
        elif k.endswith("conv.weight"):
            fan_in = v[0].numel()
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif k.endswith("bn.weight"):
            out[k] = 0.8 + 0.4 * torch.rand(v.shape, generator=g)
        elif k.endswith("bn.bias") or k.endswith("running_mean"):
            out[k] = 0.2 * torch.rand(v.shape, generator=g) - 0.1
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.startswith("fc."):
            out[k] = 0.01 * torch.randn(v.shape, generator=g)
        else:
            raise AssertionError(f"unexpected state-dict entry {k}")
    return out


#: pytorch-fid's InceptionV3 wraps the trunk in ``blocks`` (a ModuleList of Sequentials, pools in between, no fc);
#: this is where each of its prefixes lives in our network (and in the weights file).
PYTORCH_FID_TO_OURS = {
    "blocks.0.0": "Conv2d_1a_3x3",
    "blocks.0.1": "Conv2d_2a_3x3",
    "blocks.0.2": "Conv2d_2b_3x3",
    # blocks.0.3: max pool 3×3/2 (no parameters)
    "blocks.1.0": "Conv2d_3b_1x1",
    "blocks.1.1": "Conv2d_4a_3x3",
    # blocks.1.2: max pool 3×3/2
    "blocks.2.0": "Mixed_5b",
    "blocks.2.1": "Mixed_5c",
    "blocks.2.2": "Mixed_5d",
    "blocks.2.3": "Mixed_6a",
    "blocks.2.4": "Mixed_6b",
    "blocks.2.5": "Mixed_6c",
    "blocks.2.6": "Mixed_6d",
    "blocks.2.7": "Mixed_6e",
    "blocks.3.0": "Mixed_7a",
    "blocks.3.1": "Mixed_7b",
    "blocks.3.2": "Mixed_7c",
    # blocks.3.3: adaptive average pool to 1×1
}


def _map_pytorch_fid_key(key: str) -> str:
    parts = key.split(".")
    prefix, rest = ".".join(parts[:3]), ".".join(parts[3:])
    return f"{PYTORCH_FID_TO_OURS[prefix]}.{rest}"


#: torch-fidelity names its parameters as the weights file does (MaxPool_1/2 and AvgPool have no parameters).
def _map_torch_fidelity_key(key: str) -> str:
    return key


@pytest.fixture(scope="module")
def networks(independent, tmp_path_factory):
    """pytorch-fid's and torch-fidelity's InceptionV3 with random weights, and ours loaded from them via a file."""
    ns = independent
    # 1. random weights in the layout pytorch-fid loads (the weights file's), fed to pytorch-fid's own builder
    trunk_state = _random_inception_state(ns.pfid.fid_inception_v3.__globals__["torchvision"].models.inception_v3(
        num_classes=1008, aux_logits=False, weights=None), seed=1234)
    ns.pfid.load_state_dict_from_url = lambda url, progress=True: trunk_state
    theirs = ns.pfid.InceptionV3([ns.pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    their_state = theirs.state_dict()
    assert len(their_state) == 564 and all(k.startswith("blocks.") for k in their_state)

    # 2. map pytorch-fid's keys onto ours; fc (not part of pytorch-fid's wrapper) comes from the same weights
    mapped = {_map_pytorch_fid_key(k): v for k, v in their_state.items()}
    mapped["fc.weight"], mapped["fc.bias"] = trunk_state["fc.weight"], trunk_state["fc.bias"]
    ours_keys = set(InceptionV3Features().state_dict())
    assert set(mapped) == ours_keys, (sorted(set(mapped) ^ ours_keys)[:5])
    for k, v in mapped.items():  # the mapping is the weights-file layout, and pytorch-fid loaded it unchanged
        assert torch.equal(v, trunk_state[k]), k

    # 3. ours, through the user's path: a weights file, checked by SHA-256 and loaded
    path = tmp_path_factory.mktemp("parity") / "random-fid-inception.pth"
    torch.save(mapped, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ours = load_fid_inception(path, expected_sha256=digest)

    # 4. torch-fidelity reads the same file (its keys are the file's)
    tfi_net = ns.tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                 feature_extractor_weights_path=str(path))
    assert {_map_torch_fidelity_key(k) for k in tfi_net.state_dict()} == ours_keys
    return types.SimpleNamespace(pytorch_fid=theirs, torch_fidelity=tfi_net, ours=ours, path=path)


def _images():
    g = torch.Generator().manual_seed(7)
    small = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    large = torch.randint(0, 256, (1, 3, 299, 299), dtype=torch.uint8, generator=g)
    return small, large


def _pytorch_fid_features(model, u8: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's pipeline: ToTensor (u/255 in [0, 1]) → its forward (resize 299 bilinear, 2x − 1) → pool3."""
    x = u8.to(torch.float32) / 255.0
    with torch.no_grad():
        return model(x)[0].squeeze(-1).squeeze(-1)


def _our_features(model, u8: torch.Tensor) -> torch.Tensor:
    """Ours: 8-bit images scaled as the library documents (u/127.5 − 1), then its forward (resize 299, pool3)."""
    x = u8.to(torch.float32) / 127.5 - 1.0
    with torch.no_grad():
        return model(x)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    got, ref = got.double(), ref.double()
    err = float((got - ref).abs().max())
    return err, err / float(ref.abs().max())


# ============================================================================================ 1. pool features
def test_pool_features_match_pytorch_fid_float32(networks):
    small, large = _images()
    for u8 in (small, large):
        ref = _pytorch_fid_features(networks.pytorch_fid, u8)
        got = _our_features(networks.ours, u8)
        assert got.shape == ref.shape == (u8.shape[0], 2048) and got.dtype == torch.float32
        assert float(ref.abs().max()) > 0.1 and float(ref.std()) > 0.01  # non-degenerate random features
        err, rel = _rel_err(got, ref)
        assert rel <= F32_RTOL, f"{tuple(u8.shape)}: max |ours − pytorch-fid| = {err:.3g} (relative {rel:.3g})"


def test_pool_features_match_pytorch_fid_float64(networks):
    """In double precision the float32 discrepancy (3e-7) shrinks to ~1e-15: it was rounding, not a design difference."""
    small, _ = _images()
    theirs = networks.pytorch_fid.double()
    ours = networks.ours.double()
    try:
        with torch.no_grad():
            ref = theirs(small.double() / 255.0)[0].squeeze(-1).squeeze(-1)
            got = ours(small.double() / 127.5 - 1.0)
        assert got.dtype == torch.float64
        err, rel = _rel_err(got, ref)
        assert rel <= F64_RTOL, f"float64: max |ours − pytorch-fid| = {err:.3g} (relative {rel:.3g})"
    finally:
        theirs.float()
        ours.float()


def test_pool_features_match_torch_fidelity_network(networks, independent):
    """torch-fidelity's network on its own preprocessed input (TF1-style resize, (u − 128)/128) gives our features.

    torch-fidelity's *preprocessing* differs from pytorch-fid's on purpose (it reproduces TensorFlow 1.x bilinear
    resizing, without the half-pixel offset, and divides by 128, not 127.5), so its end-to-end FIDs differ slightly
    from pytorch-fid's; ours follow pytorch-fid. The network itself is compared here on 299×299 inputs, where both
    resizes are the identity, and on its resized 32×32 batch fed to ours as a 299×299 tensor.
    """
    tfi = independent.tfi
    small, large = _images()
    with torch.no_grad():
        for u8 in (large, small):
            (ref,) = networks.torch_fidelity(u8)
            x = tfi.interpolate_bilinear_2d_like_tensorflow1x(u8.to(torch.float32), size=(299, 299),
                                                              align_corners=False)
            got = networks.ours((x - 128) / 128)
            err, rel = _rel_err(got, ref)
            assert rel <= F32_RTOL, f"{tuple(u8.shape)}: max |ours − torch-fidelity| = {err:.3g} (rel {rel:.3g})"
        # the two resizes really differ on 32 → 299 (why end-to-end torch-fidelity numbers are not pytorch-fid's)
        x = small.to(torch.float32)
        tf1 = tfi.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
        pt = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        assert float((tf1 - pt).abs().max()) > 1.0


# ============================================================================================ 2. statistics and FD
def _features(rng, n, d, offset=3.0):
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ a + offset * rng.standard_normal(d)).astype(np.float32)


def _pytorch_fid_statistics(fid_score, act):
    """pytorch-fid's calculate_activation_statistics, with its get_activations replaced by the given features."""
    original = fid_score.get_activations
    fid_score.get_activations = lambda *args, **kwargs: np.asarray(act, dtype=np.float64)
    try:
        return fid_score.calculate_activation_statistics([], None)
    finally:
        fid_score.get_activations = original


def test_statistics_match_pytorch_fid(independent, networks):
    rng = np.random.default_rng(0)
    act = _features(rng, 403, 96)
    stats = FeatureStatistics()
    for lo, hi in [(0, 1), (1, 50), (50, 51), (51, 300), (300, 403)]:  # streamed in uneven batches
        stats.update(act[lo:hi])
    mu, sigma = _pytorch_fid_statistics(independent.fid_score, act)
    np.testing.assert_allclose(stats.mean, mu, rtol=0, atol=1e-12 * np.abs(mu).max())
    np.testing.assert_allclose(stats.cov, sigma, rtol=0, atol=1e-12 * np.abs(sigma).max())
    # and on real pool features of the random network (5 images, 2048-d: rank-deficient covariance)
    small, large = _images()
    feats = torch.cat([_our_features(networks.ours, small), _our_features(networks.ours, large)])
    s = FeatureStatistics().update(feats[:2]).update(feats[2:])
    mu, sigma = _pytorch_fid_statistics(independent.fid_score, feats.numpy())
    np.testing.assert_allclose(s.mean, mu, rtol=0, atol=1e-12 * np.abs(mu).max())
    np.testing.assert_allclose(s.cov, sigma, rtol=0, atol=1e-12 * np.abs(sigma).max())


def _pytorch_fid_fd(fid_score, mu1, s1, mu2, s2):
    with contextlib.redirect_stdout(io.StringIO()) as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's "matrix is singular" warnings on the fallback path
        value = float(fid_score.calculate_frechet_distance(mu1, s1, mu2, s2))
    return value, "singular product" in out.getvalue()


def test_frechet_distance_matches_pytorch_fid_full_rank(independent):
    rng = np.random.default_rng(1)
    for n1, n2, d, shift in [(600, 500, 32, 0.0), (600, 500, 32, 0.5), (2000, 1500, 128, 0.1)]:
        f1, f2 = _features(rng, n1, d), _features(rng, n2, d)
        f2 = f2 + shift
        s1, s2 = FeatureStatistics.from_features(f1), FeatureStatistics.from_features(f2)
        ref, fallback = _pytorch_fid_fd(independent.fid_score, s1.mean, s1.cov, s2.mean, s2.cov)
        assert not fallback
        got = frechet_distance(s1, s2)
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-9 * (np.trace(s1.cov) + np.trace(s2.cov)))


def test_frechet_distance_matches_pytorch_fid_rank_deficient(independent):
    """Fewer samples than dimensions (singular covariances, as FID on a few images): scipy's sqrtm of the singular,
    non-symmetric product succeeds but is accurate only to ~√ε_machine relative (complex parts ~1e-6 appear), so the
    agreement is 1e-6 relative here; ours uses symmetric eigen-decompositions and is exact to ~1e-15 (tests/
    test_metrics.py checks it against the nuclear-norm oracle)."""
    rng = np.random.default_rng(3)
    for n, d in [(5, 64), (20, 64), (50, 256)]:
        f1, f2 = _features(rng, n, d, offset=1.0), _features(rng, n, d, offset=1.0)
        s1, s2 = FeatureStatistics.from_features(f1), FeatureStatistics.from_features(f2)
        ref, fallback = _pytorch_fid_fd(independent.fid_score, s1.mean, s1.cov, s2.mean, s2.cov)
        got = frechet_distance(s1, s2)
        assert got == pytest.approx(ref, rel=1e-6), (n, d, fallback)


def test_frechet_distance_vs_pytorch_fid_eps_fallback(independent):
    """pytorch-fid's fallback: when sqrtm(Σ₁Σ₂) is not finite it retries with ε I added inside the square root only.

    scipy 1.17's sqrtm no longer returns non-finite roots for singular PSD products (older versions did, which is why
    pytorch-fid has the branch), so the first sqrtm call is made to report failure here, exactly as those versions
    did; the retry is pytorch-fid's own code with the real sqrtm. Its value is then our formula on
    (Σ₁ + εI, Σ₂ + εI) minus the 2Dε its traces leave out. On the singular matrices themselves ours is the exact value
    (the closed form, the covariances commuting), and pytorch-fid's differs from it by O(ε) per direction.
    """
    eps = 1e-6  # pytorch-fid's default
    rng = np.random.default_rng(2)
    d = 16
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    w1 = np.r_[rng.uniform(0.5, 2.0, d - 4), np.zeros(4)]
    w2 = np.r_[rng.uniform(0.5, 2.0, d - 4), np.zeros(4)]
    s1, s2 = basis @ np.diag(w1) @ basis.T, basis @ np.diag(w2) @ basis.T
    s1, s2 = 0.5 * (s1 + s1.T), 0.5 * (s2 + s2.T)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)

    fid_score = independent.fid_score
    real_linalg = fid_score.linalg
    calls = []

    def sqrtm(a, disp=True):
        calls.append(disp)
        if len(calls) == 1:  # the first attempt fails, as on older scipy
            nan = np.full_like(a, np.nan)
            return (nan, np.inf) if not disp else nan
        return real_linalg.sqrtm(a) if disp else real_linalg.sqrtm(a, disp=False)

    fid_score.linalg = types.SimpleNamespace(sqrtm=sqrtm)
    try:
        ref, fallback = _pytorch_fid_fd(fid_score, mu1, s1, mu2, s2)
    finally:
        fid_score.linalg = real_linalg
    assert fallback and len(calls) == 2
    off = eps * np.eye(d)
    ours_offset = frechet_distance(mu1, s1 + off, mu2, s2 + off) - 2 * d * eps
    assert ours_offset == pytest.approx(ref, rel=1e-9)
    exact = float((mu1 - mu2) @ (mu1 - mu2) + np.sum((np.sqrt(w1) - np.sqrt(w2)) ** 2))  # commuting: closed form
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-12)
    assert 0 < abs(ref - exact) <= 4 * d * eps  # sqrt((w1+ε)(w2+ε)) − sqrt(w1 w2) <= ε (w1+w2)/(2 sqrt(w1 w2)) + ε
    # and unforced, this scipy takes no fallback on these singular matrices and agrees with the exact value
    ref_plain, fallback_plain = _pytorch_fid_fd(fid_score, mu1, s1, mu2, s2)
    assert not fallback_plain and ref_plain == pytest.approx(exact, rel=1e-6)
