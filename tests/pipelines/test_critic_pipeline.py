"""``simdiff critic``: the experiments pipeline end to end on a tiny policy, and the CLI's argument checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simdiff.cli import main

TINY = Path(__file__).parents[2] / "configs" / "critic" / "tiny.yaml"
PUSH = TINY.with_name("push.yaml")


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory) -> Path:
    """An untrained Push-v0 diffusion policy saved as a checkpoint directory."""
    from policies.diffusion.config import load_policy_config
    from policies.diffusion.normalizer import Normalizer
    from policies.diffusion.policy import DiffusionPolicy

    cfg = load_policy_config({"horizon": {"obs": 2, "prediction": 8, "action": 4},
                              "model": {"size": "tiny", "down_dims": [16, 32], "step_embed_dim": 16},
                              "noise": {"train_steps": 50, "inference_steps": 3}})
    policy = DiffusionPolicy(cfg, 20, 2, {"state": (0, 12), "context": (12, 20)}, Normalizer.identity(12),
                             Normalizer.identity(2), {"env_id": "simdiff/Push-v0"})
    out = tmp_path_factory.mktemp("critic_policy") / "policy"
    policy.save(out)
    return out


def test_configs_load():
    from policies.critic.config import load_critic_config

    push = load_critic_config(PUSH)
    assert push.sampling.k == 4 and push.experiment.levels == (3, "shift") and push.prefs.level == 3
    assert load_critic_config(TINY).grpo.k == 2


def test_experiments_end_to_end_and_resume(tmp_path, tiny_policy_dir, capsys):
    from simdiff.utils.io import read_json

    out = tmp_path / "run"
    args = ["critic", "experiments", str(TINY), "--policy", str(tiny_policy_dir), "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    m = read_json(out / "metrics.json")
    for name in ("report.md", "prefs.npz", "accuracy_vs_t.png", "sampling.png", "grpo.png", "critic_train/critic/meta.json"):
        assert (out / name).exists(), name
    cells = m["sampling"]["levels"]["3"]
    methods = [c["method"] for c in cells]
    assert methods[0] == "policy" and {"base", "terminal", "stepwise", "oracle"} <= set(methods)
    assert next(c for c in cells if c["method"] == "oracle")["lookahead"] == 1
    sw = next(c for c in cells if c["method"] == "stepwise")
    assert sw["denoiser_evals_per_chunk"] == pytest.approx(3.0)          # 3 DDIM steps
    assert sw["critic_evals_per_chunk"] == pytest.approx(2 * 2)          # k = 2 at the 2 stochastic steps
    assert set(m["grpo"]["runs"]) == {"terminal", "stepwise"}
    assert [r["update"] for r in m["grpo"]["runs"]["stepwise"]["curve"]] == [0, 1, 2]
    assert len(m["accuracy"]) == 3 and all(0.0 <= r["accuracy"] <= 1.0 for r in m["accuracy"])
    report = (out / "report.md").read_text()
    assert "Step-wise vs base" in report and "updates to terminal's final" in report
    kinds = read_json(out / "accuracy_kinds.json")
    assert kinds == m["accuracy_by_kind"] and {r["kind"] for r in kinds} <= {"policy-policy", "policy-perturbed",
                                                                             "perturbed-perturbed"}
    assert sum(r["pairs"] for r in kinds if r["t"] == 0) == m["prefs"]["heldout_pairs"]
    assert "By pair kind" in report and "advantages normalised per group" in report
    # a second call reuses every stage's output
    before = (out / "sampling.json").stat().st_mtime_ns
    assert main(args + ["--stages", "prefs,train,sampling"]) == 0
    assert (out / "sampling.json").stat().st_mtime_ns == before
    # GRPO again, evaluated with the stochastic sampler it trains
    (out / "grpo.json").unlink()
    assert main(args + ["--stages", "grpo", "--set", "grpo.eval_sampler=trained", "--set", "grpo.adv_norm=batch",
                        "--set", "grpo.random_control=true", "--set", "grpo.oracle_control=true"]) == 0
    g = read_json(out / "grpo.json")
    assert g["config"]["eval_sampler"] == "trained" and len(g["runs"]["terminal"]["curve"]) == 3
    report = (out / "report.md").read_text()
    assert g["config"]["adv_norm"] == "batch" and "normalised per batch" in report
    # the random-score control: step-wise updates without a critic evaluation, reported next to the critic's
    assert set(g["runs"]) == {"terminal", "stepwise", "stepwise_random", "stepwise_oracle"}
    ctrl, sw = g["runs"]["stepwise_random"], g["runs"]["stepwise"]
    orc = g["runs"]["stepwise_oracle"]     # the true-outcome diagnostic: scored by simulator replay
    assert orc["critic_evals"] > 0 and orc["scorer_env_steps"] > 0 == ctrl["scorer_env_steps"]
    assert "true outcome of each candidate" in report and "Scored by each candidate's TRUE outcome" in report
    assert ctrl["critic_evals"] == 0 < sw["critic_evals"] and len(ctrl["curve"]) == 3
    # the same sampler work, counted per run (the critic's counter is reset: no sampling-stage evaluations)
    assert 0.8 * ctrl["denoiser_evals"] <= sw["denoiser_evals"] <= 1.25 * ctrl["denoiser_evals"]
    assert "random scores (control)" in report and "With random scores in place of the critic's" in report
    assert "the trained stochastic DDIM sampler" in (out / "report.md").read_text()
    # a foreign non-empty folder is refused before anything runs
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("keep")
    assert main(["critic", "experiments", str(TINY), "--policy", str(tiny_policy_dir), "--out", str(foreign)]) == 2
    assert "holds no earlier critic run" in capsys.readouterr().err


def test_experiments_finetune_stage(tmp_path, tiny_policy_dir, capsys):
    """With a finetune section the second phase starts from critic_train/critic, and every later stage uses it."""
    from policies.critic.scorer import Critic
    from simdiff.utils.io import read_json

    out = tmp_path / "run"
    args = ["critic", "experiments", str(TINY), "--policy", str(tiny_policy_dir), "--out", str(out),
            "--stages", "prefs,train,sampling", "--set", "finetune.steps=6", "--set", "experiment.oracle_lookahead=[]"]
    assert main(args) == 0, capsys.readouterr().err
    first, tuned = Critic.load(out / "critic_train"), Critic.load(out / "critic_finetune")
    assert first.metrics["loss"] == "bt" and tuned.metrics["loss"] == "soft" and tuned.metrics["steps"] == 6
    # soft targets learn from every pair, ties included; the tiny config's margin is 0, so both see the same pairs
    assert tuned.metrics["train_pairs"] >= first.metrics["train_pairs"]
    changed = [not torch.equal(a, b) for a, b in zip(first.net.state_dict().values(), tuned.net.state_dict().values())]
    assert any(changed)
    m = read_json(out / "metrics.json")
    assert m["critic"]["loss"] == "soft" and m["critic_first_phase"]["loss"] == "bt"
    assert m["accuracy"] == tuned.metrics["heldout_accuracy"] and m["critic_first_phase"]["heldout_accuracy"]
    report = (out / "report.md").read_text()
    assert "first phase: 10 steps, Bradley-Terry loss" in report and "then fine-tuned: 6 steps" in report
    assert "soft-target loss" in report
    # resuming reuses the fine-tuned critic (no retraining)
    before = (out / "critic_finetune" / "critic" / "meta.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "critic_finetune" / "critic" / "meta.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("over, message", [
    ({"finetune": {"stpes": 3}}, "did you mean 'steps'"),
    ({"finetune": {"lr": 0}}, "finetune.lr"),
    ({"finetune": {"loss": "mse"}}, "finetune.loss"),
])
def test_finetune_config_errors(over, message):
    from policies.critic.config import load_critic_config
    from simdiff.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_critic_config(TINY, over)
    assert load_critic_config(TINY).finetune is None


def test_prefs_train_eval_commands(tmp_path, tiny_policy_dir, capsys):
    prefs = tmp_path / "p.npz"
    pol = ["--policy", str(tiny_policy_dir)]
    assert main(["critic", "prefs", str(TINY), *pol, "--out", str(prefs)]) == 0
    assert main(["critic", "prefs", str(TINY), *pol, "--out", str(prefs)]) == 2          # no silent overwrite
    assert main(["critic", "train", str(TINY), *pol, "--prefs", str(prefs), "--out", str(tmp_path / "c")]) == 0
    res = tmp_path / "e.json"
    assert main(["critic", "eval", str(tmp_path / "c"), *pol, "--method", "stepwise", "--k", "2", "--episodes", "2",
                 "--level", "1", "--batch-size", "2", "--out", str(res)]) == 0
    from simdiff.utils.io import read_json

    r = read_json(res)
    assert r["critic_evals_per_chunk"] == pytest.approx(4.0) and r["episodes"] == 2
    # `critic accuracy` re-measures the critic on the file: the same numbers as training's own evaluation
    trained = read_json(tmp_path / "c" / "critic" / "meta.json")["metrics"]["heldout_accuracy"]
    acc = tmp_path / "acc.json"
    ts = ",".join(str(row["t"]) for row in trained)
    assert main(["critic", "accuracy", str(tmp_path / "c"), "--prefs", str(prefs), "--t", ts, "--draws", "1",
                 "--out", str(acc)]) == 0
    a = read_json(acc)
    assert [row["accuracy"] for row in a["accuracy"]] == pytest.approx([row["accuracy"] for row in trained])
    assert a["margin"] == 0.0 and {row["kind"] for row in a["accuracy_by_kind"]} <= {
        "policy-policy", "policy-perturbed", "perturbed-perturbed"}
    assert main(["critic", "accuracy", str(tmp_path / "c"), "--prefs", str(prefs), "--t", "0,500"]) == 2
    assert "--t: expected steps in [0, 49]" in capsys.readouterr().err


def test_sibling_prefs_init_and_ensemble_commands(tmp_path, tiny_policy_dir, capsys):
    pol = ["--policy", str(tiny_policy_dir)]
    chunks, sib = tmp_path / "p.npz", tmp_path / "s.npz"
    assert main(["critic", "prefs", str(TINY), *pol, "--out", str(chunks)]) == 0
    assert main(["critic", "train", str(TINY), *pol, "--prefs", str(chunks), "--out", str(tmp_path / "c")]) == 0
    sets = ["--set", "prefs.kind=siblings", "--set", "prefs.perturbed=0", "--set", "prefs.policy_samples=3",
            "--set", "prefs.sibling_steps=[25]"]
    assert main(["critic", "prefs", str(TINY), *pol, "--out", str(sib), *sets]) == 0
    # fine-tune the chunk critic on the sibling pairs: it starts from the chunk critic's weights
    assert main(["critic", "train", str(TINY), *pol, "--prefs", str(sib), "--out", str(tmp_path / "cs"),
                 "--init", str(tmp_path / "c")]) == 0
    from simdiff.utils.io import read_json

    assert read_json(tmp_path / "cs" / "run.json")["init"] == str(tmp_path / "c")
    acc = tmp_path / "acc.json"
    both = f"{tmp_path / 'c'},{tmp_path / 'cs'}"
    assert main(["critic", "accuracy", both, "--prefs", str(sib), "--out", str(acc)]) == 0
    assert [row["t"] for row in read_json(acc)["accuracy"]] == [25]        # sibling pairs: at their own step
    res = tmp_path / "e.json"
    assert main(["critic", "eval", both, *pol, "--method", "stepwise", "--k", "2", "--episodes", "2", "--level", "1",
                 "--batch-size", "2", "--out", str(res)]) == 0
    assert read_json(res)["critic_evals_per_chunk"] == pytest.approx(4.0)
    # a critic of another model size cannot be the starting point
    assert main(["critic", "train", str(TINY), *pol, "--prefs", str(sib), "--out", str(tmp_path / "bad"),
                 "--init", str(tmp_path / "c"), "--set", "model.head_hidden=8"]) == 2
    assert "does not match this config's model settings" in capsys.readouterr().err


def test_merge_command(tmp_path, tiny_policy_dir, capsys):
    pol = ["--policy", str(tiny_policy_dir)]
    a, b, m = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "m.npz"
    assert main(["critic", "prefs", str(TINY), *pol, "--out", str(a)]) == 0
    assert main(["critic", "prefs", str(TINY), *pol, "--out", str(b), "--set", "prefs.seed=777"]) == 0
    assert main(["critic", "merge", str(a), str(a), "--out", str(m)]) == 2                 # the same episodes twice
    assert "same episodes twice" in capsys.readouterr().err and not m.exists()
    assert main(["critic", "merge", str(a), str(b), "--out", str(m), "--train-only", str(tmp_path / "c.npz")]) == 2
    assert main(["critic", "merge", str(a), str(b), "--out", str(m), "--train-only", str(b)]) == 0
    from policies.critic.preferences import PreferenceData

    ma, mb, mm = (PreferenceData.load(p) for p in (a, b, m))
    assert mm.num_states == ma.num_states + mb.num_states and mm.heldout.sum() == ma.heldout.sum()
    assert main(["critic", "merge", str(a), str(b), "--out", str(m)]) == 2                 # no silent overwrite
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["critic", "eval", "--policy", "nowhere", "--method", "stepwise"], "expected a critic"),
    (["critic", "eval", "--policy", "nowhere", "--method", "base", "--level", "7"], "--level"),
    (["critic", "prefs", str(TINY), "--policy", "nowhere", "--out", "x.txt"], ".npz"),
    (["critic", "grpo", str(TINY), "--policy", "nowhere", "--mode", "stepwise", "--out", "o"], "--critic"),
    (["critic", "experiments", str(TINY), "--policy", "nowhere", "--out", "o", "--stages", "prefs,fly"], "--stages"),
    (["critic", "experiments", str(TINY), "--policy", "nowhere", "--out", "o", "--set", "prefs.levle=3"], "did you mean"),
])
def test_argument_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_preference_file_is_not_pickled(tmp_path):
    from policies.critic.preferences import PreferenceData

    z = np.zeros((1, 2), np.float32)
    d = PreferenceData(np.zeros((1, 2, 3), np.float32), np.zeros((1, 2, 4, 2), np.float32), z, z, z,
                       np.full((1, 2), -1, np.int32), np.zeros(2, np.int8), np.zeros(2, np.float32),
                       np.zeros(1, np.int64), np.zeros(1, np.int32), np.zeros(1, bool))
    d.save(tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz", allow_pickle=False) as f:
        assert "chunks" in f.files


def test_grpo_command_with_the_oracle_scorer(tmp_path, tiny_policy_dir, capsys):
    from simdiff.utils.io import read_json

    base = ["critic", "grpo", str(TINY), "--policy", str(tiny_policy_dir), "--mode", "stepwise"]
    out = tmp_path / "o"
    assert main(base + ["--critic", "oracle", "--oracle-noise", "0.1", "--out", str(out)]) == 0
    g = read_json(out / "grpo.json")
    assert g["critic_evals"] > 0 and g["scorer_env_steps"] > 0 and len(g["curve"]) >= 2
    assert read_json(out / "run.json")["oracle_noise"] == 0.1
    capsys.readouterr()
    for extra, message in ((["--critic", "oracle", "--mirror"], "drop --mirror"),
                           (["--critic", str(tmp_path / "c"), "--oracle-noise", "0.2"], "expected --critic oracle")):
        assert main(base + extra + ["--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()
