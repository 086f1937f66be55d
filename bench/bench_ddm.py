"""Decentralized training scale-out: wall time of K small experts with 1 vs 2 workers, local pool and Ray.

The experts are independent jobs (:func:`simdiff.pipelines.ddm.trainer.train_ddm` with ``members`` = the
experts), so with W workers the ideal speed-up is min(W, K) on W free cores. The data are synthetic lattices
(four magnetisation levels, one cluster each) so the benchmark needs no Monte Carlo; the network and process are
the SKILD ones. Each setting starts from the same prepared run (partition, shards) with no expert trained; the
timed region is the whole job phase, worker start-up included (process spawn and imports for the local pool,
worker start for Ray; the Ray instance itself is started before the clock). Target: 2 workers >= 1.7x faster.
On a shared machine the load changes between settings: ``--repeats`` interleaves the settings (1, 2, 1, 2, ...)
and keeps the best time of each.

    python bench/bench_ddm.py [--experts 4] [--steps 250] [--L 16] [--backends local,ray] [--repeats 1]
                              [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCALING_TARGET = 1.7


def _config(data: Path, experts: int, steps: int, L: int, batch: int, channels: int,
            mults: tuple[int, ...] = (1, 2, 2)) -> dict:
    return {"name": "bench_ddm", "domain": "ising", "num_experts": experts,
            "partition": {"n_init": 2, "spectral_shells": 0, "min_cluster_size": 1},
            "router": {"steps": 1, "batch_size": 8},
            "compute": {"split": "equal", "min_steps": 1, "monolithic": False},
            "skild": {"data": {"path": str(data), "L": L}, "process": {"num_steps": 100},
                      "model": {"base_channels": channels, "channel_mults": list(mults), "time_dim": 32},
                      "train": {"steps": steps * experts, "batch_size": batch, "ckpt_every": 0,
                                "log_every": max(1, steps)}}}


def _lattices(experts: int, per_cluster: int, L: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    p = np.repeat(np.linspace(0.5, 1.0, experts), per_cluster)
    return np.where(rng.random((p.size, L, L)) < p[:, None, None], 1, -1).astype(np.int8)


def _ray_start(workers: int) -> None:
    import ray

    # what simdiff.executors does for a local instance, done before the clock starts
    ray.init(num_cpus=workers, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                                       "OMP_NUM_THREADS": "1"}})


def measure(experts: int = 4, steps: int = 60, L: int = 16, batch: int = 32, channels: int = 8,
            backends: tuple[str, ...] = ("local", "ray"), workers: tuple[int, ...] = (1, 2),
            repeats: int = 1, root: Path | None = None, mults: tuple[int, ...] = (1, 2, 2)) -> dict:
    """Time the expert jobs for every (backend, workers); returns ``{backend: {workers: seconds, ...}}``."""
    import numpy as np

    from simdiff.config import load_config
    from simdiff.pipelines.ddm.config import DDMConfig
    from simdiff.pipelines.ddm.trainer import expert_name, init_run, prepare

    tmp = Path(tempfile.mkdtemp(prefix="bench_ddm_", dir=root))
    try:
        data = tmp / "data.npz"
        np.savez(data, spins=_lattices(experts, 64, L))
        cfg = load_config(DDMConfig, _config(data, experts, steps, L, batch, channels, mults))
        base = tmp / "prepared"
        init_run(cfg, base, ["bench"])
        plan = prepare(cfg, base)
        members = [expert_name(k) for k in range(experts)]
        out: dict = {"experts": experts, "steps_per_expert": [plan["members"][m]["steps"] for m in members],
                     "L": L, "batch_size": batch, "base_channels": channels, "channel_mults": list(mults), "cpu_count": os.cpu_count(),
                     "load_avg_start": list(os.getloadavg()), "results": {}}
        for backend in backends:
            res: dict = {}
            for rep in range(repeats):
                for w in workers:
                    x = _time_setting(cfg, base, tmp / f"{backend}_{w}_{rep}", backend, w, members)
                    if str(w) not in res or x["jobs_wall_s"] < res[str(w)]["jobs_wall_s"]:
                        res[str(w)] = x
            lo, hi = str(min(workers)), str(max(workers))
            res["speedup"] = res[lo]["jobs_wall_s"] / res[hi]["jobs_wall_s"]
            out["results"][backend] = res
        out["load_avg_end"] = list(os.getloadavg())
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _time_setting(cfg, base: Path, run: Path, backend: str, w: int, members: list[str]) -> dict:
    from simdiff.pipelines.ddm.trainer import train_ddm

    shutil.copytree(base, run)
    if backend == "ray":
        _ray_start(w)
    try:
        t0 = time.perf_counter()
        summary = train_ddm(cfg, run, backend=backend, workers=w, members=members, command=["bench"])
        wall = time.perf_counter() - t0
    finally:
        if backend == "ray":
            import ray

            ray.shutdown()
    train = [summary["members"][m]["wall_time_s"] for m in members]
    return {"wall_s": wall, "jobs_wall_s": summary["run"]["jobs_wall_s"], "sum_train_s": float(sum(train)),
            "max_train_s": float(max(train)), "load_avg": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_ddm", description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=4)
    # Defaults: the expert jobs of configs/ddm/ising16_quick.yaml (same network and batch), with 250 steps
    # each where that config gives its experts 245..719: the per-job start-up is not amortized over longer runs.
    parser.add_argument("--steps", type=int, default=250, help="optimisation steps per expert (default: 250)")
    parser.add_argument("--L", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=8, help="U-Net base channels (default: 8)")
    parser.add_argument("--mults", default="1,2,2", help="U-Net channel multipliers (default: 1,2,2)")
    parser.add_argument("--backends", default="local,ray", help="comma-separated: local, ray (default: both)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats, best of (default: 1)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    bad = [b for b in backends if b not in ("local", "ray")]
    if bad or not backends:
        parser.error(f"--backends: expected local and/or ray, received {args.backends!r}")
    if "ray" in backends:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray is not installed (pip install 'simdiff[ray]'): skipping the Ray backend")
            backends = tuple(b for b in backends if b != "ray")
    os.environ.setdefault("SIMDIFF_NO_PROGRESS", "1")
    if args.repeats < 1:
        parser.error(f"--repeats: expected >= 1, received {args.repeats}")
    try:
        mults = tuple(int(m) for m in args.mults.split(","))
    except ValueError:
        parser.error(f"--mults: expected comma-separated integers, received {args.mults!r}")
    res = measure(args.experts, args.steps, args.L, args.batch_size, args.channels, backends,
                  repeats=args.repeats, mults=mults)
    print(f"decentralized training: {args.experts} experts x {res['steps_per_expert'][0]} steps "
          f"(L={args.L}, batch {args.batch_size}, U-Net base {args.channels} x {list(mults)}); {res['cpu_count']} CPUs, load average "
          f"{res['load_avg_start'][0]:.1f} at start, {res['load_avg_end'][0]:.1f} at end")
    for backend, r in res["results"].items():
        for w in ("1", "2"):
            x = r[w]
            print(f"  {backend:5s} {w} worker{'s' if w != '1' else ' '}: jobs {x['jobs_wall_s']:7.1f} s   "
                  f"(training inside jobs: sum {x['sum_train_s']:.1f} s, longest {x['max_train_s']:.1f} s; "
                  f"load average {x['load_avg']:.1f})")
        ok = "meets" if r["speedup"] >= SCALING_TARGET else "below"
        print(f"  {backend:5s} speed-up 2 vs 1 workers: {r['speedup']:.2f}x ({ok} the {SCALING_TARGET}x target)")
    if args.json:
        from simdiff.utils.io import write_json

        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["main", "measure", "SCALING_TARGET"]
