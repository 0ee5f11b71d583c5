"""Theorems 1–3 and Corollaries 1–4 (P §3, §4, App. A.2–A.4, C, D) on a transition s < t of a trajectory.

The per-step statements of the paper are the case t = s + 1 (α_{t|s} = α_n, β_{t|s} = β_n); the trajectory
statements (P §4, Corollary 1, App. D) have the same form in the skip quantities, so one derivation covers both.
"""

from __future__ import annotations

import sympy as sp

from . import symbols as sy
from .core import Expression, Identity, Result, Step
from .forward import coef_x0, coef_xt, gap, residual
from .symbols import (Gamma, S, a_ts, ab_s, ab_t, b_ts, bb_s, bb_t, bt, cov, d, eps, lam2, r, score, xt)

sigma_sq_opt = lam2 + gap**2 * (1 - Gamma)  #: Theorem 1, noise form (eq. (7) with Γ_t = β̄_t S_t)
sigma_sq_opt_score = lam2 + gap**2 * (1 - bb_t * S)  #: Theorem 1, score form (eq. (7))
cov_tweedie = bb_t / ab_t * (1 - Gamma)  #: E tr Cov(x_0 | x_t)/d (Lemma 11)
upper_eq11 = lam2 + gap**2
upper_eq12 = lam2 + gap**2 * r**2 * ab_t / bb_t
ddpm_sigma_sq = b_ts / a_ts * (1 - b_ts * Gamma / bb_t)  #: Corollary 2 on a trajectory (noise form)
ddpm_sigma_sq_score = b_ts / a_ts * (1 - b_ts * S)  #: Corollary 2, score form
ddpm = {lam2: bt}  #: the DDPM family

# ================================================================================================ Theorem 1
x0_hat_score = (xt + bb_t * score) / sp.sqrt(ab_t)
x0_hat_eps = (xt - sp.sqrt(bb_t) * eps) / sp.sqrt(ab_t)

T1_MEAN = Identity(
    "theorem1-mean",
    "μ*(x_t) = μ̃_{s|t}(x_t, E[x_0|x_t]) (Lemma 13) with E[x_0|x_t] = (x_t + β̄_t ∇log q_t)/√ᾱ_t (Lemma 11); in noise "
    "form, s = −ε̂/√β̄_t gives x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t (eq. (6) and footnote 1)",
    coef_x0 * x0_hat_score + coef_xt * xt,
    coef_x0 * x0_hat_eps + coef_xt * xt,
    assume={score: -eps / sp.sqrt(bb_t)},
)

T1_COEFFICIENT_FORMS = Identity(
    "theorem1-coefficient-forms",
    "the two coefficient forms agree: c²·β̄_t/ᾱ_t = (√(β̄_t/α_{t|s}) − √(β̄_s − λ²))² with "
    "c = √ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t)",
    coef_x0**2 * bb_t / ab_t,
    gap**2,
    steps=(Step("c·√(β̄_t/ᾱ_t) = √(β̄_t ᾱ_s/ᾱ_t) − √(β̄_s − λ²), and ᾱ_s/ᾱ_t = 1/α_{t|s}",
                (sp.sqrt(bb_t * ab_s / ab_t) - sp.sqrt(residual)) ** 2),),
)

T1_VARIANCE = Identity(
    "theorem1-variance",
    "σ*² = λ² + c²·E tr Cov(x_0|x_t)/d (Lemma 13) = λ² + g²(1 − β̄_t E‖∇log q_t‖²/d) (Lemma 11; eq. (7)) "
    "= λ² + g²(1 − Γ_t) (noise form)",
    lam2 + coef_x0**2 * cov,
    sigma_sq_opt,
    steps=(Step("Lemma 11: v_t = (β̄_t/ᾱ_t)(1 − β̄_t S_t)", lam2 + coef_x0**2 * bb_t / ab_t * (1 - bb_t * S)),
           Step("coefficient forms (theorem1-coefficient-forms)", sigma_sq_opt_score),
           Step("Γ_t = β̄_t S_t", sigma_sq_opt)),
    assume={cov: bb_t / ab_t * (1 - bb_t * S), Gamma: bb_t * S},
)

THEOREM1 = Result(
    id="theorem1",
    title="Theorem 1: the optimal reverse mean and variance (score and noise forms, any transition s < t)",
    paper="P Theorem 1, eqs. (6)–(7) (proof App. A.2); eq. (9) (estimate); §4 on a trajectory",
    summary="μ*_{s|t}(x_t) = μ̃_{s|t}(x_t, (x_t + β̄_t ∇log q_t)/√ᾱ_t), σ*²_{s|t} = λ² + g²(1 − β̄_t E‖∇log q_t‖²/d) "
            "with g = √(β̄_t/α_{t|s}) − √(β̄_s − λ²); in noise form Γ_t = E‖ε̂_t‖²/d replaces β̄_t E‖∇log q_t‖²/d.",
    identities=(T1_MEAN, T1_COEFFICIENT_FORMS, T1_VARIANCE),
    expressions=(
        Expression("sigma_sq_opt", sigma_sq_opt, (ab_s, ab_t, lam2, Gamma), "noise form"),
        Expression("sigma_sq_opt_score", sigma_sq_opt_score, (ab_s, ab_t, lam2, S), "score form, S_t = E‖∇log q‖²/d"),
        Expression("x0_hat", x0_hat_eps, (ab_t, xt, eps), "x̂_0 = (x_t − √β̄_t ε̂)/√ᾱ_t"),
        Expression("score_from_eps", -eps / sp.sqrt(bb_t), (ab_t, eps), "s = −ε̂/√β̄_t"),
    ),
    functions=(
        "analytic_dpm.variance.sigma_sq_opt",
        "analytic_dpm.variance.reverse_variances",
        "analytic_dpm.gamma.gamma_from_mean_sq_score",
        "analytic_dpm.posterior.x0_from_eps",
        "analytic_dpm.posterior.score_from_eps",
        "analytic_dpm.sampling.coefficient_table",
    ),
    tests=("tests/test_theory.py::test_theorem1_variance_matches_library",
           "tests/test_theory.py::test_theorem1_mean_matches_library",
           "tests/test_theory.py::test_sampler_coefficients_match_posterior"),
    notes=("Proof: moment matching (Lemma 9), then Lemma 13, then Lemma 11 — the three results before this one.",),
)

# ================================================================================================ Theorem 2
T2_LOWER = Identity(
    "theorem2-lower",
    "σ*² − λ² = c²·v_t ≥ 0 (v_t = E tr Cov(x_0|x_t)/d ≥ 0): the lower bound λ² of eq. (11)",
    sigma_sq_opt - lam2,
    coef_x0**2 * cov,
    assume={Gamma: 1 - ab_t / bb_t * cov},
    nonneg=True,
)

T2_UPPER11 = Identity(
    "theorem2-upper-eq11",
    "(λ² + g²) − σ*² = g²Γ_t ≥ 0 (Γ_t = E‖ε*_t‖²/d ≥ 0): the upper bound of eq. (11)",
    upper_eq11 - sigma_sq_opt,
    gap**2 * Gamma,
    nonneg=True,
)

_a, _L, _th = sp.Symbol("a", real=True), sp.Symbol("L", positive=True), sp.Symbol("θ", positive=True)
_X = sp.Symbol("X", real=True)
sy.LATEX_NAMES.update({_a: "a", _L: "L", _th: r"\theta", _X: "X"})
LEMMA12 = Identity(
    "lemma12",
    "X ∈ [a, b], r = (b − a)/2: r² − (X − (a + b)/2)² = (b − X)(X − a) ≥ 0, so Var X ≤ E(X − (a+b)/2)² ≤ r² "
    "(per coordinate, hence tr Cov/d ≤ r²)",
    ((_L / 2) ** 2 - (_X - (2 * _a + _L) / 2) ** 2),
    (_a + _L - _X) * (_X - _a),
    assume={_X: _a + _L * _th / (1 + _th)},
    nonneg=True,
)

T2_UPPER12 = Identity(
    "theorem2-upper-eq12",
    "data in [a, b]^d: v_t ≤ r² (Lemma 12 for q(x_0|x_t)), so σ*² ≤ λ² + c² r² = λ² + g² r² ᾱ_t/β̄_t (eq. (12)); "
    "the slack is c²(r² − v_t) ≥ 0",
    lam2 + coef_x0**2 * r**2 - (lam2 + coef_x0**2 * cov),
    coef_x0**2 * (r**2 - cov),
    steps=(Step("coefficient forms: c² = g² ᾱ_t/β̄_t", upper_eq12 - (lam2 + coef_x0**2 * cov)),),
)

_ab_cross = sp.solve(sp.Eq((1 - ab_t) - r**2 * ab_t, 0), ab_t)
T2_WHICH = Identity(
    "theorem2-which-is-tighter",
    "UB(11) − UB(12) = g²(β̄_t − r²ᾱ_t)/β̄_t: eq. (12) is tighter exactly when ᾱ_t < 1/(1 + r²) (large t, noisy), "
    "eq. (11) when ᾱ_t > 1/(1 + r²) (small t); for data in [−1, 1] (r = 1) the crossover is ᾱ_t = 1/2",
    sp.Matrix([[upper_eq11 - upper_eq12, _ab_cross[0], len(_ab_cross)]]),
    sp.Matrix([[gap**2 * (bb_t - r**2 * ab_t) / bb_t, 1 / (1 + r**2), 1]]),
)

THEOREM2 = Result(
    id="theorem2",
    title="Theorem 2: bounds on the optimal variance (eq. 11, and eq. 12 for bounded data); which is tighter",
    paper="P Theorem 2, eqs. (11)–(12) (proof App. A.3, Lemma 12); Corollary 1 (App. C) on a trajectory; App. G.3",
    summary="λ² ≤ σ*² ≤ λ² + g² (eq. 11); with data in [a, b]^d also σ*² ≤ λ² + g² r² ᾱ_t/β̄_t, r = (b − a)/2 "
            "(eq. 12). Eq. (11) is the tighter upper bound while ᾱ_t > 1/(1 + r²), eq. (12) after.",
    identities=(T2_LOWER, T2_UPPER11, LEMMA12, T2_UPPER12, T2_WHICH),
    expressions=(
        Expression("lower", lam2, (ab_s, ab_t, lam2)),
        Expression("upper_eq11", upper_eq11, (ab_s, ab_t, lam2)),
        Expression("upper_eq12", upper_eq12, (ab_s, ab_t, lam2, r)),
        Expression("crossover_alpha_bar", 1 / (1 + r**2), (r,), "ᾱ_t where the two upper bounds are equal"),
    ),
    functions=("analytic_dpm.variance.theorem2_bounds", "analytic_dpm.variance.reverse_variances"),
    tests=("tests/test_theory.py::test_theorem2_bounds_match_library",
           "tests/test_theory.py::test_theorem2_which_bound_is_tighter",
           "tests/test_theory.py::test_theorem2_crossover_on_paper_schedules"),
)

# ================================================================================================ Corollaries 2, 3
C2_VARIANCE = Identity(
    "corollary2",
    "λ² = β̃_{s|t}: σ*² = (β_{t|s}/α_{t|s})(1 − β_{t|s} E‖∇log q_t‖²/d) = (β_{t|s}/α_{t|s})(1 − β_{t|s}Γ_t/β̄_t) "
    "= (1 − Γ_t)·β_{t|s}/α_{t|s} + Γ_t·β̃_{s|t} (the library's cancellation-free form)",
    sigma_sq_opt.xreplace(ddpm),
    (1 - Gamma) * b_ts / a_ts + Gamma * bt,
    steps=(Step("g² = (√(β̄_t/α_{t|s}) − √(α_{t|s}) β̄_s/√β̄_t)² = β_{t|s}²/(α_{t|s} β̄_t); β̃ = β̄_s β_{t|s}/β̄_t",
                bt + b_ts**2 / (a_ts * bb_t) * (1 - Gamma)),
           Step("β̄_s = (β̄_t − β_{t|s})/α_{t|s}", ddpm_sigma_sq)),
)

C2_MEAN = Identity(
    "corollary2-mean",
    "λ² = β̃_{s|t}: μ* = (√ᾱ_s β_{t|s}/β̄_t) x̂_0 + (√α_{t|s} β̄_s/β̄_t) x_t = (x_t + β_{t|s} ∇log q_t)/√α_{t|s}",
    (coef_x0 * x0_hat_score + coef_xt * xt).xreplace(ddpm),
    (xt + b_ts * score) / sp.sqrt(a_ts),
    steps=(Step("DDPM posterior coefficients (ddpm-posterior-mean-coefficients)",
                sp.sqrt(ab_s) * b_ts / bb_t * x0_hat_score + sp.sqrt(a_ts) * bb_s / bb_t * xt),),
)

C2_SCORE_FORM = Identity(
    "corollary2-score-form",
    "with Γ_t = β̄_t S_t: (β_{t|s}/α_{t|s})(1 − β_{t|s}Γ_t/β̄_t) = (β_{t|s}/α_{t|s})(1 − β_{t|s} S_t)",
    ddpm_sigma_sq,
    ddpm_sigma_sq_score,
    assume={Gamma: bb_t * S},
)

COROLLARY2 = Result(
    id="corollary2",
    title="Corollary 2: the DDPM simplification of Theorem 1",
    paper="P Corollary 2 (App. D) and its trajectory form after Corollary 3",
    summary="For λ² = β̃_{s|t}: μ* = (x_t + β_{t|s}∇log q_t)/√α_{t|s}, σ*² = (β_{t|s}/α_{t|s})(1 − β_{t|s} "
            "E‖∇log q_t‖²/d).",
    identities=(C2_VARIANCE, C2_MEAN, C2_SCORE_FORM),
    expressions=(
        Expression("ddpm_sigma_sq_opt", ddpm_sigma_sq, (ab_s, ab_t, Gamma)),
        Expression("ddpm_mean_xt_coef", 1 / sp.sqrt(a_ts), (ab_s, ab_t), "x_t coefficient of μ* in score form"),
        Expression("ddpm_mean_score_coef", b_ts / sp.sqrt(a_ts), (ab_s, ab_t), "score coefficient of μ*"),
    ),
    functions=("analytic_dpm.variance.ddpm_sigma_sq_opt", "analytic_dpm.posterior.posterior_coefficients"),
    tests=("tests/test_theory.py::test_corollary2_matches_library",),
)

C3_LOWER = Identity(
    "corollary3-lower",
    "λ² = β̃_{s|t}: the lower bound is β̃_{s|t} = (β̄_s/β̄_t)β_{t|s}",
    lam2.xreplace(ddpm),
    bb_s * b_ts / bb_t,
)

C3_UPPER = Identity(
    "corollary3-upper",
    "λ² = β̃_{s|t}: the eq. (11) bound λ² + g² is β_{t|s}/α_{t|s} (not β_{t|s})",
    upper_eq11.xreplace(ddpm),
    b_ts / a_ts,
    steps=(Step("g² = β_{t|s}²/(α_{t|s} β̄_t)", bt + b_ts**2 / (a_ts * bb_t)),),
)

C3_BOUNDED = Identity(
    "corollary3-bounded",
    "λ² = β̃_{s|t}: the eq. (12) bound is β̃_{s|t} + (ᾱ_s β_{t|s}²/β̄_t²) r²",
    upper_eq12.xreplace(ddpm),
    bt + ab_s * b_ts**2 / bb_t**2 * r**2,
)

COROLLARY3 = Result(
    id="corollary3",
    title="Corollary 3: the DDPM simplification of Theorem 2",
    paper="P Corollary 3 (App. D); Corollary 1 (App. C) on a trajectory",
    summary="For λ² = β̃: β̃_{s|t} ≤ σ*² ≤ β_{t|s}/α_{t|s}, and σ*² ≤ β̃_{s|t} + ᾱ_s β_{t|s}² r²/β̄_t² for data in "
            "[a, b]^d.",
    identities=(C3_LOWER, C3_UPPER, C3_BOUNDED),
    expressions=(
        Expression("lower", bt, (ab_s, ab_t)),
        Expression("upper_eq11", b_ts / a_ts, (ab_s, ab_t)),
        Expression("upper_eq12", bt + ab_s * b_ts**2 / bb_t**2 * r**2, (ab_s, ab_t, r)),
    ),
    functions=("analytic_dpm.variance.ddpm_bounds",),
    tests=("tests/test_theory.py::test_corollary3_matches_library",),
)

# ================================================================================================ Theorem 3
_v1, _v2 = sp.Symbol("v_1", positive=True), sp.Symbol("v_2", positive=True)
_D2 = sp.Symbol("D²", nonnegative=True)  #: ‖μ_1 − μ_2‖²
_sig2, _c = sp.Symbol("σ²", positive=True), sp.Symbol("c", real=True)
sy.LATEX_NAMES.update({_v1: "v_1", _v2: "v_2", _D2: r"\|\mu_1-\mu_2\|^2", _sig2: r"\sigma^2", _c: "c"})


def kl_isotropic(dim, v_1, v_2, dist2):
    """KL(N(μ_1, v_1 I) ‖ N(μ_2, v_2 I)) in d dimensions, ‖μ_1 − μ_2‖² = dist2."""
    return dim / 2 * (v_1 / v_2 - 1 - sp.log(v_1 / v_2)) + dist2 / (2 * v_2)


KL_GAUSS = Identity(
    "kl-isotropic-gaussians",
    "KL(N(μ_1, v_1 I) ‖ N(μ_2, v_2 I)) = H(N_1, N_2) − H(N_1) = (d/2)(v_1/v_2 − 1 − log(v_1/v_2)) + ‖μ_1 − μ_2‖²/(2v_2)",
    d / 2 * sp.log(2 * sp.pi * _v2) + (d * _v1 + _D2) / (2 * _v2) - d / 2 * sp.log(2 * sp.pi * sp.E * _v1),
    kl_isotropic(d, _v1, _v2, _D2),
)

_sig_star = lam2 + coef_x0**2 * cov  #: σ*² in Lemma 13 form
J_general = sp.log(sigma_sq_opt / lam2)

T3_TERM = Identity(
    "theorem3-expected-term",
    "E KL(q(x_s|x_t, x_0) ‖ p*(x_s|x_t)) with q = N(μ̃, λ²I), p* = N(μ*, σ*²I): E‖μ̃ − μ*‖² = c² E‖x_0 − E[x_0|x_t]‖² "
    "= d c² v_t and σ*² = λ² + c² v_t, so the term is (d/2) log(σ*²/λ²) = (d/2) J(s, t)",
    kl_isotropic(d, lam2, _sig_star, d * coef_x0**2 * cov),
    d / 2 * sp.log(_sig_star / lam2),
    steps=(Step("collect: (λ² + c² v_t)/σ*² = 1", d / 2 * (1 - 1 - sp.log(lam2 / _sig_star))),),
)

T3_J = Identity(
    "theorem3-cost",
    "J(s, t) = log(σ*²_{s|t}/λ²_{s|t}) in noise form; it needs only Γ_t and the schedule",
    sp.log(_sig_star / lam2),
    J_general,
    assume={cov: bb_t / ab_t * (1 - Gamma)},
)

THEOREM3 = Result(
    id="theorem3",
    title="Theorem 3: the optimal KL decomposes into (d/2) Σ_k J(τ_{k−1}, τ_k) + c",
    paper="P Theorem 3, eq. (14) (proof App. A.4, Lemmas 7–9)",
    summary="KL(q(x_0, x_τ1..x_τK) ‖ p*) = (d/2) Σ_{k=2}^K log(σ*²_{τ_{k−1}|τ_k}/λ²_{τ_{k−1}|τ_k}) + c, with c "
            "independent of the interior of the trajectory.",
    identities=(KL_GAUSS, T3_TERM, T3_J),
    expressions=(
        Expression("J", J_general, (ab_s, ab_t, lam2, Gamma), "log(σ*²/λ²)"),
        Expression("kl_isotropic", kl_isotropic(d, _v1, _v2, _D2), (d, _v1, _v2, _D2)),
        Expression("transition_kl_per_dim", kl_isotropic(1, lam2, _sig2, _c**2 * cov), (lam2, _sig2, _c, cov),
                   "E KL(q(x_s|x_t,x_0) ‖ N(μ*, σ² I))/d for any σ²"),
        Expression("expected_kl_term", d / 2 * J_general, (d, ab_s, ab_t, lam2, Gamma)),
    ),
    functions=("analytic_dpm.optimal_trajectory.analytic_ddpm_cost",
               "analytic_dpm.optimal_trajectory.trajectory_cost",
               "analytic_dpm.likelihood.exact_mean_transition_kl",
               "analytic_dpm.likelihood.gaussian_kl",
               "analytic_dpm.variance.sigma_sq_opt"),
    tests=("tests/test_theory.py::test_theorem3_cost_matches_library",
           "tests/test_theory.py::test_theorem3_transition_kl_matches_library"),
    notes=(
        "Lemma 8/9: KL(q ‖ p*) = E KL(q(x_N|x_0) ‖ p(x_N)) + Σ_k E KL(q(x_s|x_t, x_0) ‖ p*(x_s|x_t)) − E log p*(x_0|x_τ1) "
        "+ const(q); the prior term depends on N only and the decoder term on τ_1 = 1 only.",
        "Each transition term is (d/2) J(s, t) by theorem3-expected-term: summing gives eq. (14).",
        "For λ² = 0 (DDIM) J is infinite: the bound and the optimal trajectory are for the DDPM family (P §6.1).",
    ),
)

# ================================================================================================ Corollary 4
J_ddpm = sp.log(1 - b_ts * Gamma / bb_t)  #: Corollary 4's cost in noise form
_f = sp.Function("f")

C4_COST = Identity(
    "corollary4-cost",
    "λ² = β̃_{s|t}: σ*²/β̃_{s|t} = (1 − β_{t|s} E‖∇log q_t‖²/d)·(β̄_t/ᾱ_t)/(β̄_s/ᾱ_s), so "
    "J(s, t) = log(1 − β_{t|s}Γ_t/β̄_t) + f(t) − f(s) with f(n) = log(β̄_n/ᾱ_n)",
    J_general.xreplace(ddpm),
    J_ddpm + sp.log(bb_t / ab_t) - sp.log(bb_s / ab_s),
    steps=(Step("Corollary 2 over β̃ = β̄_s β_{t|s}/β̄_t", sp.log(ddpm_sigma_sq / bt)),
           Step("= log((1 − β_{t|s}Γ_t/β̄_t) β̄_t/(α_{t|s} β̄_s)); α_{t|s} = ᾱ_t/ᾱ_s",
                sp.log((1 - b_ts * Gamma / bb_t) * (bb_t / ab_t) / (bb_s / ab_s)))),
)

_taus = sp.symbols("τ_1:7", positive=True)
C4_TELESCOPE = Identity(
    "corollary4-telescoping",
    "Σ_{k=2}^K [f(τ_k) − f(τ_{k−1})] = f(τ_K) − f(τ_1) = f(N) − f(1): the offset is the same for every trajectory "
    "(shown for K = 6), so the two costs have the same optimal trajectory",
    sp.Add(*(sp.Add(_f(_taus[i]), -_f(_taus[i - 1]), evaluate=False) for i in range(1, len(_taus))), evaluate=False),
    _f(_taus[-1]) - _f(_taus[0]),
)

COROLLARY4 = Result(
    id="corollary4",
    title="Corollary 4: the DDPM cost J(s, t) = log(1 − β_{t|s} E‖∇log q_t‖²/d) up to a telescoping constant",
    paper="P Corollary 4 (App. D); facts §4.1",
    summary="For λ² = β̃: log(σ*²/β̃) = log(1 − β_{t|s}Γ_t/β̄_t) + f(t) − f(s), f = log(β̄/ᾱ); along a path from "
            "τ_1 = 1 to τ_K = N the f terms sum to f(N) − f(1), a constant.",
    identities=(C4_COST, C4_TELESCOPE),
    expressions=(
        Expression("J_ddpm", J_ddpm, (ab_s, ab_t, Gamma), "log(1 − β_{t|s}Γ_t/β̄_t)"),
        Expression("J_offset", sp.log(bb_t / ab_t) - sp.log(bb_s / ab_s), (ab_s, ab_t), "f(t) − f(s)"),
    ),
    functions=("analytic_dpm.optimal_trajectory.analytic_ddpm_cost",
               "analytic_dpm.optimal_trajectory.trajectory_cost"),
    tests=("tests/test_theory.py::test_corollary4_cost_matches_library",),
)

RESULTS = (THEOREM1, THEOREM2, COROLLARY2, COROLLARY3, THEOREM3, COROLLARY4)
