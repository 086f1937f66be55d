"""Decentralized vs monolithic at matched training compute: ``report.md`` + ``metrics.json``.

Lattice runs: each routing mode of the mixture and the monolithic baseline generate ``n`` lattices from the
same seed; each ensemble is scored against held-out reference lattices by the SKILD physics validation
(:func:`simdiff.pipelines.skild.validate.compare`: energy, |m|, Binder U4, G(r), G4c(l), S(k) and its slope;
summed normalised error, lower is better). Diagnostics: the cluster occupancy of every ensemble (its lattices
assigned to the partition's clusters) against the reference's, and the router's accuracy on noised reference
lattices per noise level.

Policy runs: each routing mode and the monolith are rolled out on every evaluation level with the batched
runner (success rate with Wilson 95% intervals, same episode seeds for all).

Training compute (FLOPs of forward + backward per step, times steps; wall time) comes from ``ddm.json``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from simdiff.pipelines.ddm.trainer import MONOLITHIC, PARTITION_DIR, SUMMARY_JSON, load_run_config

SCALARS = (("energy", "energy/site"), ("abs_m", "\\|m\\|"), ("binder", "Binder U4"),
           ("structure_factor_slope", "S(k) slope"))


def _f(v: Any, nd: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return f"{v:.{nd}g}" if isinstance(v, float) else str(v)


def _training(run_dir: Path) -> dict:
    from simdiff.utils.io import read_json

    path = run_dir / SUMMARY_JSON
    return read_json(path) if path.exists() else {}


# ---------------------------------------------------------------------------------------------- lattices
def occupancy(spins: np.ndarray, run_dir: Path) -> list[float]:
    """Fraction of lattices ``(N, L, L)`` in each cluster of the run's partition (nearest center)."""
    from simdiff.pipelines.ddm.lattice import features
    from simdiff.pipelines.ddm.partition import assign, load_partition

    cfg = load_run_config(run_dir)
    part = load_partition(run_dir / PARTITION_DIR)
    feats, _ = features(cfg, spins)
    return (np.bincount(assign(part, feats), minlength=part.num_clusters) / spins.shape[0]).tolist()


def _entry(spins: np.ndarray, samples: np.ndarray, ref: np.ndarray, temperature: float, run_dir: Path,
           info: dict) -> dict:
    from simdiff.pipelines.skild.validate import compare

    rep = compare(samples[:, 0], ref, temperature)
    obs = rep["observables"]
    return {"summed_normalized_error": rep["summed_normalized_error"], "n_pass": rep["n_pass"],
            "n_checks": rep["n_checks"], "all_pass": rep["all_pass"], "failed": rep["failed"],
            "non_binary_fraction": rep["non_binary_fraction"],
            "scalars": {k: {f: obs[k][f] for f in ("value", "stderr", "reference", "reference_stderr", "z", "pass")}
                        for k, _ in SCALARS if k in obs},   # tiny lattices have no S(k)-slope fit
            "profiles": {k: {f: obs[k][f] for f in ("value", "reference", "pass") if f in obs[k]}
                         for k in ("two_point", "four_point_connected", "structure_factor") if k in obs},
            "occupancy": occupancy(spins, run_dir), "wall_s": info["wall_s"],
            "sampler_steps": info.get("sampler_steps"), "expert_evals_per_step": info.get("expert_evals_per_step"),
            "routing_stats": info.get("routing_stats")}


def router_eval(run_dir: Path, reference: np.ndarray, seed: int = 0) -> dict:
    """Router accuracy on noised reference lattices labelled by the partition's nearest center."""
    import torch

    from simdiff.pipelines.ddm.lattice import features, router_noise_fn
    from simdiff.pipelines.ddm.partition import assign, load_partition
    from simdiff.pipelines.ddm.router import router_accuracy
    from simdiff.pipelines.ddm.trainer import load_router
    from simdiff.utils.io import read_json

    cfg = load_run_config(run_dir)
    part = load_partition(run_dir / PARTITION_DIR)
    feats, _ = features(cfg, reference)
    labels = torch.as_tensor(assign(part, feats))
    shared = read_json(run_dir / "shared.json")
    x0 = torch.as_tensor(reference.astype(np.float32))[:, None]
    gen = torch.Generator().manual_seed(int(seed) + 17)
    res = router_accuracy(load_router(run_dir), router_noise_fn(cfg, shared["spectrum"]), x0, labels, gen)
    res["chance_majority"] = float(np.bincount(labels.numpy(), minlength=part.num_clusters).max() / len(labels))
    return res


def compare_lattices(run_dir: str | os.PathLike, reference: np.ndarray, out_dir: str | os.PathLike,
                     routings: tuple[str, ...] = ("full", "top1", "top2"), n: int = 1000, seed: int = 0,
                     steps: int | None = -1, batch_size: int | None = None, monolithic: bool = True,
                     reference_path: str | None = None, device: str | None = None) -> dict:
    """Generate with every routing mode (and the monolith), score each against ``reference (M, L, L)``."""
    from simdiff.pipelines.ddm.sampling import sample_run
    from simdiff.pipelines.skild.core import to_spins
    from simdiff.utils.io import write_json

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = load_run_config(run_dir)
    ref = to_spins(np.asarray(reference))
    L = cfg.skild.data.L
    if ref.ndim != 3 or ref.shape[1:] != (L, L) or ref.shape[0] < 4:
        raise ValueError(f"reference: expected at least 4 lattices (M, {L}, {L}), received {tuple(ref.shape)}")
    T = cfg.skild.data.temperature
    t_start = time.perf_counter()
    training = _training(run_dir)
    metrics: dict[str, Any] = {
        "run": str(run_dir), "domain": "ising", "reference": reference_path, "n_reference": int(ref.shape[0]),
        "n": n, "seed": seed, "L": L, "temperature": T, "num_experts": cfg.num_experts,
        "partition": training.get("partition"), "training_compute": training.get("compute"),
        "training_run": training.get("run"),
        "training_members": {k: {f: v.get(f) for f in ("status", "steps", "samples", "shard_size",
                                                         "flops_per_step", "train_flops", "wall_time_s",
                                                         "final_loss")}
                             for k, v in training.get("members", {}).items()},
        "reference_occupancy": occupancy(ref, run_dir), "generation": {}}
    samples: dict[str, np.ndarray] = {}
    runs = [("ddm", r) for r in routings] + ([(MONOLITHIC, "full")] if monolithic else [])
    for model, routing in runs:
        key = f"ddm_{routing}" if model == "ddm" else MONOLITHIC
        arrays, info = sample_run(run_dir, routing, n, seed, model=model, steps=steps, batch_size=batch_size,
                                  device=device)
        metrics["generation"][key] = _entry(arrays["spins"], arrays["samples"], ref, T, run_dir, info)
        samples[key] = arrays["spins"][:8]
    metrics["router"] = router_eval(run_dir, ref, seed)
    metrics["wall_s"] = time.perf_counter() - t_start
    metrics["verdict"] = _verdict(metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    write_report(metrics, out_dir, samples)
    return metrics


def _verdict(m: dict) -> dict:
    gen = m["generation"]
    out: dict[str, Any] = {"best": min(gen, key=lambda k: gen[k]["summed_normalized_error"]) if gen else None}
    if MONOLITHIC in gen:
        mono = gen[MONOLITHIC]["summed_normalized_error"]
        for k, e in gen.items():
            if k != MONOLITHIC:
                out[f"{k}_beats_monolithic"] = e["summed_normalized_error"] < mono
    return out


# ----------------------------------------------------------------------------------------------- policies
def compare_policies(run_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     routings: tuple[str, ...] = ("full", "top1", "top2"), episodes: int | None = None,
                     seed: int | None = None, levels: tuple[int, ...] | None = None, monolithic: bool = True,
                     batch_size: int | None = None) -> dict:
    """Roll out every routing mode (and the monolith) on every level; success per level."""
    from simdiff.pipelines.ddm.mixture import MixturePolicy
    from simdiff.pipelines.ddm.sampling import load_mixture
    from simdiff.pipelines.ddm.trainer import load_member
    from simdiff.pipelines.evaluate import evaluate
    from simdiff.utils.io import read_json, write_json

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = load_run_config(run_dir)
    ev = cfg.policy.eval
    episodes = episodes or ev.episodes
    seed = ev.seed if seed is None else seed
    levels = tuple(levels) if levels is not None else tuple(ev.levels)
    shared = read_json(run_dir / "shared.json")
    env_id = ev.env or shared.get("env_id")
    if not env_id:
        raise ValueError("policy.eval.env: the demos record no env id; set policy.eval.env in the config")
    training = _training(run_dir)
    metrics: dict[str, Any] = {"run": str(run_dir), "domain": "policy", "env_id": env_id, "episodes": episodes,
                               "seed": seed, "levels": list(levels), "num_experts": cfg.num_experts,
                               "partition": training.get("partition"),
                               "training_compute": training.get("compute"), "training_run": training.get("run"),
                               "evaluation": {}}
    t_start = time.perf_counter()
    experts, router = load_mixture(run_dir)
    policies: list[tuple[str, Any]] = [(f"ddm_{r}", MixturePolicy(experts, router, r)) for r in routings]
    if monolithic:
        policies.append((MONOLITHIC, load_member(run_dir, MONOLITHIC)))
    for key, pol in policies:
        per_level = {}
        for lv in levels:
            res = evaluate(pol, env_id, lv, episodes, seed, batch_size=batch_size or ev.batch_size,
                           env_kwargs=shared.get("env_kwargs") or None, show_progress=False)
            per_level[f"level_{lv}"] = {k: res[k] for k in ("success_rate", "ci95", "successes", "episodes",
                                                          "mean_return", "mean_length", "wall_time_s")}
        entry: dict[str, Any] = {"levels": per_level,
                                 "mean_success": float(np.mean([v["success_rate"] for v in per_level.values()]))}
        if hasattr(pol, "stats"):
            entry["routing_stats"] = pol.stats.summary()
        metrics["evaluation"][key] = entry
    metrics["wall_s"] = time.perf_counter() - t_start
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    write_report(metrics, out_dir)
    return metrics


# ------------------------------------------------------------------------------------------------- report
def _compute_table(m: dict) -> list[str]:
    c = m.get("training_compute") or {}
    lines = ["## Training compute", ""]
    if not c:
        return lines + ["(no ddm.json: training summary missing)", ""]
    gf = 1e9
    run = m.get("training_run") or {}
    where = f"{run.get('device', 'cpu')}, {run.get('workers', '?')} jobs at once"
    lines += [f"| | steps | FLOPs (G) | wall (s; {where}) |", "|---|---|---|---|",
              f"| experts (sum) | {_f(c.get('experts_steps'))} | {_f((c.get('experts_flops') or 0) / gf)} | "
              f"{_f(c.get('experts_wall_s'))} |",
              f"| router | - | {_f((c.get('router_flops') or 0) / gf)} | {_f(c.get('router_wall_s'))} |",
              f"| monolithic | {_f(c.get('monolithic_steps'))} | {_f((c.get('monolithic_flops') or 0) / gf)} | "
              f"{_f(c.get('monolithic_wall_s'))} |", ""]
    if c.get("router_share_flops") is not None:
        lines.append(f"Router share of decentralized training compute: {100 * c['router_share_flops']:.2f}% of "
                     f"FLOPs, {100 * (c.get('router_share_wall') or 0):.1f}% of wall time.")
    if c.get("experts_over_monolithic_flops") is not None:
        lines.append(f"Experts / monolithic FLOPs: {c['experts_over_monolithic_flops']:.3f}.")
    members = m.get("training_members") or {}
    if members:
        lines += ["", "| member | status | steps | shard size | final loss | wall (s) |", "|---|---|---|---|---|---|"]
        for k in sorted(members):
            v = members[k]
            lines.append(f"| {k} | {v.get('status')} | {_f(v.get('steps'))} | {_f(v.get('shard_size'))} | "
                         f"{_f(v.get('final_loss'))} | {_f(v.get('wall_time_s'))} |")
    return lines + [""]


def _lattice_sections(m: dict) -> list[str]:
    gen = m["generation"]
    sizes = (m.get("partition") or {}).get("sizes")
    lines = ["## Generation vs reference (physics validation)", "",
             f"{m['n']} generated lattices per ensemble (seed {m['seed']}) against {m['n_reference']} reference "
             f"lattices, L = {m['L']}, T = {m['temperature']:.6g}. Summed normalised error: lower is better.", "",
             "| ensemble | summed norm. error | checks passed | expert evals / step | sampling wall (s) | "
             "cluster occupancy |", "|---|---|---|---|---|---|"]
    ref_occ = ", ".join(f"{x:.2f}" for x in m["reference_occupancy"])
    for k, e in gen.items():
        occ = ", ".join(f"{x:.2f}" for x in e["occupancy"])
        lines.append(f"| {k} | {e['summed_normalized_error']:.4f} | {e['n_pass']}/{e['n_checks']} | "
                     f"{_f(e.get('expert_evals_per_step'), 3)} | {_f(e['wall_s'], 3)} | {occ} |")
    lines += ["", f"Reference cluster occupancy: {ref_occ}" + (f" (training cluster sizes {sizes})" if sizes else ""),
              "", "| observable | reference | " + " | ".join(gen) + " |", "|" + "---|" * (2 + len(gen))]
    any_e = next(iter(gen.values()), None)
    for name, label in SCALARS:
        if any_e is None or name not in any_e["scalars"]:
            continue
        r = any_e["scalars"][name]
        cells = [f"{_f(e['scalars'][name]['value'])} (z {_f(e['scalars'][name]['z'], 2)})" for e in gen.values()]
        lines.append(f"| {label} | {_f(r['reference'])} ± {_f(r['reference_stderr'], 2)} | " + " | ".join(cells) + " |")
    r = m.get("router")
    if r:
        lines += ["", "## Router on noised reference lattices", "",
                  f"Top-1 accuracy {r['accuracy']:.3f} (majority-class rate {r['chance_majority']:.3f}), "
                  f"cross-entropy {r['cross_entropy']:.3f}.", "", "| t | accuracy | cross-entropy |", "|---|---|---|"]
        for b in r["per_time"]:
            lines.append(f"| {b['t_lo']:.1f}-{b['t_hi']:.1f} | {_f(b['accuracy'], 3)} | {_f(b['cross_entropy'], 3)} |")
    v = m.get("verdict") or {}
    if v:
        lines += ["", "## Verdict", "", f"Best ensemble: **{v.get('best')}**."]
        lines += [f"- {k}: {'yes' if ok else 'no'}" for k, ok in v.items() if k != "best"]
    return lines


def _policy_sections(m: dict) -> list[str]:
    ev = m["evaluation"]
    levels = m["levels"]
    lines = ["## On-policy success per level", "",
             f"{m['episodes']} episodes per level on {m['env_id']}, seeds {m['seed']}..{m['seed'] + m['episodes'] - 1} "
             "(the same for every policy). Success rate [Wilson 95%].", "",
             "| policy | " + " | ".join(f"level {lv}" for lv in levels) + " | mean | expert evals / step |",
             "|" + "---|" * (len(levels) + 3)]
    for k, e in ev.items():
        cells = [f"{e['levels'][f'level_{lv}']['success_rate']:.2f} [{e['levels'][f'level_{lv}']['ci95'][0]:.2f}, "
                 f"{e['levels'][f'level_{lv}']['ci95'][1]:.2f}]" for lv in levels]
        evals = (e.get("routing_stats") or {}).get("expert_evals_per_row", 1.0)
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {e['mean_success']:.3f} | {_f(evals, 3)} |")
    return lines


def write_report(metrics: dict, out_dir: str | os.PathLike, samples: dict[str, np.ndarray] | None = None) -> Path:
    """``report.md`` (and ``samples.png`` for lattices) in ``out_dir``."""
    from simdiff.utils.io import atomic_write_text

    out_dir = Path(out_dir)
    part = metrics.get("partition") or {}
    lines = [f"# Decentralized diffusion: {metrics['num_experts']} experts vs monolithic", "",
             f"Run: `{metrics['run']}`. Partition: {part.get('method')} (seed {part.get('seed')}), cluster sizes "
             f"{part.get('sizes')}, features {part.get('feature_names')}.", ""]
    lines += _compute_table(metrics)
    lines += _lattice_sections(metrics) if metrics["domain"] == "ising" else _policy_sections(metrics)
    if samples:
        _plot_samples(samples, out_dir / "samples.png")
        lines += ["", "![samples](samples.png)"]
    lines += ["", f"Comparison wall time: {metrics['wall_s']:.1f} s (CPU shared with other jobs: timings are "
              "contended)."]
    return atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")


def _plot_samples(samples: dict[str, np.ndarray], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simdiff.utils.io import atomic_write_bytes

    rows, cols = len(samples), max(len(v) for v in samples.values())
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.3 * rows), squeeze=False, dpi=100)
    for i, (name, arr) in enumerate(samples.items()):
        for j in range(cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(arr):
                ax.imshow(arr[j], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        axes[i][0].set_title(name, fontsize=7, loc="left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["compare_lattices", "compare_policies", "router_eval", "occupancy", "write_report"]
