"""The SKILD validation report: ``report.md``, plots, and the summary table printed to stdout."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from simdiff.utils.io import atomic_write_bytes, atomic_write_text

SCALAR_ROWS = (("energy", "energy/site"), ("abs_m", "|m|"), ("binder", "Binder U4"),
               ("structure_factor_slope", "S(k) slope"))
PROFILE_ROWS = (("two_point", "G(r)", "r"), ("four_point_connected", "G4c(l)", "l"),
                ("structure_factor", "S(k)", "k"))
NAMES = {"skild": "SKILD", "white_noise": "white-noise DDPM", "nearest": "nearest-neighbour",
         "sdedit_white_noise": "SDEdit (white-noise DDPM)"}


def ensembles(metrics: dict) -> list[tuple[str, dict]]:
    """``[(label, entry)]`` for every compared ensemble, generation first."""
    out = [(f"generation: {NAMES.get(k, k)}", e) for k, e in metrics["generation"].items()]
    for key, block in metrics["superres"].items():
        for k, e in block.items():
            if isinstance(e, dict) and "observables" in e:
                out.append((f"SR {key} (R={block['R']}): {NAMES.get(k, k)}", e))
    return out


def _f(v: float, nd: int = 4) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return str(v)
    return f"{v:.{nd}g}"


def summary_table(metrics: dict) -> str:
    lines = ["| ensemble | n | checks passed | all pass | summed norm. error | non-binary | SR start n0 / t0 | "
             "downsample(SR) vs input | sites = truth |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, e in ensembles(metrics):
        start = e.get("n0", e.get("t0", ""))
        cons = e.get("consistency", {})
        cons_s = ", ".join(f"{k} {v:.3f}" for k, v in cons.items())
        agree = e.get("site_agreement_with_truth")
        lines.append(f"| {label} | {e['n_candidate']} | {e['n_pass']}/{e['n_checks']} | "
                     f"{'yes' if e['all_pass'] else 'NO'} | {e['summed_normalized_error']:.4f} | "
                     f"{e['non_binary_fraction']:.3g} | {start} | {cons_s} | "
                     f"{'' if agree is None else f'{agree:.3f}'} |")
    return "\n".join(lines)


def scalar_table(metrics: dict) -> str:
    ens = ensembles(metrics)
    ref = metrics["reference_observables"]
    head = "| observable | reference | " + " | ".join(lbl for lbl, _ in ens) + " |"
    lines = [head, "|" + "---|" * (2 + len(ens))]
    for name, label in SCALAR_ROWS:
        r = ref.get(name)
        cells = [f"{_f(r['value'])} ± {_f(r['stderr'], 2)}" if r else "-"]
        for _, e in ens:
            o = e["observables"].get(name)
            if o is None:
                cells.append("-")
                continue
            mark = "" if o["pass"] else " **FAIL**"
            cells.append(f"{_f(o['value'])} ± {_f(o['stderr'], 2)} (z={o['z']:.2f}){mark}")
        if any(c != "-" for c in cells[1:]):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, label, _ in PROFILE_ROWS:
        cells = ["-"]
        for _, e in ens:
            o = e["observables"][name]
            n_ok = sum(bool(p) for p in o["pass"])
            zmax = max(abs(z) for z in o["z"]) if o["z"] else 0.0
            cells.append(f"{n_ok}/{len(o['pass'])} pass, max abs z {zmax:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _detail_table(e: dict) -> str:
    from physics.validation import to_markdown

    return to_markdown(e)


# ----------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------

def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _profile_plot(metrics: dict, name: str, title: str, xlabel: str, path: Path, loglog: bool,
                  skip_zero: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ens = ensembles(metrics)
    groups = [("generation", [x for x in ens if x[0].startswith("generation")])] if metrics["generation"] else []
    groups += [(f"super-resolution {k}", [x for x in ens if x[0].startswith(f"SR {k} ")]) for k in metrics["superres"]]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.6), dpi=110, squeeze=False)
    for ax, (gtitle, items) in zip(axes[0], groups):
        first = True
        for label, e in items:
            o = e["observables"][name]
            x = np.asarray(o.get("r", o.get("k", o.get("l"))), dtype=float)
            keep = x > 0 if skip_zero else np.ones_like(x, dtype=bool)
            if first:
                ax.errorbar(x[keep], np.asarray(o["reference"])[keep], yerr=np.asarray(o["reference_stderr"])[keep],
                            color="k", lw=2, label="reference (Wolff)")
                first = False
            y = np.asarray(o["value"])[keep]
            ax.errorbar(x[keep], np.abs(y) if loglog else y, yerr=np.asarray(o["stderr"])[keep], marker="o",
                        ms=3, lw=1, label=label.split(": ", 1)[-1])
        if loglog:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(gtitle, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(title)
    _save(fig, path)


def _sample_grid(samples: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(k, v) for k, v in samples.items() if len(v)]
    ncol = min(6, min(len(v) for _, v in rows))
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.3 * ncol + 1.6, 1.3 * len(rows)), dpi=100, squeeze=False)
    for i, (name, arr) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i][j]
            ax.imshow(np.asarray(arr[j], dtype=float), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    _save(fig, path)


# ----------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------

def write_report(metrics: dict, samples: dict, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    _profile_plot(metrics, "two_point", "G(r)", "r", out_dir / "two_point.png", loglog=True, skip_zero=True)
    _profile_plot(metrics, "four_point_connected", "G4c(l)", "l", out_dir / "four_point.png", loglog=False)
    _profile_plot(metrics, "structure_factor", "S(k)", "|k|", out_dir / "structure_factor.png", loglog=True)
    _sample_grid(samples, out_dir / "samples.png")

    train = metrics.get("train") or {}
    lines = [
        f"# SKILD validation: L = {metrics['L']}, T = {metrics['temperature']}",
        "",
        f"- model: `{metrics['model']}`" + (f" (trained {train.get('steps')} steps in "
                                            f"{train.get('wall_time_s', 0) / 60:.1f} min)" if train else ""),
        f"- training command: `{' '.join(metrics['command'])}`" if metrics.get("command") else "- training command: -",
        f"- white-noise baseline: `{metrics['baseline']}`" if metrics.get("baseline") else "- white-noise baseline: none",
        f"- reference: `{metrics['reference']}` ({metrics['n_reference']} lattices; generation is compared with "
        "all of them, super-resolution inputs come from the second half and outputs are compared with the first)",
        f"- noise spectrum S0(k) = C (k^2 + k0^2)^-alpha: C = {metrics['spectrum']['C']:.4g}, "
        f"alpha = {metrics['spectrum']['alpha']:.4f}, k0^2 = {metrics['spectrum']['k0sq']:.4f}",
        f"- sampler steps for a full generation: {metrics['sampler_steps']}; low-resolution inputs: "
        f"{' and '.join(metrics['downsample'])} block coarse-graining; super-resolution conditioning: "
        f"{metrics.get('superres_conditioning', 'start')}, start SNR threshold tau = "
        f"{metrics.get('superres_tau', '-')}; seed {metrics['seed']}; validation wall time "
        f"{metrics['wall_s'] / 60:.1f} min",
        "- pass criterion per check: |diff| <= max(3 combined stderr, 2% of |reference|); checks: energy, |m|, "
        "U4, S(k) slope, G(r) for r = 1..L/2, G4c(l), S(k) per shell",
        "",
        "## Summary",
        "",
        summary_table(metrics),
        "",
        "## Observables",
        "",
        scalar_table(metrics),
        "",
        "![G(r)](two_point.png)",
        "![G4c(l)](four_point.png)",
        "![S(k)](structure_factor.png)",
        "![samples](samples.png)",
        "",
        "## Every check",
        "",
    ]
    for label, e in ensembles(metrics):
        lines += [f"### {label}", "", _detail_table(e), ""]
    path = atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    print(summary_table(metrics))
    print()
    print(scalar_table(metrics))
    print(f"\nreport: {path}")
    return path


__all__ = ["write_report", "summary_table", "scalar_table", "ensembles"]
