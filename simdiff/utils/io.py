"""Atomic file writes, small JSON helpers and a checked ``.npz`` reader.

Every artifact is written to a temporary file in the same directory and moved into place with ``os.replace``,
so a kill mid-write never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _default_mode() -> int:
    # mkstemp creates files 0600; give artifacts the usual permissions the user's umask allows.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    # numpy / torch scalars and arrays appear in metrics; store them as plain numbers/lists.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def read_npz(path: str | os.PathLike, required: Sequence[str] = (), what: str = "an .npz file") -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path`` (never unpickling), with ``DatasetError`` naming the file
    when it is missing, truncated, corrupt (bad CRC), not an archive or lacks one of ``required``."""
    import zipfile

    from simdiff.errors import DatasetError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected {what})")
    if path.is_dir():
        raise DatasetError(f"{path}: expected {what}, found a directory")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise DatasetError(f"{path}: expected {what} (an .npz archive), found a single .npy array")
            arrays = {key: data[key] for key in data.files}
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        # numpy reports a file that is no archive at all as "pickled data": say what it is instead.
        why = "not an .npz archive" if "pickle" in str(exc) else f"{type(exc).__name__}: {exc}"
        raise DatasetError(f"{path}: not a readable .npz file, truncated or corrupt ({why}); expected {what}") from exc
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DatasetError(f"{path}: expected {what} with arrays {list(required)}; missing {missing}, "
                           f"found {sorted(arrays)}")
    return arrays


def ensure_new_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse to clobber an existing output unless ``overwrite`` is set."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    return path


def ensure_new_npz_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """An ``--out FILE.npz``: a name ending in ``.npz`` that is not a directory (see :func:`ensure_new_path`)."""
    out = Path(path)
    if out.suffix != ".npz":
        raise ValueError(f"--out: expected a file name ending in .npz, received {str(path)!r}")
    if out.is_dir():
        raise ValueError(f"--out {path}: expected a file name ending in .npz, found a directory")
    return ensure_new_path(out, overwrite)
