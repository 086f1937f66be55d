"""The critic network: a truncated copy of the policy's U-Net, its checkpoints and its cost."""

from __future__ import annotations

import pytest
import torch

from policies.critic.config import CriticModelConfig
from policies.critic.model import (
    count_blocks,
    critic_cost_ratio,
    critic_from_policy_net,
    film_input,
    run_program,
    truncate_program,
    unet_program,
)
from policies.critic.scorer import Critic


def _inputs(policy, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    Tp = policy.horizons[1]
    x = torch.randn(b, Tp, 2, generator=g)
    t = torch.randint(policy.schedule.num_steps, (b,), generator=g)
    feat = torch.randn(b, policy.obs_feat_dim, generator=g)
    return x, t, feat


def test_program_reproduces_the_unet_forward(tiny_policy):
    # Guards the critic against drift of ConditionalUnet1D: the full program + output layers == forward.
    net = tiny_policy.net
    x, t, feat = _inputs(tiny_policy)
    ops = unet_program(net.unet)
    h = run_program(ops, x, film_input(net.unet.step_encoder, t, net.condition(feat)))
    out = net.unet.final_proj(net.unet.final_block(h)).transpose(1, 2)
    torch.testing.assert_close(out, net(x, t, feat), rtol=1e-5, atol=1e-6)


def test_truncation_keeps_the_first_blocks_and_their_weights(tiny_policy):
    net = tiny_policy.net
    ops = unet_program(net.unet)
    n = count_blocks(ops)
    assert n == 8  # 2 levels x 2 down + 2 mid + 1 up level x 2
    assert count_blocks(truncate_program(ops, n - 3)) == n - 3
    critic = critic_from_policy_net(net, CriticModelConfig(drop_blocks=3), 2)
    kept = [m for k, m in zip(critic.kinds, critic.blocks) if k == "res"]
    originals = [m for k, m in ops if k == "res"][:n - 3]
    for a, b in zip(kept, originals):
        assert a is not b  # deep copies: training the critic never touches the policy
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
    x, t, feat = _inputs(tiny_policy)
    s = critic(x, t, feat)
    assert s.shape == (3,) and torch.isfinite(s).all()
    # the score depends on the chunk, the step and the observation
    assert not torch.allclose(s, critic(x.flip(0), t, feat))
    assert not torch.allclose(s, critic(x, (t + 17) % 50, feat))


def test_drop_blocks_out_of_range_is_refused(tiny_policy):
    with pytest.raises(ValueError, match="drop_blocks"):
        critic_from_policy_net(tiny_policy.net, CriticModelConfig(drop_blocks=8), 2)
    with pytest.raises(ValueError, match="drop_blocks"):
        CriticModelConfig(drop_blocks=-1)


def test_cost_ratio_falls_with_dropped_blocks(tiny_policy):
    net = tiny_policy.net
    Tp = tiny_policy.horizons[1]
    costs = [critic_cost_ratio(net, critic_from_policy_net(net, CriticModelConfig(drop_blocks=d), 2), Tp)
             for d in (1, 3, 5)]
    assert costs[0] > costs[1] > costs[2] > 0
    assert costs[0] < 1.2


def test_freeze_backbone_trains_the_head_only(tiny_policy):
    critic = critic_from_policy_net(tiny_policy.net, CriticModelConfig(freeze_backbone=True), 2)
    trainable = {n for n, p in critic.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("head", "head_conv")) for n in trainable)


def test_critic_checkpoint_round_trip(tmp_path, tiny_policy):
    critic = Critic.from_policy(tiny_policy, CriticModelConfig(drop_blocks=2, head_channels=16, head_hidden=8))
    path = critic.save(tmp_path / "critic", metrics={"note": "x"})
    loaded = Critic.load(tmp_path)
    assert loaded.metrics == {"note": "x"} and loaded.cfg == critic.cfg
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(4, 2, 20, generator=g)
    x = torch.randn(4, 8, 2, generator=g)
    torch.testing.assert_close(loaded.score_obs(x, 7, obs), critic.score_obs(x, 7, obs))
    (path / "meta.json").write_text('{"kind": "other"}')
    with pytest.raises(Exception, match="critic|checksum|sha|meta"):
        Critic.load(path)


def test_task_conditioned_policy_gives_a_task_conditioned_critic(make_policy):
    policy = make_policy(num_tasks=3)
    critic = critic_from_policy_net(policy.net, CriticModelConfig(), 2)
    x, t, feat = _inputs(policy)
    assert critic.task_embed is not None
    assert not torch.allclose(critic(x, t, feat, torch.tensor([0, 1, 2])), critic(x, t, feat, torch.tensor([2, 2, 2])))
    with pytest.raises(ValueError, match="task"):
        critic(x, t, feat)
