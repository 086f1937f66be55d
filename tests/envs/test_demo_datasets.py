from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from envs.collect import collect, dataset_attrs
from envs.datasets import Episode, format_summary, load_demos, summarize, write_demos
from simdiff.errors import DatasetError

ID = "simdiff/Push-v0"


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    eps = collect(ID, 4, seed=10, level=2)
    path = tmp_path_factory.mktemp("demos") / "demos.hdf5"
    kwargs = {"level": 2, "observe_domain": True}
    write_demos(path, eps, {"env_name": ID, "env_kwargs": kwargs},
                attrs=dataset_attrs(ID, kwargs, {"seed": 10}))
    return path, eps


def test_round_trip_and_robomimic_layout(demo_file):
    path, eps = demo_file
    ds = load_demos(path)
    assert len(ds) == 4 and ds.env_name == ID and ds.env_kwargs["level"] == 2
    assert ds.obs_keys == ("state", "context")
    for a, b in zip(eps, ds):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.obs["obs"], b.flat_obs())
        np.testing.assert_array_equal(a.states, b.states)
        assert a.domain == b.domain and a.seed == b.seed and b.success is True and b.dones[-1] == 1
    with h5py.File(path) as f:
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == ID
        g = f["data/demo_0"]
        assert g.attrs["num_samples"] == len(eps[0]) and json.loads(g.attrs["domain"]) == eps[0].domain
        assert set(g["obs"]) == {"state", "context", "obs"} and "next_obs" in g
        assert g["next_obs/obs"][0].tolist() == g["obs/obs"][1].tolist()
        assert f["data"].attrs["total"] == sum(len(e) for e in eps)
        assert len(f["mask/success"]) == 4
    s = summarize(ds)
    assert s["episodes"] == 4 and s["success_rate"] == 1.0 and s["obs_dim"] == 20
    assert set(s["domain_ranges"]) == set(eps[0].domain)
    assert "friction" in format_summary(s)


def test_nothing_overwritten_without_flag(demo_file):
    path, eps = demo_file
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_demos(path, eps, {"env_name": ID})
    assert path.read_bytes() == before


def test_truncated_and_corrupt_files_name_file_and_problem(demo_file, tmp_path):
    path, _ = demo_file
    data = path.read_bytes()
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut.hdf5"):
        load_demos(cut)
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(DatasetError, match="junk.hdf5: not a readable HDF5 file"):
        load_demos(junk)
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        load_demos(tmp_path / "nope.hdf5")


def test_altered_arrays_fail_the_checksum(demo_file, tmp_path):
    path, _ = demo_file
    for what in ("actions", "obs", "states"):
        changed = tmp_path / f"{what}.hdf5"
        changed.write_bytes(path.read_bytes())
        with h5py.File(changed, "a") as f:
            g = f["data/demo_1"]
            arr = g[what] if what != "obs" else g["obs"][sorted(g["obs"])[0]]
            arr[2, 0] = arr[2, 0] + 1e-3  # a small silent change: the file stays perfectly readable
        with pytest.raises(DatasetError, match=rf"{what}.hdf5: demo_1: its arrays do not match the checksum"):
            load_demos(changed)
    # Relabelled rewards and an added observation key are normal edits of a demo file: not refused.
    edited = tmp_path / "edited.hdf5"
    edited.write_bytes(path.read_bytes())
    with h5py.File(edited, "a") as f:
        g = f["data/demo_1"]
        g["rewards"][0] = 5.0
        g["obs"]["agentview_image"] = np.zeros((len(g["actions"]), 4, 4, 3), np.uint8)
    assert float(load_demos(edited)[1].rewards[0]) == 5.0
    # A file without checksums (robomimic, or one written before them) loads as it is.
    plain = tmp_path / "plain.hdf5"
    plain.write_bytes(path.read_bytes())
    with h5py.File(plain, "a") as f:
        for name in f["data"]:
            del f["data"][name].attrs["sha256"]
    assert len(load_demos(plain)) == len(load_demos(path))


def test_missing_keys_and_inconsistent_lengths(demo_file, tmp_path):
    path, _ = demo_file
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(path.read_bytes())
    with h5py.File(broken, "a") as f:
        del f["data/demo_1/actions"]
    with pytest.raises(DatasetError, match="broken.hdf5: demo_1 is missing 'actions'"):
        load_demos(broken)
    short = tmp_path / "short.hdf5"
    short.write_bytes(path.read_bytes())
    with h5py.File(short, "a") as f:
        r = f["data/demo_0/rewards"][()]
        del f["data/demo_0/rewards"]
        f["data/demo_0/rewards"] = r[:-1]
    with pytest.raises(DatasetError, match="demo_0/rewards has"):
        load_demos(short)
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        f.create_group("data")
    with pytest.raises(DatasetError, match="no demos"):
        load_demos(empty)
    nodata = tmp_path / "nodata.hdf5"
    with h5py.File(nodata, "w") as f:
        f.create_group("stuff")
    with pytest.raises(DatasetError, match="missing group 'data'"):
        load_demos(nodata)


def test_reads_robomimic_and_raw_robosuite_files(tmp_path):
    rng = np.random.default_rng(0)
    rm = tmp_path / "robomimic_low_dim.hdf5"
    with h5py.File(rm, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}})
        for i, T in enumerate((5, 7)):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = T
            g["actions"] = rng.normal(size=(T, 7))
            g["rewards"] = np.zeros(T)
            g["dones"] = np.eye(T)[-1]
            g["states"] = rng.normal(size=(T, 32))
            g["obs/robot0_eef_pos"] = rng.normal(size=(T, 3))
            g["obs/object"] = rng.normal(size=(T, 10))
            g["obs/agentview_image"] = np.zeros((T, 8, 8, 3), np.uint8)
    ds = load_demos(rm)
    assert ds.env_name == "Lift" and ds.obs_keys == ("object", "robot0_eef_pos")  # images never concatenated
    assert ds[1].flat_obs().shape == (7, 13) and ds[0].success is None
    assert load_demos(rm, obs_keys=["robot0_eef_pos"])[0].flat_obs().shape == (5, 3)
    with pytest.raises(DatasetError, match="no obs key"):
        load_demos(rm, obs_keys=["missing"])

    raw = tmp_path / "robosuite_demo.hdf5"
    with h5py.File(raw, "w") as f:
        data = f.create_group("data")
        data.attrs["env"] = "Lift"
        data.attrs["env_info"] = json.dumps({"robots": "Panda"})
        g = data.create_group("demo_1")
        g["states"] = rng.normal(size=(6, 32))
        g["actions"] = rng.normal(size=(6, 7))
    ds = load_demos(raw)
    assert ds.env_name == "Lift" and ds.env_kwargs == {"robots": "Panda"} and ds.obs_keys == ("states",)
    assert ds[0].flat_obs().shape == (6, 32) and ds[0].dones.tolist() == [0, 0, 0, 0, 0, 1]


def test_episode_length_mismatch_rejected_on_write(tmp_path):
    ep = Episode(obs={"obs": np.zeros((3, 2))}, actions=np.zeros((4, 2)), rewards=np.zeros(4), dones=np.zeros(4))
    with pytest.raises(ValueError, match="obs/obs has 3 steps"):
        write_demos(tmp_path / "x.hdf5", [ep], {"env_name": ID})
    assert not (tmp_path / "x.hdf5").exists()
