"""The variance for an imperfect mean (extended Analytic-DPM, Bao et al., ICML 2022: the scalar NPR-DPM; the analogues
of P Theorems 1 and 3 when the reverse mean is the network's own, not the optimal one).

On a transition s < t the reverse mean is held fixed at the one the network gives, μ(x_t) = μ̃_{s|t}(x_t, x̂_0(x_t))
with x̂_0 = (x_t − √β̄_t ε̂_t(x_t))/√ᾱ_t, for an arbitrary noise predictor ε̂_t. Only the variance σ² is chosen. The
statistic that decides it is the residual R_t = E‖ε − ε̂_t(x_t)‖²/d, the network's training loss per dimension:

* the mean error is c·(x_0 − x̂_0) = c√(β̄_t/ᾱ_t)(ε̂ − ε), so E‖μ̃ − μ‖²/d = c²(β̄_t/ᾱ_t) R_t = g² R_t;
* E KL(q(x_s|x_t, x_0) ‖ N(μ, σ²I))/d = ½[λ²/σ² + g²R_t/σ² − 1 + log(σ²/λ²)], minimised exactly at
  σ² = λ² + g² R_t, where it is ½ log(1 + g²R_t/λ²) (for λ² = β̃: ½ log1p(R_t β_{t|s}/(α_{t|s} β̄_s)));
* for the optimal predictor ε* = E[ε|x_t], R_t = 1 − Γ_t: Theorem 1's σ*² and Theorem 3's J come back;
* for ε̂ = a·ε* + b, R_t = (1 − Γ_t) + (1 − a)²Γ_t + ‖b‖²/d, which exceeds 1 (so σ² exceeds Theorem 2's eq. (11)
  bound) as soon as the predictor is biased enough: Theorem 2 holds for the optimal mean only.

Expectations are per coordinate (a coordinate index drawn uniformly, so that E of a square is a ‖·‖²/d) and are
evaluated by :class:`DeclaredMoments`: linearity over a table of second moments, each entry stated with its reason
(definition, E ε = 0 and E‖ε‖²/d = 1, or the tower property E[(ε − ε*)·f(x_t)] = 0). A monomial missing from the
table raises, so no moment enters a derivation unannounced.
"""

from __future__ import annotations

import sympy as sp

from . import symbols as sy
from .core import Expression, Identity, Result, Step
from .forward import coef_x0, gap, mu_tilde_at
from .moments import Expect, sig2
from .symbols import Gamma, a_ts, ab_t, b_ts, bb_s, bb_t, bt, eps, lam2, r, x0
from .theorems import J_general, kl_isotropic, sigma_sq_opt, upper_eq11, upper_eq12, x0_hat_eps

# ------------------------------------------------------------------------------------------------ symbols
R = sp.Symbol("R_t", nonnegative=True)  #: R_t = E‖ε − ε̂_t(x_t)‖²/d, the residual of the network's noise prediction
a = sp.Symbol("a", real=True)  #: scale of ε̂ = a·ε* + b
b2 = sp.Symbol("b²", nonnegative=True)  #: ‖b‖²/d for the constant bias vector b
gamma_hat = sp.Symbol("Γ̂_t", nonnegative=True)  #: Γ̂_t = E‖ε̂_t(x_t)‖²/d of a (not necessarily optimal) predictor
noise = sp.Symbol("ε", real=True)  #: the forward noise, x_t = √ᾱ_t x_0 + √β̄_t ε (one coordinate)
eps_star = sp.Symbol("ε⋆_t", real=True)  #: the optimal predictor ε*_t(x_t) = E[ε | x_t] (one coordinate)
bias = sp.Symbol("b", real=True)  #: one coordinate of the constant bias vector
w = sp.Symbol("w", real=True)  #: w = ε − ε̂_t(x_t), the prediction error (one coordinate)
u = sp.Symbol("u", positive=True)
sy.LATEX_NAMES.update({R: "R_t", a: "a", b2: r"\|b\|^2/d", gamma_hat: r"\hat\Gamma_t", noise: r"\epsilon",
                       eps_star: r"\epsilon^*_t", bias: "b", w: "w", u: "u"})


class DeclaredMoments(Expect):
    """E[·] of a polynomial in random symbols by linearity, each monomial's expectation read from ``table``
    (monomial → value). Unlike :class:`theory.moments.Expect` nothing is assumed about independence: every moment
    used is declared, and a monomial without an entry raises."""

    table: dict = {}

    def doit(self, deep=True, **hints):
        arg = self.args[0].doit(deep=deep, **hints) if deep else self.args[0]
        rvs = sorted(set().union(*(k.free_symbols for k in self.table)), key=str)
        rvs = [s for s in rvs if arg.has(s)]
        if not rvs:
            return arg
        total = sp.Integer(0)
        for monom, coeff in sp.Poly(sp.expand(arg), *rvs).terms():
            key = sp.Mul(*(s**p for s, p in zip(rvs, monom)))
            if key == 1:
                total += coeff
            elif key in self.table:
                total += coeff * self.table[key]
            else:
                raise ValueError(f"{type(self).__name__}: no declared moment E[{key}]")
        return total


class ExpectResidual(DeclaredMoments):
    """w = ε − ε̂_t(x_t): E w² = R_t (the definition of R_t)."""

    table = {w**2: R}


class ExpectNoise(DeclaredMoments):
    """ε (forward noise), ε* = E[ε | x_t], b (a constant): E ε² = 1 and E ε = 0 (ε ~ N(0, I)); E ε*² = Γ_t (the
    definition of Γ_t); E ε ε* = E[E[ε|x_t] ε*] = E ε*² = Γ_t (tower property); E ε* = E ε = 0 (tower), so
    E b ε = E b ε* = 0 for the constant b; E b² = ‖b‖²/d."""

    table = {noise**2: 1, noise * eps_star: Gamma, eps_star**2: Gamma, bias**2: b2, bias * noise: 0,
             bias * eps_star: 0}


class ExpectPrediction(DeclaredMoments):
    """ε and an arbitrary predictor ε̂ = ε̂_t(x_t): E ε² = 1 (ε ~ N(0, I)) and E ε̂² = Γ̂_t (its definition)."""

    table = {noise**2: 1, eps**2: gamma_hat}


# ------------------------------------------------------------------------------------------------ the quantities
sigma_sq_residual = lam2 + gap**2 * R  #: σ² = λ² + g² R_t, the minimiser for the network's own mean
mean_error_sq = bb_t / ab_t * R  #: E‖x_0 − x̂_0‖²/d


def kl_residual(s2):
    """E KL(N(μ̃, λ²I) ‖ N(μ, σ²I))/d for the network's mean, as a function of σ² = ``s2``."""
    return (lam2 / s2 + gap**2 * R / s2 - 1 + sp.log(s2 / lam2)) / 2


def _phi(y):
    return y - 1 - sp.log(y)


residual_of_scaled_biased = (1 - Gamma) + (1 - a) ** 2 * Gamma + b2  #: R_t for ε̂ = a·ε* + b
gamma_of_scaled_biased = a**2 * Gamma + b2  #: Γ̂_t for ε̂ = a·ε* + b
residual_cost_ddpm = sp.log(1 + R * b_ts / (a_ts * bb_s))  #: 2 × the minimal KL per dim, λ² = β̃_{s|t}
ddpm = {lam2: bt}

x_t_forward = sp.sqrt(ab_t) * x0 + sp.sqrt(bb_t) * noise  #: x_t = √ᾱ_t x_0 + √β̄_t ε
_x0_hat = x0_hat_eps.xreplace({sy.xt: x_t_forward})  #: x̂_0(x_t) at that x_t
_mean_error = mu_tilde_at(x0, x_t_forward) - mu_tilde_at(_x0_hat, x_t_forward)  #: μ̃(x_t, x_0) − μ(x_t)

# ================================================================================================ 1. the mean error
MEAN_ERROR = Identity(
    "residual-mean-error",
    "with x_t = √ᾱ_t x_0 + √β̄_t ε and x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t: μ̃_{s|t}(x_t, x_0) − μ̃_{s|t}(x_t, x̂_0) "
    "= c·(x_0 − x̂_0) = c√(β̄_t/ᾱ_t)(ε̂ − ε) (μ̃ is affine in x_0 with coefficient c = coef_x0)",
    _mean_error,
    coef_x0 * sp.sqrt(bb_t / ab_t) * (eps - noise),
    steps=(Step("μ̃ is affine in x_0: only the x_0 term differs", coef_x0 * (x0 - _x0_hat)),
           Step("x̂_0 = x_0 + √(β̄_t/ᾱ_t)(ε − ε̂) at x_t = √ᾱ_t x_0 + √β̄_t ε",
                coef_x0 * (x0 - (x0 + sp.sqrt(bb_t / ab_t) * (noise - eps))))),
)

MEAN_ERROR_SQ = Identity(
    "residual-mean-error-sq",
    "E‖x_0 − x̂_0‖²/d = (β̄_t/ᾱ_t) R_t with R_t = E‖ε − ε̂_t(x_t)‖²/d (w = ε − ε̂, E w² = R_t by definition)",
    ExpectResidual((x0 - _x0_hat.xreplace({eps: noise - w})) ** 2),
    mean_error_sq,
    steps=(Step("x_0 − x̂_0 = −√(β̄_t/ᾱ_t) w", ExpectResidual(bb_t / ab_t * w**2)),),
)

# ================================================================================================ 2. the expected KL
_kl_c_form = (lam2 / sig2 + coef_x0**2 * bb_t / ab_t * R / sig2 - 1 + sp.log(sig2 / lam2)) / 2
EXPECTED_KL = Identity(
    "residual-expected-kl",
    "E KL(N(μ̃_{s|t}(x_t, x_0), λ²I) ‖ N(μ(x_t), σ²I))/d = ½[λ²/σ² + c²(β̄_t/ᾱ_t)R_t/σ² − 1 + log(σ²/λ²)] "
    "= ½[λ²/σ² + g²R_t/σ² − 1 + log(σ²/λ²)] for every σ² > 0 (the KL of isotropic Gaussians, kl-isotropic-gaussians, "
    "per coordinate; the mean error of residual-mean-error; E w² = R_t)",
    ExpectResidual(kl_isotropic(sp.Integer(1), lam2, sig2, _mean_error.xreplace({eps: noise - w}) ** 2)),
    kl_residual(sig2),
    steps=(Step("the mean error is −c√(β̄_t/ᾱ_t) w; the KL is affine in its square",
                kl_isotropic(sp.Integer(1), lam2, sig2, coef_x0**2 * bb_t / ab_t * ExpectResidual(w**2))),
           Step("E w² = R_t; collect", _kl_c_form),
           Step("c²·β̄_t/ᾱ_t = g² (theorem1-coefficient-forms)", kl_residual(sig2))),
)

# ================================================================================================ 3. the minimiser
KL_MINIMUM = Identity(
    "residual-kl-minimum",
    "K(σ²) − K(λ² + g²R_t) = ½φ((λ² + g²R_t)/σ²), φ(u) = u − 1 − log u ≥ 0 with equality only at u = 1 "
    "(phi-minimum, phi-convex): σ² = λ² + g²R_t is the unique minimiser of the expected KL K over σ² > 0, and the "
    "minimum is K(λ² + g²R_t) = ½log((λ² + g²R_t)/λ²)",
    kl_residual(sig2) - kl_residual(sigma_sq_residual),
    _phi(u).xreplace({u: sigma_sq_residual / sig2}) / 2,
    steps=(Step("at σ² = λ² + g²R_t the first two terms sum to 1: K(λ² + g²R_t) = ½log((λ² + g²R_t)/λ²)",
                kl_residual(sig2) - sp.log(sigma_sq_residual / lam2) / 2),
           Step("write λ²/σ² + g²R_t/σ² = u with u = (λ² + g²R_t)/σ²",
                (sigma_sq_residual / sig2 - 1 + sp.log(sig2 / lam2) - sp.log(sigma_sq_residual / lam2)) / 2)),
)

_stationary = sp.solve(sp.diff(kl_residual(sig2), sig2), sig2)
assert len(_stationary) == 1 and sp.simplify(_stationary[0] - sigma_sq_residual) == 0, _stationary
STATIONARY = Identity(
    "residual-variance-stationary",
    "∂K/∂σ² = ½(1/σ² − (λ² + g²R_t)/σ⁴) vanishes at σ² = λ² + g²R_t, and sympy.solve finds no other stationary "
    "point (the count is 1)",
    sp.Matrix([[sp.Subs(sp.Derivative(kl_residual(sig2), sig2), sig2, sigma_sq_residual), len(_stationary)]]),
    sp.Matrix([[0, 1]]),
)

CURVATURE = Identity(
    "residual-variance-curvature",
    "∂²K/∂(σ²)² = 1/(2(λ² + g²R_t)²) > 0 at σ² = λ² + g²R_t: the stationary point is a minimum",
    sp.Subs(sp.Derivative(kl_residual(sig2), (sig2, 2)), sig2, sigma_sq_residual),
    1 / (2 * sigma_sq_residual**2),
    nonneg=True,
)

# ================================================================================================ 4. optimal predictor
OPTIMAL_RESIDUAL = Identity(
    "residual-of-optimal-predictor",
    "for ε̂ = ε* = E[ε | x_t]: R_t = E‖ε − ε*‖²/d = E‖ε‖²/d − 2E⟨ε, ε*⟩/d + E‖ε*‖²/d = 1 − 2Γ_t + Γ_t = 1 − Γ_t "
    "(E‖ε‖²/d = 1; tower property E⟨ε, ε*⟩ = E⟨E[ε|x_t], ε*⟩ = E‖ε*‖²)",
    ExpectNoise((noise - eps_star) ** 2),
    1 - Gamma,
    steps=(Step("expand the square (linearity)",
                ExpectNoise(noise**2) - 2 * ExpectNoise(noise * eps_star) + ExpectNoise(eps_star**2)),
           Step("E ε² = 1, E ε ε* = Γ_t (tower), E ε*² = Γ_t", 1 - 2 * Gamma + Gamma)),
)

IS_THEOREM1 = Identity(
    "residual-variance-is-theorem1",
    "with the optimal predictor the residual variance is Theorem 1's: λ² + g²·E‖ε − ε*‖²/d = λ² + g²(1 − Γ_t) = σ*², "
    "and the minimal cost is Theorem 3's J = log(σ*²/λ²)",
    sp.Matrix([[lam2 + gap**2 * ExpectNoise((noise - eps_star) ** 2),
                sp.log(sigma_sq_residual / lam2).xreplace({R: ExpectNoise((noise - eps_star) ** 2)})]]),
    sp.Matrix([[sigma_sq_opt, J_general]]),
    steps=(Step("residual-of-optimal-predictor",
                sp.Matrix([[lam2 + gap**2 * (1 - Gamma), sp.log((lam2 + gap**2 * (1 - Gamma)) / lam2)]])),),
)

# ================================================================================================ 5. scaled and biased
_hat = a * eps_star + bias  #: ε̂ = a·ε* + b
SCALED_BIASED = Identity(
    "residual-of-scaled-biased",
    "ε̂ = a·ε* + b (a a scalar, b a constant vector, ‖b‖²/d = b²): R_t = E‖ε − aε* − b‖²/d = (1 − Γ_t) + "
    "(1 − a)²Γ_t + ‖b‖²/d (the cross terms with b vanish as E ε = E ε* = 0; E ε ε* = Γ_t by the tower property)",
    ExpectNoise((noise - _hat) ** 2),
    residual_of_scaled_biased,
    steps=(Step("expand (linearity); E bε = E bε* = 0",
                ExpectNoise(noise**2) - 2 * a * ExpectNoise(noise * eps_star) + a**2 * ExpectNoise(eps_star**2)
                + ExpectNoise(bias**2)),
           Step("E ε² = 1, E ε ε* = E ε*² = Γ_t, E b² = ‖b‖²/d", 1 - 2 * a * Gamma + a**2 * Gamma + b2)),
)

# ================================================================================================ 6. control variate
CV_PRODUCT = Identity(
    "control-variate-product",
    "per coordinate (so for the norms, summing): ε² − ε̂² = (ε − ε̂)(ε + ε̂): (‖ε‖² − ‖ε̂‖²)/d is evaluated as "
    "⟨ε − ε̂, ε + ε̂⟩/d, without subtracting two numbers near 1",
    noise**2 - eps**2,
    (noise - eps) * (noise + eps),
)

CV_MEAN = Identity(
    "control-variate-mean",
    "E[(‖ε‖² − ‖ε̂‖²)/d] = 1 − Γ̂_t for any predictor (E‖ε‖²/d = 1, Γ̂_t = E‖ε̂‖²/d); for ε̂ = a·ε* + b, "
    "Γ̂_t = a²Γ_t + ‖b‖²/d, so 1 − Γ̂_t = (1 − Γ_t) − (a² − 1)Γ_t − ‖b‖²/d",
    sp.Matrix([[ExpectPrediction(noise**2 - eps**2), ExpectNoise(_hat**2)]]),
    sp.Matrix([[1 - gamma_hat, gamma_of_scaled_biased]]),
    steps=(Step("linearity", sp.Matrix([[ExpectPrediction(noise**2) - ExpectPrediction(eps**2),
                                         a**2 * ExpectNoise(eps_star**2) + ExpectNoise(bias**2)]])),),
)

# ================================================================================================ 7. the optimal cost
OPTIMAL_COST = Identity(
    "residual-optimal-cost",
    "twice the minimal expected KL per dimension is log(1 + g²R_t/λ²); for the DDPM family (λ² = β̃_{s|t}) "
    "g²/λ² = β_{t|s}/(α_{t|s}β̄_s), so J_R(s, t) = log1p(R_t β_{t|s}/(α_{t|s} β̄_s)): the Theorem 3 analogue",
    (2 * kl_residual(sigma_sq_residual)).xreplace(ddpm),
    residual_cost_ddpm,
    steps=(Step("residual-kl-minimum: 2K(λ² + g²R_t) = log((λ² + g²R_t)/λ²)",
                sp.log(sigma_sq_residual / lam2).xreplace(ddpm)),
           Step("= log(1 + g²R_t/λ²)", sp.log(1 + gap**2 * R / lam2).xreplace(ddpm)),
           Step("λ² = β̃ = β̄_sβ_{t|s}/β̄_t and g² = β_{t|s}²/(α_{t|s}β̄_t) (corollary2)",
                sp.log(1 + b_ts**2 / (a_ts * bb_t) * R / (bb_s * b_ts / bb_t)))),
)

# ================================================================================================ 8. beyond Theorem 2
BEYOND_T2 = Identity(
    "residual-beyond-theorem2",
    "(λ² + g²R_t) − (λ² + g²) = g²(R_t − 1) and (λ² + g²R_t) − (λ² + g² r²ᾱ_t/β̄_t) = g²(R_t − r²ᾱ_t/β̄_t): "
    "as g > 0, the residual variance exceeds eq. (11)'s upper bound exactly when R_t > 1, and eq. (12)'s exactly when "
    "R_t > r²ᾱ_t/β̄_t — Theorem 2 bounds the optimal mean's variance, not every mean's",
    sp.Matrix([[sigma_sq_residual - upper_eq11, sigma_sq_residual - upper_eq12]]),
    sp.Matrix([[gap**2 * (R - 1), gap**2 * (R - r**2 * ab_t / bb_t)]]),
)

COUNTEREXAMPLE = Identity(
    "residual-counterexample-eq11",
    "a counterexample to eq. (11) for an imperfect mean: ε̂ = b (a = 0, a constant prediction, ‖b‖²/d = b² > 0) has "
    "R_t = 1 + b² (residual-of-scaled-biased), so λ² + g²R_t − (λ² + g²) = g²b² > 0",
    sigma_sq_residual.xreplace({R: residual_of_scaled_biased.xreplace({a: 0})}) - upper_eq11,
    gap**2 * b2,
    nonneg=True,
)

RESIDUAL_VARIANCE = Result(
    id="residual-variance",
    title="The residual variance σ² = λ² + g²R_t: the optimal variance for the network's own (imperfect) mean",
    paper="Extended Analytic-DPM (Bao et al., ICML 2022) scalar NPR-DPM; P Theorem 1/3 analogues for an imperfect mean",
    summary="With μ(x_t) = μ̃_{s|t}(x_t, x̂_0(x_t)) fixed and R_t = E‖ε − ε̂_t(x_t)‖²/d: E‖x_0 − x̂_0‖²/d = "
            "(β̄_t/ᾱ_t)R_t, the expected transition KL is ½[λ²/σ² + g²R_t/σ² − 1 + log(σ²/λ²)], minimised exactly at "
            "σ² = λ² + g²R_t with value ½log(1 + g²R_t/λ²) (DDPM: ½log1p(R_tβ_{t|s}/(α_{t|s}β̄_s)), the same DP). "
            "The optimal predictor has R_t = 1 − Γ_t (Theorem 1); ε̂ = aε* + b has R_t = (1 − Γ_t) + (1 − a)²Γ_t + "
            "‖b‖²/d, which can exceed Theorem 2's bounds. E[(‖ε‖² − ‖ε̂‖²)/d] = 1 − Γ̂_t is a control variate.",
    identities=(MEAN_ERROR, MEAN_ERROR_SQ, EXPECTED_KL, KL_MINIMUM, STATIONARY, CURVATURE, OPTIMAL_RESIDUAL,
                IS_THEOREM1, SCALED_BIASED, CV_PRODUCT, CV_MEAN, OPTIMAL_COST, BEYOND_T2, COUNTEREXAMPLE),
    expressions=(
        Expression("residual_sigma_sq", sigma_sq_residual, (sy.ab_s, ab_t, lam2, R), "λ² + g²R_t"),
        Expression("residual_kl_per_dim", kl_residual(sig2), (sy.ab_s, ab_t, lam2, sig2, R),
                   "E KL(q(x_s|x_t,x_0) ‖ N(μ(x_t), σ²I))/d for the network's mean"),
        Expression("residual_cost_ddpm", residual_cost_ddpm, (sy.ab_s, ab_t, R),
                   "log1p(R_t β_{t|s}/(α_{t|s}β̄_s)), twice the minimal KL per dim (λ² = β̃)"),
        Expression("residual_of_scaled_biased", residual_of_scaled_biased, (Gamma, a, b2),
                   "R_t of ε̂ = a·ε* + b"),
        Expression("one_minus_gamma_of_scaled_biased", 1 - gamma_of_scaled_biased, (Gamma, a, b2),
                   "1 − Γ̂_t = E[(‖ε‖² − ‖ε̂‖²)/d] of ε̂ = a·ε* + b"),
        Expression("mean_error_sq", mean_error_sq, (ab_t, R), "E‖x_0 − x̂_0‖²/d = (β̄_t/ᾱ_t)R_t"),
        Expression("excess_over_eq11", gap**2 * (R - 1), (sy.ab_s, ab_t, lam2, R), "(λ² + g²R_t) − eq. (11)"),
        Expression("excess_over_eq12", gap**2 * (R - r**2 * ab_t / bb_t), (sy.ab_s, ab_t, lam2, R, r),
                   "(λ² + g²R_t) − eq. (12)"),
    ),
    functions=(
        "analytic_dpm.variance.residual_sigma_sq",
        "analytic_dpm.variance.reverse_variances",
        "analytic_dpm.toy.exact_residual_of_imperfect",
        "analytic_dpm.toy.exact_one_minus_gamma_of_imperfect",
        "analytic_dpm.likelihood.exact_mean_transition_kl",
        "analytic_dpm.optimal_trajectory.analytic_ddpm_cost",
        "analytic_dpm.gamma.estimate_gamma",
    ),
    tests=("tests/test_theory.py::test_residual_variance_matches_library",
           "tests/test_theory.py::test_residual_kl_matches_library",
           "tests/test_theory.py::test_residual_cost_matches_library",
           "tests/test_theory.py::test_residual_of_imperfect_matches_toy",
           "tests/test_theory.py::test_residual_statistics_of_estimate_gamma",
           "tests/test_theory.py::test_residual_variance_exceeds_theorem2"),
    notes=(
        "Proof order: residual-mean-error → residual-mean-error-sq → residual-expected-kl → residual-kl-minimum "
        "(with residual-variance-stationary and residual-variance-curvature as the calculus check) → "
        "residual-optimal-cost. Nothing assumes ε̂ is optimal until residual-of-optimal-predictor.",
        "Theorem 3 analogue: with the network's means and σ²_{s|t} = λ² + g²R_t on every transition, "
        "KL(q ‖ p) = (d/2) Σ_k J_R(τ_{k−1}, τ_k) + c, the prior and decoder terms being independent of the interior of "
        "the trajectory, so the same dynamic programme finds the optimal trajectory for the cost J_R.",
        "R_t is the network's training loss per dimension; GammaEstimate.residual estimates it from the same "
        "evaluations as Γ̂_t.",
    ),
)

RESULTS = (RESIDUAL_VARIANCE,)
