"""The three steps of Theorem 1's proof (P App. A): moment matching (Lemmas 1, 9), the law of total variance
(Lemma 13) and the score representation of the posterior moments (Lemma 11, Tweedie).

Per coordinate again (isotropic covariances). Expectations over an arbitrary distribution are written with
:class:`Expect`, the expectation of a polynomial in independent random symbols whose moments it declares (δ: mean 0, variance v;
z: standard normal); ``Expect(...).doit()`` applies linearity
and independence, which is all the proofs need. Nothing else about the distributions is assumed.
"""

from __future__ import annotations

import sympy as sp

from . import symbols as sy
from .core import Expression, Identity, Result, Step
from .forward import coef_x0, mu_tilde_at
from .symbols import Gamma, S, ab_t, bb_t, cov, lam2, score, x0, xt

# ------------------------------------------------------------------------------------------------ random symbols
delta = sp.Symbol("δ", real=True)  #: x − E x (moment matching) or x_0 − E[x_0 | x_t] (Lemma 13); variance v
z = sp.Symbol("z", real=True)  #: standard normal, independent of δ
m = sp.Symbol("m", real=True)  #: a mean
v = sp.Symbol("v", positive=True)  #: a variance per coordinate, tr Cov/d
mu = sp.Symbol("μ", real=True)  #: the Gaussian's mean (a free parameter)
sig2 = sp.Symbol("σ²", positive=True)  #: the Gaussian's variance (a free parameter)
y = sp.Symbol("y", positive=True)
x = sp.Symbol("x", real=True)
A = sp.Symbol("A", positive=True)  #: a variance of q_t, e.g. ᾱ_t v + β̄_t for Gaussian data

_NORMAL = (1, 0, 1, 0, 3)  #: E z^p, p = 0..4, for z ~ N(0, 1)


class Expect(sp.Function):
    """E[·] of a polynomial in independent random symbols with the moments in ``moments`` (symbol → (E X⁰, E X¹, …)):
    δ has mean 0 and variance v, z is standard normal. Evaluated by linearity and independence (``doit``)."""

    nargs = 1
    moments = {delta: (1, 0, v), z: _NORMAL}

    def doit(self, deep=True, **hints):
        arg = self.args[0].doit(deep=deep, **hints) if deep else self.args[0]
        rvs = [s for s in self.moments if arg.has(s)]
        if not rvs:
            return arg
        total = sp.Integer(0)
        for monom, coeff in sp.Poly(sp.expand(arg), *rvs).terms():
            term = coeff
            for s, p in zip(rvs, monom):
                term *= self.moments[s][p]
            total += term
        return total

    def _sympystr(self, printer):
        return f"E[{printer._print(self.args[0])}]"

    def _latex(self, printer, exp=None):
        body = rf"\mathbb{{E}}\left[{printer._print(self.args[0])}\right]"
        return body if exp is None else rf"{body}^{{{exp}}}"


def normal_pdf(xx, mean, var):
    return sp.exp(-(xx - mean) ** 2 / (2 * var)) / sp.sqrt(2 * sp.pi * var)


sy.LATEX_NAMES.update({delta: r"\delta", z: "z", m: "m", v: "v", mu: r"\mu", sig2: r"\sigma^2", y: "y", x: "x",
                       A: "A"})

# ================================================================================================ moment matching
_F = sp.log(sig2) / 2 + (v + (m - mu) ** 2) / (2 * sig2)  #: cross-entropy per coordinate, less ½log 2π
_phi = y - 1 - sp.log(y)

LEMMA1 = Identity(
    "lemma1-two-moments",
    "cross-entropy to N(μ, σ²): −E log N(x | μ, σ²) = ½log(2πσ²) + (v + (m − μ)²)/(2σ²) for any q with mean m and "
    "variance v (x = m + δ)",
    sp.log(2 * sp.pi * sig2) / 2 + Expect((m + delta - mu) ** 2) / (2 * sig2),
    sp.log(2 * sp.pi * sig2) / 2 + (v + (m - mu) ** 2) / (2 * sig2),
    steps=(Step("expand the square: E δ = 0, E δ² = v",
                sp.log(2 * sp.pi * sig2) / 2 + (Expect(delta**2) + 2 * (m - mu) * Expect(delta) + (m - mu) ** 2)
                / (2 * sig2)),),
)

KL_EXCESS = Identity(
    "moment-matching-excess",
    "with F(μ, σ²) = ½log σ² + (v + (m − μ)²)/(2σ²) (KL to N(μ, σ²) up to terms free of μ, σ²): "
    "F(μ, σ²) − F(m, v) = (m − μ)²/(2σ²) + ½φ(v/σ²), φ(y) = y − 1 − log y",
    _F - _F.xreplace({mu: m, sig2: v}),
    (m - mu) ** 2 / (2 * sig2) + _phi.xreplace({y: v / sig2}) / 2,
)

PHI_MINIMUM = Identity(
    "phi-minimum",
    "φ(y) = y − 1 − log y has φ(1) = 0 and φ'(1) = 0",
    sp.Matrix([[sp.Subs(_phi, y, 1), sp.Subs(sp.Derivative(_phi, y), y, 1)]]),
    sp.Matrix([[0, 0]]),
)

PHI_CONVEX = Identity(
    "phi-convex",
    "φ'' = 1/y² > 0: φ ≥ 0 with equality only at y = 1, so μ = m, σ² = v is the unique minimiser of F",
    sp.Derivative(_phi, (y, 2)),
    1 / y**2,
    nonneg=True,
)

_stationary = sp.solve([sp.diff(_F, mu), sp.diff(_F, sig2)], [mu, sig2], dict=True)
MM_STATIONARY = Identity(
    "moment-matching-stationary-point",
    "∂F/∂μ and ∂F/∂σ² vanish at (μ, σ²) = (m, v), and sympy.solve finds no other stationary point (the count is 1)",
    sp.Matrix([[sp.Subs(sp.Derivative(_F, mu), (mu, sig2), (m, v)), sp.Subs(sp.Derivative(_F, sig2), (mu, sig2), (m, v)),
                len(_stationary)]]),
    sp.Matrix([[0, 0, 1]]),
)
assert _stationary == [{mu: m, sig2: v}], _stationary

MOMENT_MATCHING = Result(
    id="moment-matching",
    title="Moment matching: the Gaussian closest in KL matches the mean and covariance",
    paper="P Lemmas 1, 2 and 9 (App. A.1); used for Theorem 1 (App. A.2)",
    summary="min over (μ, σ²) of KL(q ‖ N(μ, σ² I)) is attained at μ = E_q x, σ² = tr Cov_q/d. For the reverse "
            "transition p(x_s | x_t) = N(μ(x_t), σ² I) with σ² shared over x_t: μ*(x_t) = E[x_s | x_t], "
            "σ*² = E tr Cov(x_s | x_t)/d.",
    identities=(LEMMA1, KL_EXCESS, PHI_MINIMUM, PHI_CONVEX, MM_STATIONARY),
    expressions=(
        Expression("kl_gaussians", (sp.log(sig2 / v) + (v + (m - mu) ** 2) / sig2 - 1) / 2, (m, v, mu, sig2),
                   "KL(N(m, v) ‖ N(μ, σ²)) per coordinate"),
    ),
    functions=("analytic_dpm.likelihood.gaussian_kl", "analytic_dpm.likelihood.exact_mean_transition_kl"),
    tests=("tests/test_theory.py::test_moment_matching_against_library",),
    notes=(
        "Lemma 2: KL(q ‖ p) = KL(N(m, Σ_q) ‖ p) + H(N(m, Σ_q)) − H(q); only the first term depends on p.",
        "Lemma 9: the joint KL splits into one term per transition; each is minimised by matching the first two "
        "moments of q(x_s | x_t), with a single σ² for all x_t, hence σ*² = E_{x_t} tr Cov(x_s | x_t)/d.",
    ),
)

# ================================================================================================ Lemma 13
_m0 = sp.Symbol("x̂_0", real=True)  #: E[x_0 | x_t]
sy.LATEX_NAMES[_m0] = r"\mathbb{E}[x_0|x_t]"

LEMMA13_MEAN = Identity(
    "lemma13-mean",
    "E[x_s | x_t] = E[μ̃_{s|t}(x_t, x_0) | x_t] = μ̃_{s|t}(x_t, E[x_0 | x_t]) (μ̃ is affine in x_0; x_0 = x̂_0 + δ)",
    Expect(mu_tilde_at(_m0 + delta, xt)),
    mu_tilde_at(_m0, xt),
)


class ExpectL13(Expect):
    """E[· | x_t] with δ = x_0 − E[x_0 | x_t] of variance v_t = tr Cov(x_0 | x_t)/d, and z ~ N(0, 1) independent."""

    moments = {delta: (1, 0, cov), z: _NORMAL}


_lam = sp.sqrt(lam2)
LEMMA13_VARIANCE = Identity(
    "lemma13-variance",
    "law of total variance: x_s = μ̃_{s|t}(x_t, x_0) + λz, so Var(x_s | x_t) = λ² + c²·Var(x_0 | x_t), "
    "c = √ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t); averaging, σ*² = λ² + c² v_t with v_t = E tr Cov(x_0 | x_t)/d",
    ExpectL13((mu_tilde_at(_m0 + delta, xt) + _lam * z - mu_tilde_at(_m0, xt)) ** 2),
    lam2 + coef_x0**2 * cov,
    steps=(Step("μ̃(x_t, x̂_0 + δ) − μ̃(x_t, x̂_0) = c δ", ExpectL13((coef_x0 * delta + _lam * z) ** 2)),),
)

LEMMA13 = Result(
    id="lemma13",
    title="Lemma 13: the moments of q(x_s | x_t) from those of q(x_0 | x_t)",
    paper="P Lemma 13 (App. A.1), Theorem 1's second step; on a trajectory P §4",
    summary="μ*(x_t) = μ̃_{s|t}(x_t, E[x_0 | x_t]) and σ*² = λ² + c²·E tr Cov(x_0 | x_t)/d.",
    identities=(LEMMA13_MEAN, LEMMA13_VARIANCE),
    expressions=(Expression("sigma_sq_from_cov", lam2 + coef_x0**2 * cov, (sy.ab_s, ab_t, lam2, cov),
                            "λ² + c² v_t"),),
    functions=("analytic_dpm.variance.sigma_sq_from_posterior_cov",),
    tests=("tests/test_theory.py::test_lemma13_matches_library",),
)

# ================================================================================================ Lemma 11 (Tweedie)
_kernel = normal_pdf(xt, sp.sqrt(ab_t) * x0, bb_t)  #: q(x_t | x_0)
_M1, _M2 = sp.Symbol("M_1", real=True), sp.Symbol("M_2", positive=True)
_q1, _q2 = sp.Symbol("ρ₁", real=True), sp.Symbol("ρ₂", real=True)  #: q'/q and q''/q at x_t
_hess = sp.Symbol("H_t", real=True)  #: E ∂²log q_t / ∂x² per coordinate
sy.LATEX_NAMES.update({_M1: "M_1", _M2: "M_2", _q1: r"\rho_1", _q2: r"\rho_2", _hess: "H_t"})

KERNEL_DERIVATIVES = Identity(
    "gaussian-kernel-derivatives",
    "for φ = N(x_t | √ᾱ_t x_0, β̄_t): φ'/φ = −(x_t − √ᾱ_t x_0)/β̄_t and φ''/φ = (x_t − √ᾱ_t x_0)²/β̄_t² − 1/β̄_t",
    sp.Matrix([[sp.Derivative(_kernel, xt) / _kernel, sp.Derivative(_kernel, (xt, 2)) / _kernel]]),
    sp.Matrix([[-(xt - sp.sqrt(ab_t) * x0) / bb_t, (xt - sp.sqrt(ab_t) * x0) ** 2 / bb_t**2 - 1 / bb_t]]),
)

TWEEDIE_MEAN = Identity(
    "tweedie-mean",
    "q_t = ∫ q_0(x_0) φ dx_0, so q'/q = E[φ'/φ | x_t] = −M_1/β̄_t with M_1 = E[x_t − √ᾱ_t x_0 | x_t]: "
    "E[x_0 | x_t] = (x_t − M_1)/√ᾱ_t = (x_t + β̄_t ∇log q_t)/√ᾱ_t",
    (xt - _M1) / sp.sqrt(ab_t),
    (xt + bb_t * score) / sp.sqrt(ab_t),
    assume={_M1: -bb_t * score},
)

TWEEDIE_VARIANCE = Identity(
    "tweedie-variance",
    "likewise ρ₂ = q''/q = E[φ''/φ | x_t] = M_2/β̄_t² − 1/β̄_t with M_2 = E[(x_t − √ᾱ_t x_0)² | x_t], and M_1 = −β̄_t ρ₁ "
    "(ρ₁ = q'/q); Var(x_0 | x_t) = (M_2 − M_1²)/ᾱ_t = (β̄_t/ᾱ_t)(1 + β̄_t ∂²log q_t), ∂²log q = ρ₂ − ρ₁²",
    (_M2 - _M1**2) / ab_t,
    bb_t / ab_t * (1 + bb_t * (_q2 - _q1**2)),
    assume={_M1: -bb_t * _q1, _M2: bb_t**2 * _q2 + bb_t},
)

_mu_any, _A_any = sp.Symbol("μ_t", real=True), sp.Symbol("A_t", positive=True)
sy.LATEX_NAMES.update({_mu_any: r"\mu_t", _A_any: "A_t"})
BOUNDARY_TERMS = Identity(
    "tweedie-integration-by-parts",
    "E ∂²log q = ∫ q'' dx − E (q'/q)² and ∫ q'' dx = 0 (shown for a Gaussian kernel N(μ_t, A_t); q_t is an average "
    "of such kernels over x_0), hence E ∂²log q_t = −E‖∇log q_t‖²/d",
    sp.Integral(sp.diff(normal_pdf(x, _mu_any, _A_any), x, 2), (x, -sp.oo, sp.oo)),
    sp.Integer(0),
)

LEMMA11 = Identity(
    "lemma11",
    "E tr Cov(x_0 | x_t)/d = (β̄_t/ᾱ_t)(1 + β̄_t H_t) with H_t = E ∂²log q_t = −S_t: = (β̄_t/ᾱ_t)(1 − β̄_t S_t) "
    "= (β̄_t/ᾱ_t)(1 − Γ_t), Γ_t = β̄_t S_t = E‖ε*_t‖²/d",
    bb_t / ab_t * (1 + bb_t * _hess),
    bb_t / ab_t * (1 - Gamma),
    steps=(Step("integration by parts: H_t = −S_t", bb_t / ab_t * (1 - bb_t * S)),
           Step("noise form Γ_t = β̄_t S_t (ε* = −√β̄_t ∇log q_t)", bb_t / ab_t * (1 - Gamma))),
    assume={_hess: -S, Gamma: bb_t * S},
)

_score_gauss = sp.diff(sp.log(normal_pdf(x, _mu_any, _A_any)), x)
GAUSS_SCORE_SQ = Identity(
    "gaussian-mean-square-score",
    "q_t = N(μ_t, A_t): E (∇log q_t)² = ∫ ((x − μ_t)/A_t)² N(x | μ_t, A_t) dx = 1/A_t",
    sp.Integral(_score_gauss**2 * normal_pdf(x, _mu_any, _A_any), (x, -sp.oo, sp.oo)),
    1 / _A_any,
)

TWEEDIE_GAUSSIAN = Identity(
    "tweedie-gaussian",
    "x_0 ~ N(m, v) (one eigen-direction): Var(x_0 | x_t) = 1/(1/v + ᾱ_t/β̄_t) = vβ̄_t/(ᾱ_t v + β̄_t), and with "
    "S_t = 1/(ᾱ_t v + β̄_t) it equals (β̄_t/ᾱ_t)(1 − β̄_t S_t)",
    1 / (1 / v + ab_t / bb_t),
    bb_t / ab_t * (1 - bb_t / (ab_t * v + bb_t)),
    steps=(Step("posterior precision 1/v + ᾱ_t/β̄_t", v * bb_t / (ab_t * v + bb_t)),),
)

# a two-component mixture in 1-D, pointwise: densities n_k of the components of q_t at x_t are free positive symbols
_w = sp.symbols("w_1 w_2", positive=True)
_mk = sp.symbols("m_1 m_2", real=True)
_vk = sp.symbols("v_1 v_2", positive=True)
_nk = sp.symbols("n_1 n_2", positive=True)
_Ak = [ab_t * vk + bb_t for vk in _vk]
_q = sum(wk * nk for wk, nk in zip(_w, _nk))
_dq = sum(wk * nk * (-(xt - sp.sqrt(ab_t) * mk) / Ak) for wk, nk, mk, Ak in zip(_w, _nk, _mk, _Ak))
_d2q = sum(wk * nk * ((xt - sp.sqrt(ab_t) * mk) ** 2 / Ak**2 - 1 / Ak) for wk, nk, mk, Ak in zip(_w, _nk, _mk, _Ak))
_post_m = [mk + sp.sqrt(ab_t) * vk * (xt - sp.sqrt(ab_t) * mk) / Ak for mk, vk, Ak in zip(_mk, _vk, _Ak)]
_post_v = [vk * bb_t / Ak for vk, Ak in zip(_vk, _Ak)]
_resp = [wk * nk / _q for wk, nk in zip(_w, _nk)]
_mix_mean = sum(rk * pm for rk, pm in zip(_resp, _post_m))
_mix_var = sum(rk * (pv + pm**2) for rk, pv, pm in zip(_resp, _post_v, _post_m)) - _mix_mean**2

TWEEDIE_MIXTURE = Identity(
    "tweedie-mixture-pointwise",
    "x_0 ~ w_1 N(m_1, v_1) + w_2 N(m_2, v_2): at every x_t, E[x_0 | x_t] = (x_t + β̄_t q'/q)/√ᾱ_t and "
    "Var(x_0 | x_t) = (β̄_t/ᾱ_t)(1 + β̄_t ∂²log q_t) (responsibilities w_k n_k/q, n_k the component densities)",
    sp.Matrix([[_mix_mean, _mix_var]]),
    sp.Matrix([[(xt + bb_t * _dq / _q) / sp.sqrt(ab_t),
                bb_t / ab_t * (1 + bb_t * (_d2q / _q - (_dq / _q) ** 2))]]),
)

TWEEDIE = Result(
    id="tweedie",
    title="Lemma 11: the score gives E tr Cov(x_0 | x_t) (Tweedie)",
    paper="P Lemma 11 (App. A.1), Theorem 1's third step; Proposition 1 eq. (15) (App. A.5)",
    summary="E tr Cov(x_0 | x_t)/d = (β̄_t/ᾱ_t)(1 − β̄_t E‖∇log q_t‖²/d) = (β̄_t/ᾱ_t)(1 − Γ_t). Proven for any data "
            "distribution from the Gaussian kernel; verified in closed form for Gaussian data, pointwise for a "
            "two-component mixture, and numerically for mixtures by quadrature (tests).",
    identities=(KERNEL_DERIVATIVES, TWEEDIE_MEAN, TWEEDIE_VARIANCE, BOUNDARY_TERMS, LEMMA11, GAUSS_SCORE_SQ,
                TWEEDIE_GAUSSIAN, TWEEDIE_MIXTURE),
    expressions=(
        Expression("gamma_gaussian", bb_t / (ab_t * v + bb_t), (ab_t, v), "Γ_t of one eigen-direction of variance v"),
        Expression("cov_gaussian", v * bb_t / (ab_t * v + bb_t), (ab_t, v), "Var(x_0 | x_t) of that direction"),
        Expression("cov_from_gamma", bb_t / ab_t * (1 - Gamma), (ab_t, Gamma), "(β̄_t/ᾱ_t)(1 − Γ_t)"),
        Expression("gamma_from_score", bb_t * S, (ab_t, S), "Γ_t = β̄_t S_t"),
    ),
    functions=(
        "analytic_dpm.toy.GaussianData.gamma",
        "analytic_dpm.toy.GaussianData.posterior_cov_trace",
        "analytic_dpm.toy.GaussianMixtureData.gamma_reference",
        "analytic_dpm.toy.GaussianMixtureData.posterior_cov_trace_reference",
        "analytic_dpm.gamma.gamma_from_mean_sq_score",
    ),
    tests=("tests/test_theory.py::test_tweedie_gaussian_matches_toy",
           "tests/test_theory.py::test_tweedie_mixture_by_quadrature",
           "tests/test_theory.py::test_tweedie_mixture_matches_toy_reference",
           "tests/test_theory.py::test_gamma_score_and_noise_forms"),
    notes=("Lemma 10: ∇log q(x_t) = E[∇_{x_t} log q(x_t | x_0) | x_t]; with the Gaussian kernel this is "
           "−E[x_t − √ᾱ_t x_0 | x_t]/β̄_t, the first line of the derivation.",),
)

RESULTS = (MOMENT_MATCHING, LEMMA13, TWEEDIE)
