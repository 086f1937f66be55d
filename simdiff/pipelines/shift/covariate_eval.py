"""``simdiff shift covariate``: how far the states a policy visits are from its training states.

For each policy: roll it out at ``level`` on seeds ``seed ..`` through the batched runner, recording the
observations; take their world-state part (the domain context is left out: it is the same for a seed
whatever the policy does). Against the training states (``--data`` demos, or for a MOL run each model's own
data: paired demos, plus the pseudo-labelled conditions of rounds 0..R for the round-R generalist) measure

* the normalized k-NN distance ratio (:func:`~simdiff.pipelines.shift.covariate.knn_distance_ratio`),
* the RBF MMD^2 and its permutation p-value (:func:`~simdiff.pipelines.shift.covariate.mmd_permutation_test`;
  whole episodes are permuted, since the states of one episode are not independent draws),
* the compounding error: the gap between the policy's and the scripted expert's trajectory on the same seed,
  per time step (the box position in meters for Push-v0, else the standardized state).

The scripted expert is rolled out on the same seeds (the reference trajectories) and reported as a reference
row against the same data, so the shift a perfect controller would already show is visible too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simdiff.pipelines.shift import covariate as cov
from simdiff.pipelines.shift import plots, runner
from simdiff.pipelines.shift import report as rep
from simdiff.pipelines.shift.policies import EXPERT, PolicySpec
from simdiff.pipelines.shift.sweep import check_common


@dataclass(frozen=True)
class CovariateSetup:
    env_id: str
    level: int | str
    policies: tuple[PolicySpec, ...]
    data: dict[str, tuple[Path, ...]]  # policy name -> training data files (.hdf5 demos, .npz pseudo-labels)
    reference_data: tuple[Path, ...]  # the expert row's data
    episodes: int
    seed: int
    workers: int
    batch_size: int
    k: int
    permutations: int
    max_samples: int


def plan_covariate(policies: Sequence[PolicySpec], env_id: str, *, data: Sequence[str | Path] | None, level: Any,
                   episodes: int, seed: int, workers: int = 1, batch_size: int = 64, k: int = 5,
                   permutations: int = 200, max_samples: int = 500) -> CovariateSetup:
    """Validate before running: env, level, data files exist, every policy has training data."""
    _, lv = check_common(env_id, episodes, seed, workers, level, batch_size)
    for name, v, lo in (("--k", k, 1), ("--permutations", permutations, 1), ("--max-samples", max_samples, 10)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: expected an integer >= {lo}, received {v!r}")
    given = tuple(Path(p) for p in (data or ()))
    for p in given:
        if not p.is_file():
            raise FileNotFoundError(f"--data {p}: no such file")
        if p.suffix not in (".hdf5", ".h5", ".npz"):
            raise ValueError(f"--data {p}: expected a demo file (.hdf5) or pseudo-label file (.npz)")
    per: dict[str, tuple[Path, ...]] = {}
    learned = [p for p in policies if p.kind != "expert"]
    if not learned and not given:
        raise ValueError("covariate needs --data (the training demos) when POLICY is only 'expert'")
    for p in learned:
        files = given or tuple(p.train_demos) + tuple(p.train_pseudo)
        if not files:
            raise ValueError(f"POLICY {p.name}: its training data is unknown; pass --data demos.hdf5 (the demos it "
                             "was trained on)")
        per[p.name] = files
    reference = given or tuple(sorted({f for p in learned for f in p.train_demos}))
    return CovariateSetup(env_id=env_id, level=lv, policies=tuple(p for p in policies if p.kind != "expert"),
                          data=per, reference_data=reference, episodes=episodes, seed=seed, workers=workers,
                          batch_size=batch_size, k=k, permutations=permutations, max_samples=max_samples)


# -- training states -----------------------------------------------------------------------------------------------
def load_states(files: Sequence[Path], state: slice, state_dim: int, env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """World-state rows ``(N, state_dim)`` of demo files (every step) and pseudo-label files (every condition's
    newest observation), and a group id ``(N,)`` per row: the episode it comes from (for the block
    permutation test)."""
    parts, groups, next_group = [], [], 0
    for f in files:
        if f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as z:
                if "obs" not in z.files:
                    raise ValueError(f"{f}: expected an 'obs' array (K, To, Do) of conditions, found {z.files}")
                obs = z["obs"]
                # Conditions of one rollout share (seed, source); without them each condition is its own group.
                key = (np.stack([z["seed"].astype(np.int64), z["source"].astype(np.int64)], axis=1)
                       if "seed" in z.files and "source" in z.files else np.arange(len(obs))[:, None])
            if obs.ndim != 3:
                raise ValueError(f"{f}: expected obs of shape (K, To, Do), received {obs.shape}")
            rows = obs[:, -1, state]
            g = np.unique(key, axis=0, return_inverse=True)[1].reshape(-1)
        else:
            from envs.datasets import load_demos

            ds = load_demos(f)
            name = ds.env_name
            if name and str(name).startswith("simdiff/") and name != env_id:
                raise ValueError(f"--data {f}: demos of {name}, but --env is {env_id}")
            eps = [ep.obs["state"] if "state" in ep.obs else ep.flat_obs()[:, state] for ep in ds.episodes]
            rows = np.concatenate(eps)
            g = np.repeat(np.arange(len(eps)), [len(e) for e in eps])
        if rows.ndim != 2 or rows.shape[1] != state_dim:
            raise ValueError(f"{f}: expected states with {state_dim} entries (as {env_id}'s observation), received "
                             f"shape {rows.shape}")
        parts.append(rows.astype(np.float64))
        groups.append(g + next_group)
        next_group += int(g.max()) + 1 if g.size else 0
    return np.concatenate(parts), np.concatenate(groups)


def _gap_features(names: Sequence[str]) -> tuple[list[int] | None, str]:
    if "box_x" in names and "box_y" in names:
        return [list(names).index("box_x"), list(names).index("box_y")], "m, box position"
    return None, "standardized state"


# -- the command ---------------------------------------------------------------------------------------------------
def run_covariate(setup: CovariateSetup, out: str | Path | None = None, *, overwrite: bool = False,
                  command: Sequence[str] | None = None, log=None) -> dict:
    if out is not None:
        rep.check_out(out, overwrite)
    t0 = time.perf_counter()
    sl, names = runner.state_slice(setup.env_id)
    dim = len(range(*sl.indices(10_000)))
    expert_spec = PolicySpec(name=EXPERT, kind="expert")
    pols = [expert_spec, *setup.policies]
    cells = [runner.cell_for(p, setup.env_id, level=setup.level, episodes=setup.episodes, seed=setup.seed,
                             record_obs=True) for p in pols]
    results = runner.evaluate_cells(cells, workers=setup.workers, batch_size=setup.batch_size,
                                    desc="covariate rollouts")
    trajs = {p.name: [o[:, sl].astype(np.float64) for o in r.observations()] for p, r in zip(pols, results)}
    gap_idx, gap_units = _gap_features(names)
    cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def train_states(files: tuple[Path, ...]) -> tuple[np.ndarray, np.ndarray]:
        if files not in cache:
            cache[files] = load_states(files, sl, dim, setup.env_id)
        return cache[files]

    rows: dict[str, dict] = {}
    for i, (p, res) in enumerate(zip(pols, results)):
        files = setup.reference_data if p.kind == "expert" else setup.data[p.name]
        if not files:
            continue
        ref, ref_groups = train_states(files)
        # The states actions were taken in (as in the demos): every observation but each episode's last.
        steps = [t[:-1] if len(t) > 1 else t for t in trajs[p.name]]
        visited = np.concatenate(steps)
        episode = np.repeat(np.arange(len(steps)), [len(t) for t in steps])
        knn = cov.knn_distance_ratio(visited, ref, k=setup.k, seed=setup.seed)
        mmd = cov.mmd_permutation_test(visited, ref, permutations=setup.permutations, seed=setup.seed + i,
                                       max_samples=setup.max_samples, x_groups=episode, y_groups=ref_groups)
        row = {"source": p.to_dict(), "round": p.round, "role": p.role or p.kind,
               "data": [str(f) for f in files], "train_states": int(ref.shape[0]),
               "visited_states": int(visited.shape[0]), "success": res.summary()["success"],
               "ci95": res.summary()["ci95"], "knn": knn.to_dict(), "mmd": mmd.to_dict()}
        if p.kind != "expert":
            row["compounding"] = _compounding(trajs[p.name], trajs[EXPERT], gap_idx, ref)
        rows[p.name if p.kind != "expert" else "expert (reference)"] = row
        if log:
            log(f"{p.name:<28} kNN ratio {knn.ratio_median:.2f}  MMD^2 {mmd.mmd2:.4f} (p={mmd.p_value:.3f})")
    metrics = {"command": "covariate", "env": setup.env_id, "level": setup.level, "episodes": setup.episodes,
               "seeds": [setup.seed, setup.seed + setup.episodes - 1], "k": setup.k,
               "permutations": setup.permutations, "max_samples": setup.max_samples, "gap_units": gap_units,
               "state_names": list(names), "policies": rows, "seconds": round(time.perf_counter() - t0, 2)}
    if out is not None:
        write_outputs(metrics, out, overwrite=overwrite, command=command)
    return metrics


def _compounding(policy: list[np.ndarray], expert: list[np.ndarray], idx: list[int] | None,
                 ref: np.ndarray) -> dict[str, list[float]]:
    if idx is not None:
        p, e = [t[:, idx] for t in policy], [t[:, idx] for t in expert]
    else:
        mean, std = cov.standardizer(ref)
        p, e = [(t - mean) / std for t in policy], [(t - mean) / std for t in expert]
    horizon = max(max(len(t) for t in p), max(len(t) for t in e))
    ce = cov.compounding_error(p, e, horizon=horizon)
    return {k: [float(x) for x in v] for k, v in ce.items()}


def write_outputs(metrics: dict, out: str | Path, *, overwrite: bool, command: Sequence[str] | None) -> Path:
    out = rep.prepare_out(out, overwrite)
    plot = "covariate.png"
    metrics["files"] = [plot]
    plots.plot_covariate(metrics, out / plot)
    rep.write_metrics(out, metrics)
    intro = [
        f"Env `{metrics['env']}` level {metrics['level']}; {metrics['episodes']} rollouts per policy, seeds "
        f"{metrics['seeds'][0]}..{metrics['seeds'][1]}; the scripted expert on the same seeds gives the reference "
        "trajectories.",
        f"kNN ratio: distance of each visited state to its k={metrics['k']}-th nearest training state, divided by "
        "the median leave-one-out k-NN distance among training states (1 = in distribution). MMD^2: RBF kernel, "
        f"median-heuristic bandwidth, at most {metrics['max_samples']} states per side, p-value from "
        f"{metrics['permutations']} permutations. Gap: distance to the expert's trajectory "
        f"({metrics['gap_units']}) at step 10 and at the end of the horizon.",
    ]
    rep.write_report(out, "Covariate shift: visited vs. training states", intro,
                     [("Measures", rep.covariate_table(metrics, markdown=True))], [plot], command)
    return out
