"""Resolving the POLICY arguments of the shift commands.

A POLICY is one of

* ``expert``: the env's scripted expert (the ceiling, and the reference trajectory for compounding error);
* a diffusion-policy directory: a training run directory (``DIR/policy`` or ``DIR/checkpoint``) or a
  checkpoint directory itself (``meta.json`` + ``weights.safetensors``); its metadata names the demos, env and
  levels it was trained on;
* a MOL run directory (``mol_run.json``): it expands to every model in it that has a checkpoint, in order:
  the specialists (``specialist_domain_K``), the labeled-only generalist and the distilled generalist of each
  DAgger round (``distilled_rR``). Each knows the data it was trained on (paired demos, plus the pseudo-labels
  of rounds 0..R for ``distilled_rR``), which ``shift covariate`` uses when no ``--data`` is given.

Resolution only looks at files (no torch import), so a bad argument is refused before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from simdiff.utils.io import read_json

EXPERT = "expert"
MOL_MARKER = "mol_run.json"
_CHECKPOINT_SUBDIRS = ("policy", "checkpoint", ".")  # where a diffusion policy keeps meta.json, in order
_DISTILLED_RE = re.compile(r"^distilled_r(\d+)$")
_SPECIALIST_RE = re.compile(r"^domain_(\d+)$")


@dataclass(frozen=True)
class PolicySpec:
    """One policy to evaluate. ``kind`` is "expert" or "diffusion"; ``path`` is None for the expert."""

    name: str
    kind: str
    path: Path | None = None
    role: str = ""  # MOL models: specialist | generalist_labeled_only | generalist_distilled
    round: int | None = None  # DAgger round of a distilled generalist
    domain: int | None = None  # a specialist's domain (difficulty level)
    train_demos: tuple[Path, ...] = field(default=())  # paired demos it was trained on (MOL runs)
    train_pseudo: tuple[Path, ...] = field(default=())  # pseudo-label .npz files it was trained on (MOL runs)
    trained_levels: tuple[int, ...] = field(default=())  # levels its training data came from (when known)
    env_id: str | None = None  # the env its training data came from (when known)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": None if self.path is None else str(self.path), "role": self.role or None,
                "round": self.round, "domain": self.domain, "trained_levels": list(self.trained_levels),
                "env_id": self.env_id}


def has_checkpoint(path: Path) -> bool:
    return any((path / sub / "meta.json").is_file() for sub in _CHECKPOINT_SUBDIRS)


def is_mol_run(path: Path) -> bool:
    return (path / MOL_MARKER).is_file()


def resolve_policies(args: list[str], *, roles: tuple[str, ...] | None = None) -> list[PolicySpec]:
    """Turn POLICY arguments into :class:`PolicySpec` s (MOL run dirs expanded); names are unique.

    ``roles`` keeps only MOL models of these roles (e.g. ``("generalist_distilled",)``); plain checkpoints and
    the expert are always kept. Raises ValueError / FileNotFoundError naming the bad argument.
    """
    if not args:
        raise ValueError("expected at least one POLICY (a policy directory, a MOL run directory or 'expert')")
    specs: list[PolicySpec] = []
    for arg in args:
        if arg == EXPERT:
            specs.append(PolicySpec(name=EXPERT, kind="expert"))
            continue
        path = Path(arg)
        if not path.exists():
            raise FileNotFoundError(f"POLICY {arg!r}: no such directory (expected a policy directory, a MOL run "
                                    f"directory or the word 'expert')")
        if not path.is_dir():
            raise ValueError(f"POLICY {arg!r}: expected a directory (policy checkpoint or MOL run) or 'expert', "
                             "received a file")
        if is_mol_run(path):
            found = expand_mol_run(path)
            if roles is not None:
                found = [s for s in found if s.role in roles]
            if not found:
                want = f" of role {', '.join(roles)}" if roles else ""
                raise ValueError(f"POLICY {arg!r}: the MOL run holds no trained model{want} yet "
                                 "(run `simdiff mol run` first)")
            specs.extend(found)
        elif has_checkpoint(path):
            specs.append(checkpoint_spec(path))
        else:
            raise ValueError(f"POLICY {arg!r}: not a policy directory (no meta.json in it or in its policy/ or "
                             f"checkpoint/ folder) and not a MOL run directory (no {MOL_MARKER})")
    return _unique_names(specs)


def checkpoint_dataset(path: Path) -> dict:
    """The ``dataset`` description a diffusion policy checkpoint stores (path, env_id, levels...), or {}."""
    for sub in _CHECKPOINT_SUBDIRS:
        meta = path / sub / "meta.json"
        if meta.is_file():
            try:
                m = read_json(meta)
            except ValueError:
                return {}
            ds = m.get("dataset") or (m.get("extra") or {}).get("dataset") or {}
            return ds if isinstance(ds, dict) else {}
    return {}


def checkpoint_spec(path: Path, **kw) -> PolicySpec:
    """A diffusion policy directory, with what its checkpoint says about its training data."""
    ds = checkpoint_dataset(path)
    levels = tuple(int(lv) for lv in ds.get("levels") or () if str(lv).isdigit())
    demos = Path(ds["path"]) if isinstance(ds.get("path"), str) else None
    fields = {"name": path.name or str(path), "kind": "diffusion", "path": path, "trained_levels": levels,
              "env_id": ds.get("env_id"), "train_demos": (demos,) if demos is not None and demos.is_file() else ()}
    return PolicySpec(**{**fields, **kw})


def expand_mol_run(run: Path) -> list[PolicySpec]:
    """The trained models of a MOL run directory, specialists first, then generalists by DAgger round."""
    levels = _mol_domains(run)
    demos_all = tuple(sorted((run / "demos").glob("domain_*.hdf5"), key=_trailing_int))
    out: list[PolicySpec] = []
    spec_root = run / "specialists"
    if spec_root.is_dir():
        for d in sorted((p for p in spec_root.iterdir() if _SPECIALIST_RE.match(p.name)), key=_trailing_int):
            if has_checkpoint(d):
                k = _trailing_int(d)
                demo = run / "demos" / f"domain_{k}.hdf5"
                out.append(checkpoint_spec(d, name=f"{run.name}/specialist_domain_{k}", role="specialist", domain=k,
                                           train_demos=(demo,) if demo.is_file() else (), trained_levels=(k,)))
    gen_root = run / "generalists"
    lo = gen_root / "labeled_only"
    if has_checkpoint(lo):
        out.append(checkpoint_spec(lo, name=f"{run.name}/labeled_only", role="generalist_labeled_only",
                                   train_demos=demos_all, trained_levels=levels))
    if gen_root.is_dir():
        rounds = sorted((p for p in gen_root.iterdir() if _DISTILLED_RE.match(p.name)), key=_trailing_int)
        for g in rounds:
            if not has_checkpoint(g):
                continue
            r = _trailing_int(g)
            pseudo = tuple(p for q in range(r + 1)
                           for p in sorted((run / "pseudo" / f"round_{q}").glob("domain_*.npz"), key=_trailing_int))
            out.append(checkpoint_spec(g, name=f"{run.name}/distilled_r{r}", role="generalist_distilled", round=r,
                                       train_demos=demos_all, train_pseudo=pseudo, trained_levels=levels))
    return out


def mol_env_id(run: Path) -> str | None:
    """The env id a MOL run was made for (from its run marker), or None if it does not say."""
    try:
        return read_json(run / MOL_MARKER).get("config", {}).get("env", {}).get("id")
    except (OSError, ValueError, AttributeError):
        return None


def _mol_domains(run: Path) -> tuple[int, ...]:
    try:
        doms = read_json(run / MOL_MARKER).get("config", {}).get("env", {}).get("domains")
        return tuple(int(d) for d in doms) if doms else ()
    except (OSError, ValueError, AttributeError, TypeError):
        return ()


def _trailing_int(p: Path) -> int:
    m = re.search(r"(\d+)$", p.stem)
    return int(m.group(1)) if m else -1


def _unique_names(specs: list[PolicySpec]) -> list[PolicySpec]:
    """Keep the first of exact duplicates; disambiguate different policies sharing a display name."""
    seen: dict[tuple, PolicySpec] = {}
    for s in specs:
        seen.setdefault((s.kind, None if s.path is None else s.path.resolve()), s)
    specs = list(seen.values())
    counts: dict[str, int] = {}
    for s in specs:
        counts[s.name] = counts.get(s.name, 0) + 1
    out = []
    for s in specs:
        if counts[s.name] > 1 and s.path is not None:
            s = PolicySpec(**{**s.__dict__, "name": str(s.path)})
        out.append(s)
    return out
