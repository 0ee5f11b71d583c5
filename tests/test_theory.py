"""theory/ (sympy) and analytic_dpm (float64 numpy) are independent descriptions of the same mathematics; here they
must agree. Each test takes the sympy expressions of one registry entry, lambdifies them to mpmath (50 digits) and
evaluates them at the exact values of the points hypothesis draws (ᾱ_n = Π(1 − β_i) in 50 digits from the schedule's
own float64 β), then compares with the library's float64 numbers to about 1e-12 relative.

The registry (theory/registry.py) names these tests; tests/test_theory_registry.py checks the links.
"""

import importlib
import math

import mpmath
import numpy as np
import pytest
import scipy.integrate
from conftest import betas, schedule_and_trajectory
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import analytic_dpm as adpm
import theory
from analytic_dpm import likelihood
from analytic_dpm.gamma import estimate_gamma, gamma_from_mean_sq_score
from analytic_dpm.sampling import coefficient_table
from analytic_dpm.toy import (GaussianData, GaussianMixtureData, ImperfectEps, default_mixture,
                              exact_one_minus_gamma_of_imperfect, exact_residual_of_imperfect)

# the package attribute `optimal_trajectory` is the function; the module is reached through importlib
ot = importlib.import_module("analytic_dpm.optimal_trajectory")

mpmath.mp.dps = 50
REL = 1e-12  # float64 results against 50-digit values of the sympy expressions


# ---------------------------------------------------------------------------------------------------- helpers
def exact_alpha_bar(sched):
    """ᾱ_n, n = 0..N, in 50 digits from the schedule's own β (Schedule.from_betas keeps them exactly)."""
    out = [mpmath.mpf(1)]
    for b in sched.beta[1:]:
        out.append(out[-1] * (1 - mpmath.mpf(float(b))))
    return out


def close(lib, ref, rel=REL, abs_tol=0.0, what=""):
    lib = float(lib)
    err = abs(mpmath.mpf(lib) - ref)
    assert err <= rel * abs(ref) + abs_tol, f"{what}: library {lib!r}, sympy {mpmath.nstr(ref, 20)}, rel err " \
                                            f"{mpmath.nstr(err / abs(ref), 3) if ref != 0 else err}"


@st.composite
def transition(draw, min_s=0, max_n=40):
    """(schedule, s, t): an awkward schedule (β in [1e-8, 0.999], N up to 40) and a transition min_s <= s < t <= N."""
    b = draw(betas(max_n))
    assume(b.size >= min_s + 1)
    sched = adpm.Schedule.from_betas(b)
    t = draw(st.integers(min_s + 1, sched.N))
    s = draw(st.integers(min_s, t - 1))
    return sched, s, t


unit = st.floats(0.0, 1.0)
family_eta = st.one_of(st.just(("ddpm", 0.0)), st.tuples(st.just("ddim"), unit))


def lam2_exact(ab, s, t, family, eta):
    bt = theory.get("posterior").expression("beta_tilde").mp(ab[s], ab[t])
    return bt if family == "ddpm" else mpmath.mpf(eta) ** 2 * bt


# ---------------------------------------------------------------------------------------------------- forward, posterior
@given(transition())
def test_forward_marginals_match_library(st_pair):
    sched, s, t = st_pair
    res = theory.get("forward-marginals")
    ab = exact_alpha_bar(sched)
    close(adpm.sample_marginal(sched, t, 1.0, 0.0), res.expression("marginal_mean_coef").mp(ab[t]), what="√ᾱ_t")
    close(adpm.sample_marginal(sched, t, 0.0, 1.0), res.expression("marginal_std").mp(ab[t]), what="√β̄_t")
    close(sched.skip_alpha(s, t), res.expression("skip_alpha").mp(ab[s], ab[t]), what="α_{t|s}")
    close(sched.skip_beta(s, t), res.expression("skip_beta").mp(ab[s], ab[t]), what="β_{t|s}")
    # the marginal variance the library uses is the composition α_{t|s} β̄_s + β_{t|s} of the two Gaussian steps
    close(sched.beta_bar[t], res.expression("composed_variance").mp(ab[s], ab[t]), what="β̄_t")


@given(transition(), family_eta, st.floats(-3, 3), st.floats(-3, 3))
def test_posterior_matches_library(st_pair, fam, x0, xt):
    sched, s, t = st_pair
    family, eta = fam
    res = theory.get("posterior")
    ab = exact_alpha_bar(sched)
    lam2 = lam2_exact(ab, s, t, family, eta)
    args = (ab[s], ab[t], lam2)
    c0, ct, l2 = adpm.posterior_coefficients(sched, s, t, family, eta)
    close(l2, lam2, abs_tol=1e-300, what="λ²")
    close(adpm.lambda_sq(sched, s, t, family, eta), lam2, abs_tol=1e-300, what="lambda_sq")
    close(sched.skip_beta_tilde(s, t), res.expression("beta_tilde").mp(ab[s], ab[t]), abs_tol=1e-300, what="β̃")
    if family == "ddim":
        close(l2, res.expression("lambda_sq_ddim").mp(ab[s], ab[t], eta), abs_tol=1e-300, what="η²β̃")
    close(c0, res.expression("coef_x0").mp(*args), what="coef_x0")
    close(ct, res.expression("coef_xt").mp(*args), abs_tol=1e-300, what="coef_xt")
    close(adpm.gap(sched, s, t, family, eta), res.expression("gap").mp(*args), what="g")
    close(adpm.residual_var(sched, s, t, family, eta), res.expression("residual_var").mp(*args), abs_tol=1e-300,
          what="β̄_s − λ²")
    mean = adpm.posterior_mean(sched, s, t, np.array([xt]), np.array([x0]), family, eta)[0]
    ref = res.expression("coef_x0").mp(*args) * x0 + res.expression("coef_xt").mp(*args) * xt
    scale = abs(float(c0) * x0) + abs(float(ct) * xt)
    close(mean, ref, rel=0.0, abs_tol=REL * scale + 1e-300, what="μ̃")


@given(schedule_and_trajectory(), unit)
def test_sampler_coefficients_match_posterior(st_traj, eta):
    """The sampler's table: DDPM family μ̃ = coef_x0 x̂_0 + coef_xt x_t; DDIM family √ᾱ_s x̂_0 + √(β̄_s − λ²) ε̂
    (identity ddim-mean-form); x̂_0 = x_t/√ᾱ_t − √(β̄_t/ᾱ_t) ε̂ (Theorem 1, noise form)."""
    sched, traj = st_traj
    post, t1 = theory.get("posterior"), theory.get("theorem1")
    ab = exact_alpha_bar(sched)
    for method, family, e in (("ddpm-large", "ddpm", 0.0), ("ddim", "ddim", eta)):
        tab = coefficient_table(sched, traj, method, eta=e)
        for k in range(1, tab.K):  # k = 0 is the last step (s = 0), which outputs x̂_0
            s, t = int(tab.s[k]), int(tab.t[k])
            args = (ab[s], ab[t], lam2_exact(ab, s, t, family, e))
            if family == "ddpm":
                close(tab.coef_x0[k], post.expression("coef_x0").mp(*args), what="coef_x0")
                close(tab.coef_xt[k], post.expression("coef_xt").mp(*args), what="coef_xt")
            else:
                close(tab.coef_x0[k], mpmath.sqrt(ab[s]), what="√ᾱ_s")
                close(tab.coef_eps[k], post.expression("ddim_mean_eps_coef").mp(*args), abs_tol=1e-300,
                      what="√(β̄_s − λ²)")
            x0_hat = t1.expression("x0_hat")
            close(tab.x0_from_xt[k], x0_hat.mp(ab[t], 1, 0), what="1/√ᾱ_t")
            close(tab.x0_from_eps[k], x0_hat.mp(ab[t], 0, 1), what="−√(β̄_t/ᾱ_t)")


# ---------------------------------------------------------------------------------------------------- proof steps
@given(st.floats(-3, 3), st.floats(1e-6, 1e3), st.floats(-3, 3), st.floats(1e-6, 1e3), st.integers(1, 3072))
def test_moment_matching_against_library(m, v, mu, sig2, dim):
    """likelihood.gaussian_kl is the sympy KL(N(m, v) ‖ N(μ, σ²)) (per coordinate × d), and the expected transition
    KL is minimised exactly at the moment-matched σ² = λ² + c² v_t (Lemma 9)."""
    res = theory.get("moment-matching")
    ref = dim * res.expression("kl_gaussians").mp(m, v, mu, sig2)
    lib = likelihood.gaussian_kl(dim * (m - mu) ** 2, v, sig2, dim)
    # log(σ²/v) is evaluated as log σ² − log v: allow its float64 rounding on top of the relative tolerance
    close(lib, ref, abs_tol=dim * 4e-16 * (1 + abs(math.log(sig2)) + abs(math.log(v)) + v / sig2), what="KL")
    # moment matching: with λ² = v·0.3 and c² v_t = v·0.7 the minimiser over σ² is their sum
    lam2, c, cov = 0.3 * v, 1.0, 0.7 * v
    star = lam2 + c**2 * cov
    f = lambda s2: float(likelihood.exact_mean_transition_kl(lam2, s2, c, cov))  # noqa: E731
    assert f(star) < f(star * (1 + 1e-4)) and f(star) < f(star * (1 - 1e-4))
    close(f(star), theory.get("theorem3").expression("transition_kl_per_dim").mp(lam2, star, c, cov), what="KL*")


@given(transition(), family_eta, st.floats(0.0, 10.0))
def test_lemma13_matches_library(st_pair, fam, cov):
    sched, s, t = st_pair
    family, eta = fam
    ab = exact_alpha_bar(sched)
    ref = theory.get("lemma13").expression("sigma_sq_from_cov").mp(ab[s], ab[t], lam2_exact(ab, s, t, family, eta), cov)
    lib = adpm.sigma_sq_from_posterior_cov(sched, s, t, cov, family, eta)
    close(lib, ref, abs_tol=1e-300, what="λ² + c² v_t")


@given(transition(), st.lists(st.floats(1e-4, 10.0), min_size=1, max_size=8))
def test_tweedie_gaussian_matches_toy(st_pair, eigvals):
    """Gaussian data: the toy's exact Γ and E tr Cov(x_0|x_t)/d equal the sympy per-eigen-direction formulas, and
    Lemma 11 links them: E tr Cov/d = (β̄_t/ᾱ_t)(1 − Γ_t)."""
    sched, _, t = st_pair
    res = theory.get("tweedie")
    ab = exact_alpha_bar(sched)
    data = GaussianData.from_spectrum(np.zeros(len(eigvals)), np.array(eigvals))
    g_ref = sum(res.expression("gamma_gaussian").mp(ab[t], lam) for lam in eigvals) / len(eigvals)
    c_ref = sum(res.expression("cov_gaussian").mp(ab[t], lam) for lam in eigvals) / len(eigvals)
    close(data.gamma(sched)[t], g_ref, what="Γ_t")
    close(data.posterior_cov_trace(sched)[t], c_ref, what="E tr Cov/d")
    close(data.posterior_cov_trace(sched)[t], res.expression("cov_from_gamma").mp(ab[t], g_ref), what="Lemma 11")


def _mixture_quadrature(w, m, v, ab, bb):
    """Γ and E Var(x_0|x_t) of a 1-D Gaussian mixture x_0 ~ Σ w_k N(m_k, v_k), by adaptive quadrature (scipy),
    written from the definitions, independently of analytic_dpm."""
    w, m, v = (np.asarray(a, dtype=float) for a in (w, m, v))
    A = ab * v + bb  # component variances of q_t
    sab = math.sqrt(ab)

    def parts(x):
        dens = w * np.exp(-0.5 * (x - sab * m) ** 2 / A) / np.sqrt(2 * np.pi * A)
        q = dens.sum()
        score = (dens * (-(x - sab * m) / A)).sum() / q
        r = dens / q
        pm = m + sab * v * (x - sab * m) / A
        pv = v * bb / A
        mean = (r * pm).sum()
        var = (r * (pv + pm**2)).sum() - mean**2
        return q, score, var

    lo = sab * m.min() - 12 * math.sqrt(A.max())
    hi = sab * m.max() + 12 * math.sqrt(A.max())
    kw = dict(epsabs=0.0, epsrel=1e-13, limit=400, points=list(sab * m))
    s2, _ = scipy.integrate.quad(lambda x: (lambda q, s, _: q * s * s)(*parts(x)), lo, hi, **kw)
    cv, _ = scipy.integrate.quad(lambda x: (lambda q, _, var: q * var)(*parts(x)), lo, hi, **kw)
    return bb * s2, cv


@settings(max_examples=20)
@given(st.lists(st.tuples(st.floats(0.1, 1.0), st.floats(-1.0, 1.0), st.floats(1e-3, 0.3)), min_size=2, max_size=3),
       st.integers(1, 1000))
def test_tweedie_mixture_by_quadrature(comps, t):
    """Mixtures, numerically: E Var(x_0|x_t) = (β̄_t/ᾱ_t)(1 − Γ_t), both sides by quadrature from the definitions."""
    w = np.array([c[0] for c in comps])
    w /= w.sum()
    m, v = [c[1] for c in comps], [c[2] for c in comps]
    sched = adpm.Schedule.linear(1000)
    ab, bb = sched.alpha_bar[t], sched.beta_bar[t]
    gamma, cov = _mixture_quadrature(w, m, v, ab, bb)
    ref = theory.get("tweedie").expression("cov_from_gamma").mp(exact_alpha_bar(sched)[t], gamma)
    # quadrature error ~1e-13 in Γ, amplified by β̄_t/ᾱ_t in the right-hand side
    assert abs(cov - float(ref)) <= 1e-9 * cov + 1e-12 * bb / ab, (cov, float(ref))
    assert 0.0 <= gamma <= 1.0


def test_tweedie_mixture_matches_toy_reference():
    """The toy mixture's quadrature references obey Lemma 11 (2-D default mixture) and agree with the independent
    scipy quadrature above (a 1-D mixture)."""
    sched = adpm.Schedule.linear(1000)
    ab = exact_alpha_bar(sched)
    expr = theory.get("tweedie").expression("cov_from_gamma")
    ts = np.array([1, 10, 100, 400, 1000])
    gamma, cov = default_mixture().references(sched, timesteps=ts)
    for t in ts:
        amp = sched.beta_bar[t] / sched.alpha_bar[t]
        assert abs(cov[t] - float(expr.mp(ab[t], gamma[t]))) <= 1e-9 * cov[t] + 1e-11 * amp, t
    w, m, v = [0.3, 0.7], [-0.6, 0.4], [0.01, 0.05]
    mix = GaussianMixtureData(w, np.array(m)[:, None], np.array(v)[:, None])
    g1 = mix.gamma_reference(sched, timesteps=ts)
    c1 = mix.posterior_cov_trace_reference(sched, timesteps=ts)
    for t in ts:
        g_q, c_q = _mixture_quadrature(w, m, v, sched.alpha_bar[t], sched.beta_bar[t])
        assert abs(g1[t] - g_q) <= 1e-10, (t, g1[t], g_q)
        assert abs(c1[t] - c_q) <= 1e-9 * c_q, (t, c1[t], c_q)


@given(transition(), st.floats(0.0, 1e6))
def test_gamma_score_and_noise_forms(st_pair, ms):
    """Γ_t (noise form) = β̄_t · E‖∇log q_t‖²/d (score form, the paper's eq. 8)."""
    sched, _, t = st_pair
    arr = np.full(sched.N + 1, ms)
    ab = exact_alpha_bar(sched)
    ref = theory.get("tweedie").expression("gamma_from_score").mp(ab[t], ms)
    close(gamma_from_mean_sq_score(arr, sched)[t], ref, abs_tol=1e-300, what="Γ_t")


# ---------------------------------------------------------------------------------------------------- Theorem 1
@given(transition(), family_eta, unit)
def test_theorem1_variance_matches_library(st_pair, fam, gamma):
    sched, s, t = st_pair
    family, eta = fam
    res = theory.get("theorem1")
    ab = exact_alpha_bar(sched)
    lam2 = lam2_exact(ab, s, t, family, eta)
    ref = res.expression("sigma_sq_opt").mp(ab[s], ab[t], lam2, gamma)
    close(adpm.sigma_sq_opt(sched, s, t, gamma, family, eta), ref, abs_tol=1e-300, what="σ*² (noise form)")
    # score form: the library converts S_t = E‖∇log q_t‖²/d to Γ_t = β̄_t S_t (eq. 8 → noise form)
    S = gamma / sched.beta_bar[t]
    g_lib = gamma_from_mean_sq_score(np.full(sched.N + 1, S), sched)[t]
    ref_score = res.expression("sigma_sq_opt_score").mp(ab[s], ab[t], lam2, S)
    # S = Γ/β̄_t is rounded to float64, so 1 − β̄_t·S carries ~1e-16 of absolute error: scale it by the g² factor
    g2 = float(res.expression("sigma_sq_opt").mp(ab[s], ab[t], lam2, 0) - lam2)
    close(adpm.sigma_sq_opt(sched, s, t, g_lib, family, eta), ref_score, abs_tol=4e-16 * g2 + 1e-300,
          what="σ*² (score form)")
    # the same number through reverse_variances (unclipped) on the trajectory [0, s, t]
    traj = np.array([0, t]) if s == 0 else np.array([0, s, t])
    method = "analytic-ddpm" if family == "ddpm" else "analytic-ddim"
    v = adpm.reverse_variances(sched, traj, method, gamma=np.full(sched.N + 1, gamma), eta=eta, data_range=None,
                               clip=False)
    close(v.sigma_sq[-1], ref, abs_tol=1e-300, what="reverse_variances")


@given(transition(min_s=0), st.floats(-3, 3), st.floats(-3, 3))
def test_theorem1_mean_matches_library(st_pair, xt, eps):
    sched, _, t = st_pair
    res = theory.get("theorem1")
    ab = exact_alpha_bar(sched)
    ref = res.expression("x0_hat").mp(ab[t], xt, eps)
    scale = (abs(xt) + abs(eps) * math.sqrt(sched.beta_bar[t])) / math.sqrt(sched.alpha_bar[t])
    close(adpm.x0_from_eps(sched, t, np.array([xt]), np.array([eps]))[0], ref, rel=0.0, abs_tol=REL * scale + 1e-300,
          what="x̂_0")
    close(adpm.score_from_eps(sched, t, np.array([eps]))[0], res.expression("score_from_eps").mp(ab[t], eps),
          abs_tol=1e-300, what="s = −ε̂/√β̄_t")


# ---------------------------------------------------------------------------------------------------- Theorem 2
data_ranges = st.tuples(st.floats(-5, 5), st.floats(1e-3, 10)).map(lambda p: (p[0], p[0] + p[1]))


@given(transition(), family_eta, data_ranges)
def test_theorem2_bounds_match_library(st_pair, fam, rng):
    sched, s, t = st_pair
    family, eta = fam
    res = theory.get("theorem2")
    ab = exact_alpha_bar(sched)
    lam2 = lam2_exact(ab, s, t, family, eta)
    r = (mpmath.mpf(rng[1]) - mpmath.mpf(rng[0])) / 2
    lo, ub11, ub12 = adpm.theorem2_bounds(sched, s, t, family, eta, data_range=rng)
    close(lo, res.expression("lower").mp(ab[s], ab[t], lam2), abs_tol=1e-300, what="lower")
    close(ub11, res.expression("upper_eq11").mp(ab[s], ab[t], lam2), what="eq. 11")
    close(ub12, res.expression("upper_eq12").mp(ab[s], ab[t], lam2, r), what="eq. 12")
    traj = np.array([0, t]) if s == 0 else np.array([0, s, t])
    v = adpm.reverse_variances(sched, traj, "ddpm-small" if family == "ddpm" else "ddim", eta=eta, data_range=rng)
    close(v.upper[-1], min(res.expression("upper_eq11").mp(ab[s], ab[t], lam2),
                           res.expression("upper_eq12").mp(ab[s], ab[t], lam2, r)), what="min(eq. 11, eq. 12)")


@given(transition(min_s=0, max_n=40), family_eta, st.floats(0.05, 3.0))
def test_theorem2_which_bound_is_tighter(st_pair, fam, r):
    """Eq. (12) is below eq. (11) exactly when ᾱ_t < 1/(1 + r²) (theorem2-which-is-tighter)."""
    sched, s, t = st_pair
    family, eta = fam
    cross = float(theory.get("theorem2").expression("crossover_alpha_bar").mp(r))
    assume(abs(sched.alpha_bar[t] - cross) > 1e-9 * cross)
    _, ub11, ub12 = adpm.theorem2_bounds(sched, s, t, family, eta, data_range=(-r, r))
    assert (ub12 < ub11) == (sched.alpha_bar[t] < cross)


def test_theorem2_crossover_on_paper_schedules():
    """On the linear and cosine schedules (N = 1000, data in [−1, 1]) eq. (11) is tighter for small t and eq. (12)
    for large t, switching once, at the first t with ᾱ_t < 1/2 (App. G.3, Fig. 8)."""
    cross = float(theory.get("theorem2").expression("crossover_alpha_bar").mp(1.0))
    assert cross == 0.5
    for sched in (adpm.Schedule.linear(1000), adpm.Schedule.cosine(1000)):
        t = np.arange(1, 1001)
        _, ub11, ub12 = adpm.theorem2_bounds(sched, t - 1, t, "ddpm")
        switch = np.flatnonzero(ub12 < ub11)
        assert switch.size and np.all(np.diff(switch) == 1) and switch[-1] == 999
        assert t[switch[0]] == np.flatnonzero(sched.alpha_bar < cross)[0]


# ---------------------------------------------------------------------------------------------------- Corollaries 2, 3
@given(transition(), unit)
def test_corollary2_matches_library(st_pair, gamma):
    sched, s, t = st_pair
    res = theory.get("corollary2")
    ab = exact_alpha_bar(sched)
    close(adpm.ddpm_sigma_sq_opt(sched, s, t, gamma), res.expression("ddpm_sigma_sq_opt").mp(ab[s], ab[t], gamma),
          abs_tol=1e-300, what="Corollary 2")
    # μ* = (x_t + β_{t|s} ∇log q_t)/√α_{t|s}: the library's posterior coefficients applied to x̂_0 = (x_t + β̄_t s)/√ᾱ_t
    c0, ct, _ = adpm.posterior_coefficients(sched, s, t, "ddpm")
    sq = math.sqrt(sched.alpha_bar[t])
    close(c0 / sq + ct, res.expression("ddpm_mean_xt_coef").mp(ab[s], ab[t]), what="x_t coefficient")
    close(c0 * sched.beta_bar[t] / sq, res.expression("ddpm_mean_score_coef").mp(ab[s], ab[t]), what="score coef")


@given(transition(), data_ranges)
def test_corollary3_matches_library(st_pair, rng):
    sched, s, t = st_pair
    res = theory.get("corollary3")
    ab = exact_alpha_bar(sched)
    r = (mpmath.mpf(rng[1]) - mpmath.mpf(rng[0])) / 2
    lo, ub11, ub12 = adpm.ddpm_bounds(sched, s, t, data_range=rng)
    close(lo, res.expression("lower").mp(ab[s], ab[t]), abs_tol=1e-300, what="β̃")
    close(ub11, res.expression("upper_eq11").mp(ab[s], ab[t]), what="β/α")
    close(ub12, res.expression("upper_eq12").mp(ab[s], ab[t], r), what="bounded")


# ---------------------------------------------------------------------------------------------------- Theorem 3, Cor. 4
gammas = st.lists(st.floats(0.0, 1.0), min_size=41, max_size=41)


@given(transition(min_s=1), gammas)
def test_theorem3_cost_matches_library(st_pair, g):
    """J(s, t) = log(σ*²/λ²) (DDPM family): the optimal-trajectory cost matrix and its path sums."""
    sched, s, t = st_pair
    gamma = np.array(g[: sched.N + 1])
    res = theory.get("theorem3")
    ab = exact_alpha_bar(sched)
    J = res.expression("J")
    cost = ot.analytic_ddpm_cost(sched, gamma, form="log_ratio", data_range=None)

    def ref(a, b):
        return J.mp(ab[a], ab[b], lam2_exact(ab, a, b, "ddpm", 0.0), gamma[b])

    close(cost.F[s, t], ref(s, t), abs_tol=1e-300, what="J(s, t)")
    path = [0, 1, s, t] if s > 1 else [0, 1, t]
    total = sum(ref(a, b) for a, b in zip(path[1:-1], path[2:]))
    close(ot.trajectory_cost(cost, np.array(path)), total, rel=1e-11, abs_tol=1e-300, what="path cost")


@given(transition(min_s=1), unit, st.floats(0.01, 100.0), st.integers(1, 3072))
def test_theorem3_transition_kl_matches_library(st_pair, gamma, sig_factor, dim):
    """E KL(q(x_s|x_t,x_0) ‖ p(x_s|x_t))/d for any σ² (likelihood.exact_mean_transition_kl) is the sympy expression, and
    at σ² = σ*² it is J/2 (theorem3-expected-term); likelihood.gaussian_kl agrees with the d-dimensional formula."""
    sched, s, t = st_pair
    res = theory.get("theorem3")
    ab = exact_alpha_bar(sched)
    lam2 = lam2_exact(ab, s, t, "ddpm", 0.0)
    c = theory.get("posterior").expression("coef_x0").mp(ab[s], ab[t], lam2)
    cov = theory.get("tweedie").expression("cov_from_gamma").mp(ab[t], gamma)
    c0, _, l2 = adpm.posterior_coefficients(sched, s, t, "ddpm")
    cov_f = sched.beta_bar[t] / sched.alpha_bar[t] * (1 - gamma)
    star = float(adpm.sigma_sq_opt(sched, s, t, gamma, "ddpm"))
    lib_star = likelihood.exact_mean_transition_kl(l2, star, c0, cov_f)
    close(dim * lib_star, res.expression("expected_kl_term").mp(dim, ab[s], ab[t], lam2, gamma), rel=1e-11,
          abs_tol=1e-300, what="(d/2) J at σ*²")
    s2 = star * sig_factor
    lib = likelihood.exact_mean_transition_kl(l2, s2, c0, cov_f)
    ref = res.expression("transition_kl_per_dim").mp(lam2, s2, c, cov)
    # relative to the terms of the sum (they cancel when σ² ≈ σ*²)
    close(lib, ref, rel=1e-11, abs_tol=1e-15 * (1 + abs(math.log(sig_factor))), what="KL at σ²")
    kl_d = likelihood.gaussian_kl(dim * float(c) ** 2 * cov_f, l2, s2, dim)
    close(kl_d, res.expression("kl_isotropic").mp(dim, lam2, s2, dim * c**2 * cov), rel=1e-11,
          abs_tol=dim * 1e-15 * (1 + abs(math.log(sig_factor))), what="gaussian_kl")


@given(transition(min_s=1), gammas)
def test_corollary4_cost_matches_library(st_pair, g):
    """Corollary 4's cost log(1 − β_{t|s}Γ_t/β̄_t), the f(t) − f(s) offset to log(σ*²/λ²), and the telescoping: on
    any two trajectories from τ_1 = 1 to τ_K = N the two costs differ by the same f(N) − f(1)."""
    sched, s, t = st_pair
    gamma = np.array(g[: sched.N + 1])
    res = theory.get("corollary4")
    ab = exact_alpha_bar(sched)
    F4 = ot.analytic_ddpm_cost(sched, gamma, form="corollary4", data_range=None)
    FJ = ot.analytic_ddpm_cost(sched, gamma, form="log_ratio", data_range=None)
    # the library forms 1 − Γ_t first, so Γ_t below ~1e-16 keeps only an absolute accuracy (J is a log: abs 1e-15)
    close(F4.F[s, t], res.expression("J_ddpm").mp(ab[s], ab[t], gamma[t]), abs_tol=1e-15, what="Corollary 4 J")
    off = res.expression("J_offset").mp(ab[s], ab[t])
    close(FJ.F[s, t] - F4.F[s, t], off, rel=1e-11, abs_tol=1e-14 * (abs(FJ.F[s, t]) + abs(F4.F[s, t])), what="offset")
    N = sched.N
    if N < 3:
        return
    const = res.expression("J_offset").mp(ab[1], ab[N])  # f(N) − f(1)
    for path in ([0, 1, N], sorted({0, 1, s, t, N})):
        diff = ot.trajectory_cost(FJ, np.array(path)) - ot.trajectory_cost(F4, np.array(path))
        close(diff, const, rel=1e-10, abs_tol=1e-13 * len(path), what=f"telescoping on {path}")


# ---------------------------------------------------------------------------------------------------- residual variance
residual_value = st.floats(0.0, 10.0)


def _last_transition(s, t):
    return np.array([0, t]) if s == 0 else np.array([0, s, t])


@given(transition(), family_eta, residual_value, unit, data_ranges)
def test_residual_variance_matches_library(st_pair, fam, R, gamma, rng):
    """σ² = λ² + g²R_t (residual_sigma_sq and reverse_variances' residual methods) is the sympy minimiser; with
    R = 1 − Γ it is Theorem 1's σ*² (residual-variance-is-theorem1); outside_bounds is exactly where the sympy excess
    over eq. 11 or eq. 12 is positive (residual-beyond-theorem2)."""
    sched, s, t = st_pair
    family, eta = fam
    res = theory.get("residual-variance")
    ab = exact_alpha_bar(sched)
    lam2 = lam2_exact(ab, s, t, family, eta)
    ref = res.expression("residual_sigma_sq").mp(ab[s], ab[t], lam2, R)
    close(adpm.residual_sigma_sq(sched, s, t, R, family, eta), ref, abs_tol=1e-300, what="λ² + g²R")
    method = "residual-ddpm" if family == "ddpm" else "residual-ddim"
    v = adpm.reverse_variances(sched, _last_transition(s, t), method, residual=np.full(sched.N + 1, R), eta=eta,
                               data_range=rng)
    close(v.sigma_sq[-1], ref, abs_tol=1e-300, what="reverse_variances (residual)")
    assert v.residual[-1] == R and not v.clipped[-1]
    r = (mpmath.mpf(rng[1]) - mpmath.mpf(rng[0])) / 2
    ex11 = res.expression("excess_over_eq11").mp(ab[s], ab[t], lam2, R)
    ex12 = res.expression("excess_over_eq12").mp(ab[s], ab[t], lam2, R, r)
    worst = max(ex11, ex12)
    if abs(worst) > 1e-10 * ref:  # away from the boundary, where float64 rounding decides
        assert bool(v.outside_bounds[-1]) == (worst > 0), (float(ex11), float(ex12))
    # the optimal predictor, R = 1 − Γ: Theorem 1
    t1 = theory.get("theorem1").expression("sigma_sq_opt").mp(ab[s], ab[t], lam2, gamma)
    close(adpm.residual_sigma_sq(sched, s, t, 1.0 - gamma, family, eta), t1, abs_tol=1e-300, what="R = 1 − Γ")
    assert abs(res.expression("residual_sigma_sq").mp(ab[s], ab[t], lam2, 1 - mpmath.mpf(gamma)) - t1) <= \
        mpmath.mpf(10) ** -40 * abs(t1), "sympy R = 1 − Γ"


lambda_positive = st.one_of(st.just(("ddpm", 0.0)), st.tuples(st.just("ddim"), st.floats(0.05, 1.0)))


@given(transition(min_s=1), lambda_positive, residual_value, st.floats(0.01, 100.0))
def test_residual_kl_matches_library(st_pair, fam, R, sig_factor):
    """E KL(q(x_s|x_t,x_0) ‖ N(μ(x_t), σ²I))/d for the network's mean: likelihood.exact_mean_transition_kl with
    v = E‖x_0 − x̂_0‖²/d = (β̄_t/ᾱ_t)R_t (residual-mean-error-sq) is the sympy expression (residual-expected-kl) for any
    σ², is minimal at σ² = λ² + g²R_t (residual-kl-minimum), where it is ½ log1p(R β_{t|s}/(α_{t|s}β̄_s)) for DDPM."""
    sched, s, t = st_pair
    family, eta = fam
    res = theory.get("residual-variance")
    ab = exact_alpha_bar(sched)
    lam2 = lam2_exact(ab, s, t, family, eta)
    c0, _, l2 = adpm.posterior_coefficients(sched, s, t, family, eta)
    cov_f = sched.beta_bar[t] / sched.alpha_bar[t] * R
    close(cov_f, res.expression("mean_error_sq").mp(ab[t], R), abs_tol=1e-300, what="E‖x_0 − x̂_0‖²/d")
    star = float(adpm.residual_sigma_sq(sched, s, t, R, family, eta))
    kl = res.expression("residual_kl_per_dim")
    s2 = star * sig_factor
    lib = likelihood.exact_mean_transition_kl(l2, s2, c0, cov_f)
    close(lib, kl.mp(ab[s], ab[t], lam2, s2, R), rel=1e-11, abs_tol=1e-15 * (1 + abs(math.log(sig_factor))),
          what="KL at σ²")
    f = lambda v: float(likelihood.exact_mean_transition_kl(l2, v, c0, cov_f))  # noqa: E731
    assert f(star) <= f(star * (1 + 1e-4)) and f(star) <= f(star * (1 - 1e-4))
    kl_star = kl.mp(ab[s], ab[t], lam2, star, R)
    # σ² is the float64 minimiser, so the sympy KL there exceeds the true minimum by O(1e-32) relative to λ²/σ²
    close(f(star), kl_star, rel=1e-11, abs_tol=1e-30, what="KL at the minimiser")
    if family == "ddpm":  # log(1 + x) needs more than 50 digits when R (hence x) is tiny
        close(2 * f(star), res.expression("residual_cost_ddpm").mp(ab[s], ab[t], R, dps=400), rel=1e-11,
              abs_tol=1e-30, what="2 KL* = log1p(Rβ/(αβ̄_s))")


residual_lists = st.lists(st.floats(0.0, 10.0), min_size=41, max_size=41)


@given(transition(min_s=1), residual_lists, gammas)
def test_residual_cost_matches_library(st_pair, rl, g):
    """The Theorem 3 analogue: analytic_ddpm_cost(schedule, None, residual=R).F[s, t] = log1p(R_t β_{t|s}/(α_{t|s}β̄_s))
    (residual-optimal-cost), path sums add, and R = 1 − Γ gives Theorem 3's J (residual-variance-is-theorem1)."""
    sched, s, t = st_pair
    R = np.array(rl[: sched.N + 1])
    res = theory.get("residual-variance")
    ab = exact_alpha_bar(sched)
    J = res.expression("residual_cost_ddpm")
    cost = ot.analytic_ddpm_cost(sched, None, residual=R)
    # log(1 + x) needs more than 50 digits when R (hence x) is tiny: evaluate at 400
    close(cost.F[s, t], J.mp(ab[s], ab[t], R[t], dps=400), abs_tol=1e-300, what="J_R(s, t)")
    path = [0, 1, s, t] if s > 1 else [0, 1, t]
    total = sum(J.mp(ab[a], ab[b], R[b], dps=400) for a, b in zip(path[1:-1], path[2:]))
    close(ot.trajectory_cost(cost, np.array(path)), total, rel=1e-11, abs_tol=1e-300, what="path cost")
    gamma = np.array(g[: sched.N + 1])
    cost_g = ot.analytic_ddpm_cost(sched, None, residual=1.0 - gamma)
    J3 = theory.get("theorem3").expression("J").mp(ab[s], ab[t], lam2_exact(ab, s, t, "ddpm", 0.0), gamma[t])
    close(cost_g.F[s, t], J3, abs_tol=1e-15, what="R = 1 − Γ: Theorem 3's J")


@st.composite
def gaussian_and_bias(draw):
    eig = draw(st.lists(st.floats(1e-4, 10.0), min_size=1, max_size=6))
    bias = draw(st.lists(st.floats(-2.0, 2.0), min_size=len(eig), max_size=len(eig)))
    return np.array(eig), np.array(bias)


@given(transition(), gaussian_and_bias(), st.floats(-2.0, 3.0))
def test_residual_of_imperfect_matches_toy(st_pair, eb, scale):
    """ε̂ = a·ε* + b on Gaussian data: toy.exact_residual_of_imperfect is R_t = (1 − Γ_t) + (1 − a)²Γ_t + ‖b‖²/d
    (residual-of-scaled-biased) and toy.exact_one_minus_gamma_of_imperfect is 1 − Γ̂_t = 1 − a²Γ_t − ‖b‖²/d
    (control-variate-mean), with Γ_t from the sympy per-eigen-direction formula; a = 1, b = 0 gives R = 1 − Γ."""
    sched, _, t = st_pair
    eig, bias = eb
    res = theory.get("residual-variance")
    ab = exact_alpha_bar(sched)
    data = GaussianData.from_spectrum(np.zeros(eig.size), eig)
    g_ref = sum(theory.get("tweedie").expression("gamma_gaussian").mp(ab[t], lam) for lam in eig) / eig.size
    b2 = sum(mpmath.mpf(float(b)) ** 2 for b in bias) / bias.size
    R_lib = exact_residual_of_imperfect(data, sched, scale, bias)
    close(R_lib[t], res.expression("residual_of_scaled_biased").mp(g_ref, scale, b2), abs_tol=1e-300, what="R_t")
    omg_lib = exact_one_minus_gamma_of_imperfect(data, sched, scale, bias)
    ref = res.expression("one_minus_gamma_of_scaled_biased").mp(g_ref, scale, b2)
    close(omg_lib[t], ref, abs_tol=2e-15 * (1 + scale**2 + float(b2)), what="1 − Γ̂_t")
    close(exact_residual_of_imperfect(data, sched)[t], res.expression("residual_of_scaled_biased").mp(g_ref, 1, 0),
          abs_tol=1e-300, what="R_t of ε*")


def test_residual_statistics_of_estimate_gamma():
    """estimate_gamma's residual and control-variate 1 − Γ statistics (one set of network evaluations) estimate the
    sympy R_t and 1 − Γ̂_t of ε̂ = a·ε* + b within 5 standard errors; per sample (‖ε‖² − ‖ε̂‖²)/d = ⟨ε − ε̂, ε + ε̂⟩/d
    (control-variate-product), so on the same noise (1 − Γ)^ + Γ̂ = mean ‖ε‖²/d = R̂ of ε̂ = 0 to rounding."""
    res = theory.get("residual-variance")
    sched = adpm.Schedule.linear(50)
    ab = exact_alpha_bar(sched)
    eig = np.array([0.05, 0.2, 0.5, 1.0])
    data = GaussianData.from_spectrum(np.zeros(4), eig)
    ts = np.array([1, 10, 25, 50])
    M = 4096
    kw = dict(timesteps=ts, num_samples=M, seed=3, progress=False)
    scale, bias = 0.9, np.array([0.1, -0.2, 0.05, 0.0])
    b2 = sum(mpmath.mpf(float(b)) ** 2 for b in bias) / 4
    est = estimate_gamma(ImperfectEps(data.eps_model(sched), scale, bias), sched, data, **kw)
    gg = theory.get("tweedie").expression("gamma_gaussian")
    for t in ts:
        g_ref = sum(gg.mp(ab[t], lam) for lam in eig) / 4
        R_ref = res.expression("residual_of_scaled_biased").mp(g_ref, scale, b2)
        omg_ref = res.expression("one_minus_gamma_of_scaled_biased").mp(g_ref, scale, b2)
        assert abs(est.residual[t] - float(R_ref)) <= 5 * est.residual_stderr[t], (t, est.residual[t], R_ref)
        assert abs(est.one_minus_gamma[t] - float(omg_ref)) <= 5 * est.one_minus_gamma_stderr[t], t
        assert abs(est.gamma[t] - float(1 - omg_ref)) <= 5 * est.stderr[t], t
    # the same noise and data (same seed): ε̂ = 0 has R̂ = (1 − Γ)^ = mean‖ε‖²/d; ε̂ = b has (1 − Γ)^ + Γ̂ = mean‖ε‖²/d
    zero = estimate_gamma(ImperfectEps(data.eps_model(sched), 0.0, 0.0), sched, data, **kw)
    const = estimate_gamma(ImperfectEps(data.eps_model(sched), 0.0, bias), sched, data, **kw)
    np.testing.assert_allclose(zero.one_minus_gamma[ts], zero.residual[ts], rtol=1e-13)
    assert np.all(zero.gamma[ts] == 0.0)
    np.testing.assert_allclose(const.gamma[ts], float(b2), rtol=1e-13)
    np.testing.assert_allclose(const.one_minus_gamma[ts] + const.gamma[ts], zero.residual[ts], rtol=1e-13)
    # the constant prediction's residual estimates 1 + ‖b‖²/d (a = 0)
    R_const = float(res.expression("residual_of_scaled_biased").mp(0.5, 0, b2))
    assert np.all(np.abs(const.residual[ts] - R_const) <= 5 * const.residual_stderr[ts])
    # the exact predictor at large n: ε̂ ≈ ε, so the control variate is far less noisy than 1 − Γ̂
    exact = estimate_gamma(data.eps_model(sched), sched, data, **kw)
    assert exact.one_minus_gamma_stderr[50] < 0.1 * exact.stderr[50]


def test_residual_variance_exceeds_theorem2():
    """Theorem 2 bounds the optimal mean only (residual-beyond-theorem2, residual-counterexample-eq11): a constant
    prediction ε̂ = b has R = 1 + ‖b‖²/d and its variance exceeds eq. 11 by g²‖b‖²/d on every transition; ε̂ = ε*/2
    has R < 1 (inside eq. 11) but R > r²ᾱ_t/β̄_t at large t (outside eq. 12), and outside_bounds says so."""
    res = theory.get("residual-variance")
    sched = adpm.Schedule.linear(1000)
    ab = exact_alpha_bar(sched)
    data = GaussianData.from_spectrum(np.zeros(3), np.array([0.1, 0.3, 0.6]))
    bias = np.array([0.2, -0.1, 0.3])
    b2 = sum(mpmath.mpf(float(b)) ** 2 for b in bias) / 3
    traj = np.arange(0, 1001, 50)
    R = exact_residual_of_imperfect(data, sched, 0.0, bias)
    gam = data.gamma(sched)
    for t in traj[1:]:
        close(R[t], res.expression("residual_of_scaled_biased").mp(gam[t], 0, b2), what="R = 1 + b²")
    v = adpm.reverse_variances(sched, traj, "residual-ddpm", residual=R, data_range=None)
    assert v.outside_bounds.all() and not v.clipped.any()
    for k, (s, t) in enumerate(zip(traj[:-1], traj[1:])):
        lam2 = lam2_exact(ab, s, t, "ddpm", 0.0)
        ex = res.expression("excess_over_eq11").mp(ab[s], ab[t], lam2, R[t])
        assert ex > 0
        close(v.sigma_sq[k] - v.upper_eq11[k], ex, rel=1e-9, abs_tol=1e-15 * v.upper_eq11[k], what="excess")
        close(adpm.residual_sigma_sq(sched, s, t, R[t]),
              res.expression("residual_sigma_sq").mp(ab[s], ab[t], lam2, R[t]), abs_tol=1e-300, what="σ²")
    R_half = exact_residual_of_imperfect(data, sched, 0.5, 0.0)
    v = adpm.reverse_variances(sched, traj, "residual-ddpm", residual=R_half, data_range=(-1.0, 1.0))
    want = []
    for s, t in zip(traj[:-1], traj[1:]):
        lam2 = lam2_exact(ab, s, t, "ddpm", 0.0)
        ex11 = res.expression("excess_over_eq11").mp(ab[s], ab[t], lam2, R_half[t])
        ex12 = res.expression("excess_over_eq12").mp(ab[s], ab[t], lam2, R_half[t], 1)
        assert ex11 < 0
        want.append(ex12 > 0)
    assert list(v.outside_bounds) == want and any(want) and not all(want)


# ---------------------------------------------------------------------------------------------------- continuous time
BMIN, BMAX = 0.1, 20.0


def vp_sde_betas(N):
    """The VP SDE discretised as in the extended paper's vpsde schedule: β_n = 1 − exp(−∫_{(n−1)/N}^{n/N} β)."""
    u = np.arange(N + 1) / N
    B = BMIN * u + (BMAX - BMIN) * u**2 / 2
    return -np.expm1(-np.diff(B))


VP1000_BETAS = vp_sde_betas(1000)


@st.composite
def vp_pair(draw):
    nt = draw(st.integers(1, 1000))
    return draw(st.integers(0, nt - 1)), nt


@given(vp_pair(), unit)
def test_continuous_time_matches_library(pair, gamma):
    """App. E's σ*²(s|t) for the VP SDE at (s, t) = (n_s/N, n_t/N) equals the library's discrete Corollary 2 on the
    vpsde_1000 schedule; its ᾱ_n is ᾱ(n/N) and its bounds are App. E's L = β̃ and U = β_{t|s}/α_{t|s}."""
    ns, nt = pair
    res = theory.get("continuous-time")
    VP1000 = adpm.Schedule.from_betas(VP1000_BETAS)
    N = VP1000.N
    sv, tv = mpmath.mpf(ns) / N, mpmath.mpf(nt) / N
    close(VP1000.alpha_bar[nt], res.expression("alpha_bar_vp").mp(tv, BMIN, BMAX), rel=1e-13, what="ᾱ(t)")
    ref = res.expression("sigma_sq_vp").mp(sv, tv, gamma, BMIN, BMAX)
    close(adpm.ddpm_sigma_sq_opt(VP1000, ns, nt, gamma), ref, abs_tol=1e-300, what="σ*²(s|t)")
    lo, up, _ = adpm.ddpm_bounds(VP1000, ns, nt, data_range=None)
    close(up, res.expression("sigma_sq_vp").mp(sv, tv, 0, BMIN, BMAX), what="U (Γ = 0)")
    close(lo, res.expression("sigma_sq_vp").mp(sv, tv, 1, BMIN, BMAX), abs_tol=1e-300, what="L (Γ = 1)")


def test_continuous_limit_rate():
    """s → t: the library's one-step σ*² on ever finer VP-SDE grids approaches the sympy expansion
    β(t)h + (β(t)²(½ − S_t) − β'(t)/2)h² with an error that falls like h³ (continuous-limit-variance), and
    σ*²/(β(t)h) → 1."""
    res = theory.get("continuous-time")
    t, gamma = 0.5, 0.3
    errs, ratios = [], []
    for N in (250, 500, 1000, 2000):
        sched = adpm.Schedule.from_betas(vp_sde_betas(N))
        n = int(t * N)
        h = 1.0 / N
        S = gamma / sched.beta_bar[n]
        lib = float(adpm.ddpm_sigma_sq_opt(sched, n - 1, n, gamma))
        errs.append(abs(lib - float(res.expression("sigma_sq_limit").mp(t, h, S, BMIN, BMAX))))
        ratios.append(lib / ((BMIN + t * (BMAX - BMIN)) * h))
    rates = [math.log2(e1 / e2) for e1, e2 in zip(errs, errs[1:])]
    assert all(2.7 < r < 3.3 for r in rates), rates
    assert abs(ratios[-1] - 1) < abs(ratios[0] - 1) < 0.1


# ---------------------------------------------------------------------------------------------------- a sanity check
def test_a_wrong_expression_is_caught():
    """The comparisons can fail: β̃ with the β̄ ratio inverted differs from the library by far more than 1e-12."""
    sched = adpm.Schedule.linear(1000)
    ab = exact_alpha_bar(sched)
    wrong = (1 - ab[100]) / (1 - ab[50]) * (1 - ab[100] / ab[50])
    with pytest.raises(AssertionError):
        close(sched.skip_beta_tilde(50, 100), wrong, what="inverted β̃")
