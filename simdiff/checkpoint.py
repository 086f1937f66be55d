"""Checkpoints: ``weights.safetensors`` + ``meta.json`` in one directory, written atomically. Never pickle.

Layout of a checkpoint directory::

    <dir>/weights.safetensors   every tensor (model, EMA, optimizer moments, ...), flat names
    <dir>/meta.json             {"format_version", "weights_sha256", "weights_bytes", ...caller's metadata}

Atomicity: :func:`save_checkpoint` writes a complete sibling directory ``.<name>.tmp`` first, then swaps it in
with two renames (``<name> -> .<name>.old``, ``.tmp -> <name>``) and deletes the old one. A kill at any moment
leaves either the new or the previous complete checkpoint; :func:`resolve_checkpoint_dir` finds the previous
one if the kill fell between the two renames. ``meta.json`` records the SHA-256 of the weights file, so a
truncated or corrupted file is reported, never silently loaded.

Arbitrary nested state (optimizer ``state_dict()``, EMA bookkeeping, schedulers) is split by
:func:`pack_state` into tensors (stored in safetensors) and a JSON skeleton (stored in ``meta.json``), and
rebuilt exactly by :func:`unpack_state`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from simdiff.errors import CheckpointError
from simdiff.utils.io import atomic_write_bytes, to_json

#: Bump when the on-disk layout changes incompatibly; loaders refuse other versions.
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"
_RESERVED = ("format_version", "weights_sha256", "weights_bytes")


# ------------------------------------------------------------------------------------------- save / load
def _tmp_and_old(path: Path) -> tuple[Path, Path]:
    return path.parent / f".{path.name}.tmp", path.parent / f".{path.name}.old"


def resolve_checkpoint_dir(path_dir: str | os.PathLike) -> Path | None:
    """The directory to load from: ``path_dir`` if it holds a checkpoint, else a previous checkpoint left
    by a save that was killed between its two renames, else ``None``."""
    path = Path(path_dir)
    if (path / META_FILE).exists():
        return path
    _, old = _tmp_and_old(path)
    if not path.exists() and (old / META_FILE).exists():
        return old
    return None


def save_checkpoint(path_dir: str | os.PathLike, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and JSON-able ``meta`` as a checkpoint directory, replacing any previous one atomically.

    Tensors are copied to contiguous CPU memory (shared storage, e.g. tied weights, is stored twice).
    ``meta`` must not use the reserved keys ``format_version``, ``weights_sha256``, ``weights_bytes``.
    """
    from safetensors.torch import save as st_save

    path = Path(path_dir)
    clash = [k for k in _RESERVED if k in meta]
    if clash:
        raise ValueError(f"meta: keys {clash} are reserved for the checkpoint format, received them in meta")
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise TypeError(f"tensors: expected a mapping str -> Tensor, received bad entries {bad[:5]}")
    blob = st_save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})
    full_meta = {"format_version": FORMAT_VERSION, "weights_sha256": hashlib.sha256(blob).hexdigest(),
                 "weights_bytes": len(blob), **meta}
    meta_text = to_json(full_meta)  # serialise before touching the disk: a bad meta must not leave debris

    tmp, old = _tmp_and_old(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_write_bytes(tmp / WEIGHTS_FILE, blob)
    atomic_write_bytes(tmp / META_FILE, meta_text.encode("utf-8"))
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    # A kill here leaves no <name> but a complete .<name>.old, which resolve_checkpoint_dir falls back to.
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(path: Path) -> None:
    # Make the renames durable; not every platform can open a directory, which is fine to skip.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_meta(path_dir: str | os.PathLike) -> dict:
    """Read and validate ``meta.json`` only (cheap: does not read the weights)."""
    return _read_meta(path_dir)[1]


def _read_meta(path_dir: str | os.PathLike) -> tuple[Path, dict]:
    path = Path(path_dir)
    src = resolve_checkpoint_dir(path)
    if src is None:
        if not path.exists():
            raise CheckpointError(f"{path}: no checkpoint here (directory does not exist)")
        raise CheckpointError(f"{path}: not a checkpoint ({META_FILE} is missing)")
    try:
        meta = json.loads((src / META_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{src / META_FILE}: corrupt metadata, not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise CheckpointError(f"{src / META_FILE}: not a simdiff checkpoint (no format_version)")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{src}: checkpoint format version {meta['format_version']!r} is not supported; "
                              f"expected version {FORMAT_VERSION}")
    return src, meta


def load_checkpoint(path_dir: str | os.PathLike, verify: bool = True) -> tuple[dict[str, Tensor], dict]:
    """Load ``(tensors, meta)`` from a checkpoint directory (tensors on CPU).

    Raises :class:`~simdiff.errors.CheckpointError` naming the file and the problem when the directory or a
    file is missing, truncated, corrupt, or of another format version. ``verify`` checks the SHA-256.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    src, meta = _read_meta(path_dir)
    wpath = src / WEIGHTS_FILE
    if not wpath.exists():
        raise CheckpointError(f"{wpath}: weights file is missing")
    blob = wpath.read_bytes()
    if len(blob) != meta.get("weights_bytes"):
        raise CheckpointError(f"{wpath}: truncated or altered weights file: expected {meta.get('weights_bytes')} "
                              f"bytes, received {len(blob)}")
    if verify and hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise CheckpointError(f"{wpath}: corrupt weights file (SHA-256 does not match {META_FILE})")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{wpath}: corrupt weights file ({exc})") from exc
    return tensors, meta


# ------------------------------------------------------------------------------------------ compatibility
def _flatten_dict(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, Mapping):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(_flatten_dict(v, key))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_diff(stored: Mapping, expected: Mapping, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human-readable differences between two nested config dicts (dotted keys), ignoring ``ignore`` prefixes."""
    a, b = _flatten_dict(stored), _flatten_dict(expected)
    lines = []
    for key in sorted(set(a) | set(b)):
        if any(key == p or key.startswith(p + ".") for p in ignore):
            continue
        if key not in a:
            lines.append(f"{key}: missing in checkpoint, expected {b[key]!r}")
        elif key not in b:
            lines.append(f"{key}: checkpoint has {a[key]!r}, not in the expected config")
        elif a[key] != b[key]:
            lines.append(f"{key}: checkpoint has {a[key]!r}, expected {b[key]!r}")
    return lines


def check_compatible(meta: Mapping, expected_config: Mapping, ignore: tuple[str, ...] = (),
                     key: str = "config") -> None:
    """Raise :class:`CheckpointError` listing every key where ``meta[key]`` differs from ``expected_config``."""
    if key not in meta or not isinstance(meta[key], Mapping):
        raise CheckpointError(f"checkpoint metadata has no '{key}' mapping to compare against")
    diff = config_diff(meta[key], expected_config, ignore)
    if diff:
        raise CheckpointError("checkpoint does not match the config:\n  " + "\n  ".join(diff))


# ------------------------------------------------------------------------------- nested state <-> tensors
def pack_state(prefix: str, state: Any) -> tuple[dict[str, Tensor], Any]:
    """Split nested ``state`` (dicts, lists, tuples, scalars, tensors) into ``(tensors, skeleton)``.

    Tensors go to ``tensors`` under ``prefix + "/"``-joined paths; ``skeleton`` is JSON-able and marks them as
    ``{"__tensor__": name}``. Tuples and dicts with non-string keys (e.g. ``optimizer.state_dict()["state"]``,
    keyed by int) are tagged so :func:`unpack_state` restores them exactly.
    """
    tensors: dict[str, Tensor] = {}

    def rec(obj: Any, path: str) -> Any:
        if isinstance(obj, Tensor):
            if path in tensors:
                raise ValueError(f"pack_state: two entries map to the tensor name {path!r}")
            tensors[path] = obj.detach()
            return {"__tensor__": path}
        if isinstance(obj, Mapping):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: rec(v, f"{path}/{k}") for k, v in obj.items()}
            for k in obj:
                if not isinstance(k, (str, int, float, bool)) or k is None:
                    raise TypeError(f"pack_state: unsupported key {k!r} at {path!r}")
            return {"__items__": [[k, rec(v, f"{path}/{k}")] for k, v in obj.items()]}
        if isinstance(obj, tuple):
            return {"__tuple__": [rec(v, f"{path}/{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [rec(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"pack_state: cannot store {type(obj).__name__} at {path!r} without pickling; "
                        "convert it to tensors, numbers, strings, lists or dicts")

    skeleton = rec(state, prefix)
    return tensors, skeleton


def unpack_state(skeleton: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`pack_state`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            name = skeleton["__tensor__"]
            if name not in tensors:
                raise CheckpointError(f"checkpoint is missing tensor {name!r}")
            return tensors[name]
        if set(skeleton) == {"__tuple__"}:
            return tuple(unpack_state(v, tensors) for v in skeleton["__tuple__"])
        if set(skeleton) == {"__items__"}:
            return {k: unpack_state(v, tensors) for k, v in skeleton["__items__"]}
        return {k: unpack_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unpack_state(v, tensors) for v in skeleton]
    return skeleton


def module_tensors(prefix: str, module: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{prefix + "/" + name: tensor}`` for a module's ``state_dict()`` (or a given state dict)."""
    state = module.state_dict() if isinstance(module, nn.Module) else module
    return {f"{prefix}/{k}": v for k, v in state.items()}


def load_module_tensors(module: nn.Module, prefix: str, tensors: Mapping[str, Tensor],
                        strict: bool = True) -> None:
    """Load the ``prefix/...`` entries of ``tensors`` into ``module``; mismatches raise CheckpointError."""
    head = f"{prefix}/"
    state = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
    if not state:
        raise CheckpointError(f"checkpoint has no tensors under '{prefix}/' (found prefixes: "
                              f"{sorted({k.split('/', 1)[0] for k in tensors})})")
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint '{prefix}' does not fit {type(module).__name__}: {exc}") from exc


def optimizer_to_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], Any]:
    """``pack_state(prefix, optimizer.state_dict())``: moments as tensors, hyper-parameters as JSON."""
    return pack_state(prefix, optimizer.state_dict())


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, skeleton: Any,
                           tensors: Mapping[str, Tensor]) -> None:
    """Restore an optimizer from :func:`optimizer_to_tensors` output (state is moved to the params' device)."""
    try:
        optimizer.load_state_dict(unpack_state(skeleton, tensors))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"optimizer state does not fit {type(optimizer).__name__}: {exc}") from exc


def load_weights(module: nn.Module, path_dir: str | os.PathLike, prefix: str = "ema") -> dict:
    """Load one module's weights (``prefix`` = ``"ema"`` or ``"model"`` for :func:`simdiff.training.train`
    checkpoints) into ``module``; returns the checkpoint's metadata."""
    tensors, meta = load_checkpoint(path_dir)
    load_module_tensors(module, prefix, tensors)
    return meta


__all__ = [
    "FORMAT_VERSION", "WEIGHTS_FILE", "META_FILE", "save_checkpoint", "load_checkpoint", "read_meta",
    "resolve_checkpoint_dir", "check_compatible", "config_diff", "pack_state", "unpack_state",
    "module_tensors", "load_module_tensors", "optimizer_to_tensors", "load_optimizer_tensors", "load_weights",
]
