"""Reading weights from other codebases' checkpoint files without executing pickled code.

* ``.safetensors``: :func:`safetensors.torch.load_file`.
* anything else (``.pt``, ``.pth``, ``.ckpt``, ``.bin``): ``torch.load(path, map_location="cpu", weights_only=True)``.
  PyTorch's weights-only unpickler builds tensors, containers and numbers and refuses every other Python object, so
  no code from the file runs. Some training checkpoints also store a numpy scalar (a loss, say); for those, and only
  those, the numpy scalar and dtype constructors are allowed as well (:data:`NUMPY_SCALAR_GLOBALS`).

A file holds the weights either directly (a state dict: parameter name → tensor) or inside a training checkpoint.
:func:`extract_state_dict` finds them, preferring EMA weights, in the layouts of the codebases the paper used:

* a plain state dict (pytorch_diffusion conversions, improved-diffusion ``.pt`` files, ``ema_celeba.pth``);
* the DDIM repository's ``[model, optimizer, epoch, step, ema]`` list (the EMA state dict is the last element);
* the official Analytic-DPM code's ``CKPT`` dict (``{"ema_models_states": {"eps_model": ...}, ...}``);
* common wrappers: ``{"state_dict": ...}``, ``{"model": ...}``, ``{"ema": ...}``, ``{"model_ema": ...}``, ...;

and :func:`fit_state_dict` strips ``module.`` (DataParallel) and ``_orig_mod.`` (``torch.compile``) prefixes and
reports missing, unexpected and mis-shaped parameters in one message before anything is loaded.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

#: Wrapper keys searched for the weights, in order: EMA weights first (they are what the papers evaluate).
EMA_KEYS = ("ema_models_states", "ema", "ema_model", "model_ema", "ema_state_dict", "state_dict_ema", "ema_params")
MODEL_KEYS = ("state_dict", "model_state_dict", "model", "models_states", "net", "network", "params", "weights")
#: Entries of a dict of several models that hold the noise predictor (the official code names it "eps_model").
MODEL_NAMES = ("eps_model", "model", "unet", "net")
#: Prefixes added by wrappers: DataParallel / DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _numpy_scalar_globals() -> list:
    """(constructor, pickled name) pairs for numpy scalars and dtypes, under the names numpy 1.x and 2.x pickle."""
    import numpy as np

    try:
        scalar = np._core.multiarray.scalar  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        scalar = np.core.multiarray.scalar
    pairs = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
             (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
            cls = getattr(dtypes, name, None)
            if cls is not None:
                pairs.append((cls, f"numpy.dtypes.{name}"))
    return pairs


#: The only globals allowed beyond PyTorch's weights-only defaults: constructors of numpy scalars and dtypes.
NUMPY_SCALAR_GLOBALS = tuple(name for _, name in _numpy_scalar_globals())


def _is_state_dict(obj) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()))


def _describe(obj, depth: int = 0) -> str:
    """A one-line sketch of a loaded object's structure, for error messages."""
    if isinstance(obj, torch.Tensor):
        return f"tensor{tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        if depth >= 2:
            return f"dict({len(obj)} entries)"
        items = list(obj.items())
        shown = ", ".join(f"{k!r}: {_describe(v, depth + 1)}" for k, v in items[:6])
        return "{" + shown + (", ..." if len(items) > 6 else "") + "}"
    if isinstance(obj, (list, tuple)):
        if depth >= 2:
            return f"{type(obj).__name__}({len(obj)} items)"
        return "[" + ", ".join(_describe(v, depth + 1) for v in obj[:6]) + (", ..." if len(obj) > 6 else "") + "]"
    return type(obj).__name__


def read_checkpoint(path):
    """The object stored in a checkpoint file, read without running pickled code (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ImportError: a ``.safetensors`` file but the ``safetensors`` package is missing.
        ValueError: the file needs Python objects beyond tensors, containers, numbers and numpy scalars (it would
            have to be unpickled, which this library never does); the message names the objects.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}" + (" (it is a directory)" if path.is_dir()
                                                                            else "") + ".")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{path.name} is a safetensors file: install the safetensors package "
                              "(pip install safetensors, or the package's [diffusers] extra).") from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors' own error type
            raise ValueError(f"could not read {path} as a safetensors file ({type(exc).__name__}: "
                             f"{str(exc).strip()[:300]}).") from None
    allowed = _numpy_scalar_globals()
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            ctx = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
            if ctx is None:
                raise
            with ctx(allowed):  # numpy scalars and dtypes: data, not code
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = None
        lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
        if lister is not None:
            try:
                unsafe = [u for u in lister(path) if u not in NUMPY_SCALAR_GLOBALS]
            except Exception:  # legacy (non-zip) files cannot be listed
                unsafe = None
        what = (f"Python objects of type(s) {unsafe}" if unsafe else
                f"objects the weights-only loader refuses ({str(exc).strip().splitlines()[-1][:300]})")
        raise ValueError(
            f"{path} cannot be read safely: it stores {what}, and reading them would mean unpickling, which can run "
            "arbitrary code; this library only reads tensors (torch.load(weights_only=True) or safetensors). If you "
            "trust the file, re-save just its weights once in a separate Python session, e.g. "
            "torch.save(torch.load(path, weights_only=False)['<key of the state dict>'], 'weights.pt'), and load "
            "that file instead.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"could not read {path} as a PyTorch checkpoint ({type(exc).__name__}: "
                         f"{str(exc).strip()[:300]}). Is the file complete (not truncated or an HTML error page)?"
                         ) from None


def extract_state_dict(obj, prefer_ema: bool = True) -> tuple[dict, str]:
    """The state dict (name → tensor) inside a loaded checkpoint object, and where it was found.

    Args:
        obj: what :func:`read_checkpoint` returned.
        prefer_ema: take EMA weights when the file has both EMA and raw weights (the published models are EMA).

    Returns:
        ``(state_dict, location)``, e.g. ``({...}, "['ema_models_states']['eps_model']")``; location ``""`` when
        the file is a state dict itself.

    Raises:
        ValueError: no state dict found; the message sketches the file's structure.
    """

    def search(o, loc: str, depth: int):
        if _is_state_dict(o):
            return dict(o), loc
        if depth > 4:
            return None
        if isinstance(o, Mapping):
            keys = (EMA_KEYS + MODEL_KEYS) if prefer_ema else (MODEL_KEYS + EMA_KEYS)
            for k in keys:
                if k in o:
                    found = search(o[k], f"{loc}[{k!r}]", depth + 1)
                    if found is not None:
                        return found
            # a dict of several models, e.g. {"eps_model": state_dict}
            subs = [k for k, v in o.items() if _is_state_dict(v)]
            for k in MODEL_NAMES:
                if k in subs:
                    return dict(o[k]), f"{loc}[{k!r}]"
            if len(subs) == 1:
                return dict(o[subs[0]]), f"{loc}[{subs[0]!r}]"
            return None
        if isinstance(o, (list, tuple)):
            idx = [i for i, v in enumerate(o) if _is_state_dict(v)]
            if idx:  # DDIM's [model, optimizer, epoch, step, ema]: the EMA weights come last
                i = idx[-1] if prefer_ema else idx[0]
                return dict(o[i]), f"{loc}[{i}]"
        return None

    found = search(obj, "", 0)
    if found is None:
        raise ValueError(f"found no state dict (parameter name → tensor) in the checkpoint; its structure is "
                         f"{_describe(obj)}. Expected a state dict, the DDIM repository's [model, optimizer, epoch, "
                         "step, ema] list, or a dict with one of the keys "
                         f"{', '.join(EMA_KEYS + MODEL_KEYS)}.")
    return found


def _strip_prefixes(state_dict: dict, expected: set) -> tuple[dict, list]:
    """Remove wrapper prefixes shared by every key when that makes more keys match ``expected``."""
    stripped = []
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if state_dict and all(k.startswith(p) for k in state_dict):
                cand = {k[len(p):]: v for k, v in state_dict.items()}
                if len(expected & set(cand)) >= len(expected & set(state_dict)):
                    state_dict, changed = cand, True
                    stripped.append(p)
    return state_dict, stripped


def fit_state_dict(net: nn.Module, state_dict: dict, *, what: str, hints=None) -> dict:
    """Load ``state_dict`` into ``net`` strictly, after stripping wrapper prefixes; return a report.

    Args:
        net: the freshly built network.
        state_dict: name → tensor (dtypes are cast to the network's on copy).
        what: how to name the pair in errors, e.g. "checkpoint 'ckpt.pt' (family 'ddpm', config ...)".
        hints: optional callable ``(missing, unexpected, mismatched) -> list[str]`` adding family-specific advice.

    Returns:
        ``{"stripped_prefixes": [...], "num_tensors": int}``.

    Raises:
        ValueError: any missing, unexpected or mis-shaped parameter, all listed (first 8 of each) before loading.
    """
    expected = net.state_dict()
    sd, stripped = _strip_prefixes(state_dict, set(expected))
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [(k, tuple(sd[k].shape), tuple(expected[k].shape)) for k in expected
                  if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        lines = [f"{what} does not fit the network:"]
        if missing:
            lines.append(f"  {len(missing)} parameter(s) missing from the checkpoint: {missing[:8]}"
                         + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected parameter(s) in the checkpoint: {unexpected[:8]}"
                         + (" ..." if len(unexpected) > 8 else ""))
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatch(es) (name: checkpoint vs network): "
                         + ", ".join(f"{k}: {a} vs {b}" for k, a, b in mismatched[:8])
                         + (" ..." if len(mismatched) > 8 else ""))
        advice = list(hints(missing, unexpected, mismatched)) if hints is not None else []
        if not advice:
            advice = ["Check that the family and configuration match the model the file was trained with."]
        lines += [f"  Hint: {a}" for a in advice]
        raise ValueError("\n".join(lines))
    net.load_state_dict(sd, strict=True)
    return {"stripped_prefixes": stripped, "num_tensors": len(sd)}
