"""report.md and plots of ``simdiff planner experiments`` (see :mod:`simdiff.pipelines.planner`)."""

from __future__ import annotations

import io
import shlex
from pathlib import Path
from typing import Any

from simdiff.config import dump_yaml
from simdiff.utils.io import atomic_write_bytes, atomic_write_text


def _fmt_flops(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def _rate(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['success_rate']:.2f} [{lo:.2f}, {hi:.2f}]"


# --------------------------------------------------------------------------------------------------- plots
def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    written = []
    if "loops" in results:
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
        for name, m in results["loops"].items():
            S = [r["loops"] for r in m["rows"]]
            a.plot(S, [r["mean_success"] for r in m["rows"]], "o-", label=f"{name} (mean over levels)")
            b.plot(S, [r["val_bits"] for r in m["rows"]], "o-", label=name)
            if name == "looped":
                for lv in m["rows"][0]["levels"]:
                    a.plot(S, [r["levels"][lv]["success_rate"] for r in m["rows"]], ":", lw=0.8,
                           label=f"looped level {lv}")
        for ax, yl in ((a, "success rate"), (b, "held-out NLL bound (bits/token)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("inference loops S")
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
        a.legend(fontsize=6)
        b.legend(fontsize=7)
        _save(fig, out / "loops.png")
        written.append(out / "loops.png")
    if "compute" in results:
        fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
        for name, v in results["compute"]["variants"].items():
            ax.plot([p["train_flops"] for p in v["curve"]], [p["val_bits"] for p in v["curve"]], "o-", ms=3,
                    label=f"{name} ({v['parameters'] / 1e3:.0f}k params)")
        r = results["compute"]["looped_vs_same_params"]
        ax.axhline(r["target_bits"], color="gray", ls="--", lw=0.8)
        if r["reached"]:
            ax.axvline(r["looped_flops_to_reach"], color="gray", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # overlapping minor labels otherwise
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("held-out NLL bound (bits/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        _save(fig, out / "compute.png")
        written.append(out / "compute.png")
    if "frontier" in results:
        pts = results["frontier"]["points"]
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
        loops = sorted({p["loops"] for p in pts})
        for s in loops:
            sel = [p for p in pts if p["loops"] == s]
            a.plot([p["flops_per_plan"] for p in sel], [p["plan_rmse"] for p in sel], "o-", label=f"S={s}")
            b.plot([p["flops_per_plan"] for p in sel], [p["success"]["success_rate"] for p in sel], "o-",
                   label=f"S={s}")
        for ax, key, yl in ((a, "plan_rmse", "held-out plan RMSE"), (b, "success", "success rate")):
            front = sorted((p for p in pts if p[f"pareto_{key}"]), key=lambda p: p["flops_per_plan"])
            ys = [p["plan_rmse"] if key == "plan_rmse" else p["success"]["success_rate"] for p in front]
            ax.step([p["flops_per_plan"] for p in front], ys, "k--", lw=0.8, where="post", label="Pareto front")
            ax.set_xscale("log")
            ax.set_xlabel("FLOPs per plan (steps along each line: " +
                          ",".join(str(k) for k in sorted({p['steps'] for p in pts})) + ")")
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        _save(fig, out / "frontier.png")
        written.append(out / "frontier.png")
    return written


# -------------------------------------------------------------------------------------------------- report
def _setup_section(results: dict, cfg: Any) -> list[str]:
    p = cfg.base.planner
    lines = ["## Setup", "",
             f"- Data: {results['demos']['episodes']} scripted-expert demos ({results['demos']['steps']} steps) "
             f"of `{results['env_id']}` at levels {list(cfg.demos.levels)} "
             f"({cfg.demos.episodes_per_level} per level), {cfg.base.val_fraction:.0%} of the episodes held out "
             "for the NLL.",
             f"- Plans: observation history {p.obs_horizon}, plan horizon {p.plan_horizon} actions, "
             f"{p.action_steps} executed per plan; tokenizer `{p.tokenizer.kind}`.",
             f"- Training: {cfg.base.train.steps} steps, batch {cfg.base.train.batch_size}, lr {cfg.base.train.lr:g}, "
             f"MDLM loss (log-linear schedule, eps={p.eps:g}, 1/t weight, antithetic t).",
             f"- Inference default: {p.sample_steps} denoising steps, order `{p.sample_order}`, "
             f"temperature {p.temperature:g}.",
             f"- On-policy: {cfg.eval.episodes} episodes per level (seeds {cfg.eval.seed}..), batched runner "
             "`simdiff.pipelines.evaluate`; intervals are Wilson 95%.", "",
             "| model | layers (prelude + loop x S + coda) | parameters | FLOPs/forward | training FLOPs | "
             "tokenizer RMSE (val) | held-out bits/token (EMA) | fit time |", "|---|---|---|---|---|---|---|---|"]
    for name, m in results["models"].items():
        tok = m["tokenizer"]
        rec = tok["recon_val"] or tok["recon_train"]
        loops = next(iter(m["flops_per_forward"]))
        lay = m.get("layers", "-")
        bits = ", ".join(f"S={k}: {v:.3f}" for k, v in (m["val_bits_per_token"] or {}).items())
        lines.append(f"| {name} | {lay} | {m['parameters']:,} | {_fmt_flops(m['flops_per_forward'][loops])} (S={loops}) "
                     f"| {_fmt_flops(m['train_flops'])} | {rec['rmse']:.4f} (max {rec['max_abs']:.4f}) | {bits} | "
                     f"{m.get('fit_wall_s', m.get('wall_time_s', 0)):.0f} s |")
    return lines + [""]


def _pooled(levels: dict) -> tuple[int, int]:
    return sum(r["successes"] for r in levels.values()), sum(r["episodes"] for r in levels.values())


def _loops_section(res: dict, cfg: Any) -> list[str]:
    from simdiff.pipelines.evaluate import wilson_interval

    lines = ["## 1. Inference loop count S", "",
             f"Held-out NLL bound on {cfg.frontier_windows} held-out windows (same mask orders for every S); "
             f"success over {cfg.eval.episodes} episodes per level; `all` pools the levels.", ""]
    for name, m in res.items():
        rng = m["train_loops_range"]
        trained = f"S ~ U{{{rng[0]}..{rng[1]}}}" if rng else f"S = {m['train_loops']}"
        levels = list(m["rows"][0]["levels"])
        lines += [f"**{name}** (trained with {trained})", "",
                  "| S | FLOPs/forward | held-out bits/token | " + " | ".join(f"level {lv}" for lv in levels)
                  + " | all |", "|---|---|---|" + "---|" * (len(levels) + 1)]
        for r in m["rows"]:
            cells = " | ".join(_rate(r["levels"][lv]) for lv in levels)
            k, n = _pooled(r["levels"])
            lo, hi = wilson_interval(k, n)
            lines.append(f"| {r['loops']} | {_fmt_flops(r['flops_per_forward'])} | {r['val_bits']:.3f} | {cells} | "
                         f"{k / n:.2f} [{lo:.2f}, {hi:.2f}] |")
        best = min(m["rows"], key=lambda r: r["val_bits"])
        top = max(m["rows"], key=lambda r: _pooled(r["levels"])[0])
        lines += ["", f"- Lowest NLL at S = {best['loops']} ({best['val_bits']:.3f} bits/token); "
                  f"highest pooled success at S = {top['loops']} "
                  f"({_pooled(top['levels'])[0]}/{_pooled(top['levels'])[1]}).", ""]
    return lines + ["![loops](loops.png)", ""]


def _compute_section(res: dict) -> list[str]:
    lines = ["## 2. Matched compute: looped vs. same-parameter vs. same-FLOPs", "",
             "| variant | layers | parameters | FLOPs/forward | training FLOPs | final held-out bits/token "
             "(raw weights) | (EMA) |", "|---|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        la = v["layers"]
        lines.append(f"| {name} | {la['prelude']} + {la['loop']} x {la['loops']} + {la['coda']} | "
                     f"{v['parameters']:,} | {_fmt_flops(v['flops_per_forward'])} | {_fmt_flops(v['train_flops'])} | "
                     f"{v['curve'][-1]['val_bits']:.3f} | {v['final_val_bits_ema']:.3f} |")
    lines.append("")
    for key, label in (("looped_vs_same_params", "same-parameter (k x 1)"),
                       ("looped_vs_same_flops", "same-FLOPs deeper (kS x 1)")):
        r = res[key]
        if r["reached"]:
            lines.append(f"- Looped reaches the {label} model's final NLL ({r['target_bits']:.3f} bits/token, "
                         f"reached by it with {_fmt_flops(r['ref_final_flops'])} FLOPs) after "
                         f"{_fmt_flops(r['looped_flops_to_reach'])} training FLOPs: ratio **{r['ratio']:.2f}x** "
                         "(> 1: looping is more FLOP-efficient; the paper reports up to 3.3x).")
        else:
            lines.append(f"- Looped does **not** reach the {label} model's final NLL ({r['target_bits']:.3f} "
                         f"bits/token) within its run (its final: {r['looped_final_bits']:.3f}).")
    return lines + ["", "![compute](compute.png)", ""]


def _frontier_section(res: dict) -> list[str]:
    lines = ["## 3. Compute-quality frontier: denoising steps x loops", "",
             f"Looped model; plan RMSE over {res['windows']} held-out windows (sampled plan vs. expert plan, "
             f"action units), success at level {res['level']} over {res['episodes']} episodes. FLOPs per plan = "
             "function evaluations actually made (the sampler reuses the network output for rows where nothing "
             "was revealed) x analytic FLOPs per forward. `*` marks the Pareto front.", "",
             "| steps | S | NFE/plan | FLOPs/plan | plan RMSE | first-action RMSE | success |",
             "|---|---|---|---|---|---|---|"]
    for p in sorted(res["points"], key=lambda p: p["flops_per_plan"]):
        star_r = "*" if p["pareto_plan_rmse"] else ""
        star_s = "*" if p["pareto_success"] else ""
        lines.append(f"| {p['steps']} | {p['loops']} | {p['nfe_per_plan']:.1f} | {_fmt_flops(p['flops_per_plan'])} | "
                     f"{p['plan_rmse']:.4f}{star_r} | {p['first_action_rmse']:.4f} | {_rate(p['success'])}{star_s} |")
    return lines + ["", "![frontier](frontier.png)", ""]


def write_report(results: dict[str, Any], cfg: Any, out: Path, command: list[str] | None) -> Path:
    lines = ["# LoopMDM planner experiments", "",
             "Masked discrete diffusion (MDLM absorbing state, SUBS) over tokenized action plans, with a looped "
             "transformer block (prelude / shared block x S / coda).", ""]
    if command:
        lines += ["Command:", "", "```", shlex.join(command), "```", ""]
    lines += _setup_section(results, cfg)
    if "loops" in results:
        lines += _loops_section(results["loops"], cfg)
    if "compute" in results:
        lines += _compute_section(results["compute"])
    if "frontier" in results:
        lines += _frontier_section(results["frontier"])
    lines += [f"Total wall time: {results['wall_time_s'] / 60:.1f} min.", "", "## Resolved config", "", "```yaml",
              dump_yaml(cfg).rstrip(), "```", ""]
    return atomic_write_text(out / "report.md", "\n".join(lines))


__all__ = ["write_plots", "write_report"]
