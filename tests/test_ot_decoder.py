"""The ``ot_decoder`` paper target (issue 16): why the bound-matrix OT is not monotone in K. Fast mode: the
committed digits network, 16 training images, a coarse grid."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def otd(tmp_path_factory):
    from paper import ot_decoder

    out = tmp_path_factory.mktemp("otd")
    paths = ot_decoder.run(out, fast=True)
    return out, paths


def test_outputs_and_sidecars(otd):
    out, paths = otd
    assert {p.name for p in paths} == {"ot_decoder.csv", "ot_decoder.md", "ot_decoder.png", "ot_decoder.pdf"}
    for p in paths:
        assert p.exists() and p.with_suffix(p.suffix + ".json").exists()
    assert "jump to the decoder" in (out / "ot_decoder.md").read_text()


def test_cost_matrix_is_cached(otd):
    from paper import ot_decoder

    out, _ = otd
    before = sorted(p.name for p in (out / "cache").iterdir())
    a = ot_decoder.cost_matrix(out, fast=True)
    assert sorted(p.name for p in (out / "cache").iterdir()) == before
    assert a["F"].shape == (1001, 1001) and int(a["grid"][0]) == 1


def test_dp_costs_equal_their_paths_and_free_ot_is_never_worse(otd):
    from paper import ot_decoder

    out, _ = otd
    res = ot_decoder.analyse(ot_decoder.cost_matrix(out, fast=True), ot_decoder.settings(True)["Ks"])
    for r in res["rows"]:
        assert r["ot_bits"] == pytest.approx(r["ot_check_bits"], rel=1e-12)
        assert r["ot_tau1_1_bits"] == pytest.approx(r["ot_tau1_1_check_bits"], rel=1e-12)
        assert r["ot_bits"] <= r["ot_tau1_1_bits"] + 1e-12  # τ_1 free searches a superset of paths
        if not math.isnan(r["et_bits"]):
            assert r["ot_bits"] <= r["et_bits"] + 1e-12
    last = res["rows"][-1]  # every grid timestep: the only path, so OT = OT(τ_1 = 1) = that path
    assert last["K"] == res["K_all"] and last["tau1"] == 1
    assert last["ot_bits"] == pytest.approx(res["all_bits"], rel=1e-12)
    assert last["ot_tau1_1_bits"] == pytest.approx(res["all_bits"], rel=1e-12)


def test_bound_matrix_path_equals_variational_bound(otd):
    """Independent check of prior + Σ F: the library's variational_bound on the same images, seed and OT path."""
    import warnings

    from analytic_dpm.gamma import GammaEstimate
    from analytic_dpm.image_likelihood import variational_bound
    from analytic_dpm.models import TorchEpsModel, load_model
    from analytic_dpm.optimal_trajectory import optimal_trajectories_from_costs
    from analytic_dpm.pipeline import PRESETS, _load, _schedule
    from paper import ot_decoder

    out, _ = otd
    a = ot_decoder.cost_matrix(out, fast=True)
    config = PRESETS["digits"]
    sched = _schedule(config)
    tr = optimal_trajectories_from_costs(a["F"], K_max=5).trajectory(5)
    assert tr[1] > 1
    train, _ = _load(config)
    eps = TorchEpsModel(load_model(ot_decoder.RESULTS / "digits" / "model.pt"), timestep_map="n", schedule=sched)
    gamma = GammaEstimate.load(ot_decoder.RESULTS / "digits" / "gamma.npz").gamma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vb = variational_bound(eps, sched, tr, "analytic-ddpm", train.images[:16], gamma=gamma, seed=config.seed + 1)
    row = next(r for r in ot_decoder.analyse(a, [5])["rows"] if r["K"] == 5)
    assert row["ot_bits"] == pytest.approx(vb.bits_per_dim, rel=1e-6)


def test_claims_on_the_digits_network(otd):
    """What fast mode shows (the committed digits network, coarse grid): for every K below the whole grid the free
    OT jumps to the decoder from τ_1 > 1; the jump saves bits (decoder at τ_1 < decoder at 1 + the skipped small-t
    transitions), and the free OT at the largest K below the grid beats the every-timestep path, so the free OT is
    not monotone in K; it is always at least as good as the OT with τ_1 = 1."""
    out, _ = otd
    rows = _csv(out / "ot_decoder.csv")
    *below, last = rows
    assert int(last["ot_tau1"]) == 1
    for r in below:
        assert int(r["ot_tau1"]) > 1
        assert float(r["saving_bits_per_dim"]) > 0
        assert float(r["decoder_bits_per_dim"]) < (float(r["decoder_at_1_bits_per_dim"])
                                                    + float(r["skipped_transitions_bits_per_dim"]))
    ot = np.array([float(r["bound_ot"]) for r in rows])
    assert ot[-2] < ot[-1]  # non-monotone: the every-timestep path cannot jump
    ot1 = np.array([float(r["bound_ot_tau1_1"]) for r in rows])
    assert np.all(ot <= ot1 + 1e-12)


def test_claims_on_held_out_images(otd):
    """The jump's gain carries over to held-out images (free OT far below the every-timestep path), the τ_1 = 1 OT's
    small training-image gain does not (it is above the every-timestep path there), and the jump explains most of
    the gap on the training images."""
    import json

    out, _ = otd
    c = json.loads((out / "ot_decoder.md.json").read_text())["config"]["claims"]
    assert not c["ot_free_monotone"] and c["tau1_above_1_below_K_max"]
    assert c["jump_share"] > 0.8
    assert c["heldout_ot_minus_all"] + 3 * c["heldout_ot_minus_all_stderr"] < 0
    assert c["heldout_tau1_1_minus_all"] > 0
    md = (out / "ot_decoder.md").read_text()
    assert "held-out" in md and "accounts for" in md
