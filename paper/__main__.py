"""python -m paper [targets ...] [--fast] [--out DIR] [--list]"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time

TARGETS = {
    "table7": ("paper.table7", "Table 7: Theorem 2 bounds and the σ_2 threshold (exact, no network)"),
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
            print(f"{name:12s} {doc}")
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
