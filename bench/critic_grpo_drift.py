"""Where does a GRPO-tuned policy drift? Its chunks against the reference policy's, scored by critics.

For held-out states of a preference file (base-policy states), both policies sample a clean chunk from the
same starting noise (deterministic DDIM, as the evaluation runs them). The script prints, per policy, the mean
score of each critic at t = 0 and simple action statistics, and the score difference tuned - reference with
its standard error. A policy that gains critic score while losing on-policy success (the evaluation's numbers)
follows the critic's errors, not its signal.

    python bench/critic_grpo_drift.py --policy base_l3 --tuned grpo_sw/policy --prefs prefs.npz \
        --critic critic_a --critic critic_b [--states 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def chunks(den, obs: np.ndarray, seed: int) -> torch.Tensor:
    from policies.critic.adapter import sample_chunks

    cond = den.condition(den.obs_features(obs))
    return sample_chunks(den, cond, 0.0, torch.Generator().manual_seed(seed))


def action_stats(den, x0: torch.Tensor) -> dict:
    a = den.to_actions(x0).numpy()                     # (B, Ta, Da) executed actions
    return {"mean_speed": float(np.linalg.norm(a, axis=-1).mean()),
            "mean_step_change": float(np.linalg.norm(np.diff(a, axis=1), axis=-1).mean()),
            "mean_action": [float(v) for v in a.mean(axis=(0, 1))]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="reference (base) policy")
    ap.add_argument("--tuned", required=True, action="append", help="GRPO-tuned policy (repeatable)")
    ap.add_argument("--prefs", required=True, help="preference file whose held-out states are used")
    ap.add_argument("--critic", required=True, action="append", help="critic to score with (repeatable)")
    ap.add_argument("--states", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="result JSON")
    args = ap.parse_args(argv)

    from policies.critic.adapter import PolicyDenoiser
    from policies.critic.ensemble import load_critics
    from policies.critic.preferences import PreferenceData
    from simdiff.pipelines.critic import load_policy

    torch.set_num_threads(1)
    data = PreferenceData.load(args.prefs)
    idx = np.flatnonzero(data.heldout)
    idx = np.random.default_rng(args.seed).choice(idx, size=min(args.states, idx.size), replace=False)
    obs = data.obs[np.sort(idx)]
    ref = load_policy(args.policy)
    critics = {c: load_critics(c) for c in args.critic}
    rows, scores = {}, {}
    with torch.no_grad():
        for name, path in [("reference", args.policy), *[(t, t) for t in args.tuned]]:
            p = ref if name == "reference" else load_policy(path)
            den = PolicyDenoiser(p)
            x0 = chunks(den, obs, args.seed)
            rows[name] = action_stats(den, x0)
            for cname, c in critics.items():
                s = c.score(x0, 0, c.condition(c.obs_features(obs))).double().numpy()
                scores[(name, cname)] = s
                rows[name][f"score[{cname}]"] = float(s.mean())
    for name in args.tuned:
        for cname in critics:
            d = scores[(name, cname)] - scores[("reference", cname)]
            rows[name][f"gain[{cname}]"] = [float(d.mean()), float(d.std() / np.sqrt(d.size))]
    print(json.dumps(rows, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"states": int(obs.shape[0]), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
