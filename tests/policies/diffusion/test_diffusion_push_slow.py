"""A real (short) training on Push-v0 expert demos, then on-policy evaluation on held-out seeds.

Opt-in (``pytest -m slow``): a few minutes on one core. With the full ``configs/policy/push.yaml`` budget
(3000 steps) the policy does better than the floor asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.diffusion.config import load_policy_config
from policies.diffusion.data import load_episodes
from policies.diffusion.train import train_policy
from simdiff.pipelines.evaluate import evaluate

# Measured: 100 demos, 1500 steps -> 0.80 success over 250 held-out level-0 seeds. The floor leaves room for
# seed-to-seed spread of a 100-episode estimate (its 95% interval is about +-0.08).
SUCCESS_FLOOR = 0.6


@pytest.mark.slow
def test_short_training_on_push_demos_reaches_the_floor(tmp_path):
    from envs.collect import collect, dataset_attrs
    from envs.datasets import write_demos

    env, kw = "simdiff/Push-v0", {"level": 0}
    demos = write_demos(tmp_path / "push_l0_100.hdf5", collect(env, 100, seed=0, level=0),
                        {"env_name": env, "env_kwargs": kw}, dataset_attrs(env, kw, {"seed": 0}))
    cfg = load_policy_config(Path(__file__).parents[3] / "configs" / "policy" / "push.yaml",
                             {"train": {"steps": 1500}})
    res = train_policy(cfg, load_episodes(demos), tmp_path / "run")
    out = evaluate(res.policy, "simdiff/Push-v0", 0, episodes=100, seed=1000, batch_size=100, show_progress=False)
    assert out["success_rate"] >= SUCCESS_FLOOR, out["success_rate"]
