"""Table 5 analogue with standard errors and the measured O(1/M) rate of the bound's bias (issue 16)."""

from __future__ import annotations

import csv

import numpy as np
import pytest


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    from paper import table5

    out = tmp_path_factory.mktemp("t5")
    paths = table5.run(out, fast=True)
    return out, paths


def test_full_mode_uses_20_seeds_fast_stays_small():
    from paper import table5

    assert table5.settings(False)["seeds"] == list(range(20))
    assert len(table5.settings(True)["seeds"]) == 5


def test_table_has_stderr_and_bias_columns(t5):
    out, paths = t5
    assert {p.name for p in paths} == {"table5.csv", "table5_rate.csv", "table5.md", "table5.tex"}
    for p in paths:
        assert p.exists() and p.with_suffix(p.suffix + ".json").exists()
    rows = _csv(out / "table5.csv")
    assert {"mean", "std", "stderr", "bias", "n_seeds"} <= set(rows[0])
    for r in rows:
        n = int(r["n_seeds"])
        if r["M"] == "exact":
            assert n == 1 and float(r["stderr"]) == 0.0 and float(r["bias"]) == 0.0
        else:
            assert n == 5
            assert float(r["stderr"]) == pytest.approx(float(r["std"]) / np.sqrt(n), rel=1e-12)
    md = (out / "table5.md").read_text()
    assert "standard error" in md and "(std " in md and "slope" in md


def test_bound_excess_is_nonnegative_and_slope_negative(t5):
    """σ*² from the exact Γ minimizes every term of the bound (Theorem 1, exact mean), so any Γ̂ gives a bound >= the
    exact one, seed by seed; the bias then falls with M (fitted slope < 0)."""
    from paper import table5

    out, _ = t5
    res = table5.compute(out, fast=True)  # from the cache
    key = ("bound", "analytic-ddpm")
    for name in ("linear", "cosine"):
        exact = res[name]["exact"][key][0]
        for M, v in res[name].items():
            assert np.all(v[key] >= exact - 1e-12), (name, M)
    rate = {r["schedule"]: r for r in _csv(out / "table5_rate.csv")}
    lin = rate["linear"]
    assert float(lin["slope"]) < 0
    assert float(lin["slope"]) + 3 * float(lin["slope_stderr_bootstrap"]) < 0  # negative beyond the noise
    assert np.isfinite(float(lin["slope_stderr_regression"])) and int(lin["n_boot"]) > 1000


def test_bias_rate_recovers_known_power_and_matches_scipy():
    from scipy import stats

    from paper.table5 import bias_rate

    rng = np.random.default_rng(3)
    Ms = [1, 10, 100, 1000]
    exact = 2.0
    per_M = {M: exact + 0.5 / M * (1 + 0.1 * rng.standard_normal(20)) for M in Ms}
    r = bias_rate(per_M, exact, n_boot=500)
    ref = stats.linregress(np.log(Ms), np.log(np.abs([per_M[M].mean() - exact for M in Ms])))
    assert r["slope"] == pytest.approx(ref.slope, rel=1e-12)
    assert r["slope_stderr_regression"] == pytest.approx(ref.stderr, rel=1e-10)
    assert r["slope"] == pytest.approx(-1.0, abs=0.05)
    assert 0 < r["slope_stderr_bootstrap"] < 0.05
    # a 1/M² bias is told apart
    r2 = bias_rate({M: exact + 0.5 / M**2 * (1 + 0.1 * rng.standard_normal(20)) for M in Ms}, exact, n_boot=200)
    assert r2["slope"] == pytest.approx(-2.0, abs=0.05)
