"""Ground-truth outcomes of candidate chunks from the simulator, and an oracle best-of-k built on them.

:func:`run_candidates` replays many (state, candidate chunk) rows at once on a pool of spare envs: each row's
env is set to its state (:func:`policies.critic.sim_state.restore`), executes the candidate's ``Ta`` actions
and then, with ``lookahead = L > 0``, continues with the base policy for ``L`` more chunks (deterministic
DDIM; the rows of one state share their noise seed: common random numbers, so candidates differ only by
their own chunk). All rows step in lockstep and every continuation chunk is ONE batched sampling call.

Outcome of a row over its horizon ``H = Ta (1 + L)`` steps: the return, the 1-based step of the first
success (or None), the final box-goal distance. Preference collection ranks candidates by it, and
:class:`OracleBatchPolicy` picks, at every replanning point, the candidate with the best TRUE outcome: the
upper bound of what a perfect critic on clean chunks (terminal best-of-k) could give under the same rule.
:class:`OracleStepScores` gives step-wise GRPO the same rule as its scores: each noisy candidate step is
completed by deterministic DDIM and its TRUE outcome is its score. That is the label the critic is trained to
predict on sibling pairs, so it tells whether the method works with a perfect step reward.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from policies.batching import ChunkedBatchPolicy
from policies.critic.adapter import PolicyDenoiser, sample_chunks
from policies.critic.sim_state import EnvSnapshot, box_goal_distance, restore, snapshot, staging_distance


@torch.no_grad()
def run_candidates(envs: list[Any], snaps: list[EnvSnapshot], actions: np.ndarray, hist: np.ndarray,
                   den: PolicyDenoiser | None = None, lookahead: int = 0, seeds: list[int] | None = None) -> list[dict]:
    """Outcomes of ``M`` rows: ``envs`` (M spare envs, overwritten), ``snaps`` (M states), ``actions (M, Ta, Da)``
    env actions of each candidate, ``hist (M, To, Do)`` observation history at each state, ``seeds`` (M)
    continuation noise seeds. Returns per row ``{"return", "success_step", "d_end", "s_end", "done", "obs",
    "steps"}`` (``s_end``: :func:`policies.critic.sim_state.staging_distance` at the end)
    where ``obs`` holds the observations of the candidate's own steps only."""
    m = len(envs)
    if not (len(snaps) == m == actions.shape[0] == hist.shape[0]):
        raise ValueError(f"run_candidates: expected M rows everywhere, received envs {m}, snaps {len(snaps)}, "
                         f"actions {actions.shape[0]}, hist {hist.shape[0]}")
    if lookahead and den is None:
        raise ValueError("lookahead > 0: expected the base policy's denoiser, received None")
    out = [{"return": 0.0, "success_step": None, "done": False, "obs": [], "steps": 0} for _ in range(m)]
    for env, snap in zip(envs, snaps):
        restore(env, snap)
    h = np.array(hist, dtype=np.float32, copy=True)
    _execute(envs, actions, out, h, np.arange(m))
    for o in out:
        o["own_obs"] = list(o["obs"])
    gens = [torch.Generator().manual_seed(int(s)) for s in (seeds if seeds is not None else [0] * m)]
    for _ in range(lookahead):
        live = np.array([i for i in range(m) if not out[i]["done"]], dtype=np.int64)
        if not live.size:
            break
        cond = den.condition(den.obs_features(h[live]))
        x0 = sample_chunks(den, cond, 0.0, [gens[i] for i in live.tolist()])
        acts = np.zeros_like(actions)
        acts[live] = den.to_actions(x0).to(torch.float32).numpy()
        _execute(envs, acts, out, h, live)
    for env, o in zip(envs, out):
        o["d_end"] = box_goal_distance(env)
        o["s_end"] = staging_distance(env)
        o["obs"] = o.pop("own_obs")
    return out


def _execute(envs: list[Any], actions: np.ndarray, out: list[dict], hist: np.ndarray, rows: np.ndarray) -> None:
    """Step ``rows`` through their ``Ta`` actions in lockstep; a row stops when its episode ends."""
    live = [i for i in rows.tolist() if not out[i]["done"]]
    for k in range(actions.shape[1]):
        for i in live:
            obs, r, terminated, truncated, info = envs[i].step(actions[i, k])
            o = out[i]
            o["return"] += float(r)
            o["steps"] += 1
            o["obs"].append(obs)
            hist[i] = np.concatenate([hist[i, 1:], obs[None]], axis=0)
            if o["success_step"] is None and info.get("success", False):
                o["success_step"] = o["steps"]
            o["done"] = bool(terminated or truncated)
        live = [i for i in live if not out[i]["done"]]
        if not live:
            break


def spare_envs(env_id: str, n: int) -> list[Any]:
    """``n`` Push-v0 envs to replay candidates on (their domains are overwritten by each restore)."""
    from envs import make

    envs = [make(env_id, level=None) for _ in range(n)]
    for e in envs:
        e.reset(seed=0)
    return envs


class OracleBatchPolicy(ChunkedBatchPolicy):
    """Best-of-``k`` by TRUE simulator outcome (a diagnostic upper bound, not a deployable policy).

    At each replanning point of a slot, ``k`` chunks are drawn from the base sampler (DDIM ``eta``), each is
    replayed from a snapshot of the slot's env on a spare env (plus ``lookahead`` base-policy chunks), and
    the candidate with the highest utility (:func:`policies.critic.preferences.chunk_utility` over the
    horizon) is queued. Implements the runner's ``BatchPolicy`` protocol; it needs the env given to ``begin``.
    """

    def __init__(self, den: PolicyDenoiser, k: int = 4, eta: float = 1.0, lookahead: int = 0,
                 env_id: str = "simdiff/Push-v0", co_proposer: PolicyDenoiser | None = None,
                 rollout: PolicyDenoiser | None = None, shaping: float = 0.0):
        """``co_proposer`` (optional) samples ``k`` more candidates per state next to ``den``'s; ``rollout``
        (default ``den``) is the policy that continues each candidate for the ``lookahead`` chunks, i.e. the
        policy whose value the search estimates. All must share the horizons and action dimension.
        ``shaping > 0`` adds ``shaping`` times the relative decrease of the pusher's distance to its staging
        point (:func:`shaped_utility`) to the utility of failed candidates, so that among candidates that do not
        move the box, one that goes around it to push from behind wins."""
        if k < 1 or lookahead < 0 or not 0.0 <= shaping <= 1.0:
            raise ValueError(f"expected k >= 1, lookahead >= 0 and shaping in [0, 1], received k={k}, "
                             f"lookahead={lookahead}, shaping={shaping}")
        self.shaping = float(shaping)
        for name, other in (("co_proposer", co_proposer), ("rollout", rollout)):
            if other is not None and _dims(other) != _dims(den):
                raise ValueError(f"OracleBatchPolicy: {name} must share (To, Tp, Ta, Do, Da) with the base policy; "
                                 f"expected {_dims(den)}, received {_dims(other)}")
        self.den, self.k, self.eta, self.lookahead, self.env_id = den, int(k), float(eta), int(lookahead), env_id
        self.proposers = [den] + ([co_proposer] if co_proposer is not None else [])
        self.rollout = rollout if rollout is not None else den
        self._spares: list[Any] = []
        self.reset(0)

    @property
    def source(self) -> str:
        extra = (", +co-proposer" if len(self.proposers) > 1 else "") + (
            ", rollout by another policy" if self.rollout is not self.den else "") + (
            f", shaping {self.shaping:g}" if self.shaping else "")
        return f"oracle(k={self.k}, eta={self.eta}, lookahead={self.lookahead}{extra})"

    def reset(self, n: int) -> None:
        d = self.den
        self._allocate(n, d.obs_horizon, d.obs_dim, d.action_horizon, d.action_dim)
        self._envs: list[Any] = [None] * n
        self._t = np.zeros(n, dtype=np.int64)
        self._seed = np.zeros(n, dtype=np.int64)

    def begin(self, slot: int, env: Any, seed: int) -> None:
        super().begin(slot, env, seed)
        self._envs[slot] = env
        self._t[slot] = 0
        self._seed[slot] = int(seed)

    @torch.no_grad()
    def _chunks(self, need: np.ndarray) -> np.ndarray:
        from policies.critic.preferences import chunk_utility

        d = self.den
        # Candidates of one state are contiguous: k from each proposer, in order.
        full_p = []
        for p in self.proposers:
            cond = p.condition(p.obs_features(self._hist[need]))
            gens = [self._gens[s] for s in need.tolist() for _ in range(self.k)]
            x0 = sample_chunks(p, cond.repeat_interleave(self.k, 0), self.eta, gens)
            p.counter.chunks += need.size
            full_p.append(p.to_actions(x0, full=True).to(torch.float32).numpy().reshape(need.size, self.k,
                                                                                       -1, d.action_dim))
        k = self.k * len(self.proposers)
        full = np.concatenate(full_p, axis=1).reshape(need.size * k, -1, d.action_dim)
        acts = full[:, d.obs_horizon - 1:d.obs_horizon - 1 + d.action_horizon]  # what the world executes
        rows = need.size * k
        if len(self._spares) < rows:
            self._spares += spare_envs(self.env_id, rows - len(self._spares))
        snaps = [snapshot(self._envs[s]) for s in need.tolist()]
        d0 = [box_goal_distance(self._envs[s]) for s in need.tolist()]
        s0 = [staging_distance(self._envs[s]) for s in need.tolist()]
        seeds = [int(self._seed[s]) * 1009 + int(self._t[s]) for s in need.tolist() for _ in range(k)]
        res = run_candidates(self._spares[:rows], [sn for sn in snaps for _ in range(k)], acts,
                             np.repeat(self._hist[need], k, axis=0), self.rollout, self.lookahead, seeds)
        horizon = d.action_horizon * (1 + self.lookahead)
        best, best_u = [], []
        for r in range(need.size):
            utils = [shaped_utility(chunk_utility(o["success_step"], d0[r], o["d_end"], horizon), s0[r], o["s_end"],
                                    self.shaping) for o in res[r * k:(r + 1) * k]]
            best.append(r * k + int(np.argmax(utils)))
            best_u.append(max(utils))
        self.last_utility = np.asarray(best_u, dtype=np.float64)  # the verified outcome of each chosen chunk
        # The whole predicted chunk (Tp actions from t - To + 1) of each chosen candidate, for callers that use
        # it as a training label (searched DAgger); the runner executes only its Ta-slice.
        self.last_full = full[best]
        return acts[best]

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        out = super().act(obs, slots)
        self._t[np.asarray(slots, dtype=np.int64)] += 1
        return out


class OracleStepScores:
    """The critic's ``condition`` / ``score`` interface for step-wise GRPO, scoring every candidate by its TRUE
    outcome (a diagnostic: what step-wise GRPO does with a perfect step reward under the ranking rule).

    Before each group batch the caller :meth:`bind` s the ``n`` states (simulator snapshots, observation
    histories, box-goal distances) whose ``k`` candidates are scored next, state ``i`` owning rows
    ``i k .. i k + k - 1``. A candidate ``x_{t_prev}`` is completed by deterministic DDIM with ``den`` (the
    reference policy, as the sibling preference data are), executed from its state's snapshot on a spare env,
    followed by ``lookahead`` chunks of ``den`` (the candidates of one state share that noise: common random
    numbers) and scored by :func:`policies.critic.preferences.chunk_utility` over ``Ta (1 + lookahead)`` steps.
    """

    def __init__(self, den: PolicyDenoiser, env_id: str, lookahead: int = 2, seed: int = 0, noise_std: float = 0.0):
        """``noise_std > 0`` adds seeded ``N(0, noise_std^2)`` noise to every utility: an oracle with random errors,
        to compare with a learned critic of the same pairwise accuracy (whose errors need not be random)."""
        if lookahead < 0 or not noise_std >= 0.0:
            raise ValueError(f"expected lookahead >= 0 and noise_std >= 0, received lookahead={lookahead}, "
                             f"noise_std={noise_std}")
        self.den, self.env_id, self.lookahead, self.seed = den, env_id, int(lookahead), int(seed)
        self.noise_std = float(noise_std)
        self._noise = torch.Generator().manual_seed(int(seed) + 7_919)
        self.net = den.net                  # read by the callers for its dtype
        self.counter = den.counter
        self._spares: list[Any] = []
        self._bound: tuple[list[EnvSnapshot], np.ndarray, np.ndarray] | None = None
        self._calls = 0
        self.env_steps = 0                  #: simulator steps spent replaying candidates (and their lookahead)

    def bind(self, snaps: list[EnvSnapshot], hist: np.ndarray, d0: np.ndarray) -> None:
        if not (len(snaps) == hist.shape[0] == len(d0)):
            raise ValueError(f"bind: expected one history and distance per snapshot ({len(snaps)}), received "
                             f"{hist.shape[0]} and {len(d0)}")
        self._bound = (list(snaps), np.asarray(hist, dtype=np.float32), np.asarray(d0, dtype=np.float64))

    def condition(self, feat: Tensor, task: Tensor | None = None) -> Tensor:
        return feat

    @torch.no_grad()
    def complete(self, x: Tensor, t_prev: int, cond: Tensor) -> Tensor:
        """Deterministic DDIM from ``x`` at step ``t_prev`` to a clean chunk (``t_prev = -1``: ``x`` is one)."""
        plan = self.den.plan()
        start = next((i for i, (t, _) in enumerate(plan) if t == int(t_prev)), len(plan))
        if int(t_prev) >= 0 and start == len(plan):
            raise ValueError(f"t_prev: expected a step of the DDIM plan {[t for t, _ in plan]}, received {t_prev}")
        for t, tp in plan[start:]:
            out = self.den.predict(x, t, cond)
            x = self.den.step_mean_std(out, x, t, tp, 0.0)[0]
        return x

    @torch.no_grad()
    def score(self, x_t: Tensor, t: Tensor | int, cond: Tensor) -> Tensor:
        from policies.critic.preferences import chunk_utility

        if self._bound is None:
            raise RuntimeError("OracleStepScores.score: bind(snaps, hist, d0) the scored states first")
        snaps, hist, d0 = self._bound
        n, rows = len(snaps), x_t.shape[0]
        if rows % n:
            raise ValueError(f"score: expected k rows per bound state ({n} states), received {rows} rows")
        if not isinstance(t, int) and not bool((t == t.reshape(-1)[0]).all()):
            raise ValueError("score: expected one step t for all rows")
        k, d = rows // n, self.den
        tt = int(t) if isinstance(t, int) else int(t.reshape(-1)[0])
        pcond = d.condition(d.obs_features(hist)).repeat_interleave(k, 0)
        acts = d.to_actions(self.complete(x_t.to(d.dtype), tt, pcond)).to(torch.float32).numpy()
        if len(self._spares) < rows:
            self._spares += spare_envs(self.env_id, rows - len(self._spares))
        self._calls += 1
        seeds = [self.seed * 1_000_003 + self._calls * 10_007 + i for i in range(n) for _ in range(k)]
        res = run_candidates(self._spares[:rows], [sn for sn in snaps for _ in range(k)], acts,
                             np.repeat(hist, k, axis=0), d, self.lookahead, seeds)
        horizon = d.action_horizon * (1 + self.lookahead)
        self.counter.critic += rows
        self.env_steps += sum(int(o["steps"]) for o in res)
        u = torch.tensor([chunk_utility(o["success_step"], d0[r // k], o["d_end"], horizon) for r, o in enumerate(res)],
                         dtype=torch.float64)
        if self.noise_std:
            u = u + self.noise_std * torch.randn(rows, generator=self._noise, dtype=torch.float64)
        return u.to(x_t.dtype)


def shaped_utility(u: float, s0: float, s_end: float, weight: float) -> float:
    """``u`` (:func:`policies.critic.preferences.chunk_utility`) plus, for a failed outcome (``u < 1``),
    ``weight`` times the relative decrease of the staging distance, clipped to [-1, 1]. Successes are left as
    they are so they still rank first; ``weight = 0`` gives ``u`` exactly."""
    if weight == 0.0 or u >= 1.0:
        return u
    # Capped below 1 so that a shaped failure never outranks a success.
    return min(u + weight * float(np.clip((s0 - s_end) / max(s0, 1e-2), -1.0, 1.0)), 1.0 - 1e-6)


def _dims(den: PolicyDenoiser) -> tuple[int, ...]:
    return (den.obs_horizon, den.pred_horizon, den.action_horizon, den.obs_dim, den.action_dim)


__all__ = ["run_candidates", "spare_envs", "OracleBatchPolicy", "OracleStepScores", "shaped_utility"]
