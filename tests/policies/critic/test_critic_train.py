"""Bradley-Terry training of the critic: the loss, timestep sampling, and learning a known preference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.critic.config import CriticModelConfig, CriticTrainConfig
from policies.critic.preferences import PreferenceData
from policies.critic.scorer import Critic
from policies.critic.train import (
    PAIR_KINDS,
    accuracy_by_pair_kind,
    bradley_terry_loss,
    draw_pairs,
    noisy_pair,
    pair_gaps,
    pair_kinds,
    pair_tensors,
    pairwise_accuracy,
    sample_timesteps,
    soft_preference_loss,
    train_critic,
)


def test_bradley_terry_loss_values_and_gradients():
    s_w = torch.tensor([2.0, 0.0, -1.0, 30.0], dtype=torch.float64, requires_grad=True)
    s_l = torch.tensor([0.0, 0.0, 1.0, -30.0], dtype=torch.float64, requires_grad=True)
    loss = bradley_terry_loss(s_w, s_l)
    expected = -torch.log(torch.sigmoid(s_w - s_l))
    torch.testing.assert_close(loss, expected.detach())
    assert loss[1].item() == pytest.approx(np.log(2.0))
    assert torch.isfinite(bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([200.0]))).all()  # stable
    loss.sum().backward()
    # d/ds_w = -(1 - sigmoid(d)), d/ds_l = +(1 - sigmoid(d)) with d = s_w - s_l
    g = 1.0 - torch.sigmoid((s_w - s_l).detach())
    torch.testing.assert_close(s_w.grad, -g)
    torch.testing.assert_close(s_l.grad, g)
    assert torch.autograd.gradcheck(bradley_terry_loss, (torch.randn(5, dtype=torch.float64, requires_grad=True),
                                                         torch.randn(5, dtype=torch.float64, requires_grad=True)))
    with pytest.raises(ValueError, match="equal shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(4))


def test_gradient_descent_on_a_toy_orders_scores():
    # Free scores for 4 items with preferences 0 > 1 > 2 > 3: BT training recovers the order.
    s = torch.zeros(4, requires_grad=True)
    win, lose = torch.tensor([0, 1, 2, 0, 1, 0]), torch.tensor([1, 2, 3, 2, 3, 3])
    opt = torch.optim.SGD([s], lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        bradley_terry_loss(s[win], s[lose]).mean().backward()
        opt.step()
    assert torch.argsort(s, descending=True).tolist() == [0, 1, 2, 3]


def test_timestep_distributions():
    g = torch.Generator().manual_seed(0)
    u = sample_timesteps(20000, 100, "uniform", g)
    ln = sample_timesteps(20000, 100, "logit_normal", g)
    for t in (u, ln):
        assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) <= 99
    assert abs(u.double().mean().item() - 49.5) < 1.0
    # logit-normal concentrates on the middle: fewer samples at the ends than uniform
    assert ((ln < 10) | (ln >= 90)).double().mean() < 0.5 * ((u < 10) | (u >= 90)).double().mean()
    assert abs(ln.double().mean().item() - 49.5) < 1.5
    shifted = sample_timesteps(20000, 100, "logit_normal", g, logit_mean=-1.5)
    assert shifted.double().mean() < 30
    with pytest.raises(ValueError, match="timesteps"):
        sample_timesteps(3, 100, "cosine", g)


def test_noisy_pair_shares_t_with_independent_noise(tiny_policy):
    sched = tiny_policy.schedule
    x = torch.ones(2, 8, 2)
    t = torch.tensor([0, sched.num_steps - 1])
    a, b = noisy_pair(x, x, t, sched, torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)  # independent noise even for identical chunks
    assert (a[0] - 1).abs().max() < 0.2 and (b[0] - 1).abs().max() < 0.2  # t = 0 is nearly clean
    assert a[1].mean().abs() < 1.0  # t = N-1 is nearly pure noise


def synthetic_preferences(n_states=128, seed=0, Tp=8) -> PreferenceData:
    """Four chunks per state scattered around a fixed target chunk at different scales (in random order);
    the chunk closer to the target is preferred."""
    rng = np.random.default_rng(seed)
    target = np.linspace(-0.8, 0.8, Tp * 2).reshape(Tp, 2)
    scale = np.stack([rng.permutation([0.05, 0.25, 0.5, 1.0]) for _ in range(n_states)])[..., None, None]
    chunks = (target + scale * rng.normal(size=(n_states, 4, Tp, 2))).astype(np.float32)
    utility = -np.sqrt(((chunks - target) ** 2).sum(axis=(2, 3))).astype(np.float32)
    zeros = np.zeros((n_states, 4), np.float32)
    return PreferenceData(obs=rng.normal(size=(n_states, 2, 20)).astype(np.float32), chunks=chunks, utility=utility,
                          progress=zeros, chunk_return=zeros, success_step=np.full((n_states, 4), -1, np.int32),
                          source=np.zeros(4, np.int8), perturb_std=np.zeros(4, np.float32),
                          episode=np.arange(n_states), step=np.zeros(n_states, np.int32),
                          heldout=np.arange(n_states) >= int(0.75 * n_states))


def test_critic_learns_a_synthetic_preference(tmp_path, tiny_policy):
    data = synthetic_preferences()
    critic = Critic.from_policy(tiny_policy, CriticModelConfig(drop_blocks=2, head_channels=16, head_hidden=32,
                                                               pool="mean"))
    cfg = CriticTrainConfig(steps=150, batch_size=64, lr=1e-2, warmup_steps=10, timesteps="logit_normal",
                            logit_mean=-1.0, ema_max_decay=0.9, log_every=50, ckpt_every=0, eval_timesteps=5,
                            eval_noise_draws=2)
    res = train_critic(critic, data, cfg, margin=0.0, out_dir=tmp_path / "run", show_progress=False)
    acc = [r["accuracy"] for r in res.accuracy]
    assert [r["t"] for r in res.accuracy] == [0, 12, 24, 37, 49]
    assert acc[0] >= 0.9, res.accuracy                        # high accuracy at small t
    assert acc[-1] <= 0.65, res.accuracy                      # pure noise carries (almost) no preference
    assert acc[0] >= acc[2] >= acc[-1] - 0.05                 # degrades towards pure noise
    loaded = Critic.load(tmp_path / "run")
    assert loaded.metrics["heldout_accuracy"] == res.accuracy


def test_pairwise_accuracy_of_a_perfect_and_a_reversed_scorer(tiny_policy):
    data = synthetic_preferences(n_states=16)
    target = torch.linspace(-0.8, 0.8, 16).reshape(8, 2)
    critic = Critic.from_policy(tiny_policy, CriticModelConfig())
    pairs = pair_tensors(critic, data, 0.0, heldout=True)

    class Oracle(torch.nn.Module):  # scores clean chunks by closeness to the target; sign flips it
        def __init__(self, sign):
            super().__init__()
            self.sign = sign

        def condition(self, feat, task=None):
            return feat

        def score_cond(self, x, t, cond):
            return -self.sign * ((x - target) ** 2).sum(dim=(1, 2))

    critic.net = Oracle(1.0)
    assert pairwise_accuracy(critic, pairs, [0], draws=1, seed=0)[0]["accuracy"] > 0.95
    critic.net = Oracle(-1.0)
    assert pairwise_accuracy(critic, pairs, [0], draws=1, seed=0)[0]["accuracy"] < 0.05


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_pairwise_accuracy_on_a_device_matches_the_cpu_and_leaves_the_critic_there(tiny_policy, device):
    data = synthetic_preferences(n_states=16)
    critic = Critic.from_policy(tiny_policy, CriticModelConfig())
    pairs = pair_tensors(critic, data, 0.0, heldout=True)
    ref = pairwise_accuracy(critic, pairs, [0, 30], draws=2, seed=3)
    got = pairwise_accuracy(critic, pairs, [0, 30], draws=2, seed=3, batch=5, device=device)
    assert [r["pairs"] for r in got] == [r["pairs"] for r in ref]
    for a, b in zip(got, ref):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1.0 / a["pairs"])   # at most one near-tie flips
    assert all(p.device.type == "cpu" for p in critic.net.parameters())


def test_accuracy_by_pair_kind_splits_the_heldout_pairs(tiny_policy):
    # candidates 0, 1 are "policy samples", 2, 3 "perturbed"; the oracle is right on every pair
    data = synthetic_preferences(n_states=16)
    data.source[:] = [0, 0, 1, 1]
    pairs = data.pairs(0.0, heldout=True)[0]
    assert pair_kinds(data.source, pairs).tolist() == [int(data.source[w] + data.source[l_]) for _, w, l_ in pairs]
    critic = Critic.from_policy(tiny_policy, CriticModelConfig())
    target = torch.linspace(-0.8, 0.8, 16).reshape(8, 2)

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # the critic reads its dtype off a parameter

        def condition(self, feat, task=None):
            return feat

        def score_cond(self, x, t, cond):
            return -((x - target) ** 2).sum(dim=(1, 2))

    critic.net = Oracle()
    rows = accuracy_by_pair_kind(critic, data, 0.0, [0, 30], draws=1, seed=0)
    assert [(r["kind"], r["t"]) for r in rows] == [(k, t) for k in PAIR_KINDS for t in (0, 30)]
    at0 = [r for r in rows if r["t"] == 0]
    assert sum(r["pairs"] for r in at0) == len(pairs)          # each held-out pair in exactly one kind
    assert all(r["accuracy"] > 0.9 for r in at0)
    with pytest.raises(ValueError, match="shape"):
        pair_kinds(data.source, pairs[:, :2])


def synthetic_siblings(n_states=160, seed=0, Tp=8, steps=(5, 30)) -> PreferenceData:
    """Sibling data: four noisy candidates per state at one of ``steps``; the one whose mean over the chunk is
    larger wins (a preference the noise level does not hide). ``chunks`` hold unrelated clean values, so a
    critic that read them instead of the noisy siblings would learn nothing."""
    rng = np.random.default_rng(seed)
    noisy = rng.normal(size=(n_states, 4, Tp, 2)).astype(np.float32)
    utility = noisy.mean(axis=(2, 3)).astype(np.float32)
    zeros = np.zeros((n_states, 4), np.float32)
    return PreferenceData(obs=rng.normal(size=(n_states, 2, 20)).astype(np.float32),
                          chunks=rng.normal(size=noisy.shape).astype(np.float32), utility=utility, progress=zeros,
                          chunk_return=zeros, success_step=np.full((n_states, 4), -1, np.int32),
                          source=np.zeros(4, np.int8), perturb_std=np.zeros(4, np.float32),
                          episode=np.arange(n_states), step=np.zeros(n_states, np.int32),
                          heldout=np.arange(n_states) >= int(0.75 * n_states), noisy=noisy,
                          noisy_t=np.asarray(steps, np.int32)[np.arange(n_states) % len(steps)])


def test_critic_learns_sibling_pairs_at_their_own_steps(tmp_path, tiny_policy):
    data = synthetic_siblings()
    critic = Critic.from_policy(tiny_policy, CriticModelConfig(drop_blocks=2, head_channels=16, head_hidden=32,
                                                               pool="mean"))
    cfg = CriticTrainConfig(steps=150, batch_size=64, lr=1e-2, warmup_steps=10, ema_max_decay=0.9, log_every=50,
                            ckpt_every=0, eval_timesteps=5, eval_noise_draws=2)
    res = train_critic(critic, data, cfg, margin=0.0, out_dir=tmp_path / "run", show_progress=False)
    # one accuracy row per sibling step, each measured on that step's held-out pairs
    assert [r["t"] for r in res.accuracy] == [5, 30]
    held = pair_tensors(critic, data, 0.0, heldout=True)
    assert sum(r["pairs"] for r in res.accuracy) == held.pairs.shape[0]
    assert all(r["accuracy"] >= 0.85 for r in res.accuracy), res.accuracy
    # the sibling pairs are the noisy candidates: the clean completions are not what is scored
    assert torch.equal(held.chunks, torch.as_tensor(data.noisy))
    assert held.step_of(torch.arange(3)).tolist() == data.noisy_t[held.pairs[:3, 0].numpy()].tolist()


def test_gap_sampling_draws_pairs_in_proportion_to_their_utility_gap(tmp_path, tiny_policy):
    data = synthetic_preferences()
    critic = Critic.from_policy(tiny_policy, CriticModelConfig(drop_blocks=2, head_channels=16, head_hidden=32,
                                                               pool="mean"))
    train = pair_tensors(critic, data, 0.0, heldout=False)
    gaps = pair_gaps(data, train)
    s, w, l_ = train.pairs.unbind(1)
    expect = torch.as_tensor(data.utility, dtype=torch.float64)[s, w] - torch.as_tensor(data.utility,
                                                                                       dtype=torch.float64)[s, l_]
    assert torch.equal(gaps, expect) and bool((gaps > 0).all())
    idx = draw_pairs(3, 40_000, torch.Generator().manual_seed(0), torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64))
    counts = torch.bincount(idx, minlength=3)
    assert counts[1] == 0 and 2.8 < counts[2] / counts[0] < 3.2
    with pytest.raises(ValueError, match="weights: expected shape"):
        draw_pairs(4, 8, torch.Generator(), torch.ones(3))
    with pytest.raises(ValueError, match="pair_sampling"):
        CriticTrainConfig(pair_sampling="weighted")
    cfg = CriticTrainConfig(steps=150, batch_size=64, lr=1e-2, warmup_steps=10, logit_mean=-1.0, ema_max_decay=0.9,
                            log_every=50, ckpt_every=0, eval_timesteps=5, eval_noise_draws=2, pair_sampling="gap")
    res = train_critic(critic, data, cfg, margin=0.0, out_dir=tmp_path / "gap", show_progress=False)
    assert res.accuracy[0]["accuracy"] >= 0.9, res.accuracy          # it still learns the preference


def test_soft_preference_loss_is_bradley_terry_at_one_and_wants_equal_scores_for_a_tie():
    s_w, s_l = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    torch.testing.assert_close(soft_preference_loss(s_w, s_l, torch.ones(3)), bradley_terry_loss(s_w, s_l))
    d = torch.linspace(-3, 3, 61)
    loss = soft_preference_loss(d, torch.zeros(61), torch.full((61,), 0.5))
    assert int(loss.argmin()) == 30                                   # a tie: minimal at equal scores
    target = torch.sigmoid(torch.tensor(1.2))                         # minimal where sigmoid(d) = target
    assert abs(float(d[soft_preference_loss(d, torch.zeros(61), target.expand(61)).argmin()]) - 1.2) < 0.051
    with pytest.raises(ValueError, match="equal shape"):
        soft_preference_loss(s_w, s_l, torch.ones(2))
    with pytest.raises(ValueError, match="train.loss"):
        CriticTrainConfig(loss="mse")
    with pytest.raises(ValueError, match="soft_temperature"):
        CriticTrainConfig(loss="soft", soft_temperature=0.0)


def test_soft_loss_trains_on_every_pair_and_learns_the_preference(tmp_path, tiny_policy):
    data = synthetic_preferences()
    critic = Critic.from_policy(tiny_policy, CriticModelConfig(drop_blocks=2, head_channels=16, head_hidden=32,
                                                               pool="mean"))
    cfg = CriticTrainConfig(steps=150, batch_size=64, lr=1e-2, warmup_steps=10, logit_mean=-1.0, ema_max_decay=0.9,
                            log_every=50, ckpt_every=0, eval_timesteps=5, eval_noise_draws=2, loss="soft",
                            soft_temperature=0.2)
    # the soft loss trains on every pair whatever the margin; the margin only picks the held-out pairs scored
    res = train_critic(critic, data, cfg, margin=0.5, out_dir=tmp_path / "soft", show_progress=False)
    assert res.accuracy[0]["accuracy"] >= 0.9, res.accuracy
