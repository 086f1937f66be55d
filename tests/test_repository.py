"""Repository-wide checks: the layering contract and the lint rules hold for every package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"'{name}' is not installed: install the test extra (pip install -e '.[test]')")
    return path


def test_import_layers_hold():
    res = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_ruff_is_clean():
    targets = ["simdiff", "envs", "physics", "policies", "tests", "bench"]
    res = subprocess.run([_tool("ruff"), "check", *targets], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:]


def test_no_pickle_based_persistence():
    # Loading a file must never execute code from it: no torch.load or pickle.load for artifacts
    # (pickling for in-memory inter-process calls, as the executor does, is fine).
    offenders = []
    for pkg in ("simdiff", "envs", "physics", "policies"):
        for f in (ROOT / pkg).rglob("*.py"):
            text = f.read_text(encoding="utf-8")
            for bad in ("pickle.load", "torch.load(", "allow_pickle=True", "yaml.load(", "cloudpickle"):
                if bad in text:
                    offenders.append(f"{f.relative_to(ROOT)}: {bad}")
    assert not offenders, offenders


def test_shipped_configs_hold_no_absolute_paths():
    # A config in configs/ must run on any checkout: file paths in it are relative (or null), never one machine's.
    import yaml

    def paths(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from paths(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from paths(v, f"{where}[{i}]")
        elif isinstance(node, str) and Path(node).is_absolute():
            yield f"{where} = {node}"

    offenders = [hit for f in sorted((ROOT / "configs").rglob("*.yaml"))
                 for hit in paths(yaml.safe_load(f.read_text(encoding="utf-8")), str(f.relative_to(ROOT)))]
    assert not offenders, "absolute paths in shipped configs:\n" + "\n".join(offenders)
