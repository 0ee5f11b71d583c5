"""Tests for analytic_dpm.models: the ε-model protocol adapters, TorchEpsModel and the U-Net.

Oracle for the adapters: Gaussian image data (d = 64 as 1×8×8, a rotated covariance) from analytic_dpm.toy, whose
ε*_n, E[x_0 | x_n] and score are known exactly and computed by separate formulas. The x_0-, v- and score-predictors
built from them must all give the same ε as ε*_n itself, to 1e-10 in float64.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from analytic_dpm.models.protocol import (
    TIMESTEP_MAPS,
    ConvertedEpsModel,
    EpsModel,
    TorchEpsModel,
    eps_from_prediction,
    from_score_predictor,
    from_v_predictor,
    from_x0_predictor,
)
from analytic_dpm.models.unet import UNet, UNetConfig, count_parameters, timestep_embedding
from analytic_dpm.schedules import Schedule
from analytic_dpm.toy.gaussian import default_gaussian

SCHED = Schedule.linear(1000)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny networks run faster on one thread, and far faster when the cores are shared (no OpenMP spin-waits)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
SHAPE = (1, 8, 8)
DATA = default_gaussian(dim=64, rotate=True, seed=1)
STEPS = [1, 2, 10, 250, 500, 999, 1000]


def _x_batch(n, num=5, seed=0):
    """x_n samples from q_n, shaped as images (num, 1, 8, 8)."""
    rng = np.random.default_rng(seed)
    x0 = DATA.sample(num, seed=seed)
    eps = rng.standard_normal(x0.shape)
    x = math.sqrt(SCHED.alpha_bar[n]) * x0 + math.sqrt(SCHED.beta_bar[n]) * eps
    return x.reshape((num,) + SHAPE)


def _v_exact(x, n):
    """v* = E[√ᾱ ε − √β̄ x_0 | x_n] = √ᾱ ε* − √β̄ E[x_0 | x_n]."""
    return (math.sqrt(SCHED.alpha_bar[n]) * DATA.eps(SCHED, x, n)
            - math.sqrt(SCHED.beta_bar[n]) * DATA.x0_posterior_mean(SCHED, x, n))


ADAPTED = {
    "x0": lambda: from_x0_predictor(lambda x, n: DATA.x0_posterior_mean(SCHED, x, n), SCHED),
    "v": lambda: from_v_predictor(_v_exact, SCHED),
    "score": lambda: from_score_predictor(lambda x, n: DATA.score(SCHED, x, n), SCHED),
}


# ---------------------------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("kind", sorted(ADAPTED))
@pytest.mark.parametrize("n", STEPS)
def test_adapters_reproduce_the_exact_eps_numpy(kind, n):
    model = ADAPTED[kind]()
    x = _x_batch(n, seed=n)
    want = DATA.eps(SCHED, x, n)
    got = model(x, n)
    assert isinstance(got, np.ndarray) and got.shape == x.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", sorted(ADAPTED))
def test_adapters_work_on_torch_float64(kind):
    model = ADAPTED[kind]()
    for n in (1, 300, 1000):
        x = torch.from_numpy(_x_batch(n, seed=7))
        got = model(x, n)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64 and got.shape == x.shape
        np.testing.assert_allclose(got.numpy(), DATA.eps(SCHED, x.numpy(), n), rtol=0, atol=1e-10)


def test_conversions_invert_the_forward_definitions_for_known_x0_and_eps():
    """With the true x_0 and ε of one draw, x_n = √ᾱ x_0 + √β̄ ε: the true x_0, v = √ᾱ ε − √β̄ x_0 and
    −ε/√β̄ must all convert back to ε."""
    rng = np.random.default_rng(3)
    x0 = rng.uniform(-1, 1, (4,) + SHAPE)
    eps = rng.standard_normal(x0.shape)
    for n in (1, 37, 1000):
        a, b = math.sqrt(SCHED.alpha_bar[n]), math.sqrt(SCHED.beta_bar[n])
        xn = a * x0 + b * eps
        for pred, out in (("eps", eps), ("x0", x0), ("v", a * eps - b * x0), ("score", -eps / b)):
            np.testing.assert_allclose(eps_from_prediction(SCHED, n, xn, out, pred), eps, rtol=0, atol=1e-11)


def test_adapter_checks():
    with pytest.raises(ValueError, match="prediction"):
        ConvertedEpsModel(lambda x, n: x, SCHED, "mu")
    with pytest.raises(TypeError, match="Schedule"):
        from_x0_predictor(lambda x, n: x, schedule=1000)
    m = from_x0_predictor(lambda x, n: x[:, :1], SCHED)
    with pytest.raises(ValueError, match="shape"):
        m(np.zeros((2, 3)), 5)
    with pytest.raises(ValueError, match="1..N = 1..1000"):
        ADAPTED["x0"]()(np.zeros((1, 64)), 1001)
    with pytest.raises(ValueError, match="n = 0"):
        ADAPTED["v"]()(np.zeros((1, 64)), 0)
    assert isinstance(ADAPTED["score"](), EpsModel)


# ---------------------------------------------------------------------------------------------------- TorchEpsModel
class Probe(nn.Module):
    """out = w·x + 0.001·t (per sample); records the t it was given. Optionally 2C output channels."""

    def __init__(self, dtype=torch.float32, double_channels=False):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5, dtype=dtype))
        self.double_channels = double_channels
        self.seen = []

    def forward(self, x, t):
        self.seen.append(t.clone())
        assert x.dtype == self.w.dtype
        out = self.w * x + 0.001 * t.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return torch.cat([out, -out], dim=1) if self.double_channels else out


def test_torch_eps_model_numpy_round_trip():
    net = Probe()
    model = TorchEpsModel(net, "n", num_timesteps=1000)
    x = np.random.default_rng(0).standard_normal((3,) + SHAPE)
    out = model(x, 7)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == x.shape
    np.testing.assert_allclose(out, 0.5 * x.astype(np.float32) + 0.007, rtol=1e-6, atol=1e-7)
    assert net.seen[-1].dtype == torch.int64 and net.seen[-1].tolist() == [7, 7, 7]
    out32 = model(x.astype(np.float32), 7)
    assert out32.dtype == np.float32


def test_torch_eps_model_torch_round_trip_keeps_dtype_and_device():
    net = Probe()
    model = TorchEpsModel(net)
    x = torch.randn((2,) + SHAPE, dtype=torch.float64)
    out = model(x, 3)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.device == x.device
    assert not out.requires_grad
    np.testing.assert_allclose(out.numpy(), 0.5 * x.float().double().numpy() + 0.003, rtol=1e-6, atol=1e-7)
    assert model.device == torch.device("cpu")


def test_torch_eps_model_float64_network_is_exact():
    net = Probe(dtype=torch.float64)
    x = np.random.default_rng(1).standard_normal((2, 5))
    np.testing.assert_array_equal(TorchEpsModel(net)(x, 4), 0.5 * x + 0.004)


@pytest.mark.parametrize(
    "tmap, N, n, want, dtype",
    [
        ("n", 1000, 1, 1, torch.int64),
        ("n", 1000, 1000, 1000, torch.int64),
        ("n-1", 1000, 1, 0, torch.int64),
        ("n-1", 1000, 1000, 999, torch.int64),
        ("n*1000/N", 4000, 4000, 1000.0, torch.float32),
        ("n*1000/N", 4000, 2, 0.5, torch.float32),
        ("(n-1)*1000/N", 4000, 1, 0.0, torch.float32),
        ("(n-1)*1000/N", 4000, 4000, 999.75, torch.float32),
    ],
)
def test_timestep_maps(tmap, N, n, want, dtype):
    assert tmap in TIMESTEP_MAPS
    net = Probe()
    model = TorchEpsModel(net, tmap, num_timesteps=N)
    model(np.zeros((2, 1, 2, 2)), n)
    t = net.seen[-1]
    assert t.dtype == dtype and t.shape == (2,)
    assert t.tolist() == [want, want]


def test_callable_timestep_map_and_schedule_supplies_N():
    net = Probe()
    model = TorchEpsModel(net, lambda n: 2 * n + 0.5, schedule=Schedule.linear(50))
    model(np.zeros((1, 3)), 4)
    assert net.seen[-1].tolist() == [8.5]
    with pytest.raises(ValueError, match="1..N = 1..50"):
        model(np.zeros((1, 3)), 51)


def test_torch_eps_model_argument_checks():
    net = Probe()
    with pytest.raises(ValueError, match="timestep_map"):
        TorchEpsModel(net, "t")
    with pytest.raises(ValueError, match="needs N"):
        TorchEpsModel(net, "n*1000/N")
    with pytest.raises(ValueError, match="disagrees"):
        TorchEpsModel(net, num_timesteps=10, schedule=Schedule.linear(50))
    with pytest.raises(ValueError, match="needs the schedule"):
        TorchEpsModel(net, prediction="x0")
    with pytest.raises(TypeError, match="floating-point"):
        TorchEpsModel(net)(np.zeros((1, 3), dtype=np.int64), 1)
    with pytest.raises(ValueError, match="learned_sigma=True"):
        TorchEpsModel(Probe(double_channels=True))(np.zeros((2, 3, 4, 4)), 1)


def test_learned_sigma_keeps_the_eps_head_and_batches_split():
    net = Probe(double_channels=True)
    x = np.random.default_rng(2).standard_normal((5, 3, 4, 4))
    model = TorchEpsModel(net, learned_sigma=True, batch_size=2)
    out = model(x, 10)
    np.testing.assert_allclose(out, 0.5 * x + 0.01, rtol=1e-6, atol=1e-7)
    assert [len(t) for t in net.seen] == [2, 2, 1]


class ExactX0Net(nn.Module):
    """A 'network' returning the exact E[x_0 | x_n] of the Gaussian data, in float64 (reads n from t)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, t):
        n = int(t[0])
        assert bool((t == n).all())
        return DATA.x0_posterior_mean(SCHED, x, n) + self.dummy


def test_torch_eps_model_with_x0_prediction_matches_exact_eps():
    model = TorchEpsModel(ExactX0Net(), schedule=SCHED, prediction="x0")
    for n in (1, 500, 1000):
        x = _x_batch(n, seed=11)
        np.testing.assert_allclose(model(x, n), DATA.eps(SCHED, x, n), rtol=0, atol=1e-10)


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x, t):
        return self.drop(x)


def test_torch_eps_model_puts_the_network_in_eval_mode():
    net = DropoutNet().train()
    model = TorchEpsModel(net)
    assert not net.training
    net.train()  # e.g. training resumed in between
    x = np.ones((4, 8))
    np.testing.assert_array_equal(model(x, 1), x)  # dropout off
    assert not net.training


# ---------------------------------------------------------------------------------------------------- U-Net
def _randomise_zero_inits(net, seed=0):
    """The U-Net zero-initialises its output and residual convolutions (ε̂ = 0 at start); give them values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if bool((p == 0).all()):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


SMALL28 = UNetConfig(image_size=28, channels=1, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1,
                     attention_resolutions=(7,), dropout=0.1, num_heads=2)


@pytest.mark.parametrize("config", [UNetConfig.digits(), SMALL28,
                                    UNetConfig(image_size=8, channels=3, base_channels=8, channel_mult=(1, 2, 2),
                                               num_res_blocks=2, attention_resolutions=(2, 8))])
def test_unet_output_shape(config):
    torch.manual_seed(0)
    net = UNet(config).eval()
    x = torch.randn(2, config.channels, config.image_size, config.image_size)
    out = net(x, torch.tensor([1, 900]))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output layer
    assert net.num_parameters == count_parameters(net) > 0


def test_unet_time_conditioning_and_batch_independence():
    torch.manual_seed(0)
    net = _randomise_zero_inits(UNet(SMALL28)).double().eval()  # float64: batch-size-dependent kernels agree to ~1e-15
    x = torch.randn(1, 1, 28, 28, dtype=torch.float64).repeat(3, 1, 1, 1)
    with torch.no_grad():
        out = net(x, torch.tensor([1, 500, 500]))
        alone = net(x[:1], torch.tensor([500]))
        scalar_t = net(x[:2], torch.tensor(500))
    assert (out[0] - out[1]).abs().max() > 0.05 * out[1].abs().max()  # different n → clearly different output
    torch.testing.assert_close(out[1], out[2], rtol=0, atol=1e-12)
    torch.testing.assert_close(alone[0], out[1], rtol=0, atol=1e-12)  # no cross-sample coupling
    torch.testing.assert_close(scalar_t[0], out[1], rtol=0, atol=1e-12)


def test_unet_works_in_float64_and_through_the_adapter():
    torch.manual_seed(0)
    net = _randomise_zero_inits(UNet(UNetConfig.digits())).double()
    model = TorchEpsModel(net, "n", schedule=SCHED)
    x = np.random.default_rng(0).standard_normal((3,) + SHAPE)
    a, b = model(x, 10), model(x, 900)
    assert a.dtype == np.float64 and a.shape == x.shape and not np.allclose(a, b)
    with torch.no_grad():
        direct = net(torch.from_numpy(x), torch.full((3,), 10)).numpy()
    np.testing.assert_array_equal(a, direct)


def test_unet_config_validation_and_json_round_trip():
    cfg = UNetConfig.fashion_mnist()
    assert cfg.resolutions == (28, 14, 7)
    back = UNetConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg
    with pytest.raises(ValueError, match="divisible by 8"):
        UNetConfig(image_size=28, channel_mult=(1, 2, 2, 2), attention_resolutions=())
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNetConfig(image_size=8, channel_mult=(1, 2), attention_resolutions=(16,))
    with pytest.raises(ValueError, match="num_heads"):
        UNetConfig(base_channels=30, num_heads=4, attention_resolutions=())
    with pytest.raises(ValueError, match="unknown UNetConfig"):
        UNetConfig.from_dict({"image_size": 8, "colour": 1})
    with pytest.raises(ValueError, match=r"shape \(B, 1, 8, 8\)"):
        UNet(UNetConfig.digits())(torch.zeros(2, 1, 28, 28), torch.ones(2))


def test_timestep_embedding_is_sinusoidal():
    t = torch.tensor([0.0, 3.0])
    e = timestep_embedding(t, 6)
    f = torch.exp(-math.log(10000.0) * torch.arange(3) / 3)
    torch.testing.assert_close(e[1], torch.cat([torch.cos(3 * f), torch.sin(3 * f)]))
    torch.testing.assert_close(e[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
