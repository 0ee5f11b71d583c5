"""Property-testing toolkit: check your own sampler, learned-variance model or schedule against Analytic-DPM's theory.

Checkers (numpy/scipy only)::

    from analytic_dpm.testing import (assert_variances_within_bounds, assert_gamma_consistent,
                                      assert_eps_model_gamma_matches, assert_sampler_matches_exact,
                                      assert_residual_variance_optimal)

The residual form, σ² = λ² + g²R_t for the network's own mean with R_t = E‖ε − ε̂_t‖²/d:
``assert_residual_variance_optimal`` checks the formula, the per-transition KL minimality and, for the exact predictor,
Theorem 1, and reports (never fails on) steps outside Theorem 2's bounds; ``variance_bounds_report(..., residual=R)``
shows the residual variance beside any σ²; ``assert_sampler_matches_exact`` takes the residual methods and an
imperfect ``eps_model``.

Hypothesis strategies (need ``pip install hypothesis``)::

    from analytic_dpm.testing import strategies as adst   # schedules(), trajectories(N), gamma_vectors(N),
                                                          # residual_vectors(N), …

Command line for variances computed elsewhere::

    python -m analytic_dpm.testing check-variances --schedule linear --N 1000 --trajectory even:10 \\
        --variances sigma_sq.npy [--data-range 1] [--gamma gamma.npz] [--residual gamma.npz] [--plot out.png] [--json]

The strategies module is imported on first use (``analytic_dpm.testing.strategies``), so the checkers and the command
work without hypothesis installed.
"""

from .check_variances import check_variance_file, plot_variance_bounds
from .checkers import (
    PERTURBATION_FACTORS,
    RESIDUAL_TEXT,
    THEOREM2_TEXT,
    ResidualVarianceReport,
    SamplerComparison,
    VarianceBoundsReport,
    assert_eps_model_gamma_matches,
    assert_gamma_consistent,
    assert_residual_variance_optimal,
    assert_sampler_matches_exact,
    assert_variances_within_bounds,
    exact_gamma,
    normalize_data_range,
    residual_variance_report,
    variance_bounds_report,
    z_threshold,
)


def __getattr__(name):
    if name == "strategies":  # lazy: hypothesis is needed only here
        import importlib

        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "assert_variances_within_bounds", "variance_bounds_report", "VarianceBoundsReport", "assert_gamma_consistent",
    "assert_eps_model_gamma_matches", "assert_sampler_matches_exact", "SamplerComparison", "exact_gamma",
    "check_variance_file", "plot_variance_bounds", "normalize_data_range", "z_threshold", "THEOREM2_TEXT",
    "assert_residual_variance_optimal", "residual_variance_report", "ResidualVarianceReport", "RESIDUAL_TEXT",
    "PERTURBATION_FACTORS",
]
