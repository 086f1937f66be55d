"""``simdiff skild``: scale-invariant spectral diffusion on lattices (train, sample, super-resolve, validate)."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "skild"
HELP = "SKILD spectral diffusion on lattices: train, sample, honest super-resolution, Ising validation"


def _add_model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", metavar="DIR", help="run directory (from `skild train`) or model directory")
    p.add_argument("--pretrained", metavar="NAME", help="use a checkpoint shipped with the package instead of DIR")
    p.add_argument("--steps", type=int, default=None,
                   help="reverse steps for a full generation (default: the model's sample.steps; 0 = every step)")
    p.add_argument("--batch-size", type=int, default=None, help="lattices per network call")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="where the network runs: cpu (default), cuda or cuda:N")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = sub.add_parser("train", help="train (or resume) a run from a config", description="Train a SKILD model "
                       "(or the white-noise baseline, process.kind: gaussian). Re-running resumes.")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (resumed when it exists)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=100 (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="train on cpu (default), cuda or cuda:N; a run may resume "
                   "on another device")
    p.set_defaults(func=_train)

    p = sub.add_parser("sample", help="generate lattices", description="Generate lattices from a trained model; "
                       "writes samples float32 (N,1,L,L) and spins int8 (N,L,L).")
    _add_model_source(p)
    p.add_argument("--n", type=int, default=1000, help="number of lattices")
    p.add_argument("--out", required=True, metavar="FILE.npz")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_sample)

    p = sub.add_parser("superres", help="super-resolve real low-resolution lattices",
                       description="Super-resolve R x R inputs (L/8 <= R <= L) to the model's L from the inputs "
                       "alone: their modes are placed into the L x L grid and the reverse process starts at the "
                       "first step whose resolved cutoff is at or below the input's resolution.")
    _add_model_source(p)
    p.add_argument("--input", required=True, metavar="LOWRES.npz", help="key 'spins' or 'samples'")
    p.add_argument("--input-kind", choices=("raw", "majority", "average"), default="raw",
                   help="how the input was made: raw (its modes are taken as the true large-scale modes) or a "
                   "coarse-graining of factor L/R, majority block spins or block average (its modes are mapped to "
                   "their estimate of the true modes, calibrated on training lattices)")
    p.add_argument("--conditioning", choices=("start", "replace"), default=None,
                   help="how super-resolution holds on to its input: start (only through the starting state) or "
                   "replace (every reverse step keeps the input's modes; default: the model's "
                   "sample.superres_conditioning)")
    p.add_argument("--superres-tau", type=float, default=None, metavar="TAU",
                   help="SNR threshold that picks the start step n0 (smaller starts later; default: the model's "
                   "sample.superres_tau, else process.tau)")
    p.add_argument("--out", required=True, metavar="FILE.npz")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_superres)

    p = sub.add_parser("validate", help="compare generation and super-resolution with Ising ground truth",
                       description="Generate and super-resolve, then compare with held-out reference lattices on "
                       "every observable; writes report.md, metrics.json and plots into --out.")
    _add_model_source(p)
    p.add_argument("--reference", required=True, metavar="REF.npz", help="held-out ground-truth lattices")
    p.add_argument("--out", required=True, metavar="REPORT_DIR")
    p.add_argument("--baseline", metavar="DIR", help="white-noise baseline run (process.kind: gaussian)")
    p.add_argument("--n", type=int, default=None, help="generated lattices (default: validate.num_generate; 0: super-resolution only)")
    p.add_argument("--n-superres", type=int, default=None, help="super-resolved lattices per factor")
    p.add_argument("--factors", type=int, nargs="*", default=None, help="super-resolution factors (e.g. 2 4)")
    p.add_argument("--downsample", choices=("majority", "average"), nargs="+", default=None,
                   help="how inputs are made from the reference, one or both (default: validate.downsample)")
    p.add_argument("--conditioning", choices=("start", "replace"), default=None,
                   help="how super-resolution holds on to its input: start (only through the starting state) or "
                   "replace (every reverse step keeps the input's modes; default: the model's "
                   "sample.superres_conditioning)")
    p.add_argument("--superres-tau", type=float, default=None, metavar="TAU",
                   help="SNR threshold that picks the start step n0 (smaller starts later; default: the model's "
                   "sample.superres_tau, else process.tau)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_validate)


def _steps(args: argparse.Namespace):
    if args.steps is None:
        return -1
    if args.steps < 0:
        raise ValueError(f"--steps: expected >= 0, received {args.steps}")
    return None if args.steps == 0 else args.steps


def _setup(args: argparse.Namespace):
    import torch

    from simdiff.pipelines.skild.core import load_model

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: expected >= 1, received {args.threads}")
        torch.set_num_threads(args.threads)
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, received {args.batch_size}")
    return load_model(args.dir, args.pretrained, device=args.device)


def _train(args: argparse.Namespace) -> int:
    from simdiff.config import load_config, parse_overrides
    from simdiff.pipelines.skild.config import SkildConfig
    from simdiff.pipelines.skild.core import train_run

    cfg = load_config(SkildConfig, args.config, parse_overrides(args.overrides))
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected >= 1, received {args.threads}")
    # The command that reproduces this run, recorded in run.json and in the exported model's metadata.
    command = ["simdiff", "skild", "train", str(args.config), "--out", str(args.out)]
    for o in args.overrides:
        command += ["--set", o]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    if args.device != "cpu":
        command += ["--device", str(args.device)]
    summary = train_run(cfg, args.out, command=command, threads=args.threads, device=args.device)
    state = "done" if summary["completed"] else "stopped"
    s = summary["spectrum"]
    print(f"{cfg.name}: {state} at step {summary['steps']} in {summary['wall_time_s']:.0f} s "
          f"(final loss {summary['final_loss']:.4f}); S0 = {s['C']:.4g} (k^2 + {s['k0sq']:.3f})^-{s['alpha']:.3f}")
    if summary["completed"]:
        print(f"model: {summary['model_dir']}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from simdiff.pipelines.skild.core import generate, save_npz, to_spins

    if args.n < 1:
        raise ValueError(f"--n: expected >= 1, received {args.n}")
    from simdiff.utils.io import ensure_new_npz_path

    out = ensure_new_npz_path(args.out, args.overwrite)
    model = _setup(args)
    x = generate(model, args.n, seed=args.seed, steps=_steps(args), batch_size=args.batch_size)
    save_npz(out, samples=x.numpy(), spins=to_spins(x[:, 0]), L=model.L, seed=args.seed, kind=model.kind,
             model=str(model.path))
    print(f"wrote {args.n} lattices of {model.L}x{model.L} to {out}")
    return 0


def _superres(args: argparse.Namespace) -> int:
    from simdiff.pipelines.skild.core import check_lowres, load_lattices, save_npz, superres, to_spins
    from simdiff.utils.io import ensure_new_npz_path

    out = ensure_new_npz_path(args.out, args.overwrite)
    model = _setup(args)
    x_low = check_lowres(model, load_lattices(args.input))
    x, info = superres(model, x_low, seed=args.seed, steps=_steps(args), batch_size=args.batch_size,
                       input_kind=args.input_kind, conditioning=args.conditioning, tau=args.superres_tau)
    save_npz(out, samples=x.numpy(), spins=to_spins(x[:, 0]), L=model.L, R=info["R"], n0=info["n0"],
             seed=args.seed, input_kind=args.input_kind, model=str(model.path))
    print(f"super-resolved {x.shape[0]} lattices {info['R']}x{info['R']} -> {model.L}x{model.L} "
          f"(reverse process from step n0 = {info['n0']} of {info['num_steps']}, {info['sampler_steps']} steps); "
          f"wrote {out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from simdiff.pipelines.skild.core import load_lattices, load_model
    from simdiff.pipelines.skild.validate import validate
    from simdiff.utils.io import ensure_new_path

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        ensure_new_path(out, args.overwrite)
    bad = [f for f in args.factors or () if f < 2]
    if bad:
        raise ValueError(f"--factors: expected super-resolution factors >= 2 (e.g. 2 4), received {bad}")
    for name in ("n", "n_superres"):
        v = getattr(args, name)
        if v is not None and v < 2 and not (name == "n" and v == 0):
            raise ValueError(f"--{name.replace('_', '-')}: expected >= 2" + (" or 0 (no generation)" if name == "n"
                             else "") + f", received {v}")
    reference = load_lattices(args.reference)
    model = _setup(args)
    baseline = load_model(args.baseline, device=args.device) if args.baseline else None
    validate(model, reference, out, baseline=baseline, n_generate=args.n, n_superres=args.n_superres,
             factors=args.factors, method=args.downsample, seed=args.seed, steps=_steps(args),
             batch_size=args.batch_size, reference_path=args.reference, conditioning=args.conditioning,
             superres_tau=args.superres_tau)
    return 0
