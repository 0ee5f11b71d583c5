"""Shared helpers for paper targets: output directory, sidecar metadata (provenance), Markdown tables."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import pathlib
import platform
import subprocess
import time

import numpy as np


# What a sidecar's commit describes: the code that computes the outputs. Outputs (paper/full/, paper/out/, results/)
# are not in this list, so regenerating them leaves the tree clean. Pathspecs are relative to the repository root;
# ``:(glob)`` makes ``*`` stop at "/", so ``paper/*.py`` is the paper package itself, not files under its outputs.
CODE_PATHS = ("analytic_dpm", "theory", ":(glob)paper/*.py")

_REPO = pathlib.Path(__file__).resolve().parent


def _git(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30, cwd=cwd)


def code_state(repo=None, paths=CODE_PATHS, untracked: bool = True) -> dict:
    """The commit of the code and whether that code is modified: ``{"commit", "dirty", "dirty_files"}``.

    ``commit`` is ``git rev-parse HEAD`` of the repository holding ``repo`` (default: this package's checkout), or
    ``"unknown"`` outside a git checkout (then ``dirty`` and ``dirty_files`` are None: nothing can be verified).
    ``dirty_files`` lists, relative to the repository root and sorted, the files under ``paths`` that differ from
    HEAD (staged or not, deleted, renamed: both names) and, with ``untracked``, the new files git does not ignore
    there (a new module can be imported without being committed). Files outside ``paths``, such as the outputs, do
    not count."""
    cwd = pathlib.Path(_REPO if repo is None else repo)
    unknown = {"commit": "unknown", "dirty": None, "dirty_files": None}
    try:
        top = _git(["rev-parse", "--show-toplevel"], cwd)
        if top.returncode != 0:
            return unknown
        root = top.stdout.strip()
        head = _git(["rev-parse", "--verify", "HEAD"], root)
        status = _git(["status", "--porcelain=v1", "-z", f"--untracked-files={'all' if untracked else 'no'}",
                       "--", *paths], root)
    except (OSError, subprocess.SubprocessError):
        return unknown
    if head.returncode != 0 or status.returncode != 0:  # no commit yet, or a broken repository
        return unknown
    files, entries = set(), status.stdout.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        files.add(entry[3:])
        if entry[0] in "RC":  # "XY new\0old": the original name follows as its own entry
            if i < len(entries) and entries[i]:
                files.add(entries[i])
            i += 1
    return {"commit": head.stdout.strip(), "dirty": bool(files), "dirty_files": sorted(files)}


def git_commit() -> str:
    """The code commit as one string, ``<sha>`` or ``<sha>-dirty`` (code paths only, see ``code_state``)."""
    s = code_state()
    return s["commit"] + ("-dirty" if s["dirty"] else "")


_RUN_STATE: dict | None = None


@contextlib.contextmanager
def provenance_run(state: dict):
    """Within this block every ``write_sidecar`` records ``state`` (a ``code_state()`` taken once, before any target
    ran, plus optional keys such as ``allow_dirty``) instead of asking git again. ``python -m paper`` uses it; outside
    it, ``write_sidecar`` determines the code state itself when it writes."""
    global _RUN_STATE
    previous, _RUN_STATE = _RUN_STATE, {**state, "commit_determined": "at the start of the python -m paper run"}
    try:
        yield _RUN_STATE
    finally:
        _RUN_STATE = previous


def current_provenance() -> dict:
    """The run's code state inside ``provenance_run``; otherwise ``code_state()`` now."""
    if _RUN_STATE is not None:
        return dict(_RUN_STATE)
    return {**code_state(), "commit_determined": "when the sidecar was written (not inside python -m paper)"}


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict:
    import matplotlib
    import scipy
    import torch

    import analytic_dpm

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "torch": torch.__version__, "matplotlib": matplotlib.__version__, "analytic_dpm": analytic_dpm.__version__}


def write_sidecar(path: pathlib.Path, config: dict, seeds=None, started: float | None = None) -> pathlib.Path:
    """Write ``<path>.json`` beside the output ``path``, which must already be written: the sidecar records its
    SHA-256, the code commit and whether the code was dirty (``current_provenance``), the configuration, seeds,
    package versions, device and wall time. Returns the sidecar's path."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"write_sidecar: the output {path} does not exist; write the output first, then its "
                                "sidecar (the sidecar records the output's SHA-256)")
    prov = current_provenance()
    meta = {
        "output": path.name,
        "sha256": file_sha256(path),
        "commit": prov.pop("commit"),
        "dirty": prov.pop("dirty"),
        "dirty_files": prov.pop("dirty_files"),
        **prov,
        "config": config,
        "seeds": seeds,
        "versions": versions(),
        "device": f"cpu ({platform.processor() or platform.machine()})",
        "wall_time_s": None if started is None else round(time.perf_counter() - started, 3),
    }
    sidecar = path.with_suffix(path.suffix + ".json")
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return sidecar


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def config_hash(config: dict) -> str:
    """A short, stable hash of a JSON-serialisable configuration (keys sorted), for cache file names."""
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
    """Save a matplotlib figure as PNG and PDF (same stem); closes it.

    Both files are byte-reproducible, so that a sidecar's SHA-256 can be checked against a regeneration: Agg's PNG
    holds no date, and the PDF is written without its CreationDate (otherwise the time of the run, or
    $SOURCE_DATE_EPOCH)."""
    import matplotlib.pyplot as plt

    pdf = path_png.with_suffix(".pdf")
    fig.savefig(path_png, dpi=130)
    fig.savefig(pdf, metadata={"CreationDate": None})
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
