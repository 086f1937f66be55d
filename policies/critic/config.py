"""Configuration schema of the DRM reward critic and its uses (values live in ``configs/critic/*.yaml``).

One config drives every stage: preference data (``prefs``), the critic network (``model``), its training
(``train``), step-wise / terminal best-of-k sampling (``sampling``), step-wise and terminal GRPO (``grpo``)
and the experiment grid of ``simdiff critic experiments`` (``experiment``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

from simdiff.config import check_range

Level = int | str


def _check_level(name: str, level: Level) -> None:
    if not (level == "shift" or (isinstance(level, int) and not isinstance(level, bool) and 0 <= level <= 3)):
        raise ValueError(f"{name}: expected 0..3 or 'shift', received {level!r}")


@dataclass(frozen=True)
class CriticModelConfig:
    """The critic network: the base policy's denoiser truncated after its first blocks, plus a scalar head.

    The 1D U-Net's conditional residual blocks are counted in forward order (down path, middle, up path);
    the critic keeps all but the last ``drop_blocks`` of them and reads the features of the last kept one.
    """

    drop_blocks: int = 2          #: residual blocks dropped from the end of the denoiser (DRM drops 3 of 24)
    head_convs: int = 1           #: stride-2 Conv1d + GroupNorm + Mish layers on the truncated features
    head_channels: int = 64       #: channels of those conv layers
    head_hidden: int = 128        #: hidden width of the MLP to a scalar
    pool: Literal["mean", "meanmax"] = "meanmax"  #: global pooling over the (time) axis
    freeze_backbone: bool = False  #: train the head only (the copied denoiser blocks stay fixed)

    def __post_init__(self) -> None:
        check_range("model.drop_blocks", self.drop_blocks, lo=0)
        check_range("model.head_convs", self.head_convs, lo=0)
        check_range("model.head_channels", self.head_channels, lo=1)
        check_range("model.head_hidden", self.head_hidden, lo=1)


@dataclass(frozen=True)
class PrefsConfig:
    """Automatic preference data: several candidate chunks per visited state, executed from a snapshot.

    States are the replanning points of base-policy episodes (the episode continues with the base policy's
    first sample). ``kind`` says what the candidates of a state are:

    * ``"chunks"`` (DRM): ``policy_samples`` chunks from the base policy (DDIM with ``sample_eta``) and
      ``perturbed`` more noise-perturbed copies of them (Gaussian noise of std ``perturb_std[i % len]`` in
      normalized action units, clipped to the action range). Training noises both clean chunks of a pair to
      one random step.
    * ``"siblings"`` (step-level pairs): the base sampler (``sample_eta``) runs down to one denoising step of
      ``sibling_steps`` (drawn per state), where ``policy_samples`` candidates ``x_{t_prev}`` branch from the
      SAME ``x_t``; each is completed to a clean chunk by deterministic DDIM and executed. The critic is trained
      on the noisy siblings at their own step: exactly the comparison step-wise sampling and step-wise GRPO
      ask of it. ``perturbed`` must be 0.

    Ranking rule: see :mod:`policies.critic.preferences`.
    """

    env: str = "simdiff/Push-v0"
    level: Level = 3
    episodes: int = 64            #: base-policy episodes whose replanning states are used
    seed: int = 200_000           #: episode i resets with seed + i (held apart from evaluation seeds)
    policy_samples: int = 4       #: chunks drawn from the base policy per state
    perturbed: int = 4            #: noise-perturbed variants per state
    perturb_std: tuple[float, ...] = (0.1, 0.3, 0.6)
    sample_eta: float = 1.0       #: DDIM eta of the base samples (1: ancestral-like, more diverse)
    lookahead: int = 0            #: base-policy chunks executed after each candidate before measuring the outcome
    tie_margin: float = 0.02      #: |utility difference| below this is a tie and the pair is dropped
    heldout_fraction: float = 0.2  #: episodes (by index) held out for pairwise accuracy
    batch_envs: int = 32          #: episodes run side by side (one batched sampling call per replan)
    max_episode_steps: int | None = None  #: None: the env's registered limit
    kind: Literal["chunks", "siblings"] = "chunks"  #: independent chunks, or siblings of one denoising step
    #: siblings: the steps ``t_prev`` (of the policy's DDIM plan, stochastic) at which a state's candidates branch
    sibling_steps: tuple[int, ...] = (44, 33, 22, 11)

    def __post_init__(self) -> None:
        _check_level("prefs.level", self.level)
        if self.kind not in ("chunks", "siblings"):
            raise ValueError(f"prefs.kind: expected 'chunks' or 'siblings', received {self.kind!r}")
        if self.kind == "siblings":
            if self.perturbed:
                raise ValueError(f"prefs.perturbed: expected 0 with prefs.kind='siblings' (every candidate is a "
                                 f"sibling of the same x_t), received {self.perturbed}")
            if not self.sibling_steps:
                raise ValueError("prefs.sibling_steps: expected at least one step with prefs.kind='siblings', "
                                 "received []")
            for t in self.sibling_steps:
                check_range("prefs.sibling_steps[i]", t, lo=0)
            if self.sample_eta <= 0:
                raise ValueError(f"prefs.sample_eta: expected > 0 with prefs.kind='siblings' (siblings differ by the "
                                 f"step's noise), received {self.sample_eta}")
        check_range("prefs.episodes", self.episodes, lo=2)
        check_range("prefs.seed", self.seed, lo=0)
        check_range("prefs.policy_samples", self.policy_samples, lo=1)
        check_range("prefs.perturbed", self.perturbed, lo=0)
        if self.policy_samples + self.perturbed < 2:
            raise ValueError(f"prefs: expected policy_samples + perturbed >= 2 (pairs need two candidates), "
                             f"received {self.policy_samples} + {self.perturbed}")
        if self.perturbed and not self.perturb_std:
            raise ValueError("prefs.perturb_std: expected at least one std when perturbed > 0, received []")
        for s in self.perturb_std:
            check_range("prefs.perturb_std[i]", s, lo=0.0, lo_open=True)
        check_range("prefs.sample_eta", self.sample_eta, lo=0.0)
        check_range("prefs.lookahead", self.lookahead, lo=0)
        check_range("prefs.tie_margin", self.tie_margin, lo=0.0)
        check_range("prefs.heldout_fraction", self.heldout_fraction, lo=0.0, hi=1.0, hi_open=True)
        check_range("prefs.batch_envs", self.batch_envs, lo=1)
        if self.max_episode_steps is not None:
            check_range("prefs.max_episode_steps", self.max_episode_steps, lo=1)


def _check_objective(section: str, c) -> None:
    """lr, loss, soft_temperature and pair_sampling of a training section (train or finetune)."""
    check_range(f"{section}.lr", c.lr, lo=0.0, lo_open=True)
    if c.loss not in ("bt", "soft"):
        raise ValueError(f"{section}.loss: expected 'bt' or 'soft', received {c.loss!r}")
    check_range(f"{section}.soft_temperature", c.soft_temperature, lo=0.0, lo_open=True)
    if c.pair_sampling not in ("uniform", "gap"):
        raise ValueError(f"{section}.pair_sampling: expected 'uniform' or 'gap', received {c.pair_sampling!r}")


@dataclass(frozen=True)
class CriticTrainConfig:
    """Critic training: one timestep per pair, independent noise per chunk; Bradley-Terry or soft-target loss."""

    steps: int = 2000
    batch_size: int = 128         #: preference pairs per step
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float | None = 1.0
    ema_power: float = 0.75
    ema_max_decay: float = 0.999
    timesteps: Literal["uniform", "logit_normal"] = "logit_normal"
    logit_mean: float = 0.0       #: t/N = sigmoid(mean + std z), z ~ N(0, 1) (SD3's logit-normal)
    logit_std: float = 1.0
    #: how training pairs are drawn: "uniform", or "gap": with probability proportional to the winner's utility
    #: minus the loser's, so the expected loss is the gap-weighted Bradley-Terry loss and a success against a
    #: failure counts more than a near-tie (as it does in GRPO's batch-normalised advantages)
    pair_sampling: Literal["uniform", "gap"] = "uniform"
    #: "bt": Bradley-Terry on the decided pairs (ties dropped, DRM); "soft": every pair, ties included, with the
    #: soft target sigmoid(gap / soft_temperature), so score differences learn to track utility differences
    #: (a tie -> equal scores) instead of only their sign
    loss: Literal["bt", "soft"] = "bt"
    soft_temperature: float = 0.1
    eval_timesteps: int = 10      #: held-out accuracy is measured at this many evenly spaced t
    eval_noise_draws: int = 4     #: noise draws per held-out pair and t
    log_every: int = 100
    ckpt_every: int = 500
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "threads", "eval_timesteps", "eval_noise_draws"):
            check_range(f"train.{name}", getattr(self, name), lo=1)
        for name in ("warmup_steps", "ckpt_every", "seed"):
            check_range(f"train.{name}", getattr(self, name), lo=0)
        _check_objective("train", self)
        check_range("train.weight_decay", self.weight_decay, lo=0.0)
        check_range("train.logit_std", self.logit_std, lo=0.0, lo_open=True)
        if self.grad_clip is not None:
            check_range("train.grad_clip", self.grad_clip, lo=0.0, lo_open=True)


@dataclass(frozen=True)
class CriticFinetuneConfig:
    """A second training phase that starts from the trained critic (``simdiff critic experiments``). Only these
    settings change; every other one is ``train``'s. The default is the soft-target phase that makes the critic's
    score gaps track utility gaps, which step-wise GRPO needs (bench/reports/critic_push_level3.md)."""

    steps: int = 3000
    lr: float = 1e-4
    warmup_steps: int = 0
    loss: Literal["bt", "soft"] = "soft"
    soft_temperature: float = 0.1
    pair_sampling: Literal["uniform", "gap"] = "uniform"

    def __post_init__(self) -> None:
        check_range("finetune.steps", self.steps, lo=1)
        check_range("finetune.warmup_steps", self.warmup_steps, lo=0)
        _check_objective("finetune", self)

    def resolve(self, train: CriticTrainConfig) -> CriticTrainConfig:
        """``train`` with this phase's settings in place of its own."""
        return replace(train, **{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class SamplingConfig:
    """Step-wise sampling and terminal best-of-k."""

    k: int = 4                    #: candidates per denoising step (step-wise) or per chunk (terminal)
    eta: float = 1.0              #: DDIM eta of the stochastic steps the candidates branch from
    inference_steps: int | None = None  #: None: the base policy's DDIM steps

    def __post_init__(self) -> None:
        check_range("sampling.k", self.k, lo=1)
        check_range("sampling.eta", self.eta, lo=0.0)
        if self.inference_steps is not None:
            check_range("sampling.inference_steps", self.inference_steps, lo=1)


@dataclass(frozen=True)
class GrpoConfig:
    """Step-wise GRPO (critic scores of k candidate steps from the same x_t) and terminal-reward GRPO."""

    k: int = 4                    #: group size: candidate steps per x_t, or episodes per start state
    iterations: int = 24          #: collect-then-update rounds
    episodes_per_iter: int = 32   #: on-policy episodes per round (terminal: episodes_per_iter / k groups)
    updates_per_iter: int = 2     #: optimizer steps per round (the "policy-update steps" compared)
    minibatch: int = 1024         #: denoising-step samples per optimizer step
    lr: float = 1e-4
    clip_eps: float = 0.2         #: PPO ratio clip
    kl_coef: float = 0.01         #: weight of KL(p_theta || p_ref) of the Gaussian steps
    eta: float = 1.0              #: DDIM eta of the trained stochastic sampler
    return_weight: float = 0.1    #: terminal reward = success + return_weight * episode return
    adv_eps: float = 1e-6         #: std floor of the advantage normalisation
    #: advantage scale: "group" divides each group's centred scores by that group's std (GRPO); "batch" by
    #: the std of all centred scores of the step (terminal: of the round), so a group whose candidates score
    #: almost alike keeps small advantages instead of being blown up to +-1 (a weak critic's near-ties)
    adv_norm: Literal["group", "batch"] = "group"
    #: what the critic scores in step-wise GRPO: the noisy candidate x_{t_prev} at t_prev ("noisy", DRM) or the
    #: clean chunk the denoiser predicts from it, at t = 0 ("x0"; one more denoiser call per candidate)
    stepwise_score: Literal["noisy", "x0"] = "noisy"
    #: whose sampler branches the step-wise candidate groups: "policy" (the network being tuned, on-policy as in
    #: DRM) or "reference" (the frozen starting network; the PPO ratio is then taken against it, so the clip
    #: bounds how far the tuned steps may move from the samples the critic was trained on). States are the
    #: tuned policy's own either way.
    stepwise_sampler: Literal["policy", "reference"] = "policy"
    min_train_std: float = 0.05   #: DDIM steps with a smaller std are not trained (ill-conditioned ratios)
    stepwise_max_t: int | None = None  #: step-wise GRPO branches only steps with t_prev <= this (None: all);
    #: above it a weak critic scores near-pure noise at chance, and its advantages would only add noise
    level: Level = 3
    seed: int = 300_000           #: training-episode seeds start here
    eval_every: int = 4           #: evaluate every this many policy-update steps
    eval_episodes: int = 100
    eval_seed: int = 50_000
    #: how the fine-tuned policy is evaluated: "policy" (its own deterministic DDIM sampler) or "trained" (the
    #: stochastic DDIM sampler at ``eta`` that GRPO optimises; the deterministic one shares only its network)
    eval_sampler: Literal["policy", "trained"] = "policy"
    #: also run step-wise GRPO with random critic scores (a control: what noise alone does to the policy)
    random_control: bool = False
    #: also run step-wise GRPO scored by each candidate's TRUE outcome (policies.critic.outcomes.OracleStepScores,
    #: prefs.lookahead chunks ahead): what the method does with a perfect step reward (a diagnostic)
    oracle_control: bool = False

    def __post_init__(self) -> None:
        check_range("grpo.k", self.k, lo=2)
        for name in ("iterations", "episodes_per_iter", "updates_per_iter", "minibatch", "eval_every",
                     "eval_episodes"):
            check_range(f"grpo.{name}", getattr(self, name), lo=1)
        if self.episodes_per_iter % self.k:
            raise ValueError(f"grpo.episodes_per_iter: expected a multiple of grpo.k={self.k} (terminal GRPO "
                             f"groups k episodes per start state), received {self.episodes_per_iter}")
        check_range("grpo.lr", self.lr, lo=0.0, lo_open=True)
        check_range("grpo.clip_eps", self.clip_eps, lo=0.0, lo_open=True)
        check_range("grpo.kl_coef", self.kl_coef, lo=0.0)
        check_range("grpo.eta", self.eta, lo=0.0, lo_open=True)
        check_range("grpo.return_weight", self.return_weight, lo=0.0)
        check_range("grpo.adv_eps", self.adv_eps, lo=0.0, lo_open=True)
        if self.stepwise_score not in ("noisy", "x0"):
            raise ValueError(f"grpo.stepwise_score: expected 'noisy' or 'x0', received {self.stepwise_score!r}")
        if self.stepwise_sampler not in ("policy", "reference"):
            raise ValueError(f"grpo.stepwise_sampler: expected 'policy' or 'reference', "
                             f"received {self.stepwise_sampler!r}")
        if self.adv_norm not in ("group", "batch"):
            raise ValueError(f"grpo.adv_norm: expected 'group' or 'batch', received {self.adv_norm!r}")
        check_range("grpo.min_train_std", self.min_train_std, lo=0.0)
        if self.stepwise_max_t is not None:
            check_range("grpo.stepwise_max_t", self.stepwise_max_t, lo=0)
        _check_level("grpo.level", self.level)
        for name in ("seed", "eval_seed"):
            check_range(f"grpo.{name}", getattr(self, name), lo=0)


@dataclass(frozen=True)
class ExperimentConfig:
    """What ``simdiff critic experiments`` evaluates."""

    levels: tuple[Level, ...] = (3, "shift")
    episodes: int = 200           #: evaluation episodes per (method, level)
    seed: int = 10_000            #: episode i of an evaluation resets with seed + i
    batch_size: int = 100         #: env slots stepped together by the runner
    grpo: bool = True             #: also run the GRPO comparison
    max_episode_steps: int | None = None  #: None: the env's registered limit (evaluation and GRPO rollouts)
    oracle_lookahead: tuple[int, ...] = (0,)  #: diagnostic rows: best-of-k by TRUE outcome with these lookaheads

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("experiment.levels: expected at least one level, received []")
        for lv in self.levels:
            _check_level("experiment.levels[i]", lv)
        check_range("experiment.episodes", self.episodes, lo=1)
        check_range("experiment.seed", self.seed, lo=0)
        check_range("experiment.batch_size", self.batch_size, lo=1)
        if self.max_episode_steps is not None:
            check_range("experiment.max_episode_steps", self.max_episode_steps, lo=1)
        for la in self.oracle_lookahead:
            check_range("experiment.oracle_lookahead[i]", la, lo=0)

    def env_kwargs(self) -> dict:
        return {} if self.max_episode_steps is None else {"max_episode_steps": self.max_episode_steps}


@dataclass(frozen=True)
class CriticConfig:
    """Everything the critic stages need (the base policy is given on the command line)."""

    model: CriticModelConfig = field(default_factory=CriticModelConfig)
    prefs: PrefsConfig = field(default_factory=PrefsConfig)
    train: CriticTrainConfig = field(default_factory=CriticTrainConfig)
    #: None: one training phase; set: a second phase from the trained critic, whose result every use then takes
    finetune: CriticFinetuneConfig | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)


def load_critic_config(source=None, overrides: dict | None = None) -> CriticConfig:
    """``simdiff.config.load_config`` for :class:`CriticConfig` (YAML path, dict or None)."""
    from simdiff.config import load_config

    return load_config(CriticConfig, source, overrides)


__all__ = ["CriticConfig", "CriticModelConfig", "PrefsConfig", "CriticTrainConfig", "CriticFinetuneConfig",
           "SamplingConfig", "GrpoConfig", "ExperimentConfig", "load_critic_config"]
