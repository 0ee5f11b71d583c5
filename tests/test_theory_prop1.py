"""theory "tweedie-matrix" (P Prop. 1, eq. (15), matrix form; issue 16) against the library in d = 2.

The registry's expressions (sympy, evaluated in 50-digit mpmath) from the library's score, with the Hessian ∇²log q_t
taken by finite differences of that score, are compared with the library's posterior means and covariances
(GaussianData, GaussianMixtureData), with posterior covariances computed here from scratch (scipy densities,
responsibilities and component posteriors), and with the trace form E tr Cov/d = (β̄/ᾱ)(1 − β̄ E‖∇log q‖²/d), where
E‖∇log q‖² is a Gauss–Hermite quadrature of the library's score over q_t.
"""

import dataclasses
import math

import mpmath
import numpy as np
import pytest
import scipy.stats
import sympy as sp

import analytic_dpm as adpm
import theory
from analytic_dpm.toy import GaussianData, GaussianMixtureData
from theory import derivations
from theory.core import check, prove_equal, random_uniforms, spot_check

SCHED = adpm.Schedule.linear(100)
TIMES = (1, 10, 40, 70)


def _rotation(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _mixture():
    """Two components with full (correlated) covariances."""
    covs = np.array([_rotation(0.6) @ np.diag([0.30, 0.04]) @ _rotation(0.6).T,
                     _rotation(-1.1) @ np.diag([0.05, 0.20]) @ _rotation(-1.1).T])
    return GaussianMixtureData([0.4, 0.6], [[0.5, -0.3], [-0.6, 0.4]], covs)


def _points():
    return np.random.default_rng(3).uniform(-1.5, 1.5, size=(6, 2))


def _fd_hessian(score, x, h=1e-3):
    """∇²log q at each row of x by a fourth-order central difference of the score: H[b, i, j] = ∂_j s_i."""
    H = np.empty((x.shape[0], 2, 2))
    for j in range(2):
        e = np.zeros(2)
        e[j] = h
        H[:, :, j] = (-score(x + 2 * e) + 8 * score(x + e) - 8 * score(x - e) + score(x - 2 * e)) / (12 * h)
    return 0.5 * (H + H.transpose(0, 2, 1))


def _vec(m):
    return np.array([float(m[i, 0]) for i in range(m.rows)])


def _mat(m):
    return np.array([[float(m[i, j]) for j in range(m.cols)] for i in range(m.rows)])


def _assert_close(got, want, rel, what):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    scale = max(np.abs(want).max(), 1e-300)
    assert np.abs(got - want).max() <= rel * scale, f"{what}: got {got}, want {want}"


# ---------------------------------------------------------------------------------------------------- the library
def test_matrix_tweedie_on_rotated_gaussian():
    """N(m, UΛUᵀ) with a rotated basis: E[x_0|x_t] from the library's score equals the library's x0_posterior_mean,
    (β̄/ᾱ)(I + β̄∇²log q_t) with ∇²log q_t by finite differences of the score equals U diag(posterior_cov_eigvals) Uᵀ
    and the Schur complement Σ − ᾱΣA⁻¹Σ, and the second-moment expression equals Cov + mean meanᵀ."""
    res = theory.get("tweedie-matrix")
    U = _rotation(0.7)
    data = GaussianData.from_spectrum([0.4, -0.2], [0.6, 0.05], U)
    Sigma = U @ np.diag([0.6, 0.05]) @ U.T
    assert abs(Sigma[0, 1]) > 0.1  # a genuinely non-diagonal covariance
    x = _points()
    mean_e, cov_e = res.expression("posterior_mean"), res.expression("posterior_cov")
    sec_e = res.expression("posterior_second_moment")
    for t in TIMES:
        ab, bb = SCHED.alpha_bar[t], SCHED.beta_bar[t]
        score = lambda y, t=t: data.score(SCHED, y, t)  # noqa: E731
        s = score(x)
        H = _fd_hessian(score, x)
        A = ab * Sigma + bb * np.eye(2)
        np.testing.assert_allclose(H, np.broadcast_to(-np.linalg.inv(A), H.shape), rtol=1e-9, atol=1e-9)
        lib_mean = data.x0_posterior_mean(SCHED, x, t)
        lib_cov = data.basis @ np.diag(data.posterior_cov_eigvals(SCHED, t)) @ data.basis.T
        schur = Sigma - ab * Sigma @ np.linalg.inv(A) @ Sigma
        np.testing.assert_allclose(lib_cov, schur, rtol=1e-10, atol=1e-14)
        for b in range(x.shape[0]):
            m = _vec(mean_e.mp(ab, x[b, 0], x[b, 1], s[b, 0], s[b, 1]))
            _assert_close(m, lib_mean[b], 1e-10, f"E[x_0|x_t] at t={t}")
            c = _mat(cov_e.mp(ab, H[b, 0, 0], H[b, 0, 1], H[b, 1, 1]))
            _assert_close(c, lib_cov, 1e-8, f"Cov(x_0|x_t) at t={t}")
            R = H[b] + np.outer(s[b], s[b])  # ∇²q/q = ∇²log q + ∇log q ∇log qᵀ
            sec = _mat(sec_e.mp(ab, x[b, 0], x[b, 1], s[b, 0], s[b, 1], R[0, 0], R[0, 1], R[1, 1]))
            _assert_close(sec, lib_cov + np.outer(lib_mean[b], lib_mean[b]), 1e-8, f"E[x_0x_0ᵀ|x_t] at t={t}")


def _mixture_posterior_here(data, t, x):
    """E[x_0|x_t] and Cov(x_0|x_t) from scratch: scipy component densities of q_t, responsibilities, component
    posteriors by Gaussian conditioning."""
    ab, bb = SCHED.alpha_bar[t], SCHED.beta_bar[t]
    w, ms, Ss = data.weights, data.means, data.covs
    dens, mus, Cs = [], [], []
    for k in range(w.size):
        A = ab * Ss[k] + bb * np.eye(2)
        dens.append(w[k] * scipy.stats.multivariate_normal(math.sqrt(ab) * ms[k], A).pdf(x))
        gain = math.sqrt(ab) * Ss[k] @ np.linalg.inv(A)
        mus.append(ms[k] + (x - math.sqrt(ab) * ms[k]) @ gain.T)
        Cs.append(Ss[k] - ab * Ss[k] @ np.linalg.inv(A) @ Ss[k])
    r = np.array(dens) / np.sum(dens, axis=0)  # (K, B)
    mean = np.einsum("kb,kbi->bi", r, np.array(mus))
    second = np.einsum("kb,kbij->bij", r, np.array(Cs)[:, None] + np.einsum("kbi,kbj->kbij", mus, mus))
    return mean, second - np.einsum("bi,bj->bij", mean, mean)


def test_matrix_tweedie_on_full_covariance_mixture():
    """Two-component 2-D mixture with full covariances: the Hessian formula with ∇²log q_t by finite differences of
    the library's GaussianMixtureData.score equals the responsibility-weighted posterior covariance computed here, and
    the mean formula from the score equals both the library's x0_posterior_mean and the one computed here."""
    res = theory.get("tweedie-matrix")
    data = _mixture()
    assert np.abs(data.covs[:, 0, 1]).min() > 0.05
    x = _points()
    mean_e, cov_e = res.expression("posterior_mean"), res.expression("posterior_cov")
    for t in TIMES:
        ab = SCHED.alpha_bar[t]
        score = lambda y, t=t: data.score(SCHED, y, t)  # noqa: E731
        s = score(x)
        H = _fd_hessian(score, x)
        lib_mean = data.x0_posterior_mean(SCHED, x, t)
        mean_here, cov_here = _mixture_posterior_here(data, t, x)
        np.testing.assert_allclose(lib_mean, mean_here, rtol=1e-10, atol=1e-12)
        for b in range(x.shape[0]):
            m = _vec(mean_e.mp(ab, x[b, 0], x[b, 1], s[b, 0], s[b, 1]))
            _assert_close(m, lib_mean[b], 1e-10, f"E[x_0|x_t] at t={t}")
            c = _mat(cov_e.mp(ab, H[b, 0, 0], H[b, 0, 1], H[b, 1, 1]))
            _assert_close(c, cov_here[b], 1e-8, f"Cov(x_0|x_t) at t={t}, x={x[b]}")


def _gh_grid(nodes):
    z, wz = np.polynomial.hermite_e.hermegauss(nodes)
    Z = np.stack(np.meshgrid(z, z, indexing="ij"), -1).reshape(-1, 2)
    W = np.outer(wz, wz).ravel() / (2 * math.pi)
    return Z, W


def _mean_sq_score(data, components, t, nodes):
    """E_{q_t}‖∇log q_t‖²: Gauss–Hermite on each Gaussian component N(√ᾱ m_k, A_k) of q_t, weights w_k, of the
    library's score."""
    ab, bb = SCHED.alpha_bar[t], SCHED.beta_bar[t]
    Z, W = _gh_grid(nodes)
    total = 0.0
    for wk, mk, Sk in components:
        L = np.linalg.cholesky(ab * Sk + bb * np.eye(2))
        s = data.score(SCHED, math.sqrt(ab) * mk + Z @ L.T, t)
        total += wk * float(W @ (s * s).sum(axis=1))
    return total


def test_trace_form_matches_library_by_quadrature():
    """E tr Cov(x_0|x_t)/d = (β̄/ᾱ)(1 − β̄ E‖∇log q_t‖²/d) with E‖∇log q_t‖² a quadrature of the library's score:
    equals GaussianData.posterior_cov_trace for a rotated Gaussian (3 nodes: exact) and
    GaussianMixtureData.posterior_cov_trace_reference for the full-covariance mixture."""
    res = theory.get("tweedie-matrix")
    tr_e = res.expression("mean_trace_cov")
    U = _rotation(0.7)
    gauss = GaussianData.from_spectrum([0.4, -0.2], [0.6, 0.05], U)
    Sigma = U @ np.diag([0.6, 0.05]) @ U.T
    lib_tr = gauss.posterior_cov_trace(SCHED)
    mix = _mixture()
    lib_mix = mix.posterior_cov_trace_reference(SCHED, timesteps=list(TIMES))
    for t in TIMES:
        ab = SCHED.alpha_bar[t]
        S = _mean_sq_score(gauss, [(1.0, gauss.mean, Sigma)], t, nodes=3) / 2
        assert abs(float(tr_e.mp(ab, S)) - lib_tr[t]) <= 1e-9 * lib_tr[t], t
        comps = list(zip(mix.weights, mix.means, mix.covs))
        S = _mean_sq_score(mix, comps, t, nodes=80) / 2  # 80 nodes: ≈ 2e-10 relative at t = 1 (60: ≈ 1e-8)
        assert abs(float(tr_e.mp(ab, S)) - lib_mix[t]) <= 1e-8 * lib_mix[t], t


# ---------------------------------------------------------------------------------------------------- the proofs
def test_tweedie_matrix_identities_are_symbolic_and_catch_errors():
    """Every identity of tweedie-matrix is proven symbolically; a perturbed covariance identity (one entry off by
    1e-20 relative) is neither proven nor passes the spot check; the explicit closed-form mixture identity passes
    the spot check and a perturbed one does not."""
    res = theory.get("tweedie-matrix")
    assert len(res.identities) >= 10
    for ident in res.identities:
        assert check(ident).how == "symbolic", ident.id
    rhs = sp.Matrix(derivations.COV_2D.rhs)
    rhs[0, 1] *= 1 + sp.Rational(1, 10**20)
    bad = dataclasses.replace(derivations.COV_2D, id="cov-perturbed", rhs=rhs)
    assert prove_equal(bad.lhs, bad.rhs, bad) is None
    with pytest.raises(AssertionError, match="differs from the lhs"):
        check(bad)
    explicit = derivations.MIXTURE_2D_EXPLICIT
    assert spot_check(explicit, random_uniforms(1, 6)) == 6
    rhs = sp.Matrix(explicit.rhs)
    rhs[0, 3] += sp.Rational(1, 10**20)
    with pytest.raises(AssertionError, match="differs from the lhs"):
        spot_check(dataclasses.replace(explicit, id="explicit-perturbed", rhs=rhs), random_uniforms(1, 3))


def test_posterior_expectation_declares_every_moment():
    """ExpectPosterior knows first and second moments of x_0 only: a third moment raises instead of being guessed."""
    E = derivations.ExpectPosterior
    assert sp.simplify(E(derivations.x01 * derivations.x02 + 3).doit() - derivations.P12 - 3) == 0
    with pytest.raises(ValueError, match="no declared moment"):
        E(derivations.x01**3).doit()


@pytest.mark.slow
def test_explicit_mixture_identity_is_proven():
    """The closed-form two-component mixture identity with every Σ_k written out is proven by sympy (≈ 2 min on 2
    cores)."""
    ident = derivations.MIXTURE_2D_EXPLICIT
    assert prove_equal(ident.lhs, ident.rhs, ident) == "symbolic"
