"""Tests for analytic_dpm.models.foreign: networks from other codebases and load_pretrained.

No real checkpoint is available offline, so the oracles are:

1. **Published sizes** (full-size networks built on the meta device, no memory): the parameter counts of the
   paper's models, checked against three independent sources: Ho et al. (2020, App. B: "Our CIFAR10 model has
   35.7 million parameters, and our LSUN and CelebA-HQ models have 114 million"), the model sizes of the paper's
   Table 4 (P App. F.5; facts file §5.2), which are float32 MiB = 4·count/2^20 to two decimals, and
   improved-diffusion's README (the 192-channel class-conditional ImageNet-64 model: "270M parameters").
2. **An independent implementation**: diffusers' UNet2DModel. Its port of Ho et al.'s CIFAR10 model
   (google/ddpm-cifar10-32's config) has the same 35,746,307 parameters, and, with the weights of our networks
   renamed by the converters below, computes the same outputs (tiny widths) for both families, including
   improved-diffusion's multi-head attention and scale-shift conditioning. The converters also map every
   parameter of the full-size CIFAR10 networks one-to-one, with equal shapes, onto diffusers' parameters.
3. **Round trips**: each family at a tiny width with random weights, saved in that family's checkpoint layouts
   (plain state dict, the DDIM repository's [model, optimizer, epoch, step, ema] list with DataParallel
   prefixes, the official Analytic-DPM code's CKPT dict, safetensors, diffusers' save_pretrained), loaded back
   through load_pretrained, must reproduce the network's ε̂ exactly, with the timestep convention of each family.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from analytic_dpm.models import PRETRAINED_PRESETS, TorchEpsModel, load_pretrained
from analytic_dpm.models.foreign import (
    DDPM_CIFAR10_CONFIG,
    DDPM_PRESETS,
    IMPROVED_PRESETS,
    DDPMUNet,
    DDPMUNetConfig,
    ImprovedUNet,
    ImprovedUNetConfig,
    PretrainedEpsModel,
    extract_state_dict,
    preset_config,
    read_checkpoint,
)
from analytic_dpm.schedules import Schedule

TINY_DDPM = DDPMUNetConfig(resolution=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(4,),
                           dropout=0.0)
TINY_IMPROVED = ImprovedUNetConfig(image_size=8, model_channels=32, out_channels=6, num_res_blocks=1,
                                   attention_resolutions=(2,), channel_mult=(1, 2, 2), num_heads=2,
                                   use_scale_shift_norm=True)


def _count(net) -> int:
    return sum(p.numel() for p in net.parameters())


def _meta(cls, cfg):
    with torch.device("meta"):
        return cls(cfg)


def _mib(count: int) -> float:
    return round(4 * count / 2 ** 20, 2)


def _randomize(net, seed=0, scale=0.2):
    """Random weights everywhere (the zero-initialised output convs would otherwise hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net.eval()


def _x(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- converters
def ddpm_to_diffusers(sd: dict, cfg: DDPMUNetConfig) -> dict:
    """Rename a DDPMUNet state dict to diffusers' UNet2DModel names (the test's independent oracle)."""
    L = len(cfg.ch_mult)
    out = {}
    sub = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
           "nin_shortcut": "conv_shortcut", "norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v",
           "proj_out": "to_out.0"}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "temb":
            nk = f"time_embedding.linear_{int(parts[2]) + 1}.{parts[3]}"
        elif parts[0] in ("conv_in", "conv_out"):
            nk = k
        elif parts[0] == "norm_out":
            nk = "conv_norm_out." + parts[1]
        elif parts[0] == "mid":
            name = {"block_1": "resnets.0", "block_2": "resnets.1", "attn_1": "attentions.0"}[parts[1]]
            nk = f"mid_block.{name}.{sub[parts[2]]}.{parts[3]}"
        else:
            lvl = int(parts[1])
            blk = "down_blocks" if parts[0] == "down" else "up_blocks"
            idx = lvl if parts[0] == "down" else L - 1 - lvl
            if parts[2] in ("downsample", "upsample"):
                kind = "downsamplers" if parts[2] == "downsample" else "upsamplers"
                nk = f"{blk}.{idx}.{kind}.0.conv.{parts[4]}"
            else:
                kind = "resnets" if parts[2] == "block" else "attentions"
                nk = f"{blk}.{idx}.{kind}.{parts[3]}.{sub[parts[4]]}.{parts[5]}"
        if ".attentions." in nk and nk.split(".")[-2] in ("to_q", "to_k", "to_v", "0") and v.ndim == 4:
            v = v[:, :, 0, 0]  # 1×1 conv → linear
        out[nk] = v
    return out


def improved_to_diffusers(net: ImprovedUNet) -> dict:
    """An ImprovedUNet's parameters under diffusers' UNet2DModel names (the test's independent oracle); the qkv
    channels, grouped per head as [q, k, v], are split into to_q, to_k, to_v. Works on meta tensors too."""
    from analytic_dpm.models.foreign.improved_unet import AttentionBlock, ResBlock, Upsample

    cfg = net.config
    L, nrb = len(cfg.channel_mult), cfg.num_res_blocks
    res_names = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                 "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
    out = {}

    def res(prefix, m):
        for k, v in m.state_dict().items():
            mod, p = k.rsplit(".", 1)
            out[f"{prefix}.{res_names[mod]}.{p}"] = v

    def attn(prefix, m):
        H = m.num_heads
        for p in ("weight", "bias"):
            out[f"{prefix}.group_norm.{p}"] = getattr(m.norm, p)
            w = getattr(m.proj_out, p)
            out[f"{prefix}.to_out.0.{p}"] = w[..., 0] if w.ndim == 3 else w
            qkv = getattr(m.qkv, p)
            qkv = qkv[..., 0] if qkv.ndim == 3 else qkv  # (3C, C) or (3C,)
            d = qkv.shape[0] // (3 * H)
            grouped = qkv.reshape(H, 3, d, *qkv.shape[1:])
            for i, nm in enumerate(("to_q", "to_k", "to_v")):
                out[f"{prefix}.{nm}.{p}"] = grouped[:, i].reshape(H * d, *qkv.shape[1:])

    def conv(prefix, m):
        for p in ("weight", "bias"):
            out[f"{prefix}.{p}"] = getattr(m, p)

    conv("time_embedding.linear_1", net.time_embed[0])
    conv("time_embedding.linear_2", net.time_embed[2])
    conv("conv_in", net.input_blocks[0][0])
    i = 1
    for lvl in range(L):
        for j in range(nrb):
            seq = net.input_blocks[i]
            res(f"down_blocks.{lvl}.resnets.{j}", seq[0])
            if len(seq) > 1:
                attn(f"down_blocks.{lvl}.attentions.{j}", seq[1])
            i += 1
        if lvl != L - 1:
            conv(f"down_blocks.{lvl}.downsamplers.0.conv", net.input_blocks[i][0].op)
            i += 1
    res("mid_block.resnets.0", net.middle_block[0])
    attn("mid_block.attentions.0", net.middle_block[1])
    res("mid_block.resnets.1", net.middle_block[2])
    for ob, seq in enumerate(net.output_blocks):
        u, j = divmod(ob, nrb + 1)
        for layer in seq:
            if isinstance(layer, ResBlock):
                res(f"up_blocks.{u}.resnets.{j}", layer)
            elif isinstance(layer, AttentionBlock):
                attn(f"up_blocks.{u}.attentions.{j}", layer)
            elif isinstance(layer, Upsample):
                conv(f"up_blocks.{u}.upsamplers.0.conv", layer.conv)
    conv("conv_norm_out", net.out[0])
    conv("conv_out", net.out[2])
    return {k: v.detach() for k, v in out.items()}


def diffusers_config_for_ddpm(cfg: DDPMUNetConfig) -> dict:
    L = len(cfg.ch_mult)
    res = [cfg.resolution // 2 ** i for i in range(L)]
    attn = [r in cfg.attn_resolutions for r in res]
    return dict(sample_size=cfg.resolution, in_channels=cfg.in_channels, out_channels=cfg.out_ch,
                block_out_channels=[cfg.ch * m for m in cfg.ch_mult], layers_per_block=cfg.num_res_blocks,
                down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
                up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
                freq_shift=1, flip_sin_to_cos=False, downsample_padding=0, norm_eps=1e-6, norm_num_groups=32,
                attention_head_dim=None, mid_block_scale_factor=1, act_fn="silu")


def diffusers_config_for_improved(cfg: ImprovedUNetConfig) -> dict:
    L = len(cfg.channel_mult)
    attn = [2 ** i in cfg.attention_resolutions for i in range(L)]
    widths = [cfg.model_channels * m for m in cfg.channel_mult]
    head_dims = {w // cfg.num_heads for w, a in zip(widths, attn) if a} | {widths[-1] // cfg.num_heads}
    assert len(head_dims) == 1, "diffusers needs one head width for every attention layer"
    return dict(sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
                block_out_channels=widths, layers_per_block=cfg.num_res_blocks,
                down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
                up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
                freq_shift=0, flip_sin_to_cos=True, downsample_padding=1, norm_eps=1e-5, norm_num_groups=32,
                attn_norm_num_groups=32, attention_head_dim=head_dims.pop(),
                resnet_time_scale_shift="scale_shift" if cfg.use_scale_shift_norm else "default",
                mid_block_scale_factor=1, act_fn="silu")


# ---------------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("name, count, table4_mib", [
    # Ho et al. App. B: 35.7M; google/ddpm-cifar10-32 in diffusers has the same count (test below).
    ("ddpm-cifar10", 35_746_307, None),
    # Table 4: CelebA 64×64 "300.22 MB" (DDIM's model); Ho et al. do not give this model's count.
    ("ddim-celeba64", 78_700_803, 300.22),
    # Ho et al. App. B: "114 million" for LSUN; Table 4: LSUN Bedroom "433.63 MB".
    ("ddpm-lsun-bedroom", 113_673_219, 433.63),
])
def test_ddpm_presets_have_published_parameter_counts(name, count, table4_mib):
    """Sources: Ho et al. (2020) App. B (35.7M CIFAR10, 114M LSUN), the paper's Table 4 sizes (float32 MiB), and
    diffusers' own implementation of google/ddpm-cifar10-32 (exactly 35,746,307: the next-but-one test)."""
    net = _meta(DDPMUNet, DDPM_PRESETS[name])
    assert _count(net) == count
    if table4_mib is not None:
        assert _mib(count) == table4_mib
    if name == "ddpm-cifar10":
        assert round(count / 1e6, 1) == 35.7
    if name == "ddpm-lsun-bedroom":
        assert round(count / 1e6) == 114


def test_improved_presets_have_published_parameter_counts():
    """Table 4 (P App. F.5): CIFAR10 "200.44 MB" for the DDPM/DDIM/Analytic-DPM model (Bao et al.'s ε-only
    network: out 3) and "200.45 MB" for Improved DDPM (the same network with a learned-variance head: out 6); LSUN
    Bedroom "433.64 MB" for Improved DDPM (improved-diffusion's LSUN model). The ImageNet 64 model's count
    (121,063,942; its file name says "100M", a rounded label) has no published figure; its configuration is the
    one of improved-diffusion's README, whose 192-channel class-conditional variant (+1000×768 label embedding) is
    published as "270M parameters": this code gives 273.0M for it."""
    cifar = IMPROVED_PRESETS["improved-cifar10"]
    assert cifar.out_channels == 3
    n3 = _count(_meta(ImprovedUNet, cifar))
    n6 = _count(_meta(ImprovedUNet, dataclasses.replace(cifar, out_channels=6)))
    assert (n3, _mib(n3)) == (52_542_979, 200.44)
    assert (n6, _mib(n6)) == (52_546_438, 200.45)
    assert _count(_meta(ImprovedUNet, PRETRAINED_PRESETS["improved-diffusion-cifar10"].config)) == n6  # "50M"
    lsun = PRETRAINED_PRESETS["improved-lsun-bedroom"].config
    n = _count(_meta(ImprovedUNet, lsun))
    assert (n, _mib(n)) == (113_676_678, 433.64)
    imnet = IMPROVED_PRESETS["improved-imagenet64"]
    assert _count(_meta(ImprovedUNet, imnet)) == 121_063_942
    cond192 = dataclasses.replace(imnet, model_channels=192)
    assert round((_count(_meta(ImprovedUNet, cond192)) + 1000 * 768) / 1e6) == 273


def test_diffusers_port_of_ddpm_cifar10_has_the_same_parameters():
    """google/ddpm-cifar10-32's config (diffusers' own implementation) has 35,746,307 parameters, and the converter
    maps each of our DDPM CIFAR10 parameters onto one of diffusers' with the same shape (a bijection)."""
    pytest.importorskip("diffusers")
    from diffusers import UNet2DModel

    with torch.device("meta"):
        ref = UNet2DModel.from_config(DDPM_CIFAR10_CONFIG)
    ours = _meta(DDPMUNet, DDPM_PRESETS["ddpm-cifar10"])
    assert _count(ref) == _count(ours) == 35_746_307
    assert diffusers_config_for_ddpm(DDPM_PRESETS["ddpm-cifar10"]) | {"_class_name": "UNet2DModel"} == \
        {k: v for k, v in DDPM_CIFAR10_CONFIG.items() if k not in ("center_input_sample", "time_embedding_type")}
    conv = ddpm_to_diffusers(ours.state_dict(), ours.config)
    ref_sd = ref.state_dict()
    assert set(conv) == set(ref_sd) and len(conv) == len(ours.state_dict())
    assert all(tuple(conv[k].shape) == tuple(ref_sd[k].shape) for k in conv)


def test_full_size_improved_cifar10_maps_onto_diffusers():
    pytest.importorskip("diffusers")
    from diffusers import UNet2DModel

    cfg = IMPROVED_PRESETS["improved-cifar10"]
    ours = _meta(ImprovedUNet, cfg)
    with torch.device("meta"):
        ref = UNet2DModel.from_config(diffusers_config_for_improved(cfg))
    conv = improved_to_diffusers(ours)
    ref_sd = ref.state_dict()
    assert set(conv) == set(ref_sd)
    assert all(tuple(conv[k].shape) == tuple(ref_sd[k].shape) for k in conv)
    assert _count(ref) == _count(ours) == 52_542_979


def test_state_dict_names_follow_the_published_checkpoints():
    """Spot checks of parameter names of the pytorch_diffusion/DDIM and improved-diffusion checkpoints."""
    ddpm = set(_meta(DDPMUNet, DDPM_PRESETS["ddpm-cifar10"]).state_dict())
    for k in ("temb.dense.0.weight", "temb.dense.1.bias", "conv_in.weight", "down.0.block.0.norm1.weight",
              "down.0.block.1.temb_proj.weight", "down.1.block.0.nin_shortcut.weight", "down.1.attn.1.q.weight",
              "down.0.downsample.conv.weight", "mid.block_1.conv2.weight", "mid.attn_1.proj_out.bias",
              "up.3.block.2.norm2.weight", "up.1.attn.2.v.weight", "up.3.upsample.conv.weight", "norm_out.weight",
              "conv_out.bias"):
        assert k in ddpm, k
    assert "down.3.downsample.conv.weight" not in ddpm and "up.0.upsample.conv.weight" not in ddpm
    imp = set(_meta(ImprovedUNet, IMPROVED_PRESETS["improved-imagenet64"]).state_dict())
    for k in ("time_embed.0.weight", "time_embed.2.bias", "input_blocks.0.0.weight",
              "input_blocks.1.0.in_layers.0.weight", "input_blocks.1.0.emb_layers.1.weight",
              "input_blocks.1.0.out_layers.3.weight", "input_blocks.4.0.op.weight",
              "input_blocks.5.0.skip_connection.weight", "input_blocks.9.1.qkv.weight", "middle_block.1.qkv.weight",
              "middle_block.2.out_layers.0.bias", "output_blocks.0.1.proj_out.weight", "output_blocks.3.2.conv.weight",
              "out.0.weight", "out.2.weight"):
        assert k in imp, k
    assert "input_blocks.5.1.qkv.weight" not in imp  # ImageNet 64: attention only at rates 4 and 8


# ---------------------------------------------------------------------------------------------------- equivalence
def test_ddpm_unet_matches_diffusers_implementation():
    pytest.importorskip("diffusers")
    from diffusers import UNet2DModel

    ours = _randomize(DDPMUNet(TINY_DDPM), seed=3)
    ref = UNet2DModel.from_config(diffusers_config_for_ddpm(TINY_DDPM)).eval()
    ref.load_state_dict(ddpm_to_diffusers(ours.state_dict(), TINY_DDPM), strict=True)
    x = _x((2, 3, 8, 8))
    for t in (0, 17, 999):
        tt = torch.full((2,), t, dtype=torch.int64)
        with torch.no_grad():
            a, b = ours(x, tt), ref(x, tt).sample
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item()), (t, (a - b).abs().max())


def test_improved_unet_matches_diffusers_implementation():
    """Multi-head attention with improved-diffusion's per-head [q, k, v] channel order, scale-shift norm, cos-first
    timestep embedding and a learned-variance head, against diffusers' independent code."""
    pytest.importorskip("diffusers")
    from diffusers import UNet2DModel

    ours = _randomize(ImprovedUNet(TINY_IMPROVED), seed=4)
    ref = UNet2DModel.from_config(diffusers_config_for_improved(TINY_IMPROVED)).eval()
    ref.load_state_dict(improved_to_diffusers(ours), strict=True)
    x = _x((2, 3, 8, 8))
    for t in (0.0, 12.25, 999.75):
        tt = torch.full((2,), t)
        with torch.no_grad():
            a, b = ours(x, tt), ref(x, tt).sample
        assert a.shape == (2, 6, 8, 8)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item()), (t, (a - b).abs().max())


# ---------------------------------------------------------------------------------------------------- round trips
def _expected(net, x, t):
    with torch.no_grad():
        return net(x, t)


def test_ddpm_round_trip_plain_state_dict_and_safetensors(tmp_path):
    net = _randomize(DDPMUNet(TINY_DDPM), seed=5)
    x = _x((3, 3, 8, 8))
    torch.save(net.state_dict(), tmp_path / "model-790000.ckpt")
    eps = load_pretrained("ddpm", tmp_path / "model-790000.ckpt", TINY_DDPM, device="cpu")
    assert isinstance(eps, TorchEpsModel) and isinstance(eps, PretrainedEpsModel)
    assert eps.timestep_map == "n-1" and eps.info["location"] == ""
    for n in (1, 500, 1000):
        want = _expected(net, x, torch.full((3,), n - 1))
        assert torch.equal(eps(x, n), want)
    # numpy in, numpy out
    out = eps(x.numpy().astype(np.float64), 7)
    assert out.dtype == np.float64 and np.allclose(out, _expected(net, x, torch.full((3,), 6)).numpy(), atol=1e-6)
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    eps2 = load_pretrained("ddpm", tmp_path / "w.safetensors", TINY_DDPM.to_dict(), device="cpu")
    assert torch.equal(eps2(x, 3), eps(x, 3))


def test_ddim_repository_list_checkpoint_uses_ema_weights(tmp_path):
    """DDIM's ckpt.pth: [model, optimizer, epoch, step, ema], saved from a DataParallel model ('module.')."""
    raw = _randomize(DDPMUNet(TINY_DDPM), seed=6)
    ema = _randomize(DDPMUNet(TINY_DDPM), seed=7)
    opt = torch.optim.Adam(raw.parameters(), lr=1e-4)
    raw(_x((1, 3, 8, 8)), torch.zeros(1)).sum().backward()
    opt.step()
    states = [{"module." + k: v for k, v in raw.state_dict().items()}, opt.state_dict(), 3, 1234,
              {"module." + k: v for k, v in ema.state_dict().items()}]
    torch.save(states, tmp_path / "ckpt.pth")
    eps = load_pretrained("ddpm", tmp_path / "ckpt.pth", TINY_DDPM, device="cpu")
    assert eps.info["location"] == "[4]" and eps.info["stripped_prefixes"] == ["module."]
    x = _x((2, 3, 8, 8))
    assert torch.equal(eps(x, 10), _expected(ema, x, torch.full((2,), 9)))
    eps_raw = load_pretrained("ddpm", tmp_path / "ckpt.pth", TINY_DDPM, device="cpu", prefer_ema=False)
    assert torch.equal(eps_raw(x, 10), _expected(raw, x, torch.full((2,), 9)))


def test_improved_diffusion_round_trip_learned_sigma_and_rescaled_shifted_timesteps(tmp_path):
    """improved-diffusion .pt (raw state dict), out 6: ε̂ = first 3 channels, fed (n − 1)·1000/N."""
    net = _randomize(ImprovedUNet(TINY_IMPROVED), seed=8)
    torch.save(net.state_dict(), tmp_path / "imagenet64_uncond.pt")
    sched = Schedule.cosine(40)
    eps = load_pretrained("improved", tmp_path / "imagenet64_uncond.pt", TINY_IMPROVED, device="cpu",
                          schedule=sched)
    assert eps.timestep_map == "(n-1)*1000/N" and eps.learned_sigma and eps.num_timesteps == 40
    x = _x((2, 3, 8, 8))
    for n in (1, 13, 40):
        want = _expected(net, x, torch.full((2,), (n - 1) * 1000.0 / 40))[:, :3]
        assert torch.equal(eps(x, n), want)


def test_bao_cifar10_ckpt_dict_round_trip(tmp_path):
    """The official Analytic-DPM code's CKPT dict (models_states / ema_models_states {'eps_model': ...}, optimizer
    states, a numpy best_val_loss), loaded with the CIFAR10 (LS) preset's conventions: t = n·1000/N = n."""
    cfg = dataclasses.replace(TINY_IMPROVED, out_channels=3)
    raw = _randomize(ImprovedUNet(cfg), seed=9)
    ema = _randomize(ImprovedUNet(cfg), seed=10)
    opt = torch.optim.AdamW(raw.parameters(), lr=1e-4)
    raw(_x((1, 3, 8, 8)), torch.ones(1)).sum().backward()
    opt.step()
    ckpt = {"it": 400000, "best_val_loss": np.float64(0.031), "models_states": {"eps_model": raw.state_dict()},
            "optimizers_states": {"all": opt.state_dict()}, "lr_schedulers_states": {},
            "ema_models_states": {"eps_model": ema.state_dict()}}
    torch.save(ckpt, tmp_path / "400000.ckpt.pth")
    eps = load_pretrained("improved-cifar10-ls", tmp_path / "400000.ckpt.pth", config=cfg, device="cpu")
    assert eps.info["location"] == "['ema_models_states']['eps_model']"
    assert eps.timestep_map == "n*1000/N" and eps.num_timesteps == 1000 and not eps.learned_sigma
    assert eps.schedule.N == 1000 and np.allclose(eps.schedule.beta[1:], np.linspace(1e-4, 0.02, 1000))
    x = _x((2, 3, 8, 8))
    assert torch.equal(eps(x, 250), _expected(ema, x, torch.full((2,), 250.0)))


def test_diffusers_round_trip_with_scheduler_and_legacy_attention_names(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=32, attention_head_dim=None)
    _randomize(unet, seed=11)
    unet.save_pretrained(tmp_path / "model")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_config(tmp_path / "model")
    eps = load_pretrained("diffusers", tmp_path / "model", device="cpu")
    assert eps.timestep_map == "n-1" and eps.schedule.N == 1000 and eps.prediction == "eps"
    assert eps.image_shape == (3, 8, 8)
    x = _x((2, 3, 8, 8))
    with torch.no_grad():
        want = unet(x, torch.full((2,), 99)).sample
    assert torch.allclose(eps(x, 100), want, atol=1e-6)

    # an old-style .bin (query/key/value/proj_attn names) in a pipeline layout (unet/, scheduler/), v-prediction
    legacy = {}
    for k, v in unet.state_dict().items():
        for new, old in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."),
                         (".to_out.0.", ".proj_attn.")):
            k = k.replace(new, old)
        legacy[k] = v
    (tmp_path / "pipe" / "unet").mkdir(parents=True)
    (tmp_path / "pipe" / "unet" / "config.json").write_text((tmp_path / "model" / "config.json").read_text())
    torch.save(legacy, tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.bin")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                  prediction_type="v_prediction").save_config(tmp_path / "pipe" / "scheduler")
    eps_v = load_pretrained("diffusers", tmp_path / "pipe", device="cpu")
    assert eps_v.info["renamed_legacy_keys"] > 0 and eps_v.prediction == "v"
    sched = Schedule.cosine(1000)
    n = 100
    v_hat = want  # the network output is now read as v̂
    expect = math.sqrt(sched.beta_bar[n]) * x + math.sqrt(sched.alpha_bar[n]) * v_hat
    assert torch.allclose(eps_v(x, n), expect.to(x.dtype), atol=1e-5)


# ---------------------------------------------------------------------------------------------------- presets
def test_presets_state_their_conventions():
    P = PRETRAINED_PRESETS
    assert {"ddpm-cifar10", "ddim-celeba64", "ddpm-lsun-bedroom", "improved-cifar10", "improved-imagenet64"} <= set(P)
    for name in ("ddpm-cifar10", "ddim-celeba64", "ddpm-lsun-bedroom", "diffusers-ddpm-cifar10"):
        assert P[name].timestep_map == "n-1" and P[name].schedule().N == 1000
    im = P["improved-imagenet64"]
    assert im.learned_sigma and im.config.out_channels == 6 and im.schedule().N == 4000
    assert im.schedule().name.startswith("cosine")
    dummy = TorchEpsModel(lambda x, t: x, im.timestep_map, schedule=im.schedule())
    assert dummy.network_timestep(1) == 0.0 and dummy.network_timestep(4000) == 999.75
    assert P["improved-cifar10-cs"].schedule().name.startswith("cosine")
    assert P["improved-cifar10-ls"].schedule().name.startswith("linear")
    cif = TorchEpsModel(lambda x, t: x, P["improved-cifar10-ls"].timestep_map, num_timesteps=1000)
    assert cif.network_timestep(1) == 1.0 and cif.network_timestep(1000) == 1000.0
    assert preset_config("ddpm-cifar10") == DDPM_PRESETS["ddpm-cifar10"]
    assert preset_config("diffusers-ddpm-cifar10")["block_out_channels"] == [128, 256, 256, 256]
    for p in P.values():
        assert p.source and p.file_name and p.family in ("ddpm", "improved", "diffusers")


# ---------------------------------------------------------------------------------------------------- errors/safety
def _marker_path():
    return os.environ.get("ADPM_TEST_MARKER", "")


class _Evil:
    """Unpickling this would call os.system; a weights-only loader must refuse it."""

    def __reduce__(self):
        return (os.system, (f"touch {_marker_path()}",))


def test_loading_never_executes_pickled_code(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    monkeypatch.setenv("ADPM_TEST_MARKER", str(marker))
    net = DDPMUNet(TINY_DDPM)
    torch.save({"state_dict": net.state_dict(), "payload": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="unpickling"):
        load_pretrained("ddpm", tmp_path / "evil.pt", TINY_DDPM, device="cpu")
    assert not marker.exists()


def test_missing_file_names_file_family_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        load_pretrained("ddpm-cifar10", tmp_path / "model-790000.ckpt")
    msg = str(exc.value)
    assert "model-790000.ckpt" in msg and "ddpm-cifar10" in msg and "pesser/pytorch_diffusion" in msg
    assert "Nothing is downloaded" in msg
    with pytest.raises(FileNotFoundError, match="improved-diffusion"):
        load_pretrained("improved-imagenet64", tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="family 'ddpm'"):
        load_pretrained("ddpm", tmp_path / "x.pt", TINY_DDPM)
    with pytest.raises(FileNotFoundError, match="google/ddpm-cifar10-32"):
        load_pretrained("diffusers-ddpm-cifar10", tmp_path / "no_dir")


def test_argument_errors(tmp_path):
    torch.save(DDPMUNet(TINY_DDPM).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="family must be one of"):
        load_pretrained("ddpm2", tmp_path / "w.pt")
    with pytest.raises(ValueError, match="needs the architecture.*'ddpm-cifar10'"):
        load_pretrained("ddpm", tmp_path / "w.pt")
    with pytest.raises(ValueError, match="family 'improved', not 'ddpm'"):
        load_pretrained("ddpm", tmp_path / "w.pt", "improved-cifar10-ls")
    with pytest.raises(TypeError, match="unknown DDPMUNetConfig field"):
        load_pretrained("ddpm", tmp_path / "w.pt", {"channels": 3})
    with pytest.raises(ValueError, match="needs N: pass schedule="):
        load_pretrained("improved-cifar10", tmp_path / "w.pt", config=dataclasses.replace(TINY_IMPROVED,
                                                                                           out_channels=3))
    with pytest.raises(ValueError, match="multiple of 32"):
        DDPMUNetConfig(ch=16)
    with pytest.raises(ValueError, match="num_heads = 3 must divide"):
        dataclasses.replace(TINY_IMPROVED, num_heads=3)


def test_mismatches_are_reported_with_hints(tmp_path):
    # improved-diffusion keys loaded as ddpm
    torch.save(ImprovedUNet(TINY_IMPROVED).state_dict(), tmp_path / "imp.pt")
    with pytest.raises(ValueError, match="use family 'improved'") as exc:
        load_pretrained("ddpm", tmp_path / "imp.pt", TINY_DDPM, device="cpu")
    assert "missing from the checkpoint" in str(exc.value) and "unexpected" in str(exc.value)
    # a 6-channel (learned-variance) checkpoint into a 3-channel config
    with pytest.raises(ValueError, match="set out_channels=6") as exc:
        load_pretrained("improved", tmp_path / "imp.pt", dataclasses.replace(TINY_IMPROVED, out_channels=3),
                        device="cpu", schedule=Schedule.cosine(40))
    assert "out.2.weight: (6, 32, 3, 3) vs (3, 32, 3, 3)" in str(exc.value)
    # no state dict anywhere
    torch.save({"step": 3, "losses": [1.0, 2.0]}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="found no state dict.*'step'"):
        load_pretrained("ddpm", tmp_path / "junk.pt", TINY_DDPM, device="cpu")


def test_read_checkpoint_and_extract_helpers(tmp_path):
    sd = {"a": torch.ones(2)}
    torch.save({"model": {"eps_model": sd, "other": {"b": torch.zeros(1)}}}, tmp_path / "m.pt")
    obj = read_checkpoint(tmp_path / "m.pt")
    got, loc = extract_state_dict(obj)
    assert loc == "['model']['eps_model']" and torch.equal(got["a"], sd["a"])
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        read_checkpoint(tmp_path / "none.pt")


def test_numpy_scalars_in_legacy_format_and_truncated_files(tmp_path):
    """A numpy scalar beside the weights (allowed: data, not code), also in torch's pre-1.6 (non-zip) format, in
    which the pytorch_diffusion conversions were written; a truncated file gives a clear error."""
    net = _randomize(DDPMUNet(TINY_DDPM), seed=12)
    blob = {"state_dict": net.state_dict(), "loss": np.float32(0.5), "epoch": 7}
    torch.save(blob, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    obj = read_checkpoint(tmp_path / "legacy.pth")
    assert float(obj["loss"]) == 0.5
    eps = load_pretrained("ddpm", tmp_path / "legacy.pth", TINY_DDPM, device="cpu")
    x = _x((1, 3, 8, 8))
    assert torch.equal(eps(x, 5), _expected(net, x, torch.full((1,), 4)))
    data = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not read|cannot be read"):
        read_checkpoint(tmp_path / "cut.pth")


def test_dtype_and_device_options(tmp_path):
    net = _randomize(ImprovedUNet(TINY_IMPROVED), seed=13)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    eps = load_pretrained("improved", tmp_path / "w.pt", TINY_IMPROVED, device="cpu", dtype=torch.float64,
                          schedule=Schedule.cosine(40))
    assert next(eps.net.parameters()).dtype == torch.float64 and eps.device.type == "cpu"
    x = _x((2, 3, 8, 8)).double()
    out = eps(x, 9)
    assert out.dtype == torch.float64
    want = _expected(net, x.float(), torch.full((2,), 8 * 1000.0 / 40))[:, :3]
    assert torch.allclose(out.float(), want, atol=1e-4)
    with pytest.raises(TypeError, match="dtype must be a floating"):
        load_pretrained("improved", tmp_path / "w.pt", TINY_IMPROVED, device="cpu", dtype=torch.int32,
                        schedule=Schedule.cosine(40))
    torch.save(DDPMUNet(TINY_DDPM).state_dict(), tmp_path / "d.pt")
    with pytest.raises(ValueError, match="learned_sigma=True needs"):
        load_pretrained("ddpm", tmp_path / "d.pt", TINY_DDPM, device="cpu", learned_sigma=True)
