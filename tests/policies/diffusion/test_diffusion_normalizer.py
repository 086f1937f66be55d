from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies.diffusion.normalizer import Normalizer


@pytest.mark.parametrize("mode", ["minmax", "meanstd"])
def test_round_trip_numpy_and_torch(mode):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, [0.1, 2.0, 50.0], size=(200, 3))
    norm = Normalizer.fit(x, mode)
    y = norm.normalize(x)
    np.testing.assert_allclose(norm.unnormalize(y), x, rtol=1e-12, atol=1e-12)
    xt = torch.from_numpy(x)
    yt = norm.normalize(xt)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float64
    torch.testing.assert_close(norm.unnormalize(yt), xt)
    if mode == "minmax":
        np.testing.assert_allclose(y.min(0), -1.0, atol=1e-12)
        np.testing.assert_allclose(y.max(0), 1.0, atol=1e-12)
    else:
        np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-12)
        np.testing.assert_allclose(y.std(0), 1.0, atol=1e-12)


def test_constant_dimension_is_centered_not_scaled():
    x = np.stack([np.linspace(0, 1, 10), np.full(10, 7.0)], axis=1)
    norm = Normalizer.fit(x, "minmax")
    y = norm.normalize(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[:, 1], 0.0)
    assert norm.normalize(np.array([[0.5, 8.0]]))[0, 1] == pytest.approx(1.0)  # unit scale, no blow-up


def test_json_round_trip_is_exact():
    x = np.random.default_rng(1).uniform(-5, 5, size=(50, 4))
    norm = Normalizer.fit(x, "minmax")
    back = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(back.normalize(x), norm.normalize(x))


def test_errors_say_expected_and_received():
    with pytest.raises(ValueError, match="expected one of"):
        Normalizer.fit(np.zeros((3, 2)), "bogus")
    with pytest.raises(ValueError, match="expected finite"):
        Normalizer.fit(np.array([[np.nan, 1.0]]), "minmax")
    norm = Normalizer.fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match="expected last dimension 3"):
        norm.normalize(np.zeros((2, 4)))
