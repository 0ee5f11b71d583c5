"""Command line: ``python -m analytic_dpm <command>`` (also installed as ``analytic-dpm``).

Sub-commands map one-to-one onto library functions:

* ``demo``        the main job on the built-in toy data (see :mod:`analytic_dpm.demo`)
* ``trajectory``  even_trajectory / quadratic_trajectory / ddim_stride_trajectory, or ``--trajectory optimal``:
  optimal_trajectory from a ``--gamma`` file (a saved GammaEstimate), on the field ``--statistic`` names: ``gamma``
  (Γ̂, Theorem 3, the default), ``one_minus_gamma`` (the directly estimated 1 − Γ̂) or ``residual`` (R̂, the OT for
  the network's own mean)
* ``variances``   reverse_variances along a trajectory, with the bounds, as a table: the baselines, the analytic
  methods when ``--gamma`` is given, and the residual methods ('residual-ddpm', 'residual-ddim', σ² = λ² + g²R_t)
  when that file also carries R̂ (every estimate_gamma result does; files saved before it existed do not)
* ``images``      pipeline.run_image_experiment: train, Γ, bounds, samples and FD-LeNet on digits / Fashion-MNIST
* ``extended``    covariance_experiment.run_covariance_experiment: SN-DPM / NPR-DPM heads on a finished ``images``
  run's network, their bounds and FD-LeNet against the scalar methods (resumable)
* ``check-variances``  testing.check_variance_file: variances from a file against Theorem 2's bounds (exit 1 if outside)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .schedules import Schedule
from .trajectories import ddim_stride_trajectory, even_trajectory, quadratic_trajectory
from .variance import METHODS, RESIDUAL_METHODS, reverse_variances

TRAJECTORIES = {"even": even_trajectory, "quadratic": quadratic_trajectory, "ddim-stride": ddim_stride_trajectory}
#: the fields of a saved GammaEstimate that ``trajectory --trajectory optimal --statistic ...`` can use
STATISTICS = ("gamma", "one_minus_gamma", "residual")
_STAT_TEXT = {"gamma": "Γ̂ (Theorem 3)", "one_minus_gamma": "the directly estimated 1 − Γ̂",
              "residual": "the residual R̂ = E‖ε − ε̂‖²/d of the network's own mean"}


def _schedule(args) -> Schedule:
    if args.schedule == "vpsde":  # score_sde's VP SDE discretised at t_n = n/N (the extended code's vpsde_1000)
        return Schedule.vpsde(args.N)
    return Schedule.linear(args.N) if args.schedule == "linear" else Schedule.cosine(args.N)


def _add_schedule_args(p, extra_trajectories=()):
    p.add_argument("--schedule", choices=["linear", "cosine", "vpsde"], default="linear",
                   help="noise schedule (default linear; vpsde: the VP SDE β_min = 0.1, β_max = 20 at t_n = n/N)")
    p.add_argument("--N", type=int, default=1000, help="number of diffusion steps (default 1000)")
    p.add_argument("--K", type=int, default=10, help="number of sampling steps (default 10)")
    p.add_argument("--trajectory", choices=[*TRAJECTORIES, *extra_trajectories], default="even",
                   help="trajectory type (default even)" + ("; optimal: the exact DP on the --gamma file's "
                                                            "--statistic" if "optimal" in extra_trajectories else ""))


def _add_data_range_args(p):
    p.add_argument("--data-min", type=float, default=-1.0)
    p.add_argument("--data-max", type=float, default=1.0)
    p.add_argument("--unbounded", action="store_true", help="no data range: eq. (11) bound only")


def _data_range(args):
    return None if args.unbounded else (args.data_min, args.data_max)


def load_estimate(path, N: int):
    """The :class:`~analytic_dpm.gamma.GammaEstimate` saved at ``path``, checked to belong to a schedule with N steps
    (ValueError with the fix otherwise)."""
    from .gamma import GammaEstimate

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--gamma file {str(p)!r} does not exist (or is not a file); write one with "
                         "estimate_gamma(eps_model, schedule, data).save(path).")
    est = GammaEstimate.load(p)
    if est.N != N:
        raise ValueError(f"--gamma file {str(p)!r} belongs to a schedule with N = {est.N}, but --N is {N}; pass "
                         f"--N {est.N} (and the --schedule it was estimated with).")
    return est


def estimate_statistic(est, statistic: str, path="the --gamma file") -> np.ndarray:
    """The field ``statistic`` ('gamma', 'one_minus_gamma' or 'residual') of a GammaEstimate, shape (N+1,);
    ValueError naming the file and the fix when it lacks the field (a file saved before the field existed)."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}; got {statistic!r}.")
    value = getattr(est, statistic)
    if value is None:
        raise ValueError(
            f"{path} has no {statistic!r} field: it was saved by an older version of analytic_dpm (or built from Γ "
            f"alone), before estimate_gamma also returned {_STAT_TEXT[statistic]}. Rerun estimate_gamma(...) (same "
            "network evaluations, all three statistics) and save it again, or use --statistic gamma."
        )
    return np.asarray(value, dtype=np.float64)


def format_variance_table(schedule: Schedule, trajectory, gamma=None, data_range=(-1.0, 1.0), eta: float = 0.0,
                          *, residual=None) -> str:
    """A text table of the methods' σ² per transition with Theorem 2's bounds (DDPM and DDIM families).

    The baselines always; the analytic methods when ``gamma`` (Γ, shape (N+1,)) is given; the residual methods
    ('residual-ddpm', 'residual-ddim', σ² = λ² + g²R_t, never clipped) when ``residual`` (R, shape (N+1,)) is given,
    marked ``!`` where they leave Theorem 2's interval (legitimate: the bounds hold for the optimal mean only).
    """
    res = {}
    for m in METHODS:
        if m.startswith("analytic") and gamma is None:
            continue
        res[m] = reverse_variances(schedule, trajectory, m, gamma=gamma, eta=eta if "ddim" in m else 0.0,
                                   data_range=data_range)
    if residual is not None:
        for m in RESIDUAL_METHODS:
            res[m] = reverse_variances(schedule, trajectory, m, residual=residual, eta=eta if "ddim" in m else 0.0,
                                       data_range=data_range)
    ref = res["ddpm-small"]
    refi = res["ddim"]
    a, ai = res.get("analytic-ddpm"), res.get("analytic-ddim")
    r, ri = res.get("residual-ddpm"), res.get("residual-ddim")
    cols = ["k", "s", "t", "Γ_t", "LB ddpm=β̃", "UB ddpm", "ddpm-large β", "analytic-ddpm"]
    cols += ["R_t", "residual-ddpm"] if r is not None else []
    cols += ["LB ddim", "UB ddim", "analytic-ddim"] + (["residual-ddim"] if ri is not None else [])

    def mark(v, i):
        return "—" if v is None else f"{v.sigma_sq[i]:.4e}" + ("*" if v.clipped[i] else " ")

    def mark_res(v, i):
        return f"{v.sigma_sq[i]:.4e}" + ("!" if v.outside_bounds[i] else " ")

    rows = []
    for k in range(ref.K):
        row = [
            str(k + 1), str(ref.s[k]), str(ref.t[k]),
            "—" if a is None else f"{a.gamma[k]:.4f}",
            f"{ref.lower[k]:.4e}", f"{ref.upper[k]:.4e}", f"{res['ddpm-large'].sigma_sq[k]:.4e}", mark(a, k),
        ]
        if r is not None:
            row += [f"{r.residual[k]:.4e}", mark_res(r, k)]
        row += [f"{refi.lower[k]:.4e}", f"{refi.upper[k]:.4e}", mark(ai, k)]
        if ri is not None:
            row.append(mark_res(ri, k))
        rows.append(row)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in rows]
    out.append("(* = the analytic estimate was clipped to Theorem 2's bounds; β̃ is also the ddpm-small baseline, "
               f"0 = η²β̃ the ddim baseline with η = {eta:g})")
    if r is not None:
        out.append("(! = the residual variance λ² + g²R_t lies outside Theorem 2's bounds, which hold for the optimal "
                   "mean only: reported, never clipped)")
    return "\n".join(out)


def _trajectory(args):
    """The trajectory the options describe (``optimal``: from the --gamma file's --statistic field)."""
    statistic = getattr(args, "statistic", None)
    if args.trajectory != "optimal":
        if statistic is not None:
            raise ValueError(f"--statistic {statistic} chooses the field of the --gamma file that --trajectory "
                             f"optimal uses; with --trajectory {args.trajectory} it has no effect. Pass --trajectory "
                             "optimal, or leave --statistic out.")
        return TRAJECTORIES[args.trajectory](args.N, args.K)
    if not args.gamma:
        raise ValueError("--trajectory optimal needs --gamma FILE, a GammaEstimate saved with "
                         "estimate_gamma(eps_model, schedule, data).save(path).")
    from .optimal_trajectory import optimal_trajectory

    sched = _schedule(args)
    statistic = statistic or "gamma"
    value = estimate_statistic(load_estimate(args.gamma, sched.N), statistic, f"--gamma file {args.gamma!r}")
    kw = {"gamma": value} if statistic == "gamma" else {"gamma": None, statistic: value}
    if statistic != "residual":  # Theorem 2's clip of Γ (or 1 − Γ) uses the data range; R is never clipped
        kw["data_range"] = _data_range(args)
    return np.asarray(optimal_trajectory(sched, K=args.K, progress=False, **kw))


def cmd_trajectory(args) -> int:
    if args.gamma and args.trajectory != "optimal":
        raise ValueError(f"--gamma is used by --trajectory optimal only; got --trajectory {args.trajectory}. Pass "
                         "--trajectory optimal, or leave --gamma out.")
    tr = _trajectory(args)
    print(" ".join(str(int(x)) for x in tr))
    return 0


def cmd_variances(args) -> int:
    sched = _schedule(args)
    tr = TRAJECTORIES[args.trajectory](args.N, args.K)
    gamma = residual = None
    note = None
    if args.gamma:
        est = load_estimate(args.gamma, sched.N)
        gamma = est.gamma
        residual = est.residual
        if residual is None:
            note = (f"(the --gamma file {args.gamma!r} has no residual R̂: saved by an older version of analytic_dpm; "
                    "rerun estimate_gamma for the residual-ddpm/residual-ddim columns)")
    print(f"{sched}, {args.trajectory} trajectory, K = {args.K}")
    print(format_variance_table(sched, tr, gamma=gamma, data_range=_data_range(args), eta=args.eta,
                                residual=residual))
    if note:
        print(note)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(out_dir=args.out, fast=args.fast)


def cmd_images(args) -> int:
    from .pipeline import run_image_experiment

    run_image_experiment(args.preset, out_dir=args.out, device=args.device)
    return 0


def cmd_extended(args) -> int:
    from .covariance_experiment import run_covariance_experiment

    run_covariance_experiment(args.preset, base_dir=args.base, out_dir=args.out, device=args.device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="analytic-dpm", description="Analytic-DPM toolkit")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="tables and figures on the built-in toy data")
    p.add_argument("--out", default="demo_out", help="directory for figures (default demo_out/)")
    p.add_argument("--fast", action="store_true", help="fewer K values and samples (for tests)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("images", help="image experiment: train, Γ, bounds (ET/OT), samples, FD-LeNet (resumable)")
    p.add_argument("--preset", default="digits", help="digits-ci, digits, fashion-mnist-cpu or fashion-mnist (default digits)")
    p.add_argument("--out", default="image_out", help="output directory (default image_out/); rerun to resume")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("extended", help="extended Analytic-DPM: train SN/NPR heads on a finished `images` run, then "
                                        "bounds and FD-LeNet against the scalar methods (resumable)")
    p.add_argument("--preset", default="digits", help="digits, fashion-mnist-cpu or digits-ci (default digits)")
    p.add_argument("--base", default=None, help="the finished `images` run (model.pt, gamma.npz); default "
                                                "results/<preset>")
    p.add_argument("--out", default="extended_out", help="output directory (default extended_out/); rerun to resume")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(func=cmd_extended)

    p = sub.add_parser("trajectory", help="print a trajectory [0, τ_1, …, τ_K] (optimal: from a --gamma file)")
    _add_schedule_args(p, extra_trajectories=("optimal",))
    p.add_argument("--gamma", help="a GammaEstimate file written by estimate_gamma(...).save(path), for --trajectory "
                                   "optimal")
    p.add_argument("--statistic", choices=list(STATISTICS), default=None,
                   help="the field of the --gamma file the optimal trajectory uses: gamma (Γ̂, Theorem 3; default), "
                        "one_minus_gamma (1 − Γ̂ estimated directly) or residual (R̂: the OT for the network's own "
                        "mean, never clipped)")
    _add_data_range_args(p)
    p.set_defaults(func=cmd_trajectory)

    p = sub.add_parser("variances", help="reverse variances and Theorem 2 bounds along a trajectory")
    _add_schedule_args(p)
    p.add_argument("--gamma", help="a GammaEstimate file written by estimate_gamma(...).save(path): enables the "
                                   "analytic methods (Γ̂) and, when it carries R̂, the residual methods")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η (default 0)")
    _add_data_range_args(p)
    p.set_defaults(func=cmd_variances)

    from .testing import check_variances as _cv

    p = sub.add_parser("check-variances", help="check per-step variances from a file against Theorem 2's bounds "
                                               "(exit 1 if some fall outside)",
                       description=_cv.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _cv.add_arguments(p)
    p.set_defaults(func=_cv.run)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:  # clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
