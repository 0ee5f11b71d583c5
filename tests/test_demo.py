"""The demo and the command line: the tables are produced and agree with the library."""

import math

import numpy as np
import pytest

import analytic_dpm as adpm
from analytic_dpm import toy
from analytic_dpm.cli import main
from analytic_dpm.demo import gaussian_section, run_demo


def test_gaussian_section_matches_library():
    data = toy.default_gaussian(dim=16)
    sched = adpm.Schedule.linear(100)
    out = gaussian_section(data, {"linear": sched}, (5, 100))["linear"]
    r = toy.evaluate_exact(data, sched, adpm.even_trajectory(100, 5), "analytic-ddpm")
    assert out["bound"]["analytic-ddpm"][0] == pytest.approx(r.vb_nats_per_dim / math.log(2), rel=1e-12)
    assert out["bound"]["ddim"] == [None, None]
    for k in range(2):  # optimality of the analytic variance (exact Γ)
        assert out["bound"]["analytic-ddpm"][k] <= min(out["bound"]["ddpm-large"][k], out["bound"]["ddpm-small"][k])


def test_cli_variances_and_trajectory(capsys):
    assert main(["trajectory", "--N", "1000", "--K", "10"]) == 0
    assert capsys.readouterr().out.split() == [str(x) for x in adpm.even_trajectory(1000, 10)]
    assert main(["variances", "--K", "10"]) == 0
    out = capsys.readouterr().out
    assert "9.9931e-05" in out and "1.4457e-01" in out  # Table 7: LS, K = 10, the (1, 112) transition


@pytest.mark.filterwarnings("ignore:gamma lies outside")
def test_cli_variances_with_gamma_file(tmp_path, capsys):
    data = toy.default_gaussian(dim=8)
    sched = adpm.Schedule.linear(1000)
    est = adpm.estimate_gamma(data.eps_model(sched), sched, data, timesteps=adpm.even_trajectory(1000, 10)[1:],
                              num_samples=64, progress=False)
    path = est.save(tmp_path / "gamma.npz")
    assert main(["variances", "--K", "10", "--gamma", str(path), "--unbounded"]) == 0
    assert "analytic-ddpm" in capsys.readouterr().out


def test_cli_reports_errors_without_traceback(capsys):
    assert main(["trajectory", "--N", "10", "--K", "11"]) == 2
    assert "K must satisfy 1 <= K <= N = 10" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs(tmp_path):
    assert run_demo(out_dir=tmp_path, fast=True) == 0
    for f in ("variances.png", "bound_terms.png", "fd_vs_K.png", "tables.txt"):
        assert (tmp_path / f).stat().st_size > 0
