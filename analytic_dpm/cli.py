"""Command line: ``python -m analytic_dpm <command>`` (also installed as ``analytic-dpm``).

Sub-commands map one-to-one onto library functions:

* ``demo``        the main job on the built-in toy data (see :mod:`analytic_dpm.demo`)
* ``trajectory``  even_trajectory / quadratic_trajectory / ddim_stride_trajectory
* ``variances``   reverse_variances along a trajectory, with the bounds, as a table
* ``images``      pipeline.run_image_experiment: train, Γ, bounds, samples and FD-LeNet on digits / Fashion-MNIST
* ``check-variances``  testing.check_variance_file: variances from a file against Theorem 2's bounds (exit 1 if outside)
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .schedules import Schedule
from .trajectories import ddim_stride_trajectory, even_trajectory, quadratic_trajectory
from .variance import METHODS, reverse_variances

TRAJECTORIES = {"even": even_trajectory, "quadratic": quadratic_trajectory, "ddim-stride": ddim_stride_trajectory}


def _schedule(args) -> Schedule:
    return Schedule.linear(args.N) if args.schedule == "linear" else Schedule.cosine(args.N)


def _add_schedule_args(p):
    p.add_argument("--schedule", choices=["linear", "cosine"], default="linear", help="noise schedule (default linear)")
    p.add_argument("--N", type=int, default=1000, help="number of diffusion steps (default 1000)")
    p.add_argument("--K", type=int, default=10, help="number of sampling steps (default 10)")
    p.add_argument("--trajectory", choices=list(TRAJECTORIES), default="even", help="trajectory type (default even)")


def format_variance_table(schedule: Schedule, trajectory, gamma=None, data_range=(-1.0, 1.0), eta: float = 0.0) -> str:
    """A text table of the five methods' σ² per transition with Theorem 2's bounds (DDPM and DDIM families)."""
    res = {}
    for m in METHODS:
        if m.startswith("analytic") and gamma is None:
            continue
        res[m] = reverse_variances(schedule, trajectory, m, gamma=gamma, eta=eta if "ddim" in m else 0.0,
                                   data_range=data_range)
    ref = res["ddpm-small"]
    refi = res["ddim"]
    cols = ["k", "s", "t", "Γ_t", "LB ddpm=β̃", "UB ddpm", "ddpm-large β", "analytic-ddpm", "LB ddim", "UB ddim",
            "analytic-ddim"]
    rows = []
    for k in range(ref.K):
        a = res.get("analytic-ddpm")
        ai = res.get("analytic-ddim")

        def mark(v, i):
            return "—" if v is None else f"{v.sigma_sq[i]:.4e}" + ("*" if v.clipped[i] else " ")

        rows.append([
            str(k + 1), str(ref.s[k]), str(ref.t[k]),
            "—" if a is None else f"{a.gamma[k]:.4f}",
            f"{ref.lower[k]:.4e}", f"{ref.upper[k]:.4e}", f"{res['ddpm-large'].sigma_sq[k]:.4e}", mark(a, k),
            f"{refi.lower[k]:.4e}", f"{refi.upper[k]:.4e}", mark(ai, k),
        ])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(x.rjust(w) for x, w in zip(r, widths)) for r in rows]
    out.append("(* = the analytic estimate was clipped to Theorem 2's bounds; β̃ is also the ddpm-small baseline, "
               f"0 = η²β̃ the ddim baseline with η = {eta:g})")
    return "\n".join(out)


def cmd_trajectory(args) -> int:
    tr = TRAJECTORIES[args.trajectory](args.N, args.K)
    print(" ".join(str(int(x)) for x in tr))
    return 0


def cmd_variances(args) -> int:
    sched = _schedule(args)
    tr = TRAJECTORIES[args.trajectory](args.N, args.K)
    gamma = None
    if args.gamma:
        from .gamma import GammaEstimate

        gamma = GammaEstimate.load(args.gamma).gamma
    data_range = None if args.unbounded else (args.data_min, args.data_max)
    print(f"{sched}, {args.trajectory} trajectory, K = {args.K}")
    print(format_variance_table(sched, tr, gamma=gamma, data_range=data_range, eta=args.eta))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(out_dir=args.out, fast=args.fast)


def cmd_images(args) -> int:
    from .pipeline import run_image_experiment

    run_image_experiment(args.preset, out_dir=args.out, device=args.device)
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

    p = sub.add_parser("trajectory", help="print a trajectory [0, τ_1, …, τ_K]")
    _add_schedule_args(p)
    p.set_defaults(func=cmd_trajectory)

    p = sub.add_parser("variances", help="reverse variances and Theorem 2 bounds along a trajectory")
    _add_schedule_args(p)
    p.add_argument("--gamma", help="a Γ file written by estimate_gamma(...).save(path) (enables analytic methods)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η (default 0)")
    p.add_argument("--data-min", type=float, default=-1.0)
    p.add_argument("--data-max", type=float, default=1.0)
    p.add_argument("--unbounded", action="store_true", help="no data range: eq. (11) bound only")
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
    except (ValueError, TypeError) as exc:  # clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
