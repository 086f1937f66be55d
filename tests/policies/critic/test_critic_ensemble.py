"""Critic ensembles: the mean of several critics' scores, loaded from checkpoints, usable wherever a critic is."""

from __future__ import annotations

import pytest
import torch

from policies.critic.config import CriticModelConfig
from policies.critic.ensemble import EnsembleNet, ensemble_critic, load_critics
from policies.critic.model import critic_cost_ratio
from policies.critic.scorer import Critic


def _critic(policy, seed: int) -> Critic:
    c = Critic.from_policy(policy, CriticModelConfig(drop_blocks=2))
    torch.manual_seed(seed)
    for p in c.net.head.parameters():   # distinct heads: the members must score differently
        torch.nn.init.normal_(p, std=0.5)
    return c


def _inputs(policy, b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, policy.horizons[1], 2, generator=g)
    t = torch.randint(policy.schedule.num_steps, (b,), generator=g)
    feat = torch.randn(b, policy.obs_feat_dim, generator=g)
    return x, t, feat


def test_ensemble_score_is_the_mean_of_member_scores(tiny_policy):
    members = [_critic(tiny_policy, s) for s in (1, 2, 3)]
    ens = ensemble_critic(members)
    x, t, feat = _inputs(tiny_policy)
    with torch.no_grad():
        each = torch.stack([m.score(x, t, m.condition(feat)) for m in members])
        got = ens.score(x, t, ens.condition(feat))
    assert not torch.allclose(each[0], each[1])
    torch.testing.assert_close(got, each.mean(dim=0))
    # the network alone (as the accuracy measurement and the cost count call it) gives the same scores
    torch.testing.assert_close(ens.net(x, t, feat), got)


def test_ensemble_costs_the_sum_of_its_members(tiny_policy):
    members = [_critic(tiny_policy, s) for s in (1, 2)]
    one = critic_cost_ratio(tiny_policy.net, members[0].net, tiny_policy.horizons[1])
    both = critic_cost_ratio(tiny_policy.net, ensemble_critic(members).net, tiny_policy.horizons[1])
    assert both == pytest.approx(2 * one, rel=1e-6)


def test_load_critics_reads_a_comma_list_of_checkpoints(tiny_policy, tmp_path):
    members = [_critic(tiny_policy, s) for s in (1, 2)]
    for i, m in enumerate(members):
        m.save(tmp_path / f"c{i}" / "critic")
    single = load_critics(tmp_path / "c0")
    assert isinstance(single.net, type(members[0].net))
    ens = load_critics(f"{tmp_path / 'c0'},{tmp_path / 'c1'}")
    assert isinstance(ens.net, EnsembleNet) and len(ens.net.members) == 2
    x, t, feat = _inputs(tiny_policy)
    with torch.no_grad():
        want = torch.stack([m.net(x, t, feat) for m in members]).mean(dim=0)
        torch.testing.assert_close(ens.net(x, t, feat), want)


def test_members_of_different_policies_are_refused(tiny_policy):
    a, b = _critic(tiny_policy, 1), _critic(tiny_policy, 2)
    b.policy_meta = {**b.policy_meta, "dataset": {"fingerprint": "another dataset"}}
    with pytest.raises(ValueError, match="same base policy"):
        ensemble_critic([a, b])


def test_bad_inputs_get_clear_errors(tiny_policy):
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleNet([_critic(tiny_policy, 1).net])
    with pytest.raises(ValueError, match="one or more checkpoint paths"):
        load_critics(" , ")
    ens = ensemble_critic([_critic(tiny_policy, s) for s in (1, 2)])
    x, t, feat = _inputs(tiny_policy)
    with pytest.raises(ValueError, match="members' conditions"):
        ens.net.score_cond(x, t, feat)   # one member's condition, not the concatenation
