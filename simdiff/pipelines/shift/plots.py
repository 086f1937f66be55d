"""Plots of the shift commands (matplotlib, Agg backend, PNG files written atomically).

* :func:`plot_sweep`: success (95% band), mean return and episode length against one domain parameter, one
  line per policy; the trained range is shaded, the nominal value dashed, shift values marked.
* :func:`plot_grid`: a success heatmap per policy over two parameters, the trained box outlined.
* :func:`plot_covariate`: normalized k-NN distance and MMD per policy, and the compounding-error curves.

Every function takes plain data (the dicts that go to metrics.json), so a report can be re-plotted from it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simdiff.utils.io import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _shade_trained(ax: Any, trained: Sequence[float] | None, nominal: float | None, level: int | None = None,
                   min_width: float = 0.0) -> None:
    if trained is not None:
        label = "trained range" + (f" (levels 0-{level})" if level else " (level 0)" if level == 0 else "")
        lo, hi = trained
        pad = max(0.0, (min_width - (hi - lo)) / 2)  # a single trained value (e.g. no delay) stays visible
        ax.axvspan(lo - pad, hi + pad, color="tab:green", alpha=0.2, lw=0, label=label, zorder=0)
    if nominal is not None:
        ax.axvline(nominal, color="0.4", ls="--", lw=0.8, label="nominal", zorder=0)


def plot_sweep(sweep: Mapping[str, Any], path: str | Path) -> Path:
    """``sweep`` is the sweep's metrics dict: ``param``, ``values``, ``tags``, ``trained_range``, ``nominal``,
    ``levels_range`` (level 3), ``policies: {name: {"points": [{"success", "ci95", "return_mean",
    "length_mean"}, ...]}}``. The x axis is logarithmic when positive values span more than a factor of 20."""
    plt = _pyplot()
    values = np.asarray(sweep["values"], dtype=float)
    shift = np.array([not str(t).startswith("level_") for t in sweep["tags"]])
    log_x = bool((values > 0).all() and values.max() / values.min() > 20)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    keys = (("success", "success rate (95% CI)"), ("return_mean", "mean return"),
            ("length_mean", "mean episode length (steps)"))
    for ax, (key, label) in zip(axes, keys):
        levels = sweep.get("levels_range")
        if levels is not None and list(levels) != list(sweep.get("trained_range") or []):
            ax.axvspan(levels[0], levels[1], color="0.85", alpha=0.5, lw=0, label="levels 0-3 range", zorder=0)
        span = float(values.max() - values.min()) or 1.0
        _shade_trained(ax, sweep.get("trained_range"), sweep.get("nominal"), sweep.get("trained_level"),
                       min_width=0.0 if log_x else 0.02 * span)
        for name, pol in sweep["policies"].items():
            pts = pol["points"]
            y = np.array([p[key] for p in pts], dtype=float)
            (line,) = ax.plot(values, y, "-", lw=1.4, label=name)
            ax.plot(values[~shift], y[~shift], "o", ms=4, color=line.get_color())
            if shift.any():
                ax.plot(values[shift], y[shift], "X", ms=7, color=line.get_color(), mec="k", mew=0.5)
            if key == "success":
                lo = np.array([p["ci95"][0] for p in pts])
                hi = np.array([p["ci95"][1] for p in pts])
                ax.fill_between(values, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
        if key == "success":
            ax.set_ylim(-0.02, 1.05)
        if shift.any():
            ax.plot([], [], "X", color="0.3", mec="k", mew=0.5, label="shift value (outside every level)")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(f"{sweep['param']}" + (f" [{sweep['unit']}]" if sweep.get("unit") else ""))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    n = sweep.get("episodes")
    fig.suptitle(f"{sweep.get('env', '')}: sweep over {sweep['param']}" + (f" ({n} episodes per point)" if n else ""),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path)


def plot_grid(grid: Mapping[str, Any], path: str | Path) -> Path:
    """One success heatmap per policy; ``grid`` has ``params [A, B]``, ``values {A: [...], B: [...]}``,
    ``trained_range {A: [lo, hi], B: [lo, hi]}``, ``policies: {name: {"success": (len A, len B) nested list}}``."""
    plt = _pyplot()
    a, b = grid["params"]
    va, vb = grid["values"][a], grid["values"][b]
    names = list(grid["policies"])
    fig, axes = plt.subplots(1, len(names), figsize=(2.0 + (1.6 + 0.55 * len(vb)) * len(names), 2.4 + 0.45 * len(va)),
                             squeeze=False, constrained_layout=True)
    im = None
    for ax, name in zip(axes[0], names):
        s = np.asarray(grid["policies"][name]["success"], dtype=float)
        im = ax.imshow(s, origin="lower", cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(s.shape[0]):
            for j in range(s.shape[1]):
                ax.text(j, i, f"{100 * s[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="w" if s[i, j] < 0.6 else "k")
        ax.set_xticks(range(len(vb)), [f"{v:g}" for v in vb], rotation=45, fontsize=7)
        ax.set_yticks(range(len(va)), [f"{v:g}" for v in va], fontsize=7)
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        ax.set_title(name, fontsize=9)
        tr = grid.get("trained_range") or {}
        if a in tr and b in tr:
            ia, ib = _index_span(va, tr[a]), _index_span(vb, tr[b])
            if ia and ib:
                ax.add_patch(plt.Rectangle((ib[0] - 0.5, ia[0] - 0.5), ib[1] - ib[0] + 1, ia[1] - ia[0] + 1,
                                           fill=False, ec="w", lw=1.5, ls="--"))
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label="success rate", shrink=0.9)
    fig.suptitle(f"{grid.get('env', '')}: success over {a} x {b} (dashed: trained range; numbers in %)",
                 fontsize=9)
    return _save(fig, path)


def _index_span(values: Sequence[float], rng: Sequence[float]) -> tuple[int, int] | None:
    inside = [i for i, v in enumerate(values) if rng[0] <= v <= rng[1]]
    return (inside[0], inside[-1]) if inside else None


def plot_covariate(cov: Mapping[str, Any], path: str | Path) -> Path:
    """Bars of the normalized k-NN distance and MMD^2 per policy, and gap-to-expert vs. time step curves."""
    plt = _pyplot()
    names = list(cov["policies"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(names))
    knn = [cov["policies"][n]["knn"]["ratio_median"] for n in names]
    mmd = [cov["policies"][n]["mmd"]["mmd2"] for n in names]
    axes[0].bar(x, knn, color="tab:blue")
    axes[0].axhline(1.0, color="0.4", ls="--", lw=0.8, label="as close as training states are to each other")
    axes[0].set_ylabel("median k-NN distance ratio")
    if max(knn) > 20 * max(min(knn), 1e-3):
        axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[1].bar(x, mmd, color="tab:orange")
    for xi, n in zip(x, names):
        p = cov["policies"][n]["mmd"]["p_value"]
        axes[1].text(xi, mmd[int(xi)], f"p={p:.3f}", ha="center", va="bottom", fontsize=7)
    axes[1].set_ylabel("MMD^2 (RBF, median bandwidth)")
    for ax in axes[:2]:
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    ax = axes[2]
    drawn = False
    for n in names:
        ce = cov["policies"][n].get("compounding")
        if not ce:
            continue
        t, m, s = np.asarray(ce["t"]), np.asarray(ce["mean"]), np.asarray(ce["sem"])
        (line,) = ax.plot(t, m, lw=1.4, label=n)
        ax.fill_between(t, m - 1.96 * s, m + 1.96 * s, color=line.get_color(), alpha=0.18, lw=0)
        drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no learned policy: no gap to the expert", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("time step")
    ax.set_ylabel(f"gap to expert trajectory ({cov.get('gap_units', 'standardized')})")
    if drawn:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(f"{cov.get('env', '')} level {cov.get('level', '')}: visited vs. training states", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
