"""``simdiff shift``: refusals before anything runs, outputs, --overwrite, covariate end to end."""

from __future__ import annotations

import json

import pytest

from simdiff.cli import main

ENV = "simdiff/Push-v0"


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("extra, message", [
    (["--param", "frictoin", "--values", "0.5"], "valid names: box_mass, friction"),
    (["--param", "friction", "--values", "0.2:4:5"], "physics accepts [0, 3]"),
    (["--param", "box_mass", "--values", "0,1"], "physics accepts [0.01, 20] kg"),
    (["--param", "action_delay", "--values", "0.5,1"], "takes integers"),
    (["--param", "friction", "--values", "1:2"], "three fields"),
    (["--param", "friction", "--values", "1", "--episodes", "0"], "--episodes"),
    (["--param", "friction", "--values", "1", "--level", "7"], "level must be one of"),
    (["--param", "friction", "--values", "1", "--env", "simdiff/Nope-v0"], "unknown env id"),
])
def test_sweep_refusals_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    rc, _, err = _run(["shift", "sweep", "expert", *extra, "--out", str(out)], capsys)
    assert rc == 2 and message in err, err
    assert not out.exists()


def test_grid_refusals(tmp_path, capsys):
    out = str(tmp_path / "g")
    rc, _, err = _run(["shift", "grid", "expert", "--param", "friction", "--values", "1", "--out", out], capsys)
    assert rc == 2 and "exactly two parameters" in err
    rc, _, err = _run(["shift", "grid", "expert", "--param", "friction", "--param", "box_mass", "--values", "1",
                       "--out", out], capsys)
    assert rc == 2 and "one --values per --param" in err
    rc, _, err = _run(["shift", "grid", "expert", "--param", "friction", "--param", "friction", "--values", "1",
                       "--values", "2", "--out", out], capsys)
    assert rc == 2 and "two different parameters" in err
    rc, _, err = _run(["shift", "grid", "expert", "--param", "friction", "--param", "box_mass", "--values", "1",
                       "--values", "30", "--out", out], capsys)
    assert rc == 2 and "'box_mass': the physics accepts" in err
    assert not (tmp_path / "g").exists()


def test_sweep_writes_outputs_and_never_overwrites_silently(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["shift", "sweep", "expert", "--env", ENV, "--param", "action_delay", "--values", "0,6", "--episodes", "3",
            "--seed", "7", "--out", str(out)]
    rc, stdout, _ = _run(argv, capsys)
    assert rc == 0
    assert "action_delay" in stdout and "SHIFT" in stdout and "expert success %" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["values"] == [0, 6] and m["tags"] == ["level_0", "shift"] and m["seeds"] == [7, 9]
    assert {"report.md", "metrics.json", "sweep_action_delay.png"} <= {p.name for p in out.iterdir()}
    assert "simdiff shift sweep expert" in (out / "report.md").read_text()

    before = (out / "metrics.json").read_bytes()
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "--overwrite" in err
    assert (out / "metrics.json").read_bytes() == before
    rc, _, _ = _run([*argv[:-2], "--param", "action_delay", "--values", "0", "--out", str(out), "--overwrite"],
                    capsys)
    assert rc == 0 and json.loads((out / "metrics.json").read_text())["values"] == [0]

    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    rc, _, err = _run([*argv[:-2], "--out", str(other), "--overwrite"], capsys)
    assert rc == 2 and "holds no earlier shift results" in err and (other / "keep.txt").is_file()


def test_covariate_cli(tmp_path, capsys, demos_l0, untrained_policy):
    out = tmp_path / "cov"
    rc, _, err = _run(["shift", "covariate", "expert", "--out", str(out)], capsys)
    assert rc == 2 and "needs --data" in err
    rc, _, err = _run(["shift", "covariate", "expert", "--data", str(tmp_path / "none.hdf5"), "--out", str(out)],
                      capsys)
    assert rc == 2 and "no such file" in err
    # The policy's metadata names its demos, so --data may be left out.
    rc, stdout, _ = _run(["shift", "covariate", str(untrained_policy), "--level", "0", "--episodes", "4",
                          "--permutations", "20", "--out", str(out)], capsys)
    assert rc == 0 and "kNN ratio" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["policies"]) == {"expert (reference)", "tiny"}
    tiny, ref = m["policies"]["tiny"], m["policies"]["expert (reference)"]
    assert tiny["data"] == [str(demos_l0.resolve())] and tiny["train_states"] > 50
    assert len(tiny["compounding"]["mean"]) >= 2 and tiny["compounding"]["mean"][0] == pytest.approx(0.0, abs=1e-6)
    # An untrained policy wanders off; the expert stays where its demos went.
    assert tiny["knn"]["ratio_median"] > ref["knn"]["ratio_median"]
    assert m["gap_units"] == "m, box position" and (out / "covariate.png").is_file()


def test_params_lists_every_parameter(capsys):
    rc, stdout, _ = _run(["shift", "params", "--env", ENV], capsys)
    assert rc == 0
    for name in ("box_mass", "friction", "action_delay", "obs_noise"):
        assert name in stdout


def _mol_run_from(tmp_path, demos, policy_dir):
    """A MOL run directory laid out like ``simdiff mol run``'s, made of a demo file, one policy checkpoint reused
    for every model, and pseudo-label files whose round-1 states sit elsewhere (as DAgger states would)."""
    import shutil

    import numpy as np

    from envs.datasets import load_demos

    run = tmp_path / "molrun"
    (run / "demos").mkdir(parents=True)
    shutil.copy(demos, run / "demos" / "domain_0.hdf5")
    for sub in ("specialists/domain_0", "generalists/labeled_only", "generalists/distilled_r0",
                "generalists/distilled_r1"):
        shutil.copytree(policy_dir, run / sub)
    flat = np.concatenate([ep.flat_obs() for ep in load_demos(demos).episodes])
    for r, offset in ((0, 0.0), (1, 0.05)):
        obs = np.repeat(flat[:, None, :], 2, axis=1).copy()
        obs[:, :, 4] += offset  # box x moved: round 1's states are not the demos' states
        path = run / "pseudo" / f"round_{r}" / "domain_0.npz"
        path.parent.mkdir(parents=True)
        np.savez(path, obs=obs, seed=np.arange(len(obs)) // 10, source=np.full(len(obs), 2))
    (run / "mol_run.json").write_text(json.dumps({"config": {"env": {"id": ENV, "domains": [0]}}}))
    return run


def test_covariate_per_dagger_round(tmp_path, capsys, demos_l0, untrained_policy):
    run = _mol_run_from(tmp_path, demos_l0, untrained_policy)
    out = tmp_path / "cov"
    rc, stdout, _ = _run(["shift", "covariate", str(run), "--level", "0", "--episodes", "3", "--permutations", "10",
                          "--out", str(out)], capsys)
    assert rc == 0, stdout
    m = json.loads((out / "metrics.json").read_text())
    rows = m["policies"]
    assert list(rows) == ["expert (reference)", "molrun/specialist_domain_0", "molrun/labeled_only",
                          "molrun/distilled_r0", "molrun/distilled_r1"]
    assert [rows[n]["round"] for n in list(rows)[3:]] == [0, 1]
    demo_states = rows["molrun/labeled_only"]["train_states"]
    # Each round trains on the paired demos plus the pseudo-labels of rounds 0..r.
    assert rows["molrun/distilled_r0"]["train_states"] == 2 * demo_states
    assert rows["molrun/distilled_r1"]["train_states"] == 3 * demo_states
    assert len(rows["molrun/distilled_r1"]["data"]) == 3
    assert "distilled_r1" in stdout
