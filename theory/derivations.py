"""Symbolic statements of the core results, written with sympy from the paper's definitions.

This module never imports ``analytic_dpm``: it is an independent description of the same mathematics, and the tests
check that the two agree. Each :class:`Identity` states ``lhs == rhs`` under positivity assumptions on the symbols;
:func:`check` proves it by simplification and backs that up with a high-precision numeric spot check where sympy
needs help with square roots.

Symbols (one transition s < t of a trajectory): ᾱ_s = ``ab_s``, ᾱ_t = ``ab_t`` with 0 < ᾱ_t < ᾱ_s ≤ 1; λ² = ``lam2``
with 0 ≤ λ² ≤ β̄_s; Γ = ``Gamma`` (noise form, E‖ε̂_t‖²/d).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import sympy as sp

ab_s, ab_t = sp.symbols("alphabar_s alphabar_t", positive=True)
lam2, Gamma = sp.symbols("lambda_sq Gamma", nonnegative=True)
eta = sp.symbols("eta", nonnegative=True)
v = sp.symbols("v", positive=True)  # a data variance (Gaussian example)

bb_s = 1 - ab_s  # β̄_s
bb_t = 1 - ab_t  # β̄_t
a_ts = ab_t / ab_s  # α_{t|s}
b_ts = 1 - a_ts  # β_{t|s}
beta_tilde = bb_s / bb_t * b_ts  # β̃_{s|t}

# Theorem 1 (noise form) on a trajectory and its pieces
gap = sp.sqrt(bb_t / a_ts) - sp.sqrt(bb_s - lam2)  # √(β̄_t/α_{t|s}) − √(β̄_s − λ²)
sigma_sq_opt = lam2 + gap**2 * (1 - Gamma)
coef_x0 = sp.sqrt(ab_s) - sp.sqrt((bb_s - lam2) * ab_t / bb_t)  # c in Lemma 13
coef_xt = sp.sqrt((bb_s - lam2) / bb_t)
cov_x0_tweedie = bb_t / ab_t * (1 - Gamma)  # E tr Cov(x_0 | x_t)/d from Γ (Lemma 11)


@dataclass(frozen=True)
class Identity:
    """``lhs == rhs`` for all admissible symbol values."""

    id: str
    paper: str
    statement: str
    lhs: sp.Expr
    rhs: sp.Expr
    steps: list = field(default_factory=list)

    @property
    def free_symbols(self):
        return sorted((self.lhs - self.rhs).free_symbols, key=str)


def _admissible_point(rng: random.Random) -> dict:
    """A random point with 0 < ᾱ_t < ᾱ_s < 1, 0 ≤ λ² ≤ β̄_s, Γ ∈ [0, 1], η ∈ [0, 1], v > 0."""
    a, b = sorted([rng.uniform(1e-3, 0.999), rng.uniform(1e-3, 0.999)])
    if a == b:
        b = min(0.999, a + 1e-3)
    s_val, t_val = sp.Rational(str(b)), sp.Rational(str(a))
    return {
        ab_s: s_val,
        ab_t: t_val,
        lam2: sp.Rational(str(rng.uniform(0, 1))) * (1 - s_val),
        Gamma: sp.Rational(str(rng.uniform(0, 1))),
        eta: sp.Rational(str(rng.uniform(0, 1))),
        v: sp.Rational(str(rng.uniform(1e-3, 3))),
    }


def check(identity: Identity, points: int = 20, seed: int = 0, tol: float = 1e-40) -> str:
    """Prove ``identity`` symbolically when sympy can; always spot-check it at random admissible points in 60-digit
    arithmetic. Returns ``"symbolic"`` or ``"numeric"``; raises AssertionError when it fails."""
    diff = identity.lhs - identity.rhs
    how = "numeric"
    try:
        if sp.simplify(sp.radsimp(sp.together(diff))) == 0:
            how = "symbolic"
    except Exception:  # pragma: no cover - simplification is best effort
        pass
    rng = random.Random(seed)
    for _ in range(points):
        val = sp.N(diff.subs(_admissible_point(rng)), 60)
        assert abs(val) < tol, f"{identity.id}: lhs − rhs = {val} at a random admissible point"
    return how


IDENTITIES: list[Identity] = [
    Identity(
        "theorem1-coefficient-forms",
        "P Theorem 1 / App. A (Lemma 13 with Lemma 11)",
        "λ² + c² · (β̄_t/ᾱ_t)(1 − Γ) equals λ² + (√(β̄_t/α_{t|s}) − √(β̄_s − λ²))² (1 − Γ)",
        lam2 + coef_x0**2 * cov_x0_tweedie,
        sigma_sq_opt,
        ["c = √ᾱ_s − √((β̄_s − λ²) ᾱ_t/β̄_t)", "c² β̄_t/ᾱ_t = (√(β̄_t ᾱ_s/ᾱ_t) − √(β̄_s − λ²))², and ᾱ_s/ᾱ_t = 1/α_{t|s}"],
    ),
    Identity(
        "gap-without-cancellation",
        "numerics of eq. (7) and (11)",
        "√(β̄_t/α_{t|s}) − √(β̄_s − λ²) = (β_{t|s}/α_{t|s} + λ²) / (√(β̄_t/α_{t|s}) + √(β̄_s − λ²))",
        gap,
        (b_ts / a_ts + lam2) / (sp.sqrt(bb_t / a_ts) + sp.sqrt(bb_s - lam2)),
        ["multiply by the conjugate", "β̄_t/α_{t|s} − β̄_s = (β̄_t − α_{t|s} β̄_s)/α_{t|s} = β_{t|s}/α_{t|s}"],
    ),
    Identity(
        "ddpm-residual-variance",
        "facts §1 (DDPM posterior mean)",
        "for λ² = β̃_{s|t}: β̄_s − λ² = α_{t|s} β̄_s² / β̄_t",
        bb_s - beta_tilde,
        a_ts * bb_s**2 / bb_t,
        ["β̄_t − β_{t|s} = α_{t|s} β̄_s"],
    ),
    Identity(
        "ddim-residual-variance",
        "facts §1 (η family)",
        "for λ² = η² β̃_{s|t}: β̄_s − λ² = β̄_s ((1 − η²) β̄_t + η² α_{t|s} β̄_s)/β̄_t",
        bb_s - eta**2 * beta_tilde,
        bb_s * ((1 - eta**2) * bb_t + eta**2 * a_ts * bb_s) / bb_t,
    ),
    Identity(
        "ddpm-posterior-mean-coefficients",
        "facts §1 (DDPM case)",
        "for λ² = β̃: coef_x0 = √ᾱ_s β_{t|s}/β̄_t and coef_xt = √α_{t|s} β̄_s/β̄_t",
        (coef_x0 - sp.sqrt(ab_s) * b_ts / bb_t) ** 2 + (coef_xt - sp.sqrt(a_ts) * bb_s / bb_t) ** 2,
        sp.Integer(0),
    ),
    Identity(
        "corollary2",
        "P Corollary 2 (App. D) on a trajectory",
        "for λ² = β̃: σ*² = (β_{t|s}/α_{t|s})(1 − β_{t|s} Γ/β̄_t) = (1 − Γ) β_{t|s}/α_{t|s} + Γ β̃_{s|t}",
        sigma_sq_opt,
        b_ts / a_ts * (1 - b_ts * Gamma / bb_t),
        ["substitute λ² = β̃_{s|t}", "the Γ = 0 and Γ = 1 ends are Corollary 3's bounds"],
    ),
    Identity(
        "corollary3-upper",
        "P Corollary 3 (App. D)",
        "for λ² = β̃: the eq. (11) bound λ² + g² equals β_{t|s}/α_{t|s}",
        lam2 + gap**2,
        b_ts / a_ts,
    ),
    Identity(
        "corollary3-bounded",
        "P Corollary 3 (App. D), eq. (12)",
        "for λ² = β̃ and r = 1: λ² + g² ᾱ_t/β̄_t = β̃ + ᾱ_s β_{t|s}²/β̄_t²",
        lam2 + gap**2 * ab_t / bb_t,
        beta_tilde + ab_s * b_ts**2 / bb_t**2,
    ),
    Identity(
        "tweedie-gaussian",
        "P Lemma 11 for x_0 ~ N(m, v)",
        "Var(x_0 | x_t) = v β̄_t/(ᾱ_t v + β̄_t) equals (β̄_t/ᾱ_t)(1 − Γ_t) with Γ_t = β̄_t/(ᾱ_t v + β̄_t)",
        v * bb_t / (ab_t * v + bb_t),
        (bb_t / ab_t) * (1 - bb_t / (ab_t * v + bb_t)),
    ),
]

# The identities that only hold in the DDPM family: substitute λ² = β̃.
_DDPM_ONLY = {"ddpm-posterior-mean-coefficients", "corollary2", "corollary3-upper", "corollary3-bounded"}
IDENTITIES = [
    Identity(i.id, i.paper, i.statement, i.lhs.subs(lam2, beta_tilde), i.rhs.subs(lam2, beta_tilde), i.steps)
    if i.id in _DDPM_ONLY else i
    for i in IDENTITIES
]


def lambdified():
    """Numeric functions of (ᾱ_s, ᾱ_t, λ², Γ) for the tests that compare with the library."""
    args = (ab_s, ab_t, lam2, Gamma)
    return {
        "sigma_sq_opt": sp.lambdify(args, sigma_sq_opt, "mpmath"),
        "coef_x0": sp.lambdify(args, coef_x0, "mpmath"),
        "coef_xt": sp.lambdify(args, coef_xt, "mpmath"),
        "upper_eq11": sp.lambdify(args, lam2 + gap**2, "mpmath"),
        "upper_eq12_r1": sp.lambdify(args, lam2 + gap**2 * ab_t / bb_t, "mpmath"),
        "beta_tilde": sp.lambdify(args, beta_tilde, "mpmath"),
    }
