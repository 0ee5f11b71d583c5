"""The registry: every result of the paper that the project derives, with its links.

Each :class:`~theory.core.Result` names its place in the paper, its sympy identities (the derivation) and expressions
(the numbers), the ``analytic_dpm`` functions that compute the same quantities (dotted paths, resolved only by the
tests: ``theory`` never imports the library), the tests that compare the two, and the notebook that shows it.
``tests/test_theory_registry.py`` fails when any link is missing or stale.
"""

from __future__ import annotations

import dataclasses

from . import continuous, covariance, derivations, forward, imperfect, moments, theorems
from .core import Identity, Result

#: Switch on once the notebooks exist: then every result must name a notebook file that exists and mentions its id.
NOTEBOOKS_REQUIRED = True

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
    imperfect.RESIDUAL_VARIANCE,
    covariance.DIAGONAL_COVARIANCE,
    *derivations.RESULTS,
)

#: The notebook that shows each result (``tests/test_notebooks.py`` runs them); set as each entry's ``notebook=``.
NOTEBOOKS = {
    "forward-marginals": "notebooks/01_forward_posterior.py",
    "posterior": "notebooks/01_forward_posterior.py",
    "theorem1": "notebooks/02_theorem1.py",
    "lemma13": "notebooks/02_theorem1.py",
    "moment-matching": "notebooks/02_theorem1.py",
    "corollary2": "notebooks/02_theorem1.py",
    "continuous-time": "notebooks/02_theorem1.py",
    "tweedie": "notebooks/03_gamma_monte_carlo.py",
    "theorem2": "notebooks/04_bounds_clipping.py",
    "corollary3": "notebooks/04_bounds_clipping.py",
    "theorem3": "notebooks/05_optimal_trajectory.py",
    "corollary4": "notebooks/05_optimal_trajectory.py",
    "residual-variance": "notebooks/09_residual_variance.py",
    "diagonal-covariance": "notebooks/10_diagonal_covariance.py",
    "eq10-plugin-bias": "notebooks/03_gamma_monte_carlo.py",
    "tweedie-mixture-any-n": "notebooks/03_gamma_monte_carlo.py",
    "lemma9-shared-variance": "notebooks/02_theorem1.py",
    "theorem3-decomposition": "notebooks/05_optimal_trajectory.py",
    "proposition2-nonconvex": "notebooks/05_optimal_trajectory.py",
    "tweedie-matrix": "notebooks/03_gamma_monte_carlo.py",
}
RESULTS = tuple(dataclasses.replace(r, notebook=NOTEBOOKS[r.id]) if r.id in NOTEBOOKS else r for r in RESULTS)

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
