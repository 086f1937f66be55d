"""``simdiff shift grid``: a two-parameter success heatmap per policy.

Every cell ``(a, b)`` is evaluated with ``domain={A: a, B: b}`` on the same seeds (see
:mod:`simdiff.pipelines.shift.sweep` for why the seeds are shared).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simdiff.pipelines.shift import plots, runner
from simdiff.pipelines.shift import report as rep
from simdiff.pipelines.shift.policies import PolicySpec
from simdiff.pipelines.shift.sweep import check_common, trained_range
from simdiff.pipelines.shift.values import check_param_values, classify_value


@dataclass(frozen=True)
class GridSetup:
    env_id: str
    params: tuple[str, str]
    values: dict[str, tuple[float | int, ...]]
    tags: dict[str, tuple[str, ...]]
    policies: tuple[PolicySpec, ...]
    episodes: int
    seed: int
    level: int | str
    workers: int
    batch_size: int
    trained_level: int
    trained_range: dict[str, tuple[float, float]]


def plan_grid(policies: Sequence[PolicySpec], env_id: str, params: Sequence[str], values: Sequence[Sequence[float]],
              *, episodes: int, seed: int, workers: int = 1, level: Any = 0, trained_level: int = 3,
              batch_size: int = 64) -> GridSetup:
    """Validate a grid before anything runs (two distinct parameters, one value list each)."""
    spec, lv = check_common(env_id, episodes, seed, workers, level, batch_size)
    if len(params) != 2:
        raise ValueError(f"--param: a grid needs exactly two parameters (--param A --param B), received "
                         f"{len(params)}: {list(params)}")
    if len(values) != len(params):
        raise ValueError(f"--values: give one --values per --param (in the same order), received {len(values)} "
                         f"for {len(params)} parameters")
    if params[0] == params[1]:
        raise ValueError(f"--param: expected two different parameters, received {params[0]!r} twice")
    vals = {p: tuple(check_param_values(spec, p, list(v), option=f"--values #{i + 1}"))
            for i, (p, v) in enumerate(zip(params, values))}
    if not policies:
        raise ValueError("expected at least one POLICY")
    return GridSetup(env_id=env_id, params=(params[0], params[1]), values=vals,
                     tags={p: tuple(classify_value(spec, p, x) for x in vals[p]) for p in params},
                     policies=tuple(policies), episodes=episodes, seed=seed, level=lv, workers=workers,
                     batch_size=batch_size, trained_level=trained_level, trained_range={p: trained_range(spec, p, trained_level) for p in params})


def run_grid(setup: GridSetup, out: str | Path | None = None, *, overwrite: bool = False,
             command: Sequence[str] | None = None, log=None) -> dict:
    if out is not None:
        rep.check_out(out, overwrite)
    t0 = time.perf_counter()
    a, b = setup.params
    cells = [runner.cell_for(pol, setup.env_id, level=setup.level, domain={a: va, b: vb}, episodes=setup.episodes,
                             seed=setup.seed)
             for pol in setup.policies for va in setup.values[a] for vb in setup.values[b]]
    results = iter(runner.evaluate_cells(cells, workers=setup.workers, batch_size=setup.batch_size,
                                         desc=f"grid {a} x {b}"))
    pols = {}
    for pol in setup.policies:
        rows: dict[str, list] = {"success": [], "ci95": [], "return_mean": [], "length_mean": []}
        for va in setup.values[a]:
            cells_a = []
            for vb in setup.values[b]:
                res = next(results)
                cells_a.append(res.summary())
                if log:
                    log(f"{pol.name:<28} {a}={va:<8g} {b}={vb:<8g} success {res.successes}/{res.episodes}")
            for key in rows:
                rows[key].append([c[key] for c in cells_a])
        pols[pol.name] = {"source": pol.to_dict(), "episodes": setup.episodes, **rows}
    metrics = {
        "command": "grid", "env": setup.env_id, "params": list(setup.params),
        "values": {p: list(v) for p, v in setup.values.items()}, "tags": {p: list(t) for p, t in setup.tags.items()},
        "level": setup.level, "episodes": setup.episodes, "seeds": [setup.seed, setup.seed + setup.episodes - 1],
        "trained_level": setup.trained_level,
        "trained_range": {p: list(r) for p, r in setup.trained_range.items()}, "policies": pols,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if out is not None:
        write_outputs(metrics, out, overwrite=overwrite, command=command)
    return metrics


def write_outputs(metrics: dict, out: str | Path, *, overwrite: bool, command: Sequence[str] | None) -> Path:
    out = rep.prepare_out(out, overwrite)
    a, b = metrics["params"]
    plot = f"grid_{a}_{b}.png"
    metrics["files"] = [plot]
    plots.plot_grid(metrics, out / plot)
    rep.write_metrics(out, metrics)
    tr = metrics["trained_range"]
    intro = [
        f"Env `{metrics['env']}`; success over `{a}` x `{b}`, the other parameters sampled from level "
        f"{metrics['level']}; {metrics['episodes']} episodes per cell, seeds {metrics['seeds'][0]}.."
        f"{metrics['seeds'][1]} in every cell.",
        f"Trained ranges (dashed box, levels 0..{metrics['trained_level']}): {a} [{tr[a][0]:g}, {tr[a][1]:g}], {b} [{tr[b][0]:g}, {tr[b][1]:g}]; "
        "values outside every level carry a *.",
    ]
    rep.write_report(out, f"Grid over {a} x {b}", intro, [("Success", rep.grid_tables(metrics, markdown=True))],
                     [plot], command)
    return out
