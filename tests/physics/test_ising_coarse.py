from __future__ import annotations

import numpy as np
import pytest

from physics.coarse import block_average, block_spin


def test_majority_rule_on_a_known_lattice():
    s = np.array([[1, 1, -1, -1],
                  [1, -1, -1, -1],
                  [1, 1, 1, -1],
                  [-1, 1, -1, 1]], dtype=np.int8)[None]
    # blocks: sums +2, -4, +2, 0 -> the last block is a tie
    out = block_spin(s, 2, seed=0)
    assert out.shape == (1, 2, 2) and out.dtype == np.int8
    assert out[0, 0, 0] == 1 and out[0, 0, 1] == -1 and out[0, 1, 0] == 1
    assert out[0, 1, 1] in (-1, 1)
    np.testing.assert_allclose(block_average(s, 2)[0], [[0.5, -1.0], [0.5, 0.0]])


def test_ties_use_a_seeded_fair_coin():
    # Every 2x2 block of a checkerboard ties.
    i, j = np.indices((64, 64))
    cb = np.where((i + j) % 2 == 0, 1, -1).astype(np.int8)[None].repeat(4, axis=0)
    a = block_spin(cb, 2, seed=1)
    np.testing.assert_array_equal(a, block_spin(cb, 2, seed=1))
    assert not np.array_equal(a, block_spin(cb, 2, seed=2))
    assert abs(a.mean()) < 0.05  # fair
    assert set(np.unique(a)) == {-1, 1}


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_uniform_lattices_stay_uniform(factor):
    up = np.ones((3, 16, 16), dtype=np.int8)
    np.testing.assert_array_equal(block_spin(up, factor), np.ones((3, 16 // factor, 16 // factor)))
    np.testing.assert_array_equal(block_spin(-up, factor), -np.ones((3, 16 // factor, 16 // factor)))
    assert block_average(up, factor).dtype == np.float32


def test_odd_block_never_ties_and_channel_axis_is_accepted():
    s = np.random.default_rng(0).choice(np.array([-1, 1], dtype=np.int8), size=(5, 1, 9, 9))
    out = block_spin(s, 3)
    sums = s[:, 0].reshape(5, 3, 3, 3, 3).sum(axis=(2, 4))
    np.testing.assert_array_equal(out, np.sign(sums))


def test_bad_factors():
    s = np.ones((2, 12, 12), dtype=np.int8)
    with pytest.raises(ValueError, match="divisor of L = 12"):
        block_spin(s, 5)
    with pytest.raises(ValueError, match="factor"):
        block_spin(s, 1)
    with pytest.raises(ValueError, match="factor"):
        block_average(s, 0)
