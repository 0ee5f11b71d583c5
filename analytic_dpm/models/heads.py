"""A second output head on a frozen pretrained ε-network: SN-DPM and NPR-DPM (extended paper E; facts file §6.2).

The extended Analytic-DPM learns a per-dimension covariance from two conditional expectations of the noise:

* SN ("squared noise", perfect-mean assumption): a head h_n(x_n) ≈ E[ε² | x_n], elementwise; loss
  L_SN = mean((ε² − h_n(x_n))²)  (:func:`sn_loss`);
* NPR ("noise prediction residual", corrects for an imperfect mean): a head g_n(x_n) ≈ E[(ε − ε̂_n(x_n))² | x_n] for
  the network's own ε̂; loss L_NPR = mean((stopgrad((ε − ε̂_n(x_n))²) − g_n(x_n))²)  (:func:`npr_loss`).

Both losses are the mean over all elements of the batch, as the ε-MSE of :func:`~analytic_dpm.models.training.train`
is; the official code (X, ``dt_dsdm`` / ``dt_dsdm_err``) sums over the dimensions instead, which only rescales the
gradient by d (a learning-rate factor).

Parameter sharing and two-stage training (X ``UNetModel4Pretrained`` / ``Model4Pretrained``): stage 1 is ordinary
ε-training; stage 2 freezes the stage-1 network (``requires_grad_(False)``, always in eval mode) and fits only a new
head ``out2`` that reads the backbone's last hidden features, the input of its final GroupNorm → SiLU → conv block:

* ``mode="simple"``: GroupNorm → SiLU → zero-initialised 3×3 conv to the image channels;
* ``mode="complex"``: one extra residual block (:class:`analytic_dpm.models.unet.ResBlock`, fed the backbone's time
  embedding), then the same.

The zero-initialised conv makes the head output exactly 0 before training. The features (and the time embedding) are
captured by hooks registered for the duration of one forward call and are detached, so the head never
back-propagates into the backbone.

:class:`HeadedNet` ``forward(x, t) -> (eps_hat, head)``; :func:`attach_head` picks the feature (and time-embedding)
module for the networks of this library (:data:`HEAD_ADAPTERS`); :func:`save_headed` / :func:`load_headed` store
the head alone (loadable with ``torch.load(..., weights_only=True)``); the backbone is loaded separately.
Stage 2 is ``train(HeadedNet(stage1_ema, "sn"), data, schedule, steps, objective="sn")``; evaluate the result with
``TorchEpsModel(result.ema)`` (a :class:`~analytic_dpm.models.protocol.TorchHeadedModel`, the headed-model protocol).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import as_int, choice
from ..covariance import HEAD_KINDS  # "sn" (h ≈ E[ε² | x_n]) and "npr" (g ≈ E[(ε − ε̂)² | x_n])
from .unet import ResBlock, UNet, _groups

#: Head architectures (X's ``mode``): ``"simple"`` (GroupNorm → SiLU → zero conv) and ``"complex"`` (ResBlock first).
HEAD_MODES = ("simple", "complex")
HEAD_FORMAT = "analytic_dpm.models.heads.head/1"


# ---------------------------------------------------------------------------------------------------- losses
def sn_loss(eps: torch.Tensor, eps_hat: torch.Tensor | None, head: torch.Tensor) -> torch.Tensor:
    """SN-DPM loss (E, X ``dt_dsdm``): mean over all elements of (ε² − h)²; ``eps_hat`` is unused (uniform signature).

    Its minimiser over functions of x_n is h = E[ε² | x_n].
    """
    _check_same_shape(eps, head, "head")
    return torch.mean((eps.square() - head) ** 2)


def npr_loss(eps: torch.Tensor, eps_hat: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """NPR-DPM loss (E, X ``dt_dsdm_err``): mean over all elements of (stopgrad((ε − ε̂)²) − g)².

    The target is detached, so no gradient reaches ε̂ (nor the network that produced it); the minimiser is
    g = E[(ε − ε̂(x_n))² | x_n].
    """
    _check_same_shape(eps, head, "head")
    _check_same_shape(eps, eps_hat, "eps_hat")
    target = (eps - eps_hat).detach().square()
    return torch.mean((target - head) ** 2)


HEAD_LOSSES = {"sn": sn_loss, "npr": npr_loss}
#: The loss formula stored in a training run's config (``config["loss"]``).
HEAD_LOSS_FORMULAS = {"sn": "mean((eps^2 - h)^2)", "npr": "mean((stopgrad((eps - eps_hat)^2) - g)^2)"}


def _check_same_shape(eps, other, name):
    if not isinstance(eps, torch.Tensor) or not isinstance(other, torch.Tensor):
        raise TypeError(f"eps and {name} must be torch tensors; got {type(eps).__name__} and {type(other).__name__}.")
    if tuple(eps.shape) != tuple(other.shape):
        raise ValueError(f"{name} must have the shape of eps, {tuple(eps.shape)}; got {tuple(other.shape)}.")


# ---------------------------------------------------------------------------------------------------- adapters
@dataclass(frozen=True)
class HeadAdapter:
    """Where a network class keeps what a head needs.

    Attributes:
        feature_module: the submodule whose *input* is the last hidden feature map (a forward pre-hook reads it).
        time_module: the submodule whose *output* is the time embedding fed to the residual blocks (``"complex"``).
        channels: function net -> the image channels C (the head's output channels).
        learned_sigma: function net -> whether the network outputs 2C channels (ε and a variance head).
    """

    feature_module: str
    time_module: str | None
    channels: object
    learned_sigma: object


def _diffusers_cfg(net):
    cfg = getattr(net, "config", None)
    return (lambda k, default=None: cfg.get(k, default)) if isinstance(cfg, dict) else (
        lambda k, default=None: getattr(cfg, k, default))


def _adapter_for(net) -> HeadAdapter | None:
    """The adapter for ``net``'s class, or None."""
    from .foreign.ddpm_unet import DDPMUNet
    from .foreign.diffusers_unet import DiffusersUNetAdapter
    from .foreign.improved_unet import ImprovedUNet

    if isinstance(net, UNet):
        return HeadAdapter("norm_out", "time_mlp", lambda m: m.config.channels, lambda m: False)
    if isinstance(net, DDPMUNet):
        return HeadAdapter("norm_out", "temb.dense.1", lambda m: m.config.in_channels,
                           lambda m: m.config.out_ch == 2 * m.config.in_channels)
    if isinstance(net, ImprovedUNet):
        return HeadAdapter("out", "time_embed", lambda m: m.config.in_channels,
                           lambda m: m.config.out_channels == 2 * m.config.in_channels)
    if isinstance(net, DiffusersUNetAdapter):
        inner = _adapter_for(net.unet)
        if inner is None:
            return None
        return HeadAdapter("unet." + inner.feature_module, inner.time_module and "unet." + inner.time_module,
                           lambda m: inner.channels(m.unet), lambda m: inner.learned_sigma(m.unet))
    from .foreign.score_sde import NCSNpp

    if isinstance(net, NCSNpp):
        cfg = net.config
        if cfg.progressive == "output_skip":  # the output is a sum over a pyramid: no single output block
            return None
        last = len(net.all_modules) - 2  # ... → GroupNorm (all_modules[-2]) → act → conv3x3 (all_modules[-1])
        temb = (2 if cfg.embedding_type == "fourier" else 1) if cfg.conditional else None
        return HeadAdapter(f"all_modules.{last}", None if temb is None else f"all_modules.{temb}",
                           lambda m: m.config.num_channels, lambda m: False)
    if type(net).__name__ == "UNet2DModel":  # diffusers, imported only by the user
        def cin(m):
            return int(_diffusers_cfg(m)("in_channels"))

        return HeadAdapter("conv_norm_out", "time_embedding", cin,
                           lambda m: int(_diffusers_cfg(m)("out_channels")) == 2 * cin(m))
    return None


#: The network classes :func:`attach_head` knows, with their feature and time-embedding modules.
HEAD_ADAPTERS = {
    "analytic_dpm.models.unet.UNet": ("norm_out", "time_mlp"),
    "analytic_dpm.models.foreign.DDPMUNet": ("norm_out", "temb.dense.1"),
    "analytic_dpm.models.foreign.ImprovedUNet": ("out", "time_embed"),
    "diffusers.UNet2DModel": ("conv_norm_out", "time_embedding"),
    "analytic_dpm.models.foreign.DiffusersUNetAdapter": ("unet.conv_norm_out", "unet.time_embedding"),
    # score_sde's DDPM++ / NCSN++ with progressive 'none' (the VP CIFAR-10 configs): the last GroupNorm of
    # all_modules, and the second time-embedding Linear (all_modules.2 after a Fourier projection)
    "analytic_dpm.models.foreign.NCSNpp": ("all_modules.<len − 2>", "all_modules.1"),
}


def _candidates(net: nn.Module, limit: int = 8) -> str:
    """The last few normalisation modules of ``net`` (likely feature modules), for error messages."""
    names = [n for n, m in net.named_modules() if n and isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d))]
    names = names[-limit:]
    return ", ".join(repr(n) for n in names) if names else "(none: the network has no normalisation layers)"


def _get_submodule(net: nn.Module, name: str, arg: str) -> nn.Module:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{arg} must be the dotted name of a submodule of the backbone (a str); got {name!r}.")
    try:
        return net.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{arg} = {name!r} is not a submodule of the {type(net).__name__} backbone. Candidates (its "
                         f"last normalisation layers): {_candidates(net)}. The feature module is the first layer of "
                         "the output block (its input is the last hidden feature map).") from None


def _norm_of(module: nn.Module):
    """The GroupNorm at the start of the feature module (the module itself, or the first of a Sequential)."""
    if isinstance(module, nn.GroupNorm):
        return module
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], nn.GroupNorm):
        return module[0]
    return None


def _out_features(module: nn.Module) -> int | None:
    """Width of a time-embedding module's output: its (last) Linear's out_features."""
    if isinstance(module, nn.Linear):
        return module.out_features
    lin = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return lin[-1].out_features if lin else None


def backbone_fingerprint(net: nn.Module) -> dict:
    """Class, parameter count and the SHA-256 of the state dict (names, dtypes, shapes, bytes) of a network."""
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"class": type(net).__name__, "num_parameters": int(sum(p.numel() for p in net.parameters())),
            "sha256": h.hexdigest()}


# ---------------------------------------------------------------------------------------------------- the head
class _Head(nn.Module):
    """``out2``: [ResBlock(h, temb)] → GroupNorm → SiLU → zero-initialised 3×3 conv to the image channels."""

    def __init__(self, feature_channels: int, out_channels: int, mode: str, num_groups: int, norm_eps: float,
                 temb_dim: int | None):
        super().__init__()
        self.block = ResBlock(feature_channels, feature_channels, temb_dim, 0.0) if mode == "complex" else None
        self.norm = nn.GroupNorm(num_groups, feature_channels, eps=norm_eps)
        self.conv = nn.Conv2d(feature_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, h, temb=None):
        if self.block is not None:
            h = self.block(h, temb)
        return self.conv(F.silu(self.norm(h)))


class HeadedNet(nn.Module):
    """A frozen ε-network with a second head: ``forward(x, t) -> (eps_hat, head)`` (E's two-stage training, §6.2).

    Args:
        backbone: the pretrained ε-network ``backbone(x, t)`` (returning a tensor, a tuple whose first item is the
            output, or an object with ``.sample`` as diffusers does). It is frozen (``requires_grad_(False)``) and
            kept in eval mode even when the HeadedNet is put in train mode.
        kind: ``"sn"`` (the head learns E[ε² | x_n]) or ``"npr"`` (E[(ε − ε̂)² | x_n]); also :attr:`head_kind`.
        mode: ``"simple"`` or ``"complex"`` (see the module docstring).
        feature_module: dotted name of the backbone's submodule whose input is the last hidden feature map; None:
            from :data:`HEAD_ADAPTERS` (e.g. ``"norm_out"`` for :class:`~analytic_dpm.models.unet.UNet`).
        time_module: the submodule whose output is the time embedding (``"complex"`` only); None: from the adapter.
        channels: the image channels C (the head's output channels); None: from the backbone's config.
        learned_sigma: the backbone outputs 2C channels (ε and a variance); ε̂ is the first C. None: from its config.
        feature_channels: the width of the features; None: that of the feature module's GroupNorm.

    The head is GroupNorm (the backbone's group count and eps when the feature module is a GroupNorm) → SiLU → 3×3
    conv with zero weights and bias, so it outputs exactly 0 before training.
    """

    def __init__(self, backbone: nn.Module, kind: str, mode: str = "simple", feature_module: str | None = None, *,
                 time_module: str | None = None, channels: int | None = None, learned_sigma: bool | None = None,
                 feature_channels: int | None = None):
        super().__init__()
        if isinstance(backbone, HeadedNet):
            raise TypeError("backbone is already a HeadedNet; pass its .backbone to attach a different head.")
        if not isinstance(backbone, nn.Module):
            hint = (" It looks like an ε-model wrapper: pass its network, e.g. model.net."
                    if hasattr(backbone, "net") else "")
            raise TypeError(f"backbone must be a torch.nn.Module called as backbone(x, t); got "
                            f"{type(backbone).__name__}.{hint}")
        choice("kind", kind, HEAD_KINDS)
        choice("mode", mode, HEAD_MODES)
        adapter = _adapter_for(backbone)
        if feature_module is None:
            if adapter is None:
                raise ValueError(f"no default feature_module for a {type(backbone).__name__} backbone; pass "
                                 f"feature_module= the name of the first layer of its output block (its input is the "
                                 f"last hidden feature map). Candidates: {_candidates(backbone)}. Known classes: "
                                 f"{', '.join(f'{k} ({v[0]!r})' for k, v in HEAD_ADAPTERS.items())}.")
            feature_module = adapter.feature_module
        fmod = _get_submodule(backbone, feature_module, "feature_module")
        norm = _norm_of(fmod)
        if feature_channels is None:
            if norm is None:
                raise ValueError(f"cannot tell the width of the features entering {feature_module!r} (a "
                                 f"{type(fmod).__name__}, not a GroupNorm): pass feature_channels=.")
            feature_channels = norm.num_channels
        feature_channels = as_int("feature_channels", feature_channels, minimum=1)
        if channels is None:
            if adapter is None:
                raise ValueError(f"cannot tell the image channels of a {type(backbone).__name__} backbone: pass "
                                 "channels= (e.g. 3 for RGB).")
            channels = adapter.channels(backbone)
        channels = as_int("channels", channels, minimum=1)
        if learned_sigma is None:
            learned_sigma = bool(adapter.learned_sigma(backbone)) if adapter is not None else False
        temb_dim = None
        if mode == "complex":
            if time_module is None:
                if adapter is None or adapter.time_module is None:
                    raise ValueError(f"mode='complex' needs the backbone's time embedding, and there is no default "
                                     f"time_module for a {type(backbone).__name__}: pass time_module= the submodule "
                                     "whose output is the embedding fed to the residual blocks, or use "
                                     "mode='simple'.")
                time_module = adapter.time_module
            temb_dim = _out_features(_get_submodule(backbone, time_module, "time_module"))
            if temb_dim is None:
                raise ValueError(f"time_module = {time_module!r} holds no Linear layer, so the width of the time "
                                 "embedding is unknown; name the module that outputs the embedding.")
        else:
            time_module = None
        groups = norm.num_groups if norm is not None and feature_channels % norm.num_groups == 0 \
            and norm.num_channels == feature_channels else _groups(feature_channels)
        eps = float(norm.eps) if norm is not None else 1e-5

        backbone.requires_grad_(False)
        backbone.eval()
        self.backbone = backbone
        self.kind = kind
        self.mode = mode
        self.feature_module = feature_module
        self.time_module = time_module
        self.channels = channels
        self.learned_sigma = bool(learned_sigma)
        self.feature_channels = feature_channels
        self.out2 = _Head(feature_channels, channels, mode, groups, eps, temb_dim)
        ref = next((p for p in backbone.parameters() if p.is_floating_point()), None)
        if ref is not None:
            self.out2.to(device=ref.device)

    @property
    def head_kind(self) -> str:
        """``"sn"`` or ``"npr"`` (the headed-model protocol's attribute)."""
        return self.kind

    def head_settings(self) -> dict:
        """JSON-compatible description of the head (stored in checkpoints and head files)."""
        return {"kind": self.kind, "mode": self.mode, "feature_module": self.feature_module,
                "time_module": self.time_module, "channels": self.channels, "learned_sigma": self.learned_sigma,
                "feature_channels": self.feature_channels}

    def train(self, mode: bool = True):
        """Set the head's train/eval mode; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        """(ε̂, head) for x of shape (B, C, H, W) and t of shape (B,) (what the backbone takes)."""
        captured = {}

        def pre_hook(module, args):
            captured["h"] = args[0]

        def time_hook(module, args, out):
            captured["temb"] = out

        handles = [self.backbone.get_submodule(self.feature_module).register_forward_pre_hook(pre_hook)]
        if self.time_module is not None:
            handles.append(self.backbone.get_submodule(self.time_module).register_forward_hook(time_hook))
        try:
            out = self.backbone(x, t)
        finally:
            for hd in handles:
                hd.remove()
        if isinstance(out, (tuple, list)):
            out = out[0]
        elif not isinstance(out, torch.Tensor) and hasattr(out, "sample"):
            out = out.sample
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the backbone returned {type(out).__name__}; it must return the ε̂ tensor.")
        C = self.channels
        if self.learned_sigma:
            if out.ndim < 2 or out.shape[1] != 2 * C:
                raise ValueError(f"learned_sigma=True expects 2·C = {2 * C} output channels; got {tuple(out.shape)}.")
            out = out[:, :C]
        if "h" not in captured:
            raise RuntimeError(f"the feature module {self.feature_module!r} was not called in the backbone's forward; "
                               f"choose another feature_module (candidates: {_candidates(self.backbone)}).")
        if self.time_module is not None and "temb" not in captured:
            raise RuntimeError(f"the time module {self.time_module!r} was not called in the backbone's forward.")
        wdt = self.out2.conv.weight.dtype
        h = captured["h"].detach().to(wdt)
        if h.ndim != 4 or h.shape[1] != self.feature_channels:
            raise ValueError(f"the features entering {self.feature_module!r} have shape {tuple(h.shape)}; the head "
                             f"expects (B, {self.feature_channels}, H, W).")
        temb = captured["temb"].detach().to(wdt) if self.time_module is not None else None
        head = self.out2(h, temb)
        if tuple(head.shape) != tuple(out.shape):
            raise ValueError(f"the head's output {tuple(head.shape)} does not match ε̂ {tuple(out.shape)}; check "
                             "channels= and feature_module=.")
        return out, head.to(out.dtype)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, mode={self.mode!r}, feature_module={self.feature_module!r}"


def attach_head(backbone: nn.Module, kind: str, mode: str = "simple", feature_module: str | None = None,
                **kwargs) -> HeadedNet:
    """A :class:`HeadedNet` on ``backbone`` (frozen in place), picking the feature module by class.

    Known classes (:data:`HEAD_ADAPTERS`): this library's UNet (``norm_out``), the foreign DDPMUNet (``norm_out``)
    and ImprovedUNet (``out``), diffusers' ``UNet2DModel`` (``conv_norm_out``) and its ``DiffusersUNetAdapter``
    (``unet.conv_norm_out``). Any other network: pass ``feature_module`` (and ``channels``; ``time_module`` for
    ``mode="complex"``). ``kwargs`` go to :class:`HeadedNet`.
    """
    return HeadedNet(backbone, kind, mode, feature_module, **kwargs)


# ---------------------------------------------------------------------------------------------------- head files
def save_headed(net: HeadedNet, path, metadata: dict | None = None, half: bool = False) -> Path:
    """Write the head of ``net`` (its ``out2`` state dict, kind, mode, feature/time modules, channels) to ``path``.

    The backbone is not stored, only its fingerprint (class, parameter count, SHA-256): load it separately (e.g.
    ``load_model("model.pt")``) and pass it to :func:`load_headed`. ``half`` stores float16 weights. The file loads
    with ``torch.load(path, weights_only=True)``; the write is atomic.
    """
    if not isinstance(net, HeadedNet):
        raise TypeError(f"net must be a HeadedNet; got {type(net).__name__}. Build one with "
                        "attach_head(backbone, kind).")
    sd = {k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu()).clone()
          for k, v in net.out2.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"format": HEAD_FORMAT, "head": json.dumps(net.head_settings(), sort_keys=True), "state_dict": sd,
           "backbone": json.dumps(backbone_fingerprint(net.backbone), sort_keys=True),
           "metadata": json.dumps(metadata or {}, sort_keys=True), "half": bool(half)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def read_headed(path) -> dict:
    """The raw contents of a :func:`save_headed` file (weights_only load) with ``head``/``backbone``/``metadata``
    decoded from JSON."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
        raise ValueError(f"{path} is not a head file written by save_headed (format "
                         f"{obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r}; expected "
                         f"{HEAD_FORMAT!r}).")
    obj = dict(obj)
    for k in ("head", "backbone", "metadata"):
        obj[k] = json.loads(obj[k])
    return obj


def load_headed(path, backbone: nn.Module, device=None, check_backbone: str = "class") -> HeadedNet:
    """A :class:`HeadedNet` on ``backbone`` (frozen in place) with the head stored at ``path`` (eval mode).

    ``check_backbone``: ``"class"`` (default) requires the backbone's class and parameter count to be those the head
    was trained on; ``"exact"`` also its weights (SHA-256); ``"none"`` checks only the head's shapes. float16 files
    load as float32. ``device``: where the network goes (None: where the backbone is).
    """
    choice("check_backbone", check_backbone, ("class", "exact", "none"))
    obj = read_headed(path)
    settings, stored = obj["head"], obj["backbone"]
    if check_backbone != "none":
        now = backbone_fingerprint(backbone) if check_backbone == "exact" else {
            "class": type(backbone).__name__, "num_parameters": int(sum(p.numel() for p in backbone.parameters()))}
        keys = ("class", "num_parameters", "sha256") if check_backbone == "exact" else ("class", "num_parameters")
        diff = [k for k in keys if stored.get(k) != now.get(k)]
        if diff:
            shown = "; ".join(f"{k}: file {stored.get(k)!r} vs given {now.get(k)!r}" for k in diff)
            raise ValueError(f"the head in {path} was trained on another backbone ({shown}). Pass the network it was "
                             "trained on, or check_backbone='none' to skip this check.")
    kw = dict(time_module=settings["time_module"], channels=settings["channels"],
              learned_sigma=settings["learned_sigma"])
    fmod = _get_submodule(backbone, settings["feature_module"], "the stored feature_module")
    # the head is built for the given backbone's feature width (when it can tell), so a mismatch shows as shapes
    fc = None if _norm_of(fmod) is not None else settings["feature_channels"]
    net = HeadedNet(backbone, settings["kind"], settings["mode"], settings["feature_module"], feature_channels=fc,
                    **kw)
    ref = net.out2.state_dict()
    sd = obj["state_dict"]
    missing, extra = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
    bad = [f"{k}: file {tuple(sd[k].shape)} vs head {tuple(ref[k].shape)}" for k in ref
           if k in sd and tuple(sd[k].shape) != tuple(ref[k].shape)]
    if missing or extra or bad:
        raise ValueError(f"the head in {path} does not fit this backbone: missing {missing}, unexpected {extra}, "
                         f"shape mismatches [{'; '.join(bad)}].")
    net.out2.load_state_dict({k: (v.to(ref[k].dtype) if v.is_floating_point() else v) for k, v in sd.items()})
    if device is not None:
        from .training import default_device

        net.to(default_device(device))
    net.eval()
    return net
