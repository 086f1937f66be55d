"""Run records: every run directory says what produced it (resolved config, seed, versions, command)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from simdiff.utils.io import write_json

_PACKAGES = ("simdiff", "torch", "numpy", "scipy", "numba", "gymnasium", "mujoco", "robosuite", "h5py",
             "safetensors", "ray")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = None
    return out


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parents[2]
    if not (here / ".git").exists():
        return None
    try:
        res = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def record_run(run_dir: str | os.PathLike, config: Any = None, seed: int | None = None,
               command: list[str] | None = None, extra: dict | None = None) -> Path:
    """Write ``config.yaml`` (resolved) and ``run.json`` (seed, versions, command, time) into ``run_dir``."""
    from simdiff.config import dump_yaml

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        dump_yaml(config, run_dir / "config.yaml")
    info = {
        "seed": seed,
        "command": command if command is not None else sys.argv,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git_commit": _git_commit(),
        "platform": platform.platform(),
    }
    if extra:
        info.update(extra)
    write_json(run_dir / "run.json", info)
    return run_dir
