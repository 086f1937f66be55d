"""``simdiff demos``: collect scripted-expert demonstrations, summarize demo files, render them to video."""

from __future__ import annotations

import argparse
import sys

COMMAND = "demos"
HELP = "demonstration datasets: collect (scripted experts), info, video"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("collect", help="roll out the scripted expert into a robomimic-style HDF5 file",
                       description="Episode i uses seed SEED + i, so the file is the same for any --workers.")
    p.add_argument("--env", default="simdiff/Push-v0", help="env id (default: simdiff/Push-v0)")
    p.add_argument("--level", default="0", help="difficulty level 0..3, 'shift' or 'nominal' (default: 0)")
    p.add_argument("--episodes", type=int, default=100, help="number of episodes (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of episode 0 (default: 0)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default: 1)")
    p.add_argument("--out", required=True, help="output .hdf5 file")
    p.add_argument("--domain", action="append", default=[], metavar="NAME=VALUE",
                   help="fix a domain parameter exactly (repeatable)")
    p.add_argument("--no-context", action="store_true", help="leave the domain context out of observations")
    p.add_argument("--only-success", action="store_true",
                   help="keep only successful episodes (the first N successful seeds)")
    p.add_argument("--video", default=None, metavar="PATH", help="also render the first episodes to .mp4/.gif")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_collect)

    p = sub.add_parser("info", help="summarize a demo file (simdiff, robomimic or robosuite layout)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_info)

    p = sub.add_parser("video", help="render episodes of a simdiff demo file to .mp4 or .gif (headless)")
    p.add_argument("file")
    p.add_argument("--out", required=True, help="output .mp4 or .gif")
    p.add_argument("--episodes", default="0,1,2,3", help="comma-separated episode indices (default: 0,1,2,3)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--camera", default=None, help="camera name (default: the env's)")
    p.add_argument("--fps", type=float, default=None, help="frames per second (default: the env's control rate)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_video)


def _parse_level(text: str):
    from envs.domains import parse_level

    return None if text == "nominal" else parse_level(text)


def _parse_domain(items: list[str], env_id: str) -> dict[str, float]:
    from envs.registry import domain_spec

    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--domain expects NAME=VALUE; received {item!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--domain {name}: expected a number; received {value!r}") from None
    return domain_spec(env_id).validate(out)


def _check_video_path(path: str | None, overwrite: bool) -> None:
    from pathlib import Path

    from envs.video import VIDEO_SUFFIXES
    from simdiff.utils.io import ensure_new_path

    if path is None:
        return
    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"video path must end in .mp4 or .gif; received {path}")
    ensure_new_path(path, overwrite)


def _collect(args) -> int:
    import envs  # noqa: F401  (registers the ids)
    from envs.collect import collect, dataset_attrs
    from envs.datasets import load_demos, summarize, write_demos
    from envs.registry import check_env_id
    from simdiff.utils.io import ensure_new_path

    # Validate everything before any rollout.
    check_env_id(args.env)
    level = _parse_level(args.level)
    domain = _parse_domain(args.domain, args.env)
    if args.episodes < 1 or args.workers < 1:
        raise ValueError(f"--episodes and --workers must be >= 1; received {args.episodes}, {args.workers}")
    if not args.out.endswith((".hdf5", ".h5")):
        raise ValueError(f"--out must end in .hdf5 or .h5; received {args.out}")
    ensure_new_path(args.out, args.overwrite)
    _check_video_path(args.video, args.overwrite)
    env_kwargs = {"observe_domain": not args.no_context}
    if domain:
        env_kwargs["domain"] = domain
    try:
        episodes = collect(args.env, args.episodes, seed=args.seed, level=level, workers=args.workers,
                           only_success=args.only_success, env_kwargs=env_kwargs)
    except ImportError as exc:  # a missing optional extra (robosuite) is a user-facing problem
        raise ValueError(str(exc)) from exc
    collection = {"seed": args.seed, "episodes": args.episodes, "level": level, "expert": "scripted",
                  "only_success": args.only_success}
    full_kwargs = {**env_kwargs, "level": level}
    attrs = dataset_attrs(args.env, full_kwargs, collection)
    write_demos(args.out, episodes, {"env_name": args.env, "env_kwargs": full_kwargs}, attrs=attrs,
                overwrite=args.overwrite)
    s = summarize(load_demos(args.out))
    print(f"wrote {args.out}: {s['episodes']} episodes, {s['samples']} samples, "
          f"success {s['success_rate']:.1%}, mean length {s['length']['mean']:.1f}")
    if args.video:
        from envs.video import render_dataset

        render_dataset(load_demos(args.out), args.video)
        print(f"wrote {args.video}")
    return 0


def _info(args) -> int:
    from envs.datasets import format_summary, load_demos, summarize
    from simdiff.utils.io import to_json

    s = summarize(load_demos(args.file))
    sys.stdout.write(to_json(s) if args.json else format_summary(s) + "\n")
    return 0


def _video(args) -> int:
    import envs  # noqa: F401
    from envs.datasets import load_demos
    from envs.video import render_dataset

    try:
        episodes = [int(x) for x in args.episodes.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--episodes expects comma-separated integers; received {args.episodes!r}") from None
    _check_video_path(args.out, args.overwrite)
    ds = load_demos(args.file)
    try:
        render_dataset(ds, args.out, episodes=episodes, width=args.width, height=args.height,
                       camera=args.camera, fps=args.fps)
    except ImportError as exc:
        raise ValueError(str(exc)) from exc
    print(f"wrote {args.out}")
    return 0
