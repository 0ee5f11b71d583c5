# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Testing your own sampler or variance rule against the theory
#
# Registry entries used here: `theorem2` (the bounds every optimal variance obeys) and `theorem1`.
#
# `analytic_dpm.testing` turns Analytic-DPM's theory into checks for *your* code:
#
# * `assert_variances_within_bounds(schedule, trajectory, sigma_sq, eta=…, data_range=…)`: Theorem 2,
#   $\lambda^2 \le \sigma^2 \le \min(\lambda^2 + g^2,\ \lambda^2 + g^2 r^2\bar\alpha_t/\bar\beta_t)$ (P eqs. 11–12);
# * `assert_gamma_consistent(gamma, stderr)`: Jensen's $\Gamma_n = E\|\hat\varepsilon_n\|^2/d \le 1$ within error;
# * `assert_eps_model_gamma_matches(eps_model, toy_data, schedule)`: an ε-model's Γ̂ against the exact Γ;
# * `assert_sampler_matches_exact(sampler_fn, toy_gaussian, schedule, trajectory, method)`: a sampler's output
#   against the exact generated distribution (`toy.evaluate_exact`) within Monte Carlo error;
# * hypothesis strategies (`analytic_dpm.testing.strategies`) and the command
#   `python -m analytic_dpm.testing check-variances` for variances computed elsewhere.
#
# The running example is an outside rule: diffusers' `DDPMScheduler(variance_type="fixed_large")`, which is
# σ² = β_n on the full chain and $\beta_{t|s} = 1 - \bar\alpha_t/\bar\alpha_s$ on a strided trajectory. It is *not*
# Theorem 2's upper bound ($\beta_{t|s}/\alpha_{t|s}$ for DDPM, Corollary 3), and the naive per-step rule
# σ² = β_t on a strided trajectory is not even above the lower bound. This notebook:
#
# 1. tests diffusers' `fixed_large` on its own strided ("leading") trajectory in ten lines, and the naive rule;
# 2. does the same from the command line, on files;
# 3. property-tests both rules over hypothesis-drawn schedules and trajectories;
# 4. tests diffusers' sampling loop and an ε-model adapter against the exact toy answers.

# %%
import contextlib
import io
import json
import os
import pathlib
import sys
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis.configuration import set_hypothesis_home_dir

try:
    import theory
except ImportError:  # Jupyter started in notebooks/: theory/ sits in the repository root beside analytic_dpm/
    sys.path.insert(0, str(next(p for p in (pathlib.Path.cwd(), *pathlib.Path.cwd().parents)
                                if (p / "theory" / "registry.py").is_file())))
    import theory
from theory.render import show

import analytic_dpm as adpm
from analytic_dpm import toy
from analytic_dpm.testing import (
    assert_eps_model_gamma_matches,
    assert_sampler_matches_exact,
    assert_variances_within_bounds,
    plot_variance_bounds,
    variance_bounds_report,
)
from analytic_dpm.testing import strategies as adst
from analytic_dpm.testing.check_variances import main as check_variances_cli

show("theorem2", "theorem2-lower", "theorem2-upper-eq11", "theorem2-upper-eq12")

# %% tags=["parameters"]
SIZE = os.environ.get("ADPM_NB_SIZE", "full")  # "small" (the test suite) or "full"
if SIZE not in ("small", "full"):
    raise ValueError(f"ADPM_NB_SIZE must be 'small' or 'full'; got {SIZE!r}.")
SMALL = SIZE == "small"
N = 1000
K = 10  # sampling steps of the strided trajectory
DIM = 8  # toy Gaussian for the sampler and ε-model checks
M_SAMPLES = 4000 if SMALL else 20000  # samples drawn by the sampler under test
M_GAMMA = 1000 if SMALL else 5000  # samples of the Γ estimate
HYP_EXAMPLES = 25 if SMALL else 200  # hypothesis examples per property

# %% [markdown]
# ## 1. Ten lines: diffusers' `fixed_large` against Theorem 2
#
# diffusers numbers timesteps t = 0..N−1; the paper's n is t + 1, and a trajectory is $[0, \tau_1, …, \tau_K]$.
# `_get_variance(t)` is the variance the scheduler's `step()` adds on the way from t to the previous timestep.
# diffusers computes in float32, hence `rtol=1e-3`.

# %%
from diffusers import DDPMScheduler

ddpm = DDPMScheduler(num_train_timesteps=N, beta_schedule="linear", variance_type="fixed_large")
ddpm.set_timesteps(K)                                       # "leading" spacing: t = 900, 800, …, 0
t0 = np.sort(ddpm.timesteps.numpy())                        # diffusers' t = the paper's n − 1
traj = np.concatenate([[0], t0 + 1])                        # [0, τ_1, …, τ_K] = [0, 1, 101, …, 901]
sigma_sq = np.array([float(ddpm._get_variance(int(t))) for t in t0])  # σ² of transition (τ_{k−1}, τ_k)
sched = adpm.Schedule.linear(N)                             # the same β_n = linspace(1e-4, 0.02, N)
report = assert_variances_within_bounds(sched, traj, sigma_sq, data_range=1, rtol=1e-3)  # data in [−1, 1]
print(report.format_table())

# %% [markdown]
# Every step is within the bounds, and none sits on the upper one: $\beta_{t|s} = \alpha_{t|s}\cdot
# \beta_{t|s}/\alpha_{t|s}$, so `fixed_large` is a factor $\alpha_{t|s}$ below eq. 11. The naive rule σ² = β_t
# (the one-step β at the transition's t, which is what "fixed_large" means on the full chain) fails on the strided
# trajectory wherever β_t < λ² = β̃_{s|t}, which is 8 of the 10 steps; the checker says where and by how much:

# %%
s, t = adpm.transitions(traj)
ratio_to_upper = sigma_sq / report.upper_eq11
print("fixed_large / eq. 11 upper bound:", np.round(ratio_to_upper, 4))
print("α_{t|s}:                          ", np.round(sched.skip_alpha(s, t), 4))
naive = sched.beta[traj[1:]]
try:
    assert_variances_within_bounds(sched, traj, naive, data_range=1)
    naive_message = None
except AssertionError as err:
    naive_message = str(err)
print(naive_message)

# the checker's bounds are the sympy expressions of the registry (theorem2), independently derived
t2 = theory.get("theorem2")
sym_err = max(
    abs(float(t2.expression("upper_eq11").mp(sched.alpha_bar[a], sched.alpha_bar[b], float(lam))) / ub - 1)
    for a, b, lam, ub in zip(s, t, report.lower, report.upper_eq11))
print(f"checker's eq. 11 vs sympy: max relative difference {sym_err:.1e}")

fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
plot_variance_bounds(report, ax=axes[0], title="diffusers fixed_large (β_{t|s}): within")
plot_variance_bounds(variance_bounds_report(sched, traj, naive, data_range=1), ax=axes[1],
                     title="naive σ² = β_t on the strided trajectory")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. The command line, on files
#
# For variances computed elsewhere (another library, a learned-variance model averaged over data), write them to a
# file and run
#
# ```bash
# python -m analytic_dpm.testing check-variances --schedule linear --N 1000 --variances fixed_large.csv \
#     --zero-based --data-range 1 --rtol 1e-3 --plot fixed_large.png
# ```
#
# A two-column file `t, sigma_sq` carries its own trajectory (`--zero-based`: diffusers' t); a one-column file needs
# `--trajectory even:10`, `ddim-stride:10`, a comma list or a file. The exit status is 0 when every step is within
# the bounds, 1 when some are not, 2 for bad input. Here the files live in a temporary directory.

# %%
def run_cli(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = check_variances_cli(["check-variances", "--schedule", "linear", "--N", str(N), *args])
    return rc, out.getvalue()


with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    np.savetxt(tmp / "fixed_large.csv", np.c_[t0, sigma_sq], delimiter=",", header="t,sigma_sq", comments="")
    np.save(tmp / "naive.npy", naive)
    rc_ok, out_ok = run_cli("--variances", str(tmp / "fixed_large.csv"), "--zero-based", "--data-range", "1",
                            "--rtol", "1e-3", "--plot", str(tmp / "fixed_large.png"))
    rc_bad, out_bad = run_cli("--variances", str(tmp / "naive.npy"), "--trajectory", f"ddim-stride:{K}",
                              "--data-range", "1", "--json")
    cli_png = plt.imread(tmp / "fixed_large.png")
print(f"exit status {rc_ok}:\n{out_ok}")
cli_json = json.loads(out_bad)
print(f"exit status {rc_bad}; steps outside: {[(v['k'], v['s'], v['t'], v['status']) for v in cli_json['violations']]}")
plt.figure(figsize=(7, 4.2))
plt.imshow(cli_png)
plt.axis("off")
plt.show()

# %% [markdown]
# ## 3. Property tests over drawn schedules and trajectories
#
# `strategies.schedules()` draws linear, cosine and arbitrary-β schedules (β from 1e-8 to 0.999, N from 1 to 4000);
# `schedule_and_trajectory(schedules=…)` adds a strictly increasing trajectory (K = N possible, τ_K ≤ N). The skip
# rule β_{t|s} passes on all of them, even eq. 12 for data in [−1, 1] (for DDPM, eq. 12 minus β_{t|s} equals
# $\bar\alpha_s\beta_{t|s}^2\bar\alpha_t/\bar\beta_t^2 \ge 0$). The naive rule is falsified, and hypothesis shrinks the
# counterexample to a tiny schedule.

# %%
property_settings = settings(max_examples=HYP_EXAMPLES, derandomize=True, database=None, deadline=None)


@property_settings
@given(adst.schedule_and_trajectory(schedules=adst.schedules()))
def test_skip_beta_rule(sched_traj):
    sch, tr = sched_traj
    a, b = adpm.transitions(tr)
    assert_variances_within_bounds(sch, tr, sch.skip_beta(a, b), data_range=1)


@property_settings
@given(adst.schedule_and_trajectory(schedules=adst.schedules(max_n=200)))
def test_naive_rule(sched_traj):
    sch, tr = sched_traj
    assert_variances_within_bounds(sch, tr, sch.beta[tr[1:]], data_range=1)


# hypothesis caches what it learns under ./.hypothesis; point it at a temporary directory so that this notebook
# writes nothing where it runs (in your own test suite, leave the default)
with tempfile.TemporaryDirectory() as hyp_home:
    set_hypothesis_home_dir(hyp_home)
    try:
        test_skip_beta_rule()
        try:
            test_naive_rule()
            naive_falsified = None
        except AssertionError as err:
            naive_falsified = str(err).splitlines()[:2]
    finally:
        set_hypothesis_home_dir(None)
print("β_{t|s}: holds on", HYP_EXAMPLES, "drawn schedules and trajectories")
print("σ² = β_t, falsified:\n  " + "\n  ".join(naive_falsified or ["(not falsified)"]))

# %% [markdown]
# ## 4. A sampling loop and an ε-model adapter against the exact toy answers
#
# On Gaussian data the generated distribution of the reverse process is known in closed form
# (`toy.evaluate_exact`). Below, diffusers' own `DDPMScheduler.step()` loop, driven by the exact ε* of a toy
# Gaussian, must reproduce the exact distribution of `"ddpm-large"` (σ² = β_{t|s}, the DDPM posterior mean) on any
# trajectory, here the strided one. `clip_sample=False`: toy data are unbounded. The same loop is not the
# `"ddpm-small"` process, and the checker says so.

# %%
data = toy.default_gaussian(DIM)


def diffusers_sampler(eps_model, schedule, trajectory, num_samples, seed):
    """diffusers' DDPM loop on any trajectory; eps_model takes the paper's n = t + 1."""
    gen = torch.Generator().manual_seed(seed)
    sch = DDPMScheduler(num_train_timesteps=schedule.N, beta_schedule="linear", variance_type="fixed_large",
                        clip_sample=False)
    sch.set_timesteps(timesteps=[int(v) - 1 for v in trajectory[:0:-1]])  # descending, 0-based
    x = torch.randn(num_samples, DIM, generator=gen, dtype=torch.float64)
    for tt in sch.timesteps:
        x = sch.step(eps_model(x, int(tt) + 1), tt, x, generator=gen).prev_sample
    return x


cmp_large = assert_sampler_matches_exact(diffusers_sampler, data, sched, traj, "ddpm-large", num_samples=M_SAMPLES)
print(f"diffusers' loop vs exact 'ddpm-large': max |z| = {cmp_large.max_abs_z:.2f} "
      f"(threshold {cmp_large.threshold:.2f} standard errors)")
try:
    assert_sampler_matches_exact(diffusers_sampler, data, sched, traj, "ddpm-small", num_samples=M_SAMPLES)
    small_message = None
except AssertionError as err:
    small_message = str(err)
print(small_message.splitlines()[0] if small_message else "(no difference found)")

# %% [markdown]
# An ε-model adapter: a network trained with diffusers' convention takes t = n − 1. Wrapping it for this library
# needs the shift; forgetting it moves every call one step, and Γ̂ (P eq. 9) no longer matches the exact Γ.

# %%
exact_eps = data.eps_model(sched)


def network(x, t):  # stands for a diffusers-convention network (t = 0..N−1), here exact
    return exact_eps(x, t + 1)


def good_adapter(x, n):
    return network(x, n - 1)


def buggy_adapter(x, n):  # forgot the shift
    return network(x, min(n, N - 1))


ts = np.array([1, 2, 5, 20, 100, 500])
est_good = assert_eps_model_gamma_matches(good_adapter, data, sched, ts, M_GAMMA)
try:
    assert_eps_model_gamma_matches(buggy_adapter, data, sched, ts, M_GAMMA)
    adapter_message = None
except AssertionError as err:
    adapter_message = str(err)
print("\n".join(adapter_message.splitlines()[:3]) if adapter_message else "(no difference found)")

# %%
# 1. diffusers' fixed_large lies within Theorem 2's bounds on its strided trajectory (float32, rtol 1e-3), a factor
#    α_{t|s} below eq. 11 (not the upper bound); the naive σ² = β_t is flagged exactly where it is below λ² = β̃_{s|t}
#    (8 of 10 steps); the checker's bounds are the sympy expressions
assert report.ok and np.array_equal(traj, adpm.ddim_stride_trajectory(N, K))
np.testing.assert_allclose(ratio_to_upper, sched.skip_alpha(s, t), rtol=1e-3)
assert np.all(ratio_to_upper[1:] < 0.95)
below = naive < report.lower * (1 - 1e-6)  # where β_t < β̃_{s|t}
assert below.sum() == 8 and not below[:2].any(), below
assert naive_message is not None and f"at {below.sum()} of {K} transitions" in naive_message
assert naive_message.count("below the lower bound λ²") == below.sum()
assert all(f"step k = {k} (s, t) = ({s[k - 1]}, {t[k - 1]})" in naive_message for k in np.flatnonzero(below) + 1)
assert sym_err < 1e-12, sym_err
# 2. the command line agrees: exit 0 for fixed_large, 1 for the naive rule with the same steps outside
assert rc_ok == 0 and "OK: all 10 steps" in out_ok and cli_png.shape[0] > 100
assert rc_bad == 1 and [v["k"] for v in cli_json["violations"]] == (np.flatnonzero(below) + 1).tolist()
# 3. property tests: β_{t|s} holds on every drawn schedule and trajectory; σ² = β_t is falsified
assert naive_falsified is not None and "outside Theorem 2's bounds" in naive_falsified[0]
# 4. diffusers' loop reproduces the exact 'ddpm-large' distribution and not 'ddpm-small'; the shifted adapter passes,
#    the unshifted one fails
assert cmp_large.max_abs_z < cmp_large.threshold and small_message is not None
assert est_good.num_samples == M_GAMMA and adapter_message is not None and "timestep n = 1:" in adapter_message
print("all claims hold")
