"""LoopMDM planner: training from demo files, on-policy evaluation, and the three looping experiments.

Commands (``simdiff planner ...``) call :func:`train_from_file`, :func:`evaluate_planner` and
:func:`run_experiments`. Demonstrations are the HDF5 files of :mod:`envs.datasets` (the same files the
diffusion policy trains from) and every on-policy score goes through :func:`simdiff.pipelines.evaluate.evaluate`
(the same batched runner that scores the diffusion policy and the experts).

Experiments (one config, ``configs/planner/push.yaml``; results in ``OUT/report.md``, ``OUT/metrics.json``,
``OUT/*.png``):

1. ``loops``: a planner trained with a fixed loop count S (and one trained with S drawn per batch) is scored at
   inference loop counts ``S in {1, 2, 4, 8}``: held-out NLL bound (bits/token) and success on each level.
2. ``compute``: looped (k layers x S) vs. same-parameter (k x 1) vs. same-FLOPs deeper (kS x 1), trained with
   the same steps and batch; held-out NLL against training FLOPs; the FLOP ratio at which the looped model
   first reaches the same-parameter model's final NLL (the LoopMDM paper reports up to 3.3x).
3. ``frontier``: quality vs. inference compute over denoising steps x loops for the looped model: FLOPs per
   plan (measured function evaluations x analytic FLOPs per forward), held-out plan error and success.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from policies.planner.config import PlannerTrainConfig
from policies.planner.policy import ObsLayout, PlannerPolicy, make_windows
from policies.planner.train import POLICY_DIR, FitOutput, fit, split_episodes
from simdiff.config import check_range, load_config, to_dict
from simdiff.errors import DatasetError
from simdiff.utils.io import write_json
from simdiff.utils.progress import progress

Episodes = list[tuple[np.ndarray, np.ndarray]]


# ------------------------------------------------------------------------------------------------ schema
@dataclass(frozen=True)
class DemoSpec:
    """Scripted-expert demonstrations collected for the experiments (one file, every level mixed)."""

    env: str = "simdiff/Push-v0"
    levels: tuple[int, ...] = (0, 1, 2, 3)
    episodes_per_level: int = 50
    seed: int = 0                 #: level k uses seeds seed + 100000 k, ...
    workers: int = 1

    def __post_init__(self) -> None:
        check_range("demos.episodes_per_level", self.episodes_per_level, lo=2)
        check_range("demos.workers", self.workers, lo=1)
        for lv in self.levels:
            check_range("demos.levels[]", lv, lo=0, hi=3)


@dataclass(frozen=True)
class EvalSpec:
    """On-policy evaluation settings (episodes per level; seeds ``seed .. seed + episodes - 1``)."""

    levels: tuple[int, ...] = (0, 1, 2, 3)
    episodes: int = 30
    seed: int = 10_000
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_range("eval.episodes", self.episodes, lo=1)
        check_range("eval.batch_size", self.batch_size, lo=1)
        for lv in self.levels:
            check_range("eval.levels[]", lv, lo=0, hi=3)


@dataclass(frozen=True)
class ExperimentsConfig:
    """``simdiff planner experiments CONFIG``: data, the base planner (the looped model) and each experiment."""

    demos: DemoSpec = field(default_factory=DemoSpec)
    base: PlannerTrainConfig = field(default_factory=PlannerTrainConfig)
    eval: EvalSpec = field(default_factory=EvalSpec)
    experiments: tuple[Literal["loops", "compute", "frontier"], ...] = ("loops", "compute", "frontier")
    inference_loops: tuple[int, ...] = (1, 2, 4, 8)     #: exp 1
    random_loops_range: tuple[int, int] | None = (1, 4)  #: exp 1: also train with S ~ U{lo..hi} (None: skip)
    curve_every: int = 100                              #: exp 2: held-out NLL every this many steps ...
    curve_windows: int = 384                            #: ... on this many held-out windows (same for all)
    frontier_steps: tuple[int, ...] = (1, 2, 4, 8, 16)  #: exp 3: denoising steps
    frontier_loops: tuple[int, ...] = (1, 2, 4, 8)      #: exp 3: inference loops
    frontier_level: int = 2                             #: exp 3: on-policy level
    frontier_episodes: int = 30                         #: exp 3: episodes per grid point
    frontier_windows: int = 512                         #: exp 3: held-out windows for the plan error
    threads: int = 1                                    #: torch CPU threads

    def __post_init__(self) -> None:
        for name in ("inference_loops", "frontier_steps", "frontier_loops"):
            vals = getattr(self, name)
            if not vals or min(vals) < 1:
                raise ValueError(f"{name}: expected a non-empty list of ints >= 1, received {vals!r}")
        check_range("curve_every", self.curve_every, lo=1)
        check_range("curve_windows", self.curve_windows, lo=1)
        check_range("frontier_level", self.frontier_level, lo=0, hi=3)
        check_range("frontier_episodes", self.frontier_episodes, lo=1)
        check_range("frontier_windows", self.frontier_windows, lo=1)
        check_range("threads", self.threads, lo=1)
        if self.random_loops_range is not None and not 1 <= self.random_loops_range[0] <= self.random_loops_range[1]:
            raise ValueError(f"random_loops_range: expected (lo, hi) with 1 <= lo <= hi, received "
                             f"{self.random_loops_range}")


# ------------------------------------------------------------------------------------------------- data
def load_demo_episodes(path: str | Path) -> tuple[Episodes, ObsLayout, dict[str, Any]]:
    """Read a demo file (:func:`envs.datasets.load_demos`): episodes ``(obs (T, Do), actions (T, Da))``, the
    observation layout, and ``{"env_id", "env_kwargs"}``.

    The layout comes from the file's ``obs_layout`` attribute (simdiff files); files without one (robomimic)
    are treated as state-only observations.
    """
    from envs.datasets import load_demos
    from policies.diffusion.data import check_episode_arrays

    ds = load_demos(path)
    episodes = [(ep.flat_obs(), np.asarray(ep.actions, np.float32)) for ep in ds]
    try:
        check_episode_arrays([o for o, _ in episodes], [a for _, a in episodes],
                             [ep.name or f"episode {i}" for i, ep in enumerate(ds)])
    except ValueError as err:
        raise DatasetError(f"{path}: {err}") from None
    do = episodes[0][0].shape[1]
    lay = ds.attrs.get("obs_layout")
    if isinstance(lay, dict) and "state" in lay:
        layout = ObsLayout.from_env_layout({k: tuple(v) for k, v in lay.items()})
        if layout.obs_dim > do:
            raise ValueError(f"{path}: obs_layout needs {layout.obs_dim} observation dims, the file has {do}")
    else:
        layout = ObsLayout((0, do), None)
    return episodes, layout, {"env_id": ds.env_name, "env_kwargs": ds.env_kwargs}


def collect_demos(spec: DemoSpec, path: Path, overwrite: bool = False) -> Path:
    """Collect ``episodes_per_level`` successful expert demos per level into one HDF5 file."""
    from envs.collect import collect, dataset_attrs
    from envs.datasets import write_demos

    episodes = []
    for lv in spec.levels:
        episodes += collect(spec.env, spec.episodes_per_level, seed=spec.seed + 100_000 * lv, level=lv,
                            workers=spec.workers, only_success=True)
    collection = {"levels": list(spec.levels), "episodes_per_level": spec.episodes_per_level, "seed": spec.seed}
    attrs = dataset_attrs(spec.env, {"level": spec.levels[0]}, collection)
    return write_demos(path, episodes, {"env_name": spec.env, "env_kwargs": {}}, attrs=attrs, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------ train
def _clear_run(out: Path) -> None:
    """Remove what a planner run writes into ``out`` (only those entries; the directory itself stays)."""
    for name in ("checkpoint", POLICY_DIR, "metrics.jsonl", "loss.png", "planner_metrics.json", "config.yaml",
                 "run.json"):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _train_section(config: str | Path | dict) -> dict:
    """A planner train config, or the ``base`` section of an experiments config (one file serves both)."""
    if isinstance(config, dict):
        data = config
    else:
        from simdiff.config import _read_yaml

        data = _read_yaml(Path(config))
    return data["base"] if isinstance(data.get("base"), dict) else data


def train_from_file(config: str | Path | dict, data: str | Path, out: str | Path, *,
                    overrides: dict | None = None, overwrite: bool = False, command: list[str] | None = None,
                    threads: int | None = None) -> FitOutput:
    """``simdiff planner train``: validate everything, then train (resuming an interrupted run in ``out``).

    ``config`` is a :class:`PlannerTrainConfig` file, or an experiments config whose ``base`` section is used.
    """
    from simdiff.utils.run import record_run

    cfg = load_config(PlannerTrainConfig, _train_section(config), overrides)
    episodes, layout, env = load_demo_episodes(data)
    out = Path(out)
    if (out / POLICY_DIR).exists():
        if not overwrite:
            raise FileExistsError(f"{out / POLICY_DIR} already exists (a finished run); pass --overwrite to "
                                  "retrain into the same directory")
        _clear_run(out)
    if threads:
        torch.set_num_threads(threads)
    record_run(out, config=cfg, seed=cfg.seed, command=command,
               extra={"data": str(data), "env_id": env["env_id"], "episodes": len(episodes)})
    return fit(cfg, episodes, layout, out, desc="planner train")


# ------------------------------------------------------------------------------------------------- eval
def _planner_batch_policy(path: str, sample_kw: dict) -> Any:
    """Module-level factory (picklable for the runner's worker processes)."""
    return PlannerPolicy.load(path).batch_policy(**sample_kw)


def resolve_policy_dir(path: str | Path) -> Path:
    """A run directory (``DIR/policy``) or a planner checkpoint directory itself."""
    path = Path(path)
    if (path / POLICY_DIR / "meta.json").exists():
        return path / POLICY_DIR
    if (path / "meta.json").exists():
        return path
    raise FileNotFoundError(f"{path}: no planner here (expected {path / POLICY_DIR} from `simdiff planner train`)")


def evaluate_planner(policy: PlannerPolicy | str | Path, env_id: str, level: int | str | None, episodes: int,
                     seed: int, *, workers: int = 1, batch_size: int = 64, show_progress: bool = True,
                     **sample_kw: Any) -> dict[str, Any]:
    """Success etc. of the planner through the shared batched runner; ``sample_kw``: steps, loops, order,
    temperature (unset: the planner's config)."""
    from simdiff.pipelines.evaluate import evaluate

    sample_kw = {k: v for k, v in sample_kw.items() if v is not None}
    if isinstance(policy, PlannerPolicy):
        spec: Any = policy.batch_policy(**sample_kw)
    else:
        spec = functools.partial(_planner_batch_policy, str(resolve_policy_dir(policy)), sample_kw)
    res = evaluate(spec, env_id, level, episodes, seed, workers=workers, batch_size=batch_size,
                   show_progress=show_progress)
    res["policy"] = "planner" if isinstance(policy, PlannerPolicy) else str(policy)
    res["sampler"] = sample_kw
    return res


def _success(policy: PlannerPolicy, env_id: str, level: int, ev: EvalSpec, episodes: int | None = None,
             **kw: Any) -> dict[str, Any]:
    res = evaluate_planner(policy, env_id, level, episodes or ev.episodes, ev.seed, batch_size=ev.batch_size,
                           show_progress=False, **kw)
    return {k: res[k] for k in ("success_rate", "ci95", "successes", "episodes", "mean_length", "wall_time_s")}


# ------------------------------------------------------------------------------------------ experiments
def variant_configs(base: PlannerTrainConfig, random_range: tuple[int, int] | None) -> dict[str, PlannerTrainConfig]:
    """The trained models: ``looped`` (the base: k x S), ``same_params`` (k x 1), ``same_flops`` (kS x 1),
    and ``random_loops`` (k x S~U{lo..hi})."""
    p = base.planner
    S, k = p.train_loops, p.net.n_loop

    def with_planner(**kw: Any) -> PlannerTrainConfig:
        return dataclasses.replace(base, planner=dataclasses.replace(p, **kw))
    out = {"looped": base,
           "same_params": with_planner(train_loops=1, sample_loops=1, train_loops_range=None),
           "same_flops": with_planner(net=dataclasses.replace(p.net, n_loop=k * S), train_loops=1, sample_loops=1,
                                      train_loops_range=None)}
    if random_range is not None:
        out["random_loops"] = with_planner(train_loops_range=tuple(random_range))
    return out


def flop_ratio_to_reach(curve_looped: list[dict], curve_ref: list[dict], loops_key: str,
                        ref_key: str) -> dict[str, Any]:
    """Training FLOPs at which the looped curve first reaches the reference's final NLL (linear
    interpolation in log-FLOPs between logged points), and ``ratio = ref final FLOPs / that``."""
    target = curve_ref[-1]["val_bits"][ref_key]
    ref_flops = curve_ref[-1]["train_flops"]
    prev = None
    for pt in curve_looped:
        v, f = pt["val_bits"][loops_key], pt["train_flops"]
        if v <= target:
            if prev is None:
                reach = f
            else:
                (f0, v0) = prev
                w = (v0 - target) / (v0 - v) if v0 != v else 1.0
                reach = math.exp(math.log(f0) + w * (math.log(f) - math.log(f0)))
            return {"target_bits": target, "ref_final_flops": ref_flops, "looped_flops_to_reach": reach,
                    "ratio": ref_flops / reach, "reached": True}
        prev = (f, v)
    return {"target_bits": target, "ref_final_flops": ref_flops, "looped_flops_to_reach": None, "ratio": None,
            "reached": False, "looped_final_bits": curve_looped[-1]["val_bits"][loops_key]}


def _layers(cfg: PlannerTrainConfig) -> str:
    n, p = cfg.planner.net, cfg.planner
    rng = p.train_loops_range
    loops = f"U{{{rng[0]}..{rng[1]}}}" if rng else str(p.train_loops)
    return f"{n.n_prelude} + {n.n_loop} x {loops} + {n.n_coda}"


def _train_variant(name: str, cfg: PlannerTrainConfig, episodes: Episodes, layout: ObsLayout, out: Path,
                   curve_every: int, curve_windows: int, eval_loops: tuple[int, ...]) -> FitOutput:
    run = out / "runs" / name
    done = run / POLICY_DIR
    if done.exists() and (run / "planner_metrics.json").exists():
        stored = json.loads((run / "planner_metrics.json").read_text())
        if stored.get("config") == to_dict(cfg):  # finished earlier with the same config: reuse
            pol = PlannerPolicy.load(done)
            return FitOutput(pol, None, {k: v for k, v in stored.items() if k != "curve"}, stored.get("curve", []))
        _clear_run(run)
    t0 = time.perf_counter()
    fo = fit(cfg, episodes, layout, run, eval_every=curve_every, eval_loops=eval_loops,
             max_val_windows=curve_windows, desc=f"train {name}")
    fo.metrics["config"] = to_dict(cfg)
    fo.metrics["fit_wall_s"] = time.perf_counter() - t0
    fo.metrics["layers"] = _layers(cfg)
    write_json(run / "planner_metrics.json", {**fo.metrics, "curve": fo.curve})
    return fo


def _held_out(cfg: PlannerTrainConfig, episodes: Episodes, n: int) -> dict[str, torch.Tensor]:
    _, val_idx = split_episodes(len(episodes), cfg.val_fraction, cfg.seed)
    va = make_windows([episodes[i] for i in val_idx], cfg.planner.obs_horizon, cfg.planner.plan_horizon)
    keep = torch.randperm(va["obs"].shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:n]
    return {k: v[keep] for k, v in va.items()}


def exp_loops(cfg: ExperimentsConfig, fits: dict[str, FitOutput], env_id: str, va: dict) -> dict[str, Any]:
    """Exp 1: NLL and success vs. inference loops, for the fixed-S and random-S models."""
    out: dict[str, Any] = {}
    models = [m for m in ("looped", "random_loops") if m in fits]
    jobs = [(m, s, lv) for m in models for s in cfg.inference_loops for lv in cfg.eval.levels]
    bar = progress(total=len(jobs), desc="exp1 loops")
    for m in models:
        pol = fits[m].policy
        rows = []
        for s in cfg.inference_loops:
            g = torch.Generator().manual_seed(12345)
            row = {"loops": s, "flops_per_forward": pol.model.flops(s),
                   "val_bits": pol.nll_bits(va["obs"], va["actions"], g, loops=s), "levels": {}}
            for lv in cfg.eval.levels:
                row["levels"][str(lv)] = _success(pol, env_id, lv, cfg.eval, loops=s)
                bar.update(1)
            rates = [r["success_rate"] for r in row["levels"].values()]
            row["mean_success"] = float(np.mean(rates))
            rows.append(row)
        out[m] = {"train_loops": pol.cfg.train_loops, "train_loops_range": pol.cfg.train_loops_range, "rows": rows}
    bar.close()
    return out


def exp_compute(cfg: ExperimentsConfig, fits: dict[str, FitOutput]) -> dict[str, Any]:
    """Exp 2: curves of held-out NLL vs. training FLOPs and the FLOP ratios."""
    S = cfg.base.planner.train_loops
    keys = {"looped": str(S), "same_params": "1", "same_flops": "1"}
    variants = {}
    for name in ("looped", "same_params", "same_flops"):
        fo = fits[name]
        k = keys[name]
        variants[name] = {
            "layers": {"prelude": fo.policy.cfg.net.n_prelude, "loop": fo.policy.cfg.net.n_loop,
                       "coda": fo.policy.cfg.net.n_coda, "loops": int(k)},
            "parameters": fo.metrics["parameters"], "flops_per_forward": fo.policy.model.flops(int(k)),
            "train_flops": fo.metrics["train_flops"], "final_val_bits_ema": fo.metrics["val_bits_per_token"][k],
            "curve": [{"step": p["step"], "train_flops": p["train_flops"], "val_bits": p["val_bits"][k]}
                      for p in fo.curve]}
    return {"variants": variants,
            "looped_vs_same_params": flop_ratio_to_reach(fits["looped"].curve, fits["same_params"].curve,
                                                         keys["looped"], "1"),
            "looped_vs_same_flops": flop_ratio_to_reach(fits["looped"].curve, fits["same_flops"].curve,
                                                        keys["looped"], "1")}


def exp_frontier(cfg: ExperimentsConfig, pol: PlannerPolicy, env_id: str, va: dict) -> dict[str, Any]:
    """Exp 3: for every (steps, loops): FLOPs per plan, held-out plan error and success at one level."""
    points = []
    grid = [(k, s) for k in cfg.frontier_steps for s in cfg.frontier_loops]
    bar = progress(total=len(grid), desc="exp3 frontier")
    for steps, loops in grid:
        nfe = [0]

        def count(info: dict, nfe: list = nfe) -> None:
            nfe[0] += info["rows_evaluated"]
        g = torch.Generator().manual_seed(777)
        tokens = pol.sample_tokens(va["obs"], g, steps=steps, loops=loops, callback=count)
        plan = pol.tokenizer.decode(tokens).clamp(-1, 1)
        n = va["obs"].shape[0]
        fpf = pol.model.flops(loops)
        ok = _success(pol, env_id, cfg.frontier_level, cfg.eval, episodes=cfg.frontier_episodes, steps=steps,
                      loops=loops)
        points.append({"steps": steps, "loops": loops, "nfe_per_plan": nfe[0] / n,
                       "flops_per_plan": nfe[0] / n * fpf, "flops_per_forward": fpf,
                       "plan_rmse": float((plan - va["actions"]).pow(2).mean().sqrt()),
                       "first_action_rmse": float((plan[:, 0] - va["actions"][:, 0]).pow(2).mean().sqrt()),
                       "success": ok})
        bar.update(1)
    bar.close()
    for key in ("plan_rmse", "success"):
        _mark_pareto(points, key)
    return {"level": cfg.frontier_level, "episodes": cfg.frontier_episodes, "windows": int(va["obs"].shape[0]),
            "points": points}


def _mark_pareto(points: list[dict], key: str) -> None:
    """Flag points no other point beats on both compute (lower) and quality (plan error lower / success higher)."""
    def q(p: dict) -> float:
        return p["success"]["success_rate"] if key == "success" else -p[key]
    for p in points:
        p[f"pareto_{key}"] = not any(o["flops_per_plan"] <= p["flops_per_plan"] and q(o) >= q(p)
                                     and (o["flops_per_plan"] < p["flops_per_plan"] or q(o) > q(p))
                                     for o in points)


def run_experiments(config: str | Path | dict, out: str | Path, *, overrides: dict | None = None,
                    overwrite: bool = False, resume: bool = False, data: str | Path | None = None,
                    command: list[str] | None = None) -> dict[str, Any]:
    """``simdiff planner experiments``: demos -> trained variants -> experiments -> report.md, metrics.json, plots."""
    from simdiff.utils.run import record_run

    cfg = load_config(ExperimentsConfig, config, overrides)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        raise FileExistsError(f"{out} already exists; pass --resume to continue it or --overwrite to redo it")
    if overwrite:
        for name in ("runs", "demos.hdf5", "report.md", "metrics.json", "loops.png", "compute.png", "frontier.png"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    torch.set_num_threads(cfg.threads)
    record_run(out, config=cfg, seed=cfg.base.seed, command=command)
    t0 = time.perf_counter()
    demo_path = Path(data) if data else out / "demos.hdf5"
    if not demo_path.exists():
        collect_demos(cfg.demos, demo_path)
    episodes, layout, env = load_demo_episodes(demo_path)
    env_id = env["env_id"] or cfg.demos.env
    va = _held_out(cfg.base, episodes, cfg.frontier_windows)

    needed = set()
    if "loops" in cfg.experiments:
        needed |= {"looped"} | ({"random_loops"} if cfg.random_loops_range else set())
    if "compute" in cfg.experiments:
        needed |= {"looped", "same_params", "same_flops"}
    if "frontier" in cfg.experiments:
        needed |= {"looped"}
    variants = variant_configs(cfg.base, cfg.random_loops_range)
    fits = {}
    for name in ("looped", "same_params", "same_flops", "random_loops"):
        if name in needed:
            loops = tuple(sorted({variants[name].planner.train_loops, variants[name].planner.sample_loops}))
            fits[name] = _train_variant(name, variants[name], episodes, layout, out, cfg.curve_every,
                                        cfg.curve_windows, loops)

    results: dict[str, Any] = {"env_id": env_id, "demos": {"path": str(demo_path), "episodes": len(episodes),
                                                           "steps": int(sum(len(a) for _, a in episodes))},
                               "models": {n: {k: v for k, v in fo.metrics.items() if k != "config"}
                                          for n, fo in fits.items()}}
    if "loops" in cfg.experiments:
        results["loops"] = exp_loops(cfg, fits, env_id, va)
    if "compute" in cfg.experiments:
        results["compute"] = exp_compute(cfg, fits)
    if "frontier" in cfg.experiments:
        results["frontier"] = exp_frontier(cfg, fits["looped"].policy, env_id, va)
    results["wall_time_s"] = time.perf_counter() - t0
    write_json(out / "metrics.json", results)
    from simdiff.pipelines import planner_report

    planner_report.write_plots(results, out)
    planner_report.write_report(results, cfg, out, command)
    return results


__all__ = ["DemoSpec", "EvalSpec", "ExperimentsConfig", "load_demo_episodes", "collect_demos", "train_from_file",
           "evaluate_planner", "resolve_policy_dir", "variant_configs", "flop_ratio_to_reach", "run_experiments"]
