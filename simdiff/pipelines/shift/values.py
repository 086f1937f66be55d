"""Parameter values for sweeps and grids: parsing ``--values`` and checking them against an env's domain.

``--values`` takes a range ``START:STOP:N`` (N evenly spaced values, both ends included, like
``numpy.linspace``) or a comma list ``0.5,1,2``. Integer parameters (e.g. ``action_delay``) need integer
values only (``0:8:9`` or ``0,2,4``). Everything is checked against the
domain spec (parameter name, the physical bounds) *before* anything runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def parse_values(text: str) -> list[float]:
    """``"0.2:2.0:10"`` -> 10 values from 0.2 to 2.0 inclusive; ``"0.5,1,2"`` -> [0.5, 1.0, 2.0]."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"--values: expected START:STOP:N or a comma list like 0.5,1,2, received {text!r}")
    s = text.strip()
    if ":" in s:
        parts = s.split(":")
        if len(parts) != 3:
            raise ValueError(f"--values: a range is START:STOP:N (three fields), received {text!r}")
        start, stop = _number(parts[0], text), _number(parts[1], text)
        try:
            n = int(parts[2])
        except ValueError:
            raise ValueError(f"--values: N in START:STOP:N must be an integer, received {parts[2]!r}") from None
        if n < 1:
            raise ValueError(f"--values: N in START:STOP:N must be at least 1, received {n}")
        if n == 1 and start != stop:
            raise ValueError(f"--values: N=1 needs START == STOP, received {text!r}")
        vals = [float(v) for v in np.linspace(start, stop, n)]
    else:
        vals = [_number(p, text) for p in s.split(",") if p.strip()]
        if not vals:
            raise ValueError(f"--values: expected at least one number, received {text!r}")
    if len(set(vals)) != len(vals):
        raise ValueError(f"--values: expected distinct values, received {text!r}")
    return vals


def _number(p: str, text: str) -> float:
    try:
        v = float(p)
    except ValueError:
        raise ValueError(f"--values: {p.strip()!r} is not a number (in {text!r})") from None
    if not math.isfinite(v):
        raise ValueError(f"--values: expected finite numbers, received {p.strip()!r}")
    return v


def check_param_values(spec: Any, name: str, values: list[float], *, option: str = "--values") -> list[float | int]:
    """Validate ``values`` of parameter ``name`` against ``spec`` (an :class:`envs.domains.DomainSpec`).

    Unknown names raise listing the valid ones; values outside the physical bounds raise naming the bounds and
    the offending values; integer parameters accept integer values only. Returns the values with the parameter's type.
    """
    if name not in spec.names:
        import difflib

        close = difflib.get_close_matches(str(name), spec.names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"--param: unknown domain parameter {name!r}{hint}; valid names: {', '.join(spec.names)}")
    p = spec[name]
    lo, hi = p.bounds
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        unit = f" {p.unit}" if p.unit else ""
        raise ValueError(f"{option} for {name!r}: the physics accepts [{lo:g}, {hi:g}]{unit}; received "
                         f"{', '.join(f'{v:g}' for v in bad)} outside it")
    if not p.integer:
        out: list[float | int] = [float(v) for v in values]
    else:
        out = [int(round(v)) for v in values]
        frac = [v for v, i in zip(values, out) if abs(v - i) > 1e-9]
        if frac:
            raise ValueError(f"{option} for {name!r}: the parameter takes integers; received "
                             f"{', '.join(f'{v:g}' for v in frac)} (use e.g. 0:8:9 or 0,1,2,4,8)")
    for v in out:  # the env's own validation is the authority on what the physics accepts
        spec.validate({name: v})
    return out


def classify_value(spec: Any, name: str, value: float) -> str:
    """``"level_K"`` for the smallest level whose range holds ``value``, ``"shift"`` for the held-out shift
    range, ``"outside"`` otherwise (beyond every level and the shift range, still physically valid)."""
    p = spec[name]
    for k, (lo, hi) in enumerate(p.levels):
        if lo <= value <= hi:
            return f"level_{k}"
    if any(lo <= value <= hi for lo, hi in p.shift):
        return "shift"
    return "outside"


def is_shift(tag: str) -> bool:
    """True when a value lies outside every trained level (the held-out shift range or beyond)."""
    return not tag.startswith("level_")
