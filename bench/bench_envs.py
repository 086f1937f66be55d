"""Env speed: Push-v0 against a raw ``mujoco.mj_step`` loop of the same model, Lift-v0 against plain robosuite.

Both sides of each ratio step the same model with the same random actions (and reset every episode length)
in this process, timed in CPU seconds of this process (steps/s per core, robust to a busy machine), so the
ratio is the wrapper's overhead (domain randomization, observation, delay buffer,
gymnasium wrappers). Target: Push-v0 >= 5,000 env steps/s on one core; Lift-v0 within 10% of robosuite.

    simdiff bench envs [--push-steps N] [--lift-steps N] [--no-lift]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _rate(fn, n: int) -> float:
    """Steps per CPU second of this process: on a shared machine, wall time counts other people's work."""
    t = time.process_time()
    fn(n)
    return n / max(time.process_time() - t, 1e-9)


def bench_push(steps: int, seed: int = 0) -> dict[str, float]:
    import mujoco

    import envs
    from envs import push

    actions = np.random.default_rng(seed).uniform(-1, 1, (1024, 2)).astype(np.float32)
    ep = push.MAX_EPISODE_STEPS

    model = push._template_model()
    data = mujoco.MjData(model)

    def raw(n):
        for i in range(n):
            if i % ep == 0:
                mujoco.mj_resetData(model, data)
                mujoco.mj_forward(model, data)
            data.ctrl[:] = actions[i & 1023] * push.MAX_SPEED
            mujoco.mj_step(model, data, nstep=push.N_SUBSTEPS)

    def run_env(env):
        def loop(n):
            env.reset(seed=seed)
            for i in range(n):
                _, _, term, trunc, _ = env.step(actions[i & 1023])
                if term or trunc:
                    env.reset()
        return loop

    wrapped = envs.make("simdiff/Push-v0", level=3)
    bare = push.PushEnv(level=3)
    raw(200)  # warm caches
    r_raw = _rate(raw, steps)
    r_env = _rate(run_env(wrapped), steps)
    r_bare = _rate(run_env(bare), steps)
    n_reset = max(200, steps // 20)
    t = time.process_time()
    for i in range(n_reset):
        bare.reset(seed=i)
    reset_ms = 1e3 * (time.process_time() - t) / n_reset
    return {"raw": r_raw, "env": r_env, "bare": r_bare, "physics": r_raw * push.N_SUBSTEPS, "reset_ms": reset_ms}


def bench_lift(steps: int, seed: int = 0) -> dict[str, float] | None:
    try:
        from envs.lift import LiftEnv, make_robosuite_lift
    except ImportError:
        return None
    try:
        plain = make_robosuite_lift()
    except ImportError:
        return None
    actions = np.random.default_rng(seed).uniform(-1, 1, (1024, 7)) * 0.3
    ep = 100

    def run_plain(n):
        for i in range(n):
            if i % ep == 0:
                plain.reset()
            plain.step(actions[i & 1023])

    env = LiftEnv(level=3)

    def run_env(n):
        for i in range(n):
            if i % ep == 0:
                env.reset(seed=seed + i)
            env.step(actions[i & 1023].astype(np.float32))

    run_plain(5)
    run_env(5)
    r_plain = _rate(run_plain, steps)
    r_env = _rate(run_env, steps)
    t = time.process_time()
    for i in range(20):
        env.reset(seed=i)
    reset_ms = 1e3 * (time.process_time() - t) / 20
    hard = make_robosuite_lift(hard_reset=True)
    t = time.process_time()
    for _ in range(5):
        hard.reset()
    hard_ms = 1e3 * (time.process_time() - t) / 5
    return {"plain": r_plain, "env": r_env, "reset_ms": reset_ms, "hard_reset_ms": hard_ms}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="simdiff bench envs", description=__doc__.splitlines()[0])
    p.add_argument("--push-steps", type=int, default=20000)
    p.add_argument("--lift-steps", type=int, default=200)
    p.add_argument("--no-lift", action="store_true", help="skip Lift-v0 (robosuite)")
    args = p.parse_args(argv)

    r = bench_push(args.push_steps)
    print(f"Push-v0 ({args.push_steps} steps, level 3, 10 physics steps per env step; per CPU second)")
    print(f"  raw mj_step loop     {r['raw']:10.0f} steps/s  ({r['physics']:.0f} physics steps/s)")
    print(f"  PushEnv (unwrapped)  {r['bare']:10.0f} steps/s  ratio {r['bare'] / r['raw']:.2f}")
    print(f"  gymnasium.make env   {r['env']:10.0f} steps/s  ratio {r['env'] / r['raw']:.2f}  "
          f"(target >= 5000: {'ok' if r['env'] >= 5000 else 'MISSED'})")
    print(f"  reset                {r['reset_ms']:10.3f} ms")
    if args.no_lift:
        return 0
    lr = bench_lift(args.lift_steps)
    if lr is None:
        print("Lift-v0: robosuite not installed (pip install simdiff[robot]); skipped")
        return 0
    overhead = 1.0 - lr["env"] / lr["plain"]
    print(f"Lift-v0 ({args.lift_steps} steps, level 3, soft resets every 100 steps; per CPU second)")
    print(f"  plain robosuite Lift {lr['plain']:10.1f} steps/s")
    print(f"  LiftEnv              {lr['env']:10.1f} steps/s  ratio {lr['env'] / lr['plain']:.2f}  "
          f"(overhead {overhead:+.1%}, target <= 10%)")
    print(f"  reset: ours (soft + domain) {lr['reset_ms']:.1f} ms, robosuite hard reset {lr['hard_reset_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
