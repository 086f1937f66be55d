"""The LoopMDM planner policy: normalizer + tokenizer + masked diffusion around a :class:`PlannerModel`.

Data flow::

    obs history (B, To, Do) --split by obs_layout--> state (B, To, Ds) normalized, context (B, Dc)
        --masked diffusion sampler (simdiff.processes.masked), looped net with S loops-->
    plan tokens (B, H) --tokenizer.decode--> actions (B, Ta, Da) clipped to [-1, 1]

:meth:`PlannerPolicy.predict_action` is the batched entry point; :meth:`select_action` runs plans receding-
horizon (``action_steps`` actions per plan) for one or many environments at once; :meth:`compute_loss` is
the per-sample training loss; :meth:`nll_bits` the exact-in-t NELBO of held-out plans in bits per token.
A planner is saved as a checkpoint directory (safetensors + JSON: weights, tokenizer, normalizer, config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.batching import ChunkedBatchPolicy
from policies.planner.config import PlannerConfig
from policies.planner.model import PlannerModel
from policies.planner.tokenizer import Tokenizer, build_tokenizer, tokenizer_from_state
from simdiff.checkpoint import load_checkpoint, save_checkpoint
from simdiff.config import load_config, to_dict
from simdiff.errors import CheckpointError
from simdiff.processes import masked

POLICY_KIND = "simdiff.planner"


# ------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ObsLayout:
    """Where the state and the (optional) context live in a flat observation vector."""

    state: tuple[int, int]
    context: tuple[int, int] | None = None

    @classmethod
    def from_env_layout(cls, layout: dict[str, Any]) -> ObsLayout:
        """From ``env.unwrapped.obs_layout`` (``{"state": slice, "context": slice}``)."""
        def span(s: Any) -> tuple[int, int]:
            return (int(s.start), int(s.stop)) if isinstance(s, slice) else (int(s[0]), int(s[1]))
        if "state" not in layout:
            raise ValueError(f"obs_layout: expected a 'state' entry, received keys {sorted(layout)}")
        return cls(span(layout["state"]), span(layout["context"]) if layout.get("context") is not None else None)

    @property
    def state_dim(self) -> int:
        return self.state[1] - self.state[0]

    @property
    def context_dim(self) -> int:
        return 0 if self.context is None else self.context[1] - self.context[0]

    @property
    def obs_dim(self) -> int:
        return max(self.state[1], self.context[1] if self.context else 0)


def make_windows(episodes: list[tuple[np.ndarray, np.ndarray]], obs_horizon: int,
                 plan_horizon: int) -> dict[str, torch.Tensor]:
    """Training windows from episodes of ``(obs (T, Do), actions (T, Da))``.

    For every step ``t``: observations ``t - To + 1 .. t`` (the first repeated before the start) and actions
    ``t .. t + Ta - 1`` (the last repeated past the end), as in Diffusion Policy. Returns ``obs`` (N, To, Do)
    and ``actions`` (N, Ta, Da) float32.
    """
    obs_w, act_w = [], []
    for i, (obs, act) in enumerate(episodes):
        obs, act = np.asarray(obs, np.float32), np.asarray(act, np.float32)
        if obs.ndim != 2 or act.ndim != 2 or len(obs) != len(act) or len(obs) == 0:
            raise ValueError(f"episode {i}: expected obs (T, Do) and actions (T, Da) with equal T >= 1, "
                             f"received {obs.shape} and {act.shape}")
        T = len(obs)
        t = np.arange(T)
        obs_idx = np.clip(t[:, None] + np.arange(-obs_horizon + 1, 1)[None], 0, T - 1)
        act_idx = np.clip(t[:, None] + np.arange(plan_horizon)[None], 0, T - 1)
        obs_w.append(obs[obs_idx])
        act_w.append(act[act_idx])
    if not obs_w:
        raise ValueError("episodes: expected at least one episode, received none")
    return {"obs": torch.from_numpy(np.concatenate(obs_w)), "actions": torch.from_numpy(np.concatenate(act_w))}


# ------------------------------------------------------------------------------------------------ policy
class PlannerPolicy:
    """Masked-diffusion planner. ``model`` is trained in place; inference uses the weights it holds."""

    def __init__(self, cfg: PlannerConfig, model: PlannerModel, tokenizer: Tokenizer, layout: ObsLayout,
                 state_mean: torch.Tensor, state_std: torch.Tensor, action_dim: int):
        self.cfg, self.model, self.tokenizer, self.layout = cfg, model, tokenizer, layout
        self.state_mean, self.state_std = state_mean.float(), state_std.float()
        self.action_dim = action_dim
        self.mask_id = model.mask_id
        self.plan_tokens = tokenizer.num_tokens(cfg.plan_horizon)
        self._envs: PlannerBatchPolicy | None = None

    # ------------------------------------------------------------------------------------------ build
    @classmethod
    def build(cls, cfg: PlannerConfig, windows: dict[str, torch.Tensor], layout: ObsLayout,
              seed: int = 0) -> PlannerPolicy:
        """Fit tokenizer and normalizer on training ``windows`` (see :func:`make_windows`), init the model."""
        obs, act = windows["obs"], windows["actions"]
        if obs.shape[-1] < layout.obs_dim:
            raise ValueError(f"windows['obs']: expected Do >= {layout.obs_dim} (obs_layout), received "
                             f"{obs.shape[-1]}")
        if not cfg.use_context:
            layout = ObsLayout(layout.state, None)
        gen = torch.Generator().manual_seed(seed)
        tok = build_tokenizer(cfg.tokenizer, act, gen)
        state = obs[..., layout.state[0]:layout.state[1]].reshape(-1, layout.state_dim)
        mean, std = state.mean(0), state.std(0).clamp_min(cfg.obs_std_floor)
        with torch.random.fork_rng():  # seeded initial weights without touching the caller's global RNG
            torch.manual_seed(seed)
            model = PlannerModel(cfg.net, tok.vocab_size, tok.num_tokens(cfg.plan_horizon), cfg.obs_horizon,
                                 layout.state_dim, layout.context_dim, default_loops=cfg.sample_loops)
        return cls(cfg, model, tok, layout, mean, std, act.shape[-1])

    # -------------------------------------------------------------------------------------- conditioning
    def split_obs(self, obs_hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, To, Do) -> normalized state (B, To, Ds), context of the last step (B, Dc) or None."""
        if obs_hist.dim() != 3 or obs_hist.shape[1] != self.cfg.obs_horizon or \
                obs_hist.shape[2] < self.layout.obs_dim:
            raise ValueError(f"obs_hist: expected (B, {self.cfg.obs_horizon}, Do >= {self.layout.obs_dim}), "
                             f"received {tuple(obs_hist.shape)}")
        obs_hist = obs_hist.float()
        s0, s1 = self.layout.state
        state = (obs_hist[..., s0:s1] - self.state_mean) / self.state_std
        ctx = None if self.layout.context is None else obs_hist[:, -1, self.layout.context[0]:self.layout.context[1]]
        return state, ctx

    def encode_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(actions)

    # ------------------------------------------------------------------------------------------- train
    def train_loops_at(self, step: int, seed: int = 0) -> int:
        """S for training step ``step``: fixed, or U{lo..hi} drawn from a hash of (seed, step) so that a
        resumed run draws the same S and the training FLOPs can be recomputed afterwards."""
        if self.cfg.train_loops_range is None:
            return self.cfg.train_loops
        from simdiff.training import step_seed

        lo, hi = self.cfg.train_loops_range
        return lo + step_seed(seed + 7919, step) % (hi - lo + 1)

    def compute_loss(self, model: PlannerModel, batch: dict[str, torch.Tensor], generator: torch.Generator,
                     loops: int) -> torch.Tensor:
        """Per-sample MDLM loss (B,) in nats/token. ``batch``: ``obs`` (B, To, Do), ``tokens`` (B, H)."""
        x0 = batch["tokens"]
        t = masked.sample_t(x0.shape[0], generator, self.cfg.eps, self.cfg.antithetic)
        z = masked.corrupt(x0, t, self.mask_id, generator, self.cfg.eps)
        state, ctx = self.split_obs(batch["obs"])
        return masked.loss(model(z, state, ctx, loops), x0, z, t, self.mask_id, self.cfg.eps)

    # --------------------------------------------------------------------------------------- inference
    def denoiser(self, loops: int):
        """``(z, t, cond) -> logits`` for the sampler; ``cond`` = {"state", "context"?}; t is ignored."""
        model = self.model

        def fn(z: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
            return model(z, cond["state"], cond.get("context"), loops)
        fn.time_conditioned = False
        return fn

    def _cond(self, obs_hist: torch.Tensor) -> dict[str, torch.Tensor]:
        state, ctx = self.split_obs(obs_hist)
        return {"state": state} if ctx is None else {"state": state, "context": ctx}

    @torch.no_grad()
    def sample_tokens(self, obs_hist: torch.Tensor, generator: masked.Generators = None, *,
                      steps: int | None = None, loops: int | None = None, order: str | None = None,
                      temperature: float | None = None, callback=None) -> torch.Tensor:
        """(B, To, Do) -> plan tokens (B, H). Unset options come from the config."""
        self.model.eval()
        return masked.sample(
            self.denoiser(loops or self.cfg.sample_loops), (obs_hist.shape[0], self.plan_tokens),
            mask_id=self.mask_id, num_steps=steps or self.cfg.sample_steps, generator=generator,
            cond=self._cond(obs_hist), eps=self.cfg.eps, order=order or self.cfg.sample_order,
            temperature=self.cfg.temperature if temperature is None else temperature, callback=callback)

    @torch.no_grad()
    def predict_action(self, obs_hist: torch.Tensor | np.ndarray, generator: masked.Generators = None,
                       **sample_kw: Any) -> torch.Tensor:
        """Batched: observation history (B, To, Do) -> action plan (B, Ta, Da) in [-1, 1].

        ``generator``: one generator, or one per row (see :func:`simdiff.processes.masked.sample`)."""
        obs_hist = torch.as_tensor(obs_hist, dtype=torch.float32)
        tokens = self.sample_tokens(obs_hist, generator, **sample_kw)
        return self.tokenizer.decode(tokens).clamp(-1.0, 1.0)

    @torch.no_grad()
    def nll_bits(self, obs: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None, *,
                 loops: int | None = None, num_samples: int = 1, batch_size: int = 1024) -> float:
        """Mean NELBO bound (bits per token) of the tokenized ``actions`` (N, Ta, Da) given ``obs`` (N, To, Do)."""
        self.model.eval()
        tokens = self.tokenizer.encode(actions)
        total = 0.0
        for i in range(0, tokens.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            nats = masked.nll_bound(self.denoiser(loops or self.cfg.sample_loops), tokens[sl],
                                    mask_id=self.mask_id, cond=self._cond(obs[sl]), num_samples=num_samples,
                                    generator=generator, eps=self.cfg.eps)
            total += float(nats.double().sum())
        return float(masked.nats_to_bits(total / tokens.shape[0]))

    # ------------------------------------------------------------------------------- receding horizon
    def batch_policy(self, task: int | None = None, **sample_kw: Any) -> PlannerBatchPolicy:
        """This planner as a ``BatchPolicy`` for the batched evaluation runner (``simdiff.pipelines.evaluate``);
        ``sample_kw`` (steps, loops, order, temperature) override the config's sampler settings."""
        if task is not None:
            raise ValueError(f"task: the planner is not task-conditioned, received task={task}")
        return PlannerBatchPolicy(self, **sample_kw)

    def reset(self, num_envs: int = 1, seed: int | None = None) -> None:
        """Forget histories and queued plans of ``num_envs`` lock-stepped envs; env ``i`` samples from a
        generator seeded ``seed + i`` (or the global RNG when ``seed`` is None)."""
        self._envs = self.batch_policy()
        self._envs.reset(num_envs)
        for i in range(num_envs):
            self._envs.begin(i, None, None if seed is None else seed + i)

    def reset_env(self, i: int, seed: int | None = None) -> None:
        """Forget the state of env ``i`` only (its episode ended)."""
        self._envs.begin(i, None, seed)

    @torch.no_grad()
    def select_action(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Receding horizon: ``obs`` (Do,) or (B, Do) -> action (Da,) or (B, Da) (see :class:`PlannerBatchPolicy`)."""
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        obs = obs[None] if single else obs
        if self._envs is None or self._envs.num_slots != obs.shape[0]:
            self.reset(obs.shape[0])
        act = self._envs.act(obs, np.arange(obs.shape[0]))
        return act[0] if single else act

    # ------------------------------------------------------------------------------------- persistence
    def save(self, path_dir: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the planner (current model weights, tokenizer, normalizer, config) as a checkpoint dir."""
        tok_meta, tok_tensors = self.tokenizer.state()
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"tokenizer/{k}": v for k, v in tok_tensors.items()})
        tensors.update({"normalizer/state_mean": self.state_mean, "normalizer/state_std": self.state_std})
        meta = {"kind": POLICY_KIND, "config": to_dict(self.cfg), "tokenizer": tok_meta,
                "layout": {"state": list(self.layout.state),
                           "context": list(self.layout.context) if self.layout.context else None},
                "action_dim": self.action_dim, "extra": extra or {}}
        return save_checkpoint(path_dir, tensors, meta)

    @classmethod
    def load(cls, path_dir: str | os.PathLike) -> PlannerPolicy:
        tensors, meta = load_checkpoint(path_dir)
        if meta.get("kind") != POLICY_KIND:
            raise CheckpointError(f"{path_dir}: not a planner checkpoint (kind={meta.get('kind')!r})")
        cfg = load_config(PlannerConfig, meta["config"])
        tok = tokenizer_from_state(meta["tokenizer"], {k.split("/", 1)[1]: v for k, v in tensors.items()
                                                       if k.startswith("tokenizer/")})
        lay = meta["layout"]
        layout = ObsLayout(tuple(lay["state"]), tuple(lay["context"]) if lay["context"] else None)
        model = PlannerModel(cfg.net, tok.vocab_size, tok.num_tokens(cfg.plan_horizon), cfg.obs_horizon,
                             layout.state_dim, layout.context_dim, default_loops=cfg.sample_loops)
        state = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("model/")}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path_dir}: weights do not fit the stored config: {exc}") from exc
        model.eval()
        return cls(cfg, model, tok, layout, tensors["normalizer/state_mean"], tensors["normalizer/state_std"],
                   int(meta["action_dim"]))

    def meta(self) -> dict[str, Any]:
        return {"parameters": self.model.num_parameters(), "vocab_size": self.tokenizer.vocab_size,
                "plan_tokens": self.plan_tokens, "flops_per_forward": self.model.flops(self.cfg.sample_loops)}


class PlannerBatchPolicy(ChunkedBatchPolicy):
    """Drives ``n`` env slots with one planner (the ``BatchPolicy`` protocol of ``simdiff.pipelines.evaluate``).

    Each slot keeps its observation history (the first observation repeated at an episode's start, as in
    training), a queue of ``action_steps`` planned actions and its own generator seeded from the episode seed.
    ``act`` replans every slot whose queue ran out in ONE batched sampler call with per-row generators, so an
    episode does not depend on which others share the batch.
    """

    def __init__(self, policy: PlannerPolicy, **sample_kw: Any):
        self.policy, self.sample_kw = policy, sample_kw
        self.reset(0)

    def reset(self, n: int) -> None:
        cfg = self.policy.cfg
        self._allocate(n, cfg.obs_horizon, self.policy.layout.obs_dim, cfg.action_steps, self.policy.action_dim)

    def _prepare_obs(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, :self._hist.shape[2]]

    def _chunks(self, need: np.ndarray) -> np.ndarray:
        gens = [self._gens[s] for s in need.tolist()]
        plan = self.policy.predict_action(torch.from_numpy(self._hist[need]), gens, **self.sample_kw)
        return plan[:, :self._queue.shape[1]].numpy()


__all__ = ["ObsLayout", "make_windows", "PlannerPolicy", "PlannerBatchPolicy", "POLICY_KIND"]
