"""How well does a critic rank the candidate groups step-wise GRPO actually trains on?

One round of step-wise GRPO's data, built exactly as ``policies.critic.grpo`` builds it: on-policy episodes of
the policy, states drawn from them, and at every branched DDIM step k candidates from the same ``x_t``. Every
group is scored twice: by the critic and by the TRUE outcome of each candidate
(:class:`policies.critic.outcomes.OracleStepScores`: completed by deterministic DDIM, replayed from the
simulator state, ``prefs.lookahead`` base-policy chunks ahead, ranked by the preference rule). Printed per
branched step:

* the share of candidate pairs whose true utilities differ by at least ``prefs.tie_margin`` (the rest tie),
* the critic's pairwise accuracy on those pairs,
* the correlation of the critic's and the oracle's batch-normalised advantages (what GRPO multiplies),
* the noise std that, added to the true utilities, gives the same pairwise accuracy: an oracle with the
  critic's accuracy but random errors (``simdiff critic grpo --critic oracle --oracle-noise STD``), and the
  advantage correlation of that noisy oracle.

    python bench/critic_grpo_agreement.py configs/critic/push.yaml --policy base_l3 --critic critic_8k \
        [--episodes 64] [--states 400] [--out agreement.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class TeeScores:
    """Scores with the oracle (returned) and records the critic's scores of the same candidates."""

    def __init__(self, critic, oracle):
        self.critic, self.oracle = critic, oracle
        self.net, self.counter = critic.net, critic.counter
        self.records: list[tuple[int, np.ndarray, np.ndarray]] = []   # (t_prev, critic (n, k), oracle (n, k))

    def bind(self, snaps, hist, d0) -> None:
        self.oracle.bind(snaps, hist, d0)
        self.states = len(snaps)

    def condition(self, feat, task=None):
        return self.critic.condition(feat, task)

    def score(self, x, t, cond):
        c = self.critic.score(x, t, cond)
        u = self.oracle.score(x, t, None)
        n = self.states
        self.records.append((int(t), c.view(n, -1).double().numpy(), u.view(n, -1).double().numpy()))
        return u


def pair_stats(scores: np.ndarray, truth: np.ndarray, margin: float) -> tuple[float, float]:
    """Share of within-group pairs with ``|truth_i - truth_j| >= margin``, and the accuracy of ``scores`` on them."""
    k = truth.shape[1]
    i, j = np.triu_indices(k, 1)
    dt, ds = truth[:, i] - truth[:, j], scores[:, i] - scores[:, j]
    decided = np.abs(dt) >= margin
    if not decided.any():
        return 0.0, float("nan")
    return float(decided.mean()), float((np.sign(ds[decided]) == np.sign(dt[decided])).mean())


def batch_adv(s: np.ndarray) -> np.ndarray:
    """GRPO's batch-normalised advantages of ``(n, k)`` group scores."""
    from policies.critic.grpo import group_advantages

    return group_advantages(torch.from_numpy(s), norm="batch").numpy()


def matching_noise(truth: np.ndarray, target: float, margin: float, seed: int) -> float:
    """Noise std whose ``truth + std z`` ranks the decided pairs ``target`` right (bisection on a log scale)."""
    z = np.random.default_rng(seed).standard_normal(truth.shape)
    lo, hi = 1e-4, 10.0
    for _ in range(40):
        mid = float(np.sqrt(lo * hi))
        acc = pair_stats(truth + mid * z, truth, margin)[1]
        lo, hi = (mid, hi) if acc > target else (lo, mid)
    return float(np.sqrt(lo * hi))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="critic config YAML (its grpo and prefs sections are used)")
    ap.add_argument("--policy", required=True)
    ap.add_argument("--critic", required=True)
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--states", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="result JSON")
    args = ap.parse_args(argv)

    from policies.critic.adapter import PolicyDenoiser
    from policies.critic.config import load_critic_config
    from policies.critic.ensemble import load_critics
    from policies.critic.grpo import collect_rollouts, stepwise_samples
    from policies.critic.outcomes import OracleStepScores
    from simdiff.pipelines.critic import env_of, load_policy

    torch.set_num_threads(1)
    cfg = load_critic_config(args.config)
    g = cfg.grpo
    policy = load_policy(args.policy)
    critic = load_critics(args.critic)
    critic.policy = policy
    env_id = env_of(policy)
    den = PolicyDenoiser(policy, cfg.sampling.inference_steps, counter=critic.counter)
    seeds = [args.seed * 100_003 + 900_000 + i for i in range(args.episodes)]
    ro = collect_rollouts(den, env_id, g.level, seeds, [s + 1 for s in seeds], g.eta,
                          cfg.experiment.max_episode_steps, keep_states=True)
    gen = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(ro.feat.shape[0], generator=gen)[:args.states]
    tee = TeeScores(critic, OracleStepScores(PolicyDenoiser(policy, cfg.sampling.inference_steps), env_id,
                                             cfg.prefs.lookahead, args.seed))
    idx = pick.numpy()
    tee.bind([ro.snaps[i] for i in idx.tolist()], ro.hist[idx], ro.d0[idx])
    stepwise_samples(den, tee, ro.feat[pick], g.k, g.eta, g.adv_eps, gen, g.min_train_std, g.stepwise_max_t, "batch")

    margin = cfg.prefs.tie_margin
    rows = []
    for t, c, u in tee.records:
        decided, acc = pair_stats(c, u, margin)
        corr = float(np.corrcoef(batch_adv(c).ravel(), batch_adv(u).ravel())[0, 1])
        std = matching_noise(u, acc, margin, args.seed)
        noisy = u + std * np.random.default_rng(args.seed + 1).standard_normal(u.shape)
        corr_noisy = float(np.corrcoef(batch_adv(noisy).ravel(), batch_adv(u).ravel())[0, 1])
        rows.append({"t_prev": t, "states": int(u.shape[0]), "decided_pairs": decided, "critic_accuracy": acc,
                     "advantage_corr": corr, "matching_noise_std": std, "matching_noise_advantage_corr": corr_noisy,
                     "utility_std_within_group": float(u.std(axis=1).mean())})
        print(f"t_prev {t:3d}: {u.shape[0]} states; decided pairs {100 * decided:.1f}%; critic accuracy on them "
              f"{100 * acc:.1f}%; advantage correlation {corr:.3f}; matching noise std {std:.4f}, whose advantage "
              f"correlation is {corr_noisy:.3f} (within-group utility std {rows[-1]['utility_std_within_group']:.4f})")
    if args.out:
        Path(args.out).write_text(json.dumps({"policy": args.policy, "critic": args.critic, "episodes": args.episodes,
                                              "rollout_success": float(ro.success.mean()), "steps": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
