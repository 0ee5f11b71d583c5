"""The registry: every result of the paper that the project derives, with its links.

Each :class:`~theory.core.Result` names its place in the paper, its sympy identities (the derivation) and expressions
(the numbers), the ``analytic_dpm`` functions that compute the same quantities (dotted paths, resolved only by the
tests: ``theory`` never imports the library), the tests that compare the two, and the notebook that shows it.
``tests/test_theory_registry.py`` fails when any link is missing or stale.
"""

from __future__ import annotations

from . import continuous, forward, moments, theorems
from .core import Identity, Result

#: Switch on once the notebooks exist: then every result must name a notebook file that exists and mentions its id.
NOTEBOOKS_REQUIRED = False

RESULTS: tuple[Result, ...] = (
    forward.FORWARD,
    forward.POSTERIOR,
    moments.MOMENT_MATCHING,
    moments.LEMMA13,
    moments.TWEEDIE,
    theorems.THEOREM1,
    theorems.THEOREM2,
    theorems.COROLLARY2,
    theorems.COROLLARY3,
    theorems.THEOREM3,
    theorems.COROLLARY4,
    continuous.CONTINUOUS,
)

IDENTITIES: tuple[Identity, ...] = tuple(i for res in RESULTS for i in res.identities)


def get(result_id: str) -> Result:
    """The registry entry with this id."""
    for res in RESULTS:
        if res.id == result_id:
            return res
    raise KeyError(f"no result {result_id!r} in the registry; ids: {[r.id for r in RESULTS]}")


def identity(identity_id: str) -> Identity:
    """The identity with this id, from any result."""
    for ident in IDENTITIES:
        if ident.id == identity_id:
            return ident
    raise KeyError(f"no identity {identity_id!r}; ids: {[i.id for i in IDENTITIES]}")


def table() -> list[dict]:
    """One row per result: id, paper, functions, tests, notebook (for the README map and ``--list``)."""
    return [{"id": r.id, "paper": r.paper, "functions": list(r.functions), "tests": list(r.tests),
             "notebook": r.notebook} for r in RESULTS]
