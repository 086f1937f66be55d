"""Decentralized training: partition the data, then train K experts, the router (and the monolithic baseline)
as independent jobs through :func:`simdiff.executors.run_jobs` (local process pool by default, or Ray).

Run directory written by :func:`train_ddm`::

    DIR/config.yaml, run.json        resolved config, seed, command, versions
    DIR/data/train.npz               generated lattices (lattice domain with ``skild.data.path: null``)
    DIR/partition/                   partition.npz (labels, centers, standardisation) + partition.json
    DIR/shared.json                  the statistics every expert must share (noise spectrum / normalizers)
    DIR/shards/expert_<k>.npz        the data of cluster k (what expert k reads, and nothing else)
    DIR/shards/all.npz               all data (monolithic baseline and router)
    DIR/plan.json                    per member: steps, seed, shard and its SHA-256
    DIR/experts/expert_<k>/          one training run per expert: checkpoint/, metrics.jsonl, loss.png, and the
                                     export (model/ for lattices, policy/ for policies)
    DIR/monolithic/                  the matched-compute baseline (same layout)
    DIR/router/                      the router's training run; router/model/ is the export
    DIR/ddm.json                     summary of the last call: status, steps, FLOPs, wall time per member

Isolation: a member job reads only config.yaml, plan.json, shared.json and its own shard; jobs share no state
and write only under their own directory. Faults: each job checks its own export and checkpoint before
training; a corrupt one (SHA-256 mismatch, truncated, unreadable) is moved aside to ``<name>.corrupt-<i>`` and the
member retrains from its last valid state (reported in ``ddm.json``, never skipped). A finished member is not
retrained; an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simdiff.config import load_config, to_dict
from simdiff.errors import CheckpointError, DatasetError, UserError
from simdiff.pipelines.ddm.config import EXPERT_SEED_STRIDE, DDMConfig

PARTITION_DIR = "partition"
SHARED_JSON = "shared.json"
PLAN_JSON = "plan.json"
SUMMARY_JSON = "ddm.json"
SHARDS_DIR = "shards"
ROUTER = "router"
MONOLITHIC = "monolithic"
ROUTER_MODEL_DIR = "model"
ROUTER_KIND = "simdiff.ddm.router"


def expert_name(k: int) -> str:
    return f"expert_{k}"


def member_dir(run_dir: Path, member: str) -> Path:
    """Output directory of a member: ``experts/expert_<k>``, ``monolithic`` or ``router``."""
    return run_dir / "experts" / member if member.startswith("expert_") else run_dir / member


def member_names(cfg: DDMConfig) -> list[str]:
    names = [expert_name(k) for k in range(cfg.num_experts)] + [ROUTER]
    return names + [MONOLITHIC] if cfg.compute.monolithic else names


def _domain(cfg: DDMConfig):
    if cfg.domain == "ising":
        from simdiff.pipelines.ddm import lattice

        return lattice
    from simdiff.pipelines.ddm import trajectories

    return trajectories


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_run_config(run_dir: str | os.PathLike) -> DDMConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: not a ddm run directory (config.yaml is missing)")
    try:
        return load_config(DDMConfig, path)
    except ValueError:
        from simdiff.pipelines.run_kinds import wrong_run_hint

        hint = wrong_run_hint(run_dir, "simdiff ddm train")
        if not hint:
            raise
    raise UserError(f"{run_dir}: expected a run of `simdiff ddm train`{hint}")


# ------------------------------------------------------------------------------------------ preparation
def init_run(cfg: DDMConfig, run_dir: str | os.PathLike, command: list[str] | None = None) -> Path:
    """Create ``run_dir`` and record the run (config.yaml, run.json), or check that an existing run directory was
    made with the same config (a different one is an error: use a new directory)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _record(cfg, run_dir, command)
    return run_dir


#: config fields that do not change what is trained (sampling, evaluation): free to change on a resume
FREE_FIELDS = ("skild.sample", "skild.validate", "policy.eval", "policy.policy.eval", "policy.policy.noise.clip",
               "policy.policy.noise.sampler", "policy.policy.noise.inference_steps")


def _record(cfg: DDMConfig, run_dir: Path, command: list[str] | None) -> None:
    import yaml

    from simdiff.checkpoint import config_diff
    from simdiff.config import dump_yaml
    from simdiff.utils.run import record_run

    stored = run_dir / "config.yaml"
    if stored.exists():
        # read as plain YAML: a stored run must stay comparable even when the schema gained or changed a field
        prev = yaml.safe_load(stored.read_text(encoding="utf-8")) or {}
        diff = config_diff(prev, to_dict(cfg), ignore=FREE_FIELDS)
        if diff:
            raise UserError(f"{run_dir} holds a ddm run with a different config; use a new --out or the same "
                            "config:\n  " + "\n  ".join(diff))
        if config_diff(prev, to_dict(cfg)):
            dump_yaml(cfg, stored)   # new sampling / evaluation settings: the run now samples with these
        return
    seed = cfg.skild.train.seed if cfg.domain == "ising" else cfg.policy.policy.train.seed
    record_run(run_dir, config=cfg, seed=seed, command=command if command is not None else list(sys.argv))


def _partition(cfg: DDMConfig, run_dir: Path, feats: np.ndarray, names: list[str], fp: str):
    from simdiff.pipelines.ddm import partition as P

    pdir = run_dir / PARTITION_DIR
    if (pdir / P.PARTITION_JSON).exists():
        part = P.load_partition(pdir)
        if part.data_fingerprint != fp or part.num_clusters != cfg.num_experts:
            raise DatasetError(f"{pdir}: the saved partition belongs to other data or another number of experts "
                               f"(fingerprint {part.data_fingerprint[:12]}..., K={part.num_clusters}); use a new "
                               "run directory")
        return part
    p = cfg.partition
    if p.method == "kmeans":
        part = P.kmeans_partition(feats, names, cfg.num_experts, p.seed, p.n_init, p.max_iter, fp,
                                  p.min_cluster_size)
    else:
        with np.load(p.path, allow_pickle=False) as z:
            if "labels" not in z:
                raise DatasetError(f"{p.path}: expected an integer array 'labels', found keys {list(z.keys())}")
            labels = np.asarray(z["labels"])
        part = P.given_partition(labels, cfg.num_experts, feats, names, fp, p.min_cluster_size)
    P.save_partition(part, pdir)
    return part


def prepare(cfg: DDMConfig, run_dir: str | os.PathLike) -> dict:
    """Load the data, partition it (or reuse the saved partition), write shards, shared statistics and the plan.

    Idempotent: a second call reuses the partition, shards and shared statistics already in ``run_dir``.
    Returns the plan (also written to ``plan.json``).
    """
    from simdiff.pipelines.ddm.partition import split_steps
    from simdiff.utils.io import read_json, write_json

    run_dir = Path(run_dir)
    dom = _domain(cfg)
    data, source = dom.training_data(cfg, run_dir)
    fp = dom.fingerprint(data)
    feats, names = dom.features(cfg, data)
    part = _partition(cfg, run_dir, feats, names, fp)
    shared_path = run_dir / SHARED_JSON
    if shared_path.exists():
        shared = read_json(shared_path)
    else:
        shared = dom.shared_stats(cfg, data)
        write_json(shared_path, shared)
    shards = run_dir / SHARDS_DIR
    shards.mkdir(parents=True, exist_ok=True)
    rows = {expert_name(k): part.indices(k) for k in range(cfg.num_experts)}
    rows["all"] = np.arange(part.labels.shape[0])
    for name, r in rows.items():
        if not (shards / f"{name}.npz").exists():
            dom.write_shard(shards / f"{name}.npz", data, r)
    # proportional to each cluster's training samples: lattices, or the steps of its episodes (not the episode
    # count: long episodes hold more training windows)
    samples = dom.cluster_samples(data, part)
    steps = split_steps(cfg.total_steps, samples, cfg.compute.split, cfg.compute.min_steps)
    base_seed = cfg.skild.train.seed if cfg.domain == "ising" else cfg.policy.policy.train.seed
    members: dict[str, dict] = {}
    for k in range(cfg.num_experts):
        name = expert_name(k)
        members[name] = {"steps": steps[k], "seed": base_seed + EXPERT_SEED_STRIDE * (k + 1), "cluster": k,
                         "shard": f"{SHARDS_DIR}/{name}.npz", "shard_size": part.sizes[k],
                         "shard_samples": samples[k]}
    if cfg.compute.monolithic:
        members[MONOLITHIC] = {"steps": cfg.total_steps, "seed": base_seed, "cluster": None,
                               "shard": f"{SHARDS_DIR}/all.npz", "shard_size": int(part.labels.shape[0])}
    members[ROUTER] = {"steps": cfg.router.steps, "seed": cfg.router.seed, "cluster": None,
                       "shard": f"{SHARDS_DIR}/all.npz", "shard_size": int(part.labels.shape[0])}
    for m in members.values():
        m["shard_sha256"] = _sha256(run_dir / m["shard"])
    plan = {"domain": cfg.domain, "num_experts": cfg.num_experts, "batch_size": cfg.batch_size,
            "router_batch_size": cfg.router.batch_size, "total_steps": cfg.total_steps,
            "split": cfg.compute.split, "partition": part.meta(),
            "data_source": [str(s) for s in (source if isinstance(source, list) else [source])],
            "members": members}
    old = run_dir / PLAN_JSON
    prev = read_json(old) if old.exists() else {}
    plan["flops_per_step"] = prev.get("flops_per_step") or _count_flops(cfg, run_dir, plan, shared)
    write_json(run_dir / PLAN_JSON, plan)
    return plan


# ------------------------------------------------------------------------------------------- fault checks
def quarantine(path: Path) -> Path:
    """Move a corrupt directory aside to ``<name>.corrupt-<i>`` (kept for inspection, never loaded)."""
    i = 1
    while (path.parent / f"{path.name}.corrupt-{i}").exists():
        i += 1
    dest = path.parent / f"{path.name}.corrupt-{i}"
    os.replace(path, dest)
    return dest


def _check_export(export_dir: Path, matches) -> tuple[str, dict | None]:
    """``("ok", meta)`` for a valid export that matches, ``("missing", None)``, or ``("corrupt: why", None)``."""
    from simdiff.checkpoint import load_checkpoint, resolve_checkpoint_dir

    src = resolve_checkpoint_dir(export_dir)
    if src is None:
        return ("missing", None) if not export_dir.exists() else (f"corrupt: {export_dir} has no meta.json", None)
    try:
        _, meta = load_checkpoint(src)
    except CheckpointError as exc:
        return f"corrupt: {exc}", None
    if not matches(meta):
        raise CheckpointError(f"{src}: this export was made with another config or other shared statistics "
                              "than the run's plan; use a new run directory")
    return "ok", meta


def _check_training_checkpoint(out_dir: Path) -> str | None:
    """Verify ``out_dir/checkpoint``; a corrupt one is quarantined. Returns an event message or None."""
    from simdiff.checkpoint import load_checkpoint, resolve_checkpoint_dir
    from simdiff.training import CHECKPOINT_DIR

    ck = out_dir / CHECKPOINT_DIR
    src = resolve_checkpoint_dir(ck)
    if src is None:
        if ck.exists():  # a directory without meta.json: debris of a broken save or a damaged disk
            return f"training checkpoint {ck} is incomplete; moved to {quarantine(ck).name}, training restarts"
        return None
    try:
        load_checkpoint(src)
    except CheckpointError as exc:
        dest = quarantine(src)
        return f"training checkpoint corrupt ({exc}); moved to {dest.name}, training restarts from step 0"
    return None


# ------------------------------------------------------------------------------------------------ compute
def _op_flops(func, args, out) -> int:
    """FLOPs (2 per multiply-add) of one matrix product or convolution dispatched by aten; 0 for other ops."""
    aten = torch.ops.aten
    if func in (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default):
        a = args[1] if func in (aten.addmm.default, aten.baddbmm.default) else args[0]
        return 2 * out.numel() * a.shape[-1]
    if func is aten.convolution.default:
        x, w, transposed = args[0], args[1], args[6]
        k = int(np.prod(w.shape[2:]))
        # transposed: every input element is scattered through the kernel into w.shape[1] output channels
        return 2 * (x.numel() * w.shape[1] if transposed else out.numel() * w.shape[1]) * k
    return 0


def step_flops(net: torch.nn.Module, loss_fn, batch_fn) -> int:
    """FLOPs of one training step: 3x the forward FLOPs of every matrix product and convolution in the loss
    (the usual forward + backward estimate; norms, activations and elementwise ops are not counted).

    Counted at the aten dispatch level (functional calls included) on a copy of the network, one batch.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            _Count.total += _op_flops(func, args, out)
            return out

    model = copy.deepcopy(net).train()
    gen = torch.Generator().manual_seed(0)
    batch = batch_fn(0, gen)
    with torch.no_grad(), _Count():
        loss_fn(model, batch, gen)
    return 3 * int(_Count.total)


# -------------------------------------------------------------------------------------------------- jobs
def _load_shared_plan(run_dir: Path, member: str) -> tuple[DDMConfig, dict, dict, dict]:
    from simdiff.utils.io import read_json

    cfg = load_run_config(run_dir)
    plan = read_json(run_dir / PLAN_JSON)
    if member not in plan["members"]:
        raise ValueError(f"member: expected one of {sorted(plan['members'])}, received {member!r}")
    spec = plan["members"][member]
    got = _sha256(run_dir / spec["shard"])
    if got != spec["shard_sha256"]:
        raise DatasetError(f"{run_dir / spec['shard']}: the shard changed since the partition was made "
                           f"(SHA-256 {got[:12]}..., plan says {spec['shard_sha256'][:12]}...); use a new run "
                           "directory")
    return cfg, spec, read_json(run_dir / SHARED_JSON), plan


def member_job(run_dir: str, member: str, stop_after: int | None = None, device: str | None = None) -> dict:
    """Train (or resume, or verify) one member in isolation; returns a JSON-able summary.

    Module level, so the executors can send it to pool workers and Ray tasks by reference. ``device``
    (``"cuda"``...) trains the member there (lattice runs).
    """
    run_dir = Path(run_dir)
    cfg, spec, shared, plan = _load_shared_plan(run_dir, member)
    _check_device(cfg, device)
    setup = _router_setup(cfg, run_dir, spec, shared) if member == ROUTER else \
        _expert_setup(cfg, run_dir, spec, shared)
    flops = plan["flops_per_step"]["router" if member == ROUTER else "expert"]
    return _run_member(member, member_dir(run_dir, member), spec, setup, flops, stop_after, device)


def _check_device(cfg: DDMConfig, device: str | None) -> None:
    if device not in (None, "cpu") and cfg.domain != "ising":
        raise ValueError(f"device: {device!r} trains lattice (domain: ising) runs; policy runs train on the CPU, "
                         f"received domain {cfg.domain!r}")


@dataclasses.dataclass
class _Setup:
    """What one member job trains: the loop's inputs, how to export, how to recognise a valid export."""

    train_cfg: Any
    net: torch.nn.Module
    loss_fn: Any
    batch_fn: Any
    export: Any          # export(out_dir, ema, info) -> Path
    matches: Any         # matches(meta) -> bool
    export_name: str     # directory of the export inside the member's run directory


def _expert_setup(cfg: DDMConfig, run_dir: Path, spec: dict, shared: dict) -> _Setup:
    dom = _domain(cfg)
    shard = dom.read_shard(run_dir / spec["shard"])
    torch.manual_seed(spec["seed"])  # initial weights: a function of the member's seed only
    if cfg.domain == "ising":
        from simdiff.pipelines.skild.core import MODEL_DIR

        mcfg = dom.member_config(cfg, spec["steps"], spec["seed"], shared["spectrum"], spec["shard"])
        net, loss_fn, batch_fn = dom.build_member(mcfg, shared["spectrum"], shard)
        return _Setup(mcfg.train, net, loss_fn, batch_fn,
                      lambda out_dir, ema, info: dom.export_member(out_dir, mcfg, shared["spectrum"], ema, info),
                      lambda meta: dom.model_matches(meta, mcfg), MODEL_DIR)
    from policies.diffusion.policy import POLICY_DIR
    from policies.diffusion.train import trainer_config

    pcfg = dom.member_config(cfg, spec["steps"], spec["seed"])
    policy, net, loss_fn, batch_fn = dom.build_member(pcfg, shared, shard)
    return _Setup(trainer_config(pcfg), net, loss_fn, batch_fn,
                  lambda out_dir, ema, info: dom.export_member(out_dir, policy, ema, info),
                  lambda meta: dom.model_matches(meta, pcfg, shared), POLICY_DIR)


def _router_setup(cfg: DDMConfig, run_dir: Path, spec: dict, shared: dict) -> _Setup:
    from simdiff.checkpoint import module_tensors, save_checkpoint
    from simdiff.pipelines.ddm.partition import load_partition
    from simdiff.pipelines.ddm.router import router_loss_fn
    from simdiff.training import TrainConfig

    dom = _domain(cfg)
    data = dom.read_shard(run_dir / spec["shard"])
    labels = load_partition(run_dir / PARTITION_DIR).labels
    r = cfg.router
    torch.manual_seed(r.seed)
    if cfg.domain == "ising":
        net = dom.build_router(cfg)
        batch_fn = dom.router_batch_fn(cfg, data, labels)
        loss_fn = router_loss_fn(dom.router_noise_fn(cfg, shared["spectrum"]))
    else:
        net = dom.build_router(cfg, shared)
        batch_fn = dom.router_batch_fn(cfg, shared, data, labels)
        loss_fn = router_loss_fn(dom.router_noise_fn(cfg))
    tcfg = TrainConfig(steps=r.steps, batch_size=r.batch_size, lr=r.lr, warmup_steps=min(r.warmup_steps, r.steps),
                       seed=r.seed, ckpt_every=min(500, r.steps), log_every=min(50, r.steps))
    router_meta = {"kind": ROUTER_KIND, "domain": cfg.domain, "num_experts": cfg.num_experts,
                   "config": to_dict(r)}

    def export(out_dir, ema, info):
        return save_checkpoint(out_dir / ROUTER_MODEL_DIR, module_tensors("ema", ema), {**router_meta, **info})
    return _Setup(tcfg, net, loss_fn, batch_fn, export,
                  lambda meta: all(meta.get(k) == v for k, v in router_meta.items()), ROUTER_MODEL_DIR)


def _run_member(member: str, out_dir: Path, spec: dict, setup: _Setup, flops: int, stop_after: int | None,
                device: str | None = None) -> dict:
    from simdiff.training import train

    events: list[str] = []
    status, meta = _check_export(out_dir / setup.export_name, setup.matches)
    if status == "ok":
        info = (meta.get("ddm") or (meta.get("metrics") or {}).get("ddm") or {})
        return {**info, "member": member, "status": "cached", "events": events}
    if status != "missing":
        bad = out_dir / setup.export_name
        moved = quarantine(bad).name if bad.exists() else "(already gone)"
        events.append(f"export {status}; moved to {moved}, re-exporting from the training checkpoint")
    msg = _check_training_checkpoint(out_dir)
    if msg:
        events.append(msg)
    tcfg = setup.train_cfg
    t0 = time.perf_counter()
    res = train(setup.net, setup.loss_fn, setup.batch_fn, tcfg, out_dir, desc=member, stop_after=stop_after,
                meta={"ddm": {"member": member, "cluster": spec.get("cluster")}}, device=device)
    info = {"member": member, "cluster": spec.get("cluster"), "steps": res.steps, "planned_steps": tcfg.steps,
            "batch_size": tcfg.batch_size, "samples": res.steps * tcfg.batch_size,
            "shard_size": spec.get("shard_size"), "flops_per_step": flops, "train_flops": flops * res.steps,
            "wall_time_s": res.wall_time, "call_wall_s": time.perf_counter() - t0, "final_loss": res.final_loss,
            "resumed_from": res.resumed_from, "threads": torch.get_num_threads(), "device": device or "cpu"}
    if res.completed:
        setup.export(out_dir, res.ema_model, {"ddm": info, "train": {"steps": res.steps, "wall_time_s": res.wall_time,
                                                                    "final_loss": res.final_loss}})
    status = "stopped" if not res.completed else ("resumed" if res.resumed_from else "trained")
    return {**info, "status": status, "events": events}


def _count_flops(cfg: DDMConfig, run_dir: Path, plan: dict, shared: dict) -> dict:
    """FLOPs per training step of the expert architecture (the monolith's too: same network and batch) and of
    the router, counted once in the driver (the counter's first use costs a few seconds of imports)."""
    with torch.random.fork_rng(devices=[]):
        e = _expert_setup(cfg, run_dir, plan["members"][expert_name(0)], shared)
        r = _router_setup(cfg, run_dir, plan["members"][ROUTER], shared)
        return {"expert": step_flops(e.net, e.loss_fn, e.batch_fn), "router": step_flops(r.net, r.loss_fn, r.batch_fn)}


# ------------------------------------------------------------------------------------------------ driver
def train_ddm(cfg: DDMConfig, run_dir: str | os.PathLike, *, backend: str = "local", workers: int = 2,
              threads_per_job: int = 1, retries: int = 1, ray_address: str | None = None,
              members: list[str] | None = None, stop_after: dict[str, int] | None = None,
              command: list[str] | None = None, device: str | None = None) -> dict:
    """Partition, then train every member (experts, router, monolithic baseline) as independent jobs.

    ``members`` restricts the jobs (e.g. the experts only, for benchmarks); ``stop_after`` maps a member to a
    step at which its job stops as if killed (tests). Returns the summary written to ``ddm.json``; raises
    :class:`simdiff.executors.JobsFailedError` after writing it if a job failed after its retries.
    """
    from simdiff.executors import raise_on_failure, run_jobs
    from simdiff.training import resolve_device

    _check_device(cfg, device)
    resolve_device(device)   # a missing GPU is one clear error here, not one per job
    run_dir = init_run(cfg, run_dir, command)
    t0 = time.perf_counter()
    plan = prepare(cfg, run_dir)
    t_prep = time.perf_counter() - t0
    names = member_names(cfg) if members is None else list(members)
    unknown = [m for m in names if m not in plan["members"]]
    if unknown:
        raise ValueError(f"members: expected names from {sorted(plan['members'])}, received {unknown}")
    # longest jobs first keeps the pool busy (LPT scheduling): the monolith, then experts by steps, router last
    order = sorted(names, key=lambda m: (m == ROUTER, -plan["members"][m]["steps"]))
    jobs = [{"run_dir": str(run_dir), "member": m, "stop_after": (stop_after or {}).get(m), "device": device}
            for m in order]
    t1 = time.perf_counter()
    results = run_jobs(member_job, jobs, backend=backend, workers=workers, threads_per_job=threads_per_job,
                       retries=retries, ray_address=ray_address, desc="ddm members")
    summary = summarize(cfg, plan, results, {"backend": backend, "workers": workers,
                                             "threads_per_job": threads_per_job, "prepare_s": t_prep,
                                             "device": device or "cpu",
                                             "jobs_wall_s": time.perf_counter() - t1})
    from simdiff.utils.io import write_json

    write_json(run_dir / SUMMARY_JSON, summary)
    raise_on_failure(results)
    return summary


def summarize(cfg: DDMConfig, plan: dict, results: list, run_info: dict) -> dict:
    """Per-member status and compute, and the totals: experts vs monolith, the router's share."""
    members: dict[str, Any] = {}
    for r in results:
        name = r.job["member"]
        if r.ok:
            members[name] = {**r.value, "attempts": r.attempts, "job_wall_s": r.wall_time}
        else:
            members[name] = {"member": name, "status": "failed", "attempts": r.attempts,
                             "error": (r.error or "").strip().splitlines()[-1:]}
    experts = [members[n] for n in members if n.startswith("expert_")]

    def total(items, key):
        vals = [m.get(key) for m in items]
        return sum(vals) if vals and all(v is not None for v in vals) else None
    router = members.get(ROUTER, {})
    mono = members.get(MONOLITHIC, {})
    e_flops, r_flops = total(experts, "train_flops"), router.get("train_flops")
    compute = {"experts_steps": total(experts, "steps"), "experts_samples": total(experts, "samples"),
               "experts_flops": e_flops, "router_flops": r_flops, "monolithic_flops": mono.get("train_flops"),
               "monolithic_steps": mono.get("steps"),
               "experts_wall_s": total(experts, "wall_time_s"), "router_wall_s": router.get("wall_time_s"),
               "monolithic_wall_s": mono.get("wall_time_s")}
    if e_flops and r_flops is not None:
        compute["router_share_flops"] = r_flops / (e_flops + r_flops)
    if compute["experts_wall_s"] and compute["router_wall_s"] is not None:
        compute["router_share_wall"] = compute["router_wall_s"] / (compute["experts_wall_s"]
                                                                   + compute["router_wall_s"])
    if e_flops and mono.get("train_flops"):
        compute["experts_over_monolithic_flops"] = e_flops / mono["train_flops"]
    return {"name": cfg.name, "domain": cfg.domain, "num_experts": cfg.num_experts,
            "partition": plan["partition"], "run": run_info, "compute": compute, "members": members,
            "events": {n: m.get("events") for n, m in members.items() if m.get("events")}}


# ------------------------------------------------------------------------------------------------ loading
def load_router(run_dir: str | os.PathLike) -> torch.nn.Module:
    """The trained router of a run (eval mode). A missing or unfinished router is a clear error."""
    from simdiff.checkpoint import load_checkpoint, load_module_tensors, resolve_checkpoint_dir

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    mdir = member_dir(run_dir, ROUTER) / ROUTER_MODEL_DIR
    if resolve_checkpoint_dir(mdir) is None:
        state = "has not finished training" if (member_dir(run_dir, ROUTER) / "checkpoint").exists() else \
            "is missing"
        raise CheckpointError(f"{run_dir}: the router {state} (no {mdir.relative_to(run_dir)}/); run `simdiff ddm "
                              f"train CONFIG --out {run_dir}` again to train it")
    tensors, meta = load_checkpoint(mdir)
    if meta.get("kind") != ROUTER_KIND or meta.get("num_experts") != cfg.num_experts:
        raise CheckpointError(f"{mdir}: not a router for {cfg.num_experts} experts (kind={meta.get('kind')!r}, "
                              f"num_experts={meta.get('num_experts')!r})")
    dom = _domain(cfg)
    if cfg.domain == "ising":
        net = dom.build_router(cfg)
    else:
        from simdiff.utils.io import read_json

        net = dom.build_router(cfg, read_json(run_dir / SHARED_JSON))
    load_module_tensors(net, "ema", tensors)
    return net.eval().requires_grad_(False)


def load_member(run_dir: str | os.PathLike, member: str):
    """A finished expert or the monolith: a SKILD model (lattices; sampled with the run's ``skild.sample``
    settings) or a ``DiffusionPolicy`` (policies)."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    out = member_dir(run_dir, member)
    if not out.exists():
        raise CheckpointError(f"{run_dir}: {member} is missing ({out.relative_to(run_dir)}/ does not exist); run "
                              f"`simdiff ddm train CONFIG --out {run_dir}` to train it")
    if cfg.domain == "ising":
        from simdiff.pipelines.ddm.lattice import load_expert
        from simdiff.pipelines.skild.core import MODEL_DIR

        if not (out / MODEL_DIR).exists():
            raise CheckpointError(f"{run_dir}: {member} has not finished training (no {MODEL_DIR}/); run "
                                  f"`simdiff ddm train CONFIG --out {run_dir}` again to resume it")
        return load_expert(out / MODEL_DIR, cfg.skild.sample)
    from simdiff.pipelines.ddm.trajectories import load_member as load_policy

    return load_policy(out)


def load_experts(run_dir: str | os.PathLike) -> list:
    cfg = load_run_config(run_dir)
    return [load_member(run_dir, expert_name(k)) for k in range(cfg.num_experts)]


__all__ = ["train_ddm", "init_run", "prepare", "member_job", "summarize", "load_router", "load_member", "load_experts",
           "load_run_config", "member_dir", "member_names", "expert_name", "quarantine", "step_flops",
           "ROUTER", "MONOLITHIC", "SUMMARY_JSON", "PLAN_JSON", "SHARED_JSON", "PARTITION_DIR"]
