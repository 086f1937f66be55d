"""``simdiff mol``: the MOL pipeline (paired demos -> specialists -> pseudo-labels -> distilled generalist)."""

from __future__ import annotations

import argparse

COMMAND = "mol"
HELP = "MOL pipeline: specialists -> pseudo-labels -> distilled generalist, evaluated under distribution shift"


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("sequential", "local", "ray"), default=None,
                   help="where independent jobs run (default: the config's executor.backend)")
    p.add_argument("--ray-address", default=None,
                   help="address of an existing Ray cluster (default: start a local Ray instance)")
    p.add_argument("--workers", type=int, default=None, help="parallel jobs (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set evaluation.episodes=200 (repeatable)")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("run", help="run (or resume) the whole pipeline into DIR",
                       description="Run the MOL pipeline; a rerun on the same DIR resumes, skipping finished stages.")
    p.add_argument("config", help="YAML config (see configs/mol/)")
    p.add_argument("--out", required=True, help="run directory")
    _executor_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace a run of a different config in DIR (a run of the same config resumes)")
    p.add_argument("--redo", metavar="STAGE", default=None, help="redo STAGE and every later stage")
    p.add_argument("--stop-after", metavar="STAGE", default=None, help="stop after STAGE (resume later)")
    p.set_defaults(func=_run)

    p = sub.add_parser("sweep", help="success vs. paired demos and vs. specialist size",
                       description="Run the config's sweep (each point a full MOL run), then plots and a table.")
    p.add_argument("config", help="YAML config with a sweep section")
    p.add_argument("--out", required=True, help="sweep directory")
    _executor_args(p)
    p.set_defaults(func=_sweep)

    p = sub.add_parser("report", help="rebuild report.md and the table of a finished run",
                       description="Rebuild metrics.json, report.md and plots from a run's evaluation results.")
    p.add_argument("run_dir", help="run directory of `simdiff mol run`")
    p.set_defaults(func=_report)

    p = sub.add_parser("status", help="list a run's stages and which are done",
                       description="Show which stages of a run directory are finished.")
    p.add_argument("run_dir")
    p.set_defaults(func=_status)


def _load(args: argparse.Namespace):
    from simdiff.config import load_config, parse_overrides
    from simdiff.pipelines.mol.config import MolConfig
    from simdiff.pipelines.mol.stages import with_executor

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: expected a positive integer, received {args.workers}")
    if args.ray_address and args.executor not in (None, "ray"):
        raise ValueError("--ray-address needs --executor ray")
    cfg = load_config(MolConfig, args.config, parse_overrides(args.overrides))
    backend = args.executor or ("ray" if args.ray_address else None)
    return with_executor(cfg, backend=backend, workers=args.workers, ray_address=args.ray_address)


def _run(args: argparse.Namespace) -> int:
    import sys

    from simdiff.pipelines.mol.stages import run_pipeline

    cfg = _load(args)
    run_pipeline(cfg, args.out, overwrite=args.overwrite, redo=args.redo, stop_after=args.stop_after,
                 command=sys.argv, print_table=True)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from simdiff.pipelines.mol.sweep import render_sweep_table, run_sweep

    cfg = _load(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    summary = run_sweep(cfg, args.out)
    print(render_sweep_table(summary))
    print(f"\nreport: {Path(args.out) / 'report.md'}")
    return 1 if summary.get("failures") else 0


def _report(args: argparse.Namespace) -> int:
    from simdiff.pipelines.mol.stages import rebuild_report

    table = rebuild_report(args.run_dir)
    print(table)
    return 0


def _status(args: argparse.Namespace) -> int:
    from simdiff.pipelines.mol.stages import build_stages, load_run_config, read_marker

    cfg = load_run_config(args.run_dir)
    for st in build_stages(cfg):
        m = read_marker(args.run_dir, st.name)
        secs = m.get("seconds") if m is not None else None
        state = "pending" if m is None else (f"done ({secs:.1f} s)" if isinstance(secs, (int, float)) else "done")
        print(f"{st.name:<16} {state}")
    return 0
