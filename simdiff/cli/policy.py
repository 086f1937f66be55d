"""``simdiff policy``: train a conditional diffusion policy on demos, evaluate any policy on-policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "policy"
HELP = "diffusion policy: train on demonstrations, evaluate on-policy (batched, with confidence intervals)"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    t = sub.add_parser("train", help="train a diffusion policy (resumes an interrupted run in the same --out)")
    t.add_argument("config", help="policy config YAML (e.g. configs/policy/push.yaml)")
    t.add_argument("--data", required=True, help="demonstrations (HDF5, robomimic layout)")
    t.add_argument("--out", required=True, help="run directory (created; an unfinished run there is resumed)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=500 (repeatable)")
    t.add_argument("--eval-every", type=int, default=None,
                   help="evaluate on-policy every N steps (overrides eval.every; 0 = never)")
    t.add_argument("--overwrite", action="store_true", help="delete an existing --out and start from scratch")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a policy directory or the scripted expert on-policy")
    e.add_argument("policy", help="policy run directory (or its policy/ checkpoint), or 'expert'")
    e.add_argument("--env", default=None, help="env id (default: the env the policy's demos came from)")
    e.add_argument("--level", default="0", help="difficulty level 0..3 or 'shift' (default: 0)")
    e.add_argument("--episodes", type=int, default=100, help="episodes (default: 100)")
    e.add_argument("--seed", type=int, default=1000, help="episode i uses seed SEED+i (default: 1000)")
    e.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    e.add_argument("--batch-size", type=int, default=256, help="envs stepped together per process (default: 256)")
    e.add_argument("--ddim-steps", type=int, default=None, help="denoising steps (default: the policy's config)")
    e.add_argument("--task", type=int, default=None, help="task id for task-conditioned policies")
    e.add_argument("--out", default=None, help="result JSON (default: DIR/eval/<env>_level<L>_seed<S>_n<N>.json, "
                                               "or ./eval/expert_... for the expert)")
    e.add_argument("--video", action="store_true", help="also render the first --video-episodes episodes to mp4")
    e.add_argument("--video-episodes", type=int, default=4, help="episodes in the video (default: 4)")
    e.add_argument("--overwrite", action="store_true", help="replace existing result files")
    e.set_defaults(func=_eval)


# ---------------------------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    import shutil

    from policies.diffusion.config import load_policy_config
    from simdiff.config import parse_overrides

    data = Path(args.data)
    if not data.exists():
        raise FileNotFoundError(f"--data {data}: no such file")
    overrides = parse_overrides(args.overrides)
    if args.eval_every is not None:
        overrides.setdefault("eval", {})["every"] = args.eval_every
    cfg = load_policy_config(args.config, overrides)
    out = Path(args.out)
    _check_train_out(out, cfg, args.overwrite)

    from policies.diffusion.data import load_episodes

    episodes = load_episodes(data, cfg.data.max_episodes, cfg.data.successful_only)
    eval_fn = _make_train_eval(cfg, episodes) if cfg.eval.every else None
    if args.overwrite and out.exists():
        shutil.rmtree(out)

    from policies.diffusion.train import train_policy
    from simdiff.utils.run import record_run

    record_run(out, cfg, seed=cfg.train.seed, command=["simdiff", *sys.argv[1:]],
               extra={"data": str(data.resolve())})
    print(f"training on {episodes.num_episodes} episodes ({int(episodes.lengths.sum())} steps) from {data} "
          f"-> {out}", file=sys.stderr)
    res = train_policy(cfg, episodes, out, eval_fn=eval_fn,
                       desc=f"train {out.name}")
    print(f"{out}: {res.steps} steps, final loss {res.final_loss:.4g}, {res.wall_time:.0f} s of training "
          f"({res.cpu_time:.0f} CPU s in this call, {res.samples_per_s:.0f} samples/s); policy in "
          f"{out / 'policy'}, loss curve {out / 'loss.png'}")
    for ev in res.evals:
        print(f"  step {ev['step']}: success {ev['success_rate']:.3f} [{ev['ci95'][0]:.3f}, {ev['ci95'][1]:.3f}]")
    return 0


def _check_train_out(out: Path, cfg, overwrite: bool) -> None:
    """Refuse an --out that holds something else, or a run made with another config (unless --overwrite)."""
    if not out.exists() or overwrite:
        return
    if not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    if not any(out.iterdir()):
        return
    stored = out / "config.yaml"
    if not stored.exists():
        raise FileExistsError(f"--out {out} exists and is not a policy run directory; choose another path or "
                              "pass --overwrite")
    import yaml

    from simdiff.checkpoint import config_diff
    from simdiff.config import to_dict

    diff = config_diff(yaml.safe_load(stored.read_text(encoding="utf-8")) or {}, to_dict(cfg),
                       ignore=("train.log_every", "train.ckpt_every", "eval"))
    if diff:
        raise FileExistsError(f"--out {out} holds a run with another config:\n  " + "\n  ".join(diff)
                              + "\npass --overwrite to start over, or choose another --out")


def _make_train_eval(cfg, episodes):
    from simdiff.pipelines.evaluate import evaluate

    env_id = cfg.eval.env or episodes.meta.get("env_id")
    if not env_id:
        raise ValueError("eval.every > 0 but the demo file names no env; set eval.env in the config")
    env_kwargs = episodes.meta.get("env_kwargs") or {}

    def eval_fn(policy, step: int) -> dict:
        res = evaluate(policy, env_id, cfg.eval.level, cfg.eval.episodes, cfg.eval.seed,
                       batch_size=cfg.eval.batch_size, env_kwargs=env_kwargs, show_progress=False)
        return {k: res[k] for k in ("success_rate", "ci95", "episodes", "mean_return", "mean_length")}

    return eval_fn


# ----------------------------------------------------------------------------------------------- eval
def _parse_level(text: str):
    if text == "shift":
        return "shift"
    if text in ("0", "1", "2", "3"):
        return int(text)
    raise ValueError(f"--level: expected 0, 1, 2, 3 or 'shift', received {text!r}")


def _default_out(args, policy_dir: Path | None, env_id: str, level) -> Path:
    tag = f"{env_id.split('/')[-1]}_level{level}_seed{args.seed}_n{args.episodes}"
    if policy_dir is None:
        return Path("eval") / f"expert_{tag}.json"
    return policy_dir / "eval" / f"{tag}.json"


def _eval(args: argparse.Namespace) -> int:
    from simdiff.utils.io import ensure_new_path

    level = _parse_level(args.level)
    for name in ("episodes", "workers", "batch_size", "video_episodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected >= 1, received {getattr(args, name)}")
    if args.seed < 0:
        raise ValueError(f"--seed: expected >= 0, received {args.seed}")

    spec, policy_dir, env_id, env_kwargs = _resolve_policy(args)
    from envs.registry import check_env_id

    check_env_id(env_id)
    if spec != "expert":
        _check_env_fits(spec, env_id, env_kwargs, level)
    out = Path(args.out) if args.out else _default_out(args, policy_dir, env_id, level)
    ensure_new_path(out, args.overwrite)
    video = out.with_suffix(".mp4") if args.video else None
    if video is not None:
        ensure_new_path(video, args.overwrite)

    from simdiff.pipelines.evaluate import evaluate, format_result, record_video
    from simdiff.utils.io import write_json

    res = evaluate(spec, env_id, level, args.episodes, args.seed, workers=args.workers,
                   batch_size=args.batch_size, env_kwargs=env_kwargs, task=args.task)
    res["policy"] = "expert" if spec == "expert" else str(policy_dir)
    print(format_result(res))
    write_json(out, res)
    print(f"wrote {out}")
    if video is not None:
        n = min(args.video_episodes, args.episodes)
        record_video(spec, env_id, level, [args.seed + i for i in range(n)], video, env_kwargs=env_kwargs,
                     task=args.task)
        print(f"wrote {video}")
    return 0


def _check_env_fits(policy, env_id: str, env_kwargs: dict, level) -> None:
    """Refuse a world whose observations or actions are not the policy's, before any episode runs."""
    from envs import make

    trained_on = policy.dataset.get("env_id") or "its demos' world"
    try:
        env = make(env_id, level=level, **env_kwargs)
    except TypeError as err:
        raise ValueError(f"--env {env_id}: refuses the env settings the policy was trained with "
                         f"({trained_on}, {env_kwargs}): {err}") from None
    try:
        do, da = int(env.observation_space.shape[0]), int(env.action_space.shape[0])
    finally:
        env.close()
    if (do, da) != (policy.obs_dim, policy.action_dim):
        raise ValueError(f"--env {env_id}: expected a world with {policy.obs_dim} observation and "
                         f"{policy.action_dim} action dimensions (the policy was trained on {trained_on}), "
                         f"received {do} and {da}")


def _resolve_policy(args):
    """``(policy spec, policy dir or None, env id, env kwargs)`` from the command line."""
    if args.policy == "expert":
        if args.env is None:
            raise ValueError("--env is required when evaluating the expert (e.g. --env simdiff/Push-v0)")
        if args.ddim_steps is not None:
            raise ValueError("--ddim-steps applies to diffusion policies, not to the expert")
        return "expert", None, args.env, {}
    from policies.diffusion.policy import DiffusionPolicy

    path = Path(args.policy)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such policy directory (or pass 'expert')")
    policy = DiffusionPolicy.load(path)
    if args.ddim_steps is not None:
        if not 1 <= args.ddim_steps <= policy.schedule.num_steps:
            raise ValueError(f"--ddim-steps: expected 1..{policy.schedule.num_steps}, received {args.ddim_steps}")
        policy.inference_steps = args.ddim_steps
    env_id = args.env or policy.dataset.get("env_id")
    if not env_id:
        raise ValueError(f"{path}: the policy records no env id; pass --env")
    env_kwargs = dict(policy.dataset.get("env_kwargs") or {})
    run_dir = path.parent if path.name in ("policy", "checkpoint") else path
    return policy, run_dir, env_id, env_kwargs
