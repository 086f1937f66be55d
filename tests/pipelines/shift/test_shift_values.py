"""Parsing --values and checking them against the env's domain before anything runs."""

from __future__ import annotations

import pytest

from simdiff.pipelines.shift.values import check_param_values, classify_value, parse_values


def test_parse_range_and_list():
    assert parse_values("0.2:2.0:10") == pytest.approx([0.2 + 0.2 * i for i in range(10)])
    assert parse_values("0.5,1,2") == [0.5, 1.0, 2.0]
    assert parse_values(" 3 ") == [3.0]
    assert parse_values("1:1:1") == [1.0]
    assert parse_values("2:0:3") == [2.0, 1.0, 0.0]


@pytest.mark.parametrize("text, match", [
    ("", "START:STOP:N"), ("1:2", "three fields"), ("1:2:x", "integer"), ("1:2:0", "at least 1"),
    ("1:2:1", "START == STOP"), ("a,b", "not a number"), ("1,nan", "finite"), ("1,1", "distinct"),
])
def test_parse_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_values(text)


@pytest.fixture(scope="module")
def push_spec():
    import envs  # noqa: F401
    from envs.registry import domain_spec

    return domain_spec("simdiff/Push-v0")


def test_unknown_parameter_lists_valid_names(push_spec):
    with pytest.raises(ValueError) as exc:
        check_param_values(push_spec, "frictoin", [0.5])
    msg = str(exc.value)
    assert "did you mean 'friction'" in msg
    for name in push_spec.names:
        assert name in msg


def test_values_outside_the_physics_are_refused(push_spec):
    lo, hi = push_spec["friction"].bounds
    with pytest.raises(ValueError, match=r"physics accepts \[0, 3\].*4"):
        check_param_values(push_spec, "friction", [0.5, hi + 1.0])
    with pytest.raises(ValueError, match="physics accepts"):
        check_param_values(push_spec, "box_mass", [-1.0])
    assert check_param_values(push_spec, "friction", [lo, hi]) == [lo, hi]


def test_integer_parameters(push_spec):
    assert check_param_values(push_spec, "action_delay", parse_values("0:8:5")) == [0, 2, 4, 6, 8]
    assert all(isinstance(v, int) for v in check_param_values(push_spec, "action_delay", [0.0, 3.0]))
    with pytest.raises(ValueError, match="integers"):
        check_param_values(push_spec, "action_delay", parse_values("0:10:4"))


def test_classify_value(push_spec):
    p = push_spec["box_mass"]
    assert classify_value(push_spec, "box_mass", p.nominal) == "level_0"
    assert classify_value(push_spec, "box_mass", p.levels[3][1]) == "level_3"
    assert classify_value(push_spec, "box_mass", p.shift[-1][1]) == "shift"
    assert classify_value(push_spec, "box_mass", p.bounds[1]) == "outside"
