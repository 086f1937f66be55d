"""Domain-randomized manipulation worlds, scripted experts and demonstration datasets.

Importing ``envs`` registers the gymnasium ids below (robosuite is imported only when Lift-v0 is made):

- ``simdiff/Push-v0``: pure MuJoCo planar box pushing (:mod:`envs.push`).
- ``simdiff/Lift-v0``: robosuite Panda Lift with an OSC controller (:mod:`envs.lift`, ``pip install simdiff[robot]``).

Every env takes ``level`` (0..3, "shift" or None for nominal), ``domain`` (exact overrides) and
``observe_domain``; see :func:`domain_spec` for parameter names, ranges and bounds, and
:func:`scripted_expert` for the expert that generates demonstrations.
"""

from __future__ import annotations

import os
import sys

# Headless rendering: MuJoCo picks its GL backend at first use, so choose EGL before anything imports it.
if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")

from envs.registry import ENV_IDS, domain_spec, make, register_envs  # noqa: E402

register_envs()


def scripted_expert(env):
    """A scripted expert for ``env`` (any registered simdiff env, wrapped or not); see :mod:`envs.experts`."""
    from envs.experts import scripted_expert as _make

    return _make(env)


_LAZY = {"PushEnv": "envs.push", "PushDomain": "envs.push", "LiftEnv": "envs.lift", "LiftDomain": "envs.lift",
         "make_vector": "envs.vector", "load_demos": "envs.datasets"}


def __getattr__(name: str):
    # Env classes pull in mujoco (and Lift-v0 robosuite, when made); import them on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")


__all__ = ["ENV_IDS", "LiftDomain", "LiftEnv", "PushDomain", "PushEnv", "domain_spec", "load_demos", "make",
           "make_vector", "register_envs", "scripted_expert"]
