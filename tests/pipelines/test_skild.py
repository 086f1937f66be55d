from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from simdiff.cli import main
from simdiff.config import load_config
from simdiff.pipelines.skild import core
from simdiff.pipelines.skild.config import SkildConfig
from simdiff.processes import spectral as sp

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "name": "tiny",
    "data": {"L": 8, "num_samples": 64},
    "process": {"num_steps": 100, "lambda_i": -2.0, "lambda_f": -0.5},
    "model": {"base_channels": 8, "channel_mults": [1, 2], "time_dim": 16},
    "train": {"steps": 30, "batch_size": 16, "lr": 0.002, "log_every": 10, "ckpt_every": 0},
    "sample": {"steps": 10, "batch_size": 64},
    "validate": {"num_generate": 40, "num_superres": 20, "sr_factors": [2, 4]},
}


def _tiny_lattices(n: int, L: int = 8, seed: int = 0) -> np.ndarray:
    from physics.ising import sample_configurations

    return sample_configurations(L, 2.269185, n, seed=seed, progress=False, threads=1).spins


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny SKILD model (L = 8) trained for a few steps, and a reference set."""
    root = tmp_path_factory.mktemp("skild")
    data = root / "train.npz"
    core.save_npz(data, spins=_tiny_lattices(64, seed=1000))
    ref = root / "ref.npz"
    core.save_npz(ref, spins=_tiny_lattices(40, seed=1))
    cfg_dict = {**TINY, "data": {**TINY["data"], "path": str(data)}}
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = core.train_run(load_config(SkildConfig, cfg_dict), root / "run", command=["test"])
        base_cfg = {**cfg_dict, "process": {**cfg_dict["process"], "kind": "gaussian"}}
        core.train_run(load_config(SkildConfig, base_cfg), root / "base", command=["test"])
    finally:
        torch.set_num_threads(prev)
    return {"root": root, "run": root / "run", "base": root / "base", "ref": ref, "summary": summary}


@pytest.mark.parametrize("name", ["ising16_quick", "ising32", "ising32_white_noise"])
def test_shipped_configs_load(name):
    cfg = load_config(SkildConfig, REPO / "configs" / "skild" / f"{name}.yaml")
    assert cfg.data.L in (16, 32)
    # The schedule must noise every mode (k_c > 0) so generation can start from the noise prior.
    lam = sp.make_lambdas(cfg.process.num_steps, cfg.process.schedule, cfg.process.lambda_i,
                          cfg.process.lambda_f, cfg.process.theta)
    assert math.exp(-cfg.process.k_c**2 * float(lam[-1])) < 1e-4


def test_unknown_config_key_is_reported():
    with pytest.raises(ValueError, match="did you mean 'num_steps'"):
        load_config(SkildConfig, {"process": {"num_step": 10}})


def test_augment_preserves_ising_energy_and_abs_magnetization():
    from physics.observables import energy_per_site, magnetization_per_site

    x = torch.as_tensor(_tiny_lattices(16).astype(np.float32))
    y = core.augment(x, torch.Generator().manual_seed(0), translate=True)
    assert not torch.equal(x, y)
    assert np.allclose(energy_per_site(x.numpy()), energy_per_site(y.numpy()))
    assert np.allclose(np.abs(magnetization_per_site(x.numpy())), np.abs(magnetization_per_site(y.numpy())))


def test_nearest_upsample_any_ratio():
    x = torch.arange(9.0).reshape(1, 3, 3)
    up = core.nearest_upsample(x, 8)
    assert up.shape == (1, 8, 8)
    assert set(up.unique().tolist()) == set(range(9))
    assert torch.equal(core.nearest_upsample(torch.ones(2, 4, 4), 8), torch.ones(2, 8, 8))


def test_train_writes_resumable_run_and_model(tiny_run):
    run = tiny_run["run"]
    for name in ("config.yaml", "run.json", "metrics.jsonl", "checkpoint/meta.json", "model/meta.json",
                 "model/weights.safetensors"):
        assert (run / name).exists(), name
    meta = json.loads((run / "model" / "meta.json").read_text())
    assert meta["kind"] == core.MODEL_KIND and meta["command"] == ["test"]
    assert meta["train"]["steps"] == TINY["train"]["steps"]
    C, alpha, k0sq = meta["spectrum"]
    assert C > 0 and 0 < alpha < 3 and sp.K0SQ_BOUNDS[0] <= k0sq <= sp.K0SQ_BOUNDS[1]
    # Running the same config again resumes (nothing left to do) and does not clobber the model.
    cfg = core.load_model(run).cfg
    again = core.train_run(cfg, run, command=["test"])
    assert again["steps"] == TINY["train"]["steps"] and again["completed"]
    with pytest.raises(ValueError, match="different config"):
        core.train_run(load_config(SkildConfig, {**TINY, "name": "other"}), run)


def test_sampler_steps_beyond_the_process_are_refused(tiny_run):
    model = core.load_model(tiny_run["run"])
    assert core.resolve_steps(model, -1) == TINY["sample"]["steps"] and core.resolve_steps(model, None) is None
    assert core.resolve_steps(model, 100) == 100
    for bad in (101, 0, 2.5):
        with pytest.raises(ValueError, match=r"steps: expected an integer in 1\.\.100"):
            core.generate(model, 2, steps=bad)
    with pytest.raises(ValueError, match=r"steps: expected an integer in 1\.\.100 .*received 500"):
        core.superres(model, torch.ones(2, 4, 4), steps=500)
    assert core.resolve_steps(model, np.int64(7)) == 7
    # A config whose sample.steps (default 100) exceeds a shorter process samples every step by default.
    from types import SimpleNamespace

    short = SimpleNamespace(cfg=SimpleNamespace(sample=SimpleNamespace(steps=100)), num_steps=30)
    assert core.resolve_steps(short, -1) == 30


def test_sample_superres_and_start_steps(tiny_run):
    model = core.load_model(tiny_run["run"])
    x = core.generate(model, 5, seed=3)
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    assert torch.equal(x, core.generate(model, 5, seed=3))  # seeded
    prev = None
    for R in range(1, 9):  # every resolution from L/8 to L, including non-powers of two
        n0 = core.superres_start(model, R)
        proc = model.process()
        assert float(sp.k_tau(proc.lambdas[n0], proc.tau)) <= sp.max_resolved_wavenumber(R, "fft") or n0 == 100
        assert prev is None or n0 <= prev
        prev = n0
    low = torch.sign(torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(0)))
    out, info = core.superres(model, low, seed=0)
    assert out.shape == (3, 1, 8, 8) and info["R"] == 5 and 1 <= info["n0"] <= 100
    assert info["k_tau_n0"] <= info["k_max_input"]


def test_superres_replace_conditioning_keeps_the_input_modes(tiny_run):
    model = core.load_model(tiny_run["run"])
    low = torch.sign(torch.randn(4, 4, 4, generator=torch.Generator().manual_seed(1)))
    placed, known = sp.place_modes(low[:, None].double(), 8, "fft")
    out = {}
    for cond in ("start", "replace"):
        x, info = core.superres(model, low, seed=0, conditioning=cond)
        assert info["conditioning"] == cond
        out[cond] = sp.to_modes(x.double(), "fft")
    # replace: X_0 on the input's modes is the input's (raw: exact); start: the network is free to move them
    assert torch.allclose(out["replace"][..., known], placed[..., known], atol=1e-5)
    assert not torch.allclose(out["start"][..., known], placed[..., known], atol=1e-2)
    with pytest.raises(core.UserError, match="conditioning: expected one of start, replace"):
        core.superres(model, low, conditioning="inpaint")


def test_input_calibration_from_training_lattices(tiny_run):
    model = core.load_model(tiny_run["run"])
    cal = model.meta["input_calibration"]
    assert set(cal) == {"majority", "average"} and set(cal["majority"]) == {"2", "4", "8"}
    # A block average keeps the mean exactly: the DC gain is 1 with no residual.
    assert cal["average"]["2"]["k2"][0] == 0.0
    assert cal["average"]["2"]["gain"][0] == pytest.approx(1.0) and cal["average"]["2"]["resid"][0] < 1e-9
    # Majority block spins exaggerate the magnetisation: DC gain below 1.
    assert 0.5 < cal["majority"]["2"]["gain"][0] < 1.0
    gain, resid = core.input_calibration(model, 4, "majority")
    known = sp.known_mode_mask(4, 8, "fft")
    assert gain.shape == (8, 8) and bool((gain[~known] == 1).all()) and bool((resid >= 0).all())
    assert core.input_calibration(model, 4, "raw") is None
    with pytest.raises(ValueError, match="no calibration for R = 5"):
        core.input_calibration(model, 5, "majority")


# The 4x nearest-neighbour upsample of an 8 x 8 lattice has S(k) = 0 on some shells: its log-slope is -inf.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_cli_end_to_end_and_validation_report(tiny_run, tmp_path, capsys):
    run, ref = tiny_run["run"], tiny_run["ref"]
    out = tmp_path / "s.npz"
    assert main(["skild", "sample", str(run), "--n", "4", "--seed", "1", "--out", str(out)]) == 0
    with np.load(out) as z:
        assert z["samples"].shape == (4, 1, 8, 8) and z["samples"].dtype == np.float32
        assert z["spins"].shape == (4, 8, 8) and z["spins"].dtype == np.int8
        low = z["spins"][:, ::2, ::2]
    assert main(["skild", "sample", str(run), "--n", "4", "--out", str(out)]) == 2  # exists, no --overwrite
    lowres = tmp_path / "low.npz"
    core.save_npz(lowres, spins=low)
    sr = tmp_path / "sr.npz"
    assert main(["skild", "superres", str(run), "--input", str(lowres), "--out", str(sr)]) == 0
    with np.load(sr) as z:
        assert z["samples"].shape == (4, 1, 8, 8) and int(z["R"]) == 4
    assert main(["skild", "superres", str(run), "--input", str(lowres), "--out", str(sr), "--overwrite",
                 "--input-kind", "majority"]) == 0

    rep = tmp_path / "report"
    code = main(["skild", "validate", str(run), "--reference", str(ref), "--out", str(rep),
                 "--baseline", str(tiny_run["base"]), "--n", "20", "--n-superres", "10"])
    assert code == 0
    for name in ("report.md", "metrics.json", "two_point.png", "four_point.png", "structure_factor.png",
                 "samples.png"):
        assert (rep / name).exists(), name
    m = json.loads((rep / "metrics.json").read_text())
    gen = m["generation"]["skild"]
    assert set(gen["observables"]) >= {"energy", "abs_m", "binder", "two_point", "four_point_connected",
                                       "structure_factor", "structure_factor_slope"}
    # 4 scalars, G(r) for r = 1..4, G4c(l) for l = 1, 2, S(k) on 4 shells
    assert gen["n_checks"] == 4 + 4 + 2 + 4 and 0 <= gen["n_pass"] <= gen["n_checks"]
    assert "white_noise" in m["generation"]
    block_n0_2x = m["superres"]["2x-majority"]["skild"]["n0"]
    for key in ("2x-majority", "4x-majority"):
        block = m["superres"][key]
        assert {"skild", "nearest", "sdedit_white_noise"} <= set(block)
        assert 0.0 <= block["skild"]["consistency"]["block_agreement"] <= 1.0
        assert block["nearest"]["consistency"]["block_agreement"] == 1.0  # NN of block spins is consistent
    printed = capsys.readouterr().out
    assert "summed norm. error" in printed and "SR 4x-majority (R=2)" in printed

    # Super-resolution only (--n 0), starting later with a smaller SNR threshold
    rep2 = tmp_path / "report_sr"
    assert main(["skild", "validate", str(run), "--reference", str(ref), "--out", str(rep2), "--n", "0",
                 "--n-superres", "10", "--factors", "2", "--superres-tau", "0.01"]) == 0
    m2 = json.loads((rep2 / "metrics.json").read_text())
    assert m2["generation"] == {} and set(m2["superres"]) == {"2x-majority"} and m2["superres_tau"] == 0.01
    assert m2["superres"]["2x-majority"]["skild"]["n0"] > block_n0_2x
    assert "generation_all_pass" not in m2["verdict"] and (rep2 / "report.md").exists()


def test_cli_errors(tiny_run, tmp_path, capsys):
    assert main(["skild", "sample", str(tmp_path / "missing"), "--n", "2", "--out", str(tmp_path / "a.npz")]) == 2
    assert "no such run or model directory" in capsys.readouterr().err
    assert main(["skild", "sample", "--pretrained", "no-such-model", "--n", "2",
                 "--out", str(tmp_path / "a.npz")]) == 2
    err = capsys.readouterr().err
    assert "unknown pretrained model 'no-such-model'; available:" in err
    for name in core.available_pretrained():
        assert name in err
    assert main(["skild", "sample", "--n", "2", "--out", str(tmp_path / "a.npz")]) == 2
    assert "expected exactly one of a run DIR or --pretrained NAME" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    core.save_npz(bad, spins=np.ones((2, 16, 16), dtype=np.int8))
    assert main(["skild", "superres", str(tiny_run["run"]), "--input", str(bad), "--out",
                 str(tmp_path / "b.npz")]) == 2
    assert "expected a resolution R with 1 <= R <= 8" in capsys.readouterr().err
    core.save_npz(bad, spins=np.ones((2, 4, 5), dtype=np.int8))
    assert main(["skild", "superres", str(tiny_run["run"]), "--input", str(bad), "--out",
                 str(tmp_path / "b.npz")]) == 2
    assert "expected shape (N, L, L)" in capsys.readouterr().err
    good = tmp_path / "good.npz"
    core.save_npz(good, spins=np.ones((2, 4, 4), dtype=np.int8))
    assert main(["skild", "superres", str(tiny_run["run"]), "--input", str(good), "--out",
                 str(tmp_path / "b.npz"), "--superres-tau", "0"]) == 2
    assert "superres tau: expected > 0, received 0" in capsys.readouterr().err
    core.save_npz(bad, other=np.ones(3))
    assert main(["skild", "superres", str(tiny_run["run"]), "--input", str(bad), "--out",
                 str(tmp_path / "b.npz")]) == 2
    assert "expected a key 'spins' or 'samples'" in capsys.readouterr().err
    assert not (tmp_path / "b.npz").exists()
    assert main(["skild", "train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    zeros = tmp_path / "zeros.npz"
    core.save_npz(zeros, samples=np.zeros((8, 1, 8, 8), dtype=np.float32))
    assert main(["skild", "validate", str(tiny_run["run"]), "--reference", str(zeros), "--out",
                 str(tmp_path / "v")]) == 2
    assert "reference: expected Ising configurations (values +-1 only), found [0.0]" in capsys.readouterr().err
    assert main(["skild", "sample", str(tiny_run["run"]), "--n", "2", "--steps", "101",
                 "--out", str(tmp_path / "s.npz")]) == 2
    assert "steps: expected an integer in 1..100" in capsys.readouterr().err
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "v").exists()
    assert main(["ddm", "sample", str(tiny_run["run"]), "--n", "2", "--out", str(tmp_path / "d.npz")]) == 2
    assert "expected a run of `simdiff ddm train` (it holds a run of `simdiff skild train`)" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["skild", "sample", str(tiny_run["run"]), "--device", "cuda", "--n", "2",
                     "--out", str(tmp_path / "c.npz")]) == 2
        assert "sees no CUDA device" in capsys.readouterr().err
        assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("name", core.available_pretrained())
def test_pretrained_models_load_and_sample_offline(name):
    model = core.load_model(pretrained=name)
    assert model.meta["command"][:3] == ["simdiff", "skild", "train"]
    x = core.generate(model, 2, seed=0, steps=4)
    assert x.shape == (2, 1, model.L, model.L) and bool(torch.isfinite(x).all())


def test_lattice_files_that_are_no_ising_configurations_are_refused(tmp_path):
    from simdiff.errors import DatasetError

    good = _tiny_lattices(4)
    for name, spins in (("twos", 2 * good), ("bits", (good > 0).astype(np.int8)), ("bools", good > 0)):
        np.savez(tmp_path / f"{name}.npz", spins=spins)
        with pytest.raises(DatasetError, match=rf"{name}.npz: key 'spins': expected"):
            core.load_lattices(tmp_path / f"{name}.npz")
    np.savez(tmp_path / "ok.npz", spins=good)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"cut.npz: not a readable .npz file"):
        core.load_lattices(tmp_path / "cut.npz")
    assert core.load_lattices(tmp_path / "ok.npz").shape == good.shape


def test_a_train_refused_for_its_data_leaves_the_run_free_for_a_corrected_rerun(tmp_path):
    from simdiff.errors import DatasetError

    bad = tmp_path / "bits.npz"
    np.savez(bad, spins=(_tiny_lattices(8) > 0).astype(np.int8))
    cfg = {**TINY, "train": {**TINY["train"], "steps": 2}, "data": {**TINY["data"], "path": str(bad)}}
    run = tmp_path / "run"
    with pytest.raises(DatasetError, match="bits.npz: key 'spins': expected values"):
        core.train_run(load_config(SkildConfig, cfg), run, command=["test"])
    assert not (run / "config.yaml").exists()
    good = tmp_path / "good.npz"
    np.savez(good, spins=_tiny_lattices(8))
    fixed = load_config(SkildConfig, {**cfg, "data": {**cfg["data"], "path": str(good)}})
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert core.train_run(fixed, run, command=["test"])["completed"]
    finally:
        torch.set_num_threads(prev)


def test_an_edited_model_meta_is_a_clear_checkpoint_error(tiny_run, tmp_path):
    import shutil

    from simdiff.errors import CheckpointError

    src = tiny_run["run"] / "model"
    for name, edit, message in (
            ("wider", lambda m: m["config"]["model"].update(base_channels=16),
             r"does not fit the saved network .*size mismatch .*\(and \d+ more\)$"),
            ("nospec", lambda m: m.pop("spectrum"), "expected a key 'spectrum'"),
            ("badspec", lambda m: m.update(spectrum=[1.0]), "spectrum: expected 3 finite numbers"),
            ("badkey", lambda m: m["config"]["process"].update(num_step=3), "did you mean 'num_steps'")):
        dst = tmp_path / name
        shutil.copytree(src, dst)
        meta = json.loads((dst / "meta.json").read_text())
        edit(meta)
        (dst / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=rf"{name}/meta.json: .*{message}"):
            core.load_model(dst)


def test_sample_and_validate_arguments_are_checked(tmp_path, capsys):
    assert main(["skild", "sample", "--pretrained", "ising32", "--n", "2", "--out", str(tmp_path / "s.txt")]) == 2
    assert "expected a file name ending in .npz" in capsys.readouterr().err
    ref = tmp_path / "ref.npz"
    np.savez(ref, spins=_tiny_lattices(4, L=32))
    assert main(["skild", "validate", "--pretrained", "ising32", "--reference", str(ref), "--out",
                 str(tmp_path / "v"), "--factors", "0"]) == 2
    assert "--factors: expected super-resolution factors >= 2" in capsys.readouterr().err
