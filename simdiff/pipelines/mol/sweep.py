"""``simdiff mol sweep``: the empirical side of MOL's bound.

Two families of points, each a full MOL run in ``DIR/points/<name>/`` (resumable like any run):

* **paired demos**: success of the labeled-only and the distilled generalist against N paired demos per
  domain (``sweep.paired_demos``), ``sweep.seeds`` replicates each (demos, conditions and weights all change
  with the replicate seed; evaluation seeds stay fixed, so methods are compared on the same episodes);
* **specialist size**: success of the distilled generalist (and the specialists) against the specialists'
  size at fixed generalist size and fixed N (``sweep.size_sweep_demos``).

Points with identical configs are run once. Points are independent jobs on the executor (each runs its own
stages sequentially inside); a failed point is retried, then reported in the table, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simdiff.pipelines.mol.config import MolConfig, with_overrides
from simdiff.pipelines.mol.report import TRAINED_LEVELS, pooled
from simdiff.utils.io import atomic_write_text, read_json, write_json

DEMO_METHODS = ("specialists", "generalist_labeled_only", "generalist_distilled")
SIZE_METHODS = ("specialists", "generalist_distilled")


@dataclass(frozen=True)
class SweepPoint:
    name: str
    family: str  # "demos" or "size"
    x: Any  # N or the specialist size name
    seed: int
    cfg: MolConfig


def sweep_points(cfg: MolConfig) -> list[SweepPoint]:
    """All points of the sweep (deduplicated by config fingerprint: a shared point keeps its first name)."""
    sw = cfg.sweep
    points: list[SweepPoint] = []
    for n in sw.paired_demos:
        for s in sw.seeds:
            pc = with_overrides(cfg, seed=s, name=f"{cfg.name}-N{n}-s{s}", demos={"per_domain": n},
                                evaluation={"methods": list(DEMO_METHODS)})
            points.append(SweepPoint(f"demos_N{n}_seed{s}", "demos", n, s, pc))
    for size in sw.specialist_sizes:
        for s in sw.seeds:
            pc = with_overrides(cfg, seed=s, name=f"{cfg.name}-{size}-s{s}",
                                demos={"per_domain": sw.size_sweep_demos}, specialist={"size": size},
                                evaluation={"methods": list(SIZE_METHODS)})
            points.append(SweepPoint(f"size_{size}_seed{s}", "size", size, s, pc))
    return points


def point_dirs(points: Sequence[SweepPoint]) -> dict[str, str]:
    """Point name -> directory name. A point reuses an earlier point's run when their configs are the same
    up to the evaluated methods and the earlier one evaluates a superset (e.g. the size sweep's point at the
    default specialist size is a paired-demos point)."""
    seen: list[tuple[str, set, str]] = []  # (key, methods, dir)
    out = {}
    for p in points:
        key = with_overrides(p.cfg, name="", evaluation={"methods": list(DEMO_METHODS)}).fingerprint()
        mine = set(p.cfg.evaluation.methods)
        out[p.name] = next((d for k, ms, d in seen if k == key and mine <= ms), p.name)
        if out[p.name] == p.name:
            seen.append((key, mine, p.name))
    return out


def run_point_job(config: dict, out: str) -> dict:
    """One sweep point, as an executor job (``fn(**job)``): a full MOL run, inner stages sequential."""
    from simdiff.config import load_config
    from simdiff.pipelines.mol.stages import run_pipeline

    return run_pipeline(load_config(MolConfig, config), out, quiet=True)


def run_sweep(cfg: MolConfig, out: str | Path, log=print) -> dict:
    """Run (or resume) every point, then aggregate into ``sweep.json``, plots and ``report.md``."""
    from simdiff.config import to_dict
    from simdiff.pipelines.mol.adapters import run_jobs

    out = Path(out)
    points = sweep_points(cfg)
    dirs = point_dirs(points)
    unique = {dirs[p.name]: p for p in points if dirs[p.name] == p.name}
    ex = cfg.executor
    # Inner runs never spawn their own pools: the points are the parallel unit.
    jobs = []
    for name, p in unique.items():
        inner = with_overrides(p.cfg, executor={"backend": "sequential", "workers": 1})
        jobs.append({"config": to_dict(inner), "out": str(out / "points" / name)})
    log(f"sweep: {len(points)} points ({len(jobs)} distinct runs) on {ex.backend} x{ex.workers}")
    results = run_jobs(run_point_job, jobs, ex, names=list(unique))
    failures = {r.name: r.error for r in results if not r.ok}
    summary = aggregate(points, dirs, out, failures)
    write_json(out / "sweep.json", summary)
    plots = plot_sweep(summary, out / "plots")
    atomic_write_text(out / "report.md", render_sweep_report(cfg, summary, [str(p.relative_to(out)) for p in plots]))
    return summary


def _avg(metrics: Mapping, method: str, key: str) -> float | None:
    cells = metrics["methods"].get(method)
    if not cells:
        return None
    if key == "avg":
        if not all(lv in cells for lv in TRAINED_LEVELS):
            return None
        return pooled([cells[lv] for lv in TRAINED_LEVELS])["success"]
    return cells[key]["success"] if key in cells else None


def aggregate(points: Sequence[SweepPoint], dirs: Mapping[str, str], out: Path,
              failures: Mapping[str, str] | None = None) -> dict:
    """Per family, x and method: mean and std over replicates of the level-0..3 average (and of shift)."""
    failures = dict(failures or {})
    table: dict[str, dict] = {"demos": {}, "size": {}}
    for p in points:
        mpath = out / "points" / dirs[p.name] / "metrics.json"
        methods = DEMO_METHODS if p.family == "demos" else SIZE_METHODS
        row = table[p.family].setdefault(str(p.x), {m: {"avg": [], "shift": []} for m in methods})
        row.setdefault("_seeds", [])
        if not mpath.is_file():
            row.setdefault("_missing", []).append(p.seed)
            failures.setdefault(dirs[p.name], "no metrics.json")
            continue
        metrics = read_json(mpath)
        row["_seeds"].append(p.seed)
        for m in methods:
            for key in ("avg", "shift"):
                v = _avg(metrics, m, key)
                if v is not None:
                    row[m][key].append(v)
    for fam in table.values():
        for row in fam.values():
            for m, d in row.items():
                if m.startswith("_"):
                    continue
                for key in ("avg", "shift"):
                    vals = d[key]
                    d[f"{key}_mean"] = sum(vals) / len(vals) if vals else None
                    d[f"{key}_std"] = _std(vals) if vals else None
    return {"table": table, "failures": failures}


def _std(vals: Sequence[float]) -> float:
    if len(vals) < 2:
        return 0.0
    mu = sum(vals) / len(vals)
    return math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1))


def _fmt(d: Mapping, key: str) -> str:
    mu, sd = d.get(f"{key}_mean"), d.get(f"{key}_std")
    if mu is None:
        return "-"
    return f"{100 * mu:.1f} ± {100 * sd:.1f} (n={len(d[key])})"


def sweep_table(summary: Mapping, family: str, markdown: bool = True) -> str:
    rows = summary["table"].get(family, {})
    if not rows:
        return ""
    methods = [m for m in next(iter(rows.values())) if not m.startswith("_")]
    xname = "paired demos per domain" if family == "demos" else "specialist size"
    head = [xname] + [f"{m} avg 0-3" for m in methods] + [f"{m} shift" for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + [":-:"] * (len(head) - 1)) + "|"]
    for x, row in rows.items():
        cells = [x] + [_fmt(row[m], "avg") for m in methods] + [_fmt(row[m], "shift") for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(summary: Mapping, plot_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    for family, xlabel in (("demos", "paired demos per domain (N)"), ("size", "specialist size")):
        rows = summary["table"].get(family, {})
        if not rows:
            continue
        xs = list(rows)
        methods = [m for m in rows[xs[0]] if not m.startswith("_")]
        fig, ax = plt.subplots(figsize=(5, 3.4))
        pos = [float(x) for x in xs] if family == "demos" else list(range(len(xs)))
        for m in methods:
            mu = np.array([np.nan if rows[x][m]["avg_mean"] is None else rows[x][m]["avg_mean"] for x in xs])
            sd = np.array([0.0 if rows[x][m]["avg_std"] is None else rows[x][m]["avg_std"] for x in xs])
            ax.errorbar(pos, mu, yerr=sd, marker="o", capsize=3, label=m.replace("_", " "))
        if family == "demos":
            ax.set_xscale("log")
            ax.set_xticks(pos, xs)
        else:
            ax.set_xticks(pos, xs)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("success, avg levels 0-3 (mean ± sd)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        plot_dir.mkdir(parents=True, exist_ok=True)
        p = plot_dir / f"sweep_{family}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(p)
    return paths


def render_sweep_report(cfg: MolConfig, summary: Mapping, plots: Sequence[str]) -> str:
    sw = cfg.sweep
    lines = [f"# MOL sweep: {cfg.name}", "",
             f"World `{cfg.env.id}`, domains {list(cfg.env.domains)}; replicate seeds {list(sw.seeds)}; "
             f"{cfg.evaluation.episodes} held-out episodes per level and method. Cells: success in %, mean ± "
             "sd over replicates of the average over levels 0-3 (and of the shift range).", ""]
    if cfg.note:
        lines += [f"> {cfg.note}", ""]
    lines += ["## Success vs. paired demos per domain", "",
              f"Generalist size `{cfg.generalist.size}`, specialist size `{cfg.specialist.size}`.", "",
              sweep_table(summary, "demos"), ""]
    lines += ["## Success vs. specialist size", "",
              f"Generalist size `{cfg.generalist.size}`, N = {sw.size_sweep_demos} paired demos per domain.", "",
              sweep_table(summary, "size"), ""]
    if summary.get("failures"):
        lines += ["## Failed points", ""] + [f"- {k}: {v}" for k, v in summary["failures"].items()] + [""]
    lines += [f"![{Path(p).stem}]({p})\n" for p in plots]
    return "\n".join(lines)


def render_sweep_table(summary: Mapping) -> str:
    """Both sweep tables (markdown), for the terminal."""
    parts = []
    for family, title in (("demos", "success vs. paired demos per domain"), ("size", "success vs. specialist size")):
        t = sweep_table(summary, family)
        if t:
            parts += [title, t, ""]
    if summary.get("failures"):
        parts.append("failed points: " + ", ".join(summary["failures"]))
    return "\n".join(parts)
