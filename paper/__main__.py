"""python -m paper [targets ...] [--fast] [--out DIR] [--list]"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time

TARGETS = {
    "table7": ("paper.table7", "Table 7: Theorem 2 bounds and the σ_2 threshold (exact, no network)"),
    "fig1": ("paper.fig1", "Figure 1/2 analogue: σ² against n and the bound terms per timestep (toy Gaussian, exact)"),
    "table1": ("paper.table1", "Table 1 analogue: exact bound in bits/dim, ET and OT (toy Gaussian)"),
    "table2": ("paper.table2", "Table 2 analogue: exact Fréchet distance, five methods, ET and OT (toy Gaussian)"),
    "fig_gamma_M": ("paper.fig_gamma_M", "Monte Carlo Γ̂ against M versus the exact Γ (toy Gaussian)"),
    "table5": ("paper.table5", "Table 5 analogue: bound and FD at K = 10 with Γ̂ from M samples, 5 seeds"),
    "table6": ("paper.table6", "Table 6 analogue: analytic-DDPM with Γ̂ from M = 10 against DDPM, K = 10…400"),
    "fig_bounds": ("paper.fig_bounds", "Figures 7 and 9 analogue: Theorem 2 bounds against n; how often σ̂² is clipped"),
    "fig_et_ot": ("paper.fig_et_ot", "Figure 13 analogue: ET against OT (bound and FD against K, the OT timesteps)"),
    "residual": ("paper.residual", "the network's actual mean: residual variance, direct 1 − Γ̂ and R̂, OT under "
                 "Monte Carlo noise (toy Gaussian, exact)"),
    "continuous": ("paper.continuous", "continuous time (VP SDE): the cost of interpolating Γ between grid points "
                   "(App. E.1), exact on the toy Gaussian"),
    "extended": ("paper.extended", "extended Analytic-DPM: SN-DPM / NPR-DPM heads on the committed image networks, "
                 "bound and FD against the scalar variances"),
    "images": ("paper.images", "digits image experiment (fast: skipped unless ADPM_PAPER_IMAGES=1)"),
    "images-fashion": ("paper.images_fashion", "Fashion-MNIST image experiment (needs dataset-fashion-mnist)"),
    "cifar10": ("paper.cifar10", "Tables 1-2, CIFAR10 rows, from Bao et al.'s checkpoints (user files, GPU; lists "
                "what is missing)"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paper", description="Regenerate the paper's figures and tables.")
    ap.add_argument("targets", nargs="*", help="targets to build (default: all)")
    ap.add_argument("--fast", action="store_true", help="toy sizes, for CI")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "out"), help="output directory")
    ap.add_argument("--list", action="store_true", help="list the targets and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, (_, doc) in TARGETS.items():
            print(f"{name:15s} {doc}")
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)} (see --list)")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.targets or list(TARGETS):
        t0 = time.perf_counter()
        module = importlib.import_module(TARGETS[name][0])
        paths = module.run(out, fast=args.fast)
        print(f"[{name}] {time.perf_counter() - t0:.1f}s -> " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
