"""analytic_dpm.distributed on CPU with the gloo backend: 2 processes against 1 process.

One spawn of two ranks runs every scenario (Γ, samples, feature statistics, resume); the 1-process references run in
the test process itself, without a process group and with a 1-rank gloo group.
"""

import json
import os
import socket
import sys
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import analytic_dpm as adpm
from analytic_dpm import distributed as D
from analytic_dpm.metrics import LeNetFeatures, feature_statistics
from analytic_dpm.models import TorchEpsModel, UNet, UNetConfig, load_model, save_model

N = 40
SCHED = adpm.Schedule.linear(N)
SHAPE = (1, 8, 8)
TRAJ = adpm.even_trajectory(N, 4)
GAMMA_TS = np.array([1, 14, 27, 40])
M_GAMMA = 256  # two chunks of 128
NUM = 40  # three shards of 16 (16, 16, 8)
SHARD = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_model_file(path: Path):
    torch.manual_seed(0)
    net = UNet(UNetConfig(image_size=8, channels=1, base_channels=8, channel_mult=(1, 2), attention_resolutions=(4,)))
    with torch.no_grad():  # the output convolution starts at zero: make ε̂ non-trivial
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape))
    save_model(net, path)


def _eps(model_file):
    return TorchEpsModel(load_model(model_file), timestep_map="n", schedule=SCHED)


def _data():
    return np.random.default_rng(1).uniform(-1, 1, (M_GAMMA, *SHAPE)).astype(np.float32)


def _images():
    return np.random.default_rng(2).uniform(-1, 1, (37, *SHAPE)).astype(np.float32)


def _extractor():
    torch.manual_seed(3)
    return LeNetFeatures(in_channels=1, image_size=8, width=4, feature_dim=6).eval()


def _gamma_array():
    g = np.full(N + 1, 0.4)
    g[0] = 0.0
    return g


def _sample_kw():
    return dict(gamma=_gamma_array(), clip_x0=True, clip_sigma_pixel=1.0, seed=7, shard_size=SHARD, batch_size=SHARD,
                progress=False)


def _scenarios(model_file, out_root: Path):
    """Everything the ranks run; returns (Γ estimate, feature statistics, samples or None)."""
    eps = _eps(model_file)
    est = D.distributed_gamma(eps, SCHED, _data(), timesteps=GAMMA_TS, batch_size=64, seed=5, progress=False)
    stats = D.distributed_feature_statistics(_extractor(), _images(), batch_size=8)
    x = D.distributed_sample(eps, SCHED, TRAJ, "analytic-ddpm", NUM, SHAPE, out_root / "fresh", **_sample_kw())
    x_resumed = D.distributed_sample(eps, SCHED, TRAJ, "analytic-ddpm", NUM, SHAPE, out_root / "resume",
                                     **_sample_kw())
    return est, stats, x, x_resumed


def _worker(rank, world, port, model_file, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = D.init_distributed(backend="gloo")
    try:
        assert (ctx.rank, ctx.world_size, ctx.backend) == (rank, world, "gloo")
        est, stats, x, x_resumed = _scenarios(model_file, Path(out))
        arrays = dict(gamma=est.gamma, stderr=est.stderr, mean=stats.mean, comoment=stats.comoment,
                      count=np.array(stats.count), residual=est.residual, residual_stderr=est.residual_stderr,
                      one_minus_gamma=est.one_minus_gamma, one_minus_gamma_stderr=est.one_minus_gamma_stderr)
        if x is not None:
            arrays.update(samples=x, resumed=x_resumed)
        np.savez(Path(out) / f"rank{rank}.npz", **arrays)
    finally:
        D.shutdown(ctx)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Reference (1 process, no group), the pre-created resume folder, then one spawn of 2 gloo ranks."""
    root = tmp_path_factory.mktemp("dist")
    model_file = root / "model.pt"
    _make_model_file(model_file)
    eps = _eps(model_file)

    ref = {}
    ref["gamma"] = adpm.estimate_gamma(eps, SCHED, _data(), timesteps=GAMMA_TS, batch_size=64, seed=5,
                                       progress=False)
    ref["stats"] = feature_statistics(_extractor(), _images(), batch_size=8)
    kw = _sample_kw()
    kw.pop("shard_size")
    ref["samples"] = adpm.sample(eps, SCHED, TRAJ, "analytic-ddpm", NUM, SHAPE, backend="torch", **kw).numpy()

    # an "interrupted" run: shards 0 and 1 exist (shard 0 altered to a marker so that reuse is visible), shard 2 not
    w2 = root / "w2"
    resume = w2 / "resume"
    D.distributed_sample(eps, SCHED, TRAJ, "analytic-ddpm", NUM, SHAPE, resume, **_sample_kw())
    p0 = resume / "shard_000000.npz"
    with np.load(p0) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["samples"] = np.full_like(arrays["samples"], 0.25)
    np.savez(p0, **arrays)
    (resume / "shard_000002.npz").unlink()
    (resume / "samples.npy").unlink()

    port = _free_port()
    torch.multiprocessing.spawn(_worker, args=(2, port, str(model_file), str(w2)), nprocs=2, join=True)
    ranks = [dict(np.load(w2 / f"rank{r}.npz")) for r in range(2)]
    return dict(root=root, model_file=model_file, ref=ref, ranks=ranks, w2=w2)


def test_two_ranks_match_one_process(setup):
    ref, r0, r1 = setup["ref"], *setup["ranks"]
    # Γ: equal to estimate_gamma within 1e-12 relative, identical on both ranks
    g_ref = ref["gamma"]
    np.testing.assert_allclose(r0["gamma"][GAMMA_TS], g_ref.gamma[GAMMA_TS], rtol=1e-12, atol=0)
    np.testing.assert_allclose(r0["stderr"][GAMMA_TS], g_ref.stderr[GAMMA_TS], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(r0["gamma"], r1["gamma"])
    # the residual and the direct 1 − Γ from the same calls, merged the same way
    for k in ("residual", "residual_stderr", "one_minus_gamma", "one_minus_gamma_stderr"):
        np.testing.assert_allclose(r0[k][GAMMA_TS], getattr(g_ref, k)[GAMMA_TS], rtol=1e-10, atol=0)
        np.testing.assert_array_equal(r0[k], r1[k])
    assert np.isnan(r0["gamma"][2]) and r0["gamma"][0] == 0.0
    assert 0.05 < g_ref.gamma[GAMMA_TS].min()  # the model is not trivial
    # feature statistics: merged over ranks = one pass, on both ranks
    for r in (r0, r1):
        assert int(r["count"]) == ref["stats"].count == 37
        np.testing.assert_allclose(r["mean"], ref["stats"].mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(r["comoment"], ref["stats"].comoment, rtol=1e-10, atol=1e-12)
    # samples: rank 0 returns them, bitwise equal to one process with the same shards, and to sample() itself
    assert "samples" in r0 and "samples" not in r1
    np.testing.assert_array_equal(r0["samples"], np.load(setup["w2"] / "fresh" / "samples.npy"))
    np.testing.assert_allclose(r0["samples"], ref["samples"], rtol=0, atol=1e-6)
    assert sorted(p.name for p in (setup["w2"] / "fresh").glob("shard_*.npz")) == [
        "shard_000000.npz", "shard_000001.npz", "shard_000002.npz"]


def test_world_size_invariance_one_process(setup, tmp_path):
    """The same calls without a process group, and in a 1-rank gloo group, give the 2-rank results exactly."""
    r0 = setup["ranks"][0]
    eps = _eps(setup["model_file"])
    x1 = D.distributed_sample(eps, SCHED, TRAJ, "analytic-ddpm", NUM, SHAPE, tmp_path / "nogroup", **_sample_kw())
    np.testing.assert_array_equal(x1, r0["samples"])

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ctx = D.init_distributed()
        assert (ctx.world_size, ctx.backend, ctx.initialized_here) == (1, "gloo", False)
        est, stats, x, _ = _scenarios(setup["model_file"], tmp_path / "gloo1")
    finally:
        dist.destroy_process_group()
    np.testing.assert_array_equal(x, r0["samples"])
    np.testing.assert_allclose(est.gamma[GAMMA_TS], r0["gamma"][GAMMA_TS], rtol=1e-12, atol=0)
    np.testing.assert_allclose(stats.comoment, r0["comoment"], rtol=1e-10, atol=1e-12)
    assert est.config["world_size"] == 1 and est.config["estimator"].endswith("distributed_gamma")


def test_resume_reuses_finished_shards(setup):
    r0 = setup["ranks"][0]
    resumed = r0["resumed"]
    assert np.all(resumed[:SHARD] == 0.25)  # shard 0 came from the file (the marker), not recomputed
    np.testing.assert_array_equal(resumed[SHARD:], r0["samples"][SHARD:])  # shard 1 reused, shard 2 recomputed
    run = json.loads((setup["w2"] / "resume" / "run.json").read_text())
    assert run["reused_shards"] == 2 and run["world_size"] == 2 and run["shards"] == 3


def test_resume_refuses_other_arguments_and_extends(setup, tmp_path):
    eps = _eps(setup["model_file"])
    out = tmp_path / "run"
    kw = _sample_kw()
    x = D.distributed_sample(eps, SCHED, TRAJ, "analytic-ddpm", 20, SHAPE, out, **kw)
    with pytest.raises(ValueError, match="different arguments.*seed"):
        D.distributed_sample(eps, SCHED, TRAJ, "analytic-ddpm", 20, SHAPE, out, **{**kw, "seed": 8})
    with pytest.raises(ValueError, match="different arguments.*table"):
        D.distributed_sample(eps, SCHED, TRAJ, "ddpm-large", 20, SHAPE, out, **{**kw, "gamma": None})
    # a larger num_samples keeps shard 0, recomputes the short last shard (4 → 16 samples), adds the rest
    x_more = D.distributed_sample(eps, SCHED, TRAJ, "analytic-ddpm", NUM, SHAPE, out, **kw)
    np.testing.assert_array_equal(x_more[:SHARD], x[:SHARD])
    # samples 16..19 ran in a batch of 16 instead of 4: same noise, the network's float32 rounding may differ
    np.testing.assert_allclose(x_more[SHARD:20], x[SHARD:], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(x_more, setup["ranks"][0]["samples"])


def test_helpers_without_process_group():
    assert D.get_rank() == 0 and D.get_world_size() == 1
    D.barrier()
    a = np.arange(6.0).reshape(2, 3)
    out = D.all_reduce_sum(a)
    np.testing.assert_array_equal(out, a)
    assert out is not a
    assert D._block(10, 0, 3) == (0, 3) and D._block(10, 2, 3) == (6, 10)
    ctx = D.init_distributed() if "RANK" not in os.environ else None
    if ctx is not None:
        assert (ctx.rank, ctx.world_size, ctx.backend, ctx.initialized_here) == (0, 1, None, False)


def test_errors(setup, tmp_path):
    eps = _eps(setup["model_file"])
    with pytest.raises(TypeError, match="out_dir must be a folder path"):
        D.distributed_sample(eps, SCHED, TRAJ, "ddim", 4, SHAPE, None)
    with pytest.raises(ValueError, match="shard_size must be an integer >= 1"):
        D.distributed_sample(eps, SCHED, TRAJ, "ddim", 4, SHAPE, tmp_path, shard_size=0)
    with pytest.raises(TypeError, match="images must be an array or tensor of shape"):
        D.distributed_feature_statistics(_extractor(), [1, 2, 3])
    with pytest.raises(TypeError, match="eps_model must be callable"):
        D.distributed_gamma(3, SCHED, _data())


def test_cli_single_process(setup, tmp_path):
    """`python -m analytic_dpm.distributed` (what torchrun launches) with one process: gamma, then sample."""
    model_file = setup["model_file"]
    data = tmp_path / "x0.npy"
    np.save(data, _data()[:128])
    gfile = tmp_path / "gamma.npz"
    common = ["--model", str(model_file), "--N", str(N), "--device", "cpu", "--batch-size", "64"]
    assert D.main(["gamma", *common, "--data", str(data), "--K", "4", "--out", str(gfile), "--seed", "5"]) == 0
    est = adpm.GammaEstimate.load(gfile)
    ref = adpm.estimate_gamma(_eps(model_file), SCHED, _data()[:128], timesteps=TRAJ[1:], batch_size=64, seed=5,
                              device="cpu", progress=False)
    np.testing.assert_allclose(est.gamma[TRAJ[1:]], ref.gamma[TRAJ[1:]], rtol=1e-12)
    out = tmp_path / "samples"
    assert D.main(["sample", *common, "--K", "4", "--gamma", str(gfile), "--method", "analytic-ddim",
                   "--num-samples", "10", "--shard-size", "8", "--out", str(out)]) == 0
    x = np.load(out / "samples.npy")
    assert x.shape == (10, *SHAPE) and np.isfinite(x).all() and np.abs(x).max() <= 1.0
    assert D.main(["sample", *common, "--num-samples", "4", "--out", str(out)]) == 2  # --K missing


@pytest.mark.slow
def test_torchrun_two_processes(setup, tmp_path):
    """The real launcher: torchrun --nproc_per_node=2 -m analytic_dpm.distributed sample ... equals one process."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    args = ["sample", "--model", str(setup["model_file"]), "--N", str(N), "--K", "4", "--method", "ddpm-large",
            "--num-samples", "24", "--shard-size", "8", "--device", "cpu", "--backend", "gloo"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([str(torchrun), "--nproc_per_node=2", f"--master_port={_free_port()}", "-m",
                    "analytic_dpm.distributed", *args, "--out", str(tmp_path / "two")], check=True, env=env,
                   cwd=Path(__file__).resolve().parents[1])
    assert D.main([*args, "--out", str(tmp_path / "one")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "two" / "samples.npy"), np.load(tmp_path / "one" / "samples.npy"))


def test_distributed_gamma_checkpoint_resumes_after_interrupt(tmp_path, monkeypatch):
    """An interrupted Γ run keeps its finished (timestep, chunk) sums; the rerun skips them and equals a clean run."""
    from analytic_dpm import gamma as G

    toy_data = adpm.toy.default_gaussian(16)
    ts = [1, 5, 10, 20, 30, 40]
    eps = toy_data.eps_model(SCHED)
    clean = D.distributed_gamma(eps, SCHED, toy_data, timesteps=ts, num_samples=300, batch_size=64, seed=2,
                                progress=False)
    monkeypatch.setattr(G, "CHECKPOINT_INTERVAL_S", 0.0)  # write after every finished unit
    calls = {"n": 0}

    def flaky(x, n):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return eps(x, n)

    stem = tmp_path / "gamma"
    with pytest.raises(KeyboardInterrupt):
        D.distributed_gamma(flaky, SCHED, toy_data, timesteps=ts, num_samples=300, batch_size=64, seed=2,
                            progress=False, checkpoint=stem)
    assert (tmp_path / "gamma.rank0of1.npz").exists()
    calls["n"] = -10**9  # no more interrupts; count the calls of the resumed run
    resumed = D.distributed_gamma(flaky, SCHED, toy_data, timesteps=ts, num_samples=300, batch_size=64, seed=2,
                                  progress=False, checkpoint=stem)
    assert calls["n"] + 10**9 < 6 * 5  # 6 timesteps × 5 batches when nothing is reused
    np.testing.assert_array_equal(resumed.gamma, clean.gamma)
    np.testing.assert_array_equal(resumed.stderr, clean.stderr)
    np.testing.assert_array_equal(resumed.residual, clean.residual)
    np.testing.assert_array_equal(resumed.one_minus_gamma, clean.one_minus_gamma)
    with pytest.raises(ValueError, match="written by a run with other arguments"):
        D.distributed_gamma(eps, SCHED, toy_data, timesteps=ts, num_samples=300, batch_size=64, seed=3,
                            progress=False, checkpoint=stem)
