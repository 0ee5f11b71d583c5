"""Benchmark: how many network evaluations per timestep each estimator needs, plain Γ̂ versus the direct estimates.

For every setting and timestep t ∈ {N/10, N/2, 9N/10, N} one pilot run of :func:`analytic_dpm.gamma.estimate_gamma`
(M samples, one ε per sample) gives the per-sample standard deviation of the three statistics it averages:

* plain:   1 − Γ̂_t = 1 − mean ‖ε̂‖²/d               (the paper's estimate; its error is Γ̂'s)
* direct:  (1 − Γ)^_t = mean ⟨ε − ε̂, ε + ε̂⟩/d     (control variate, E‖ε‖²/d = 1 exactly)
* R:       R̂_t = mean ‖ε − ε̂‖²/d                   (the residual of the network's own mean)

The evaluations needed for a 1% relative error are M₁% = (sd / (0.01·|value|))². The value is exact on the toy
Gaussian (1 − Γ without cancellation, R in closed form); for the networks it is the pilot's own direct (or R)
estimate, whose error is small where it matters. The ratio plain/direct (and plain/R) is the saving. The paper used
M = 50,000 per timestep on CIFAR10 (5·10⁷ network calls); "for the paper's accuracy" gives the evaluations the
direct estimators need to match the plain estimate at M = 50,000 (= 50,000 / ratio): ≤ 500 is the target of 1/100.

Settings: the toy Gaussian at d = 3072 (``default_gaussian``: variances log-spaced 1e-4 … 0.25) with the exact ε*
and with ImperfectEps(ε*, scale = 1.05, bias = 0.01), and the committed digits and Fashion-MNIST networks
(``results/*/model.pt``) on their training images, linear schedule, N = 1000.

Usage (from the repository root; about 2 minutes on 2 cores):

    python benchmarks/bench_gamma_variance.py --json results/variance_reduction.json --markdown results/variance_reduction.md
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import analytic_dpm as adpm  # noqa: E402
from analytic_dpm import toy  # noqa: E402
from analytic_dpm.gamma import estimate_gamma  # noqa: E402

PAPER_M = 50_000


def _row(name, t, value_omg, value_r, est, M, exact):
    sd = {k: getattr(est, attr)[t] * math.sqrt(M) for k, attr in
          (("plain", "stderr"), ("direct", "one_minus_gamma_stderr"), ("residual", "residual_stderr"))}
    need = {"plain": (sd["plain"] / (0.01 * abs(value_omg))) ** 2,
            "direct": (sd["direct"] / (0.01 * abs(value_omg))) ** 2,
            "residual": (sd["residual"] / (0.01 * abs(value_r))) ** 2}
    return {
        "setting": name, "t": int(t), "value_source": "exact" if exact else "pilot estimate",
        "one_minus_gamma": float(value_omg), "residual": float(value_r),
        "estimates": {"one_minus_gamma_plain": float(1.0 - est.gamma[t]), "one_minus_gamma_direct":
                      float(est.one_minus_gamma[t]), "residual": float(est.residual[t])},
        "per_sample_sd": {k: float(v) for k, v in sd.items()},
        "evals_for_1pct": {k: float(v) for k, v in need.items()},
        "ratio_plain_over_direct": float(need["plain"] / need["direct"]),
        "ratio_plain_over_residual_var": float((sd["plain"] / sd["residual"]) ** 2),
        "direct_evals_for_paper_accuracy": float(PAPER_M * (sd["direct"] / sd["plain"]) ** 2),
        "residual_evals_for_paper_accuracy_relative": float(PAPER_M * need["residual"] / need["plain"]),
        "pilot_M": M,
    }


def toy_rows(M, seed):
    s = adpm.Schedule.linear(1000)
    data = toy.default_gaussian(dim=3072)
    ts = [100, 500, 900, 1000]
    rows = []
    for name, model, omg, R in (
        ("toy Gaussian d=3072, exact eps*", data.eps_model(s), data.one_minus_gamma(s), data.one_minus_gamma(s)),
        ("toy Gaussian d=3072, ImperfectEps(1.05, 0.01)", toy.ImperfectEps(data.eps_model(s), 1.05, 0.01),
         toy.exact_one_minus_gamma_of_imperfect(data, s, 1.05, 0.01),
         toy.exact_residual_of_imperfect(data, s, 1.05, 0.01)),
    ):
        est = estimate_gamma(model, s, data, timesteps=ts, num_samples=M, seed=seed, progress=False)
        rows += [_row(name, t, omg[t], R[t], est, M, True) for t in ts]
    return rows


def network_rows(M, seed):
    import torch

    from analytic_dpm.data import box_downsample, load_digits, load_fashion_mnist, split_dataset
    from analytic_dpm.models import TorchEpsModel, load_model

    torch.set_num_threads(1)
    s = adpm.Schedule.linear(1000)
    ts = [100, 500, 900, 1000]
    rows = []
    sets = [("digits network (results/digits)", ROOT / "results/digits/model.pt",
             lambda: split_dataset(load_digits(), test_fraction=0.2, seed=0)[0])]
    try:
        load_fashion_mnist("train")
        sets.append(("Fashion-MNIST 14x14 network (results/fashion-mnist-cpu)",
                     ROOT / "results/fashion-mnist-cpu/model.pt",
                     lambda: box_downsample(load_fashion_mnist("train"), 2)))
    except Exception as exc:  # the Debian package is not installed: say so, keep going
        print(f"Fashion-MNIST skipped: {exc}", file=sys.stderr)
    for name, path, loader in sets:
        net = load_model(path)
        eps = TorchEpsModel(net, timestep_map="n", schedule=s, batch_size=256)
        images = loader().images[:M]
        est = estimate_gamma(eps, s, images, timesteps=ts, num_samples=M, batch_size=256, seed=seed, progress=False)
        for t in ts:
            rows.append(_row(name, t, est.one_minus_gamma[t], est.residual[t], est, M, False))
    return rows


def markdown(rows) -> str:
    head = ("| setting | t | 1 − Γ_t | R_t | evals for 1%: plain 1 − Γ̂ | direct 1 − Γ̂ | R̂ | plain/direct | plain/R̂ | "
            "direct evals for the paper's M = 50k accuracy |\n|---|---|---|---|---|---|---|---|---|---|")
    out = [head]
    for r in rows:
        e = r["evals_for_1pct"]
        out.append(f"| {r['setting']} | {r['t']} | {r['one_minus_gamma']:.3g} | {r['residual']:.3g} | "
                   f"{e['plain']:.3g} | {e['direct']:.3g} | {e['residual']:.3g} | "
                   f"{r['ratio_plain_over_direct']:.3g} | {e['plain'] / e['residual']:.3g} | "
                   f"{r['direct_evals_for_paper_accuracy']:.3g} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--toy-samples", type=int, default=400, help="pilot M on the toy (default 400)")
    ap.add_argument("--net-samples", type=int, default=1024, help="pilot M on the networks (default 1024)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-networks", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = toy_rows(a.toy_samples, a.seed)
    if not a.no_networks:
        rows += network_rows(a.net_samples, a.seed)
    md = markdown(rows)
    print(md)
    meta = {"command": "python benchmarks/bench_gamma_variance.py " + " ".join(argv or sys.argv[1:]),
            "wall_s": time.perf_counter() - t0, "python": platform.python_version(), "numpy": np.__version__,
            "seed": a.seed, "toy_samples": a.toy_samples, "net_samples": a.net_samples}
    if a.json:
        Path(a.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    if a.markdown:
        Path(a.markdown).write_text("# Evaluations per timestep for 1% relative error (bench_gamma_variance.py)\n\n"
                                    + md + f"\nCommand: `{meta['command']}`; wall time {meta['wall_s']:.0f} s.\n")


if __name__ == "__main__":
    main()
