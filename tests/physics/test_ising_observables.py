"""Observables on known configurations and against brute-force loops; the jackknife on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from physics import observables as ob


def _random(n: int, L: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=(n, L, L))


def _checkerboard(n: int, L: int) -> np.ndarray:
    i, j = np.indices((L, L))
    return np.broadcast_to(np.where((i + j) % 2 == 0, 1, -1).astype(np.int8), (n, L, L)).copy()


def test_all_up_lattice():
    up = np.ones((12, 8, 8), dtype=np.int8)
    assert ob.energy(up) == ob.Estimate(-2.0, 0.0)
    assert ob.abs_magnetization(up).value == 1.0
    assert ob.magnetization_squared(up).value == 1.0
    assert ob.binder_cumulant(up).value == pytest.approx(2.0 / 3.0)
    assert ob.specific_heat(up, 2.0).value == 0.0
    assert ob.susceptibility(up, 2.0).value == 0.0
    np.testing.assert_allclose(ob.two_point(up).value, 1.0)
    np.testing.assert_allclose(ob.four_point_connected(up).value, -2.0)  # 1 - 2 * 1 - 1
    sk = ob.structure_factor(up)
    np.testing.assert_allclose(sk.value, 0.0, atol=1e-12)  # all weight at k = 0, which is excluded


def test_checkerboard_lattice():
    cb = _checkerboard(5, 8)
    assert ob.energy(cb).value == 2.0
    assert ob.abs_magnetization(cb).value == 0.0
    np.testing.assert_allclose(ob.two_point(cb).value, [(-1) ** r for r in range(5)])
    sk = ob.structure_factor(cb)
    # All weight sits at k = (pi, pi), |n| = 4 sqrt 2 > L/2 = 4: outside the full shells.
    np.testing.assert_allclose(sk.value, 0.0, atol=1e-12)


def test_random_spins_are_uncorrelated():
    s = _random(3000, 16)
    g = ob.two_point(s)
    assert g.value[0] == 1.0
    assert np.all(np.abs(g.value[1:]) < 4 * g.stderr[1:] + 1e-12)
    sk = ob.structure_factor(s)
    assert np.all(np.abs(sk.value - 1.0) < 4 * sk.stderr)  # white noise: S(k) = 1
    g4 = ob.four_point_connected(s)
    assert np.all(np.abs(g4.value) < 4 * g4.stderr)
    assert abs(ob.energy(s).value) < 4 * ob.energy(s).stderr
    assert ob.binder_cumulant(s).value == pytest.approx(0.0, abs=0.05)  # Gaussian m: U4 -> 0


def _two_point_loops(s: np.ndarray, r_max: int) -> np.ndarray:
    n, L, _ = s.shape
    out = np.zeros((n, r_max + 1))
    for r in range(r_max + 1):
        for i in range(L):
            for j in range(L):
                out[:, r] += s[:, i, j] * (s[:, i, (j + r) % L] + s[:, (i + r) % L, j]) / (2.0 * L * L)
    return out


def _structure_factor_dft(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, L, _ = s.shape
    x = np.arange(L)
    shell, _ = ob.shells(L)
    out = np.zeros((n, L // 2))
    count = np.zeros(L // 2)
    for a in range(L):
        for b in range(L):
            q = shell[a, b]
            if q < 0:
                continue
            phase = np.exp(-2j * np.pi * (a * x[:, None] + b * x[None, :]) / L)
            out[:, q - 1] += np.abs((s * phase).sum(axis=(1, 2))) ** 2 / (L * L)
            count[q - 1] += 1
    return out / count


def _four_point_loops(s: np.ndarray, ell: int) -> float:
    n, L, _ = s.shape
    four = side = d = 0.0
    for i in range(L):
        for j in range(L):
            a, b, c, e = (s[:, i, j], s[:, i, (j + ell) % L], s[:, (i + ell) % L, j],
                          s[:, (i + ell) % L, (j + ell) % L])
            four += np.mean(a * b * c * e)
            side += np.mean(a * b + a * c) / 2
            d += np.mean(a * e + b * c) / 2  # the (l, l) and (l, -l) diagonals
    sites = L * L
    return four / sites - 2 * (side / sites) ** 2 - (d / sites) ** 2


def test_per_sample_functions_match_loops():
    s = _random(6, 6, seed=2)
    np.testing.assert_allclose(ob.two_point_per_sample(s), _two_point_loops(s, 3), atol=1e-12)
    _, sk = ob.structure_factor_per_sample(s)
    np.testing.assert_allclose(sk, _structure_factor_dft(s), atol=1e-10)
    g4 = ob.four_point_connected(s, ls=[1, 2, 3])
    np.testing.assert_allclose(g4.value, [_four_point_loops(s, ell) for ell in (1, 2, 3)], atol=1e-12)
    e = -np.array([sum(x[i, j] * (x[i, (j + 1) % 6] + x[(i + 1) % 6, j]) for i in range(6) for j in range(6))
                   for x in s.astype(int)]) / 36
    np.testing.assert_allclose(ob.energy_per_site(s), e)
    np.testing.assert_allclose(ob.energy_per_site(s.astype(np.float32)), e)  # real fields too


def test_jackknife_of_a_mean_is_the_standard_error():
    x = np.random.default_rng(1).normal(size=500)
    v, e = ob.jackknife(lambda a: a, [x], n_blocks=500)
    assert v == pytest.approx(x.mean())
    assert e == pytest.approx(x.std(ddof=1) / np.sqrt(500), rel=1e-10)
    # blocked: the error of the block means
    v, e = ob.jackknife(lambda a: a, [x], n_blocks=10)
    means = x.reshape(10, 50).mean(axis=1)
    assert e == pytest.approx(means.std(ddof=1) / np.sqrt(10), rel=1e-10)


def test_jackknife_error_of_a_nonlinear_function_is_sane():
    """Variance of a Gaussian sample: jackknife error close to sigma^2 sqrt(2 / n)."""
    x = np.random.default_rng(5).normal(scale=2.0, size=20000)
    v, e = ob.jackknife(lambda a, b: b - a * a, [x, x * x])
    assert v == pytest.approx(4.0, rel=0.05)
    assert e == pytest.approx(4.0 * np.sqrt(2 / 20000), rel=0.3)


def test_log_slope_recovers_a_power_law():
    k = np.linspace(0.2, 1.5, 7)
    assert ob.log_slope(k, 3.0 * k**-1.75) == pytest.approx(-1.75)
    batch = np.stack([k**-1.0, k**-2.0])
    np.testing.assert_allclose(ob.log_slope(k, batch), [-1.0, -2.0])


def test_summary_is_plain_json_and_consistent():
    import json

    s = _random(64, 8, seed=3)
    out = ob.summary(s, temperature=2.5)
    json.dumps(out)
    for name in ob.SCALARS:
        assert set(out[name]) == {"value", "stderr"}
    assert out["energy"]["value"] == pytest.approx(ob.energy(s).value)
    assert out["two_point"]["r"] == list(range(5))
    assert out["four_point_connected"]["l"] == [1, 2]
    assert "structure_factor_slope" in out
    no_t = ob.summary(s)
    assert "specific_heat" not in no_t and "susceptibility" not in no_t


def test_channel_axis_and_spin_discretization():
    s = _random(10, 8)
    noisy = s[:, None].astype(np.float32) * 0.7 + 0.01
    np.testing.assert_array_equal(ob.as_spins(noisy), s)
    assert ob.energy(s[:, None]).value == ob.energy(s).value


@pytest.mark.parametrize("bad,exc", [
    (np.ones((4, 4), np.int8), ValueError),
    (np.ones((3, 4, 5), np.int8), ValueError),
    (np.ones((3, 2, 4, 4), np.int8), ValueError),
    (np.full((3, 4, 4), np.nan), ValueError),
    (np.ones((3, 4, 4), dtype=bool), TypeError),
])
def test_bad_shapes_and_values(bad, exc):
    with pytest.raises(exc):
        ob.energy(bad)


def test_bad_parameters():
    s = _random(10, 8)
    with pytest.raises(ValueError, match="square sides"):
        ob.four_point_connected(s, ls=[5])
    with pytest.raises(ValueError, match="r_max"):
        ob.two_point(s, r_max=9)
    with pytest.raises(ValueError, match="n_blocks"):
        ob.energy(s, n_blocks=11)
    with pytest.raises(ValueError, match="k_range"):
        ob.structure_factor_slope(s, k_range=(2.0, 2.1))
    with pytest.raises(ValueError, match="temperature"):
        ob.specific_heat(s, 0.0)
