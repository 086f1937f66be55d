"""Demonstration datasets in robomimic's HDF5 layout: write, read, validate, summarize.

Layout written by :func:`write_demos` (readable by robomimic; extra attributes are ignored there)::

    data/                      attrs: total (samples), env_args (JSON: env_name, type=2 (gym), env_kwargs),
                                      simdiff_format, obs_keys (JSON list), obs_layout, state_names,
                                      context_names, domain_spec, collection (JSON)
    data/demo_{i}/             attrs: num_samples, seed, success, domain (JSON), level, sha256 over the arrays
                                      named in sha256_covers (JSON: obs/<key>s, actions, states), checked on
                                      reading so altered data is an error
        obs/<key>              (T, D_key) float32: "state", "context" (when the env observes its domain),
                               "obs" (the full flat observation = state ++ context)
        next_obs/<key>         (T, D_key) float32, observation after each action (robomimic convention)
        actions                (T, Da) float32
        rewards                (T,) float32
        dones                  (T,) int64, 1 at the last step
        states                 (T, Ds) float64, MuJoCo state (enough to redraw frames)
    mask/success               names of successful demos (robomimic filter key)

:func:`load_demos` reads these files and also robomimic datasets and robosuite-collected demo files. The
policy observation is the concatenation of ``obs_keys`` in order: the file's ``obs_keys`` attribute when
present (simdiff files: state, context), otherwise every low-dimensional (2-D) array under ``obs/`` in
sorted key order (robomimic), otherwise the ``states`` array (raw robosuite demos, which store no
observations). Image observations (arrays with more than 2 dimensions) are never concatenated.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simdiff.errors import DatasetError

FORMAT_VERSION = 1
GYM_ENV_TYPE = 2  # robomimic EnvType.GYM_TYPE
_DEMO_RE = re.compile(r"^demo_(\d+)$")


@dataclass
class Episode:
    """One demonstration. ``obs[key]`` is ``(T, D_key)``; actions ``(T, Da)``; rewards, dones ``(T,)``."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    states: np.ndarray | None = None
    next_obs: dict[str, np.ndarray] | None = None
    domain: dict[str, Any] | None = None
    seed: int | None = None
    success: bool | None = None
    level: str | None = None
    name: str = ""
    obs_keys: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def flat_obs(self, keys: Sequence[str] | None = None) -> np.ndarray:
        """``(T, sum D_key)`` float32: the observation keys (default: ``obs_keys``) concatenated in order."""
        keys = tuple(keys) if keys is not None else self.obs_keys
        if not keys:
            raise ValueError(f"episode {self.name or '?'} has no observation keys to concatenate")
        missing = [k for k in keys if k not in self.obs]
        if missing:
            raise KeyError(f"episode {self.name or '?'} has no obs key(s) {missing}; has {sorted(self.obs)}")
        return np.concatenate([self.obs[k].reshape(len(self), -1) for k in keys], axis=1).astype(np.float32)


@dataclass
class DemoDataset:
    """Episodes of one file plus its metadata. Iterable and indexable like a list of :class:`Episode`."""

    path: Path
    episodes: list[Episode]
    env_args: dict[str, Any]
    obs_keys: tuple[str, ...]
    attrs: dict[str, Any]

    @property
    def env_name(self) -> str | None:
        return self.env_args.get("env_name")

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.env_args.get("env_kwargs") or {})

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)


# -- writing -----------------------------------------------------------------------------------------------
def write_demos(path: str | os.PathLike, episodes: Sequence[Episode], env_args: dict[str, Any],
                attrs: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``episodes`` atomically (temp file + rename) in the layout of the module docstring.

    ``env_args`` holds ``env_name`` and ``env_kwargs``; ``attrs`` adds JSON-able file attributes
    (e.g. obs_keys, obs_layout, collection). Refuses to replace an existing file unless ``overwrite``.
    """
    import h5py

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    if not episodes:
        raise ValueError(f"no episodes to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            data.attrs["env_args"] = json.dumps({"type": GYM_ENV_TYPE, **env_args})
            data.attrs["total"] = int(sum(len(e) for e in episodes))
            data.attrs["simdiff_format"] = FORMAT_VERSION
            for k, v in (attrs or {}).items():
                data.attrs[k] = json.dumps(v)
            for i, ep in enumerate(episodes):
                _write_episode(data.create_group(f"demo_{i}"), ep)
            ok = [f"demo_{i}" for i, ep in enumerate(episodes) if ep.success]
            f.create_group("mask").create_dataset("success", data=np.array(ok, dtype="S"))
        _chmod_default(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _chmod_default(path: str) -> None:
    """mkstemp creates 0600 files; give the result the permissions a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _write_episode(g, ep: Episode) -> None:
    T = len(ep)
    _check_lengths(ep, T)
    g.attrs["num_samples"] = T
    if ep.seed is not None:
        g.attrs["seed"] = int(ep.seed)
    if ep.success is not None:
        g.attrs["success"] = bool(ep.success)
    if ep.domain is not None:
        g.attrs["domain"] = json.dumps(ep.domain)
    if ep.level is not None:
        g.attrs["level"] = str(ep.level)
    obs = {k: np.asarray(v, dtype=np.float32) for k, v in ep.obs.items()}
    for name, group in (("obs", obs), ("next_obs", ep.next_obs)):
        if group:
            og = g.create_group(name)
            for k, v in group.items():
                og.create_dataset(k, data=np.asarray(v, dtype=np.float32))
    arrays = {"actions": np.asarray(ep.actions, dtype=np.float32), "rewards": np.asarray(ep.rewards, dtype=np.float32),
              "dones": np.asarray(ep.dones, dtype=np.int64)}
    if ep.states is not None:
        arrays["states"] = np.asarray(ep.states, dtype=np.float64)
    for k, v in arrays.items():
        g.create_dataset(k, data=v)
    # Rewards and dones are left out: relabelling them in place is a normal thing to do with a demo file.
    covered = {"actions": arrays["actions"], "states": arrays.get("states")}
    g.attrs["sha256"] = episode_digest(obs, covered)
    g.attrs["sha256_covers"] = json.dumps(sorted([f"obs/{k}" for k in obs] + [k for k, v in covered.items()
                                                                              if v is not None]))


def episode_digest(obs: dict[str, np.ndarray], arrays: dict[str, np.ndarray | None]) -> str:
    """SHA-256 of an episode's arrays as stored (names, dtypes, shapes and little-endian bytes, keys sorted)."""
    h = hashlib.sha256()
    items = [(f"obs/{k}", v) for k, v in obs.items()] + [(k, v) for k, v in arrays.items() if v is not None]
    for key, v in sorted(items, key=lambda kv: kv[0]):
        v = np.ascontiguousarray(v)
        h.update(f"{key}:{v.dtype.str.lstrip('<>|=')}:{v.shape};".encode())
        h.update(v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def _check_lengths(ep: Episode, T: int) -> None:
    arrays = {"rewards": ep.rewards, "dones": ep.dones, "states": ep.states}
    arrays.update({f"obs/{k}": v for k, v in ep.obs.items()})
    arrays.update({f"next_obs/{k}": v for k, v in (ep.next_obs or {}).items()})
    for k, v in arrays.items():
        if v is not None and len(v) != T:
            raise ValueError(f"episode {ep.name or '?'}: {k} has {len(v)} steps, actions have {T}")


# -- reading -----------------------------------------------------------------------------------------------
def load_demos(path: str | os.PathLike, obs_keys: Sequence[str] | None = None,
               load_next_obs: bool = False) -> DemoDataset:
    """Read a demo file (simdiff, robomimic or raw robosuite layout) and validate it.

    ``obs_keys`` overrides which ``obs/`` arrays form the flat observation (see the module docstring).
    Raises FileNotFoundError for a missing file and :class:`~simdiff.errors.DatasetError` naming the file
    and the problem for anything unreadable, truncated or incomplete.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
    try:
        with f:
            return _read(path, f, obs_keys, load_next_obs)
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


def _read(path: Path, f, obs_keys: Sequence[str] | None, load_next_obs: bool) -> DemoDataset:
    if "data" not in f:
        raise DatasetError(f"{path}: missing group 'data' (expected a robomimic-style demo file)")
    data = f["data"]
    attrs = {k: _attr_value(path, k, v) for k, v in data.attrs.items()}
    env_args = attrs.get("env_args")
    if not isinstance(env_args, dict):
        # raw robosuite demos name their env in attrs["env"] (and kwargs in env_info)
        env_args = {"env_name": attrs.get("env"), "env_kwargs": _as_dict(attrs.get("env_info"))}
    names = sorted((n for n in data if _DEMO_RE.match(n)), key=lambda n: int(_DEMO_RE.match(n).group(1)))
    if not names:
        raise DatasetError(f"{path}: no demos under 'data' (expected groups demo_0, demo_1, ...)")
    file_keys = attrs.get("obs_keys")
    episodes = []
    for name in names:
        ep = _read_episode(path, data[name], name, load_next_obs)
        keys = _choose_keys(path, name, ep, obs_keys if obs_keys is not None else file_keys)
        ep.obs_keys = keys
        episodes.append(ep)
    first = episodes[0].obs_keys
    for ep in episodes[1:]:
        if ep.obs_keys != first:
            raise DatasetError(f"{path}: {ep.name} has obs keys {list(ep.obs_keys)}, demo_0 has {list(first)}")
    return DemoDataset(path=path, episodes=episodes, env_args=env_args, obs_keys=first, attrs=attrs)


def _read_episode(path: Path, g, name: str, load_next_obs: bool) -> Episode:
    if "actions" not in g:
        raise DatasetError(f"{path}: {name} is missing 'actions'")
    actions = np.asarray(g["actions"][()], dtype=np.float32)
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise DatasetError(f"{path}: {name}/actions must be (T>0, Da); found shape {actions.shape}")
    T = actions.shape[0]
    obs = {k: np.asarray(v[()]) for k, v in g["obs"].items()} if "obs" in g else {}
    states = np.asarray(g["states"][()], dtype=np.float64) if "states" in g else None
    if not obs and states is None:
        raise DatasetError(f"{path}: {name} has neither 'obs' nor 'states'")
    next_obs = None
    if load_next_obs and "next_obs" in g:
        next_obs = {k: np.asarray(v[()]) for k, v in g["next_obs"].items()}
    rewards = np.asarray(g["rewards"][()], dtype=np.float32) if "rewards" in g else np.zeros(T, np.float32)
    if "dones" in g:
        dones = np.asarray(g["dones"][()], dtype=np.int64)
    else:
        dones = np.zeros(T, np.int64)
        dones[-1] = 1
    sizes = {"rewards": len(rewards), "dones": len(dones)}
    sizes.update({f"obs/{k}": len(v) for k, v in obs.items()})
    sizes.update({f"next_obs/{k}": len(v) for k, v in (next_obs or {}).items()})
    if states is not None:
        sizes["states"] = len(states)
    for k, n in sizes.items():
        if n != T:
            raise DatasetError(f"{path}: {name}/{k} has {n} steps but {name}/actions has {T}")
    a = g.attrs
    if "sha256" in a:  # simdiff files: the arrays written with a checksum must be unchanged
        _check_digest(path, name, a, obs, actions, states)
    domain = _attr_value(path, f"{name}.domain", a["domain"]) if "domain" in a else None
    if domain is not None and not isinstance(domain, dict):
        raise DatasetError(f"{path}: {name} attribute 'domain' must be a JSON object; found {domain!r}")
    if "num_samples" in a and int(a["num_samples"]) != T:
        raise DatasetError(f"{path}: {name} says num_samples={int(a['num_samples'])} but holds {T} steps")
    return Episode(obs=obs, actions=actions, rewards=rewards, dones=dones, states=states, next_obs=next_obs,
                   domain=domain, seed=int(a["seed"]) if "seed" in a else None,
                   success=bool(a["success"]) if "success" in a else None,
                   level=str(a["level"]) if "level" in a else None, name=name)


def _check_digest(path: Path, name: str, attrs, obs: dict, actions: np.ndarray, states: np.ndarray | None) -> None:
    covers = _attr_value(path, f"{name}.sha256_covers", attrs["sha256_covers"]) if "sha256_covers" in attrs else None
    if not isinstance(covers, list):
        raise DatasetError(f"{path}: {name}: attribute 'sha256_covers' must list the checksummed arrays")
    have = {**{f"obs/{k}": v for k, v in obs.items()}, "actions": actions, "states": states}
    missing = [k for k in covers if have.get(k) is None]
    if missing:
        raise DatasetError(f"{path}: {name}: checksummed array(s) {missing} are missing")
    got = episode_digest({k[4:]: have[k] for k in covers if k.startswith("obs/")},
                         {k: have[k] for k in covers if not k.startswith("obs/")})
    if got != _attr_value(path, f"{name}.sha256", attrs["sha256"]):
        raise DatasetError(f"{path}: {name}: its arrays do not match the checksum written with them (the file was "
                           "altered or is corrupt); collect the demos again, or, if you changed them on purpose, "
                           "delete the demo's 'sha256' attribute")


def _choose_keys(path: Path, name: str, ep: Episode, keys: Sequence[str] | None) -> tuple[str, ...]:
    if keys is not None:
        keys = tuple(keys)
        missing = [k for k in keys if k not in ep.obs]
        if missing:
            raise DatasetError(f"{path}: {name} has no obs key(s) {missing}; present: {sorted(ep.obs)}")
        return keys
    low_dim = tuple(sorted(k for k, v in ep.obs.items() if v.ndim == 2))
    if low_dim:
        return low_dim
    if ep.states is not None:
        ep.obs["states"] = ep.states.astype(np.float32)
        return ("states",)
    raise DatasetError(f"{path}: {name} has no low-dimensional observations (only {sorted(ep.obs)})")


def _attr_value(path: Path, key: str, value: Any) -> Any:
    """HDF5 attributes as Python values; JSON strings decoded (robomimic stores env_args as JSON)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        s = value.strip()
        if s[:1] in "{[":
            try:
                return json.loads(s)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: attribute {key!r} is not valid JSON ({exc})") from exc
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- summaries ---------------------------------------------------------------------------------------------
def summarize(ds: DemoDataset) -> dict[str, Any]:
    """Counts, lengths, success and the range of every domain parameter over the episodes."""
    lengths = np.array([len(e) for e in ds], dtype=np.int64)
    known = [e.success for e in ds if e.success is not None]
    domains = [e.domain for e in ds if e.domain]
    ranges: dict[str, list[float]] = {}
    for name in sorted({k for d in domains for k in d}):
        vals = [float(d[name]) for d in domains if name in d]
        ranges[name] = [min(vals), max(vals)]
    levels = sorted({e.level for e in ds if e.level is not None})
    return {
        "path": str(ds.path),
        "env_name": ds.env_name,
        "env_kwargs": ds.env_kwargs,
        "episodes": len(ds),
        "samples": int(lengths.sum()),
        "length": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())},
        "success_rate": (float(np.mean(known)) if known else None),
        "success_known": len(known),
        "obs_keys": list(ds.obs_keys),
        "obs_dim": int(ds[0].flat_obs().shape[1]),
        "action_dim": int(ds[0].actions.shape[1]),
        "levels": levels,
        "domain_ranges": ranges,
    }


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable text of :func:`summarize`'s dict."""
    lines = [
        f"file        {s['path']}",
        f"env         {s['env_name']}  {json.dumps(s['env_kwargs'])}",
        f"episodes    {s['episodes']}  ({s['samples']} samples)",
        f"length      min {s['length']['min']}  mean {s['length']['mean']:.1f}  max {s['length']['max']}",
        "success     " + ("unknown" if s["success_rate"] is None
                          else f"{s['success_rate']:.1%} of {s['success_known']}"),
        f"obs         {s['obs_dim']} = {' ++ '.join(s['obs_keys'])}",
        f"action      {s['action_dim']}",
    ]
    if s["levels"]:
        lines.append(f"levels      {', '.join(s['levels'])}")
    if s["domain_ranges"]:
        lines.append("domain      parameter            min          max")
        for k, (lo, hi) in s["domain_ranges"].items():
            lines.append(f"            {k:<20} {lo:<12.6g} {hi:.6g}")
    return "\n".join(lines)
