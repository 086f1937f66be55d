from __future__ import annotations

import json

import pytest
import torch

from simdiff.cli import main
from simdiff.pipelines.demo import (
    DemoConfig,
    make_mixture,
    mixture_stats,
    sample_denoiser,
    sample_mixture,
    train_denoiser,
)


def test_mixture_stats_of_true_data_are_near_zero():
    mix = make_mixture(5)
    assert torch.isclose(mix.weights.sum(), torch.tensor(1.0))
    x, labels = sample_mixture(mix, 20_000, torch.Generator().manual_seed(0))
    st = mixture_stats(x, mix)
    assert st["max_weight_err"] < 0.015 and st["max_mean_err"] < 0.02 and st["max_cov_err"] < 0.01
    assert st["off_mode_frac"] < 0.002
    # Nearest-mode assignment agrees with the true component almost always (modes are well separated).
    assign = torch.cdist(x, mix.means).argmin(1)
    assert (assign == labels).float().mean() > 0.995


def test_trained_sampler_recovers_the_mixture(tmp_path, one_thread):
    """Short training (4 modes, 1000 steps, small net). Tolerances: every mode weight within 0.05 of the
    truth, every mode mean within 0.1 and covariance within 0.08 (Frobenius; entries are <= 0.05), global
    covariance within 0.15, < 10% of samples off the modes. (Typical: 0.02, 0.06, 0.03, 0.07, 3%.)"""
    cfg = DemoConfig(steps=1000, hidden=64, depth=2, lr=3e-3, num_modes=4, num_samples=2000, seed=0)
    mix = make_mixture(cfg.num_modes)
    res, sched = train_denoiser(cfg, tmp_path / "run", mix)
    first = json.loads(res.metrics_path.read_text().splitlines()[0])["loss"]
    assert res.completed and res.final_loss < 0.8 * first
    for sampler in ("ddim", "ddpm"):
        st = mixture_stats(sample_denoiser(res.ema_model, sched, cfg, sampler, seed=1), mix)
        assert st["max_weight_err"] < 0.05, (sampler, st["modes"])
        assert st["max_mean_err"] < 0.1, (sampler, st["modes"])
        assert st["max_cov_err"] < 0.08, (sampler, st["modes"])
        assert st["global_cov_err"] < 0.15, (sampler, st)
        assert st["off_mode_frac"] < 0.1, (sampler, st)


def test_demo_cli_writes_a_run_and_prints_a_table(tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.setenv("SIMDIFF_NO_PROGRESS", "1")
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "40", "--samples", "200", "--ddim-steps", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mode  w_true" in text and "max_weight_err" in text and str(out) in text
    for name in ("config.yaml", "run.json", "metrics.jsonl", "loss.png", "samples.png", "results.json",
                 "checkpoint/meta.json", "checkpoint/weights.safetensors"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 40 and set(results["stats"]) == {"data", "ddim", "ddpm"}
    # Existing output is never overwritten without --overwrite; bad arguments fail before writing.
    assert main(["demo", "--steps", "40", "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["demo", "--steps", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "steps: expected a value in [1, inf], received 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_demo_config_checks():
    with pytest.raises(ValueError, match="ddim_steps: expected at most diffusion_steps=100, received 200"):
        DemoConfig(ddim_steps=200)
