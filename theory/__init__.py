"""Symbolic derivations of Analytic-DPM's results (sympy), independent of ``analytic_dpm``.

    python -m theory            # print every identity, how it was checked, and its derivation steps
    python -m theory --markdown out.md
"""

from .derivations import IDENTITIES, Identity, check, lambdified

__all__ = ["IDENTITIES", "Identity", "check", "lambdified"]
