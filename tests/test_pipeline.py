"""The image pipeline end to end on scikit-learn's digits: train → Γ → bounds (ET, OT) → samples → FD-LeNet."""

import json
import math

import pytest

from analytic_dpm.pipeline import run_image_experiment


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return run_image_experiment("digits-ci", out_dir=out, log=lambda *a: None), out


def test_outputs_written(digits_run):
    res, out = digits_run
    for f in ("results.json", "table1.md", "table2.md", "model.pt", "gamma.npz"):
        assert (out / f).stat().st_size > 0, f
    assert json.loads((out / "results.json").read_text())["config"]["dataset"] == "digits"
    assert "FD-LeNet (not FID)" in (out / "table2.md").read_text()


def test_bounds_finite_and_analytic_beats_baselines_at_K10(digits_run):
    res, _ = digits_run
    nll = res["nll_bits_per_dim"]
    for row in nll.values():
        assert all(math.isfinite(v) and v > 0 for v in row.values())
    # the paper's Table 1 claim at small K, on the same images and noise
    assert nll["ET analytic-ddpm"]["10"] <= nll["ET ddpm-large"]["10"]
    assert nll["ET analytic-ddpm"]["10"] <= nll["ET ddpm-small"]["10"]
    # the estimated-bound OT is no worse than ET for the same variance (up to Monte Carlo noise between image sets)
    assert nll["OT ddpm-large"]["10"] <= nll["ET ddpm-large"]["10"]
    # the residual rows: the OT from R̂ alone (no bound matrix) is finite and beats the even trajectory, unlike the
    # OT from Γ̂ alone, which prices jumps into Γ̂ >= 1 as free
    assert nll["OT(R only) residual-ddpm"]["10"] < nll["ET residual-ddpm"]["10"]
    assert nll["OT(R only) residual-ddpm"]["10"] < nll["OT(Γ only) analytic-ddpm"]["10"]
    assert res["gamma"]["residual_min"] > 0


def test_finished_model_is_reused_only_for_its_configuration(digits_run):
    import dataclasses

    from analytic_dpm.models import UNetConfig
    from analytic_dpm.pipeline import PRESETS, _finished_model

    _, out = digits_run
    cfg = PRESETS["digits-ci"]
    ucfg = UNetConfig(**{**cfg.unet, "channels": 1, "image_size": 8})
    net, summary = _finished_model(out / "model.pt", ucfg, cfg)
    assert summary["steps"] == cfg.train_steps and summary["final_loss"] > 0
    with pytest.raises(ValueError, match="another configuration.*Delete it"):
        _finished_model(out / "model.pt", ucfg, dataclasses.replace(cfg, train_steps=cfg.train_steps + 1))
    assert _finished_model(out / "missing.pt", ucfg, cfg) is None


def test_fd_lenet_for_every_method(digits_run):
    res, _ = digits_run
    assert set(res["fd_lenet"]) == {"ddpm-large", "ddpm-small", "analytic-ddpm", "ddim", "analytic-ddim",
                                    "residual-ddpm", "residual-ddim"}
    for row in res["fd_lenet"].values():
        assert all(math.isfinite(v) and v >= 0 for v in row.values())
    assert res["lenet_test_accuracy"] > 0.9
