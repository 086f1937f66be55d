"""The MOL pipeline's only contact points with the engine, the worlds and the agents.

Every call into ``simdiff.executors``, ``envs`` (worlds, scripted experts, demo datasets),
``policies.diffusion`` (train, load, sample) and ``simdiff.pipelines.evaluate`` (batched on-policy
evaluation) goes through this module, so the stages read as the method and an API change elsewhere is one
edit here.

Jobs (specialists, generalists, condition rollouts) are module-level functions called as ``fn(**job)`` by
``simdiff.executors.run_jobs``: plain-data arguments, file paths in and out (so the run directory must be
on a filesystem the workers share, which a local pool or a local Ray instance always does).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simdiff.utils.io import read_json, write_json


# -- executor -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NamedResult:
    """A ``simdiff.executors.JobResult`` with the pipeline's name for the job."""

    name: str
    ok: bool
    value: Any
    error: str | None
    attempts: int
    wall_time: float


def run_jobs(fn, jobs: Sequence[dict], executor, names: Sequence[str], desc: str = "jobs") -> list[NamedResult]:
    """Run ``fn(**job)`` for every job on ``executor`` (an ExecutorSpec); failures come back, never raised."""
    from simdiff.executors import run_jobs as _run_jobs

    if len(names) != len(jobs):
        raise ValueError(f"run_jobs: expected one name per job ({len(jobs)}), received {len(names)}")
    workers = max(1, min(executor.workers, len(jobs)))
    results = _run_jobs(fn, list(jobs), backend=executor.backend, workers=workers,
                        threads_per_job=executor.threads_per_job, retries=executor.retries,
                        ray_address=executor.ray_address, desc=desc)
    return [NamedResult(n, r.ok, r.value, r.error, r.attempts, r.wall_time) for n, r in zip(names, results)]


# -- preflight ------------------------------------------------------------------------------------------------
def preflight(cfg) -> None:
    """Fail before anything is written: unknown env id, policy overrides the policy schema refuses."""
    from envs.registry import check_env_id

    check_env_id(cfg.env.id)
    sp, ge = policy_config(cfg.specialist, seed=0), policy_config(cfg.generalist, seed=0)
    if sp.horizon != ge.horizon:
        raise ValueError(f"specialist and generalist must share horizons (the generalist learns the "
                         f"specialists' action chunks): specialist {sp.horizon}, generalist {ge.horizon}")
    if cfg.dagger.intermediate_overrides:
        from simdiff.config import ConfigError

        try:
            inter = policy_config(intermediate_generalist(cfg), seed=0)
        except ConfigError as exc:
            raise ConfigError(f"dagger.intermediate_overrides: {exc}") from None
        if inter.horizon != ge.horizon:
            raise ValueError(f"dagger.intermediate_overrides: the acting generalists must keep the generalist's "
                             f"horizons (they label the same chunks): generalist {ge.horizon}, acting {inter.horizon}")
    if cfg.pseudo.source_token:
        policy_config(with_source_token(cfg.generalist), seed=0)
    if cfg.specialist.mirror or cfg.generalist.mirror:
        mirror_signs(cfg.env.id)
    if cfg.env.make_kwargs:  # the world must accept them now, not four jobs later
        try:
            env_factory(cfg.env.id, 0, cfg.env.make_kwargs)().close()
        except Exception as exc:
            raise ValueError(f"env.make_kwargs: {cfg.env.id} refused {dict(cfg.env.make_kwargs)}: "
                             f"{type(exc).__name__}: {exc}") from exc


def intermediate_generalist(cfg):
    """The acting DAgger generalists' PolicySpec: ``generalist`` with ``dagger.intermediate_overrides`` merged in."""
    from dataclasses import replace

    return replace(cfg.generalist, overrides=merge_overrides(dict(cfg.generalist.overrides),
                                                             cfg.dagger.intermediate_overrides))


def policy_config(spec, seed: int, steps: int | None = None):
    """The diffusion policy's own config for a :class:`PolicySpec` (strictly checked by its schema)."""
    from policies.diffusion.config import load_policy_config
    from simdiff.config import ConfigError

    over = merge_overrides(dict(spec.overrides), {
        "model": {"size": spec.size},
        "train": {"steps": int(steps or spec.steps), "batch_size": spec.batch_size, "lr": spec.lr,
                  "seed": int(seed)},
    })
    try:
        return load_policy_config(over)
    except ConfigError as exc:
        raise ConfigError(f"policy overrides: {exc}") from None


def merge_overrides(base: dict, over: dict) -> dict:
    """``over`` merged into ``base``, nested mappings key by key (neither is modified)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# -- worlds ---------------------------------------------------------------------------------------------------
def env_factory(env_id: str, level, make_kwargs: dict | None = None):
    """A zero-argument function making ``env_id`` at ``level`` (a picklable-free closure for in-process use)."""
    from envs.registry import make

    kw = dict(make_kwargs or {})

    def make_env():
        return make(env_id, level=level, **kw)

    return make_env


def collect_demos(env_id: str, level: int, episodes: int, seed: int, out: Path, successful_only: bool,
                  workers: int, make_kwargs: dict | None = None) -> dict:
    """N scripted-expert demos (seeds ``seed, seed+1, ...``; only successful ones if asked) -> HDF5 file."""
    from envs.collect import collect, dataset_attrs
    from envs.datasets import write_demos

    kwargs = {**dict(make_kwargs or {}), "level": level}
    eps = collect(env_id, episodes, seed=seed, level=level, workers=workers, only_success=successful_only,
                  env_kwargs=dict(make_kwargs or {}), max_attempts=3 * episodes if successful_only else None)
    collection = {"episodes": episodes, "seed": seed, "level": level, "only_success": successful_only}
    write_demos(out, eps, {"env_name": env_id, "env_kwargs": kwargs},
                attrs=dataset_attrs(env_id, kwargs, collection), overwrite=True)
    return {"episodes": len(eps), "steps": int(sum(len(e) for e in eps)),
            "success": float(np.mean([bool(e.success) for e in eps])), "seeds": [int(e.seed) for e in eps]}


def demos_job(env_id: str, level: int, episodes: int, seed: int, out: str, successful_only: bool,
              make_kwargs: dict) -> dict:
    """Executor job: one domain's paired demos -> ``out`` (HDF5); returns counts."""
    return collect_demos(env_id, level, episodes, seed, Path(out), successful_only, workers=1,
                         make_kwargs=make_kwargs)


def load_paired(paths: Sequence[str], env_id: str | None = None):
    """Paired demos of several files as one ``policies.diffusion.data.Episodes``; with ``env_id``, every action
    must lie in that world's action space (a damaged file fails here, naming itself, instead of training)."""
    from envs.datasets import load_demos
    from policies.diffusion.data import episodes_from_arrays
    from simdiff.errors import DatasetError

    low, high = action_bounds(env_id) if env_id else (None, None)
    obs, act, layout, counts = [], [], None, []
    for p in paths:
        ds = load_demos(p)
        lay = ds.attrs.get("obs_layout")
        layout = {k: tuple(v) for k, v in lay.items()} if isinstance(lay, dict) else layout
        n0 = len(obs)
        for ep in ds:
            a = ep.actions
            if low is not None and a.shape[1] == low.size and not ((a >= low - 1e-6) & (a <= high + 1e-6)).all():
                raise DatasetError(f"{p}: {ep.name}: expected actions in {env_id}'s action space [{low.min():g}, "
                                   f"{high.max():g}], received values in [{a.min():g}, {a.max():g}]")
            obs.append(ep.flat_obs())
            act.append(a)
        counts.append(len(obs) - n0)
    return episodes_from_arrays(obs, act, layout, meta={"paths": [str(p) for p in paths],
                                                        "episodes_per_file": counts})


def window_file_weights(episodes, sampler, weights: Sequence[float]) -> np.ndarray:
    """Per-window sampling weights: ``weights[i]`` for every window of the i-th demo file of
    :func:`load_paired` (each window belongs to the episode of its first row)."""
    counts = episodes.meta["episodes_per_file"]
    if len(weights) != len(counts):
        raise ValueError(f"paired_domain_weights: expected one weight per demo file ({len(counts)}), received "
                         f"{len(weights)}: {list(weights)}")
    file_of_episode = np.repeat(np.arange(len(counts)), counts)
    file_of_row = np.repeat(file_of_episode, episodes.lengths)
    return np.asarray(weights, dtype=np.float64)[file_of_row[sampler.rows[:, 0].numpy()]]


# -- policies ---------------------------------------------------------------------------------------------------
def load_policy(path: str | Path):
    from policies.diffusion import DiffusionPolicy

    return DiffusionPolicy.load(path)


def label_fn(policy_dir: str | Path, threads: int = 1):
    """A LabelFn: ``(obs (B, To, Do), seed) -> (B, Tp, Da)`` full predicted chunks of the policy."""
    import torch

    torch.set_num_threads(threads)
    policy = load_policy(policy_dir)

    def fn(obs: np.ndarray, seed: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(int(seed))
        return policy.predict_action(obs, gen, full=True).to(torch.float32).numpy()

    return fn


def train_policy_job(spec: dict, env_id: str, demos: list[str], pseudo: list[str], out_dir: str, steps: int,
                     seed: int, threads: int = 1, paired_fraction: float | None = None,
                     finetune_fraction: float = 0.0, paired_domain_weights: Sequence[float] | None = None,
                     source_token: bool = False, device: str | None = None) -> dict:
    """Executor job: train one diffusion policy on paired demos (+ pseudo-labels) into ``out_dir``.

    Normalizers are fitted to all its training data; a distillation batch draws ``paired_fraction`` of its
    rows from the paired windows (None: proportional to the counts) and the rest from the pseudo-labels; the last
    ``finetune_fraction`` of the steps draw paired windows only. ``paired_domain_weights`` (one per demo file)
    weights each file's windows inside the paired share (None: uniform over windows). ``source_token`` adds a
    two-entry task embedding, expert demos ``SOURCE_EXPERT`` and pseudo-labels ``SOURCE_PSEUDO``, and makes the
    expert token the policy's default (see ``PseudoSpec.source_token``). ``device`` (``cuda``,
    ``cuda:N``; None: the CPU) is where the network trains; the saved policy is on the CPU. Resumes from
    ``out_dir/checkpoint`` if a previous attempt was interrupted. Returns a JSON-able summary; the exported policy
    is ``out_dir/policy``.
    """
    import time

    import torch

    from policies.diffusion import DiffusionPolicy
    from policies.diffusion.data import WindowSampler
    from policies.diffusion.normalizer import Normalizer
    from policies.diffusion.train import trainer_config
    from simdiff.config import load_config
    from simdiff.pipelines.mol.config import PolicySpec
    from simdiff.pipelines.mol.pseudo import PseudoLabels
    from simdiff.training import train

    t0, c0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(int(threads))
    pspec = load_config(PolicySpec, spec)
    if source_token:
        pspec = with_source_token(pspec)
        if not pseudo:
            raise ValueError("source_token: expected pseudo-labels to tell apart from the demos, received none")
    pcfg = policy_config(pspec, seed=seed, steps=steps)
    paired = load_paired(demos, env_id)
    labels = PseudoLabels.concat([PseudoLabels.load(p) for p in pseudo]) if pseudo else None
    To, Tp, Ta = pcfg.horizon.obs, pcfg.horizon.prediction, pcfg.horizon.action
    if labels is not None and labels.actions.shape[1] != Tp:
        raise ValueError(f"pseudo-labels have chunks of {labels.actions.shape[1]} steps, the policy predicts {Tp}")

    # Normalizers see every training target: paired steps and pseudo-labelled chunks.
    s0, s1 = paired.obs_layout.get("state", (0, paired.obs_dim))
    obs_fit, act_fit = paired.obs[:, s0:s1], paired.actions
    if labels is not None:
        obs_fit = np.concatenate([obs_fit, labels.conditions.obs[:, -1, s0:s1]])
        act_fit = np.concatenate([act_fit, labels.actions.reshape(-1, labels.actions.shape[-1])])
    info = {"fingerprint": paired.fingerprint(), "episodes": paired.num_episodes,
            "pseudo_labels": 0 if labels is None else len(labels), "env_id": env_id}
    policy = DiffusionPolicy(pcfg, paired.obs_dim, paired.action_dim, paired.obs_layout,
                             Normalizer.fit(obs_fit, pcfg.normalizer.obs),
                             Normalizer.fit(act_fit, pcfg.normalizer.action), info)
    sampler = WindowSampler(paired, To, Tp, Ta)
    window_weights = (None if paired_domain_weights is None
                      else torch.from_numpy(window_file_weights(paired, sampler, paired_domain_weights)))
    batch_fn = _batch_fn(sampler, labels, pcfg.train.batch_size, paired_fraction,
                         finetune_from=finetune_start(steps, finetune_fraction), window_weights=window_weights,
                         source_token=source_token)
    if pspec.mirror:
        obs_sign, act_sign = mirror_signs(env_id)
        if obs_sign.shape != (paired.obs_dim,) or act_sign.shape != (paired.action_dim,):
            raise ValueError(f"mirror: {env_id}'s reflection has {obs_sign.size} observation and {act_sign.size} "
                             f"action entries, the data {paired.obs_dim} and {paired.action_dim}")
        batch_fn = mirrored(batch_fn, obs_sign, act_sign)

    def loss_fn(model, batch, gen):
        return policy.compute_loss(batch, gen, model)

    tcfg = trainer_config(pcfg)
    res = train(policy.model, loss_fn, batch_fn, tcfg, out_dir, desc=f"train {Path(out_dir).name}",
                meta=policy.meta(), device=device)
    policy.ema = res.ema_model
    policy.to(device="cpu")
    summary = {"final_loss": float(res.final_loss), "steps": int(res.steps), "paired_windows": len(sampler),
               "paired_episodes": paired.num_episodes, "pseudo_labels": info["pseudo_labels"],
               "params": int(sum(p.numel() for p in policy.model.parameters())), "seed": int(seed),
               "size": pspec.size, "train_seconds": round(time.perf_counter() - t0, 1),
               "cpu_seconds": round(time.process_time() - c0, 1), "device": device or "cpu"}
    policy.save(Path(out_dir) / "policy", metrics=summary)
    return summary


#: Task ids of the data-source token (``PseudoSpec.source_token``): what a training row's action came from.
SOURCE_PSEUDO, SOURCE_EXPERT = 0, 1


def with_source_token(pspec):
    """``pspec`` with a two-entry task embedding whose default (the acting token) is the expert's."""
    from dataclasses import replace

    model = dict(pspec.overrides.get("model") or {})
    if model.get("num_tasks") or model.get("default_task") is not None:
        raise ValueError(f"source_token: the data-source token is the policy's task embedding; expected no "
                         f"model.num_tasks / model.default_task overrides, received {model}")
    return replace(pspec, overrides=merge_overrides(dict(pspec.overrides), {
        "model": {"num_tasks": 2, "default_task": SOURCE_EXPERT}}))


def finetune_start(steps: int, finetune_fraction: float) -> int:
    """First step of the paired-only phase: ``steps`` (none) for ``finetune_fraction = 0``."""
    if not 0.0 <= finetune_fraction < 1.0:
        raise ValueError(f"finetune_fraction: expected a value in [0, 1), received {finetune_fraction!r}")
    return steps - int(round(steps * finetune_fraction))


def _batch_fn(sampler, labels, batch_size: int, paired_fraction: float | None, finetune_from: int | None = None,
              window_weights=None, source_token: bool = False):
    """Mixed batches: ``n_p`` paired windows + ``B - n_p`` pseudo-labels per step, from the step's generator;
    from step ``finetune_from`` on, paired windows only. ``window_weights`` (one per paired window) replaces
    uniform window sampling. ``source_token`` sets each row's ``task`` to its source (``SOURCE_EXPERT`` or
    ``SOURCE_PSEUDO``); it draws nothing from the generator, so the rows are the same as without."""
    import torch

    if source_token:
        plain = _batch_fn(sampler, labels, batch_size, paired_fraction, finetune_from, window_weights)
        n_p = batch_size if labels is None else _paired_rows(sampler, labels, batch_size, paired_fraction)

        def tagged(step: int, gen: torch.Generator) -> dict:
            b = plain(step, gen)
            n = b["obs"].shape[0]
            task = torch.full((n,), SOURCE_PSEUDO, dtype=torch.long)
            task[:n if finetune_from is not None and step >= finetune_from else n_p] = SOURCE_EXPERT
            return {**b, "task": task}

        return tagged

    if window_weights is not None:
        sample_paired = lambda n, gen: sampler.gather(  # noqa: E731
            torch.multinomial(window_weights, n, replacement=True, generator=gen))
    else:
        sample_paired = sampler.sample
    if labels is None:
        return lambda step, gen: sample_paired(batch_size, gen)
    n_pseudo = len(labels)
    n_p = _paired_rows(sampler, labels, batch_size, paired_fraction)
    obs_q = torch.from_numpy(np.ascontiguousarray(labels.conditions.obs, dtype=np.float32))
    act_q = torch.from_numpy(np.ascontiguousarray(labels.actions, dtype=np.float32))

    def batch_fn(step: int, gen: torch.Generator) -> dict:
        if finetune_from is not None and step >= finetune_from:
            return sample_paired(batch_size, gen)
        p = sample_paired(n_p, gen) if n_p else None
        idx = torch.randint(n_pseudo, (batch_size - n_p,), generator=gen)
        if p is None:
            return {"obs": obs_q[idx], "action": act_q[idx], "task": None}
        return {"obs": torch.cat([p["obs"], obs_q[idx]]), "action": torch.cat([p["action"], act_q[idx]]),
                "task": None}

    return batch_fn


def _paired_rows(sampler, labels, batch_size: int, paired_fraction: float | None) -> int:
    """Paired rows of a mixed batch (the first rows; the rest are pseudo-labels)."""
    if paired_fraction is None:
        paired_fraction = len(sampler) / (len(sampler) + len(labels))
    return int(round(batch_size * paired_fraction))


@functools.lru_cache(maxsize=8)
def _world_facts(env_id: str) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """``(action low, action high, mirror signs or None)`` of ``env_id``, read off one instance, once per process."""
    from envs.registry import make

    env = make(env_id)
    try:
        space, m = env.action_space, getattr(env.unwrapped, "mirror", None)
        return np.asarray(space.low, np.float32), np.asarray(space.high, np.float32), m
    finally:
        env.close()


def action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of ``env_id``'s (box) action space."""
    low, high, _ = _world_facts(env_id)
    return low, high


def mirror_signs(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-entry signs ``(observation, action)`` of ``env_id``'s mirror symmetry; ValueError if it has none."""
    m = _world_facts(env_id)[2]
    if m is None:
        raise ValueError(f"mirror: expected a world with a mirror symmetry (env.unwrapped.mirror), {env_id} has "
                         "none; set mirror: false")
    return np.asarray(m["obs"], np.float32), np.asarray(m["action"], np.float32)


def mirrored(batch_fn, obs_sign: np.ndarray, act_sign: np.ndarray):
    """``batch_fn`` whose rows are each reflected (``obs * obs_sign``, ``action * act_sign``) with probability
    1/2, drawn from the step's generator after the batch, so the unreflected rows are the same as without."""
    import torch

    so, sa = torch.from_numpy(obs_sign), torch.from_numpy(act_sign)

    def fn(step: int, gen: torch.Generator) -> dict:
        b = batch_fn(step, gen)
        flip = torch.rand(b["obs"].shape[0], generator=gen) < 0.5
        f = flip.to(b["obs"].dtype)[:, None, None]
        # (1 - f) * x + f * (sign * x), as one multiply: x * (1 + f * (sign - 1))
        return {**b, "obs": b["obs"] * (1 + f * (so - 1)), "action": b["action"] * (1 + f * (sa - 1))}

    return fn


def finish_policy_job(job: dict, value: dict) -> None:
    """Driver side, after a training job succeeded: its summary marks the job done."""
    write_json(Path(job["out_dir"]) / "job.json", value)


# -- conditions -------------------------------------------------------------------------------------------------
# Policy-noise seed offset between tries of the same rollout seed. Torch's CPU generator keeps only the low
# 32 bits of a seed, so the offsets of the (at most 16) tries must differ modulo 2**32: 16 * 2**27 <= 2**32.
ATTEMPT_SEED_STRIDE = 1 << 27


def search_policy(policy, env_id: str, k: int, lookahead: int, eta: float = 1.0, co_proposer=None, rollout=None,
                  shaping: float = 0.0):
    """The specialist with simulator verification: best of ``k`` sampled chunks by their replayed outcome
    (``lookahead`` more specialist chunks after each; see ``ConditionsSpec.search_k``). ``co_proposer`` adds
    ``k`` candidates of another policy; ``rollout`` continues the candidates instead of ``policy``; ``shaping``
    see :class:`policies.critic.outcomes.OracleBatchPolicy`."""
    from policies.critic.adapter import PolicyDenoiser
    from policies.critic.outcomes import OracleBatchPolicy

    return OracleBatchPolicy(PolicyDenoiser(policy), k=k, eta=eta, lookahead=lookahead, env_id=env_id,
                             co_proposer=None if co_proposer is None else PolicyDenoiser(co_proposer),
                             rollout=None if rollout is None else PolicyDenoiser(rollout), shaping=shaping)


def rollouts_with_attempts(policy, env_id: str, level: int, seeds: list[int], attempts: int, batch_envs: int,
                           make_kwargs: dict, search_k: int = 1, search_lookahead: int = 0,
                           search_eta: float = 1.0) -> tuple[list[dict], dict]:
    """Roll out every seed; replay the failed ones with fresh sampling noise, up to ``attempts`` tries in all.

    ``search_k > 1`` rolls out :func:`search_policy` instead of the plain sampler. Returns every episode
    (failed tries included: they are conditions too, which the success filter drops) and counts: first-try
    success rate, share of seeds solved by some try, episodes run.
    """
    from simdiff.pipelines.evaluate import run_episodes

    records, todo, first = [], list(seeds), float("nan")
    solved: set[int] = set()
    for k in range(attempts):
        if not todo:
            break
        bp = (search_policy(policy, env_id, search_k, search_lookahead, search_eta) if search_k > 1
              else policy.batch_policy())
        recs = run_episodes(bp, env_id, level, todo, batch_size=batch_envs,
                            env_kwargs=make_kwargs, record_actions=True, policy_seed_offset=k * ATTEMPT_SEED_STRIDE)
        if k == 0:
            first = float(np.mean([r["success"] for r in recs]))
        records += recs
        solved |= {int(r["seed"]) for r in recs if r["success"]}
        todo = [s for s in todo if s not in solved]
    stats = {"rollout_success": first, "seeds_solved": len(solved) / len(seeds), "rollout_episodes": len(records),
             "attempts": attempts}
    if search_k > 1:
        stats.update(search_k=search_k, search_lookahead=search_lookahead, search_eta=search_eta)
    return records, stats


def conditions_job(env_id: str, level: int, make_kwargs: dict, policy_dir: str, reset_seeds: list[int],
                   rollout_seeds: list[int], source: str, round_: int, domain: int, stride: int,
                   batch_envs: int, out: str, attempts: int = 1, search_k: int = 1,
                   search_lookahead: int = 0, teacher_dir: str | None = None, search_eta: float = 1.0,
                   search_proposers: str = "specialist", search_rollout: str = "specialist",
                   search_shaping: float = 0.0) -> dict:
    """Executor job: unlabeled conditions of one domain and round -> ``out`` (.npz); returns counts.

    ``attempts > 1`` (specialist rollouts only) replays failed seeds with fresh noise, ``search_k > 1``
    verifies the specialist's chunks in the simulator; see :func:`rollouts_with_attempts`. For DAgger
    rollouts ``search_k > 1`` labels the generalist's states with the searched chunks of the specialist in
    ``teacher_dir`` (:mod:`simdiff.pipelines.mol.dagger`).
    """
    from simdiff.pipelines.mol import conditions as C

    if attempts > 1 and source != "specialist":
        raise ValueError(f"conditions_job: attempts > 1 applies to specialist rollouts, received source {source!r}")
    if search_k > 1 and source == "dagger":
        return _searched_dagger_job(env_id, level, make_kwargs, policy_dir, teacher_dir, rollout_seeds, round_,
                                    domain, batch_envs, out, search_k, search_lookahead, search_eta,
                                    search_proposers, search_rollout, search_shaping)
    if search_k > 1 and source != "specialist":
        raise ValueError("conditions_job: search_k > 1 applies to specialist or DAgger rollouts, received "
                         f"source {source!r}")
    make_env = env_factory(env_id, level, make_kwargs)
    policy = load_policy(policy_dir)
    To, Tp, _ = policy.horizons
    Da = policy.action_dim
    parts = []
    stats = {"episodes": len(rollout_seeds), "resets": len(reset_seeds), "rollout_success": float("nan")}
    if reset_seeds:
        parts.append(C.from_episodes(C.reset_observations(make_env, reset_seeds), To, Tp, Da, domain, "reset",
                                     round_))
    if rollout_seeds:
        # The batched runner: the same rollouts as an evaluation on these seeds would make.
        recs, counts = rollouts_with_attempts(policy, env_id, level, list(rollout_seeds), attempts, batch_envs,
                                              make_kwargs, search_k, search_lookahead, search_eta)
        eps = C.Episodes(obs=[np.asarray(r["observations"][:-1], np.float32) for r in recs],
                         success=np.array([bool(r["success"]) for r in recs]),
                         seeds=np.array([int(r["seed"]) for r in recs], np.int64),
                         lengths=np.array([int(r["length"]) for r in recs]),
                         # Only a specialist's own actions may serve as its labels (never the generalist's).
                         actions=[np.asarray(r["actions"], np.float32) for r in recs]
                         if source == "specialist" else None)
        parts.append(C.from_episodes(eps, To, Tp, Da, domain, source, round_, stride))
        stats.update(counts)
        stats["mean_length"] = float(eps.lengths.mean())
    cs = C.ConditionSet.concat(parts)
    cs.save(out)
    stats["conditions"] = len(cs)
    return {"stats": stats}


def _searched_dagger_job(env_id: str, level: int, make_kwargs: dict, policy_dir: str, teacher_dir: str | None,
                         rollout_seeds: list[int], round_: int, domain: int, batch_envs: int, out: str,
                         search_k: int, search_lookahead: int, search_eta: float = 1.0,
                         search_proposers: str = "specialist", search_rollout: str = "specialist",
                         search_shaping: float = 0.0) -> dict:
    """The generalist in ``policy_dir`` acts; the specialist in ``teacher_dir`` labels its replanning states
    (with ``search_proposers`` / ``search_rollout``, see ``DaggerSpec``, the generalist helps the search)."""
    from simdiff.pipelines.evaluate import run_episodes
    from simdiff.pipelines.mol.dagger import SearchLabeler, save_utility, searched_conditions

    if not teacher_dir:
        raise ValueError("searched DAgger: expected the specialist's directory (teacher_dir), received none")
    student = load_policy(policy_dir)
    if teacher_dir == "expert":  # the privileged diagnostic (dagger.teacher: expert)
        from simdiff.pipelines.mol.dagger import ExpertChunkTeacher

        To, Tp, Ta = student.horizons
        labeler = SearchLabeler(student.batch_policy(), ExpertChunkTeacher(To, Tp, Ta, student.obs_dim,
                                                                           student.action_dim, env_id))
    else:
        teacher = load_policy(teacher_dir)
        if student.horizons != teacher.horizons:
            raise ValueError(f"searched DAgger: generalist and specialist must share (To, Tp, Ta); received "
                             f"{student.horizons} and {teacher.horizons}")
        labeler = SearchLabeler(student.batch_policy(), search_policy(
            teacher, env_id, search_k, search_lookahead, search_eta,
            co_proposer=student if search_proposers == "specialist+generalist" else None,
            rollout=student if search_rollout == "generalist" else None, shaping=search_shaping))
    recs = run_episodes(labeler, env_id, level, list(rollout_seeds), batch_size=batch_envs, env_kwargs=make_kwargs,
                        record_actions=True)
    cs, utility = searched_conditions(recs, labeler, student.horizons[0], domain, round_)
    cs.save(out)
    save_utility(out, utility)
    lengths = [int(r["length"]) for r in recs]
    return {"stats": {"episodes": len(recs), "resets": 0, "rollout_success": float(np.mean([r["success"] for r in
                                                                                          recs])),
                      "mean_length": float(np.mean(lengths)), "conditions": len(cs), "search_k": search_k,
                      "search_lookahead": search_lookahead, "search_eta": search_eta,
                      "search_proposers": search_proposers, "search_rollout": search_rollout,
                      "search_shaping": search_shaping,
                      "labels": "expert (diagnostic)" if teacher_dir == "expert" else "searched"}}


def finish_file_job(job: dict, value: dict) -> None:
    """Driver side, after a file-writing job: nothing to move (workers share the run directory)."""
    if not Path(job["out"]).is_file():
        raise FileNotFoundError(f"{job['out']}: the job reported success but its output is missing "
                                "(are the workers on another filesystem?)")


# -- evaluation -------------------------------------------------------------------------------------------------
def eval_cell_job(policy: str, env_id: str, level, episodes: int, seed: int, batch_envs: int,
                  make_kwargs: dict | None, out: str) -> dict:
    """Executor job: one (method, level) evaluation cell -> ``out`` (JSON); returns the summary."""
    import time

    t0 = time.perf_counter()
    res = evaluate(policy, env_id, level, episodes, seed, batch_envs, make_kwargs, workers=1)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out, res)
    return res


def evaluate(policy: str, env_id: str, level, episodes: int, seed: int, batch_envs: int,
             make_kwargs: dict | None, workers: int = 1) -> dict:
    """On-policy success of a policy directory (or ``"expert"``) over seeds ``seed .. seed+episodes-1``,
    through the batched runner; returns its summary without the per-episode records."""
    from simdiff.pipelines.evaluate import evaluate as _evaluate

    res = _evaluate(policy, env_id, level, episodes, seed, workers=workers, batch_size=batch_envs,
                    env_kwargs=dict(make_kwargs or {}), show_progress=False)
    keep = ("episodes", "successes", "success_rate", "ci95", "mean_return", "mean_length", "per_domain",
            "wall_time_s", "episodes_per_s", "batch_size", "workers")
    return {k: res[k] for k in keep if k in res}


__all__ = ["run_jobs", "preflight", "policy_config", "collect_demos", "load_paired", "load_policy", "label_fn",
           "train_policy_job", "conditions_job", "evaluate", "read_json"]
