"""analytic_dpm.metrics: streaming statistics, Fréchet distance, KID, the FID Inception (synthetic weights), FD-LeNet.

Oracles: the closed form Σ(√a_k − √b_k)² + ‖Δμ‖² for co-diagonalisable covariances; for covariances built from
samples, S_1 = AᵀA and S_2 = BᵀB, the identity tr(S_1^½ S_2 S_1^½)^½ = ‖A Bᵀ‖_* (nuclear norm, an SVD of a small
matrix), exact also when n < D; scipy.linalg.sqrtm on well-conditioned SPD matrices; np.mean/np.cov in one pass;
an explicit double sum for the unbiased MMD².
"""

import hashlib

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st

from analytic_dpm.metrics import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_URL,
    FeatureExtractor,
    FeatureStatistics,
    InceptionV3Features,
    LeNetFeatures,
    all_gather_statistics,
    extract_features,
    fd_score,
    feature_statistics,
    frechet_distance,
    kid,
    kid_score,
    load_fid_inception,
    load_mu_sigma,
    polynomial_mmd2_unbiased,
    train_feature_classifier,
)
from analytic_dpm.metrics import inception as inception_module


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convolutions on a shared 2-core machine run far faster on one thread than on two contending ones."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _random_spd(rng, d, cond=10.0):
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    w = np.exp(rng.uniform(0.0, np.log(cond), size=d))
    return (q * w) @ q.T


def _nuclear_oracle(f1, f2):
    """FD of the sample Gaussians: ‖Δμ‖² + ‖A‖_F² + ‖B‖_F² − 2‖A Bᵀ‖_*, A = centred f1/√(n1−1), B likewise."""
    a = (f1 - f1.mean(0)) / np.sqrt(len(f1) - 1)
    b = (f2 - f2.mean(0)) / np.sqrt(len(f2) - 1)
    dm = f1.mean(0) - f2.mean(0)
    return dm @ dm + (a**2).sum() + (b**2).sum() - 2.0 * np.linalg.svd(a @ b.T, compute_uv=False).sum()


# ============================================================================================== Fréchet distance
def test_fd_zero_for_identical_statistics():
    rng = np.random.default_rng(0)
    for d in (1, 5, 40):
        mu, sigma = rng.normal(size=d), _random_spd(rng, d, cond=1e4)
        assert frechet_distance(mu, sigma, mu, sigma) <= 1e-10 * np.trace(sigma)
    f = rng.normal(size=(6, 30)) + 3.0  # rank 5 of 30
    s = FeatureStatistics.from_features(f)
    assert frechet_distance(s, s) <= 1e-10 * np.trace(s.cov)


def test_fd_symmetric_and_positive():
    rng = np.random.default_rng(1)
    for d in (3, 25):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_spd(rng, d, 100.0), _random_spd(rng, d, 100.0)
        a, b = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
        assert a > 0 and b > 0
        assert abs(a - b) <= 1e-10 * a


@given(
    data=st.data(),
    d=st.integers(1, 10),
)
def test_fd_closed_form_for_commuting_covariances(data, d):
    """Σ_1 = Q diag(a) Qᵀ, Σ_2 = Q diag(b) Qᵀ ⇒ FD = ‖μ_1 − μ_2‖² + Σ_k (√a_k − √b_k)², zeros in a, b included."""
    eig = st.one_of(st.just(0.0), st.floats(1e-6, 1e3))
    a = np.array(data.draw(st.lists(eig, min_size=d, max_size=d)))
    b = np.array(data.draw(st.lists(eig, min_size=d, max_size=d)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    scale = np.sum((mu1 - mu2) ** 2) + a.sum() + b.sum()
    # rounding: eigenvalues of Σ below D·ε·max are treated as 0, contributing at most √(D ε max) each
    tol = 1e-9 * scale + 2 * d * np.sqrt(d * 2.3e-16 * max(a.max(), b.max(), 1e-300)) * np.sqrt(scale)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert abs(got - expected) <= tol, (got, expected)


def test_fd_matches_scipy_sqrtm_on_well_conditioned_spd():
    rng = np.random.default_rng(2)
    for d in (2, 16, 48):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_spd(rng, d, 50.0), _random_spd(rng, d, 50.0)
        root = scipy.linalg.sqrtm(s1 @ s2)
        classic = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(classic, rel=1e-9)


@pytest.mark.parametrize("n,d", [(10, 50), (3, 64), (40, 40)])
def test_fd_stable_for_rank_deficient_covariances(n, d):
    """Fewer samples than dimensions: finite, real, non-negative and equal to the nuclear-norm oracle."""
    rng = np.random.default_rng(n * d)
    f1 = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 2.0
    f2 = 0.7 * rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) - 1.0
    s1, s2 = FeatureStatistics.from_features(f1), FeatureStatistics.from_features(f2)
    assert np.linalg.matrix_rank(s1.cov) == min(n - 1, d)
    value = frechet_distance(s1, s2)
    assert isinstance(value, float) and np.isfinite(value) and value >= 0.0
    assert value == pytest.approx(_nuclear_oracle(f1, f2), rel=1e-9)
    assert frechet_distance(s2, s1) == pytest.approx(value, rel=1e-9)
    assert frechet_distance(s1, s1) <= 1e-10 * np.trace(s1.cov)


def test_fd_accepts_statistics_pairs_and_torch():
    rng = np.random.default_rng(3)
    f1, f2 = rng.normal(size=(50, 4)), rng.normal(size=(60, 4)) + 0.5
    s1, s2 = FeatureStatistics.from_features(f1), FeatureStatistics.from_features(f2)
    ref = frechet_distance(s1.mean, s1.cov, s2.mean, s2.cov)
    assert frechet_distance(s1, s2) == ref
    assert frechet_distance((s1.mean, s1.cov), s2) == ref
    assert frechet_distance(torch.tensor(s1.mean), torch.tensor(s1.cov), s2.mean, s2.cov) == ref
    assert ref == pytest.approx(_nuclear_oracle(f1, f2), rel=1e-10)


def test_fd_rejects_bad_input():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match=r"sigma1 must be positive semi-definite.*-1"):
        frechet_distance(mu, np.diag([1.0, 1.0, -1.0]), mu, s)
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(3, 3\)"):
        frechet_distance(mu, s, mu, np.eye(2))
    with pytest.raises(ValueError, match=r"mu2 has dimension 2 but the other distribution has dimension 3"):
        frechet_distance(mu, s, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"sigma1 must be a symmetric"):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, s)
    with pytest.raises(ValueError, match=r"must be finite"):
        frechet_distance(np.array([0.0, np.nan, 0.0]), s, mu, s)
    with pytest.raises(TypeError, match=r"stats1 must be a FeatureStatistics or a \(mu, sigma\) pair"):
        frechet_distance("a", "b")


# ============================================================================================== statistics
@given(
    n=st.integers(2, 60),
    d=st.integers(1, 6),
    cuts=st.lists(st.integers(0, 60), max_size=8),
    seed=st.integers(0, 2**32 - 1),
    offset=st.sampled_from([0.0, 1e3]),
)
def test_streaming_statistics_equal_one_pass(n, d, cuts, seed, offset):
    """Random batch splits (empty batches included), merged in a random tree, equal np.mean / np.cov."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=d) + offset
    bounds = [0, *sorted(c % (n + 1) for c in cuts), n]
    parts = [FeatureStatistics(d).update(f[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    # streaming into one object
    one = FeatureStatistics()
    for a, b in zip(bounds[:-1], bounds[1:]):
        one.update(torch.from_numpy(f[a:b]) if rng.random() < 0.5 else f[a:b])
    # merging in a random binary tree
    while len(parts) > 1:
        i = int(rng.integers(len(parts) - 1))
        parts[i : i + 2] = [parts[i].merge(parts[i + 1])]
    tree = parts[0]
    ref_mean, ref_cov = f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))
    scale = np.max(np.abs(ref_cov))
    for s in (one, tree):
        assert s.count == n
        np.testing.assert_allclose(s.mean, ref_mean, rtol=1e-12, atol=1e-12 * (1 + offset))
        np.testing.assert_allclose(s.cov, ref_cov, rtol=1e-10, atol=1e-11 * scale)


def test_merge_is_associative_and_leaves_inputs_unchanged():
    rng = np.random.default_rng(4)
    a, b, c = (FeatureStatistics.from_features(rng.normal(size=(k, 5)) + k) for k in (3, 17, 40))
    before = (a.count, a.mean, a.comoment)
    left, right = (a.merge(b)).merge(c), a.merge(b.merge(c))
    np.testing.assert_allclose(left.comoment, right.comoment, rtol=1e-12)
    np.testing.assert_allclose((a + b + c).mean, right.mean, rtol=1e-13)
    assert a.count == before[0] and np.array_equal(a.mean, before[1]) and np.array_equal(a.comoment, before[2])
    assert FeatureStatistics.merge_all([a, b, c]).count == 60
    assert FeatureStatistics().merge(a).count == 3 and a.merge(FeatureStatistics(5)).count == 3


def test_statistics_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    s = FeatureStatistics.from_features(rng.normal(size=(30, 7)))
    path = s.save(tmp_path / "ref")
    assert path.name == "ref.npz"
    t = FeatureStatistics.load(path)
    assert t.count == 30 and np.array_equal(t.mean, s.mean) and np.array_equal(t.comoment, s.comoment)
    mu, sigma = load_mu_sigma(path)
    assert np.array_equal(mu, s.mean) and np.array_equal(sigma, s.cov)
    # pytorch-fid style files ('mu', 'sigma') are read by load_mu_sigma, refused (with a pointer) by load
    np.savez(tmp_path / "fid_stats.npz", mu=s.mean, sigma=s.cov)
    mu2, sigma2 = load_mu_sigma(tmp_path / "fid_stats.npz")
    assert np.array_equal(sigma2, s.cov)
    with pytest.raises(ValueError, match=r"pytorch-fid format.*load_mu_sigma"):
        FeatureStatistics.load(tmp_path / "fid_stats.npz")


def test_statistics_errors():
    s = FeatureStatistics.from_features(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"cov \(unbiased, divides by n - 1\) needs at least 2"):
        s.cov
    with pytest.raises(ValueError, match=r"features must have 3 columns"):
        s.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"features must have shape \(batch, dim\).*reshape"):
        s.update(np.ones((2, 3, 1)))
    with pytest.raises(ValueError, match=r"features must be finite.*\[\[0, 1\]\]"):
        s.update(np.array([[0.0, np.inf, 0.0]]))
    with pytest.raises(ValueError, match=r"cannot merge statistics of dimension 3 with statistics of dimension 2"):
        s.merge(FeatureStatistics(2))
    with pytest.raises(ValueError, match=r"mean needs at least 1"):
        FeatureStatistics().mean


def test_all_gather_statistics_single_process(tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        s = FeatureStatistics.from_features(np.random.default_rng(6).normal(size=(9, 4)))
        g = all_gather_statistics(s)
        assert g.count == 9 and np.array_equal(g.mean, s.mean) and np.array_equal(g.comoment, s.comoment)
    finally:
        dist.destroy_process_group()


def _gather_worker(rank, world, store, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    f = np.random.default_rng(7).normal(size=(25, 3))
    shard = FeatureStatistics(3).update(f[rank::world])
    g = all_gather_statistics(shard)
    np.savez(f"{out}_{rank}.npz", mean=g.mean, cov=g.cov, count=g.count)
    dist.destroy_process_group()


@pytest.mark.slow
def test_all_gather_statistics_two_ranks(tmp_path):
    """Two gloo ranks with different shards both return the statistics of the whole set."""
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2, join=True)
    f = np.random.default_rng(7).normal(size=(25, 3))
    for r in range(2):
        z = np.load(tmp_path / f"out_{r}.npz")
        assert int(z["count"]) == 25
        np.testing.assert_allclose(z["cov"], np.cov(f, rowvar=False), rtol=1e-12)


# ============================================================================================== KID
def test_polynomial_mmd_matches_explicit_double_sum():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
    k = lambda a, b: (a @ b / 3 + 1.0) ** 3  # noqa: E731
    m = 7
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    res = kid(x, y, subsets=3, subset_size=7, seed=0)  # whole sets: every subset gives the same value
    np.testing.assert_allclose(res.values, xx + yy - 2 * xy, rtol=1e-12)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(9)
    d = 16
    a, b = rng.normal(size=(600, d)), rng.normal(size=(600, d))
    same = kid(a, b, subsets=30, subset_size=200, seed=1)
    # unbiased: |mean| within 3 spreads of a single-subset estimate (the subsets overlap, so std bounds the error)
    assert abs(same.mean) < 3 * same.std
    shifted = kid(a, b + 0.5, subsets=30, subset_size=200, seed=1)
    assert shifted.mean > 0 and shifted.mean > 5 * shifted.std
    assert shifted.mean > 20 * abs(same.mean)


def test_kid_errors():
    with pytest.raises(ValueError, match=r"subset_size must be at most .*n1 = 5"):
        kid(np.zeros((5, 2)), np.zeros((8, 2)), subset_size=6)
    with pytest.raises(ValueError, match=r"features2 must have 2 columns"):
        kid(np.zeros((5, 2)), np.zeros((5, 3)))


# ============================================================================================== Inception (FID)
@pytest.fixture(scope="module")
def synthetic_inception(tmp_path_factory):
    """An InceptionV3Features with random, non-trivial weights, saved as a state dict under the official file name."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = InceptionV3Features()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # make the batch norms non-trivial so the loaded values matter
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(1.5, 2.0)
    path = tmp_path_factory.mktemp("inception") / FID_WEIGHTS_FILENAME
    torch.save(model.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return model, path, digest


def test_inception_architecture_matches_the_weights_file_layout():
    """566 entries (94 conv+bn units × 6, plus fc), torchvision-compatible names, 23,850,960 parameters.

    The parameter count is torchvision's inception_v3 (27,161,264) minus its auxiliary head (3,326,696) plus the 8
    extra classes of the TensorFlow graph (8 × 2048 + 8).
    """
    sd = InceptionV3Features().state_dict()
    assert len(sd) == 566
    assert sum(p.numel() for p in InceptionV3Features().parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    assert tuple(sd["fc.weight"].shape) == (1008, 2048)
    assert tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape) == (192, 192, 1, 7)
    assert tuple(sd["Mixed_7a.branch7x7x3_4.conv.weight"].shape) == (192, 192, 3, 3)
    assert tuple(sd["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape) == (384,)
    assert "Mixed_7c.branch_pool.bn.num_batches_tracked" in sd
    assert not any(k.startswith("AuxLogits") for k in sd)


def test_inception_loads_synthetic_weights_and_outputs_2048(synthetic_inception):
    model, path, digest = synthetic_inception
    loaded = load_fid_inception(path, expected_sha256=digest)
    assert loaded.weights_sha256 == digest
    assert loaded.metric_name == f"FD-Inception-{digest[:8]}" and loaded.metric_name != "FID"
    assert isinstance(loaded, FeatureExtractor) and loaded.feature_dim == 2048
    # the loaded network is the saved one (checked without the 299 resize, on a small input, for speed)
    loaded.resize_input = model.resize_input = False
    x = torch.rand(2, 3, 75, 75) * 2 - 1
    with torch.no_grad():
        ref, got = model(x), loaded(x)
    assert got.shape == (2, 2048) and torch.isfinite(got).all() and got.abs().max() > 0
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    # grayscale input is repeated to 3 channels
    g = x[:, :1]
    with torch.no_grad():
        torch.testing.assert_close(loaded(g), loaded(g.repeat(1, 3, 1, 1)))
    # 8×8 digits are resized to 299 × 299 (the default)
    loaded.resize_input = model.resize_input = True
    with torch.no_grad():
        out = loaded(torch.rand(1, 1, 8, 8) * 2 - 1)
    assert out.shape == (1, 2048) and torch.isfinite(out).all()


def test_inception_refuses_wrong_hash_and_missing_file(synthetic_inception, tmp_path):
    _, path, digest = synthetic_inception
    with pytest.raises(ValueError, match=r"does not start with 6726825d") as err:
        load_fid_inception(path)  # the synthetic file is not the published one
    msg = str(err.value)
    assert FID_WEIGHTS_FILENAME in msg and FID_WEIGHTS_URL in msg and "Nothing is downloaded" in msg
    wrong = "0" * 64 if not digest.startswith("0") else "f" * 64
    with pytest.raises(ValueError, match=r"expected 0{64}|expected f{64}"):
        load_fid_inception(path, expected_sha256=wrong)
    with pytest.raises(ValueError, match=r"expected_sha256 must be 8 to 64 hex digits"):
        load_fid_inception(path, expected_sha256="abc")
    with pytest.raises(FileNotFoundError, match=r"does not exist.*pytorch-fid.*Nothing is downloaded") as err:
        load_fid_inception(tmp_path / FID_WEIGHTS_FILENAME)
    assert FID_WEIGHTS_URL in str(err.value)
    # a file with the right hash but the wrong tensors is refused before anything is loaded into the model
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match=r"does not match the FID InceptionV3 architecture.*missing keys"):
        load_fid_inception(bad, expected_sha256=hashlib.sha256(bad.read_bytes()).hexdigest()[:8])


def test_only_the_verified_inception_is_called_fid(synthetic_inception, monkeypatch):
    _, path, digest = synthetic_inception
    monkeypatch.setattr(inception_module, "FID_WEIGHTS_SHA256", digest)
    monkeypatch.setattr(inception_module, "FID_WEIGHTS_SHA256_PREFIX", digest[:8])
    assert load_fid_inception(path).metric_name == "FID"  # what the published file gets

    class Impostor(torch.nn.Module):
        metric_name = "FID"
        feature_dim = 4

        def forward(self, x):
            return x.flatten(1)[:, :4]

    x = np.random.default_rng(0).uniform(-1, 1, size=(10, 1, 2, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"only the pytorch-fid InceptionV3 .* may report FID"):
        fd_score(Impostor(), x, x)


# ============================================================================================== FD-LeNet
def _digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    u = np.round(d.data * 255.0 / 16.0)  # 0..16 → 8-bit
    x = (u / 127.5 - 1.0).reshape(-1, 1, 8, 8).astype(np.float32)
    return x, d.target.astype(np.int64)


@pytest.fixture(scope="module")
def digits_lenet():
    x, y = _digits()
    model, acc = train_feature_classifier(x, y, steps=150, seed=0, width=16, feature_dim=64, lr=5e-3)
    return x, y, model, acc


def test_lenet_trains_on_digits(digits_lenet):
    x, y, model, acc = digits_lenet
    assert acc > 0.90
    assert model.metric_name == "FD-LeNet" and model.test_accuracy == acc
    assert model(torch.from_numpy(x[:5])).shape == (5, 64)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 8, 8\)"):
        model(torch.zeros(2, 1, 28, 28))


def test_lenet_save_load_round_trip(digits_lenet, tmp_path):
    x, _, model, acc = digits_lenet
    path = model.save(tmp_path / "lenet.pt", test_accuracy=acc, metadata={"data": "digits"})
    loaded = LeNetFeatures.load(path)
    assert loaded.test_accuracy == acc and loaded.metadata == {"data": "digits"}
    xb = torch.from_numpy(x[:16])
    with torch.no_grad():
        assert torch.equal(loaded(xb), model(xb))
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"is not a LeNetFeatures file"):
        LeNetFeatures.load(tmp_path / "other.pt")


def test_fd_lenet_digits_halves_small_against_noise(digits_lenet):
    x, _, model, _ = digits_lenet
    perm = np.random.default_rng(0).permutation(len(x))
    half1, half2 = x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]
    noise = np.random.default_rng(1).uniform(-1, 1, size=half2.shape).astype(np.float32)
    ref = feature_statistics(model, half1, batch_size=300)
    same = fd_score(model, ref, half2)
    other = fd_score(model, ref, noise)
    assert same.name == other.name == "FD-LeNet"
    assert same.n_reference == len(half1) and same.n_samples == len(half2) and same.feature_dim == 64
    assert 0 < same.value < 0.05 * other.value
    assert "FD-LeNet" in str(same)
    k_same = kid_score(model, half1, half2, subsets=10, subset_size=300)
    k_noise = kid_score(model, half1, noise, subsets=10, subset_size=300)
    assert k_same.name == "KD-LeNet" and k_noise.value > 10 * abs(k_same.value)


def test_feature_statistics_streams_any_batching(digits_lenet):
    x, y, model, _ = digits_lenet
    feats = extract_features(model, x[:300], batch_size=64)
    ref_cov = np.cov(feats, rowvar=False)
    a = feature_statistics(model, x[:300], batch_size=7)
    b = feature_statistics(model, ((x[i : i + 100], y[i : i + 100]) for i in range(0, 300, 100)))  # (images, labels)
    c = feature_statistics(model, [torch.from_numpy(x[:150]), x[150:300]])
    for s in (a, b, c):
        assert s.count == 300
        np.testing.assert_allclose(s.mean, feats.mean(0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(s.cov, ref_cov, rtol=1e-5, atol=1e-6 * np.abs(ref_cov).max())
    assert model.training is False


def test_feature_statistics_rejects_unscaled_images(digits_lenet):
    x, _, model, _ = digits_lenet
    with pytest.raises(TypeError, match=r"floating point in \[-1, 1\].*u / 127.5 - 1"):
        feature_statistics(model, np.zeros((4, 1, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"scaled to \[-1, 1\].*max \|x\| = 255"):
        feature_statistics(model, np.full((4, 1, 8, 8), 255.0, dtype=np.float32))
    with pytest.raises(TypeError, match=r"FeatureExtractor protocol"):
        feature_statistics(lambda t: t, x)


def test_frechet_bootstrap_spreads_and_pairing_cancels_shared_noise():
    """The bootstrap spread of FD shrinks like 1/√B; for two paired sets that differ only by a small shift the
    paired spread of the difference is far below either distance's own spread (the shared noise cancels)."""
    from analytic_dpm.metrics import (FeatureStatistics, frechet_distance, frechet_distance_bootstrap,
                                      frechet_distance_paired_bootstrap)

    rng = np.random.default_rng(0)
    ref = FeatureStatistics.from_features(rng.standard_normal((20000, 4)))
    small, large = rng.standard_normal((200, 4)), rng.standard_normal((3200, 4))
    s_small = np.std(frechet_distance_bootstrap(ref, small + 0.5, 100, seed=1), ddof=1)
    s_large = np.std(frechet_distance_bootstrap(ref, large + 0.5, 100, seed=1), ddof=1)
    assert 2.0 < s_small / s_large < 8.0  # √16 = 4 expected
    a = small + 0.5
    b = small + 0.52
    reps = frechet_distance_paired_bootstrap(ref, a, b, 100, seed=2)
    assert np.std(reps, ddof=1) < 0.2 * s_small
    want = frechet_distance(ref, FeatureStatistics.from_features(a)) - frechet_distance(
        ref, FeatureStatistics.from_features(b))
    assert abs(np.mean(reps) - want) < 5 * np.std(reps, ddof=1)
    with pytest.raises(ValueError, match="paired"):
        frechet_distance_paired_bootstrap(ref, a, b[:10])
