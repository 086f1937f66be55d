"""Where jobs run never changes what they compute: the same config and seed give the same bits sequentially, on the
local process pool and on Ray."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from simdiff.config import load_config
from simdiff.pipelines.mol.config import MolConfig, with_overrides
from simdiff.pipelines.mol.stages import build_stages, invalidate_from, run_pipeline

TINY = Path(__file__).resolve().parents[3] / "configs" / "mol" / "tiny.yaml"


def _weights(root: Path, d: int) -> bytes:
    return (root / "specialists" / f"domain_{d}" / "policy" / "weights.safetensors").read_bytes()


@pytest.mark.ray
def test_local_and_ray_executors_give_the_same_specialists(tmp_path):
    pytest.importorskip("ray")
    import ray

    cfg = with_overrides(load_config(MolConfig, TINY), env={"domains": [0, 1]}, specialist={"steps": 8},
                         executor={"backend": "local", "workers": 1})  # one worker: fewer process starts
    run_pipeline(cfg, tmp_path / "local", stop_after="specialists", quiet=True)
    # The same run directory, specialists redone on Ray (the demos are shared, so only training differs).
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    invalidate_from(tmp_path / "ray", build_stages(cfg), "specialists")  # clears the specialists too
    assert not (tmp_path / "ray" / "specialists").exists()
    ray_cfg = with_overrides(cfg, executor={"backend": "ray", "workers": 1})
    try:
        run_pipeline(ray_cfg, tmp_path / "ray", stop_after="specialists", quiet=True)
    finally:
        ray.shutdown()
    for d in (0, 1):
        assert _weights(tmp_path / "local", d) == _weights(tmp_path / "ray", d)
    assert _weights(tmp_path / "local", 0) != _weights(tmp_path / "local", 1)


def _artifacts(root: Path) -> dict[str, bytes]:
    exts = (".npz", ".npy", ".safetensors", ".hdf5")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.suffix in exts}


def test_sequential_and_pool_runs_are_bit_identical_through_distillation(tmp_path):
    # Demos, specialists, conditions, pseudo-labels and a generalist: every array and weight file, byte for byte.
    cfg = with_overrides(load_config(MolConfig, TINY), env={"domains": [0, 1]}, specialist={"steps": 8},
                         generalist={"steps": 8}, dagger={"rounds": 0})
    run_pipeline(cfg, tmp_path / "seq", stop_after="generalist_r0", quiet=True)
    pool = with_overrides(cfg, executor={"backend": "local", "workers": 2})
    run_pipeline(pool, tmp_path / "pool", stop_after="generalist_r0", quiet=True)
    a, b = _artifacts(tmp_path / "seq"), _artifacts(tmp_path / "pool")
    assert any(k.startswith("generalists/") for k in a) and any(k.startswith("pseudo/") for k in a)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
