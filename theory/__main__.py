"""Print each identity with its derivation steps and the way it was verified."""

import argparse
import sys

import sympy as sp

from .derivations import IDENTITIES, check


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m theory", description=__doc__)
    ap.add_argument("--markdown", metavar="PATH", help="also write the derivations as Markdown with LaTeX")
    args = ap.parse_args(argv)
    md = ["# Analytic-DPM identities, checked with sympy\n"]
    for ident in IDENTITIES:
        how = check(ident)
        print(f"[{how:8s}] {ident.id}  ({ident.paper})")
        print(f"           {ident.statement}")
        for step in ident.steps:
            print(f"             · {step}")
        md.append(f"## {ident.id}\n\n*{ident.paper}* — verified {how}ally.\n\n{ident.statement}\n")
        md.append(f"$$ {sp.latex(ident.lhs)} = {sp.latex(ident.rhs)} $$\n")
        md.extend(f"- {s}\n" for s in ident.steps)
        md.append("\n")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.writelines(md)
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
