"""``simdiff bench NAME``: run a benchmark from the repository's bench/ folder."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "bench"
HELP = "run a benchmark from bench/ (prints ratios against a baseline measured in the same run)"


def _bench_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "bench"


def available() -> list[str]:
    d = _bench_dir()
    return sorted(p.stem[len("bench_"):] for p in d.glob("bench_*.py")) if d.is_dir() else []


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="benchmark name (bench/bench_NAME.py); omit to list them")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import importlib.util

    names = available()
    if not args.name:
        print("benchmarks: " + (", ".join(names) if names else "(none found)"))
        return 0
    if args.name not in names:
        raise ValueError(f"unknown benchmark '{args.name}'; expected one of: {', '.join(names) or '(none)'}")
    path = _bench_dir() / f"bench_{args.name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{args.name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return int(mod.main(args.args) or 0)
