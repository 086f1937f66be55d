from __future__ import annotations

import json

import numpy as np
import pytest

from physics.datasets import load_spins, save_spins
from simdiff.errors import DatasetError


def _spins(n=5, L=4, seed=0):
    return np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=(n, L, L))


def test_round_trip(tmp_path):
    s = _spins()
    meta = {"L": 4, "temperature": 2.269185, "algorithm": "wolff", "seed": 3, "thin": 2,
            "tau_int_energy": float("nan"), "notes": ["a"], "coarse": {"factor": 2}}
    path = save_spins(tmp_path / "d.npz", s, meta, arrays={"energy": np.arange(5.0)})
    data = load_spins(path)
    np.testing.assert_array_equal(data.spins, s)
    assert data.spins.dtype == np.int8
    assert data.metadata["algorithm"] == "wolff" and data.metadata["coarse"] == {"factor": 2}
    assert data.metadata["tau_int_energy"] is None  # NaN is stored as JSON null
    assert data.L == 4 and data.temperature == pytest.approx(2.269185)
    np.testing.assert_array_equal(data.arrays["energy"], np.arange(5.0))
    # Plain numpy sees the same, without pickle.
    with np.load(path, allow_pickle=False) as raw:
        assert raw["spins"].dtype == np.int8 and int(raw["L"]) == 4 and str(raw["algorithm"]) == "wolff"
        assert json.loads(str(raw["metadata"]))["seed"] == 3


def test_refuses_to_overwrite_and_writes_nothing_on_bad_input(tmp_path):
    path = tmp_path / "d.npz"
    save_spins(path, _spins())
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_spins(path, _spins(seed=1))
    assert path.read_bytes() == before
    save_spins(path, _spins(seed=1), overwrite=True)
    assert path.read_bytes() != before
    for bad in (np.zeros((2, 4, 4), np.int8), _spins().astype(np.float32), np.ones((2, 4, 5), np.int8)):
        with pytest.raises(DatasetError):
            save_spins(tmp_path / "bad.npz", bad)
    with pytest.raises(DatasetError, match=".npz"):
        save_spins(tmp_path / "bad.txt", _spins())
    with pytest.raises(TypeError, match="plain JSON"):
        save_spins(tmp_path / "bad.npz", _spins(), {"x": object()})
    assert not (tmp_path / "bad.npz").exists() and not (tmp_path / "bad.txt").exists()


def test_corrupt_and_malformed_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_spins(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_spins(junk)
    good = save_spins(tmp_path / "good.npz", _spins(n=50, L=16))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_spins(truncated)
    np.savez(tmp_path / "nospins.npz", samples=np.ones((2, 4, 4)))
    with pytest.raises(DatasetError, match="no 'spins' array; keys found: \\['samples'\\]"):
        load_spins(tmp_path / "nospins.npz")
    np.savez(tmp_path / "values.npz", spins=np.full((2, 4, 4), 2, dtype=np.int8))
    with pytest.raises(DatasetError, match=r"\+-1"):
        load_spins(tmp_path / "values.npz")
    np.savez(tmp_path / "float.npz", spins=np.ones((2, 4, 4), dtype=np.float32))
    with pytest.raises(DatasetError, match="int8"):
        load_spins(tmp_path / "float.npz")
    np.savez(tmp_path / "pickle.npz", spins=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError):
        load_spins(tmp_path / "pickle.npz")


def test_plain_files_without_metadata_load(tmp_path):
    np.savez(tmp_path / "plain.npz", spins=np.ones((3, 4, 4), dtype=np.int64), L=4, temperature=2.5)
    data = load_spins(tmp_path / "plain.npz")
    assert data.spins.dtype == np.int8
    assert data.metadata == {"L": 4, "temperature": 2.5}
