"""python -m paper [targets ...] [--fast] [--out DIR] [--allow-dirty] [--list]

Provenance: the code commit and whether the code (analytic_dpm/, theory/, paper/*.py; see ``_common.CODE_PATHS``) is
modified are determined once, before any target runs, and every sidecar of the run records them with the SHA-256 of
its output. Writing into the committed output directory ``paper/full/`` from a dirty (or unknown) code tree is
refused (exit code 2) unless ``--allow-dirty`` is given; elsewhere a dirty tree is only recorded in the sidecars.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time

from . import _common

# The committed outputs: sidecars written here must describe a commit (tests monkeypatch this).
COMMITTED_OUT = pathlib.Path(__file__).resolve().parent / "full"

TARGETS = {
    "table7": ("paper.table7", "Table 7: Theorem 2 bounds and the σ_2 threshold (exact, no network)"),
    "fig1": ("paper.fig1", "Figure 1/2 analogue: σ² against n and the bound terms per timestep (toy Gaussian, exact)"),
    "table1": ("paper.table1", "Table 1 analogue: exact bound in bits/dim, ET and OT (toy Gaussian)"),
    "table2": ("paper.table2", "Table 2 analogue: exact Fréchet distance, five methods, ET and OT (toy Gaussian)"),
    "fig_gamma_M": ("paper.fig_gamma_M", "Monte Carlo Γ̂ against M versus the exact Γ (toy Gaussian)"),
    "table5": ("paper.table5", "Table 5 analogue: bound and FD at K = 10 with Γ̂ from M samples, 20 seeds, mean ± "
               "standard error and the O(1/M) rate of the bias"),
    "table6": ("paper.table6", "Table 6 analogue: analytic-DDPM with Γ̂ from M = 10 against DDPM, K = 10…400"),
    "fig_bounds": ("paper.fig_bounds", "Figures 7 and 9 analogue: Theorem 2 bounds against n; how often σ̂² is clipped"),
    "fig_et_ot": ("paper.fig_et_ot", "Figure 13 analogue: ET against OT (bound and FD against K, the OT timesteps)"),
    "table3": ("paper.table3", "Table 3 analogue: least K to reach a target exact FD, quadratic and even trajectories "
               "(toy Gaussian)"),
    "table8": ("paper.table8", "Table 8 analogue: exact bound on the cosine schedule, N = 4000, ET, d = 12288 (toy "
               "Gaussian)"),
    "table9": ("paper.table9", "Table 9 analogue: exact FD with the DDIM-style stride trajectory, K = 10…1000 (toy "
               "Gaussian)"),
    "table10": ("paper.table10", "Table 10 analogue: CPU time to generate 10 toy samples, NFE and exact FD (not the "
                "paper's GPU models)"),
    "fig_sigma2_clip": ("paper.fig_sigma2_clip", "Figures 10-12 analogue: exact FD with and without the σ_2 pixel "
                        "clip against K (toy Gaussian)"),
    "ve_process": ("paper.ve_process", "VE process beside VP: σ*² rescaled by 1 + σ_s², checked exactly on the toy "
                   "Gaussian"),
    "ot_decoder": ("paper.ot_decoder", "why the bound-matrix OT is not monotone in K: the jump to the decoder "
                   "(committed Fashion-MNIST network; fast: digits)"),
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
    ap.add_argument("--allow-dirty", action="store_true",
                    help=f"write into the committed directory {COMMITTED_OUT.name}/ although the code is modified "
                         "(every sidecar then says dirty)")
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
    committed = is_committed_out(out)
    state = _common.code_state()  # once, before any target is imported or run
    if state["dirty"] is not False:
        why = _describe_dirty(state)
        if committed and not args.allow_dirty:
            print(f"python -m paper: refusing to write into the committed output directory {out}: {why}. Commit the "
                  "code first (the sidecars then record that commit), write elsewhere with --out, or pass "
                  "--allow-dirty to write anyway with every sidecar marked dirty.", file=sys.stderr)
            return 2
        if committed:
            print(_banner(f"WARNING: --allow-dirty: writing into the committed directory {out} from a code tree "
                          f"that does not match commit {state['commit']}: {why}. Every sidecar records dirty = "
                          f"{state['dirty']} and the files; these outputs are not reproducible from a commit."),
                  file=sys.stderr)
        else:
            print(f"python -m paper: note: {why}; the sidecars record it (dirty = {state['dirty']}).", file=sys.stderr)
    extra = {"allow_dirty": True} if committed and args.allow_dirty else {}
    out.mkdir(parents=True, exist_ok=True)
    with _common.provenance_run({**state, **extra}):
        for name in args.targets or list(TARGETS):
            t0 = time.perf_counter()
            module = importlib.import_module(TARGETS[name][0])
            paths = module.run(out, fast=args.fast)
            print(f"[{name}] {time.perf_counter() - t0:.1f}s -> " + ", ".join(str(p) for p in paths))
    after = _common.code_state()
    if {k: after[k] for k in ("commit", "dirty_files")} != {k: state[k] for k in ("commit", "dirty_files")}:
        msg = (f"the code changed while the targets ran (at the start: commit {state['commit']}, modified "
               f"{state['dirty_files']}; now: commit {after['commit']}, modified {after['dirty_files']}); the "
               "sidecars record the start")
        if committed and not args.allow_dirty:
            print(_banner(f"ERROR: {msg}. Regenerate {out} from a tree that stays unchanged."), file=sys.stderr)
            return 2
        print(_banner(f"WARNING: {msg}."), file=sys.stderr)
    return 0


def is_committed_out(out) -> bool:
    """Whether ``out`` is the committed output directory ``COMMITTED_OUT`` or lies inside it."""
    out, committed = pathlib.Path(out).resolve(), pathlib.Path(COMMITTED_OUT).resolve()
    return out == committed or committed in out.parents


def _describe_dirty(state: dict) -> str:
    if state["dirty"] is None:
        return "the code commit cannot be determined (git is missing or this is not a git checkout)"
    files = state["dirty_files"]
    shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
    return f"the code differs from commit {state['commit'][:12]} in {len(files)} file(s): {shown}"


def _banner(text: str) -> str:
    bar = "!" * 100
    return f"{bar}\n{text}\n{bar}"


if __name__ == "__main__":
    sys.exit(main())
