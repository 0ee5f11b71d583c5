"""Forward process (facts §1; P §2 eqs. (1)–(2), §4 eq. (13)): marginals and the posterior q(x_s | x_t, x_0).

Everything is per coordinate: the covariances are isotropic (multiples of I), so each coordinate of x is an
independent copy of the 1-D statement. Gaussians are handled through their log moment generating function
log E e^{kX} = k·mean + k²·var/2, which is how sums of independent Gaussians and Gaussian-mean mixtures compose.
"""

from __future__ import annotations

import sympy as sp

from .core import Expression, Identity, Result, Step
from .symbols import (a_ts, ab_s, ab_t, b_ts, bb_s, bb_t, bt, eps, eta, k, lam2, x0, xs, xt)


def log_mgf(kk, mean, var):
    """log E e^{kX} for X ~ N(mean, var)."""
    return kk * mean + kk**2 * var / 2


# quantities of the λ-family on a transition s < t (P eq. (13))
residual = bb_s - lam2  #: β̄_s − λ², the variance left for the x_t direction
coef_xt = sp.sqrt(residual / bb_t)
coef_x0 = sp.sqrt(ab_s) - sp.sqrt(residual * ab_t / bb_t)  #: the coefficient c of Lemma 13
gap = sp.sqrt(bb_t / a_ts) - sp.sqrt(residual)  #: g = √(β̄_t/α_{t|s}) − √(β̄_s − λ²)
gap_stable = (b_ts / a_ts + lam2) / (sp.sqrt(bb_t / a_ts) + sp.sqrt(residual))
mu_tilde = sp.sqrt(ab_s) * x0 + sp.sqrt(residual) * (xt - sp.sqrt(ab_t) * x0) / sp.sqrt(bb_t)


def mu_tilde_at(x_0, x_t):
    return mu_tilde.xreplace({x0: x_0, xt: x_t})


# -------------------------------------------------------------------------------------------------- forward marginals
_markov_composed = log_mgf(sp.sqrt(a_ts) * k, sp.sqrt(ab_s) * x0, bb_s) + log_mgf(k, 0, b_ts)

MARKOV_MARGINALS = Identity(
    "markov-marginals",
    "x_t = √α_{t|s} x_s + √β_{t|s} ε' with x_s | x_0 ~ N(√ᾱ_s x_0, β̄_s) gives x_t | x_0 ~ N(√ᾱ_t x_0, β̄_t) "
    "(log-MGFs of independent terms add)",
    _markov_composed,
    log_mgf(k, sp.sqrt(ab_t) * x0, bb_t),
    steps=(
        Step("collect the powers of k", k * sp.sqrt(a_ts * ab_s) * x0 + k**2 * (a_ts * bb_s + b_ts) / 2),
        Step("α_{t|s} ᾱ_s = ᾱ_t and α_{t|s} β̄_s + β_{t|s} = 1 − ᾱ_t = β̄_t", log_mgf(k, sp.sqrt(ab_t) * x0, bb_t)),
    ),
)

_family_composed = log_mgf(k * coef_xt, sp.sqrt(ab_t) * x0, bb_t) + k * coef_x0 * x0 + k**2 * lam2 / 2

FAMILY_MARGINALS = Identity(
    "lambda-family-keeps-marginals",
    "for every λ² ∈ [0, β̄_s]: x_t | x_0 ~ N(√ᾱ_t x_0, β̄_t) and x_s | x_t, x_0 ~ N(μ̃_{s|t}, λ²) give "
    "x_s | x_0 ~ N(√ᾱ_s x_0, β̄_s), independent of λ",
    _family_composed,
    log_mgf(k, sp.sqrt(ab_s) * x0, bb_s),
    steps=(
        Step("E[e^{k x_s} | x_t, x_0] = e^{k μ̃ + k²λ²/2}, μ̃ = c x_0 + √((β̄_s−λ²)/β̄_t) x_t; average over x_t",
             k * (coef_x0 + coef_xt * sp.sqrt(ab_t)) * x0 + k**2 * (lam2 + coef_xt**2 * bb_t) / 2),
        Step("c + √((β̄_s − λ²)/β̄_t)·√ᾱ_t = √ᾱ_s and ((β̄_s − λ²)/β̄_t)·β̄_t = β̄_s − λ²",
             k * sp.sqrt(ab_s) * x0 + k**2 * (lam2 + residual) / 2),
    ),
)

FORWARD = Result(
    id="forward-marginals",
    title="Forward marginals of the generalized (λ) family",
    paper="P §2 eqs. (1)–(2) and the sentence after them; §4 eq. (13) on a trajectory; facts §1",
    summary="The Markov (DDPM) chain and the non-Markov λ-family share the marginals q(x_n | x_0) = "
            "N(√ᾱ_n x_0, β̄_n I) for every choice of λ.",
    identities=(MARKOV_MARGINALS, FAMILY_MARGINALS),
    expressions=(
        Expression("marginal_mean_coef", sp.sqrt(ab_t), (ab_t,), "√ᾱ_t, the x_0 coefficient of x_t"),
        Expression("marginal_std", sp.sqrt(bb_t), (ab_t,), "√β̄_t, the noise coefficient of x_t"),
        Expression("skip_alpha", a_ts, (ab_s, ab_t), "α_{t|s} = ᾱ_t/ᾱ_s"),
        Expression("skip_beta", b_ts, (ab_s, ab_t), "β_{t|s} = 1 − α_{t|s}"),
        Expression("composed_variance", a_ts * bb_s + b_ts, (ab_s, ab_t), "α_{t|s} β̄_s + β_{t|s} (= β̄_t)"),
    ),
    functions=(
        "analytic_dpm.posterior.sample_marginal",
        "analytic_dpm.schedules.Schedule.skip_alpha",
        "analytic_dpm.schedules.Schedule.skip_beta",
    ),
    tests=("tests/test_theory.py::test_forward_marginals_match_library",),
    notes=(
        "Induction from q(x_N | x_0) downwards with the second identity gives every marginal of the λ-family; "
        "the first identity gives those of the Markov chain; both are N(√ᾱ_n x_0, β̄_n I).",
    ),
)

# -------------------------------------------------------------------------------------------------- posterior
POSTERIOR_COEFFICIENTS = Identity(
    "posterior-mean-coefficients",
    "μ̃_{s|t}(x_t, x_0) = coef_x0·x_0 + coef_xt·x_t with coef_x0 = √ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t) = √(ᾱ_t/β̄_t)·g "
    "and coef_xt = √((β̄_s − λ²)/β̄_t)",
    mu_tilde,
    sp.sqrt(ab_t / bb_t) * gap * x0 + coef_xt * xt,
    steps=(Step("collect x_0 and x_t", coef_x0 * x0 + coef_xt * xt),
           Step("√ᾱ_s = √(ᾱ_t/β̄_t)·√(β̄_t/α_{t|s})", sp.sqrt(ab_t / bb_t) * gap * x0 + coef_xt * xt)),
)

GAP_STABLE = Identity(
    "gap-without-cancellation",
    "g = √(β̄_t/α_{t|s}) − √(β̄_s − λ²) = (β_{t|s}/α_{t|s} + λ²)/(√(β̄_t/α_{t|s}) + √(β̄_s − λ²)), "
    "the form the library evaluates (no digits cancel)",
    gap,
    gap_stable,
    steps=(Step("multiply and divide by the conjugate", (bb_t / a_ts - residual) / (sp.sqrt(bb_t / a_ts) + sp.sqrt(residual))),
           Step("β̄_t/α_{t|s} − β̄_s = (β̄_t − α_{t|s} β̄_s)/α_{t|s} = β_{t|s}/α_{t|s}", gap_stable)),
)

_log_joint = (-(xt - sp.sqrt(a_ts) * xs) ** 2 / (2 * b_ts) - (xs - sp.sqrt(ab_s) * x0) ** 2 / (2 * bb_s))


def _quadratic_in_xs(expr):
    p = sp.Poly(sp.expand(expr), xs)
    return p.coeff_monomial(xs**2), p.coeff_monomial(xs)


_q2, _q1 = _quadratic_in_xs(_log_joint)

DDPM_POSTERIOR_VARIANCE = Identity(
    "ddpm-markov-posterior-variance",
    "Markov chain: q(x_s | x_t, x_0) ∝ q(x_t | x_s) q(x_s | x_0) has precision α_{t|s}/β_{t|s} + 1/β̄_s = 1/β̃_{s|t}",
    -2 * _q2,
    1 / bt,
    steps=(Step("−2 × the x_s² coefficient of log q(x_t|x_s) + log q(x_s|x_0)", a_ts / b_ts + 1 / bb_s),
           Step("common denominator; α_{t|s} β̄_s + β_{t|s} = β̄_t", bb_t / (b_ts * bb_s))),
)

DDPM_POSTERIOR_MEAN = Identity(
    "ddpm-markov-posterior-mean",
    "its mean is β̃_{s|t}(√α_{t|s} x_t/β_{t|s} + √ᾱ_s x_0/β̄_s) = (√ᾱ_s β_{t|s}/β̄_t) x_0 + (√α_{t|s} β̄_s/β̄_t) x_t",
    _q1 / (-2 * _q2),
    sp.sqrt(ab_s) * b_ts / bb_t * x0 + sp.sqrt(a_ts) * bb_s / bb_t * xt,
    steps=(Step("(x_s coefficient)/(precision)", bt * (sp.sqrt(a_ts) * xt / b_ts + sp.sqrt(ab_s) * x0 / bb_s)),),
)

DDPM_COEFFICIENTS = Identity(
    "ddpm-posterior-mean-coefficients",
    "the λ-family with λ² = β̃_{s|t} is the Markov posterior: coef_x0 = √ᾱ_s β_{t|s}/β̄_t, coef_xt = √α_{t|s} β̄_s/β̄_t",
    (coef_x0 * x0 + coef_xt * xt).xreplace({lam2: bt}),
    sp.sqrt(ab_s) * b_ts / bb_t * x0 + sp.sqrt(a_ts) * bb_s / bb_t * xt,
    steps=(Step("β̄_s − β̃_{s|t} = α_{t|s} β̄_s²/β̄_t (identity ddpm-residual-variance)",
                (sp.sqrt(ab_s) - sp.sqrt(a_ts * bb_s**2 / bb_t * ab_t / bb_t)) * x0
                + sp.sqrt(a_ts * bb_s**2 / bb_t / bb_t) * xt),),
)

DDPM_RESIDUAL = Identity(
    "ddpm-residual-variance",
    "for λ² = β̃_{s|t}: β̄_s − λ² = α_{t|s} β̄_s²/β̄_t",
    bb_s - bt,
    a_ts * bb_s**2 / bb_t,
    steps=(Step("β̃_{s|t} = β̄_s β_{t|s}/β̄_t", bb_s * (bb_t - b_ts) / bb_t),
           Step("β̄_t − β_{t|s} = α_{t|s} β̄_s", a_ts * bb_s**2 / bb_t)),
)

DDIM_RESIDUAL = Identity(
    "ddim-residual-variance",
    "for λ² = η² β̃_{s|t}: β̄_s − λ² = β̄_s((1 − η²)β̄_t + η² α_{t|s} β̄_s)/β̄_t (every term ≥ 0: the library's form)",
    bb_s - eta**2 * bt,
    bb_s * ((1 - eta**2) * bb_t + eta**2 * a_ts * bb_s) / bb_t,
    nonneg=True,
)

DDIM_MEAN_FORM = Identity(
    "ddim-mean-form",
    "with x_t = √ᾱ_t x̂_0 + √β̄_t ε̂: μ̃_{s|t}(x_t, x̂_0) = √ᾱ_s x̂_0 + √(β̄_s − λ²) ε̂ (the sampler's DDIM-family step)",
    mu_tilde.xreplace({xt: sp.sqrt(ab_t) * x0 + sp.sqrt(bb_t) * eps}),
    sp.sqrt(ab_s) * x0 + sp.sqrt(residual) * eps,
)

POSTERIOR = Result(
    id="posterior",
    title="The posterior q(x_s | x_t, x_0) of the λ-family and its DDPM/DDIM cases",
    paper="P §2 eq. (2) and §4 eq. (13); App. D (β̃_{s|t}); facts §1",
    summary="μ̃_{s|t} = coef_x0·x_0 + coef_xt·x_t with variance λ²; DDPM (λ² = β̃) is the Bayes posterior of the "
            "Markov chain, DDIM is λ² = η² β̃ (η = 0 in the paper).",
    identities=(POSTERIOR_COEFFICIENTS, GAP_STABLE, DDPM_POSTERIOR_VARIANCE, DDPM_POSTERIOR_MEAN, DDPM_COEFFICIENTS,
                DDPM_RESIDUAL, DDIM_RESIDUAL, DDIM_MEAN_FORM),
    expressions=(
        Expression("coef_x0", coef_x0, (ab_s, ab_t, lam2)),
        Expression("coef_xt", coef_xt, (ab_s, ab_t, lam2)),
        Expression("gap", gap, (ab_s, ab_t, lam2)),
        Expression("residual_var", residual, (ab_s, ab_t, lam2)),
        Expression("beta_tilde", bt, (ab_s, ab_t), "β̃_{s|t}, the DDPM λ²"),
        Expression("lambda_sq_ddim", eta**2 * bt, (ab_s, ab_t, eta), "η² β̃_{s|t}"),
        Expression("ddim_mean_eps_coef", sp.sqrt(residual), (ab_s, ab_t, lam2), "√(β̄_s − λ²), multiplies ε̂"),
    ),
    functions=(
        "analytic_dpm.posterior.posterior_coefficients",
        "analytic_dpm.posterior.gap",
        "analytic_dpm.posterior.residual_var",
        "analytic_dpm.posterior.lambda_sq",
        "analytic_dpm.posterior.posterior_mean",
        "analytic_dpm.schedules.Schedule.skip_beta_tilde",
        "analytic_dpm.sampling.coefficient_table",
    ),
    tests=("tests/test_theory.py::test_posterior_matches_library",
           "tests/test_theory.py::test_sampler_coefficients_match_posterior"),
)

RESULTS = (FORWARD, POSTERIOR)
