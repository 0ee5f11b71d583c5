"""Tests for analytic_dpm.models.training: the ε-MSE loss decreasing on digits, EMA, checkpoints loadable with
weights_only=True, and resume-after-interrupt bit-identical to an uninterrupted run (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analytic_dpm.data import load_digits
from analytic_dpm.models.protocol import TorchEpsModel
from analytic_dpm.models.training import (
    CHECKPOINT_FORMAT,
    _DataOrder,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    read_model_file,
    save_model,
    train,
)
from analytic_dpm.models.unet import UNet, UNetConfig
from analytic_dpm.schedules import Schedule

SCHED = Schedule.linear(1000)
TINY = UNetConfig(image_size=8, channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(4,), dropout=0.1)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny networks run faster on one thread, and far faster when the cores are shared (no OpenMP spin-waits)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits():
    return load_digits().images


def _net(seed=0, config=TINY):
    torch.manual_seed(seed)
    return UNet(config)


def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


KW = dict(batch_size=16, lr=1e-3, ema_decay=0.9, seed=7, device="cpu", progress=False)


def test_loss_decreases_on_digits(digits):
    res = train(_net(), digits, SCHED, steps=40, batch_size=64, lr=3e-3, seed=0, device="cpu", progress=False,
                warmup=5)
    assert res.losses.shape == (40,) and res.step == 40
    # an untrained U-Net predicts ε̂ = 0 (zero-initialised output), so the loss starts at E ε² = 1 (± a few %)
    assert 0.85 < res.losses[:3].mean() < 1.15
    assert res.losses[-10:].mean() < 0.75 * res.losses[:5].mean()
    assert not res.ema.training and not any(p.requires_grad for p in res.ema.parameters())
    out = TorchEpsModel(res.ema)(digits[:4].astype(np.float64), 500)
    assert out.shape == (4, 1, 8, 8) and np.isfinite(out).all()


def test_training_is_reproducible_and_leaves_the_global_rng_alone(digits):
    before = torch.get_rng_state()
    a = train(_net(), digits, SCHED, steps=3, **KW)
    assert torch.equal(torch.get_rng_state(), before)
    b = train(_net(), digits, SCHED, steps=3, **KW)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert _states_equal(a.net, b.net) and _states_equal(a.ema, b.ema)
    c = train(_net(), digits, SCHED, steps=3, **{**KW, "seed": 8})
    assert not np.array_equal(a.losses, c.losses)


def test_ema_follows_its_recursion(digits):
    """θ_ema,0 = θ_0; θ_ema,k = d·θ_ema,k−1 + (1 − d)·θ_k with d = ema_decay when ema_warmup is off."""
    net = _net()
    snaps = [{k: v.clone() for k, v in net.state_dict().items()}]
    res = train(net, digits, SCHED, steps=3, ema_warmup=False, callback=lambda s, l: snaps.append(
        {k: v.clone() for k, v in net.state_dict().items()}), **KW)
    d = KW["ema_decay"]
    ema = {k: v.clone() for k, v in snaps[0].items()}
    for snap in snaps[1:]:
        for k in ema:
            if ema[k].is_floating_point():
                ema[k] = d * ema[k] + (1 - d) * snap[k]
    got = res.ema.state_dict()
    for k in ema:
        torch.testing.assert_close(got[k], ema[k], rtol=1e-5, atol=1e-7)
    assert not _states_equal(res.ema, res.net)
    same = train(_net(), digits, SCHED, steps=2, **{**KW, "ema_decay": 0.0})
    assert _states_equal(same.ema, same.net)


class Stop(Exception):
    pass


def _stop_at(k):
    def cb(step, loss):
        if step == k:
            raise Stop

    return cb


def test_resume_after_interrupt_is_bit_identical(digits, tmp_path):
    full = train(_net(), digits, SCHED, steps=6, **KW)
    ck = tmp_path / "run"
    with pytest.raises(Stop):
        train(_net(), digits, SCHED, steps=6, checkpoint_dir=ck, checkpoint_every=2, callback=_stop_at(3), **KW)
    # the periodic checkpoint at 2 and the one written on the interrupt at 3
    assert [p.name for p in list_checkpoints(ck)] == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    # a different initial network: everything must come from the checkpoint
    resumed = train(_net(seed=99), digits, SCHED, steps=6, checkpoint_dir=ck, checkpoint_every=2, **KW)
    assert resumed.resumed_from == 3 and resumed.step == 6
    np.testing.assert_array_equal(resumed.losses, full.losses)
    assert _states_equal(resumed.net, full.net) and _states_equal(resumed.ema, full.ema)
    assert latest_checkpoint(ck).name == "ckpt_00000006.pt"
    assert len(list_checkpoints(ck)) == 2  # keep_checkpoints


def test_extending_a_finished_run_equals_one_longer_run(digits, tmp_path):
    full = train(_net(), digits, SCHED, steps=5, **KW)
    ck = tmp_path / "run"
    first = train(_net(), digits, SCHED, steps=2, checkpoint_dir=ck, **KW)
    assert first.checkpoint.name == "ckpt_00000002.pt"
    second = train(_net(), digits, SCHED, steps=5, checkpoint_dir=ck, **KW)
    np.testing.assert_array_equal(second.losses, full.losses)
    assert _states_equal(second.ema, full.ema) and _states_equal(second.net, full.net)
    # a finished run called again does nothing more
    again = train(_net(), digits, SCHED, steps=5, checkpoint_dir=ck, **KW)
    assert again.resumed_from == 5 and _states_equal(again.ema, full.ema)


def test_checkpoint_loads_with_weights_only_and_holds_the_run(digits, tmp_path):
    res = train(_net(), digits, SCHED, steps=2, checkpoint_dir=tmp_path, **KW)
    raw = torch.load(res.checkpoint, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["step"] == 2
    assert set(raw) >= {"model", "ema", "optimizer", "losses", "rng", "config"}
    cfg = json.loads(raw["config"])
    assert cfg["seed"] == KW["seed"] and cfg["net_config"] == TINY.to_dict() and cfg["schedule"]["N"] == 1000
    assert raw["losses"].dtype == torch.float64 and raw["losses"].tolist() == res.losses.tolist()
    assert raw["rng"] == {"seed": KW["seed"], "step": 2}
    net = UNet(UNetConfig.from_dict(cfg["net_config"]))
    net.load_state_dict(raw["ema"])
    assert _states_equal(net, res.ema)
    opt = torch.optim.AdamW(net.parameters())
    opt.load_state_dict(raw["optimizer"])
    assert load_checkpoint(res.checkpoint)["config"]["batch_size"] == KW["batch_size"]


def test_resume_refuses_a_checkpoint_from_other_settings(digits, tmp_path):
    train(_net(), digits, SCHED, steps=2, checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="lr: checkpoint 0.001 vs now 0.002"):
        train(_net(), digits, SCHED, steps=4, checkpoint_dir=tmp_path, **{**KW, "lr": 2e-3})
    with pytest.raises(ValueError, match="data"):
        train(_net(), digits[:100], SCHED, steps=4, checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="fewer than the 2 steps"):
        train(_net(), digits, SCHED, steps=1, checkpoint_dir=tmp_path, **KW)
    fresh = train(_net(), digits, SCHED, steps=1, checkpoint_dir=tmp_path, resume=False, **{**KW, "lr": 2e-3})
    assert fresh.resumed_from == 0


def test_save_and_load_model_round_trip(digits, tmp_path):
    res = train(_net(), digits, SCHED, steps=2, **KW)
    p = save_model(res.ema, tmp_path / "ema.pt", metadata={"steps": 2})
    raw = torch.load(p, weights_only=True)
    assert set(raw) >= {"state_dict", "config", "metadata"}
    net = load_model(p)
    assert isinstance(net, UNet) and net.config == TINY and not net.training
    assert _states_equal(net, res.ema)
    assert read_model_file(p)["metadata"] == {"steps": 2}
    same = load_model(p, config=TINY.to_dict())
    assert _states_equal(same, res.ema)
    into = load_model(p, net=UNet(TINY))
    assert _states_equal(into, res.ema)
    half = save_model(res.ema, tmp_path / "ema16.pt", half=True)
    assert half.stat().st_size < 0.6 * p.stat().st_size
    net16 = load_model(half)
    for a, b in zip(net16.parameters(), res.ema.parameters()):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    ckpt = train(_net(), digits, SCHED, steps=1, checkpoint_dir=tmp_path / "c", **KW).checkpoint
    with pytest.raises(ValueError, match="not a model file"):
        load_model(ckpt)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_checkpoint(p)


def test_trained_model_plugs_into_gamma_and_sampling(digits):
    """The wrapped EMA network follows the protocol the library's Γ estimator and sampler expect."""
    from analytic_dpm.gamma import estimate_gamma
    from analytic_dpm.sampling import sample
    from analytic_dpm.trajectories import even_trajectory

    res = train(_net(), digits, SCHED, steps=3, **KW)
    model = TorchEpsModel(res.ema, "n", schedule=SCHED)
    traj = even_trajectory(SCHED.N, 4)
    est = estimate_gamma(model, SCHED, digits[:64].astype(np.float64), timesteps=traj[1:], batch_size=32)
    assert np.isfinite(est.gamma[traj[1:]]).all() and (est.gamma[traj[1:]] >= 0).all()
    est_t = estimate_gamma(model, SCHED, torch.from_numpy(digits[:64]), timesteps=[500], batch_size=64)
    assert np.isfinite(est_t.gamma[500])
    x_np = sample(model, SCHED, traj, "analytic-ddpm", 3, (1, 8, 8), gamma=est.gamma, clip_x0=True)
    x_t = sample(model, SCHED, traj, "ddim", 3, (1, 8, 8), backend="torch", clip_x0=True)
    assert x_np.shape == (3, 1, 8, 8) and isinstance(x_t, torch.Tensor) and x_t.shape == (3, 1, 8, 8)


def test_data_order_visits_every_image_once_per_epoch():
    order = _DataOrder(10, seed=3)
    idx = np.concatenate([order.indices(k, 4) for k in range(5)])  # 20 positions = 2 epochs, batches straddle
    assert sorted(idx[:10].tolist()) == list(range(10)) and sorted(idx[10:].tolist()) == list(range(10))
    assert idx[:10].tolist() != idx[10:].tolist()
    np.testing.assert_array_equal(_DataOrder(10, seed=3).indices(3, 4), idx[12:16])


def test_train_argument_checks(digits):
    with pytest.raises(TypeError, match="nn.Module"):
        train(lambda x, t: x, digits, SCHED, steps=1)
    with pytest.raises(ValueError, match="ema_decay"):
        train(_net(), digits, SCHED, steps=1, ema_decay=1.0)
    with pytest.raises(TypeError, match="floating point"):
        train(_net(), (digits * 100).astype(np.int64), SCHED, steps=1)
    with pytest.raises(ValueError, match="device"):
        train(_net(), digits, SCHED, steps=1, device="gpu0")
