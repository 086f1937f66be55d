"""Stage 4: pseudo-labels. Each unlabeled condition gets an action chunk from its own domain's specialist.

The optional success filter keeps only conditions whose rollout succeeded (the public MOL code keeps only
successful specialist rollouts as pseudo-demos). It applies to the specialists' rollouts; reset conditions
have no rollout and are kept; DAgger states (visited by the generalist) are kept unless ``filter_dagger``,
because dropping the generalist's failures would drop exactly the states DAgger is meant to label.

A pseudo-label file is an ``.npz`` (no pickle) with the condition arrays plus ``actions (K, Tp, Da)``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simdiff.errors import DatasetError
from simdiff.pipelines.mol.conditions import _FIELDS as COND_FIELDS
from simdiff.pipelines.mol.conditions import SOURCES, ConditionSet, subsample
from simdiff.utils.io import atomic_write_bytes, read_npz

# label_fn(obs_windows (B, To, Do), seed) -> action chunks (B, Tp, Da); deterministic for a seed.
LabelFn = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class PseudoLabels:
    conditions: ConditionSet
    actions: np.ndarray  # (K, Tp, Da) float32

    def __post_init__(self) -> None:
        if self.actions.ndim != 3 or self.actions.shape[0] != len(self.conditions):
            raise ValueError(f"PseudoLabels.actions: expected ({len(self.conditions)}, Tp, Da), "
                             f"received {self.actions.shape}")

    def __len__(self) -> int:
        return self.actions.shape[0]

    def save(self, path: str | Path) -> Path:
        buf = io.BytesIO()
        c = self.conditions
        np.savez(buf, actions=self.actions, **{f: getattr(c, f) for f in _COND_FIELDS})
        return atomic_write_bytes(path, buf.getvalue())

    @staticmethod
    def load(path: str | Path) -> PseudoLabels:
        z = read_npz(path, ("actions", *_COND_FIELDS), "a pseudo-label file")
        for name in ("actions", "obs"):
            if np.issubdtype(z[name].dtype, np.floating) and not np.isfinite(z[name]).all():
                raise DatasetError(f"{path}: expected finite {name}, received NaN or inf")
        try:
            return PseudoLabels(ConditionSet(**{f: z[f] for f in _COND_FIELDS}), z["actions"])
        except ValueError as exc:
            raise DatasetError(f"{path}: {exc}") from exc

    @staticmethod
    def concat(items: list[PseudoLabels]) -> PseudoLabels:
        return PseudoLabels(ConditionSet.concat([p.conditions for p in items]),
                            np.concatenate([p.actions for p in items]))


_COND_FIELDS = COND_FIELDS


def success_mask(cs: ConditionSet, filter_success: bool, filter_dagger: bool) -> np.ndarray:
    """Which conditions survive the filter (see module docstring)."""
    keep = np.ones(len(cs), bool)
    if filter_success:
        spec = cs.source == SOURCES["specialist"]
        keep &= ~spec | cs.episode_success
    if filter_dagger:
        dag = cs.source == SOURCES["dagger"]
        keep &= ~dag | cs.episode_success
    return keep


def label(cs: ConditionSet, label_fn: LabelFn, batch_size: int, seed: int) -> np.ndarray:
    """Action chunks for every condition, in batches; batch ``b`` samples with seed ``seed + b``."""
    if len(cs) == 0:
        raise ValueError("label: expected at least one condition, received none (did the filter drop all?)")
    out = []
    for b, start in enumerate(range(0, len(cs), batch_size)):
        obs = cs.obs[start:start + batch_size]
        a = np.asarray(label_fn(obs, seed + b), dtype=np.float32)
        if a.ndim != 3 or a.shape[0] != obs.shape[0]:
            raise ValueError(f"label_fn: expected ({obs.shape[0]}, Tp, Da) action chunks, received {a.shape}")
        out.append(a)
    return np.concatenate(out)


def make_pseudo_labels(cs: ConditionSet, label_fn: LabelFn, m: int, filter_success: bool,
                       filter_dagger: bool, batch_size: int, seed: int, mode: str = "resample",
                       ) -> tuple[PseudoLabels, dict]:
    """Filter, subsample to at most ``m``, label. Returns the labels and counts for the report.

    ``mode="resample"``: every condition gets a fresh chunk sampled from the specialist. ``mode="executed"``:
    conditions from the specialist's own rollouts keep the chunk it executed there (so a kept successful
    rollout is a pseudo-demo, as in the public MOL code); the others (resets, plain DAgger states) are sampled.
    Searched-DAgger states keep their simulator-verified chunk in both modes.
    """
    if mode not in ("resample", "executed"):
        raise ValueError(f"pseudo label mode: expected 'resample' or 'executed', received {mode!r}")
    keep = success_mask(cs, filter_success, filter_dagger)
    kept = cs.subset(np.flatnonzero(keep))
    chosen = subsample(kept, m, np.random.default_rng(seed))
    if len(chosen) == 0:
        raise ValueError("pseudo-labels: every condition was filtered out (no successful specialist rollout); "
                         "set pseudo.filter_success: false or train better specialists")
    # A DAgger state carries a chunk only when searched DAgger chose it: that label is kept in either mode.
    searched = chosen.has_executed() & (chosen.source == SOURCES["dagger"])
    use_exec = chosen.has_executed() if mode == "executed" else searched
    actions = np.empty(chosen.executed.shape, np.float32)
    actions[use_exec] = chosen.executed[use_exec]
    sampled = np.flatnonzero(~use_exec)
    if sampled.size:
        actions[sampled] = label(chosen.subset(sampled), label_fn, batch_size, seed)
    stats = {"pool": int(len(cs)), "after_filter": int(keep.sum()), "labeled": int(len(chosen)),
             "executed_labels": int(use_exec.sum()), "sampled_labels": int(sampled.size),
             "by_source": {s: int((chosen.source == v).sum()) for s, v in SOURCES.items()}}
    return PseudoLabels(chosen, actions), stats
