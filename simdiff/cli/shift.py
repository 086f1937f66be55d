"""``simdiff shift``: evaluation under distribution shift (parameter sweeps, 2-D grids, covariate shift)."""

from __future__ import annotations

import argparse
import sys

COMMAND = "shift"
HELP = "evaluate policies under distribution shift: parameter sweeps, 2-D grids, covariate-shift measures"

_POLICY_HELP = ("policy directory (training run or checkpoint), MOL run directory (expands to its specialists "
                "and generalists) or 'expert' (the scripted expert)")
_DEFAULT_ENV = "simdiff/Push-v0"


def _common(p: argparse.ArgumentParser, episodes: int) -> None:
    p.add_argument("policies", nargs="+", metavar="POLICY", help=_POLICY_HELP)
    p.add_argument("--env", default=None,
                   help=f"env id (default: the MOL run's env, else {_DEFAULT_ENV})")
    p.add_argument("--episodes", type=int, default=episodes, help=f"episodes per point (default {episodes})")
    p.add_argument("--seed", type=int, default=5000,
                   help="first episode seed; seeds SEED..SEED+EPISODES-1 at every point (default 5000)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="envs stepped together per process (default 64)")
    p.add_argument("--out", required=True, help="output directory (metrics.json, report.md, plots)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("sweep", help="success / return / length against one domain parameter",
                       description="Evaluate policies at each value of one domain parameter (the others sampled "
                                   "from --level), on the same seeds at every value. Writes metrics.json, report.md "
                                   "and a plot with the trained range shaded and shift values marked.")
    _common(p, episodes=50)
    p.add_argument("--param", required=True, help="domain parameter (see `simdiff shift params`)")
    p.add_argument("--values", required=True,
                   help="START:STOP:N (N values, ends included) or a comma list, e.g. 0.2:2.0:10 or 0.5,1,2")
    _levels(p)
    p.set_defaults(func=_sweep)

    p = sub.add_parser("grid", help="two-parameter success heatmap per policy",
                       description="Evaluate policies on every pair of values of two domain parameters.")
    _common(p, episodes=20)
    p.add_argument("--param", action="append", required=True, help="domain parameter; give it twice (A, then B)")
    p.add_argument("--values", action="append", required=True,
                   help="values of the matching --param (START:STOP:N or a comma list); give it twice")
    _levels(p)
    p.set_defaults(func=_grid)

    p = sub.add_parser("covariate", help="distance of visited states to training states; compounding error",
                       description="Roll out each policy at --level, compare the states it visits with its "
                                   "training states (normalized k-NN distance, RBF MMD with a permutation test) and "
                                   "its trajectory with the scripted expert's on the same seeds (compounding "
                                   "error). A MOL run directory is reported per model and DAgger round, each "
                                   "against its own training data (paired demos + pseudo-labels up to its round).")
    _common(p, episodes=30)
    p.add_argument("--data", action="append", default=None, metavar="FILE",
                   help="training data (demos .hdf5, or pseudo-label .npz); repeatable. Default: what each "
                        "policy's metadata or MOL run says it was trained on")
    p.add_argument("--level", default="0", help="level to roll out at: 0..3 or shift (default 0)")
    p.add_argument("--k", type=int, default=5, help="k of the k-NN distance (default 5)")
    p.add_argument("--permutations", type=int, default=200, help="MMD permutation-test draws (default 200)")
    p.add_argument("--max-samples", type=int, default=500,
                   help="states per side in the MMD (seeded subsample; default 500)")
    p.set_defaults(func=_covariate)

    p = sub.add_parser("params", help="list an env's domain parameters, nominal values, level ranges, bounds",
                       description="The names --param accepts, with nominal value, per-level ranges, the shift "
                                   "range and the physical bounds --values must respect.")
    p.add_argument("--env", default=_DEFAULT_ENV, help=f"env id (default {_DEFAULT_ENV})")
    p.set_defaults(func=_params)


def _levels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--level", default="0",
                   help="level the other domain parameters are sampled from: 0..3 or shift (default 0)")
    p.add_argument("--trained-level", type=int, default=None,
                   help="shade the range of levels 0..K as trained (default: the highest level the policies were "
                        "trained on, when known, else 3)")


# -- handlers -----------------------------------------------------------------------------------------------------
def _log(msg: str) -> None:
    print(f"[shift] {msg}", file=sys.stderr, flush=True)


def _resolve(args: argparse.Namespace):
    from simdiff.pipelines.shift.policies import is_mol_run, mol_env_id, resolve_policies

    specs = resolve_policies(args.policies)
    if args.env is None:
        from pathlib import Path

        ids = {mol_env_id(Path(p)) for p in args.policies if p != "expert" and is_mol_run(Path(p))} - {None}
        ids |= {s.env_id for s in specs if s.env_id}
        if len(ids) > 1:
            raise ValueError(f"the policies come from different envs ({', '.join(sorted(ids))}); pass --env")
        args.env = ids.pop() if ids else _DEFAULT_ENV
    return specs


def _command(args: argparse.Namespace) -> list[str]:
    """The command as resolved (defaults filled in), for report.md: rerunning it reproduces the results."""
    argv = ["shift", args.action, *args.policies, "--env", args.env]
    for opt in ("param", "values", "data"):
        v = getattr(args, opt, None) or []
        for x in [v] if isinstance(v, str) else v:
            argv += [f"--{opt}", x]
    for opt in ("level", "trained_level", "episodes", "seed", "workers", "batch_size", "k", "permutations",
                "max_samples"):
        v = getattr(args, opt, None)
        if v is not None:
            argv += [f"--{opt.replace('_', '-')}", str(v)]
    return [*argv, "--out", args.out] + (["--overwrite"] if args.overwrite else [])


def _trained_level(args: argparse.Namespace, specs) -> int:
    if args.trained_level is not None:
        return args.trained_level
    known = [lv for s in specs for lv in s.trained_levels]
    args.trained_level = max(known) if known else 3  # recorded in the report's command
    return args.trained_level


def _sweep(args: argparse.Namespace) -> int:
    from simdiff.pipelines.shift import report as rep
    from simdiff.pipelines.shift import runner
    from simdiff.pipelines.shift.sweep import plan_sweep, run_sweep
    from simdiff.pipelines.shift.values import parse_values

    specs = _resolve(args)
    setup = plan_sweep(specs, args.env, args.param, parse_values(args.values), episodes=args.episodes,
                       seed=args.seed, workers=args.workers, level=args.level,
                       trained_level=_trained_level(args, specs), batch_size=args.batch_size)
    rep.check_out(args.out, args.overwrite)
    runner.preflight(list(setup.policies), setup.env_id)
    m = run_sweep(setup, args.out, overwrite=args.overwrite, command=_command(args), log=_log)
    print(f"\n{setup.env_id}: success % [95% Wilson CI] vs {setup.param} ({setup.episodes} episodes per point, "
          f"seeds {setup.seed}..{setup.seed + setup.episodes - 1}, other parameters from level {setup.level}; "
          f"trained range [{setup.trained_range[0]:g}, {setup.trained_range[1]:g}])")
    print(rep.sweep_table(m))
    print(f"\nreport: {args.out}/report.md   metrics: {args.out}/metrics.json   ({m['seconds']:.0f} s)")
    return 0


def _grid(args: argparse.Namespace) -> int:
    from simdiff.pipelines.shift import report as rep
    from simdiff.pipelines.shift import runner
    from simdiff.pipelines.shift.grid import plan_grid, run_grid
    from simdiff.pipelines.shift.values import parse_values

    specs = _resolve(args)
    setup = plan_grid(specs, args.env, args.param, [parse_values(v) for v in args.values],
                      episodes=args.episodes, seed=args.seed, workers=args.workers, level=args.level,
                      trained_level=_trained_level(args, specs), batch_size=args.batch_size)
    rep.check_out(args.out, args.overwrite)
    runner.preflight(list(setup.policies), setup.env_id)
    m = run_grid(setup, args.out, overwrite=args.overwrite, command=_command(args), log=_log)
    print()
    print(rep.grid_tables(m))
    print(f"\nreport: {args.out}/report.md   metrics: {args.out}/metrics.json   ({m['seconds']:.0f} s)")
    return 0


def _covariate(args: argparse.Namespace) -> int:
    from simdiff.pipelines.shift import report as rep
    from simdiff.pipelines.shift import runner
    from simdiff.pipelines.shift.covariate_eval import plan_covariate, run_covariate

    specs = _resolve(args)
    setup = plan_covariate(specs, args.env, data=args.data, level=args.level, episodes=args.episodes,
                           seed=args.seed, workers=args.workers, batch_size=args.batch_size, k=args.k,
                           permutations=args.permutations, max_samples=args.max_samples)
    rep.check_out(args.out, args.overwrite)
    runner.preflight(list(setup.policies), setup.env_id)
    m = run_covariate(setup, args.out, overwrite=args.overwrite, command=_command(args), log=_log)
    print(f"\n{setup.env_id} level {setup.level}: visited vs. training states ({setup.episodes} rollouts per "
          f"policy; gap to the expert in {m['gap_units']})")
    print(rep.covariate_table(m))
    print(f"\nreport: {args.out}/report.md   metrics: {args.out}/metrics.json   ({m['seconds']:.0f} s)")
    return 0


def _params(args: argparse.Namespace) -> int:
    import envs  # noqa: F401
    from envs.registry import domain_spec
    from simdiff.pipelines.shift.report import text_table

    spec = domain_spec(args.env)
    rows = []
    for p in spec.params:
        lv = "  ".join(f"[{lo:g}, {hi:g}]" for lo, hi in p.levels)
        rows.append([p.name, f"{p.nominal:g}", lv, " ".join(f"[{lo:g}, {hi:g}]" for lo, hi in p.shift),
                     f"[{p.bounds[0]:g}, {p.bounds[1]:g}]", p.unit + (" (integer)" if p.integer else "")])
    print(f"{args.env}: domain parameters (levels 0..3 are nested; shift is held out; --values must stay within "
          "the bounds)")
    print(text_table(["name", "nominal", "levels 0 .. 3", "shift", "bounds", "unit"], rows))
    return 0
