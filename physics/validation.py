"""Compare a spin ensemble (e.g. generated lattices) with a ground-truth ensemble on every observable.

For each observable (and each point of G(r), S(k), G4c(l)): both values with standard errors, the difference,
the combined error sqrt(se^2 + se_ref^2), the z-score, and pass iff |diff| <= max(n_sigma * combined,
rel_tol * |reference|) (defaults 3 and 2 %). Everything is returned as plain dicts ready for JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from physics.observables import as_lattices, as_spins, summary

SCALAR_OBSERVABLES = ("energy", "abs_m", "m2", "binder", "specific_heat", "susceptibility",
                      "structure_factor_slope")
PROFILE_OBSERVABLES = ("two_point", "structure_factor", "four_point_connected")


def non_binary_fraction(x: np.ndarray, atol: float = 1e-3) -> float:
    """Fraction of entries farther than ``atol`` from +-1 (0 for genuine spins)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(np.abs(np.abs(x) - 1.0) > atol)) if x.size else 0.0


def compare_values(value, stderr, reference, reference_stderr, n_sigma: float = 3.0,
                   rel_tol: float = 0.02) -> dict:
    """One comparison (scalars or equal-length arrays) -> dict of plain floats / lists."""
    v, e = np.asarray(value, dtype=np.float64), np.asarray(stderr, dtype=np.float64)
    r, re = np.asarray(reference, dtype=np.float64), np.asarray(reference_stderr, dtype=np.float64)
    diff = v - r
    combined = np.sqrt(np.nan_to_num(e) ** 2 + np.nan_to_num(re) ** 2)
    tol = np.maximum(n_sigma * combined, rel_tol * np.abs(r))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(combined > 0, diff / np.where(combined > 0, combined, 1.0),
                     np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    ok = np.abs(diff) <= tol

    def plain(a):
        a = np.asarray(a)
        return a.item() if a.ndim == 0 else a.tolist()

    return {"value": plain(v), "stderr": plain(e), "reference": plain(r), "reference_stderr": plain(re),
            "diff": plain(diff), "combined_stderr": plain(combined), "z": plain(z), "tolerance": plain(tol),
            "pass": plain(ok), "all_pass": bool(np.all(ok))}


def compare_ensembles(candidate: np.ndarray, reference: np.ndarray, temperature: float | None = None,
                      ls: Sequence[int] | None = None, k_range: tuple[float, float] | None = None,
                      n_blocks: int | None = None, n_sigma: float = 3.0, rel_tol: float = 0.02,
                      observables: Sequence[str] | None = None) -> dict:
    """Compare ``candidate`` with ``reference`` on every observable.

    candidate: (N, L, L) or (N, 1, L, L), spins or a real field (sign-discretized here; the fraction of
    non-binary entries is reported). reference: (M, L, L) ground-truth spins of the same L. temperature enables
    specific heat and susceptibility. observables: subset of SCALAR_OBSERVABLES + PROFILE_OBSERVABLES to keep
    (default all). Returns {"L", "n_candidate", "n_reference", "non_binary_fraction", "observables": {name:
    comparison}, "all_pass"}.
    """
    raw = as_lattices(candidate, "candidate")
    ref = as_spins(as_lattices(reference, "reference"))
    if raw.shape[1] != ref.shape[1]:
        raise ValueError(f"candidate: expected lattices of the reference size L = {ref.shape[1]}, "
                         f"received L = {raw.shape[1]}")
    known = SCALAR_OBSERVABLES + PROFILE_OBSERVABLES
    wanted = known if observables is None else tuple(observables)
    unknown = [o for o in wanted if o not in known]
    if unknown:
        raise ValueError(f"observables: expected names from {', '.join(known)}, received {unknown}")
    cand = summary(as_spins(raw), temperature, n_blocks, ls, k_range)
    truth = summary(ref, temperature, n_blocks, ls, k_range)
    results: dict[str, dict] = {}
    for name in wanted:
        if name not in cand or name not in truth:
            continue  # e.g. specific heat without a temperature
        c, t = cand[name], truth[name]
        entry = compare_values(c["value"], c["stderr"], t["value"], t["stderr"], n_sigma, rel_tol)
        for x_name in ("r", "k", "l"):
            if x_name in t:
                entry = {x_name: t[x_name], **entry}
        results[name] = entry
    return {
        "L": int(ref.shape[1]),
        "n_candidate": int(raw.shape[0]),
        "n_reference": int(ref.shape[0]),
        "non_binary_fraction": non_binary_fraction(raw),
        "criterion": f"|diff| <= max({n_sigma:g} combined stderr, {rel_tol:.0%} of |reference|)",
        "observables": results,
        "all_pass": all(r["all_pass"] for r in results.values()),
    }


def _fmt(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.5g}"


def to_markdown(report: dict) -> str:
    """A markdown table of a :func:`compare_ensembles` report, one row per scalar and per profile point."""
    lines = ["| observable | value | ± | reference | ± | z | pass |", "|---|---|---|---|---|---|---|"]
    for name, r in report["observables"].items():
        x_name = next((x for x in ("r", "k", "l") if x in r), None)
        if x_name is None:
            rows = [(name, r["value"], r["stderr"], r["reference"], r["reference_stderr"], r["z"], r["pass"])]
        else:
            rows = [(f"{name}({x_name}={x:.3g})", *vals) for x, *vals in
                    zip(r[x_name], r["value"], r["stderr"], r["reference"], r["reference_stderr"], r["z"],
                        r["pass"])]
        for label, v, e, rv, re, z, ok in rows:
            lines.append(f"| {label} | {_fmt(v)} | {_fmt(e)} | {_fmt(rv)} | {_fmt(re)} | {_fmt(z)} | "
                         f"{'yes' if ok else 'NO'} |")
    lines.append(f"\nall pass: {'yes' if report['all_pass'] else 'NO'} ({report['criterion']})")
    return "\n".join(lines)
