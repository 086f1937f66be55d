from __future__ import annotations

import glob
from pathlib import Path

import yaml

from simdiff.pipelines.run_kinds import commands_for_config


def test_commands_for_config_names_the_command_whose_schema_fits():
    repo = Path(__file__).resolve().parents[2]
    tools = {"skild": "simdiff skild train", "ddm": "simdiff ddm train", "mol": "simdiff mol run",
             "policy": "simdiff policy train", "critic": "simdiff critic train"}
    for path in glob.glob(str(repo / "configs" / "*" / "*.yaml")):
        kind = Path(path).parent.name
        if kind in tools:  # planner files wrap their train section; their runs record the resolved section
            assert commands_for_config(yaml.safe_load(open(path))) == [tools[kind]], path
    assert commands_for_config({"name": "x", "seed": 1}) == []
    assert commands_for_config({"process": {}, "data": {}}, exclude="simdiff skild train") == []
    assert commands_for_config(["not", "a", "dict"]) == []
