"""A variance-exploding (VE) process beside VP (issue 16): Analytic-DPM on x_n = x_0 + σ_n ε, exact on the toy
Gaussian.

The VE process rescales to VP: y_n = x_n/√(1 + σ_n²) has ᾱ_n = 1/(1 + σ_n²) and the same ε
(``analytic_dpm.ve.ScaledProcess``), so Analytic-DPM's σ*² on VE is the VP one times r_s² = 1 + σ_s². This target
checks that on SMLD's geometric noise levels σ_n = 0.01·5000^((n−1)/(N−1)) (σ_max = 50, Song et al.'s CIFAR-10 VE),
N = 1000, even trajectories, with two independent computations:

* **σ*² from the VE joint Gaussian**, never leaving VE coordinates and never calling the library: for data
  N(m, diag λ_i), (x_s, x_t) is jointly Gaussian, Var(x_s|x_t) = (λ_i + σ_s²)(σ_t² − σ_s²)/(λ_i + σ_t²), and
  Theorem 1's σ*²_{s|t} is its mean over i (DDPM family: the Markov reverse q(x_s|x_t)). Against
  ``ScaledProcess.sigma_sq_opt`` (r_s² × ``variance.sigma_sq_opt`` on the VP schedule with the exact VP Γ).
* **The generated distribution of the VE sampler**, propagated in VE coordinates (x̂_0 = m + λ/(λ + σ_t²)(x_t − m),
  mean x̂_0 + (σ_s²/σ_t²)(x_t − x̂_0), start N(0, (1 + σ²_{τ_K}) I), i.e. VP's N(0, I)), against
  ``toy.evaluate_exact`` on the VP schedule: the Fréchet distances agree (r_0 = 1, so the outputs are the same
  distribution), for analytic-DPM and for SMLD's ancestral sampler σ² = σ_s²(σ_t² − σ_s²)/σ_t² (= r_s²β̃, i.e.
  'ddpm-small' on the VP schedule).

Full mode: d = 3072, K ∈ {10, 25, 50, 100, 200, 400, 1000}: about 2 s on 2 CPU cores.
Fast mode: d = 64, K ∈ {10, 25, 100}: well under a second.
"""

from __future__ import annotations

import time

import numpy as np

from analytic_dpm import toy
from analytic_dpm.trajectories import even_trajectory, transitions
from analytic_dpm.ve import ScaledProcess

from . import _toy as T
from ._common import fmt, markdown_table, write_csv, write_sidecar

SIGMA_MIN, SIGMA_MAX = 0.01, 50.0


def settings(fast: bool) -> dict:
    return {**T.sizes(fast), "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "fast": fast}


def process(N: int = T.N) -> ScaledProcess:
    return ScaledProcess.geometric_ve(N, SIGMA_MIN, SIGMA_MAX)


def ve_sigma_sq_direct(eigvals, sig_s, sig_t) -> np.ndarray:
    """Theorem 1's σ*²_{s|t} in VE coordinates from the joint Gaussian: mean_i (λ_i + σ_s²)(σ_t² − σ_s²)/(λ_i + σ_t²)
    (arrays sig_s, sig_t of noise levels, one per transition)."""
    lam = np.asarray(eigvals, dtype=np.float64)[None, :]
    ss, st = np.asarray(sig_s, dtype=np.float64)[:, None] ** 2, np.asarray(sig_t, dtype=np.float64)[:, None] ** 2
    return np.mean((lam + ss) * (st - ss) / (lam + st), axis=1)


def ve_chain_fd(data, proc: ScaledProcess, trajectory, sigma_sq) -> float:
    """Exact FD of the VE-coordinate sampler with per-transition variances ``sigma_sq`` (entry k−1 for (τ_{k−1}, τ_k);
    none is added on the last step). Diagonal Gaussian data only; independent of the library's sampler code."""
    if not data.is_diagonal:
        raise ValueError("ve_chain_fd needs diagonal GaussianData (default_gaussian without rotate).")
    lam, mu = data.eigvals, data.mean_eig
    traj = np.asarray(trajectory)
    s, t = transitions(traj)
    sig = proc.noise_std
    mean = np.zeros(data.dim)
    var = np.full(data.dim, 1.0 + sig[traj[-1]] ** 2)
    for k in range(t.size - 1, -1, -1):
        st2, ss2 = sig[t[k]] ** 2, sig[s[k]] ** 2
        w = lam / (lam + st2)  # x̂_0 = m + w (x_t − m)
        rho = ss2 / st2
        A = w + rho * (1.0 - w)
        B = (1.0 - w) * (1.0 - rho) * mu
        mean, var = A * mean + B, A * A * var
        if s[k] > 0:
            var = var + sigma_sq[k]
    return toy.frechet_distance_same_basis(mu, lam, mean, var)


def compute(fast: bool) -> list[list]:
    z = settings(fast)
    proc, data = process(), T.data(z["dim"])
    vp = proc.schedule
    sig = proc.noise_std
    rows = []
    for K in z["Ks"]:
        tr = even_trajectory(vp.N, K)
        s, t = transitions(tr)
        direct = ve_sigma_sq_direct(data.eigvals, sig[s], sig[t])
        lib = proc.sigma_sq_opt(s, t, data.gamma_at(vp, t))
        inner = s >= 1
        rel = float(np.max(np.abs(lib[inner] - direct[inner]) / direct[inner])) if inner.any() else 0.0
        ra = toy.evaluate_exact(data, vp, tr, "analytic-ddpm")
        rs = toy.evaluate_exact(data, vp, tr, "ddpm-small")
        smld = sig[s] ** 2 * (sig[t] ** 2 - sig[s] ** 2) / sig[t] ** 2
        fd_a, fd_s = ve_chain_fd(data, proc, tr, direct), ve_chain_fd(data, proc, tr, smld)
        k2 = K - 1  # the first reverse transition (τ_{K−1}, τ_K), where σ_s is largest
        rows.append([K, rel, float(direct[k2]), float(ra.sigma_sq[k2]), float(proc.vp_factor[s[k2]] ** 2),
                     float(ra.fd), fd_a, float(rs.fd), fd_s, ra.vb_bits_per_dim])
    return rows


HEADER = ["K", "max_rel_diff_sigma_sq", "ve_sigma_sq_first", "vp_sigma_sq_first", "r_s_sq_first",
          "fd_analytic_vp_library",
          "fd_analytic_ve_chain", "fd_smld_vp_library", "fd_smld_ve_chain", "bound_analytic_bits_per_dim"]


def run(out_dir, fast: bool = False):
    t0 = time.perf_counter()
    z = settings(fast)
    rows = compute(fast)
    csv_path = write_csv(out_dir / "ve_process.csv", HEADER, rows)
    body = [[r[0], f"{r[1]:.1e}", fmt(r[2]), fmt(r[3]), fmt(r[4]), fmt(r[5]), fmt(r[6]), fmt(r[7]), fmt(r[8]),
             fmt(r[9])] for r in rows]
    md = [f"# VE process beside VP: Analytic-DPM on x_n = x_0 + σ_n ε (σ_n geometric {SIGMA_MIN:g} … {SIGMA_MAX:g}, "
          f"N = {z['N']}), toy Gaussian d = {z['dim']}, ET\n\n",
          "VE → VP: y_n = x_n/√(1 + σ_n²), ᾱ_n = 1/(1 + σ_n²), same ε, so σ*²(VE) = (1 + σ_s²)·σ*²(VP). "
          "'max rel diff': σ*² from the VE joint Gaussian (no library) against ScaledProcess.sigma_sq_opt, over "
          "every transition with s >= 1. σ*² first: the first reverse transition (τ_{K−1}, τ_K), in VE units, in VP "
          "units, and the factor r_s² = 1 + σ_s² between them. FD: the VE-coordinate chain (independent "
          "propagation) against toy.evaluate_exact on "
          "the VP schedule; SMLD = the ancestral sampler σ² = σ_s²(σ_t² − σ_s²)/σ_t². The bound (bits/dim, "
          "decoder excluded) is the same in both coordinates: every KL is invariant under x ↦ r_n x.\n\n",
          markdown_table(["K", "max rel diff σ*²", "σ*² first VE", "σ*² first VP", "r_s²", "FD analytic (VP lib)",
                          "FD analytic (VE chain)", "FD SMLD (VP lib)", "FD SMLD (VE chain)", "bound analytic"], body)]
    md_path = out_dir / "ve_process.md"
    md_path.write_text("".join(md))
    for p in (csv_path, md_path):
        write_sidecar(p, {**z, "process": repr(process())}, seeds=None, started=t0)
    return [csv_path, md_path]
