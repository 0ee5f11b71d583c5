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


def _imperfect_estimate(tmp_path, N, timesteps=None, bias=0.02):
    """A saved GammaEstimate (with R̂ and the direct 1 − Γ̂) of a biased, mis-scaled ε-model on toy data, and the same
    Γ̂ saved the way older versions did (no residual, no one_minus_gamma)."""
    data = toy.default_gaussian(dim=8)
    sched = adpm.Schedule.linear(N)
    model = toy.ImperfectEps(data.eps_model(sched), scale=1.1, bias=bias)
    est = adpm.estimate_gamma(model, sched, data, timesteps=timesteps, num_samples=64, progress=False)
    old = adpm.GammaEstimate(gamma=est.gamma, stderr=est.stderr, num_samples=est.num_samples, timesteps=est.timesteps,
                             config={})
    return sched, est, est.save(tmp_path / "gamma.npz"), old.save(tmp_path / "old.npz")


@pytest.mark.filterwarnings("ignore:gamma lies outside")
def test_cli_variances_with_residual_methods(tmp_path, capsys):
    """A --gamma file that carries R̂ adds the residual-ddpm / residual-ddim columns, σ² = λ² + g²R_t from
    reverse_variances, marked '!' (not clipped) where they leave Theorem 2's bounds; an old file says why they are
    missing."""
    traj = adpm.even_trajectory(1000, 10)
    sched, est, path, old = _imperfect_estimate(tmp_path, 1000, traj[1:], bias=1.5)  # R > 2: above eq. 11
    assert main(["variances", "--K", "10", "--gamma", str(path), "--unbounded", "--eta", "0.5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[1].split()
    assert header[header.index("residual-ddpm") - 1] == "R_t" and header[-1] == "residual-ddim"
    r = adpm.reverse_variances(sched, traj, "residual-ddpm", residual=est.residual, data_range=None)
    ri = adpm.reverse_variances(sched, traj, "residual-ddim", residual=est.residual, eta=0.5, data_range=None)
    assert r.outside_bounds[1:].all() and not r.clipped.any()
    for k in range(10):
        row = lines[3 + k].split()
        assert row[8] == f"{est.residual[traj[k + 1]]:.4e}"
        assert row[9] == f"{r.sigma_sq[k]:.4e}" + ("!" if r.outside_bounds[k] else "")
        assert row[-1] == f"{ri.sigma_sq[k]:.4e}" + ("!" if ri.outside_bounds[k] else "")
    assert "! = the residual variance" in out
    assert main(["variances", "--K", "10", "--gamma", str(old), "--unbounded"]) == 0
    out = capsys.readouterr().out
    assert "residual-ddpm" not in out.splitlines()[1] and "analytic-ddpm" in out
    assert "has no residual R̂: saved by an older version" in out


@pytest.mark.filterwarnings("ignore:gamma lies outside", "ignore:one_minus_gamma lies outside")
def test_cli_optimal_trajectory_from_each_statistic(tmp_path, capsys):
    """``trajectory --trajectory optimal --gamma FILE --statistic S`` prints optimal_trajectory on that field of the
    file; an old file without the field, and options that do nothing, are clear errors (exit 2)."""
    sched, est, path, old = _imperfect_estimate(tmp_path, 100)
    base = ["trajectory", "--N", "100", "--K", "6", "--trajectory", "optimal", "--gamma", str(path)]
    want = {
        "gamma": adpm.optimal_trajectory(sched, est.gamma, 6),
        "one_minus_gamma": adpm.optimal_trajectory(sched, None, 6, one_minus_gamma=est.one_minus_gamma),
        "residual": adpm.optimal_trajectory(sched, None, 6, residual=est.residual),
    }
    printed = {}
    for stat, ot in want.items():
        assert main(base + ["--statistic", stat]) == 0
        printed[stat] = [int(x) for x in capsys.readouterr().out.split()]
        assert printed[stat] == np.asarray(ot).tolist()
    assert main(base) == 0  # the default statistic is gamma
    assert [int(x) for x in capsys.readouterr().out.split()] == printed["gamma"]
    assert printed["residual"] != printed["gamma"]  # the biased model's R̂ prices jumps differently
    assert main(base + ["--unbounded"]) == 0
    assert [int(x) for x in capsys.readouterr().out.split()] == np.asarray(
        adpm.optimal_trajectory(sched, est.gamma, 6, data_range=None)).tolist()

    old_args = ["trajectory", "--N", "100", "--K", "6", "--trajectory", "optimal", "--gamma", str(old)]
    assert main(old_args) == 0  # Γ̂ is there
    capsys.readouterr()
    for stat in ("residual", "one_minus_gamma"):
        assert main(old_args + ["--statistic", stat]) == 2
        err = capsys.readouterr().err
        assert f"has no '{stat}' field" in err and "older version" in err and "Rerun estimate_gamma" in err
    for args, match in (
        (["trajectory", "--N", "100", "--K", "6", "--statistic", "residual"], "--statistic residual chooses"),
        (["trajectory", "--N", "100", "--K", "6", "--trajectory", "optimal"], "--trajectory optimal needs --gamma"),
        (["trajectory", "--N", "100", "--K", "6", "--gamma", str(path)], "--gamma is used by --trajectory optimal"),
        (base[:-1] + [str(tmp_path / "missing.npz")], "missing.npz' does not exist"),
        (["trajectory", "--N", "50", "--K", "6", "--trajectory", "optimal", "--gamma", str(path)],
         "belongs to a schedule with N = 100, but --N is 50"),
    ):
        assert main(args) == 2
        assert match in capsys.readouterr().err


def test_cli_reports_errors_without_traceback(capsys):
    assert main(["trajectory", "--N", "10", "--K", "11"]) == 2
    assert "K must satisfy 1 <= K <= N = 10" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs(tmp_path):
    assert run_demo(out_dir=tmp_path, fast=True) == 0
    for f in ("variances.png", "bound_terms.png", "fd_vs_K.png", "tables.txt"):
        assert (tmp_path / f).stat().st_size > 0


def test_cli_vpsde_schedule_and_extended_needs_a_base_run(tmp_path, capsys):
    assert main(["variances", "--schedule", "vpsde", "--K", "5"]) == 0
    assert "vpsde(N=1000, beta_min=0.1, beta_max=20)" in capsys.readouterr().out
    assert main(["extended", "--base", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "starts from a finished image run" in err and "model.pt" in err
