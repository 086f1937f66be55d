"""Validation of SKILD against Ising ground truth: generation, honest super-resolution, baselines, report.

For every ensemble (generated, super-resolved, baselines) the sign-discretised lattices are compared with
held-out reference lattices on energy per site, |m|, Binder U4, G(r) for r = 1..L/2, G4c(l), S(k) on every
radial shell and its log-slope. Each check gives the value, its standard error, the z-score against the
reference (difference over the combined standard error) and a pass flag: ``|diff| <= max(3 combined stderr,
2% of |reference|)`` (:func:`physics.validation.compare_ensembles`). The fraction of non-binary outputs (sites
farther than 1e-3 from +-1 before discretisation) is reported too.

Super-resolution inputs are made from the second half of the reference set (majority block spins or block
averages) and the outputs are compared with the first half, so the two ensembles are independent. SR
consistency: the outputs downsampled with the same operator, against the inputs.

Summed normalised error (one number per ensemble, lower is better): the sum over the observables energy, |m|,
U4, S(k)-slope of ``|diff| / |ref|``, plus, for each of G(r), G4c(l) and S(k), the mean of ``|diff| / |ref|``
over its points.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from simdiff.pipelines.skild.core import (
    SkildModel,
    coarse_grain,
    generate,
    nearest_upsample,
    sdedit_superres,
    superres,
    to_spins,
)
from simdiff.pipelines.skild.core import superres_tau as core_superres_tau

OBSERVABLES = ("energy", "abs_m", "binder", "two_point", "four_point_connected", "structure_factor",
               "structure_factor_slope")
SCALARS = ("energy", "abs_m", "binder", "structure_factor_slope")
PROFILES = ("two_point", "four_point_connected", "structure_factor")
LABELS = {"energy": "energy per site", "abs_m": "|m|", "binder": "Binder U4", "structure_factor_slope":
          "S(k) log-slope", "two_point": "G(r)", "four_point_connected": "G4c(l)", "structure_factor": "S(k)"}


# ----------------------------------------------------------------------------------------------------------
# comparison
# ----------------------------------------------------------------------------------------------------------

def compare(candidate: np.ndarray, reference: np.ndarray, temperature: float) -> dict:
    """:func:`physics.validation.compare_ensembles` on the SKILD observables, plus the summed normalised error
    and pass counts. ``candidate`` may be a real field (sign-discretised there; non-binary fraction reported)."""
    from physics.validation import compare_ensembles

    rep = compare_ensembles(candidate, reference, temperature=temperature, observables=OBSERVABLES)
    obs = rep["observables"]
    summed, n_checks, n_pass = 0.0, 0, 0
    # A tiny lattice has too few shells for the S(k) slope fit: compare what exists.
    for name in (n for n in SCALARS if n in obs):
        o = obs[name]
        summed += abs(o["diff"]) / abs(o["reference"])
        n_checks, n_pass = n_checks + 1, n_pass + bool(o["pass"])
    for name in PROFILES:
        o = obs[name]
        keep = [i for i, x in enumerate(o.get("r", o.get("k", o.get("l")))) if not (name == "two_point" and x == 0)]
        rel = [abs(o["diff"][i]) / abs(o["reference"][i]) for i in keep]
        summed += float(np.mean(rel))
        n_checks, n_pass = n_checks + len(keep), n_pass + sum(bool(o["pass"][i]) for i in keep)
    rep["summed_normalized_error"] = float(summed)
    rep["n_checks"], rep["n_pass"] = n_checks, int(n_pass)
    rep["failed"] = _failed(obs)
    return rep


def _failed(obs: dict) -> list[str]:
    out = []
    for name, o in obs.items():
        x_name = next((x for x in ("r", "k", "l") if x in o), None)
        if x_name is None:
            if not o["pass"]:
                out.append(name)
        else:
            out += [f"{name}({x_name}={x:.3g})" for x, ok in zip(o[x_name], o["pass"]) if not ok]
    return out


def downsample(spins: np.ndarray, factor: int, method: str, seed: int) -> np.ndarray:
    return coarse_grain(spins, factor, method, seed=seed)


def consistency(out_spins: np.ndarray, inputs: np.ndarray, factor: int, method: str, seed: int) -> dict:
    """downsample(SR) vs the input: agreement of block spins (majority) or RMS difference (average)."""
    d = downsample(out_spins, factor, method, seed)
    if method == "majority":
        return {"block_agreement": float(np.mean(d == inputs))}
    return {"block_rmse": float(np.sqrt(np.mean((d - inputs) ** 2)))}


# ----------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------

def _entry(x: np.ndarray, reference: np.ndarray, temperature: float, extra: dict | None = None) -> dict:
    res = compare(x, reference, temperature)
    if extra:
        res.update(extra)
    return res


def _check_inputs(model: SkildModel, baseline: SkildModel | None, reference: np.ndarray, factors: list[int],
                  methods: list[str]) -> np.ndarray:
    L = model.L
    if model.kind != "spectral":
        raise ValueError("validate: expected a SKILD (spectral) model as DIR; pass the white-noise run as --baseline")
    if baseline is not None and (baseline.kind != "gaussian" or baseline.L != L):
        raise ValueError(f"--baseline: expected a white-noise (gaussian) model with L = {L}, received "
                         f"kind={baseline.kind}, L={baseline.L}")
    bad = [m for m in methods if m not in ("majority", "average")]
    if bad or not methods:
        raise ValueError(f"downsample: expected 'majority' and/or 'average', received {methods}")
    for b in factors:
        if L % b or not math.ceil(L / 8) <= L // b:
            raise ValueError(f"factors: expected divisors b of L = {L} with L / b >= L / 8, received {b}")
    ref = np.asarray(reference)
    if ref.ndim != 3 or ref.shape[1:] != (L, L):
        raise ValueError(f"reference: expected lattices (N, {L}, {L}) for the model's L = {L}, received "
                         f"{tuple(ref.shape)}")
    if ref.shape[0] < 4:
        raise ValueError(f"reference: expected at least 4 lattices, received {ref.shape[0]}")
    if not np.all(np.abs(ref) == 1):
        # The ground truth must be spin configurations; sign-discretising a real field here would hide a wrong file.
        bad = np.unique(ref[np.abs(ref) != 1])[:5].tolist()
        raise ValueError(f"reference: expected Ising configurations (values +-1 only), found {bad}")
    return to_spins(ref)


def _generation(model: SkildModel, baseline: SkildModel | None, ref: np.ndarray, n: int, seed: int, steps,
                batch_size, samples: dict) -> dict:
    """Unconditional generation of both models, each compared with the whole reference set."""
    out = {}
    for name, m in (("skild", model), ("white_noise", baseline)):
        if m is None:
            continue
        t0 = time.perf_counter()
        x = generate(m, n, seed=seed, steps=steps, batch_size=batch_size)[:, 0].numpy()
        out[name] = _entry(x, ref, m.cfg.data.temperature, {"wall_s": time.perf_counter() - t0})
        samples[name] = x[:8]
    return out


def _superres_block(model: SkildModel, baseline: SkildModel | None, truth: np.ndarray, ref_a: np.ndarray,
                    b: int, method: str, seed: int, steps, batch_size, samples: dict, key: str,
                    conditioning: str | None = None, tau: float | None = None) -> dict:
    """Inputs ``method``-coarse-grained by ``b`` from ``truth``; SKILD, nearest-neighbour and SDEdit outputs are
    compared with the independent half ``ref_a``."""
    T, L = model.cfg.data.temperature, model.L
    low = downsample(truth, b, method, seed)
    entries: dict[str, Any] = {"R": int(low.shape[-1]), "factor": b, "downsample": method,
                               "n_inputs": int(low.shape[0])}
    t0 = time.perf_counter()
    xs, info = superres(model, low.astype(np.float32), seed=seed, steps=steps, batch_size=batch_size,
                        input_kind=method, conditioning=conditioning, tau=tau)
    xs = xs[:, 0].numpy()
    entries["skild"] = _entry(xs, ref_a, T, {**info, "wall_s": time.perf_counter() - t0,
                                             **_fidelity(xs, low, truth, b, method, seed)})
    nn = nearest_upsample(_torch(low), L).numpy()
    entries["nearest"] = _entry(nn, ref_a, T, _fidelity(nn, low, truth, b, method, seed))
    samples[f"input_{key}"], samples[f"truth_{key}"] = low[:8], truth[:8]
    samples[f"skild_{key}"], samples[f"nearest_{key}"] = xs[:8], nn[:8]
    if baseline is not None:
        t0 = time.perf_counter()
        # the same start threshold as SKILD's, so both start where the input stops resolving the data
        xd, dinfo = sdedit_superres(baseline, low.astype(np.float32), seed=seed, steps=steps,
                                    batch_size=batch_size, tau=info["tau"])
        xd = xd[:, 0].numpy()
        entries["sdedit_white_noise"] = _entry(xd, ref_a, T, {**dinfo, "wall_s": time.perf_counter() - t0,
                                                              **_fidelity(xd, low, truth, b, method, seed)})
        samples[f"sdedit_{key}"] = xd[:8]
    return entries


def validate(model: SkildModel, reference: np.ndarray, out_dir: str | Path, baseline: SkildModel | None = None,
             n_generate: int | None = None, n_superres: int | None = None, factors: list[int] | None = None,
             method: str | list[str] | None = None, seed: int | None = None, steps: int | None = -1,
             batch_size: int | None = None, reference_path: str | None = None,
             conditioning: str | None = None, superres_tau: float | None = None) -> dict:
    """Generate, super-resolve and compare with ``reference`` ``(N, L, L)``; write the report into ``out_dir``.

    ``method``: how inputs are made from the reference, ``"majority"`` (block spins) and/or ``"average"``.
    ``steps = -1``: the model's ``sample.steps``. Returns the metrics dict (also written to ``metrics.json``).
    """
    from physics.observables import summary
    from simdiff.pipelines.skild.report import write_report
    from simdiff.utils.io import write_json

    vcfg = model.cfg.validate
    factors = list(factors) if factors is not None else list(vcfg.sr_factors)
    methods = [method] if isinstance(method, str) else list(method or [vcfg.downsample])
    ref = _check_inputs(model, baseline, reference, factors, methods)
    seed = vcfg.seed if seed is None else seed
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    # Super-resolution inputs come from the second half, outputs are compared with the first (independent).
    ref_a, ref_b = ref[: ref.shape[0] // 2], ref[ref.shape[0] // 2:]
    truth = ref_b[: min(n_superres or vcfg.num_superres, ref_b.shape[0])]
    T = model.cfg.data.temperature
    metrics: dict[str, Any] = {
        "model": str(model.path), "baseline": str(baseline.path) if baseline else None,
        "reference": reference_path, "L": model.L, "temperature": T, "n_reference": int(ref.shape[0]),
        "seed": seed, "sampler_steps": model.cfg.sample.steps if steps == -1 else steps,
        "superres_conditioning": conditioning or model.cfg.sample.superres_conditioning,
        "superres_tau": core_superres_tau(model, superres_tau),
        "downsample": methods, "spectrum": dict(zip(("C", "alpha", "k0sq"), model.spectrum)),
        "train": model.meta.get("train"), "command": model.meta.get("command"),
        "reference_observables": summary(ref, temperature=T), "superres": {},
    }
    samples: dict[str, np.ndarray] = {"reference": ref[:8]}
    n_gen = vcfg.num_generate if n_generate is None else n_generate
    metrics["generation"] = _generation(model, baseline, ref, n_gen, seed, steps, batch_size, samples) if n_gen else {}
    for method_ in methods:
        for b in factors:
            key = f"{b}x-{method_}"
            metrics["superres"][key] = _superres_block(model, baseline, truth, ref_a, b, method_, seed, steps,
                                                       batch_size, samples, key, conditioning, superres_tau)
    metrics["wall_s"] = time.perf_counter() - t_start
    metrics["verdict"] = _verdict(metrics)
    write_json(out_dir / "metrics.json", metrics)
    write_report(metrics, samples, out_dir)
    return metrics


def _fidelity(x: np.ndarray, low: np.ndarray, truth: np.ndarray, b: int, method: str, seed: int) -> dict:
    s = to_spins(x)
    return {"consistency": consistency(s, low, b, method, seed),
            "site_agreement_with_truth": float(np.mean(s == truth))}


def _torch(x: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def _verdict(m: dict) -> dict:
    out: dict[str, bool] = {}
    if "skild" in m["generation"]:   # absent when generation was skipped (n_generate = 0)
        out["generation_all_pass"] = m["generation"]["skild"]["all_pass"]
    for key, e in m["superres"].items():
        out[f"superres_{key}_all_pass"] = e["skild"]["all_pass"]
    if "white_noise" in m["generation"]:
        out["generation_beats_white_noise"] = (m["generation"]["skild"]["summed_normalized_error"]
                                               < m["generation"]["white_noise"]["summed_normalized_error"])
    return out


__all__ = ["OBSERVABLES", "compare", "downsample", "consistency", "validate"]
