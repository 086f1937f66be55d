from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from simdiff.config import load_config
from simdiff.pipelines.planner import ExperimentsConfig, flop_ratio_to_reach, run_experiments, variant_configs

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "planner" / "tiny.yaml"


def _curve(points):
    return [{"step": i, "train_flops": f, "val_bits": {"2": v, "1": v}} for i, (f, v) in enumerate(points)]


def test_flop_ratio_interpolates_in_log_flops():
    ref = _curve([(1e9, 3.0), (2e9, 2.5), (4e9, 2.0)])
    looped = _curve([(1e9, 2.8), (4e9, 1.8)])
    r = flop_ratio_to_reach(looped, ref, "2", "1")
    # 2.0 is reached 80% of the way from 2.8 to 1.8 in log-FLOPs between 1e9 and 4e9
    assert r["reached"] and r["looped_flops_to_reach"] == pytest.approx(math.exp(math.log(1e9) + 0.8 * math.log(4)))
    assert r["ratio"] == pytest.approx(4e9 / r["looped_flops_to_reach"])
    never = flop_ratio_to_reach(_curve([(1e9, 2.9), (4e9, 2.4)]), ref, "2", "1")
    assert not never["reached"] and never["ratio"] is None and never["looped_final_bits"] == 2.4


def test_variants_match_parameters_and_flops():
    from policies.planner.model import PlannerModel

    cfg = load_config(ExperimentsConfig, CONFIG, {"base": {"planner": {"net": {"n_loop": 2}, "train_loops": 3}}})
    v = variant_configs(cfg.base, (1, 4))
    nets = {k: PlannerModel(c.planner.net, 8, 8, 2, 12, 8) for k, c in v.items()}
    loops = {k: c.planner.train_loops for k, c in v.items()}
    assert nets["looped"].num_parameters() == nets["same_params"].num_parameters() < nets["same_flops"].num_parameters()
    assert nets["looped"].flops(loops["looped"]) == nets["same_flops"].flops(loops["same_flops"])
    assert v["same_flops"].planner.net.n_loop == 6 and v["random_loops"].planner.train_loops_range == (1, 4)


def test_compute_experiment_end_to_end(tmp_path):
    res = run_experiments(CONFIG, tmp_path / "out", overrides={"experiments": ["compute"]})
    out = tmp_path / "out"
    for name in ("report.md", "metrics.json", "compute.png", "demos.hdf5", "config.yaml"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["compute"]["variants"]) == {"looped", "same_params", "same_flops"}
    assert "loops" not in metrics and res["compute"]["looped_vs_same_params"]["target_bits"] > 0
    report = (out / "report.md").read_text()
    assert "Matched compute" in report and "ratio" in report or "does **not** reach" in report
    # resuming reuses the finished models instead of retraining them
    again = run_experiments(CONFIG, out, overrides={"experiments": ["compute"]}, resume=True)
    assert again["models"]["looped"]["train_flops"] == res["models"]["looped"]["train_flops"]


@pytest.mark.slow
def test_all_experiments_tiny(tmp_path):
    res = run_experiments(CONFIG, tmp_path / "out")
    assert [r["loops"] for r in res["loops"]["looped"]["rows"]] == [1, 2]
    assert len(res["frontier"]["points"]) == 4
    assert any(p["pareto_plan_rmse"] for p in res["frontier"]["points"])
    for name in ("loops.png", "compute.png", "frontier.png"):
        assert (tmp_path / "out" / name).exists()
