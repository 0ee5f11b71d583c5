"""Shared helpers for paper targets: output directory, sidecar metadata, Markdown tables."""

from __future__ import annotations

import json
import math
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


def config_hash(config: dict) -> str:
    """A short, stable hash of a JSON-serialisable configuration (keys sorted), for cache file names."""
    import hashlib

    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_arrays(out_dir, name: str, config: dict, compute) -> dict:
    """Load ``out_dir/cache/<name>-<hash(config)>.npz`` or call ``compute() -> dict of arrays`` and store it.

    The configuration is stored next to the arrays (``<file>.json``) so a cache entry can be traced back."""
    cache = pathlib.Path(out_dir) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{name}-{config_hash(config)}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    arrays = compute()
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    path.with_suffix(".npz.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    return arrays


def write_csv(path: pathlib.Path, header: list[str], rows: list[list]) -> pathlib.Path:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if c is None else (repr(float(c)) if isinstance(c, (float, np.floating)) else c) for c in r])
    return path


def save_figure(fig, path_png: pathlib.Path) -> list[pathlib.Path]:
    """Save a matplotlib figure as PNG and PDF (same stem); closes it."""
    import matplotlib.pyplot as plt

    pdf = path_png.with_suffix(".pdf")
    fig.savefig(path_png, dpi=130)
    fig.savefig(pdf)
    plt.close(fig)
    return [path_png, pdf]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.{digits}f}"


def _tex_escape(s) -> str:
    s = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("σ²", r"$\sigma^2$"), ("Γ", r"$\Gamma$"), ("β̃", r"$\tilde\beta$"),
                 ("β", r"$\beta$"), ("∞", r"$\infty$"), ("→", r"$\to$"), ("·", r"$\cdot$"), ("—", "--")):
        s = s.replace(a, b)
    return s


def write_latex(path: pathlib.Path, header: list[str], blocks, caption: str = "") -> pathlib.Path:
    """A LaTeX ``tabular`` (booktabs) for the paper: ``blocks`` is [(title or None, rows), ...]; each titled block gets
    a spanning row. ``caption`` is written as-is (it may hold LaTeX)."""
    cols = "l" + "r" * (len(header) - 1)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + caption + "}")
    lines += [r"\begin{tabular}{" + cols + "}", r"\toprule", " & ".join(_tex_escape(h) for h in header) + r" \\"]
    for title, rows in blocks:
        lines.append(r"\midrule")
        if title:
            lines.append(r"\multicolumn{" + str(len(header)) + "}{l}{" + _tex_escape(title) + r"} \\")
        lines += [" & ".join(_tex_escape(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    path.write_text("\n".join(lines))
    return path
