"""How well searched-DAgger labels from the specialists agree with the scripted expert's, by verified utility.

Two MOL runs that share their round-0 generalist roll it out on the same seeds, so their round-1 DAgger
conditions are the same states: one labeled by the specialists' simulator-verified search, the other by the
privileged expert (``--set dagger.teacher=expert``, a diagnostic). For each level and each bin of the searched
label's verified utility, this prints how many labels fall in it and the mean cosine between the two labels'
executed actions (the ``Ta`` steps from the current one).

    python bench/mol_label_agreement.py --searched RUN_S --expert RUN_E

``--relabel K L`` instead relabels the first ``--episodes`` DAgger rollouts of ``--domains`` (one level) with a
search of K candidates and lookahead L (deterministic DDIM, one thread), using RUN_S's round-0 generalist and
specialist, and prints the agreement with RUN_E's expert labels on those states: does a stronger search fix the
labels? ``--proposers`` and ``--rollout`` let the round-0 generalist help that search (``DaggerSpec``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

BINS = (-1.0, 0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0)


def executed_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over steps of the cosine between two ``(K, T, Da)`` action sequences -> ``(K,)``."""
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-9
    return (num / den).mean(-1)


def agreement(searched: Path, expert: Path, domain: int, n_obs: int, n_act: int) -> tuple[np.ndarray, np.ndarray]:
    from simdiff.pipelines.mol.conditions import ConditionSet
    from simdiff.pipelines.mol.dagger import load_utility

    f_s = searched / "conditions" / "round_1" / f"domain_{domain}.npz"
    s, e = ConditionSet.load(f_s), ConditionSet.load(expert / "conditions" / "round_1" / f"domain_{domain}.npz")
    if len(s) != len(e) or not (np.array_equal(s.seed, e.seed) and np.array_equal(s.t, e.t)
                                and np.allclose(s.obs, e.obs)):
        raise ValueError(f"domain {domain}: the two runs' DAgger states differ; expected runs that share their "
                         "round-0 generalist and DAgger seeds")
    u = load_utility(f_s, len(s))
    if u is None:
        raise ValueError(f"{f_s}: no verified utilities (run with dagger.search_k >= 2)")
    sl = slice(n_obs - 1, n_obs - 1 + n_act)
    return u, executed_cosine(s.executed[:, sl], e.executed[:, sl])


def relabel(searched: Path, expert: Path, domain: int, k: int, lookahead: int, episodes: int, out: Path,
            n_obs: int, n_act: int, proposers: str = "specialist", rollout: str = "specialist",
            shaping: float = 0.0) -> dict:
    """Search-label the first ``episodes`` DAgger rollouts again with ``k`` / ``lookahead``; agreement stats."""
    import time

    import torch

    from simdiff.pipelines.mol import adapters
    from simdiff.pipelines.mol.conditions import ConditionSet
    from simdiff.pipelines.mol.dagger import load_utility

    torch.set_num_threads(1)  # two busy threads per process on a 2-core machine run several times slower
    e = ConditionSet.load(expert / "conditions" / "round_1" / f"domain_{domain}.npz")
    seeds = sorted(set(e.seed.tolist()))[:episodes]
    t0 = time.perf_counter()
    adapters.conditions_job("simdiff/Push-v0", domain, {}, str(searched / "generalists" / "distilled_r0"), [], seeds,
                            "dagger", 1, domain, 1, 100, str(out), search_k=k, search_lookahead=lookahead,
                            teacher_dir=str(searched / "specialists" / f"domain_{domain}"), search_eta=0.0,
                            search_proposers=proposers, search_rollout=rollout, search_shaping=shaping)
    s = ConditionSet.load(out)
    u = load_utility(out, len(s))
    row = {(a, b): i for i, (a, b) in enumerate(zip(e.seed.tolist(), e.t.tolist()))}
    idx = np.array([row[(a, b)] for a, b in zip(s.seed.tolist(), s.t.tolist())])
    sl = slice(n_obs - 1, n_obs - 1 + n_act)
    cos = executed_cosine(s.executed[:, sl], e.executed[idx, sl])
    fail = ~s.episode_success
    return {"k": k, "lookahead": lookahead, "proposers": proposers, "rollout": rollout, "shaping": shaping,
            "level": domain, "episodes": len(seeds), "labels": len(s),
            "seconds": round(time.perf_counter() - t0), "cos_all": round(float(cos.mean()), 3),
            "cos_failed_episodes": round(float(cos[fail].mean()), 3),
            "share_utility_ge_0.6_failed_episodes": round(float((u[fail] >= 0.6).mean()), 3)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--searched", type=Path, required=True, help="MOL run with specialist-searched DAgger labels")
    ap.add_argument("--expert", type=Path, required=True, help="the same run with dagger.teacher=expert")
    ap.add_argument("--domains", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--obs-horizon", type=int, default=2)
    ap.add_argument("--action-horizon", type=int, default=4)
    ap.add_argument("--relabel", type=int, nargs=2, metavar=("K", "L"), help="search again with K candidates, "
                    "lookahead L, on the first --episodes rollouts of one level")
    ap.add_argument("--proposers", choices=["specialist", "specialist+generalist"], default="specialist",
                    help="--relabel: who samples the candidates (dagger.search_proposers)")
    ap.add_argument("--rollout", choices=["specialist", "generalist"], default="specialist",
                    help="--relabel: who continues them for the lookahead (dagger.search_rollout)")
    ap.add_argument("--shaping", type=float, default=0.0, help="--relabel: dagger.search_shaping")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("relabel.npz"), help="where --relabel writes its conditions")
    a = ap.parse_args(argv)
    if a.relabel:
        if len(a.domains) != 1:
            raise SystemExit(f"--relabel: expected one level in --domains, received {a.domains}")
        print(relabel(a.searched, a.expert, a.domains[0], *a.relabel, a.episodes, a.out, a.obs_horizon,
                      a.action_horizon, a.proposers, a.rollout, a.shaping))
        return
    res = {d: agreement(a.searched, a.expert, d, a.obs_horizon, a.action_horizon) for d in a.domains}
    print("| verified utility of the label | " + " | ".join(f"level {d}: n, cos" for d in a.domains) + " |")
    print("|---|" + ":-:|" * len(a.domains))
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        cells = []
        for u, cos in res.values():
            m = (u >= lo) & (u < hi) if hi < BINS[-1] else (u >= lo)
            cells.append(f"{int(m.sum())}, {cos[m].mean():.2f}" if m.any() else "0, -")
        print(f"| [{lo:.1f}, {hi:.1f}) | " + " | ".join(cells) + " |")
    print("| all | " + " | ".join(f"{len(u)}, {cos.mean():.2f}" for u, cos in res.values()) + " |")


if __name__ == "__main__":
    main()
