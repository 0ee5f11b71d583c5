"""Bridges to other libraries, imported lazily so that the core library never needs them.

* :class:`AnalyticDPMScheduler` (``analytic_dpm.integrations.diffusers_scheduler``): Analytic-DPM as a diffusers
  scheduler, for use inside diffusers pipelines. Needs the optional extra: ``pip install analytic-dpm[diffusers]``.
  Also there: :class:`SeededNoise` (this library's per-sample noise streams for a diffusers loop) and
  :func:`unet_eps_model` (a diffusers ``UNet2DModel`` as an ε-model for Γ estimation, sampling and likelihoods).

A pipeline saved with this scheduler records it as ``analytic_dpm.integrations.diffusers_scheduler``; diffusers'
``from_pretrained`` resolves that module from ``sys.modules`` only, so import it (or any name from here, e.g.
``from analytic_dpm.integrations import AnalyticDPMScheduler``) before ``DDPMPipeline.from_pretrained(dir)``.
``DDIMPipeline`` replaces the scheduler it is built with by a DDIMScheduler: assign ``pipe.scheduler = sched`` after
construction (see the module docstring of ``diffusers_scheduler``).

Accessing a name here imports diffusers at that moment (a few seconds); ``import analytic_dpm.integrations`` alone
does not.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "AnalyticDPMScheduler": "diffusers_scheduler",
    "AnalyticDPMSchedulerOutput": "diffusers_scheduler",
    "SeededNoise": "diffusers_scheduler",
    "unet_eps_model": "diffusers_scheduler",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'analytic_dpm.integrations' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = list(_LAZY)
