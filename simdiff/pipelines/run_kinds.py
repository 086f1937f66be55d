"""Which command made a run directory: a run handed to the wrong command is named as what it is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _run_schemas() -> dict[str, type]:
    """The config schema of each command that writes a run directory with a ``config.yaml``."""
    from policies.critic.config import CriticConfig
    from policies.diffusion.config import DiffusionPolicyConfig
    from simdiff.pipelines.ddm.config import DDMConfig
    from simdiff.pipelines.mol.config import MolConfig
    from simdiff.pipelines.planner import PlannerTrainConfig
    from simdiff.pipelines.skild.config import SkildConfig

    return {"simdiff skild train": SkildConfig, "simdiff ddm train": DDMConfig, "simdiff mol run": MolConfig,
            "simdiff policy train": DiffusionPolicyConfig, "simdiff planner train": PlannerTrainConfig,
            "simdiff critic train": CriticConfig}


def commands_for_config(data: Any, exclude: str | None = None) -> list[str]:
    """Commands whose config schema has every top-level section of ``data`` (a loaded ``config.yaml``).

    Used to say which command made a run directory handed to the wrong one. Sections every schema shares
    (``name``, ``seed``) say nothing, so a dict of only those matches no command.
    """
    import dataclasses

    if not isinstance(data, dict):
        return []
    keys = set(data) - {"name", "seed", "note"}
    if not keys:
        return []
    return [cmd for cmd, schema in _run_schemas().items()
            if cmd != exclude and keys <= {f.name for f in dataclasses.fields(schema)}]


def wrong_run_hint(run_dir: str | os.PathLike, expected: str) -> str:
    """`` (it holds a run of `simdiff X`)`` when ``run_dir/config.yaml`` fits another command's schema, else ``""``.

    Call it once the config failed to load as ``expected``'s: a dict of shared sections fits several schemas.
    """
    import yaml

    try:
        data = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""
    others = commands_for_config(data, exclude=expected)
    return f" (it holds a run of `{'` or `'.join(others)}`)" if others else ""
