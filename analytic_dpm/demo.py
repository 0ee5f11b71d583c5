"""The main demo (``make demo``): Analytic-DPM on the built-in toy data, with exact ground truth.

1. The reverse variances, their Theorem 2 bounds and the handcrafted baselines along a 10-step even trajectory of the
   linear schedule (Γ exact, from the built-in Gaussian).
2. The built-in Gaussian (d = 3072, a spread spectrum of variances): for the linear and cosine schedules, every
   K and the five methods, the variational bound in bits/dim (DDPM family; undefined for DDIM with η = 0) and the
   Fréchet distance of the generated distribution, both in closed form (``toy.evaluate_exact``).
3. The built-in 2-D Gaussian mixture: Γ by Monte Carlo (``estimate_gamma`` on the exact ε*), the bound with the exact
   mean at small K (quadrature reference of E tr Cov(x_0|x_t)), and the Fréchet distance of samples drawn by the one
   sampling loop.
4. Figures like the paper's Figure 1: σ² against n (analytic estimate, β_n, β̃_n), the bound's terms per timestep,
   and the Fréchet distance against K.
"""

from __future__ import annotations

import math
import pathlib
import time
import warnings

import numpy as np

from . import toy
from .cli import format_variance_table
from .gamma import estimate_gamma
from .optimal_trajectory import optimal_trajectories
from .sampling import sample
from .schedules import Schedule
from .trajectories import even_trajectory
from .variance import METHODS

KS = (10, 25, 50, 100, 200, 1000)
KS_FAST = (10, 100)
LN2 = math.log(2.0)


def _fmt(x, digits=4):
    if x is None:
        return "—"
    if isinstance(x, float) and (abs(x) >= 1e4 or (abs(x) < 1e-3 and x != 0)):
        return f"{x:.3e}"
    return f"{x:.{digits}f}"


def _table(title: str, Ks, rows: dict) -> str:
    """rows: label -> list of values per K."""
    head = ["method"] + [f"K={k}" for k in Ks]
    body = [[lab] + [_fmt(v) for v in vals] for lab, vals in rows.items()]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    lines = [title, "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines.append("-" * len(lines[-1]))
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in body]
    return "\n".join(lines)


def _frechet_gaussian(m1, c1, m2, c2) -> float:
    """‖m1 − m2‖² + tr(C1 + C2 − 2 (C1^½ C2 C1^½)^½) for small symmetric PSD matrices (eigen-decompositions)."""
    w, v = np.linalg.eigh(c1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    w2 = np.linalg.eigvalsh(r1 @ c2 @ r1)
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.sum(np.sqrt(np.clip(w2, 0, None))))


OT_LABEL = "analytic-ddpm, OT"


def gaussian_section(data, schedules, Ks):
    """Exact bound (bits/dim) and FD for every schedule, method and K on the even trajectory, plus Analytic-DDPM on
    the optimal trajectory (the DP of Theorem 3 over the exact Γ). Returns nested dicts."""
    out = {}
    for name, sched in schedules.items():
        g = data.gamma(sched)
        ot = optimal_trajectories(sched, g, K_max=max(Ks), data_range=None, progress=False)
        bound, fd = {}, {}
        for m in METHODS + (OT_LABEL,):
            bound[m], fd[m] = [], []
            for K in Ks:
                tr = ot.trajectory(K) if m == OT_LABEL else even_trajectory(sched.N, K)
                meth = "analytic-ddpm" if m == OT_LABEL else m
                r = toy.evaluate_exact(data, sched, tr, meth, gamma=g if "analytic" in meth else None)
                bound[m].append(None if r.vb_nats_per_dim is None else r.vb_nats_per_dim / LN2)
                fd[m].append(float(r.fd))
        out[name] = {"bound": bound, "fd": fd}
    return out


MIXTURE_RANGE = (-1.0, 1.0)  #: the mixture's components lie inside [−1, 1]² (a few tail samples fall outside)
MIXTURE_ROWS = [(m, MIXTURE_RANGE) for m in METHODS] + [
    ("analytic-ddpm", None), ("analytic-ddim", None),  # the same estimates clipped by eq. (11) only
]


def _row_label(method, data_range):
    return method if data_range is not None else f"{method} (eq. 11 only)"


def mixture_section(data, schedules, Ks, num_samples, gamma_samples, bound_Ks, seed=0):
    """Γ by Monte Carlo; FD of samples from the sampling loop; bound with the exact mean at ``bound_Ks``.

    Analytic rows clip σ² into Theorem 2's bounds with the data range [−1, 1]² (eq. 12, the paper's practice); the
    extra '(eq. 11 only)' rows show what the Monte Carlo error of Γ does without the bounded-data bound.
    """
    out = {}
    for name, sched in schedules.items():
        eps = data.eps_model(sched)
        est = estimate_gamma(eps, sched, data, num_samples=gamma_samples, batch_size=4096, seed=seed, progress=False)
        gamma = est.gamma
        fd, bound = {}, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # Γ̂ > 1 from Monte Carlo error: reported below
            for m, dr in MIXTURE_ROWS:
                label = _row_label(m, dr)
                g = gamma if "analytic" in m else None
                fd[label], bound[label] = [], []
                for K in Ks:
                    if dr is None and K > max(bound_Ks):  # the unclipped rows only illustrate small K
                        fd[label].append(None)
                        continue
                    tr = even_trajectory(sched.N, K)
                    x = sample(eps, sched, tr, m, num_samples=num_samples, shape=(data.dim,), gamma=g,
                               data_range=dr, seed=seed, progress=False)
                    fd[label].append(_frechet_gaussian(data.mean, data.cov, x.mean(0), np.cov(x.T)))
                for K in bound_Ks:
                    r = toy.exact_mean_bound(data, sched, even_trajectory(sched.N, K), m, gamma=g, data_range=dr)
                    bound[label].append(None if r.vb_nats_per_dim is None else r.vb_nats_per_dim / LN2)
        # Monte Carlo floor: the FD of as many exact data samples (what a perfect sampler would score)
        floor = [
            _frechet_gaussian(data.mean, data.cov, x.mean(0), np.cov(x.T))
            for x in (data.sample(num_samples, seed=seed + 1 + i) for i in range(len(Ks)))
        ]
        fd["(exact data samples: MC floor)"] = floor
        out[name] = {"fd": fd, "bound": bound, "gamma": est, "gamma_above_1": int(np.sum(gamma[1:] > 1.0))}
    return out


def _figures(out_dir: pathlib.Path, data, schedules, gauss, Ks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    # (a) variances against n, full trajectory, like the paper's Figure 1(a)
    fig, axes = plt.subplots(1, len(schedules), figsize=(5.5 * len(schedules), 4))
    for ax, (name, sched) in zip(np.atleast_1d(axes), schedules.items()):
        tr = even_trajectory(sched.N, sched.N)
        r = toy.evaluate_exact(data, sched, tr, "analytic-ddpm")
        n = np.arange(2, sched.N + 1)
        ax.loglog(n, sched.beta[2:], label="β_n (ddpm-large)")
        ax.loglog(n, sched.beta_tilde[2:], label="β̃_n (ddpm-small)")
        ax.loglog(n, r.sigma_sq[1:], "--", label="σ*²_n (analytic, exact Γ)")
        ax.set_xlabel("timestep n")
        ax.set_ylabel("σ²_n")
        ax.set_title(f"toy Gaussian d={data.dim}, {name}")
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "variances.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # (b) bound terms per timestep, like Figure 1(b)
    fig, axes = plt.subplots(1, len(schedules), figsize=(5.5 * len(schedules), 4))
    for ax, (name, sched) in zip(np.atleast_1d(axes), schedules.items()):
        tr = even_trajectory(sched.N, sched.N)
        for m in ("ddpm-large", "ddpm-small", "analytic-ddpm"):
            r = toy.evaluate_exact(data, sched, tr, m)
            terms = r.kl_terms[1:] / LN2
            ax.loglog(tr[2:], np.clip(terms, 1e-12, None), label=f"{m}: total {r.vb_nats_per_dim / LN2:.3f} bits/dim")
        ax.set_xlabel("t (the term of the reverse step t → t−1)")
        ax.set_ylabel("E KL term (bits/dim)")
        ax.set_title(f"bound terms, K = N, {name}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "bound_terms.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # (c) Fréchet distance against K
    fig, axes = plt.subplots(1, len(schedules), figsize=(5.5 * len(schedules), 4))
    for ax, name in zip(np.atleast_1d(axes), schedules):
        for m in gauss[name]["fd"]:
            ax.loglog(Ks, np.clip(gauss[name]["fd"][m], 1e-12, None), "o-", label=m)
        ax.set_xlabel("K (sampling steps)")
        ax.set_ylabel("Fréchet distance (exact)")
        ax.set_title(f"toy Gaussian d={data.dim}, {name}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "fd_vs_K.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def run_demo(out_dir="demo_out", fast: bool = False) -> int:
    t0 = time.perf_counter()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    Ks = KS_FAST if fast else KS
    N = 1000
    schedules = {"linear": Schedule.linear(N), "cosine": Schedule.cosine(N)}
    gdata = toy.default_gaussian(dim=256 if fast else 3072)
    mdata = toy.default_mixture()
    report = []

    def emit(text=""):
        print(text, flush=True)
        report.append(text)

    emit("Analytic-DPM demo on toy data with a known score")
    emit(f"Gaussian: {gdata}; mixture: {mdata}")
    emit()
    emit("1. Reverse variances along the 10-step even trajectory of the linear schedule (N = 1000)")
    emit("   Γ exact for the toy Gaussian; unbounded data, so the upper bound is eq. (11)")
    sched = schedules["linear"]
    emit(format_variance_table(sched, even_trajectory(N, 10), gamma=gdata.gamma(sched), data_range=None))
    emit()

    gauss = gaussian_section(gdata, schedules, Ks)
    for name in schedules:
        emit(f"2. Toy Gaussian (d = {gdata.dim}), {name} schedule, even trajectory (OT: the optimal trajectory of "
             "Theorem 3's DP) — exact, no sampling")
        emit(_table("   variational bound (bits/dim; decoder term excluded; undefined (—) for DDIM, η = 0)", Ks,
                    gauss[name]["bound"]))
        emit(_table("   Fréchet distance between the data and the generated distribution (closed form)", Ks,
                    gauss[name]["fd"]))
        emit()

    num_samples = 1000 if fast else 2000
    gamma_samples = 300 if fast else 1000
    bound_Ks = tuple(k for k in Ks if k <= 100)
    mix = mixture_section(mdata, schedules, Ks, num_samples, gamma_samples, bound_Ks)
    for name in schedules:
        est = mix[name]["gamma"]
        emit(f"3. Toy Gaussian mixture (d = 2), {name} schedule: Γ by Monte Carlo (M = {est.num_samples} per "
             f"timestep, largest standard error {np.nanmax(est.stderr[1:]):.1e}; Γ̂ > 1 at "
             f"{mix[name]['gamma_above_1']} of {sched.N} timesteps, clipped to 1)")
        emit("   analytic rows clip σ² with the data range [-1, 1]² (eq. 12); '(eq. 11 only)' rows do not (shown for "
             f"K <= {max(bound_Ks)})")
        emit(_table("   variational bound with the exact mean (bits/dim)", bound_Ks, mix[name]["bound"]))
        emit(_table(f"   Fréchet distance of {num_samples} samples from the sampling loop (Monte Carlo)", Ks,
                    mix[name]["fd"]))
        emit()

    paths = _figures(out_dir, gdata, schedules, gauss, Ks)
    (out_dir / "tables.txt").write_text("\n".join(report) + "\n")
    emit("figures: " + ", ".join(str(p) for p in paths) + f"; tables: {out_dir / 'tables.txt'}")
    emit(f"wall time {time.perf_counter() - t0:.1f} s")
    return 0
