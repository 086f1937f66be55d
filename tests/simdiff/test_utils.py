from __future__ import annotations

import json

import pytest
import yaml

from simdiff.utils.io import atomic_write_text, ensure_new_path, read_json, write_json
from simdiff.utils.run import package_versions, record_run


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "b.txt", "hello")
    assert p.read_text() == "hello"
    assert [x.name for x in p.parent.iterdir()] == ["b.txt"]


def test_json_round_trip_and_errors(tmp_path):
    import numpy as np

    write_json(tmp_path / "m.json", {"x": np.float32(1.5), "arr": np.arange(3)})
    assert read_json(tmp_path / "m.json") == {"x": 1.5, "arr": [0, 1, 2]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


def test_ensure_new_path_refuses_overwrite(tmp_path):
    f = tmp_path / "out.npz"
    f.write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        ensure_new_path(f)
    assert ensure_new_path(f, overwrite=True) == f
    assert f.read_text() == "keep me"


def test_record_run_writes_config_seed_versions(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Cfg:
        lr: float = 1e-3
        dims: tuple[int, ...] = (1, 2)

    record_run(tmp_path, config=Cfg(), seed=7, command=["simdiff", "x"])
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["seed"] == 7 and info["command"] == ["simdiff", "x"]
    assert info["versions"]["torch"] == package_versions()["torch"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"lr": 1e-3, "dims": [1, 2]}
