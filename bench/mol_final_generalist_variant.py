"""Retrain only the final generalist of a finished MOL run with changed settings, and evaluate it on the run's
own held-out seeds (or validation seeds): a quick probe of what the last stage's data mix, size or budget does,
without rerunning DAgger.

    python bench/mol_final_generalist_variant.py RUN --out DIR [--set KEY=VALUE ...] [--extra-pseudo PATH ...]
        [--job distilled|labeled_only] [--eval-seed S] [--skip-train [--run-generalist NAME] [--guidance W]]
        [--device cuda]

The job is the run's own final-stage job (``simdiff.pipelines.mol.stages.generalist_jobs``: its paired demos and
pseudo-labels, generalist spec, steps and training seed) rebuilt from the run's config with the ``--set``
overrides applied (e.g. ``pseudo.paired_fraction=0.9``, ``pseudo.paired_domain_weights=[2,1,1,1]``,
``generalist.steps=18000``); ``--job labeled_only`` retrains the labeled-only baseline instead, so a size or
budget change can be given to both (``pseudo.paired_domain_weights`` too: the baseline then draws its windows with
those weights). With nothing changed it reproduces the run's generalist exactly. Results
(``DIR/variant.json``) sit next to the run's own generalist of that kind. ``--eval-seed`` moves the evaluation to
other seeds (a validation range for choosing a setting, so the held-out seeds stay unseen); ``--skip-train``
evaluates an already trained ``DIR/generalist``, or with ``--run-generalist NAME`` one of the run's, into
``DIR/eval_<seed>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

JOBS = {"distilled": "generalist_distilled", "labeled_only": "generalist_labeled_only"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a finished `simdiff mol run` directory")
    p.add_argument("--out", required=True, help="output directory (the retrained generalist and variant.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the run's config (repeatable)")
    p.add_argument("--paired-fraction", type=float, default=None, help="shorthand for --set pseudo.paired_fraction=F")
    p.add_argument("--paired-domain-weights", default=None,
                   help="shorthand for --set pseudo.paired_domain_weights=[...]: comma-separated, one per domain")
    p.add_argument("--extra-pseudo", nargs="*", default=[], help="more pseudo-label .npz files to train on")
    p.add_argument("--job", choices=sorted(JOBS), default="distilled", help="which final generalist to retrain")
    p.add_argument("--eval-seed", type=int, default=None, help="first evaluation seed (default: the run's)")
    p.add_argument("--skip-train", action="store_true", help="evaluate DIR/generalist as it is")
    p.add_argument("--run-generalist", default=None, metavar="NAME",
                   help="with --skip-train: evaluate the run's own generalists/NAME instead (e.g. distilled_r3, "
                        "labeled_only)")
    p.add_argument("--device", default=None, help="where the generalist trains: cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the training (default 1)")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="evaluate a source-token generalist (pseudo.source_token) with task guidance W away from the "
                        "pseudo-label token (noise.guidance; sampling only)")
    p.add_argument("--levels", default="0,1,2,3", help="levels to evaluate, e.g. 0,1,2,3,shift (default 0,1,2,3)")
    args = p.parse_args(argv)

    from simdiff.config import parse_overrides
    from simdiff.pipelines.mol import adapters
    from simdiff.pipelines.mol.config import level_key, with_overrides
    from simdiff.pipelines.mol.stages import generalist_jobs, load_run_config
    from simdiff.utils.io import read_json, write_json

    if args.guidance is not None and not args.skip_train:
        raise ValueError("--guidance re-evaluates a trained generalist: add --skip-train")
    if args.run_generalist and not args.skip_train:
        raise ValueError("--run-generalist evaluates a generalist of the run as it is: add --skip-train")
    if args.extra_pseudo and args.job != "distilled":
        raise ValueError("--extra-pseudo adds pseudo-labels: only the distilled generalist trains on them")
    items = list(args.overrides)
    if args.paired_fraction is not None:
        items.append(f"pseudo.paired_fraction={args.paired_fraction}")
    if args.paired_domain_weights is not None:
        items.append(f"pseudo.paired_domain_weights=[{args.paired_domain_weights}]")
    run, out = Path(args.run), Path(args.out)
    cfg = with_overrides(load_run_config(run), **parse_overrides(items))
    # Both final generalists are jobs of the last round (runs made when the labeled-only one trained in round 0
    # have the same job: paired demos only, the generalist's spec, steps and seed).
    spec = next(job for name, job in generalist_jobs(cfg, run, cfg.dagger.rounds) if name.startswith(JOBS[args.job]))
    if args.job == "labeled_only" and cfg.pseudo.paired_domain_weights:
        # A run's labeled-only job has uniform windows; a weight probe gives it the distilled generalist's
        # per-domain weights, to see whether the baseline gains from them too.
        spec["paired_domain_weights"] = list(cfg.pseudo.paired_domain_weights)
    missing = [f for f in spec["pseudo"] + args.extra_pseudo if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"pseudo-label files not found: {missing}")
    out.mkdir(parents=True, exist_ok=True)
    policy_dir = run / "generalists" / args.run_generalist if args.run_generalist else out / "generalist"
    job = None
    if not args.skip_train:
        spec.update(pseudo=spec["pseudo"] + list(args.extra_pseudo), out_dir=str(policy_dir), device=args.device,
                    threads=args.threads)
        job = adapters.train_policy_job(**spec)
    eval_seed = cfg.eval_seed() if args.eval_seed is None else args.eval_seed
    policy = str(policy_dir)
    if args.guidance is not None:
        from policies.diffusion import DiffusionPolicy
        from policies.diffusion.policy import replace_config

        loaded = DiffusionPolicy.load(policy_dir)
        if loaded.cfg.model.default_task != adapters.SOURCE_EXPERT or loaded.cfg.model.num_tasks != 2:
            raise ValueError(f"--guidance: expected a source-token generalist (pseudo.source_token), {policy_dir} "
                             f"has model.num_tasks={loaded.cfg.model.num_tasks}")
        policy = DiffusionPolicy.load(policy_dir, config=replace_config(
            loaded.cfg, noise={"guidance": args.guidance, "guidance_against": adapters.SOURCE_PSEUDO}))
    rows = {}
    run_metrics = read_json(run / "metrics.json")["methods"] if (run / "metrics.json").is_file() else {}
    for lv in [int(x) if x.isdigit() else x for x in args.levels.split(",")]:
        res = adapters.evaluate(policy, cfg.env.id, lv, cfg.evaluation.episodes, eval_seed,
                                cfg.evaluation.batch_envs, dict(cfg.env.make_kwargs))
        key = level_key(lv)
        base = run_metrics.get(JOBS[args.job], {}).get(key, {}).get("success")  # None: the run is not finished
        rows[key] = {"variant": res["success_rate"], "ci95": res["ci95"], "run": base}
        theirs = "not evaluated yet" if base is None else f"{100 * base:.1f}%"
        print(f"{key}: variant {100 * res['success_rate']:.1f}%  run's {args.job} {theirs} (run's held-out seeds)",
              flush=True)
    # A training run writes variant.json; a re-evaluation (--skip-train) its own eval_<seed>.json beside it.
    name = (f"eval_{eval_seed}" + ("" if args.guidance is None else f"_guidance{args.guidance:g}") + ".json"
            if args.skip_train else "variant.json")
    if args.skip_train and (out / name).is_file():   # levels evaluated earlier on these seeds are kept
        rows = {**read_json(out / name).get("levels", {}), **rows}
    write_json(out / name, {"run": str(run), "job": args.job, "overrides": items,
                                      "extra_pseudo": args.extra_pseudo, "eval_seed": eval_seed,
                                      "policy": str(policy_dir), "train": job, "levels": rows,
                                      "command": sys.argv})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
