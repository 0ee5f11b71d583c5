"""Analytic-DPM's results derived symbolically with sympy, independently of ``analytic_dpm``.

    import theory
    res = theory.get("theorem1")              # a registry entry: paper, identities, expressions, links
    theory.check(res.identity("theorem1-variance"))   # prove it and spot-check it
    res.expression("sigma_sq_opt").mp(ab_s, ab_t, lam2, gamma)   # evaluate with mpmath

    python -m theory [--markdown out.md]     # every derivation, step by step

Modules: ``symbols`` (notation, definitions, positive parametrisation), ``core`` (identities, verification),
``forward``, ``moments``, ``theorems``, ``continuous`` (the derivations), ``registry`` (the links), ``render``.
This package never imports ``analytic_dpm``: the tests import both and check that they agree.
"""

from .core import Expression, Identity, Result, Step, Verdict, check, prove_equal
from .registry import IDENTITIES, NOTEBOOKS_REQUIRED, RESULTS, get, identity, table

__all__ = [
    "Expression", "Identity", "Result", "Step", "Verdict", "check", "prove_equal",
    "IDENTITIES", "NOTEBOOKS_REQUIRED", "RESULTS", "get", "identity", "table",
]
