"""The optimal trajectory DP (P App. B Algorithm 1, Theorem 3; facts file §4): brute force, re-evaluation, exact
toy bounds, the Monge (quadrangle) structure, Theorem-2 clipping of undefined costs, and input errors."""

import importlib
import itertools
import math
import warnings

import numpy as np
import pytest

import analytic_dpm as adpm
from analytic_dpm.toy import default_gaussian, evaluate_exact

# the module, not the function of the same name that the package exports
ot = importlib.import_module("analytic_dpm.optimal_trajectory")


# ------------------------------------------------------------------------------------------------ helpers
def brute_force(F, N, start):
    """{K: (min cost, trajectories attaining it)} over every trajectory, by enumeration."""
    best = {}
    interior = range(start + 1, N) if start == 1 else range(1, N)
    for r in range(0, N):
        for mid in itertools.combinations(interior, r):
            path = (start,) + mid + (N,) if N != start else (start,)
            K = len(path) - 1 + start
            c = float(sum(F[path[i], path[i + 1]] for i in range(len(path) - 1)))
            traj = ((0,) + path) if start == 1 else path
            if K not in best or c < best[K][0] - 1e-12:
                best[K] = (c, [traj])
            elif abs(c - best[K][0]) <= 1e-12:
                best[K][1].append(traj)
    return best


def monge_matrix(rng, N):
    """A random matrix with the strict quadrangle inequality: F[s,t] = (y_t − x_s)² + u_s + v_t, x, y increasing
    (Δ = −2(x_b − x_a)(y_d − y_c) < 0)."""
    x = np.cumsum(rng.uniform(0.1, 1.0, N + 1))
    y = np.cumsum(rng.uniform(0.1, 1.0, N + 1))
    return (y[None, :] - x[:, None]) ** 2 + rng.normal(size=N + 1)[:, None] + rng.normal(size=N + 1)[None, :]


def random_trajectory(rng, N, K):
    mid = np.sort(rng.choice(np.arange(2, N), size=K - 2, replace=False))
    return np.concatenate([[0, 1], mid, [N]]).astype(np.int64)


def r_profile(schedule, gamma):
    """r_t = (β̄_t/Γ_t − 1)/ᾱ_t: the Analytic-DDPM cost is Monge exactly when r_t is non-decreasing in t >= 3."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (schedule.beta_bar / gamma - 1.0) / schedule.alpha_bar


# ------------------------------------------------------------------------------------------------ brute force
@pytest.mark.parametrize("start", [0, 1])
@pytest.mark.parametrize("kind", ["monge", "random"])
def test_equals_brute_force_every_K(kind, start):
    rng = np.random.default_rng(100 + 2 * start + (kind == "random"))
    for N in list(range(max(1, start), 13)) + [12, 11]:
        F = monge_matrix(rng, N) if kind == "monge" else rng.normal(size=(N + 1, N + 1))
        truth = brute_force(F, N, start)
        cost = ot.cost_matrix(F, start=start)
        report = ot.check_monge(cost)
        if kind == "monge":
            assert report.is_monge and report.violations == 0 and report.max_delta < 0
        for method in ("dense", "monotone", "auto"):
            res = ot.solve(cost, method=method, backend=None if method != "dense" else "numpy", progress=False)
            assert set(range(res.K_min, res.K_max + 1)) == set(truth)
            if method == "monotone":
                assert res.method == "monotone"
            alls = res.trajectories()
            for K, (c, trajs) in truth.items():
                assert res.cost(K) == pytest.approx(c, abs=1e-10)
                tr = res.trajectory(K)
                assert tuple(tr.tolist()) in trajs
                assert np.array_equal(alls[K], tr)
                single = ot.solve(cost, K=K, method=method, progress=False)
                assert single.cost(K) == pytest.approx(c, abs=1e-10)
                assert tuple(single.trajectory(K).tolist()) in trajs


def test_random_matrices_are_mostly_not_monge_and_take_exceptions():
    rng = np.random.default_rng(7)
    F = rng.normal(size=(13, 13))
    rep = ot.check_monge(F)
    assert not rep.is_monge and rep.violations > 0 and rep.exceptions.size > 0
    assert rep.max_delta > 0 and rep.worst_quad is not None
    a, b, c, d = rep.worst_quad
    delta = F[a, c] + F[b, d] - F[a, d] - F[b, c]
    assert delta == pytest.approx(rep.max_delta, rel=1e-12)
    # the kept targets form a Monge matrix: recheck on the compressed matrix
    kept = [t for t in range(1, 13) if t not in set(rep.exceptions.tolist())]
    for c_, d_ in zip(kept[:-1], kept[1:]):
        for a_ in range(0, c_ - 1):
            assert F[a_, c_] + F[a_ + 1, d_] - F[a_, d_] - F[a_ + 1, c_] <= 1e-12


@pytest.mark.parametrize("seed", [0, 1, 3, 5])
def test_one_violated_quadrangle_forces_the_fallback(seed):
    """Monge except one adjacent quadrangle: the check finds exactly it, the solver sets that target aside, and the
    answer is exact; trusting monotonicity blindly would be wrong here."""
    rng = np.random.default_rng(seed)
    N = 10
    F = monge_matrix(rng, N)
    t = int(rng.integers(3, N))
    F[0, t] -= 30.0  # only the quadrangle (0, 1; t−1, t) loses the inequality
    cost = ot.cost_matrix(F)
    rep = ot.check_monge(cost)
    assert not rep.is_monge and rep.violations == 1
    assert rep.worst_quad == (0, 1, t - 1, t)
    assert rep.exceptions.size == 1 and rep.exceptions[0] in (t - 1, t)
    truth = brute_force(F, N, 0)
    res = ot.solve(cost, method="monotone", progress=False)
    for K, (c, trajs) in truth.items():
        assert res.cost(K) == pytest.approx(c, abs=1e-10)
        assert tuple(res.trajectory(K).tolist()) in trajs
    # the divide and conquer without the exception (what an unchecked "Monge" solver does) misses some optimum
    naive_costs, _ = ot._run_numpy(cost, N, False, True, np.zeros(0, dtype=np.int64), False)
    assert any(naive_costs[K] > truth[K][0] + 1e-9 for K in truth)


def test_corrupted_columns_become_exceptions_and_results_stay_exact():
    rng = np.random.default_rng(11)
    N = 80
    F = monge_matrix(rng, N)
    bad_cols = [17, 40, 41, 77]
    for t in bad_cols:
        F[:, t] += rng.normal(scale=5.0, size=N + 1)
    rep = ot.check_monge(F)
    assert not rep.is_monge and 0 < rep.exceptions.size <= 10
    dense = ot.solve(F, method="dense", progress=False)
    mono = ot.solve(F, method="monotone", progress=False)
    np.testing.assert_allclose(mono.costs[1:], dense.costs[1:], rtol=0, atol=1e-9)
    assert mono.method == "monotone"


def test_forbidden_transitions_take_the_dense_dp():
    rng = np.random.default_rng(2)
    N = 9
    F = monge_matrix(rng, N)
    F[0, 1:5] = np.inf  # τ_1 >= 5
    F[6, 9] = np.inf
    truth = brute_force(F, N, 0)
    res = ot.solve(F, method="monotone", progress=False)
    assert res.method == "dense"
    assert ot.check_monge(F).nonfinite_targets.tolist() == [1, 2, 3, 4, 9]
    for K, (c, trajs) in truth.items():
        if np.isfinite(c):
            assert res.cost(K) == pytest.approx(c, abs=1e-10)
            assert tuple(res.trajectory(K).tolist()) in trajs
        else:
            assert res.costs[K] == np.inf
            with pytest.raises(ValueError, match="finite cost"):
                res.trajectory(K)


def test_torch_backend_equals_numpy():
    pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    for start in (0, 1):
        F = rng.normal(size=(31, 31))
        a = ot.solve(ot.cost_matrix(F, start=start), method="dense", backend="numpy", progress=False)
        b = ot.solve(ot.cost_matrix(F, start=start), method="dense", backend="torch", device="cpu", progress=False)
        assert b.method == "dense-torch:cpu"
        np.testing.assert_array_equal(a.costs, b.costs)
        for K in range(a.K_min, a.K_max + 1):
            np.testing.assert_array_equal(a.trajectory(K), b.trajectory(K))


# ------------------------------------------------------------------------------------------------ Analytic-DDPM cost
@pytest.fixture(scope="module")
def toy_setup():
    schedule = adpm.Schedule.linear(200)
    data = default_gaussian(dim=16)
    gamma = data.gamma(schedule)
    return schedule, data, gamma


def test_reported_cost_equals_reevaluated_path(toy_setup):
    schedule, _, gamma = toy_setup
    cost = ot.analytic_ddpm_cost(schedule, gamma)
    res = ot.solve(cost, progress=False)
    assert res.method == "monotone"
    for K, traj in res.trajectories().items():
        assert traj[0] == 0 and traj[1] == 1 and traj[-1] == schedule.N and traj.size == K + 1
        adpm.validate_trajectory(traj, schedule.N)
        assert ot.trajectory_cost(cost, traj) == pytest.approx(res.cost(K), rel=1e-13, abs=1e-13)


def test_monotone_equals_dense_on_the_analytic_cost(toy_setup):
    schedule, _, gamma = toy_setup
    for sched in (schedule, adpm.Schedule.cosine(300)):
        g = gamma if sched is schedule else default_gaussian(dim=16).gamma(sched)
        cost = ot.analytic_ddpm_cost(sched, g)
        a = ot.solve(cost, method="monotone", progress=False)
        b = ot.solve(cost, method="dense", progress=False)
        np.testing.assert_array_equal(a.costs, b.costs)
        for K in (2, 3, 10, 50, sched.N):
            np.testing.assert_array_equal(a.trajectory(K), b.trajectory(K))
            one = ot.optimal_trajectory(sched, g, K)
            assert one.cost == a.cost(K)
            np.testing.assert_array_equal(np.asarray(one), a.trajectory(K))


@pytest.mark.parametrize("schedule", [adpm.Schedule.linear(100), adpm.Schedule.cosine(100)], ids=["linear", "cosine"])
def test_toy_exact_bound_of_ot_beats_even_and_random(schedule):
    """Theorem 3 on Gaussian data with exact Γ: the exact bound (decoder left out) equals prior + ½·cost, so the OT
    minimizes it: <= the even trajectory and random trajectories for every K."""
    data = default_gaussian(dim=16)
    N = schedule.N
    # the exact 1 − Γ_t, free of cancellation, for the DP as for the evaluation: no rounding allowance is needed
    res = ot.optimal_trajectories(schedule, None, data_range=None, one_minus_gamma=data.one_minus_gamma(schedule))
    rng = np.random.default_rng(0)
    tol = 1e-13
    for K in range(2, N + 1):
        traj = res.trajectory(K)
        ev = evaluate_exact(data, schedule, traj, "analytic-ddpm")
        # KL_k = ½[(λ² + c²v_t)/σ² − 1] + ½ log(σ²/λ²): the first part is the rounding of σ² = λ² + g²(1 − Γ_t)
        b = ev.bound
        sig, lam, c, v = b.sigma_sq[1:], b.lambda_sq[1:], b.coef_x0[1:], b.cov_x0[1:]
        residual = 0.5 * float(np.sum((lam + c * c * v) / sig - 1.0))
        assert abs(residual) < 1e-13
        assert ev.vb_nats_per_dim - ev.prior_kl == pytest.approx(0.5 * res.cost(K), rel=1e-12, abs=1e-14)
        even = evaluate_exact(data, schedule, adpm.even_trajectory(N, K), "analytic-ddpm").vb_nats_per_dim
        assert ev.vb_nats_per_dim <= even + tol
        if 2 < K < N:
            for _ in range(3):
                other = evaluate_exact(data, schedule, random_trajectory(rng, N, K), "analytic-ddpm").vb_nats_per_dim
                assert ev.vb_nats_per_dim <= other + tol
    # the improvement is real, not a tie: K = 10 gains over the even trajectory
    even10 = evaluate_exact(data, schedule, adpm.even_trajectory(N, 10), "analytic-ddpm").vb_nats_per_dim
    ot10 = evaluate_exact(data, schedule, res.trajectory(10), "analytic-ddpm").vb_nats_per_dim
    assert ot10 < even10 - 1e-4


def test_log_ratio_form_is_log_sigma_sq_over_lambda_sq(toy_setup):
    schedule, _, gamma = toy_setup
    rng = np.random.default_rng(3)
    g = gamma.copy()
    g[2:] += rng.normal(scale=0.05, size=schedule.N - 1)  # imperfect Γ: some > 1, some clipped by eq. 12
    with pytest.warns(RuntimeWarning, match="outside"):
        cost = ot.analytic_ddpm_cost(schedule, g, data_range=(-1.0, 1.0))
    assert cost.gamma_clipped.any()
    for _ in range(5):
        traj = random_trajectory(rng, schedule.N, 12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rv = adpm.reverse_variances(schedule, traj, "analytic-ddpm", gamma=g, data_range=(-1.0, 1.0))
        s, t = traj[1:-1], traj[2:]
        np.testing.assert_allclose(cost.F[s, t], np.log(rv.sigma_sq[1:] / rv.lambda_sq[1:]), rtol=1e-9, atol=1e-13)


def test_corollary4_form_differs_by_a_telescoping_constant(toy_setup):
    schedule, _, gamma = toy_setup
    a = ot.optimal_trajectories(schedule, gamma, form="log_ratio")
    b = ot.optimal_trajectories(schedule, gamma, form="corollary4")
    N = schedule.N
    const = math.log(schedule.beta_bar[N]) - math.log(schedule.beta_bar[1]) - float(schedule.log_skip_alpha(1, N))
    np.testing.assert_allclose(a.costs[2:] - b.costs[2:], const, rtol=0, atol=1e-11)
    for K in (3, 10, 40, 150):
        np.testing.assert_array_equal(a.trajectory(K), b.trajectory(K))
    # the Corollary 4 entry is log(1 − β_{t|s}Γ_t/β̄_t)
    cb = ot.analytic_ddpm_cost(schedule, gamma, form="corollary4")
    s, t = np.array([1, 5, 50, 120]), np.array([2, 90, 51, 200])
    ref = np.log1p(-schedule.skip_beta(s, t) * gamma[t] / schedule.beta_bar[t])
    np.testing.assert_allclose(cb.F[s, t], ref, rtol=1e-13)


def test_exact_gamma_gives_a_monge_cost_and_the_r_criterion():
    """Finding: J(s, t) = log(Γ_tᾱ_t/β̄_t) + log(x_s + r_t) with x_s = 1/ᾱ_s, so
    Δ = log((x_a + r_c)(x_b + r_d)/((x_a + r_d)(x_b + r_c))) and the cost is Monge iff r_t is non-decreasing; with exact
    Γ it is (Stam's Fisher information inequality)."""
    data = default_gaussian(dim=64)
    lin = adpm.Schedule.linear(1000)
    g = data.gamma(lin)
    cost = ot.analytic_ddpm_cost(lin, g, form="corollary4")
    assert ot.check_monge(cost).is_monge
    r = r_profile(lin, g)
    assert np.all(np.diff(r[3:]) >= 0)
    x = 1.0 / lin.alpha_bar
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b, c, d = np.sort(rng.choice(np.arange(1, 1001), 4, replace=False))
        F = cost.F
        delta = F[a, c] + F[b, d] - F[a, d] - F[b, c]
        pred = math.log((x[a] + r[c]) * (x[b] + r[d]) / ((x[a] + r[d]) * (x[b] + r[c])))
        assert delta == pytest.approx(pred, rel=1e-6, abs=1e-12)
    # cosine, N = 1000: from Γ, float64 keeps few digits of 1 − Γ_N ≈ 8e-11 and the last pair of targets breaks the
    # inequality (one is set aside); from the exact 1 − Γ the whole matrix is Monge, t = N included
    cos = adpm.Schedule.cosine(1000)
    rep = ot.check_monge(ot.analytic_ddpm_cost(cos, data.gamma(cos)))
    assert rep.worst_quad[2:] == (999, 1000) and rep.exceptions.size == 1 and rep.exceptions[0] in (999, 1000)
    assert ot.check_monge(ot.analytic_ddpm_cost(cos, one_minus_gamma=data.one_minus_gamma(cos))).is_monge
    # a noisy Γ breaks the monotonicity of r_t, and the check sees it
    g_noisy = g.copy()
    g_noisy[2:] *= 1.0 + 1e-3 * rng.standard_normal(999)
    g_noisy = np.clip(g_noisy, 0.0, 1.0)
    assert not np.all(np.diff(r_profile(lin, g_noisy)[3:]) >= 0)
    rep = ot.check_monge(ot.analytic_ddpm_cost(lin, g_noisy))
    assert not rep.is_monge and rep.exceptions.size > 0


def test_undefined_cost_is_clipped_by_theorem2_not_split():
    """Γ_t > 1 (as the official code's ms_eps > 1 near t = N) makes 1 − β_{t|s}Γ_t/β̄_t <= 0 for some s. Theorem 2
    (σ̂² >= λ²) is Γ_t <= 1: the clip keeps J finite and >= 0 (J = 0 where Γ_t is clipped to 1)."""
    schedule = adpm.Schedule.linear(200)
    g = default_gaussian(dim=16).gamma(schedule)
    g[150:] = 1.02
    with pytest.raises(ValueError, match="clip=True"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ot.analytic_ddpm_cost(schedule, g, clip=False, form="corollary4")
    with pytest.warns(RuntimeWarning, match="outside"):
        cost = ot.analytic_ddpm_cost(schedule, g)
    assert cost.gamma_clipped[150:].all() and not cost.gamma_clipped[2:150].any()
    F = cost.F
    s, t = np.triu_indices(201, 1)
    keep = s >= 1
    assert np.all(np.isfinite(F[s[keep], t[keep]])) and np.all(F[s[keep], t[keep]] >= 0)
    assert np.all(F[1:150, 150] == 0.0) and np.all(F[1:200, 200] == 0.0)  # Γ_t clipped to 1: σ̂² = λ², J = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ot.optimal_trajectories(schedule, g, K_max=50)
    assert np.all(np.isfinite(res.costs[2:]))
    # the clipped cost is what the bound evaluation uses: J = log(σ²/λ²) with reverse_variances' clipped σ²
    traj = res.trajectory(20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rv = adpm.reverse_variances(schedule, traj, "analytic-ddpm", gamma=g)
    assert res.cost(20) == pytest.approx(float(np.sum(np.log(rv.sigma_sq[1:] / rv.lambda_sq[1:]))), rel=1e-10)


def test_cost_matrix_layout():
    schedule = adpm.Schedule.linear(50)
    cost = ot.analytic_ddpm_cost(schedule, default_gaussian(dim=4).gamma(schedule))
    FT = cost.FT
    assert FT.shape == (51, 51) and cost.start == 1 and not FT.flags.writeable
    assert np.all(np.isinf(FT[np.triu_indices(51)]))  # s >= t
    assert np.all(np.isinf(cost.F[0]))  # s = 0 is not a J(s, t) predecessor
    s, t = np.triu_indices(51, 1)
    assert np.all(np.isfinite(cost.F[s[s >= 1], t[s >= 1]]))


# ------------------------------------------------------------------------------------------------ F-form (baselines)
def test_user_cost_with_decoder_column_chooses_tau1():
    """F-form as in the official baseline OT: the path starts at x_0 and the decoder jump can come from τ_1 > 1."""
    rng = np.random.default_rng(9)
    N = 10
    F = monge_matrix(rng, N)
    F[0, 1] += 100.0  # make the decoder from τ_1 = 1 expensive
    res = ot.optimal_trajectories_from_costs(F)
    assert res.K_min == 1 and res.K_max == N
    one = ot.optimal_trajectory_from_costs(F, 4)
    assert one.trajectory[0] == 0 and one.trajectory[1] > 1 and one.trajectory[-1] == N and one.K == 4
    assert one.cost == pytest.approx(brute_force(F, N, 0)[4][0], abs=1e-10)
    assert np.array_equal(one.trajectory, res.trajectory(4))


def test_user_cost_from_a_handcrafted_baseline_on_toy_data():
    """F-form with real per-transition bound terms: the DDPM σ² = β_{t|s} baseline's exact KL terms on Gaussian data
    (facts file §4.4, here exact instead of estimated). With τ_1 = 1 fixed the exact bound along the OT is
    prior + cost, and it beats the even trajectory."""
    from analytic_dpm.likelihood import exact_mean_transition_kl
    from analytic_dpm.toy import exact_mean_bound

    schedule = adpm.Schedule.linear(60)
    data = default_gaussian(dim=8)
    N = schedule.N
    s, t = np.triu_indices(N + 1, 1)
    keep = s >= 1
    s, t = s[keep], t[keep]
    c0, _, lam2 = adpm.posterior_coefficients(schedule, s, t, "ddpm")
    kl = exact_mean_transition_kl(lam2, schedule.skip_beta(s, t), c0, data.posterior_cov_trace_at(schedule, t))
    F = np.full((N + 1, N + 1), np.inf)
    F[s, t] = kl
    res = ot.optimal_trajectories_from_costs(F, start=1)
    for K in (2, 5, 10, 30, N):
        b = exact_mean_bound(data, schedule, res.trajectory(K), "ddpm-large")
        assert b.vb_nats_per_dim - b.prior_kl == pytest.approx(res.cost(K), rel=1e-12)
        even = exact_mean_bound(data, schedule, adpm.even_trajectory(N, K), "ddpm-large").vb_nats_per_dim
        assert b.vb_nats_per_dim <= even + 1e-12


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_cost_matrices():
    F = np.zeros((6, 6))
    F[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\(1, 3\)"):
        ot.cost_matrix(F)
    F[1, 3] = -np.inf
    with pytest.raises(ValueError, match="-inf"):
        ot.solve(F)
    F[1, 3] = 0.0
    F[3, 1] = np.nan  # below the diagonal: ignored
    assert ot.solve(F, progress=False).cost(2) == 0.0
    with pytest.raises(ValueError, match=r"shape \(N\+1, N\+1\).*\(5, 6\)"):
        ot.cost_matrix(np.zeros((5, 6)))
    with pytest.raises(ValueError, match="square"):
        ot.cost_matrix(np.zeros(6))
    with pytest.raises(ValueError, match="start must be 0"):
        ot.cost_matrix(np.zeros((6, 6)), start=2)
    with pytest.raises(TypeError):
        ot.cost_matrix("F")


def test_K_out_of_range():
    schedule = adpm.Schedule.linear(30)
    g = default_gaussian(dim=4).gamma(schedule)
    for K in (0, 1, 31):
        with pytest.raises(ValueError, match=r"2 <= K <= N = 30"):
            ot.optimal_trajectory(schedule, g, K)
    with pytest.raises(TypeError, match="integer"):
        ot.optimal_trajectory(schedule, g, 2.5)
    with pytest.raises(ValueError, match=r"1 <= K <= N = 5"):
        ot.optimal_trajectory_from_costs(np.zeros((6, 6)), 6)
    res = ot.optimal_trajectories(schedule, g, K_max=10)
    with pytest.raises(ValueError, match="K_max = 10"):
        res.trajectory(11)
    with pytest.raises(ValueError, match="either K"):
        ot.solve(ot.analytic_ddpm_cost(schedule, g), K=3, K_max=5)


def test_bad_gamma_and_options():
    schedule = adpm.Schedule.linear(30)
    g = default_gaussian(dim=4).gamma(schedule)
    with pytest.raises(ValueError, match=r"shape \(N\+1,\) = \(31,\)"):
        ot.analytic_ddpm_cost(schedule, g[1:])
    bad = g.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match=r"finite.*at t = \[7\]"):
        ot.analytic_ddpm_cost(schedule, bad)
    bad = g.copy()
    bad[1] = np.nan  # Γ_1 is never used (τ_1 = 1 is fixed)
    ot.analytic_ddpm_cost(schedule, bad)
    with pytest.raises(ValueError, match="form"):
        ot.analytic_ddpm_cost(schedule, g, form="log")
    with pytest.raises(ValueError, match="method"):
        ot.optimal_trajectory(schedule, g, 5, method="smawk")
    with pytest.raises(TypeError, match="Schedule"):
        ot.optimal_trajectory("linear", g, 5)
    with pytest.raises(ValueError, match="numpy only"):
        ot.solve(ot.analytic_ddpm_cost(schedule, g), K=5, method="monotone", backend="torch")


def test_trivial_sizes():
    sched = adpm.Schedule.from_betas([0.1])
    res = ot.optimal_trajectories(sched, np.array([0.0, 0.5]))
    assert res.K_min == res.K_max == 1 and res.cost(1) == 0.0
    assert res.trajectory(1).tolist() == [0, 1]
    sched2 = adpm.Schedule.from_betas([0.1, 0.2])
    one = ot.optimal_trajectory(sched2, np.array([0.0, 0.5, 0.5]), 2)
    assert one.trajectory.tolist() == [0, 1, 2] and np.isfinite(one.cost)
    assert ot.solve(np.array([[0.0, 3.0], [0.0, 0.0]]), progress=False).trajectory(1).tolist() == [0, 1]


# ------------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_large_monotone_equals_dense():
    for sched in (adpm.Schedule.linear(1000), adpm.Schedule.cosine(1000)):
        g = default_gaussian(dim=64).gamma(sched)
        cost = ot.analytic_ddpm_cost(sched, g)
        a = ot.solve(cost, method="monotone", progress=False)
        b = ot.solve(cost, method="dense", progress=False)
        np.testing.assert_array_equal(a.costs, b.costs)
        np.testing.assert_array_equal(a._back, b._back)


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-2.0, 2.0), (-1.0, 3.0)])
def test_cost_clip_uses_the_squared_half_range(data_range):
    """Theorem 2's eq. 12 in the cost clip is 1 − Γ_t <= r²ᾱ_t/β̄_t with r = (b − a)/2: for data ranges other than
    [−1, 1] (r ≠ 1, so r ≠ r²) the clipped cost equals log(σ²/λ²) of reverse_variances with the same data_range
    (this kills a mutant that uses r instead of r²)."""
    sched = adpm.Schedule.linear(200)
    data = default_gaussian(dim=16)
    g = data.gamma(sched)
    g[2:] = np.clip(g[2:] * 0.6, 0, 1)  # too small a Γ: σ̂² large, so eq. 12 clips at large t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cost = ot.analytic_ddpm_cost(sched, g, data_range=data_range)
    assert cost.gamma_clipped.any() and not cost.gamma_clipped.all()
    rng = np.random.default_rng(1)
    for _ in range(5):
        traj = random_trajectory(rng, sched.N, 15)
        rv = adpm.reverse_variances(sched, traj, "analytic-ddpm", gamma=g, data_range=data_range)
        s, t = traj[1:-1], traj[2:]
        np.testing.assert_allclose(cost.F[s, t], np.log(rv.sigma_sq[1:] / rv.lambda_sq[1:]), rtol=1e-9, atol=1e-13)
