"""Resumable stage machinery and the MOL pipeline's stages.

A run directory ``DIR`` holds the resolved ``config.yaml``, ``run.json``, ``mol_run.json`` (the config
fingerprint a resume must match) and one folder per stage. Each stage writes its outputs first and its marker
``DIR/stages/<name>.done`` (JSON: seconds, summary) atomically *last*; a stage with a marker is skipped, a
stage without one is (re)done from the start, overwriting its own partial outputs. Stages made of several
jobs (specialists, generalists, evaluation cells) keep one small marker per job too, so a killed stage redoes
only the jobs that had not finished.

Stages, in order (``R`` = ``dagger.rounds``)::

    demos -> specialists -> conditions_r0 -> pseudo_r0 -> generalist_r0 (+ labeled-only)
          -> conditions_r1 -> pseudo_r1 -> generalist_r1 -> ... -> generalist_rR -> evaluate -> report
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simdiff.errors import UserError
from simdiff.pipelines.mol.config import MolConfig
from simdiff.utils.io import read_json, write_json

STAGES_DIR = "stages"
RUN_MARKER = "mol_run.json"


class StageError(UserError):
    """A stage could not complete (e.g. jobs failed after their retries); completed work is kept."""


# -- markers ---------------------------------------------------------------------------------------------------
def marker_path(root: str | Path, name: str) -> Path:
    return Path(root) / STAGES_DIR / f"{name}.done"


def is_done(root: str | Path, name: str) -> bool:
    return marker_path(root, name).is_file()


def read_marker(root: str | Path, name: str) -> dict | None:
    """A stage's marker (None when the stage is not done); a damaged one is an error that says how to recover."""
    p = marker_path(root, name)
    if not p.is_file():
        return None
    try:
        m = read_json(p)
    except ValueError as exc:
        raise UserError(f"{exc}; recompute the stage with --redo {name}") from exc
    if not isinstance(m, dict):
        raise UserError(f"{p}: expected a JSON object, received {type(m).__name__}; recompute the stage with "
                        f"--redo {name}")
    return m


def write_marker(root: str | Path, name: str, info: dict) -> Path:
    return write_json(marker_path(root, name), {"stage": name, **info})


def done_stages(root: str | Path) -> list[str]:
    d = Path(root) / STAGES_DIR
    return sorted(p.name[: -len(".done")] for p in d.glob("*.done")) if d.is_dir() else []


# -- the runner --------------------------------------------------------------------------------------------------
@dataclass
class RunContext:
    """What every stage receives: the config, the run directory, where jobs run, and a logger."""

    cfg: MolConfig
    root: Path
    executor: Any  # ExecutorSpec (possibly overridden on the command line)
    log: Callable[[str], None] = field(default=lambda msg: print(f"[mol] {msg}", file=sys.stderr, flush=True))

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[RunContext], dict | None]
    description: str = ""
    outputs: tuple[str, ...] = ()  # paths (relative to DIR) the stage owns; cleared by --redo


def run_stages(ctx: RunContext, stages: Sequence[Stage]) -> list[str]:
    """Run the stages without a marker, in order; returns the names that ran (skipped ones are logged)."""
    ran = []
    for i, stage in enumerate(stages, 1):
        tag = f"[{i}/{len(stages)}] {stage.name}"
        if is_done(ctx.root, stage.name):
            ctx.log(f"{tag}: done already, skipped")
            continue
        ctx.log(f"{tag}: {stage.description}" if stage.description else tag)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        summary = stage.fn(ctx) or {}
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        # The marker goes last: a kill before this line leaves the stage to be redone.
        write_marker(ctx.root, stage.name, {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                                            "summary": summary, "fingerprint": ctx.cfg.fingerprint()})
        ctx.log(f"{tag}: finished in {seconds:.1f} s (CPU {cpu:.1f} s incl. workers)")
        ran.append(stage.name)
    return ran


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (pool workers): unlike wall time, it does not
    grow when other programs share the cores. Ray workers are not children and are not counted."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def invalidate_from(root: str | Path, stages: Sequence[Stage], name: str, clear_outputs: bool = True) -> list[str]:
    """Remove the markers of ``name`` and every later stage (``--redo NAME``), and with ``clear_outputs`` their
    outputs too (otherwise the per-job results inside them would be reused)."""
    names = [s.name for s in stages]
    if name not in names:
        raise ValueError(f"--redo: unknown stage {name!r}; expected one of {', '.join(names)}")
    removed = []
    for st in stages[names.index(name):]:
        p = marker_path(root, st.name)
        if p.exists():
            p.unlink()
            removed.append(st.name)
        for rel in st.outputs if clear_outputs else ():
            target = Path(root) / rel
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    return removed


# -- run directories ---------------------------------------------------------------------------------------------
def prepare_run_dir(cfg: MolConfig, out: str | Path, overwrite: bool = False,
                    command: list[str] | None = None) -> tuple[Path, bool]:
    """Create ``out`` for ``cfg`` or check that it is a resumable run of the same config.

    Returns ``(path, resumed)``. A directory holding a run of a different config is refused (listing the
    differences) unless ``overwrite``; a non-empty directory that is not a MOL run is always refused.
    """
    from simdiff.config import to_dict
    from simdiff.utils.run import record_run

    out = Path(out)
    marker = out / RUN_MARKER
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise FileExistsError(f"--out {out} is not empty and holds no MOL run ({RUN_MARKER} missing); "
                                  "choose a new directory")
        try:
            old = read_json(marker)
            if not isinstance(old, dict) or not isinstance(old.get("config", {}), dict):
                raise ValueError(f"{marker}: expected a JSON object with 'fingerprint' and 'config', received "
                                 f"{type(old).__name__}")
        except ValueError as exc:
            if not overwrite:
                raise UserError(f"{exc}; the run's bookkeeping is damaged: pass --overwrite to replace the run or "
                                "choose a new directory") from exc
            old = {}
        if old.get("fingerprint") == cfg.fingerprint():
            # Same config: resume, whatever --overwrite says (it replaces runs of another config only; deleting
            # finished work that this very command would recompute helps nobody). --redo STAGE recomputes.
            _append_resume(out, command)
            return out, True
        if not overwrite:
            diffs = _config_diffs(_recorded(old.get("config", {})), _fingerprinted(to_dict(cfg)))
            hint = (" (torch threads change the trained bits: resume with the run's executor.threads_per_job)"
                    if any(x.startswith("executor.threads_per_job") for x in diffs) else "")
            raise FileExistsError(f"--out {out} holds a MOL run of a different config ({'; '.join(diffs[:6])}){hint}; "
                                  "pass --overwrite to replace it or choose a new directory")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record_run(out, config=cfg, seed=cfg.seed, command=command)
    write_json(marker, {"fingerprint": cfg.fingerprint(), "config": _fingerprinted(to_dict(cfg))})
    return out, False


def _fingerprinted(d: dict) -> dict:
    out = {k: v for k, v in d.items() if k not in ("executor", "sweep", "note", "name")}
    out["executor"] = {"threads_per_job": d.get("executor", {}).get("threads_per_job", 1)}
    return out


def _recorded(d: Any) -> Any:
    # Markers written before threads_per_job was fingerprinted ran at its default of 1.
    if isinstance(d, dict) and "executor" not in d:
        return {**d, "executor": {"threads_per_job": 1}}
    return d


def _config_diffs(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _config_diffs(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def _append_resume(out: Path, command: list[str] | None) -> None:
    import datetime as dt

    run_json = out / "run.json"
    try:
        info = read_json(run_json) if run_json.is_file() else {}
    except ValueError:
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("resumes", []), list):
        # run.json is a log of the commands run, not an input: a damaged one is set aside, never a reason to stop.
        if run_json.is_file():
            os.replace(run_json, run_json.with_suffix(".json.damaged"))
        info = {}
    info.setdefault("resumes", []).append({
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else sys.argv,
    })
    write_json(run_json, info)


def load_run_config(run_dir: str | Path) -> MolConfig:
    """The resolved config of an existing run directory (refused when ``config.yaml`` no longer matches the run)."""
    from simdiff.config import load_config, to_dict

    run_dir = Path(run_dir)
    if not (run_dir / RUN_MARKER).is_file():
        raise FileNotFoundError(f"{run_dir} is not a MOL run directory ({RUN_MARKER} missing)")
    cfg = load_config(MolConfig, run_dir / "config.yaml")
    marker = read_json(run_dir / RUN_MARKER)
    stored = marker.get("fingerprint") if isinstance(marker, dict) else None
    if stored != cfg.fingerprint():
        # config.yaml is what reports and probes read; if it no longer describes what ran, say so.
        diffs = _config_diffs(_recorded(marker.get("config", {})) if isinstance(marker, dict) else {},
                              _fingerprinted(to_dict(cfg)))
        raise UserError(f"{run_dir / 'config.yaml'} does not describe the run in {run_dir} (fingerprint "
                        f"{cfg.fingerprint()}, the run's {stored}; {'; '.join(diffs[:6]) or 'unreadable record'}): "
                        "it was edited after the run; restore it")
    return cfg


def with_executor(cfg: MolConfig, **changes: Any) -> MolConfig:
    """The same run on another executor (backend, workers, address): not part of the fingerprint.

    ``threads_per_job`` is, so changing it here makes another run (a resume refuses it)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(cfg, executor=dataclasses.replace(cfg.executor, **changes)) if changes else cfg


# ================================================================================================================
# The MOL stages
# ================================================================================================================
def round_names(cfg: MolConfig) -> list[int]:
    return list(range(cfg.dagger.rounds + 1))


def build_stages(cfg: MolConfig) -> list[Stage]:
    """The ordered stages of a run of ``cfg`` (the DAgger rounds unrolled)."""
    st = [
        Stage("demos", _stage_demos, f"{cfg.demos.per_domain} scripted demos per domain {list(cfg.env.domains)}",
              ("demos", "jobs/demos.json")),
        Stage("specialists", _stage_specialists, f"one '{cfg.specialist.size}' policy per domain, as jobs",
              ("specialists", "jobs/specialists.json")),
    ]
    for r in round_names(cfg):
        src = "resets + specialist rollouts" if r == 0 else f"rollouts of generalist round {r - 1} (DAgger)" + (
            "" if cfg.dagger.domains is None else f" on domains {cfg.round_domains(r)}")
        final = r == cfg.dagger.rounds
        gens = (f"generalists/distilled_r{r}", f"jobs/generalist_r{r}.json") + (
            ("generalists/labeled_only",) if final else ())
        st += [
            Stage(f"conditions_r{r}", _bind(_stage_conditions, r), f"unlabeled conditions from {src}",
                  (f"conditions/round_{r}", f"jobs/conditions_r{r}.json")),
            Stage(f"pseudo_r{r}", _bind(_stage_pseudo, r), "label conditions with their domain's specialist",
                  (f"pseudo/round_{r}",)),
            Stage(f"generalist_r{r}", _bind(_stage_generalist, r),
                  f"'{cfg.generalist.size}' generalist on paired + pseudo rounds "
                  f"{', '.join(map(str, pseudo_rounds(cfg, r)))}"
                  + (" (+ labeled-only baseline)" if final else ""), gens),
        ]
    st += [Stage("evaluate", _stage_evaluate, f"on-policy at {[str(x) for x in cfg.env.eval_levels]}, "
                                              f"{cfg.evaluation.episodes} held-out seeds each",
                 ("eval", "jobs/evaluate.json")),
           Stage("report", _stage_report, "metrics.json, report.md, plots",
                 ("metrics.json", "details.json", "report.md", "plots"))]
    return st


def _bind(fn: Callable[[RunContext, int], dict], r: int) -> Callable[[RunContext], dict]:
    def stage(ctx: RunContext) -> dict:
        return fn(ctx, r)

    stage.__name__ = f"{fn.__name__}_r{r}"
    return stage


def run_pipeline(cfg: MolConfig, out: str | Path, *, overwrite: bool = False, redo: str | None = None,
                 stop_after: str | None = None, command: list[str] | None = None, print_table: bool = False,
                 quiet: bool = False) -> dict:
    """Run or resume every stage of ``cfg`` into ``out``; returns metrics.json's content (or {} if stopped)."""
    from simdiff.pipelines.mol import adapters

    stages = build_stages(cfg)
    names = [s.name for s in stages]
    if stop_after is not None and stop_after not in names:
        raise ValueError(f"--stop-after: unknown stage {stop_after!r}; expected one of {', '.join(names)}")
    adapters.preflight(cfg)  # bad env id / policy overrides fail here, before anything is written
    root, resumed = prepare_run_dir(cfg, out, overwrite=overwrite, command=command)
    log = (lambda msg: None) if quiet else (lambda msg: print(f"[mol] {msg}", file=sys.stderr, flush=True))
    if redo is not None:
        removed = invalidate_from(root, stages, redo)
        log(f"--redo {redo}: cleared {', '.join(removed) or 'nothing'}")
    if resumed and overwrite:
        log(f"--overwrite ignored: {root} holds a run of this same config, so it resumes (--redo STAGE recomputes "
            "a stage and everything after it)")
    if resumed:
        log(f"resuming {root}: done already: {', '.join(done_stages(root)) or 'nothing'}")
    ctx = RunContext(cfg=cfg, root=root, executor=cfg.executor, log=log)
    if stop_after is not None:
        stages = stages[: names.index(stop_after) + 1]
    t0 = time.perf_counter()
    run_stages(ctx, stages)
    if stop_after is not None and stop_after != "report":
        log(f"stopped after {stop_after}; rerun the same command without --stop-after to continue")
        return {}
    from simdiff.pipelines.mol.report import format_table, headline, load_metrics

    metrics = load_metrics(root / "metrics.json")
    if print_table:
        print(_table_banner(cfg, root, time.perf_counter() - t0))
        print(format_table(metrics))
        for line in headline(metrics):
            print(line)
        print(f"\nreport: {root / 'report.md'}   metrics: {root / 'metrics.json'}")
    return metrics


def _table_banner(cfg: MolConfig, root: Path, seconds: float) -> str:
    ev = cfg.evaluation
    lines = [f"\nMOL on {cfg.env.id} ({cfg.name}): success % [95% Wilson CI], "
             f"{ev.episodes} held-out episodes per cell (seeds {ev.seed}..{ev.seed + ev.episodes - 1})"]
    if ev.episodes < 100:
        lines.append(f"NOTE: {ev.episodes} < 100 episodes per cell: a quick run, intervals are wide.")
    if cfg.note:
        lines.append(cfg.note)
    lines.append(f"(this invocation: {seconds:.0f} s)")
    return "\n".join(lines) + "\n"


def rebuild_report(run_dir: str | Path) -> str:
    """``simdiff mol report DIR``: rebuild metrics.json, report.md and plots from the evaluation cells."""
    from simdiff.pipelines.mol.report import format_table, headline, load_metrics

    cfg = load_run_config(run_dir)
    root = Path(run_dir)
    ev_marker = read_marker(root, "evaluate")
    if ev_marker is None:
        raise FileNotFoundError(f"{root}: the evaluate stage has not finished; run `simdiff mol run` first")
    ctx = RunContext(cfg=cfg, root=root, executor=cfg.executor)
    _stage_report(ctx)
    metrics = load_metrics(root / "metrics.json")
    return "\n".join([format_table(metrics), *headline(metrics)])


# -- stage 1: paired demos ---------------------------------------------------------------------------------------
def demo_path(root: Path, domain: int) -> Path:
    return root / "demos" / f"domain_{domain}.hdf5"


def _stage_demos(ctx: RunContext) -> dict:
    from simdiff.pipelines.mol import adapters

    cfg = ctx.cfg
    jobs = [{"env_id": cfg.env.id, "level": d, "episodes": cfg.demos.per_domain, "seed": cfg.demo_seed(d),
             "out": str(demo_path(ctx.root, d)), "successful_only": cfg.demos.successful_only,
             "make_kwargs": dict(cfg.env.make_kwargs)}
            for d in cfg.env.domains if not demo_path(ctx.root, d).with_suffix(".json").is_file()]
    if jobs:
        results = adapters.run_jobs(adapters.demos_job, jobs, ctx.executor,
                                    names=[f"demos_domain_{j['level']}" for j in jobs], desc="demos")
        for job, res in zip(jobs, results):
            if res.ok:  # finished domains are kept even if another failed
                write_json(Path(job["out"]).with_suffix(".json"), res.value)
        _raise_failed(results, "demos", ctx)
    out = {}
    for d in cfg.env.domains:
        out[f"domain_{d}"] = info = read_json(demo_path(ctx.root, d).with_suffix(".json"))
        ctx.log(f"  domain {d}: {info['episodes']} demos, {info['steps']} steps")
    return out


# -- jobs (specialists, generalists) -------------------------------------------------------------------------------
def _run_policy_jobs(ctx: RunContext, jobs: list[tuple[str, dict]], desc: str) -> dict:
    """Train policies as executor jobs; each finished job leaves ``<out>/job.json``. Failed jobs (after the
    retry) are written to ``DIR/jobs/<stage>.json`` and raised as one StageError, never dropped."""
    from simdiff.pipelines.mol import adapters

    todo = [(name, job) for name, job in jobs if not (Path(job["out_dir"]) / "job.json").is_file()]
    summary = {name: read_json(Path(job["out_dir"]) / "job.json") for name, job in jobs if (name, job) not in todo}
    if todo:
        ex = ctx.executor
        ctx.log(f"  {len(todo)} job(s) on {ex.backend} (workers={ex.workers}"
                + (f", ray address {ex.ray_address}" if ex.ray_address else "") + ")")
        results = adapters.run_jobs(adapters.train_policy_job, [j for _, j in todo], ex,
                                    names=[n for n, _ in todo], desc=desc)
        for (name, job), res in zip(todo, results):
            if res.ok:
                adapters.finish_policy_job(job, res.value)
                summary[name] = read_json(Path(job["out_dir"]) / "job.json")
                ctx.log(f"  {name}: ok in {res.wall_time:.0f} s (attempts {res.attempts}), "
                        f"final loss {summary[name].get('final_loss', float('nan')):.4g}")
            else:
                ctx.log(f"  {name}: FAILED after {res.attempts} attempt(s)")
        _raise_failed(results, desc, ctx)
    return summary


def specialist_dir(root: Path, domain: int) -> Path:
    return root / "specialists" / f"domain_{domain}"


def _stage_specialists(ctx: RunContext) -> dict:
    from simdiff.config import to_dict

    cfg = ctx.cfg
    jobs = []
    for d in cfg.env.domains:
        jobs.append((f"specialist_domain_{d}", {
            "spec": to_dict(cfg.specialist), "env_id": cfg.env.id, "demos": [str(demo_path(ctx.root, d))],
            "pseudo": [], "out_dir": str(specialist_dir(ctx.root, d)), "steps": cfg.specialist.steps,
            "seed": train_seed(cfg, f"specialist_{d}"), "threads": ctx.executor.threads_per_job}))
    return _run_policy_jobs(ctx, jobs, "specialists")


def train_seed(cfg: MolConfig, what: str) -> int:
    import zlib

    # A stable per-model seed: the same model gets the same seed whatever else the run contains.
    return (cfg.seed * 1_000_003 + zlib.crc32(what.encode())) % (2**31 - 1)


# -- stage 3: unlabeled conditions ---------------------------------------------------------------------------------
def conditions_path(root: Path, r: int, d: int) -> Path:
    return root / "conditions" / f"round_{r}" / f"domain_{d}.npz"


def generalist_dir(root: Path, name: str) -> Path:
    return root / "generalists" / name


def _stage_conditions(ctx: RunContext, r: int) -> dict:
    from simdiff.pipelines.mol import adapters

    cfg, c = ctx.cfg, ctx.cfg.conditions
    jobs = []
    for d in cfg.round_domains(r):
        path = conditions_path(ctx.root, r, d)
        if path.with_suffix(".json").is_file() and path.is_file():
            continue
        s0 = cfg.condition_seed(d, r)
        if r == 0:
            policy = specialist_dir(ctx.root, d)
            resets = list(range(s0, s0 + c.resets_per_domain))
            rolls = list(range(s0 + c.resets_per_domain, s0 + c.resets_per_domain + c.rollouts_per_domain))
            source, attempts, search = "specialist", c.attempts, (c.search_k, c.search_lookahead, c.search_eta)
        else:
            policy = generalist_dir(ctx.root, f"distilled_r{r - 1}")
            resets, source, attempts = [], "dagger", 1
            search = (cfg.dagger.search_k, cfg.dagger.search_lookahead, cfg.dagger.search_eta)
            rolls = list(range(s0, s0 + cfg.dagger.rollouts_per_domain))
        jobs.append({"env_id": cfg.env.id, "level": d, "make_kwargs": dict(cfg.env.make_kwargs),
                     "teacher_dir": "expert" if cfg.dagger.teacher == "expert" else str(specialist_dir(ctx.root, d)),
                     "policy_dir": str(policy), "reset_seeds": resets, "rollout_seeds": rolls,
                     "source": source, "round_": r, "domain": d, "stride": c.stride, "batch_envs": c.batch_envs,
                     "out": str(path), "attempts": attempts, "search_k": search[0],
                     "search_lookahead": search[1], "search_eta": search[2]}
                    | ({"search_proposers": cfg.dagger.search_proposers, "search_rollout": cfg.dagger.search_rollout,
                        "search_shaping": cfg.dagger.search_shaping} if r else {}))
    if jobs:
        results = adapters.run_jobs(adapters.conditions_job, jobs, ctx.executor,
                                    names=[f"conditions_r{r}_domain_{j['domain']}" for j in jobs],
                                    desc=f"conditions_r{r}")
        for job, res in zip(jobs, results):
            if res.ok:
                adapters.finish_file_job(job, res.value)
                write_json(Path(job["out"]).with_suffix(".json"), res.value["stats"])
        _raise_failed(results, f"conditions_r{r}", ctx)
    out = {}
    for d in cfg.round_domains(r):
        st = read_json(conditions_path(ctx.root, r, d).with_suffix(".json"))
        out[f"domain_{d}"] = st
        tries = (f"; {st['rollout_episodes']} episodes over {st['attempts']} tries, seeds solved "
                 f"{st['seeds_solved']:.2f}" if st.get("attempts", 1) > 1 else "")
        if st.get("search_k", 1) > 1:
            tries += f"; simulator-verified best of {st['search_k']} (lookahead {st['search_lookahead']})"
        ctx.log(f"  domain {d}: {st['conditions']} conditions ({st['episodes']} rollouts, "
                f"success {st['rollout_success']:.2f}{tries})")
    return out


def _raise_failed(results: list, what: str, ctx: RunContext | None = None) -> None:
    """Report every job of a stage in ``DIR/jobs/<what>.json``; failures (after retries) raise StageError."""
    failed = [r for r in results if not r.ok]
    where = ""
    if ctx is not None:
        report = ctx.path("jobs", f"{what.replace(' ', '_')}.json")
        write_json(report, {"ok": [r.name for r in results if r.ok],
                            "failed": [{"job": r.name, "attempts": r.attempts, "error": r.error} for r in failed]})
        where = f"; see {report}"
    if failed:
        msgs = "; ".join(f"{r.name} after {r.attempts} attempt(s): {(r.error or '?').strip().splitlines()[-1]}"
                         for r in failed)
        raise StageError(f"{len(failed)} of {len(results)} {what} job(s) failed: {msgs}{where}. Finished jobs "
                         "are kept: rerun the same command to retry the rest (where an error names a damaged input "
                         "file, first recompute the stage that wrote it with --redo STAGE).")


# -- stage 4: pseudo-labels ------------------------------------------------------------------------------------------
def pseudo_path(root: Path, r: int, d: int) -> Path:
    return root / "pseudo" / f"round_{r}" / f"domain_{d}.npz"


def _stage_pseudo(ctx: RunContext, r: int) -> dict:
    from simdiff.pipelines.mol import adapters
    from simdiff.pipelines.mol.conditions import ConditionSet
    from simdiff.pipelines.mol.pseudo import make_pseudo_labels

    cfg, p = ctx.cfg, ctx.cfg.pseudo
    out = {}
    for d in cfg.round_domains(r):
        path = pseudo_path(ctx.root, r, d)
        info = path.with_suffix(".json")
        if not (info.is_file() and path.is_file()):
            cs = ConditionSet.load(conditions_path(ctx.root, r, d))
            cs, dropped = _utility_filter(cfg, cs, conditions_path(ctx.root, r, d)) if r else (cs, 0)
            label_fn = adapters.label_fn(specialist_dir(ctx.root, d), threads=ctx.executor.threads_per_job)
            labels, stats = make_pseudo_labels(cs, label_fn, cfg.conditions.per_domain, p.filter_success,
                                               p.filter_dagger, p.batch_size,
                                               seed=p.seed + cfg.seed * 7919 + 97 * r + d, mode=p.label)
            if cfg.dagger.min_label_utility is not None and r:
                stats["dropped_low_utility"] = dropped
            labels.save(path)
            write_json(info, stats)
        out[f"domain_{d}"] = st = read_json(info)
        low = f", {st['dropped_low_utility']} below the label-utility bar" if "dropped_low_utility" in st else ""
        ctx.log(f"  domain {d}: {st['labeled']} pseudo-labels (pool {st['pool']}, after filter "
                f"{st['after_filter']}{low})")
    return out


def _utility_filter(cfg: MolConfig, cs, path: Path):
    """DAgger conditions whose verified label utility is below ``dagger.min_label_utility`` are dropped."""
    import numpy as np

    from simdiff.pipelines.mol.conditions import SOURCES
    from simdiff.pipelines.mol.dagger import load_utility, utility_path

    thr = cfg.dagger.min_label_utility
    if thr is None:
        return cs, 0
    u = load_utility(path, len(cs))
    if u is None:
        raise StageError(f"dagger.min_label_utility: {utility_path(path)} is missing (it is written by searched "
                         "DAgger, dagger.search_k >= 2)")
    keep = (cs.source != SOURCES["dagger"]) | (u >= thr)
    return cs.subset(np.flatnonzero(keep)), int((~keep).sum())


# -- stage 5: generalists --------------------------------------------------------------------------------------------
def pseudo_rounds(cfg: MolConfig, r: int) -> list[int]:
    """The rounds whose pseudo-labels the round-``r`` generalist trains on (``dagger.pseudo_rounds``): "all" =
    0..r, "latest" = r, "dagger" = the DAgger rounds 1..r (round 0 for the round-0 generalist)."""
    mode = cfg.dagger.pseudo_rounds
    if mode == "latest":
        return [r]
    return list(range(1 if mode == "dagger" and r else 0, r + 1))


def generalist_pseudo_files(cfg: MolConfig, root: Path, r: int) -> list[str]:
    """The pseudo-label files the round-``r`` distilled generalist trains on."""
    return [str(pseudo_path(root, q, d)) for q in pseudo_rounds(cfg, r) for d in cfg.round_domains(q)]


def final_paired_fraction(cfg: MolConfig) -> float | None:
    """The final distilled generalist's paired share: ``pseudo.final_paired_fraction``, else the rounds' one."""
    p = cfg.pseudo
    return p.paired_fraction if p.final_paired_fraction is None else p.final_paired_fraction


def generalist_jobs(cfg: MolConfig, root: Path, r: int, threads: int = 1) -> list[tuple[str, dict]]:
    """The round-``r`` generalist training jobs: the distilled one, and in the final round the labeled-only one.

    The labeled-only baseline needs only the paired demos, but it has the final distilled generalist's
    architecture and budget, so the two train side by side; next to a cheaper acting generalist it would leave
    a worker idle for most of its stage.
    """
    from simdiff.config import to_dict
    from simdiff.pipelines.mol.adapters import intermediate_generalist

    final = r == cfg.dagger.rounds
    steps = cfg.generalist.steps if final else max(1, round(cfg.generalist.steps *
                                                             cfg.dagger.intermediate_steps_fraction))
    demos = [str(demo_path(root, d)) for d in cfg.env.domains]
    pseudo = generalist_pseudo_files(cfg, root, r)
    base = {"spec": to_dict(cfg.generalist), "env_id": cfg.env.id, "demos": demos, "threads": threads}
    # One seed for both generalists (the same initial weights): they differ only in their data.
    seed = train_seed(cfg, "generalist")
    # The acting (intermediate) generalists may have their own architecture; the final two always share one.
    spec = base["spec"] if final else to_dict(intermediate_generalist(cfg))
    jobs = [(f"generalist_distilled_r{r}", {**base, "spec": spec, "pseudo": pseudo, "steps": steps, "seed": seed,
                                            "paired_fraction": final_paired_fraction(cfg) if final
                                            else cfg.pseudo.paired_fraction,
                                            **({"finetune_fraction": cfg.pseudo.finetune_fraction}
                                               if final and cfg.pseudo.finetune_fraction else {}),
                                            **({"paired_domain_weights": list(cfg.pseudo.paired_domain_weights)}
                                               if final and cfg.pseudo.paired_domain_weights else {}),
                                            **({"source_token": True} if final and cfg.pseudo.source_token else {}),
                                            "out_dir": str(generalist_dir(root, f"distilled_r{r}"))})]
    if final:
        jobs.append(("generalist_labeled_only", {**base, "pseudo": [], "steps": cfg.generalist.steps,
                                                 "seed": seed,
                                                 "out_dir": str(generalist_dir(root, "labeled_only"))}))
    return jobs


def _stage_generalist(ctx: RunContext, r: int) -> dict:
    jobs = generalist_jobs(ctx.cfg, ctx.root, r, ctx.executor.threads_per_job)
    return _run_policy_jobs(ctx, jobs, f"generalist_r{r}")


# -- stage 6: evaluation --------------------------------------------------------------------------------------------
def eval_cell_path(root: Path, method: str, level_key_: str) -> Path:
    return root / "eval" / method / f"{level_key_}.json"


def eval_plan(cfg: MolConfig, root: Path) -> list[dict]:
    """Every (method, level) cell to evaluate: which policy, on which level.

    ``specialists`` at a trained level k is the domain-k specialist (its own domain); where a level has no own
    specialist (domains a subset of levels) the specialist of the nearest lower domain is used (else the
    lowest). On ``shift`` every specialist is evaluated when the rule needs it ("best"/"average") or
    ``evaluation.all_specialists_on_shift``; the rule then picks the reported cell (see report).
    """
    from simdiff.pipelines.mol.config import level_key

    ev, domains = cfg.evaluation, sorted(cfg.env.domains)
    cells = []
    for lv in cfg.env.eval_levels:
        key = level_key(lv)
        for m in ev.methods:
            if m == "specialists":
                if lv == "shift":
                    need_all = ev.shift_specialist != "level_3" or ev.all_specialists_on_shift
                    specs = domains if need_all else [max(domains)]
                    for d in specs:
                        cells.append({"method": f"specialist_domain_{d}", "level": lv, "key": key,
                                      "policy": str(specialist_dir(root, d))})
                    continue
                own = lv if lv in domains else max([d for d in domains if d <= lv], default=min(domains))
                cells.append({"method": f"specialist_domain_{own}", "level": lv, "key": key,
                              "policy": str(specialist_dir(root, own))})
            elif m == "expert":
                cells.append({"method": "expert", "level": lv, "key": key, "policy": "expert"})
            else:
                name = "labeled_only" if m == "generalist_labeled_only" else f"distilled_r{cfg.dagger.rounds}"
                cells.append({"method": m, "level": lv, "key": key, "policy": str(generalist_dir(root, name))})
    return cells


def _stage_evaluate(ctx: RunContext) -> dict:
    from simdiff.pipelines.mol import adapters

    cfg, ev = ctx.cfg, ctx.cfg.evaluation
    cells = eval_plan(cfg, ctx.root)
    todo = [c for c in cells if not eval_cell_path(ctx.root, c["method"], c["key"]).is_file()]
    ctx.log(f"  {len(cells)} cells x {ev.episodes} episodes ({len(cells) - len(todo)} done already)")
    jobs = [{"policy": c["policy"], "env_id": cfg.env.id, "level": c["level"], "episodes": ev.episodes,
             "seed": cfg.eval_seed(), "batch_envs": ev.batch_envs, "make_kwargs": dict(cfg.env.make_kwargs),
             "out": str(eval_cell_path(ctx.root, c["method"], c["key"]))} for c in todo]
    if jobs:
        results = adapters.run_jobs(adapters.eval_cell_job, jobs, ctx.executor,
                                    names=[f"{c['method']}@{c['key']}" for c in todo], desc="evaluate")
        for res in results:
            if res.ok:
                ctx.log(f"  {res.name:<36} success {res.value['successes']}/{res.value['episodes']} "
                        f"({res.value['seconds']:.0f} s)")
        _raise_failed(results, "evaluate", ctx)
    return {"cells": len(cells)}


# -- report ------------------------------------------------------------------------------------------------------
def _read_cell(path: Path) -> dict:
    """One evaluation cell's metrics entry; a damaged cell names its file and how to recompute it."""
    from simdiff.pipelines.mol.report import cell

    res = read_json(path)
    ok = isinstance(res, dict) and all(isinstance(res.get(k), int) and not isinstance(res.get(k), bool)
                                       for k in ("successes", "episodes"))
    if not ok or not 0 <= res["successes"] <= res["episodes"] or res["episodes"] < 1:
        got = {k: res.get(k) for k in ("successes", "episodes")} if isinstance(res, dict) else type(res).__name__
        raise UserError(f"{path}: expected an evaluation cell with integers 0 <= successes <= episodes, episodes "
                        f">= 1; received {got}. Delete the file and rerun the command to re-evaluate that cell")
    return cell(res["successes"], res["episodes"])


def collect_metrics(cfg: MolConfig, root: Path) -> tuple[dict, dict]:
    """metrics.json's methods (plus the details the report shows) from the evaluation cells."""
    from simdiff.pipelines.mol.report import pooled

    methods: dict[str, dict] = {}
    spec_shift: dict[str, dict] = {}
    for c in eval_plan(cfg, root):
        entry = _read_cell(eval_cell_path(root, c["method"], c["key"]))
        if c["method"].startswith("specialist_domain_"):
            if c["key"] == "shift":
                spec_shift[c["method"]] = entry
            else:
                methods.setdefault("specialists", {})[c["key"]] = entry
        else:
            methods.setdefault(c["method"], {})[c["key"]] = entry
    note = None
    if spec_shift:
        rule = cfg.evaluation.shift_specialist
        widest = f"specialist_domain_{max(cfg.env.domains)}"
        if rule == "level_3" or len(spec_shift) == 1:
            chosen, note = spec_shift[widest], (f"the widest-domain specialist ({widest}, the one a user would "
                                                 "deploy outside the trained ranges)")
        elif rule == "best":
            best = max(spec_shift, key=lambda k: spec_shift[k]["success"])
            chosen, note = spec_shift[best], f"the best specialist on shift ({best}; chosen on the test episodes)"
        else:
            chosen, note = pooled(list(spec_shift.values())), "the average over all specialists (pooled episodes)"
        methods.setdefault("specialists", {})["shift"] = chosen
    # Methods in a fixed order, levels in evaluation order.
    from simdiff.pipelines.mol.config import METHODS, level_key

    order = [level_key(lv) for lv in cfg.env.eval_levels]
    methods = {m: {k: methods[m][k] for k in order if k in methods[m]} for m in METHODS if m in methods}
    details = {"specialists_on_shift": spec_shift if len(spec_shift) > 1 else {}, "shift_specialist_note": note}
    return methods, details


def _stage_report(ctx: RunContext) -> dict:
    from simdiff.config import to_dict
    from simdiff.pipelines.mol.report import write_metrics, write_report

    cfg, root = ctx.cfg, ctx.root
    methods, details = collect_metrics(cfg, root)
    metrics = write_metrics(root / "metrics.json", methods)
    timings = {}
    for st in build_stages(cfg):
        m = read_marker(root, st.name)
        if m:
            timings[st.name] = {"seconds": m["seconds"], "cpu_seconds": m.get("cpu_seconds")}
    details.update({
        "name": cfg.name, "note": cfg.note, "env_id": cfg.env.id, "domains": list(cfg.env.domains),
        "evaluation": {"episodes": cfg.evaluation.episodes,
                       "seed_range": f"{cfg.eval_seed()}..{cfg.eval_seed() + cfg.evaluation.episodes - 1}"},
        "data": _data_summary(cfg, root), "timings": timings,
        "policies": {"specialist": to_dict(cfg.specialist), "generalist": to_dict(cfg.generalist),
                     "dagger_rounds": cfg.dagger.rounds, "filter_success": cfg.pseudo.filter_success,
                     "pseudo_labels": _labels_summary(cfg)},
    })
    write_report(root, metrics, details)
    return {"methods": sorted(metrics["methods"])}


def _labels_summary(cfg: MolConfig) -> str:
    """How the pseudo-labels of this run were made, in one line for the report."""
    c, g, p = cfg.conditions, cfg.dagger, cfg.pseudo
    parts = [f"round 0 from specialist rollouts ({p.label} chunks"
             + (f", simulator-verified best of {c.search_k}, lookahead {c.search_lookahead}, eta {c.search_eta:g}"
                if c.search_k > 1 else "")
             + (f", up to {c.attempts} tries" if c.attempts > 1 else "") + ")"]
    if g.rounds:
        if g.teacher == "expert":
            how = "DIAGNOSTIC: labels from the privileged scripted expert, not semi-supervised"
        elif g.search_k > 1:
            who = ("specialist" if g.search_proposers == "specialist"
                   else f"{g.search_k} specialist + {g.search_k} generalist candidates:")
            how = (f"searched labels: {who} best of {g.search_k * (1 + (g.search_proposers != 'specialist'))}, "
                   f"lookahead {g.search_lookahead} by the {g.search_rollout}, eta "
                   f"{g.search_eta:g}" + (f", staging shaping {g.search_shaping:g}" if g.search_shaping else "")
                   + ", at the generalist's replanning states"
                   + ("" if g.min_label_utility is None else f", kept if verified utility >= {g.min_label_utility:g}"))
        else:
            how = "one fresh specialist sample per state"
        on = "" if g.domains is None else f" on domains {cfg.round_domains(1)}"
        parts.append(f"{g.rounds} DAgger round(s) of {g.rollouts_per_domain} generalist rollouts per domain{on} ({how}); "
                     f"the final generalist trains on pseudo-labels of "
                     + {"latest": "the last round only", "dagger": "every DAgger round",
                        "all": "every round"}[g.pseudo_rounds])
    fpf = final_paired_fraction(cfg)
    if fpf is not None:
        parts.append(f"{fpf:.0%} of each final distilled batch from the paired demos"
                     + ("" if fpf == p.paired_fraction or p.paired_fraction is None
                        else f" ({p.paired_fraction:.0%} in the DAgger rounds)")
                     + ("" if p.paired_domain_weights is None else
                        ", their domains weighted " + ":".join(f"{w:g}" for w in p.paired_domain_weights)))
    if p.finetune_fraction:
        parts.append(f"last {p.finetune_fraction:.0%} of the final distilled generalist's steps on paired demos only")
    return "; ".join(parts)


def _data_summary(cfg: MolConfig, root: Path) -> dict:
    out = {}
    for d in cfg.env.domains:
        row: dict[str, Any] = {}
        info = demo_path(root, d).with_suffix(".json")
        if info.is_file():
            di = read_json(info)
            row["paired_episodes"], row["paired_windows"] = di.get("episodes"), di.get("steps")
        cond = pseudo_kept = 0
        for r in round_names(cfg):
            cp, pp = conditions_path(root, r, d).with_suffix(".json"), pseudo_path(root, r, d).with_suffix(".json")
            if cp.is_file():
                cond += read_json(cp).get("conditions", 0)
            if pp.is_file():
                pseudo_kept += read_json(pp).get("labeled", 0)
        row["conditions"], row["pseudo_kept"] = cond, pseudo_kept
        out[f"domain {d}"] = row
    return out
