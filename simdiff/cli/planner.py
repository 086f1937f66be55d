"""``simdiff planner``: LoopMDM planner (masked diffusion over tokenized plans, looped transformer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "planner"
HELP = "LoopMDM planner: masked discrete diffusion over action plans with looped transformer layers"

_ORDERS = ("random", "confidence")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = sub.add_parser("train", help="train a planner from a demo file",
                       description="Train a planner on demonstrations (HDF5, robomimic layout). An interrupted run "
                       "in DIR resumes; a finished one is only replaced with --overwrite.")
    p.add_argument("config", metavar="CONFIG.yaml", help="planner config (see configs/planner/)")
    p.add_argument("--data", required=True, metavar="DEMOS.hdf5", help="demo file (`simdiff demos collect`)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=100 (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--overwrite", action="store_true", help="retrain into a DIR that holds a finished run")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="on-policy success of a trained planner",
                       description="Roll out the planner with the batched evaluation runner; prints success with a "
                       "Wilson 95%% interval and writes the result as JSON.")
    p.add_argument("dir", metavar="DIR", help="run directory of `simdiff planner train` (or its policy/ dir)")
    p.add_argument("--env", default="simdiff/Push-v0", help="gymnasium id (default: simdiff/Push-v0)")
    p.add_argument("--level", default="0", help="difficulty level 0..3 or 'shift' (default: 0)")
    p.add_argument("--episodes", type=int, default=100, help="episodes (default: 100)")
    p.add_argument("--seed", type=int, default=1000, help="first episode seed (default: 1000)")
    p.add_argument("--loops", type=int, default=None, help="inference loop count S (default: the config's)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the config's)")
    p.add_argument("--order", choices=_ORDERS, default=None, help="unmasking order (default: the config's)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (0: argmax)")
    p.add_argument("--batch-size", type=int, default=64, help="env slots stepped together (default: 64)")
    p.add_argument("--workers", type=int, default=1, help="evaluation processes (default: 1)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="result file (default: DIR/eval/<name>.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=_eval)

    p = sub.add_parser("experiments", help="the LoopMDM experiments: loops, matched compute, frontier",
                       description="Collect demos, train the looped / same-parameter / same-FLOPs / random-S models "
                       "and run the three experiments; writes report.md, metrics.json and plots into OUT.")
    p.add_argument("config", metavar="CONFIG.yaml", help="experiments config (e.g. configs/planner/push.yaml)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--data", default=None, metavar="DEMOS.hdf5", help="use this demo file instead of collecting")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set base.train.steps=200 (repeatable)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue in an existing DIR (finished models are reused)")
    g.add_argument("--overwrite", action="store_true", help="redo everything in an existing DIR")
    p.set_defaults(func=_experiments)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name}: expected a positive integer, received {value}")


def _parse_level(text: str) -> int | str:
    if text == "shift":
        return text
    if text in ("0", "1", "2", "3"):
        return int(text)
    raise ValueError(f"--level: expected 0, 1, 2, 3 or 'shift', received {text!r}")


def _train(args: argparse.Namespace) -> int:
    from simdiff.config import parse_overrides

    _positive("--threads", args.threads)
    for path, what in ((args.config, "config"), (args.data, "demo file")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{what} {path} does not exist")
    from simdiff.pipelines.planner import train_from_file

    fo = train_from_file(args.config, args.data, args.out, overrides=parse_overrides(args.overrides),
                         overwrite=args.overwrite, command=["simdiff", *sys.argv[1:]], threads=args.threads)
    m = fo.metrics
    bits = ", ".join(f"S={k}: {v:.3f}" for k, v in (m["val_bits_per_token"] or {}).items())
    rec = m["tokenizer"]["recon_val"] or m["tokenizer"]["recon_train"]
    print(f"trained {m['train_steps']} steps in {m['wall_time_s']:.0f} s: {m['parameters']:,} parameters; "
          f"held-out NLL bound {bits or '-'} bits/token; tokenizer RMSE {rec['rmse']:.4f}")
    print(f"planner written to {Path(args.out) / 'policy'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    level = _parse_level(args.level)
    for name in ("episodes", "loops", "steps", "batch_size", "workers", "threads"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.seed < 0:
        raise ValueError(f"--seed: expected >= 0, received {args.seed}")
    if args.temperature is not None and args.temperature < 0:
        raise ValueError(f"--temperature: expected >= 0, received {args.temperature}")
    from simdiff.pipelines.planner import resolve_policy_dir

    policy_dir = resolve_policy_dir(args.dir)
    from envs.registry import check_env_id

    check_env_id(args.env)
    run_dir = policy_dir.parent if policy_dir.name == "policy" else policy_dir
    name = f"{args.env.replace('/', '_')}_level{level}_seed{args.seed}_n{args.episodes}" + \
        (f"_S{args.loops}" if args.loops else "") + (f"_K{args.steps}" if args.steps else "")
    out = Path(args.out) if args.out else run_dir / "eval" / f"{name}.json"
    from simdiff.utils.io import ensure_new_path, write_json

    ensure_new_path(out, args.overwrite)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from simdiff.pipelines.evaluate import format_result
    from simdiff.pipelines.planner import evaluate_planner

    res = evaluate_planner(str(policy_dir), args.env, level, args.episodes, args.seed, workers=args.workers,
                           batch_size=args.batch_size, loops=args.loops, steps=args.steps, order=args.order,
                           temperature=args.temperature)
    print(format_result(res))
    write_json(out, res)
    print(f"result written to {out}")
    return 0


def _experiments(args: argparse.Namespace) -> int:
    from simdiff.config import parse_overrides

    if not Path(args.config).is_file():
        raise FileNotFoundError(f"config {args.config} does not exist")
    if args.data is not None and not Path(args.data).is_file():
        raise FileNotFoundError(f"demo file {args.data} does not exist")
    from simdiff.pipelines.planner import run_experiments

    run_experiments(args.config, args.out, overrides=parse_overrides(args.overrides), overwrite=args.overwrite,
                    resume=args.resume, data=args.data, command=["simdiff", *sys.argv[1:]])
    print(f"report written to {Path(args.out) / 'report.md'}")
    return 0
