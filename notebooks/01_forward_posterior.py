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
# # 01 · The forward process and its posterior
#
# Registry entries shown here: **`forward-marginals`** and **`posterior`** (`python -m theory --only forward-marginals
# posterior` prints their derivations).
#
# The forward process adds Gaussian noise, $q(x_n \mid x_0) = \mathcal N(\sqrt{\bar\alpha_n}\,x_0,\ \bar\beta_n I)$,
# with $\bar\beta_n = 1 - \bar\alpha_n$. On a trajectory $s < t$ the paper uses a whole family of reverse posteriors,
# one for each $\lambda^2 \in [0, \bar\beta_s]$ (P eq. 13):
#
# $$q_\lambda(x_s \mid x_t, x_0) = \mathcal N\big(\tilde\mu_{s|t},\ \lambda^2 I\big),\qquad
# \tilde\mu_{s|t} = \sqrt{\bar\alpha_s}\,x_0 + \sqrt{\bar\beta_s - \lambda^2}\,
# \frac{x_t - \sqrt{\bar\alpha_t}\,x_0}{\sqrt{\bar\beta_t}}
# = c_0\,x_0 + c_t\,x_t .$$
#
# DDPM takes $\lambda^2 = \tilde\beta_{s|t} = \bar\beta_s\beta_{t|s}/\bar\beta_t$ (the Bayes posterior of the Markov
# chain); DDIM takes $\lambda^2 = \eta^2\tilde\beta_{s|t}$. Every member keeps the marginals
# $q(x_s \mid x_0) = \mathcal N(\sqrt{\bar\alpha_s}x_0, \bar\beta_s I)$: that is why one trained noise predictor serves
# all of them. This notebook checks, with the library only:
#
# 1. the coefficients $c_0, c_t, \lambda^2$ of `analytic_dpm.posterior` against the sympy expressions of `theory`;
# 2. the marginals are kept for every λ (Monte Carlo, tolerances in standard errors), and a wrong mean is caught;
# 3. the DDPM member is the Bayes posterior: regressing $x_s$ on $(x_0, x_t)$ along the Markov chain recovers
#    $c_0, c_t$ and the residual variance $\tilde\beta_{s|t}$;
# 4. $x_t$ drawn with `sample_marginal` from a 2-D mixture has the mean and covariance the forward process predicts.

# %%
import os
import pathlib
import sys

import matplotlib.pyplot as plt
import mpmath
import numpy as np

try:
    import theory
except ImportError:  # Jupyter started in notebooks/: theory/ sits in the repository root beside analytic_dpm/
    sys.path.insert(0, str(next(p for p in (pathlib.Path.cwd(), *pathlib.Path.cwd().parents)
                                if (p / "theory" / "registry.py").is_file())))
    import theory
from theory.render import show

import analytic_dpm as adpm
from analytic_dpm import toy


show("forward-marginals")
show("posterior", "posterior-mean-coefficients", "ddpm-posterior-mean-coefficients", "ddim-mean-form")

# %% tags=["parameters"]
SIZE = os.environ.get("ADPM_NB_SIZE", "full")  # "small" (the test suite) or "full"
if SIZE not in ("small", "full"):
    raise ValueError(f"ADPM_NB_SIZE must be 'small' or 'full'; got {SIZE!r}.")
SMALL = SIZE == "small"
N = 1000  # diffusion steps of the linear and cosine schedules
DIM = 16 if SMALL else 64  # dimension of the toy Gaussian x_0
NUM = 2000 if SMALL else 20000  # Monte Carlo draws of x_0
NUM_MIX = 4000 if SMALL else 40000  # draws from the 2-D mixture
Z_TOL = 5.0  # a Monte Carlo check passes when |estimate − exact| < Z_TOL standard errors
SEED = 0

# %% [markdown]
# ## 1. Schedules and the posterior coefficients
#
# The linear (Ho et al.) and cosine (Nichol & Dhariwal) schedules. The Markov chain composes: $x_t = \sqrt{\alpha_{t|s}}
# x_s + \sqrt{\beta_{t|s}}\varepsilon'$ with $\alpha_{t|s} = \bar\alpha_t/\bar\alpha_s$ gives
# $\alpha_{t|s}\bar\beta_s + \beta_{t|s} = \bar\beta_t$ (identity `markov-marginals`).

# %%
schedules = {"linear": adpm.Schedule.linear(N), "cosine": adpm.Schedule.cosine(N)}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
n = np.arange(N + 1)
for name, sch in schedules.items():
    axes[0].plot(n, sch.alpha_bar, label=f"ᾱ_n, {name}")
    axes[0].plot(n, sch.beta_bar, "--", label=f"β̄_n, {name}")
    axes[1].semilogy(n[1:], sch.snr()[1:], label=name)
axes[0].set_xlabel("n"), axes[0].legend(), axes[0].set_title("signal and noise coefficients")
axes[1].set_xlabel("n"), axes[1].set_ylabel("ᾱ_n/β̄_n"), axes[1].legend(), axes[1].set_title("signal-to-noise ratio")
fig.tight_layout()
plt.show()

# %%
fwd, post = theory.get("forward-marginals"), theory.get("posterior")
pairs = [(0, 1), (1, 112), (100, 101), (300, 700), (889, 1000), (0, 1000)]
families = [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.5), ("ddim", 1.0)]
coef_err = 0.0  # largest relative difference library vs sympy (50-digit mpmath)


def alpha_bar_mp(sch, n):
    """ᾱ_n as an mpmath number from whichever of the library's float64 ᾱ_n, β̄_n carries more digits (1 − β̄_n
    when β̄_n is small), so that rounding the inputs does not mask a difference in the library's digits."""
    with mpmath.workdps(50):  # 1 − β̄_n must not be rounded back to 53 bits
        return 1 - mpmath.mpf(sch.beta_bar[n]) if sch.beta_bar[n] < 0.5 else mpmath.mpf(sch.alpha_bar[n])


print(f"{'schedule':8} {'(s, t)':>12} {'family':>10} {'c_0':>12} {'c_t':>12} {'λ²':>12}")
for name, sch in schedules.items():
    for s, t in pairs:
        ab_s, ab_t = alpha_bar_mp(sch, s), alpha_bar_mp(sch, t)
        composed = sch.skip_alpha(s, t) * sch.beta_bar[s] + sch.skip_beta(s, t)
        ref = float(fwd.expression("composed_variance").mp(ab_s, ab_t))
        coef_err = max(coef_err, abs(composed / sch.beta_bar[t] - 1), abs(ref / sch.beta_bar[t] - 1))
        for fam, eta in families:
            c0, ct, lam2 = (float(v) for v in adpm.posterior_coefficients(sch, s, t, fam, eta))
            # λ² stays an mpmath number: rounding it to float64 would cost digits in β̄_s − λ² when λ² ≈ β̄_s
            lam2_mp = (post.expression("beta_tilde").mp(ab_s, ab_t) if fam == "ddpm"
                       else post.expression("lambda_sq_ddim").mp(ab_s, ab_t, eta))
            c0_ref = float(post.expression("coef_x0").mp(ab_s, ab_t, lam2_mp))
            ct_ref = float(post.expression("coef_xt").mp(ab_s, ab_t, lam2_mp))
            for got, want in ((c0, c0_ref), (ct, ct_ref), (lam2, float(lam2_mp))):
                coef_err = max(coef_err, abs(got - want) / max(abs(want), 1e-300) if want else abs(got))
            if name == "linear" and eta in (0.0, 1.0):
                print(f"{name:8} {str((s, t)):>12} {fam + f' η={eta:g}':>10} {c0:12.6g} {ct:12.6g} {lam2:12.6g}")
print(f"\nlargest relative difference from the sympy expressions: {coef_err:.2e}")

# %% [markdown]
# At $s = 0$ every member has $c_0 = 1$, $c_t = 0$, $\lambda^2 = 0$: the last reverse step outputs $\hat x_0$.
# DDIM with η = 1 coincides with DDPM. The coefficients as functions of $s$ for $t = N$:

# %%
sch = schedules["linear"]
s_all = np.arange(0, N)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for fam, eta in [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.5)]:
    c0, ct, lam2 = adpm.posterior_coefficients(sch, s_all, np.full_like(s_all, N), fam, eta)
    lab = "DDPM" if fam == "ddpm" else f"DDIM η={eta:g}"
    ax.plot(s_all, c0, label=f"c_0, {lab}")
    ax.plot(s_all, ct, "--", label=f"c_t, {lab}")
ax.set_xlabel("s  (t = N)"), ax.set_title("posterior mean coefficients"), ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 2. Every λ keeps the marginals
#
# Draw $x_0$ from the toy Gaussian, $x_t \sim q(x_t \mid x_0)$ with `sample_marginal`, then
# $x_s = \tilde\mu_{s|t}(x_t, x_0) + \lambda\,\xi$ with `posterior_mean`. The residual
# $r = x_s - \sqrt{\bar\alpha_s}x_0$ must be $\mathcal N(0, \bar\beta_s)$ in every coordinate and uncorrelated with
# $x_0$, whatever λ. Each statistic is compared with its exact value in standard errors (z-scores). As a check that
# the test has power, a *wrong* sampler that uses the DDIM (η = 0) mean with the DDPM variance is run through the
# same test: its residual variance is $\bar\beta_s + \tilde\beta_{s|t}$.

# %%
data = toy.default_gaussian(DIM)
rng = np.random.default_rng(SEED)
x0 = data.sample(NUM, seed=SEED)
s, t = 300, 700


def marginal_z(x_s, s):
    """z-scores of the residual r = x_s − √ᾱ_s x_0: its mean (0), variance (β̄_s) and correlation with x_0 (0)."""
    r = (x_s - np.sqrt(sch.alpha_bar[s]) * x0).ravel()
    m = r.size
    z_mean = r.mean() / np.sqrt(sch.beta_bar[s] / m)
    z_var = (r.var() - sch.beta_bar[s]) / (sch.beta_bar[s] * np.sqrt(2.0 / m))
    xc = (x0 - x0.mean(0)).ravel()
    z_corr = np.corrcoef(r, xc)[0, 1] * np.sqrt(m)
    return z_mean, z_var, z_corr


z_family = {}
for fam, eta in families:
    x_t = adpm.sample_marginal(sch, t, x0, rng.standard_normal(x0.shape))
    lam2 = float(adpm.lambda_sq(sch, s, t, fam, eta))
    x_s = adpm.posterior_mean(sch, s, t, x_t, x0, fam, eta) + np.sqrt(lam2) * rng.standard_normal(x0.shape)
    z_family[(fam, eta)] = marginal_z(x_s, s)
x_t = adpm.sample_marginal(sch, t, x0, rng.standard_normal(x0.shape))
wrong = (adpm.posterior_mean(sch, s, t, x_t, x0, "ddim", 0.0)
         + np.sqrt(float(adpm.lambda_sq(sch, s, t, "ddpm"))) * rng.standard_normal(x0.shape))
z_wrong = marginal_z(wrong, s)
print(f"(s, t) = ({s}, {t}), {NUM} × {DIM} draws; z-scores of (mean, variance, correlation with x_0):")
for key, z in z_family.items():
    print(f"  {key[0]} η={key[1]:g}: " + ", ".join(f"{v:+6.2f}" for v in z))
print("  wrong mean (DDIM mean + DDPM noise): " + ", ".join(f"{v:+6.2f}" for v in z_wrong))

# %% [markdown]
# ## 3. The DDPM member is the Bayes posterior of the Markov chain
#
# Run the chain forward: $x_s \sim q(x_s \mid x_0)$, then
# $x_t = \sqrt{\alpha_{t|s}}x_s + \sqrt{\beta_{t|s}}\varepsilon'$. Since $(x_0, x_s, x_t)$ is jointly Gaussian
# given $x_0$, the least-squares regression of $x_s$ on $(x_0, x_t)$ estimates $E[x_s \mid x_t, x_0] = c_0 x_0 +
# c_t x_t$ and its residual variance estimates $\tilde\beta_{s|t}$ (identities `ddpm-markov-posterior-mean`,
# `ddpm-markov-posterior-variance`).

# %%
x_s = adpm.sample_marginal(sch, s, x0, rng.standard_normal(x0.shape))
x_t = np.sqrt(sch.skip_alpha(s, t)) * x_s + np.sqrt(sch.skip_beta(s, t)) * rng.standard_normal(x0.shape)
X = np.stack([x0.ravel(), x_t.ravel()], axis=1)
y = x_s.ravel()
coef, *_ = np.linalg.lstsq(X, y, rcond=None)
resid = y - X @ coef
dof = y.size - 2
res_var = resid @ resid / dof
coef_se = np.sqrt(np.diag(res_var * np.linalg.inv(X.T @ X)))
c0, ct, bt = (float(v) for v in adpm.posterior_coefficients(sch, s, t, "ddpm"))
z_reg = [(coef[0] - c0) / coef_se[0], (coef[1] - ct) / coef_se[1], (res_var - bt) / (bt * np.sqrt(2.0 / dof))]
print(f"regression  c_0 = {coef[0]:.5f} ± {coef_se[0]:.5f} (library {c0:.5f})")
print(f"            c_t = {coef[1]:.5f} ± {coef_se[1]:.5f} (library {ct:.5f})")
print(f"   residual var = {res_var:.5f}           (β̃_(s|t) = {bt:.5f})")
print("z-scores:", ", ".join(f"{z:+.2f}" for z in z_reg))

# %% [markdown]
# ## 4. Sampling $x_t$ from a 2-D mixture
#
# For any data distribution $E x_t = \sqrt{\bar\alpha_t}\,E x_0$ and $\mathrm{Cov}\,x_t = \bar\alpha_t \Sigma +
# \bar\beta_t I$. The mixture below is far from Gaussian; its noised versions drift to $\mathcal N(0, I)$.

# %%
mix = toy.default_mixture()
xm0 = mix.sample(NUM_MIX, seed=SEED + 1)
show_t = [0, 100, 250, 500, 1000]
fig, axes = plt.subplots(1, len(show_t), figsize=(3.0 * len(show_t), 3.0), sharex=True, sharey=True)
z_mix = []
for ax, tt in zip(axes, show_t):
    xt = xm0 if tt == 0 else adpm.sample_marginal(sch, tt, xm0, rng.standard_normal(xm0.shape))
    ax.plot(xt[:2000, 0], xt[:2000, 1], ".", ms=1.5, alpha=0.5)
    ax.set_title(f"x_{tt}"), ax.set_aspect("equal")
    mean_ref = np.sqrt(sch.alpha_bar[tt]) * mix.mean
    cov_ref = sch.alpha_bar[tt] * mix.cov + sch.beta_bar[tt] * np.eye(2)
    dev = xt - mean_ref
    z_mix.extend((dev.mean(0) / np.sqrt(np.diag(cov_ref) / len(xt))).tolist())
    for i in range(2):  # second moments about the exact mean, with their empirical standard errors
        for j in range(i, 2):
            prod = dev[:, i] * dev[:, j]
            z_mix.append((prod.mean() - cov_ref[i, j]) / (prod.std(ddof=1) / np.sqrt(len(xt))))
axes[0].set_xlim(-3, 3), axes[0].set_ylim(-3, 3)
fig.tight_layout()
plt.show()
print(f"largest |z| of the mixture's noised means and covariances: {np.max(np.abs(z_mix)):.2f}")

# %% [markdown]
# ## The claims, asserted

# %%
# 1. the library's coefficients are the sympy expressions (and the Markov chain composes to β̄_t)
assert coef_err < 1e-12, coef_err
# 2. every member of the λ-family keeps q(x_s | x_0) = N(√ᾱ_s x_0, β̄_s I) …
for key, z in z_family.items():
    assert max(abs(v) for v in z) < Z_TOL, (key, z)
# … and the check has power: a mean that ignores λ inflates the variance to β̄_s + β̃ and fails it
assert z_wrong[1] > Z_TOL, z_wrong
# 3. the DDPM member is the Bayes posterior of the Markov chain
assert max(abs(z) for z in z_reg) < Z_TOL, z_reg
# 4. x_t from sample_marginal has the forward process's mean and covariance (non-Gaussian data)
assert max(abs(z) for z in z_mix) < Z_TOL, z_mix
print("all claims hold")
