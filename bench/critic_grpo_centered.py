"""Step-wise GRPO with a critic whose state-independent part is taken out (an experiment; it does not help).

A learned critic may prefer some chunks at every state alike ("push towards +x"), which gradient ascent then
follows everywhere. This probe scores a chunk by ``s(x, o) - mean_k s(x, o_k)`` over ``K`` fixed reference
states ``o_k`` (training states of a preference file), so only how much better a chunk is for THIS state than
for others remains, and runs step-wise GRPO with it (``K + 1`` critic calls per score).

    python bench/critic_grpo_centered.py --policy base_l3 --critic critic_8k --prefs prefs.npz --out DIR \
        [--k 16] [--mirror] [--set grpo.eval_episodes=200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]

from policies.critic.model import CriticNetView  # noqa: E402  (after the path insert)


class CenteredNet(CriticNetView):
    """``score(x, o) - mean_k score(x, o_k)`` for fixed reference conditions ``ref (K, C)``."""

    def __init__(self, net: nn.Module, ref: Tensor):
        super().__init__(net)
        self.net, self.ref = net, ref

    def condition(self, obs_feat: Tensor, task: Tensor | None = None) -> Tensor:
        return self.net.condition(obs_feat, task)

    def score_cond(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        b, k = x.shape[0], self.ref.shape[0]
        others = self.net.score_cond(x.repeat(k, 1, 1), t.repeat(k), self.ref.repeat_interleave(b, 0))
        return self.net.score_cond(x, t, cond) - others.view(k, b).mean(dim=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "critic" / "push.yaml"))
    ap.add_argument("--policy", required=True)
    ap.add_argument("--critic", required=True)
    ap.add_argument("--prefs", required=True, help="preference file whose training states are the references")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=16, help="reference states")
    ap.add_argument("--mirror", action="store_true", help="mirror-average the critic first")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    from policies.critic.config import load_critic_config
    from policies.critic.ensemble import load_critics
    from policies.critic.grpo import run_grpo
    from policies.critic.preferences import PreferenceData
    from policies.critic.scorer import Critic
    from policies.critic.symmetry import env_mirror, mirror_critic
    from simdiff.config import parse_overrides
    from simdiff.pipelines.critic import env_of, grpo_eval_fn, load_policy
    from simdiff.utils.io import write_json

    torch.set_num_threads(1)
    cfg = load_critic_config(args.config, parse_overrides(args.overrides))
    policy = load_policy(args.policy)
    env_id = env_of(policy)
    critic = load_critics(args.critic)
    critic.policy = policy
    if args.mirror:
        critic = mirror_critic(critic, env_mirror(env_id))
    data = PreferenceData.load(args.prefs)
    idx = np.random.default_rng(0).choice(np.flatnonzero(~data.heldout), args.k, replace=False)
    with torch.no_grad():
        ref = critic.net.condition(critic.obs_features(data.obs[idx]))
    centered = Critic(CenteredNet(critic.net, ref), critic.cfg, policy, critic.policy_meta, counter=critic.counter)
    res = run_grpo(policy, cfg.grpo, "stepwise", env_id=env_id, critic=centered, eval_fn=grpo_eval_fn(cfg, env_id),
                   inference_steps=cfg.sampling.inference_steps)
    out = Path(args.out)
    res.policy.save(out / "policy", metrics={"grpo_mode": "stepwise_centered", "curve": res.curve})
    write_json(out / "grpo.json", {"mode": "stepwise_centered", "k": args.k, "mirror": args.mirror,
                                   "curve": res.curve, "log": res.log})
    print("success % every", cfg.grpo.eval_every, "updates:",
          " ".join(f"{100 * r['success_rate']:.1f}" for r in res.curve), f"(final KL {res.log[-1]['kl']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
