"""score_sde's NCSN++ / DDPM++ network and its checkpoint loader (analytic_dpm.models.foreign.score_sde).

Oracles:
1. **Parameter counts** of the two CIFAR-10 VP presets, built on the meta device, against an independent per-layer
   count from the config's channel arithmetic (:func:`_expected_count`, which never builds a module), and the
   resulting literal numbers.
2. **State-dict names and shapes** at known positions of score_sde's ``all_modules`` list.
3. **FIR re-sampling**: down-sampling against the explicit 1-D formula (weights 1, 3, 3, 1 over x[2i−1..2i+2]),
   up-sampling as 4 × the adjoint of down-sampling (autograd), and the (1, 1) kernel as average pooling / nearest.
4. **Round trips** through files written exactly as score_sde's ``save_checkpoint`` writes them (a DataParallel state
   dict, a real Adam state after one step, an EMA state dict whose shadow params differ from the raw weights), with
   the reference EMA network built by score_sde's ``copy_to`` semantics (``parameters()`` order, requires_grad only).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from analytic_dpm.models.foreign.score_sde import (
    DDPMPP_CIFAR10_CONTINUOUS,
    NCSNPP_CIFAR10_CONTINUOUS,
    SCORE_SDE_PRESETS,
    NCSNpp,
    ScoreSDEConfig,
    load_score_sde_checkpoint,
    score_sde_config,
)
from analytic_dpm.models.foreign.score_sde_layers import (
    downsample_2d,
    positional_embedding,
    upsample_2d,
)

# ---------------------------------------------------------------------------------------------------- helpers
TINY_1LEVEL = dict(DDPMPP_CIFAR10_CONTINUOUS, image_size=8, nf=16, ch_mult=(1,), num_res_blocks=1,
                   attn_resolutions=(8,), dropout=0.0)
TINY_NCSNPP = dict(NCSNPP_CIFAR10_CONTINUOUS, image_size=8, nf=8, ch_mult=(1, 2), num_res_blocks=1,
                   attn_resolutions=(4,), dropout=0.0)
TINY_VE_STYLE = dict(TINY_NCSNPP, embedding_type="fourier", progressive="output_skip", progressive_input="input_skip",
                     progressive_combine="sum")
TINY_DDPM_BLOCKS = dict(TINY_1LEVEL, ch_mult=(1, 2), resblock_type="ddpm", attn_resolutions=(4,))


def _expected_count(cfg: dict) -> int:
    """Parameters of NCSN++ from channel arithmetic alone (score_sde models/ncsnpp.py, layerspp.py), BigGAN blocks."""
    assert cfg["resblock_type"] == "biggan" and cfg["progressive"] == "none"
    nf, mult, nrb, C = cfg["nf"], cfg["ch_mult"], cfg["num_res_blocks"], cfg["num_channels"]
    res = [cfg["image_size"] // 2 ** i for i in range(len(mult))]
    temb = 4 * nf

    def conv(i, o, k):
        return i * o * k * k + o

    def gn(c):
        return 2 * c

    def block(i, o, resample=False):  # GN, conv3, dense, GN, conv3, [1×1 shortcut]
        return gn(i) + conv(i, o, 3) + (temb * o + o) + gn(o) + conv(o, o, 3) + (conv(i, o, 1) if i != o or resample
                                                                               else 0)

    def attn(c):  # GN + 4 NIN (c×c + c)
        return gn(c) + 4 * (c * c + c)

    n = nf * temb + temb + temb * temb + temb  # two dense layers of the embedding (positional: width nf)
    n += conv(C, nf, 3)
    skips, ch, pyr = [nf], nf, C
    for lvl, m in enumerate(mult):
        for _ in range(nrb):
            n += block(ch, nf * m)
            ch = nf * m
            n += attn(ch) if res[lvl] in cfg["attn_resolutions"] else 0
            skips.append(ch)
        if lvl < len(mult) - 1:
            n += block(ch, ch, resample=True)
            if cfg["progressive_input"] == "residual":
                n += conv(pyr, ch, 3)  # FIR-fused stride-2 conv of the input pyramid
                pyr = ch
            skips.append(ch)
    n += 2 * block(ch, ch) + attn(ch)
    for lvl in reversed(range(len(mult))):
        for _ in range(nrb + 1):
            n += block(ch + skips.pop(), nf * mult[lvl])
            ch = nf * mult[lvl]
        n += attn(ch) if res[lvl] in cfg["attn_resolutions"] else 0
        if lvl:
            n += block(ch, ch, resample=True)
    return n + gn(ch) + conv(ch, C, 3)


def _meta(cfg):
    with torch.device("meta"):
        return NCSNpp(cfg)


def _count(net):
    return sum(p.numel() for p in net.parameters())


def _randomize(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return net


def _save_score_sde_checkpoint(cfg, path: Path, seed: int = 0):
    """Write a checkpoint as score_sde's run_lib/utils.save_checkpoint does; return (raw net, EMA net)."""
    torch.manual_seed(seed)
    src = _randomize(NCSNpp(cfg), seed)
    model = nn.DataParallel(src)  # on CPU it only wraps; its state dict has the 'module.' prefix
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = torch.randn(2, cfg["num_channels"], cfg["image_size"], cfg["image_size"])
    loss = model(x, torch.tensor([3.0, 700.0])).square().mean()
    loss.backward()
    optimizer.step()
    # ExponentialMovingAverage(model.parameters()).state_dict(), with shadows != raw weights
    shadow = [p.detach().clone() + 0.05 * torch.randn(p.shape) for p in model.parameters() if p.requires_grad]
    ema_state = dict(decay=0.9999, num_updates=123, shadow_params=shadow)
    torch.save({"optimizer": optimizer.state_dict(), "model": model.state_dict(), "ema": ema_state, "step": 123},
               path)
    ema_net = copy.deepcopy(src)
    trainable = [p for p in ema_net.parameters() if p.requires_grad]  # score_sde's ema.copy_to
    with torch.no_grad():
        for s, p in zip(shadow, trainable):
            p.copy_(s)
    return src.eval(), ema_net.eval()


def _inputs(cfg, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, cfg["num_channels"], cfg["image_size"], cfg["image_size"], generator=g) * 2 - 1
    return x, torch.tensor([0.999 * 1e-3 * 999, 250.0, 999.0])[:batch]


# ---------------------------------------------------------------------------------------------------- 1. counts
def test_presets_parameter_counts_on_meta_match_channel_arithmetic():
    ddpmpp, ncsnpp = _meta(DDPMPP_CIFAR10_CONTINUOUS), _meta(NCSNPP_CIFAR10_CONTINUOUS)
    assert all(p.is_meta for p in ddpmpp.parameters())
    assert _count(ddpmpp) == _expected_count(DDPMPP_CIFAR10_CONTINUOUS) == 61_804_419
    assert _count(ncsnpp) == _expected_count(NCSNPP_CIFAR10_CONTINUOUS) == 62_693_251
    # the difference is exactly the three FIR-fused pyramid convolutions 3→128, 128→256, 256→256
    assert _count(ncsnpp) - _count(ddpmpp) == (3 * 128 * 9 + 128) + (128 * 256 * 9 + 256) + (256 * 256 * 9 + 256)
    for cfg in (TINY_1LEVEL, TINY_NCSNPP):
        assert _count(_meta(cfg)) == _expected_count(cfg)


def test_presets_follow_the_score_sde_vp_configs():
    d, n = DDPMPP_CIFAR10_CONTINUOUS, NCSNPP_CIFAR10_CONTINUOUS
    for p in (d, n):  # shared by configs/vp/cifar10_{ddpmpp,ncsnpp}_continuous.py
        assert (p["nf"], p["ch_mult"], p["num_res_blocks"], p["attn_resolutions"]) == (128, (1, 2, 2, 2), 4, (16,))
        assert p["resblock_type"] == "biggan" and p["progressive"] == "none" and p["embedding_type"] == "positional"
        assert p["centered"] and p["skip_rescale"] and not p["scale_by_sigma"] and p["conditional"]
        assert (p["beta_min"], p["beta_max"], p["num_scales"]) == (0.1, 20.0, 1000)
    assert not d["fir"] and d["progressive_input"] == "none"
    assert n["fir"] and n["fir_kernel"] == (1, 3, 3, 1) and n["progressive_input"] == "residual"
    assert list(SCORE_SDE_PRESETS.values()) == [d, n]
    with pytest.raises(TypeError):
        d["nf"] = 64  # read-only
    assert score_sde_config("ncsnpp-cifar10-vp-continuous") == ScoreSDEConfig.from_dict(n)


# ---------------------------------------------------------------------------------------------------- 2. names
def test_state_dict_names_and_shapes_follow_score_sde():
    sd = {k: tuple(v.shape) for k, v in _meta(DDPMPP_CIFAR10_CONTINUOUS).state_dict().items()}
    assert list(sd)[0] == "sigmas" and sd["sigmas"] == (1000,)
    assert sd["all_modules.0.weight"] == (512, 128) and sd["all_modules.1.weight"] == (512, 512)  # time embedding
    assert sd["all_modules.2.weight"] == (128, 3, 3, 3)  # input conv
    assert sd["all_modules.3.GroupNorm_0.weight"] == (128,) and sd["all_modules.3.Dense_0.weight"] == (128, 512)
    assert "all_modules.3.Conv_2.weight" not in sd  # same width, no resampling: identity shortcut
    assert sd["all_modules.7.Conv_2.weight"] == (128, 128, 1, 1)  # the down-sampling BigGAN block
    assert sd["all_modules.8.Conv_2.weight"] == (256, 128, 1, 1)  # 16×16 level: width 128 → 256
    assert sd["all_modules.9.NIN_0.W"] == (256, 256) and sd["all_modules.9.NIN_3.b"] == (256,)  # attention at 16
    assert sd["all_modules.53.weight"] == (128,) and sd["all_modules.54.weight"] == (3, 128, 3, 3)
    assert len([k for k in sd if k.endswith("NIN_0.W")]) == 4 + 1 + 1  # 4 down, middle, 1 up (once per level)
    nc = {k: tuple(v.shape) for k, v in _meta(NCSNPP_CIFAR10_CONTINUOUS).state_dict().items()}
    assert nc["all_modules.8.Conv2d_0.weight"] == (128, 3, 3, 3)  # input pyramid after level 0
    assert nc["all_modules.57.weight"] == (3, 128, 3, 3)
    fir_convs = {k: v for k, v in nc.items() if "Conv2d_0" in k}  # one after each of the first three levels
    assert fir_convs == {"all_modules.8.Conv2d_0.weight": (128, 3, 3, 3), "all_modules.8.Conv2d_0.bias": (128,),
                         "all_modules.18.Conv2d_0.weight": (256, 128, 3, 3), "all_modules.18.Conv2d_0.bias": (256,),
                         "all_modules.24.Conv2d_0.weight": (256, 256, 3, 3), "all_modules.24.Conv2d_0.bias": (256,)}
    assert sorted(nc.values()) == sorted(list(sd.values()) + list(fir_convs.values()))


def test_positional_embedding_is_ddpms_and_label_is_999t():
    from analytic_dpm.models.foreign.ddpm_unet import ddpm_timestep_embedding

    t = torch.tensor([0.0, 0.999, 250.0, 999.0])
    assert torch.allclose(positional_embedding(t, 128), ddpm_timestep_embedding(t, 128), atol=1e-6)
    half = 64  # explicit formula: sin(t·10000^(−k/63)), cos(...)
    k = np.arange(half)
    ref = np.concatenate([np.sin(250.0 * 10000.0 ** (-k / (half - 1))), np.cos(250.0 * 10000.0 ** (-k / (half - 1)))])
    assert np.allclose(positional_embedding(torch.tensor([250.0]), 128)[0].numpy(), ref, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- 3. FIR
def test_fir_downsample_matches_explicit_formula_and_upsample_is_its_adjoint():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    img = torch.outer(a, b)[None, None]

    def down1d(v):  # weights (1, 3, 3, 1)/8 on v[2i−1], v[2i], v[2i+1], v[2i+2], zero outside
        p = np.concatenate([[0.0], v.numpy(), [0.0]])
        return np.array([(p[2 * i] + 3 * p[2 * i + 1] + 3 * p[2 * i + 2] + p[2 * i + 3]) / 8 for i in range(4)])

    assert np.allclose(downsample_2d(img)[0, 0].numpy(), np.outer(down1d(a), down1d(b)), atol=1e-14)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    (downsample_2d(x) * y).sum().backward()
    assert torch.allclose(x.grad, upsample_2d(y) / 4, atol=1e-14)
    z = torch.randn(1, 2, 6, 6, generator=g)
    assert torch.equal(downsample_2d(z, (1, 1)), torch.nn.functional.avg_pool2d(z, 2))
    assert torch.equal(upsample_2d(z, (1, 1)), torch.nn.functional.interpolate(z, scale_factor=2, mode="nearest"))
    assert torch.allclose(upsample_2d(torch.ones(1, 1, 6, 6))[..., 2:-2, 2:-2], torch.ones(1, 1, 8, 8))


# ---------------------------------------------------------------------------------------------------- 4. round trips
@pytest.mark.parametrize("cfg", [TINY_1LEVEL, TINY_NCSNPP, TINY_VE_STYLE, TINY_DDPM_BLOCKS],
                         ids=["ddpmpp-1level", "ncsnpp-fir-residual", "fourier-output_skip-input_skip", "ddpm-blocks"])
def test_round_trip_uses_ema_weights(tmp_path, cfg):
    path = tmp_path / "checkpoint_8.pth"
    raw, ema = _save_score_sde_checkpoint(cfg, path)
    x, t = _inputs(cfg)
    if cfg["embedding_type"] == "fourier":
        t = t + 1.0  # log label
    net = load_score_sde_checkpoint(path, config=cfg, device="cpu")
    assert not net.training and isinstance(net, NCSNpp)
    with torch.no_grad():
        out, want, raw_out = net(x, t), ema(x, t), raw(x, t)
    assert torch.allclose(out, want, atol=1e-5, rtol=1e-5)
    assert (out - raw_out).abs().max() > 1e-3  # the EMA weights, not the raw ones
    info = net.load_info
    assert info["used_ema"] and info["step"] == 123 and info["ema_decay"] == 0.9999 and info["ema_num_updates"] == 123
    assert info["stripped_prefixes"] == ["module."] and info["num_parameters"] == _count(raw)
    net_raw = load_score_sde_checkpoint(path, config=cfg, use_ema=False, device="cpu")
    with torch.no_grad():
        assert torch.allclose(net_raw(x, t), raw_out, atol=1e-5, rtol=1e-5)
    if cfg["embedding_type"] == "fourier":  # the fixed frequencies are not in the EMA: they come from 'model'
        assert torch.equal(net.all_modules[0].W, raw.all_modules[0].W)


def test_ema_is_matched_through_the_files_key_order(tmp_path):
    """score_sde's shadow list follows *its* parameters() order; the file's 'model' key order is that order. A file
    whose order differs from ours (simulated by a permutation of both) must still load every shadow by name."""
    path = tmp_path / "ckpt.pth"
    raw, ema = _save_score_sde_checkpoint(TINY_NCSNPP, path)
    ck = torch.load(path, weights_only=True)
    keys = list(ck["model"])
    params = [k for k in keys if k != "module.sigmas"]
    perm = np.random.default_rng(0).permutation(len(params))
    shadow = dict(zip(params, ck["ema"]["shadow_params"]))
    new_keys = ["module.sigmas"] + [params[i] for i in perm]
    ck["model"] = {k: ck["model"][k] for k in new_keys}
    ck["ema"]["shadow_params"] = [shadow[params[i]] for i in perm]
    torch.save(ck, path)
    net = load_score_sde_checkpoint(path, config=TINY_NCSNPP, device="cpu")
    x, t = _inputs(TINY_NCSNPP)
    with torch.no_grad():
        assert torch.allclose(net(x, t), ema(x, t), atol=1e-5, rtol=1e-5)


def test_loaded_file_is_read_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    _save_score_sde_checkpoint(TINY_1LEVEL, path)
    calls = []
    real = torch.load

    def spy(*a, **k):
        calls.append(k.get("weights_only"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    load_score_sde_checkpoint(path, config=TINY_1LEVEL, device="cpu")
    assert calls and all(c is True for c in calls)


def test_bare_state_dict_needs_use_ema_false(tmp_path):
    raw = _randomize(NCSNpp(TINY_1LEVEL), 3).eval()
    path = tmp_path / "weights.pt"
    torch.save(raw.state_dict(), path)
    with pytest.raises(ValueError, match="use_ema=False"):
        load_score_sde_checkpoint(path, config=TINY_1LEVEL)
    net = load_score_sde_checkpoint(path, config=TINY_1LEVEL, use_ema=False, device="cpu")
    x, t = _inputs(TINY_1LEVEL)
    with torch.no_grad():
        assert torch.allclose(net(x, t), raw(x, t), atol=1e-6)


def test_uncentered_network_rescales_its_input():
    a = _randomize(NCSNpp(TINY_1LEVEL), 4).eval()
    b = NCSNpp(dict(TINY_1LEVEL, centered=False)).eval()
    b.load_state_dict(a.state_dict())
    x, t = _inputs(TINY_1LEVEL)
    with torch.no_grad():
        assert torch.allclose(b((x + 1) / 2, t), a(x, t), atol=1e-5)


# ---------------------------------------------------------------------------------------------------- errors
def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no score_sde checkpoint file at .*nope\.pth.*score_sde_pytorch"):
        load_score_sde_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="it is a directory"):
        load_score_sde_checkpoint(tmp_path)
    with pytest.raises(TypeError, match="path must be a file path"):
        load_score_sde_checkpoint(None)


def test_corrupted_and_foreign_files(tmp_path):
    good = tmp_path / "good.pth"
    _save_score_sde_checkpoint(TINY_1LEVEL, good)
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="could not read"):
        load_score_sde_checkpoint(trunc, config=TINY_1LEVEL)
    html = tmp_path / "html.pth"
    html.write_text("<html>quota exceeded</html>")
    with pytest.raises(ValueError, match="html.pth"):  # (read_checkpoint reports this as needing unpickling)
        load_score_sde_checkpoint(html, config=TINY_1LEVEL)
    lst = tmp_path / "list.pth"
    torch.save([1, 2, 3], lst)
    with pytest.raises(ValueError, match="is not a score_sde checkpoint"):
        load_score_sde_checkpoint(lst, config=TINY_1LEVEL)
    nomodel = tmp_path / "nomodel.pth"
    torch.save({"step": 3, "ema": {}}, nomodel)
    with pytest.raises(ValueError, match="no 'model' state dict"):
        load_score_sde_checkpoint(nomodel, config=TINY_1LEVEL)


def test_code_in_file_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "extra": _Payload()}, path)
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_score_sde_checkpoint(path, config=TINY_1LEVEL)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_wrong_architecture_and_bad_ema(tmp_path):
    path = tmp_path / "ckpt.pth"
    _save_score_sde_checkpoint(TINY_NCSNPP, path)
    with pytest.raises(ValueError, match=r"does not fit the network[\s\S]*Conv2d_0"):
        load_score_sde_checkpoint(path, config=dict(TINY_NCSNPP, fir=False, progressive_input="none"))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_score_sde_checkpoint(path, config=dict(TINY_NCSNPP, nf=16))
    ck = torch.load(path, weights_only=True)
    short = dict(ck, ema=dict(ck["ema"], shadow_params=ck["ema"]["shadow_params"][:-1]))
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="shadow tensors but the network has"):
        load_score_sde_checkpoint(tmp_path / "short.pth", config=TINY_NCSNPP)
    sp = list(ck["ema"]["shadow_params"])
    sp[5] = torch.zeros(7)
    torch.save(dict(ck, ema=dict(ck["ema"], shadow_params=sp)), tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"1 EMA shadow tensor\(s\) do not fit.*#5"):
        load_score_sde_checkpoint(tmp_path / "shape.pth", config=TINY_NCSNPP)
    torch.save({k: v for k, v in ck.items() if k != "ema"}, tmp_path / "noema.pth")
    with pytest.raises(ValueError, match="no usable 'ema' entry"):
        load_score_sde_checkpoint(tmp_path / "noema.pth", config=TINY_NCSNPP)
    load_score_sde_checkpoint(tmp_path / "noema.pth", config=TINY_NCSNPP, use_ema=False, device="cpu")


def test_config_errors():
    with pytest.raises(TypeError, match="unknown ScoreSDEConfig field"):
        score_sde_config(dict(DDPMPP_CIFAR10_CONTINUOUS, nff=3))
    with pytest.raises(NotImplementedError, match="progressive='residual'"):
        score_sde_config(dict(DDPMPP_CIFAR10_CONTINUOUS, progressive="residual"))
    with pytest.raises(ValueError, match="resblock_type must be one of"):
        score_sde_config(dict(DDPMPP_CIFAR10_CONTINUOUS, resblock_type="unet"))
    with pytest.raises(ValueError, match="is not a score_sde preset"):
        score_sde_config("ddpm-cifar10")
    with pytest.raises(ValueError, match="divisible by 2"):
        score_sde_config(dict(DDPMPP_CIFAR10_CONTINUOUS, image_size=36))
    with pytest.raises(TypeError, match="config must be"):
        score_sde_config(3)
    net = NCSNpp(TINY_1LEVEL)
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.zeros(1, 1, 8, 8), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="time_cond must be"):
        net(torch.zeros(2, 3, 8, 8), torch.tensor([1.0, 2.0, 3.0]))


# ---------------------------------------------------------------------------------------------------- continuous time
def test_loaded_net_runs_analytic_dpm_through_the_continuous_wrapper(tmp_path):
    """A loaded score_sde net (NCSN++ tiny) as a discrete ε-model on the VP SDE's grid: the network receives 999·t_n,
    and a few Analytic-DPM steps (Γ estimated on the trajectory's timesteps) give finite samples."""
    continuous = pytest.importorskip("analytic_dpm.continuous")
    from analytic_dpm import estimate_gamma, even_trajectory, sample

    path = tmp_path / "checkpoint_8.pth"
    _save_score_sde_checkpoint(TINY_NCSNPP, path)
    net = load_score_sde_checkpoint(path, config=TINY_NCSNPP, device="cpu")
    sde = continuous.VPSDE(beta_min=net.config.beta_min, beta_max=net.config.beta_max)
    eps_model = continuous.ContinuousTimeEpsModel(net, sde, sde.schedule(100), time_scale=999.0)
    schedule = eps_model.schedule
    seen = []
    hook = net.register_forward_pre_hook(lambda mod, args: seen.append(args[1].detach().clone()))
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    out = eps_model(x, 37)
    with torch.no_grad():
        direct = net(x, torch.full((2,), 999.0 * 0.37))
    assert torch.allclose(seen[-1].double(), torch.full((2,), 999.0 * 0.37, dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(out, direct, atol=1e-5)
    hook.remove()

    traj = even_trajectory(schedule.N, 4)
    data = torch.rand(16, 3, 8, 8) * 2 - 1
    gamma = estimate_gamma(eps_model, schedule, data, timesteps=traj[1:], batch_size=8, progress=False)
    samples = sample(eps_model, schedule, traj, "analytic-ddpm", 4, (3, 8, 8), gamma=gamma, backend="torch",
                     device="cpu", progress=False, seed=0)
    samples = torch.as_tensor(samples)
    assert samples.shape == (4, 3, 8, 8) and torch.isfinite(samples).all()
