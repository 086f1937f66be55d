"""Tables, ``metrics.json`` and ``report.md`` of the shift commands.

Every command writes into its ``--out`` directory: ``metrics.json`` (all numbers; the plots and the report
are made from it alone), ``report.md`` (the command, the tables, the plots) and PNG plots. Files are written
atomically; the directory is checked for earlier results before anything runs (see :func:`prepare_out`).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simdiff.utils.io import atomic_write_text, read_json, write_json

OUTPUTS = ("metrics.json", "report.md")


# -- output directory ----------------------------------------------------------------------------------------------
def prepare_out(out: str | Path, overwrite: bool) -> Path:
    """Check ``out`` can receive results: refuse a non-empty directory unless ``overwrite`` (then remove the
    earlier results' files).

    Only call after every argument is validated, so a refused command writes nothing.
    """
    check_out(out, overwrite)
    out = Path(out)
    if (out / "metrics.json").is_file():
        # check_out passed, so --overwrite was given: remove the files the earlier run listed as its own
        # (stale plots of another parameter would otherwise linger); nothing else in the folder is touched.
        try:
            old = read_json(out / "metrics.json").get("files", [])
        except (ValueError, AttributeError):
            old = []
        for name in [*OUTPUTS, *old]:
            p = out / Path(str(name)).name
            if p.is_file():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_out(out: str | Path, overwrite: bool) -> None:
    """The checks of :func:`prepare_out` without touching anything (for validation before running).

    ``--overwrite`` replaces earlier shift results only: a non-empty folder without ``metrics.json`` is never
    emptied."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"--out {out} is not empty; pass --overwrite to replace its contents or choose "
                                  "a new directory")
        if not (out / "metrics.json").is_file():
            raise FileExistsError(f"--out {out} is not empty and holds no earlier shift results (metrics.json); "
                                  "refusing to replace it even with --overwrite; choose a new directory")


def write_metrics(out: Path, metrics: Mapping[str, Any]) -> Path:
    return write_json(out / "metrics.json", metrics)


def load_metrics(out: str | Path) -> dict:
    return read_json(Path(out) / "metrics.json")


# -- formatting ------------------------------------------------------------------------------------------------------
def fmt_success(c: Mapping[str, Any]) -> str:
    lo, hi = c["ci95"]
    return f"{100 * c['success']:5.1f} [{100 * lo:4.1f},{100 * hi:5.1f}]"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header), "-" * len(fmt(header))] + [fmt(r) for r in rows])


def _tag_label(tag: str) -> str:
    return {"shift": "SHIFT", "outside": "SHIFT (beyond)"}.get(tag, tag.replace("level_", "L"))


def sweep_table(m: Mapping[str, Any], markdown: bool = False) -> str:
    """Success % [95% Wilson CI] per value (rows) and policy (columns), with the value's level or SHIFT."""
    names = list(m["policies"])
    header = [m["param"], "range"] + [f"{n} success % [95% CI]" for n in names]
    rows = []
    for i, (v, tag) in enumerate(zip(m["values"], m["tags"])):
        rows.append([f"{v:g}", _tag_label(tag)] + [fmt_success(m["policies"][n]["points"][i]) for n in names])
    return text_table(header, rows, markdown)


def sweep_detail_table(m: Mapping[str, Any], markdown: bool = False) -> str:
    """Mean return and mean episode length per value and policy."""
    names = list(m["policies"])
    header = [m["param"]] + [f"{n} {k}" for n in names for k in ("return", "length")]
    rows = []
    for i, v in enumerate(m["values"]):
        row = [f"{v:g}"]
        for n in names:
            p = m["policies"][n]["points"][i]
            row += [f"{p['return_mean']:.2f}", f"{p['length_mean']:.1f}"]
        rows.append(row)
    return text_table(header, rows, markdown)


def grid_tables(m: Mapping[str, Any], markdown: bool = False) -> str:
    """One success-% table per policy: rows = values of the first parameter, columns = the second."""
    a, b = m["params"]
    out = []
    for name, pol in m["policies"].items():
        header = [f"{a} \\ {b}"] + [f"{v:g}" + ("*" if _shift(m, b, j) else "") for j, v in enumerate(m["values"][b])]
        rows = []
        for i, va in enumerate(m["values"][a]):
            rows.append([f"{va:g}" + ("*" if _shift(m, a, i) else "")]
                        + [f"{100 * s:.0f}" for s in pol["success"][i]])
        title = f"{name}: success % ({pol['episodes']} episodes per cell; * = shift value)"
        out.append((f"**{title}**\n\n" if markdown else f"{title}\n") + text_table(header, rows, markdown))
    return "\n\n".join(out)


def _shift(m: Mapping[str, Any], param: str, i: int) -> bool:
    return not str(m["tags"][param][i]).startswith("level_")


def covariate_table(m: Mapping[str, Any], markdown: bool = False) -> str:
    header = ["policy", "round", "success %", "train states", "visited", "kNN ratio med [p90]", "MMD^2",
              "p-value", "gap t=10", "gap final"]
    rows = []
    for name, p in m["policies"].items():
        ce = p.get("compounding") or {}
        mean = ce.get("mean") or []
        g10 = f"{mean[min(10, len(mean) - 1)]:.3f}" if mean else "-"
        gfin = f"{mean[-1]:.3f}" if mean else "-"
        rows.append([name, "-" if p.get("round") is None else str(p["round"]), f"{100 * p['success']:.1f}",
                     str(p["train_states"]), str(p["visited_states"]),
                     f"{p['knn']['ratio_median']:.2f} [{p['knn']['ratio_p90']:.2f}]", f"{p['mmd']['mmd2']:.4f}",
                     _fmt_p(p["mmd"]["p_value"]), g10, gfin])
    return text_table(header, rows, markdown)


def _fmt_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


# -- report.md --------------------------------------------------------------------------------------------------------
def command_line(argv: Sequence[str] | None) -> str:
    return "simdiff " + " ".join(shlex.quote(a) for a in argv) if argv else "(called from Python)"


def write_report(out: Path, title: str, intro: Sequence[str], sections: Sequence[tuple[str, str]],
                 plots: Sequence[str], command: Sequence[str] | None) -> Path:
    """``report.md``: title, the command, intro lines, ``(heading, markdown body)`` sections, embedded plots."""
    lines = [f"# {title}", "", "```", command_line(command), "```", ""]
    lines += [*intro, ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", body, ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return atomic_write_text(out / "report.md", "\n".join(lines))


def finite(x: float) -> float | None:
    """JSON has no NaN: store None instead."""
    return None if x is None or not math.isfinite(float(x)) else float(x)
