"""Diffusion policy speed: action-chunk latency vs. denoising steps, training throughput, batched evaluation.

    simdiff bench policy [--policy DIR] [--config configs/policy/push.yaml] [--steps 1,2,5,10,20]
                         [--episodes 200] [--train-steps 20] [--no-runner]

1. Latency of one action chunk (``predict_action`` at batch 1, one thread) for each number of DDIM steps;
   target: the default policy (``configs/policy/push.yaml``) with 10 steps under 10 ms per chunk.
2. Training samples/s (loss + backward + AdamW at the config's batch size, one thread).
3. The batched runner (all episodes' envs stepping together) against one episode at a time, on the same
   seeds in this run: episodes/s of each and the speed-up; their success counts must agree.

Times are reported per CPU second of this process (what one free core would give; robust to a busy
machine) and per wall second. Without ``--policy`` the network has untrained weights: latency and training
figures are the same, but untrained episodes wander to the time limit, so pass a trained policy directory
for representative evaluation figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ENV = "simdiff/Push-v0"
TARGET_MS = 10.0


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _policy(args):
    import torch

    from policies.diffusion.policy import DiffusionPolicy

    if args.policy:
        return DiffusionPolicy.load(args.policy)
    from envs.collect import collect
    from policies.diffusion.config import load_policy_config
    from policies.diffusion.data import episodes_from_arrays

    eps = collect(ENV, 4, seed=0, level=0)
    data = episodes_from_arrays([e.obs["obs"] for e in eps], [e.actions for e in eps],
                                {"state": (0, 12), "context": (12, 20)}, meta={"env_id": ENV})
    torch.manual_seed(0)
    return DiffusionPolicy.from_episodes(load_policy_config(args.config), data)


def bench_latency(policy, steps: list[int], repeats: int) -> list[dict]:
    import torch

    To = policy.horizons[0]
    obs = torch.zeros(1, To, policy.obs_dim)
    gen = torch.Generator().manual_seed(0)
    rows = []
    saved = policy.inference_steps
    try:
        for k in steps:
            policy.inference_steps = k
            for _ in range(5):
                policy.predict_action(obs, gen)
            walls, cpus = [], []
            for _ in range(repeats):
                w, c = _timed(lambda: policy.predict_action(obs, gen))
                walls.append(w)
                cpus.append(c)
            rows.append({"ddim_steps": k, "cpu_ms": 1e3 * statistics.median(cpus),
                         "wall_ms": 1e3 * statistics.median(walls), "best_wall_ms": 1e3 * min(walls)})
    finally:
        policy.inference_steps = saved
    return rows


def _with_frozen_graph(policy, on: bool):
    """A view of ``policy`` sharing its networks, with ``noise.frozen_graph`` set to ``on``."""
    import copy

    from policies.diffusion.policy import replace_config

    twin = copy.copy(policy)
    twin.cfg = replace_config(policy.cfg, noise={"frozen_graph": on})
    twin.__dict__["_frozen"] = {}
    return twin


def bench_training(policy, steps: int, batch_size: int) -> dict:
    import copy

    import torch

    from policies.diffusion.data import WindowSampler, episodes_from_arrays

    gen = torch.Generator().manual_seed(0)
    T = 40
    obs = [torch.randn(T, policy.obs_dim, generator=gen).numpy() for _ in range(8)]
    act = [torch.rand(T, policy.action_dim, generator=gen).numpy() * 2 - 1 for _ in range(8)]
    sampler = WindowSampler(episodes_from_arrays(obs, act, policy.obs_layout), *policy.horizons)
    model = copy.deepcopy(policy.model).train()  # leave the benchmarked policy's weights alone
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(k: int) -> None:
        g = torch.Generator().manual_seed(k)
        loss = policy.compute_loss(sampler.sample(batch_size, g), g, model=model).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(0)
    w, c = _timed(lambda: [step(k) for k in range(1, steps + 1)])
    return {"batch_size": batch_size, "steps": steps, "samples_per_cpu_s": steps * batch_size / c,
            "samples_per_wall_s": steps * batch_size / w}


def bench_runner(policy, episodes: int, seed: int, level: int) -> dict:
    from simdiff.pipelines.evaluate import evaluate

    out = {}
    for name, bs in (("batched", episodes), ("sequential", 1)):
        box = {}
        w, c = _timed(lambda bs=bs, box=box: box.update(
            evaluate(policy, ENV, level, episodes, seed, batch_size=bs, show_progress=False)))
        out[name] = {"episodes_per_cpu_s": episodes / c, "episodes_per_wall_s": episodes / w,
                     "success_rate": box["success_rate"], "mean_length": box["mean_length"]}
    out["speedup_cpu"] = out["batched"]["episodes_per_cpu_s"] / out["sequential"]["episodes_per_cpu_s"]
    out["speedup_wall"] = out["batched"]["episodes_per_wall_s"] / out["sequential"]["episodes_per_wall_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="simdiff bench policy", description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=None, help="trained policy directory (default: untrained, from --config)")
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "policy" / "push.yaml"))
    p.add_argument("--steps", default="1,2,5,10,20", help="DDIM step counts (comma separated)")
    p.add_argument("--repeats", type=int, default=50, help="chunks timed per step count (median)")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--no-runner", action="store_true")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    if not steps or min(steps) < 1:
        raise ValueError(f"--steps: expected positive integers, received {args.steps!r}")

    import torch

    torch.set_num_threads(1)
    policy = _policy(args)
    n_params = sum(x.numel() for x in policy.model.parameters())
    print(f"policy: {args.policy or 'untrained ' + args.config}; {n_params / 1e6:.2f} M parameters, "
          f"horizons (To, Tp, Ta) = {policy.horizons}; 1 thread")

    print(f"\naction-chunk latency at batch 1 (median of {args.repeats}; 'best' = fastest call, the figure a "
          "quiet core approaches):")
    for r in bench_latency(policy, steps, args.repeats):
        mark = "  <- default" if r["ddim_steps"] == policy.cfg.noise.inference_steps else ""
        print(f"  {r['ddim_steps']:3d} DDIM steps: {r['cpu_ms']:6.2f} ms CPU ({r['cpu_ms'] / TARGET_MS:.2f}x the "
              f"{TARGET_MS:g} ms target), {r['wall_ms']:6.2f} ms wall, best {r['best_wall_ms']:6.2f} ms{mark}")

    # Baseline in the same run: the same policy with the denoiser run eagerly (no frozen graph).
    default = policy.cfg.noise.inference_steps
    frozen = policy.cfg.noise.frozen_graph
    other = _with_frozen_graph(policy, not frozen)
    (alt,) = bench_latency(other, [default], args.repeats)
    (ref,) = bench_latency(policy, [default], args.repeats)
    names = ("frozen graph", "eager") if frozen else ("eager", "frozen graph")
    print(f"  {default} steps, {names[0]} vs {names[1]} (interleaved re-run): {ref['cpu_ms']:.2f} vs "
          f"{alt['cpu_ms']:.2f} ms CPU ({alt['cpu_ms'] / ref['cpu_ms']:.2f}x)")

    tr = bench_training(policy, args.train_steps, policy.cfg.train.batch_size)
    print(f"\ntraining: {tr['samples_per_cpu_s']:.0f} samples per CPU second, {tr['samples_per_wall_s']:.0f} per wall "
          f"second (batch {tr['batch_size']}, {tr['steps']} steps)")

    if not args.no_runner:
        r = bench_runner(policy, args.episodes, args.seed, args.level)
        print(f"\nevaluation, {args.episodes} episodes of {ENV} level {args.level} (seeds {args.seed}..):")
        for name in ("batched", "sequential"):
            x = r[name]
            print(f"  {name:10s}: {x['episodes_per_cpu_s']:7.2f} episodes per CPU s, {x['episodes_per_wall_s']:7.2f} "
                  f"per wall s, success {x['success_rate']:.3f}, mean length {x['mean_length']:.1f}")
        print(f"  batched / sequential: {r['speedup_cpu']:.1f}x (CPU), {r['speedup_wall']:.1f}x (wall)")
        per_1000 = 1000 / r["batched"]["episodes_per_cpu_s"]
        print(f"  1,000 episodes batched: ~{per_1000:.0f} CPU s on one core, ~{per_1000 / 2:.0f} s with "
              "--workers 2 on two free cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
