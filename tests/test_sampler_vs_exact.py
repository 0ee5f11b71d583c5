"""Cross-method agreement: the one sampling loop, driven by the exact ε*, reproduces toy.evaluate_exact's closed-form
generated distribution (mean and covariance) within Monte Carlo error, for all five methods, on numpy and torch."""

import numpy as np
import pytest

import analytic_dpm as adpm
from analytic_dpm import toy

NUM = 20000
TOL_SE = 5.0  # tolerance in standard errors; deterministic seeds


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    data = toy.GaussianData.from_spectrum([0.3, -0.2, 0.1, 0.5], [0.002, 0.02, 0.1, 0.4], q)  # full covariance
    sched = adpm.Schedule.linear(200)
    return data, sched


@pytest.mark.parametrize("K", [3, 20])
@pytest.mark.parametrize("method", adpm.METHODS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sampler_matches_exact_generated_distribution(setup, K, method, backend):
    data, sched = setup
    tr = adpm.even_trajectory(sched.N, K)
    gamma = data.gamma(sched) if "analytic" in method else None
    exact = toy.evaluate_exact(data, sched, tr, method)
    kw = dict(backend=backend, dtype=__import__("torch").float64) if backend == "torch" else {}
    x = adpm.sample(data.eps_model(sched), sched, tr, method, num_samples=NUM, shape=(4,), gamma=gamma,
                    data_range=None, seed=11, progress=False, **kw)
    x = np.asarray(x, dtype=np.float64)
    cov = exact.cov
    se_mean = np.sqrt(np.diag(cov) / NUM)
    assert np.all(np.abs(x.mean(0) - exact.mean) <= TOL_SE * se_mean), (x.mean(0), exact.mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / NUM)
    assert np.all(np.abs(np.cov(x.T) - cov) <= TOL_SE * se_cov)


def test_check_has_power(setup):
    """The comparison can fail: ddpm-large and ddpm-small at K = 3 differ by far more than the tolerance."""
    data, sched = setup
    tr = adpm.even_trajectory(sched.N, 3)
    a = toy.evaluate_exact(data, sched, tr, "ddpm-large")
    x = adpm.sample(data.eps_model(sched), sched, tr, "ddpm-small", num_samples=NUM, shape=(4,), data_range=None,
                    seed=11, progress=False)
    se_cov = np.sqrt((np.outer(np.diag(a.cov), np.diag(a.cov)) + a.cov**2) / NUM)
    assert np.any(np.abs(np.cov(x.T) - a.cov) > TOL_SE * se_cov)
