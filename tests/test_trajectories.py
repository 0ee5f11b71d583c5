"""Trajectories: the paper's examples (facts file §4.6), the tie rule, DDIM's variants, validation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import analytic_dpm as adpm
from analytic_dpm.trajectories import even_trajectory


def test_even_trajectory_paper_examples():
    assert adpm.even_trajectory(1000, 10).tolist() == [0, 1, 112, 223, 334, 445, 556, 667, 778, 889, 1000]
    t25 = adpm.even_trajectory(1000, 25)
    assert t25[1:7].tolist() == [1, 43, 84, 126, 168, 209]
    assert t25[-2:].tolist() == [958, 1000]
    t4000 = adpm.even_trajectory(4000, 25)
    assert t4000[1:7].tolist() == [1, 168, 334, 501, 668, 834]
    assert t4000[-2:].tolist() == [3833, 4000]


def test_even_trajectory_ties_round_half_to_even():
    # 1 + 12·999/24 = 500.5 → 500 (Python's round), and 1 + 12·3999/24 = 2000.5 → 2000
    assert adpm.even_trajectory(1000, 25)[13] == 500
    assert adpm.even_trajectory(4000, 25)[13] == 2000


def _float_accumulated_reference(N, K):
    """The official code's construction: accumulate the stride in floating point and apply Python's round."""
    a = (N - 1) / (K - 1)
    out, cur = [], 1.0
    for _ in range(K):
        out.append(round(cur))
        cur += a
    return [0] + out


@pytest.mark.parametrize("N", [1000, 4000])
@pytest.mark.parametrize("K", [10, 25, 50, 100, 200, 400, 1000])
def test_even_trajectory_matches_official_construction(N, K):
    assert adpm.even_trajectory(N, K).tolist() == _float_accumulated_reference(N, K)


def test_even_trajectory_edge_cases():
    assert adpm.even_trajectory(1, 1).tolist() == [0, 1]
    assert adpm.even_trajectory(7, 1).tolist() == [0, 7]
    assert adpm.even_trajectory(7, 7).tolist() == list(range(8))
    assert adpm.even_trajectory(1000, 2).tolist() == [0, 1, 1000]


@given(st.integers(1, 3000), st.data())
def test_even_trajectory_properties(N, data):
    K = data.draw(st.integers(1, N))
    tr = adpm.even_trajectory(N, K)
    assert tr.dtype == np.int64 and tr.shape == (K + 1,)
    assert tr[0] == 0 and tr[-1] == N and np.all(np.diff(tr) > 0)
    if K >= 2:
        assert tr[1] == 1


def test_quadratic_trajectory():
    tr = adpm.quadratic_trajectory(1000, 30)
    assert tr[0] == 0 and tr[-1] == 801 and tr.shape == (31,)
    assert np.all(np.diff(tr) > 0)
    # the official [int(v) + 1 for v in linspace(0, sqrt(800), K)**2] repeats 1 twice; here the repeat is bumped
    official = [int(v) + 1 for v in np.linspace(0, np.sqrt(800), 30) ** 2]
    assert official[:3] == [1, 1, 4]
    assert tr[1:4].tolist() == [1, 2, 4]
    assert tr[4:].tolist() == official[3:]
    tr90 = adpm.quadratic_trajectory(1000, 90)
    assert np.all(np.diff(tr90) > 0) and tr90.shape == (91,)


def test_ddim_stride_trajectory():
    assert adpm.ddim_stride_trajectory(1000, 10).tolist() == [0, 1, 101, 201, 301, 401, 501, 601, 701, 801, 901]


def test_make_and_validate():
    assert adpm.make_trajectory([1, 5, 10], 10).tolist() == [0, 1, 5, 10]
    assert adpm.validate_trajectory(np.array([0.0, 3.0, 4.0]), 4).dtype == np.int64
    s, t = adpm.transitions(adpm.even_trajectory(10, 3))
    assert s.tolist() == [0, 1, 6] and t.tolist() == [1, 6, 10]


@pytest.mark.parametrize("N,expected_diff", [(1000, 301), (4000, 1228)])
def test_official_rounding_against_exact_for_every_K(N, expected_diff):
    """rounding='official' reproduces the official code's float accumulation (written here from its description,
    facts file §4.6: cur = 1.0; K times: append round(cur); cur += (N − 1)/(K − 1)); the exact default differs from it
    only at x.5 ties, by one, at 301 of 999 K (N = 1000) and 1228 of 3999 (N = 4000)."""
    differ = 0
    for K in range(1, N + 1):
        off = even_trajectory(N, K, rounding="official")
        if K >= 2:
            a, cur, ref = (N - 1) / (K - 1), 1.0, []
            for _ in range(K):
                ref.append(round(cur))
                cur += a
            np.testing.assert_array_equal(off[1:], ref)
        ex = even_trajectory(N, K)
        assert off[0] == 0 and off[-1] == N and np.all(np.diff(off) > 0) and (K == 1 or off[1] == 1)
        if not np.array_equal(off, ex):
            differ += 1
            d = np.flatnonzero(off != ex)
            assert np.all(np.abs(off[d] - ex[d]) == 1)
            k = d - 1  # τ index k − 1 = 0-based position in 1..K
            assert np.all(2 * ((K - 1) + k * (N - 1)) % (2 * (K - 1)) == K - 1)  # the exact value is a tie x.5
    assert differ == expected_diff


def test_official_rounding_examples_and_errors():
    assert even_trajectory(1000, 15, rounding="official")[8] == 501
    assert even_trajectory(1000, 15)[8] == 500
    for N, K in ((1000, 10), (1000, 25), (1000, 50), (1000, 100), (1000, 200), (1000, 400), (4000, 25),
                 (4000, 50), (4000, 100), (4000, 200), (4000, 400), (4000, 1000)):  # the paper's tables: no drift
        np.testing.assert_array_equal(even_trajectory(N, K, rounding="official"), even_trajectory(N, K))
    with pytest.raises(ValueError, match="rounding must be 'exact'.*'official'"):
        even_trajectory(1000, 10, rounding="half-up")
