"""Decentralized diffusion run configuration: the schema (values live in ``configs/ddm/*.yaml``).

A run is one :class:`DDMConfig`: the domain and its data (``skild`` for lattices, ``policy`` for demonstrations),
how the data are partitioned into ``num_experts`` clusters, the router, and the compute budget. The budget is
the monolithic model's: its ``train.steps`` (at its batch size) are split among the experts, so the summed
expert compute equals the monolithic baseline's (``compute.split``). Where the jobs run (local pool or Ray,
worker count) is chosen on the command line and never changes what is computed, so it is not part of the
config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from policies.diffusion.config import DiffusionPolicyConfig
from simdiff.config import check_range
from simdiff.pipelines.skild.config import SkildConfig

Domain = Literal["ising", "policy"]
Routing = Literal["full", "top1", "top2"]
ROUTINGS: tuple[str, ...] = ("full", "top1", "top2")
#: Expert ``k`` trains with seed ``train.seed + EXPERT_SEED_STRIDE * (k + 1)``; the monolithic baseline and the
#: router use ``train.seed`` and ``router.seed``: no two jobs share a seed, and no seed depends on another shard.
EXPERT_SEED_STRIDE = 7919


@dataclass(frozen=True)
class PartitionConfig:
    """How the training set is cut into clusters, one per expert.

    ``kmeans``: k-means (k-means++ seeding, ``n_init`` restarts, the lowest inertia wins) on standardised
    features. Lattice features are invariant under the lattice symmetries the training augments with
    (translations, D4, global spin flip), so an augmented sample stays in its cluster: |m|, energy per site,
    log S(k) on the ``spectral_shells`` lowest shells, and the mean |block magnetisation| at each of
    ``coarse_factors`` (coarse-graining; only approximately translation invariant). Trajectory features: the
    first observation of each episode and its domain context (``trajectory_features``).
    ``given``: labels from ``path``, an ``.npz`` with an integer array ``labels`` (one per lattice / episode).
    """

    method: Literal["kmeans", "given"] = "kmeans"
    path: str | None = None
    seed: int = 0
    n_init: int = 8
    max_iter: int = 200
    spectral_shells: int = 3
    coarse_factors: tuple[int, ...] = ()
    trajectory_features: Literal["obs_context", "context", "obs"] = "obs_context"
    #: every cluster must hold at least this many lattices / episodes
    min_cluster_size: int = 2

    def __post_init__(self) -> None:
        if self.method == "given" and not self.path:
            raise ValueError("partition.path: expected an .npz with 'labels' when partition.method is 'given', "
                             "received none")
        check_range("partition.seed", self.seed, lo=0)
        check_range("partition.n_init", self.n_init, lo=1)
        check_range("partition.max_iter", self.max_iter, lo=1)
        check_range("partition.spectral_shells", self.spectral_shells, lo=0)
        for b in self.coarse_factors:
            check_range("partition.coarse_factors[]", b, lo=2)
        check_range("partition.min_cluster_size", self.min_cluster_size, lo=1)


@dataclass(frozen=True)
class RouterConfig:
    """The router ``r(k | x_t, t)``: a small classifier trained with cross-entropy on noised samples.

    Lattices: ``depth`` circular 3x3 convolutions of ``channels`` channels, global average pooling, an MLP of
    width ``hidden`` with the time embedding. Action chunks: an MLP over the flattened chunk, the time
    embedding and the observation features.
    """

    channels: int = 16
    depth: int = 2
    hidden: int = 64
    time_dim: int = 32
    steps: int = 500
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("channels", "depth", "hidden", "steps", "batch_size"):
            check_range(f"router.{name}", getattr(self, name), lo=1)
        check_range("router.time_dim", self.time_dim, lo=2)
        check_range("router.lr", self.lr, lo=0.0, lo_open=True)
        check_range("router.warmup_steps", self.warmup_steps, lo=0)
        check_range("router.seed", self.seed, lo=0)


@dataclass(frozen=True)
class ComputeConfig:
    """Matched compute: the monolithic baseline trains ``train.steps`` steps; the experts share them.

    ``split: proportional`` gives expert ``k`` a share of the steps proportional to its cluster's training
    samples (lattices, or the summed length of its episodes): the same number of passes over its data as the
    monolith makes over all of it. ``equal`` gives every expert
    ``steps / K``. Both sum to the monolith's steps (up to rounding, at least ``min_steps`` each).
    """

    split: Literal["proportional", "equal"] = "proportional"
    min_steps: int = 50
    #: also train the monolithic baseline (one model on all data at the full budget) as one more job
    monolithic: bool = True

    def __post_init__(self) -> None:
        check_range("compute.min_steps", self.min_steps, lo=1)


@dataclass(frozen=True)
class PolicyEvalConfig:
    """On-policy evaluation of ``simdiff ddm compare`` for the policy domain."""

    env: str | None = None          #: None: the env recorded in the demo file
    levels: tuple[int, ...] = (0, 1, 2, 3)
    episodes: int = 50
    seed: int = 100_000             #: held out from the demo seeds by convention
    batch_size: int = 50

    def __post_init__(self) -> None:
        for lv in self.levels:
            check_range("eval.levels[]", lv, lo=0, hi=3)
        check_range("eval.episodes", self.episodes, lo=1)
        check_range("eval.seed", self.seed, lo=0)
        check_range("eval.batch_size", self.batch_size, lo=1)


@dataclass(frozen=True)
class PolicyDomainConfig:
    """Demonstrations (one or more demo files, e.g. one per level) and the diffusion policy every expert uses.

    The normalizers are fitted once on all demonstrations and shared by the experts: a mixture of predictions
    needs every expert to denoise in the same action space (the only statistic the experts share).
    """

    demos: tuple[str, ...] = ()
    policy: DiffusionPolicyConfig = field(default_factory=DiffusionPolicyConfig)
    eval: PolicyEvalConfig = field(default_factory=PolicyEvalConfig)

    def __post_init__(self) -> None:
        if not self.demos:
            raise ValueError("policy.demos: expected at least one demonstration file, received none")


@dataclass(frozen=True)
class DDMConfig:
    name: str = "ddm"
    domain: Domain = "ising"
    num_experts: int = 4
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    #: lattice domain: data, process, network, and the monolithic budget (``skild.train``)
    skild: SkildConfig | None = None
    #: policy domain: demos, policy, and the monolithic budget (``policy.policy.train``)
    policy: PolicyDomainConfig | None = None

    def __post_init__(self) -> None:
        check_range("num_experts", self.num_experts, lo=1)
        if self.domain == "ising" and self.skild is None:
            raise ValueError("skild: expected a SKILD section (data, process, model, train) for domain 'ising', "
                             "received none")
        if self.domain == "policy" and self.policy is None:
            raise ValueError("policy: expected a policy section (demos, policy) for domain 'policy', received none")
        if self.domain == "ising" and self.policy is not None:
            raise ValueError("policy: expected no policy section for domain 'ising' (remove it)")
        if self.domain == "policy" and self.skild is not None:
            raise ValueError("skild: expected no skild section for domain 'policy' (remove it)")

    @property
    def total_steps(self) -> int:
        """The monolithic budget in optimisation steps."""
        return self.skild.train.steps if self.domain == "ising" else self.policy.policy.train.steps

    @property
    def batch_size(self) -> int:
        return self.skild.train.batch_size if self.domain == "ising" else self.policy.policy.train.batch_size


__all__ = ["DDMConfig", "PartitionConfig", "RouterConfig", "ComputeConfig", "PolicyDomainConfig",
           "PolicyEvalConfig", "ROUTINGS", "EXPERT_SEED_STRIDE"]
