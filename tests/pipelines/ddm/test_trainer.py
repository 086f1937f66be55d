"""Decentralized training: isolation, resume of a killed expert, corrupt checkpoints, missing router, sampling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from simdiff.errors import CheckpointError
from simdiff.pipelines.ddm.trainer import member_dir, member_job, train_ddm

from .conftest import L, load, make_lattices, tiny_config, write_lattices


def _weights(run: Path, member: str, export: str = "model") -> bytes:
    return (member_dir(run, member) / export / "weights.safetensors").read_bytes()


def _mtime(run: Path, member: str, export: str = "model") -> int:
    return (member_dir(run, member) / export / "weights.safetensors").stat().st_mtime_ns


def test_trained_run_layout_and_compute_summary(trained_run):
    run, summary = trained_run
    members = summary["members"]
    assert {m["status"] for m in members.values()} == {"trained"}
    sizes = summary["partition"]["sizes"]
    assert sorted(sizes) == [16, 16, 16]
    expert_steps = [members[f"expert_{k}"]["steps"] for k in range(3)]
    assert sum(expert_steps) == members["monolithic"]["steps"] == 30          # matched compute
    c = summary["compute"]
    assert c["experts_over_monolithic_flops"] == pytest.approx(1.0, rel=1e-9)
    assert 0 < c["router_share_flops"] < 0.5
    plan = json.loads((run / "plan.json").read_text())
    assert plan["members"]["expert_0"]["shard"] == "shards/expert_0.npz"
    with np.load(run / "shards" / "expert_1.npz") as z:
        assert z["spins"].shape == (sizes[1], L, L)
    for name in ("expert_0", "expert_1", "expert_2", "monolithic"):
        assert (member_dir(run, name) / "model" / "meta.json").exists()
    assert (run / "router" / "model" / "meta.json").exists()


def test_rerun_keeps_finished_members(run_copy, lattice_data):
    before = {m: _mtime(run_copy, m) for m in ("expert_0", "expert_2", "monolithic")}
    summary = train_ddm(load(tiny_config(lattice_data)), run_copy, backend="sequential", command=["test"])
    assert {m["status"] for m in summary["members"].values()} == {"cached"}
    assert {m: _mtime(run_copy, m) for m in before} == before


def test_killed_expert_resumes_alone_and_ends_identical(trained_run, run_copy, lattice_data):
    cfg = load(tiny_config(lattice_data))
    shutil.rmtree(member_dir(run_copy, "expert_1"))
    first = train_ddm(cfg, run_copy, backend="sequential", stop_after={"expert_1": 4}, command=["test"])
    assert first["members"]["expert_1"]["status"] == "stopped"          # killed after its step-4 checkpoint
    assert not (member_dir(run_copy, "expert_1") / "model").exists()
    untouched = {m: _mtime(run_copy, m) for m in ("expert_0", "expert_2", "monolithic")}
    second = train_ddm(cfg, run_copy, backend="sequential", command=["test"])
    st = {m: v["status"] for m, v in second["members"].items()}
    assert st == {"expert_0": "cached", "expert_1": "resumed", "expert_2": "cached", "router": "cached",
                  "monolithic": "cached"}
    assert second["members"]["expert_1"]["resumed_from"] == 4
    assert {m: _mtime(run_copy, m) for m in untouched} == untouched
    # deterministic resume: the same weights as the uninterrupted run
    assert _weights(run_copy, "expert_1") == _weights(trained_run[0], "expert_1")


def test_corrupt_expert_checkpoints_are_detected_and_retrained(trained_run, run_copy):
    ref = _weights(trained_run[0], "expert_0")
    # 1. a corrupt export: re-exported from the (valid) training checkpoint
    w = member_dir(run_copy, "expert_0") / "model" / "weights.safetensors"
    blob = bytearray(w.read_bytes())
    blob[-5] ^= 0xFF
    w.write_bytes(bytes(blob))
    res = member_job(str(run_copy), "expert_0")
    assert res["status"] != "cached" and any("corrupt" in e for e in res["events"])
    assert _weights(run_copy, "expert_0") == ref
    # 2. a corrupt export and a corrupt training checkpoint: retrained from scratch, same weights
    w.write_bytes(b"garbage")
    ck = member_dir(run_copy, "expert_0") / "checkpoint" / "weights.safetensors"
    ck.write_bytes(ck.read_bytes()[:-100])
    res = member_job(str(run_copy), "expert_0")
    assert res["status"] == "trained" and res["resumed_from"] is None
    assert any("training checkpoint corrupt" in e for e in res["events"])
    assert _weights(run_copy, "expert_0") == ref
    assert sorted(p.name for p in member_dir(run_copy, "expert_0").iterdir() if "corrupt" in p.name) == [
        "checkpoint.corrupt-1", "model.corrupt-1", "model.corrupt-2"]


def test_missing_router_is_a_clear_error(run_copy, tmp_path):
    from simdiff.cli import main
    from simdiff.pipelines.ddm.sampling import sample_run

    shutil.rmtree(run_copy / "router" / "model")
    with pytest.raises(CheckpointError, match="router .*(missing|has not finished)"):
        sample_run(run_copy, "top1", n=4)
    assert main(["ddm", "sample", str(run_copy), "--n", "4", "--out", str(tmp_path / "s.npz")]) == 2
    assert not (tmp_path / "s.npz").exists()
    shutil.rmtree(run_copy / "router")
    with pytest.raises(CheckpointError, match="router is missing"):
        sample_run(run_copy, "full", n=4)


def test_expert_weights_do_not_depend_on_other_shards(tmp_path):
    """Given partition + fixed spectrum: changing the data of clusters 1 and 2 leaves expert 0 bit-identical."""
    base = make_lattices(seed=0)
    labels = np.repeat([0, 1, 2], 16)
    other = base.copy()
    other[labels != 0] = make_lattices(seed=9)[labels != 0]
    changed0 = base.copy()
    changed0[:3] = -changed0[:3, ::-1]                 # cluster 0's own data differ: expert 0 must change
    np.savez(tmp_path / "labels.npz", labels=labels)
    weights = []
    for i, data in enumerate((base, other, changed0)):
        path = write_lattices(tmp_path / f"d{i}.npz", data)
        cfg = load(tiny_config(path, **{"partition.method": "given", "partition.path": str(tmp_path / "labels.npz"),
                                        "skild.process.spectrum": [1.0, 0.8, 2.0], "compute.split": "equal"}))
        train_ddm(cfg, tmp_path / f"run{i}", backend="sequential", members=["expert_0"], command=["test"])
        weights.append(_weights(tmp_path / f"run{i}", "expert_0"))
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]


def test_sampling_routing_modes_and_cli(trained_run, tmp_path):
    from simdiff.cli import main
    from simdiff.pipelines.ddm.sampling import sample_run

    run, _ = trained_run
    evals = {}
    for routing in ("full", "top1", "top2"):
        arrays, info = sample_run(run, routing, n=6, seed=3)
        assert arrays["samples"].shape == (6, 1, L, L) and arrays["spins"].dtype == np.int8
        assert np.isfinite(arrays["samples"]).all()
        evals[routing] = info["routing_stats"]["expert_evals_per_row"]
    assert evals == {"full": 3.0, "top1": 1.0, "top2": 2.0}
    again, _ = sample_run(run, "top2", n=6, seed=3)
    assert np.array_equal(again["samples"], sample_run(run, "top2", n=6, seed=3)[0]["samples"])
    out = tmp_path / "s.npz"
    assert main(["ddm", "sample", str(run), "--routing", "top1", "--n", "5", "--seed", "1", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["spins"].shape == (5, L, L) and json.loads(str(z["info"]))["routing"] == "top1"
    assert main(["ddm", "sample", str(run), "--n", "5", "--out", str(out)]) == 2          # no --overwrite
    assert main(["ddm", "sample", str(run), "--model", "monolithic", "--n", "5", "--out", str(out),
                 "--overwrite"]) == 0


def test_mixture_of_identical_experts_reproduces_single_model_generation(trained_run):
    from simdiff.pipelines.ddm.lattice import sample_mixture
    from simdiff.pipelines.ddm.trainer import load_member, load_router
    from simdiff.pipelines.skild.core import generate

    run, _ = trained_run
    mono = load_member(run, "monolithic")
    single = generate(mono, 10, seed=5, steps=5, batch_size=4)
    mix = sample_mixture([mono] * 3, load_router(run), "top1", 10, seed=5, steps=5, batch_size=4)
    assert torch.equal(mix, single)
    full = sample_mixture([mono] * 3, load_router(run), "full", 10, seed=5, steps=5, batch_size=4)
    assert torch.allclose(full, single, atol=1e-4)


def test_compare_writes_report_and_metrics(trained_run, tmp_path):
    from simdiff.cli import main

    run, _ = trained_run
    ref = write_lattices(tmp_path / "ref.npz", make_lattices(n=30, seed=4))
    out = tmp_path / "cmp"
    assert main(["ddm", "compare", str(run), "--reference", str(ref), "--n", "12", "--routing", "full,top1",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["generation"]) == {"ddm_full", "ddm_top1", "monolithic"}
    for e in m["generation"].values():
        assert e["summed_normalized_error"] >= 0 and len(e["occupancy"]) == 3
    assert 0 <= m["router"]["accuracy"] <= 1
    text = (out / "report.md").read_text()
    assert "Router share" in text and "ddm_top1" in text
    assert main(["ddm", "compare", str(run), "--reference", str(ref), "--out", str(out)]) == 2   # no --overwrite
    assert main(["ddm", "compare", str(run), "--out", str(tmp_path / "x")]) == 2                # no --reference


def test_config_errors_are_user_errors(tmp_path, lattice_data):
    from simdiff.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: ising\nnum_expert: 3\n")
    assert main(["ddm", "train", str(bad), "--out", str(tmp_path / "r")]) == 2
    with pytest.raises(ValueError, match="skild"):
        load({"domain": "ising"})
    run = tmp_path / "r2"
    train_ddm(load(tiny_config(lattice_data)), run, backend="sequential", members=["router"], command=["t"])
    with pytest.raises(ValueError, match="different config"):
        train_ddm(load(tiny_config(lattice_data, **{"router.steps": 13})), run, backend="sequential")
    # sampler settings do not change what is trained: allowed on a resume, and recorded for later sampling
    summary = train_ddm(load(tiny_config(lattice_data, **{"skild.sample.steps": 3})), run, backend="sequential",
                        members=["router"])
    assert summary["members"]["router"]["status"] == "cached"
    from simdiff.pipelines.ddm.trainer import load_run_config

    assert load_run_config(run).skild.sample.steps == 3
