"""DRM reward-critic experiments: preferences -> critic -> critic-guided sampling and GRPO -> report.

Stages (each writes into the run directory and is skipped when its output is already there, so an
interrupted run resumes with ``simdiff critic experiments ... --out SAME_DIR``)::

    prefs.npz / prefs.json       automatic preference data (policies.critic.preferences)
    critic_train/                critic training run (train.loss); critic_train/critic = the critic checkpoint
    critic_finetune/             with a ``finetune`` section: a second phase from that critic (default: soft
                                 targets); critic_finetune/critic is then the critic every later stage uses
    accuracy.json                held-out pairwise accuracy per diffusion step t
    accuracy_kinds.json          the same split by pair kind (two base samples / base vs perturbed / two perturbed)
    sampling.json                per level: base, base (stochastic sampler), terminal best-of-k,
                                 terminal best-of-k' at matched compute, step-wise best-of-k
    grpo.json                    step-wise GRPO vs terminal GRPO: success against policy-update steps
    metrics.json, report.md      everything above in one place; plots *.png

Every success rate comes from the batched evaluation runner (:func:`simdiff.pipelines.evaluate.evaluate`),
on the same episode seeds for every method (common random numbers), with Wilson 95% intervals.
Wall times are measured on whatever machine runs the experiment (shared CPUs make them noisy).
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from simdiff.utils.io import atomic_write_bytes, atomic_write_text, read_json, write_json

STAGES = ("prefs", "train", "sampling", "grpo")
OUTPUTS = ("prefs.npz", "prefs.json", "critic_train", "critic_finetune", "accuracy.json", "accuracy_kinds.json",
           "sampling.json", "grpo.json", "metrics.json", "report.md", "accuracy_vs_t.png", "sampling.png", "grpo.png", "config.yaml", "run.json")


# -------------------------------------------------------------------------------------------- helpers
def load_policy(path: str | Path):
    from policies.diffusion.policy import DiffusionPolicy

    return DiffusionPolicy.load(path)


def env_of(policy, default: str = "simdiff/Push-v0") -> str:
    return (getattr(policy, "dataset", None) or {}).get("env_id") or default


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` that is not an earlier critic run; ``overwrite`` clears an earlier run."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        ours = (out / "run.json").is_file() and (out / "config.yaml").is_file()
        if not ours:
            raise FileExistsError(f"--out {out} is not empty and holds no earlier critic run; choose a new directory")
        if overwrite:
            import shutil

            for name in OUTPUTS:
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()


def _summary(res: dict) -> dict:
    keep = ("success_rate", "ci95", "successes", "episodes", "mean_return", "mean_length", "wall_time_s")
    return {k: res[k] for k in keep}


# ------------------------------------------------------------------------------------------------ stages
def stage_prefs(policy, cfg, out: Path, show_progress: bool = True, workers: int = 1):
    from policies.critic.adapter import PolicyDenoiser
    from policies.critic.preferences import PreferenceData, collect_preferences

    path = out / "prefs.npz"
    if path.exists():
        return PreferenceData.load(path)
    torch.manual_seed(cfg.prefs.seed)
    data = collect_preferences(PolicyDenoiser(policy), cfg.prefs, show_progress=show_progress, workers=workers)
    data.save(path)
    return data


def _train_phase(policy, cfg, data, run: Path, train_cfg, start=None, show_progress: bool = True,
                 device: str | None = None):
    """One training phase into ``run`` (from ``start``'s weights when given); reused when already complete."""
    from policies.critic.scorer import Critic
    from policies.critic.train import init_from, train_critic

    if (run / "critic" / "meta.json").exists():
        critic = Critic.load(run)
        critic.policy = policy
        return critic
    critic = Critic.from_policy(policy, cfg.model)
    if start is not None:
        init_from(critic, start, "critic_train/critic")
    train_critic(critic, data, train_cfg, cfg.prefs.tie_margin, run, show_progress=show_progress, device=device)
    return critic


def stage_train(policy, cfg, data, out: Path, show_progress: bool = True, device: str | None = None):
    return _train_phase(policy, cfg, data, out / "critic_train", cfg.train, None, show_progress, device)


def stage_finetune(policy, cfg, data, start, out: Path, show_progress: bool = True, device: str | None = None):
    """``cfg.finetune``'s second phase, started from ``start`` (the trained critic)."""
    return _train_phase(policy, cfg, data, out / "critic_finetune", cfg.finetune.resolve(cfg.train), start,
                        show_progress, device)


def stage_accuracy_kinds(critic, data, cfg, out: Path, device: str | None = None) -> list[dict]:
    """Held-out accuracy per pair kind at t = 0 and at the highest step step-wise GRPO branches at."""
    from policies.critic.train import accuracy_by_pair_kind

    path = out / "accuracy_kinds.json"
    if path.exists():
        return read_json(path)
    n = critic.policy.schedule.num_steps
    ts = sorted({0, min(cfg.grpo.stepwise_max_t if cfg.grpo.stepwise_max_t is not None else n // 3, n - 1)})
    rows = accuracy_by_pair_kind(critic, data, cfg.prefs.tie_margin, ts, cfg.train.eval_noise_draws, cfg.train.seed,
                                 device=device)
    write_json(path, rows)
    return rows


def critic_cost(policy, critic) -> float:
    from policies.critic.model import critic_cost_ratio

    return critic_cost_ratio(policy.net, critic.net, policy.horizons[1])


def evaluate_method(policy, critic, method: str, k: int, eta: float, level, cfg, env_id: str,
                    show_progress: bool = False, lookahead: int = 0) -> dict:
    """One (method, level) cell through the batched runner, with its network-evaluation counts.

    ``method``: ``policy`` (the policy's own sampler), ``base`` / ``terminal`` / ``stepwise``
    (:class:`~policies.critic.stepwise.CriticGuidedBatchPolicy`) or ``oracle`` (best-of-k by true simulator
    outcome with ``lookahead`` base-policy chunks; a diagnostic whose counts include the lookahead rollouts).
    """
    from policies.critic.adapter import EvalCounter, PolicyDenoiser
    from policies.critic.outcomes import OracleBatchPolicy
    from policies.critic.stepwise import CriticGuidedBatchPolicy
    from simdiff.pipelines.evaluate import evaluate

    counter = EvalCounter()
    den = PolicyDenoiser(policy, cfg.sampling.inference_steps, counter=counter)
    if critic is not None:
        critic.counter = counter
    ex = cfg.experiment
    if method == "policy":
        # the diffusion policy's own adapter and sampler: the reference every other row is compared to
        spec, steps = policy, policy.inference_steps
    elif method == "oracle":
        spec, steps = OracleBatchPolicy(den, k, eta, lookahead, env_id), den.steps
    else:
        spec, steps = CriticGuidedBatchPolicy(den, critic, method, k, eta), den.steps
    res = evaluate(spec, env_id, level, ex.episodes, ex.seed, batch_size=ex.batch_size, env_kwargs=ex.env_kwargs(),
                   show_progress=show_progress)
    out = _summary(res)
    if method == "policy":
        chunks_est = sum(math.ceil(r["length"] / policy.horizons[2]) for r in res["records"])
        counter.denoiser, counter.chunks = chunks_est * steps, chunks_est
    out.update({"method": method, "k": k, "eta": eta, "level": level, "lookahead": lookahead, **counter.as_dict()})
    return out


def sampling_methods(cfg, cost: float, steps: int) -> list[tuple[str, str, int, float, int]]:
    """(label, method, k, eta, lookahead) rows of the sampling comparison."""
    from policies.critic.stepwise import matched_terminal_k

    s = cfg.sampling
    rows = [("base (policy sampler, DDIM eta=0)", "policy", 1, 0.0, 0),
            (f"base (stochastic DDIM eta={s.eta:g})", "base", 1, s.eta, 0),
            (f"terminal best-of-{s.k}", "terminal", s.k, s.eta, 0)]
    km = matched_terminal_k(steps, s.k, s.eta, cost)
    if km != s.k:
        rows.append((f"terminal best-of-{km} (compute >= step-wise)", "terminal", km, s.eta, 0))
    rows.append((f"step-wise best-of-{s.k}", "stepwise", s.k, s.eta, 0))
    for la in cfg.experiment.oracle_lookahead:
        rows.append((f"oracle best-of-{s.k} (true outcome, lookahead {la}) [diagnostic]", "oracle", s.k, s.eta, la))
    return rows


def stage_sampling(policy, critic, cfg, out: Path, env_id: str, show_progress: bool = True) -> dict:
    path = out / "sampling.json"
    if path.exists():
        return read_json(path)
    cost = critic_cost(policy, critic)
    steps = cfg.sampling.inference_steps or policy.inference_steps
    result: dict[str, Any] = {"critic_cost": cost, "inference_steps": steps, "k": cfg.sampling.k,
                              "eta": cfg.sampling.eta, "levels": {}}
    for level in cfg.experiment.levels:
        cells = []
        for label, method, k, eta, la in sampling_methods(cfg, cost, steps):
            t0 = time.perf_counter()
            cell = evaluate_method(policy, critic, method, k, eta, level, cfg, env_id, lookahead=la)
            cell["label"] = label
            cell["equiv_denoiser_evals_per_chunk"] = cell["denoiser_evals_per_chunk"] + cost * cell["critic_evals_per_chunk"]
            cells.append(cell)
            if show_progress:
                print(f"  level {level} {label}: success {cell['success_rate']:.3f} "
                      f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
        result["levels"][str(level)] = cells
    write_json(path, result)
    return result


def grpo_eval_fn(cfg, env_id: str):
    """``policy -> evaluation`` of a GRPO-tuned policy at ``grpo.level`` with the sampler ``grpo.eval_sampler``
    names: the policy's own (deterministic DDIM) or the stochastic DDIM sampler at ``grpo.eta`` that GRPO trains."""
    from simdiff.pipelines.evaluate import evaluate

    g = cfg.grpo

    def eval_fn(p) -> dict:
        spec = p
        if g.eval_sampler == "trained":
            from policies.critic.adapter import PolicyDenoiser
            from policies.critic.stepwise import CriticGuidedBatchPolicy

            spec = CriticGuidedBatchPolicy(PolicyDenoiser(p, cfg.sampling.inference_steps), None, "base", 1, g.eta)
        return evaluate(spec, env_id, g.level, g.eval_episodes, g.eval_seed, batch_size=cfg.experiment.batch_size,
                        env_kwargs=cfg.experiment.env_kwargs(), show_progress=False)

    return eval_fn


def oracle_scorer(policy, cfg, env_id: str, noise_std: float = 0.0):
    """Step-wise GRPO's true-outcome scorer for ``policy`` under ``cfg`` (its sampler, preference lookahead and
    GRPO seed): :class:`policies.critic.outcomes.OracleStepScores`."""
    from policies.critic.adapter import PolicyDenoiser
    from policies.critic.outcomes import OracleStepScores

    return OracleStepScores(PolicyDenoiser(policy, cfg.sampling.inference_steps), env_id, cfg.prefs.lookahead,
                            cfg.grpo.seed, noise_std)


def stage_grpo(policy, critic, cfg, out: Path, env_id: str, show_progress: bool = True) -> dict:
    from policies.critic.adapter import EvalCounter
    from policies.critic.grpo import RandomScores, run_grpo, updates_to_reach

    path = out / "grpo.json"
    if path.exists():
        return read_json(path)
    g = cfg.grpo
    eval_fn = grpo_eval_fn(cfg, env_id)

    runs = {}
    modes = ["terminal", "stepwise"] + (["stepwise_random"] if g.random_control else []) + (
        ["stepwise_oracle"] if g.oracle_control else [])
    for name in modes:
        def log(rec, name=name):
            if show_progress and rec["update"] % g.eval_every == 0:
                print(f"  grpo {name} update {rec['update']}: loss {rec['loss']:.4f} kl {rec['kl']:.4f} "
                      f"rollout success {rec['rollout_success']:.2f}", file=sys.stderr, flush=True)
        scorer = None
        if name != "terminal":
            critic.counter = EvalCounter()    # this run's evaluations only (not the sampling stage's)
            if name == "stepwise":
                scorer = critic
            elif name == "stepwise_random":
                scorer = RandomScores(critic, g.seed + 7)
            else:
                scorer = oracle_scorer(policy, cfg, env_id)
        res = run_grpo(policy, g, "terminal" if name == "terminal" else "stepwise", env_id=env_id, critic=scorer,
                       eval_fn=eval_fn, inference_steps=cfg.sampling.inference_steps,
                       max_episode_steps=cfg.experiment.max_episode_steps, on_log=log)
        runs[name] = {"curve": res.curve, "log": res.log, "train_wall_time_s": res.wall_time_s,
                      "denoiser_evals": res.counter.denoiser, "critic_evals": res.counter.critic,
                      "env_steps": res.env_steps, "final_kl": res.log[-1]["kl"] if res.log else None,
                      "scorer_env_steps": getattr(scorer, "env_steps", 0)}
    target = runs["terminal"]["curve"][-1]["success_rate"]
    reach = {m: updates_to_reach(r["curve"], target) for m, r in runs.items()}
    total = runs["terminal"]["curve"][-1]["update"]
    result = {"config": _grpo_cfg(cfg), "runs": runs, "target_success": target, "updates_to_target": reach,
              "terminal_updates": total,
              "stepwise_fraction": (reach["stepwise"] / total) if reach["stepwise"] is not None and total else None}
    write_json(path, result)
    return result


def _grpo_cfg(cfg) -> dict:
    from simdiff.config import to_dict

    return to_dict(cfg.grpo)


# ------------------------------------------------------------------------------------------------ driver
def run_experiments(policy_dir: str | Path, cfg, out: str | Path, *, stages: tuple[str, ...] = STAGES,
                    overwrite: bool = False, command: list[str] | None = None, show_progress: bool = True,
                    workers: int = 1, device: str | None = None) -> dict:
    """All stages in order (see the module docstring); returns the metrics written to ``metrics.json``.
    ``workers`` processes collect the preferences; ``device`` trains the critic and measures its held-out
    accuracy (cpu, cuda, cuda:N)."""
    from simdiff.utils.run import record_run

    out = Path(out)
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"stages: expected a subset of {STAGES}, received {bad}")
    policy = load_policy(policy_dir)
    env_id = env_of(policy)
    check_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    record_run(out, cfg, seed=cfg.train.seed, command=command,
               extra={"policy": str(policy_dir), "env_id": env_id, "threads": torch.get_num_threads()})
    t0 = time.perf_counter()
    data = stage_prefs(policy, cfg, out, show_progress, workers)
    needs_critic = any(s in stages for s in ("train", "sampling", "grpo"))
    critic = stage_train(policy, cfg, data, out, show_progress, device) if needs_critic else None
    metrics: dict[str, Any] = {"policy": str(policy_dir), "env_id": env_id, "prefs": data.meta,
                               "base_policy_metrics": getattr(policy, "metrics", {})}
    if critic is not None and cfg.finetune is not None:
        metrics["critic_first_phase"] = dict(critic.metrics)
        critic = stage_finetune(policy, cfg, data, critic, out, show_progress, device)
    if critic is not None:
        metrics["critic"] = {k: v for k, v in critic.metrics.items() if k != "heldout_accuracy"}
        metrics["accuracy"] = critic.metrics.get("heldout_accuracy", [])
        write_json(out / "accuracy.json", metrics["accuracy"])
        metrics["accuracy_by_kind"] = stage_accuracy_kinds(critic, data, cfg, out, device)
        metrics["critic_cost"] = critic_cost(policy, critic)
    if "sampling" in stages:
        metrics["sampling"] = stage_sampling(policy, critic, cfg, out, env_id, show_progress)
    if "grpo" in stages and cfg.experiment.grpo:
        metrics["grpo"] = stage_grpo(policy, critic, cfg, out, env_id, show_progress)
    metrics["wall_time_s_this_call"] = time.perf_counter() - t0
    files = write_plots(out, metrics)
    metrics["files"] = [*files, "report.md", "metrics.json"]
    write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", render_report(metrics, cfg, command))
    return metrics


# ------------------------------------------------------------------------------------------------- plots
def _save_fig(fig, path: Path) -> str:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path.name


def write_plots(out: Path, m: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    if m.get("accuracy"):
        from policies.critic.train import plot_accuracy

        first = (m.get("critic_first_phase") or {}).get("heldout_accuracy")
        curves = {"critic": m["accuracy"]} if not first else {
            f"first phase ({m['critic_first_phase'].get('loss', 'bt')})": first,
            f"fine-tuned ({m['critic'].get('loss', '?')}): the critic used": m["accuracy"]}
        plot_accuracy(curves, out / "accuracy_vs_t.png", "held-out pairwise accuracy")
        files.append("accuracy_vs_t.png")
    if m.get("sampling"):
        levels = list(m["sampling"]["levels"])
        fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 3.4), dpi=110, squeeze=False)
        for ax, lv in zip(axes[0], levels):
            cells = m["sampling"]["levels"][lv]
            ys = [c["success_rate"] for c in cells]
            err = [[c["success_rate"] - c["ci95"][0] for c in cells], [c["ci95"][1] - c["success_rate"] for c in cells]]
            ax.bar(range(len(cells)), ys, yerr=err, capsize=3, color="tab:blue")
            ax.set_xticks(range(len(cells)))
            ax.set_xticklabels([f"{c['method']}\nk={c['k']}" + (f" L={c['lookahead']}" if c["method"] == "oracle" else "")
                                + f"\n{c['equiv_denoiser_evals_per_chunk']:.0f} ev" for c in cells], fontsize=7)
            ax.set_title(f"level {lv}")
            ax.set_ylabel("success rate")
            ax.grid(alpha=0.3, axis="y")
        files.append(_save_fig(fig, out / "sampling.png"))
    if m.get("grpo"):
        fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
        for mode, run in m["grpo"]["runs"].items():
            c = run["curve"]
            xs = [r["update"] for r in c]
            ax.plot(xs, [r["success_rate"] for r in c], marker="o", ms=3, label=f"{_GRPO_LABELS.get(mode, mode)} GRPO",
                    ls={"stepwise_random": ":", "stepwise_oracle": "-."}.get(mode, "-"))
            ax.fill_between(xs, [r["ci95"][0] for r in c], [r["ci95"][1] for r in c], alpha=0.15)
        ax.axhline(m["grpo"]["target_success"], color="gray", ls="--", lw=0.8, label="terminal final")
        ax.set_xlabel("policy-update steps")
        ax.set_ylabel(f"success (level {m['grpo']['config']['level']})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        files.append(_save_fig(fig, out / "grpo.png"))
    return files


# ------------------------------------------------------------------------------------------------ report
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _cell(c: dict) -> str:
    return f"{_pct(c['success_rate'])} [{_pct(c['ci95'][0])}, {_pct(c['ci95'][1])}]"


_LOSS_NAMES = {"bt": "Bradley-Terry", "soft": "soft-target"}


def _phase_text(phase: dict | None, before: str, after: str) -> str:
    """The first training phase in one clause ('' without one): what the fine-tuned critic started from."""
    if not phase:
        return ""
    acc = phase.get("heldout_accuracy") or [{}]
    return (f"{before}{phase.get('steps')} steps, {_LOSS_NAMES.get(phase.get('loss', 'bt'))} loss, held-out accuracy "
            f"{_pct(acc[0].get('accuracy'))}% at t = {acc[0].get('t', 0)}, {phase.get('train_wall_time_s', 0):.0f} s"
            f"{after}")


def render_report(m: dict, cfg, command: list[str] | None) -> str:
    lines = ["# DRM reward critic: step-wise sampling and step-wise GRPO", ""]
    cmd = " ".join(shlex.quote(c) for c in (command or sys.argv))
    lines += [f"Command: `{cmd}`", "", f"Base policy: `{m['policy']}` on `{m['env_id']}`.", ""]
    p = m["prefs"]
    lines += ["## Preference data", "",
              f"Rule: {p['rule']}.", "",
              f"{p['states']} states x {p['candidates_per_state']} candidates (level {p['config']['level']}); "
              f"outcome horizon {p.get('horizon_steps', '?')} steps (the chunk + {p.get('lookahead', 0)} "
              f"base-policy chunks); {p['train_pairs']} training pairs, {p['heldout_pairs']} held-out pairs "
              f"({p['heldout_states']} held-out states), {p['ties_dropped']} tied pairs dropped. "
              f"Candidate success within the horizon: policy samples {_pct(p['candidate_success_rate']['policy'])}%, "
              f"perturbed {_pct(p['candidate_success_rate']['perturbed'])}%. "
              f"Collection took {p['wall_time_s']:.0f} s"
              + (f" on {p['workers']} worker processes." if p.get("workers", 1) > 1 else "."), ""]
    if m.get("accuracy"):
        c = m["critic"]
        lines += ["## Critic", "",
                  f"Denoiser with the last {cfg.model.drop_blocks} residual blocks dropped, "
                  f"{cfg.model.head_convs} conv layer(s) + {cfg.model.pool} pooling + MLP head; "
                  + _phase_text(m.get("critic_first_phase"), "first phase: ", "; then fine-tuned: ")
                  + f"{c.get('steps')} steps on {c.get('train_pairs')} pairs, "
                  f"{_LOSS_NAMES.get(c.get('loss', 'bt'))} loss, "
                  f"timesteps {cfg.train.timesteps}; final loss {c.get('final_loss', float('nan')):.4f}; "
                  f"training {c.get('train_wall_time_s', 0):.0f} s. "
                  f"One critic call costs {m['critic_cost']:.2f} denoiser calls (FLOPs).", "",
                  "| t | alpha_bar | held-out accuracy % [95% CI] |", "|---|---|---|"]
        for r in m["accuracy"]:
            lines.append(f"| {r['t']} | {r['alpha_bar']:.3f} | {_pct(r['accuracy'])} "
                         f"[{_pct(r['ci95'][0])}, {_pct(r['ci95'][1])}] |")
        lines += ["", "![accuracy](accuracy_vs_t.png)", ""]
        kinds = m.get("accuracy_by_kind") or []
        ts = sorted({r["t"] for r in kinds})
        if kinds:
            lines += ["By pair kind (a 'policy' candidate is a base-policy sample, a 'perturbed' one a noise-perturbed "
                      "copy; critic-guided sampling and step-wise GRPO rank policy samples against each other):", "",
                      "| pairs | held-out pairs | " + " | ".join(f"accuracy % at t = {t}" for t in ts) + " |",
                      "|---|---|" + "---|" * len(ts)]
            for name in dict.fromkeys(r["kind"] for r in kinds):
                rows = {r["t"]: r for r in kinds if r["kind"] == name}
                lines.append(f"| {name} | {rows[ts[0]]['pairs']} | " + " | ".join(
                    f"{_pct(rows[t]['accuracy'])} [{_pct(rows[t]['ci95'][0])}, {_pct(rows[t]['ci95'][1])}]"
                    for t in ts) + " |")
            lines.append("")
    if m.get("sampling"):
        s = m["sampling"]
        ex = cfg.experiment
        lines += ["## Critic-guided sampling", "",
                  f"{ex.episodes} episodes per cell (seeds {ex.seed}..{ex.seed + ex.episodes - 1}, the same for "
                  f"every method); {s['inference_steps']} DDIM steps; 'ev/chunk' = denoiser evaluations + "
                  f"{s['critic_cost']:.2f} x critic evaluations per action chunk. Wall times are on a shared "
                  "CPU and are only roughly comparable. Oracle rows pick among the same kind of candidates by "
                  "their TRUE outcome (simulator replay + lookahead chunks of the base policy, counted in their "
                  "denoiser evaluations): they bound what any critic could do with the ranking rule.", ""]
        for lv, cells in s["levels"].items():
            lines += [f"### Level {lv}", "",
                      "| method | success % [95% CI] | mean return | denoiser/chunk | critic/chunk | ev/chunk | wall s |",
                      "|---|---|---|---|---|---|---|"]
            for c in cells:
                lines.append(f"| {c['label']} | {_cell(c)} | {c['mean_return']:.2f} | {c['denoiser_evals_per_chunk']:.1f} "
                             f"| {c['critic_evals_per_chunk']:.1f} | {c['equiv_denoiser_evals_per_chunk']:.1f} "
                             f"| {c['wall_time_s']:.1f} |")
            lines += ["", _sampling_verdict(cells, m.get("accuracy")), ""]
        lines += ["![sampling](sampling.png)", ""]
    if m.get("grpo"):
        g = m["grpo"]
        gc = g["config"]
        lines += ["## Step-wise GRPO vs terminal-reward GRPO", "",
                  f"Level {gc['level']}; {gc['iterations']} rounds of {gc['episodes_per_iter']} on-policy episodes, "
                  f"{gc['updates_per_iter']} policy-update steps each (minibatch {gc['minibatch']} denoising steps), "
                  f"k = {gc['k']}, lr {gc['lr']}, clip {gc['clip_eps']}, KL {gc['kl_coef']}, eta {gc['eta']}, "
                  f"advantages normalised per {gc.get('adv_norm', 'group')}, step-wise critic scores on "
                  + ("the predicted clean chunk x0_hat(x_t')" if gc.get("stepwise_score") == "x0"
                     else "the noisy candidate x_t' at its own step")
                  + (", groups branched by the frozen reference network (ratio against it)"
                     if gc.get("stepwise_sampler") == "reference" else "") + "; "
                  f"evaluated on {gc['eval_episodes']} episodes every {gc['eval_every']} updates ("
                  + ("the trained stochastic DDIM sampler, eta " + str(gc['eta'])
                     if gc.get('eval_sampler') == "trained" else "deterministic DDIM sampler")
                  + " of the fine-tuned policy).", "",
                  "| method | start % | final % [95% CI] | best % | updates to terminal's final | train wall s | "
                  "denoiser evals | critic evals | env steps | KL to reference at the last update |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for mode, r in g["runs"].items():
            c = r["curve"]
            best = max(x["success_rate"] for x in c)
            kl = r.get("final_kl")
            lines.append(f"| {_GRPO_LABELS.get(mode, mode)} | {_pct(c[0]['success_rate'])} | {_cell(c[-1])} | "
                         f"{_pct(best)} | {g['updates_to_target'][mode]} | {r['train_wall_time_s']:.0f} | "
                         f"{r['denoiser_evals']} | {r['critic_evals']} | {r['env_steps']} | "
                         f"{'-' if kl is None else f'{kl:.4f}'} |")
        lines += ["", _grpo_verdict(g), "", "![grpo](grpo.png)", ""]
    return "\n".join(lines) + "\n"


_GRPO_LABELS = {"terminal": "terminal", "stepwise": "step-wise (critic)",
                "stepwise_random": "step-wise, random scores (control)",
                "stepwise_oracle": "step-wise, true outcome of each candidate (oracle diagnostic)"}


def _grpo_verdict(g: dict) -> str:
    frac = g["stepwise_fraction"]
    term = g["runs"]["terminal"]["curve"]
    start, final = term[0]["success_rate"], term[-1]["success_rate"]
    sw = g["runs"]["stepwise"]["curve"]
    text = (f"Terminal GRPO: {_pct(start)}% -> {_pct(final)}% after {g['terminal_updates']} updates; step-wise GRPO: "
            f"{_pct(sw[0]['success_rate'])}% -> {_pct(sw[-1]['success_rate'])}%. ")
    ctrl = g["runs"].get("stepwise_random")
    if ctrl:
        c, kl_c, kl_s = ctrl["curve"], ctrl.get("final_kl"), g["runs"]["stepwise"].get("final_kl")
        text += (f"With random scores in place of the critic's (the control), step-wise GRPO goes "
                 f"{_pct(c[0]['success_rate'])}% -> {_pct(c[-1]['success_rate'])}%")
        if kl_c is not None and kl_s is not None:
            text += f", ending at KL {kl_c:.4f} to the reference against {kl_s:.4f} with the critic"
        text += ". "
    orc = g["runs"].get("stepwise_oracle")
    if orc:
        c = orc["curve"]
        text += (f"Scored by each candidate's TRUE outcome instead (the oracle diagnostic; "
                 f"{orc.get('scorer_env_steps', 0)} simulator steps of replay), step-wise GRPO goes "
                 f"{_pct(c[0]['success_rate'])}% -> {_pct(c[-1]['success_rate'])}% (best "
                 f"{_pct(max(x['success_rate'] for x in c))}%). ")
    if final <= start:
        return text + ("Terminal GRPO did not improve on its starting policy, so 'reaching terminal's final success' "
                       "is trivially true at update 0 and says nothing about speed: the goal (<= half the updates) "
                       "cannot be assessed at these settings.")
    verdict = "met" if frac is not None and frac <= 0.5 else "NOT met"
    return text + (f"Step-wise GRPO first reaches terminal's final success after {g['updates_to_target']['stepwise']} "
                   f"updates (fraction {'n/a' if frac is None else f'{frac:.2f}'}; goal <= 0.5: {verdict}).")


def _sampling_verdict(cells: list[dict], accuracy: list[dict] | None = None) -> str:
    by = {c["method"]: c for c in cells}
    base = by.get("policy")
    sw = by.get("stepwise")
    terms = [c for c in cells if c["method"] == "terminal"]
    if not (base and sw and terms):
        return ""
    gain = sw["success_rate"] - base["success_rate"]
    matched = [c for c in terms if c["equiv_denoiser_evals_per_chunk"] >= sw["equiv_denoiser_evals_per_chunk"] - 1e-9]
    t = max(matched or terms, key=lambda c: c["equiv_denoiser_evals_per_chunk"])
    beat = sw["success_rate"] - t["success_rate"]
    text = (f"Step-wise vs base: {100 * gain:+.1f} points (goal >= +10: {'met' if gain >= 0.10 else 'NOT met'}); "
            f"vs {t['label']} ({t['equiv_denoiser_evals_per_chunk']:.1f} ev/chunk, >= step-wise's "
            f"{sw['equiv_denoiser_evals_per_chunk']:.1f}): {100 * beat:+.1f} points.")
    oracles = [c for c in cells if c["method"] == "oracle"]
    if oracles:
        parts = ", ".join(f"lookahead {c['lookahead']}: {_pct(c['success_rate'])}%" for c in oracles)
        acc = f" The critic ranks held-out pairs correctly {_pct(accuracy[0]['accuracy'])}% of the time at t = 0." \
            if accuracy else ""
        text += (f" Selecting among the same candidates by their TRUE outcome gives {parts}: that is the headroom "
                 f"of the ranking rule, against {_pct(sw['success_rate'])}% with the learned critic.{acc}")
    return text


__all__ = ["run_experiments", "stage_prefs", "stage_train", "stage_finetune", "stage_sampling", "stage_grpo",
           "oracle_scorer", "evaluate_method", "render_report", "write_plots", "STAGES", "load_policy"]
