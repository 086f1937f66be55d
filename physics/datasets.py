"""Spin datasets on disk: ``.npz`` files read with ``allow_pickle=False``.

Layout (format_version 1):
  spins            int8 (N, L, L), values +-1 (required)
  metadata         0-d unicode array holding a JSON object (L, temperature, algorithm, seed, tau_int_*, thin, ...)
  format_version   0-d int
  <scalar keys>    every int / float / str / bool metadata entry also as a 0-d array, so ``np.load(f)["L"]``
                   works without parsing JSON
  <extra arrays>   optional per-sample arrays with leading dimension N (e.g. energy, magnetization, chain)

Files are written atomically and never over an existing file unless ``overwrite``.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simdiff.errors import DatasetError
from simdiff.utils.io import atomic_write_bytes, ensure_new_path, read_npz

FORMAT_VERSION = 1
_RESERVED = ("spins", "metadata", "format_version")


@dataclass
class SpinDataset:
    """spins (N, L, L) int8 +-1, metadata (plain JSON dict) and optional per-sample arrays (leading dim N)."""

    spins: np.ndarray
    metadata: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def L(self) -> int:
        return int(self.spins.shape[1])

    @property
    def temperature(self) -> float | None:
        t = self.metadata.get("temperature")
        return None if t is None else float(t)


def check_spins(spins: np.ndarray, name: str = "spins") -> np.ndarray:
    """Validate (N, L, L) int8 +-1 spins (N >= 1, L >= 2)."""
    spins = np.asarray(spins)
    if spins.ndim != 3 or spins.shape[1] != spins.shape[2] or spins.shape[0] < 1 or spins.shape[1] < 2:
        raise DatasetError(f"{name}: expected shape (N, L, L) with N >= 1 and L >= 2, received {spins.shape}")
    if spins.dtype != np.int8:
        raise DatasetError(f"{name}: expected dtype int8, received {spins.dtype}")
    if not np.all(np.abs(spins) == 1):
        bad = np.unique(spins[np.abs(spins) != 1])[:5].tolist()
        raise DatasetError(f"{name}: expected values +-1 only, found {bad}")
    return spins


def _clean(value):
    """Metadata value -> plain JSON (NaN -> None); TypeError for anything that is not plain data."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"metadata: expected plain JSON values, received {type(value).__name__}")


def save_spins(path: str | Path, spins: np.ndarray, metadata: dict | None = None, overwrite: bool = False,
               arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write an ``.npz`` spin dataset atomically. Raises before writing anything if an input is invalid."""
    path = Path(path)
    if path.suffix != ".npz":
        raise DatasetError(f"{path}: expected a file name ending in .npz")
    ensure_new_path(path, overwrite)
    spins = check_spins(spins)
    meta = _clean(dict(metadata or {}))
    out: dict[str, np.ndarray] = {"spins": spins, "metadata": np.array(json.dumps(meta)),
                                  "format_version": np.array(FORMAT_VERSION)}
    for key, value in meta.items():
        if key in _RESERVED:
            raise DatasetError(f"metadata: key {key!r} is reserved")
        if isinstance(value, (bool, int, float, str)):
            out[key] = np.array(value)
    for key, value in (arrays or {}).items():
        value = np.asarray(value)
        if key in out:
            raise DatasetError(f"arrays: key {key!r} clashes with a metadata or reserved key")
        if value.dtype == object or value.ndim == 0 or value.shape[0] != spins.shape[0]:
            raise DatasetError(f"arrays[{key!r}]: expected a numeric array with leading dimension "
                               f"{spins.shape[0]}, received dtype {value.dtype} shape {value.shape}")
        out[key] = value
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    return atomic_write_bytes(path, buf.getvalue())


def load_spins(path: str | Path) -> SpinDataset:
    """Read and validate a spin dataset; clear errors for missing, corrupt or malformed files."""
    path = Path(path)
    arrays = read_npz(path, what="a spin dataset")
    if "spins" not in arrays:
        raise DatasetError(f"{path}: no 'spins' array; keys found: {sorted(arrays)}")
    spins = arrays.pop("spins")
    if np.issubdtype(spins.dtype, np.integer) and spins.dtype != np.int8 and np.all(np.abs(spins) == 1):
        spins = spins.astype(np.int8)  # older or hand-made files with wider integers are fine
    spins = check_spins(spins, f"{path}: spins")
    meta = _read_metadata(path, arrays)
    n = spins.shape[0]
    extras = {k: v for k, v in arrays.items()
              if k not in _RESERVED and k not in meta and v.ndim >= 1 and v.shape[0] == n}
    return SpinDataset(spins, meta, extras)


def _read_metadata(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    if "metadata" in arrays:
        raw = arrays["metadata"]
        try:
            meta = json.loads(str(raw.item() if raw.ndim == 0 else raw))
        except (json.JSONDecodeError, ValueError) as exc:
            raise DatasetError(f"{path}: 'metadata' is not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise DatasetError(f"{path}: 'metadata' must be a JSON object, found {type(meta).__name__}")
        return meta
    # Files without the JSON entry: take the 0-d arrays as metadata.
    return {k: v.item() for k, v in arrays.items() if v.ndim == 0 and k not in _RESERVED}
