"""Toy data with a known score: the laboratory where every quantity of Analytic-DPM is exact.

* :class:`GaussianData`: N(m, Σ) in any dimension; exact score, ε*, Γ, posterior, samples.
* :class:`GaussianMixtureData`: exact score and ε* via responsibilities; Γ by quadrature (d <= 2) or Monte Carlo.
* :class:`ImperfectEps`, :func:`exact_gamma_of_imperfect`, :func:`exact_residual_of_imperfect`: a scaled/biased
  ε-model with exactly known Γ̂ and residual R = E‖ε − ε̂‖²/d.
* :func:`evaluate_exact`: the generated Gaussian, its Fréchet distance and the variational bound in closed form.
* :mod:`.covariance`: the per-dimension (diagonal) covariance ground truth for SN-/NPR-DPM: exact heads
  (:class:`ExactHeadModel`), optimal diagonal variances, the exact per-dimension-variance chain
  (:func:`evaluate_exact_diagonal`) and NPR's state-dependent KL (:func:`npr_state_dependent_kl_terms`).
"""

from .covariance import (
    DiagonalEvaluation,
    ExactHeadModel,
    cov_x0_diag,
    eps_star_sq_diag,
    evaluate_exact_diagonal,
    exact_eps_sq,
    exact_residual_sq,
    expected_cov_x0_diag,
    expected_residual_sq_diag,
    npr_state_dependent_bound,
    npr_state_dependent_kl_terms,
    optimal_diagonal_sigma_sq,
    posterior_eps_cov_diag,
)
from .exact import (
    ExactEvaluation,
    ExactMeanBound,
    evaluate_exact,
    exact_mean_bound,
    frechet_distance_same_basis,
)
from .gaussian import ExactEpsModel, GaussianData, default_gaussian
from .imperfect import (
    ImperfectEps,
    exact_gamma_of_imperfect,
    exact_one_minus_gamma_of_imperfect,
    exact_residual_of_imperfect,
)
from .mixture import QUADRATURE_RULES, GaussianMixtureData, default_mixture, standard_normal_rule

__all__ = [
    "GaussianData", "GaussianMixtureData", "ExactEpsModel", "default_gaussian", "default_mixture",
    "ImperfectEps", "exact_gamma_of_imperfect", "exact_residual_of_imperfect", "exact_one_minus_gamma_of_imperfect",
    "evaluate_exact", "ExactEvaluation", "exact_mean_bound",
    "ExactMeanBound", "frechet_distance_same_basis", "standard_normal_rule", "QUADRATURE_RULES",
    "ExactHeadModel", "exact_eps_sq", "exact_residual_sq", "posterior_eps_cov_diag", "cov_x0_diag", "eps_star_sq_diag",
    "expected_residual_sq_diag", "expected_cov_x0_diag", "optimal_diagonal_sigma_sq", "evaluate_exact_diagonal",
    "DiagonalEvaluation", "npr_state_dependent_kl_terms", "npr_state_dependent_bound",
]
