"""The run's own data files: damaged condition and pseudo-label files are errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest

from simdiff.errors import DatasetError
from simdiff.pipelines.mol.conditions import ConditionSet
from simdiff.pipelines.mol.pseudo import PseudoLabels


def _conditions(k: int = 6) -> ConditionSet:
    rng = np.random.default_rng(0)
    return ConditionSet(obs=rng.normal(size=(k, 2, 20)).astype(np.float32), domain=np.zeros(k, np.int16),
                        source=np.ones(k, np.int8), round=np.zeros(k, np.int16),
                        episode_success=np.ones(k, bool), seed=np.arange(k, dtype=np.int64),
                        t=np.arange(k, dtype=np.int32), executed=np.full((k, 8, 2), np.nan, np.float32))


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"garbage\n")
    else:  # flipped bytes inside the first array: the archive's CRC no longer matches
        mid = bytearray(data)
        for i in range(200, 264):
            mid[i] ^= 0xFF
        path.write_bytes(bytes(mid))


@pytest.mark.parametrize("how", ["truncated", "garbage", "flipped"])
def test_damaged_condition_and_pseudo_files_name_the_file(tmp_path, how):
    cs = _conditions()
    for kind, obj, load in (("condition", cs, ConditionSet.load),
                            ("pseudo-label", PseudoLabels(cs, np.zeros((6, 8, 2), np.float32)), PseudoLabels.load)):
        path = obj.save(tmp_path / f"{kind}.npz")
        assert len(load(path)) == 6
        _damage(path, how)
        with pytest.raises(DatasetError, match=rf"{kind}.npz: not a readable .npz file.*expected a {kind} file"):
            load(path)


def test_condition_and_pseudo_files_with_bad_content_name_the_file(tmp_path):
    cs = _conditions()
    bad = PseudoLabels(cs, np.zeros((6, 8, 2), np.float32))
    bad.actions[2, 3, 1] = np.nan
    with pytest.raises(DatasetError, match=r"p.npz: expected finite actions"):
        PseudoLabels.load(bad.save(tmp_path / "p.npz"))
    cs.obs[0, 0, 0] = np.inf
    with pytest.raises(DatasetError, match=r"c.npz: expected finite observations"):
        ConditionSet.load(cs.save(tmp_path / "c.npz"))
    short = {f: getattr(_conditions(), f) for f in ("obs", "domain", "source", "round", "episode_success", "seed",
                                                    "t", "executed")}
    short["t"] = short["t"][:3]
    np.savez(tmp_path / "s.npz", **short)
    with pytest.raises(DatasetError, match=r"s.npz: ConditionSet.t: expected shape \(6,\)"):
        ConditionSet.load(tmp_path / "s.npz")
    np.savez(tmp_path / "m.npz", obs=short["obs"])
    with pytest.raises(DatasetError, match=r"m.npz: expected a condition file with arrays .* missing \['domain'"):
        ConditionSet.load(tmp_path / "m.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz: no such file"):
        ConditionSet.load(tmp_path / "nope.npz")


def test_paired_demos_with_actions_outside_the_action_space_are_refused(tmp_path):
    import h5py

    from simdiff.pipelines.mol.adapters import collect_demos, load_paired

    path = tmp_path / "d.hdf5"
    collect_demos("simdiff/Push-v0", 0, 2, 0, path, True, workers=1)
    assert load_paired([str(path)], "simdiff/Push-v0").num_episodes == 2
    with h5py.File(path, "r+") as f:
        f["data/demo_1/actions"][3, 0] = 1e30            # a damaged float: finite, but no action the world takes
        del f["data/demo_1"].attrs["sha256"]             # as in a file of another tool: no checksum catches it
    assert load_paired([str(path)]).num_episodes == 2    # without a world to check against, it loads
    with pytest.raises(DatasetError, match=r"d.hdf5: demo_1: expected actions in simdiff/Push-v0's action space"):
        load_paired([str(path)], "simdiff/Push-v0")


def test_bad_env_make_kwargs_fail_before_anything_runs():
    from simdiff.pipelines.mol import adapters
    from simdiff.pipelines.mol.config import MolConfig, with_overrides

    with pytest.raises(ValueError, match=r"env.make_kwargs: simdiff/Push-v0 refused \{'max_episode_steps': -3\}"):
        adapters.preflight(with_overrides(MolConfig(), env={"make_kwargs": {"max_episode_steps": -3}}))
    adapters.preflight(with_overrides(MolConfig(), env={"make_kwargs": {"max_episode_steps": 30}}))


def test_a_damaged_evaluation_cell_names_its_file(tmp_path):
    from simdiff.errors import UserError
    from simdiff.pipelines.mol.stages import _read_cell
    from simdiff.utils.io import write_json

    p = tmp_path / "level_2.json"
    write_json(p, {"successes": 3, "episodes": 4})
    assert _read_cell(p)["success"] == 0.75
    for bad in ({"succ": 1}, {"successes": "x", "episodes": 4}, {"successes": 5, "episodes": 4},
                {"successes": 0, "episodes": 0}, [1]):
        write_json(p, bad)
        with pytest.raises(UserError, match=r"level_2.json: expected an evaluation cell .*Delete the file"):
            _read_cell(p)


def test_an_edited_config_yaml_is_refused_by_readers_of_the_run(tmp_path):
    from simdiff.errors import UserError
    from simdiff.pipelines.mol.config import MolConfig
    from simdiff.pipelines.mol.stages import load_run_config, prepare_run_dir

    root, _ = prepare_run_dir(MolConfig(), tmp_path / "run")
    assert load_run_config(root) == MolConfig()
    text = (root / "config.yaml").read_text()
    (root / "config.yaml").write_text(text.replace("episodes: 100", "episodes: 7", 1))
    with pytest.raises(UserError, match=r"config.yaml does not describe the run .*evaluation.episodes: 100 -> 7"):
        load_run_config(root)


def test_status_agrees_with_the_runner_on_what_is_done(tmp_path, capsys):
    from simdiff.cli import main
    from simdiff.pipelines.mol.config import MolConfig
    from simdiff.pipelines.mol.stages import is_done, prepare_run_dir

    root, _ = prepare_run_dir(MolConfig(), tmp_path / "run")
    (root / "stages").mkdir()
    (root / "stages" / "demos.done").write_text("{}")     # a marker without timings still marks the stage done
    assert is_done(root, "demos") and main(["mol", "status", str(root)]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["demos"].startswith("done") and lines["specialists"] == "pending"
