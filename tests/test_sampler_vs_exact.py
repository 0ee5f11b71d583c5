"""Cross-method agreement: the one sampling loop, driven by the exact ε*, reproduces toy.evaluate_exact's closed-form
generated distribution (mean and covariance) within Monte Carlo error, for all five methods, on numpy and torch.
The comparison is the public checker analytic_dpm.testing.assert_sampler_matches_exact (no second copy here)."""

import numpy as np
import pytest

import analytic_dpm as adpm
from analytic_dpm import toy
from analytic_dpm.testing import assert_sampler_matches_exact

NUM = 20000
TOL_SE = 5.0  # tolerance in standard errors; deterministic seeds


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    data = toy.GaussianData.from_spectrum([0.3, -0.2, 0.1, 0.5], [0.002, 0.02, 0.1, 0.4], q)  # full covariance
    sched = adpm.Schedule.linear(200)
    return data, sched


def _library_sampler(method, gamma, backend):
    kw = dict(backend=backend, dtype=__import__("torch").float64) if backend == "torch" else {}

    def sampler(eps_model, schedule, trajectory, num_samples, seed):
        return adpm.sample(eps_model, schedule, trajectory, method, num_samples=num_samples, shape=(4,), gamma=gamma,
                           data_range=None, seed=seed, progress=False, **kw)

    return sampler


@pytest.mark.parametrize("K", [3, 20])
@pytest.mark.parametrize("method", adpm.METHODS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sampler_matches_exact_generated_distribution(setup, K, method, backend):
    """Mean within TOL_SE standard errors per coordinate, every covariance entry within TOL_SE of its Gaussian
    sampling error √((Σ_iiΣ_jj + Σ_ij²)/M) (the public checker analytic_dpm.testing.assert_sampler_matches_exact)."""
    data, sched = setup
    tr = adpm.even_trajectory(sched.N, K)
    gamma = data.gamma(sched) if "analytic" in method else None
    assert_sampler_matches_exact(_library_sampler(method, gamma, backend), data, sched, tr, method, num_samples=NUM,
                                 seed=11, n_sigma=TOL_SE, covariance="full")


def test_check_has_power(setup):
    """The comparison can fail: ddpm-large and ddpm-small at K = 3 differ by far more than the tolerance."""
    data, sched = setup
    tr = adpm.even_trajectory(sched.N, 3)
    with pytest.raises(AssertionError, match=r"differs from the exact generated distribution of 'ddpm-large'(.|\n)*"
                                             r"cov\["):
        assert_sampler_matches_exact(_library_sampler("ddpm-small", None, "numpy"), data, sched, tr, "ddpm-large",
                                     num_samples=NUM, seed=11, n_sigma=TOL_SE, covariance="full")
