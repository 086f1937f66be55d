"""Headless rendering of episodes to mp4 or gif.

Frames are redrawn from the MuJoCo states stored with each episode (``states`` in the dataset), in an env
built with the episode's domain, so rendering needs no policy and no re-simulation. MuJoCo renders through
EGL when ``MUJOCO_GL`` is unset on Linux (``import envs`` sets it), with shadows and reflections off: about
7x faster than the defaults and plenty for inspecting demos.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")

VIDEO_SUFFIXES = (".mp4", ".gif")


def make_renderer(model: Any, height: int, width: int):
    """A ``mujoco.Renderer`` with shadows and reflections off; the model's offscreen buffer is enlarged
    when the requested frame does not fit."""
    import mujoco

    vis = model.vis.global_
    vis.offwidth, vis.offheight = max(vis.offwidth, width), max(vis.offheight, height)
    renderer = mujoco.Renderer(model, height, width)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return renderer


def episode_frames(env: Any, states: np.ndarray, seed: int | None = None, domain: dict | None = None,
                   stride: int = 1) -> list[np.ndarray]:
    """Frames ``(H, W, 3)`` uint8 of one episode, redrawn from its ``(T, Ds)`` states in ``env`` (made with
    ``render_mode="rgb_array"``), after a reset to the episode's seed and domain."""
    base = env.unwrapped
    env.reset(seed=seed, options={"domain": domain} if domain else None)
    frames = []
    for t in range(0, len(states), max(1, int(stride))):
        base.set_state(states[t])
        frames.append(env.render())
    return frames


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write frames atomically to ``path`` (.mp4 through ffmpeg, or .gif)."""
    import imageio.v2 as imageio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"video path must end in .mp4 or .gif; received {path}")
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".gif":
            imageio.mimsave(tmp, list(frames), duration=1000.0 / fps, loop=0)
        else:
            # macro_block_size=1 keeps odd frame sizes; yuv420p plays everywhere.
            with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1,
                                    pixelformat="yuv420p", quality=7) as writer:
                for f in frames:
                    writer.append_data(f)
        from envs.datasets import _chmod_default

        _chmod_default(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def render_dataset(dataset: Any, out: str | os.PathLike, episodes: Sequence[int] | None = None,
                   width: int = 320, height: int = 240, camera: str | None = None, fps: float | None = None,
                   stride: int = 1) -> Path:
    """Render ``episodes`` (default: the first 4) of a simdiff dataset one after the other into ``out``."""
    from envs.registry import make

    env_name = dataset.env_name
    if env_name is None or not env_name.startswith("simdiff/"):
        raise ValueError(f"{dataset.path}: can only render simdiff envs; this file's env is {env_name!r}")
    n = len(dataset)
    idx = list(range(min(4, n))) if episodes is None else [int(i) for i in episodes]
    bad = [i for i in idx if not 0 <= i < n]
    if bad or not idx:
        raise ValueError(f"{dataset.path}: episode indices must be in [0, {n - 1}]; received {bad or idx}")
    for i in idx:
        if dataset[i].states is None:
            raise ValueError(f"{dataset.path}: episode {i} has no 'states' to render from")
    kwargs = {k: v for k, v in dataset.env_kwargs.items() if k not in ("level", "domain", "render_mode")}
    if camera is not None:
        kwargs["camera"] = camera
    from simdiff.utils.progress import progress

    # One env for all episodes (a robosuite env takes seconds to build); each reset applies the episode's domain.
    env = make(env_name, level=None, render_mode="rgb_array", width=width, height=height, **kwargs)
    frames: list[np.ndarray] = []
    try:
        for i in progress(idx, desc="render"):
            ep = dataset[i]
            frames.extend(episode_frames(env, ep.states, seed=ep.seed, domain=ep.domain, stride=stride))
        env_fps = env.metadata.get("render_fps", 10)
    finally:
        env.close()
    return write_video(out, frames, fps or env_fps / max(1, int(stride)))
