"""Progress bars that stay quiet in logs and CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any


def progress_enabled() -> bool:
    if os.environ.get("SIMDIFF_NO_PROGRESS", "") not in ("", "0"):
        return False
    if os.environ.get("SIMDIFF_PROGRESS", "") not in ("", "0"):
        return True
    return sys.stderr.isatty()


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None, **kw: Any):
    """A tqdm bar on stderr, disabled when stderr is not a terminal (set SIMDIFF_PROGRESS=1 to force it)."""
    from tqdm.auto import tqdm

    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("leave", False)
    return tqdm(iterable, total=total, desc=desc, disable=not progress_enabled(), file=sys.stderr, **kw)
