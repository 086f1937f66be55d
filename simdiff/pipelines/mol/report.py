"""metrics.json, the comparison table, plots and report.md of a MOL run.

``metrics.json`` is exactly ``{"methods": {METHOD: {"level_0": {"success": p, "ci95": [lo, hi], "episodes": n},
..., "shift": {...}}}}``; everything else a report needs (averages, each specialist on shift, data sizes,
timings) goes to ``details.json`` so the metrics file stays one fixed, checkable shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from simdiff.utils.io import atomic_write_text, read_json, write_json

METHOD_LABELS = {
    "specialists": "specialists (own domain)",
    "generalist_labeled_only": "generalist, labeled only",
    "generalist_distilled": "generalist, distilled (MOL)",
    "expert": "scripted expert (ceiling)",
}
TRAINED_LEVELS = ("level_0", "level_1", "level_2", "level_3")


# -- statistics ----------------------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for the default z)."""
    if n <= 0:
        raise ValueError(f"wilson_interval: expected n > 0 episodes, received {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: expected 0 <= successes <= n={n}, received {successes}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def cell(successes: int, episodes: int) -> dict:
    """One metrics.json entry."""
    lo, hi = wilson_interval(successes, episodes)
    return {"success": successes / episodes, "ci95": [lo, hi], "episodes": int(episodes)}


def pooled(cells: Sequence[Mapping]) -> dict:
    """Pool several cells (e.g. levels 0..3) into one: success over all their episodes, Wilson interval."""
    if not cells:
        raise ValueError("pooled: expected at least one cell, received none")
    return cell(*pooled_counts(cells))


def pooled_counts(cells: Sequence[Mapping]) -> tuple[int, int]:
    """(successes, episodes) over several cells: integers, so targets can be checked exactly."""
    n = sum(int(c["episodes"]) for c in cells)
    k = sum(round(float(c["success"]) * int(c["episodes"])) for c in cells)
    return k, n


# -- metrics.json --------------------------------------------------------------------------------------------
def validate_metrics(metrics: Any, where: str = "metrics.json") -> None:
    """Raise ValueError if ``metrics`` is not exactly the documented shape."""
    if not isinstance(metrics, dict) or set(metrics) != {"methods"}:
        keys = sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__
        raise ValueError(f"{where}: expected exactly one top-level key 'methods', received {keys}")
    methods = metrics["methods"]
    if not isinstance(methods, dict) or not methods:
        raise ValueError(f"{where}: expected 'methods' to map method names to levels, received {methods!r}")
    for m, levels in methods.items():
        if not isinstance(levels, dict) or not levels:
            raise ValueError(f"{where}: methods.{m}: expected a mapping of levels, received {levels!r}")
        for lv, c in levels.items():
            if lv != "shift" and not (lv.startswith("level_") and lv[6:].isdigit()):
                raise ValueError(f"{where}: methods.{m}: expected level keys 'level_K' or 'shift', received {lv!r}")
            at = f"{where}: methods.{m}.{lv}"
            if not isinstance(c, dict) or set(c) != {"success", "ci95", "episodes"}:
                got = sorted(c) if isinstance(c, dict) else c
                raise ValueError(f"{at}: expected keys success, ci95, episodes; received {got}")
            p, ci, n = c["success"], c["ci95"], c["episodes"]
            if not isinstance(n, int) or n <= 0:
                raise ValueError(f"{at}.episodes: expected a positive int, received {n!r}")
            if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{at}.success: expected a number in [0, 1], received {p!r}")
            if (not isinstance(ci, list) or len(ci) != 2
                    or not all(isinstance(x, (int, float)) for x in ci)
                    or not 0.0 <= ci[0] <= p + 1e-9 <= ci[1] + 2e-9 <= 1.0 + 3e-9):
                raise ValueError(f"{at}.ci95: expected [lo, hi] with 0 <= lo <= success <= hi <= 1, received {ci!r}")


def write_metrics(path: str | Path, methods: Mapping[str, Mapping[str, Mapping]]) -> dict:
    metrics = {"methods": {m: {lv: dict(c) for lv, c in levels.items()} for m, levels in methods.items()}}
    validate_metrics(metrics, str(path))
    write_json(path, metrics)
    return metrics


def load_metrics(path: str | Path) -> dict:
    metrics = read_json(path)
    validate_metrics(metrics, str(path))
    return metrics


# -- tables --------------------------------------------------------------------------------------------------
def _level_order(levels: set[str]) -> list[str]:
    trained = sorted((lv for lv in levels if lv != "shift"), key=lambda s: int(s[6:]))
    return trained + (["shift"] if "shift" in levels else [])


def summary_rows(metrics: Mapping) -> tuple[list[str], list[dict]]:
    """Columns (levels + 'avg 0-3' where all four trained levels exist) and one row per method."""
    methods = metrics["methods"]
    levels = _level_order({lv for m in methods.values() for lv in m})
    rows = []
    for name, cells in methods.items():
        row = {"method": name, "cells": {lv: cells.get(lv) for lv in levels}}
        trained = [cells[lv] for lv in TRAINED_LEVELS if lv in cells]
        if len(trained) == len(TRAINED_LEVELS):
            row["cells"]["avg 0-3"] = pooled(trained)
        rows.append(row)
    cols = levels + (["avg 0-3"] if any("avg 0-3" in r["cells"] for r in rows) else [])
    return cols, rows


def _fmt_cell(c: Mapping | None, pct: bool = True) -> str:
    if c is None:
        return "-"
    p, (lo, hi) = c["success"], c["ci95"]
    if pct:
        return f"{100 * p:5.1f} [{100 * lo:4.1f},{100 * hi:5.1f}]"
    return f"{p:.2f} [{lo:.2f}, {hi:.2f}]"


def format_table(metrics: Mapping, markdown: bool = False) -> str:
    """The comparison table: success in % with the 95% Wilson interval per method and level."""
    cols, rows = summary_rows(metrics)
    header = ["method"] + cols
    body = [[METHOD_LABELS.get(r["method"], r["method"])] + [_fmt_cell(r["cells"].get(c)) for c in cols]
            for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":-:"] * len(cols)) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.center(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    sep = "-" * len(fmt(header))
    return "\n".join([fmt(header), sep] + [fmt(b) for b in body])


def headline(metrics: Mapping) -> list[str]:
    """The two numbers the MOL claim is about, stated plainly (averages over levels 0..3)."""
    methods = metrics["methods"]
    need = ("generalist_distilled", "generalist_labeled_only", "specialists")
    if not all(m in methods and all(lv in methods[m] for lv in TRAINED_LEVELS) for m in need):
        return []
    # Exact rationals from the episode counts: a gap of exactly 10 points must not read as 9.999... in floats.
    avg = {m: Fraction(*pooled_counts([methods[m][lv] for lv in TRAINED_LEVELS])) for m in need}
    gap = 100 * (avg["generalist_distilled"] - avg["generalist_labeled_only"])
    ratio = avg["generalist_distilled"] / avg["specialists"] if avg["specialists"] > 0 else None
    lines = [
        f"distilled - labeled-only, average over levels 0-3: {float(gap):+.1f} points "
        f"(target >= +10: {'met' if gap >= 10 else 'not met'})",
        "distilled / specialists, average over levels 0-3: "
        + (f"{100 * float(ratio):.0f}% (target >= 90%: {'met' if ratio >= Fraction(9, 10) else 'not met'})"
           if ratio is not None else "n/a (the specialists never succeed)"),
    ]
    if "shift" in methods.get("generalist_distilled", {}) and "shift" in methods.get("generalist_labeled_only", {}):
        s = {m: methods[m]["shift"]["success"] for m in ("generalist_distilled", "generalist_labeled_only")}
        lines.append(f"on shift: distilled {100 * s['generalist_distilled']:.1f}% vs. labeled-only "
                     f"{100 * s['generalist_labeled_only']:.1f}%")
    return lines


# -- plots ---------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_success_by_level(metrics: Mapping, path: str | Path, title: str = "") -> Path:
    """Grouped bars: success per level (incl. shift) per method, with 95% interval error bars."""
    import numpy as np

    plt = _pyplot()
    methods = metrics["methods"]
    levels = _level_order({lv for m in methods.values() for lv in m})
    x = np.arange(len(levels))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(levels), 3.6))
    for i, (name, cells) in enumerate(methods.items()):
        p = np.array([cells[lv]["success"] if lv in cells else np.nan for lv in levels])
        lo = np.array([cells[lv]["ci95"][0] if lv in cells else np.nan for lv in levels])
        hi = np.array([cells[lv]["ci95"][1] if lv in cells else np.nan for lv in levels])
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, p, width, label=METHOD_LABELS.get(name, name),
               yerr=np.clip(np.stack([p - lo, hi - p]), 0.0, None), capsize=2)  # rounding can give -1e-16
    if "shift" in levels:
        ax.axvspan(len(levels) - 1.5, len(levels) - 0.5, color="0.9", zorder=-1)
    ax.set_xticks(x, [lv.replace("level_", "level ") for lv in levels])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(title or "success per level")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- report.md -----------------------------------------------------------------------------------------------
def render_report(metrics: Mapping, details: Mapping, plots: Sequence[str] = ()) -> str:
    d = details
    lines = [f"# MOL run: {d.get('name', '')}", ""]
    if d.get("note"):
        lines += [f"> {d['note']}", ""]
    ev = d.get("evaluation", {})
    lines += [
        f"World `{d.get('env_id', '?')}`; domains (one specialist each): levels {d.get('domains', [])}. "
        f"Evaluation: {ev.get('episodes', '?')} held-out seeds per level and method "
        f"(seeds {ev.get('seed_range', '?')}), success with 95% Wilson intervals, in %.",
        "",
    ]
    if ev.get("episodes") is not None and ev["episodes"] < 100:
        lines += [f"**Fewer than 100 episodes per cell ({ev['episodes']}): a quick run; intervals are wide.**", ""]
    lines += ["## Success per level", "", format_table(metrics, markdown=True), ""]
    shift_note = d.get("shift_specialist_note")
    if shift_note:
        lines += [f"Specialists on `shift`: {shift_note}", ""]
    hl = headline(metrics)
    if hl:
        lines += ["## The MOL claim, measured", ""] + [f"- {h}" for h in hl] + [""]
    per_spec = d.get("specialists_on_shift")
    if per_spec:
        lines += ["## Each specialist on the shift range", "", "| specialist | shift |", "|---|:-:|"]
        lines += [f"| {k} | {_fmt_cell(v)} |" for k, v in per_spec.items()] + [""]
    data = d.get("data")
    if data:
        lines += ["## Data", "", "Paired steps are expert (observation, action) pairs; unlabeled conditions are "
                  "observation windows without an expert action (all rounds); pseudo-labels are those labeled by "
                  "the domain's specialist after the success filter.", "",
                  "| | paired demos | paired steps | unlabeled conditions | pseudo-labels kept |",
                  "|---|:-:|:-:|:-:|:-:|"]
        for dom, row in data.items():
            lines.append(f"| {dom} | {row.get('paired_episodes', '-')} | {row.get('paired_windows', '-')} | "
                         f"{row.get('conditions', '-')} | {row.get('pseudo_kept', '-')} |")
        lines.append("")
    timings = d.get("timings")
    if timings:
        lines += ["## Stage timings", "",
                  "Wall seconds depend on what else shares the cores; CPU seconds (this process and its pool "
                  "workers) do not.", "", "| stage | wall s | CPU s |", "|---|--:|--:|"]
        for k, v in timings.items():
            cpu = v.get("cpu_seconds")
            lines.append(f"| {k} | {v['seconds']:.1f} | {'-' if cpu is None else f'{cpu:.1f}'} |")
        tot = sum(v["seconds"] for v in timings.values())
        cpu_tot = sum(v.get("cpu_seconds") or 0.0 for v in timings.values())
        lines += [f"| total | {tot:.1f} | {cpu_tot:.1f} |", ""]
    for p in plots:
        lines += [f"![{Path(p).stem}]({p})", ""]
    cfgs = d.get("policies")
    if cfgs:
        lines += ["## Policies", ""] + [f"- {k}: {v}" for k, v in cfgs.items()] + [""]
    return "\n".join(lines)


def write_report(run_dir: str | Path, metrics: Mapping, details: Mapping) -> Path:
    run_dir = Path(run_dir)
    plots = []
    try:
        p = plot_success_by_level(metrics, run_dir / "plots" / "success_by_level.png",
                                  title=f"{details.get('env_id', '')}: success per level")
        plots.append(str(p.relative_to(run_dir)))
    except ImportError:  # matplotlib is a core dependency, but a report without plots beats no report
        pass
    write_json(run_dir / "details.json", details)
    return atomic_write_text(run_dir / "report.md", render_report(metrics, details, plots))
