"""evaluate_pretrained (Γ → bound → FD, resumable) on a tiny network, CIFAR10's binary reader, the cifar10 target."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from analytic_dpm.data import load_cifar10
from analytic_dpm.metrics import LeNetFeatures
from analytic_dpm.models import TorchEpsModel, UNet, UNetConfig
from analytic_dpm.pretrained_eval import PretrainedEvalConfig, evaluate_pretrained
from analytic_dpm.schedules import Schedule


def _write_cifar(root, per_file=3, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    recs = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = np.concatenate([rng.integers(0, 10, (per_file, 1)), rng.integers(0, 256, (per_file, 3072))], axis=1)
        rec.astype(np.uint8).tofile(root / name)
        recs[name] = rec.astype(np.uint8)
    return recs


def test_load_cifar10_binary(tmp_path):
    recs = _write_cifar(tmp_path / "cifar-10-batches-bin")
    train = load_cifar10("train", root=tmp_path / "cifar-10-batches-bin")
    test = load_cifar10("test", root=tmp_path / "cifar-10-batches-bin")
    assert train.images.shape == (15, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    r = recs["data_batch_2.bin"][1]
    np.testing.assert_array_equal(train.labels[4], r[0])
    np.testing.assert_array_equal(train.uint8()[4, 1].ravel(), r[1 + 1024:1 + 2048])  # the G plane
    assert train.images.min() >= -1 and train.images.max() <= 1


def test_load_cifar10_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("ANALYTIC_DPM_CIFAR10", raising=False)
    with pytest.raises(FileNotFoundError, match="binary version.*ANALYTIC_DPM_CIFAR10"):
        load_cifar10("train", root=tmp_path)
    _write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="not a multiple of the 3073-byte"):
        load_cifar10("test", root=tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_cifar10("val", root=tmp_path)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=1, image_size=8, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                          attention_resolutions=()))
    sched = Schedule.linear(40)
    eps = TorchEpsModel(net.eval(), timestep_map="n", schedule=sched, batch_size=64)
    rng = np.random.default_rng(0)
    imgs = (rng.integers(0, 256, (24, 1, 8, 8)) / 127.5 - 1).astype(np.float32)
    torch.manual_seed(1)
    extractor = LeNetFeatures(in_channels=1, image_size=8, feature_dim=6).eval()
    return eps, sched, imgs, extractor


def saved_keys_ok(out):
    g = json.loads((out / "results.json").read_text())["gamma"]
    return {"residual_min", "residual_max", "one_minus_gamma_direct_below_zero"} <= set(g) and g["residual_min"] > 0


CFG = PretrainedEvalConfig(Ks=(3, 5), gamma_samples=8, nll_images=4, ot_images=3, fid_samples=10, batch_size=16,
                           seed=3)


def test_evaluate_pretrained_tables_and_resume(tiny, tmp_path):
    eps, sched, imgs, extractor = tiny
    logs = []
    res = evaluate_pretrained(eps, sched, imgs[:16], imgs[16:], tmp_path, CFG, extractor=extractor, log=logs.append)
    assert set(res.nll_bits_per_dim) == {"ET ddpm-small", "ET ddpm-large", "ET analytic-ddpm", "ET residual-ddpm",
                                         "OT ddpm-large", "OT analytic-ddpm", "OT(R) residual-ddpm"}
    assert res.gamma.residual is not None and saved_keys_ok(tmp_path)
    for d in res.nll_bits_per_dim.values():
        assert set(d) == {3, 5} and all(np.isfinite(v) and v > 0 for v in d.values())
    assert set(res.fd) == set(CFG.methods)
    assert all(np.isfinite(v) and v >= 0 for d in res.fd.values() for v in d.values())
    assert res.metric_name == "FD-LeNet"  # a stand-in is never called FID
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["fd"]["analytic-ddpm"]["3"] == res.fd["analytic-ddpm"][3]
    assert "FD-LeNet" in (tmp_path / "tables.md").read_text()
    # the analytic rows use Γ̂ of the same run, the ET baselines do not depend on it
    assert (tmp_path / "gamma.npz").exists() and len(list((tmp_path / "samples").glob("*.npy"))) == 14
    # resume: Γ, reference statistics and samples are read back, not recomputed, and the numbers agree exactly
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "samples").glob("*.npy")}
    g_stamp = (tmp_path / "gamma.npz").stat().st_mtime_ns
    again = evaluate_pretrained(eps, sched, imgs[:16], imgs[16:], tmp_path, CFG, extractor=extractor,
                                log=logs.append)
    assert again.fd == res.fd and again.nll_bits_per_dim == res.nll_bits_per_dim
    assert (tmp_path / "gamma.npz").stat().st_mtime_ns == g_stamp
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "samples").glob("*.npy")} == stamp


def test_evaluate_pretrained_errors(tiny, tmp_path):
    eps, sched, imgs, _ = tiny
    with pytest.raises(ValueError, match="train_images holds 16 images but the configuration needs 100"):
        evaluate_pretrained(eps, sched, imgs[:16], imgs[16:], tmp_path,
                            PretrainedEvalConfig(gamma_samples=100, nll_images=0, fid_samples=0))
    with pytest.raises(TypeError, match="config must be a PretrainedEvalConfig"):
        evaluate_pretrained(eps, sched, imgs, imgs, tmp_path, {"Ks": (3,)})
    with pytest.raises(ValueError, match="config.methods must be drawn from"):
        evaluate_pretrained(eps, sched, imgs, imgs, tmp_path, PretrainedEvalConfig(methods=("ddpm",)))


def test_cifar10_target_lists_what_is_missing(tmp_path, monkeypatch):
    from paper import cifar10

    monkeypatch.setenv("ADPM_CHECKPOINTS", str(tmp_path / "ckpts"))
    monkeypatch.setenv("ANALYTIC_DPM_CIFAR10", str(tmp_path / "cifar"))
    monkeypatch.delenv("ANALYTIC_DPM_FID_WEIGHTS", raising=False)
    _write_cifar(tmp_path / "cifar")
    [path] = cifar10.run(tmp_path, fast=False)
    text = path.read_text()
    assert "MISSING: checkpoint ls" in text and "400000.ckpt.pth" in text and "found: cifar10" in text
    assert "MISSING: inception" in text and "ANALYTIC_DPM_FID_WEIGHTS" in text


def test_reproduction_conventions_are_the_official_ones(tiny, tmp_path):
    """evaluate_pretrained computes Table 1 as the paper did: the decoder with the official tanh CDF and the even
    trajectory with the official rounding (the defaults of PretrainedEvalConfig); 'exact' is one option away."""
    from analytic_dpm.image_likelihood import collect_bound_statistics
    from analytic_dpm.trajectories import even_trajectory

    eps, sched, imgs, _ = tiny
    cfg = PretrainedEvalConfig(Ks=(3,), gamma_samples=8, nll_images=4, ot_images=0, fid_samples=0, batch_size=16,
                               seed=3)
    assert (cfg.decoder_cdf, cfg.trajectory_rounding) == ("tanh", "official")
    res = evaluate_pretrained(eps, sched, imgs[:16], imgs[16:], tmp_path / "a", cfg, log=lambda *a: None)
    traj = even_trajectory(sched.N, 3, rounding="official")
    by = {cdf: collect_bound_statistics(eps, sched, traj, imgs[16:20], seed=3, batch_size=16, cdf=cdf,
                                        progress=False).bound("ddpm-large").bits_per_dim for cdf in ("tanh", "exact")}
    assert res.nll_bits_per_dim["ET ddpm-large"][3] == by["tanh"] != by["exact"]
    exact = evaluate_pretrained(eps, sched, imgs[:16], imgs[16:], tmp_path / "b",
                                dataclasses.replace(cfg, decoder_cdf="exact"), log=lambda *a: None)
    assert exact.nll_bits_per_dim["ET ddpm-large"][3] == by["exact"]
    saved = json.loads((tmp_path / "a" / "results.json").read_text())["config"]
    assert saved["decoder_cdf"] == "tanh" and saved["trajectory_rounding"] == "official"
    for bad in (dict(decoder_cdf="erf"), dict(trajectory_rounding="up")):
        with pytest.raises(ValueError, match="config.(decoder_cdf|trajectory_rounding) must be"):
            evaluate_pretrained(eps, sched, imgs[:16], imgs[16:], tmp_path / "c", dataclasses.replace(cfg, **bad))
