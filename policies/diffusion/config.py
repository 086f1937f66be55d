"""Configuration schema of the conditional diffusion policy (values live in ``configs/policy/*.yaml``).

Defaults follow Chi et al.'s state-based Push-T setup where it fits a CPU: observation horizon 2, prediction
horizon 16, action horizon 8, 100 training steps of a squared-cosine schedule, epsilon prediction with
clipped samples, EMA with power 0.75; inference runs 10 DDIM steps. Network sizes come in presets from
``tiny`` (specialists, fast on a CPU) to ``large`` (the paper's 256/512/1024 U-Net).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simdiff.config import check_range

#: (down_dims, step_embed_dim) per size preset.
SIZE_PRESETS: dict[str, tuple[tuple[int, ...], int]] = {
    "tiny": ((32, 64), 32),
    "small": ((64, 128, 256), 64),
    "base": ((128, 256, 512), 128),
    "large": ((256, 512, 1024), 256),
}

Size = Literal["tiny", "small", "base", "large"]


@dataclass(frozen=True)
class HorizonConfig:
    """Observation, prediction and executed-action horizons (in control steps)."""

    obs: int = 2          #: To: observations the policy conditions on (the current one and To-1 before)
    prediction: int = 16  #: Tp: length of the denoised action sequence (starts at the oldest observation)
    action: int = 8       #: Ta: actions executed from each prediction before replanning

    def __post_init__(self) -> None:
        check_range("horizon.obs", self.obs, lo=1)
        check_range("horizon.prediction", self.prediction, lo=1)
        check_range("horizon.action", self.action, lo=1)
        if self.obs - 1 + self.action > self.prediction:
            raise ValueError(f"horizon: expected obs - 1 + action <= prediction (the executed actions start at "
                             f"the current step, index obs-1), received obs={self.obs}, action={self.action}, "
                             f"prediction={self.prediction}")


@dataclass(frozen=True)
class ModelConfig:
    """The 1D temporal U-Net (``simdiff.nets.unet1d.ConditionalUnet1D``) and its condition."""

    size: Size = "tiny"                       #: preset for down_dims / step_embed_dim
    down_dims: tuple[int, ...] | None = None  #: channels per resolution level; None: from ``size``
    step_embed_dim: int | None = None         #: diffusion-step embedding width; None: from ``size``
    kernel_size: int = 5
    n_groups: int = 8                         #: GroupNorm groups
    use_context: bool = True                  #: condition on the observation's domain context (if the env has one)
    num_tasks: int = 0                        #: > 0 adds a learned task-id embedding to the condition
    task_embed_dim: int = 16
    #: task id used where a caller passes none (None: with ``num_tasks > 0`` every caller must pass one). A
    #: policy trained with a data-source token acts with the source it should imitate, e.g. the expert's.
    default_task: int | None = None

    def __post_init__(self) -> None:
        if self.down_dims is not None:
            if not self.down_dims:
                raise ValueError("model.down_dims: expected at least one level, received []")
            for d in self.down_dims:
                check_range("model.down_dims[i]", d, lo=1)
                if d % self.n_groups:
                    raise ValueError(f"model.down_dims: expected multiples of n_groups={self.n_groups}, "
                                     f"received {list(self.down_dims)}")
        if self.step_embed_dim is not None:
            check_range("model.step_embed_dim", self.step_embed_dim, lo=2)
        check_range("model.kernel_size", self.kernel_size, lo=1)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size: expected an odd number, received {self.kernel_size}")
        check_range("model.n_groups", self.n_groups, lo=1)
        check_range("model.num_tasks", self.num_tasks, lo=0)
        check_range("model.task_embed_dim", self.task_embed_dim, lo=1)
        if self.default_task is not None:
            if not self.num_tasks:
                raise ValueError(f"model.default_task: expected null without a task embedding (model.num_tasks = "
                                 f"0), received {self.default_task}")
            check_range("model.default_task", self.default_task, lo=0, hi=self.num_tasks - 1)

    def resolved_down_dims(self) -> tuple[int, ...]:
        return tuple(self.down_dims) if self.down_dims is not None else SIZE_PRESETS[self.size][0]

    def resolved_step_embed_dim(self) -> int:
        return self.step_embed_dim if self.step_embed_dim is not None else SIZE_PRESETS[self.size][1]


@dataclass(frozen=True)
class NoiseConfig:
    """Diffusion process (training) and sampler (inference)."""

    train_steps: int = 100                            #: N, steps of the forward process
    schedule: Literal["cosine", "linear"] = "cosine"  #: squared-cosine (Nichol & Dhariwal) or linear betas
    prediction: Literal["epsilon", "v", "x0"] = "epsilon"
    clip: float | None = 1.0                          #: clamp predicted x0 to [-clip, clip] (actions live in [-1, 1])
    sampler: Literal["ddim", "ddpm"] = "ddim"
    inference_steps: int = 10                         #: DDIM steps per action chunk (ddpm always runs N)
    #: run the denoiser as a frozen TorchScript graph when sampling (same math; at batch 1 on a CPU it removes
    #: about a third of the per-op overhead that dominates a small network's latency)
    frozen_graph: bool = True
    #: task guidance (sampling only): the prediction is pushed away from task ``guidance_against`` towards the
    #: acting task, ``out = out(task) + guidance * (out(task) - out(guidance_against))``; 0 samples plainly. For a
    #: source-token policy: against the pseudo-label token, so the expert's precision is extrapolated.
    guidance: float = 0.0
    guidance_against: int | None = None

    def __post_init__(self) -> None:
        check_range("noise.train_steps", self.train_steps, lo=2)
        check_range("noise.guidance", self.guidance, lo=0.0)
        if self.guidance and self.guidance_against is None:
            raise ValueError(f"noise.guidance: expected noise.guidance_against (the task id to guide away from) with "
                             f"guidance {self.guidance}, received null")
        check_range("noise.inference_steps", self.inference_steps, lo=1, hi=self.train_steps)
        if self.clip is not None:
            check_range("noise.clip", self.clip, lo=0.0, lo_open=True)


@dataclass(frozen=True)
class NormalizerConfig:
    """How observations (state part) and actions are scaled; the domain context is used as the env gives it."""

    obs: Literal["minmax", "meanstd"] = "minmax"     #: minmax maps the data range to [-1, 1]
    action: Literal["minmax", "meanstd"] = "minmax"


@dataclass(frozen=True)
class DataConfig:
    """Which demonstrations are used."""

    max_episodes: int | None = None  #: use the first N episodes of the file (None: all)
    successful_only: bool = False    #: drop episodes whose last step is not a success

    def __post_init__(self) -> None:
        if self.max_episodes is not None:
            check_range("data.max_episodes", self.max_episodes, lo=1)


@dataclass(frozen=True)
class PolicyTrainConfig:
    """Optimisation (passed to ``simdiff.training.train``) plus the policy's data loading."""

    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    warmup_steps: int = 200
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    log_every: int = 50
    ckpt_every: int = 500
    seed: int = 0
    threads: int = 1  #: torch threads while training (the CPU is often shared)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "threads"):
            check_range(f"train.{name}", getattr(self, name), lo=1)
        for name in ("warmup_steps", "ckpt_every", "seed"):
            check_range(f"train.{name}", getattr(self, name), lo=0)
        check_range("train.lr", self.lr, lo=0.0, lo_open=True)


@dataclass(frozen=True)
class EvalConfig:
    """Optional on-policy evaluation during training (every ``every`` steps; 0 = never)."""

    every: int = 0
    env: str | None = None      #: None: the env recorded in the demo file
    level: int | str = 0
    episodes: int = 20
    seed: int = 100_000         #: held out from demo seeds by convention
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_range("eval.every", self.every, lo=0)
        check_range("eval.episodes", self.episodes, lo=1)
        check_range("eval.seed", self.seed, lo=0)
        check_range("eval.batch_size", self.batch_size, lo=1)
        if not (self.level == "shift" or (isinstance(self.level, int) and 0 <= self.level <= 3)):
            raise ValueError(f"eval.level: expected 0..3 or 'shift', received {self.level!r}")


@dataclass(frozen=True)
class DiffusionPolicyConfig:
    """Everything that defines a diffusion policy and how it is trained."""

    horizon: HorizonConfig = field(default_factory=HorizonConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    normalizer: NormalizerConfig = field(default_factory=NormalizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: PolicyTrainConfig = field(default_factory=PolicyTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        dims = self.model.resolved_down_dims()
        multiple = 2 ** (len(dims) - 1)
        if self.horizon.prediction % multiple:
            raise ValueError(f"horizon.prediction: expected a multiple of {multiple} (the U-Net halves it "
                             f"{len(dims) - 1} times), received {self.horizon.prediction}")
        against = self.noise.guidance_against
        if against is not None and not 0 <= against < self.model.num_tasks:
            raise ValueError(f"noise.guidance_against: expected a task id in [0, {self.model.num_tasks - 1}] "
                             f"(model.num_tasks = {self.model.num_tasks}), received {against}")
        if self.eval.every and self.train.ckpt_every and self.eval.every % self.train.ckpt_every:
            raise ValueError(f"eval.every: expected a multiple of train.ckpt_every={self.train.ckpt_every} "
                             f"(evaluation resumes from checkpoints), received {self.eval.every}")


#: Sections that change the network or its inputs: a checkpoint must match these to be loaded.
ARCHITECTURE_SECTIONS = ("horizon", "model", "noise.train_steps", "noise.schedule", "noise.prediction",
                         "normalizer")
#: Sections free to differ between a checkpoint and the config it is loaded with.
FREE_SECTIONS = ("data", "train", "eval", "noise.clip", "noise.sampler", "noise.inference_steps", "noise.frozen_graph",
                 "noise.guidance", "noise.guidance_against")


def load_policy_config(source=None, overrides: dict | None = None) -> DiffusionPolicyConfig:
    """``simdiff.config.load_config`` for :class:`DiffusionPolicyConfig` (YAML path, dict or None)."""
    from simdiff.config import load_config

    return load_config(DiffusionPolicyConfig, source, overrides)


__all__ = ["DiffusionPolicyConfig", "HorizonConfig", "ModelConfig", "NoiseConfig", "NormalizerConfig",
           "DataConfig", "PolicyTrainConfig", "EvalConfig", "SIZE_PRESETS", "ARCHITECTURE_SECTIONS",
           "FREE_SECTIONS", "load_policy_config"]
