"""The paper's notation as sympy symbols, their definitions, and the positive parametrisation used in proofs.

Two kinds of symbols:

* **primitive** symbols are free: ᾱ_s, ᾱ_t (0 < ᾱ_t < ᾱ_s ≤ 1), λ² (0 ≤ λ² ≤ β̄_s), Γ_t ∈ [0, 1], η ∈ [0, 1], …
* **display** symbols name a derived quantity so that formulas print in the paper's notation: β̄_s, β̄_t, α_{t|s},
  β_{t|s}, β̃_{s|t}. :func:`expand_definitions` replaces them by their definitions in the primitives.

Sympy cannot prove an identity with √(β̄_s − λ²) or √(β̄_t/α_{t|s}) unless it knows that the radicands are positive,
which it does not infer from ᾱ_t < ᾱ_s. :data:`PARAMETRISATION` maps the constrained primitives onto unconstrained
positive symbols, ᾱ_s = 1/(1 + u_s), α_{t|s} = 1/(1 + u_ts), λ² = β̄_s·u_λ/(1 + u_λ), η² = u_η/(1 + u_η), so that
every radicand becomes a product of manifestly positive factors. The map is onto the admissible domain (its inverse is
:func:`unparametrise`), so an identity proven in the u's holds on the whole domain.
"""

from __future__ import annotations

import sympy as sp

# ------------------------------------------------------------------------------------------------ primitive symbols
ab_s = sp.Symbol("ᾱ_s", positive=True)  #: ᾱ_s, signal level at the earlier time s
ab_t = sp.Symbol("ᾱ_t", positive=True)  #: ᾱ_t, signal level at the later time t (ᾱ_t < ᾱ_s)
lam2 = sp.Symbol("λ²", nonnegative=True)  #: λ²_{s|t}, variance of q(x_s | x_t, x_0)
Gamma = sp.Symbol("Γ_t", nonnegative=True)  #: Γ_t = E‖ε*_t(x_t)‖²/d (noise form), in [0, 1]
S = sp.Symbol("S_t", nonnegative=True)  #: S_t = E‖∇log q_t(x_t)‖²/d (score form); Γ_t = β̄_t S_t
eta = sp.Symbol("η", nonnegative=True)  #: DDIM family: λ² = η² β̃_{s|t}
cov = sp.Symbol("v_t", nonnegative=True)  #: v_t = E tr Cov(x_0 | x_t)/d
r = sp.Symbol("r", positive=True)  #: half-width of the data range [a, b]: r = (b − a)/2
d = sp.Symbol("d", positive=True, integer=True)  #: data dimension

x0 = sp.Symbol("x_0", real=True)
xt = sp.Symbol("x_t", real=True)
xs = sp.Symbol("x_s", real=True)
k = sp.Symbol("k", real=True)  #: argument of a moment generating function
eps = sp.Symbol("ε̂_t", real=True)  #: a noise prediction ε̂_t(x_t)
score = sp.Symbol("∇log q_t", real=True)  #: a score value ∇log q_t(x_t) (one coordinate)

# ------------------------------------------------------------------------------------------------ display symbols
bb_s = sp.Symbol("β̄_s", positive=True)
bb_t = sp.Symbol("β̄_t", positive=True)
a_ts = sp.Symbol("α_t|s", positive=True)
b_ts = sp.Symbol("β_t|s", positive=True)
bt = sp.Symbol("β̃_s|t", positive=True)

DEFINITIONS: dict = {
    bb_s: 1 - ab_s,
    bb_t: 1 - ab_t,
    a_ts: ab_t / ab_s,
    b_ts: 1 - ab_t / ab_s,
    bt: (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s),
}

# ------------------------------------------------------------------------------------------------ parametrisation
u_s = sp.Symbol("u_s", positive=True)
u_ts = sp.Symbol("u_ts", positive=True)
u_lam = sp.Symbol("u_λ", positive=True)
u_eta = sp.Symbol("u_η", positive=True)

PARAMETRISATION: dict = {
    ab_s: 1 / (1 + u_s),
    ab_t: 1 / ((1 + u_s) * (1 + u_ts)),
    lam2: u_s / (1 + u_s) * u_lam / (1 + u_lam),
    eta: sp.sqrt(u_eta / (1 + u_eta)),
}

#: Parameters that map to a boundary value when they go to 0 or ∞ (e.g. u_λ → 0 is DDIM's λ² = 0).
PARAMETERS = (u_s, u_ts, u_lam, u_eta)


def unparametrise(values: dict) -> dict:
    """The inverse of :data:`PARAMETRISATION` on the interior of the domain: ᾱ_s, ᾱ_t, λ², η → u_s, u_ts, u_λ, u_η."""
    out = {}
    if ab_s in values:
        out[u_s] = 1 / values[ab_s] - 1
        if ab_t in values:
            out[u_ts] = values[ab_s] / values[ab_t] - 1
        if lam2 in values:
            frac = values[lam2] / (1 - values[ab_s])
            out[u_lam] = frac / (1 - frac)
    if eta in values:
        out[u_eta] = values[eta] ** 2 / (1 - values[eta] ** 2)
    return out


def expand_definitions(expr):
    """Replace the display symbols (β̄_s, β̄_t, α_{t|s}, β_{t|s}, β̃_{s|t}) by their definitions in ᾱ_s, ᾱ_t."""
    return sp.sympify(expr).xreplace(DEFINITIONS)


def parametrise(expr):
    """:func:`expand_definitions`, then the positive parametrisation of the constrained primitives."""
    return expand_definitions(expr).xreplace(PARAMETRISATION)


# ------------------------------------------------------------------------------------------------ LaTeX names
LATEX_NAMES: dict = {
    ab_s: r"\bar\alpha_s", ab_t: r"\bar\alpha_t", bb_s: r"\bar\beta_s", bb_t: r"\bar\beta_t",
    a_ts: r"\alpha_{t|s}", b_ts: r"\beta_{t|s}", bt: r"\tilde\beta_{s|t}", lam2: r"\lambda^2_{s|t}",
    Gamma: r"\Gamma_t", S: r"S_t", eta: r"\eta", cov: r"v_t", r: "r", d: "d", x0: "x_0", xt: "x_t", xs: "x_s",
    k: "k", eps: r"\hat\epsilon_t", score: r"\nabla\log q_t", u_s: "u_s", u_ts: "u_{ts}", u_lam: r"u_\lambda", u_eta: r"u_\eta",
}


def latex_name(symbol) -> str:
    """LaTeX for a symbol: the table above, else sympy's own rendering of its name."""
    return LATEX_NAMES.get(symbol, sp.latex(symbol))
