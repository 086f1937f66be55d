"""GRPO fine-tuning of a diffusion policy's stochastic DDIM sampler: step-wise (critic) and terminal rewards.

Both variants treat each stochastic DDIM step ``x_t -> x_{t_prev}`` (``eta > 0``) as a Gaussian action
``N(mean_theta(x_t, t), std_t^2 I)`` (``simdiff.processes.gaussian.ddim_step_mean_std``) and optimise the
PPO-clipped objective of Flow-GRPO / DDPO on its log-probability ratio, plus a KL penalty to the frozen
reference network (for two Gaussians with the same std: ``|mean_theta - mean_ref|^2 / (2 std^2)``).

As in Flow-GRPO's code, log-probabilities and the KL are averaged (not summed) over the chunk's ``Tp * Da``
entries, which keeps the ratio well conditioned; steps whose std is below ``min_train_std`` (the last,
nearly deterministic DDIM steps, where a tiny mean change is a huge ratio) are sampled but not trained on.

* **Step-wise GRPO** (DRM): from states the current policy visits, run the sampler; at every stochastic step
  draw ``k`` candidates from the SAME ``x_t``, score each with the critic at ``t_prev``, and use
  ``A = (s - mean_group) / std_group`` as the advantage of each candidate step. The chain continues from a
  uniformly drawn candidate, so the visited ``x_t`` follow the policy's own sampler.
  With ``stepwise_sampler="reference"`` the groups are branched by the frozen reference network instead
  (states still come from the tuned policy's rollouts) and ``logp_old`` is the reference's: the PPO ratio is
  ``p_theta / p_ref`` and its clip is a trust region around the chunks the critic was trained on, which an
  on-policy chain leaves behind as the policy drifts.
* **Terminal GRPO** (baseline): groups of ``k`` episodes from the same start state (same env seed, different
  sampler noise); reward ``R = success + return_weight * return``; ``A = (R - mean_group) / std_group`` is
  given to every stochastic step of every chunk of the episode.

A "policy-update step" is one optimizer step on a minibatch of step samples; both variants take
``updates_per_iter`` of them after each collection round, so their curves share the x axis.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from policies.critic.adapter import EvalCounter, PolicyDenoiser, row_randn
from policies.critic.config import GrpoConfig
from simdiff.processes import gaussian as G

Mode = Literal["stepwise", "terminal"]
EvalFn = Callable[[Any], dict]


# ------------------------------------------------------------------------------------------- pure math
def group_advantages(scores: Tensor, eps: float = 1e-6, norm: str = "group") -> Tensor:
    """``(G, k)`` group scores -> ``(s - mean_group) / (std + eps)`` (population std; a group whose scores are
    all equal gets zero advantages). ``norm="group"``: each group's own std (GRPO); ``"batch"``: one std of
    all centred scores, so groups keep their relative spread (a near-tie stays near zero)."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores: expected shape (G, k >= 2), received {tuple(scores.shape)}")
    centred = scores - scores.mean(dim=1, keepdim=True)
    if norm == "group":
        std = scores.std(dim=1, unbiased=False, keepdim=True)
    elif norm == "batch":
        std = centred.pow(2).mean().sqrt()
    else:
        raise ValueError(f"norm: expected 'group' or 'batch', received {norm!r}")
    return centred / (std + eps)


def ppo_clip_loss(logp_new: Tensor, logp_old: Tensor, adv: Tensor, clip_eps: float) -> Tensor:
    """Per-sample clipped surrogate ``-min(r A, clip(r, 1-e, 1+e) A)`` with ``r = exp(logp_new - logp_old)``."""
    if not (logp_new.shape == logp_old.shape == adv.shape) or adv.ndim != 1:
        raise ValueError(f"expected three tensors of equal shape (B,), received {tuple(logp_new.shape)}, "
                         f"{tuple(logp_old.shape)}, {tuple(adv.shape)}")
    ratio = torch.exp(logp_new - logp_old)
    return -torch.minimum(ratio * adv, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv)


def gaussian_kl_same_std(mean: Tensor, mean_ref: Tensor, std: Tensor) -> Tensor:
    """``KL(N(mean, std^2 I) || N(mean_ref, std^2 I))`` summed over non-batch dims -> ``(B,)``."""
    d = ((mean - mean_ref) / std) ** 2
    return 0.5 * d.reshape(d.shape[0], -1).sum(dim=1)


def step_logprob(x_prev: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Gaussian step log-density per entry (the sum over the chunk divided by its size) ``(B,)``."""
    return G.gaussian_step_logprob(x_prev, mean, std) / x_prev[0].numel()


def terminal_rewards(success: np.ndarray, returns: np.ndarray, return_weight: float) -> np.ndarray:
    """Episode reward ``success + return_weight * return`` ``(E,)``."""
    return np.asarray(success, dtype=np.float64) + return_weight * np.asarray(returns, dtype=np.float64)


# ---------------------------------------------------------------------------------------- step samples
@dataclass
class StepSamples:
    """Stochastic denoising steps with advantages: ``feat (M, F)``, ``x_t``/``x_prev`` ``(M, Tp, Da)``,
    ``t``/``t_prev`` ``(M,)`` long, ``logp_old``/``adv`` ``(M,)``."""

    feat: Tensor
    x_t: Tensor
    t: Tensor
    t_prev: Tensor
    x_prev: Tensor
    logp_old: Tensor
    adv: Tensor

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def take(self, idx: Tensor) -> StepSamples:
        return StepSamples(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @staticmethod
    def cat(parts: list[StepSamples]) -> StepSamples:
        return StepSamples(*(torch.cat([getattr(p, f) for p in parts]) for f in StepSamples.__dataclass_fields__))


def step_mean_std(den: PolicyDenoiser, net: torch.nn.Module, feat: Tensor, x_t: Tensor, t: Tensor, t_prev: Tensor,
                  eta: float) -> tuple[Tensor, Tensor]:
    """Mean and std of the DDIM step under ``net`` (differentiable), rows at their own ``t``."""
    out = net.unet(x_t, t, net.condition(feat))
    den.counter.denoiser += x_t.shape[0]
    return G.ddim_step_mean_std(out, x_t, t, t_prev, den.schedule, den.prediction, eta, den.clip)


def grpo_loss(den: PolicyDenoiser, net: torch.nn.Module, ref: torch.nn.Module, batch: StepSamples, eta: float,
              clip_eps: float, kl_coef: float) -> tuple[Tensor, dict]:
    """Mean clipped surrogate + ``kl_coef`` * KL to the reference on a minibatch; and diagnostics."""
    mean, std = step_mean_std(den, net, batch.feat, batch.x_t, batch.t, batch.t_prev, eta)
    with torch.no_grad():
        mean_ref, _ = step_mean_std(den, ref, batch.feat, batch.x_t, batch.t, batch.t_prev, eta)
    logp = step_logprob(batch.x_prev, mean, std)
    surrogate = ppo_clip_loss(logp, batch.logp_old, batch.adv, clip_eps)
    kl = gaussian_kl_same_std(mean, mean_ref, std) / batch.x_prev[0].numel()
    loss = (surrogate + kl_coef * kl).mean()
    with torch.no_grad():
        ratio = torch.exp(logp - batch.logp_old)
        stats = {"surrogate": float(surrogate.mean()), "kl": float(kl.mean()),
                 "clip_frac": float(((ratio - 1.0).abs() > clip_eps).double().mean())}
    return loss, stats


# -------------------------------------------------------------------------------------------- rollouts
@dataclass
class Rollouts:
    """Episodes of the stochastic sampler, with every chunk's denoising chain.

    ``success``/``returns``/``lengths`` ``(E,)``; per chunk: ``feat (C, F)``, ``chain (C, S+1, Tp, Da)``
    (``x_T`` first), ``logp (C, S)`` of each step under the sampling network (NaN for deterministic steps),
    ``episode (C,)``.
    """

    success: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    feat: Tensor
    chain: Tensor
    logp: Tensor
    episode: Tensor
    env_steps: int = 0
    #: with ``keep_states``: per chunk, the simulator snapshot, observation history ``(C, To, Do)`` and box-goal
    #: distance ``(C,)`` at its replanning point (what a simulator-backed scorer replays candidates from)
    snaps: list | None = None
    hist: np.ndarray | None = None
    d0: np.ndarray | None = None


@torch.no_grad()
def sample_chain(den: PolicyDenoiser, cond: Tensor, eta: float, generators: list[torch.Generator]) -> tuple[Tensor, Tensor]:
    """DDIM chain ``(B, S+1, Tp, Da)`` and the log-probability ``(B, S)`` of each stochastic step (NaN else)."""
    b = cond.shape[0]
    x = row_randn(generators, b, den.chunk_shape, den.dtype)
    xs, lps = [x], []
    for t, t_prev in den.plan():
        out = den.predict(x, t, cond)
        mean, std = den.step_mean_std(out, x, t, t_prev, eta)
        if float(std.max()) > 0:
            x = mean + std * row_randn(generators, b, den.chunk_shape, den.dtype)
            lps.append(step_logprob(x, mean, std))
        else:
            x = mean
            lps.append(torch.full((b,), float("nan"), dtype=x.dtype))
        xs.append(x)
    den.counter.chunks += b
    return torch.stack(xs, dim=1), torch.stack(lps, dim=1)


def collect_rollouts(den: PolicyDenoiser, env_id: str, level: int | str, env_seeds: list[int], noise_seeds: list[int],
                     eta: float, max_episode_steps: int | None = None, keep_states: bool = False) -> Rollouts:
    """One episode per ``env_seeds[i]`` (sampler noise from ``noise_seeds[i]``), all envs stepped together;
    ``keep_states`` also records each chunk's simulator snapshot, history and box-goal distance."""
    from envs import make
    from policies.critic.sim_state import box_goal_distance, snapshot

    n = len(env_seeds)
    kw = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    envs = [make(env_id, level=level, **kw) for _ in range(n)]
    gens = [torch.Generator().manual_seed(int(s)) for s in noise_seeds]
    To, Ta = den.obs_horizon, den.action_horizon
    hist = np.zeros((n, To, den.obs_dim), dtype=np.float32)
    queue = np.zeros((n, Ta, den.action_dim), dtype=np.float32)
    pos = np.full(n, Ta)
    live = np.ones(n, dtype=bool)
    success, returns, lengths = np.zeros(n, bool), np.zeros(n), np.zeros(n, np.int64)
    feats, chains, logps, eps_idx = [], [], [], []
    snaps, hists, d0s = [], [], []
    try:
        for i, (env, s) in enumerate(zip(envs, env_seeds)):
            obs, _ = env.reset(seed=int(s))
            hist[i] = obs[None]
        while live.any():
            need = np.flatnonzero(live & (pos >= Ta))
            if need.size:
                feat = den.obs_features(hist[need])
                chain, lp = sample_chain(den, den.condition(feat), eta, [gens[i] for i in need.tolist()])
                queue[need] = den.to_actions(chain[:, -1]).to(torch.float32).numpy()
                pos[need] = 0
                feats.append(feat)
                chains.append(chain)
                logps.append(lp)
                eps_idx.append(torch.as_tensor(need))
                if keep_states:
                    snaps += [snapshot(envs[i]) for i in need.tolist()]
                    hists.append(hist[need].copy())
                    d0s += [box_goal_distance(envs[i]) for i in need.tolist()]
            for i in np.flatnonzero(live).tolist():
                obs, r, term, trunc, info = envs[i].step(queue[i, pos[i]])
                pos[i] += 1
                returns[i] += float(r)
                lengths[i] += 1
                success[i] |= bool(info.get("success", False))
                hist[i] = np.concatenate([hist[i, 1:], obs[None]], axis=0)
                live[i] = not (term or trunc)
    finally:
        for e in envs:
            e.close()
    kept = dict(snaps=snaps, hist=np.concatenate(hists), d0=np.asarray(d0s)) if keep_states else {}
    return Rollouts(success, returns, lengths, torch.cat(feats), torch.cat(chains), torch.cat(logps),
                    torch.cat(eps_idx), int(lengths.sum()), **kept)


# ------------------------------------------------------------------------------------ sample building
def terminal_samples(ro: Rollouts, den: PolicyDenoiser, group_size: int, return_weight: float,
                     adv_eps: float, eta: float = 1.0, min_train_std: float = 0.0,
                     adv_norm: str = "group") -> StepSamples:
    """Every trained stochastic step (std >= ``min_train_std``) of every chunk, with its episode's
    group-normalized terminal reward."""
    rewards = torch.as_tensor(terminal_rewards(ro.success, ro.returns, return_weight))
    if rewards.numel() % group_size:
        raise ValueError(f"episodes: expected a multiple of the group size {group_size}, received {rewards.numel()}")
    adv_ep = group_advantages(rewards.view(-1, group_size), adv_eps, adv_norm).reshape(-1).to(ro.chain.dtype)
    plan = den.plan()
    parts = []
    for s, (t, t_prev) in enumerate(plan):
        if torch.isnan(ro.logp[:, s]).all() or den.step_std(t, t_prev, eta) < min_train_std:
            continue
        c = ro.chain.shape[0]
        parts.append(StepSamples(ro.feat, ro.chain[:, s], torch.full((c,), t), torch.full((c,), t_prev),
                                 ro.chain[:, s + 1], ro.logp[:, s], adv_ep[ro.episode]))
    return StepSamples.cat(parts)


def predicted_x0(den: PolicyDenoiser, x: Tensor, t: int, cond: Tensor) -> Tensor:
    """The denoiser's clean-chunk estimate ``x0_hat(x_t)`` (clipped as the sampler clips it)."""
    tt = torch.full((x.shape[0],), int(t), dtype=torch.long)
    x0 = G.to_x0_eps(den.predict(x, tt, cond), x, tt, den.schedule, den.prediction)[0]
    return x0 if den.clip is None else x0.clamp(-den.clip, den.clip)


@torch.no_grad()
def stepwise_samples(den: PolicyDenoiser, critic: Any, feat: Tensor, k: int, eta: float, adv_eps: float,
                     generator: torch.Generator, min_train_std: float = 0.0, max_t: int | None = None,
                     adv_norm: str = "group", score_on: str = "noisy") -> StepSamples:
    """Groups of ``k`` candidate steps from the same ``x_t`` for each state of ``feat (N, F)``, with
    critic-score advantages; the chain continues from a uniformly drawn candidate. Steps with std below
    ``min_train_std`` or ``t_prev > max_t`` are sampled without branching and give no samples."""
    n = feat.shape[0]
    shape = den.chunk_shape
    cond = den.condition(feat)
    ccond = critic.condition(feat.to(next(critic.net.parameters()).dtype)).repeat_interleave(k, 0)
    x = torch.randn((n, *shape), generator=generator).to(den.dtype)
    feat_k = feat.repeat_interleave(k, 0)
    parts = []
    for t, t_prev in den.plan():
        out = den.predict(x, t, cond)
        mean, std = den.step_mean_std(out, x, t, t_prev, eta)
        if float(std.max()) == 0.0:
            x = mean
            continue
        if float(std.max()) < min_train_std or (max_t is not None and t_prev > max_t):
            x = mean + std * torch.randn(x.shape, generator=generator).to(den.dtype)
            continue
        mean_k, std_k = mean.repeat_interleave(k, 0), std.repeat_interleave(k, 0)
        cands = mean_k + std_k * torch.randn((n * k, *shape), generator=generator).to(den.dtype)
        if score_on == "x0":
            # the critic judges the clean chunk each candidate implies (one more denoiser call per candidate),
            # not the noise it carries
            scores = critic.score(predicted_x0(den, cands, t_prev, cond.repeat_interleave(k, 0)), 0, ccond).view(n, k)
        else:
            scores = critic.score(cands, t_prev, ccond).view(n, k)
        adv = group_advantages(scores, adv_eps, adv_norm).reshape(-1)
        logp = step_logprob(cands, mean_k, std_k)
        parts.append(StepSamples(feat_k, x.repeat_interleave(k, 0), torch.full((n * k,), t),
                                 torch.full((n * k,), t_prev), cands, logp, adv))
        pick = torch.randint(k, (n,), generator=generator)
        x = cands.view(n, k, *shape)[torch.arange(n), pick]
    den.counter.chunks += n
    return StepSamples.cat(parts)


class RandomScores:
    """A control for step-wise GRPO: the critic's interface with i.i.d. ``N(0, 1)`` scores, so the advantages
    carry no information. If step-wise GRPO with the learned critic drifts away from its reference much
    faster than with these, the policy follows a systematic preference of the critic, not noise."""

    def __init__(self, critic: Any, seed: int):
        self.net = critic.net                 # only read for its dtype
        self.counter = critic.counter
        self.generator = torch.Generator().manual_seed(int(seed))

    def condition(self, feat: Tensor, task: Tensor | None = None) -> Tensor:
        return feat

    def score(self, x_t: Tensor, t: Tensor | int, cond: Tensor) -> Tensor:
        return torch.randn(x_t.shape[0], generator=self.generator).to(x_t.dtype)


# ---------------------------------------------------------------------------------------------- driver
@dataclass
class GrpoResult:
    mode: str
    policy: Any                       # the fine-tuned DiffusionPolicy
    curve: list[dict]                 # one record per evaluation: update, success_rate, ci95, ...
    log: list[dict] = field(default_factory=list)  # one record per update step
    wall_time_s: float = 0.0          # training time (collection + updates), evaluation excluded
    #: every denoiser forward row of training: rollouts, candidate chains, loss and reference passes
    counter: EvalCounter = field(default_factory=EvalCounter)
    env_steps: int = 0


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0]) >> 1


def _round_seeds(cfg: GrpoConfig, mode: Mode, it: int) -> tuple[list[int], list[int]]:
    e = cfg.episodes_per_iter
    if mode == "terminal":
        groups = e // cfg.k
        env_seeds = [cfg.seed + it * groups + g for g in range(groups) for _ in range(cfg.k)]
    else:
        env_seeds = [cfg.seed + it * e + i for i in range(e)]
    noise = [_seed(cfg.seed, it, i, 17) for i in range(e)]
    return env_seeds, noise


def run_grpo(policy: Any, cfg: GrpoConfig, mode: Mode, *, env_id: str, critic: Any = None,
             eval_fn: EvalFn | None = None, inference_steps: int | None = None,
             max_episode_steps: int | None = None, on_log: Callable[[dict], None] | None = None) -> GrpoResult:
    """Fine-tune a copy of ``policy`` (a DiffusionPolicy) with step-wise or terminal GRPO.

    ``eval_fn(policy) -> {"success_rate", "ci95", "mean_return", ...}`` (the batched evaluation runner, from
    the caller) runs before the first update, every ``cfg.eval_every`` updates and after the last.
    """
    if mode not in ("stepwise", "terminal"):
        raise ValueError(f"mode: expected 'stepwise' or 'terminal', received {mode!r}")
    if mode == "stepwise" and critic is None:
        raise ValueError("mode 'stepwise': expected a critic, received None")
    ft = copy.deepcopy(policy)
    net = ft.net
    net.requires_grad_(True).train()
    ref = copy.deepcopy(net).requires_grad_(False).eval()
    counter = critic.counter if critic is not None else EvalCounter()
    den = PolicyDenoiser(ft, inference_steps, counter=counter, net=net)
    branch = den if cfg.stepwise_sampler == "policy" else PolicyDenoiser(ft, inference_steps, counter=counter, net=ref)
    trained = [tp for t, tp in den.plan() if tp >= 0 and den.step_std(t, tp, cfg.eta) >= max(cfg.min_train_std, 1e-12)
               and (mode == "terminal" or cfg.stepwise_max_t is None or tp <= cfg.stepwise_max_t)]
    if not trained:
        raise ValueError(f"grpo: no denoising step is trained (min_train_std={cfg.min_train_std}, "
                         f"stepwise_max_t={cfg.stepwise_max_t}, eta={cfg.eta}); lower them")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    res = GrpoResult(mode, ft, [], counter=counter)
    gen = torch.Generator().manual_seed(_seed(cfg.seed, 99))
    update = 0
    _evaluate(res, eval_fn, update)
    for it in range(cfg.iterations):
        t0 = time.perf_counter()
        env_seeds, noise_seeds = _round_seeds(cfg, mode, it)
        ro = collect_rollouts(den, env_id, cfg.level, env_seeds, noise_seeds, cfg.eta, max_episode_steps,
                              keep_states=mode == "stepwise" and hasattr(critic, "bind"))
        res.env_steps += ro.env_steps
        samples = _round_samples(mode, ro, den if mode == "terminal" else branch, critic, cfg, gen, len(trained))
        order = torch.randperm(len(samples), generator=gen)
        for u in range(cfg.updates_per_iter):
            idx = order[(u * cfg.minibatch) % len(samples):][:cfg.minibatch]
            loss, stats = grpo_loss(den, net, ref, samples.take(idx), cfg.eta, cfg.clip_eps, cfg.kl_coef)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            update += 1
            rec = {"update": update, "iteration": it, "loss": float(loss.detach()), **stats,
                   "rollout_success": float(ro.success.mean()), "rollout_return": float(ro.returns.mean())}
            res.log.append(rec)
            if on_log is not None:
                on_log(rec)
            if update % cfg.eval_every == 0:
                res.wall_time_s += time.perf_counter() - t0   # evaluation time is not training time
                _evaluate(res, eval_fn, update)
                t0 = time.perf_counter()
        res.wall_time_s += time.perf_counter() - t0
    if not res.curve or res.curve[-1]["update"] != update:
        _evaluate(res, eval_fn, update)
    net.eval().requires_grad_(False)
    return res


def _round_samples(mode: Mode, ro: Rollouts, den: PolicyDenoiser, critic: Any, cfg: GrpoConfig,
                   gen: torch.Generator, trained_steps: int) -> StepSamples:
    """The step samples of one round: every trained step of every chunk (terminal), or candidate groups
    from just enough visited states to fill the round's minibatches (step-wise)."""
    if mode == "terminal":
        return terminal_samples(ro, den, cfg.k, cfg.return_weight, cfg.adv_eps, cfg.eta, cfg.min_train_std,
                                cfg.adv_norm)
    per_state = cfg.k * trained_steps
    n_states = min(ro.feat.shape[0], max(1, math.ceil(cfg.updates_per_iter * cfg.minibatch / per_state)))
    pick = torch.randperm(ro.feat.shape[0], generator=gen)[:n_states]
    if hasattr(critic, "bind"):     # a simulator-backed scorer replays the candidates from these states
        idx = pick.numpy()
        critic.bind([ro.snaps[i] for i in idx.tolist()], ro.hist[idx], ro.d0[idx])
    return stepwise_samples(den, critic, ro.feat[pick], cfg.k, cfg.eta, cfg.adv_eps, gen, cfg.min_train_std,
                            cfg.stepwise_max_t, cfg.adv_norm, cfg.stepwise_score)


def _evaluate(res: GrpoResult, eval_fn: EvalFn | None, update: int) -> None:
    if eval_fn is None:
        return
    res.policy.net.eval()
    with torch.no_grad():
        ev = eval_fn(res.policy)
    res.policy.net.train()
    res.curve.append({"update": update, "success_rate": ev["success_rate"], "ci95": ev.get("ci95"),
                      "mean_return": ev.get("mean_return"), "train_wall_time_s": res.wall_time_s,
                      "denoiser_evals": res.counter.denoiser, "critic_evals": res.counter.critic,
                      "env_steps": res.env_steps})


def updates_to_reach(curve: list[dict], target: float) -> int | None:
    """First update step whose evaluated success is at least ``target`` (None if never)."""
    for rec in curve:
        if rec["success_rate"] >= target - 1e-12:
            return int(rec["update"])
    return None


__all__ = ["group_advantages", "ppo_clip_loss", "gaussian_kl_same_std", "step_logprob", "terminal_rewards",
           "StepSamples", "predicted_x0", "grpo_loss", "Rollouts", "sample_chain", "collect_rollouts",
           "terminal_samples", "stepwise_samples", "RandomScores", "GrpoResult", "run_grpo", "updates_to_reach"]
