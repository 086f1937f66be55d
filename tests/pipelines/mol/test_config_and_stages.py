from __future__ import annotations

import json
from pathlib import Path

import pytest

from simdiff.config import ConfigError, load_config
from simdiff.pipelines.mol.config import MolConfig, with_overrides
from simdiff.pipelines.mol.stages import (
    RUN_MARKER,
    RunContext,
    Stage,
    build_stages,
    done_stages,
    invalidate_from,
    prepare_run_dir,
    read_marker,
    run_stages,
    with_executor,
)

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "mol"


@pytest.mark.parametrize("name", ["tiny", "quickstart", "push", "push_plain", "push_dagger", "push_dagger3", "lift",
                                  "sweep_push"])
def test_shipped_configs_load(name):
    cfg = load_config(MolConfig, CONFIGS / f"{name}.yaml")
    assert cfg.demos.per_domain >= 1 and cfg.evaluation.episodes >= 1
    if name.startswith("push") or name == "lift":
        assert cfg.evaluation.episodes >= 100
    if name.startswith("push"):
        assert cfg.demos.per_domain <= 20
    if name in ("push", "push_dagger", "push_dagger3"):  # no expert acts in their DAgger rounds
        assert cfg.dagger.teacher == "specialist" and cfg.dagger.rounds >= 1


def test_unknown_key_and_bad_values_are_clear_errors():
    with pytest.raises(ConfigError, match="did you mean 'per_domain'"):
        load_config(MolConfig, {"demos": {"per_domian": 3}})
    with pytest.raises(ConfigError, match=r"env.domains\[\]"):
        load_config(MolConfig, {"env": {"domains": [0, 7]}})
    with pytest.raises(ConfigError, match="evaluation.methods"):
        load_config(MolConfig, {"evaluation": {"methods": ["oracle"]}})


def test_evaluation_seeds_must_be_held_out():
    with pytest.raises(ConfigError, match="seed ranges overlap"):
        load_config(MolConfig, {"evaluation": {"seed": 0}})


def test_fingerprint_ignores_where_jobs_run_but_not_data_or_threads():
    cfg = MolConfig()
    assert with_overrides(cfg, executor={"backend": "ray", "workers": 7}).fingerprint() == cfg.fingerprint()
    assert with_overrides(cfg, demos={"per_domain": 5}).fingerprint() != cfg.fingerprint()
    # torch threads change the trained bits, so they make another run
    assert with_overrides(cfg, executor={"threads_per_job": 2}).fingerprint() != cfg.fingerprint()
    # at the default of 1 the key stays out: runs fingerprinted before it counted still resume
    assert cfg.fingerprint() == with_overrides(cfg, executor={"threads_per_job": 1, "workers": 3}).fingerprint()


def test_resume_at_another_thread_count_is_refused_with_the_reason(tmp_path):
    cfg = MolConfig()
    prepare_run_dir(cfg, tmp_path / "run")
    more = with_executor(cfg, threads_per_job=2)
    with pytest.raises(FileExistsError, match=r"executor.threads_per_job: 1 -> 2.*torch threads change the trained"):
        prepare_run_dir(more, tmp_path / "run")
    assert prepare_run_dir(with_executor(cfg, workers=5), tmp_path / "run")[1]  # workers alone: a resume
    # a marker written before threads were recorded lists only real differences
    marker = tmp_path / "run" / RUN_MARKER
    rec = json.loads(marker.read_text())
    rec["config"].pop("executor")
    marker.write_text(json.dumps(rec))
    with pytest.raises(FileExistsError, match=r"\(demos.per_domain: 20 -> 3\); pass"):
        prepare_run_dir(with_overrides(cfg, demos={"per_domain": 3}), tmp_path / "run")


def test_stage_list_unrolls_dagger_rounds():
    names = [s.name for s in build_stages(with_overrides(MolConfig(), dagger={"rounds": 2}))]
    assert names == ["demos", "specialists", "conditions_r0", "pseudo_r0", "generalist_r0", "conditions_r1",
                     "pseudo_r1", "generalist_r1", "conditions_r2", "pseudo_r2", "generalist_r2", "evaluate",
                     "report"]


def _ctx(tmp_path, cfg=None):
    cfg = cfg or MolConfig()
    root, resumed = prepare_run_dir(cfg, tmp_path / "run")
    return RunContext(cfg=cfg, root=root, executor=cfg.executor, log=lambda m: None), resumed


def test_interrupted_stage_resumes_and_done_stages_are_skipped(tmp_path):
    ctx, resumed = _ctx(tmp_path)
    assert not resumed
    calls: list[str] = []
    state = {"fail": True}

    def ok(name):
        def fn(c):
            calls.append(name)
            (c.root / f"{name}.out").write_text(name)
            return {"n": 1}
        return fn

    def flaky(c):
        calls.append("b")
        (c.root / "b.partial").write_text("half")
        if state["fail"]:
            raise RuntimeError("killed midway")
        return {}

    stages = [Stage("a", ok("a")), Stage("b", flaky, outputs=("b.partial",)), Stage("c", ok("c"), outputs=("c.out",))]
    with pytest.raises(RuntimeError, match="killed midway"):
        run_stages(ctx, stages)
    assert done_stages(ctx.root) == ["a"] and calls == ["a", "b"]
    state["fail"] = False
    cfg = ctx.cfg
    root, resumed = prepare_run_dir(cfg, ctx.root)  # same config: resume
    assert resumed
    ran = run_stages(ctx, stages)
    assert ran == ["b", "c"] and calls == ["a", "b", "b", "c"]
    assert read_marker(ctx.root, "a")["summary"] == {"n": 1}
    assert run_stages(ctx, stages) == []  # everything done: nothing runs
    assert invalidate_from(ctx.root, stages, "b") == ["b", "c"]
    assert not (ctx.root / "c.out").exists() and not (ctx.root / "b.partial").exists()  # --redo clears outputs
    assert (ctx.root / "a.out").exists()
    assert run_stages(ctx, stages) == ["b", "c"]
    with pytest.raises(ValueError, match="unknown stage 'z'"):
        invalidate_from(ctx.root, stages, "z")


def test_run_dir_refuses_other_config_and_foreign_dirs(tmp_path):
    cfg = MolConfig()
    prepare_run_dir(cfg, tmp_path / "run")
    other = with_overrides(cfg, demos={"per_domain": 3})
    with pytest.raises(FileExistsError, match=r"demos.per_domain: 20 -> 3"):
        prepare_run_dir(other, tmp_path / "run")
    root, resumed = prepare_run_dir(other, tmp_path / "run", overwrite=True)
    assert not resumed and (root / "config.yaml").is_file() and (root / "run.json").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no MOL run"):
        prepare_run_dir(cfg, foreign, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_paired_domain_weights_reach_the_final_generalist_only(tmp_path):
    from simdiff.pipelines.mol.stages import generalist_jobs

    cfg = with_overrides(MolConfig(), dagger={"rounds": 2}, pseudo={"paired_domain_weights": [3, 1, 1, 1]})
    names = {r: dict(generalist_jobs(cfg, tmp_path, r)) for r in range(3)}
    assert set(names[0]) == {"generalist_distilled_r0"} and set(names[1]) == {"generalist_distilled_r1"}
    assert set(names[2]) == {"generalist_distilled_r2", "generalist_labeled_only"}  # beside the final one
    assert "paired_domain_weights" not in names[2]["generalist_labeled_only"]
    assert names[2]["generalist_distilled_r2"]["paired_domain_weights"] == [3.0, 1.0, 1.0, 1.0]
    for r in (0, 1):   # the DAgger rounds' generalists sample windows uniformly
        assert all("paired_domain_weights" not in job for job in names[r].values())
    plain = dict(generalist_jobs(MolConfig(), tmp_path, MolConfig().dagger.rounds))
    assert all("paired_domain_weights" not in job for job in plain.values())


def test_intermediate_overrides_are_checked_and_fingerprinted(tmp_path):
    from simdiff.pipelines.mol import adapters
    from simdiff.pipelines.mol.stages import generalist_jobs

    base = with_overrides(MolConfig(), dagger={"rounds": 1})
    small = with_overrides(base, dagger={"intermediate_overrides": {"model": {"down_dims": [32, 64]}}})
    assert small.fingerprint() != base.fingerprint()
    assert with_overrides(base, dagger={"intermediate_overrides": {}}).fingerprint() == base.fingerprint()
    jobs = {r: dict(generalist_jobs(small, tmp_path, r)) for r in (0, 1)}
    assert jobs[0]["generalist_distilled_r0"]["spec"]["overrides"]["model"] == {"down_dims": [32, 64]}
    assert "model" not in jobs[1]["generalist_labeled_only"]["spec"]["overrides"]
    assert "model" not in jobs[1]["generalist_distilled_r1"]["spec"]["overrides"]
    adapters.preflight(small)
    with pytest.raises(ConfigError, match="dagger.intermediate_overrides: policy overrides"):
        adapters.preflight(with_overrides(base, dagger={"intermediate_overrides": {"model": {"widht": 3}}}))
    with pytest.raises(ValueError, match="must keep the generalist's horizons"):
        adapters.preflight(with_overrides(base, dagger={"intermediate_overrides": {"horizon": {"action": 2}}}))
    with pytest.raises(ValueError, match="expected a mapping"):
        with_overrides(base, dagger={"intermediate_overrides": [1]})


def test_overwrite_on_the_same_config_resumes_and_keeps_finished_work(tmp_path):
    cfg = MolConfig()
    root, _ = prepare_run_dir(cfg, tmp_path / "run")
    (root / "stages").mkdir()
    (root / "stages" / "demos.done").write_text("{}")
    (root / "notes.txt").write_text("mine")
    root, resumed = prepare_run_dir(cfg, root, overwrite=True)
    assert resumed and (root / "stages" / "demos.done").is_file() and (root / "notes.txt").read_text() == "mine"


def test_damaged_run_bookkeeping_is_a_clear_error_or_set_aside(tmp_path):
    from simdiff.errors import UserError

    cfg = MolConfig()
    root, _ = prepare_run_dir(cfg, tmp_path / "run")
    (root / "run.json").write_text("[1, 2]")                 # a log of the commands: set aside, the run resumes
    _, resumed = prepare_run_dir(cfg, root)
    assert resumed and (root / "run.json.damaged").is_file() and "resumes" in (root / "run.json").read_text()
    (root / "stages").mkdir()
    (root / "stages" / "demos.done").write_text("[1]")
    with pytest.raises(UserError, match=r"demos.done: expected a JSON object.*--redo demos"):
        read_marker(root, "demos")
    (root / "mol_run.json").write_text("[]")
    with pytest.raises(UserError, match=r"mol_run.json: expected a JSON object.*--overwrite"):
        prepare_run_dir(cfg, root)
    (root / "mol_run.json").write_text("{not json")
    with pytest.raises(UserError, match=r"mol_run.json: not valid JSON"):
        prepare_run_dir(cfg, root)
    root, resumed = prepare_run_dir(cfg, root, overwrite=True)  # --overwrite replaces the damaged run
    assert not resumed and not (root / "stages").exists()
