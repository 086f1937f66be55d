"""Resolving POLICY arguments: expert, policy directories, MOL run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simdiff.pipelines.shift.policies import resolve_policies


def _fake_checkpoint(d: Path, dataset: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "meta.json").write_text(json.dumps({"kind": "simdiff.diffusion_policy", "dataset": dataset or {}}))
    return d


def _fake_mol_run(root: Path, rounds: int = 2) -> Path:
    (root / "demos").mkdir(parents=True)
    for d in (0, 1):
        (root / "demos" / f"domain_{d}.hdf5").write_bytes(b"")
        _fake_checkpoint(root / "specialists" / f"domain_{d}" / "policy")
    _fake_checkpoint(root / "generalists" / "labeled_only" / "policy")
    for r in range(rounds):
        _fake_checkpoint(root / "generalists" / f"distilled_r{r}" / "policy")
        (root / "pseudo" / f"round_{r}").mkdir(parents=True)
        for d in (0, 1):
            (root / "pseudo" / f"round_{r}" / f"domain_{d}.npz").write_bytes(b"")
    (root / "generalists" / f"distilled_r{rounds}").mkdir()  # not trained yet: skipped
    (root / "mol_run.json").write_text(json.dumps({"config": {"env": {"id": "simdiff/Push-v0", "domains": [0, 1]}}}))
    return root


def test_expert_and_checkpoint(tmp_path):
    ck = _fake_checkpoint(tmp_path / "run" / "policy", {"env_id": "simdiff/Push-v0", "levels": ["2"],
                                                         "path": str(tmp_path / "missing.hdf5")}).parent
    specs = resolve_policies(["expert", str(ck), "expert"])
    assert [(s.name, s.kind) for s in specs] == [("expert", "expert"), ("run", "diffusion")]
    assert specs[1].trained_levels == (2,) and specs[1].env_id == "simdiff/Push-v0"
    assert specs[1].train_demos == ()  # the recorded demo file no longer exists


def test_mol_run_expands_per_round(tmp_path):
    run = _fake_mol_run(tmp_path / "mol")
    specs = resolve_policies([str(run)])
    assert [s.name for s in specs] == ["mol/specialist_domain_0", "mol/specialist_domain_1", "mol/labeled_only",
                                       "mol/distilled_r0", "mol/distilled_r1"]
    r1 = specs[-1]
    assert r1.round == 1 and r1.role == "generalist_distilled" and r1.trained_levels == (0, 1)
    assert len(r1.train_demos) == 2 and len(r1.train_pseudo) == 4  # pseudo-labels of rounds 0 and 1
    assert len(specs[-2].train_pseudo) == 2
    assert specs[0].train_demos == (run / "demos" / "domain_0.hdf5",) and specs[0].trained_levels == (0,)
    only = resolve_policies([str(run)], roles=("generalist_distilled",))
    assert [s.round for s in only] == [0, 1]


def test_same_directory_name_is_disambiguated(tmp_path):
    a = _fake_checkpoint(tmp_path / "a" / "pol" / "policy").parent
    b = _fake_checkpoint(tmp_path / "b" / "pol" / "policy").parent
    names = [s.name for s in resolve_policies([str(a), str(b)])]
    assert len(set(names)) == 2


def test_bad_policy_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_policies([str(tmp_path / "nope")])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="received a file"):
        resolve_policies([str(tmp_path / "file.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a policy directory"):
        resolve_policies([str(tmp_path / "empty")])
    (tmp_path / "mol").mkdir()
    (tmp_path / "mol" / "mol_run.json").write_text("{}")
    with pytest.raises(ValueError, match="no trained model"):
        resolve_policies([str(tmp_path / "mol")])
    with pytest.raises(ValueError, match="at least one POLICY"):
        resolve_policies([])
