"""Ising Monte Carlo throughput: numba kernels against the vectorized NumPy checkerboard, in one run.

Prints checkerboard Metropolis spin-flip attempts/s (numba and NumPy, with the ratio), Wolff clusters/s and
spins flipped/s, Swendsen-Wang sweeps/s, and the throughput scaling of two independent chains from one to two
threads. Targets: numba >= 4x NumPy, chain scaling >= 1.7x. Each figure is the best of ``--repeats`` timed runs
of about ``--seconds`` each (best-of filters out time stolen by other processes on a shared machine).

    python bench/bench_ising.py [--L 64] [--temperature 2.269185] [--seconds 1.5] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHECKERBOARD_TARGET = 4.0
SCALING_TARGET = 1.7


def _best_rate(run, work_per_call: float, seconds: float, repeats: int) -> tuple[float, float]:
    """Best work per wall second and per CPU second of this process over ``repeats`` timed calls of ``run(n)``,
    with n sized to take about ``seconds``. The CPU-second figure is robust to other processes sharing the
    cores (it is meaningless for multi-threaded runs, which are compared on wall time)."""
    n = 1
    while True:  # size n so one call lasts about a tenth of the budget, then scale up
        t0 = time.perf_counter()
        run(n)
        dt = time.perf_counter() - t0
        if dt > 0.1 * seconds or n > 1 << 30:
            break
        n *= 4
    n = max(1, int(n * seconds / max(dt, 1e-9)))
    best_wall = best_cpu = 0.0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run(n)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        best_wall = max(best_wall, n * work_per_call / dt)
        best_cpu = max(best_cpu, n * work_per_call / max(dc, 1e-9))
    return best_wall, best_cpu


def _equilibrated(L: int, temperature: float, seed: int):
    import numpy as np

    from physics import ising

    spins = np.ones((L, L), dtype=np.int8)
    spins, _ = ising.wolff_clusters(spins, temperature, 2000, seed)
    return spins


def measure(L: int = 64, temperature: float | None = None, seconds: float = 1.5, repeats: int = 3,
            seed: int = 0) -> dict:
    import numpy as np

    from physics import ising, reference

    T = ising.T_C if temperature is None else temperature
    ising.check_size(L, "metropolis")
    start = _equilibrated(L, T, seed)
    sites = L * L
    thr = ising.metropolis_thresholds(T)
    p_thr = ising.bond_threshold(T)
    no_stream = np.empty(0, dtype=np.int64)
    res: dict = {"L": L, "temperature": T, "seconds": seconds, "repeats": repeats,
                 "cpus": ising.default_threads(), "load_average_before": list(os.getloadavg())}

    s = start.copy()

    def numba_run(n):
        ising.metropolis_kernel(s, thr, n, seed, no_stream)

    (res["numba_checkerboard_attempts_per_s"],
     res["numba_checkerboard_attempts_per_cpu_s"]) = _best_rate(numba_run, sites, seconds, repeats)
    s2 = start.copy()
    rng = np.random.default_rng(seed)

    def numpy_run(n):
        nonlocal s2
        s2, _ = reference.checkerboard_reference(s2, thr, n, rng=rng)

    (res["numpy_checkerboard_attempts_per_s"],
     res["numpy_checkerboard_attempts_per_cpu_s"]) = _best_rate(numpy_run, sites, seconds, repeats)
    res["checkerboard_ratio"] = res["numba_checkerboard_attempts_per_s"] / res["numpy_checkerboard_attempts_per_s"]
    res["checkerboard_ratio_cpu_time"] = (res["numba_checkerboard_attempts_per_cpu_s"]
                                          / res["numpy_checkerboard_attempts_per_cpu_s"])

    s3 = start.copy()
    flipped = {"spins": 0, "clusters": 0}

    def wolff_run(n):
        _, f = ising.wolff_kernel(s3, p_thr, n, seed, no_stream)
        flipped["spins"] += f
        flipped["clusters"] += n

    res["wolff_clusters_per_s"], res["wolff_clusters_per_cpu_s"] = _best_rate(wolff_run, 1, seconds, repeats)
    res["wolff_mean_cluster_size"] = flipped["spins"] / flipped["clusters"]
    res["wolff_spins_flipped_per_s"] = res["wolff_clusters_per_s"] * res["wolff_mean_cluster_size"]

    s4 = start.copy()

    def sw_run(n):
        ising.swendsen_wang_kernel(s4, p_thr, n, seed, no_stream)

    res["swendsen_wang_sweeps_per_s"], res["swendsen_wang_sweeps_per_cpu_s"] = _best_rate(sw_run, 1, seconds,
                                                                                          repeats)

    # Two independent Metropolis chains on 1 and on 2 threads: same work, same results, less wall time.
    chains = np.stack([start, start])
    seeds = ising.chain_seeds(seed, 2, 1)
    rates = {}
    for threads in (1, 2):
        c = chains.copy()

        def chains_run(n, c=c, threads=threads):
            ising.run_chains(c, T, "metropolis", 1, n, seeds, store=False, threads=threads)

        rates[threads] = _best_rate(chains_run, 2 * sites, seconds, repeats)[0]
    res["chains_attempts_per_s_1_thread"] = rates[1]
    res["chains_attempts_per_s_2_threads"] = rates[2]
    res["chain_scaling_1_to_2"] = rates[2] / rates[1]
    res["load_average_after"] = list(os.getloadavg())
    res["checkerboard_target_met"] = bool(res["checkerboard_ratio"] >= CHECKERBOARD_TARGET)
    res["scaling_target_met"] = bool(res["chain_scaling_1_to_2"] >= SCALING_TARGET)
    return res


def report(res: dict) -> str:
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    load = " ".join(f"{v:.2f}" for v in res["load_average_before"])
    lines = [
        f"Ising benchmark: L = {res['L']}, T = {res['temperature']:.6f}, best of {res['repeats']} x "
        f"~{res['seconds']:g} s, {res['cpus']} CPU(s) available, load average before {load}",
        f"  checkerboard Metropolis, numba : {res['numba_checkerboard_attempts_per_s'] / 1e6:8.1f} M attempts/s",
        f"  checkerboard Metropolis, NumPy : {res['numpy_checkerboard_attempts_per_s'] / 1e6:8.1f} M attempts/s "
        "(vectorized over sublattices)",
        f"    numba / NumPy                : {res['checkerboard_ratio']:8.2f}x  "
        f"(target >= {CHECKERBOARD_TARGET:g}x: {met(res['checkerboard_target_met'])}); per CPU second "
        f"{res['numba_checkerboard_attempts_per_cpu_s'] / 1e6:.1f} vs "
        f"{res['numpy_checkerboard_attempts_per_cpu_s'] / 1e6:.1f} M/s = {res['checkerboard_ratio_cpu_time']:.2f}x",
        f"  Wolff, numba                   : {res['wolff_clusters_per_s'] / 1e3:8.1f} k clusters/s, "
        f"{res['wolff_spins_flipped_per_s'] / 1e6:.1f} M spins flipped/s "
        f"(mean cluster {res['wolff_mean_cluster_size']:.0f} spins; "
        f"{res['wolff_clusters_per_cpu_s'] / 1e3:.1f} k clusters per CPU second)",
        f"  Swendsen-Wang, numba           : {res['swendsen_wang_sweeps_per_s'] / 1e3:8.2f} k sweeps/s "
        f"({res['swendsen_wang_sweeps_per_cpu_s'] / 1e3:.2f} k per CPU second)",
        f"  2 Metropolis chains, 1 thread  : {res['chains_attempts_per_s_1_thread'] / 1e6:8.1f} M attempts/s",
        f"  2 Metropolis chains, 2 threads : {res['chains_attempts_per_s_2_threads'] / 1e6:8.1f} M attempts/s",
        f"    scaling 1 -> 2 threads       : {res['chain_scaling_1_to_2']:8.2f}x  "
        f"(target >= {SCALING_TARGET:g}x: {met(res['scaling_target_met'])})",
    ]
    if res["cpus"] < 2:
        lines.append("  note: fewer than 2 CPUs available, the scaling figure cannot reach 2x")
    if max(res["load_average_before"][0], res["load_average_after"][0]) > 0.5:
        lines.append("  note: other processes were using the CPU (load average "
                     f"{res['load_average_before'][0]:.2f} -> {res['load_average_after'][0]:.2f}); figures may be "
                     "contended")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_ising", description=__doc__.splitlines()[0])
    parser.add_argument("--L", dest="L", type=int, default=64, help="lattice side (even, default 64)")
    parser.add_argument("--temperature", type=float, default=None, help="default T_c")
    parser.add_argument("--seconds", type=float, default=1.5, help="target duration of one timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1:
        parser.error("--seconds must be > 0 and --repeats >= 1")

    from physics import ising

    # Compile (or load from the cache) before timing anything.
    t0 = time.perf_counter()
    warm = _equilibrated(8, ising.T_C, 0)
    ising.metropolis_sweeps(warm, ising.T_C, 1, 0)
    ising.swendsen_wang_sweeps(warm, ising.T_C, 1, 0)
    ising.run_chains(warm[None].copy(), ising.T_C, "metropolis", 1, 1, [0], store=False, threads=1)
    print(f"(kernels compiled or loaded in {time.perf_counter() - t0:.1f} s)")

    res = measure(args.L, args.temperature, args.seconds, args.repeats, args.seed)
    print(report(res))
    if args.json:
        from simdiff.utils.io import write_json

        write_json(args.json, res)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
