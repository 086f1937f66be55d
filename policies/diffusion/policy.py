"""The conditional diffusion policy: normalizers + noise schedule + network, trained and sampled as one object.

``DiffusionPolicy`` (Chi et al. 2023, "Diffusion Policy"; the policy layer of real-stanford/diffusion_policy):

* ``compute_loss(batch, generator) -> (B,)``: epsilon (or v / x0) regression on noised, normalized action
  sequences ``(B, Tp, Da)``, conditioned on the observation history ``(B, To, Do)``;
* ``predict_action(obs_history (B, To, Do), generator) -> (B, Ta, Da)``: DDIM (or DDPM) sampling of a
  ``Tp``-step action sequence, of which the ``Ta`` actions from the current step on are returned;
* ``reset()`` / ``select_action(obs)``: receding-horizon control with an action queue (replan every ``Ta``);
* ``batch_policy()``: the adapter that lets the batched evaluation runner drive many envs at once;
* ``save(dir)`` / ``DiffusionPolicy.load(dir)``: safetensors weights (EMA) + JSON (config, normalizer
  stats, dataset fingerprint, metrics).

Conditioning: the state part of each observation is normalized and the ``To`` steps are flattened; the
domain context (already normalized by the env) of the newest observation is appended when
``model.use_context``; a task embedding is appended when ``model.num_tasks > 0``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from policies.batching import ChunkedBatchPolicy
from policies.diffusion.config import FREE_SECTIONS, DiffusionPolicyConfig, load_policy_config
from policies.diffusion.data import Episodes
from policies.diffusion.model import DiffusionPolicyNet
from policies.diffusion.normalizer import Normalizer
from simdiff.errors import CheckpointError
from simdiff.nets.frozen import FrozenForward
from simdiff.processes import gaussian as G

POLICY_KIND = "simdiff.diffusion_policy"
POLICY_FORMAT = 1
POLICY_DIR = "policy"        # exported inference checkpoint inside a training run directory
TRAIN_CKPT_DIR = "checkpoint"

Generators = torch.Generator | Sequence[torch.Generator] | None


# ------------------------------------------------------------------------------------- sampler (pure math)
def ddim_plan(schedule: G.GaussianSchedule, num_steps: int) -> list[tuple[int, float, float, float, float]]:
    """Per DDIM step: ``(t, sqrt(ab_t), sqrt(1 - ab_t), sqrt(ab_prev), sqrt(1 - ab_prev))`` as Python floats.

    Timesteps come from the engine's :func:`~simdiff.processes.gaussian.ddim_timesteps`; the last step goes to
    clean data (``ab_prev = 1``).
    """
    ts = G.ddim_timesteps(schedule.num_steps, num_steps).tolist()
    ab = schedule.alpha_bars.to(torch.float64)
    plan = []
    for i, t in enumerate(ts):
        a = float(ab[t])
        a_prev = float(ab[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        plan.append((t, a ** 0.5, (1.0 - a) ** 0.5, a_prev ** 0.5, (1.0 - a_prev) ** 0.5))
    return plan


def ddim_update(model_out: Tensor, x: Tensor, coef: tuple[int, float, float, float, float], prediction: str,
                clip: float | None) -> Tensor:
    """Deterministic DDIM step (Song et al. eq. 12, ``eta = 0``) with every row at the same step.

    Numerically the engine's :func:`~simdiff.processes.gaussian.ddim_step` (tested against it), specialised
    to shared scalar coefficients: at batch 1 the per-step tensor bookkeeping of the general function costs
    more than a small network's forward pass.
    """
    _, sab, s1m, sab_prev, s1m_prev = coef
    if prediction == "epsilon":
        x0, eps = (x - s1m * model_out) / sab, model_out
    elif prediction == "x0":
        x0, eps = model_out, (x - sab * model_out) / s1m
    else:  # v = sqrt(ab) eps - sqrt(1 - ab) x0
        x0, eps = sab * x - s1m * model_out, s1m * x + sab * model_out
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (x - sab * x0) / s1m  # keep eps consistent with the clipped x0, as the engine does
    return sab_prev * x0 + s1m_prev * eps


def ddim_loop(unet: torch.nn.Module, x: Tensor, cond: Tensor | None, *,
              plan: Sequence[tuple[int, float, float, float, float]], prediction: str, clip: float | None) -> Tensor:
    """Deterministic DDIM from ``x (B, Tp, Da)`` along ``plan`` (see :func:`ddim_plan`) -> ``(B, Tp, Da)``.

    The conditioning of every step is computed once up front (it does not change over the loop); a pure
    function of its tensor inputs, so the policy can run it as one frozen graph.
    """
    steps = torch.tensor([c[0] for c in plan], dtype=torch.long)
    films = unet.film_steps(*unet.film_terms(steps, cond))
    for coef, film in zip(plan, films):
        x = ddim_update(unet.forward(x, film=film), x, coef, prediction, clip)
    return x


def guided_ddim_loop(unet: torch.nn.Module, x: Tensor, cond: Tensor, cond_against: Tensor, *,
                     plan: Sequence[tuple[int, float, float, float, float]], prediction: str, clip: float | None,
                     guidance: float) -> Tensor:
    """:func:`ddim_loop` with task guidance: each step's prediction is ``out(cond) + guidance * (out(cond) -
    out(cond_against))``, both rows of a pair evaluated in one batched forward."""
    steps = torch.tensor([c[0] for c in plan], dtype=torch.long)
    films = unet.film_steps(*unet.film_terms(steps, torch.cat([cond, cond_against])))
    b = x.shape[0]
    for coef, film in zip(plan, films):
        out = unet.forward(torch.cat([x, x]), film=film)
        out = out[:b] + guidance * (out[:b] - out[b:])
        x = ddim_update(out, x, coef, prediction, clip)
    return x


def _unet_film_forward(unet: torch.nn.Module, x: Tensor, *film: Tensor) -> Tensor:
    """``unet.forward(x, film=...)`` with the FiLM pairs flattened to ``scale0, bias0, scale1, ...``."""
    return unet.forward(x, film=[(film[i], film[i + 1]) for i in range(0, len(film), 2)])


def draw_noise(shape: tuple[int, ...], generator: Generators, dtype: torch.dtype,
               device: torch.device | str | None = None) -> Tensor:
    """Gaussian noise ``(B, ...)``, drawn in float32 on the CPU generators then moved to ``dtype``/``device``
    (the same noise whatever the network's precision); a sequence of generators draws row ``i`` from
    ``generator[i]`` only, so a row's noise does not depend on which other rows share the batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"generator: expected one generator per row ({shape[0]}), received {len(gens)}")
    return torch.stack([torch.randn(shape[1:], generator=g) for g in gens]).to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------- policy
class DiffusionPolicy:
    """Observation history -> action chunk by conditional denoising. See the module docstring."""

    def __init__(self, cfg: DiffusionPolicyConfig, obs_dim: int, action_dim: int,
                 obs_layout: dict[str, tuple[int, int]] | None, obs_normalizer: Normalizer,
                 action_normalizer: Normalizer, dataset: dict[str, Any] | None = None):
        if not isinstance(cfg, DiffusionPolicyConfig):
            raise TypeError(f"cfg: expected DiffusionPolicyConfig, received {type(cfg).__name__}")
        self.cfg = cfg
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        layout = {k: (int(v[0]), int(v[1])) for k, v in (obs_layout or {"state": (0, obs_dim)}).items()}
        self.obs_layout = layout
        self.state_cols = layout.get("state", (0, obs_dim))
        ctx = layout.get("context")
        self.context_cols = ctx if (ctx is not None and cfg.model.use_context) else None
        ds = self.state_cols[1] - self.state_cols[0]
        if obs_normalizer.dim != ds:
            raise ValueError(f"obs_normalizer: expected dimension {ds} (the state part), received {obs_normalizer.dim}")
        if action_normalizer.dim != action_dim:
            raise ValueError(f"action_normalizer: expected dimension {action_dim}, received {action_normalizer.dim}")
        self.obs_normalizer, self.action_normalizer = obs_normalizer, action_normalizer
        self.dataset = dict(dataset or {})
        h = cfg.horizon
        self.obs_feat_dim = h.obs * ds + (self.context_cols[1] - self.context_cols[0] if self.context_cols else 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)  # initial weights are a function of the config
            self.model = DiffusionPolicyNet(cfg.model, action_dim, self.obs_feat_dim)
        self.ema: torch.nn.Module | None = None
        self.schedule = G.make_schedule(cfg.noise.schedule, cfg.noise.train_steps)
        self.inference_steps = cfg.noise.inference_steps
        self.metrics: dict[str, Any] = {}
        self.source: str | None = None
        self.reset()

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_episodes(cls, cfg: DiffusionPolicyConfig, episodes: Episodes) -> DiffusionPolicy:
        """A fresh policy whose normalizers are fitted to ``episodes`` (state part of obs, and actions)."""
        a, b = episodes.obs_layout.get("state", (0, episodes.obs_dim))
        obs_norm = Normalizer.fit(episodes.obs[:, a:b], cfg.normalizer.obs)
        act_norm = Normalizer.fit(episodes.actions, cfg.normalizer.action)
        info = {"fingerprint": episodes.fingerprint(), "episodes": episodes.num_episodes,
                "steps": int(episodes.lengths.sum()), **{k: v for k, v in episodes.meta.items() if k != "episodes"}}
        return cls(cfg, episodes.obs_dim, episodes.action_dim, episodes.obs_layout, obs_norm, act_norm, info)

    @property
    def horizons(self) -> tuple[int, int, int]:
        h = self.cfg.horizon
        return h.obs, h.prediction, h.action

    @property
    def net(self) -> DiffusionPolicyNet:
        """The network used for inference: EMA weights when present."""
        return self.ema if self.ema is not None else self.model

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> DiffusionPolicy:
        """Move the networks (e.g. ``float64`` for exact comparisons); returns ``self``."""
        for m in (self.model, self.ema):
            if m is not None:
                m.to(device=device, dtype=dtype)
        return self

    # -- features and loss -------------------------------------------------------------------------------
    def _as_obs(self, obs_history: Tensor | np.ndarray) -> Tensor:
        x = torch.as_tensor(obs_history)
        To = self.cfg.horizon.obs
        if x.ndim != 3 or x.shape[1:] != (To, self.obs_dim):
            raise ValueError(f"obs_history: expected shape (B, {To}, {self.obs_dim}), received {tuple(x.shape)}")
        return x.to(self.dtype)

    def obs_features(self, obs_history: Tensor | np.ndarray) -> Tensor:
        """``(B, To, Do)`` raw observations -> ``(B, F)``: normalized state history + newest domain context."""
        obs = self._as_obs(obs_history)
        a, b = self.state_cols
        state = self.obs_normalizer.normalize(obs[..., a:b]).flatten(1)
        if self.context_cols is None:
            return state
        c0, c1 = self.context_cols
        return torch.cat([state, obs[:, -1, c0:c1]], dim=1)

    def task_ids(self, task: Tensor | int | Sequence[int] | None, batch: int) -> Tensor | None:
        """``(batch,)`` task ids for the network: ``task`` broadcast, or ``model.default_task`` where it is None."""
        if task is None:
            task = self.cfg.model.default_task
            if task is None:
                return None
        t = torch.as_tensor(task, dtype=torch.long)
        return t.expand(batch).clone() if t.ndim == 0 else t

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator,
                     model: torch.nn.Module | None = None) -> Tensor:
        """Per-sample diffusion loss ``(B,)`` for a raw batch ``{"obs": (B, To, Do), "action": (B, Tp, Da),
        "task": (B,) | None}``; noise and steps come from ``generator``. ``model`` defaults to ``self.model``."""
        model = self.model if model is None else model
        x0 = torch.as_tensor(batch["action"])
        Tp = self.cfg.horizon.prediction
        if x0.ndim != 3 or x0.shape[1:] != (Tp, self.action_dim):
            raise ValueError(f"batch['action']: expected shape (B, {Tp}, {self.action_dim}), received "
                             f"{tuple(x0.shape)}")
        x0 = self.action_normalizer.normalize(x0.to(self.dtype))
        feat = self.obs_features(batch["obs"])
        b = x0.shape[0]
        # Drawn on the CPU generator (the same numbers on every device), then moved to the batch's device.
        t = torch.randint(self.schedule.num_steps, (b,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(device=x0.device, dtype=x0.dtype)
        x_t = G.corrupt(x0, t, noise, self.schedule)
        out = model(x_t, t, feat, self.task_ids(batch.get("task"), b))
        return G.loss(out, x0, noise, t, self.schedule, self.cfg.noise.prediction)

    # -- sampling ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_action(self, obs_history: Tensor | np.ndarray, generator: Generators = None,
                       task: Tensor | int | Sequence[int] | None = None, full: bool = False) -> Tensor:
        """``(B, To, Do)`` raw observations -> ``(B, Ta, Da)`` actions in env units (``(B, Tp, Da)`` if ``full``).

        ``generator`` is one ``torch.Generator`` for the batch or one per row (rows then sample
        independently of each other). The EMA network is used when present.
        """
        net = self.net  # no dropout or batch norm: train/eval mode does not matter, so leave it alone
        feat = self.obs_features(obs_history)
        b = feat.shape[0]
        cond = net.condition(feat, self.task_ids(task, b))
        To, Tp, Ta = self.horizons
        x = draw_noise((b, Tp, self.action_dim), generator, feat.dtype, feat.device)
        noise_cfg = self.cfg.noise
        if noise_cfg.guidance:
            if noise_cfg.sampler != "ddim":
                raise ValueError(f"noise.guidance: implemented for the ddim sampler, received sampler "
                                 f"{noise_cfg.sampler!r}")
            against = net.condition(feat, self.task_ids(noise_cfg.guidance_against, b))
            x = self._sample_ddim(net, x, cond, against)
        elif noise_cfg.sampler == "ddim":
            x = self._sample_ddim(net, x, cond)
        else:
            x = self._sample_ddpm(net, x, cond, generator)
        actions = self.action_normalizer.unnormalize(x)
        return actions if full else actions[:, To - 1:To - 1 + Ta]

    def _sample_ddim(self, net: DiffusionPolicyNet, x: Tensor, cond: Tensor, against: Tensor | None = None) -> Tensor:
        key = ("ddim", self.inference_steps)
        cache = self.__dict__.setdefault("_plans", {})
        if key not in cache:
            cache[key] = ddim_plan(self.schedule, self.inference_steps)
        unet, noise = net.unet, self.cfg.noise
        if against is None:
            args = (x, cond)
            loop = functools.partial(ddim_loop, plan=cache[key], prediction=noise.prediction, clip=noise.clip)
        else:
            args = (x, cond, against)
            loop = functools.partial(guided_ddim_loop, plan=cache[key], prediction=noise.prediction,
                                     clip=noise.clip, guidance=noise.guidance)
            key = (*key, "guided", noise.guidance)
        if not noise.frozen_graph or cond is None:
            return loop(unet, *args)
        # The whole deterministic loop (conditioning, every step's forward and update) as one frozen graph.
        return self._frozen_graph(unet, loop, (*key, noise.prediction, noise.clip))(*args)

    def _denoiser(self, unet: torch.nn.Module):
        """``(x, film) -> prediction``: the U-Net's forward, as a frozen graph when ``noise.frozen_graph``."""
        if not self.cfg.noise.frozen_graph:
            return lambda x, film: unet.forward(x, film=film)
        frozen = self._frozen_graph(unet, _unet_film_forward, ("forward",))
        return lambda x, film: frozen(x, *(t for pair in film for t in pair))

    def _frozen_graph(self, unet: torch.nn.Module, fn, key: tuple) -> FrozenForward:
        """The cached frozen graph of ``fn(unet, ...)`` under ``key``, refreshed once per chunk (training may
        have changed the weights since the last one)."""
        graphs = self.__dict__.setdefault("_frozen", {})
        frozen = graphs.get((id(unet), *key))
        if frozen is None or frozen.module is not unet:
            frozen = graphs[(id(unet), *key)] = FrozenForward(unet, fn)
        return frozen.refresh()

    def _sample_ddpm(self, net: DiffusionPolicyNet, x: Tensor, cond: Tensor, generator: Generators) -> Tensor:
        unet = net.unet
        steps = torch.arange(self.schedule.num_steps - 1, -1, -1)
        step_terms, cond_terms = unet.film_terms(steps, cond)
        denoise = self._denoiser(unet)
        for k, t in enumerate(steps.tolist()):
            out = denoise(x, unet.film_at(step_terms, cond_terms, k))
            mean, std = G.ddpm_step_mean_std(out, x, t, self.schedule, self.cfg.noise.prediction,
                                             self.cfg.noise.clip)
            x = mean + std * draw_noise(tuple(x.shape), generator, x.dtype, x.device)
        return x

    # -- receding-horizon control -------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Forget the observation history and queued actions; ``seed`` seeds the policy's own generator."""
        self._history: list[np.ndarray] = []
        self._queue: list[np.ndarray] = []
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def select_action(self, obs: np.ndarray, generator: Generators = None,
                      task: int | Sequence[int] | None = None) -> np.ndarray:
        """One env step: ``obs (Do,)`` -> ``(Da,)`` (or ``(B, Do)`` -> ``(B, Da)`` for B lock-stepped envs).

        A new chunk is predicted when the queue of ``Ta`` actions is empty; the first observation after
        ``reset`` is repeated to fill the history, as the demos were padded in training.
        """
        o = np.asarray(obs, dtype=np.float32)
        single = o.ndim == 1
        o = o[None] if single else o
        if o.ndim != 2 or o.shape[1] != self.obs_dim:
            raise ValueError(f"obs: expected shape ({self.obs_dim},) or (B, {self.obs_dim}), received {np.shape(obs)}")
        To = self.cfg.horizon.obs
        self._history = self._history[1:] + [o] if self._history else [o] * To
        if not self._queue:
            hist = np.stack(self._history, axis=1)  # (B, To, Do)
            gen = generator if generator is not None else self._generator
            chunk = self.predict_action(hist, gen, task).to(torch.float32).numpy()
            self._queue = [chunk[:, i] for i in range(chunk.shape[1])]
        a = self._queue.pop(0)
        return a[0] if single else a

    def batch_policy(self, task: int | None = None) -> DiffusionBatchPolicy:
        """This policy as a :class:`DiffusionBatchPolicy` for the batched evaluation runner."""
        return DiffusionBatchPolicy(self, task)

    # -- checkpoints -------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """JSON description sufficient to rebuild the policy (without weights)."""
        from simdiff.config import to_dict

        return {"kind": POLICY_KIND, "policy_format": POLICY_FORMAT, "config": to_dict(self.cfg),
                "obs_dim": self.obs_dim, "action_dim": self.action_dim,
                "obs_layout": {k: list(v) for k, v in self.obs_layout.items()},
                "normalizers": {"obs": self.obs_normalizer.to_dict(), "action": self.action_normalizer.to_dict()},
                "dataset": self.dataset}

    def save(self, path_dir: str | os.PathLike, metrics: dict | None = None) -> Path:
        """Write the inference network (EMA if present) + :meth:`meta` + ``metrics`` as a checkpoint dir."""
        from simdiff.checkpoint import module_tensors, save_checkpoint

        tensors = module_tensors("ema", self.net)
        return save_checkpoint(path_dir, tensors, {**self.meta(), "metrics": dict(metrics or {})})

    @classmethod
    def load(cls, path: str | os.PathLike, config: DiffusionPolicyConfig | None = None) -> DiffusionPolicy:
        """Load from a run directory (``DIR/policy`` or, while training, ``DIR/checkpoint``) or a checkpoint
        directory. With ``config``, the checkpoint must match it except for sampling and training fields
        (``FREE_SECTIONS``); its sampler settings are then used. Mismatch or corruption -> CheckpointError."""
        from simdiff.checkpoint import check_compatible, load_checkpoint, load_module_tensors

        src = _find_policy_checkpoint(Path(path))
        tensors, meta = load_checkpoint(src)
        pmeta = _policy_meta(src, meta)
        stored = _stored_config(src, pmeta)
        if config is not None:
            from simdiff.config import to_dict

            try:
                check_compatible({"config": pmeta["config"]}, to_dict(config), ignore=FREE_SECTIONS)
            except CheckpointError as exc:
                raise CheckpointError(f"{src}: {exc}") from None
            stored = config
        try:
            obs_norm = Normalizer.from_dict(pmeta["normalizers"]["obs"])
            act_norm = Normalizer.from_dict(pmeta["normalizers"]["action"])
            policy = cls(stored, int(pmeta["obs_dim"]), int(pmeta["action_dim"]),
                         {k: tuple(v) for k, v in pmeta["obs_layout"].items()}, obs_norm, act_norm,
                         pmeta.get("dataset"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{src}: policy metadata is incomplete or inconsistent ({exc})") from exc
        load_module_tensors(policy.model, "ema", tensors)
        policy.model.eval()
        policy.metrics = dict(meta.get("metrics") or {})
        policy.source = str(src)
        return policy


def _find_policy_checkpoint(path: Path) -> Path:
    from simdiff.checkpoint import resolve_checkpoint_dir

    for cand in (path / POLICY_DIR, path / TRAIN_CKPT_DIR, path):
        found = resolve_checkpoint_dir(cand)
        if found is not None:
            return found
    if not path.exists():
        raise CheckpointError(f"{path}: no such policy directory")
    raise CheckpointError(f"{path}: no policy checkpoint here (expected {path / POLICY_DIR}/meta.json or "
                          f"{path / TRAIN_CKPT_DIR}/meta.json)")


def _policy_meta(src: Path, meta: dict) -> dict:
    if meta.get("kind") == POLICY_KIND:
        pmeta = meta
    elif meta.get("kind") == "simdiff.train" and isinstance(meta.get("extra"), dict) \
            and meta["extra"].get("kind") == POLICY_KIND:
        pmeta = meta["extra"]  # a training checkpoint carries the policy description as its extra metadata
    else:
        raise CheckpointError(f"{src}: not a diffusion policy checkpoint (kind={meta.get('kind')!r})")
    if pmeta.get("policy_format") != POLICY_FORMAT:
        raise CheckpointError(f"{src}: diffusion policy format {pmeta.get('policy_format')!r} is not supported; "
                              f"expected {POLICY_FORMAT}")
    return pmeta


def _stored_config(src: Path, pmeta: dict) -> DiffusionPolicyConfig:
    try:
        return load_policy_config(pmeta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{src}: the stored policy config does not fit this version's schema ({exc})") from exc


# --------------------------------------------------------------------------------------- runner adapter
class DiffusionBatchPolicy(ChunkedBatchPolicy):
    """Drives ``n`` env slots with one :class:`DiffusionPolicy` (the ``BatchPolicy`` protocol of
    ``simdiff.pipelines.evaluate``).

    Each slot keeps its observation history, its action queue and its own ``torch.Generator`` seeded from the
    episode seed; ``act`` refills the queues of every slot that ran out with ONE batched ``predict_action``
    call whose noise is drawn per row, so an episode does not depend on which others share the batch.
    """

    def __init__(self, policy: DiffusionPolicy, task: int | None = None):
        self.policy = policy
        self.task = task
        self.reset(0)

    def reset(self, n: int) -> None:
        To, _, Ta = self.policy.horizons
        self._allocate(n, To, self.policy.obs_dim, Ta, self.policy.action_dim)

    def _chunks(self, need: np.ndarray) -> np.ndarray:
        gens = [self._gens[s] for s in need.tolist()]
        task = None if self.task is None else torch.full((need.size,), int(self.task), dtype=torch.long)
        return self.policy.predict_action(self._hist[need], gens, task).to(torch.float32).numpy()


def replace_config(cfg: DiffusionPolicyConfig, **sections: Any) -> DiffusionPolicyConfig:
    """``dataclasses.replace`` on nested sections: ``replace_config(cfg, noise={"inference_steps": 4})``."""
    kw = {name: dataclasses.replace(getattr(cfg, name), **vals) for name, vals in sections.items()}
    return dataclasses.replace(cfg, **kw)


__all__ = ["DiffusionPolicy", "DiffusionBatchPolicy", "ddim_plan", "ddim_update", "draw_noise",
           "replace_config", "POLICY_KIND", "POLICY_DIR"]
