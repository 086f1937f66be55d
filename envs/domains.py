"""Domain parameters: nominal values, four nested difficulty levels and a held-out ``shift`` range.

Every env declares its domain as a frozen dataclass whose fields default to the nominal values and carry
their ranges in ``metadata`` (built with :func:`param`). :class:`DomainSpec` reads that dataclass and does
the rest: it checks that the levels are nested, samples a domain for a level from the env's generator,
validates user overrides (unknown names, wrong types, values the physics cannot take), and maps a domain to
the normalized context vector that goes into the observation.

Levels are ``0`` (narrow, around nominal) ... ``3`` (widest), each a closed interval per parameter with
``level k`` contained in ``level k+1``; ``"shift"`` is a union of intervals outside level 3 (on one or both
sides), held out for evaluating distribution shift. Sampling draws exactly one uniform number per parameter,
in declaration order, whatever the level or overrides, so an override changes only its own parameter and
the rest of the episode (poses, noise) stays the same for the same seed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LEVELS: tuple[int | str, ...] = (0, 1, 2, 3, "shift")
NUM_LEVELS = 4

Interval = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One domain parameter: its nominal value, per-level ranges, shift intervals and physical bounds."""

    name: str
    nominal: float
    levels: tuple[Interval, ...]  # NUM_LEVELS closed intervals, nested
    shift: tuple[Interval, ...]  # intervals outside levels[-1] (touching its ends at most)
    bounds: Interval  # what the physics accepts (closed)
    integer: bool = False
    unit: str = ""
    doc: str = ""

    def ranges(self, level: int | str) -> tuple[Interval, ...]:
        return self.shift if level == "shift" else (self.levels[int(level)],)

    def center_scale(self) -> tuple[float, float]:
        """Affine map used for the context vector: level 3's center and half width."""
        lo, hi = self.levels[-1]
        return 0.5 * (lo + hi), max(0.5 * (hi - lo), 1e-12)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nominal": self.nominal,
            "levels": {str(k): list(r) for k, r in enumerate(self.levels)},
            "shift": [list(r) for r in self.shift],
            "bounds": list(self.bounds),
            "integer": self.integer,
            "unit": self.unit,
            "doc": self.doc,
        }


def param(nominal: float, levels: Sequence[Interval], shift: Sequence[Interval], bounds: Interval, *,
          integer: bool = False, unit: str = "", doc: str = "") -> Any:
    """A dataclass field for a domain parameter; ``DomainSpec`` turns the metadata into a :class:`ParamSpec`."""
    meta = {"levels": tuple(tuple(map(float, r)) for r in levels),
            "shift": tuple(tuple(map(float, r)) for r in shift),
            "bounds": tuple(map(float, bounds)), "integer": integer, "unit": unit, "doc": doc}
    default = int(nominal) if integer else float(nominal)
    return dataclasses.field(default=default, metadata={"domain": meta})


def parse_level(level: int | str | None) -> int | str | None:
    """Accept 0..3, "0".."3", "shift" or None (nominal domain, nothing sampled)."""
    if level is None:
        return None
    if isinstance(level, str):
        if level == "shift":
            return "shift"
        if level.isdigit():
            level = int(level)
    if isinstance(level, (int, np.integer)) and not isinstance(level, bool) and 0 <= int(level) < NUM_LEVELS:
        return int(level)
    raise ValueError(f"level must be one of 0, 1, 2, 3, 'shift' or None; received {level!r}")


class DomainSpec:
    """Sampling, validation and normalization for one env's domain dataclass."""

    def __init__(self, domain_cls: type):
        if not dataclasses.is_dataclass(domain_cls):
            raise TypeError(f"expected a dataclass type, received {domain_cls!r}")
        self.domain_cls = domain_cls
        params = []
        for f in dataclasses.fields(domain_cls):
            meta = f.metadata.get("domain")
            if meta is None:
                raise TypeError(f"{domain_cls.__name__}.{f.name} is not declared with envs.domains.param()")
            params.append(ParamSpec(name=f.name, nominal=f.default, **meta))
        self.params: tuple[ParamSpec, ...] = tuple(params)
        self.names: tuple[str, ...] = tuple(p.name for p in params)
        self._by_name = {p.name: p for p in params}
        for p in self.params:
            _check_param(domain_cls.__name__, p)
        centers, scales = zip(*(p.center_scale() for p in self.params))
        self._center = np.asarray(centers, dtype=np.float64)
        self._scale = np.asarray(scales, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> ParamSpec:
        self._check_name(name)
        return self._by_name[name]

    # -- construction --------------------------------------------------------------------------------------
    def nominal(self) -> Any:
        return self.domain_cls()

    def validate(self, overrides: Mapping[str, Any] | None) -> dict[str, float | int]:
        """Check names, types and physical bounds of user overrides; return them with canonical types."""
        if overrides is None:
            return {}
        if not isinstance(overrides, Mapping):
            raise TypeError(f"domain must be a mapping of parameter name to value; received {type(overrides).__name__}")
        out: dict[str, float | int] = {}
        for name, value in overrides.items():
            spec = self[name]
            out[name] = _coerce(spec, value)
        return out

    def sample(self, level: int | str | None, rng: np.random.Generator,
               overrides: Mapping[str, Any] | None = None) -> Any:
        """Draw a domain for ``level`` (None: nominal) from ``rng``; ``overrides`` replace values exactly.

        One uniform number per parameter is drawn whatever the level or overrides (see module doc).
        """
        level = parse_level(level)
        fixed = self.validate(overrides)
        u = rng.random(len(self.params))
        values: dict[str, float | int] = {}
        for p, ui in zip(self.params, u):
            if p.name in fixed:
                values[p.name] = fixed[p.name]
            elif level is None:
                values[p.name] = p.nominal
            else:
                values[p.name] = _inverse_cdf(p.ranges(level), float(ui), p.integer)
        return self.domain_cls(**values)

    def make(self, values: Mapping[str, Any]) -> Any:
        """A domain from a complete or partial mapping (missing names take nominal values), validated."""
        return self.domain_cls(**{**dataclasses.asdict(self.nominal()), **self.validate(values)})

    # -- queries -------------------------------------------------------------------------------------------
    def normalize(self, domain: Any) -> np.ndarray:
        """Context vector ``(len(self),)`` float32: (value - level-3 center) / level-3 half width.

        Levels 0..3 map into [-1, 1]; shift values land just outside it.
        """
        v = np.array([getattr(domain, n) for n in self.names], dtype=np.float64)
        return ((v - self._center) / self._scale).astype(np.float32)

    def level_of(self, name: str, value: float) -> int | str | None:
        """Smallest level whose range holds ``value``; "shift" if only the shift range does; None otherwise."""
        spec = self[name]
        for k, (lo, hi) in enumerate(spec.levels):
            if lo <= value <= hi:
                return k
        if any(lo <= value <= hi for lo, hi in spec.shift):
            return "shift"
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: names, nominal values, per-level ranges, shift, physical bounds."""
        return {"names": list(self.names), "params": {p.name: p.to_dict() for p in self.params}}

    def _check_name(self, name: str) -> None:
        if name not in self._by_name:
            close = difflib.get_close_matches(str(name), self.names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown domain parameter {name!r}{hint}; valid names: {', '.join(self.names)}")


def domain_dict(domain: Any) -> dict[str, float | int]:
    """Plain dict of a domain dataclass (JSON-ready)."""
    return dataclasses.asdict(domain)


# -- helpers -----------------------------------------------------------------------------------------------
def _coerce(spec: ParamSpec, value: Any) -> float | int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"domain parameter {spec.name!r} expects a number; received {value!r}")
    value = float(value)
    lo, hi = spec.bounds
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"domain parameter {spec.name!r} must be in [{lo:g}, {hi:g}] {spec.unit}".rstrip()
                         + f"; received {value:g}")
    if spec.integer:
        if value != int(value):
            raise ValueError(f"domain parameter {spec.name!r} expects an integer; received {value:g}")
        return int(value)
    return value


def _inverse_cdf(intervals: Sequence[Interval], u: float, integer: bool) -> float | int:
    """Map u in [0, 1) to a uniform draw over a union of closed intervals (integers when ``integer``)."""
    if integer:
        values = [v for lo, hi in intervals for v in range(int(lo), int(hi) + 1)]
        return values[min(int(u * len(values)), len(values) - 1)]
    widths = [hi - lo for lo, hi in intervals]
    total = sum(widths)
    if total <= 0.0:
        return float(intervals[0][0])
    t = u * total
    for (lo, _hi), w in zip(intervals, widths):
        if t <= w:
            return float(lo + t)
        t -= w
    return float(intervals[-1][1])


def _check_param(owner: str, p: ParamSpec) -> None:
    """Declaration errors are programming errors in an env; fail loudly at import."""
    where = f"{owner}.{p.name}"
    if len(p.levels) != NUM_LEVELS:
        raise ValueError(f"{where}: expected {NUM_LEVELS} level ranges, received {len(p.levels)}")
    blo, bhi = p.bounds
    for k, (lo, hi) in enumerate(p.levels):
        if not blo <= lo <= hi <= bhi:
            raise ValueError(f"{where}: level {k} range [{lo}, {hi}] is empty or outside bounds [{blo}, {bhi}]")
        if k and not (p.levels[k - 1][0] >= lo and p.levels[k - 1][1] <= hi):
            raise ValueError(f"{where}: level {k - 1} {p.levels[k - 1]} is not inside level {k} {(lo, hi)}")
    if not p.levels[0][0] <= p.nominal <= p.levels[0][1]:
        raise ValueError(f"{where}: nominal {p.nominal} is outside level 0 {p.levels[0]}")
    lo3, hi3 = p.levels[-1]
    if not p.shift:
        raise ValueError(f"{where}: needs at least one shift interval")
    for lo, hi in p.shift:
        if not blo <= lo <= hi <= bhi:
            raise ValueError(f"{where}: shift interval [{lo}, {hi}] is empty or outside bounds [{blo}, {bhi}]")
        if not (hi <= lo3 or lo >= hi3):
            raise ValueError(f"{where}: shift interval [{lo}, {hi}] overlaps level 3 [{lo3}, {hi3}]")
        if p.integer and (hi == lo3 or lo == hi3):
            raise ValueError(f"{where}: integer shift interval [{lo}, {hi}] shares a value with level 3")
