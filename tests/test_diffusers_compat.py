"""diffusers' generic scheduler checks (its ``tests/schedulers/test_schedulers.py::SchedulerCommonTest``), restated
for AnalyticDPMScheduler and run against the installed diffusers.

Ported (in our own words; each test below names the SchedulerCommonTest check it stands for):

* ``check_over_configs`` / ``test_from_save_pretrained``: a scheduler saved with ``save_config``/``save_pretrained``
  and reloaded with ``from_pretrained`` (and one rebuilt with ``from_config``) has the same config and gives the same
  ``step`` output, over a grid of config options (method, η, clip_sample, prediction_type, timestep_spacing, ...).
* ``check_over_forward``: the same after ``set_timesteps`` with the forward kwargs (num_inference_steps) and a fixed
  generator.
* ``test_step_shape``: ``step`` keeps the shape of the sample at the first and at a later timestep; also dtype
  (float16, bfloat16, float32, float64 are returned in the sample's dtype).
* ``test_scheduler_outputs_equivalence``: ``return_dict=False`` returns a tuple whose entries equal the output
  dataclass's fields (prev_sample, pred_original_sample).
* ``test_scheduler_public_api``: ``init_noise_sigma``, ``scale_model_input`` (identity here: same tensor back),
  ``step``, ``order``.
* ``test_add_noise_device``: ``add_noise`` on the test device with timesteps on the device keeps shape and device;
  here also its values equal ``DDPMScheduler.add_noise`` with the same betas.
* ``test_trained_betas``: a scheduler built from ``trained_betas`` (a numpy array) round-trips through
  ``save_pretrained``/``from_pretrained`` with the same betas.
* ``test_getattr_is_correct``: a config value read as an attribute (``scheduler.num_train_timesteps``) works with a
  FutureWarning, an instance attribute without one, an unknown name raises AttributeError naming it.
* ``test_deprecated_kwargs``: the class has no ``_deprecated_kwargs`` and its ``__init__`` takes no ``**kwargs``
  (the check's consistency rule).
* ``test_default_arguments_not_in_config``: a saved config missing an option loads with the class default.
* ``test_compatibles`` / ``test_save_load_compatible_schedulers``: every class in ``compatibles``
  (DDPMScheduler, DDIMScheduler) loads our config (same betas, and it can ``set_timesteps``), and we load theirs.
* ``test_save_load_from_different_config``: loading a config saved by another class (EulerDiscreteScheduler) uses
  the keys we know; the others never reach ``__init__`` (diffusers keeps them in ``config`` only).
* From the DDPM/DDIM suites where they are generic: set_timesteps on a device, ``len(scheduler)``, timesteps dtype
  (int64) and order (strictly decreasing, within 0..N−1), custom ``timesteps=`` (errors for increasing ones, for
  both K and timesteps, for out-of-range values), a seeded full loop reproducible with the same generator.

Not ported, and why:

* ``test_from_pretrained_hub`` and other hub downloads: no network in these tests (and no published config of this
  class on the hub).
* The reference-number full loops (``test_full_loop_no_noise``, ``test_full_loop_with_v_prediction``, ... with
  hard-coded ``result_sum``/``result_mean``): they pin diffusers' own update formulas on its dummy model; this
  scheduler's numbers are Analytic-DPM's and are checked against this library's sampler in
  tests/test_diffusers_scheduler.py instead.
* ``test_variance`` / ``test_variance_type`` / ``test_time_indices`` of DDPM: ``variance_type`` is not implemented
  (the reverse variance comes from ``method``; a non-default variance_type warns, tested in
  tests/test_diffusers_scheduler.py).
* ``test_thresholding`` (dynamic thresholding): not implemented (warns when asked).
* ``test_rescale_betas_zero_snr`` loops: a zero-terminal-SNR schedule has ᾱ_N = 0, which Analytic-DPM cannot use
  (a clear ValueError, tested in tests/test_diffusers_scheduler.py).
* Sigma-space checks of the Karras-style schedulers (``init_noise_sigma`` scaling, ``sigmas``,
  ``scale_model_input`` dividing by σ): this is a variance-preserving chain, init_noise_sigma = 1 and the model
  input is x_t itself.
* Multistep-state checks (``check_over_forward`` with ``ets``/``model_outputs`` history, ``order`` > 1,
  ``solver_order``): a one-step scheduler (order = 1) with no history.
* ``test_save_load_non_compatible_schedulers`` expecting a logged warning for incompatible classes: it checks
  diffusers' logger output, not scheduler behaviour; loading foreign configs is covered by the
  different-config check above.
* torch.compile / dynamo variants and ``test_from_save_pretrained_dynamo``: not part of this scheduler's surface.
"""

import inspect
import json
import warnings

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler  # noqa: E402

import analytic_dpm as adpm  # noqa: E402
from analytic_dpm.integrations import AnalyticDPMScheduler  # noqa: E402
from analytic_dpm.integrations.diffusers_scheduler import AnalyticDPMSchedulerOutput  # noqa: E402

N = 100
SCHED = adpm.Schedule.linear(N)
GAMMA = np.r_[np.nan, np.linspace(0.2, 0.9, N)]
RESIDUAL = np.r_[np.nan, np.linspace(0.05, 1.2, N)]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
K = 10

CONFIGS = [
    dict(method="ddpm-small"),
    dict(method="ddpm-large", clip_sample=False, data_range=None),
    dict(method="ddim", eta=0.0),
    dict(method="ddim", eta=0.7, ddim_eps="consistent"),
    dict(method="analytic-ddpm", clip_sigma_pixel=2.0),
    dict(method="analytic-ddim", eta=0.3, prediction_type="v_prediction"),
    dict(method="residual-ddpm", prediction_type="sample"),
    dict(method="residual-ddim", eta=0.5),
    dict(method="ddim", timestep_spacing="trailing"),
    dict(method="ddim", timestep_spacing="leading", steps_offset=1),
    dict(method="analytic-ddpm", trajectory_type="optimal"),
    dict(method="ddim", clip_sample_range=1.5),
]


def make(**kw):
    kw.setdefault("method", "ddim")
    return AnalyticDPMScheduler(num_train_timesteps=N, gamma=GAMMA, residual=RESIDUAL, **kw)


def dummy(shape=(4, 3, 8, 8), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype) * 2 - 1


def _step(sched, t, sample, seed=0, **kw):
    out = 0.1 * sample + 0.05
    return sched.step(out, t, sample, generator=torch.Generator().manual_seed(seed), **kw)


def _cfg(sched):
    return {k: v for k, v in sched.config.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------------------------------- config round trip
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_check_over_configs_save_load_and_from_config(tmp_path, config):
    """check_over_configs / test_from_save_pretrained: save + reload, and from_config, step identically."""
    sched = make(**config)
    sched.save_config(tmp_path / "a")
    sched.save_pretrained(tmp_path / "b")
    loaded = [AnalyticDPMScheduler.from_pretrained(tmp_path / "a"),
              AnalyticDPMScheduler.from_pretrained(tmp_path / "b"), AnalyticDPMScheduler.from_config(sched.config)]
    sample = dummy()
    for other in loaded:
        assert _cfg(other) == _cfg(sched)
        for s in (sched, other):
            s.set_timesteps(K)
        torch.testing.assert_close(other.timesteps, sched.timesteps, rtol=0, atol=0)
        for t in (sched.timesteps[0], sched.timesteps[K // 2], sched.timesteps[-1]):
            a, b = _step(sched, t, sample), _step(other, t, sample)
            torch.testing.assert_close(b.prev_sample, a.prev_sample, rtol=0, atol=0)
            torch.testing.assert_close(b.pred_original_sample, a.pred_original_sample, rtol=0, atol=0)
        assert other.table.fingerprint() == sched.table.fingerprint()


@pytest.mark.parametrize("num_inference_steps", [1, 5, 25, N])
def test_check_over_forward(tmp_path, num_inference_steps):
    sched = make(method="analytic-ddim", eta=0.4)
    sched.save_pretrained(tmp_path)
    new = AnalyticDPMScheduler.from_pretrained(tmp_path)
    sched.set_timesteps(num_inference_steps)
    new.set_timesteps(num_inference_steps)
    sample = dummy()
    t = sched.timesteps[0]
    torch.testing.assert_close(_step(new, t, sample, seed=3).prev_sample, _step(sched, t, sample, seed=3).prev_sample,
                               rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------- step
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_step_shape_and_dtype(dtype):
    sched = make(method="analytic-ddpm")
    sched.set_timesteps(K)
    for shape in ((4, 3, 8, 8), (1, 1, 5, 7), (2, 4)):
        sample = dummy(shape, dtype)
        for t in (sched.timesteps[0], sched.timesteps[1], sched.timesteps[-1]):
            out = _step(sched, t, sample)
            assert out.prev_sample.shape == sample.shape and out.prev_sample.dtype == dtype
            assert out.pred_original_sample.shape == sample.shape and out.pred_original_sample.dtype == dtype
            assert torch.isfinite(out.prev_sample.float()).all()


def test_scheduler_outputs_equivalence():
    """return_dict=False: a tuple (prev_sample, pred_original_sample) equal to the dataclass fields."""
    for config in CONFIGS:
        sched = make(**config)
        sched.set_timesteps(K)
        sample = dummy()
        for t in (sched.timesteps[0], sched.timesteps[-1]):
            as_dict = _step(sched, t, sample, seed=5)
            as_tuple = _step(sched, t, sample, seed=5, return_dict=False)
            assert isinstance(as_dict, AnalyticDPMSchedulerOutput) and isinstance(as_tuple, tuple)
            assert len(as_tuple) == 2
            torch.testing.assert_close(as_tuple[0], as_dict.prev_sample, rtol=0, atol=0)
            torch.testing.assert_close(as_tuple[1], as_dict.pred_original_sample, rtol=0, atol=0)
            assert as_dict.to_tuple()[0] is as_dict.prev_sample and as_dict[0] is as_dict.prev_sample


def test_scheduler_public_api():
    sched = make()
    assert sched.init_noise_sigma == 1.0 and sched.order == 1
    sample = dummy()
    assert sched.scale_model_input(sample, sched.timesteps[0]) is sample
    assert sched.scale_model_input(sample) is sample
    params = inspect.signature(sched.step).parameters
    assert list(params)[:3] == ["model_output", "timestep", "sample"]
    for name in ("generator", "return_dict", "eta", "use_clipped_model_output", "variance_noise"):
        assert name in params
    for attr in ("betas", "alphas", "alphas_cumprod", "timesteps", "num_inference_steps", "config"):
        assert hasattr(sched, attr)


def test_seeded_full_loop_is_reproducible():
    def loop(seed):
        sched = make(method="analytic-ddim", eta=0.5)
        sched.set_timesteps(K)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((2, 3, 8, 8), generator=gen)
        for t in sched.timesteps:
            x = sched.step(0.3 * x, t, x, generator=gen).prev_sample
        return x

    torch.testing.assert_close(loop(0), loop(0), rtol=0, atol=0)
    assert not torch.allclose(loop(0), loop(1))


# ---------------------------------------------------------------------------------------------------- noise
def test_add_noise_device_and_values():
    sched = make()
    ref = DDPMScheduler(num_train_timesteps=N)  # the same diffusers betas (linear, 1e-4..0.02)
    sample = dummy().to(DEVICE)
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    sched.set_timesteps(K, device=DEVICE)
    t = sched.timesteps[:4]
    assert t.device.type == torch.device(DEVICE).type
    noisy = sched.add_noise(sample, noise, t)
    assert noisy.shape == sample.shape and noisy.device == sample.device and noisy.dtype == sample.dtype
    ref_noisy = ref.add_noise(sample.cpu(), noise.cpu(), t.cpu())
    torch.testing.assert_close(noisy.cpu(), ref_noisy, rtol=1e-5, atol=1e-5)
    # one timestep for the whole batch, as an int tensor or a list
    torch.testing.assert_close(sched.add_noise(sample, noise, torch.tensor([37] * 4)).cpu(),
                               ref.add_noise(sample.cpu(), noise.cpu(), torch.tensor([37] * 4)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- timesteps
def test_set_timesteps_on_device_len_dtype_and_order():
    for config in CONFIGS:
        sched = make(**config)
        assert len(sched) == N
        # 'leading' + steps_offset = 1 at K = N would reach t = N (diffusers allows it; we raise ValueError)
        for k in (2, 7, K) + (() if config.get("steps_offset") else (N,)):
            sched.set_timesteps(k, device=DEVICE)
            ts = sched.timesteps
            assert ts.device.type == torch.device(DEVICE).type and ts.dtype == torch.int64 and ts.ndim == 1
            assert ts.numel() == k == sched.num_inference_steps
            assert bool((ts[:-1] > ts[1:]).all()) and int(ts.min()) >= 0 and int(ts.max()) <= N - 1
            assert len(sched) == N  # len is the number of training timesteps, as in diffusers
    fresh = make()
    assert fresh.timesteps.dtype == torch.int64 and fresh.timesteps.numel() == N  # before set_timesteps


def test_custom_timesteps():
    sched = make()
    sched.set_timesteps(timesteps=[90, 50, 10, 0])
    np.testing.assert_array_equal(sched.timesteps.numpy(), [90, 50, 10, 0])
    assert int(sched.previous_timestep(50)) == 10 and int(sched.previous_timestep(0)) == -1
    with pytest.raises(ValueError, match="strictly decreasing"):
        sched.set_timesteps(timesteps=[0, 10, 50])
    with pytest.raises(ValueError, match="not both"):
        sched.set_timesteps(num_inference_steps=4, timesteps=[90, 50, 10, 0])
    with pytest.raises(ValueError, match="0..N−1 = 0..99"):
        sched.set_timesteps(timesteps=[N, 50, 0])


# ---------------------------------------------------------------------------------------------------- config API
def test_trained_betas_round_trip(tmp_path):
    betas = np.linspace(1e-4, 0.03, N)
    sched = AnalyticDPMScheduler(num_train_timesteps=N, trained_betas=betas, method="ddpm-small")
    sched.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["trained_betas"] == betas.tolist()
    new = AnalyticDPMScheduler.from_pretrained(tmp_path)
    np.testing.assert_array_equal(new.schedule.beta[1:], betas)
    torch.testing.assert_close(new.betas, sched.betas, rtol=0, atol=0)


def test_getattr_is_correct():
    sched = make()
    sched.some_instance_attr = 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sched.some_instance_attr == 7
    with pytest.warns(FutureWarning, match="num_train_timesteps"):
        assert sched.num_train_timesteps == N
    assert sched.config.num_train_timesteps == N
    with pytest.raises(AttributeError, match="does_not_exist"):
        sched.does_not_exist


def test_deprecated_kwargs_consistency():
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD
                     for p in inspect.signature(AnalyticDPMScheduler.__init__).parameters.values())
    deprecated = getattr(AnalyticDPMScheduler, "_deprecated_kwargs", [])
    assert has_var_kw == bool(deprecated)


def test_default_arguments_not_in_config(tmp_path):
    sched = make(method="ddim", clip_sample=False, data_range=None)
    sched.save_pretrained(tmp_path)
    path = tmp_path / "scheduler_config.json"
    cfg = json.loads(path.read_text())
    for key in ("clip_sample", "data_range", "trajectory_type", "steps_offset"):
        cfg.pop(key)
    path.write_text(json.dumps(cfg))
    new = AnalyticDPMScheduler.from_pretrained(tmp_path)
    assert new.config.clip_sample is True and new.config.data_range == [-1.0, 1.0]
    assert new.config.trajectory_type == "even" and new.config.steps_offset == 0


@pytest.mark.parametrize("other_cls", [DDPMScheduler, DDIMScheduler])
def test_compatibles_load_each_others_config(tmp_path, other_cls):
    assert other_cls in AnalyticDPMScheduler(num_train_timesteps=N, method="ddim").compatibles
    ours = make(method="ddim", trained_betas=SCHED.beta[1:])
    ours.save_pretrained(tmp_path)
    for theirs in (other_cls.from_config(ours.config), other_cls.from_pretrained(tmp_path)):
        torch.testing.assert_close(theirs.betas.double(), torch.from_numpy(np.array(SCHED.beta[1:])), rtol=1e-7, atol=0)
        theirs.set_timesteps(K)  # the diffusers options we leave unset are not stored as null
        assert theirs.timesteps.numel() == K
    # and ours from theirs (diffusers' defaults, so no warning)
    ref = other_cls(num_train_timesteps=N, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        back = AnalyticDPMScheduler.from_config(ref.config, method="ddim")
    np.testing.assert_array_equal(back.schedule.beta[1:], ref.betas.double().numpy())
    assert back.config.prediction_type == "v_prediction"


def test_save_load_from_different_config(tmp_path):
    """A config saved by another scheduler class: the keys we know are used, the others dropped."""
    EulerDiscreteScheduler(num_train_timesteps=N, beta_schedule="scaled_linear").save_config(tmp_path)
    sched = AnalyticDPMScheduler.from_pretrained(tmp_path, method="ddim")
    assert sched.config.num_train_timesteps == N and sched.config.beta_schedule == "scaled_linear"
    # the unknown keys (use_karras_sigmas, ...) never reach __init__; diffusers keeps them in the config only
    sched.set_timesteps(4)
    assert sched.timesteps.numel() == 4
