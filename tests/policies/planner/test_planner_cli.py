from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simdiff.cli import main

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "planner" / "tiny.yaml"


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    from envs.collect import collect, dataset_attrs
    from envs.datasets import write_demos

    eps = collect("simdiff/Push-v0", 3, seed=0, level=0) + collect("simdiff/Push-v0", 3, seed=50, level=2)
    path = tmp_path_factory.mktemp("demos") / "demos.hdf5"
    attrs = dataset_attrs("simdiff/Push-v0", {"level": 0}, {"test": True})
    return write_demos(path, eps, {"env_name": "simdiff/Push-v0", "env_kwargs": {}}, attrs=attrs)


@pytest.fixture(scope="module")
def run_dir(demos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "planner"
    assert main(["planner", "train", str(CONFIG), "--data", str(demos), "--out", str(out),
                 "--set", "train.steps=10"]) == 0
    return out


def test_train_writes_a_loadable_planner_and_refuses_to_clobber(run_dir, demos, capsys):
    from policies.planner.policy import PlannerPolicy

    pol = PlannerPolicy.load(run_dir / "policy")
    assert pol.layout.state == (0, 12) and pol.layout.context == (12, 20)
    metrics = json.loads((run_dir / "planner_metrics.json").read_text())
    assert metrics["train_steps"] == 10 and metrics["tokenizer"]["recon_train"]["rmse"] > 0
    assert (run_dir / "config.yaml").exists() and (run_dir / "run.json").exists()
    capsys.readouterr()
    assert main(["planner", "train", str(CONFIG), "--data", str(demos), "--out", str(run_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_eval_through_the_batched_runner_is_batch_independent(run_dir, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    common = ["planner", "eval", str(run_dir), "--level", "0", "--episodes", "3", "--seed", "7", "--steps", "2"]
    assert main([*common, "--batch-size", "3", "--out", str(a)]) == 0
    assert "success" in capsys.readouterr().out
    assert main([*common, "--batch-size", "1", "--out", str(b)]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["episodes"] == 3 and ra["sampler"] == {"steps": 2}
    # per-episode generators: an episode does not depend on which others share the batch
    assert [(r["length"], round(r["return"], 4)) for r in ra["records"]] == \
        [(r["length"], round(r["return"], 4)) for r in rb["records"]]
    assert main([*common, "--out", str(a)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["planner", "eval", "DIR", "--level", "7"], "--level: expected 0, 1, 2, 3 or 'shift'"),
    (["planner", "eval", "DIR", "--episodes", "0"], "--episodes: expected a positive integer"),
    (["planner", "eval", "DIR", "--env", "simdiff/Nope-v0"], "unknown env id"),
    (["planner", "eval", "NOPE"], "no planner here"),
    (["planner", "train", "missing.yaml", "--data", "x.hdf5", "--out", "o"], "config missing.yaml does not exist"),
    (["planner", "experiments", "missing.yaml", "--out", "o"], "does not exist"),
])
def test_cli_errors_are_one_line_messages(argv, message, run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(run_dir) if a == "DIR" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_config_errors_name_the_key(demos, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("planner:\n  plan_horizn: 8\n")
    assert main(["planner", "train", str(bad), "--data", str(demos), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "plan_horizn" in err and "did you mean 'plan_horizon'" in err
    assert main(["planner", "train", str(CONFIG), "--data", str(demos), "--out", str(tmp_path / "o"),
                 "--set", "planner.action_steps=9"]) == 2
    assert "action_steps" in capsys.readouterr().err
    assert not (tmp_path / "o" / "policy").exists()


def test_demos_with_nan_are_refused_naming_the_file_and_demo(demos, tmp_path, capsys):
    import shutil

    import h5py

    bad = tmp_path / "nan.hdf5"
    shutil.copy(demos, bad)
    with h5py.File(bad, "r+") as f:
        name = sorted(f["data"])[0]
        f["data"][name]["actions"][1, 0] = np.inf
        del f["data"][name].attrs["sha256"]  # as in a file of another tool (no checksum catches the edit)
    assert main(["planner", "train", str(CONFIG), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert f"nan.hdf5: {name}: expected finite observations and actions, received NaN or inf" in capsys.readouterr().err
    assert not (tmp_path / "o" / "policy").exists()


def test_experiments_refuse_an_existing_directory(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("mine")
    assert main(["planner", "experiments", str(CONFIG), "--out", str(tmp_path / "out")]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "out" / "report.md").read_text() == "mine"
