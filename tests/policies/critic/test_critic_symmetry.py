"""Mirror-averaged critics: exactly invariant under the world's reflection, and equal to the plain critic on
what is already symmetric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.critic.config import CriticModelConfig
from policies.critic.ensemble import ensemble_critic
from policies.critic.scorer import Critic
from policies.critic.symmetry import affine_sign_map, env_mirror, mirror_critic

ENV = "simdiff/Push-v0"


def _critic(policy, seed=1) -> Critic:
    c = Critic.from_policy(policy, CriticModelConfig(drop_blocks=2))
    torch.manual_seed(seed)
    for p in c.net.head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return c


def _normalized_policy(make_policy):
    """A tiny policy whose observation and action normalizers have offsets, so the reflection is affine."""
    from policies.diffusion.normalizer import Normalizer

    p = make_policy()
    rng = np.random.default_rng(0)
    p.obs_normalizer = Normalizer("minmax", rng.uniform(0.5, 3.0, 12), rng.normal(0.0, 0.3, 12))
    p.action_normalizer = Normalizer("minmax", np.array([1.3, 0.8]), np.array([0.1, -0.2]))
    return p


def test_affine_sign_map_recovers_a_normalization_and_refuses_other_maps():
    scale, offset = np.array([2.0, 0.5, 3.0]), np.array([0.1, -1.0, 0.4])
    sign = np.array([1.0, -1.0, -1.0])
    a, b = affine_sign_map(lambda v: v * scale + offset, sign, (4, 3))
    np.testing.assert_allclose(a[0], sign)
    v = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_allclose((sign * v) * scale + offset, a * (v * scale + offset) + b, atol=1e-5)
    with pytest.raises(ValueError, match="not a sign flip"):
        affine_sign_map(lambda v: v ** 2 + v, sign, (4, 3))


def test_mirrored_critic_is_invariant_and_averages_the_two_views(make_policy):
    policy = _normalized_policy(make_policy)
    base = _critic(policy)
    sym = env_mirror(ENV)
    m = mirror_critic(base, sym)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(6, 2, 20, generator=g).numpy()
    raw = torch.randn(6, policy.horizons[1], 2, generator=g)            # unnormalized actions
    x = policy.action_normalizer.normalize(raw)
    xm = policy.action_normalizer.normalize(raw * torch.as_tensor(sym["action"]))
    om = obs * sym["obs"]
    eps = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        for t_val in (0, 20, 49):
            t = torch.full((6,), t_val)
            ab = policy.schedule.alpha_bars[t_val].to(x.dtype)
            # a noisy chunk and its reflection (the clean part reflects with the offset, the noise by sign only)
            xt = ab.sqrt() * x + (1 - ab).sqrt() * eps
            xmt = ab.sqrt() * xm + (1 - ab).sqrt() * eps * torch.as_tensor(sym["action"])
            s = m.score(xt, t, m.condition(m.obs_features(obs)))
            sm = m.score(xmt, t, m.condition(m.obs_features(om)))
            r = base.score(xt, t, base.condition(base.obs_features(obs)))
            rm = base.score(xmt, t, base.condition(base.obs_features(om)))
            torch.testing.assert_close(s, sm, atol=1e-5, rtol=1e-5)            # exactly invariant
            torch.testing.assert_close(s, 0.5 * (r + rm), atol=1e-5, rtol=1e-5)  # the mean of the two views
        assert (r - rm).abs().mean() > 1e-3      # the plain critic is not invariant: the test can fail
        # clean chunks are scored at step 0, whose alpha_bar is just below 1: invariant to that precision
        t0 = torch.zeros(6, dtype=torch.long)
        torch.testing.assert_close(m.score(x, t0, m.condition(m.obs_features(obs))),
                                   m.score(xm, t0, m.condition(m.obs_features(om))), atol=1e-2, rtol=1e-2)
    assert m.net.act_offset.abs().max() > 0      # the offsets of the normalization are accounted for


def test_noisy_chunks_are_reflected_with_a_scaled_offset(make_policy):
    policy = _normalized_policy(make_policy)
    m = mirror_critic(_critic(policy), env_mirror(ENV))
    x0 = policy.action_normalizer.normalize(torch.randn(4, policy.horizons[1], 2))
    x0m = policy.action_normalizer.normalize(policy.action_normalizer.unnormalize(x0) * torch.tensor([1.0, -1.0]))
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 10, 30, 49])
    ab = policy.schedule.alpha_bars[t].view(-1, 1, 1).to(x0.dtype)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    want = ab.sqrt() * x0m + (1 - ab).sqrt() * eps * torch.tensor([1.0, -1.0])
    torch.testing.assert_close(m.net.mirror_chunk(xt, t), want, atol=1e-5, rtol=1e-5)


def test_mirror_of_an_ensemble_and_bad_signs(make_policy):
    policy = make_policy()
    ens = ensemble_critic([_critic(policy, 1), _critic(policy, 2)])
    m = mirror_critic(ens, env_mirror(ENV))
    feat = torch.randn(3, policy.obs_feat_dim)
    x, t = torch.randn(3, policy.horizons[1], 2), torch.zeros(3, dtype=torch.long)
    assert m.net(x, t, feat).shape == (3,)
    with pytest.raises(ValueError, match="expected signs of shape"):
        mirror_critic(ens, {"obs": np.ones(5), "action": np.ones(2)})
