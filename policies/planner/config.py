"""Configuration schema of the LoopMDM planner (values live in ``configs/planner/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simdiff.config import check_range
from simdiff.training import TrainConfig


@dataclass(frozen=True)
class TokenizerConfig:
    """How action chunks become tokens (see :mod:`policies.planner.tokenizer`)."""

    kind: Literal["uniform", "kmeans"] = "uniform"  #: per-dimension uniform bins, or a learned k-means codebook
    bins: int = 32               #: uniform: bins per action dimension (vocabulary size)
    codebook_size: int = 128     #: kmeans: number of codes (vocabulary size)
    chunk: int = 1               #: kmeans: consecutive action steps per code
    kmeans_iters: int = 50       #: kmeans: Lloyd iterations

    def __post_init__(self) -> None:
        check_range("tokenizer.bins", self.bins, lo=2)
        check_range("tokenizer.codebook_size", self.codebook_size, lo=2)
        check_range("tokenizer.chunk", self.chunk, lo=1)
        check_range("tokenizer.kmeans_iters", self.kmeans_iters, lo=1)


@dataclass(frozen=True)
class NetConfig:
    """Looped transformer sizes (see :class:`simdiff.nets.looped_transformer.LoopedTransformer`)."""

    d_model: int = 64            #: width
    n_heads: int = 4             #: attention heads (divide d_model)
    n_prelude: int = 1           #: layers before the loop (run once)
    n_loop: int = 1              #: layers of the looped block (shared weights, run S times)
    n_coda: int = 1              #: layers after the loop (run once)
    mlp_ratio: int = 4           #: MLP expansion
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_range("net.d_model", self.d_model, lo=1)
        check_range("net.n_heads", self.n_heads, lo=1)
        if self.d_model % self.n_heads:
            raise ValueError(f"net.n_heads: expected a divisor of d_model={self.d_model}, received {self.n_heads}")
        check_range("net.n_prelude", self.n_prelude, lo=0)
        check_range("net.n_loop", self.n_loop, lo=1)
        check_range("net.n_coda", self.n_coda, lo=0)
        check_range("net.mlp_ratio", self.mlp_ratio, lo=1)
        check_range("net.dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)


@dataclass(frozen=True)
class PlannerConfig:
    """The planner: observation history + domain context -> H-token plan of ``plan_horizon`` actions."""

    obs_horizon: int = 2         #: observation steps the plan is conditioned on (To)
    plan_horizon: int = 8        #: actions per plan (Ta)
    action_steps: int = 4        #: actions executed before replanning (receding horizon)
    use_context: bool = True     #: condition on the observed domain-context vector when the env provides one
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    net: NetConfig = field(default_factory=NetConfig)
    train_loops: int = 2         #: loop count S during training (fixed) ...
    train_loops_range: tuple[int, int] | None = None  #: ... or S ~ U{lo..hi} per batch when set
    eps: float = 1e-3            #: log-linear schedule alpha_t = 1 - (1 - eps) t
    antithetic: bool = True      #: stratified t in training
    sample_steps: int = 16       #: denoising steps of the ancestral sampler
    sample_loops: int = 2        #: loop count S at inference (any value works)
    sample_order: Literal["random", "confidence"] = "random"  #: exact ancestral or confidence-ordered unmasking
    temperature: float = 1.0     #: sampling temperature of the revealed tokens (0: argmax)
    obs_std_floor: float = 0.01  #: lower bound on the observation normalizer's std

    def __post_init__(self) -> None:
        check_range("obs_horizon", self.obs_horizon, lo=1)
        check_range("plan_horizon", self.plan_horizon, lo=1)
        check_range("action_steps", self.action_steps, lo=1, hi=self.plan_horizon)
        check_range("train_loops", self.train_loops, lo=1)
        if self.train_loops_range is not None:
            lo, hi = self.train_loops_range
            if not 1 <= lo <= hi:
                raise ValueError(f"train_loops_range: expected (lo, hi) with 1 <= lo <= hi, received "
                                 f"{self.train_loops_range}")
        check_range("eps", self.eps, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        check_range("sample_steps", self.sample_steps, lo=1)
        check_range("sample_loops", self.sample_loops, lo=1)
        check_range("temperature", self.temperature, lo=0.0)
        check_range("obs_std_floor", self.obs_std_floor, lo=0.0, lo_open=True)
        if self.tokenizer.kind == "kmeans" and self.plan_horizon % self.tokenizer.chunk:
            raise ValueError(f"tokenizer.chunk: expected a divisor of plan_horizon={self.plan_horizon}, "
                             f"received {self.tokenizer.chunk}")


@dataclass(frozen=True)
class PlannerTrainConfig:
    """What ``simdiff planner train CONFIG`` reads: the planner, the optimisation, the data split."""

    planner: PlannerConfig = field(default_factory=PlannerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1    #: demos held out (by episode) for the test NLL
    nll_samples: int = 1         #: Monte Carlo mask orders per held-out window in the NLL bound
    seed: int = 0                #: data split, tokenizer fit and initial weights

    def __post_init__(self) -> None:
        check_range("val_fraction", self.val_fraction, lo=0.0, hi=1.0, hi_open=True)
        check_range("nll_samples", self.nll_samples, lo=1)
        check_range("seed", self.seed, lo=0)


__all__ = ["TokenizerConfig", "NetConfig", "PlannerConfig", "PlannerTrainConfig"]
