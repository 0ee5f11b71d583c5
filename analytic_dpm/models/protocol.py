"""The ε-model protocol and adapters that bring other networks into it (P §2; facts file §1, §5.1).

Every evaluation in this library (Γ, sampling, likelihood, FID) takes a noise predictor as a plain callable::

    eps_model(x, n) -> eps_hat

* ``x``: a batch of shape (B, *shape), a numpy float array or a torch tensor on any device;
* ``n``: a Python int timestep in 1..N, the same for the whole batch;
* returns ε̂_n(x) with the type, shape, dtype and device of ``x``.

The predicted noise relates to the other common parameterisations by (x_n = √ᾱ_n x_0 + √β̄_n ε):

* x_0-prediction:  ε̂ = (x_n − √ᾱ_n x̂_0)/√β̄_n
* v-prediction (v = √ᾱ_n ε − √β̄_n x_0):  ε̂ = √β̄_n x_n + √ᾱ_n v̂
* score (s_n = ∇log q_n):  ε̂ = −√β̄_n ŝ_n

:class:`TorchEpsModel` wraps a torch module ``net(x, t)`` (t a tensor of shape (B,)) into the protocol, feeding it
the timestep in the convention it was trained with (:data:`TIMESTEP_MAPS`); :func:`from_x0_predictor`,
:func:`from_v_predictor` and :func:`from_score_predictor` turn any callable with the protocol's signature that
predicts x_0, v or the score into an ε-model.
"""

from __future__ import annotations

import sys
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from .._validate import as_int
from ..posterior import eps_from_x0
from ..schedules import Schedule

#: The timestep conventions :class:`TorchEpsModel` can feed a network (facts file §5.1):
#:
#: * ``"n"``: the timestep n ∈ 1..N itself (this library's training, the paper's own CIFAR10 models);
#: * ``"n-1"``: n − 1 ∈ 0..N−1 (pytorch_diffusion / DDIM CelebA and LSUN models, ``model(x, t − 1)``);
#: * ``"n*1000/N"``: n·1000/N (improved-diffusion's ``rescale_timesteps=True``);
#: * ``"(n-1)*1000/N"``: (n − 1)·1000/N (improved-diffusion models used with ``shift1``, e.g. ImageNet 64, N = 4000).
TIMESTEP_MAPS = ("n", "n-1", "n*1000/N", "(n-1)*1000/N")
#: Parameterisations :class:`TorchEpsModel` and :class:`ConvertedEpsModel` convert to ε.
PREDICTIONS = ("eps", "x0", "v", "score")


@runtime_checkable
class EpsModel(Protocol):
    """The ε-model protocol: ``eps_model(x, n) -> eps_hat`` (x a batch, n an int in 1..N; same type/shape/device)."""

    def __call__(self, x, n: int): ...


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _check_schedule(schedule) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an analytic_dpm.Schedule (the one the network was trained with); got "
                        f"{type(schedule).__name__}. Build one with Schedule.linear(N) or Schedule.cosine(N).")
    return schedule


def _check_n(n, N: int | None) -> int:
    n = as_int("n", n, fix="n is the timestep, a Python int in 1..N.")
    if n < 1 or (N is not None and n > N):
        raise ValueError(f"n must be a timestep in 1..N = 1..{N if N is not None else 'N'}; got n = {n}."
                         + (" n = 0 is the data itself: ε_0 is not defined." if n == 0 else ""))
    return n


def eps_from_prediction(schedule: Schedule, n: int, x_t, out, prediction: str):
    """ε̂ from a network output ``out`` at timestep n for x_n = ``x_t``, by the parameterisation ``prediction``.

    eps: ε̂ = out; x0: ε̂ = (x_n − √ᾱ_n x̂_0)/√β̄_n; v: ε̂ = √β̄_n x_n + √ᾱ_n v̂; score: ε̂ = −√β̄_n ŝ.
    Works on numpy arrays and torch tensors (the scalars are float64 Python floats).
    """
    if prediction == "eps":
        return out
    if prediction == "x0":
        return eps_from_x0(schedule, n, x_t, out)
    sab = float(np.sqrt(schedule.alpha_bar[n]))
    sbb = float(np.sqrt(schedule.beta_bar[n]))
    if prediction == "v":
        return sbb * x_t + sab * out
    if prediction == "score":
        return -sbb * out
    raise ValueError(f"prediction must be one of {', '.join(map(repr, PREDICTIONS))}; got {prediction!r}.")


def _check_output(out, x, n, what: str):
    if _is_torch(x) != _is_torch(out) or (not _is_torch(out) and not isinstance(out, np.ndarray)):
        raise TypeError(f"the {what} model returned {type(out).__name__} for a {type(x).__name__} input at n = {n}; "
                        "it must return the same type as x (numpy in, numpy out; torch in, torch out).")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"the {what} model returned shape {tuple(out.shape)} at n = {n}; expected the shape of x, "
                         f"{tuple(x.shape)}.")


# ---------------------------------------------------------------------------------------------------- adapters
class ConvertedEpsModel:
    """An ε-model from a callable ``model(x, n)`` that predicts x_0, v or the score (see :func:`eps_from_prediction`).

    ``model`` follows the protocol's signature (numpy or torch batch, int n; output of the type and shape of x).
    """

    def __init__(self, model: Callable, schedule: Schedule, prediction: str):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, n); got {type(model).__name__}.")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(map(repr, PREDICTIONS))}; got {prediction!r}.")
        self.model = model
        self.schedule = _check_schedule(schedule)
        self.prediction = prediction

    def __call__(self, x, n):
        n = _check_n(n, self.schedule.N)
        out = self.model(x, n)
        _check_output(out, x, n, f"{self.prediction}-predicting")
        return eps_from_prediction(self.schedule, n, x, out, self.prediction)

    def __repr__(self) -> str:
        return f"ConvertedEpsModel({self.model!r}, {self.schedule!r}, prediction={self.prediction!r})"


def from_x0_predictor(model: Callable, schedule: Schedule) -> ConvertedEpsModel:
    """ε-model from an x_0-predictor ``model(x, n) -> x̂_0``: ε̂ = (x_n − √ᾱ_n x̂_0)/√β̄_n (P §2, x̂_0 ↔ ε̂)."""
    return ConvertedEpsModel(model, schedule, "x0")


def from_v_predictor(model: Callable, schedule: Schedule) -> ConvertedEpsModel:
    """ε-model from a v-predictor (v = √ᾱ_n ε − √β̄_n x_0, Salimans & Ho 2022): ε̂ = √β̄_n x_n + √ᾱ_n v̂."""
    return ConvertedEpsModel(model, schedule, "v")


def from_score_predictor(model: Callable, schedule: Schedule) -> ConvertedEpsModel:
    """ε-model from a score model ŝ_n(x) ≈ ∇log q_n(x) (facts file §1: s_n = −ε̂_n/√β̄_n): ε̂ = −√β̄_n ŝ_n."""
    return ConvertedEpsModel(model, schedule, "score")


# ---------------------------------------------------------------------------------------------------- torch wrapper
class TorchEpsModel:
    """A torch network ``net(x, t)`` (t a tensor of shape (B,)) as an ε-model ``(x, n) -> eps_hat``.

    Args:
        net: a ``torch.nn.Module`` (or any callable taking ``(x, t)`` tensors); it is put in eval mode and run
            under ``torch.no_grad()``. Its device and dtype are those of its first parameter (CPU float32 if none).
        timestep_map: what the network receives for timestep n, one of :data:`TIMESTEP_MAPS` (``"n"``, ``"n-1"``,
            ``"n*1000/N"``, ``"(n-1)*1000/N"``) or a callable ``n -> number``. This library trains with ``"n"``.
        num_timesteps: N, needed by the rescaled maps and to check n; taken from ``schedule`` when that is given.
        schedule: the forward schedule; required when ``prediction`` is not ``"eps"``.
        prediction: what the network outputs: ``"eps"`` (default), ``"x0"``, ``"v"`` or ``"score"``; converted to ε
            by :func:`eps_from_prediction` in the dtype of the input.
        learned_sigma: the network outputs 2C channels (ε and a variance head, as improved-diffusion's L_hybrid
            models); keep the first C. The variance head is ignored, as in the paper (facts file §5.2).
        batch_size: evaluate at most this many images per network call (memory bound); None: the whole batch.
        timestep_dtype: dtype of the t tensor; default int64 for the integer maps ``"n"``/``"n-1"``, float32 for the
            others.

    Inputs: a numpy array is converted to a tensor on the network's device and dtype, and the result comes back as
    numpy of the input's dtype; a tensor is moved to the network's device and dtype for the call and the result
    is returned on the input's device in its dtype.
    """

    def __new__(cls, net=None, *args, **kwargs):
        # A network with a second head (analytic_dpm.models.heads.HeadedNet) gets the headed-model protocol.
        if cls is TorchEpsModel and getattr(net, "head_kind", None) is not None:
            cls = TorchHeadedModel
        return super().__new__(cls)

    def __init__(self, net, timestep_map="n", num_timesteps: int | None = None, *, schedule: Schedule | None = None,
                 prediction: str = "eps", learned_sigma: bool = False, batch_size: int | None = None,
                 timestep_dtype=None):
        import torch

        if not callable(net):
            raise TypeError(f"net must be a torch module called as net(x, t); got {type(net).__name__}.")
        if not (callable(timestep_map) or timestep_map in TIMESTEP_MAPS):
            raise ValueError(f"timestep_map must be one of {', '.join(map(repr, TIMESTEP_MAPS))} or a callable "
                             f"n -> number; got {timestep_map!r}. This library's training feeds 'n'.")
        if schedule is not None:
            _check_schedule(schedule)
        if num_timesteps is not None:
            num_timesteps = as_int("num_timesteps", num_timesteps, minimum=1, fix="It is N, e.g. 1000.")
            if schedule is not None and num_timesteps != schedule.N:
                raise ValueError(f"num_timesteps = {num_timesteps} disagrees with the schedule's N = {schedule.N}; "
                                 "pass only one of them.")
        elif schedule is not None:
            num_timesteps = schedule.N
        if isinstance(timestep_map, str) and "N" in timestep_map and num_timesteps is None:
            raise ValueError(f"timestep_map = {timestep_map!r} needs N: pass num_timesteps=N or schedule=.")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(map(repr, PREDICTIONS))}; got {prediction!r}.")
        if prediction != "eps" and schedule is None:
            raise ValueError(f"prediction = {prediction!r} needs the schedule to convert to ε: pass schedule=.")
        if batch_size is not None:
            batch_size = as_int("batch_size", batch_size, minimum=1, fix="It bounds the images per network call.")
        if timestep_dtype is None:
            timestep_dtype = torch.int64 if timestep_map in ("n", "n-1") else torch.float32
        if not isinstance(timestep_dtype, torch.dtype):
            raise TypeError(f"timestep_dtype must be a torch.dtype such as torch.float32; got {timestep_dtype!r}.")
        self.net = net
        self.timestep_map = timestep_map
        self.num_timesteps = num_timesteps
        self.schedule = schedule
        self.prediction = prediction
        self.learned_sigma = bool(learned_sigma)
        self.batch_size = batch_size
        self.timestep_dtype = timestep_dtype
        if hasattr(net, "eval"):
            net.eval()

    # ------------------------------------------------------------------ helpers
    def network_timestep(self, n: int):
        """The value fed to the network for timestep n under :attr:`timestep_map`."""
        m, N = self.timestep_map, self.num_timesteps
        if callable(m):
            return m(n)
        if m == "n":
            return n
        if m == "n-1":
            return n - 1
        if m == "n*1000/N":
            return n * 1000.0 / N
        return (n - 1) * 1000.0 / N

    def _device_dtype(self):
        import torch

        for getter in ("parameters", "buffers"):
            fn = getattr(self.net, getter, None)
            if fn is None:
                continue
            for p in fn():
                if p.is_floating_point():
                    return p.device, p.dtype
        return torch.device("cpu"), torch.float32

    @property
    def device(self):
        """The network's device (that of its first floating-point parameter; CPU if it has none)."""
        return self._device_dtype()[0]

    def _run(self, x, n: int):
        import torch

        t_val = self.network_timestep(n)
        outs = []
        step = self.batch_size or max(int(x.shape[0]), 1)
        for lo in range(0, int(x.shape[0]), step):
            xb = x[lo:lo + step]
            t = torch.full((xb.shape[0],), t_val, dtype=self.timestep_dtype, device=x.device)
            out = self.net(xb, t)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"net(x, t) must return a tensor; got {type(out).__name__}.")
            if self.learned_sigma:
                if out.ndim < 2 or out.shape[1] != 2 * xb.shape[1]:
                    raise ValueError(f"learned_sigma=True expects 2·C = {2 * xb.shape[1]} output channels; got "
                                     f"shape {tuple(out.shape)}.")
                out = out[:, : xb.shape[1]]
            if tuple(out.shape) != tuple(xb.shape):
                hint = (" It looks like a learned-variance head: pass learned_sigma=True."
                        if out.ndim >= 2 and out.shape[1] == 2 * xb.shape[1] else "")
                raise ValueError(f"net(x, t) returned shape {tuple(out.shape)}; expected the shape of x, "
                                 f"{tuple(xb.shape)}.{hint}")
            outs.append(out)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

    def _input(self, x):
        """x as a tensor on the network's device and dtype (and the numpy array when x is one)."""
        import torch

        dev, pdt = self._device_dtype()
        arr = None
        if _is_torch(x):
            if not x.is_floating_point():
                raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}.")
            x_in = x.detach().to(device=dev, dtype=pdt)
        else:
            arr = np.asarray(x)
            if not np.issubdtype(arr.dtype, np.floating):
                raise TypeError(f"x must be a floating-point array; got dtype {arr.dtype}.")
            x_in = torch.from_numpy(np.ascontiguousarray(arr)).to(device=dev, dtype=pdt)
        if x_in.ndim < 2:
            raise ValueError(f"x must be a batch of shape (B, C, ...); got shape {tuple(x_in.shape)}.")
        return x_in, arr

    @staticmethod
    def _output(out, x, arr):
        """A network output back in the type, dtype and device of the input x."""
        if _is_torch(x):
            return out.to(device=x.device, dtype=x.dtype)
        return out.detach().cpu().numpy().astype(arr.dtype, copy=False)

    # ------------------------------------------------------------------ protocol
    def __call__(self, x, n):
        """ε̂_n(x) for a batch x (numpy or torch) at the int timestep n; same type, shape, dtype and device as x."""
        import torch

        n = _check_n(n, self.num_timesteps)
        x_in, arr = self._input(x)
        if getattr(self.net, "training", False):
            self.net.eval()
        with torch.no_grad():
            out = self._run(x_in, n)
        out = self._output(out, x, arr)
        if self.prediction != "eps":
            out = eps_from_prediction(self.schedule, n, x if arr is None else arr, out, self.prediction)
        return out

    def __repr__(self) -> str:
        return (f"TorchEpsModel({type(self.net).__name__}, timestep_map={self.timestep_map!r}, "
                f"num_timesteps={self.num_timesteps}, prediction={self.prediction!r})")


class TorchHeadedModel(TorchEpsModel):
    """A network with a second head, ``net(x, t) -> (eps_hat, head)`` (:class:`~analytic_dpm.models.heads.HeadedNet`),
    as a *headed model* (SN-DPM / NPR-DPM, facts file §6.2):

    * :attr:`head_kind`: ``"sn"`` (head ≈ E[ε² | x_n]) or ``"npr"`` (head ≈ E[(ε − ε̂_n(x_n))² | x_n]);
    * ``model(x, n) -> eps_hat``: the ordinary ε-model protocol;
    * ``model.eps_and_head(x, n) -> (eps_hat, head)``, both of the type, shape, dtype and device of x.

    ``TorchEpsModel(headed_net, ...)`` returns one of these. The arguments are those of :class:`TorchEpsModel`
    (same timestep maps, batching, numpy ↔ torch handling); ``learned_sigma`` must stay False (the HeadedNet already
    keeps only ε̂'s channels). With ``prediction`` other than ``"eps"`` only ε̂ is converted; the head is in
    ε-space, as it was trained.
    """

    def __init__(self, net, timestep_map="n", num_timesteps: int | None = None, **kwargs):
        kind = getattr(net, "head_kind", None)
        if kind not in ("sn", "npr"):
            raise TypeError(f"net must be a network with a second head (head_kind 'sn' or 'npr', e.g. a HeadedNet); "
                            f"got {type(net).__name__} with head_kind {kind!r}. Plain ε-networks: TorchEpsModel.")
        if kwargs.get("learned_sigma"):
            raise ValueError("learned_sigma=True does not apply to a headed network: the HeadedNet drops the "
                             "variance channels itself (HeadedNet(..., learned_sigma=True)).")
        super().__init__(net, timestep_map, num_timesteps, **kwargs)

    @property
    def head_kind(self) -> str:
        """``"sn"`` or ``"npr"``: what the head estimates."""
        return self.net.head_kind

    def _run_both(self, x, n: int):
        import torch

        t_val = self.network_timestep(n)
        eps_out, head_out = [], []
        step = self.batch_size or max(int(x.shape[0]), 1)
        for lo in range(0, int(x.shape[0]), step):
            xb = x[lo:lo + step]
            t = torch.full((xb.shape[0],), t_val, dtype=self.timestep_dtype, device=x.device)
            out = self.net(xb, t)
            if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out)):
                raise TypeError(f"a headed net(x, t) must return (eps_hat, head) tensors; got {type(out).__name__}.")
            for o, what in zip(out, ("eps_hat", "head")):
                if tuple(o.shape) != tuple(xb.shape):
                    raise ValueError(f"net(x, t) returned {what} of shape {tuple(o.shape)}; expected the shape of x, "
                                     f"{tuple(xb.shape)}.")
            eps_out.append(out[0])
            head_out.append(out[1])
        if len(eps_out) == 1:
            return eps_out[0], head_out[0]
        return torch.cat(eps_out, dim=0), torch.cat(head_out, dim=0)

    def _run(self, x, n: int):
        return self._run_both(x, n)[0]

    def eps_and_head(self, x, n):
        """(ε̂_n(x), head_n(x)) for a batch x (numpy or torch) at the int timestep n, each like x."""
        import torch

        n = _check_n(n, self.num_timesteps)
        x_in, arr = self._input(x)
        if getattr(self.net, "training", False):
            self.net.eval()
        with torch.no_grad():
            eps, head = self._run_both(x_in, n)
        eps, head = self._output(eps, x, arr), self._output(head, x, arr)
        if self.prediction != "eps":
            eps = eps_from_prediction(self.schedule, n, x if arr is None else arr, eps, self.prediction)
        return eps, head

    def __repr__(self) -> str:
        return (f"TorchHeadedModel({type(self.net).__name__}, head_kind={self.head_kind!r}, "
                f"timestep_map={self.timestep_map!r}, num_timesteps={self.num_timesteps}, "
                f"prediction={self.prediction!r})")
