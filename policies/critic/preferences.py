"""Automatic preference data: candidate action chunks executed from restored simulator states and ranked.

Collection (:func:`collect_preferences`)
    Base-policy episodes are run ``batch_envs`` at a time. At every replanning point (every ``Ta`` steps) the
    env is snapshotted (:mod:`policies.critic.sim_state`) and ``n = policy_samples + perturbed`` candidate
    chunks are built: ``policy_samples`` DDIM samples of the base policy (``sample_eta``; noise from a
    generator seeded by ``(seed, episode, step)``) and ``perturbed`` noise-perturbed copies of them
    (``x0 + std * eps`` in normalized action units, clipped to the action range). Each candidate's ``Ta``
    executed actions run from the snapshot (on spare envs, :func:`policies.critic.outcomes.run_candidates`),
    followed by ``lookahead`` chunks of the base policy (deterministic DDIM, the same noise for every
    candidate of the state); the outcome is measured over that horizon ``H = Ta (1 + lookahead)``. The
    episode then continues with candidate 0 (a plain base-policy sample), so the states follow the base
    policy's own distribution. With ``lookahead = 0`` the outcome is that of the chunk alone; a short
    lookahead turns a myopic "progress during this chunk" into "where this chunk leads", which is what an
    oracle selection needs to raise success (see the experiments report).

With ``kind = "siblings"`` the candidates of a state are step-level siblings instead
(:func:`sibling_candidates`): the base sampler runs to one stochastic denoising step ``t -> t_prev`` (``t_prev``
drawn from ``sibling_steps``), ``n`` candidates ``x_{t_prev}`` are drawn from that SAME ``x_t``, and each is
completed to a clean chunk by deterministic DDIM. The clean completions are executed and ranked as above; the
noisy siblings and their step are stored too (``noisy``, ``noisy_t``), and the critic is trained on them as they
are. Two independent base samples differ far more than two siblings do, and a critic that ranks the former
well need not rank the latter, which is all step-wise sampling and step-wise GRPO ask of it.

Ranking rule (:func:`chunk_utility`), lexicographic over the outcome horizon ``H`` and encoded in one
number ``u``:
    1. an outcome that reaches success (box within the goal tolerance; the episode ends) beats every one that
       does not, and among successes an earlier success is better: ``u = 1 + (H - k + 1) / H`` for success
       at step ``k`` (``u`` in ``(1, 2]``);
    2. otherwise, more progress to the goal is better: ``u = clip((d0 - d_end) / d0, -1, 1)`` with ``d0`` /
       ``d_end`` the box-goal distance before / after the horizon (``u < 1`` since ``d_end`` exceeds the
       tolerance). This is the normalized progress; the return ``-sum_k d_k`` over the horizon is stored too.
    Two candidates of the same state whose utilities differ by less than ``tie_margin`` are a tie and give
    no pair; every other pair gives ``(state, winner, loser)``.

Storage: one ``.npz`` (``allow_pickle=False``) of arrays plus a JSON sidecar with the config and counts.
Episodes are split into train / held-out by index (the last ``heldout_fraction`` of them are held out), so
no state of a held-out episode is ever trained on.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.critic.adapter import PolicyDenoiser, row_randn, sample_chunks
from policies.critic.config import PrefsConfig
from policies.critic.outcomes import run_candidates, spare_envs
from policies.critic.sim_state import box_goal_distance, snapshot
from simdiff.utils.progress import progress

RULE = ("over the horizon H = Ta (1 + lookahead): success beats no success, earlier success beats later "
        "(u = 1 + (H-k+1)/H); otherwise more normalized progress to the goal wins (u = clip((d0-d_end)/d0, -1, 1)); "
        "|u_i - u_j| < tie_margin is a tie and is dropped")
_ARRAYS = ("obs", "chunks", "utility", "progress", "chunk_return", "success_step", "source", "perturb_std",
           "episode", "step", "heldout")
_SIBLING_ARRAYS = ("noisy", "noisy_t")   # present in sibling files only


def chunk_utility(success_step: int | None, d0: float, d_end: float, horizon: int) -> float:
    """The ranking utility of one outcome over ``horizon`` steps (see the module docstring)."""
    if success_step is not None:
        if not 1 <= success_step <= horizon:
            raise ValueError(f"success_step: expected 1..{horizon}, received {success_step}")
        return 1.0 + (horizon - success_step + 1) / horizon
    return float(np.clip((d0 - d_end) / max(d0, 1e-6), -1.0, 1.0 - 1e-6))


def preference_pairs(utility: np.ndarray, margin: float, states: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """All ``(state, winner, loser)`` triples ``(P, 3)`` int64 with ``u_w - u_l >= margin`` among ``states``
    (indices into ``utility (S, n)``; default all), and the number of tied pairs dropped."""
    u = np.asarray(utility, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"utility: expected shape (S, n), received {u.shape}")
    idx = np.arange(u.shape[0]) if states is None else np.asarray(states, dtype=np.int64)
    i, j = np.triu_indices(u.shape[1], k=1)
    diff = u[idx][:, i] - u[idx][:, j]                       # (S', n(n-1)/2)
    s_rows = np.repeat(idx[:, None], i.size, axis=1)
    win_i = diff >= margin
    win_j = diff <= -margin
    pairs = np.concatenate([
        np.stack([s_rows[win_i], np.broadcast_to(i, diff.shape)[win_i], np.broadcast_to(j, diff.shape)[win_i]], 1),
        np.stack([s_rows[win_j], np.broadcast_to(j, diff.shape)[win_j], np.broadcast_to(i, diff.shape)[win_j]], 1),
    ]).astype(np.int64)
    ties = int((~(win_i | win_j)).sum())
    order = np.lexsort((pairs[:, 2], pairs[:, 1], pairs[:, 0]))
    return pairs[order], ties


@dataclass
class PreferenceData:
    """Candidate chunks per state with their outcomes. ``S`` states, ``n`` candidates each.

    ``obs (S, To, Do)`` raw observation history; ``chunks (S, n, Tp, Da)`` normalized; ``utility``,
    ``progress`` (m), ``chunk_return`` ``(S, n)`` float32; ``success_step (S, n)`` int (-1: none);
    ``source (n,)`` 0 = base-policy sample, 1 = perturbed; ``perturb_std (n,)``; ``episode``, ``step``
    ``(S,)``; ``heldout (S,)`` bool. Sibling files also hold ``noisy (S, n, Tp, Da)``, the candidates before
    completion, and ``noisy_t (S,)`` int, the step ``t_prev`` they sit at (the ``chunks`` are their completions).
    """

    obs: np.ndarray
    chunks: np.ndarray
    utility: np.ndarray
    progress: np.ndarray
    chunk_return: np.ndarray
    success_step: np.ndarray
    source: np.ndarray
    perturb_std: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    heldout: np.ndarray
    meta: dict = field(default_factory=dict)
    noisy: np.ndarray | None = None
    noisy_t: np.ndarray | None = None

    def __post_init__(self) -> None:
        s, n = self.utility.shape
        if (self.noisy is None) != (self.noisy_t is None):
            raise ValueError("PreferenceData: expected both noisy and noisy_t (a sibling file) or neither, received one")
        checks = {"obs": (s,), "chunks": (s, n), "progress": (s, n), "chunk_return": (s, n),
                  "success_step": (s, n), "source": (n,), "perturb_std": (n,), "episode": (s,), "step": (s,),
                  "heldout": (s,)}
        if self.noisy is not None:
            checks.update({"noisy": tuple(self.chunks.shape), "noisy_t": (s,)})
        for name, lead in checks.items():
            arr = getattr(self, name)
            if tuple(arr.shape[:len(lead)]) != lead:
                raise ValueError(f"PreferenceData.{name}: expected leading shape {lead}, received {arr.shape}")

    @property
    def siblings(self) -> bool:
        """True for step-level sibling data (candidates stored noisy, at their own step)."""
        return self.noisy is not None

    @property
    def num_states(self) -> int:
        return int(self.utility.shape[0])

    @property
    def num_candidates(self) -> int:
        return int(self.utility.shape[1])

    def pairs(self, margin: float, heldout: bool) -> tuple[np.ndarray, int]:
        """``(state, winner, loser)`` pairs of the train (``heldout=False``) or held-out states."""
        states = np.flatnonzero(self.heldout == heldout)
        return preference_pairs(self.utility, margin, states)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (.npz, no pickle) and ``path`` with suffix ``.json`` (meta), atomically."""
        import io

        from simdiff.utils.io import atomic_write_bytes, write_json

        path = Path(path)
        buf = io.BytesIO()
        names = _ARRAYS + (_SIBLING_ARRAYS if self.siblings else ())
        np.savez_compressed(buf, **{k: getattr(self, k) for k in names})
        atomic_write_bytes(path, buf.getvalue())
        write_json(path.with_suffix(".json"), self.meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PreferenceData:
        from simdiff.errors import DatasetError
        from simdiff.utils.io import read_json, read_npz

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such preference file")
        z = read_npz(path, _ARRAYS, "a preference file")
        arrays = {k: z[k] for k in _ARRAYS + _SIBLING_ARRAYS if k in z}
        for k, a in arrays.items():
            if k != "success_step" and np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                raise DatasetError(f"{path}: expected finite values in '{k}', received NaN or inf")
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            # the sidecar holds the train / held-out split and how the data were made: without it, results change
            raise DatasetError(f"{path}: expected its sidecar {meta_path.name} next to it (written with the file), "
                               "found none")
        meta = read_json(meta_path)
        if not isinstance(meta, dict):
            raise DatasetError(f"{meta_path}: expected a JSON object, received {type(meta).__name__}")
        try:
            return cls(**arrays, meta=meta)
        except ValueError as exc:
            raise DatasetError(f"{path}: {exc}") from exc


# ------------------------------------------------------------------------------------------------ collection
def _state_seed(seed: int, episode: int, step: int) -> int:
    """A seed that depends only on (seed, episode, step): a state's draws do not depend on batching."""
    s = int(np.random.SeedSequence([int(seed), int(episode), int(step)]).generate_state(1, dtype=np.uint64)[0])
    return s & ((1 << 63) - 1)


def _state_generator(seed: int, episode: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(_state_seed(seed, episode, step))


def _step_own(env: Any, actions: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """Continue the real episode with the executed actions ``(Ta, Da)`` of one chunk."""
    obs_seq = []
    for a in actions:
        obs, _, terminated, truncated, _ = env.step(a)
        obs_seq.append(obs)
        if terminated or truncated:
            return obs_seq, True
    return obs_seq, False


def _candidates(den: PolicyDenoiser, cfg: PrefsConfig, hist: np.ndarray, gens: list[torch.Generator]) -> torch.Tensor:
    """``(L, n, Tp, Da)`` normalized candidate chunks for ``L`` states with observation histories ``hist``."""
    n_pol, n_pert = cfg.policy_samples, cfg.perturbed
    L = hist.shape[0]
    cond = den.condition(den.obs_features(hist))
    rows = [g for g in gens for _ in range(n_pol)]          # each state's rows draw from its own generator
    with torch.no_grad():
        x0 = sample_chunks(den, cond.repeat_interleave(n_pol, 0), cfg.sample_eta, rows)
    x0 = x0.view(L, n_pol, *den.chunk_shape)
    cands = [x0[:, c] for c in range(n_pol)]
    bound = den.clip if den.clip is not None else 1.0
    for m in range(n_pert):
        std = cfg.perturb_std[m % len(cfg.perturb_std)]
        eps = row_randn(gens, L, den.chunk_shape, x0.dtype)
        cands.append((x0[:, m % n_pol] + std * eps).clamp(-bound, bound))
    return torch.stack(cands, dim=1)


def sibling_steps(den: PolicyDenoiser, cfg: PrefsConfig) -> list[int]:
    """The plan indices of the DDIM steps ``t -> t_prev`` with ``t_prev`` in ``cfg.sibling_steps``, checked to be
    stochastic steps of ``den``'s plan at ``cfg.sample_eta``."""
    plan = den.plan()
    by_prev = {tp: i for i, (_, tp) in enumerate(plan)}
    stochastic = [tp for t, tp in plan if tp >= 0 and den.step_std(t, tp, cfg.sample_eta) > 0]
    bad = [t for t in cfg.sibling_steps if t not in stochastic]
    if bad:
        raise ValueError(f"prefs.sibling_steps: expected steps t_prev of the policy's stochastic DDIM steps "
                         f"{stochastic}, received {list(cfg.sibling_steps)} ({bad} are not)")
    return [by_prev[t] for t in cfg.sibling_steps]


def sibling_candidates(den: PolicyDenoiser, cfg: PrefsConfig, hist: np.ndarray,
                       gens: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step-level siblings for ``L`` states: clean completions ``(L, n, Tp, Da)``, the noisy siblings
    ``(L, n, Tp, Da)`` and their step ``t_prev`` ``(L,)``.

    State ``l`` draws its branch step from ``gens[l]``; its chain runs the stochastic sampler (``sample_eta``)
    with one noise draw per step shared by its ``n`` rows, draws ``n`` independent noises at the branch step,
    and continues deterministically (DDIM eta = 0), so the rows differ only by the branch step's noise.
    """
    n, L, shape = cfg.policy_samples, hist.shape[0], den.chunk_shape
    plan, branch_at = den.plan(), sibling_steps(den, cfg)
    branch = [branch_at[int(torch.randint(len(branch_at), (1,), generator=g))] for g in gens]
    cond = den.condition(den.obs_features(hist)).repeat_interleave(n, 0)

    def rows(j: int) -> slice:      # the n rows of state j
        return slice(j * n, (j + 1) * n)

    with torch.no_grad():
        x = torch.cat([row_randn(g, 1, shape, den.dtype).expand(n, *shape) for g in gens])
        noisy = torch.empty_like(x)
        for i, (t, t_prev) in enumerate(plan):
            out = den.predict(x, t, cond)
            mean, std = den.step_mean_std(out, x, t, t_prev, cfg.sample_eta)
            mean0, _ = den.step_mean_std(out, x, t, t_prev, 0.0)
            steps = []
            for j, g in enumerate(gens):
                if i < branch[j]:        # before the branch: one draw, shared by the state's rows
                    steps.append(mean[rows(j)] + std[j * n] * row_randn(g, 1, shape, den.dtype))
                elif i == branch[j]:     # the branch: n independent draws
                    steps.append(mean[rows(j)] + std[j * n] * row_randn(g, n, shape, den.dtype))
                    noisy[rows(j)] = steps[-1]
                else:                    # after it: deterministic completion
                    steps.append(mean0[rows(j)])
            x = torch.cat(steps)
    t_prev = torch.tensor([plan[b][1] for b in branch], dtype=torch.long)
    return x.view(L, n, *shape), noisy.view(L, n, *shape), t_prev


def collect_preferences(den: PolicyDenoiser, cfg: PrefsConfig, show_progress: bool = True,
                        workers: int = 1) -> PreferenceData:
    """Roll out the base policy, branch candidates at every replanning point and record their outcomes.

    Episodes run in blocks of ``batch_envs``; with ``workers > 1`` the blocks are executor jobs on a local
    process pool. Every block draws its randomness from ``(seed, episode, step)`` alone and the blocks are
    the same either way, so the data do not depend on ``workers`` (bit for bit when every process runs torch on
    the same number of threads; the job workers use one, as ``--threads 1`` does).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, received {workers!r}")
    if cfg.kind == "siblings":
        sibling_steps(den, cfg)   # refuse steps the policy's plan does not have before any episode runs
    To, Ta = den.obs_horizon, den.action_horizon
    nb = min(cfg.batch_envs, cfg.episodes)
    blocks = [list(range(first, min(first + nb, cfg.episodes))) for first in range(0, cfg.episodes, nb)]
    t0 = time.perf_counter()
    if workers > 1 and len(blocks) > 1:
        from simdiff.executors import raise_on_failure, run_jobs

        jobs = [{"den": den, "cfg": cfg, "ids": ids} for ids in blocks]
        results = raise_on_failure(run_jobs(collect_block_job, jobs, backend="local",
                                            workers=min(workers, len(blocks)), desc="preference blocks"))
        parts = [r.value for r in results]
    else:
        bar = progress(total=cfg.episodes, desc="preferences") if show_progress else None
        parts = []
        try:
            for ids in blocks:
                parts.append(collect_block_job(den, cfg, ids))
                if bar is not None:
                    bar.update(len(ids))
        finally:
            if bar is not None:
                bar.close()
    rec = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = cfg.policy_samples + cfg.perturbed
    n_held = int(math.ceil(cfg.episodes * cfg.heldout_fraction)) if cfg.heldout_fraction > 0 else 0
    episode = rec["episode"].astype(np.int64)
    source = np.array([0] * cfg.policy_samples + [1] * cfg.perturbed, dtype=np.int8)
    stds = np.array([0.0] * cfg.policy_samples
                    + [cfg.perturb_std[m % len(cfg.perturb_std)] for m in range(cfg.perturbed)], dtype=np.float32)
    data = PreferenceData(
        obs=rec["obs"].astype(np.float32).reshape(-1, To, den.obs_dim),
        chunks=rec["chunks"].astype(np.float32).reshape(-1, n, den.pred_horizon, den.action_dim),
        utility=rec["utility"].astype(np.float32).reshape(-1, n),
        progress=rec["progress"].astype(np.float32).reshape(-1, n),
        chunk_return=rec["chunk_return"].astype(np.float32).reshape(-1, n),
        success_step=rec["success_step"].astype(np.int32).reshape(-1, n),
        source=source, perturb_std=stds, episode=episode,
        step=rec["step"].astype(np.int32), heldout=episode >= cfg.episodes - n_held,
        **({"noisy": rec["noisy"].astype(np.float32).reshape(-1, n, den.pred_horizon, den.action_dim),
            "noisy_t": rec["noisy_t"].astype(np.int32)} if cfg.kind == "siblings" else {}))
    data.meta = _summary(data, cfg, time.perf_counter() - t0, Ta)
    data.meta["workers"] = workers
    return data


def collect_block_job(den: PolicyDenoiser, cfg: PrefsConfig, ids: list[int]) -> dict[str, np.ndarray]:
    """The records of episodes ``ids`` (one block, stepped together), as flat arrays in collection order.
    Module-level so that it can run as an executor job."""
    from envs import make

    n = cfg.policy_samples + cfg.perturbed
    kw = {} if cfg.max_episode_steps is None else {"max_episode_steps": cfg.max_episode_steps}
    envs = [make(cfg.env, level=cfg.level, **kw) for _ in ids]
    spares = spare_envs(cfg.env, len(ids) * n)
    names = ("obs", "chunks", "utility", "progress", "chunk_return", "success_step", "episode", "step")
    rec: dict[str, list] = {k: [] for k in names + (_SIBLING_ARRAYS if cfg.kind == "siblings" else ())}
    try:
        _collect_block(den, cfg, envs, spares, ids, rec, den.obs_horizon, den.action_horizon, n)
    finally:
        for e in envs + spares:
            e.close()
    return {k: np.asarray(v) for k, v in rec.items()}


def _collect_block(den: PolicyDenoiser, cfg: PrefsConfig, envs: list, spares: list, ids: list[int], rec: dict,
                   To: int, Ta: int, n: int) -> None:
    hist = np.zeros((len(envs), To, den.obs_dim), dtype=np.float32)
    steps = np.zeros(len(envs), dtype=np.int64)
    live = np.ones(len(envs), dtype=bool)
    horizon = Ta * (1 + cfg.lookahead)
    for j, (env, i) in enumerate(zip(envs, ids)):
        obs, _ = env.reset(seed=cfg.seed + i)
        hist[j] = obs[None]
    while live.any():
        slots = np.flatnonzero(live)
        gens = [_state_generator(cfg.seed, ids[j], int(steps[j])) for j in slots]
        if cfg.kind == "siblings":
            cands, noisy, noisy_t = sibling_candidates(den, cfg, hist[slots], gens)
        else:
            cands = _candidates(den, cfg, hist[slots], gens)
        acts = den.to_actions(cands.flatten(0, 1)).to(torch.float32).numpy()          # (L n, Ta, Da)
        snaps = [snapshot(envs[j]) for j in slots]
        d0 = [box_goal_distance(envs[j]) for j in slots]
        # every candidate of a state continues with the same base-policy noise (common random numbers)
        seeds = [_state_seed(cfg.seed + 1, ids[j], int(steps[j])) for j in slots for _ in range(n)]
        res = run_candidates(spares[:len(slots) * n], [sn for sn in snaps for _ in range(n)], acts,
                             np.repeat(hist[slots], n, axis=0), den, cfg.lookahead, seeds)
        for r, j in enumerate(slots.tolist()):
            outs = res[r * n:(r + 1) * n]
            rec["obs"].append(hist[j].copy())
            rec["chunks"].append(cands[r].numpy())
            if cfg.kind == "siblings":
                rec["noisy"].append(noisy[r].numpy())
                rec["noisy_t"].append(int(noisy_t[r]))
            for o in outs:
                rec["utility"].append(chunk_utility(o["success_step"], d0[r], o["d_end"], horizon))
                rec["progress"].append(d0[r] - o["d_end"])
                rec["chunk_return"].append(o["return"])
                rec["success_step"].append(-1 if o["success_step"] is None else o["success_step"])
            rec["episode"].append(ids[j])
            rec["step"].append(int(steps[j]))
            obs_seq, done = _step_own(envs[j], acts[r * n])   # the episode goes on with candidate 0 (a base sample)
            for obs in obs_seq:
                hist[j] = np.concatenate([hist[j, 1:], obs[None]], axis=0)
            steps[j] += len(obs_seq)
            live[j] = not done


def _summary(data: PreferenceData, cfg: PrefsConfig, wall: float, Ta: int) -> dict:
    from simdiff.config import to_dict

    return {"kind": "simdiff.critic_preferences", "config": to_dict(cfg), "rule": RULE,
            "lookahead": cfg.lookahead, "horizon_steps": Ta * (1 + cfg.lookahead),
            **_counts(data, cfg.tie_margin), "wall_time_s": wall}


def _counts(data: PreferenceData, margin: float) -> dict:
    """The sidecar's counts: states, pairs, ties, candidate success rates and mean utilities."""
    train_pairs, train_ties = data.pairs(margin, heldout=False)
    held_pairs, held_ties = data.pairs(margin, heldout=True)
    succ = data.success_step >= 0
    perturbed = (data.source == 1).any()
    return {"states": data.num_states, "candidates_per_state": data.num_candidates,
            "heldout_states": int(data.heldout.sum()), "train_pairs": int(len(train_pairs)),
            "heldout_pairs": int(len(held_pairs)), "ties_dropped": train_ties + held_ties,
            "candidate_success_rate": {"policy": float(succ[:, data.source == 0].mean()),
                                       "perturbed": float(succ[:, data.source == 1].mean()) if perturbed else None},
            "mean_utility": {"policy": float(data.utility[:, data.source == 0].mean()),
                             "perturbed": float(data.utility[:, data.source == 1].mean()) if perturbed else None}}


#: collection settings that must agree for two preference files to be one data set
_MERGE_KEYS = ("env", "level", "policy_samples", "perturbed", "perturb_std", "sample_eta", "lookahead", "tie_margin",
               "max_episode_steps", "kind", "sibling_steps")


def merge_preferences(parts: list[PreferenceData], train_only: list[bool] | None = None) -> PreferenceData:
    """One preference set from several collections of the same base policy and settings (e.g. collected on
    several machines with different ``prefs.seed``). Episode ids are offset so they stay distinct; each part keeps
    its own held-out episodes, except the parts flagged in ``train_only``, which are all training data (so the
    held-out set of an earlier file, and every number measured on it, stays the same)."""
    if len(parts) < 2:
        raise ValueError(f"merge: expected at least 2 preference sets, received {len(parts)}")
    train_only = list(train_only) if train_only is not None else [False] * len(parts)
    if len(train_only) != len(parts):
        raise ValueError(f"merge: expected one train_only flag per part ({len(parts)}), received {len(train_only)}")
    ref = parts[0]
    ref_cfg = ref.meta.get("config") or {}
    for k, d in enumerate(parts[1:], start=1):
        for name, lead in (("obs", 1), ("chunks", 2)):
            a, b = getattr(ref, name).shape[lead:], getattr(d, name).shape[lead:]
            if a != b:
                raise ValueError(f"merge: part {k} {name} per state has shape {b}, part 0 has {a}")
        if d.num_candidates != ref.num_candidates or not np.array_equal(d.source, ref.source) \
                or not np.allclose(d.perturb_std, ref.perturb_std):
            raise ValueError(f"merge: part {k} has candidates {d.source.tolist()} (perturb_std "
                             f"{d.perturb_std.tolist()}), part 0 has {ref.source.tolist()} ({ref.perturb_std.tolist()})")
        if d.siblings != ref.siblings:
            raise ValueError(f"merge: part {k} is a {'sibling' if d.siblings else 'chunk'} file, part 0 a "
                             f"{'sibling' if ref.siblings else 'chunk'} file")
        cfg = d.meta.get("config") or {}
        bad = [f"{key}: {cfg.get(key)!r} vs. {ref_cfg.get(key)!r}" for key in _MERGE_KEYS
               if key in cfg and key in ref_cfg and cfg[key] != ref_cfg[key]]
        if bad:
            raise ValueError(f"merge: part {k} was collected with other settings than part 0 ({'; '.join(bad)})")
        seeds = [(p.meta.get("config") or {}).get("seed") for p in parts[:k]]
        if cfg.get("seed") is not None and cfg.get("seed") in seeds:
            raise ValueError(f"merge: part {k} has prefs.seed {cfg['seed']} like an earlier part: the same episodes "
                             "twice; collect with another prefs.seed")
    offsets = np.cumsum([0] + [int(p.episode.max()) + 1 if p.num_states else 0 for p in parts[:-1]])
    cat = {name: np.concatenate([getattr(p, name) for p in parts]) for name in
           ("obs", "chunks", "utility", "progress", "chunk_return", "success_step", "step")
           + (_SIBLING_ARRAYS if ref.siblings else ())}
    cat["episode"] = np.concatenate([p.episode + off for p, off in zip(parts, offsets)])
    cat["heldout"] = np.concatenate([np.zeros_like(p.heldout) if t else p.heldout for p, t in zip(parts, train_only)])
    margin = float(ref_cfg.get("tie_margin", PrefsConfig.tie_margin))
    out = PreferenceData(**cat, source=ref.source, perturb_std=ref.perturb_std)
    out.meta = {"kind": "simdiff.critic_preferences",
                "config": {**ref_cfg, "episodes": sum(int((p.meta.get("config") or {}).get("episodes", 0))
                                                     for p in parts)},
                "rule": ref.meta.get("rule", RULE), "lookahead": ref.meta.get("lookahead"),
                "horizon_steps": ref.meta.get("horizon_steps"), **_counts(out, margin),
                "wall_time_s": float(sum(p.meta.get("wall_time_s", 0.0) for p in parts)),
                "merged_from": [{"seed": (p.meta.get("config") or {}).get("seed"), "states": p.num_states,
                                 "episode_offset": int(off), "train_only": bool(t)}
                                for p, off, t in zip(parts, offsets, train_only)]}
    return out


__all__ = ["RULE", "PreferenceData", "chunk_utility", "preference_pairs", "collect_preferences", "collect_block_job",
           "merge_preferences", "sibling_candidates", "sibling_steps"]
