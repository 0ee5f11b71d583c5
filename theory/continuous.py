"""Continuous time (P App. E; facts §6.3): the optimal variance between any two times s < t of a diffusion.

App. E uses Kingma et al.'s parametrisation q(z_t | x_0) = N(√ᾱ(t) x_0, β̄(t) I) with α(t|s) = ᾱ(t)/ᾱ(s) and
β(t|s) = β̄(t) − α(t|s) β̄(s) (the paper writes α_t, β_t for ᾱ(t), β̄(t)). Here ᾱ(t), β̄(t) are independent positive
functions; the variance-preserving (VP) case β̄ = 1 − ᾱ gives back the discrete formulas, and the VP SDE
dz = −½β(τ) z dτ + √β(τ) dw has ᾱ(t) = exp(−∫_0^t β(τ) dτ).
"""

from __future__ import annotations

import sympy as sp

from . import symbols as sy
from .core import Expression, Identity, Result, Step
from .symbols import Gamma, S, a_ts, ab_s, ab_t, b_ts, bb_t, x0

# ------------------------------------------------------------------------------------------------ symbols
As, At = sp.Symbol("ᾱ(s)", positive=True), sp.Symbol("ᾱ(t)", positive=True)
Bs, Bt = sp.Symbol("β̄(s)", positive=True), sp.Symbol("β̄(t)", positive=True)
Ats, Bts = sp.Symbol("α(t|s)", positive=True), sp.Symbol("β(t|s)", positive=True)
kappa = sp.Symbol("κ", positive=True)  #: β(t|s) > 0 written as β̄(t) = α(t|s) β̄(s) + κ
zs, zt = sp.Symbol("z_s", real=True), sp.Symbol("z_t", real=True)
tau = sp.Symbol("τ", positive=True)
s_, t_, h = sp.Symbol("s", positive=True), sp.Symbol("t", positive=True), sp.Symbol("h", positive=True)
bmin, bmax = sp.Symbol("β_min", positive=True), sp.Symbol("β_max", positive=True)
n_, N_ = sp.Symbol("n", positive=True, integer=True), sp.Symbol("N", positive=True, integer=True)
i_ = sp.Symbol("i", positive=True, integer=True)
beta = sp.Function("β")  #: the VP SDE's rate β(τ)

sy.DEFINITIONS.update({Ats: At / As, Bts: Bt - At / As * Bs})
sy.LATEX_NAMES.update({
    As: r"\bar\alpha(s)", At: r"\bar\alpha(t)", Bs: r"\bar\beta(s)", Bt: r"\bar\beta(t)", Ats: r"\alpha(t|s)",
    Bts: r"\beta(t|s)", kappa: r"\kappa", zs: "z_s", zt: "z_t", tau: r"\tau", s_: "s", t_: "t", h: "h",
    bmin: r"\beta_{\min}", bmax: r"\beta_{\max}", n_: "n", N_: "N", i_: "i",
})
_positive_gap = {Bt: At / As * Bs + kappa}

# ------------------------------------------------------------------------------------------------ general (Kingma)
_log_joint = -(zt - sp.sqrt(Ats) * zs) ** 2 / (2 * Bts) - (zs - sp.sqrt(As) * x0) ** 2 / (2 * Bs)
_p = sp.Poly(sp.expand(_log_joint), zs)
_prec, _lin = -2 * _p.coeff_monomial(zs**2), _p.coeff_monomial(zs)
beta_tilde_c = Bs * Bts / Bt
c_c = sp.sqrt(As) * Bts / Bt  #: x_0 coefficient of the posterior mean

E_POSTERIOR = Identity(
    "app-e-posterior",
    "q(z_t | z_s) = N(√α(t|s) z_s, β(t|s)), q(z_s | x_0) = N(√ᾱ(s) x_0, β̄(s)): the posterior q(z_s | z_t, x_0) has "
    "variance β̃(s|t) = β̄(s)β(t|s)/β̄(t) and x_0 coefficient √ᾱ(s) β(t|s)/β̄(t) in its mean (completing the square "
    "in z_s: precision α(t|s)/β(t|s) + 1/β̄(s); then α(t|s) β̄(s) + β(t|s) = β̄(t))",
    sp.Matrix([[1 / _prec, _lin.coeff(x0) / _prec]]),
    sp.Matrix([[beta_tilde_c, c_c]]),
    assume=_positive_gap,
)

sigma_sq_continuous = Bts / Ats * (1 - Bts * S)
E_VARIANCE = Identity(
    "app-e-optimal-variance",
    "σ*²(s|t) = β̃(s|t) + c²·E tr Cov(x_0|z_t)/d with Lemma 11's (β̄(t)/ᾱ(t))(1 − β̄(t)S_t): "
    "= (β(t|s)/α(t|s))(1 − β(t|s) E‖∇log q(z_t)‖²/d)",
    beta_tilde_c + c_c**2 * Bt / At * (1 - Bt * S),
    sigma_sq_continuous,
    steps=(Step("common factor β(t|s)/(α(t|s) β̄(t)); α(t|s) β̄(s) + β(t|s) = β̄(t)",
                Bts / (Ats * Bt) * (Ats * Bs + Bts - Bts * Bt * S)),),
    assume=_positive_gap,
)

_vp = {As: ab_s, At: ab_t, Bs: 1 - ab_s, Bt: 1 - ab_t}
E_VP = Identity(
    "app-e-vp-is-discrete",
    "variance preserving (β̄ = 1 − ᾱ): β(t|s) = β̄(t) − α(t|s)β̄(s) = 1 − α(t|s), and App. E's σ*² is Corollary 2 on "
    "a trajectory, (β_{t|s}/α_{t|s})(1 − β_{t|s}Γ_t/β̄_t) with Γ_t = β̄_t S_t",
    sp.Matrix([[sy.expand_definitions(Bts).xreplace(_vp), sy.expand_definitions(sigma_sq_continuous).xreplace(_vp)]]),
    sp.Matrix([[1 - a_ts, b_ts / a_ts * (1 - b_ts * Gamma / bb_t)]]),
    assume={Gamma: bb_t * S},
)

# ------------------------------------------------------------------------------------------------ the VP SDE
beta_lin = bmin + tau * (bmax - bmin)  #: the VP SDE of Song et al. (β_min = 0.1, β_max = 20)


def _integral(lo, hi, rate=beta_lin):
    return sp.Integral(rate, (tau, lo, hi))


E_SKIP = Identity(
    "vp-sde-skip-alpha",
    "ᾱ(t) = exp(−∫_0^t β(τ)dτ) gives α(t|s) = ᾱ(t)/ᾱ(s) = exp(−∫_s^t β(τ)dτ) (linear β(τ) = β_min + τ(β_max − β_min))",
    sp.exp(-_integral(0, t_)) / sp.exp(-_integral(0, s_)),
    sp.exp(-_integral(s_, t_)),
)

E_DISCRETE = Identity(
    "vp-sde-discretisation",
    "the N-step schedule β_i = 1 − exp(−∫_{(i−1)/N}^{i/N} β) has ᾱ_n = Π_{i≤n}(1 − β_i) = ᾱ(n/N) exactly: "
    "Σ_{i=1}^n ∫_{(i−1)/N}^{i/N} β = ∫_0^{n/N} β",
    sp.Sum(_integral((i_ - 1) / N_, i_ / N_), (i_, 1, n_)),
    _integral(0, n_ / N_),
)

_I = sp.Integral(beta(tau), (tau, t_ - h, t_))  #: ∫_{t−h}^t β(τ)dτ, s = t − h
E_LEIBNIZ = Identity(
    "continuous-skip-taylor",
    "I(h) = ∫_{t−h}^t β(τ)dτ has I(0) = 0, I'(0) = β(t), I''(0) = −β'(t) (Leibniz), so "
    "α(t|t−h) = exp(−β(t)h + β'(t)h²/2 + O(h³))",
    sp.Matrix([[sp.Subs(_I, h, 0), sp.Subs(sp.Derivative(_I, h), h, 0), sp.Subs(sp.Derivative(_I, (h, 2)), h, 0)]]),
    sp.Matrix([[0, beta(t_), -sp.Derivative(beta(t_), t_)]]),
)

_I2 = beta(t_) * h - sp.Derivative(beta(t_), t_) * h**2 / 2
_a_h = sp.exp(-_I2)
_b_h = 1 - _a_h
E_LIMIT = Identity(
    "continuous-limit-variance",
    "s = t − h → t: σ*² = (β(t|s)/α(t|s))(1 − β(t|s)S_t) = β(t)h + (β(t)²(½ − S_t) − β'(t)/2)h² + O(h³); the "
    "first order term β(t)·dt is the same for every data distribution, the score enters at order h²",
    _b_h / _a_h * (1 - _b_h * S),
    beta(t_) * h + (beta(t_) ** 2 * (sp.Rational(1, 2) - S) - sp.Derivative(beta(t_), t_) / 2) * h**2,
    order=(h, 3),
)

E_LIMIT_J = Identity(
    "continuous-limit-cost",
    "J(t − h, t) = log(1 − β(t|s) S_t) = −β(t) S_t h + O(h²) (App. E.2's cost on a fine grid)",
    sp.log(1 - _b_h * S),
    -beta(t_) * S * h,
    order=(h, 2),
)

_L = Bs * Bts / Bt
_U = Bts / Ats
E_BETWEEN = Identity(
    "continuous-between-bounds",
    "with L = β̃(s|t) and U = β(t|s)/α(t|s) (Corollary 3 in continuous time): U − L = β(t|s)²/(α(t|s)β̄(t)) = O(h²), and "
    "(σ*² − L)/(U − L) = 1 − β̄(t) S_t = 1 − Γ_t for every h: σ*² keeps its place between the bounds as s → t",
    sp.Matrix([[_U - _L, (sigma_sq_continuous - _L) / (_U - _L)]]),
    sp.Matrix([[Bts**2 / (Ats * Bt), 1 - Bt * S]]),
    assume=_positive_gap,
)

_B = sp.integrate(beta_lin, (tau, 0, t_))  #: ∫_0^t β for the linear VP SDE
_Bs = _B.xreplace({t_: s_})
_a_vp = sp.exp(-(_B - _Bs))
_bbt_vp = 1 - sp.exp(-_B)
sigma_sq_vp = (1 - _a_vp) / _a_vp * (1 - (1 - _a_vp) * Gamma / _bbt_vp)

CONTINUOUS = Result(
    id="continuous-time",
    title="Continuous time (App. E): σ*²(s|t) = (β(t|s)/α(t|s))(1 − β(t|s) E‖∇log q_t‖²/d) and the limit s → t",
    paper="P App. E.1 (optimal variance), E.2 (cost J on a grid); facts §6.3",
    summary="For Kingma's parametrisation, σ*²(s|t) = (β(t|s)/α(t|s))(1 − β(t|s)S_t) with β(t|s) = β̄(t) − α(t|s)β̄(s); "
            "for the VP SDE α(t|s) = exp(−∫_s^t β) and β(t|s) = 1 − α(t|s), the discrete Corollary 2. As s → t it is "
            "β(t)(t − s) + O((t − s)²).",
    identities=(E_POSTERIOR, E_VARIANCE, E_VP, E_SKIP, E_DISCRETE, E_LEIBNIZ, E_LIMIT, E_LIMIT_J, E_BETWEEN),
    expressions=(
        Expression("alpha_bar_vp", sp.exp(-_B), (t_, bmin, bmax), "ᾱ(t) of the linear VP SDE"),
        Expression("sigma_sq_vp", sigma_sq_vp, (s_, t_, Gamma, bmin, bmax), "App. E σ*²(s|t), noise form Γ_t"),
        Expression("sigma_sq_limit", beta_lin.xreplace({tau: t_}) * h + (beta_lin.xreplace({tau: t_}) ** 2
                   * (sp.Rational(1, 2) - S) - (bmax - bmin) / 2) * h**2, (t_, h, S, bmin, bmax),
                   "second-order expansion in h = t − s"),
    ),
    functions=("analytic_dpm.variance.ddpm_sigma_sq_opt", "analytic_dpm.variance.ddpm_bounds",
               "analytic_dpm.schedules.Schedule.from_betas", "analytic_dpm.continuous.exact_sigma_sq"),
    tests=("tests/test_theory.py::test_continuous_time_matches_library",
           "tests/test_theory.py::test_continuous_limit_rate",
           "tests/test_continuous.py::test_exact_sigma_sq_matches_app_e"),
    notes=("Γ_t between grid points: the paper interpolates linearly; the formula itself holds at any t.",),
)

RESULTS = (CONTINUOUS,)
