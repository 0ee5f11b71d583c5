"""Derivations that were still in prose (repository issue 16): eq. (10) and the Monte Carlo bias of the plug-in bound,
Theorem 3's joint-KL decomposition for any K, Lemma 9's shared-σ² step, the non-convexity of L_n (Prop. 2, App. H.2)
and Tweedie/Lemma 11 for a Gaussian mixture with any number of components.

Per coordinate, as in :mod:`theory.theorems`. Sums over a trajectory of K points or over n mixture components are
sympy ``Sum`` objects with a symbolic upper limit: the proofs hold for every K (every n), and the numeric spot check
draws K (n) and the indexed values at random. Expectations over random symbols use
:class:`theory.imperfect.DeclaredMoments`: every moment that enters is declared, with its reason, and a monomial
without a declared value raises.
"""

from __future__ import annotations

import mpmath
import sympy as sp

from . import symbols as sy
from .core import Expression, Identity, Result, Step
from .forward import gap
from .imperfect import DeclaredMoments, gamma_hat
from .moments import Expect, normal_pdf, z
from .symbols import Gamma, S, a_ts, ab_s, ab_t, b_ts, bb_s, bb_t, bt, d, lam2, xt
from .theorems import kl_isotropic, sigma_sq_opt, sigma_sq_opt_score

ddpm = {lam2: bt}


# ------------------------------------------------------------------------------------------------ samplers
def _int_sampler(lo: int, hi: int):
    """x ∈ [0, 1) → an integer in lo..hi (for symbolic sum limits in the spot check)."""
    return lambda x: lo + int(x * (hi - lo + 1))


def _seq_sampler(lo: float, hi: float, length: int = 12, positive: bool = False):
    """x ∈ [0, 1) → a list of ``length`` mpf values (an IndexedBase's entries, index 0..length−1), deterministic in x:
    uniform in [lo, hi], or log-uniform in [10^lo, 10^hi] when ``positive``."""
    def draw(x):
        out = []
        for j in range(length):
            u = mpmath.frac(mpmath.mpf(x) * (j + 1) * mpmath.sqrt(2) + mpmath.mpf(j) / 7 + mpmath.mpf(1) / 3)
            out.append(mpmath.mpf(10) ** (lo + (hi - lo) * u) if positive else lo + (hi - lo) * u)
        return out
    return draw


class LazySum(sp.Sum):
    """A ``Sum`` that ``doit`` evaluates only when its limits are numbers: with a symbolic limit (K, n) it stays a sum
    (its summand evaluated), so that concrete test functions in the spot check are not summed in closed form
    (sympy would try, slowly); lambdify still prints it as a Python sum over range."""

    def doit(self, **hints):
        if all(lim[1].is_Integer and lim[2].is_Integer for lim in self.limits):
            return super().doit(**hints)
        f = self.function.doit(**hints) if hints.get("deep", True) else self.function
        return self.func(f, *self.limits)


# ================================================================================================ eq. (10)
S_hat = sp.Symbol("Ŝ_t", nonnegative=True)  #: Ŝ_t = (1/M) Σ_m ‖s_t(x_{t,m})‖²/d, the plug-in mean-square score
sy.LATEX_NAMES[S_hat] = r"\hat S_t"

sigma_sq_hat_score = sigma_sq_opt_score.xreplace({S: S_hat})  #: σ̂² of eq. (9), score form
sigma_sq_hat = sigma_sq_opt.xreplace({Gamma: gamma_hat})  #: σ̂² in noise form, Γ̂_t = β̄_t Ŝ_t
amplification = gap**2 * bb_t  #: the coefficient of eq. (10), score form: g² β̄_t

EQ10_SCORE = Identity(
    "eq10-bias-score-form",
    "σ̂² − σ*² = −g²β̄_t (Ŝ_t − S_t), so |σ*² − σ̂²| = g²β̄_t |Ŝ_t − E‖∇log q_t‖²/d| (eq. (10)): the error of the "
    "mean-square score is amplified by the coefficient g²β̄_t, g = √(β̄_t/α_{t|s}) − √(β̄_s − λ²)",
    sigma_sq_hat_score - sigma_sq_opt_score,
    -amplification * (S_hat - S),
)

EQ10_NOISE = Identity(
    "eq10-bias-noise-form",
    "in noise form (Γ̂_t = β̄_t Ŝ_t, Γ_t = β̄_t S_t) the same bias is σ̂² − σ*² = −g²(Γ̂_t − Γ_t): the coefficient "
    "on the ε-scale is g² ∈ [0, β̄_t/α_{t|s}]",
    sigma_sq_hat - sigma_sq_opt,
    -amplification * (S_hat - S),
    steps=(Step("σ̂² − σ*² = g²((1 − Γ̂_t) − (1 − Γ_t))", -gap**2 * (gamma_hat - Gamma)),),
    assume={gamma_hat: bb_t * S_hat, Gamma: bb_t * S},
)

EQ10_DDPM = Identity(
    "eq10-amplification-ddpm",
    "λ² = β̃_{s|t}: the amplification coefficient is g²β̄_t = β_{t|s}²/α_{t|s} (per step, t = s + 1: β_t²/α_t)",
    amplification.xreplace(ddpm),
    b_ts**2 / a_ts,
    steps=(Step("g² = β_{t|s}²/(α_{t|s} β̄_t) (Corollary 3)", b_ts**2 / (a_ts * bb_t) * bb_t),),
)

EQ10_UPPER = Identity(
    "eq10-amplification-upper",
    "β̄_t/α_{t|s} − g² = √(β̄_s − λ²)·(2√(β̄_t/α_{t|s}) − √(β̄_s − λ²)) ≥ 0 (β̄_s − λ² ≤ β̄_s < β̄_t/α_{t|s}): the "
    "amplification g²β̄_t never exceeds β̄_t²/α_{t|s}",
    bb_t / a_ts - gap**2,
    sp.sqrt(bb_s - lam2) * (2 * sp.sqrt(bb_t / a_ts) - sp.sqrt(bb_s - lam2)),
)

# ------------------------------------------------------------------------------------------------ the Monte Carlo bias
s2o = sp.Symbol("σ*²", positive=True)  #: σ*² = λ² + c² v_t, the minimiser
h = sp.Symbol("h", real=True)  #: σ̂² − σ*²
V1 = sp.Symbol("V_1", nonnegative=True)  #: Var(‖ε̂_t(x_t)‖²/d) for one sample x_t ~ q_t
kappa3 = sp.Symbol("κ_3", real=True)  #: third central moment of ‖ε̂_t(x_t)‖²/d for one sample
Mn = sp.Symbol("M", positive=True, integer=True)  #: the number of Monte Carlo samples
m1 = sp.Symbol("m_1", real=True)  #: E δ_m for δ_m = ‖ε̂(x_{t,m})‖²/d − Γ_t (0: Γ̂ is unbiased)
H3 = sp.Symbol("h₃", real=True)  #: a random symbol standing for h = σ̂² − σ*²
sy.LATEX_NAMES.update({s2o: r"\sigma^{*2}", h: "h", V1: "V_1", kappa3: r"\kappa_3", Mn: "M", m1: "m_1", H3: "h"})


def kl_exact_mean(s2):
    """E KL(q(x_s|x_t, x_0) ‖ N(μ*, σ² I))/d with the exact mean, written with σ*² = λ² + c² v_t: P App. A.4."""
    return (s2o / s2 - 1 + sp.log(s2 / lam2)) / 2


_f_excess = kl_exact_mean(s2o + h) - kl_exact_mean(s2o)
BOUND_QUADRATIC = Identity(
    "mc-bound-quadratic",
    "the per-transition bound f(σ²) = ½(σ*²/σ² − 1 + log(σ²/λ²)) (the KL with the exact mean, c²v_t = σ*² − λ²) "
    "has f'(σ*²) = 0 and f''(σ*²) = 1/(2σ*⁴): f(σ*² + h) − f(σ*²) = h²/(4σ*⁴) + O(h³)",
    _f_excess,
    h**2 / (4 * s2o**2),
    order=(h, 3),
)

MC_MOMENTS = Identity(
    "mc-mean-moments",
    "Γ̂_t = Γ_t + (1/M) Σ_m δ_m with iid δ_m of mean m_1 = 0 (Γ̂ is unbiased), variance V_1 and third central moment "
    "κ_3: of the M² index pairs, M are diagonal (E δ² = V_1) and M(M−1) off-diagonal (E δ_i δ_j = m_1²); of the M³ "
    "triples, M equal, 3M(M−1) with one pair and M(M−1)(M−2) distinct, and the classes count M³. So "
    "E(Γ̂ − Γ)² = V_1/M and E(Γ̂ − Γ)³ = κ_3/M²",
    sp.Matrix([[(Mn * V1 + Mn * (Mn - 1) * m1**2) / Mn**2,
                (Mn * kappa3 + 3 * Mn * (Mn - 1) * V1 * m1 + Mn * (Mn - 1) * (Mn - 2) * m1**3) / Mn**3,
                Mn + 3 * Mn * (Mn - 1) + Mn * (Mn - 1) * (Mn - 2)]]),
    sp.Matrix([[V1 / Mn, kappa3 / Mn**2, Mn**3]]),
    assume={m1: sp.Integer(0)},
)

_g2 = sp.Symbol("g²", positive=True)  #: the squared gap, a free positive symbol in the bias expansion
sy.LATEX_NAMES[_g2] = "g^2"


class ExpectPlugin(DeclaredMoments):
    """h = σ̂² − σ*² = −g²(Γ̂_t − Γ_t) (eq. (10) in noise form): E h = 0, E h² = g⁴V_1/M, E h³ = −g⁶κ_3/M²
    (mc-mean-moments)."""

    table = {H3: sp.Integer(0), H3**2: _g2**2 * V1 / Mn, H3**3: -_g2**3 * kappa3 / Mn**2}


_taylor3 = sp.series(_f_excess, h, 0, 4).removeO()
bias_coefficient = _g2**2 * V1 / (4 * s2o**2)  #: the 1/M coefficient of the bias of one transition's term
bias_coefficient_lib = gap**2 * gap**2 * V1 / (4 * sigma_sq_opt**2)  #: the same in the schedule's symbols

MC_BIAS = Identity(
    "mc-bound-bias",
    "the plug-in bound's bias per transition: E f(σ̂²) − f(σ*²) = E[h²]/(4σ*⁴) + f'''(σ*²) E[h³]/6 + O(E h⁴) "
    "= g⁴V_1/(4Mσ*⁴) + O(M⁻²) (the cubic Taylor polynomial of f at σ*², averaged with E h = 0, E h² = g⁴V_1/M, "
    "E h³ = −g⁶κ_3/M²; E h⁴ = O(M⁻²)): the bias of the bound is positive and falls as 1/M",
    ExpectPlugin(_taylor3.xreplace({h: H3})),
    bias_coefficient / Mn + _g2**3 * kappa3 / (3 * Mn**2 * s2o**3),
    steps=(Step("Taylor coefficients at σ*²: f' = 0, f''/2 = 1/(4σ*⁴), f'''/6 = −1/(3σ*⁶)",
                ExpectPlugin(H3**2 / (4 * s2o**2) - H3**3 / (3 * s2o**3))),
           Step("E h² = g⁴V_1/M, E h³ = −g⁶κ_3/M²",
                _g2**2 * V1 / (4 * Mn * s2o**2) + _g2**3 * kappa3 / (3 * Mn**2 * s2o**3))),
)

_gam = sp.Symbol("γ_i", positive=True)  #: Var(ε*_i) = β̄_t/(ᾱ_t λ_i + β̄_t) in one eigen-direction of Gaussian data
sy.LATEX_NAMES[_gam] = r"\gamma_i"
GAUSS_V1 = Identity(
    "mc-gaussian-single-sample",
    "Gaussian data, one eigen-direction of variance λ_i: ε*_i(x_t) = √γ_i z with z ~ N(0, 1), γ_i = β̄_t/(ᾱ_t λ_i + "
    "β̄_t), so E ε*_i² = γ_i and Var(ε*_i²) = E(γ_i z² − γ_i)² = 2γ_i²; the directions are independent, so "
    "V_1 = Var(‖ε*‖²/d) = (2/d²) Σ_i γ_i² and κ_3 = (8/d³) Σ_i γ_i³",
    sp.Matrix([[Expect(_gam * z**2), Expect((_gam * z**2 - _gam) ** 2)]]),
    sp.Matrix([[_gam, 2 * _gam**2]]),
)

_z6 = sp.Symbol("z⁶", positive=True)
GAUSS_K3 = Identity(
    "mc-gaussian-third-moment",
    "E(γ z² − γ)³ = γ³(E z⁶ − 3E z⁴ + 3E z² − 1) = γ³(15 − 9 + 3 − 1) = 8γ³ (E z⁶ = 15)",
    _gam**3 * (_z6 - 3 * Expect(z**4) + 3 * Expect(z**2) - 1),
    8 * _gam**3,
    assume={_z6: sp.Integer(15)},
)

MONTE_CARLO_BIAS = Result(
    id="eq10-plugin-bias",
    title="Eq. (10): the bias of the plug-in estimate σ̂², its amplification coefficient, and the O(1/M) bias of "
          "the bound",
    paper="P eq. (10) (§3, after eq. (9)); the effect of M: P App. G.2, Table 5 (facts §2.5)",
    summary="σ̂² − σ*² = −g²β̄_t(Ŝ_t − S_t) = −g²(Γ̂_t − Γ_t): the mean-square-score error is amplified by g²β̄_t "
            "(β_{t|s}²/α_{t|s} for DDPM). With Γ̂_t a Monte Carlo mean of M samples σ̂² is unbiased, but the bound is "
            "not linear in σ²: each transition's term is biased upwards by g⁴V_1/(4Mσ*⁴) + O(M⁻²), "
            "V_1 = Var(‖ε̂_t‖²/d). Table 5's NLL excess over the large-M value falls at the same rate.",
    identities=(EQ10_SCORE, EQ10_NOISE, EQ10_DDPM, EQ10_UPPER, BOUND_QUADRATIC, MC_MOMENTS, MC_BIAS, GAUSS_V1,
                GAUSS_K3),
    expressions=(
        Expression("sigma_sq_hat", sigma_sq_hat, (ab_s, ab_t, lam2, gamma_hat), "σ̂² from Γ̂ (eq. (9))"),
        Expression("bias", -gap**2 * (gamma_hat - Gamma), (ab_s, ab_t, lam2, gamma_hat, Gamma),
                   "σ̂² − σ*² = −g²(Γ̂ − Γ) (eq. (10), noise form)"),
        Expression("amplification", amplification, (ab_s, ab_t, lam2), "g²β̄_t, the coefficient of eq. (10)"),
        Expression("bias_coefficient", bias_coefficient_lib, (ab_s, ab_t, lam2, Gamma, V1),
                   "g⁴V_1/(4σ*⁴): the bound's bias of one transition times M, to leading order"),
        Expression("kl_excess_quadratic", h**2 / (4 * s2o**2), (h, s2o), "f(σ*² + h) − f(σ*²) to second order"),
        Expression("gaussian_single_sample_variance", 2 * _gam**2, (_gam,), "Var(ε*_i²) of one direction"),
    ),
    functions=(
        "analytic_dpm.gamma.estimate_gamma",
        "analytic_dpm.toy.evaluate_exact",
        "analytic_dpm.variance.sigma_sq_opt",
        "analytic_dpm.likelihood.exact_mean_transition_kl",
    ),
    tests=(
        "tests/test_theory_derivations.py::test_eq10_bias_and_amplification_match_library",
        "tests/test_theory_derivations.py::test_bound_excess_is_quadratic_in_library",
        "tests/test_theory_derivations.py::test_plugin_bound_bias_falls_as_one_over_M",
    ),
    notes=(
        "Table 5 (facts §2.5): the NLL excess over the large-M run, ImageNet 64 (M = 1, 3, 10, 100 against "
        "M = 10000), has log-log slope ≈ −0.94; CIFAR10 (LS) M = 1 → 3 gives ≈ −1.12 (M = 10, 100 are within the "
        "run-to-run std). tests/test_theory_derivations.py asserts both.",
        "Clipping σ̂² into Theorem 2's interval (Γ̂ outside [0, 1]) is a different, non-smooth effect; the toy test "
        "chooses data and M where it does not occur and asserts that it did not.",
    ),
)


# ================================================================================================ Theorem 3, any K
K = sp.Symbol("K", positive=True, integer=True)  #: number of points τ_1 = 1 < … < τ_K = N
kk = sp.Symbol("k", positive=True, integer=True)  #: a transition index, (τ_{k−1}, τ_k)
lam2_k = sp.Function("λ²", positive=True)  #: λ²_k = λ²_{τ_{k−1}|τ_k}
sig2_k = sp.Function("σ*²", positive=True)  #: σ*²_k = σ*²_{τ_{k−1}|τ_k} (Theorem 1)
F_k = sp.Function("F", real=True)  #: F(k, ϑ) = f(τ_k) = log(β̄_{τ_k}/ᾱ_{τ_k}) (Corollary 4's offset)
theta = sp.Symbol("ϑ", positive=True)  #: the schedule's parameters, on which F depends besides k
H0 = sp.Symbol("H_0", real=True)  #: the entropy of q(x_0)
CE_N = sp.Symbol("C_N", real=True)  #: −E log p(x_N), the prior cross-entropy
D_1 = sp.Symbol("D_1", real=True)  #: −E log p*(x_0 | x_{τ_1}), the decoder term (τ_1 = 1)
ab_N = sp.Symbol("ᾱ_N", positive=True)
bb_N = 1 - ab_N
m2 = sp.Symbol("m_2", positive=True)  #: E‖x_0‖²/d
x0c = sp.Symbol("x_0c", real=True)  #: one coordinate of x_0 (random)
sy.LATEX_NAMES.update({theta: r"\vartheta", K: "K", kk: "k", H0: "H_0", CE_N: "C_N", D_1: "D_1",
                       ab_N: r"\bar\alpha_N", m2: "m_2",
                       x0c: "x_0"})
_traj_samplers = {K: _int_sampler(2, 9), ab_N: lambda x: mpmath.mpf(x) * mpmath.mpf("0.998") + mpmath.mpf("0.001")}


def _gauss_entropy(var):
    """E log N(x | μ, var I) under x ~ N(μ, var I), d dimensions: x = μ + √var z per coordinate."""
    return d * (-sp.log(2 * sp.pi * var) / 2 - Expect(z**2) / 2)


GAUSS_ENTROPY = Identity(
    "gaussian-entropy",
    "E log N(x | μ, λ² I) for x ~ N(μ, λ² I) in d dimensions: −(d/2)(log 2πλ² + E z²) = −(d/2) log(2πeλ²)",
    _gauss_entropy(lam2),
    -d / 2 * sp.log(2 * sp.pi * sp.E * lam2),
)

_per_q = -d / 2 * sp.log(2 * sp.pi * sp.E * lam2_k(kk))  #: E log q(x_{τ_{k−1}} | x_{τ_k}, x_0)
_per_p = -d / 2 * (sp.log(2 * sp.pi * sig2_k(kk)) + 1)  #: E log p*(x_{τ_{k−1}} | x_{τ_k}) (moment matched)
_Eq = -H0 - d / 2 * sp.log(2 * sp.pi * sp.E * bb_N) + LazySum(_per_q, (kk, 2, K))  #: E log q(x_0, x_{τ_1..τ_K})
_Ep = -CE_N - D_1 + LazySum(_per_p, (kk, 2, K))  #: E log p*(x_0, x_{τ_1..τ_K})
c_const = -H0 - d / 2 * sp.log(2 * sp.pi * sp.E * bb_N) + CE_N + D_1

T3_DECOMPOSITION = Identity(
    "theorem3-joint-kl-any-K",
    "for every K: q(x_0, x_τ) = q(x_0) q(x_N|x_0) Π_{k=2}^K q(x_{τ_{k−1}}|x_{τ_k}, x_0) and p*(x_0, x_τ) = p(x_N) "
    "Π_{k=2}^K p*(x_{τ_{k−1}}|x_{τ_k}) p*(x_0|x_{τ_1}); with E log q(x_s|x_t, x_0) = −(d/2) log(2πeλ²_k) "
    "(gaussian-entropy) and E log p*(x_s|x_t) = −(d/2)(log 2πσ*²_k + 1) (moment matching: E‖x_s − μ*‖²/d = σ*²_k), "
    "KL(q ‖ p*) = E log q − E log p* = (d/2) Σ_{k=2}^K log(σ*²_k/λ²_k) + c, c = −H(q(x_0)) − (d/2) log(2πeβ̄_N) "
    "− E log p(x_N) − E log p*(x_0|x_1): eq. (14)",
    _Eq - _Ep,
    d / 2 * LazySum(sp.log(sig2_k(kk) / lam2_k(kk)), (kk, 2, K)) + c_const,
    steps=(Step("linearity of Σ: one sum of per-transition differences",
                LazySum(_per_q - _per_p, (kk, 2, K)) + c_const),),
    samplers=_traj_samplers,
)


class ExpectPrior(DeclaredMoments):
    """x_0 (one coordinate) and z ~ N(0, 1) independent of it: E x_0² = m_2 (E‖x_0‖²/d), E x_0 z = 0, E z² = 1."""

    table = {x0c**2: m2, x0c * z: sp.Integer(0), z**2: sp.Integer(1)}


_xN = sp.sqrt(ab_N) * x0c + sp.sqrt(bb_N) * z
prior_kl = (bb_N + ab_N * m2 - 1 - sp.log(bb_N)) / 2  #: E KL(q(x_N|x_0) ‖ N(0, I))/d
T3_CONSTANT = Identity(
    "theorem3-constant",
    "the constant depends on the end points only: −(d/2) log(2πeβ̄_N) − E log N(x_N | 0, I) = d·E KL(q(x_N|x_0) ‖ "
    "N(0, I))/d = (d/2)(β̄_N + ᾱ_N E‖x_0‖²/d − 1 − log β̄_N) (x_N = √ᾱ_N x_0 + √β̄_N z), a function of ᾱ_N and the "
    "data; with H(q(x_0)) and the decoder term at τ_1 = 1 no τ_2..τ_{K−1} enters c, so every trajectory from 1 to N "
    "has the same c and argmin_τ KL = argmin_τ Σ J",
    -d / 2 * sp.log(2 * sp.pi * sp.E * bb_N) + d * (sp.log(2 * sp.pi) / 2 + ExpectPrior(_xN**2) / 2),
    d * prior_kl,
    steps=(Step("E x_N² = ᾱ_N m_2 + β̄_N", -d / 2 * sp.log(2 * sp.pi * sp.E * bb_N)
                + d * (sp.log(2 * sp.pi) + ab_N * m2 + bb_N) / 2),
           Step("= d·KL(N(√ᾱ_N x_0, β̄_N I) ‖ N(0, I))/d averaged over x_0 (kl-isotropic-gaussians)",
                kl_isotropic(d, bb_N, 1, d * ab_N * m2)),),
    samplers=_traj_samplers,
)

T3_TELESCOPE = Identity(
    "theorem3-telescoping-any-K",
    "for every K: Σ_{k=2}^K [F(k) − F(k−1)] = F(K) − F(1), F(k) = F(k, ϑ) = f(τ_k) = log(β̄_{τ_k}/ᾱ_{τ_k}); so "
    "Corollary 4's "
    "cost and log(σ*²/λ²) differ by f(N) − f(1) on every trajectory (corollary4-telescoping, there for K = 6)",
    sp.Sum(F_k(kk, theta) - F_k(kk - 1, theta), (kk, 2, K)),
    F_k(K, theta) - F_k(1, theta),
    samplers=_traj_samplers,
)

DECOMPOSITION = Result(
    id="theorem3-decomposition",
    title="Theorem 3's decomposition of the joint KL for any K, and the trajectory-independence of its constant",
    paper="P Theorem 3, eq. (14) (proof App. A.4, Lemmas 7–9); Corollary 4 (App. D); facts §4.1",
    summary="KL(q(x_0, x_τ1..x_τK) ‖ p*) = (d/2) Σ_{k=2}^K log(σ*²_k/λ²_k) + c for every K, with "
            "c = −H(q(x_0)) + d·E KL(q(x_N|x_0) ‖ p(x_N))/d − E log p*(x_0|x_1), which involves only τ_1 = 1, τ_K = N "
            "and the data; the offset between Corollary 4's cost and J telescopes to f(N) − f(1) for every K.",
    identities=(GAUSS_ENTROPY, T3_DECOMPOSITION, T3_CONSTANT, T3_TELESCOPE),
    expressions=(
        Expression("prior_kl", prior_kl, (ab_N, m2), "E KL(q(x_N|x_0) ‖ N(0, I))/d"),
        Expression("gaussian_entropy", -d / 2 * sp.log(2 * sp.pi * sp.E * lam2), (d, lam2), "E log N under itself"),
    ),
    functions=(
        "analytic_dpm.toy.evaluate_exact",
        "analytic_dpm.likelihood.prior_kl_per_dim",
        "analytic_dpm.optimal_trajectory.analytic_ddpm_cost",
        "analytic_dpm.optimal_trajectory.trajectory_cost",
    ),
    tests=("tests/test_theory_derivations.py::test_joint_kl_minus_cost_is_the_same_for_every_trajectory",),
    notes=("The transition terms are theorem3-expected-term; this result adds the sum for symbolic K, the constant "
           "and its independence of the interior of the trajectory.",),
)

# ================================================================================================ Lemma 9, shared σ²
Vx = sp.Symbol("V(x_t)", nonnegative=True)  #: tr Cov(x_s | x_t)/d, a function of x_t (random)
Dx = sp.Symbol("D(x_t)", nonnegative=True)  #: ‖E[x_s|x_t] − μ(x_t)‖²/d (random)
Cx = sp.Symbol("C(x_t)", nonnegative=True)  #: tr Cov(x_0 | x_t)/d (random)
vbar = sp.Symbol("v̄", positive=True)  #: E_{x_t} V(x_t)
dbar = sp.Symbol("D̄", nonnegative=True)  #: E_{x_t} D(x_t)
sig2s = sp.Symbol("σ²", positive=True)  #: the shared variance
sy.LATEX_NAMES.update({Vx: "V(x_t)", Dx: "D(x_t)", Cx: "C(x_t)", vbar: r"\bar v", dbar: r"\bar D", sig2s: r"\sigma^2"})


class ExpectXt(DeclaredMoments):
    """E over x_t ~ q_t of functions of x_t: E V = v̄, E D = D̄ (their definitions), E C = v_t (the definition of v_t,
    P Lemma 13)."""

    table = {Vx: vbar, Dx: dbar, Cx: sy.cov}


_phi9 = lambda u: u - 1 - sp.log(u)  # noqa: E731
_obj_pointwise = sp.log(sig2s) / 2 + (Vx + Dx) / (2 * sig2s)
_obj = sp.log(sig2s) / 2 + (vbar + dbar) / (2 * sig2s)

L9_AVERAGE = Identity(
    "lemma9-shared-average",
    "p(x_s|x_t) = N(μ(x_t), σ² I) with one σ² for all x_t: by Lemma 1 at each x_t the cross-entropy per coordinate is "
    "½log σ² + (V(x_t) + D(x_t))/(2σ²) (+ const); σ² does not depend on x_t, so E_{x_t} of it is "
    "½log σ² + (v̄ + D̄)/(2σ²): only the averages v̄ = E tr Cov(x_s|x_t)/d and D̄ enter",
    ExpectXt(_obj_pointwise),
    _obj,
)

L9_EXCESS = Identity(
    "lemma9-shared-excess",
    "F(μ, σ²) − F(E[x_s|·], v̄) = D̄/(2σ²) + ½φ(v̄/σ²), φ(u) = u − 1 − log u ≥ 0 (phi-convex): the minimum is at "
    "D̄ = 0 (μ(x_t) = E[x_s|x_t], as D ≥ 0) and σ² = v̄ = E_{x_t} tr Cov(x_s|x_t)/d",
    _obj - (sp.log(vbar) / 2 + sp.Rational(1, 2)),
    dbar / (2 * sig2s) + _phi9(vbar / sig2s) / 2,
)

_sol9 = sp.solve(sp.diff(_obj.xreplace({dbar: 0}), sig2s), sig2s)
L9_STATIONARY = Identity(
    "lemma9-shared-stationary",
    "∂F/∂σ² = (σ² − v̄ − D̄)/(2σ⁴) vanishes only at σ² = v̄ + D̄ (= v̄ for the optimal mean; sympy.solve finds one "
    "root)",
    sp.Matrix([[sp.diff(_obj, sig2s), _sol9[0], len(_sol9)]]),
    sp.Matrix([[(sig2s - vbar - dbar) / (2 * sig2s**2), vbar, 1]]),
)

L9_TO_L13 = Identity(
    "lemma9-to-lemma13",
    "V(x_t) = λ² + c² C(x_t) at every x_t (lemma13-variance), so v̄ = E_{x_t} V = λ² + c² v_t: the shared optimum is "
    "σ*² = λ² + c² E tr Cov(x_0|x_t)/d",
    ExpectXt(lam2 + sp.Symbol("c", real=True) ** 2 * Cx),
    lam2 + sp.Symbol("c", real=True) ** 2 * sy.cov,
)

LEMMA9_SHARED = Result(
    id="lemma9-shared-variance",
    title="Lemma 9's shared-σ² step: one variance for all x_t is optimal at E_{x_t} tr Cov(x_s|x_t)/d",
    paper="P Lemma 9 (App. A.1), the step before Lemma 13 in Theorem 1's proof (App. A.2)",
    summary="With p(x_s|x_t) = N(μ(x_t), σ² I) and σ² shared over x_t, E_{x_t} KL(q(x_s|x_t) ‖ p) = "
            "½log σ² + (v̄ + D̄)/(2σ²) + const per coordinate, minimised by μ(x_t) = E[x_s|x_t] and "
            "σ² = v̄ = E tr Cov(x_s|x_t)/d = λ² + c² v_t.",
    identities=(L9_AVERAGE, L9_EXCESS, L9_STATIONARY, L9_TO_L13),
    expressions=(
        Expression("excess", dbar / (2 * sig2s) + _phi9(vbar / sig2s) / 2, (vbar, dbar, sig2s),
                   "F(μ, σ²) − F(optimum)"),
    ),
    functions=("analytic_dpm.likelihood.exact_mean_transition_kl",
               "analytic_dpm.variance.sigma_sq_from_posterior_cov"),
    tests=("tests/test_theory_derivations.py::test_shared_variance_minimises_library_kl",),
)

# ================================================================================================ Prop. 2
_L = kl_exact_mean(sig2s)  #: L_n(σ²) = E KL/d with the exact mean (P eq. (4) term), σ*² = λ² + c² v_t
_rho = sp.Symbol("ρ", positive=True)  #: the precision 1/σ²
sy.LATEX_NAMES[_rho] = r"\rho"
L_second = (2 * s2o - sig2s) / (2 * sig2s**3)

P2_DERIVATIVES = Identity(
    "prop2-derivatives",
    "L_n(σ²) = ½(σ*²/σ² − 1 + log(σ²/λ²)): L' = (σ² − σ*²)/(2σ⁴) (one stationary point, the minimum σ*²: L is "
    "unimodal) and L'' = (2σ*² − σ²)/(2σ⁶), negative for σ² > 2σ*²",
    sp.Matrix([[sp.diff(_L, sig2s), sp.diff(_L, sig2s, 2)]]),
    sp.Matrix([[(sig2s - s2o) / (2 * sig2s**2), L_second]]),
)

P2_NEGATIVE = Identity(
    "prop2-nonconvex-point",
    "at σ² = 3σ*²: −L'' = 1/(54σ*⁴) > 0, so L_n is not convex in σ² (App. H.2)",
    -sp.diff(_L, sig2s, 2).xreplace({sig2s: 3 * s2o}),
    1 / (54 * s2o**2),
    nonneg=True,
)

P2_PRECISION = Identity(
    "prop2-convex-in-precision",
    "in the precision ρ = 1/σ², L = ½(σ*²ρ − 1 − log(ρλ²)) has d²L/dρ² = 1/(2ρ²) ≥ 0: convex in ρ",
    sp.diff(_L.xreplace({sig2s: 1 / _rho}), _rho, 2),
    1 / (2 * _rho**2),
    nonneg=True,
)

PROPOSITION2 = Result(
    id="proposition2-nonconvex",
    title="Prop. 2: L_n is not convex in σ_n² (though unimodal, and convex in 1/σ_n²)",
    paper="P Proposition 2 (App. H.2) as the issue cites it; its statement is not in the facts file, so this is the "
          "non-convexity of the per-step objective L_n(σ²) that App. H.2 discusses",
    summary="L_n(σ²) = ½(σ*²/σ² − 1 + log(σ²/λ²)) has L'' = (2σ*² − σ²)/(2σ⁶) < 0 for σ² > 2σ*² (e.g. 3σ*²); its "
            "only stationary point is the minimum σ*², and it is convex in the precision 1/σ².",
    identities=(P2_DERIVATIVES, P2_NEGATIVE, P2_PRECISION),
    expressions=(Expression("second_derivative", L_second, (sig2s, s2o), "d²L_n/d(σ²)²"),),
    functions=("analytic_dpm.likelihood.exact_mean_transition_kl",),
    tests=("tests/test_theory_derivations.py::test_library_kl_is_not_convex_in_sigma_sq",),
)

# ================================================================================================ Tweedie, n components
n_comp = sp.Symbol("n", positive=True, integer=True)  #: number of mixture components
jj = sp.Symbol("j", positive=True, integer=True)  #: a component index
w_j = sp.Function("w", positive=True)  #: weight of component j (need not be normalised: q's mass cancels)
m_j = sp.Function("m", real=True)  #: mean of component j (one coordinate)
v_j = sp.Function("v", positive=True)  #: variance of component j
sy.LATEX_NAMES.update({n_comp: "n", jj: "j"})
_A_j = ab_t * v_j(jj) + bb_t  #: variance of component j of q_t
_n_j = normal_pdf(xt, sp.sqrt(ab_t) * m_j(jj), _A_j)  #: its density at x_t
_pm_j = m_j(jj) + sp.sqrt(ab_t) * v_j(jj) * (xt - sp.sqrt(ab_t) * m_j(jj)) / _A_j  #: E[x_0 | x_t, j]
_pv_j = v_j(jj) * bb_t / _A_j  #: Var(x_0 | x_t, j)
_mix_samplers = {n_comp: _int_sampler(1, 6)}

MIX_COMPONENT = Identity(
    "tweedie-component",
    "one Gaussian component N(m_j, v_j): its posterior mean and second moment are those of Tweedie's formula with "
    "its own density n_j: √ᾱ_t E[x_0|x_t, j] = x_t + β̄_t n_j'/n_j and ᾱ_t E[x_0²|x_t, j] = x_t² + 2β̄_t x_t n_j'/n_j "
    "+ β̄_t² n_j''/n_j + β̄_t",
    sp.Matrix([[sp.sqrt(ab_t) * _pm_j, ab_t * (_pv_j + _pm_j**2)]]),
    sp.Matrix([[xt + bb_t * sp.diff(_n_j, xt) / _n_j,
                xt**2 + 2 * bb_t * xt * sp.diff(_n_j, xt) / _n_j + bb_t**2 * sp.diff(_n_j, xt, 2) / _n_j + bb_t]]),
)

Nj = sp.Function("N", positive=True)  #: N(j, x_t): the density of component j of q_t at x_t (any smooth positive one)
_Nj = Nj(jj, xt)
_q_any = LazySum(w_j(jj) * _Nj, (jj, 1, n_comp))  #: q_t(x_t) = Σ_j w_j N(j, x_t)
_mean_j = (xt + bb_t * sp.diff(_Nj, xt) / _Nj) / sp.sqrt(ab_t)  #: E[x_0|x_t, j] by tweedie-component
_second_j = (xt**2 + 2 * bb_t * xt * sp.diff(_Nj, xt) / _Nj + bb_t**2 * sp.diff(_Nj, xt, 2) / _Nj + bb_t) / ab_t

MIX_MEAN = Identity(
    "tweedie-mixture-mean-any-n",
    "x_0 ~ Σ_{j=1}^n w_j N(m_j, v_j), any n: E[x_0|x_t] = Σ_j (w_j N_j/q) E[x_0|x_t, j] with E[x_0|x_t, j] = "
    "(x_t + β̄_t N_j'/N_j)/√ᾱ_t (tweedie-component) = (x_t + β̄_t q'/q)/√ᾱ_t, q = Σ_j w_j N_j, by linearity of Σ "
    "and of ∂/∂x_t",
    LazySum(w_j(jj) * _Nj * _mean_j, (jj, 1, n_comp)) / _q_any,
    (xt + bb_t * sp.Derivative(_q_any, xt) / _q_any) / sp.sqrt(ab_t),
    steps=(Step("N_j cancels in each summand",
                LazySum(w_j(jj) * (xt * _Nj + bb_t * sp.diff(_Nj, xt)), (jj, 1, n_comp)) / (sp.sqrt(ab_t) * _q_any)),),
    samplers=_mix_samplers,
)

MIX_SECOND = Identity(
    "tweedie-mixture-second-moment-any-n",
    "likewise E[x_0²|x_t] = Σ_j (w_j N_j/q) E[x_0²|x_t, j] (tweedie-component) = (x_t² + 2β̄_t x_t q'/q + "
    "β̄_t² q''/q + β̄_t)/ᾱ_t for any n",
    LazySum(w_j(jj) * _Nj * _second_j, (jj, 1, n_comp)) / _q_any,
    (xt**2 + 2 * bb_t * xt * sp.Derivative(_q_any, xt) / _q_any
     + bb_t**2 * sp.Derivative(_q_any, (xt, 2)) / _q_any + bb_t) / ab_t,
    steps=(Step("N_j cancels in each summand",
                LazySum(w_j(jj) * (xt**2 * _Nj + 2 * bb_t * xt * sp.diff(_Nj, xt) + bb_t**2 * sp.diff(_Nj, xt, 2)
                                  + bb_t * _Nj), (jj, 1, n_comp)) / (ab_t * _q_any)),),
    samplers=_mix_samplers,
)

_qm, _q1m, _q2m = sp.symbols("q q' q''", positive=True)
MIX_VARIANCE = Identity(
    "tweedie-mixture-variance",
    "second moment minus squared mean (both from the identities above, with q, q', q'' the mixture density and its "
    "derivatives at x_t): (x² + 2β̄xq'/q + β̄²q''/q + β̄)/ᾱ − ((x + β̄q'/q)/√ᾱ)² = (β̄/ᾱ)(1 + β̄(q''/q − (q'/q)²))",
    (xt**2 + 2 * bb_t * xt * _q1m / _qm + bb_t**2 * _q2m / _qm + bb_t) / ab_t - ((xt + bb_t * _q1m / _qm)
                                                                                 / sp.sqrt(ab_t)) ** 2,
    bb_t / ab_t * (1 + bb_t * (_q2m / _qm - (_q1m / _qm) ** 2)),
)

qf = sp.Function("q", positive=True)
_xa, _xb = sp.Symbol("a", real=True), sp.Symbol("b", real=True)
sy.LATEX_NAMES.update({_xa: "a", _xb: "b"})
L11_POINTWISE = Identity(
    "lemma11-general-pointwise",
    "any C² density q > 0: q·∂²log q = q'' − (q')²/q, so E ∂²log q = ∫ q'' dx − E (∂log q)²",
    qf(xt) * sp.diff(sp.log(qf(xt)), xt, 2),
    sp.diff(qf(xt), xt, 2) - sp.diff(qf(xt), xt) ** 2 / qf(xt),
)

L11_BOUNDARY = Identity(
    "lemma11-general-boundary",
    "∫_a^b q'' dx = q'(b) − q'(a) for any C² q (fundamental theorem of calculus); for a density with q'(x) → 0 as "
    "|x| → ∞ (true for q_t = q_0 ∗ N(0, β̄_t), whose derivative is a Gaussian-smoothed density) the limit is 0, "
    "hence E ∂²log q_t = −E(∂log q_t)² and Lemma 11: E tr Cov(x_0|x_t)/d = (β̄_t/ᾱ_t)(1 − β̄_t E‖∇log q_t‖²/d)",
    sp.Integral(sp.diff(qf(xt), xt, 2), (xt, _xa, _xb)),
    sp.Subs(sp.diff(qf(xt), xt), xt, _xb) - sp.Subs(sp.diff(qf(xt), xt), xt, _xa),
)

TWEEDIE_MIXTURE_N = Result(
    id="tweedie-mixture-any-n",
    title="Tweedie / Lemma 11 for a Gaussian mixture with any number of components, and for a general density",
    paper="P Lemma 11 (App. A.1) and Lemma 10; Theorem 1's third step",
    summary="For x_0 ~ Σ_{j=1}^n w_j N(m_j, v_j) (any n, proven with a symbolic n): "
            "E[x_0|x_t] = (x_t + β̄_t q'/q)/√ᾱ_t "
            "and Var(x_0|x_t) = (β̄_t/ᾱ_t)(1 + β̄_t ∂²log q_t) at every x_t, by linearity over the components; for "
            "any C² density with vanishing derivative at infinity E ∂²log q = −E(∂log q)², which gives Lemma 11.",
    identities=(MIX_COMPONENT, MIX_MEAN, MIX_SECOND, MIX_VARIANCE, L11_POINTWISE, L11_BOUNDARY),
    expressions=(
        Expression("posterior_var", bb_t / ab_t * (1 + bb_t * (_q2m / _qm - (_q1m / _qm) ** 2)),
                   (ab_t, _qm, _q1m, _q2m), "Var(x_0|x_t) from q, q', q'' at x_t"),
        Expression("posterior_mean", (xt + bb_t * _q1m / _qm) / sp.sqrt(ab_t), (ab_t, xt, _qm, _q1m),
                   "E[x_0|x_t] from q, q' at x_t"),
    ),
    functions=("analytic_dpm.toy.GaussianMixtureData.x0_posterior_mean",
               "analytic_dpm.toy.GaussianMixtureData.score"),
    tests=("tests/test_theory_derivations.py::test_mixture_tweedie_any_n_matches_toy",),
)

RESULTS = (MONTE_CARLO_BIAS, DECOMPOSITION, LEMMA9_SHARED, PROPOSITION2, TWEEDIE_MIXTURE_N)
