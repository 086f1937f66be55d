"""``simdiff critic``: DRM reward critic for diffusion policies (preferences, training, guided sampling, GRPO)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "critic"
HELP = "DRM reward critic: preference data, Bradley-Terry training, step-wise sampling, step-wise GRPO"

_METHODS = ("policy", "base", "terminal", "stepwise")
_ENSEMBLE_HELP = "A,B,... (comma-separated) scores with the mean of several critics of the same policy"


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="critic config YAML (e.g. configs/critic/push.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set prefs.episodes=32 (repeatable)")


def _policy_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="base diffusion policy (run directory or its policy/ checkpoint)")


def _workers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1,
                   help="preference collection: blocks of prefs.batch_envs episodes run on this many local "
                        "processes (default 1); the episodes, blocks and seeds do not depend on it")


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="critic training on cpu (default), cuda or cuda:N; the exported critic is on the CPU")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("prefs", help="collect automatic preference pairs from restored simulator states")
    _config_args(p)
    _policy_arg(p)
    p.add_argument("--out", required=True, help="output .npz (a .json summary is written next to it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _workers_arg(p)
    p.set_defaults(func=_prefs)

    m = sub.add_parser("merge", help="join preference files collected with different prefs.seed into one")
    m.add_argument("parts", nargs="+", help="preference files (.npz) of the same base policy and settings")
    m.add_argument("--out", required=True, help="output .npz (a .json summary is written next to it)")
    m.add_argument("--train-only", action="append", default=[], metavar="PART",
                   help="use every episode of this part (one of the inputs) for training: the held-out set stays "
                        "that of the other parts (repeatable)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    m.set_defaults(func=_merge)

    t = sub.add_parser("train", help="train a critic on preference pairs (resumes an unfinished run in --out)")
    _config_args(t)
    _policy_arg(t)
    t.add_argument("--prefs", required=True, help="preference file written by `simdiff critic prefs`")
    t.add_argument("--out", required=True, help="run directory; the critic checkpoint goes to OUT/critic")
    t.add_argument("--overwrite", action="store_true", help="delete an existing --out and start over")
    t.add_argument("--init", default=None, metavar="CRITIC",
                   help="start from this trained critic's weights (same base policy and model settings) instead of "
                        "the policy's blocks and a fresh head, e.g. to fine-tune a chunk critic on sibling pairs")
    _device_arg(t)
    t.set_defaults(func=_train)

    a = sub.add_parser("accuracy", help="held-out pairwise accuracy of a trained critic on a preference file, per "
                                        "diffusion step and per pair kind")
    a.add_argument("critic", help=f"critic run directory or checkpoint; {_ENSEMBLE_HELP}")
    a.add_argument("--prefs", required=True, help="preference file (its held-out episodes are scored)")
    a.add_argument("--t", default=None, help="comma list of diffusion steps (default: 10 evenly spaced from 0)")
    a.add_argument("--draws", type=int, default=4, help="noise draws per pair and step (default 4)")
    a.add_argument("--margin", type=float, default=None,
                   help="tie margin (default: the file's prefs.tie_margin, else the config default)")
    a.add_argument("--seed", type=int, default=0, help="noise seed (default 0, as in training)")
    a.add_argument("--out", default=None, help="result JSON (default: print only)")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _mirror_arg(a)
    _device_arg(a)
    a.set_defaults(func=_accuracy)

    e = sub.add_parser("eval", help="evaluate base / terminal best-of-k / step-wise sampling on-policy")
    e.add_argument("critic", nargs="?", default=None,
                   help=f"critic run directory or checkpoint (not needed for --method policy/base); {_ENSEMBLE_HELP}")
    _policy_arg(e)
    e.add_argument("--method", choices=_METHODS, default="stepwise",
                   help="policy: the policy's own sampler; base: stochastic DDIM without critic; terminal: best "
                        "of k full chunks; stepwise: best of k at every denoising step (default)")
    e.add_argument("--k", type=int, default=4, help="candidates (default 4)")
    e.add_argument("--eta", type=float, default=1.0, help="DDIM eta of the stochastic steps (default 1.0)")
    e.add_argument("--ddim-steps", type=int, default=None, help="denoising steps (default: the policy's)")
    e.add_argument("--env", default=None, help="env id (default: the policy's)")
    e.add_argument("--level", default="3", help="0..3 or 'shift' (default 3)")
    e.add_argument("--episodes", type=int, default=100, help="episodes (default 100)")
    e.add_argument("--seed", type=int, default=10_000, help="episode i uses seed SEED+i (default 10000)")
    e.add_argument("--batch-size", type=int, default=100, help="envs stepped together (default 100)")
    e.add_argument("--out", default=None, help="result JSON (default: print only)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _mirror_arg(e)
    e.set_defaults(func=_eval)

    g = sub.add_parser("grpo", help="fine-tune the policy with step-wise (critic) or terminal-reward GRPO")
    _config_args(g)
    _policy_arg(g)
    g.add_argument("--mode", choices=("stepwise", "terminal"), required=True)
    g.add_argument("--critic", default=None,
                   help=f"critic run directory or checkpoint (required for stepwise); {_ENSEMBLE_HELP}; "
                        "'oracle' scores each candidate step by its TRUE outcome in the simulator (the rule the "
                        "critic learns, prefs.lookahead chunks ahead: a diagnostic of the method itself)")
    g.add_argument("--oracle-noise", type=float, default=0.0,
                   help="with --critic oracle: add N(0, STD^2) noise to every true utility (an oracle with random "
                        "errors; bench/critic_grpo_agreement.py finds the STD matching a critic's pair accuracy)")
    g.add_argument("--out", required=True, help="output directory: policy/ (fine-tuned), grpo.json")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _mirror_arg(g)
    g.set_defaults(func=_grpo)

    x = sub.add_parser("experiments", help="all stages with report.md, metrics.json and plots (resumable)",
                       description="preferences -> critic -> held-out accuracy vs t -> base / terminal best-of-k / "
                                   "step-wise sampling per level -> step-wise vs terminal GRPO. Stages whose output "
                                   "exists in --out are reused, so an interrupted run resumes.")
    _config_args(x)
    _policy_arg(x)
    x.add_argument("--out", required=True, help="run directory")
    x.add_argument("--stages", default="prefs,train,sampling,grpo",
                   help="comma list of stages to run (default: all: prefs,train,sampling,grpo)")
    x.add_argument("--threads", type=int, default=1, help="torch threads (default 1; the CPU is often shared)")
    x.add_argument("--overwrite", action="store_true", help="discard an earlier run in --out")
    _workers_arg(x)
    _device_arg(x)
    x.set_defaults(func=_experiments)


# ----------------------------------------------------------------------------------------------- helpers
def _mirror_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mirror", action="store_true",
                   help="average every score over the world's mirror symmetry (Push-v0: y -> -y), which removes "
                        "any part of the critic that the symmetry says must be zero (two critic calls per score)")


def _critic(spec: str, mirror: bool, policy=None):
    """The critic (or ensemble) of ``spec``, on ``policy``'s normalization when given, mirror-averaged if asked."""
    from policies.critic.ensemble import load_critics

    critic = load_critics(spec)
    if policy is not None:
        critic.policy = policy
    if not mirror:
        return critic
    from policies.critic.symmetry import env_mirror, mirror_critic
    from simdiff.pipelines.critic import env_of

    env_id = env_of(critic.policy)
    sym = env_mirror(env_id)
    if sym is None:
        raise ValueError(f"--mirror: the world {env_id} declares no mirror symmetry (env.unwrapped.mirror)")
    return mirror_critic(critic, sym)


def _load_cfg(args):
    from policies.critic.config import load_critic_config
    from simdiff.config import parse_overrides

    path = Path(args.config)
    if not path.exists():
        raise FileNotFoundError(f"config {path}: no such file")
    return load_critic_config(path, parse_overrides(args.overrides))


def _policy(path: str):
    from simdiff.pipelines.critic import load_policy

    if not Path(path).exists():
        raise FileNotFoundError(f"--policy {path}: no such directory")
    return load_policy(path)


def _parse_level(text: str):
    if text == "shift":
        return "shift"
    if text in ("0", "1", "2", "3"):
        return int(text)
    raise ValueError(f"--level: expected 0, 1, 2, 3 or 'shift', received {text!r}")


def _check_file_out(out: Path, overwrite: bool) -> None:
    from simdiff.utils.io import ensure_new_path

    ensure_new_path(out, overwrite)


# ------------------------------------------------------------------------------------------------ handlers
def _prefs(args) -> int:
    cfg = _load_cfg(args)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out: expected a .npz path, received {out}")
    _check_file_out(out, args.overwrite)
    policy = _policy(args.policy)

    from policies.critic.adapter import PolicyDenoiser
    from policies.critic.preferences import collect_preferences

    out.parent.mkdir(parents=True, exist_ok=True)
    data = collect_preferences(PolicyDenoiser(policy), cfg.prefs, workers=args.workers)
    data.save(out)
    m = data.meta
    print(f"{out}: {m['states']} states x {m['candidates_per_state']} candidates, {m['train_pairs']} train / "
          f"{m['heldout_pairs']} held-out pairs, {m['ties_dropped']} ties dropped ({m['wall_time_s']:.0f} s)")
    return 0


def _merge(args) -> int:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out: expected a .npz path, received {out}")
    parts = [Path(p) for p in args.parts]
    unknown = [p for p in args.train_only if Path(p) not in parts]
    if unknown:
        raise ValueError(f"--train-only: expected one of the inputs {[str(p) for p in parts]}, received {unknown}")
    if out in parts:
        raise ValueError(f"--out {out} is one of the inputs; write the merged file elsewhere")
    _check_file_out(out, args.overwrite)
    from policies.critic.preferences import PreferenceData, merge_preferences

    train_only = {Path(x) for x in args.train_only}
    data = merge_preferences([PreferenceData.load(p) for p in parts], [p in train_only for p in parts])
    data.save(out)
    m = data.meta
    print(f"{out}: {m['states']} states x {m['candidates_per_state']} candidates from {len(parts)} files, "
          f"{m['train_pairs']} train / {m['heldout_pairs']} held-out pairs")
    return 0


def _train(args) -> int:
    import shutil

    cfg = _load_cfg(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite and not (out / "config.yaml").exists():
        raise FileExistsError(f"--out {out} is not empty and is not a critic run; choose another path or pass "
                              "--overwrite")
    policy = _policy(args.policy)
    from policies.critic.preferences import PreferenceData
    from policies.critic.scorer import Critic
    from policies.critic.train import init_from, plot_accuracy, train_critic
    from simdiff.utils.run import record_run

    data = PreferenceData.load(args.prefs)
    if args.overwrite and out.exists():
        shutil.rmtree(out)
    record_run(out, cfg, seed=cfg.train.seed, command=["simdiff", *sys.argv[1:]],
               extra={"policy": str(args.policy), "prefs": str(args.prefs), "init": args.init})
    critic = Critic.from_policy(policy, cfg.model)
    if args.init is not None:
        init_from(critic, Critic.load(args.init), f"--init {args.init}")
    res = train_critic(critic, data, cfg.train, cfg.prefs.tie_margin, out, device=args.device)
    plot_accuracy({"critic": res.accuracy}, out / "accuracy_vs_t.png")
    print(f"{out / 'critic'}: final loss {res.final_loss:.4f}, {res.wall_time:.0f} s")
    for r in res.accuracy:
        print(f"  t={r['t']:3d}  held-out accuracy {r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
    return 0


def _parse_steps(text: str | None, num_steps: int) -> list[int]:
    from policies.critic.train import eval_timesteps

    if text is None:
        return eval_timesteps(num_steps, 10)
    try:
        steps = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--t: expected a comma list of integers, received {text!r}") from None
    if not steps or steps[0] < 0 or steps[-1] > num_steps - 1:
        raise ValueError(f"--t: expected steps in [0, {num_steps - 1}], received {text!r}")
    return steps


def _accuracy(args) -> int:
    if args.draws < 1:
        raise ValueError(f"--draws: expected >= 1, received {args.draws}")
    if args.out:
        _check_file_out(Path(args.out), args.overwrite)
    from policies.critic.config import PrefsConfig
    from policies.critic.preferences import PreferenceData
    from policies.critic.train import accuracy_by_pair_kind, pair_tensors, pairwise_accuracy
    from simdiff.utils.io import write_json

    critic = _critic(args.critic, args.mirror)
    data = PreferenceData.load(args.prefs)
    want = (critic.policy.horizons[1], critic.policy.action_dim)
    if tuple(data.chunks.shape[2:]) != want:
        raise ValueError(f"--prefs {args.prefs}: expected chunks of shape (S, n, {want[0]}, {want[1]}) for this "
                         f"critic, received {tuple(data.chunks.shape)}")
    margin = args.margin if args.margin is not None else float(
        (data.meta.get("config") or {}).get("tie_margin", PrefsConfig.tie_margin))
    steps = _parse_steps(args.t, critic.num_train_steps)
    overall = pairwise_accuracy(critic, pair_tensors(critic, data, margin, heldout=True), steps, args.draws,
                                args.seed, device=args.device)
    kinds = accuracy_by_pair_kind(critic, data, margin, steps, args.draws, args.seed, device=args.device)
    by_t = {r["t"]: {} for r in overall}
    for r in kinds:
        by_t[r["t"]][r["kind"]] = r["accuracy"]
    names = list(dict.fromkeys(r["kind"] for r in kinds))
    print(f"{args.critic} on the held-out pairs of {args.prefs} (margin {margin}, {args.draws} noise draws):")
    print("    t  all pairs            " + "  ".join(f"{n:>19}" for n in names))
    for r in overall:
        cells = "  ".join(f"{100 * by_t[r['t']][n]:19.1f}" for n in names)
        print(f"  {r['t']:3d}  {100 * r['accuracy']:5.1f} [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]  "
              f"{cells}  ({r['pairs']} pairs)")
    if args.out:
        write_json(args.out, {"critic": str(args.critic), "prefs": str(args.prefs), "margin": margin,
                              "draws": args.draws, "accuracy": overall, "accuracy_by_kind": kinds})
    return 0


def _eval(args) -> int:
    level = _parse_level(args.level)
    if args.method in ("terminal", "stepwise") and args.critic is None:
        raise ValueError(f"--method {args.method}: expected a critic directory argument, received none")
    for name, v, lo in (("--k", args.k, 1), ("--episodes", args.episodes, 1), ("--batch-size", args.batch_size, 1)):
        if v < lo:
            raise ValueError(f"{name}: expected >= {lo}, received {v}")
    if args.eta < 0:
        raise ValueError(f"--eta: expected >= 0, received {args.eta}")
    if args.out:
        _check_file_out(Path(args.out), args.overwrite)
    policy = _policy(args.policy)

    from policies.critic.config import CriticConfig, ExperimentConfig, SamplingConfig
    from simdiff.pipelines.critic import critic_cost, env_of, evaluate_method
    from simdiff.utils.io import write_json

    critic = _critic(args.critic, args.mirror, policy) if args.critic is not None else None
    cfg = CriticConfig(sampling=SamplingConfig(k=args.k, eta=args.eta, inference_steps=args.ddim_steps),
                       experiment=ExperimentConfig(levels=(level,), episodes=args.episodes, seed=args.seed,
                                                   batch_size=args.batch_size))
    res = evaluate_method(policy, critic, args.method, args.k, args.eta, level, cfg, args.env or env_of(policy),
                          show_progress=True)
    cost = critic_cost(policy, critic) if critic is not None else 0.0
    res["equiv_denoiser_evals_per_chunk"] = res["denoiser_evals_per_chunk"] + cost * res["critic_evals_per_chunk"]
    lo, hi = res["ci95"]
    print(f"{args.method} (k={args.k}, eta={args.eta}) level {level}: success {res['success_rate']:.3f} "
          f"[{lo:.3f}, {hi:.3f}] over {res['episodes']} episodes; {res['denoiser_evals_per_chunk']:.1f} denoiser + "
          f"{res['critic_evals_per_chunk']:.1f} critic evaluations per chunk ({res['equiv_denoiser_evals_per_chunk']:.1f} "
          f"denoiser-equivalent); {res['wall_time_s']:.1f} s")
    if args.out:
        write_json(args.out, res)
    return 0


def _grpo(args) -> int:
    cfg = _load_cfg(args)
    if args.mode == "stepwise" and args.critic is None:
        raise ValueError("--mode stepwise: expected --critic DIR, received none")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"--out {out} is not empty; pass --overwrite or choose another directory")
    policy = _policy(args.policy)

    from policies.critic.grpo import run_grpo
    from simdiff.pipelines.critic import env_of, grpo_eval_fn
    from simdiff.utils.io import write_json
    from simdiff.utils.run import record_run

    env_id = env_of(policy)
    g = cfg.grpo
    if args.critic == "oracle":
        if args.mirror:
            raise ValueError("--critic oracle: the true outcome needs no mirror average; drop --mirror")
        from simdiff.pipelines.critic import oracle_scorer

        critic = oracle_scorer(policy, cfg, env_id, args.oracle_noise)
    else:
        if args.oracle_noise:
            raise ValueError(f"--oracle-noise {args.oracle_noise}: expected --critic oracle, received "
                             f"--critic {args.critic}")
        critic = _critic(args.critic, args.mirror, policy) if args.critic is not None else None

    eval_fn = grpo_eval_fn(cfg, env_id)

    def log(rec) -> None:
        if rec["update"] % g.eval_every == 0:
            print(f"update {rec['update']}: loss {rec['loss']:.4f} kl {rec['kl']:.4f} clip {rec['clip_frac']:.2f} "
                  f"rollout success {rec['rollout_success']:.2f}", file=sys.stderr, flush=True)

    record_run(out, cfg, seed=g.seed, command=["simdiff", *sys.argv[1:]],
               extra={"policy": str(args.policy), "critic": args.critic, "mirror": args.mirror, "mode": args.mode,
                      "oracle_noise": args.oracle_noise})
    res = run_grpo(policy, g, args.mode, env_id=env_id, critic=critic, eval_fn=eval_fn,
                   inference_steps=cfg.sampling.inference_steps,
                   max_episode_steps=cfg.experiment.max_episode_steps, on_log=log)
    res.policy.save(out / "policy", metrics={"grpo_mode": args.mode, "curve": res.curve})
    write_json(out / "grpo.json", {"mode": args.mode, "curve": res.curve, "log": res.log,
                                   "train_wall_time_s": res.wall_time_s, "denoiser_evals": res.counter.denoiser,
                                   "critic_evals": res.counter.critic, "env_steps": res.env_steps,
                                   "scorer_env_steps": getattr(critic, "env_steps", 0)})
    for r in res.curve:
        print(f"  update {r['update']:4d}: success {r['success_rate']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
    print(f"{out}: fine-tuned policy in {out / 'policy'}, curve in {out / 'grpo.json'}")
    return 0


def _experiments(args) -> int:
    cfg = _load_cfg(args)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    from simdiff.pipelines.critic import STAGES, check_out, run_experiments

    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"--stages: expected names from {','.join(STAGES)}, received {','.join(bad)}")
    if args.threads < 1:
        raise ValueError(f"--threads: expected >= 1, received {args.threads}")
    out = Path(args.out)
    if not args.overwrite:
        check_out(out, False)  # refuse a foreign folder before anything runs; an earlier critic run resumes
    if not Path(args.policy).exists():
        raise FileNotFoundError(f"--policy {args.policy}: no such directory")
    import torch

    torch.set_num_threads(args.threads)
    m = run_experiments(args.policy, cfg, out, stages=stages, overwrite=args.overwrite,
                        command=["simdiff", *sys.argv[1:]], workers=args.workers, device=args.device)
    print(f"{out}: report.md, metrics.json ({', '.join(m.get('files', []))})")
    return 0
