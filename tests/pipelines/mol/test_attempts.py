"""Specialist rollouts with several tries per seed (``conditions.attempts``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simdiff.config import ConfigError, load_config
from simdiff.pipelines.evaluate import ExpertBatchPolicy
from simdiff.pipelines.mol.adapters import ATTEMPT_SEED_STRIDE, rollouts_with_attempts
from simdiff.pipelines.mol.config import MolConfig, with_overrides

ENV = "simdiff/Push-v0"


class _StubbornExpert(ExpertBatchPolicy):
    """The scripted expert from try ``seed % 3`` on (counted from 0); before that it holds still (and fails)."""

    def begin(self, slot, env, seed):
        super().begin(slot, env, seed % ATTEMPT_SEED_STRIDE)
        self._late = getattr(self, "_late", {})
        self._late[slot] = seed // ATTEMPT_SEED_STRIDE < (seed % ATTEMPT_SEED_STRIDE) % 3

    def act(self, obs, slots):
        a = super().act(obs, slots)
        a[[self._late[s] for s in np.asarray(slots).tolist()]] = 0.0
        return a


class _Policy:
    def batch_policy(self):
        return _StubbornExpert()


@pytest.mark.parametrize("attempts, solved, episodes", [(1, 3, 9), (2, 6, 15), (3, 9, 18)])
def test_failed_seeds_are_retried_with_fresh_noise(attempts, solved, episodes):
    seeds = list(range(30, 39))  # 3 solved at the first try, 3 at the second, 3 at the third
    recs, st = rollouts_with_attempts(_Policy(), ENV, 0, seeds, attempts, batch_envs=4,
                                      make_kwargs={"max_episode_steps": 60})
    assert len(recs) == st["rollout_episodes"] == episodes
    assert st["rollout_success"] == pytest.approx(1 / 3)
    assert st["seeds_solved"] == pytest.approx(solved / 9)
    winners = [r["seed"] for r in recs if r["success"]]
    assert len(winners) == len(set(winners)) == solved  # a solved seed is never rolled out again


def test_attempts_config_range_and_fingerprint():
    with pytest.raises(ConfigError, match="conditions.attempts"):
        load_config(MolConfig, {"conditions": {"attempts": 0}})
    cfg = MolConfig()
    # at its default the new key leaves fingerprints (and so the resume of older runs) unchanged
    assert with_overrides(cfg, conditions={"attempts": 1}).fingerprint() == cfg.fingerprint()
    assert with_overrides(cfg, conditions={"attempts": 4}).fingerprint() != cfg.fingerprint()


# --------------------------------------------------------------------------- simulator-verified rollouts
def _tiny_policy():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "policies" / "critic" / "conftest.py"
    spec = importlib.util.spec_from_file_location("critic_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_policy()


def test_search_rollouts_execute_verified_chunks_and_report_it(monkeypatch):
    from policies.critic import outcomes

    policy = _tiny_policy()
    calls = []
    real = outcomes.run_candidates

    def spy(envs, snaps, acts, hist, den, lookahead, seeds):
        calls.append((len(envs), lookahead))
        return real(envs, snaps, acts, hist, den, lookahead, seeds)

    monkeypatch.setattr(outcomes, "run_candidates", spy)
    recs, st = rollouts_with_attempts(policy, ENV, 1, [5, 6], 1, batch_envs=2,
                                      make_kwargs={"max_episode_steps": 8}, search_k=3, search_lookahead=1)
    assert st["search_k"] == 3 and st["search_lookahead"] == 1 and len(recs) == 2
    assert all(np.asarray(r["actions"]).shape == (r["length"], 2) for r in recs)
    # every replanning point of every slot replayed 3 candidates (with 1 lookahead chunk each)
    assert calls and all(n % 3 == 0 and la == 1 for n, la in calls)
    n_calls = len(calls)
    plain, st_plain = rollouts_with_attempts(policy, ENV, 1, [5, 6], 1, batch_envs=2,
                                             make_kwargs={"max_episode_steps": 8})
    assert "search_k" not in st_plain and len(calls) == n_calls  # the plain path never searches


def test_search_config_checks_and_fingerprint():
    with pytest.raises(ConfigError, match="conditions.search_k"):
        load_config(MolConfig, {"conditions": {"search_k": 0}})
    with pytest.raises(ConfigError, match="replays chunks from simulator snapshots"):
        load_config(MolConfig, {"env": {"id": "simdiff/Lift-v0"}, "conditions": {"search_k": 4}})
    cfg = MolConfig()
    assert with_overrides(cfg, conditions={"search_k": 1, "search_lookahead": 5}).fingerprint() == cfg.fingerprint()
    assert with_overrides(cfg, conditions={"search_k": 4}).fingerprint() != cfg.fingerprint()


# --------------------------------------------------------------------------- paired-only fine-tuning phase
class _Paired:
    """Stands in for a WindowSampler: rows marked 1."""

    def __len__(self) -> int:
        return 10

    def sample(self, n, gen):
        import torch

        return {"obs": torch.ones(n, 2, 3), "action": torch.ones(n, 8, 2), "task": None}


def test_finetune_phase_draws_paired_windows_only():
    import torch

    from simdiff.pipelines.mol.adapters import _batch_fn, finetune_start

    assert finetune_start(9000, 0.33) == 6030 and finetune_start(100, 0.0) == 100
    with pytest.raises(ValueError, match="finetune_fraction"):
        finetune_start(100, 1.0)
    pseudo = _Labels(np.zeros((50, 2, 3), np.float32), np.zeros((50, 8, 2), np.float32))
    fn = _batch_fn(_Paired(), pseudo, 16, 0.5, finetune_from=60)
    gen = torch.Generator().manual_seed(0)
    assert float(fn(59, gen)["obs"].mean()) == pytest.approx(0.5)   # mixed: 8 paired + 8 pseudo rows
    assert float(fn(60, gen)["obs"].mean()) == 1.0                   # fine-tuning: paired only


class _Labels:
    def __init__(self, obs, actions):
        self.conditions = type("C", (), {"obs": obs})()
        self.actions = actions

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def test_finetune_config_range_and_fingerprint():
    with pytest.raises(ConfigError, match="pseudo.finetune_fraction"):
        load_config(MolConfig, {"pseudo": {"finetune_fraction": 1.0}})
    cfg = MolConfig()
    assert with_overrides(cfg, pseudo={"finetune_fraction": 0.0}).fingerprint() == cfg.fingerprint()
    assert with_overrides(cfg, pseudo={"finetune_fraction": 0.3}).fingerprint() != cfg.fingerprint()


def test_dagger_search_and_eta_config_checks_and_fingerprint():
    cfg = MolConfig()
    for bad in ({"dagger": {"search_k": 0}}, {"dagger": {"search_eta": 1.5}}, {"conditions": {"search_eta": -0.1}},
                {"dagger": {"pseudo_rounds": "first"}}, {"dagger": {"teacher": "oracle", "search_k": 4}},
                {"dagger": {"teacher": "expert", "search_k": 1}}, {"dagger": {"min_label_utility": 0.3}},
                {"dagger": {"min_label_utility": 3.0, "search_k": 4}}):
        with pytest.raises(ConfigError):
            load_config(MolConfig, bad)
    # at their defaults the new keys leave fingerprints (and so the resume of older runs) unchanged
    same = [{"dagger": {"search_k": 1, "search_eta": 0.0}}, {"dagger": {"pseudo_rounds": "all"}},
            {"conditions": {"search_eta": 1.0}}, {"conditions": {"search_k": 1, "search_eta": 0.0}},
            {"dagger": {"teacher": "specialist"}}, {"dagger": {"min_label_utility": None}}]
    for over in same:
        assert with_overrides(cfg, **over).fingerprint() == cfg.fingerprint(), over
    for over in ({"dagger": {"search_k": 4}}, {"dagger": {"pseudo_rounds": "latest"}},
                 {"conditions": {"search_k": 4, "search_eta": 0.0}}):
        assert with_overrides(cfg, **over).fingerprint() != cfg.fingerprint(), over
    searched = with_overrides(cfg, dagger={"search_k": 4})
    assert with_overrides(searched, dagger={"search_eta": 0.0}).fingerprint() != searched.fingerprint()


def test_dagger_search_helpers_config_checks_and_fingerprint():
    cfg = MolConfig()
    searched = with_overrides(cfg, dagger={"search_k": 4})
    for bad in ({"dagger": {"search_k": 4, "search_proposers": "generalist"}},
                {"dagger": {"search_k": 4, "search_rollout": "expert"}},
                {"dagger": {"search_proposers": "specialist+generalist"}},  # needs a search (search_k >= 2)
                {"dagger": {"search_rollout": "generalist"}},
                {"dagger": {"search_k": 4, "teacher": "expert", "search_rollout": "generalist"}},
                {"dagger": {"search_k": 4, "search_shaping": 1.5}}, {"dagger": {"search_shaping": 0.5}}):
        with pytest.raises(ConfigError):
            load_config(MolConfig, bad)
    for over in ({"search_proposers": "specialist"}, {"search_rollout": "specialist"}, {"search_shaping": 0.0}):
        assert with_overrides(searched, dagger=over).fingerprint() == searched.fingerprint(), over
    for over in ({"search_proposers": "specialist+generalist"}, {"search_rollout": "generalist"},
                 {"search_shaping": 0.5}):
        assert with_overrides(searched, dagger=over).fingerprint() != searched.fingerprint(), over


@pytest.mark.parametrize("mode, expected", [("all", [[0], [0, 1], [0, 1, 2]]), ("latest", [[0], [1], [2]]),
                                            ("dagger", [[0], [1], [1, 2]])])
def test_pseudo_rounds_of_each_generalist(mode, expected):
    from simdiff.pipelines.mol.stages import pseudo_rounds

    cfg = with_overrides(MolConfig(), dagger={"rounds": 2, "pseudo_rounds": mode})
    assert [pseudo_rounds(cfg, r) for r in range(3)] == expected


def test_dagger_domains_config_checks_fingerprint_and_round_domains():
    cfg = with_overrides(MolConfig(), dagger={"rounds": 2})
    for bad in ({"dagger": {"domains": []}}, {"dagger": {"domains": [1, 1]}}, {"dagger": {"domains": [7]}},
                {"dagger": {"domains": 3}}):
        with pytest.raises(ConfigError, match="dagger.domains"):
            load_config(MolConfig, bad)
    assert with_overrides(cfg, dagger={"domains": None}).fingerprint() == cfg.fingerprint()
    some = with_overrides(cfg, dagger={"domains": [3, 1]})
    assert some.fingerprint() != cfg.fingerprint()
    assert cfg.round_domains(1) == [0, 1, 2, 3]
    # round 0 always covers every domain; DAgger rounds follow env.domains' order
    assert (some.round_domains(0), some.round_domains(1), some.round_domains(2)) == ([0, 1, 2, 3], [1, 3], [1, 3])


# --------------------------------------------------------------------------- per-domain paired weights
def _two_file_episodes():
    """Two demo files: file 0 has 1 episode (obs 0), file 1 has 3 (obs 1); every episode is 10 steps."""
    from policies.diffusion.data import episodes_from_arrays

    obs = [np.full((10, 3), float(f), np.float32) for f in (0, 1, 1, 1)]
    act = [np.zeros((10, 2), np.float32) for _ in obs]
    return episodes_from_arrays(obs, act, None, meta={"episodes_per_file": [1, 3]})


def test_paired_domain_weights_set_each_files_share_of_the_paired_rows():
    import torch

    from policies.diffusion.data import WindowSampler
    from simdiff.pipelines.mol.adapters import _batch_fn, window_file_weights

    eps = _two_file_episodes()
    sampler = WindowSampler(eps, 2, 8, 4)
    with pytest.raises(ValueError, match="one weight per demo file"):
        window_file_weights(eps, sampler, [1.0])
    pseudo = _Labels(np.full((50, 2, 3), 5.0, np.float32), np.zeros((50, 8, 2), np.float32))
    for weights, share0 in (([1.0, 1.0], 0.25), ([3.0, 1.0], 0.5), ([1.0, 0.0], 1.0)):
        w = torch.from_numpy(window_file_weights(eps, sampler, weights))
        fn = _batch_fn(sampler, pseudo, 400, 0.5, window_weights=w)
        obs = fn(0, torch.Generator().manual_seed(1))["obs"][:, -1, 0]
        assert int((obs == 5.0).sum()) == 200                      # the pseudo share is untouched
        paired = obs[obs != 5.0]
        assert float((paired == 0.0).float().mean()) == pytest.approx(share0, abs=0.07)


def test_paired_domain_weights_config_checks_and_fingerprint():
    cfg = MolConfig()
    assert with_overrides(cfg, pseudo={"paired_domain_weights": None}).fingerprint() == cfg.fingerprint()
    assert with_overrides(cfg, pseudo={"paired_domain_weights": [2, 1, 1, 1]}).fingerprint() != cfg.fingerprint()
    with pytest.raises(ConfigError, match="one weight per env.domains entry"):
        with_overrides(cfg, pseudo={"paired_domain_weights": [2, 1]})
    for bad in ([0, 0, 0, 0], [-1, 1, 1, 1], [float("nan"), 1, 1, 1]):
        with pytest.raises(ConfigError, match="paired_domain_weights"):
            with_overrides(cfg, pseudo={"paired_domain_weights": bad})


def test_mirrored_batches_reflect_about_half_the_rows_and_keep_the_rest():
    import torch

    from simdiff.pipelines.mol.adapters import _batch_fn, mirror_signs, mirrored

    obs_sign, act_sign = mirror_signs(ENV)
    assert obs_sign.shape == (20,) and act_sign.tolist() == [1.0, -1.0]   # Push-v0: y -> -y, context unchanged
    rng = np.random.default_rng(0)
    pseudo = _Labels(rng.normal(size=(500, 2, 20)).astype(np.float32),
                     rng.normal(size=(500, 8, 2)).astype(np.float32))
    plain = _batch_fn(_Paired(), pseudo, 400, 0.0)                     # pseudo rows only
    fn = mirrored(plain, obs_sign, act_sign)
    a, b = plain(3, torch.Generator().manual_seed(7)), fn(3, torch.Generator().manual_seed(7))
    same = (a["obs"] == b["obs"]).all(dim=(1, 2)) & (a["action"] == b["action"]).all(dim=(1, 2))
    flipped = ((b["obs"] == a["obs"] * torch.from_numpy(obs_sign)).all(dim=(1, 2))
               & (b["action"] == a["action"] * torch.from_numpy(act_sign)).all(dim=(1, 2)))
    assert bool((same ^ flipped).all())                               # each row is itself or its mirror image
    assert 0.4 < float(flipped.float().mean()) < 0.6
    assert bool((b["obs"][flipped][..., 1] == -a["obs"][flipped][..., 1]).all())   # pusher y flips


def test_mirror_needs_a_world_with_a_symmetry_and_keeps_old_fingerprints(monkeypatch):
    from simdiff.pipelines.mol import adapters

    cfg = MolConfig()
    assert with_overrides(cfg, generalist={"mirror": False}).fingerprint() == cfg.fingerprint()
    assert with_overrides(cfg, generalist={"mirror": True}).fingerprint() != cfg.fingerprint()
    monkeypatch.setattr(adapters, "mirror_signs", lambda env_id: (_ for _ in ()).throw(
        ValueError(f"mirror: {env_id} has none")))
    with pytest.raises(ValueError, match="mirror"):
        adapters.preflight(with_overrides(cfg, generalist={"mirror": True}))
    adapters.preflight(cfg)                                            # off: never asked


def test_source_token_tags_expert_and_pseudo_rows_and_keeps_the_batch():
    import torch

    from simdiff.pipelines.mol.adapters import SOURCE_EXPERT, SOURCE_PSEUDO, _batch_fn

    pseudo = _Labels(np.zeros((50, 2, 3), np.float32), np.zeros((50, 8, 2), np.float32))
    plain = _batch_fn(_Paired(), pseudo, 16, 0.25, finetune_from=60)
    tagged = _batch_fn(_Paired(), pseudo, 16, 0.25, finetune_from=60, source_token=True)
    for step in (0, 59, 60):
        a, b = plain(step, torch.Generator().manual_seed(3)), tagged(step, torch.Generator().manual_seed(3))
        assert a["task"] is None and torch.equal(a["obs"], b["obs"]) and torch.equal(a["action"], b["action"])
        is_paired = b["obs"][:, -1, 0] == 1.0                                 # _Paired marks its rows 1
        assert b["task"].dtype == torch.long
        assert torch.equal(b["task"], torch.where(is_paired, SOURCE_EXPERT, SOURCE_PSEUDO))
        assert int(is_paired.sum()) == (16 if step >= 60 else 4)


def test_source_token_config_fingerprint_and_preflight():
    from simdiff.pipelines.mol import adapters
    from simdiff.pipelines.mol.stages import generalist_jobs

    cfg = MolConfig()
    on = with_overrides(cfg, pseudo={"source_token": True})
    assert with_overrides(cfg, pseudo={"source_token": False}).fingerprint() == cfg.fingerprint()
    assert on.fingerprint() != cfg.fingerprint()
    final = on.dagger.rounds
    jobs = dict(generalist_jobs(on, Path("run"), final))
    assert jobs[f"generalist_distilled_r{final}"]["source_token"] is True
    assert "source_token" not in jobs["generalist_labeled_only"]            # its rows are all demos
    if final:                                                               # the acting generalists: unchanged
        assert "source_token" not in dict(generalist_jobs(on, Path("run"), final - 1))[
            f"generalist_distilled_r{final - 1}"]
    spec = adapters.with_source_token(on.generalist)
    pcfg = adapters.policy_config(spec, seed=0)
    assert (pcfg.model.num_tasks, pcfg.model.default_task) == (2, adapters.SOURCE_EXPERT)
    clash = with_overrides(on, generalist={"overrides": {"model": {"num_tasks": 3}}})
    with pytest.raises(ValueError, match="source_token: the data-source token is the policy's task embedding"):
        adapters.preflight(clash)


def test_finetune_fraction_is_the_final_distilled_generalists_only():
    from simdiff.pipelines.mol.stages import generalist_jobs

    cfg = with_overrides(MolConfig(), dagger={"rounds": 2}, pseudo={"finetune_fraction": 0.25})
    final = dict(generalist_jobs(cfg, Path("run"), 2))
    assert final["generalist_distilled_r2"]["finetune_fraction"] == 0.25
    assert "finetune_fraction" not in final["generalist_labeled_only"]     # paired demos only anyway
    for r in (0, 1):                               # the acting generalists, whose rollouts make the labels
        assert "finetune_fraction" not in dict(generalist_jobs(cfg, Path("run"), r))[f"generalist_distilled_r{r}"]


def test_final_paired_fraction_is_the_final_distilled_generalists_only():
    from simdiff.pipelines.mol.stages import _labels_summary, generalist_jobs

    cfg = with_overrides(MolConfig(), dagger={"rounds": 2}, pseudo={"paired_fraction": 0.8})
    mixed = with_overrides(cfg, pseudo={"final_paired_fraction": 0.6, "paired_domain_weights": [4, 1, 1, 1]})
    assert with_overrides(cfg, pseudo={"final_paired_fraction": None}).fingerprint() == cfg.fingerprint()
    assert mixed.fingerprint() != cfg.fingerprint()
    assert dict(generalist_jobs(mixed, Path("run"), 2))["generalist_distilled_r2"]["paired_fraction"] == 0.6
    assert dict(generalist_jobs(cfg, Path("run"), 2))["generalist_distilled_r2"]["paired_fraction"] == 0.8
    for r in (0, 1):                               # the acting generalists keep the rounds' share
        assert dict(generalist_jobs(mixed, Path("run"), r))[f"generalist_distilled_r{r}"]["paired_fraction"] == 0.8
    # the variant probe's `--set pseudo.paired_fraction=0.6` on a finished run builds the same final job
    probe = with_overrides(cfg, pseudo={"paired_fraction": 0.6, "paired_domain_weights": [4, 1, 1, 1]})
    assert dict(generalist_jobs(probe, Path("run"), 2))["generalist_distilled_r2"] == dict(
        generalist_jobs(mixed, Path("run"), 2))["generalist_distilled_r2"]
    assert "60% of each final distilled batch from the paired demos (80% in the DAgger rounds)" in _labels_summary(mixed)
    assert "weighted 4:1:1:1" in _labels_summary(mixed)
    with pytest.raises(ConfigError, match="final_paired_fraction"):
        with_overrides(cfg, pseudo={"final_paired_fraction": 1.5})
