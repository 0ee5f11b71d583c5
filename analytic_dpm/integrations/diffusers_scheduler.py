"""Analytic-DPM as a diffusers scheduler (P §3–§4; facts file §3.3, §3.4, §5.1).

:class:`AnalyticDPMScheduler` runs this library's reverse chain inside diffusers pipelines. It holds a forward
:class:`~analytic_dpm.schedules.Schedule`, the per-timestep statistic its method needs, one of the methods of
:data:`~analytic_dpm.variance.ALL_METHODS` ('analytic-ddpm', 'analytic-ddim', 'residual-ddpm', 'residual-ddim',
'ddpm-large', 'ddpm-small', 'ddim') and a trajectory, and takes every coefficient from
:func:`analytic_dpm.sampling.coefficient_table`; :meth:`~AnalyticDPMScheduler.step` is the library's own one-step
update (the function :func:`analytic_dpm.sampling.sample` runs), so the two give the same numbers::

    from diffusers import DDPMPipeline
    from analytic_dpm.integrations import AnalyticDPMScheduler

    sched = AnalyticDPMScheduler.from_schedule(schedule, gamma=gamma_estimate, method="analytic-ddpm",
                                               trajectory=adpm.optimal_trajectory(schedule, gamma, K=10))
    pipe = DDPMPipeline(unet=unet, scheduler=sched)
    images = pipe(batch_size=16, num_inference_steps=10).images

Statistics. The analytic methods use Theorem 1, σ*² = λ² + g²(1 − Γ_t), from ``gamma`` (Γ_n = E‖ε̂_n‖²/d) or
from ``one_minus_gamma`` (1 − Γ_n given directly, e.g. ``GammaEstimate.one_minus_gamma``, which keeps its digits where
Γ_n is near 1). The residual methods use σ² = λ² + g²R_t with the residual R_n = E‖ε − ε̂_n‖²/d of the network's own
mean (``theory`` entry ``residual-variance``): the maximum-likelihood variance for the mean the sampler actually has,
never clipped, reported in ``scheduler.table.variances.outside_bounds`` where it leaves Theorem 2's interval.
:func:`~analytic_dpm.gamma.estimate_gamma` returns all three from the same network calls; a
:class:`~analytic_dpm.gamma.GammaEstimate` passed as ``gamma`` supplies its ``residual`` to a residual method::

    est = adpm.estimate_gamma(unet_eps_model(unet), schedule, data)
    sched = AnalyticDPMScheduler.from_schedule(schedule, gamma=est, method="residual-ddpm", num_inference_steps=10)
    sched = AnalyticDPMScheduler.from_schedule(schedule, residual=est.residual, method="residual-ddim", eta=0.0,
                                               trajectory=adpm.optimal_trajectory(schedule, None, 10,
                                                                                  residual=est.residual))

All three are stored in the JSON config (lists, null where not estimated), so ``save_pretrained``/``from_pretrained``
round-trip them; a statistic the method does not use is kept but ignored (as Γ is for the baselines), so
``from_config(sched.config, method=...)`` can switch between methods.

Timesteps. The paper numbers the noisy states n = 1..N; diffusers numbers them t = n − 1 = 0..N−1 (its
``alphas_cumprod[t]`` is the paper's ᾱ_{t+1}) and feeds the network t. So for a trajectory [0, τ_1, …, τ_K]
``scheduler.timesteps`` is [τ_K − 1, …, τ_1 − 1], and the matching ε-model for this library's functions is
``TorchEpsModel(net, timestep_map="n-1")`` (:func:`unet_eps_model` builds it for a ``UNet2DModel``).

Analytic-DDIM. The DDIM-family mean is √ᾱ_s x̂_0 + √(β̄_s − λ²) ε̂ with λ² = η²β̃_{s|t}, while the noise added has
the Analytic-DDIM variance σ*² = λ² + g²(1 − Γ_t) (Theorem 1), not λ²: the mean and the noise get different variances.
diffusers' DDIM step ties both to η, so it cannot express this; the table here carries them separately
(``coef_eps`` and ``noise_scale``). Residual-DDIM is the same with σ² = λ² + g²R_t.

Timestep spacing. ``set_timesteps(K)`` without a fixed ``trajectory`` spaces K steps by ``timestep_spacing`` when it
is set, else by ``trajectory_type`` (default 'even', the paper's ET). ``timestep_spacing`` takes diffusers' own
'leading' (with ``steps_offset`` added, as diffusers does), 'linspace' and 'trailing', giving exactly the
``timesteps`` of diffusers' DDPMScheduler/DDIMScheduler ``set_timesteps(K)`` (:data:`DIFFUSERS_SPACINGS`), or one of
this library's spacings (:data:`SPACINGS`: 'even', 'quadratic', 'ddim-stride', 'optimal'), which is stored as
``trajectory_type``. ``timestep_spacing=None`` (the default here) defers to ``trajectory_type``. Diffusers options left
unset (None: ``timestep_spacing``, ``clip_sample_range``, ``variance_type``) are left out of the config, so that
``DDPMScheduler.from_config(sched.config)`` (and DDIMPipeline's conversion) gets diffusers' own defaults rather than
nulls it cannot use. Note that ``from_config(ddpm.config)`` takes a ``timestep_spacing`` only when that config set
it explicitly: diffusers drops the values a config left at their defaults (``_use_default_values``), so a default
DDPMScheduler config gives this scheduler's default (even) spacing, not 'leading'; pass
``timestep_spacing="leading"`` to ``from_config`` for diffusers' default.

'optimal' runs Theorem 3's exact DP (:func:`analytic_dpm.optimal_trajectory`) at every new K, from ``gamma`` (or
``one_minus_gamma``) for the analytic and baseline methods, or from ``residual`` for 'residual-ddpm'/'residual-ddim'
(J = log(1 + g²R_t/λ²)), so ``pipe(num_inference_steps=K)`` samples on the optimal K-step trajectory (cached per K).
It needs K >= 2 and the statistic at every n = 1..N; without it, ValueError::

    sched = AnalyticDPMScheduler.from_schedule(schedule, gamma=est, method="analytic-ddpm", timestep_spacing="optimal")
    DDPMPipeline(unet=unet, scheduler=sched)(num_inference_steps=10)   # the optimal 10-step trajectory

Before ``set_timesteps`` the scheduler's ``timesteps`` are the constructor's N−1, …, 0, and ``step()`` works on them
(the full trajectory [0, 1, …, N], built on the first step), as diffusers' schedulers do.

Other diffusers options. ``from_config`` of a DDPMScheduler/DDIMScheduler config maps: ``clip_sample`` (clamp x̂_0),
``clip_sample_range`` = r (sets ``data_range = (-r, r)``: the clamp and Theorem 2's bounds; conflicting with an
explicit other ``data_range`` is a ValueError), ``prediction_type``, ``timestep_spacing``, ``steps_offset`` and the
β options. ``rescale_betas_zero_snr=True`` applies diffusers' ``rescale_zero_terminal_snr`` to the betas (in float64);
that always gives ᾱ_N = 0 (β_N = 1), where x̂_0 = (x_N − √β̄_N ε̂)/√ᾱ_N and Theorem 1's variances are undefined
and :class:`~analytic_dpm.schedules.Schedule` needs 0 < β_n < 1, so it raises a ValueError saying so. The options in
:data:`IGNORED_OPTIONS` (``thresholding``, ``dynamic_thresholding_ratio``, ``sample_max_value``,
``set_alpha_to_one``, ``variance_type``) are stored in the config but not implemented; a value other than the
harmless one (e.g. ``thresholding=True``, ``set_alpha_to_one=False``, any ``variance_type``: the method chooses the
variance) raises a UserWarning naming the option and what is done instead. Keys this class does not know at all
(e.g. an EulerDiscreteScheduler's ``use_karras_sigmas``) are not passed to ``__init__``: diffusers keeps them in
``config`` only.

DDIM keywords. ``step(..., eta=η, use_clipped_model_output=b)`` accepts diffusers' DDIMScheduler.step keywords:
for a DDIM-family method an η other than the configured one uses a table rebuilt for that η (cached until the next
``set_timesteps``; the Analytic-/Residual-DDIM noise variance is recomputed for it); a DDPM-family method accepts
only η = 0 (ValueError otherwise). ``use_clipped_model_output=True`` is ``ddim_eps='consistent'`` for that step,
False is 'raw', None keeps the config. DDIMPipeline: its ``__init__`` replaces any scheduler by
``DDIMScheduler.from_config(scheduler.config)``, so ``DDIMPipeline(unet=unet, scheduler=sched)`` silently runs
diffusers' DDIM. Assign the scheduler after construction instead; its ``__call__`` then passes ``eta`` (default 0.0)
and ``use_clipped_model_output`` to our ``step``::

    pipe = DDIMPipeline(unet=unet, scheduler=sched)   # holds a DDIMScheduler here
    pipe.scheduler = sched                            # now ours; pipe(eta=...) must suit the method (η = 0 for DDPM)

DDIMPipeline always passes ``eta`` (its default is 0.0), so ``pipe()`` runs η = 0 even for a scheduler configured
with another η; pass ``pipe(eta=sched.config.eta)`` to keep it.

Saving and loading. ``pipe.save_pretrained(dir)`` records the scheduler in ``model_index.json`` as
``["analytic_dpm.integrations.diffusers_scheduler", "AnalyticDPMScheduler"]`` (diffusers stores the full module path
of a class from a library it does not know). ``DDPMPipeline.from_pretrained(dir)`` resolves that name from
``sys.modules`` only: diffusers (0.42) deliberately imports no module a repository names, apart from its known
libraries (``LOADABLE_CLASSES``), so registering this class there would not help (it would only run after the import
that is needed anyway). In a fresh process, import the module first, one line::

    import analytic_dpm.integrations.diffusers_scheduler  # or: from analytic_dpm.integrations import ...
    pipe = DDPMPipeline.from_pretrained(dir)               # pipe.scheduler is an AnalyticDPMScheduler

Without it diffusers raises a ValueError naming the module to import. The scheduler alone loads with
``AnalyticDPMScheduler.from_pretrained(dir, subfolder="scheduler")``.

Noise. A diffusers ``torch.Generator`` (or ``variance_noise=``) works as in other schedulers. To reproduce
:func:`analytic_dpm.sampling.sample` exactly, pass a :class:`SeededNoise` as ``generator``: it draws the start
x_{τ_K} and every step's noise from the library's per-sample streams (seed, ⌊i/16⌋), in the order ``sample`` draws
them (a step with σ = 0 draws nothing). A SeededNoise cannot be a pipeline's ``generator``: the pipelines draw the
start x_T with ``torch.randn(..., generator=generator)`` before any scheduler call, and torch accepts only a
``torch.Generator`` there, so ``pipe(generator=SeededNoise(...))`` raises torch's TypeError ("randn() received an
invalid combination of arguments ... generator=SeededNoise"). Run the loop by hand (see :class:`SeededNoise`) to
reproduce :func:`~analytic_dpm.sampling.sample`; pass a ``torch.Generator`` to a pipeline.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

_INSTALL_HINT = (
    "AnalyticDPMScheduler needs the diffusers package, an optional extra of analytic-dpm. Install it with "
    "`pip install analytic-dpm[diffusers]` (or `pip install diffusers safetensors`); the rest of analytic_dpm works "
    "without it."
)
try:
    import diffusers  # noqa: F401  (imported first so that a missing package fails here, with the hint)
    import torch
    from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as exc:  # pragma: no cover - exercised by a test that hides diffusers
    raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc

from .. import sampling
from .._validate import _show, as_float, as_int, check_data_range, choice
from ..gamma import GammaEstimate
from ..models.protocol import TorchEpsModel, eps_from_prediction
from ..posterior import check_eta, family_of
from ..schedules import Schedule
from ..optimal_trajectory import optimal_trajectory
from ..trajectories import ddim_stride_trajectory, even_trajectory, quadratic_trajectory, validate_trajectory
from ..variance import ALL_METHODS, ANALYTIC_METHODS, RESIDUAL_METHODS

#: ``trajectory_type`` values: how :meth:`AnalyticDPMScheduler.set_timesteps` spaces K steps when no trajectory
#: is fixed. 'even' is the paper's ET (App. F.4, always contains 1 and N).
TRAJECTORY_TYPES = {"even": even_trajectory, "quadratic": quadratic_trajectory, "ddim-stride": ddim_stride_trajectory}
#: diffusers' ``prediction_type`` → this library's parameterisation names (:data:`~analytic_dpm.models.PREDICTIONS`).
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
#: diffusers' own spacings of ``timestep_spacing`` (DDPMScheduler/DDIMScheduler.set_timesteps, Table 2 of
#: arXiv:2305.08891), reproduced exactly; they give diffusers' 0-based timesteps t = n − 1.
DIFFUSERS_SPACINGS = ("leading", "linspace", "trailing")
#: every spacing ``trajectory_type`` accepts: this library's (:data:`TRAJECTORY_TYPES`) and 'optimal' (Theorem 3's DP
#: at ``set_timesteps(K)``); ``timestep_spacing`` accepts these and :data:`DIFFUSERS_SPACINGS`.
SPACINGS = tuple(TRAJECTORY_TYPES) + ("optimal",)
#: options of diffusers' DDPM/DDIM configs this scheduler does not implement, with the value at which ignoring them
#: changes nothing (a UserWarning names any other value) and what is done instead.
IGNORED_OPTIONS = {
    "thresholding": (False, "dynamic thresholding of x̂_0 is not implemented; x̂_0 is clamped to data_range when "
                            "clip_sample"),
    "dynamic_thresholding_ratio": (0.995, "dynamic thresholding is not implemented"),
    "sample_max_value": (1.0, "dynamic thresholding is not implemented; the clamp uses data_range"),
    "set_alpha_to_one": (True, "the last step always goes to x_0 = x̂_0 (ᾱ_0 = 1), as set_alpha_to_one=True"),
    "variance_type": (None, "the reverse variance comes from `method` (e.g. 'ddpm-small' is diffusers' fixed_small, "
                            "'ddpm-large' its fixed_large); a learned-variance head is ignored"),
}


#: diffusers options whose None here means "not set": omitted from the config, so diffusers' classes use their defaults
_OMIT_IF_NONE = ("timestep_spacing", "clip_sample_range", "variance_type")


def _diffusers_timesteps(spacing: str, N: int, K: int, steps_offset: int) -> np.ndarray:
    """diffusers' DDPM/DDIM ``set_timesteps(K)`` timesteps (0-based, decreasing) for 'leading'/'linspace'/'trailing'."""
    if spacing == "linspace":
        return np.linspace(0, N - 1, K).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = N // K
        return (np.arange(0, K) * ratio).round()[::-1].copy().astype(np.int64) + int(steps_offset)
    ratio = N / K  # trailing
    return np.round(np.arange(N, 0, -ratio)).astype(np.int64) - 1


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """diffusers' ``rescale_zero_terminal_snr`` (arXiv:2305.08891, Algorithm 1), in float64."""
    sab = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = sab[0], sab[-1]
    sab = (sab - last) * (first / (first - last))
    ab = sab ** 2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


@dataclass
class AnalyticDPMSchedulerOutput(BaseOutput):
    """Output of :meth:`AnalyticDPMScheduler.step`.

    Args:
        prev_sample: x_{τ_{k−1}}, the next model input (the final sample after the last step).
        pred_original_sample: x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t at t = τ_k, clamped to ``data_range`` when ``clip_sample``.
    """

    prev_sample: "torch.Tensor"
    pred_original_sample: "torch.Tensor | None" = None


# ---------------------------------------------------------------------------------------------------- helpers
#: what each per-timestep statistic is, for error messages
_STAT_MEANING = {
    "gamma": "Γ_n = E‖ε̂_n(x_n)‖²/d",
    "one_minus_gamma": "1 − Γ_n (e.g. GammaEstimate.one_minus_gamma)",
    "residual": "R_n = E‖ε − ε̂_n(x_n)‖²/d (GammaEstimate.residual)",
}


def _per_timestep_array(name: str, value, N: int):
    """``gamma``, ``one_minus_gamma`` or ``residual`` as a read-only float64 array (N+1,) (NaN where not estimated)
    from an array, a tensor, a list with None, or a GammaEstimate (its field of that name). None stays None."""
    if value is None:
        return None
    meaning = _STAT_MEANING[name]
    if isinstance(value, GammaEstimate):
        field = getattr(value, name)
        if field is None:
            raise ValueError(
                f"the GammaEstimate passed for {name} has no {name!r} field (saved by an older version of "
                f"analytic_dpm, or built from Γ alone). Rerun estimate_gamma(...), which returns {meaning} from the "
                "same network evaluations, or pass the array directly."
            )
        arr = np.array(field, dtype=np.float64)
    else:
        if _is_torch(value):
            value = value.detach().cpu().numpy()
        if isinstance(value, (list, tuple)):
            value = [np.nan if v is None else v for v in value]
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an array of shape (N+1,) = ({N + 1},) holding {meaning}, a list, or a "
                            f"GammaEstimate; got {type(value).__name__}.") from None
    if arr.shape != (N + 1,):
        raise ValueError(
            f"{name} must have shape (N+1,) = ({N + 1},) for num_train_timesteps = {N} (index = the paper's timestep "
            f"n = 1..N, index 0 unused); got shape {arr.shape}. Use estimate_gamma(...) or pad a length-N array "
            "with a leading 0."
        )
    if name == "residual":
        neg = np.flatnonzero(arr < 0.0)  # NaN (not estimated) compares False
        if neg.size:
            raise ValueError(
                f"residual R_n = E‖ε − ε̂_n‖²/d is a mean of squares and must be >= 0; got {_show(arr[neg])} at "
                f"n = {_show(neg)}. Pass GammaEstimate.residual (not the control-variate one_minus_gamma, which "
                "may be slightly negative)."
            )
    arr.setflags(write=False)
    return arr


def _gamma_array(gamma, N: int):
    """Γ as a float64 array (N+1,) (NaN where not estimated) from an array, a list with None, or a GammaEstimate."""
    return _per_timestep_array("gamma", gamma, N)


def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _json_list(arr):
    """A float array as a JSON-friendly list (None for NaN)."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(arr, dtype=np.float64).tolist()]


def _diffusers_betas(num_train_timesteps, beta_start, beta_end, beta_schedule) -> np.ndarray:
    """β_1..β_N exactly as diffusers builds them (float32), via diffusers' own DDPMScheduler."""
    from diffusers import DDPMScheduler

    try:
        ref = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                            beta_schedule=beta_schedule)
    except NotImplementedError:
        raise ValueError(
            f"beta_schedule must be one diffusers knows ('linear', 'scaled_linear', 'squaredcos_cap_v2', "
            f"'sigmoid'); got {beta_schedule!r}. For this library's schedules use "
            "AnalyticDPMScheduler.from_schedule(schedule, ...), which stores the β exactly in trained_betas."
        ) from None
    return ref.betas.detach().to(torch.float64).numpy()


# ---------------------------------------------------------------------------------------------------- noise
class SeededNoise:
    """The random numbers :func:`analytic_dpm.sampling.sample` uses, for a diffusers loop.

    Sample ``first_index + i`` (i < ``num_samples``) takes its start and its noise from the library's stream for
    (``seed``, sample index) (``SeedSequence(seed, spawn_key=(tag, ⌊index/16⌋))``), so with the same seed, trajectory
    and model a diffusers loop reproduces ``sample(..., seed=seed, first_index=first_index)`` exactly::

        noise = SeededNoise(seed=0, num_samples=16, shape=(3, 32, 32), device="cuda")
        x = noise.initial()                                     # x_{τ_K}, drawn first, as sample() does
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=noise).prev_sample

    The scheduler draws from it only on steps with σ > 0, in the order ``sample`` draws. Numbers are drawn in
    float64 with numpy (:class:`~analytic_dpm.sampling.NoiseStream`) and converted to ``dtype`` on ``device``.
    """

    def __init__(self, seed: int, num_samples: int, shape, first_index: int = 0, device=None, dtype=None):
        seed = as_int("seed", seed, minimum=0, fix="Use the seed passed to analytic_dpm.sampling.sample.")
        num_samples = as_int("num_samples", num_samples, minimum=1, fix="It is the batch size of the loop.")
        first_index = as_int("first_index", first_index, minimum=0,
                             fix="first_index is the global index of the first sample (0 unless sharded).")
        self.shape = sampling.check_sample_shape(shape)
        self.seed, self.num_samples, self.first_index = seed, num_samples, first_index
        self.device, self.dtype = sampling.torch_device_dtype(device, dtype)
        self._noise = sampling.NoiseStream(seed, first_index, first_index + num_samples, self.shape)
        self._started = False

    def _next(self) -> "torch.Tensor":
        return torch.from_numpy(self._noise.draw()).to(device=self.device, dtype=self.dtype, copy=True)

    def initial(self) -> "torch.Tensor":
        """x_{τ_K} ~ N(0, I), shape (num_samples, *shape): the first draw of every stream (call it once, first)."""
        if self._started:
            raise ValueError("SeededNoise.initial() was already called: it is the first draw of each stream. Create a "
                             "new SeededNoise for a new run.")
        self._started = True
        return self._next()

    def draw(self) -> "torch.Tensor":
        """The next N(0, I) draw, shape (num_samples, *shape) (the scheduler calls this on steps with σ > 0)."""
        if not self._started:
            raise ValueError("SeededNoise.draw() before initial(): sample() draws x_{τ_K} first. Call "
                             "noise.initial() for the start of the chain, then pass generator=noise to step().")
        return self._next()

    def __repr__(self) -> str:
        return (f"SeededNoise(seed={self.seed}, samples {self.first_index}..{self.first_index + self.num_samples - 1}"
                f", shape={self.shape}, device={self.device}, dtype={self.dtype})")


# ---------------------------------------------------------------------------------------------------- model adapter
class _UNetAsNet(torch.nn.Module):
    """A diffusers model ``unet(x, t) -> UNet2DOutput`` as a plain ``net(x, t) -> tensor``."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t):
        out = self.unet(x, t)
        if hasattr(out, "sample"):
            return out.sample
        return out[0] if isinstance(out, (tuple, list)) else out


def unet_eps_model(unet, schedule: Schedule | None = None, prediction_type: str = "epsilon",
                   learned_sigma: bool = False, batch_size: int | None = None) -> TorchEpsModel:
    """A diffusers ``UNet2DModel`` (or any ``unet(x, t).sample`` model) as an ε-model ``(x, n) -> ε̂``.

    The network receives t = n − 1 (diffusers' 0-based timesteps, ``timestep_map="n-1"``). ``prediction_type``
    is diffusers' name ('epsilon', 'sample', 'v_prediction'); anything but 'epsilon' needs ``schedule`` to convert.
    ``learned_sigma``: the model outputs 2C channels (a variance head); only ε is kept. Use the result with
    :func:`~analytic_dpm.gamma.estimate_gamma`, :func:`~analytic_dpm.sampling.sample`, the likelihood and the
    distributed helpers.
    """
    choice("prediction_type", prediction_type, tuple(PREDICTION_TYPES))
    return TorchEpsModel(_UNetAsNet(unet), timestep_map="n-1", schedule=schedule,
                         prediction=PREDICTION_TYPES[prediction_type], learned_sigma=learned_sigma,
                         batch_size=batch_size)


# ---------------------------------------------------------------------------------------------------- scheduler
class AnalyticDPMScheduler(SchedulerMixin, ConfigMixin):
    """Analytic-DPM (Bao et al., ICLR 2022) as a diffusers scheduler: optimal reverse variances from Γ (Theorem 1),
    clipped to Theorem 2's bounds, or the residual variance λ² + g²R for the network's own mean, on any trajectory,
    plus the DDPM/DDIM baselines.

    Build it with :meth:`from_schedule` from this library's objects, or with ``from_config(ddpm_scheduler.config,
    gamma=..., method=...)`` from a diffusers pipeline (the β then match diffusers' float32 ones exactly).

    Args (all stored in the JSON config, so ``save_pretrained``/``from_pretrained`` round-trip):
        num_train_timesteps: N.
        beta_start, beta_end, beta_schedule: diffusers' schedule description, used when ``trained_betas`` is None
            (β built by diffusers' own code: 'linear', 'scaled_linear', 'squaredcos_cap_v2', 'sigmoid').
        trained_betas: β_1..β_N (float64, kept exactly); :meth:`from_schedule` fills it.
        method: one of :data:`~analytic_dpm.variance.ALL_METHODS`: 'analytic-ddpm', 'analytic-ddim' (Theorem 1),
            'residual-ddpm', 'residual-ddim' (σ² = λ² + g²R_t), 'ddpm-large', 'ddpm-small' or 'ddim'.
        gamma: Γ_n = E‖ε̂_n(x_n)‖²/d, shape (N+1,) indexed by the paper's n (index 0 unused; None/NaN where not
            estimated), an array, list or :class:`~analytic_dpm.gamma.GammaEstimate`. The analytic methods need it
            (or ``one_minus_gamma``) at the trajectory's timesteps; for a residual method a GammaEstimate here
            supplies its ``residual`` when ``residual`` is None.
        eta: DDIM η (DDIM family only): λ² = η²β̃ in the mean; the noise variance of Analytic-DDIM comes from Γ,
            that of Residual-DDIM from R.
        trajectory: a fixed trajectory [0, τ_1, …, τ_K] in the paper's numbering (e.g. from
            :func:`~analytic_dpm.optimal_trajectory`); then ``set_timesteps`` needs K or nothing.
        trajectory_type: spacing used by ``set_timesteps(K)`` without a fixed trajectory (and without
            ``timestep_spacing``): 'even' (the paper's ET, default), 'quadratic', 'ddim-stride', 'optimal' (Theorem
            3's DP at K from gamma, or from residual for a residual method).
        clip_sample: clamp x̂_0 to ``data_range`` at every step (the official code does this for images).
        ddim_eps: DDIM family with ``clip_sample``: 'raw' (default; the official code, and diffusers' DDIM step
            without ``use_clipped_model_output``) uses the network's ε̂ in the mean; 'consistent' re-derives it from
            the clamped x̂_0 (diffusers' ``use_clipped_model_output=True``), see
            :func:`analytic_dpm.sampling.coefficient_table`.
        data_range: (a, b) of the data: Theorem 2's eq. 12 bound and the clamp; None for unbounded data.
        clip_variance: clip the analytic σ² into Theorem 2's bounds (``clip`` of :func:`coefficient_table`).
        clip_sigma_pixel: y of the sampling-only clip σ² ≤ (y·(2/255)·√(π/2))² on the step into τ_1 (App. F.2).
        prediction_type: what the network outputs: 'epsilon', 'sample' (x_0) or 'v_prediction'.
        residual: R_n = E‖ε − ε̂_n(x_n)‖²/d of the network's own mean, shape (N+1,) like ``gamma`` (values >= 0, may
            exceed 1), an array, list or GammaEstimate (its ``residual``). Required by the residual methods (here or
            through a GammaEstimate ``gamma``); σ² = λ² + g²R_t is never clipped to Theorem 2's bounds.
        one_minus_gamma: 1 − Γ_n given directly for the analytic methods, instead of ``gamma`` (not both): e.g.
            ``GammaEstimate.one_minus_gamma`` or a toy's exact ``data.one_minus_gamma(schedule)``, which keep their
            digits where Γ_n is near 1. Values outside [0, 1] are clipped into it with a warning, as Γ is.
        timestep_spacing: diffusers' option: 'leading', 'linspace', 'trailing' (exactly as DDPMScheduler), or one
            of ``trajectory_type``'s values; None (default) uses ``trajectory_type``.
        steps_offset: diffusers' offset added to the 'leading' timesteps.
        clip_sample_range: r: clamp x̂_0 to [-r, r] (sets ``data_range = (-r, r)``); None: ``data_range``.
        rescale_betas_zero_snr: diffusers' zero-terminal-SNR rescale; always a ValueError here (ᾱ_N = 0).
        thresholding, dynamic_thresholding_ratio, sample_max_value, set_alpha_to_one, variance_type: diffusers'
            options, not implemented (:data:`IGNORED_OPTIONS`); a non-default value gives a UserWarning.
    """

    order = 1
    _compatibles = ["DDPMScheduler", "DDIMScheduler"]

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas=None,
        method: str = "analytic-ddpm",
        gamma=None,
        eta: float = 0.0,
        trajectory=None,
        trajectory_type: str = "even",
        clip_sample: bool = True,
        data_range=(-1.0, 1.0),
        clip_variance: bool = True,
        clip_sigma_pixel: float | None = None,
        prediction_type: str = "epsilon",
        residual=None,
        one_minus_gamma=None,
        ddim_eps: str = "raw",
        timestep_spacing: str | None = None,
        steps_offset: int = 0,
        clip_sample_range: float | None = None,
        rescale_betas_zero_snr: bool = False,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        set_alpha_to_one: bool = True,
        variance_type: str | None = None,
    ):
        N = as_int("num_train_timesteps", num_train_timesteps, minimum=1, fix="It is N, e.g. 1000.")
        choice("ddim_eps", ddim_eps, sampling.DDIM_EPS)
        choice("method", method, ALL_METHODS)
        choice("trajectory_type", trajectory_type, SPACINGS)
        if timestep_spacing is not None:
            choice("timestep_spacing", timestep_spacing, DIFFUSERS_SPACINGS + SPACINGS)
            if timestep_spacing in SPACINGS:  # one of ours: kept as trajectory_type, which diffusers never reads
                trajectory_type, timestep_spacing = timestep_spacing, None
        steps_offset = as_int("steps_offset", steps_offset, minimum=0,
                              fix="diffusers adds it to the 'leading' timesteps (Stable Diffusion uses 1).")
        given = dict(thresholding=thresholding, dynamic_thresholding_ratio=dynamic_thresholding_ratio,
                     sample_max_value=sample_max_value, set_alpha_to_one=set_alpha_to_one, variance_type=variance_type)
        for name, value in given.items():
            harmless, instead = IGNORED_OPTIONS[name]
            if value != harmless:
                warnings.warn(f"AnalyticDPMScheduler ignores the diffusers option {name}={value!r}: {instead}.",
                              UserWarning, stacklevel=3)
        if clip_sample_range is not None:
            r = as_float("clip_sample_range", clip_sample_range)
            if not r > 0:
                raise ValueError(f"clip_sample_range must be > 0 (x̂_0 is clamped to [-r, r]); got {r}.")
            dr = None if data_range is None else tuple(float(v) for v in data_range)
            if dr not in ((-1.0, 1.0), (-r, r)):
                raise ValueError(f"clip_sample_range = {r} sets data_range = (-{r}, {r}), but data_range = "
                                 f"{data_range} was also given. Pass one of them.")
            clip_sample_range, data_range = r, (-r, r)
        choice("prediction_type", prediction_type, tuple(PREDICTION_TYPES))
        eta = check_eta(eta)
        if family_of(method) == "ddpm" and eta != 0.0:
            raise ValueError(f"eta applies to the DDIM family only ('ddim', 'analytic-ddim', 'residual-ddim'); got "
                             f"eta = {eta} with method {method!r}. Leave eta at 0 or pick a DDIM method.")
        for nm, v in (("clip_sample", clip_sample), ("clip_variance", clip_variance)):
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{nm} must be True or False; got {v!r}.")
        data_range = check_data_range(data_range)
        if clip_sample and data_range is None:
            raise ValueError("clip_sample=True clamps x̂_0 to data_range, but data_range is None. Pass "
                             "data_range=(-1.0, 1.0) for images, or clip_sample=False for unbounded data.")
        if clip_sigma_pixel is not None:
            clip_sigma_pixel = as_float("clip_sigma_pixel", clip_sigma_pixel)
            if clip_sigma_pixel <= 0:
                raise ValueError(f"clip_sigma_pixel must be > 0 (the paper uses 1 or 2) or None; got "
                                 f"{clip_sigma_pixel}.")

        if trained_betas is not None:
            if _is_torch(trained_betas):
                trained_betas = trained_betas.detach().cpu().numpy()
            betas = np.array(trained_betas, dtype=np.float64)
            if betas.shape != (N,):
                raise ValueError(f"trained_betas must hold β_1..β_N, shape ({N},) for num_train_timesteps = {N}; got "
                                 f"shape {betas.shape}.")
            self.schedule = Schedule.from_betas(betas, name="trained_betas")
        else:
            self.schedule = Schedule.from_betas(
                _diffusers_betas(N, beta_start, beta_end, beta_schedule),
                name=f"diffusers-{beta_schedule}(N={N})")
        if rescale_betas_zero_snr:
            zbetas = _rescale_zero_terminal_snr(self.schedule.beta[1:])
            zab = np.cumprod(1.0 - zbetas)
            if not (np.all(zbetas > 0.0) and np.all(zbetas < 1.0) and zab[-1] > 0.0):
                raise ValueError(
                    f"rescale_betas_zero_snr=True rescales the betas to zero terminal SNR: ᾱ_N = {zab[-1]:.3g} and "
                    f"β_N = {zbetas[-1]:.3g}. Analytic-DPM needs 0 < β_n < 1 and ᾱ_n > 0 at every n (its posterior "
                    "and variances divide by ᾱ_n and β̄_n, and x̂_0 = (x_n − √β̄_n ε̂)/√ᾱ_n is undefined at ᾱ_N = 0), "
                    "so a zero-SNR schedule cannot be used. Load the config with rescale_betas_zero_snr=False, or "
                    "pass betas that keep ᾱ_N > 0 as trained_betas."
                )
            self.schedule = Schedule.from_betas(zbetas, name=f"{self.schedule.name}+zero-snr")

        g = _gamma_array(gamma, N)
        omg = _per_timestep_array("one_minus_gamma", one_minus_gamma, N)
        if residual is None and method in RESIDUAL_METHODS and isinstance(gamma, GammaEstimate):
            if gamma.residual is None:
                raise ValueError(
                    f"method {method!r} takes residual R_n = E‖ε − ε̂_n‖²/d from the GammaEstimate passed as gamma, "
                    "but that estimate has no 'residual' (saved by an older version of analytic_dpm, or built from "
                    "Γ alone). Rerun estimate_gamma(...), which returns it from the same network evaluations, or "
                    "pass residual= directly."
                )
            residual = gamma  # a GammaEstimate supplies its residual to the residual methods
        res = _per_timestep_array("residual", residual, N)
        if method in ANALYTIC_METHODS:
            if g is None and omg is None:
                hint = (" A residual was given: for the network's own mean pick method='residual-ddpm' or "
                        "'residual-ddim'." if res is not None else "")
                raise ValueError(
                    f"method {method!r} needs gamma, Γ_n = E‖ε̂_n(x_n)‖²/d of shape (N+1,) = ({N + 1},), or "
                    "one_minus_gamma = 1 − Γ_n. Estimate it with estimate_gamma(unet_eps_model(unet), schedule, "
                    "data) or pick a baseline method ('ddpm-large', 'ddpm-small', 'ddim')." + hint
                )
            if g is not None and omg is not None:
                raise ValueError(
                    f"method {method!r} got both gamma and one_minus_gamma; they describe the same quantity, so pass "
                    "one of them (one_minus_gamma = 1 − Γ keeps its digits where Γ is near 1), e.g. gamma=None."
                )
        if method in RESIDUAL_METHODS and res is None:
            raise ValueError(
                f"method {method!r} needs residual, R_n = E‖ε − ε̂_n(x_n)‖²/d of shape (N+1,) = ({N + 1},) (values "
                ">= 0): estimate_gamma(unet_eps_model(unet), schedule, data) returns it as GammaEstimate.residual; "
                "pass residual=estimate.residual or the estimate itself as gamma=. For Theorem 1 with Γ pick "
                "'analytic-ddpm'/'analytic-ddim'."
            )
        self.gamma = g
        self.one_minus_gamma = omg
        self.residual = res
        fixed = None
        if trajectory is not None:
            fixed = validate_trajectory(np.asarray(trajectory), N)

        # JSON-friendly config: lists of floats/ints (None for NaN), so save_pretrained writes plain JSON
        self.register_to_config(
            trained_betas=None if trained_betas is None else self.schedule.beta[1:].tolist(),
            gamma=None if g is None else _json_list(g),
            one_minus_gamma=None if omg is None else _json_list(omg),
            residual=None if res is None else _json_list(res),
            trajectory=None if fixed is None else [int(v) for v in fixed],
            data_range=None if data_range is None else list(data_range),
            eta=eta, clip_sigma_pixel=clip_sigma_pixel, steps_offset=steps_offset, clip_sample_range=clip_sample_range,
            trajectory_type=trajectory_type, timestep_spacing=timestep_spacing,
        )
        # diffusers options left unset are left out of the config (not stored as null), so that
        # DDPMScheduler/DDIMScheduler.from_config(this config) applies its own defaults rather than None
        self._internal_dict = FrozenDict({k: v for k, v in self._internal_dict.items()
                                          if not (k in _OMIT_IF_NONE and v is None)})
        self._data_range = data_range

        # diffusers-compatible attributes (0-based: alphas_cumprod[t] = ᾱ_{t+1})
        self.betas = torch.from_numpy(self.schedule.beta[1:].astype(np.float32))
        self.alphas = torch.from_numpy(self.schedule.alpha[1:].astype(np.float32))
        self.alphas_cumprod = torch.from_numpy(self.schedule.alpha_bar[1:].astype(np.float32))
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(N - 1, -1, -1, dtype=np.int64))
        self.table = None
        self._index = {}
        self._variants = {}
        self._optimal = {}
        if fixed is not None:
            self.set_trajectory(fixed)

    # ------------------------------------------------------------------ construction from this library's objects
    @classmethod
    def from_schedule(cls, schedule: Schedule, gamma=None, method: str = "analytic-ddpm", trajectory=None,
                      num_inference_steps: int | None = None, *, residual=None, one_minus_gamma=None,
                      **kwargs) -> "AnalyticDPMScheduler":
        """A scheduler for this library's ``schedule`` (its β stored exactly), statistic, method and trajectory.

        ``gamma``: array (N+1,) or :class:`~analytic_dpm.gamma.GammaEstimate` (which also supplies ``residual`` to
        'residual-ddpm'/'residual-ddim'). ``residual``: R_n = E‖ε − ε̂_n‖²/d (N+1,) for the residual methods;
        ``one_minus_gamma``: 1 − Γ_n (N+1,) for the analytic methods instead of ``gamma``. ``trajectory``:
        [0, τ_1, …, τ_K] (an :class:`~analytic_dpm.optimal_trajectory.OptimalTrajectory` works), or
        ``num_inference_steps`` = K for the spacing ``trajectory_type`` (default the paper's even trajectory). Other
        keyword arguments are those of the constructor (eta, clip_sample, data_range, clip_variance,
        clip_sigma_pixel, prediction_type, ...).
        """
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be an analytic_dpm Schedule; got {type(schedule).__name__}. Build one "
                            "with Schedule.linear(N) or Schedule.cosine(N).")
        if trajectory is not None and num_inference_steps is not None:
            raise ValueError("pass either trajectory=[0, τ_1, …, τ_K] or num_inference_steps=K, not both.")
        sched = cls(num_train_timesteps=schedule.N, trained_betas=np.array(schedule.beta[1:]), gamma=gamma,
                    method=method, trajectory=None if trajectory is None else np.asarray(trajectory),
                    residual=residual, one_minus_gamma=one_minus_gamma, **kwargs)
        # keep the caller's Schedule object itself: identical for β-built schedules, exact for the others too
        sched.schedule = schedule
        if trajectory is not None:
            sched.set_trajectory(np.asarray(trajectory))
        elif num_inference_steps is not None:
            sched.set_timesteps(num_inference_steps)
        return sched

    # ------------------------------------------------------------------ timesteps
    @property
    def trajectory(self):
        """The current trajectory [0, τ_1, …, τ_K] in the paper's numbering (None before ``set_timesteps``)."""
        return None if self.table is None else self.table.trajectory

    def set_trajectory(self, trajectory, device=None):
        """Use the trajectory [0, τ_1, …, τ_K] (paper's numbering, n = 1..N); ``timesteps`` becomes τ_K − 1, …, τ_1 − 1.

        Builds the float64 coefficient table with :func:`~analytic_dpm.sampling.coefficient_table`, passing the
        statistic the method uses: ``gamma`` or ``one_minus_gamma`` (analytic methods), ``residual`` (residual
        methods), none (baselines). A statistic missing (NaN) at a timestep of the trajectory raises ValueError.
        """
        cfg = self.config
        traj = validate_trajectory(np.asarray(trajectory), self.schedule.N)
        self.table = self._build_table(traj, cfg.eta, getattr(cfg, "ddim_eps", "raw"))
        self._variants = {}
        self._index = {int(t) - 1: i for i, t in enumerate(self.table.t.tolist())}
        self.num_inference_steps = self.table.K
        self.timesteps = torch.from_numpy((self.table.t[::-1] - 1).astype(np.int64).copy())
        if device is not None:
            self.timesteps = self.timesteps.to(device)

    def _build_table(self, traj, eta, ddim_eps):
        cfg = self.config
        stats = {}
        if cfg.method in ANALYTIC_METHODS:
            stats = ({"gamma": self.gamma} if self.one_minus_gamma is None
                     else {"one_minus_gamma": self.one_minus_gamma})
        elif cfg.method in RESIDUAL_METHODS:
            stats = {"residual": self.residual}
        return sampling.coefficient_table(
            self.schedule, traj, cfg.method, eta=eta, data_range=self._data_range,
            clip=bool(cfg.clip_variance), clip_sigma_pixel=cfg.clip_sigma_pixel, ddim_eps=ddim_eps, **stats,
        )

    def _optimal_trajectory(self, K: int) -> np.ndarray:
        """Theorem 3's DP at K steps from the statistic of the method (cached per K)."""
        if K in self._optimal:
            return self._optimal[K]
        cfg = self.config
        N = self.schedule.N
        if K < 2:
            raise ValueError(f"the optimal trajectory needs K >= 2 steps (τ_1 = 1 is fixed and τ_K = N); got K = {K}.")
        kw = dict(data_range=self._data_range, clip=bool(cfg.clip_variance), progress=False)
        if cfg.method in RESIDUAL_METHODS:
            gamma, stat, what = None, self.residual, "residual R"
            kw["residual"] = stat
        elif self.one_minus_gamma is not None:
            gamma, stat, what = None, self.one_minus_gamma, "one_minus_gamma"
            kw["one_minus_gamma"] = stat
        elif self.gamma is not None:
            gamma, stat, what = self.gamma, self.gamma, "gamma Γ"
        else:
            raise ValueError(
                f"timestep_spacing/trajectory_type 'optimal' runs Theorem 3's DP, which needs gamma Γ_n (or "
                f"one_minus_gamma) or, for a residual-* method, residual R_n at every n = 1..N; this {cfg.method!r} "
                "scheduler has none. Pass gamma=estimate (estimate_gamma(unet_eps_model(unet), schedule, data)) or "
                "pick another spacing ('even', 'leading', 'trailing', ...)."
            )
        missing = np.flatnonzero(~np.isfinite(stat[1:])) + 1
        if missing.size:
            raise ValueError(f"timestep_spacing 'optimal' needs {what} at every n = 1..N = {N}; it is not estimated "
                             f"(NaN) at n = {_show(missing)}. Estimate it at all timesteps or fix a trajectory.")
        traj = np.asarray(optimal_trajectory(self.schedule, gamma, K, **kw), dtype=np.int64)
        self._optimal[K] = traj
        return traj

    def _spacing(self) -> str:
        sp = self.config.get("timestep_spacing")
        return self.config.trajectory_type if sp is None else sp

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, timesteps=None):
        """Choose the K timesteps of the reverse chain (diffusers' API).

        * ``timesteps``: diffusers' 0-based timesteps in decreasing order (t = n − 1), e.g. [999, 899, …, 0];
        * else the fixed ``trajectory`` of the config (``num_inference_steps`` must be None or its K);
        * else ``num_inference_steps`` = K spaced by ``timestep_spacing`` when set ('leading', 'linspace',
          'trailing' exactly as diffusers' DDPM/DDIM schedulers, with ``steps_offset`` for 'leading'; or one of
          this library's spacings), else by ``trajectory_type`` ('even': the paper's ET, τ = 1, …, N; 'optimal':
          Theorem 3's DP at K from Γ, or from R for a residual method).
        """
        N = self.schedule.N
        fixed = self.config.trajectory
        spacing = self._spacing()
        if timesteps is None and fixed is None and spacing in DIFFUSERS_SPACINGS and num_inference_steps is not None:
            K = as_int("num_inference_steps", num_inference_steps, minimum=1,
                       fix=f"It is the number of sampling steps K, 1 <= K <= N = {N}.")
            if K > N:
                raise ValueError(f"num_inference_steps = {K} cannot exceed num_train_timesteps N = {N}.")
            timesteps = _diffusers_timesteps(spacing, N, K, self.config.steps_offset)
            if timesteps.size and int(timesteps.max()) > N - 1:
                raise ValueError(
                    f"timestep_spacing={spacing!r} with steps_offset={self.config.steps_offset} gives timestep "
                    f"{int(timesteps.max())} at K = {K}, beyond N−1 = {N - 1} (diffusers would index past its "
                    "alphas_cumprod). Use a smaller K, steps_offset=0, or another spacing."
                )
            num_inference_steps = None
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("pass either num_inference_steps or timesteps, not both.")
            ts = timesteps.detach().cpu().numpy() if _is_torch(timesteps) else np.asarray(timesteps)
            if ts.ndim != 1 or ts.size == 0 or not np.issubdtype(ts.dtype, np.integer):
                raise ValueError(f"timesteps must be a non-empty 1-D sequence of ints (diffusers' 0-based t = n − 1); "
                                 f"got {_show(ts)}.")
            if np.any(np.diff(ts) >= 0) or ts[-1] < 0 or ts[0] > N - 1:
                raise ValueError(f"timesteps must be strictly decreasing diffusers timesteps in 0..N−1 = 0..{N - 1}, "
                                 f"e.g. [{N - 1}, …, 0]; got {_show(ts)}.")
            traj = np.concatenate([[0], ts[::-1].astype(np.int64) + 1])
        elif fixed is not None:
            K = len(fixed) - 1
            if num_inference_steps is not None and int(num_inference_steps) != K:
                raise ValueError(
                    f"this scheduler has a fixed trajectory with K = {K} steps (config 'trajectory'); got "
                    f"num_inference_steps = {num_inference_steps}. Pass num_inference_steps={K} (or None), or build "
                    "the scheduler without trajectory= to space K steps by trajectory_type."
                )
            traj = np.asarray(fixed, dtype=np.int64)
        else:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps=K (or timesteps=[...]) when the scheduler "
                                 "has no fixed trajectory.")
            K = as_int("num_inference_steps", num_inference_steps, minimum=1,
                       fix=f"It is the number of sampling steps K, 1 <= K <= N = {N}.")
            traj = self._optimal_trajectory(K) if spacing == "optimal" else TRAJECTORY_TYPES[spacing](N, K)
        self.set_trajectory(traj, device=device)

    def _position(self, timestep) -> int:
        if self.table is None:
            self._full_trajectory()
        t = int(timestep.item()) if _is_torch(timestep) else as_int("timestep", timestep)
        i = self._index.get(t)
        if i is None:
            raise ValueError(
                f"timestep {t} is not on the current trajectory; step() accepts only scheduler.timesteps = "
                f"{_show(self.timesteps.cpu().numpy())} (diffusers' 0-based t = n − 1)."
            )
        return i

    def _full_trajectory(self):
        """Before set_timesteps: the constructor's timesteps N−1, …, 0, i.e. the trajectory [0, 1, …, N] (as
        diffusers' schedulers, which step over every training timestep until set_timesteps)."""
        N = self.schedule.N
        try:
            self.set_trajectory(np.arange(N + 1, dtype=np.int64), device=self.timesteps.device)
        except ValueError as exc:
            raise ValueError(
                f"step() before set_timesteps runs the constructor's timesteps {N - 1}, …, 0 (the full trajectory "
                f"[0, 1, …, {N}]), and its coefficient table could not be built: {exc} Call "
                "set_timesteps(num_inference_steps) (or set_trajectory) first."
            ) from None
        self.num_inference_steps = None  # as in diffusers: no K was chosen

    def previous_timestep(self, timestep):
        """The diffusers timestep after ``timestep`` on the trajectory (τ_{k−1} − 1; −1 after the last step), as a
        0-d int64 tensor like diffusers' DDPMScheduler.previous_timestep (on ``timestep``'s device if it is a
        tensor); an int ``timestep`` is accepted, and the result compares equal to the int."""
        i = self._position(timestep)
        device = timestep.device if _is_torch(timestep) else self.timesteps.device
        return torch.tensor(int(self.table.s[i]) - 1, dtype=torch.int64, device=device)

    def _step_table(self, eta, use_clipped_model_output):
        """The table for a step() with diffusers' DDIM keywords: ``eta`` (None: the configured η) and
        ``use_clipped_model_output`` (None: the configured ddim_eps; True: 'consistent'; False: 'raw')."""
        cfg = self.config
        want_eta = cfg.eta if eta is None else check_eta(eta)
        if family_of(cfg.method) == "ddpm" and want_eta != 0.0:
            raise ValueError(
                f"step(eta={eta}) applies to the DDIM family only ('ddim', 'analytic-ddim', 'residual-ddim'); method "
                f"{cfg.method!r} is a DDPM-family method (η = 0 only). Pass eta=0.0 or None, or build the scheduler "
                "with a DDIM method."
            )
        ddim_eps = getattr(cfg, "ddim_eps", "raw")
        if use_clipped_model_output is not None:
            if not isinstance(use_clipped_model_output, (bool, np.bool_)):
                raise TypeError(f"use_clipped_model_output must be True, False or None; got "
                                f"{use_clipped_model_output!r}.")
            ddim_eps = "consistent" if use_clipped_model_output else "raw"
        if family_of(cfg.method) == "ddpm":
            want_eta, ddim_eps = cfg.eta, getattr(cfg, "ddim_eps", "raw")  # neither changes a DDPM-family table
        if want_eta == cfg.eta and ddim_eps == getattr(cfg, "ddim_eps", "raw"):
            return self.table
        key = (want_eta, ddim_eps)
        if key not in self._variants:
            self._variants[key] = self._build_table(self.table.trajectory, want_eta, ddim_eps)
        return self._variants[key]

    # ------------------------------------------------------------------ diffusers API
    def scale_model_input(self, sample, timestep=None):
        """The model input is x_t itself (variance-preserving chain)."""
        return sample

    def step(self, model_output, timestep, sample, generator=None, variance_noise=None, return_dict: bool = True, *,
             eta: float | None = None, use_clipped_model_output: bool | None = None):
        """One reverse transition x_{τ_k} → x_{τ_{k−1}} with this library's update (:func:`reverse_step`).

        x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t (clamped when ``clip_sample``), then x_s = coef_x0·x̂_0 + coef_xt·x_t +
        coef_eps·ε̂ + √σ² z, all coefficients from :func:`coefficient_table`, computed once by
        :func:`~analytic_dpm.sampling.reverse_step_with_x0`. ``timestep``: diffusers' t = τ_k − 1
        from ``scheduler.timesteps``. Noise z: ``variance_noise`` if given, else from ``generator`` (a
        ``torch.Generator``, a list of them, or a :class:`SeededNoise` to reproduce :func:`sample`), drawn only when
        σ > 0. Computes in at least float32 and returns the dtype of ``sample``.

        ``eta`` and ``use_clipped_model_output`` (keyword-only) are diffusers' DDIMScheduler.step keywords, so that
        code written for it (DDIMPipeline) works: ``eta`` None or the configured η uses the table; another η (DDIM
        family) uses a table rebuilt for it (cached until the next set_timesteps); a DDPM-family method accepts
        only η = 0 (else ValueError). ``use_clipped_model_output``: None keeps the config's ``ddim_eps``, True means
        'consistent' (ε̂ re-derived from the clamped x̂_0) and False 'raw', for this step (DDIM family; no effect on
        DDPM-family methods). Before ``set_timesteps`` the step runs over the constructor's timesteps N−1, …, 0.
        """
        i = self._position(timestep)
        tab = self._step_table(eta, use_clipped_model_output)
        n = int(tab.t[i])
        if not (_is_torch(model_output) and _is_torch(sample)):
            raise TypeError(f"model_output and sample must be torch tensors; got {type(model_output).__name__} and "
                            f"{type(sample).__name__}.")
        out_dtype = sample.dtype
        dtype = torch.promote_types(sample.dtype, torch.float32)
        x = sample.to(dtype)
        out = model_output.to(dtype)
        if out.shape != x.shape:
            if out.ndim == x.ndim and out.shape[1] == 2 * x.shape[1]:
                out = out[:, : x.shape[1]]  # a learned-variance head: ignored, as in the paper
            else:
                raise ValueError(f"model_output must have the shape of sample, {tuple(x.shape)}; got "
                                 f"{tuple(out.shape)}.")
        eps = eps_from_prediction(self.schedule, n, x, out, PREDICTION_TYPES[self.config.prediction_type])
        z = None
        if tab.noise_scale[i] > 0.0:
            if variance_noise is not None:
                if generator is not None:
                    raise ValueError("pass either generator or variance_noise to step(), not both.")
                if tuple(variance_noise.shape) != tuple(x.shape):
                    raise ValueError(f"variance_noise must have the shape of sample, {tuple(x.shape)}; got "
                                     f"{tuple(variance_noise.shape)}.")
                z = variance_noise.to(device=x.device, dtype=dtype)
            elif isinstance(generator, SeededNoise):
                z = generator.draw().to(device=x.device, dtype=dtype)
                if tuple(z.shape) != tuple(x.shape):
                    raise ValueError(f"the SeededNoise draws shape {tuple(z.shape)} but sample has shape "
                                     f"{tuple(x.shape)}; build it with num_samples and shape matching the batch.")
            else:
                z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=dtype)
        # the table was built with data_range = self._data_range, so clip_x0 clamps to the same interval
        x0, prev = sampling.reverse_step_with_x0(tab, i + 1, x, eps, z, clip_x0=bool(self.config.clip_sample))
        prev, x0 = prev.to(out_dtype), x0.to(out_dtype)
        if prev is x0:  # the last step returns x̂_0 itself: keep the two outputs separate tensors
            x0 = x0.clone()
        if not return_dict:
            return (prev, x0)
        return AnalyticDPMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def add_noise(self, original_samples, noise, timesteps):
        """Forward process q(x_n | x_0): √ᾱ_n x_0 + √β̄_n ε at diffusers' t = n − 1 (per sample; float64 scalars)."""
        t = timesteps if _is_torch(timesteps) else torch.as_tensor(timesteps)
        t_np = t.detach().cpu().numpy().astype(np.int64).reshape(-1)
        N = self.schedule.N
        if np.any(t_np < 0) or np.any(t_np > N - 1):
            raise ValueError(f"timesteps must lie in 0..N−1 = 0..{N - 1} (diffusers' t = n − 1); got {_show(t_np)}.")
        n = t_np + 1
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        a = torch.from_numpy(np.sqrt(self.schedule.alpha_bar[n])).to(original_samples.device).reshape(shape)
        b = torch.from_numpy(np.sqrt(self.schedule.beta_bar[n])).to(original_samples.device).reshape(shape)
        dtype = original_samples.dtype
        return a.to(dtype) * original_samples + b.to(dtype) * noise.to(dtype)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __repr__(self) -> str:
        k = "unset" if self.table is None else self.table.K
        return (f"AnalyticDPMScheduler(method={self.config.method!r}, N={self.schedule.N}, K={k}, "
                f"eta={self.config.eta}, clip_sample={self.config.clip_sample})")


__all__ = ["AnalyticDPMScheduler", "AnalyticDPMSchedulerOutput", "SeededNoise", "unet_eps_model", "TRAJECTORY_TYPES",
           "PREDICTION_TYPES", "DIFFUSERS_SPACINGS", "SPACINGS", "IGNORED_OPTIONS"]
