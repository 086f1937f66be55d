"""`simdiff ising sample | observables | coarse`: outputs, JSON, and bad arguments that write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simdiff.cli import main


def _sample(out, *extra):
    return main(["ising", "sample", "--L", "8", "--temperature", "2.269185", "--samples", "200", "--algorithm",
                 "wolff", "--seed", "0", "--out", str(out), *extra])


def test_sample_observables_coarse(tmp_path, capsys):
    out = tmp_path / "a.npz"
    assert _sample(out, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_samples"] == 200 and summary["thin"] >= 1
    with np.load(out, allow_pickle=False) as d:
        assert d["spins"].shape == (200, 8, 8) and d["spins"].dtype == np.int8
        assert str(d["algorithm"]) == "wolff" and int(d["seed"]) == 0 and int(d["L"]) == 8
        assert float(d["temperature"]) == pytest.approx(2.269185)
        assert float(d["tau_int_energy"]) > 0 and int(d["thin"]) == summary["thin"]

    assert main(["ising", "observables", str(out), "--json"]) == 0
    obs = json.loads(capsys.readouterr().out)
    assert obs["energy"]["stderr"] > 0 and "specific_heat" in obs and "four_point_connected" in obs
    assert main(["ising", "observables", str(out)]) == 0
    table = capsys.readouterr().out
    assert "Binder U4" in table and "G4c(l)" in table and "±" in table

    coarse = tmp_path / "b.npz"
    assert main(["ising", "coarse", str(out), "--factor", "2", "--out", str(coarse)]) == 0
    with np.load(coarse, allow_pickle=False) as d:
        assert d["spins"].shape == (200, 4, 4) and d["spins"].dtype == np.int8 and int(d["L"]) == 4
        meta = json.loads(str(d["metadata"]))
        assert meta["coarse"]["factor"] == 2 and meta["coarse"]["source_L"] == 8


@pytest.mark.parametrize("args,message", [
    (["--L", "1", "--temperature", "2", "--samples", "5"], "L: expected an integer >= 2, received 1"),
    (["--L", "8", "--temperature", "0", "--samples", "5"], "temperature: expected a finite number > 0"),
    (["--L", "8", "--temperature", "-1", "--samples", "5"], "temperature"),
    (["--L", "8", "--temperature", "2", "--samples", "5", "--algorithm", "heatbath"],
     "algorithm: expected one of metropolis, wolff, swendsen-wang, received 'heatbath'"),
    (["--L", "7", "--temperature", "2", "--samples", "5", "--algorithm", "metropolis"], "even L"),
    (["--L", "8", "--temperature", "2", "--samples", "0"], "--samples"),
])
def test_bad_sample_arguments_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "x.npz"
    assert main(["ising", "sample", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_run_too_large_for_memory_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from physics import ising

    monkeypatch.setattr(ising, "physical_memory_bytes", lambda: 16 << 30)  # any machine: as if it had 16 GiB
    out = tmp_path / "x.npz"
    assert main(["ising", "sample", "--L", "100000", "--temperature", "2.27", "--samples", "10",
                 "--out", str(out)]) == 2
    assert "4 chains: needs about 577.4 GiB, more than 80% of this machine's 16.0 GiB" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "a.npz"
    out.write_bytes(b"precious")
    assert _sample(out) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert _sample(out, "--overwrite") == 0
    assert out.read_bytes() != b"precious"


def test_bad_coarse_and_observables_inputs(tmp_path, capsys):
    src = tmp_path / "a.npz"
    assert _sample(src) == 0
    assert main(["ising", "coarse", str(src), "--factor", "3", "--out", str(tmp_path / "c.npz")]) == 2
    assert "divisor of the lattice side L = 8" in capsys.readouterr().err
    assert not (tmp_path / "c.npz").exists()
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"nope")
    assert main(["ising", "observables", str(junk)]) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    assert main(["ising", "coarse", str(junk), "--factor", "2", "--out", str(tmp_path / "d.npz")]) == 2
    assert not (tmp_path / "d.npz").exists()
