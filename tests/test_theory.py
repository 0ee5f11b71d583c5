"""theory/ (sympy) and analytic_dpm (float64 numpy) are independent; here they must agree."""

import mpmath
import numpy as np
import pytest

import analytic_dpm as adpm
import theory


@pytest.mark.parametrize("identity", theory.IDENTITIES, ids=lambda i: i.id)
def test_identity_holds(identity):
    assert theory.check(identity, points=8) in ("symbolic", "numeric")


def test_theory_does_not_import_library():
    import pathlib

    for f in pathlib.Path(theory.__file__).parent.glob("*.py"):
        assert "analytic_dpm" not in f.read_text().replace("``analytic_dpm``", ""), f


def test_library_does_not_import_sympy():
    import pathlib

    for f in pathlib.Path(adpm.__file__).parent.rglob("*.py"):
        assert "import sympy" not in f.read_text(), f


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_library_matches_sympy_at_random_points(name):
    fns = theory.lambdified()
    sched = getattr(adpm.Schedule, name)(1000)
    rng = np.random.default_rng(0)
    for _ in range(25):
        s, t = sorted(rng.choice(np.arange(0, 1001), size=2, replace=False))
        g = float(rng.uniform())
        eta = float(rng.uniform())
        for fam, e in [("ddpm", 0.0), ("ddim", eta)]:
            lam2 = adpm.lambda_sq(sched, s, t, fam, e)
            args = (mpmath.mpf(sched.alpha_bar[s]), mpmath.mpf(sched.alpha_bar[t]), mpmath.mpf(lam2), mpmath.mpf(g))
            c0, ct, _ = adpm.posterior_coefficients(sched, s, t, fam, e)
            assert float(fns["coef_x0"](*args)) == pytest.approx(c0, rel=1e-9)
            assert float(fns["coef_xt"](*args)) == pytest.approx(ct, rel=1e-9, abs=1e-300)
            assert float(fns["sigma_sq_opt"](*args)) == pytest.approx(
                adpm.sigma_sq_opt(sched, s, t, g, fam, e), rel=1e-9)
            lo, ub11, ub12 = adpm.theorem2_bounds(sched, s, t, fam, e)
            assert float(fns["upper_eq11"](*args)) == pytest.approx(ub11, rel=1e-9)
            assert float(fns["upper_eq12_r1"](*args)) == pytest.approx(ub12, rel=1e-9)
        assert float(fns["beta_tilde"](*args)) == pytest.approx(sched.skip_beta_tilde(s, t), rel=1e-9, abs=1e-300)
