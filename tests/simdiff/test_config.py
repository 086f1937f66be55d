from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from simdiff.config import ConfigError, check_range, dump_yaml, load_config, parse_overrides, to_dict


@dataclass(frozen=True)
class Net:
    hidden: int = 64
    depth: int = 2
    act: Literal["relu", "silu"] = "silu"

    def __post_init__(self) -> None:
        check_range("hidden", self.hidden, lo=1)


@dataclass(frozen=True)
class Cfg:
    name: str = "run"
    lr: float = 1e-3
    steps: int = 100
    use_ema: bool = True
    dims: tuple[int, int] = (4, 8)
    widths: tuple[int, ...] = ()
    mode: Literal[0, 1] = 0
    net: Net = field(default_factory=Net)
    head: Net | None = None
    clip: float | None = None
    tags: dict[str, float] = field(default_factory=dict)
    raw: tuple = ()


@dataclass(frozen=True)
class Needs:
    path: str
    seed: int = 0


def test_defaults_yaml_and_round_trip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 1e-4\nsteps: 20\ndims: [1, 2]\nwidths: [3, 4, 5]\nnet: {hidden: 32, act: relu}\n"
                 "head: {depth: 5}\ntags: {a: 1}\nraw: [1, x]\n")
    cfg = load_config(Cfg, p)
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)                     # YAML reads 1e-4 as a string
    assert cfg.dims == (1, 2) and cfg.widths == (3, 4, 5) and cfg.raw == (1, "x")
    assert cfg.net == Net(hidden=32, act="relu") and cfg.head == Net(depth=5)
    assert cfg.tags == {"a": 1.0} and cfg.clip is None
    with pytest.raises(AttributeError):
        cfg.lr = 1.0                                                          # frozen
    dumped = tmp_path / "out.yaml"
    dump_yaml(cfg, dumped)
    assert load_config(Cfg, dumped) == cfg
    assert yaml.safe_load(dumped.read_text())["dims"] == [1, 2] and to_dict(cfg)["net"]["hidden"] == 32
    assert load_config(Cfg) == Cfg() and load_config(Cfg, {}) == Cfg()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"setps": 3}, "unknown key 'setps' (did you mean 'steps'?); valid keys: name, lr, steps"),
        ({"net": {"hiden": 3}}, "net: unknown key 'hiden' (did you mean 'hidden'?)"),
        ({"head": {"hiden": 3}}, "head: unknown key 'hiden' (did you mean 'hidden'?)"),      # inside Optional
        ({"zzz": 3}, "unknown key 'zzz'; valid keys:"),
        ({"steps": "many"}, "steps: expected int, received 'many'"),
        ({"steps": 2.5}, "steps: expected int, received 2.5"),
        ({"steps": True}, "steps: expected int, received True"),
        ({"lr": "fast"}, "lr: expected float, received 'fast'"),
        ({"use_ema": "yes please"}, "use_ema: expected bool (true/false), received 'yes please'"),
        ({"name": 3}, "name: expected str, received 3"),
        ({"dims": [1, 2, 3]}, "dims: expected 2 items, received 3 ([1, 2, 3])"),
        ({"dims": 5}, "dims: expected a list, received 5"),
        ({"widths": [1, "a"]}, "widths[1]: expected int, received 'a'"),
        ({"mode": 2}, "mode: expected one of 0, 1, received 2"),
        ({"mode": True}, "mode: expected one of 0, 1, received True"),
        ({"net": {"act": "gelu"}}, "net.act: expected one of 'relu', 'silu', received 'gelu'"),
        ({"net": {"hidden": 0}}, "net: hidden: expected a value in [1, inf], received 0"),
        ({"net": 3}, "net: expected a mapping for Net, received 3"),
        ({"clip": "x"}, "clip: expected float | None, received 'x'"),
        ({"tags": {"a": "b"}}, "tags.a: expected float, received 'b'"),
    ],
)
def test_strict_errors_say_expected_and_received(data, message):
    with pytest.raises(ConfigError) as info:
        load_config(Cfg, data)
    assert message in str(info.value)
    assert not str(info.value).startswith(":")


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match="missing required key 'path'"):
        load_config(Needs, {"seed": 1})
    assert load_config(Needs, {"path": "a"}) == Needs("a")


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("steps: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Cfg, p)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping at top level, received list"):
        load_config(Cfg, p)
    p.write_text("stpes: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'stpes' \(did you mean 'steps'\?\)"):
        load_config(Cfg, p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(Cfg, tmp_path / "none.yaml")
    with pytest.raises(TypeError, match="schema must be a dataclass type"):
        load_config(dict, {})


def test_overrides_merge_into_nested_values(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 20\nnet: {hidden: 32, depth: 3}\n")
    ov = parse_overrides(["net.hidden=128", "lr=2e-3", "dims=[5, 6]", "use_ema=false", "clip=null"])
    assert ov == {"net": {"hidden": 128}, "lr": "2e-3", "dims": [5, 6], "use_ema": False, "clip": None}
    cfg = load_config(Cfg, p, ov)
    assert cfg.net == Net(hidden=128, depth=3) and cfg.steps == 20 and cfg.lr == 2e-3
    assert cfg.dims == (5, 6) and cfg.use_ema is False
    with pytest.raises(ConfigError, match=r"net: unknown key 'hiden' \(did you mean 'hidden'\?\)"):
        load_config(Cfg, p, parse_overrides(["net.hiden=1"]))
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["steps"])
    with pytest.raises(ConfigError, match=r"override 'name=\[oops': expected a YAML value"):
        parse_overrides(["name=[oops"])
    with pytest.raises(ConfigError, match="net was set to a value by an earlier override"):
        parse_overrides(["net=3", "net.hidden=4"])


def test_check_range_messages():
    check_range("p", 0.5, lo=0, hi=1)
    with pytest.raises(ValueError, match=r"p: expected a value in \(0, 1\), received 1"):
        check_range("p", 1, lo=0, hi=1, lo_open=True, hi_open=True)
    with pytest.raises(ValueError, match=r"n: expected a value in \[-inf, 3\], received 4"):
        check_range("n", 4, hi=3)


def test_a_repeated_key_in_a_config_file_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 20\nnet:\n  hidden: 32\n  hidden: 64\n")
    with pytest.raises(ConfigError, match=r"(?s)c.yaml: not valid YAML.*duplicate key 'hidden' \(first on line 3\)"):
        load_config(Cfg, p)
    p.write_text("steps: 20\nnet: {hidden: 32}\n")
    assert load_config(Cfg, p).net.hidden == 32


def test_an_empty_config_file_is_an_error_and_an_empty_mapping_runs_the_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("")
    with pytest.raises(ConfigError, match="c.yaml: the file is empty"):
        load_config(Cfg, p)
    p.write_text("{}\n")
    assert load_config(Cfg, p) == Cfg()
