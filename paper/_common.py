"""Shared helpers for paper targets: output directory, sidecar metadata, Markdown tables."""

from __future__ import annotations

import json
import pathlib
import platform
import subprocess
import time

import numpy as np


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=pathlib.Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10,
                               cwd=pathlib.Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    import matplotlib
    import scipy
    import torch

    import analytic_dpm

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "torch": torch.__version__, "matplotlib": matplotlib.__version__, "analytic_dpm": analytic_dpm.__version__}


def write_sidecar(path: pathlib.Path, config: dict, seeds=None, started: float | None = None) -> None:
    meta = {
        "output": path.name,
        "commit": git_commit(),
        "config": config,
        "seeds": seeds,
        "versions": versions(),
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "wall_time_s": None if started is None else round(time.perf_counter() - started, 3),
    }
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(meta, indent=2) + "\n")


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
