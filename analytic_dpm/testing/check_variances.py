"""``check-variances``: check variances computed elsewhere against Theorem 2's bounds (P eqs. 11–12).

Given a schedule, a trajectory and a file of per-step variances (a diffusers scheduler's, a learned-variance model's
averaged over data, a handcrafted rule's), report which steps fall outside λ² ≤ σ² ≤ min(eq. 11, eq. 12) and by how
much, as a table or JSON, optionally with a plot::

    python -m analytic_dpm.testing check-variances --schedule linear --N 1000 --trajectory even:10 \\
        --variances sigma_sq.npy [--gamma gamma.npz] [--residual gamma.npz] [--data-range 1] [--eta 0.5] \\
        [--plot out.png] [--json]

(also ``python -m analytic_dpm check-variances …``). Exit status: 0 when every step is within the bounds, 1 when some
fall outside, 2 for bad input (unreadable file, wrong length, …).

Files (``.npy``, ``.npz``, ``.csv``, ``.txt``; never unpickled):

* one column of K values, σ² for the transitions (τ_{k−1}, τ_k), k = 1..K, in increasing t (``--descending``: in
  decreasing t, the order a sampling loop visits them);
* or two columns ``t, sigma_sq`` (a header line is allowed): matched to the trajectory's t; without ``--trajectory``
  the trajectory is [0] + the sorted t column. ``--zero-based`` says the t (and a ``--trajectory`` list or file)
  are 0-based (diffusers' timesteps 0..N−1, paper n = t + 1).
* ``.npz``: the array under ``--key``, else ``sigma_sq``/``variances`` (``gamma`` for ``--gamma``), else its only array.

``--trajectory``: ``even:K`` (the paper's ET), ``quadratic:K``, ``ddim-stride:K`` (diffusers' "leading" spacing),
``full`` (K = N), a comma list ``1,101,201,…`` (with or without the leading 0) or a file of timesteps.
``--gamma``: a file written by ``GammaEstimate.save`` or an array of Γ_n (shape (N+1,), or (N,) for n = 1..N); adds
Theorem 1's σ*² to the report for comparison.
``--residual``: a ``GammaEstimate.save`` file (its ``residual`` R̂_n = mean ‖ε − ε̂_n‖²/d; files saved before it existed
are refused with the fix) or an array of R_n (``.npz`` key ``residual``); adds the residual variance λ² + g²R_t, the
variance for the network's own mean (methods 'residual-ddpm'/'residual-ddim'), and notes the steps where it leaves
Theorem 2's bounds. That is information, not a failure: the bounds hold for the optimal mean only, so it does not
change the exit status. The same file may be given to ``--gamma`` and ``--residual``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..schedules import Schedule
from ..trajectories import ddim_stride_trajectory, even_trajectory, quadratic_trajectory, validate_trajectory
from .checkers import VarianceBoundsReport, variance_bounds_report

FILE_SUFFIXES = (".npy", ".npz", ".csv", ".txt")
DESCRIPTION = """\
Check per-step variances computed elsewhere against Theorem 2's bounds (P eqs. 11-12):
λ² <= σ² <= min(λ² + g², λ² + g² r² ᾱ_t/β̄_t), the second only with --data-range.
Reports which steps fall outside and by how much (table, or --json), optionally with --plot.
Exit status: 0 all steps within, 1 some outside, 2 bad input.

Files (.npy, .npz, .csv, .txt; never unpickled): one column of K values, σ² for the transitions
(τ_{k-1}, τ_k), k = 1..K, in increasing t (--descending: decreasing t); or two columns t, sigma_sq
(a header line is allowed), which also give the trajectory when --trajectory is left out.
--residual adds the residual variance λ² + g²R_t (network's own mean) and notes where it leaves
the bounds; that never changes the exit status (Theorem 2 holds for the optimal mean only)."""
_TRAJ_KINDS = {"even": even_trajectory, "quadratic": quadratic_trajectory, "ddim-stride": ddim_stride_trajectory}


# ---------------------------------------------------------------------------------------------------- reading files
def load_array(path, name: str = "variances", key: str | None = None,
               default_keys: tuple = ("sigma_sq", "variances")) -> np.ndarray:
    """A float64 array of 1 or 2 columns from ``.npy``/``.npz``/``.csv``/``.txt`` (``allow_pickle=False``).

    Text files: comma, semicolon or whitespace separated; lines starting with ``#`` and one non-numeric header line are
    skipped. Raises ValueError naming the file and what is wrong.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise ValueError(f"{name} file {str(p)!r} does not exist (or is not a file).")
    suffix = p.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ValueError(f"{name} file {str(p)!r} has suffix {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}.")
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                files = list(z.files)
                pick = key if key is not None else next((k for k in default_keys if k in files),
                                                         files[0] if len(files) == 1 else None)
                arr = None if pick not in files else z[pick]
        else:
            arr = _read_text(p, name)
    except _FileFormatError:
        raise
    except Exception as exc:  # corrupt file, pickled object array, undecodable text, …
        raise ValueError(f"cannot read {name} file {str(p)!r}: {type(exc).__name__}: {exc}") from None
    if arr is None:
        if key is not None:
            raise ValueError(f"{name} file {str(p)!r} has no array {key!r}; it holds {files}.")
        raise ValueError(f"{name} file {str(p)!r} holds arrays {files} and none named "
                         f"{' or '.join(map(repr, default_keys))}; pick one with --key.")
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} file {str(p)!r} does not hold numbers (dtype {np.asarray(arr).dtype}).") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 2) or arr.size == 0:
        raise ValueError(f"{name} file {str(p)!r} must hold one column of values or two columns (t, value); got an "
                         f"array of shape {arr.shape}.")
    return arr


class _FileFormatError(ValueError):
    """A text file whose content is not a table of numbers (the message says where)."""


def _read_text(p: Path, name: str) -> np.ndarray:
    rows = []
    header_seen = False
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [x for x in line.replace(",", " ").replace(";", " ").split() if x]
        try:
            rows.append([float(x) for x in parts])
        except ValueError:
            if rows or header_seen:
                raise _FileFormatError(f"{name} file {str(p)!r}, line {lineno}: not a number in {raw.strip()!r}.") \
                    from None
            header_seen = True  # one header line before the data
    if not rows:
        raise _FileFormatError(f"{name} file {str(p)!r} holds no numbers.")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise _FileFormatError(f"{name} file {str(p)!r}: rows have different numbers of columns {sorted(widths)}.")
    return np.array(rows, dtype=np.float64)


#: ``.npz`` keys tried for each statistic in a plain array file (a GammaEstimate file has them by name)
_STAT_KEYS = {"gamma": ("gamma", "ms_eps"), "one_minus_gamma": ("one_minus_gamma",), "residual": ("residual",)}
_STAT_MEANING = {"gamma": "Γ_n", "one_minus_gamma": "1 − Γ_n", "residual": "R_n = E‖ε − ε̂_n‖²/d"}


def load_gamma(path, N: int, key: str | None = None, statistic: str = "gamma") -> np.ndarray:
    """Γ, 1 − Γ or R (shape (N+1,), index 0 = 0) from a ``GammaEstimate.save`` file or an array of length N+1 or N.

    ``statistic``: 'gamma' (Γ̂, default), 'one_minus_gamma' (the directly estimated 1 − Γ̂) or 'residual' (R̂ of the
    network's own mean): the field of that name of a GammaEstimate file (ValueError when the file predates it), or the
    array under ``key`` / that name in an ``.npz``, or the only column of another file.
    """
    if statistic not in _STAT_KEYS:
        raise ValueError(f"statistic must be one of {tuple(_STAT_KEYS)}; got {statistic!r}.")
    p = Path(os.fspath(path))
    if p.suffix.lower() == ".npz" and p.is_file():
        with np.load(p, allow_pickle=False) as z:
            is_estimate = "format" in z.files and "config_json" in z.files
        if is_estimate:
            from ..gamma import GammaEstimate

            est = GammaEstimate.load(p)
            value = getattr(est, statistic)
            if value is None:
                raise ValueError(
                    f"{statistic} file {str(p)!r} is a GammaEstimate without {statistic!r}: it was saved by an older "
                    "version of analytic_dpm (or built from Γ alone). Rerun estimate_gamma(...), which returns Γ̂, "
                    "the direct 1 − Γ̂ and R̂ from the same network evaluations, and save it again."
                )
            g = np.asarray(value, dtype=np.float64)
            if g.shape != (N + 1,):
                raise ValueError(f"{statistic} file {str(p)!r} belongs to a schedule with N = {g.size - 1}; this check "
                                 f"uses N = {N}.")
            return g
    g = load_array(p, statistic, key=key, default_keys=_STAT_KEYS[statistic])
    if g.ndim != 1:
        raise ValueError(f"{statistic} file {str(p)!r} must hold one column {_STAT_MEANING[statistic]}; got shape "
                         f"{g.shape}.")
    if g.size == N:
        return np.concatenate([[0.0], g])
    if g.size != N + 1:
        raise ValueError(f"{statistic} file {str(p)!r} holds {g.size} values; expected N + 1 = {N + 1} (index 0 "
                         f"unused) or N = {N} (values for n = 1..N).")
    return g


def parse_trajectory(spec: str, N: int, zero_based: bool = False) -> np.ndarray:
    """A trajectory from ``even:K``, ``quadratic:K``, ``ddim-stride:K``, ``full``, a comma list or a file."""
    spec = str(spec).strip()
    kind, _, arg = spec.partition(":")
    if kind in _TRAJ_KINDS:
        try:
            K = int(arg)
        except ValueError:
            raise ValueError(f"--trajectory {spec!r}: expected {kind}:K with an integer K, e.g. {kind}:10.") from None
        return _TRAJ_KINDS[kind](N, K)
    if spec == "full":
        return np.arange(N + 1, dtype=np.int64)
    if Path(spec).suffix.lower() in FILE_SUFFIXES:
        vals = load_array(spec, "trajectory")
        if vals.ndim != 1:
            raise ValueError(f"trajectory file {spec!r} must hold one column of timesteps; got shape {vals.shape}.")
    else:
        try:
            vals = np.array([float(x) for x in spec.replace(" ", "").split(",") if x], dtype=np.float64)
        except ValueError:
            raise ValueError(
                f"--trajectory {spec!r} is not understood: use even:K, quadratic:K, ddim-stride:K, full, a comma list "
                f"of timesteps (1,101,201,…) or a file ({', '.join(FILE_SUFFIXES)}).") from None
    if vals.size == 0 or not np.all(vals == np.round(vals)):
        raise ValueError(f"--trajectory {spec!r} must list integer timesteps; got {vals.tolist()[:8]}.")
    ts = np.sort(vals.astype(np.int64)) + (1 if zero_based else 0)
    if ts[0] != 0:
        ts = np.concatenate([[0], ts])
    return validate_trajectory(ts, N)


def make_schedule(schedule: str = "linear", N: int = 1000, betas=None) -> Schedule:
    """``linear`` or ``cosine`` with N steps, or ``Schedule.from_betas`` of a file/array of β_1..β_N."""
    if betas is not None:
        b = load_array(betas, "betas") if isinstance(betas, (str, os.PathLike)) else np.asarray(betas, dtype=np.float64)
        if b.ndim != 1:
            raise ValueError(f"betas must be one column β_1..β_N; got shape {b.shape}.")
        return Schedule.from_betas(b, name="from betas file")
    if schedule == "linear":
        return Schedule.linear(N)
    if schedule == "cosine":
        return Schedule.cosine(N)
    raise ValueError(f"schedule must be 'linear' or 'cosine' (or pass betas=); got {schedule!r}.")


def _match_variances(arr: np.ndarray, trajectory, N: int, zero_based: bool, descending: bool, path) -> tuple:
    """(trajectory, σ² per transition) from a 1- or 2-column array."""
    if arr.ndim == 2:
        t_col, v = arr[:, 0], arr[:, 1]
        if not np.all(t_col == np.round(t_col)):
            raise ValueError(f"variances file {str(path)!r}: the first of two columns must hold integer timesteps t; "
                             f"got {t_col[:6].tolist()}.")
        t_col = t_col.astype(np.int64) + (1 if zero_based else 0)
        if np.unique(t_col).size != t_col.size:
            raise ValueError(f"variances file {str(path)!r}: timesteps repeat in the t column.")
        order = np.argsort(t_col)
        t_col, v = t_col[order], v[order]
        if trajectory is None:
            trajectory = validate_trajectory(np.concatenate([[0], t_col]) if t_col[0] != 0 else t_col, N)
        t_traj = np.asarray(trajectory)[1:]
        missing = np.setdiff1d(t_traj, t_col)
        if missing.size:
            raise ValueError(f"variances file {str(path)!r} has no variance for t = {missing[:8].tolist()} of the "
                             f"trajectory{' (t read as 0-based: --zero-based)' if zero_based else ''}.")
        return trajectory, v[np.searchsorted(t_col, t_traj)]
    if trajectory is None:
        raise ValueError(f"variances file {str(path)!r} holds one column, so --trajectory is needed to say which "
                         "transition each value belongs to (or write two columns t, sigma_sq).")
    K = len(trajectory) - 1
    if arr.size != K:
        hint = ""
        if arr.size in (N, N + 1):
            hint = (f" It has {arr.size} values, a per-timestep array: pick the trajectory's entries (sigma_sq[t]) or "
                    "write two columns t, sigma_sq.")
        raise ValueError(f"variances file {str(path)!r} holds {arr.size} values but the trajectory has K = {K} "
                         f"transitions; write one σ² per transition (τ_{{k−1}}, τ_k), k = 1..K.{hint}")
    return trajectory, (arr[::-1].copy() if descending else arr)


# ---------------------------------------------------------------------------------------------------- the check
def check_variance_file(variances, *, schedule: str | Schedule = "linear", N: int = 1000, betas=None,
                        trajectory=None, gamma=None, eta=None, data_range=None, rtol: float = 1e-6,
                        atol: float = 0.0, zero_based: bool = False, descending: bool = False,
                        key: str | None = None, plot=None, residual=None) -> VarianceBoundsReport:
    """The ``check-variances`` command as a function: read σ² (a path, or an array of K values / (K, 2) rows t, σ²),
    build the schedule and trajectory, compare with Theorem 2's bounds and optionally save a plot.

    ``schedule``: a :class:`Schedule`, or "linear"/"cosine" with ``N`` steps (``betas``: a file or array of β_1..β_N
    instead). ``trajectory``: an array [0, τ_1, …] or a spec string (see :func:`parse_trajectory`). ``gamma``: a path
    or (N+1,) array, for Theorem 1's σ*² in the report. ``residual``: a path (a GammaEstimate file, its ``residual``;
    or an array file of R_n), an (N+1,) array or a GammaEstimate, for the residual variance λ² + g²R_t in the report
    (``report.sigma_sq_residual``, ``report.residual_outside_bounds``; never part of ``report.ok``). Other arguments
    as in :func:`~analytic_dpm.testing.variance_bounds_report`. Returns the report (``report.ok``,
    ``report.violations()``).
    """
    sched = schedule if isinstance(schedule, Schedule) else make_schedule(schedule, N, betas)
    N = sched.N
    if isinstance(trajectory, str):
        trajectory = parse_trajectory(trajectory, N, zero_based=zero_based)
    elif trajectory is not None:
        trajectory = validate_trajectory(trajectory, N)
    if isinstance(variances, (str, os.PathLike)):
        path = variances
        arr = load_array(variances, "variances", key=key)
    else:
        path = "<array>"
        arr = np.asarray(variances, dtype=np.float64)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.reshape(-1)
    traj, sig = _match_variances(arr, trajectory, N, zero_based, descending, path)
    g = None
    if gamma is not None:
        g = load_gamma(gamma, N, key=None) if isinstance(gamma, (str, os.PathLike)) else np.asarray(gamma, np.float64)
    if isinstance(residual, (str, os.PathLike)):
        residual = load_gamma(residual, N, statistic="residual")
    rep = variance_bounds_report(sched, traj, sig, eta=eta, data_range=data_range, gamma=g, rtol=rtol, atol=atol,
                                 residual=residual)
    if plot is not None:
        try:
            plot_variance_bounds(rep, path=plot)
        except OSError as exc:
            raise ValueError(f"cannot write the plot to {os.fspath(plot)!r}: {exc}") from None
    return rep


def plot_variance_bounds(report: VarianceBoundsReport, path=None, ax=None, title: str | None = None):
    """σ² against t with Theorem 2's bounds on log axes; steps outside are marked in red. Draws on ``ax`` if given
    (returns its figure), else on a new figure (no pyplot: safe in scripts); saves it to ``path`` if given."""
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.5, 4.5))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    t = report.t
    pos = t > 0
    ax.plot(t, report.upper_eq11, "-", color="C0", label="upper bound, eq. 11 (λ² + g²)")
    if np.isfinite(report.upper_eq12).any():
        ax.plot(t, report.upper_eq12, "--", color="C2", label="upper bound, eq. 12 (bounded data)")
    lower = np.where(report.lower > 0, report.lower, np.nan)
    ax.plot(t, lower, "-", color="C1", label="lower bound λ²")
    if (report.lower > 0).any():  # on log axes the band is drawn where λ² > 0 (λ² = 0 at s = 0 and for DDIM η = 0)
        ax.fill_between(t, lower, report.upper, where=report.lower > 0, color="C0", alpha=0.12, lw=0,
                        label="admissible σ² (Theorem 2)")
    if report.sigma_sq_opt is not None:
        ax.plot(t, report.sigma_sq_opt, ":", color="k", label="σ*² from Γ (Theorem 1)")
    if report.sigma_sq_residual is not None:
        ax.plot(t, report.sigma_sq_residual, "-.", color="C3", label="λ² + g²R (network's own mean)")
    ok = ~report.outside & pos
    ax.plot(t[ok], report.sigma_sq[ok], "o", ms=4, color="C4", label="σ² given, within")
    bad = report.outside & np.isfinite(report.sigma_sq)
    if bad.any():
        ax.plot(t[bad], report.sigma_sq[bad], "x", ms=8, mew=2, color="red", label="σ² given, outside")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$t$ of the transition $(s, t) = (\tau_{k-1}, \tau_k)$")
    ax.set_ylabel(r"$\sigma^2_{s|t}$")
    n_out = int(report.outside.sum())
    ax.set_title(title or f"{report.schedule.name}, K = {report.K}: {n_out} step(s) outside Theorem 2's bounds")
    ax.legend(fontsize=8)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=120, bbox_inches="tight")
    return fig


# ---------------------------------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``check-variances`` options (shared by ``python -m analytic_dpm.testing`` and ``python -m analytic_dpm``)."""
    p.add_argument("--variances", required=True,
                   help="file of σ² per transition (.npy/.npz/.csv/.txt): K values in increasing t, or columns t, σ²")
    p.add_argument("--schedule", choices=["linear", "cosine"], default="linear", help="noise schedule (default linear)")
    p.add_argument("--N", type=int, default=1000, help="number of diffusion steps (default 1000)")
    p.add_argument("--betas", help="file of β_1..β_N: a custom schedule instead of --schedule/--N")
    p.add_argument("--trajectory", help="even:K, quadratic:K, ddim-stride:K, full, a comma list of timesteps or a "
                                        "file (default: the t column of a two-column variances file)")
    p.add_argument("--gamma", help="Γ file (GammaEstimate.save, or N+1 / N values): adds Theorem 1's σ*² to the report")
    p.add_argument("--residual", help="R file (GammaEstimate.save with its residual, or N+1 / N values of "
                                      "R_n = E‖ε − ε̂_n‖²/d): adds the residual variance λ² + g²R_t (network's own "
                                      "mean) and notes where it leaves the bounds (exit status unchanged)")
    p.add_argument("--eta", type=float, default=None, help="DDIM family with λ² = η²β̃ (default: DDPM family, λ² = β̃)")
    p.add_argument("--data-range", type=float, nargs="+", metavar="R",
                   help="bounded data (enables eq. 12): one number r for [−r, r], or two numbers a b")
    p.add_argument("--rtol", type=float, default=1e-6,
                   help="relative tolerance (default 1e-6; use ~1e-3 for variances computed in float32)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")
    p.add_argument("--zero-based", action="store_true",
                   help="timesteps in the files and in a --trajectory list are 0-based (diffusers' 0..N−1; "
                        "paper n = t + 1)")
    p.add_argument("--descending", action="store_true", help="a one-column file lists σ² in decreasing t")
    p.add_argument("--key", help="array name inside an .npz variances file")
    p.add_argument("--plot", help="save a plot of σ² and the bounds to this file (e.g. out.png)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--all", action="store_true", help="print every step, not only those outside the bounds")
    return p


def run(args) -> int:
    """Run the check from parsed arguments; print the report; return 0 (all within), 1 (some outside)."""
    dr = args.data_range
    if dr is not None:
        if len(dr) not in (1, 2):
            raise ValueError(f"--data-range takes one number r (data in [−r, r]) or two numbers a b; got {dr}.")
        dr = dr[0] if len(dr) == 1 else (dr[0], dr[1])
    rep = check_variance_file(
        args.variances, schedule=args.schedule, N=args.N, betas=args.betas, trajectory=args.trajectory,
        gamma=args.gamma, eta=args.eta, data_range=dr, rtol=args.rtol, atol=args.atol, zero_based=args.zero_based,
        descending=args.descending, key=args.key, plot=args.plot, residual=args.residual)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2, allow_nan=False, ensure_ascii=False))
    else:
        print(f"{rep.schedule}, trajectory {rep.trajectory.tolist() if rep.K <= 12 else f'with K = {rep.K}'}; "
              f"{rep.describe_family()}")
        if args.all:
            print(rep.format_table())
        print(rep.format_violations() if not rep.ok else f"OK: all {rep.K} steps lie within Theorem 2's bounds.")
        note = rep.format_residual_note()
        if note:
            print(note)
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0 if rep.ok else 1


def build_parser(prog: str = "python -m analytic_dpm.testing") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Property-testing tools for Analytic-DPM's theory")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-variances", help="check per-step variances from a file against Theorem 2's bounds",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    return ap


def main(argv=None) -> int:
    """Entry point of ``python -m analytic_dpm.testing``: exit 0 (within), 1 (outside), 2 (bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


__all__ = ["check_variance_file", "plot_variance_bounds", "load_array", "load_gamma", "parse_trajectory",
           "make_schedule", "add_arguments", "run", "build_parser", "main"]
