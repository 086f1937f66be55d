from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.diffusion.data import WindowSampler, episodes_from_arrays, window_rows


def test_window_rows_pad_like_the_reference_sampler():
    # One episode of length 5, To=2, Tp=4, Ta=2: starts s = -1 .. 5-4+1 = 2, indices clamped to [0, 4].
    rows = window_rows(np.array([5]), obs_horizon=2, pred_horizon=4, action_horizon=2)
    np.testing.assert_array_equal(rows, [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4]])
    # Two episodes: the second one's rows are offset and never reach into the first.
    rows2 = window_rows(np.array([5, 3]), 2, 4, 2)
    second = rows2[len(rows):]
    assert second.min() == 5 and second.max() == 7
    # A very short episode still yields a window.
    assert window_rows(np.array([1]), 2, 16, 8).shape == (1, 16)


def _episodes():
    rng = np.random.default_rng(0)
    obs = [rng.normal(size=(n, 6)).astype(np.float32) for n in (7, 4, 9)]
    act = [rng.normal(size=(len(o), 2)).astype(np.float32) for o in obs]
    return episodes_from_arrays(obs, act, {"state": (0, 4), "context": (4, 6)}, task_ids=[0, 1, 2])


def test_sampler_shapes_alignment_and_determinism():
    eps = _episodes()
    sampler = WindowSampler(eps, 2, 8, 4)
    b1 = sampler.sample(16, torch.Generator().manual_seed(3))
    b2 = sampler.sample(16, torch.Generator().manual_seed(3))
    assert b1["obs"].shape == (16, 2, 6) and b1["action"].shape == (16, 8, 2) and b1["task"].shape == (16,)
    torch.testing.assert_close(b1["action"], b2["action"])
    # Observation t and action t come from the same step: check one window against the raw arrays.
    rows = sampler.rows[5]
    w = sampler.gather(torch.tensor([5]))
    np.testing.assert_array_equal(w["obs"][0].numpy(), eps.obs[rows[:2].numpy()])
    np.testing.assert_array_equal(w["action"][0].numpy(), eps.actions[rows.numpy()])


def test_fingerprint_and_select():
    eps = _episodes()
    assert eps.fingerprint() == _episodes().fingerprint()
    sub = eps.select([2, 0])
    assert sub.num_episodes == 2 and sub.lengths.tolist() == [9, 7] and sub.task_ids.tolist() == [2, 0]
    changed = episodes_from_arrays([eps.obs[:7] + 1e-3], [eps.actions[:7]])
    assert changed.fingerprint() != eps.select([0]).fingerprint()


def test_bad_episodes_are_refused():
    with pytest.raises(ValueError, match="equal length"):
        episodes_from_arrays([np.zeros((3, 2))], [np.zeros((4, 2))])
    with pytest.raises(ValueError, match="columns within"):
        episodes_from_arrays([np.zeros((3, 2))], [np.zeros((3, 2))], {"state": (0, 5)})


def test_load_episodes_reads_layout_and_env(push_demos):
    from policies.diffusion.data import load_episodes

    eps = load_episodes(push_demos, max_episodes=3)
    assert eps.num_episodes == 3
    assert eps.obs_layout == {"state": (0, 12), "context": (12, 20)}
    assert eps.meta["env_id"] == "simdiff/Push-v0" and "level" not in eps.meta["env_kwargs"]


def test_bad_episodes_in_a_file_are_named_with_the_file(push_demos, tmp_path):
    import shutil

    import h5py

    from policies.diffusion.data import load_episodes
    from simdiff.errors import DatasetError

    with pytest.raises(ValueError, match=r"episode 1: expected the observation and action widths of episode 0"):
        episodes_from_arrays([np.zeros((3, 2)), np.zeros((3, 2))], [np.zeros((3, 2)), np.zeros((3, 3))])
    nan = tmp_path / "nan.hdf5"
    shutil.copy(push_demos, nan)
    with h5py.File(nan, "r+") as f:
        name = sorted(f["data"])[1]
        f["data"][name]["actions"][0, 0] = np.nan
        del f["data"][name].attrs["sha256"]  # as in a file of another tool (no checksum catches the edit)
    with pytest.raises(DatasetError, match=rf"nan.hdf5: {name}: expected finite observations and actions"):
        load_episodes(nan)
    wide = tmp_path / "wide.hdf5"
    shutil.copy(push_demos, wide)
    with h5py.File(wide, "r+") as f:
        name = sorted(f["data"])[2]
        act = f["data"][name]["actions"][()]
        del f["data"][name]["actions"]
        f["data"][name]["actions"] = np.concatenate([act, act[:, :1]], axis=1)
        del f["data"][name].attrs["sha256"]
    with pytest.raises(DatasetError, match=rf"wide.hdf5: {name}: expected the observation and action widths"):
        load_episodes(wide)
