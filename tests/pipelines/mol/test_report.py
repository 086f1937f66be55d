from __future__ import annotations

import json

import pytest

from simdiff.pipelines.mol.report import (
    cell,
    format_table,
    headline,
    load_metrics,
    pooled,
    validate_metrics,
    wilson_interval,
    write_metrics,
    write_report,
)

LEVELS = ("level_0", "level_1", "level_2", "level_3", "shift")


def _methods(ps: dict[str, list[int]], n: int = 50) -> dict:
    return {m: {lv: cell(k, n) for lv, k in zip(LEVELS, ks)} for m, ks in ps.items()}


def test_wilson_known_values():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.8389, abs=1e-3)
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0, 0)


def test_pooled_cell_is_the_average_for_equal_episodes():
    c = pooled([cell(10, 20), cell(20, 20)])
    assert c["success"] == pytest.approx(0.75) and c["episodes"] == 40


def test_headline_checks_the_targets_exactly_at_the_boundary():
    # The cells of a measured run (200 episodes each): 550/800 vs. 470/800 successes is a gap of exactly 10
    # points, which float arithmetic computes as 9.999...
    base = {"specialists": [174, 58, 44, 27, 1], "generalist_labeled_only": [198, 136, 89, 47, 3],
            "generalist_distilled": [185, 156, 123, 86, 4], "expert": [200] * 5}
    hl = headline({"methods": _methods(base, n=200)})
    assert "+10.0 points (target >= +10: met)" in hl[0]
    below = dict(base, generalist_distilled=[185, 156, 123, 85, 4])
    assert "(target >= +10: not met)" in headline({"methods": _methods(below, n=200)})[0]


def test_metrics_schema_round_trip(tmp_path):
    methods = _methods({"specialists": [45, 40, 35, 30, 10], "generalist_distilled": [44, 41, 36, 31, 12],
                        "generalist_labeled_only": [30, 25, 20, 15, 5], "expert": [50, 50, 50, 50, 40]})
    write_metrics(tmp_path / "metrics.json", methods)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert set(data) == {"methods"}
    for m, levels in data["methods"].items():
        assert list(levels) == list(LEVELS), m
        for c in levels.values():
            assert set(c) == {"success", "ci95", "episodes"}
            assert c["ci95"][0] <= c["success"] <= c["ci95"][1] and c["episodes"] == 50
    assert load_metrics(tmp_path / "metrics.json") == data


@pytest.mark.parametrize("bad, match", [
    ({"methods": {}, "extra": 1}, "exactly one top-level key"),
    ({"methods": {"expert": {"level_0": {"success": 0.5, "ci95": [0.4, 0.6]}}}}, "expected keys"),
    ({"methods": {"expert": {"level_9x": {"success": 0.5, "ci95": [0.4, 0.6], "episodes": 10}}}}, "level keys"),
    ({"methods": {"expert": {"shift": {"success": 1.5, "ci95": [0.4, 0.6], "episodes": 10}}}}, r"\[0, 1\]"),
    ({"methods": {"expert": {"shift": {"success": 0.5, "ci95": [0.6, 0.7], "episodes": 10}}}}, "ci95"),
    ({"methods": {"expert": {"shift": {"success": 0.5, "ci95": [0.4, 0.6], "episodes": 0}}}}, "positive int"),
])
def test_metrics_schema_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_metrics(bad)


def test_table_and_headline_and_report(tmp_path):
    metrics = {"methods": _methods({"specialists": [50, 50, 45, 45, 10], "generalist_labeled_only": [30] * 5,
                                    "generalist_distilled": [48, 48, 46, 44, 20], "expert": [50] * 5})}
    table = format_table(metrics)
    lines = table.splitlines()
    assert "avg 0-3" in lines[0] and "shift" in lines[0]
    assert len(lines) == 2 + 4
    assert "generalist, distilled (MOL)" in table
    assert "| method |" in format_table(metrics, markdown=True)
    hl = headline(metrics)
    assert "+33.0 points" in hl[0] and "met" in hl[0]
    assert "98%" in hl[1]
    write_report(tmp_path, metrics, {"name": "t", "env_id": "simdiff/Push-v0", "evaluation": {"episodes": 50}})
    text = (tmp_path / "report.md").read_text()
    assert "Fewer than 100 episodes" in text and (tmp_path / "plots" / "success_by_level.png").stat().st_size > 0
