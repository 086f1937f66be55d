from __future__ import annotations

import json

import numpy as np
import pytest

from physics import ising
from physics.validation import compare_ensembles, compare_values, non_binary_fraction, to_markdown


@pytest.fixture(scope="module")
def critical():
    return ising.sample_configurations(8, ising.T_C, 3000, "wolff", seed=0, progress=False).spins


def test_independent_ensembles_of_the_same_model_pass(critical):
    other = ising.sample_configurations(8, ising.T_C, 3000, "swendsen-wang", seed=1, progress=False).spins
    noisy = other[:, None].astype(np.float32) * 0.9  # a generator's real-valued output, (N, 1, L, L)
    report = compare_ensembles(noisy, critical, temperature=ising.T_C)
    json.dumps(report)
    assert report["all_pass"], to_markdown(report)
    assert report["non_binary_fraction"] == 1.0
    obs = report["observables"]
    assert {"energy", "abs_m", "binder", "two_point", "structure_factor", "structure_factor_slope",
            "four_point_connected", "specific_heat"} <= set(obs)
    e = obs["energy"]
    assert e["combined_stderr"] == pytest.approx(np.hypot(e["stderr"], e["reference_stderr"]))
    assert e["z"] == pytest.approx(e["diff"] / e["combined_stderr"])
    assert len(obs["two_point"]["r"]) == len(obs["two_point"]["pass"]) == 5


def test_a_different_temperature_fails(critical):
    hot = ising.sample_configurations(8, 3.5, 3000, "wolff", seed=2, progress=False).spins
    report = compare_ensembles(hot, critical, observables=["energy", "abs_m", "two_point"])
    assert not report["all_pass"]
    assert not report["observables"]["energy"]["pass"] and report["observables"]["energy"]["z"] > 10
    assert set(report["observables"]) == {"energy", "abs_m", "two_point"}
    table = to_markdown(report)
    assert "| energy |" in table and "NO" in table


def test_tolerance_rule():
    # 2 % of the reference wins when errors are tiny; 3 combined stderr wins otherwise.
    assert compare_values(1.019, 0.0, 1.0, 0.0)["pass"]
    assert not compare_values(1.021, 0.0, 1.0, 0.0)["pass"]
    r = compare_values(0.5, 0.3, 0.0, 0.4)
    assert r["pass"] and r["tolerance"] == pytest.approx(1.5)
    assert compare_values(0.0, 0.0, 0.0, 0.0)["z"] == 0.0


def test_non_binary_fraction_and_bad_inputs(critical):
    assert non_binary_fraction(critical) == 0.0
    assert non_binary_fraction(np.array([1.0, -1.0, 0.5, 0.0])) == 0.5
    with pytest.raises(ValueError, match="reference size L = 8"):
        compare_ensembles(np.ones((4, 4, 4), np.int8), critical)
    with pytest.raises(ValueError, match="observables"):
        compare_ensembles(critical, critical, observables=["entropy"])
