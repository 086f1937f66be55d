from __future__ import annotations

from pathlib import Path

import pytest

from simdiff.config import load_config
from simdiff.pipelines.mol.config import MolConfig, with_overrides
from simdiff.pipelines.mol.report import cell, write_metrics
from simdiff.pipelines.mol.sweep import (
    aggregate,
    plot_sweep,
    point_dirs,
    render_sweep_report,
    run_sweep,
    sweep_points,
)

TINY = Path(__file__).resolve().parents[3] / "configs" / "mol" / "tiny.yaml"
LEVELS = ("level_0", "level_1", "level_2", "level_3", "shift")


def _cfg(**sweep) -> MolConfig:
    base = with_overrides(MolConfig(), specialist={"size": "tiny"})
    return with_overrides(base, sweep={"paired_demos": [5, 10], "seeds": [0, 1, 2],
                                       "specialist_sizes": ["tiny", "small"], "size_sweep_demos": 10, **sweep})


def test_points_cover_demos_and_sizes_and_share_identical_runs():
    cfg = _cfg()
    pts = sweep_points(cfg)
    assert len(pts) == 2 * 3 + 2 * 3
    assert {p.cfg.demos.per_domain for p in pts if p.family == "demos"} == {5, 10}
    assert {p.cfg.specialist.size for p in pts if p.family == "size"} == {"tiny", "small"}
    assert all(p.cfg.generalist == cfg.generalist for p in pts)  # generalist fixed throughout
    dirs = point_dirs(pts)
    # size point (tiny, N=10, seed s) is the demos point (N=10, seed s): run once.
    assert dirs["size_tiny_seed1"] == "demos_N10_seed1"
    assert dirs["size_small_seed1"] == "size_small_seed1"
    assert len(set(dirs.values())) == 6 + 3
    # replicates change the training data seeds, never the evaluation seeds
    a, b = (p.cfg for p in pts if p.family == "demos" and p.x == 5 and p.seed in (0, 1))
    assert a.demo_seed(0) != b.demo_seed(0) and a.eval_seed() == b.eval_seed()


def test_aggregate_table_and_plots(tmp_path):
    cfg = _cfg()
    pts = sweep_points(cfg)
    dirs = point_dirs(pts)
    for i, name in enumerate(sorted(set(dirs.values()))):
        k = 10 + i
        methods = {m: {lv: cell(k + j, 40) for lv in LEVELS}
                   for j, m in enumerate(("specialists", "generalist_labeled_only", "generalist_distilled"))}
        write_metrics(tmp_path / "points" / name / "metrics.json", methods)
    summary = aggregate(pts, dirs, tmp_path)
    row = summary["table"]["demos"]["5"]["generalist_distilled"]
    assert len(row["avg"]) == 3 and row["avg_mean"] is not None and row["avg_std"] > 0
    assert not summary["failures"]
    text = render_sweep_report(cfg, summary, [str(p) for p in plot_sweep(summary, tmp_path / "plots")])
    assert "| paired demos per domain |" in text and "| specialist size |" in text
    assert (tmp_path / "plots" / "sweep_demos.png").is_file() and (tmp_path / "plots" / "sweep_size.png").is_file()


def test_missing_point_is_reported_not_dropped(tmp_path):
    cfg = _cfg(paired_demos=[5], seeds=[0], specialist_sizes=["tiny"], size_sweep_demos=5)
    pts = sweep_points(cfg)
    summary = aggregate(pts, point_dirs(pts), tmp_path, failures={"demos_N5_seed0": "boom"})
    assert summary["failures"] == {"demos_N5_seed0": "boom"}
    assert summary["table"]["demos"]["5"]["_missing"] == [0]


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path):
    cfg = with_overrides(load_config(MolConfig, TINY), dagger={"rounds": 0},
                         sweep={"paired_demos": [2, 3], "seeds": [0], "specialist_sizes": ["tiny"],
                                "size_sweep_demos": 3})
    summary = run_sweep(cfg, tmp_path, log=lambda m: None)
    assert not summary["failures"]
    assert (tmp_path / "report.md").is_file() and (tmp_path / "sweep.json").is_file()
    assert set(summary["table"]["demos"]) == {"2", "3"}
