"""``simdiff ddm``: decentralized diffusion -- isolated experts on data clusters, mixed by a router."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "ddm"
HELP = "decentralized diffusion (DDM/Paris): train isolated experts + router, sample with routing, compare"

_ROUTINGS = ("full", "top1", "top2")


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("local", "ray", "sequential"), default="local",
                   help="where the member jobs run: local process pool (default), Ray, or in this process")
    p.add_argument("--workers", type=int, default=2, help="jobs at once (default: 2)")
    p.add_argument("--threads-per-job", type=int, default=1, help="torch threads per job (default: 1)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (default: start a local instance)")
    p.add_argument("--retries", type=int, default=1, help="resubmissions of a failed job (default: 1)")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = sub.add_parser("train", help="partition the data, train experts + router (+ monolithic baseline)",
                       description="Partition the training data into clusters, then train one expert per cluster, "
                       "the router and the matched-compute monolithic baseline as independent jobs. Re-running "
                       "resumes: finished members are verified and kept, interrupted ones resume from their "
                       "checkpoint, corrupt ones are retrained.")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (resumed when it exists)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set skild.train.steps=100 (repeatable)")
    p.add_argument("--only", nargs="+", default=None, metavar="MEMBER",
                   help="train only these members (expert_<k>, router, monolithic)")
    _executor_args(p)
    p.add_argument("--device", default="cpu", help="train lattice members on cpu (default), cuda or cuda:N; "
                   "with cuda, --workers jobs share the GPU")
    p.set_defaults(func=_train)

    p = sub.add_parser("sample", help="sample the routed mixture (or the monolithic baseline)",
                       description="Lattice runs write samples float32 (N,1,L,L) and spins int8 (N,L,L); policy "
                       "runs write action chunks for N observation histories drawn from the demonstrations.")
    p.add_argument("dir", metavar="DIR", help="run directory of `simdiff ddm train`")
    p.add_argument("--routing", choices=_ROUTINGS, default="full",
                   help="full mixture, top-1, or top-2 renormalized (default: full)")
    p.add_argument("--model", choices=("ddm", "monolithic"), default="ddm",
                   help="the routed experts (default) or the monolithic baseline")
    p.add_argument("--n", type=int, default=100, help="number of samples (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--steps", type=int, default=None,
                   help="reverse steps for lattices (default: the config's sample.steps; 0 = every step)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per network call")
    p.add_argument("--out", required=True, metavar="FILE.npz")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; the networks are small and extra threads that wait on "
                   "each other on a busy machine can make sampling many times slower)")
    p.add_argument("--device", default="cpu", help="lattice runs: where the networks run (cpu, cuda, cuda:N)")
    p.set_defaults(func=_sample)

    p = sub.add_parser("compare", help="decentralized vs monolithic: report.md + metrics.json",
                       description="Lattice runs: generate with every routing mode and the monolith, score each "
                       "with the Ising physics validation against reference lattices. Policy runs: success per "
                       "level with the batched runner.")
    p.add_argument("dir", metavar="DIR", help="run directory of `simdiff ddm train`")
    p.add_argument("--out", required=True, metavar="REPORT_DIR")
    p.add_argument("--routing", default="full,top1,top2", help="comma-separated routing modes (default: all)")
    p.add_argument("--reference", default=None, metavar="REF.npz",
                   help="lattice runs: held-out reference lattices (key 'spins'); required for lattices")
    p.add_argument("--n", type=int, default=1000, help="lattices per ensemble (default: 1000)")
    p.add_argument("--episodes", type=int, default=None, help="policy runs: episodes per level")
    p.add_argument("--levels", type=int, nargs="+", default=None, help="policy runs: levels to evaluate")
    p.add_argument("--seed", type=int, default=None, help="sampling / episode seed")
    p.add_argument("--steps", type=int, default=None, help="lattice reverse steps (0 = every step)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-monolithic", action="store_true", help="leave the monolithic baseline out")
    p.add_argument("--device", default="cpu", help="lattice runs: where the networks run (cpu, cuda, cuda:N)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; the networks are small and extra threads that wait on "
                   "each other on a busy machine can make sampling many times slower)")
    p.set_defaults(func=_compare)


def _positive(name: str, v: int | None, lo: int = 1) -> None:
    if v is not None and v < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, received {v}")


def _steps(v: int | None):
    if v is None:
        return -1
    _positive("--steps", v, 0)
    return None if v == 0 else v


def _threads(n: int | None) -> None:
    if n is not None:
        import torch

        _positive("--threads", n)
        torch.set_num_threads(n)


def _train(args: argparse.Namespace) -> int:
    import sys

    from simdiff.config import load_config, parse_overrides
    from simdiff.pipelines.ddm.config import DDMConfig
    from simdiff.pipelines.ddm.trainer import train_ddm

    _positive("--workers", args.workers)
    _positive("--threads-per-job", args.threads_per_job)
    _positive("--retries", args.retries, 0)
    cfg = load_config(DDMConfig, args.config, parse_overrides(args.overrides))
    summary = train_ddm(cfg, args.out, backend=args.executor, workers=args.workers,
                        threads_per_job=args.threads_per_job, retries=args.retries, ray_address=args.ray_address,
                        members=args.only, command=["simdiff", *sys.argv[1:]], device=args.device)
    _print_summary(summary, args.out)
    return 0


def _print_summary(summary: dict, out: str) -> None:
    print(f"partition: {summary['partition']['method']}, cluster sizes {summary['partition']['sizes']}")
    for name, m in sorted(summary["members"].items()):
        wall = m.get("wall_time_s")
        print(f"  {name:12s} {m.get('status'):8s} steps {m.get('steps')}  "
              f"wall {'-' if wall is None else f'{wall:.1f}'} s")
        for e in m.get("events") or []:
            print(f"    ! {e}")
    c = summary["compute"]
    if c.get("router_share_flops") is not None:
        print(f"router share of training FLOPs: {100 * c['router_share_flops']:.2f}%")
    print(f"jobs wall time: {summary['run']['jobs_wall_s']:.1f} s ({summary['run']['backend']}, "
          f"{summary['run']['workers']} workers); summary in {Path(out) / 'ddm.json'}")


def _sample(args: argparse.Namespace) -> int:
    from simdiff.pipelines.ddm.sampling import sample_run, save_samples
    from simdiff.utils.io import ensure_new_path

    _positive("--n", args.n)
    _positive("--seed", args.seed, 0)
    _positive("--batch-size", args.batch_size)
    steps = _steps(args.steps)
    if not str(args.out).endswith(".npz"):
        raise ValueError(f"--out: expected a .npz file, received {args.out}")
    ensure_new_path(args.out, args.overwrite)
    _threads(args.threads)
    arrays, info = sample_run(args.dir, args.routing, args.n, args.seed, model=args.model, steps=steps,
                              batch_size=args.batch_size, device=args.device)
    save_samples(args.out, arrays, info)
    evals = (info.get("routing_stats") or {}).get("expert_evals_per_row")
    print(f"wrote {args.out}: {', '.join(f'{k} {v.shape}' for k, v in arrays.items())} in {info['wall_s']:.1f} s"
          + (f" ({evals:.2f} expert evaluations per step)" if evals is not None else ""))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from simdiff.pipelines.ddm.trainer import load_run_config
    from simdiff.utils.io import ensure_new_path

    routings = tuple(r.strip() for r in args.routing.split(",") if r.strip())
    bad = [r for r in routings if r not in _ROUTINGS]
    if bad or not routings:
        raise ValueError(f"--routing: expected a comma-separated subset of {','.join(_ROUTINGS)}, received "
                         f"{args.routing!r}")
    for name in ("n", "episodes", "batch_size"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    _positive("--seed", args.seed, 0)
    steps = _steps(args.steps)
    cfg = load_run_config(args.dir)
    out = Path(args.out)
    for f in ("report.md", "metrics.json"):
        ensure_new_path(out / f, args.overwrite)
    _threads(args.threads)
    if cfg.domain == "ising":
        from simdiff.pipelines.ddm.compare import compare_lattices
        from simdiff.pipelines.skild.core import load_lattices

        if args.reference is None:
            raise ValueError("--reference: expected held-out reference lattices for a lattice run, e.g. "
                             "`simdiff ising sample --L 16 --temperature 2.269185 --samples 4000 --seed 1 --out "
                             "ref.npz`")
        ref = load_lattices(args.reference)
        m = compare_lattices(args.dir, ref, out, routings, args.n, args.seed or 0, steps, args.batch_size,
                             not args.no_monolithic, reference_path=str(args.reference), device=args.device)
        for k, e in m["generation"].items():
            print(f"  {k:12s} summed normalised error {e['summed_normalized_error']:.4f}  "
                  f"passed {e['n_pass']}/{e['n_checks']}")
    else:
        from simdiff.pipelines.ddm.compare import compare_policies

        m = compare_policies(args.dir, out, routings, args.episodes, args.seed,
                             tuple(args.levels) if args.levels else None, not args.no_monolithic, args.batch_size)
        for k, e in m["evaluation"].items():
            print(f"  {k:12s} mean success {e['mean_success']:.3f}  " + "  ".join(
                f"{lv} {v['success_rate']:.2f}" for lv, v in e["levels"].items()))
    print(f"wrote {out / 'report.md'} and {out / 'metrics.json'}")
    return 0
