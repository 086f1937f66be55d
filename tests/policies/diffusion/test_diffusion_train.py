from __future__ import annotations

import json

import pytest
import torch

from policies.diffusion.policy import DiffusionPolicy, replace_config
from policies.diffusion.train import EVAL_METRICS, train_policy
from simdiff.errors import CheckpointError


def _short(cfg, steps=40):
    return replace_config(cfg, train={"steps": steps, "ckpt_every": 20, "log_every": 10, "warmup_steps": 5,
                                      "batch_size": 32}, eval={"every": 20})


def test_train_exports_a_loadable_policy_and_resumes_exactly(tiny_cfg, push_episodes, tmp_path):
    cfg = _short(tiny_cfg)
    calls = []

    def eval_fn(policy, step):
        calls.append(step)
        return {"success_rate": 0.0}

    full = train_policy(cfg, push_episodes, tmp_path / "full", eval_fn=eval_fn)
    assert calls == [20, 40] and full.steps == 40
    assert (tmp_path / "full" / "loss.png").exists() and (tmp_path / "full" / "policy" / "meta.json").exists()
    assert [json.loads(x)["step"] for x in (tmp_path / "full" / EVAL_METRICS).read_text().splitlines()] == [20, 40]

    # A run killed after step 20 and resumed ends with the same EMA weights and does not re-evaluate step 20.
    calls.clear()
    part = train_policy(cfg, push_episodes, tmp_path / "part", eval_fn=eval_fn, stop_after=20)
    assert part.steps == 20 and not (tmp_path / "part" / "policy").exists()
    train_policy(cfg, push_episodes, tmp_path / "part", eval_fn=eval_fn)
    assert calls == [20, 40]
    a, b = DiffusionPolicy.load(tmp_path / "full"), DiffusionPolicy.load(tmp_path / "part")
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert a.metrics["steps"] == 40 and a.dataset["env_id"] == "simdiff/Push-v0"


def test_resume_with_other_data_is_refused(tiny_cfg, push_episodes, tmp_path):
    cfg = _short(tiny_cfg, steps=20)
    train_policy(cfg, push_episodes.select([0, 1, 2]), tmp_path / "run", stop_after=20)
    with pytest.raises(CheckpointError, match="different data"):
        train_policy(cfg, push_episodes.select([3, 4, 5]), tmp_path / "run")


def test_cli_train_then_eval(push_demos, tmp_path, capsys):
    from simdiff.cli import main

    cfg = str(__import__("pathlib").Path(__file__).parents[3] / "configs" / "policy" / "push_tiny.yaml")
    out = tmp_path / "run"
    rc = main(["policy", "train", cfg, "--data", str(push_demos), "--out", str(out), "--set", "train.steps=20",
               "--set", "train.ckpt_every=10", "--set", "train.batch_size=16", "--eval-every", "20",
               "--set", "eval.episodes=2"])
    assert rc == 0 and (out / "policy" / "meta.json").exists() and (out / "config.yaml").exists()
    evals = [json.loads(x) for x in (out / EVAL_METRICS).read_text().splitlines()]
    assert [e["step"] for e in evals] == [20] and evals[0]["episodes"] == 2
    # Same command again: the run is complete, nothing is retrained or overwritten.
    assert main(["policy", "train", cfg, "--data", str(push_demos), "--out", str(out), "--set", "train.steps=20",
                 "--set", "train.ckpt_every=10", "--set", "train.batch_size=16", "--eval-every", "20",
                 "--set", "eval.episodes=2"]) == 0
    assert len((out / EVAL_METRICS).read_text().splitlines()) == 1
    # Another config into the same directory is refused before anything is written.
    assert main(["policy", "train", cfg, "--data", str(push_demos), "--out", str(out), "--set",
                 "train.steps=30"]) == 2
    assert "another config" in capsys.readouterr().err

    res_path = tmp_path / "res.json"
    args = ["policy", "eval", str(out), "--episodes", "3", "--seed", "1000", "--batch-size", "3",
            "--out", str(res_path)]
    assert main(args) == 0
    res = json.loads(res_path.read_text())
    assert res["episodes"] == 3 and res["env_id"] == "simdiff/Push-v0" and len(res["records"]) == 3
    assert "success" in capsys.readouterr().out
    assert main(args) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["policy", "eval", "expert", "--episodes", "2"]) == 2
    assert "--env is required" in capsys.readouterr().err
    assert main(["policy", "eval", str(out), "--level", "9"]) == 2
    assert main(["policy", "eval", str(out), "--env", "simdiff/Lift-v0", "--episodes", "2",
                 "--out", str(tmp_path / "lift.json")]) == 2
    err = capsys.readouterr().err
    assert "--env simdiff/Lift-v0: " in err and "(the policy was trained on simdiff/Push-v0)" in err
    assert not (tmp_path / "lift.json").exists()
