"""Sweeps and grids through the batched runner: a known dependence, outputs, seeds, worker splits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simdiff.pipelines.shift import runner
from simdiff.pipelines.shift.grid import plan_grid, run_grid
from simdiff.pipelines.shift.policies import PolicySpec, resolve_policies
from simdiff.pipelines.shift.sweep import plan_sweep, run_sweep

ENV = "simdiff/Push-v0"
EXPERT = [PolicySpec(name="expert", kind="expert")]


def test_expert_success_falls_as_the_box_gets_heavy(tmp_path):
    # The pusher is a velocity servo (kv = 300 N/(m/s)): the box's sliding friction mu m g slows it by mu m g / kv,
    # so with friction 0.4 the expert's push slows to a crawl near 12 kg and stalls past ~15 kg. Inside the
    # trained range (level 3: 0.15..1.6 kg) the expert solves the task.
    setup = plan_sweep(EXPERT, ENV, "box_mass", [0.5, 1.6, 8.0, 20.0], episodes=8, seed=5000)
    m = run_sweep(setup, tmp_path / "sweep")
    pts = m["policies"]["expert"]["points"]
    success = [p["success"] for p in pts]
    assert success[0] >= 0.85 and success[1] >= 0.85, success
    assert success[3] <= 0.15, success
    assert all(b <= a + 1e-9 for a, b in zip(success, success[1:])), success
    lengths = [p["length_mean"] for p in pts]
    assert lengths[3] > 2 * lengths[0]
    for p in pts:
        lo, hi = p["ci95"]
        assert 0.0 <= lo <= p["success"] <= hi <= 1.0 and p["episodes"] == 8
    assert m["tags"] == ["level_0", "level_3", "outside", "outside"]
    assert m["trained_range"] == [0.15, 1.6]
    out = tmp_path / "sweep"
    assert (out / "report.md").is_file() and (out / "sweep_box_mass.png").stat().st_size > 1000
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["policies"]["expert"]["points"][3]["success"] == success[3]
    assert "SHIFT" in (out / "report.md").read_text()


def test_same_seeds_at_every_value_differ_only_in_the_parameter():
    cells = [runner.Cell("expert", ENV, 2, {"friction": f}, episodes=3, seed=11) for f in (0.3, 0.8)]
    a, b = runner.evaluate_cells(cells)
    for ra, rb in zip(a.records, b.records):
        assert ra["seed"] == rb["seed"]
        da, db = dict(ra["domain"]), dict(rb["domain"])
        assert (da.pop("friction"), db.pop("friction")) == (0.3, 0.8)
        assert da == db  # the other parameters were sampled identically


def test_seed_blocks_give_the_same_episodes():
    cell = runner.Cell("expert", ENV, 3, {"action_delay": 2}, episodes=5, seed=40, record_obs=True)
    whole = runner.block_job(cell.policy, ENV, 3, cell.domain, 40, 5, 0, True, 64)
    parts = [runner.block_job(cell.policy, ENV, 3, cell.domain, s, n, f, True, 2)
             for s, n, f in runner._blocks(cell, 2)]
    merged = [r for p in parts for r in p]
    assert [r["episode"] for r in merged] == list(range(5))
    for r1, r2 in zip(whole, merged):
        assert (r1["seed"], r1["success"], r1["length"]) == (r2["seed"], r2["success"], r2["length"])
        np.testing.assert_array_equal(r1["observations"], r2["observations"])


def test_diffusion_checkpoint_and_grid(tmp_path, untrained_policy):
    specs = resolve_policies(["expert", str(untrained_policy)])
    assert [s.kind for s in specs] == ["expert", "diffusion"] and specs[1].trained_levels == (0,)
    runner.preflight(specs, ENV)
    setup = plan_grid(specs, ENV, ["friction", "action_delay"], [[0.4, 1.2], [0, 5]], episodes=2, seed=3)
    m = run_grid(setup, tmp_path / "grid")
    for name in ("expert", "tiny"):
        s = np.asarray(m["policies"][name]["success"])
        assert s.shape == (2, 2) and ((s >= 0) & (s <= 1)).all()
    assert m["tags"]["action_delay"] == ["level_0", "shift"]
    assert (tmp_path / "grid" / "grid_friction_action_delay.png").is_file()
    assert "tiny: success %" in (tmp_path / "grid" / "report.md").read_text()


def test_preflight_refuses_a_policy_of_another_env(untrained_policy):
    spec = resolve_policies([str(untrained_policy)])[0]
    with pytest.raises(ValueError, match="trained on simdiff/Push-v0"):
        runner.preflight([spec], "simdiff/Lift-v0")
