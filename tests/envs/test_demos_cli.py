from __future__ import annotations

import json

import pytest

from envs.datasets import load_demos
from simdiff.cli import main


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "demos.hdf5"
    rc = main(["demos", "collect", "--env", "simdiff/Push-v0", "--level", "2", "--episodes", "3", "--seed", "0",
               "--workers", "1", "--out", str(out), "--domain", "friction=0.5"])
    assert rc == 0
    return out


def test_collect_writes_seeded_episodes(demos):
    ds = load_demos(demos)
    assert [e.seed for e in ds] == [0, 1, 2]
    assert all(e.domain["friction"] == 0.5 for e in ds)
    assert ds.env_kwargs == {"observe_domain": True, "domain": {"friction": 0.5}, "level": 2}


def test_info_text_and_json(demos, capsys):
    assert main(["demos", "info", str(demos)]) == 0
    text = capsys.readouterr().out
    assert "episodes    3" in text and "friction" in text
    assert main(["demos", "info", str(demos), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["episodes"] == 3 and s["domain_ranges"]["friction"] == [0.5, 0.5]


def test_refuses_overwrite_and_bad_input(demos, tmp_path, capsys):
    before = demos.read_bytes()
    assert main(["demos", "collect", "--episodes", "1", "--out", str(demos)]) == 2
    assert "--overwrite" in capsys.readouterr().err and demos.read_bytes() == before
    assert main(["demos", "collect", "--episodes", "1", "--out", str(tmp_path / "a.hdf5"),
                 "--domain", "fricton=0.5"]) == 2
    assert "valid names" in capsys.readouterr().err and not (tmp_path / "a.hdf5").exists()
    assert main(["demos", "collect", "--level", "7", "--out", str(tmp_path / "b.hdf5")]) == 2
    assert "level must be one of" in capsys.readouterr().err
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"garbage")
    assert main(["demos", "info", str(bad)]) == 2
    assert "bad.hdf5" in capsys.readouterr().err


def _can_render() -> bool:
    import mujoco

    try:
        r = mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8)
        r.close()
        return True
    except Exception:  # no GL backend on this machine (MUJOCO_GL=egl needs libEGL)
        return False


def test_video_renders_headless(demos, tmp_path):
    if not _can_render():
        pytest.skip("no headless OpenGL (EGL) available")
    out = tmp_path / "demo.gif"
    assert main(["demos", "video", str(demos), "--out", str(out), "--episodes", "0",
                 "--width", "96", "--height", "72"]) == 0
    import imageio.v2 as imageio

    frames = imageio.mimread(out)
    assert len(frames) == len(load_demos(demos)[0]) and frames[0].shape[:2] == (72, 96)
    assert frames[0].std() > 5  # an actual scene, not a blank buffer
    assert main(["demos", "video", str(demos), "--out", str(out), "--episodes", "0"]) == 2  # exists
