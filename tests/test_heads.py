"""Tests for analytic_dpm.models.heads (SN-DPM / NPR-DPM second heads on a frozen ε-network, facts file §6.2), the
stage-2 objectives of train() and the headed-model protocol of TorchEpsModel / TorchHeadedModel.

Independent checks: the losses against numpy loops; the captured features against the backbone's own output block
(a head given a copy of the backbone's final GroupNorm/conv weights must reproduce ε̂ exactly, for every supported
network class); on pure-noise data (x_0 ≡ 0) E[ε² | x_n] = x_n²/β̄_n is known exactly, and the trained SN head must
approach it far better than any x-independent head can.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from analytic_dpm.models import TorchEpsModel, TorchHeadedModel, UNet, UNetConfig, train
from analytic_dpm.models.foreign import DDPMUNet, DDPMUNetConfig, DiffusersUNetAdapter, ImprovedUNet, ImprovedUNetConfig
from analytic_dpm.models.heads import (
    HEAD_FORMAT,
    HeadedNet,
    attach_head,
    load_headed,
    npr_loss,
    read_headed,
    save_headed,
    sn_loss,
)
from analytic_dpm.models.training import _STEP_TAG, _seed_int, list_checkpoints, load_checkpoint
from analytic_dpm.schedules import Schedule

SCHED = Schedule.linear(1000)
TINY = UNetConfig(image_size=8, channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(4,), dropout=0.1)
KW = dict(batch_size=16, lr=1e-3, ema_decay=0.9, seed=7, device="cpu", progress=False)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _randomize(net, seed=0, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net


def _backbone(seed=0, config=TINY):
    torch.manual_seed(seed)
    return _randomize(UNet(config), seed).eval()  # a non-zero conv_out, so ε̂ ≠ 0


@pytest.fixture(scope="module")
def digits():
    from analytic_dpm.data import load_digits

    return load_digits().images[:256]


def _x(shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _states_equal(a: dict, b: dict):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _copy_output_block(headed: HeadedNet, norm: nn.GroupNorm, conv: nn.Conv2d, channels: int):
    """Give the head the backbone's own final GroupNorm and conv: it must then output ε̂."""
    with torch.no_grad():
        headed.out2.norm.weight.copy_(norm.weight)
        headed.out2.norm.bias.copy_(norm.bias)
        headed.out2.conv.weight.copy_(conv.weight[:channels])
        headed.out2.conv.bias.copy_(conv.bias[:channels])
    assert headed.out2.norm.num_groups == norm.num_groups and headed.out2.norm.eps == norm.eps


# ---------------------------------------------------------------------------------------------------- the head
@pytest.mark.parametrize("mode", ["simple", "complex"])
@pytest.mark.parametrize("kind", ["sn", "npr"])
def test_zero_initialised_head_outputs_exactly_zero_and_eps_is_the_backbones(kind, mode):
    bb = _backbone()
    x, t = _x((3, 1, 8, 8)), torch.tensor([1, 500, 1000])
    with torch.no_grad():
        ref = bb(x, t)
    net = attach_head(bb, kind, mode)
    assert net.head_kind == kind and net.feature_module == "norm_out"
    assert net.time_module == ("time_mlp" if mode == "complex" else None)
    with torch.no_grad():
        eps, head = net(x, t)
    assert torch.equal(eps, ref) and ref.abs().max() > 0.1
    assert head.shape == x.shape and torch.equal(head, torch.zeros_like(head))


def test_head_reads_exactly_the_input_of_the_output_block():
    bb = _backbone()
    net = attach_head(bb, "sn")
    _copy_output_block(net, bb.norm_out, bb.conv_out, 1)
    x, t = _x((2, 1, 8, 8)), torch.tensor([3, 700])
    with torch.no_grad():
        eps, head = net(x, t)
    torch.testing.assert_close(head, eps, rtol=0, atol=1e-6)


def test_backbone_is_frozen_and_stays_in_eval_mode():
    bb = _backbone()
    bb.train()
    net = HeadedNet(bb, "npr")
    assert not any(p.requires_grad for p in bb.parameters())
    assert all(p.requires_grad for p in net.out2.parameters())
    net.train()
    assert net.training and net.out2.training and not bb.training
    assert not any(m.training for m in bb.modules())  # dropout off inside the backbone
    x, t = _x((2, 1, 8, 8)), torch.tensor([5, 5])
    a, b = net(x, t)[0], net(x, t)[0]  # backbone dropout (p = 0.1) is inactive in train mode
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------- losses
def test_losses_against_a_hand_computation():
    rng = np.random.default_rng(3)
    eps, eps_hat, head = (rng.standard_normal((2, 1, 3, 4)) for _ in range(3))
    want_sn = sum((e * e - h) ** 2 for e, h in zip(eps.ravel(), head.ravel())) / eps.size
    want_npr = sum(((e - eh) ** 2 - h) ** 2 for e, eh, h in zip(eps.ravel(), eps_hat.ravel(), head.ravel())) / eps.size
    T = torch.from_numpy
    assert sn_loss(T(eps), T(eps_hat), T(head)).item() == pytest.approx(want_sn, rel=1e-12)
    assert sn_loss(T(eps), None, T(head)).item() == pytest.approx(want_sn, rel=1e-12)
    assert npr_loss(T(eps), T(eps_hat), T(head)).item() == pytest.approx(want_npr, rel=1e-12)
    # gradient in the head: −2(target − h)/numel
    h = T(head).requires_grad_(True)
    sn_loss(T(eps), None, h).backward()
    np.testing.assert_allclose(h.grad.numpy(), -2 * (eps ** 2 - head) / eps.size, rtol=1e-12)
    with pytest.raises(ValueError, match="head must have the shape of eps"):
        sn_loss(T(eps), None, T(head[:1]))
    with pytest.raises(ValueError, match="eps_hat must have the shape of eps"):
        npr_loss(T(eps), T(eps_hat[:1]), T(head))


def test_npr_loss_stops_the_gradient_to_eps_hat_and_the_backbone():
    rng = np.random.default_rng(4)
    eps = torch.from_numpy(rng.standard_normal((2, 1, 4, 4)))
    eps_hat = torch.from_numpy(rng.standard_normal((2, 1, 4, 4))).requires_grad_(True)
    head = torch.zeros(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    npr_loss(eps, eps_hat, head).backward()
    assert eps_hat.grad is None and head.grad is not None
    # a whole headed net whose backbone has been unfrozen: still no gradient reaches it
    net = attach_head(_backbone(), "npr", "complex")
    net.backbone.requires_grad_(True)
    x, t = _x((2, 1, 8, 8)), torch.tensor([10, 900])
    e = _x((2, 1, 8, 8), seed=1)
    eps_hat, g = net(x, t)
    assert eps_hat.requires_grad  # ε̂ itself carries a graph into the backbone ...
    npr_loss(e, eps_hat, g).backward()
    assert all(p.grad is None for p in net.backbone.parameters())  # ... which the loss cuts
    assert all(p.grad is not None for p in net.out2.parameters())
    with pytest.raises(ValueError, match="backbone parameters require grad"):
        train(net, np.zeros((4, 1, 8, 8), np.float32), SCHED, steps=1, objective="npr", **KW)


# ---------------------------------------------------------------------------------------------------- stage 2
def test_stage2_trains_only_the_head(digits, tmp_path):
    bb = _backbone()
    before = copy.deepcopy(bb.state_dict())
    net = attach_head(bb, "sn", "complex")
    head0 = copy.deepcopy(net.out2.state_dict())
    res = train(net, digits, SCHED, steps=4, objective="sn", checkpoint_dir=tmp_path, **KW)
    assert _states_equal(bb.state_dict(), before)
    assert res.ema.backbone is bb  # the EMA shares the frozen backbone
    assert not _states_equal(net.out2.state_dict(), head0) and not _states_equal(res.ema.out2.state_dict(), head0)
    assert not res.ema.training and not any(p.requires_grad for p in res.ema.out2.parameters())
    assert res.config["objective"] == "sn" and res.config["loss"] == "mean((eps^2 - h)^2)"
    assert res.config["head"]["mode"] == "complex" and res.config["backbone"]["class"] == "UNet"
    ck = load_checkpoint(res.checkpoint)
    assert set(ck["model"]) == set(net.out2.state_dict()) and set(ck["ema"]) == set(net.out2.state_dict())
    n_head = len(list(net.out2.parameters()))
    assert len(ck["optimizer"]["param_groups"][0]["params"]) == n_head  # the optimiser holds the head only
    # the zero head starts at E(ε² − 0)² = E ε⁴ = 3
    assert 2.0 < res.losses[0] < 4.0


def test_sn_head_learns_the_conditional_second_moment_on_pure_noise_data():
    """x_0 ≡ 0 ⇒ x_n = √β̄_n ε, so E[ε² | x_n] = ε² = x_n²/β̄_n exactly. Any head that ignores x has
    E(ε² − h)² ≥ Var ε² = 2 (attained by h = 1), the untrained one 3. Stage 1 (30 steps) then stage 2 (120 steps) on
    the tiny U-Net; the complex head gets within ~15 % of the exact answer's MSE-scale, the simple one much less."""
    data = np.zeros((256, 1, 8, 8), np.float32)
    torch.manual_seed(0)
    s1 = train(UNet(TINY), data, SCHED, steps=30, batch_size=64, lr=3e-3, seed=0, device="cpu", progress=False)
    g = np.random.default_rng(0)
    n = 300
    eps = g.standard_normal((256, 1, 8, 8))
    x = np.sqrt(SCHED.beta_bar[n]) * eps
    floor = np.mean((eps ** 2 - 1) ** 2)  # the best x-independent head, ≈ 2
    mse = {}
    for mode in ("complex", "simple"):
        r = train(attach_head(s1.ema, "sn", mode), data, SCHED, steps=120, batch_size=64, lr=3e-3, seed=1,
                  device="cpu", progress=False, ema_decay=0.99, objective="sn")
        assert r.losses[-20:].mean() < 0.6 * r.losses[:5].mean()
        _, h = TorchEpsModel(r.ema).eps_and_head(x, n)
        mse[mode] = np.mean((h - eps ** 2) ** 2)
    assert mse["complex"] < 0.25 * floor, (mse, floor)  # measured 0.30 vs floor 2.04
    assert mse["simple"] < 0.8 * floor, (mse, floor)


class Stop(Exception):
    pass


@pytest.mark.parametrize("kind", ["sn", "npr"])
def test_stage2_resume_after_interrupt_is_bit_identical(digits, tmp_path, kind):
    bb = _backbone()
    torch.manual_seed(1)
    full = train(attach_head(bb, kind, "complex"), digits, SCHED, steps=5, objective=kind, **KW)
    ck = tmp_path / "run"

    def stop(step, loss):
        if step == 3:
            raise Stop

    torch.manual_seed(1)
    with pytest.raises(Stop):
        train(attach_head(bb, kind, "complex"), digits, SCHED, steps=5, objective=kind, checkpoint_dir=ck,
              checkpoint_every=2, callback=stop, **KW)
    assert [p.name for p in list_checkpoints(ck)] == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    torch.manual_seed(99)  # another random ResBlock in the head: everything must come from the checkpoint
    resumed = train(attach_head(bb, kind, "complex"), digits, SCHED, steps=5, objective=kind, checkpoint_dir=ck,
                    checkpoint_every=2, **KW)
    assert resumed.resumed_from == 3
    np.testing.assert_array_equal(resumed.losses, full.losses)
    assert _states_equal(resumed.net.out2.state_dict(), full.net.out2.state_dict())
    assert _states_equal(resumed.ema.out2.state_dict(), full.ema.out2.state_dict())


def test_stage2_resume_refuses_other_settings(digits, tmp_path):
    bb = _backbone()
    train(attach_head(bb, "sn"), digits, SCHED, steps=2, objective="sn", checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="objective: checkpoint 'sn' vs now 'npr'"):
        train(attach_head(bb, "npr"), digits, SCHED, steps=3, objective="npr", checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="head: checkpoint"):
        train(attach_head(bb, "sn", "complex"), digits, SCHED, steps=3, objective="sn", checkpoint_dir=tmp_path,
              **KW)
    other = copy.deepcopy(bb)
    with torch.no_grad():
        other.conv_in.bias.add_(1e-3)
    with pytest.raises(ValueError, match="backbone: checkpoint"):
        train(attach_head(other, "sn"), digits, SCHED, steps=3, objective="sn", checkpoint_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="timestep_map: checkpoint 'n' vs now 'n-1'"):
        train(attach_head(bb, "sn"), digits, SCHED, steps=3, objective="sn", checkpoint_dir=tmp_path,
              timestep_map="n-1", **KW)
    ok = train(attach_head(bb, "sn"), digits, SCHED, steps=3, objective="sn", checkpoint_dir=tmp_path, **KW)
    assert ok.resumed_from == 2 and ok.step == 3


def test_train_feeds_the_timestep_map():
    """A recording backbone sees n − 1 under timestep_map='n-1' and (n − 1)·1000/N for '(n-1)*1000/N'."""

    class Rec(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.norm_out = nn.GroupNorm(2, 8)
            self.conv_out = nn.Conv2d(8, 1, 3, padding=1)
            self.seen = []

        def forward(self, x, t):
            self.seen.append(t.clone())
            return self.conv_out(torch.nn.functional.silu(self.norm_out(self.conv(x))))

    sched = Schedule.linear(50)
    gen = torch.Generator().manual_seed(_seed_int(KW["seed"], _STEP_TAG, 0))
    n = torch.randint(1, sched.N + 1, (KW["batch_size"],), generator=gen)
    data = np.zeros((8, 1, 4, 4), np.float32)
    for tmap, want in (("n-1", n - 1), ("(n-1)*1000/N", ((n - 1).double() * 1000 / 50).float()), ("n", n)):
        rec = Rec()
        train(HeadedNet(rec, "sn", feature_module="norm_out", channels=1), data, sched, steps=1, objective="sn",
              timestep_map=tmap, **KW)
        assert torch.equal(rec.seen[0], want), tmap
    with pytest.raises(ValueError, match="timestep_map must be one of"):
        train(UNet(TINY), data, sched, steps=1, timestep_map="t", **KW)


# ---------------------------------------------------------------------------------------------------- files
def test_save_and_load_headed_round_trip(digits, tmp_path):
    bb = _backbone()
    res = train(attach_head(bb, "npr", "complex"), digits, SCHED, steps=2, objective="npr", **KW)
    p = save_headed(res.ema, tmp_path / "head.pt", metadata={"steps": 2})
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == HEAD_FORMAT and not any(k.startswith("backbone") for k in raw["state_dict"])
    info = read_headed(p)
    assert info["head"]["kind"] == "npr" and info["head"]["mode"] == "complex" and info["metadata"] == {"steps": 2}
    assert info["head"]["feature_module"] == "norm_out" and info["backbone"]["class"] == "UNet"
    fresh_bb = copy.deepcopy(bb)  # "loaded separately by the user"
    back = load_headed(p, fresh_bb, check_backbone="exact")
    assert isinstance(back, HeadedNet) and back.kind == "npr" and not back.training
    assert _states_equal(back.out2.state_dict(), res.ema.out2.state_dict())
    x = _x((2, 1, 8, 8))
    a, b = TorchEpsModel(back).eps_and_head(x, 400), TorchEpsModel(res.ema).eps_and_head(x, 400)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    half = save_headed(res.ema, tmp_path / "head16.pt", half=True)
    back16 = load_headed(half, copy.deepcopy(bb))
    for k, v in back16.out2.state_dict().items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, res.ema.out2.state_dict()[k], rtol=1e-3, atol=1e-4)
    # errors
    with pytest.raises(ValueError, match="trained on another backbone .*sha256"):
        load_headed(p, _backbone(seed=5), check_backbone="exact")
    wider = UNet(UNetConfig(image_size=8, channels=1, base_channels=16, channel_mult=(1, 2),
                            attention_resolutions=(4,)))
    with pytest.raises(ValueError, match="num_parameters: file"):
        load_headed(p, wider)
    simple = save_headed(attach_head(copy.deepcopy(bb), "sn"), tmp_path / "simple.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_headed(simple, wider, check_backbone="none")
    with pytest.raises(ValueError, match="not a head file"):
        load_headed(train(UNet(TINY), digits, SCHED, steps=1, checkpoint_dir=tmp_path / "c", **KW).checkpoint, bb)
    with pytest.raises(TypeError, match="must be a HeadedNet"):
        save_headed(bb, tmp_path / "x.pt")


# ---------------------------------------------------------------------------------------------------- protocol
def test_torch_eps_model_of_a_headed_net_is_a_headed_model():
    bb = _backbone()
    net = attach_head(bb, "sn", "complex")
    _randomize(net.out2, seed=3)  # a non-zero head
    model = TorchEpsModel(net, "n")
    assert type(model) is TorchHeadedModel and model.head_kind == "sn"
    x64 = np.random.default_rng(0).standard_normal((5, 1, 8, 8))
    eps, head = model.eps_and_head(x64, 250)
    assert isinstance(eps, np.ndarray) and eps.dtype == np.float64 and head.dtype == np.float64
    assert eps.shape == head.shape == x64.shape and np.abs(head).max() > 0
    np.testing.assert_array_equal(model(x64, 250), eps)
    np.testing.assert_array_equal(TorchEpsModel(bb, "n")(x64, 250), eps)  # ε̂ is the backbone's
    with torch.no_grad():
        ref = net(torch.from_numpy(x64).float(), torch.full((5,), 250))
    np.testing.assert_array_equal(head, ref[1].numpy().astype(np.float64))
    xt = torch.from_numpy(x64)
    e_t, h_t = model.eps_and_head(xt, 250)
    assert isinstance(h_t, torch.Tensor) and h_t.dtype == torch.float64
    np.testing.assert_array_equal(h_t.numpy(), head)
    batched = TorchHeadedModel(net, "n", batch_size=2).eps_and_head(x64, 250)
    np.testing.assert_allclose(batched[1], head, rtol=1e-5, atol=1e-6)
    # the timestep map: 'n-1' at n is 'n' at n − 1
    shifted = TorchEpsModel(net, "n-1", num_timesteps=1000).eps_and_head(x64, 251)
    np.testing.assert_array_equal(shifted[1], head)
    with pytest.raises(ValueError, match="n must be a timestep"):
        model.eps_and_head(x64, 0)
    with pytest.raises(TypeError, match="second head"):
        TorchHeadedModel(bb)
    with pytest.raises(ValueError, match="learned_sigma=True does not apply"):
        TorchEpsModel(net, learned_sigma=True)
    assert not hasattr(TorchEpsModel(bb), "eps_and_head")


# ---------------------------------------------------------------------------------------------------- adapters
def _diffusers_unet():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return _randomize(diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8), seed=2, scale=0.05)


def _foreign_cases():
    torch.manual_seed(0)
    ddpm = _randomize(DDPMUNet(DDPMUNetConfig(resolution=8, in_channels=1, out_ch=1, ch=32, ch_mult=(1, 2),
                                              num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)), 1, 0.05)
    improved = _randomize(ImprovedUNet(ImprovedUNetConfig(image_size=8, in_channels=1, out_channels=2,
                                                          model_channels=32, num_res_blocks=1,
                                                          attention_resolutions=(2,), channel_mult=(1, 2),
                                                          num_heads=1)), 1, 0.05)
    return [
        ("ddpm", ddpm, "norm_out", "temb.dense.1", lambda m: (m.norm_out, m.conv_out)),
        ("improved", improved, "out", "time_embed", lambda m: (m.out[0], m.out[2])),
        ("diffusers", None, "conv_norm_out", "time_embedding", lambda m: (m.conv_norm_out, m.conv_out)),
        ("diffusers-adapter", None, "unet.conv_norm_out", "unet.time_embedding",
         lambda m: (m.unet.conv_norm_out, m.unet.conv_out)),
    ]


@pytest.mark.parametrize("case", range(4), ids=["ddpm", "improved", "diffusers", "diffusers-adapter"])
def test_adapters_pick_the_output_block_of_each_network(case):
    name, bb, feat, tmod, out_block = _foreign_cases()[case]
    if name == "diffusers":
        bb = _diffusers_unet()
    elif name == "diffusers-adapter":
        bb = DiffusersUNetAdapter(_diffusers_unet())
    x, t = _x((2, 1, 8, 8)), torch.tensor([0.0, 600.0])
    with torch.no_grad():
        raw = bb(x, t)
    raw = raw.sample if hasattr(raw, "sample") else raw
    for mode in ("simple", "complex"):
        net = attach_head(bb, "sn", mode)
        assert net.feature_module == feat and net.time_module == (tmod if mode == "complex" else None)
        assert net.learned_sigma == (name == "improved")
        with torch.no_grad():
            eps, head = net(x, t)
        torch.testing.assert_close(eps, raw[:, :1], rtol=0, atol=0)
        assert eps.shape == (2, 1, 8, 8) and torch.equal(head, torch.zeros_like(head))
    # the captured features are the input of the output block: its own weights in the head reproduce ε̂
    net = attach_head(bb, "npr")
    _copy_output_block(net, *out_block(bb), channels=1)
    with torch.no_grad():
        eps, head = net(x, t)
    torch.testing.assert_close(head, eps, rtol=1e-5, atol=1e-5)
    assert eps.abs().max() > 1e-2
    # the complex head trains (gradients reach its ResBlock through the time embedding)
    net = attach_head(bb, "sn", "complex")
    _randomize(net.out2, seed=4, scale=0.1)  # (zero-initialised convs pass no gradient back at first)
    sn_loss(_x((2, 1, 8, 8), 1), None, net(x, t)[1]).backward()
    assert net.out2.block.temb.weight.grad.abs().sum() > 0


def test_errors_name_the_problem():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(1, 8, 3, padding=1)
            self.final_norm = nn.GroupNorm(2, 8)
            self.proj = nn.Conv2d(8, 1, 1)

        def forward(self, x, t):
            return self.proj(self.final_norm(self.body(x)))

    with pytest.raises(ValueError, match="no default feature_module for a Odd backbone.*'final_norm'"):
        attach_head(Odd(), "sn")
    with pytest.raises(ValueError, match="feature_module = 'norm_out' is not a submodule.*'final_norm'"):
        attach_head(Odd(), "sn", feature_module="norm_out")
    with pytest.raises(ValueError, match="cannot tell the image channels"):
        attach_head(Odd(), "sn", feature_module="final_norm")
    odd = attach_head(Odd(), "sn", feature_module="final_norm", channels=1)
    assert odd(_x((1, 1, 8, 8)), torch.tensor([3]))[1].shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="mode='complex' needs the backbone's time embedding"):
        attach_head(Odd(), "sn", "complex", feature_module="final_norm", channels=1)
    with pytest.raises(ValueError, match="cannot tell the width of the features"):
        attach_head(Odd(), "sn", feature_module="proj", channels=1)
    with pytest.raises(ValueError, match="kind must be one of 'sn', 'npr'"):
        attach_head(_backbone(), "eps2")
    with pytest.raises(ValueError, match="mode must be one of 'simple', 'complex'"):
        attach_head(_backbone(), "sn", "fancy")
    with pytest.raises(TypeError, match="pass its network, e.g. model.net"):
        attach_head(TorchEpsModel(_backbone()), "sn")
    with pytest.raises(TypeError, match="already a HeadedNet"):
        attach_head(attach_head(_backbone(), "sn"), "npr")
    data = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(TypeError, match="net must be a HeadedNet of kind 'sn'"):
        train(UNet(TINY), data, SCHED, steps=1, objective="sn", **KW)
    with pytest.raises(ValueError, match="head is of kind 'npr'"):
        train(attach_head(_backbone(), "npr"), data, SCHED, steps=1, objective="sn", **KW)
    with pytest.raises(ValueError, match="train its head with objective='sn'"):
        train(attach_head(_backbone(), "sn"), data, SCHED, steps=1, **KW)
    with pytest.raises(ValueError, match="objective must be one of 'eps', 'sn', 'npr'"):
        train(UNet(TINY), data, SCHED, steps=1, objective="eps2", **KW)


def test_score_sde_ncsnpp_carries_a_head():
    """score_sde's DDPM++ / NCSN++ (a tiny VP-style config): the adapter finds its output block (the last GroupNorm of
    all_modules), the zero head outputs 0, and the backbone's own output block in the head reproduces ε̂."""
    from analytic_dpm.models.foreign.score_sde import NCSNPP_CIFAR10_CONTINUOUS, NCSNpp

    cfg = dict(NCSNPP_CIFAR10_CONTINUOUS, image_size=8, nf=8, ch_mult=(1, 2), num_res_blocks=1,
               attn_resolutions=(4,))
    bb = _randomize(NCSNpp(cfg)).eval()
    x, t = _x((2, 3, 8, 8)), torch.tensor([10.0, 700.0])
    with torch.no_grad():
        raw = bb(x, t)
    net = attach_head(bb, "npr")
    n = len(bb.all_modules)
    assert net.feature_module == f"all_modules.{n - 2}"
    with torch.no_grad():
        eps, head = net(x, t)
    torch.testing.assert_close(eps, raw, rtol=0, atol=0)
    assert torch.equal(head, torch.zeros_like(head))
    _copy_output_block(net, bb.all_modules[n - 2], bb.all_modules[n - 1], channels=3)
    with torch.no_grad():
        eps, head = net(x, t)
    torch.testing.assert_close(head, eps, rtol=1e-5, atol=1e-5)
    assert attach_head(bb, "sn", "complex").time_module == "all_modules.1"
