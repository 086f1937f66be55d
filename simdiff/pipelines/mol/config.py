"""The MOL pipeline's configuration schema (values live in ``configs/mol/*.yaml``).

A run is fully determined by one :class:`MolConfig`. The executor's backend, workers and Ray address only decide
*where* jobs run, never what they compute, so they are not part of the run's fingerprint; ``threads_per_job`` is:
torch splits CPU reductions (the backward pass above all) by thread count, so the same seed trains different bits
at different thread counts, and a resume that mixed them would be reproducible by no single command.

Seeds are explicit and partitioned: paired demos, unlabeled conditions and evaluation draw environment seeds
from disjoint ranges (checked in :meth:`MolConfig.__post_init__`), so evaluation seeds are truly held out.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from simdiff.config import check_range

Level = int | Literal["shift"]
# Seeds of consecutive domains are this far apart, so per-domain seed ranges never collide.
DOMAIN_SEED_STRIDE = 100_000
# Sweep replicates shift every training seed range by this much (evaluation seeds stay fixed: paired comparison).
REPLICATE_SEED_STRIDE = 10_000_000
# Within a domain's condition range, each round (0 = specialists, r >= 1 = DAgger) owns this many seeds.
ROUND_SEED_BLOCK = DOMAIN_SEED_STRIDE // 16

POLICY_SIZES = ("tiny", "small", "base", "large")
METHODS = ("specialists", "generalist_labeled_only", "generalist_distilled", "expert")


def level_key(level: Level) -> str:
    """``0 -> "level_0"``, ``"shift" -> "shift"`` (the keys of metrics.json)."""
    return "shift" if level == "shift" else f"level_{int(level)}"


@dataclass(frozen=True)
class EnvSpec:
    """Which world, which domains the specialists own, and where everything is evaluated."""

    id: str = "simdiff/Push-v0"
    # One specialist per domain; a domain is a difficulty level (0 nominal ... 3 widest).
    domains: tuple[int, ...] = (0, 1, 2, 3)
    # Evaluation ranges: every level plus the held-out "shift" range outside level 3.
    eval_levels: tuple[Level, ...] = (0, 1, 2, 3, "shift")
    # Extra keyword arguments for gymnasium.make (e.g. max_episode_steps); never the level.
    make_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError("env.domains: expected at least one level, received an empty list")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"env.domains: expected distinct levels, received {list(self.domains)}")
        for d in self.domains:
            check_range("env.domains[]", d, 0, 3)
        for lv in self.eval_levels:
            if lv != "shift":
                check_range("env.eval_levels[]", lv, 0, 3)
        if "level" in self.make_kwargs:
            raise ValueError("env.make_kwargs: the level is set by the pipeline; remove 'level'")


@dataclass(frozen=True)
class DemosSpec:
    """Stage 1: N paired demos per domain from the scripted expert."""

    per_domain: int = 20  # N
    seed: int = 0  # first env seed; domain d uses [seed + d*DOMAIN_SEED_STRIDE, ... + per_domain)
    # Keep only successful expert episodes (collect more seeds until N successes, at most 3N tries).
    successful_only: bool = True

    def __post_init__(self) -> None:
        check_range("demos.per_domain", self.per_domain, 1, DOMAIN_SEED_STRIDE // 3)
        check_range("demos.seed", self.seed, 0)


@dataclass(frozen=True)
class PolicySpec:
    """A conditional diffusion policy (``policies.diffusion``): size preset, training budget, overrides.

    ``overrides`` is a nested mapping merged into the policy's own config schema
    (``policies.diffusion.config.DiffusionPolicyConfig``: horizon, model, noise, normalizer, train), which
    checks it strictly before any stage runs. ``size``, ``steps``, ``batch_size`` and ``lr`` win over it.
    """

    size: str = "tiny"  # tiny | small | base | large
    steps: int = 2000  # gradient steps: the training budget
    batch_size: int = 256
    lr: float = 1e-3
    overrides: dict[str, Any] = field(default_factory=dict)
    # Train on the world's mirror image too: each training window (paired or pseudo) is reflected with
    # probability 1/2 by the world's symmetry (``env.unwrapped.mirror``; Push-v0: y -> -y), which the true
    # policy respects. A world without one is refused before anything runs.
    mirror: bool = False

    def __post_init__(self) -> None:
        if self.size not in POLICY_SIZES:
            raise ValueError(f"size: expected one of {', '.join(POLICY_SIZES)}, received {self.size!r}")
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)


SEARCHABLE_ENVS = ("simdiff/Push-v0",)  # worlds policies.critic.sim_state can snapshot and restore


@dataclass(frozen=True)
class ConditionsSpec:
    """Stage 3: unlabeled conditions (observation window + domain, no expert action).

    Round 0 draws them from resets and from on-policy rollouts of each domain's specialist; DAgger rounds add
    states visited by the generalist of the previous round (see :class:`DaggerSpec`).
    """

    per_domain: int = 4000  # M: conditions kept per domain and round (uniform subsample of the pool)
    resets_per_domain: int = 200  # initial observations of fresh seeds
    rollouts_per_domain: int = 40  # specialist episodes whose visited states become conditions
    stride: int = 1  # keep every stride-th step of a rollout
    seed: int = 1_000_000
    batch_envs: int = 32  # environments stepped together during rollouts
    # Specialist tries per rollout seed: a seed whose rollout failed is replayed (same initial state) with fresh
    # sampling noise, up to this many times in all. With the success filter, a hard initial state still yields
    # a pseudo-demo when any try succeeds, instead of only the states the specialist solves at the first try.
    attempts: int = 1
    # Simulator-verified specialist rollouts: at each replanning point the specialist samples ``search_k``
    # chunks (stochastic DDIM), each is replayed from a snapshot of the world followed by ``search_lookahead``
    # chunks of the specialist, and the chunk whose replay ends best (success, then progress to the goal) is
    # executed. The pseudo-demos are then the specialist's own chunks, chosen with the simulator as verifier;
    # no expert acts. 1 = plain rollouts. Needs a world whose state can be snapshotted (simdiff/Push-v0).
    search_k: int = 1
    search_lookahead: int = 2
    # DDIM eta of the searched candidates: 1 = fully stochastic steps; 0 = deterministic DDIM, candidates differ
    # only by their initial noise (smoother chunks, which matter when they become training labels).
    search_eta: float = 1.0

    def __post_init__(self) -> None:
        check_range("conditions.per_domain", self.per_domain, 1)
        check_range("conditions.search_eta", self.search_eta, 0.0, 1.0)
        check_range("conditions.attempts", self.attempts, 1, 16)
        check_range("conditions.search_k", self.search_k, 1, 32)
        check_range("conditions.search_lookahead", self.search_lookahead, 0, 8)
        check_range("conditions.resets_per_domain", self.resets_per_domain, 0)
        check_range("conditions.rollouts_per_domain", self.rollouts_per_domain, 0)
        total = self.resets_per_domain + self.rollouts_per_domain
        if not 0 < total <= ROUND_SEED_BLOCK:
            raise ValueError(f"conditions: expected 0 < resets_per_domain + rollouts_per_domain <= "
                             f"{ROUND_SEED_BLOCK}, received {total}")
        check_range("conditions.stride", self.stride, 1)
        check_range("conditions.seed", self.seed, 0)
        check_range("conditions.batch_envs", self.batch_envs, 1)


@dataclass(frozen=True)
class DaggerSpec:
    """DAgger-style rounds: roll out the current generalist per domain, let the specialists label its states.

    Round r's generalist is trained from scratch on paired + all pseudo-labels of rounds 0..r, so the final
    (distilled) generalist has exactly the labeled-only generalist's architecture and budget. Intermediate
    generalists only serve to visit states; ``intermediate_steps_fraction`` makes them cheaper.
    """

    rounds: int = 1  # extra rounds after round 0 (0 = plain distillation)
    rollouts_per_domain: int = 40
    intermediate_steps_fraction: float = 1.0
    # Policy overrides merged over ``generalist.overrides`` for the intermediate (acting) generalists only, e.g.
    # ``{model: {down_dims: [64, 128]}}`` keeps them small while the final generalists (distilled and
    # labeled-only, always the same architecture) grow. Empty: every round's generalist has the final one's.
    intermediate_overrides: dict[str, Any] = field(default_factory=dict)
    # Simulator-verified labels at the generalist's states: the generalist acts, and at each of its replanning
    # points the domain's specialist samples ``search_k`` chunks, replays each from a snapshot of the world
    # (plus ``search_lookahead`` specialist chunks) and the best-ending one becomes the label of that state.
    # 1 = plain DAgger (one fresh specialist sample per visited state). Needs a snapshottable world.
    search_k: int = 1
    search_lookahead: int = 2
    search_eta: float = 1.0  # as conditions.search_eta
    # Who labels searched-DAgger states: "specialist" (MOL) or "expert", a DIAGNOSTIC that labels them with the
    # privileged scripted expert's next actions (not semi-supervised; it bounds what specialist labels could do).
    teacher: str = "specialist"
    # Keep a searched-DAgger label only if its verified outcome (the chosen chunk plus the lookahead, replayed in
    # the simulator) reaches this utility: > 1 = success within the horizon, else the fraction of the box-goal
    # distance closed (policies.critic.preferences.chunk_utility). None keeps every label.
    min_label_utility: float | None = None
    # Which rounds' pseudo-labels a round-r generalist trains on: "all" (0..r), "latest" (r only) or "dagger"
    # (the DAgger rounds 1..r, without round 0's specialist rollouts).
    pseudo_rounds: str = "all"
    # Who proposes the searched candidates: "specialist" (k chunks) or "specialist+generalist" (k from each; the
    # round-(r-1) generalist's own samples compete with the specialist's, so the search can also keep a better
    # version of what the generalist would have done). No expert acts either way.
    search_proposers: str = "specialist"
    # Who continues each candidate for the lookahead chunks, i.e. whose value the search estimates: "specialist",
    # or "generalist" (the round-(r-1) generalist, the policy the label will be distilled into).
    search_rollout: str = "specialist"
    # Task shaping of the search (Push-v0): weight of the pusher's relative approach to its staging point behind
    # the box, added to a failed candidate's utility (policies.critic.outcomes.shaped_utility). 0 = pure outcome.
    search_shaping: float = 0.0
    # The domains whose DAgger rounds run (None = every domain). A left-out domain's data is its paired demos (and
    # round 0's labels unless pseudo_rounds drops them). On Push-v0, leaving out level 0, which the labeled-only
    # generalist already solves, did not restore the distilled generalist's level-0 success but raised level 3
    # (bench/reports/mol_push_dagger_helped.md).
    domains: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_range("dagger.rounds", self.rounds, 0, 10)
        if not isinstance(self.intermediate_overrides, dict):
            raise ValueError("dagger.intermediate_overrides: expected a mapping of policy overrides, received "
                             f"{self.intermediate_overrides!r}")
        if self.domains is not None:
            if not isinstance(self.domains, (list, tuple)) or not self.domains or len(set(self.domains)) != len(
                    self.domains):
                raise ValueError(f"dagger.domains: expected null or a non-empty list of distinct domains, received "
                                 f"{self.domains!r}")
            object.__setattr__(self, "domains", tuple(self.domains))
        check_range("dagger.search_k", self.search_k, 1, 32)
        check_range("dagger.search_lookahead", self.search_lookahead, 0, 8)
        check_range("dagger.search_eta", self.search_eta, 0.0, 1.0)
        if self.teacher not in ("specialist", "expert"):
            raise ValueError(f"dagger.teacher: expected 'specialist' or 'expert', received {self.teacher!r}")
        if self.teacher == "expert" and self.search_k < 2:
            raise ValueError("dagger.teacher: 'expert' labels through the searched-DAgger path; set dagger.search_k "
                             f">= 2 (its value is then unused), received search_k={self.search_k}")
        if self.min_label_utility is not None:
            check_range("dagger.min_label_utility", self.min_label_utility, -1.0, 2.0)
            if self.search_k < 2 or self.teacher != "specialist":
                raise ValueError("dagger.min_label_utility filters verified specialist labels: it needs "
                                 f"dagger.search_k >= 2 and teacher 'specialist', received search_k={self.search_k}, "
                                 f"teacher={self.teacher!r}")
        if self.search_proposers not in ("specialist", "specialist+generalist"):
            raise ValueError("dagger.search_proposers: expected 'specialist' or 'specialist+generalist', received "
                             f"{self.search_proposers!r}")
        if self.search_rollout not in ("specialist", "generalist"):
            raise ValueError(f"dagger.search_rollout: expected 'specialist' or 'generalist', received "
                             f"{self.search_rollout!r}")
        check_range("dagger.search_shaping", self.search_shaping, 0.0, 1.0)
        if (self.search_proposers, self.search_rollout, self.search_shaping) != ("specialist", "specialist", 0.0) and (
                self.search_k < 2 or self.teacher != "specialist"):
            raise ValueError("dagger.search_proposers / search_rollout / search_shaping shape the specialists' "
                             "searched labels: they need dagger.search_k >= 2 and teacher 'specialist', received "
                             f"search_k={self.search_k}, teacher={self.teacher!r}")
        if self.pseudo_rounds not in ("all", "latest", "dagger"):
            raise ValueError("dagger.pseudo_rounds: expected 'all', 'latest' or 'dagger', received "
                             f"{self.pseudo_rounds!r}")
        check_range("dagger.rollouts_per_domain", self.rollouts_per_domain, 1, ROUND_SEED_BLOCK)
        check_range("dagger.intermediate_steps_fraction", self.intermediate_steps_fraction, 0.0, 1.0,
                    lo_open=True)


@dataclass(frozen=True)
class PseudoSpec:
    """Stage 4: each condition gets an action chunk from its domain's specialist."""

    # Keep only conditions from rollouts that succeeded. Applies to the specialists' rollouts; reset
    # conditions have no rollout and are kept; DAgger states are kept unless filter_dagger (dropping the
    # generalist's failures would drop exactly the states DAgger is for).
    filter_success: bool = True
    filter_dagger: bool = False
    # "executed": states of the specialists' own rollouts keep the chunk the specialist executed there (a kept
    # successful rollout becomes a pseudo-demo, as in the public MOL code); "resample": every condition gets a
    # fresh chunk from the specialist. Resets and DAgger states are always sampled.
    label: Literal["executed", "resample"] = "executed"
    batch_size: int = 1024
    seed: int = 2_000_000  # sampling noise of the specialists' labels
    # Share of each distillation batch drawn from the paired demos (the rest from pseudo-labels);
    # null: proportional to the number of paired windows and pseudo-labels.
    paired_fraction: float | None = 0.25
    # The final distilled generalist only: its paired share (null: ``paired_fraction``, as every round's). The
    # DAgger rounds' acting generalists keep ``paired_fraction``, so their labels (and a finished run's) are
    # unchanged by it: a final mix can lean on the labels more than the acting generalists should.
    final_paired_fraction: float | None = None
    # The final distilled generalist only: share of its steps, at the end, trained on the paired demos only
    # (pseudo-labels as pre-training, the consistent expert data last). 0: mixed batches throughout. The DAgger
    # rounds' acting generalists keep mixed batches, so their labels (and a finished run's) are unchanged by it.
    finetune_fraction: float = 0.0
    # The final distilled generalist only: relative weight of each domain's paired windows within the paired
    # share of its batches, one per ``env.domains`` entry (null: every window alike). E.g. [2, 1, 1, 1] draws
    # level 0's expert windows twice as often without taking batch share from the pseudo-labels. The DAgger
    # rounds' generalists keep uniform windows, so their labels (and a finished run's) are unchanged by it.
    paired_domain_weights: tuple[float, ...] | None = None
    # The final distilled generalist only: a learned data-source token in its condition says whether a training
    # row is an expert demo or a pseudo-label, and the generalist acts with the expert token. The pseudo-labels
    # still teach the states the demos never reach, while the demos' own precision is not averaged with the
    # labels' where both cover the same states. The DAgger rounds' generalists are unchanged by it.
    source_token: bool = False

    def __post_init__(self) -> None:
        check_range("pseudo.batch_size", self.batch_size, 1)
        check_range("pseudo.finetune_fraction", self.finetune_fraction, 0.0, 1.0, hi_open=True)
        if self.paired_domain_weights is not None:
            w = tuple(float(x) for x in self.paired_domain_weights)
            if not w or min(w) < 0 or max(w) <= 0 or not all(math.isfinite(x) for x in w):
                raise ValueError("pseudo.paired_domain_weights: expected null or a list of finite weights >= 0, "
                                 f"at least one > 0, received {list(self.paired_domain_weights)}")
            object.__setattr__(self, "paired_domain_weights", w)
        if self.paired_fraction is not None:
            check_range("pseudo.paired_fraction", self.paired_fraction, 0.0, 1.0)
        if self.final_paired_fraction is not None:
            check_range("pseudo.final_paired_fraction", self.final_paired_fraction, 0.0, 1.0)
        check_range("pseudo.seed", self.seed, 0)


@dataclass(frozen=True)
class EvalSpec:
    """Stage 6: on-policy evaluation at every level and on shift, on held-out seeds."""

    episodes: int = 100  # per level and method; >= 100 for the reported numbers
    seed: int = 1_000_000_000  # held-out seeds [seed, seed + episodes), the same for every level and method
    batch_envs: int = 50  # environments stepped together (one batched policy call serves all)
    # On "shift" (owned by no specialist): "level_3" uses the widest specialist (the one a user would deploy
    # out of range), "best" the best specialist, "average" the mean over specialists. All are in the report.
    shift_specialist: Literal["level_3", "best", "average"] = "level_3"
    # Evaluate every specialist on shift too (shown in the report), whatever the rule above.
    all_specialists_on_shift: bool = True
    methods: tuple[str, ...] = METHODS

    def __post_init__(self) -> None:
        check_range("evaluation.episodes", self.episodes, 1)
        check_range("evaluation.seed", self.seed, 0)
        check_range("evaluation.batch_envs", self.batch_envs, 1)
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"evaluation.methods: expected a subset of {list(METHODS)}, received {bad}")


@dataclass(frozen=True)
class ExecutorSpec:
    """Where independent jobs (specialists, generalists, sweep points) run. Only ``threads_per_job`` is part of the
    fingerprint (it changes the arithmetic of training; see the module docstring)."""

    backend: Literal["sequential", "local", "ray"] = "local"
    workers: int = 2
    retries: int = 1  # a failed job is retried this many times, then reported
    ray_address: str | None = None
    threads_per_job: int = 1  # torch threads inside each job (cores are shared); changes the trained bits

    def __post_init__(self) -> None:
        check_range("executor.workers", self.workers, 1)
        check_range("executor.retries", self.retries, 0, 10)
        check_range("executor.threads_per_job", self.threads_per_job, 1)


@dataclass(frozen=True)
class SweepSpec:
    """``simdiff mol sweep``: success vs. paired demos per domain, and vs. specialist size."""

    paired_demos: tuple[int, ...] = (5, 10, 20, 50)
    seeds: tuple[int, ...] = (0, 1, 2)
    specialist_sizes: tuple[str, ...] = ("tiny", "small", "base")
    # Paired demos per domain used by the specialist-size sweep (the generalist's size stays fixed).
    size_sweep_demos: int = 10

    def __post_init__(self) -> None:
        if not self.paired_demos or not self.seeds:
            raise ValueError("sweep: expected non-empty paired_demos and seeds")
        for n in self.paired_demos:
            check_range("sweep.paired_demos[]", n, 1)
        for s in self.seeds:
            check_range("sweep.seeds[]", s, 0, 99)
        check_range("sweep.size_sweep_demos", self.size_sweep_demos, 1)


@dataclass(frozen=True)
class MolConfig:
    """One MOL run: paired demos -> specialists -> unlabeled conditions -> pseudo-labels -> generalist."""

    name: str = "mol"
    seed: int = 0  # training seed (weights, batches); replicate index in sweeps
    note: str = ""  # free text printed at the top of the report (e.g. "quick settings, fewer episodes")
    env: EnvSpec = field(default_factory=EnvSpec)
    demos: DemosSpec = field(default_factory=DemosSpec)
    specialist: PolicySpec = field(default_factory=PolicySpec)
    generalist: PolicySpec = field(default_factory=lambda: PolicySpec(size="base", steps=4000))
    conditions: ConditionsSpec = field(default_factory=ConditionsSpec)
    dagger: DaggerSpec = field(default_factory=DaggerSpec)
    pseudo: PseudoSpec = field(default_factory=PseudoSpec)
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    sweep: SweepSpec = field(default_factory=SweepSpec)

    def __post_init__(self) -> None:
        check_range("seed", self.seed, 0, 99)
        _check_disjoint_seeds(self)
        if self.dagger.domains is not None and not set(self.dagger.domains) <= set(self.env.domains):
            raise ValueError(f"dagger.domains: expected a subset of env.domains {list(self.env.domains)}, received "
                             f"{list(self.dagger.domains)}")
        pw = self.pseudo.paired_domain_weights
        if pw is not None and len(pw) != len(self.env.domains):
            raise ValueError(f"pseudo.paired_domain_weights: expected one weight per env.domains entry "
                             f"({len(self.env.domains)}), received {len(pw)}: {list(pw)}")
        for key, k in (("conditions.search_k", self.conditions.search_k), ("dagger.search_k", self.dagger.search_k)):
            if k > 1 and self.env.id not in SEARCHABLE_ENVS:
                raise ValueError(f"{key} > 1 replays chunks from simulator snapshots, which "
                                 f"{', '.join(SEARCHABLE_ENVS)} support; received env.id {self.env.id!r} (set "
                                 f"{key}: 1)")

    # -- derived quantities ---------------------------------------------------------------------------------
    def demo_seed(self, domain: int) -> int:
        return self.demos.seed + self.seed * REPLICATE_SEED_STRIDE + domain * DOMAIN_SEED_STRIDE

    def condition_seed(self, domain: int, round_: int) -> int:
        # Each round gets its own quarter-stride block: resets, then rollouts.
        base = self.conditions.seed + self.seed * REPLICATE_SEED_STRIDE + domain * DOMAIN_SEED_STRIDE
        return base + round_ * ROUND_SEED_BLOCK

    def round_domains(self, round_: int) -> list[int]:
        """The domains that collect conditions and pseudo-labels in ``round_`` (DAgger rounds: ``dagger.domains``)."""
        if round_ == 0 or self.dagger.domains is None:
            return list(self.env.domains)
        return [d for d in self.env.domains if d in self.dagger.domains]

    def eval_seed(self) -> int:
        return self.evaluation.seed

    def fingerprint(self) -> str:
        """What the run computes (executor options excluded but ``threads_per_job``): a resume must match it."""
        return config_fingerprint(self)


def config_fingerprint(cfg: MolConfig) -> str:
    from simdiff.config import to_dict

    d = to_dict(cfg)
    threads = d.pop("executor", {}).get("threads_per_job", 1)
    if threads != 1:  # at its default it stays out, so runs fingerprinted before it counted still resume
        d["executor"] = {"threads_per_job": threads}
    d.pop("sweep", None)  # sweep settings do not change a single run
    d.pop("note", None)
    d.pop("name", None)  # cosmetic
    if d.get("conditions", {}).get("attempts") == 1:
        d["conditions"].pop("attempts")  # added later: at its default, runs made before it still resume
    if d.get("conditions", {}).get("search_k") == 1:  # likewise (the lookahead only matters with a search)
        d["conditions"].pop("search_k")
        d["conditions"].pop("search_lookahead", None)
        d["conditions"].pop("search_eta", None)
    if d.get("conditions", {}).get("search_eta") == 1.0:  # likewise
        d["conditions"].pop("search_eta")
    if d.get("pseudo", {}).get("finetune_fraction") == 0.0:  # likewise
        d["pseudo"].pop("finetune_fraction")
    if "paired_domain_weights" in d.get("pseudo", {}) and d["pseudo"]["paired_domain_weights"] is None:  # likewise
        d["pseudo"].pop("paired_domain_weights")
    if d.get("pseudo", {}).get("source_token") is False:  # likewise
        d["pseudo"].pop("source_token")
    if "final_paired_fraction" in d.get("pseudo", {}) and d["pseudo"]["final_paired_fraction"] is None:  # likewise
        d["pseudo"].pop("final_paired_fraction")
    dag = d.get("dagger", {})
    if dag.get("search_k") == 1:  # likewise
        dag.pop("search_k")
        dag.pop("search_lookahead", None)
        dag.pop("search_eta", None)
    if dag.get("search_eta") == 1.0:  # likewise
        dag.pop("search_eta")
    if "min_label_utility" in dag and dag["min_label_utility"] is None:  # likewise
        dag.pop("min_label_utility")
    if dag.get("teacher") == "specialist":  # likewise
        dag.pop("teacher")
    if dag.get("pseudo_rounds") == "all":  # likewise
        dag.pop("pseudo_rounds")
    for key in ("search_proposers", "search_rollout"):
        if dag.get(key) == "specialist":  # likewise
            dag.pop(key)
    if dag.get("search_shaping") == 0.0:  # likewise
        dag.pop("search_shaping")
    if "domains" in dag and dag["domains"] is None:  # likewise
        dag.pop("domains")
    if dag.get("intermediate_overrides") == {}:  # likewise
        dag.pop("intermediate_overrides")
    for role in ("specialist", "generalist"):
        if d.get(role, {}).get("mirror") is False:  # likewise
            d[role].pop("mirror")
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _check_disjoint_seeds(cfg: MolConfig) -> None:
    """Demo, condition and evaluation seeds must not overlap for any domain (evaluation is held out)."""
    spans: list[tuple[str, int, int]] = []
    max_rounds = cfg.dagger.rounds + 1
    for d in cfg.env.domains:
        s = cfg.demo_seed(d)
        spans.append((f"demos (domain {d})", s, s + 3 * cfg.demos.per_domain))
        s0 = cfg.condition_seed(d, 0)
        s1 = cfg.condition_seed(d, max_rounds)
        spans.append((f"conditions (domain {d})", s0, s1))
    if max_rounds > 15:
        raise ValueError(f"dagger.rounds: expected at most 14, received {cfg.dagger.rounds}")
    ev = cfg.eval_seed()
    spans.append(("evaluation", ev, ev + cfg.evaluation.episodes))
    spans.sort(key=lambda t: t[1])
    for (na, a0, a1), (nb, b0, b1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ValueError(
                f"seed ranges overlap: {na} uses [{a0}, {a1}) and {nb} uses [{b0}, {b1}); "
                "expected disjoint ranges (evaluation seeds must be held out) - change demos.seed, "
                "conditions.seed or evaluation.seed"
            )


def with_overrides(cfg: MolConfig, **changes: Any) -> MolConfig:
    """``with_overrides(cfg, demos={"per_domain": 5}, seed=1)``: a new validated config."""
    from simdiff.config import load_config, to_dict

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    return load_config(MolConfig, merge(to_dict(cfg), changes))


__all__ = [
    "MolConfig", "EnvSpec", "DemosSpec", "PolicySpec", "ConditionsSpec", "DaggerSpec", "PseudoSpec", "EvalSpec",
    "ExecutorSpec", "SweepSpec", "METHODS", "level_key", "config_fingerprint", "with_overrides",
]
