from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import envs
from envs.domains import DomainSpec, param, parse_level


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_levels_nested_nominal_inside_and_shift_outside(env_id):
    spec = envs.domain_spec(env_id)  # works without robosuite for Lift-v0
    assert len(spec) >= 8
    for p in spec.params:
        lo0, hi0 = p.levels[0]
        assert lo0 <= p.nominal <= hi0
        for k in range(1, 4):
            assert p.levels[k][0] <= p.levels[k - 1][0] and p.levels[k - 1][1] <= p.levels[k][1]
        lo3, hi3 = p.levels[3]
        assert all(hi <= lo3 or lo >= hi3 for lo, hi in p.shift)
        assert p.levels[3] != p.levels[0], f"{p.name} does not widen"
    d = spec.describe()
    assert d["names"] == list(spec.names)
    assert set(d["params"][spec.names[0]]) >= {"nominal", "levels", "shift", "bounds"}


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
@pytest.mark.parametrize("level", [0, 1, 2, 3, "shift"])
def test_samples_respect_level(env_id, level):
    spec = envs.domain_spec(env_id)
    rng = np.random.default_rng(0)
    for _ in range(200):
        dom = spec.sample(level, rng)
        for p in spec.params:
            v = getattr(dom, p.name)
            assert any(lo <= v <= hi for lo, hi in p.ranges(level)), (p.name, v, level)
            if level == "shift":
                assert spec.level_of(p.name, v) in ("shift", 3)  # endpoints touch level 3


def test_shift_covers_both_sides_when_declared():
    spec = envs.domain_spec("simdiff/Push-v0")
    rng = np.random.default_rng(1)
    masses = [spec.sample("shift", rng).box_mass for _ in range(300)]
    lo3, hi3 = spec["box_mass"].levels[3]
    assert min(masses) < lo3 and max(masses) > hi3


def test_overrides_exact_and_other_parameters_unchanged():
    spec = envs.domain_spec("simdiff/Push-v0")
    a = spec.sample(2, np.random.default_rng(5))
    b = spec.sample(2, np.random.default_rng(5), {"friction": 0.321})
    assert b.friction == 0.321
    for name in spec.names:
        if name != "friction":
            assert getattr(a, name) == getattr(b, name)
    assert spec.sample(None, np.random.default_rng(0)) == spec.nominal()


def test_unknown_and_out_of_range_parameters_fail_clearly():
    spec = envs.domain_spec("simdiff/Push-v0")
    with pytest.raises(ValueError, match="valid names: box_mass, friction"):
        spec.validate({"frction": 0.3})
    with pytest.raises(ValueError, match="did you mean 'friction'"):
        spec.validate({"frction": 0.3})
    with pytest.raises(ValueError, match=r"must be in \[0.01, 20\] kg; received -1"):
        spec.validate({"box_mass": -1.0})
    with pytest.raises(ValueError, match="expects an integer"):
        spec.validate({"action_delay": 1.5})
    with pytest.raises(TypeError, match="expects a number"):
        spec.validate({"friction": "high"})
    with pytest.raises(ValueError, match="level must be one of"):
        parse_level(7)


def test_normalize_maps_level3_to_unit_interval():
    spec = envs.domain_spec("simdiff/Push-v0")
    lo = spec.make({p.name: p.levels[3][0] for p in spec.params})
    hi = spec.make({p.name: p.levels[3][1] for p in spec.params})
    np.testing.assert_allclose(spec.normalize(lo), -1.0, atol=1e-6)
    np.testing.assert_allclose(spec.normalize(hi), 1.0, atol=1e-6)
    assert spec.normalize(lo).dtype == np.float32


def test_bad_declarations_are_rejected():
    @dataclasses.dataclass(frozen=True)
    class NotNested:
        x: float = param(1.0, [(0.9, 1.1), (0.95, 1.2), (0.5, 1.5), (0.1, 2.0)], [(2.0, 3.0)], (0.0, 5.0))

    with pytest.raises(ValueError, match="not inside level 1"):
        DomainSpec(NotNested)

    @dataclasses.dataclass(frozen=True)
    class ShiftInside:
        x: float = param(1.0, [(0.9, 1.1), (0.8, 1.2), (0.5, 1.5), (0.1, 2.0)], [(1.5, 3.0)], (0.0, 5.0))

    with pytest.raises(ValueError, match="overlaps level 3"):
        DomainSpec(ShiftInside)
