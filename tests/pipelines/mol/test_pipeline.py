"""The MOL pipeline end to end on the tiny config (Push-v0, a few demos, a few dozen training steps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from simdiff.config import load_config
from simdiff.pipelines.mol import adapters
from simdiff.pipelines.mol.config import MolConfig, with_overrides
from simdiff.pipelines.mol.report import validate_metrics
from simdiff.pipelines.mol.stages import (
    StageError,
    build_stages,
    done_stages,
    invalidate_from,
    read_marker,
    run_pipeline,
)

TINY = Path(__file__).resolve().parents[3] / "configs" / "mol" / "tiny.yaml"
LEVELS = ["level_0", "level_1", "level_2", "level_3", "shift"]
METHODS = ["specialists", "generalist_labeled_only", "generalist_distilled", "expert"]


def tiny(**changes) -> MolConfig:
    cfg = load_config(MolConfig, TINY)
    return with_overrides(cfg, **changes) if changes else cfg


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mol") / "run"
    metrics = run_pipeline(tiny(), out, quiet=True)
    return out, metrics


def test_every_stage_runs_and_writes_its_outputs(tiny_run):
    root, metrics = tiny_run
    assert done_stages(root) == sorted(s.name for s in build_stages(tiny()))
    for d in range(4):
        assert (root / "demos" / f"domain_{d}.hdf5").is_file()
        assert (root / "specialists" / f"domain_{d}" / "policy" / "meta.json").is_file()
        for r in (0, 1):
            assert (root / "conditions" / f"round_{r}" / f"domain_{d}.npz").is_file()
            assert (root / "pseudo" / f"round_{r}" / f"domain_{d}.npz").is_file()
    for g in ("labeled_only", "distilled_r0", "distilled_r1"):
        assert (root / "generalists" / g / "policy" / "meta.json").is_file()
    assert (root / "report.md").is_file() and (root / "config.yaml").is_file() and (root / "run.json").is_file()
    assert (root / "plots" / "success_by_level.png").is_file()


def test_metrics_json_schema(tiny_run):
    root, metrics = tiny_run
    data = json.loads((root / "metrics.json").read_text())
    assert data == metrics
    validate_metrics(data)
    assert list(data["methods"]) == METHODS
    for m in METHODS:
        assert list(data["methods"][m]) == LEVELS
        for c in data["methods"][m].values():
            assert c["episodes"] == 4 and 0 <= c["ci95"][0] <= c["success"] <= c["ci95"][1] <= 1
    # The scripted expert is the ceiling: it solves nominal Push every time.
    assert data["methods"]["expert"]["level_0"]["success"] == 1.0


def test_pseudo_labels_come_from_the_domains_specialist(tiny_run):
    import numpy as np

    from simdiff.pipelines.mol.pseudo import PseudoLabels

    root, _ = tiny_run
    labels = PseudoLabels.load(root / "pseudo" / "round_0" / "domain_2.npz")
    assert (labels.conditions.domain == 2).all() and labels.actions.shape[1:] == (8, 2)
    fn = adapters.label_fn(root / "specialists" / "domain_2")
    again = fn(labels.conditions.obs[:16], 123)
    assert again.shape == (16, 8, 2) and np.isfinite(again).all()
    dagger = PseudoLabels.load(root / "pseudo" / "round_1" / "domain_2.npz")
    assert set(np.unique(dagger.conditions.source).tolist()) == {2}  # generalist states (DAgger)


def test_interrupted_stage_resumes_and_failed_job_is_reported(tiny_run, tmp_path, monkeypatch):
    src, _ = tiny_run
    root = tmp_path / "run"
    shutil.copytree(src, root)
    stages = build_stages(tiny())
    invalidate_from(root, stages, "evaluate", clear_outputs=False)
    for cell in ("expert/shift.json", "generalist_distilled/level_1.json"):
        (root / "eval" / cell).unlink()
    before = {s: read_marker(root, s)["seconds"] for s in done_stages(root)}

    calls = []
    real = adapters.eval_cell_job

    def flaky(**job):
        calls.append(job["out"])
        if job["policy"] == "expert":
            raise RuntimeError("simulated crash")
        return real(**job)

    monkeypatch.setattr(adapters, "eval_cell_job", flaky)
    with pytest.raises(StageError, match=r"expert@shift after 2 attempt\(s\): RuntimeError: simulated crash"):
        run_pipeline(tiny(), root, quiet=True)
    report = json.loads((root / "jobs" / "evaluate.json").read_text())
    assert report["failed"][0]["job"] == "expert@shift" and report["failed"][0]["attempts"] == 2
    assert "generalist_distilled@level_1" in report["ok"]
    assert not (root / "stages" / "evaluate.done").exists()
    assert len(calls) == 3  # the distilled cell once, the expert cell twice (one retry)

    calls.clear()
    monkeypatch.setattr(adapters, "eval_cell_job", lambda **job: calls.append(job["out"]) or real(**job))
    metrics = run_pipeline(tiny(), root, quiet=True)
    assert [Path(c).parts[-2:] for c in calls] == [("expert", "shift.json")]  # only the missing cell
    assert {s: read_marker(root, s)["seconds"] for s in before} == before  # finished stages skipped
    validate_metrics(metrics)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_final_generalist_job_retrains_the_runs_generalist_on_a_device(tiny_run, tmp_path, device):
    # the run's own job spec, retrained with an explicit device: the same weights on the CPU, float-close on a
    # GPU; the saved policy is on the CPU either way
    from policies.diffusion import DiffusionPolicy
    from simdiff.pipelines.mol.stages import generalist_jobs

    root, _ = tiny_run
    cfg = tiny()
    name, spec = generalist_jobs(cfg, root, cfg.dagger.rounds)[0]
    assert name.startswith("generalist_distilled")
    summary = adapters.train_policy_job(**{**spec, "out_dir": str(tmp_path / "g"), "device": device})
    assert summary["device"] == device
    ours = DiffusionPolicy.load(tmp_path / "g" / "policy").net.state_dict()
    theirs = DiffusionPolicy.load(Path(spec["out_dir"]) / "policy").net.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k].device.type == "cpu"
        if device == "cpu":
            assert torch.equal(ours[k], theirs[k]), k
        else:
            torch.testing.assert_close(ours[k], theirs[k], rtol=1e-3, atol=1e-4)


def test_source_token_generalist_trains_on_the_run_and_acts_with_the_expert_token(tiny_run, tmp_path):
    # the final distilled job with the data-source token: a two-entry task embedding whose default is the expert,
    # so evaluation (which passes no task) acts with it
    from policies.diffusion import DiffusionPolicy
    from simdiff.pipelines.mol.stages import generalist_jobs

    root, _ = tiny_run
    cfg = tiny(pseudo={"source_token": True})
    _, spec = generalist_jobs(cfg, root, cfg.dagger.rounds)[0]
    adapters.train_policy_job(**{**spec, "out_dir": str(tmp_path / "g")})
    pol = DiffusionPolicy.load(tmp_path / "g" / "policy")
    assert (pol.cfg.model.num_tasks, pol.cfg.model.default_task) == (2, adapters.SOURCE_EXPERT)
    res = adapters.evaluate(str(tmp_path / "g" / "policy"), cfg.env.id, 1, 4, 5, 4, cfg.env.make_kwargs)
    assert res["episodes"] == 4
    with pytest.raises(ValueError, match="source_token: expected pseudo-labels"):
        adapters.train_policy_job(**{**spec, "pseudo": [], "out_dir": str(tmp_path / "h")})


def test_failed_specialist_job_is_retried_then_reported(tmp_path, monkeypatch):
    real = adapters.train_policy_job
    attempts = []

    def fail_domain_1(**job):
        if job["out_dir"].endswith("domain_1"):
            attempts.append(1)
            raise ValueError("diverged")
        return real(**job)

    monkeypatch.setattr(adapters, "train_policy_job", fail_domain_1)
    cfg = tiny(env={"domains": [0, 1]}, specialist={"steps": 5})
    with pytest.raises(StageError, match=r"specialist_domain_1 after 2 attempt\(s\): ValueError: diverged"):
        run_pipeline(cfg, tmp_path / "run", stop_after="specialists", quiet=True)
    assert len(attempts) == 2
    report = json.loads((tmp_path / "run" / "jobs" / "specialists.json").read_text())
    assert report["ok"] == ["specialist_domain_0"] and report["failed"][0]["job"] == "specialist_domain_1"
    assert (tmp_path / "run" / "specialists" / "domain_0" / "job.json").is_file()  # kept for the rerun


def test_report_command_rebuilds_table(tiny_run, capsys):
    from simdiff.cli import main

    root, _ = tiny_run
    assert main(["mol", "report", str(root)]) == 0
    out = capsys.readouterr().out
    assert "generalist, distilled (MOL)" in out and "avg 0-3" in out
    assert main(["mol", "status", str(root)]) == 0
    assert "evaluate" in capsys.readouterr().out


def test_bad_config_fails_before_writing(tmp_path, capsys):
    from simdiff.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("specialist: {overrides: {horizon: {obs: 2, prediction: 8, action: 9}}}\n")
    assert main(["mol", "run", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "horizon" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_searched_dagger_labels_the_generalists_own_states(tiny_run, tmp_path):
    """The specialist's searched chunks label exactly the states the generalist visits, at its replanning
    points; the search runs on spare worlds and never perturbs the generalist's rollout."""
    import numpy as np

    from simdiff.pipelines.evaluate import run_episodes
    from simdiff.pipelines.mol.conditions import SOURCES, ConditionSet
    from simdiff.pipelines.mol.pseudo import make_pseudo_labels

    root, _ = tiny_run
    gen, spec = root / "generalists" / "distilled_r0", root / "specialists" / "domain_1"
    seeds, kw = [5000, 5001, 5002], {"max_episode_steps": 30}
    out = tmp_path / "dagger.npz"
    stats = adapters.conditions_job("simdiff/Push-v0", 1, kw, str(gen), [], seeds, "dagger", 1, 1, 1, 3, str(out),
                                    search_k=3, search_lookahead=1, teacher_dir=str(spec))["stats"]
    cs = ConditionSet.load(out)
    assert stats["conditions"] == len(cs) and stats["labels"] == "searched"
    from simdiff.pipelines.mol.dagger import load_utility

    u = load_utility(out, len(cs))  # the verified outcome of each chosen chunk (chunk_utility's range)
    assert u is not None and np.isfinite(u).all() and (u >= -1).all() and (u <= 2).all()
    assert (cs.source == SOURCES["dagger"]).all() and cs.has_executed().all()
    assert cs.executed.shape[1:] == (8, 2) and (cs.t % 4 == 0).all()  # replanning points of Ta = 4

    plain = run_episodes(adapters.load_policy(gen).batch_policy(), "simdiff/Push-v0", 1, seeds, batch_size=3,
                         env_kwargs=kw, record_actions=True)
    for rec in plain:
        mine = cs.subset(np.flatnonzero(cs.seed == rec["seed"]))
        obs = np.asarray(rec["observations"], np.float32)
        np.testing.assert_allclose(mine.obs[:, -1], obs[mine.t], atol=1e-6)
        assert len(mine) == -(-rec["length"] // 4)
        # a label's first entry (To - 1 = 1 step back) is the action the world executed there, as in a demo window
        acts = np.asarray(rec["actions"], np.float32)
        later = mine.t > 0
        np.testing.assert_allclose(mine.executed[later, 0], acts[mine.t[later] - 1], atol=1e-6)
        np.testing.assert_array_equal(mine.executed[~later, 0], mine.executed[~later, 1])

    def never(obs, seed):  # searched labels are kept even in "resample" mode: no fresh sample is drawn
        raise AssertionError("a searched DAgger state was resampled")

    labels, _ = make_pseudo_labels(cs, never, 10_000, False, False, 64, 0, mode="resample")
    np.testing.assert_array_equal(np.sort(labels.actions.ravel()), np.sort(cs.executed.ravel()))


def test_searched_dagger_with_the_generalist_helping_the_search(tiny_run, tmp_path):
    """dagger.search_proposers / search_rollout / search_shaping: the generalist's own candidates compete, it
    continues the lookahead, failures are shaped; the labeled states are still the generalist's rollout states."""
    import numpy as np

    from simdiff.pipelines.evaluate import run_episodes
    from simdiff.pipelines.mol.conditions import ConditionSet

    root, _ = tiny_run
    gen, spec = root / "generalists" / "distilled_r0", root / "specialists" / "domain_2"
    seeds, kw, out = [6000, 6001], {"max_episode_steps": 20}, tmp_path / "helped.npz"
    stats = adapters.conditions_job("simdiff/Push-v0", 2, kw, str(gen), [], seeds, "dagger", 1, 2, 1, 2, str(out),
                                    search_k=2, search_lookahead=1, teacher_dir=str(spec),
                                    search_proposers="specialist+generalist", search_rollout="generalist",
                                    search_shaping=0.5)["stats"]
    assert (stats["search_proposers"], stats["search_rollout"], stats["search_shaping"]) == (
        "specialist+generalist", "generalist", 0.5)
    cs = ConditionSet.load(out)
    plain = run_episodes(adapters.load_policy(gen).batch_policy(), "simdiff/Push-v0", 2, seeds, batch_size=2,
                         env_kwargs=kw, record_actions=True)
    for rec in plain:
        mine = cs.subset(np.flatnonzero(cs.seed == rec["seed"]))
        np.testing.assert_allclose(mine.obs[:, -1], np.asarray(rec["observations"], np.float32)[mine.t], atol=1e-6)


def test_dagger_domains_restrict_the_dagger_rounds(tmp_path):
    """dagger.domains: round 0 covers every domain; DAgger rounds collect and label only the listed ones, and the
    final generalist trains on exactly those labels."""
    cfg = tiny(dagger={"domains": [3], "pseudo_rounds": "dagger"}, evaluation={"episodes": 1})
    root = tmp_path / "run"
    run_pipeline(cfg, root, quiet=True)
    assert sorted(p.name for p in (root / "conditions" / "round_0").glob("*.npz")) == [
        f"domain_{d}.npz" for d in range(4)]
    for what in ("conditions", "pseudo"):
        assert sorted(p.name for p in (root / what / "round_1").glob("*.npz")) == ["domain_3.npz"]
    job = json.loads((root / "generalists" / "distilled_r1" / "job.json").read_text())
    assert job["pseudo_labels"] == json.loads((root / "pseudo" / "round_1" / "domain_3.json").read_text())["labeled"]
    assert "on domains [3]" in (root / "report.md").read_text()


def test_intermediate_overrides_shape_the_acting_generalists_only(tmp_path):
    """dagger.intermediate_overrides: the acting round-0 generalist gets its own architecture; the final distilled
    and the labeled-only generalists share the generalist's."""
    from policies.diffusion import DiffusionPolicy

    cfg = tiny(dagger={"intermediate_overrides": {"model": {"down_dims": [16, 32]}}}, evaluation={"episodes": 1},
               env={"eval_levels": [0]})
    root = tmp_path / "run"
    run_pipeline(cfg, root, quiet=True)
    pols = {name: DiffusionPolicy.load(root / "generalists" / name)
            for name in ("distilled_r0", "distilled_r1", "labeled_only")}
    sizes = {name: sum(t.numel() for t in p.net.parameters()) for name, p in pols.items()}
    assert tuple(pols["distilled_r0"].cfg.model.down_dims) == (16, 32)
    assert pols["distilled_r1"].cfg.model == pols["labeled_only"].cfg.model
    assert sizes["distilled_r0"] < sizes["distilled_r1"] == sizes["labeled_only"]


def test_searched_dagger_rejects_a_world_without_snapshots():
    with pytest.raises(ValueError, match="dagger.search_k"):
        with_overrides(tiny(), env={"id": "simdiff/Lift-v0"}, dagger={"search_k": 4})


def test_expert_dagger_diagnostic_labels_are_the_experts_next_actions(tiny_run, tmp_path):
    """dagger.teacher=expert (a privileged diagnostic): at t = 0 the label is exactly what the scripted expert
    does from that seed's initial state."""
    import numpy as np

    from envs import make
    from envs.experts import scripted_expert
    from simdiff.pipelines.mol.conditions import ConditionSet

    root, _ = tiny_run
    out = tmp_path / "expert.npz"
    stats = adapters.conditions_job("simdiff/Push-v0", 2, {"max_episode_steps": 30},
                                    str(root / "generalists" / "distilled_r0"), [], [7000, 7001], "dagger", 1, 2, 1, 2,
                                    str(out), search_k=2, teacher_dir="expert")["stats"]
    assert stats["labels"] == "expert (diagnostic)"
    cs = ConditionSet.load(out)
    for seed in (7000, 7001):
        env = make("simdiff/Push-v0", level=2, max_episode_steps=30)
        env.reset(seed=seed)
        expert = scripted_expert(env)
        ref = []
        for _ in range(7):
            a = expert.act()
            ref.append(a)
            env.step(a)
        first = cs.executed[(cs.seed == seed) & (cs.t == 0)][0]
        np.testing.assert_allclose(first[1:], np.stack(ref), atol=1e-6)


def test_label_utility_filter_drops_only_low_dagger_labels(tmp_path):
    import numpy as np

    from simdiff.pipelines.mol.conditions import SOURCES, ConditionSet
    from simdiff.pipelines.mol.dagger import save_utility
    from simdiff.pipelines.mol.stages import _utility_filter

    k = 6
    cs = ConditionSet(obs=np.zeros((k, 2, 3), np.float32), domain=np.zeros(k, np.int16),
                      source=np.array([SOURCES["reset"]] + [SOURCES["dagger"]] * 5, np.int8),
                      round=np.ones(k, np.int16), episode_success=np.ones(k, bool), seed=np.arange(k),
                      t=np.zeros(k, np.int32), executed=np.zeros((k, 8, 2), np.float32))
    path = tmp_path / "domain_0.npz"
    cs.save(path)
    cfg = tiny(dagger={"search_k": 4, "min_label_utility": 0.3})
    with pytest.raises(StageError, match="utility.npy is missing"):
        _utility_filter(cfg, cs, path)
    save_utility(path, np.array([-1.0, 0.29, 0.3, 1.5, -0.2, 0.9]))
    kept, dropped = _utility_filter(cfg, cs, path)
    assert dropped == 2 and kept.seed.tolist() == [0, 2, 3, 5]  # the reset condition has no label: always kept
    assert _utility_filter(tiny(), cs, path) == (cs, 0)
    save_utility(path, np.zeros(3))
    with pytest.raises(ValueError, match="expected 6 utilities"):
        _utility_filter(cfg, cs, path)
