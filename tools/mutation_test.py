"""A small mutation test of the core formulas, run on demand: does the test suite notice a deliberate bug?

Each mutant replaces one exact snippet of ``analytic_dpm`` with a plausible mistake, in a temporary copy of the
repository, and runs the named test files there; the mutant is *killed* when they fail, *survived* otherwise. A
mutant whose snippet is no longer found is reported as *stale* (the code moved: update the snippet). Exit status 0
when every mutant is killed.

Usage (from the repository root; about 2–5 minutes on 2 cores):

    python tools/mutation_test.py            # all mutants
    python tools/mutation_test.py --list     # what they are
    python tools/mutation_test.py pixel-clip-sqrt cost-clip-r
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name: (file, original, mutated, test files, what the bug is)
MUTANTS = {
    "pixel-clip-sqrt": (
        "analytic_dpm/sampling.py", "sigma_sq.shape[0] >= 2 and sigma_sq[1] > threshold",
        "sigma_sq.shape[0] >= 2 and np.sqrt(sigma_sq[1]) > threshold", ["tests/test_sampling.py"],
        "the σ₂ pixel clip compares √σ² instead of σ² with the threshold"),
    "cost-clip-r": (
        "analytic_dpm/optimal_trajectory.py", "out[1:] = ((b - a) / 2.0) ** 2 * schedule.alpha_bar[1:]",
        "out[1:] = ((b - a) / 2.0) * schedule.alpha_bar[1:]", ["tests/test_optimal_trajectory.py"],
        "eq. 12 in the cost clip with r instead of r²"),
    "eq12-r": (
        "analytic_dpm/variance.py", "ub12 = lam2 + g2 * r**2 * schedule.alpha_bar[t]",
        "ub12 = lam2 + g2 * r * schedule.alpha_bar[t]", ["tests/test_variance.py", "tests/test_theory.py"],
        "Theorem 2's eq. 12 with r instead of r²"),
    "residual-gap-not-squared": (
        "analytic_dpm/variance.py", "return lam2 + gap(schedule, s, t, family, eta) ** 2 * np.asarray(residual_t",
        "return lam2 + gap(schedule, s, t, family, eta) * np.asarray(residual_t", ["tests/test_residual.py"],
        "the residual variance λ² + g·R instead of λ² + g²R"),
    "control-variate-sign": (
        "analytic_dpm/gamma.py", 'np.einsum("ij,ij->i", diff, z + e)', 'np.einsum("ij,ij->i", diff, z - e)',
        ["tests/test_residual.py"], "the control variate ⟨ε − ε̂, ε − ε̂⟩ instead of ⟨ε − ε̂, ε + ε̂⟩"),
    "imperfect-residual-unsquared": (
        "analytic_dpm/toy/imperfect.py", "return (one_minus_gamma + (1.0 - scale) ** 2 * gamma",
        "return (one_minus_gamma + (1.0 - scale) * gamma", ["tests/test_residual.py"],
        "the exact residual of a scaled ε* with (1 − a) instead of (1 − a)²"),
    "gap-numerator-lambda": (
        "analytic_dpm/posterior.py", "num = b_ts / a_ts + lam2", "num = b_ts / a_ts + 0.5 * lam2",
        ["tests/test_exact_eval.py"], "a wrong gap g (so a wrong DDPM mean coefficient): the exact evaluator alone, "
        "with its brute-force chain built from independently derived coefficients"),
    "cost-beta-bar-off-by-one": (
        "analytic_dpm/optimal_trajectory.py", "blk /= bb[None, 1:t1 - 1]", "blk /= bb[None, 2:t1]",
        ["tests/test_optimal_trajectory.py"], "Theorem 3's cost divides by β̄_{s+1} instead of β̄_s"),
}

_COPY = ("analytic_dpm", "tests", "theory", "paper", "notebooks", "results", "pyproject.toml")


def run_mutant(name: str, timeout: int, baseline: bool = False) -> str:
    """'killed', 'survived' or 'stale'; with ``baseline`` the copy is left unmutated ('pass' or 'FAIL')."""
    path, old, new, tests, _ = MUTANTS[name]
    src = (ROOT / path).read_text()
    if src.count(old) != 1:
        return "stale"
    if baseline:
        new = old
    with tempfile.TemporaryDirectory(prefix=f"mutant-{name}-") as tmp:
        tmp = Path(tmp)
        for item in _COPY:
            p = ROOT / item
            if p.is_dir():
                shutil.copytree(p, tmp / item, ignore=shutil.ignore_patterns("__pycache__", "samples", "*.npy"))
            elif p.exists():
                shutil.copy2(p, tmp / item)
        (tmp / path).write_text(src.replace(old, new))
        check = subprocess.run([sys.executable, "-c", "import analytic_dpm; print(analytic_dpm.__file__)"],
                               cwd=tmp, capture_output=True, text=True)
        if not check.stdout.strip().startswith(str(tmp)):
            raise RuntimeError(f"the copy's analytic_dpm is not the one imported ({check.stdout.strip()!r}); run "
                               "from a checkout whose package is installed in editable mode or not at all.")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=tmp, capture_output=True, text=True, timeout=timeout,
                              env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp)})
        if baseline:
            return "pass" if proc.returncode == 0 else "FAIL"
        return "killed" if proc.returncode != 0 else "survived"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per mutant's test run")
    a = ap.parse_args(argv)
    if a.list:
        for k, v in MUTANTS.items():
            print(f"{k:28s} {v[0]}: {v[4]}  [{' '.join(v[3])}]")
        return 0
    names = a.names or list(MUTANTS)
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        ap.error(f"unknown mutant(s) {unknown}; see --list")
    # first the unmutated copy, once per set of test files: a mutant counts as killed only if its tests pass without it
    seen = {}
    for n in names:
        key = tuple(MUTANTS[n][3])
        if key not in seen:
            seen[key] = run_mutant(n, a.timeout, baseline=True)
            print(f"baseline {' '.join(key)}: {seen[key]}", flush=True)
    if any(v == "FAIL" for v in seen.values()):
        print("the unmutated copy fails its tests: fix that first", file=sys.stderr)
        return 2
    results = {}
    for n in names:
        t0 = time.perf_counter()
        results[n] = run_mutant(n, a.timeout)
        print(f"{n:28s} {results[n]:8s} ({time.perf_counter() - t0:.0f} s)", flush=True)
    killed = sum(v == "killed" for v in results.values())
    print(f"\n{killed} of {len(results)} mutants killed"
          + "".join(f"; {k} {v}" for k, v in results.items() if v != "killed"))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
