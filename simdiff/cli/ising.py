"""``simdiff ising``: 2D Ising Monte Carlo datasets, their observables, and block-spin coarse-graining."""

from __future__ import annotations

import argparse

COMMAND = "ising"
HELP = "2D Ising Monte Carlo: sample, observables, coarse-graining"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = sub.add_parser("sample", help="draw equilibrium configurations into an .npz",
                       description="Draw equilibrium configurations of the L x L Ising torus (J = 1). Burn-in and "
                       "thinning come from the measured integrated autocorrelation time of the energy and |m| "
                       "unless given. Writes spins int8 (N, L, L) plus metadata.")
    p.add_argument("--L", dest="L", type=int, required=True, help="lattice side (>= 2; even for metropolis)")
    p.add_argument("--temperature", type=float, required=True, help="temperature T > 0 (T_c = 2.269185)")
    p.add_argument("--samples", type=int, required=True, help="number of configurations N")
    p.add_argument("--algorithm", default="wolff", help="wolff (default), swendsen-wang or metropolis")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--chains", type=int, default=4, help="independent chains (default 4)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all CPUs; results "
                   "do not depend on it)")
    p.add_argument("--burn-in", type=int, default=None, help="steps to discard (default: from the pilot)")
    p.add_argument("--thin", type=int, default=None, help="steps between samples (default: 2 tau_int)")
    p.add_argument("--out", required=True, metavar="FILE.npz")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=_sample)

    p = sub.add_parser("observables", help="print observables with standard errors",
                       description="Energy, specific heat, |m|, m^2, susceptibility, Binder cumulant, G(r), S(k) "
                       "and its log-slope, and the connected four-point function G4c(l) of a spin dataset, each "
                       "with a blocked-jackknife standard error.")
    p.add_argument("file", metavar="FILE.npz")
    p.add_argument("--temperature", type=float, default=None,
                   help="temperature for specific heat and susceptibility (default: the file's metadata)")
    p.add_argument("--blocks", type=int, default=None, help="jackknife blocks (default min(N, 50))")
    p.add_argument("--sides", type=int, nargs="+", default=None, metavar="l",
                   help="square sides for G4c (default 1 2 4 .. L/4)")
    p.add_argument("--json", action="store_true", help="print JSON: value and stderr per observable")
    p.set_defaults(func=_observables)

    p = sub.add_parser("coarse", help="majority-rule block-spin coarse-graining",
                       description="Coarse-grain every lattice by b x b majority rule (ties broken by a seeded "
                       "coin) into a new spin dataset of side L / b.")
    p.add_argument("file", metavar="FILE.npz")
    p.add_argument("--factor", type=int, required=True, help="block side b (2, 4, 8, ...; must divide L)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tie-breaking coins (default 0)")
    p.add_argument("--out", required=True, metavar="FILE2.npz")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_coarse)


def _print(summary: dict, as_json: bool) -> None:
    from simdiff.utils.io import to_json

    if as_json:
        print(to_json(summary), end="")
    else:
        for k, v in summary.items():
            print(f"{k:>16}: {v}")


def _sample(args: argparse.Namespace) -> int:
    from physics import ising
    from physics.datasets import save_spins

    # Validate everything before any work so a bad argument writes nothing.
    algorithm = ising.canonical_algorithm(args.algorithm)
    ising.check_size(args.L, algorithm)
    ising.check_temperature(args.temperature)
    for name in ("samples", "chains"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name}: expected an integer >= 1, received {getattr(args, name)}")
    if args.seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, received {args.seed}")
    if args.burn_in is not None and args.burn_in < 0:
        raise ValueError(f"--burn-in: expected an integer >= 0, received {args.burn_in}")
    if args.thin is not None and args.thin < 1:
        raise ValueError(f"--thin: expected an integer >= 1, received {args.thin}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected an integer >= 1, received {args.threads}")
    ising.check_memory(args.L, args.samples, args.chains)
    from simdiff.utils.io import ensure_new_npz_path

    out = ensure_new_npz_path(args.out, args.overwrite)
    res = ising.sample_configurations(args.L, args.temperature, args.samples, algorithm, seed=args.seed,
                                      chains=args.chains, burn_in=args.burn_in, thin=args.thin,
                                      threads=args.threads, progress=True)
    meta = res.metadata()
    save_spins(out, res.spins, meta, overwrite=args.overwrite,
               arrays={"energy": res.energy, "magnetization": res.magnetization, "chain": res.chain})
    summary = {"out": str(out), **{k: meta[k] for k in ("n_samples", "L", "temperature", "algorithm", "seed",
                                                         "chains", "burn_in", "thin", "clusters_per_step",
                                                         "tau_int_energy", "tau_int_abs_m", "tau_reliable",
                                                         "elapsed_s")}}
    if meta["notes"]:
        summary["notes"] = meta["notes"]
    _print(summary, args.json)
    return 0


def _observables(args: argparse.Namespace) -> int:
    from physics import observables
    from physics.datasets import load_spins
    from simdiff.utils.io import to_json

    data = load_spins(args.file)
    temperature = args.temperature if args.temperature is not None else data.temperature
    if temperature is not None and not temperature > 0:
        raise ValueError(f"--temperature: expected a number > 0, received {temperature}")
    if args.blocks is not None and not 1 <= args.blocks <= data.spins.shape[0]:
        raise ValueError(f"--blocks: expected an integer in [1, {data.spins.shape[0]}], received {args.blocks}")
    result = observables.summary(data.spins, temperature, args.blocks, args.sides)
    result = {"file": str(args.file), **result}
    if args.json:
        print(to_json(result), end="")
    else:
        print(format_table(result))
    return 0


def format_table(result: dict) -> str:
    """Human-readable table of an observables summary."""
    def pm(d: dict) -> str:
        return f"{d['value']:>12.6f} ± {d['stderr']:.6f}"

    t = result.get("temperature")
    lines = [f"{result['file']}: N = {result['n_samples']}, L = {result['L']}"
             + (f", T = {t:g}" if t is not None else " (no temperature: C and chi skipped)")
             + f", {result['n_blocks']} jackknife blocks"]
    names = {"energy": "energy / site", "specific_heat": "specific heat", "abs_m": "<|m|>", "m2": "<m^2>",
             "susceptibility": "susceptibility", "binder": "Binder U4",
             "structure_factor_slope": "d ln S / d ln k"}
    for key, label in names.items():
        if key in result:
            lines.append(f"  {label:<18}{pm(result[key])}")
    for key, label, x in (("two_point", "G(r)", "r"), ("structure_factor", "S(k)", "k"),
                          ("four_point_connected", "G4c(l)", "l")):
        prof = result[key]
        lines.append(f"  {label}:")
        for xv, v, e in zip(prof[x], prof["value"], prof["stderr"]):
            lines.append(f"    {x} = {xv:<8.4g}{v:>12.6f} ± {e:.6f}")
    return "\n".join(lines)


def _coarse(args: argparse.Namespace) -> int:
    from physics.coarse import block_spin
    from physics.datasets import load_spins, save_spins

    if args.factor < 2:
        raise ValueError(f"--factor: expected an integer >= 2, received {args.factor}")
    if args.seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, received {args.seed}")
    from simdiff.utils.io import ensure_new_npz_path

    out = ensure_new_npz_path(args.out, args.overwrite)
    data = load_spins(args.file)
    if data.L % args.factor:
        raise ValueError(f"--factor: expected a divisor of the lattice side L = {data.L}, received {args.factor}")
    coarse = block_spin(data.spins, args.factor, seed=args.seed)
    meta = dict(data.metadata)
    meta.update({"L": int(coarse.shape[1]), "n_samples": int(coarse.shape[0]),
                 "coarse": {"rule": "majority", "factor": args.factor, "tie_seed": args.seed,
                            "source": str(args.file), "source_L": data.L}})
    arrays = {"chain": data.arrays["chain"]} if "chain" in data.arrays else None
    save_spins(out, coarse, meta, overwrite=args.overwrite, arrays=arrays)
    _print({"out": str(out), "n_samples": int(coarse.shape[0]), "L": int(coarse.shape[1]), "factor": args.factor,
            "source_L": data.L, "tie_seed": args.seed}, args.json)
    return 0
