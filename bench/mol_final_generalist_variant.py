"""Retrain only the final distilled generalist of a finished MOL run with changed data settings, and evaluate
it on the run's own held-out seeds: a quick probe of what the last stage's data mix does, without rerunning
DAgger.

    python bench/mol_final_generalist_variant.py RUN --out DIR [--paired-fraction F] [--extra-pseudo PATH ...]
        [--paired-domain-weights W0,W1,...] [--eval-seed S] [--skip-train]

The generalist gets the run's paired demos and final pseudo-labels (plus ``--extra-pseudo`` files), the run's
generalist spec, steps and training seed; only the named settings change. Results (``DIR/variant.json``) sit
next to the run's own distilled generalist, evaluated by the same runner on the same seeds. ``--eval-seed`` moves
the evaluation to other seeds (a validation range for choosing a setting, so the held-out seeds stay unseen);
``--skip-train`` evaluates an already trained ``DIR/generalist``, or with ``--run-generalist NAME`` one of the run's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a finished `simdiff mol run` directory")
    p.add_argument("--out", required=True, help="output directory (the retrained generalist and variant.json)")
    p.add_argument("--paired-fraction", type=float, default=None, help="override pseudo.paired_fraction")
    p.add_argument("--extra-pseudo", nargs="*", default=[], help="more pseudo-label .npz files to train on")
    p.add_argument("--paired-domain-weights", default=None,
                   help="override pseudo.paired_domain_weights: comma-separated, one per env.domains entry")
    p.add_argument("--eval-seed", type=int, default=None, help="first evaluation seed (default: the run's)")
    p.add_argument("--skip-train", action="store_true", help="evaluate DIR/generalist as it is")
    p.add_argument("--run-generalist", default=None, metavar="NAME",
                   help="with --skip-train: evaluate the run's own generalists/NAME instead (e.g. distilled_r3, "
                        "labeled_only)")
    p.add_argument("--levels", default="0,1,2,3", help="levels to evaluate (default 0,1,2,3)")
    args = p.parse_args(argv)

    from simdiff.pipelines.mol import adapters
    from simdiff.pipelines.mol.stages import generalist_jobs, generalist_pseudo_files, load_run_config
    from simdiff.utils.io import read_json, write_json

    run, out = Path(args.run), Path(args.out)
    cfg = load_run_config(run)
    pseudo = generalist_pseudo_files(cfg, run, cfg.dagger.rounds)
    missing = [f for f in pseudo + args.extra_pseudo if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"pseudo-label files not found: {missing}")
    fraction = cfg.pseudo.paired_fraction if args.paired_fraction is None else args.paired_fraction
    weights = (cfg.pseudo.paired_domain_weights if args.paired_domain_weights is None
               else [float(x) for x in args.paired_domain_weights.split(",")])
    if weights is not None and len(weights) != len(cfg.env.domains):
        raise ValueError(f"--paired-domain-weights: expected {len(cfg.env.domains)} weights (env.domains "
                         f"{list(cfg.env.domains)}), received {len(weights)}")
    out.mkdir(parents=True, exist_ok=True)
    if args.run_generalist and not args.skip_train:
        raise ValueError("--run-generalist evaluates a generalist of the run as it is: add --skip-train")
    policy_dir = run / "generalists" / args.run_generalist if args.run_generalist else out / "generalist"
    job = None
    if not args.skip_train:
        # The run's own final-stage job, with only the named settings changed.
        spec = dict(generalist_jobs(cfg, run, cfg.dagger.rounds)[0][1])
        spec.update(pseudo=spec["pseudo"] + list(args.extra_pseudo), out_dir=str(policy_dir),
                    paired_fraction=fraction)
        spec.pop("paired_domain_weights", None)
        if weights is not None:
            spec["paired_domain_weights"] = list(weights)
        job = adapters.train_policy_job(**spec)
    eval_seed = cfg.eval_seed() if args.eval_seed is None else args.eval_seed
    levels = [int(x) for x in args.levels.split(",")]
    rows = {}
    for lv in levels:
        res = adapters.evaluate(str(policy_dir), cfg.env.id, lv, cfg.evaluation.episodes, eval_seed,
                                cfg.evaluation.batch_envs, dict(cfg.env.make_kwargs))
        base = read_json(run / "metrics.json")["methods"]["generalist_distilled"][f"level_{lv}"]
        rows[f"level_{lv}"] = {"variant": res["success_rate"], "ci95": res["ci95"], "run": base["success"]}
        print(f"level {lv}: variant {100 * res['success_rate']:.1f}%  run's distilled {100 * base['success']:.1f}% "
              f"(run's held-out seeds)", flush=True)
    write_json(out / "variant.json", {"run": str(run), "paired_fraction": fraction, "extra_pseudo": args.extra_pseudo,
                                      "paired_domain_weights": None if weights is None else list(weights),
                                      "eval_seed": eval_seed, "policy": str(policy_dir), "train": job,
                                      "levels": rows, "command": sys.argv})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
