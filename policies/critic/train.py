"""Training the critic on preference pairs at noisy timesteps (DRM's recipe) and measuring it.

Each preference pair ``(x_win, x_lose)`` of clean normalized chunks from the same state gets ONE timestep
``t`` (uniform over the training steps, or logit-normal: ``t / N = sigmoid(m + s z)``) and INDEPENDENT
noise per chunk: ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` (``simdiff.processes.gaussian.corrupt``).
The loss is Bradley-Terry: ``-log sigmoid(s(x_win_t) - s(x_lose_t))``. Training runs through the engine's
loop (``simdiff.training.train``: AdamW, warmup + cosine, grad clipping, EMA, checkpoint/resume); the
exported critic carries the EMA weights.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from policies.critic.config import CriticTrainConfig
from policies.critic.preferences import PreferenceData
from policies.critic.scorer import CRITIC_DIR, Critic
from simdiff.processes import gaussian as G


# ------------------------------------------------------------------------------------------- pure math
def bradley_terry_loss(s_win: Tensor, s_lose: Tensor) -> Tensor:
    """Per-pair ``-log sigmoid(s_win - s_lose)`` ``(B,)`` (computed as ``softplus(s_lose - s_win)``)."""
    if s_win.shape != s_lose.shape or s_win.ndim != 1:
        raise ValueError(f"scores: expected two tensors of equal shape (B,), received {tuple(s_win.shape)} and "
                         f"{tuple(s_lose.shape)}")
    return nn.functional.softplus(s_lose - s_win)


def soft_preference_loss(s_win: Tensor, s_lose: Tensor, target: Tensor) -> Tensor:
    """Per-pair binary cross-entropy of ``sigmoid(s_win - s_lose)`` against a soft label ``target (B,)`` in
    [0, 1]: the Bradley-Terry loss at ``target = 1``, minimal at equal scores for ``target = 0.5`` (a tie)."""
    if not (s_win.shape == s_lose.shape == target.shape) or s_win.ndim != 1:
        raise ValueError(f"expected three tensors of equal shape (B,), received {tuple(s_win.shape)}, "
                         f"{tuple(s_lose.shape)}, {tuple(target.shape)}")
    return nn.functional.binary_cross_entropy_with_logits(s_win - s_lose, target, reduction="none")


def sample_timesteps(n: int, num_train_steps: int, kind: str, generator: torch.Generator | None,
                     logit_mean: float = 0.0, logit_std: float = 1.0) -> Tensor:
    """``n`` diffusion steps in ``[0, N-1]`` as a LongTensor: ``uniform`` or ``logit_normal``."""
    if kind == "uniform":
        return torch.randint(num_train_steps, (n,), generator=generator)
    if kind == "logit_normal":
        u = torch.sigmoid(logit_mean + logit_std * torch.randn(n, generator=generator, dtype=torch.float64))
        return (u * num_train_steps).floor().long().clamp(0, num_train_steps - 1)
    raise ValueError(f"timesteps: expected 'uniform' or 'logit_normal', received {kind!r}")


def noisy_pair(x_win: Tensor, x_lose: Tensor, t: Tensor, schedule: G.GaussianSchedule,
               generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Both chunks of each pair noised to the SAME step ``t (B,)`` with INDEPENDENT noise."""
    # drawn on the CPU generator, then moved: the same noise on every device
    eps_w = torch.randn(x_win.shape, generator=generator).to(device=x_win.device, dtype=x_win.dtype)
    eps_l = torch.randn(x_lose.shape, generator=generator).to(device=x_lose.device, dtype=x_lose.dtype)
    return G.corrupt(x_win, t, eps_w, schedule), G.corrupt(x_lose, t, eps_l, schedule)


def pair_scores(net: nn.Module, xw_t: Tensor, xl_t: Tensor, t: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
    """Scores of both sides in one batched call ``(B,), (B,)``."""
    s = net.score_cond(torch.cat([xw_t, xl_t]), torch.cat([t, t]), torch.cat([cond, cond]))
    return s[:xw_t.shape[0]], s[xw_t.shape[0]:]


# -------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class PairTensors:
    """Preference pairs as tensors: ``feat (S, F)`` observation features of every state, ``chunks (S, n, Tp,
    Da)``, ``pairs (P, 3)`` long ``(state, winner, loser)``. Sibling pairs also carry ``steps (S,)``: their
    chunks are already noisy, at that step (chunk pairs are clean and get noised)."""

    feat: Tensor
    chunks: Tensor
    pairs: Tensor
    steps: Tensor | None = None

    def gather(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s, w, l_ = self.pairs[idx].unbind(1)
        return self.feat[s], self.chunks[s, w], self.chunks[s, l_]

    def step_of(self, idx: Tensor) -> Tensor | None:
        """The step of pairs ``idx`` (sibling pairs), or None (chunk pairs: the caller draws one)."""
        return None if self.steps is None else self.steps[self.pairs[idx, 0]]

    def select(self, idx: Tensor) -> PairTensors:
        """The pairs ``idx`` only (the states and chunks are shared, not copied)."""
        return PairTensors(self.feat, self.chunks, self.pairs[idx], self.steps)


def pair_tensors(critic: Critic, data: PreferenceData, margin: float, heldout: bool) -> PairTensors:
    pairs, _ = data.pairs(margin, heldout)
    if len(pairs) == 0:
        which = "held-out" if heldout else "training"
        raise ValueError(f"preferences: expected some {which} pairs, received none (every candidate pair tied; "
                         f"collect more episodes or lower prefs.tie_margin)")
    with torch.no_grad():
        feat = critic.obs_features(data.obs)
    dtype = feat.dtype
    if data.siblings:
        return PairTensors(feat, torch.as_tensor(data.noisy, dtype=dtype), torch.as_tensor(pairs),
                           torch.as_tensor(data.noisy_t, dtype=torch.long))
    return PairTensors(feat, torch.as_tensor(data.chunks, dtype=dtype), torch.as_tensor(pairs))


def pair_gaps(data: PreferenceData, pairs: PairTensors) -> Tensor:
    """Utility gap ``u_win - u_lose >= 0`` of every pair ``(P,)`` float64."""
    s, w, l_ = pairs.pairs.unbind(1)
    u = torch.as_tensor(data.utility, dtype=torch.float64)
    gap = u[s, w] - u[s, l_]
    if not bool((gap >= 0).all()):
        raise ValueError("preferences: expected every pair's winner to have the higher (or equal) utility")
    return gap


def draw_pairs(num_pairs: int, batch: int, gen: torch.Generator, weights: Tensor | None = None) -> Tensor:
    """``batch`` pair indices, uniformly or (``weights (P,)``) with probability proportional to the weights."""
    if weights is None:
        return torch.randint(num_pairs, (batch,), generator=gen)
    if weights.shape != (num_pairs,):
        raise ValueError(f"weights: expected shape ({num_pairs},), received {tuple(weights.shape)}")
    return torch.multinomial(weights, batch, replacement=True, generator=gen)


def trainer_config(cfg: CriticTrainConfig):
    from simdiff.training import TrainConfig

    return TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, ema_power=cfg.ema_power,
                       ema_max_decay=cfg.ema_max_decay, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every,
                       seed=cfg.seed)


@dataclass(frozen=True, eq=False)
class CriticTrainResult:
    critic: Critic
    final_loss: float
    wall_time: float
    accuracy: list[dict]
    out_dir: Path


def init_from(critic: Critic, start: Critic, what: str) -> None:
    """Start ``critic``'s training from ``start``'s weights: a critic of the same base policy with the same model
    settings (``what`` names it in the error)."""
    from policies.critic.ensemble import same_policy

    if not same_policy(start, critic):
        raise ValueError(f"{what}: expected a critic of the base policy this critic is built on, received one of "
                         "another policy")
    try:
        critic.net.load_state_dict(start.net.state_dict())
    except RuntimeError as exc:
        raise ValueError(f"{what}: its network does not match this config's model settings "
                         f"({str(exc).splitlines()[0]})") from None


def train_critic(critic: Critic, data: PreferenceData, cfg: CriticTrainConfig, margin: float,
                 out_dir: str | os.PathLike, *, resume: bool = True, show_progress: bool = True,
                 device: str | None = None) -> CriticTrainResult:
    """Train ``critic.net`` with ``cfg.loss`` (Bradley-Terry or soft-target) on the training pairs of ``data``;
    export the EMA weights to ``out_dir/critic`` with the held-out accuracy per timestep in its metrics. ``device``
    (``cuda``, ``cuda:N``; None/``cpu`` = the CPU) is where the network trains; the critic comes back on the
    CPU, where the samplers run it."""
    from simdiff.training import train

    out_dir = Path(out_dir)
    # the soft loss learns from every pair, ties included (margin 0); Bradley-Terry from the decided ones
    train_set = pair_tensors(critic, data, 0.0 if cfg.loss == "soft" else margin, heldout=False)
    schedule = critic.policy.schedule
    n_steps = schedule.num_steps

    gaps = pair_gaps(data, train_set) if cfg.pair_sampling == "gap" or cfg.loss == "soft" else None
    draw = gaps if cfg.pair_sampling == "gap" else None
    soft = torch.sigmoid(gaps / cfg.soft_temperature) if cfg.loss == "soft" else None

    def batch_fn(step: int, gen: torch.Generator):
        idx = draw_pairs(train_set.pairs.shape[0], cfg.batch_size, gen, draw)
        return (*train_set.gather(idx), train_set.step_of(idx), None if soft is None else soft[idx])

    def loss_fn(net: nn.Module, batch, gen: torch.Generator) -> Tensor:
        feat, x_win, x_lose, t, target = batch
        if t is None:     # chunk pairs: one drawn step per pair, independent noise per side
            t = sample_timesteps(feat.shape[0], n_steps, cfg.timesteps, gen, cfg.logit_mean, cfg.logit_std)
            t = t.to(feat.device)
            xw_t, xl_t = noisy_pair(x_win, x_lose, t, schedule, gen)
        else:             # sibling pairs: already noisy, at their own step
            xw_t, xl_t = x_win, x_lose
        s_w, s_l = pair_scores(net, xw_t, xl_t, t, net.condition(feat))
        if target is None:
            return bradley_terry_loss(s_w, s_l)
        return soft_preference_loss(s_w, s_l, target.to(device=s_w.device, dtype=s_w.dtype))

    prev = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        res = train(critic.net, loss_fn, batch_fn, trainer_config(cfg), out_dir, desc="critic", resume=resume,
                    meta={"kind": "simdiff.critic_train"}, device=device)
    finally:
        torch.set_num_threads(prev)
        critic.net.to("cpu")
    critic.net.load_state_dict({k: v.cpu() for k, v in res.ema_model.state_dict().items()})
    critic.net.eval()
    accuracy = heldout_accuracy(critic, data, margin, cfg, show_progress=show_progress, device=device)
    critic.metrics = {"final_loss": res.final_loss, "train_wall_time_s": res.wall_time, "steps": res.steps,
                      "loss": cfg.loss, "pair_sampling": cfg.pair_sampling,
                      "train_pairs": int(train_set.pairs.shape[0]), "heldout_accuracy": accuracy}
    critic.save(out_dir / CRITIC_DIR)
    return CriticTrainResult(critic, res.final_loss, res.wall_time, accuracy, out_dir)


# ------------------------------------------------------------------------------------------ evaluation
def eval_timesteps(num_train_steps: int, count: int) -> list[int]:
    """``count`` evenly spaced steps from 0 to ``N - 1`` (both included)."""
    if count == 1:
        return [0]
    return sorted({round(i * (num_train_steps - 1) / (count - 1)) for i in range(count)})


@torch.no_grad()
def pairwise_accuracy(critic: Critic, pairs: PairTensors, timesteps: list[int], draws: int, seed: int,
                      batch: int = 4096, device: str | None = None) -> list[dict]:
    """Held-out pairwise accuracy per timestep: fraction of (pair, noise draw) with ``s_win > s_lose`` (ties
    count 1/2), with a normal-approximation 95% interval over pairs. ``device`` (None = the CPU) runs the
    critic there; the noise is drawn on the CPU generator either way, so every device sees the same draws.
    Sibling pairs are scored as they are, at their own steps (``timesteps``, ``draws`` and ``seed`` unused)."""
    dev = torch.device(device or "cpu")
    net = critic.net.eval().to(dev)
    try:
        if pairs.steps is not None:
            return _sibling_accuracy(net, critic.policy.schedule, pairs, batch, dev)
        return _pairwise_accuracy(net, critic.policy.schedule, pairs, timesteps, draws, seed, batch, dev)
    finally:
        critic.net.to("cpu")     # the samplers run the critic on the CPU


def _accuracy_row(per_pair: Tensor, t_val: int, schedule: G.GaussianSchedule) -> dict:
    """Mean accuracy over pairs with a normal-approximation 95% interval."""
    acc = float(per_pair.mean())
    half = 1.96 * float(per_pair.std(unbiased=False)) / math.sqrt(max(per_pair.numel(), 1))
    return {"t": int(t_val), "alpha_bar": float(schedule.alpha_bars[t_val]), "accuracy": acc,
            "ci95": [max(0.0, acc - half), min(1.0, acc + half)], "pairs": int(per_pair.numel())}


def _sibling_accuracy(net: nn.Module, schedule: G.GaussianSchedule, pairs: PairTensors, batch: int,
                      dev: torch.device) -> list[dict]:
    """Accuracy of sibling pairs at their own step (no noise to draw: the siblings are the noisy chunks), one
    row per step present."""
    correct = torch.zeros(pairs.pairs.shape[0], dtype=torch.float64)
    for lo in range(0, pairs.pairs.shape[0], batch):
        idx = torch.arange(lo, min(lo + batch, pairs.pairs.shape[0]))
        feat, x_w, x_l = (v.to(dev) for v in pairs.gather(idx))
        t = pairs.step_of(idx).to(dev)
        s_w, s_l = pair_scores(net, x_w, x_l, t, net.condition(feat))
        correct[idx] = ((s_w > s_l).double() + 0.5 * (s_w == s_l).double()).cpu()
    steps = pairs.steps[pairs.pairs[:, 0]]
    return [_accuracy_row(correct[steps == t_val], int(t_val), schedule) for t_val in torch.unique(steps).tolist()]


def _pairwise_accuracy(net: nn.Module, schedule: G.GaussianSchedule, pairs: PairTensors, timesteps: list[int],
                       draws: int, seed: int, batch: int, dev: torch.device) -> list[dict]:
    if dev.type != "cpu":
        pairs = PairTensors(pairs.feat.to(dev), pairs.chunks.to(dev), pairs.pairs.to(dev))
        schedule = schedule.to(dev)
    out = []
    for t_val in timesteps:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + t_val)
        correct = torch.zeros(pairs.pairs.shape[0], dtype=torch.float64)
        for _ in range(draws):
            for lo in range(0, pairs.pairs.shape[0], batch):
                idx = torch.arange(lo, min(lo + batch, pairs.pairs.shape[0]))
                feat, x_w, x_l = pairs.gather(idx.to(dev))
                t = torch.full((idx.numel(),), t_val, dtype=torch.long, device=dev)
                xw_t, xl_t = noisy_pair(x_w, x_l, t, schedule, gen)
                s_w, s_l = pair_scores(net, xw_t, xl_t, t, net.condition(feat))
                correct[idx] += ((s_w > s_l).double() + 0.5 * (s_w == s_l).double()).cpu()
        out.append(_accuracy_row(correct / draws, t_val, schedule))
    return out


def heldout_accuracy(critic: Critic, data: PreferenceData, margin: float, cfg: CriticTrainConfig,
                     show_progress: bool = False, device: str | None = None) -> list[dict]:
    held = pair_tensors(critic, data, margin, heldout=True)
    ts = eval_timesteps(critic.policy.schedule.num_steps, cfg.eval_timesteps)
    return pairwise_accuracy(critic, held, ts, cfg.eval_noise_draws, cfg.seed, device=device)


#: held-out pairs by what was compared: two base-policy samples (what step-wise sampling and GRPO must rank),
#: a base sample against a noise-perturbed copy, or two perturbed copies
PAIR_KINDS = ("policy-policy", "policy-perturbed", "perturbed-perturbed")


def pair_kinds(source: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Index into :data:`PAIR_KINDS` of each ``(state, winner, loser)`` pair: how many of its two candidates are
    perturbed copies (``source == 1``)."""
    src = np.asarray(source, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 3:
        raise ValueError(f"pairs: expected shape (P, 3), received {pairs.shape}")
    return src[pairs[:, 1]] + src[pairs[:, 2]]


def accuracy_by_pair_kind(critic: Critic, data: PreferenceData, margin: float, timesteps: list[int], draws: int,
                          seed: int, device: str | None = None) -> list[dict]:
    """Held-out pairwise accuracy per :data:`PAIR_KINDS` entry and timestep (kinds without pairs are left out).
    The overall accuracy mixes easy pairs (a base sample against a heavily perturbed copy) with the hard ones
    a critic-guided sampler actually faces (two samples of the same policy)."""
    held = pair_tensors(critic, data, margin, heldout=True)
    kinds = pair_kinds(data.source, held.pairs.numpy())
    rows = []
    for k, name in enumerate(PAIR_KINDS):
        sel = np.flatnonzero(kinds == k)
        if sel.size == 0:
            continue
        sub = held.select(torch.as_tensor(sel))
        rows += [{"kind": name, **r} for r in pairwise_accuracy(critic, sub, timesteps, draws, seed, device=device)]
    return rows


def plot_accuracy(curves: dict[str, list[dict]], out_png: str | os.PathLike, title: str = "") -> Path:
    """Held-out pairwise accuracy against the diffusion step for one or more critics."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simdiff.utils.io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    for name, rows in curves.items():
        ts = [r["t"] for r in rows]
        ax.plot(ts, [r["accuracy"] for r in rows], marker="o", ms=3, label=name)
        ax.fill_between(ts, [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows], alpha=0.2)
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("diffusion step t (0 = clean)")
    ax.set_ylabel("held-out pairwise accuracy")
    ax.set_ylim(0.4, 1.0)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(out_png, buf.getvalue())


def summarize_accuracy(rows: list[dict]) -> dict[str, Any]:
    return {"t0": rows[0]["accuracy"], "t_max": rows[-1]["accuracy"],
            "mean": float(np.mean([r["accuracy"] for r in rows]))}


__all__ = ["bradley_terry_loss", "sample_timesteps", "noisy_pair", "pair_scores", "PairTensors", "pair_tensors",
           "pair_gaps", "draw_pairs", "soft_preference_loss",
           "train_critic", "init_from", "CriticTrainResult", "pairwise_accuracy", "heldout_accuracy",
           "eval_timesteps", "plot_accuracy", "summarize_accuracy", "trainer_config", "PAIR_KINDS", "pair_kinds",
           "accuracy_by_pair_kind"]
