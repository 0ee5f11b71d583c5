"""analytic-dpm: Analytic-DPM (Bao et al., ICLR 2022) as a tested numerical library.

    import analytic_dpm as adpm
    s = adpm.Schedule.linear(N=1000)
    traj = adpm.even_trajectory(s.N, 10)
    v = adpm.reverse_variances(s, traj, "analytic-ddpm", gamma=gamma)
"""

from .posterior import (
    eps_from_x0,
    gap,
    lambda_sq,
    posterior_coefficients,
    posterior_mean,
    residual_var,
    sample_marginal,
    score_from_eps,
    x0_from_eps,
)
from .schedules import Schedule
from .trajectories import (
    ddim_stride_trajectory,
    even_trajectory,
    make_trajectory,
    quadratic_trajectory,
    transitions,
    validate_trajectory,
)
from .variance import (
    ALL_METHODS,
    ANALYTIC_METHODS,
    METHODS,
    RESIDUAL_METHODS,
    ReverseVariances,
    ddpm_bounds,
    ddpm_sigma_sq_opt,
    handcrafted_sigma_sq,
    pixel_clip_threshold,
    residual_sigma_sq,
    reverse_variances,
    sigma_sq_from_posterior_cov,
    sigma_sq_opt,
    theorem2_bounds,
)

__version__ = "0.1.0"

from .gamma import GammaEstimate, estimate_gamma, gamma_from_mean_sq_score, mean_sq_score_from_gamma  # noqa: E402
from .sampling import CoefficientTable, coefficient_table, sample  # noqa: E402
from . import likelihood, toy  # noqa: E402

# The module analytic_dpm.optimal_trajectory stays importable with importlib.import_module or
# `from analytic_dpm.optimal_trajectory import ...`; the package attribute is the function (the API).
from .optimal_trajectory import (  # noqa: E402
    OptimalTrajectories,
    OptimalTrajectory,
    analytic_ddpm_cost,
    optimal_trajectories,
    optimal_trajectories_from_costs,
    optimal_trajectory,
    optimal_trajectory_from_costs,
    trajectory_cost,
)

# Continuous time (P App. E; the extended paper's VP SDE models): analytic_dpm.continuous
from . import continuous  # noqa: E402
from .continuous import (  # noqa: E402
    VPSDE,
    ContinuousTimeEpsModel,
    DiscretizedSchedule,
    GammaCurve,
    continuous_optimal_trajectory,
    continuous_trajectory,
)

# Per-dimension covariance (the extended paper's SN-DPM / NPR-DPM): methods of sample, variational_bound, ...
from . import covariance  # noqa: E402
from .covariance import COVARIANCE_METHODS  # noqa: E402
