"""``simdiff shift sweep``: success, return and episode length against one domain parameter, for several policies.

For each value ``v`` of the parameter, every policy is evaluated on ``episodes`` episodes with seeds
``seed .. seed + episodes - 1`` in the env made with ``level`` (the other parameters are sampled from it) and
``domain={param: v}``. The same seeds are used at every value and for every policy (common random numbers):
an override replaces one parameter and the domain sampler still draws one number per parameter, so the
episodes differ only in the swept parameter, and policies are compared on identical episodes.
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
from simdiff.pipelines.shift.values import check_param_values, classify_value


@dataclass(frozen=True)
class SweepSetup:
    """Everything a sweep needs, validated (see :func:`plan_sweep`)."""

    env_id: str
    param: str
    values: tuple[float | int, ...]
    tags: tuple[str, ...]  # level_K / shift / outside per value
    policies: tuple[PolicySpec, ...]
    episodes: int
    seed: int
    level: int | str
    workers: int
    batch_size: int
    trained_level: int
    trained_range: tuple[float, float]
    levels_range: tuple[float, float]  # level 3: every trained level
    nominal: float
    unit: str


def check_common(env_id: str, episodes: int, seed: int, workers: int, level: Any,
                 batch_size: int = 64) -> tuple[Any, int | str]:
    """Validate the shared options; returns the env's domain spec and the parsed level."""
    import envs  # noqa: F401  (registers the envs)
    from envs.domains import parse_level
    from envs.registry import domain_spec

    spec = domain_spec(env_id)  # unknown ids raise, naming the valid ones
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"--episodes: expected a positive integer, received {episodes!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed: expected a non-negative integer, received {seed!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers: expected a positive integer, received {workers!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive integer, received {batch_size!r}")
    lv = parse_level(level)
    if lv is None:
        raise ValueError("--level: expected 0, 1, 2, 3 or shift (the level the other parameters are sampled from)")
    return spec, lv


def trained_range(spec: Any, param: str, trained_level: int = 3) -> tuple[float, float]:
    """The range of ``param`` covered by training at levels 0..``trained_level`` (levels are nested)."""
    if not 0 <= trained_level < len(spec[param].levels):
        raise ValueError(f"--trained-level: expected 0..{len(spec[param].levels) - 1}, received {trained_level}")
    lo, hi = spec[param].levels[trained_level]
    return float(lo), float(hi)


def plan_sweep(policies: Sequence[PolicySpec], env_id: str, param: str, values: Sequence[float], *,
               episodes: int, seed: int, workers: int = 1, level: Any = 0, trained_level: int = 3,
               batch_size: int = 64) -> SweepSetup:
    """Validate a sweep before anything runs: env id, parameter name, values against the physics, options."""
    spec, lv = check_common(env_id, episodes, seed, workers, level, batch_size)
    vals = check_param_values(spec, param, list(values))
    if not policies:
        raise ValueError("expected at least one POLICY")
    p = spec[param]
    return SweepSetup(env_id=env_id, param=param, values=tuple(vals),
                      tags=tuple(classify_value(spec, param, v) for v in vals), policies=tuple(policies),
                      episodes=episodes, seed=seed, level=lv, workers=workers, batch_size=batch_size,
                      trained_level=trained_level, trained_range=trained_range(spec, param, trained_level),
                      levels_range=trained_range(spec, param, len(p.levels) - 1), nominal=float(p.nominal),
                      unit=p.unit)


def run_sweep(setup: SweepSetup, out: str | Path | None = None, *, overwrite: bool = False,
              command: Sequence[str] | None = None, log=None) -> dict:
    """Evaluate every (policy, value) cell through the batched runner; write metrics, plots and report to ``out``
    (if given). Returns the metrics dict."""
    if out is not None:
        rep.check_out(out, overwrite)
    t0 = time.perf_counter()
    cells = [runner.cell_for(pol, setup.env_id, level=setup.level, domain={setup.param: v},
                             episodes=setup.episodes, seed=setup.seed)
             for pol in setup.policies for v in setup.values]
    results = iter(runner.evaluate_cells(cells, workers=setup.workers, batch_size=setup.batch_size,
                                         desc=f"sweep {setup.param}"))
    pols: dict[str, dict] = {}
    for pol in setup.policies:
        points = []
        for v, tag in zip(setup.values, setup.tags):
            res = next(results)
            points.append({"value": v, "tag": tag, **res.summary()})
            if log:
                log(f"{pol.name:<28} {setup.param}={v:<8g} ({tag:<8}) success {res.successes}/{res.episodes}")
        pols[pol.name] = {"source": pol.to_dict(), "points": points}
    metrics = {
        "command": "sweep", "env": setup.env_id, "param": setup.param, "unit": setup.unit,
        "values": list(setup.values), "tags": list(setup.tags), "level": setup.level, "episodes": setup.episodes,
        "seeds": [setup.seed, setup.seed + setup.episodes - 1], "trained_level": setup.trained_level,
        "trained_range": list(setup.trained_range), "levels_range": list(setup.levels_range),
        "nominal": setup.nominal, "policies": pols, "seconds": round(time.perf_counter() - t0, 2),
    }
    if out is not None:
        write_outputs(metrics, out, overwrite=overwrite, command=command)
    return metrics


def write_outputs(metrics: dict, out: str | Path, *, overwrite: bool, command: Sequence[str] | None) -> Path:
    out = rep.prepare_out(out, overwrite)
    plot = f"sweep_{metrics['param']}.png"
    metrics["files"] = [plot]
    plots.plot_sweep(metrics, out / plot)
    rep.write_metrics(out, metrics)
    lo, hi = metrics["trained_range"]
    intro = [
        f"Env `{metrics['env']}`; `{metrics['param']}` swept over {len(metrics['values'])} values, the other "
        f"parameters sampled from level {metrics['level']}; {metrics['episodes']} episodes per point, seeds "
        f"{metrics['seeds'][0]}..{metrics['seeds'][1]} (the same seeds at every value and for every policy).",
        f"Trained range of `{metrics['param']}` (shaded; levels 0..{metrics['trained_level']}): [{lo:g}, {hi:g}] "
        f"{metrics['unit']}; nominal "
        f"{metrics['nominal']:g}. Values outside every level are marked SHIFT.",
        "Success is in % with the 95% Wilson interval.",
    ]
    sections = [("Success", rep.sweep_table(metrics, markdown=True)),
                ("Return and episode length", rep.sweep_detail_table(metrics, markdown=True))]
    rep.write_report(out, f"Sweep over {metrics['param']}", intro, sections, [plot], command)
    return out
