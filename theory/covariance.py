"""The per-dimension (diagonal) reverse covariance of the extended Analytic-DPM (Bao, Li, Sun, Zhu, Zhang, ICML 2022:
SN-DPM and NPR-DPM; facts §6.2).

**The extended paper's full text was not consulted**: the formulas derived here are those of its code (X
``core/diffusion/dtdpm.py``, ``core/criterions/ddpm.py``), as recorded in facts §6.2; this module derives them from
first principles and checks that they reduce to P's Theorem 1 and to the scalar residual variance of
:mod:`theory.imperfect`.

On a transition s < t the reverse mean is μ_i(x_t) = μ̃_{s|t}(x_t, x̂_0(x_t))_i and the variance is chosen per
coordinate i and per state x_t, σ_i²(x_t). Everything is one coordinate at a time, conditioned on x_t:

* KL(N(m, λ²) ‖ N(μ, σ²)) = ½[λ²/σ² + (m − μ)²/σ² − 1 + log(σ²/λ²)] (one coordinate);
* the mean error is c·(x_0 − x̂_0)_i, so E[KL_i | x_t] = ½[λ²/σ_i² + c² e_i/σ_i² − 1 + log(σ_i²/λ²)] with
  e_i = E[(x_0 − x̂_0)_i² | x_t]; σ_i² is a function of x_t only, hence a constant under E[·|x_t];
* its unique minimiser is σ_i² = λ² + c² e_i, where it is ½log(1 + c² e_i/λ²); c² = g²ᾱ_t/β̄_t
  (DDPM: ᾱ_s β_{t|s}²/β̄_t²; DDIM: c = √ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t));
* SN-DPM (x̂_0 = E[x_0 | x_t]): e_i = Var(x_0,i | x_t) = (β̄_t/ᾱ_t)(E[ε_i² | x_t] − E[ε_i | x_t]²);
  NPR-DPM (any x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t): e_i = (β̄_t/ᾱ_t) E[(ε_i − ε̂_i)² | x_t];
* averaged over x_t and i these are (β̄_t/ᾱ_t)(1 − Γ_t) and (β̄_t/ᾱ_t)R_t: Theorem 1's σ*² and the residual
  variance come back from a scalar σ²;
* for the same targets the diagonal optimum is never worse than the scalar one: log(1 + κe) is concave, so
  mean_i ½log(1 + κe_i) ≤ ½log(1 + κē), with equality exactly when e_i ≡ ē.

Conditional expectations are evaluated by :class:`theory.imperfect.DeclaredMoments`: linearity over a table of
declared moments, each with its reason; a moment not in the table raises.
"""

from __future__ import annotations

import sympy as sp

from . import symbols as sy
from .core import Expression, Identity, Result, Step
from .forward import coef_x0, gap, mu_tilde_at
from .imperfect import R, DeclaredMoments, eps_star, noise, sigma_sq_residual
from .moments import Expect, m, mu, sig2, z
from .symbols import Gamma, a_ts, ab_s, ab_t, b_ts, bb_s, bb_t, bt, eps, eta, lam2, x0, xt
from .theorems import cov_tweedie, sigma_sq_opt

# ------------------------------------------------------------------------------------------------ symbols
e = sp.Symbol("e_i", nonnegative=True)  #: e_i(x_t) = E[(x_0 − x̂_0)_i² | x_t], the per-dimension target
e_bar = sp.Symbol("ē", nonnegative=True)  #: ē = mean_i e_i (or the mean over i and x_t)
sig2_i = sp.Symbol("σ_i²", positive=True)  #: σ_i²(x_t), the reverse variance of coordinate i at the state x_t
h_sn = sp.Symbol("h_t^SN", nonnegative=True)  #: h_i(x_t) = E[ε_i² | x_t], the SN head's target
h_npr = sp.Symbol("h_t^NPR", nonnegative=True)  #: h_i(x_t) = E[(ε_i − ε̂_i(x_t))² | x_t], the NPR head's target
delta = sp.Symbol("δ_i", real=True)  #: δ_i = (x_0 − x̂_0(x_t))_i, given x_t a random variable with E[δ_i² | x_t] = e_i
w = sp.Symbol("w_i", real=True)  #: w_i = ε_i − ε̂_i(x_t), the prediction error of coordinate i
kappa = sp.Symbol("κ", positive=True)  #: κ = c²/λ² > 0
x0_hat = sp.Symbol("x̂_0", real=True)  #: x̂_0(x_t)_i, the model's prediction of x_0 (one coordinate)
y = sp.Symbol("y", positive=True)
sy.LATEX_NAMES.update({e: "e_i", e_bar: r"\bar e", sig2_i: r"\sigma_i^2", h_sn: r"h^{\mathrm{SN}}_t",
                       h_npr: r"h^{\mathrm{NPR}}_t", delta: r"\delta_i", w: "w_i", kappa: r"\kappa",
                       x0_hat: r"\hat x_0", y: "y"})


class _Declared(DeclaredMoments):
    """:class:`DeclaredMoments` that first collects the coefficient of each monomial over a common denominator, so that
    a monomial whose coefficient is identically 0 (e.g. the δ-linear terms of a squared difference, which ``expand``
    leaves as unequal-looking fractions) needs no declared moment. Only exact cancellation is used."""

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
            elif sp.expand(sp.together(coeff).as_numer_denom()[0]) == 0:
                continue
            else:
                raise ValueError(f"{type(self).__name__}: no declared moment E[{key}]")
        return total


class ExpectGivenState(_Declared):
    """E[· | x_t] for one coordinate i, with ε the forward noise of x_t = √ᾱ_t x_0 + √β̄_t ε: E[ε_i | x_t] = ε*_i(x_t)
    and E[ε_i² | x_t] = h^SN_i(x_t) (the definitions of the two conditional moments). Functions of x_t (ε̂_t(x_t), x_t,
    σ_i²(x_t)) are constants. Declared moment fact (not an identity): h^SN − ε*² = Var(ε_i | x_t) ≥ 0, a
    conditional variance (``diag-sn-target-is-variance`` shows it is E[(ε_i − ε*_i)² | x_t], the expectation of a
    square)."""

    table = {noise: eps_star, noise**2: h_sn}


class ExpectMeanError(_Declared):
    """E[· | x_t] with δ_i = (x_0 − x̂_0(x_t))_i: E[δ_i² | x_t] = e_i (the definition of e_i; no claim on E δ_i, which is
    0 only for the optimal mean)."""

    table = {delta**2: e}


class ExpectResidualGivenState(_Declared):
    """E[· | x_t] with w_i = ε_i − ε̂_i(x_t): E[w_i² | x_t] = h^NPR_i(x_t) (the definition of the NPR target)."""

    table = {w**2: h_npr}


class ExpectOverStates(_Declared):
    """E over x_t ~ q_t and a coordinate i drawn uniformly (so E of a square is a ‖·‖²/d): E h^SN_i(x_t) =
    E ε_i² = 1 (tower property; ε ~ N(0, I)); E ε*_i(x_t)² = Γ_t (the definition of Γ_t); E h^NPR_i(x_t) =
    E(ε_i − ε̂_i)² = R_t (tower property and the definition of R_t)."""

    table = {h_sn: 1, eps_star**2: Gamma, h_npr: R}


class ExpectCoordinate(_Declared):
    """E over a coordinate i drawn uniformly from 1..d (the mean over dimensions): E_i e_i = ē (the definition of ē)."""

    table = {e: e_bar}


# ------------------------------------------------------------------------------------------------ the quantities
def log_normal(xx, mean, var):
    """log N(x | mean, var), one coordinate."""
    return -sp.log(2 * sp.pi * var) / 2 - (xx - mean) ** 2 / (2 * var)


def kl_1d(mean_q, var_q, mean_p, var_p):
    """KL(N(mean_q, var_q) ‖ N(mean_p, var_p)), one coordinate."""
    return (var_q / var_p + (mean_q - mean_p) ** 2 / var_p - 1 + sp.log(var_p / var_q)) / 2


coef_sq = coef_x0**2  #: c², the squared coefficient of x̂_0 in the mean written in (x_t, x̂_0)
coef_sq_ddpm = ab_s * b_ts**2 / bb_t**2  #: c² for λ² = β̃_{s|t}
ddpm = {lam2: bt}
ddim = {lam2: eta**2 * bt}
sigma_sq_diag = lam2 + coef_sq * e  #: σ_i² = λ² + c² e_i, the per-dimension minimiser
sigma_sq_diag_ddpm = bt + coef_sq_ddpm * e
sigma_sq_diag_ddim = (eta**2 * bt + coef_sq * e).xreplace(ddim)
cov_x0_sn = bb_t / ab_t * (h_sn - eps**2)  #: SN: (β̄_t/ᾱ_t)(h − ε̂²), ε̂ the model's estimate of E[ε | x_t]
cov_x0_npr = bb_t / ab_t * h_npr  #: NPR: (β̄_t/ᾱ_t)h


def kl_diag(s2, target=e):
    """E[KL(N(μ̃_i, λ²) ‖ N(μ_i, σ_i²)) | x_t] for one coordinate as a function of σ_i² = ``s2`` and e_i = ``target``."""
    return (lam2 / s2 + coef_sq * target / s2 - 1 + sp.log(s2 / lam2)) / 2


kl_diag_min = sp.log(1 + coef_sq * e / lam2) / 2  #: the minimum over σ_i²


def _phi(yy):
    return yy - 1 - sp.log(yy)


_lam = sp.sqrt(lam2)

# ================================================================================================ 1. the 1-D KL
GAUSSIAN_KL_1D = Identity(
    "diag-gaussian-kl-1d",
    "one coordinate: KL(N(m, λ²) ‖ N(μ, σ²)) = E_{x~N(m, λ²)}[log N(x|m, λ²) − log N(x|μ, σ²)] = "
    "½[λ²/σ² + (m − μ)²/σ² − 1 + log(σ²/λ²)] (x = m + λz, E z = 0, E z² = 1)",
    Expect(log_normal(m + _lam * z, m, lam2) - log_normal(m + _lam * z, mu, sig2)),
    kl_1d(m, lam2, mu, sig2),
    steps=(Step("expand the squares: E z = 0, E z² = 1",
                -sp.log(lam2) / 2 - sp.Rational(1, 2) + sp.log(sig2) / 2 + (lam2 + (m - mu) ** 2) / (2 * sig2)),),
)

# ================================================================================================ 2. the expected KL
_err = mu_tilde_at(x0_hat + delta, xt) - mu_tilde_at(x0_hat, xt)  #: μ̃(x_t, x_0)_i − μ_i(x_t), x_0 = x̂_0 + δ
MEAN_ERROR = Identity(
    "diag-mean-error",
    "coordinate i, x_0 = x̂_0 + δ_i: μ̃_{s|t}(x_t, x_0)_i − μ̃_{s|t}(x_t, x̂_0)_i = c δ_i (μ̃ is affine in x_0 with "
    "coefficient c = √ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t), coordinatewise)",
    _err,
    coef_x0 * delta,
)

EXPECTED_KL = Identity(
    "diag-expected-kl",
    "for any mean μ_i(x_t) = μ̃(x_t, x̂_0(x_t))_i and any state-dependent σ_i²(x_t) > 0: "
    "E[KL(N(μ̃_{s|t}(x_t, x_0)_i, λ²) ‖ N(μ_i(x_t), σ_i²(x_t))) | x_t] = ½[λ²/σ_i² + c² e_i/σ_i² − 1 + log(σ_i²/λ²)], "
    "e_i = E[(x_0 − x̂_0)_i² | x_t] (diag-gaussian-kl-1d with m − μ = cδ_i, diag-mean-error; σ_i² is constant given "
    "x_t). The expected KL of the step is E_{x_t} Σ_i of this, minimised term by term",
    ExpectMeanError(kl_1d(mu_tilde_at(x0_hat + delta, xt), lam2, mu_tilde_at(x0_hat, xt), sig2_i)),
    kl_diag(sig2_i),
    steps=(Step("diag-mean-error: the mean difference is cδ_i",
                ExpectMeanError(kl_1d(coef_x0 * delta, lam2, 0, sig2_i))),
           Step("the KL is affine in (cδ_i)²; E[δ_i² | x_t] = e_i",
                (lam2 / sig2_i + coef_x0**2 * ExpectMeanError(delta**2) / sig2_i - 1 + sp.log(sig2_i / lam2)) / 2)),
)

# ================================================================================================ 3. the minimiser
_s_star = sigma_sq_diag
KL_MINIMUM = Identity(
    "diag-kl-minimum",
    "K_i(σ_i²) − K_i(λ² + c²e_i) = ½φ((λ² + c²e_i)/σ_i²), φ(u) = u − 1 − log u ≥ 0 with equality only at u = 1 "
    "(phi-minimum, phi-convex): σ_i² = λ² + c²e_i is the unique minimiser over σ_i² > 0 of the expected KL of "
    "coordinate i at the state x_t",
    kl_diag(sig2_i) - kl_diag(_s_star),
    _phi(_s_star / sig2_i) / 2,
    steps=(Step("at σ_i² = λ² + c²e_i the first two terms sum to 1: K_i = ½log((λ² + c²e_i)/λ²)",
                kl_diag(sig2_i) - sp.log(_s_star / lam2) / 2),
           Step("λ²/σ_i² + c²e_i/σ_i² = (λ² + c²e_i)/σ_i²",
                (_s_star / sig2_i - 1 + sp.log(sig2_i / lam2) - sp.log(_s_star / lam2)) / 2)),
)

KL_MINIMUM_VALUE = Identity(
    "diag-kl-minimum-value",
    "the minimum: K_i(λ² + c²e_i) = ½log(1 + c²e_i/λ²) (so ½Σ_i log(1 + c²e_i/λ²) for the step at x_t)",
    kl_diag(_s_star),
    kl_diag_min,
    steps=(Step("λ²/σ_i² + c²e_i/σ_i² = 1 at σ_i² = λ² + c²e_i", sp.log(_s_star / lam2) / 2),),
)

_stationary = sp.solve(sp.diff(kl_diag(sig2_i), sig2_i), sig2_i)
assert len(_stationary) == 1 and sp.simplify(_stationary[0] - _s_star) == 0, _stationary
STATIONARY = Identity(
    "diag-kl-stationary",
    "∂K_i/∂σ_i² = ½(1/σ_i² − (λ² + c²e_i)/σ_i⁴) vanishes at σ_i² = λ² + c²e_i, and sympy.solve finds no other "
    "stationary point (the count is 1)",
    sp.Matrix([[sp.Subs(sp.Derivative(kl_diag(sig2_i), sig2_i), sig2_i, _s_star), len(_stationary)]]),
    sp.Matrix([[0, 1]]),
)

CURVATURE = Identity(
    "diag-kl-curvature",
    "∂²K_i/∂(σ_i²)² = 1/(2(λ² + c²e_i)²) > 0 at σ_i² = λ² + c²e_i: the stationary point is a minimum",
    sp.Subs(sp.Derivative(kl_diag(sig2_i), (sig2_i, 2)), sig2_i, _s_star),
    1 / (2 * _s_star**2),
    nonneg=True,
)

# ================================================================================================ 4. the coefficient
COEFFICIENT = Identity(
    "diag-coefficient",
    "c² = g²ᾱ_t/β̄_t with g = √(β̄_t/α_{t|s}) − √(β̄_s − λ²) the scalar gap of Theorem 1; for DDPM (λ² = β̃_{s|t}) "
    "c² = ᾱ_s β_{t|s}²/β̄_t²; for DDIM (λ² = η²β̃_{s|t}) c = √ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t) is the definition",
    sp.Matrix([[coef_sq, coef_sq.xreplace(ddpm)]]),
    sp.Matrix([[gap**2 * ab_t / bb_t, coef_sq_ddpm]]),
    steps=(Step("c√(β̄_t/ᾱ_t) = √(β̄_t/α_{t|s}) − √(β̄_s − λ²) (theorem1-coefficient-forms); β̄_s − β̃ = α_{t|s}β̄_s²/β̄_t "
                "(ddpm-residual-variance)",
                sp.Matrix([[gap**2 * ab_t / bb_t,
                            (sp.sqrt(ab_s) - sp.sqrt(a_ts * bb_s**2 / bb_t * ab_t / bb_t)) ** 2]])),),
)

# ================================================================================================ 5. SN-DPM
_x0_of_noise = (xt - sp.sqrt(bb_t) * noise) / sp.sqrt(ab_t)  #: x_0 = (x_t − √β̄_t ε)/√ᾱ_t
_x0_star = (xt - sp.sqrt(bb_t) * eps_star) / sp.sqrt(ab_t)  #: E[x_0 | x_t] in Tweedie's noise form
SN_MEAN = Identity(
    "diag-sn-x0-mean",
    "x_0 = (x_t − √β̄_t ε)/√ᾱ_t (the forward relation solved for x_0), so E[x_0 | x_t] = (x_t − √β̄_t E[ε|x_t])/√ᾱ_t "
    "= (x_t − √β̄_t ε*_t)/√ᾱ_t: Tweedie's x̂_0 in noise form (theorem1-mean, tweedie-mean)",
    ExpectGivenState(_x0_of_noise),
    _x0_star,
)

SN_COV = Identity(
    "diag-sn-cov",
    "SN-DPM (x̂_0 = E[x_0 | x_t]): e_i = Var(x_0,i | x_t) = E[(x_0 − E[x_0|x_t])_i² | x_t] = "
    "(β̄_t/ᾱ_t)(E[ε_i² | x_t] − E[ε_i | x_t]²) (x_0 − x̂_0 = −√(β̄_t/ᾱ_t)(ε − ε*); declared conditional moments)",
    ExpectGivenState((_x0_of_noise - _x0_star) ** 2),
    bb_t / ab_t * (h_sn - eps_star**2),
    steps=(Step("x_0 − E[x_0|x_t] = −√(β̄_t/ᾱ_t)(ε − ε*)", ExpectGivenState(bb_t / ab_t * (noise - eps_star) ** 2)),
           Step("expand: E[ε|x_t] = ε*, E[ε²|x_t] = h^SN",
                bb_t / ab_t * (h_sn - 2 * eps_star * eps_star + eps_star**2))),
)

SN_VARIANCE = Identity(
    "diag-sn-target-is-variance",
    "the SN head's target minus the squared mean, E[ε_i² | x_t] − E[ε_i | x_t]², is E[(ε_i − E[ε_i|x_t])² | x_t], the "
    "conditional variance Var(ε_i | x_t): an expectation of a square, hence ≥ 0 (the declared moment fact of "
    "ExpectGivenState; the library clips its estimate (head − ε̂²) at 0 because the estimate need not be)",
    ExpectGivenState((noise - eps_star) ** 2),
    h_sn - eps_star**2,
)

# ================================================================================================ 6. NPR-DPM
_x0_hat_eps = (xt - sp.sqrt(bb_t) * eps) / sp.sqrt(ab_t)  #: x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t for any predictor
NPR_COV = Identity(
    "diag-npr-cov",
    "NPR-DPM (any predictor ε̂, x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t): e_i = E[(x_0 − x̂_0)_i² | x_t] = "
    "(β̄_t/ᾱ_t)E[(ε_i − ε̂_i)² | x_t] (x_0 − x̂_0 = −√(β̄_t/ᾱ_t) w_i, w_i = ε_i − ε̂_i; E[w_i² | x_t] = h^NPR)",
    ExpectResidualGivenState((_x0_of_noise.xreplace({noise: eps + w}) - _x0_hat_eps) ** 2),
    cov_x0_npr,
    steps=(Step("x_0 − x̂_0 = −√(β̄_t/ᾱ_t) w_i", ExpectResidualGivenState(bb_t / ab_t * w**2)),),
)

NPR_DECOMPOSITION = Identity(
    "diag-npr-target-decomposition",
    "E[(ε_i − ε̂_i)² | x_t] = (E[ε_i² | x_t] − E[ε_i | x_t]²) + (ε̂_i − E[ε_i | x_t])²: the NPR target is the SN target "
    "plus the squared error of the mean, so the two agree exactly for the optimal predictor ε̂ = E[ε | x_t]",
    ExpectGivenState((noise - eps) ** 2),
    (h_sn - eps_star**2) + (eps - eps_star) ** 2,
    steps=(Step("expand: E[ε|x_t] = ε*, E[ε²|x_t] = h^SN", h_sn - 2 * eps * eps_star + eps**2),),
)

# ================================================================================================ 7. the scalar forms
SN_AVERAGE = Identity(
    "diag-sn-average",
    "averaged over x_t and the coordinates, the SN target is Theorem 1's covariance: "
    "E_{x_t} mean_i (β̄_t/ᾱ_t)(E[ε_i²|x_t] − E[ε_i|x_t]²) = (β̄_t/ᾱ_t)(1 − Γ_t) (tower: E E[ε²|x_t] = E ε² = 1; "
    "E‖E[ε|x_t]‖²/d = Γ_t; = Lemma 11's E tr Cov(x_0|x_t)/d)",
    ExpectOverStates(bb_t / ab_t * (h_sn - eps_star**2)),
    cov_tweedie,
    steps=(Step("linearity", bb_t / ab_t * (ExpectOverStates(h_sn) - ExpectOverStates(eps_star**2))),),
)

NPR_AVERAGE = Identity(
    "diag-npr-average",
    "averaged over x_t and the coordinates, the NPR target is the scalar residual's: "
    "E_{x_t} mean_i (β̄_t/ᾱ_t)E[(ε_i − ε̂_i)²|x_t] = (β̄_t/ᾱ_t)R_t (tower; R_t = E‖ε − ε̂‖²/d; residual-mean-error-sq)",
    ExpectOverStates(cov_x0_npr),
    bb_t / ab_t * R,
)

SCALAR_FORMS = Identity(
    "diag-scalar-forms",
    "with the per-dimension target replaced by its average (one σ² for all i and x_t), σ² = λ² + c²ē is Theorem 1's "
    "σ*² = λ² + g²(1 − Γ_t) for SN and the residual variance λ² + g²R_t (theory/imperfect.py) for NPR",
    sp.Matrix([[sigma_sq_diag.xreplace({e: ExpectOverStates(bb_t / ab_t * (h_sn - eps_star**2))}),
                sigma_sq_diag.xreplace({e: ExpectOverStates(cov_x0_npr)})]]),
    sp.Matrix([[sigma_sq_opt, sigma_sq_residual]]),
    steps=(Step("diag-sn-average, diag-npr-average",
                sp.Matrix([[lam2 + coef_sq * bb_t / ab_t * (1 - Gamma), lam2 + coef_sq * bb_t / ab_t * R]])),
           Step("c²β̄_t/ᾱ_t = g² (diag-coefficient)",
                sp.Matrix([[lam2 + gap**2 * (1 - Gamma), lam2 + gap**2 * R]]))),
)

# ================================================================================================ 8. diagonal ≤ scalar
SHARED_SIGMA = Identity(
    "diag-shared-sigma-kl",
    "one σ² shared by the coordinates (the scalar choice): mean_i K_i(σ²; e_i) = K(σ²; ē), as K is affine in e_i; so the "
    "scalar problem is the per-dimension one with target ē, minimised at σ² = λ² + c²ē with value "
    "½log(1 + c²ē/λ²) (diag-kl-minimum, diag-kl-minimum-value with e_i → ē)",
    ExpectCoordinate(kl_diag(sig2)),
    kl_diag(sig2, e_bar),
)

_f = sp.log(1 + kappa * e)  #: f(e) = log(1 + κe), κ = c²/λ²
CONCAVE = Identity(
    "diag-log-concave",
    "f(e) = log(1 + κe), κ = c²/λ² > 0: −f''(e) = κ²/(1 + κe)² > 0, so f is strictly concave on e ≥ 0",
    -sp.Derivative(_f, (e, 2)),
    kappa**2 / (1 + kappa * e) ** 2,
    nonneg=True,
)

_fb = _f.xreplace({e: e_bar})
_tangent_gap = _fb + sp.diff(_fb, e_bar) * (e - e_bar) - _f  #: f(ē) + f'(ē)(e − ē) − f(e)
_y = (1 + kappa * e) / (1 + kappa * e_bar)
TANGENT = Identity(
    "diag-tangent-line",
    "f(ē) + f'(ē)(e − ē) − f(e) = φ((1 + κe)/(1 + κē)), φ(u) = u − 1 − log u ≥ 0 (phi-minimum, phi-convex), zero "
    "only at e = ē: f lies below its tangent at ē. Averaging over i, as E_i f'(ē)(e_i − ē) = 0 (diag-tangent-mean), "
    "mean_i ½log(1 + κe_i) = ½log(1 + κē) − ½ mean_i φ(y_i) ≤ ½log(1 + κē): the diagonal optimum's expected KL "
    "½Σ_i log(1 + c²e_i/λ²) is at most the scalar optimum's (d/2)log(1 + c²ē/λ²)",
    _tangent_gap,
    _phi(_y),
    steps=(Step("f(ē) − f(e) = −log((1 + κe)/(1 + κē)); f'(ē)(e − ē) = κ(e − ē)/(1 + κē) = (1 + κe)/(1 + κē) − 1",
                _y - 1 - (_f - _fb)),),
)

TANGENT_MEAN = Identity(
    "diag-tangent-mean",
    "the linear term averages out: E_i[f(ē) + f'(ē)(e_i − ē)] = f(ē) and E_i[(1 + κe_i)/(1 + κē) − 1] = 0 "
    "(E_i e_i = ē), so mean_i f(e_i) = f(ē) − mean_i φ(y_i)",
    sp.Matrix([[ExpectCoordinate(_fb + sp.diff(_fb, e_bar) * (e - e_bar)), ExpectCoordinate(_y - 1)]]),
    sp.Matrix([[_fb, 0]]),
)

EQUALITY = Identity(
    "diag-equality-case",
    "equality case: the tangent gap and its derivative vanish at e = ē (and the gap is φ(y) > 0 for y ≠ 1), so "
    "½Σ_i log(1 + c²e_i/λ²) = (d/2)log(1 + c²ē/λ²) exactly when e_i ≡ ē: the diagonal covariance helps exactly when "
    "the per-dimension targets differ",
    sp.Matrix([[_tangent_gap.xreplace({e: e_bar}), sp.Subs(sp.Derivative(_tangent_gap, e), e, e_bar)]]),
    sp.Matrix([[0, 0]]),
)

_es = sp.symbols("e_1 e_2 e_3", nonnegative=True)
_eb3 = sum(_es) / 3
_jensen3 = 3 * sp.log(1 + kappa * _eb3) - sum(sp.log(1 + kappa * ei) for ei in _es)
JENSEN3 = Identity(
    "diag-jensen-d3",
    "the inequality written out for d = 3: 3 log(1 + κē) − Σ_{i≤3} log(1 + κe_i) = Σ_{i≤3} φ((1 + κe_i)/(1 + κē)) "
    "with ē = (e_1 + e_2 + e_3)/3 (the linear terms cancel exactly)",
    _jensen3,
    sum(_phi((1 + kappa * ei) / (1 + kappa * _eb3)) for ei in _es),
)

# ================================================================================================ the result
DIAGONAL_COVARIANCE = Result(
    id="diagonal-covariance",
    title="Per-dimension (diagonal) reverse covariance: SN-DPM and NPR-DPM",
    paper="Extended Analytic-DPM (Bao et al., ICML 2022): the diagonal covariance of SN-DPM and NPR-DPM; facts §6.2. "
          "The extended paper's full text was not consulted: the formulas are those of its code (X "
          "core/diffusion/dtdpm.py, core/criterions/ddpm.py), derived here",
    summary="With the reverse mean fixed at μ̃_{s|t}(x_t, x̂_0(x_t)) and a per-coordinate, state-dependent variance "
            "σ_i²(x_t), the expected KL of a transition is E_{x_t} ½Σ_i[λ²/σ_i² + c²e_i/σ_i² − 1 + log(σ_i²/λ²)], "
            "e_i = E[(x_0 − x̂_0)_i² | x_t], minimised exactly at σ_i² = λ² + c²e_i with value ½Σ_i log(1 + c²e_i/λ²); "
            "c² = g²ᾱ_t/β̄_t (DDPM: ᾱ_sβ_{t|s}²/β̄_t²). SN-DPM: e_i = (β̄_t/ᾱ_t)(E[ε_i²|x_t] − E[ε_i|x_t]²); NPR-DPM: "
            "e_i = (β̄_t/ᾱ_t)E[(ε_i − ε̂_i)²|x_t]. Averaged, these are (β̄_t/ᾱ_t)(1 − Γ_t) and (β̄_t/ᾱ_t)R_t, giving "
            "Theorem 1's σ*² and the residual variance; by concavity of log(1 + κe) the diagonal optimum is never "
            "worse than the scalar one, with equality exactly when e_i ≡ ē.",
    identities=(GAUSSIAN_KL_1D, MEAN_ERROR, EXPECTED_KL, KL_MINIMUM, KL_MINIMUM_VALUE, STATIONARY, CURVATURE,
                COEFFICIENT, SN_MEAN, SN_COV, SN_VARIANCE, NPR_COV, NPR_DECOMPOSITION, SN_AVERAGE, NPR_AVERAGE,
                SCALAR_FORMS, SHARED_SIGMA, CONCAVE, TANGENT, TANGENT_MEAN, EQUALITY, JENSEN3),
    expressions=(
        Expression("diag_gaussian_kl", kl_1d(m, lam2, mu, sig2), (m, lam2, mu, sig2),
                   "KL(N(m, λ²) ‖ N(μ, σ²)), one coordinate"),
        Expression("diag_kl_term", kl_diag(sig2_i), (ab_s, ab_t, lam2, sig2_i, e),
                   "E[KL_i | x_t] = ½[λ²/σ_i² + c²e_i/σ_i² − 1 + log(σ_i²/λ²)]"),
        Expression("diag_kl_min", kl_diag_min, (ab_s, ab_t, lam2, e), "½log(1 + c²e_i/λ²), the minimum over σ_i²"),
        Expression("diag_coef_sq", coef_sq, (ab_s, ab_t, lam2), "c² = (√ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t))² = g²ᾱ_t/β̄_t"),
        Expression("diag_sigma_sq", sigma_sq_diag, (ab_s, ab_t, lam2, e), "σ_i² = λ² + c²e_i, any λ²"),
        Expression("diag_sigma_sq_ddpm", sigma_sq_diag_ddpm, (ab_s, ab_t, e),
                   "β̃_{s|t} + ᾱ_sβ_{t|s}²/β̄_t² · e_i"),
        Expression("diag_sigma_sq_ddim", sigma_sq_diag_ddim, (ab_s, ab_t, eta, e),
                   "η²β̃_{s|t} + (√ᾱ_s − √((β̄_s − η²β̃)ᾱ_t/β̄_t))² e_i"),
        Expression("sn_covariance", cov_x0_sn, (ab_t, h_sn, eps), "SN: (β̄_t/ᾱ_t)(h − ε̂²), h ≈ E[ε²|x_t], ε̂ ≈ E[ε|x_t]"),
        Expression("npr_covariance", cov_x0_npr, (ab_t, h_npr), "NPR: (β̄_t/ᾱ_t)h, h ≈ E[(ε − ε̂)²|x_t]"),
    ),
    functions=(
        "analytic_dpm.covariance.cov_x0",
        "analytic_dpm.covariance.diagonal_sigma_sq",
        "analytic_dpm.toy.covariance.exact_eps_sq",
        "analytic_dpm.toy.covariance.cov_x0_diag",
        "analytic_dpm.toy.covariance.optimal_diagonal_sigma_sq",
        "analytic_dpm.likelihood.gaussian_kl",
    ),
    tests=("tests/test_theory_covariance.py::test_diag_gaussian_kl_numbers",
           "tests/test_theory_covariance.py::test_diag_kl_minimiser_numbers",
           "tests/test_theory_covariance.py::test_diag_sigma_sq_families_numbers",
           "tests/test_theory_covariance.py::test_sn_npr_targets_by_quadrature",
           "tests/test_theory_covariance.py::test_averages_give_scalar_forms",
           "tests/test_theory_covariance.py::test_diagonal_beats_scalar",
           "tests/test_covariance.py::test_library_matches_theory_diagonal_covariance"),
    notes=(
        "Source: paper E's full text was not consulted; the formulas are those of its code X (facts §6.2), which "
        "plugs clip(Cov_diag(x_t), 0, r²) into σ_i² = λ² + c²·Cov_diag; the clip is Theorem 2's per-coordinate bound "
        "(Lemma 12 per coordinate: Var(x_0,i | x_t) ≤ r²) and is a policy of the library, not part of the optimum.",
        "Proof order: diag-gaussian-kl-1d → diag-mean-error → diag-expected-kl → diag-kl-minimum (with "
        "diag-kl-stationary and diag-kl-curvature as the calculus check) → diag-kl-minimum-value. The targets: "
        "diag-sn-x0-mean → diag-sn-cov (optimal mean) and diag-npr-cov (any mean), joined by "
        "diag-npr-target-decomposition. Nothing assumes the mean optimal before diag-sn-x0-mean.",
        "Declared moment fact: E[ε_i² | x_t] − E[ε_i | x_t]² = Var(ε_i | x_t) ≥ 0 (diag-sn-target-is-variance writes it "
        "as the conditional expectation of a square; no identity assumes its sign).",
        "Diagonal vs scalar: the same argument with the mean over (i, x_t) in place of the mean over i shows that the "
        "state-dependent diagonal optimum E_{x_t}½Σ_i log(1 + c²e_i(x_t)/λ²) is at most the scalar optimum "
        "(d/2)log(1 + c²ē/λ²), ē = E_{x_t} mean_i e_i(x_t) — Theorem 1's (β̄_t/ᾱ_t)(1 − Γ_t) for SN, "
        "(β̄_t/ᾱ_t)R_t for NPR (diag-sn-average, diag-npr-average).",
    ),
)

RESULTS = (DIAGONAL_COVARIANCE,)
