"""SKILD on lattices: data, training, loading, generation, honest super-resolution, and the baselines.

Run directory written by :func:`train_run`::

    <run>/config.yaml, run.json   resolved config, seed, command, versions (simdiff.utils.run.record_run)
    <run>/data/train.npz          generated training lattices (only when ``data.path`` is null)
    <run>/checkpoint/             resumable training state (model, EMA, optimizer; simdiff.training)
    <run>/metrics.jsonl, loss.png training curve
    <run>/model/                  the exported model: EMA weights (safetensors) + meta.json with the config,
                                  the fitted noise spectrum, the training command and wall time

``sample``, ``superres`` and ``validate`` read ``<run>/model`` (or a model directory itself, such as the
checkpoints shipped in ``simdiff/pretrained/<name>/``).
"""

from __future__ import annotations

import io
import math
import numbers
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from simdiff.config import load_config, to_dict
from simdiff.errors import CheckpointError, DatasetError, UserError
from simdiff.nets.unet2d import UNet2D
from simdiff.pipelines.skild.config import SkildConfig
from simdiff.processes import gaussian as gs
from simdiff.processes import spectral as sp
from simdiff.utils.io import read_npz

MODEL_DIR = "model"
MODEL_KIND = "simdiff.skild.model"
PRETRAINED_ROOT = Path(__file__).resolve().parents[2] / "pretrained"


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------

def load_lattices(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Lattices from an ``.npz``: key ``spins`` (N, L, L) or ``samples`` (N, 1, L, L) / (N, L, L).

    Returns float32 ``(N, L, L)``. Raises :class:`DatasetError` naming the file and what is wrong.
    """
    path = Path(path)
    z = read_npz(path, what="lattices (an .npz with key 'spins' or 'samples')")
    keys = list(z)
    use = key or next((k for k in ("spins", "samples") if k in keys), None)
    if use is None or use not in keys:
        raise DatasetError(f"{path}: expected a key 'spins' or 'samples', found {keys}")
    arr = np.asarray(z[use])
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise DatasetError(f"{path}: key '{use}': expected numeric lattices, received dtype {arr.dtype}")
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] < 1:
        raise DatasetError(f"{path}: key '{use}': expected shape (N, L, L) or (N, 1, L, L) with square lattices, "
                           f"received {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise DatasetError(f"{path}: key '{use}' contains NaN or inf")
    if use == "spins" and not np.all(np.abs(arr) == 1):
        # Ising configurations: anything else (0/1 bits, +-2, a scaled copy) would train a model of other data
        bad = np.unique(arr[np.abs(arr) != 1])[:5].tolist()
        raise DatasetError(f"{path}: key 'spins': expected values +-1 only, found {bad}")
    return arr.astype(np.float32)


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Write an ``.npz`` atomically (no pickle: plain arrays and JSON-able scalars only)."""
    from simdiff.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def to_spins(x: np.ndarray | Tensor) -> np.ndarray:
    """Sign-discretise to int8 +-1 (0 maps to +1)."""
    x = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
    return np.where(x >= 0, 1, -1).astype(np.int8)


def generate_training_data(cfg: SkildConfig, out_path: Path) -> Path:
    """Draw the training lattices with the physics sampler (Wolff by default) into ``out_path``."""
    from physics.ising import sample_configurations

    d = cfg.data
    res = sample_configurations(d.L, d.temperature, d.num_samples, algorithm=d.algorithm, seed=d.seed,
                                progress=True)
    meta = res.metadata()
    save_npz(out_path, spins=res.spins.astype(np.int8), L=d.L, temperature=d.temperature, seed=d.seed,
             algorithm=d.algorithm, thin=meta["thin"], burn_in=meta["burn_in"])
    return out_path


def augment(x: Tensor, generator: torch.Generator, translate: bool) -> Tensor:
    """Random symmetry transform of each lattice ``(B, L, L)``: D4, global flip, and (torus) translation."""
    b, L, _ = x.shape
    r = torch.randint(0, 2, (b, 4), generator=generator)
    x = torch.where(r[:, 0, None, None].bool(), x.transpose(1, 2), x)
    x = torch.where(r[:, 1, None, None].bool(), x.flip(1), x)
    x = torch.where(r[:, 2, None, None].bool(), x.flip(2), x)
    x = x * (1 - 2 * r[:, 3, None, None]).to(x.dtype)
    if translate:
        s = torch.randint(0, L, (b, 2), generator=generator)
        ar = torch.arange(L)
        rows = (ar[None, :] + s[:, :1]) % L
        cols = (ar[None, :] + s[:, 1:]) % L
        x = x[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return x


def make_batch_fn(data: Tensor, batch_size: int, do_augment: bool, translate: bool):
    """``batch_fn(step, generator) -> (B, 1, L, L)`` float32 drawn with replacement from ``data (N, L, L)``."""
    def batch_fn(step: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        x = data[idx]
        if do_augment:
            x = augment(x, generator, translate)
        return x[:, None]
    return batch_fn


# ----------------------------------------------------------------------------------------------------------
# process and network
# ----------------------------------------------------------------------------------------------------------

def build_net(cfg: SkildConfig) -> UNet2D:
    m = cfg.model
    return UNet2D(in_channels=1, out_channels=1, base_channels=m.base_channels,
                  channel_mults=tuple(m.channel_mults), num_res_blocks=m.num_res_blocks, time_dim=m.time_dim,
                  circular=m.circular, dropout=m.dropout)


def fit_spectrum(data: Tensor, basis: str) -> tuple[float, float, float]:
    """``(C, alpha, k0sq)`` of ``S0`` fitted to the per-mode variance of ``data (N, L, L)``."""
    var = sp.mode_variance(data.double(), basis)
    return sp.fit_power_spectrum(sp.wavenumber_sq(data.shape[-1], basis), var.clamp(min=1e-12))


def build_process(cfg: SkildConfig, L: int, spectrum: tuple[float, float, float]) -> sp.SpectralProcess:
    p = cfg.process
    lam = sp.make_lambdas(p.num_steps, p.schedule, p.lambda_i, p.lambda_f, p.theta)
    return sp.make_process(L, p.basis, lam, tuple(spectrum), k_c=p.k_c, tau=p.tau)


def build_gaussian(cfg: SkildConfig) -> gs.GaussianSchedule:
    return gs.make_schedule(cfg.process.gaussian_schedule, cfg.process.num_steps)


def spectral_loss_fn(proc: sp.SpectralProcess):
    """``loss_fn(model, x0 (B,1,L,L), generator) -> (B,)``: eps prediction, pixel-space network, mode-space loss."""
    n_steps = proc.num_steps
    proc_on = sp.device_copies(proc)

    def loss_fn(model: torch.nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        b, dev = x0.shape[0], x0.device
        # drawn with the CPU generator, then moved: the same draws on every device
        n = torch.randint(1, n_steps + 1, (b,), generator=generator).to(dev)
        eps = torch.randn(x0.shape, generator=generator).to(dev)
        p = proc_on(dev)
        xn = sp.corrupt(p, sp.to_modes(x0, p.basis), n, eps)
        eps_hat = model(sp.from_modes(xn, p.basis), n.float() / n_steps)
        return sp.loss(eps_hat, eps, p.basis)
    return loss_fn


def gaussian_loss_fn(sched: gs.GaussianSchedule):
    """White-noise DDPM baseline: ``x_t = sqrt(ab) x0 + sqrt(1-ab) eps`` in pixel space, eps prediction."""
    n_steps = sched.num_steps

    def loss_fn(model: torch.nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        b, dev = x0.shape[0], x0.device
        t = torch.randint(0, n_steps, (b,), generator=generator).to(dev)
        eps = torch.randn(x0.shape, generator=generator).to(dev)
        xt = gs.corrupt(x0, t, eps, sched)
        return gs.loss(model(xt, (t.float() + 1) / n_steps), x0, eps, t, sched, "epsilon")
    return loss_fn


INPUT_KINDS = ("raw", "majority", "average")


def coarse_grain(spins: np.ndarray, factor: int, kind: str, seed: int = 0) -> np.ndarray:
    """Block-spin majority or block average of ``(N, L, L)`` lattices (physics.coarse): ``(N, L/b, L/b)``."""
    from physics.coarse import block_average, block_spin

    if kind == "majority":
        return block_spin(spins, factor, seed=seed)
    if kind == "average":
        return block_average(spins, factor)
    raise ValueError(f"kind: expected 'majority' or 'average', received {kind!r}")


def sr_factors(L: int) -> list[int]:
    """Integer factors ``b >= 2`` dividing ``L`` with ``L / b >= L / 8``."""
    return [b for b in range(2, L + 1) if L % b == 0 and L // b >= math.ceil(L / 8)]


@torch.no_grad()
def measure_input_calibration(data: Tensor, basis: str, n_samples: int = 2000, seed: int = 0) -> dict:
    """How the modes placed from a coarse-grained input relate to the true modes, on training lattices.

    For each operator (majority block spins, block average) and factor ``b``: per shell of equal ``|k|^2`` among
    the known modes, the regression gain ``E[X_true X_placed] / E[X_placed^2]`` and the residual variance
    ``E[(X_true - gain X_placed)^2]``. Super-resolution uses them as the Gaussian (LMMSE) estimate of the known
    modes and its uncertainty. (Majority block spins at T_c carry about ``b^(1/8)`` too much amplitude at large
    scales, block averages too little near their cutoff; using the placed modes raw biases |m| and G(r).)
    """
    L = int(data.shape[-1])
    gen = torch.Generator().manual_seed(seed)
    x = data[torch.randint(0, data.shape[0], (min(n_samples, data.shape[0]),), generator=gen)]
    spins = to_spins(x)
    truth = sp.to_modes(torch.as_tensor(spins, dtype=torch.float64), basis)
    k2 = sp.wavenumber_sq(L, basis)
    out: dict = {}
    for kind in ("majority", "average"):
        out[kind] = {}
        for b in sr_factors(L):
            low = torch.as_tensor(coarse_grain(spins, b, kind, seed=seed), dtype=torch.float64)
            placed, known = sp.place_modes(low, L, basis)
            shells = torch.round(k2[known] * 1e6).long()
            keys, inv = torch.unique(shells, return_inverse=True)
            t, p = truth[:, known], placed[:, known]
            num = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, inv, (t * p).mean(0))
            den = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, inv, (p * p).mean(0))
            gain = num / den.clamp(min=1e-12)
            resid_mode = ((t - gain[inv] * p) ** 2).mean(0)
            cnt = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, inv, torch.ones_like(resid_mode))
            resid = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, inv, resid_mode) / cnt
            out[kind][str(b)] = {"k2": (keys.double() / 1e6).tolist(), "gain": gain.tolist(),
                                 "resid": resid.tolist()}
    return out


# ----------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------

def _resolve_data(cfg: SkildConfig, run_dir: Path) -> Path:
    if cfg.data.path is not None:
        path = Path(cfg.data.path)
        if not path.exists():
            raise FileNotFoundError(f"data.path: {path} does not exist (set data.path: null to generate the "
                                    "lattices with the physics sampler)")
        return path
    path = run_dir / "data" / "train.npz"
    if not path.exists():
        generate_training_data(cfg, path)
    return path


def _load_training_lattices(cfg: SkildConfig, path: Path) -> Tensor:
    data = torch.as_tensor(load_lattices(path))
    if data.shape[-1] != cfg.data.L:
        raise DatasetError(f"{path}: expected lattices of side data.L={cfg.data.L}, received {data.shape[-1]}")
    return data


_TRAINING_SECTIONS = ("data", "process", "model", "train")


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _check_resume(cfg: SkildConfig, run_dir: Path) -> bool:
    """True when ``run_dir`` already holds this run; raises when it holds a run of another config."""
    from simdiff.checkpoint import config_diff

    stored = run_dir / "config.yaml"
    if not stored.exists():
        return False
    prev = _read_yaml(stored)
    # Only what shapes the weights must match; sampler and validation settings may change on a resume.
    diff = config_diff({k: v for k, v in prev.items() if k in _TRAINING_SECTIONS},
                       {k: v for k, v in to_dict(cfg).items() if k in _TRAINING_SECTIONS},
                       ignore=("train.log_every", "train.ckpt_every"))
    if prev.get("name") != cfg.name:
        diff.append(f"name: run has {prev.get('name')!r}, expected {cfg.name!r}")
    if diff:
        raise UserError(f"{run_dir} holds a run with a different config; use a new --out or the same config:\n  "
                        + "\n  ".join(diff))
    return True


def _export(cfg: SkildConfig, run_dir: Path, ema: torch.nn.Module, data: Tensor, data_path: Path,
            spectrum: tuple[float, float, float], command: list[str], summary: dict) -> Path:
    """Write ``run_dir/model``: EMA weights + everything sampling needs (config, spectrum, input calibration)."""
    from simdiff.checkpoint import module_tensors, save_checkpoint

    meta = {"kind": MODEL_KIND, "config": to_dict(cfg), "L": cfg.data.L, "spectrum": list(spectrum),
            "command": command,
            "train": {k: summary[k] for k in ("steps", "wall_time_s", "final_loss", "threads", "device")},
            "data": {"path": str(data_path), "num_samples": int(data.shape[0])},
            "input_calibration": measure_input_calibration(data, cfg.process.basis, seed=cfg.train.seed),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return save_checkpoint(run_dir / MODEL_DIR, module_tensors("ema", ema), meta)


def _device_name(device: str | None) -> str:
    from simdiff.training import resolve_device

    dev = resolve_device(device)
    return "cpu" if dev is None else f"{dev} ({torch.cuda.get_device_name(dev)})"


def train_run(cfg: SkildConfig, run_dir: str | os.PathLike, command: list[str] | None = None,
              threads: int | None = None, device: str | None = None) -> dict:
    """Train (or resume) a SKILD / white-noise run in ``run_dir`` and export ``run_dir/model``.

    ``device`` (``"cuda"``, ``"cuda:N"``) trains there; data, randomness and checkpoints stay device-free.
    Returns a summary dict (steps, wall time, final loss, spectrum, model dir).
    """
    from simdiff.training import train
    from simdiff.utils.run import record_run

    run_dir = Path(run_dir)
    command = list(command) if command is not None else list(sys.argv)
    if threads is not None:
        torch.set_num_threads(threads)
    resumed = _check_resume(cfg, run_dir)
    data_path = data = None
    if cfg.data.path is not None:  # a user's file is checked before the run directory records this config
        data_path = _resolve_data(cfg, run_dir)
        data = _load_training_lattices(cfg, data_path)
    if not resumed:
        record_run(run_dir, config=cfg, seed=cfg.train.seed, command=command)
    if data is None:
        data_path = _resolve_data(cfg, run_dir)
        data = _load_training_lattices(cfg, data_path)

    spectrum = (tuple(cfg.process.spectrum) if cfg.process.spectrum is not None
                else fit_spectrum(data, cfg.process.basis))
    if cfg.process.kind == "spectral":
        loss_fn = spectral_loss_fn(build_process(cfg, cfg.data.L, spectrum))
    else:
        loss_fn = gaussian_loss_fn(build_gaussian(cfg))
    # Translations are a symmetry of the data exactly when the lattice is periodic (circular network padding).
    batch_fn = make_batch_fn(data, cfg.train.batch_size, cfg.data.augment, translate=cfg.model.circular)
    res = train(build_net(cfg), loss_fn, batch_fn, cfg.train, run_dir, desc=f"skild {cfg.process.kind}",
                meta={"spectrum": list(spectrum)}, device=device)
    summary = {"steps": res.steps, "completed": res.completed, "wall_time_s": res.wall_time,
               "final_loss": res.final_loss, "spectrum": dict(zip(("C", "alpha", "k0sq"), spectrum)),
               "model_dir": str(run_dir / MODEL_DIR), "threads": torch.get_num_threads(),
               "device": _device_name(device)}
    if res.completed:
        _export(cfg, run_dir, res.ema_model, data, data_path, spectrum, command, summary)
    return summary


# ----------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------

@dataclass
class SkildModel:
    """A trained network with its process: what the samplers need. ``net`` is in eval mode."""

    cfg: SkildConfig
    net: UNet2D
    spectrum: tuple[float, float, float]
    meta: dict
    path: Path

    @property
    def L(self) -> int:
        return self.cfg.data.L

    @property
    def kind(self) -> str:
        return self.cfg.process.kind

    @property
    def num_steps(self) -> int:
        return self.cfg.process.num_steps

    def process(self) -> sp.SpectralProcess:
        return build_process(self.cfg, self.L, self.spectrum)

    def schedule(self) -> gs.GaussianSchedule:
        return build_gaussian(self.cfg)


def available_pretrained() -> list[str]:
    if not PRETRAINED_ROOT.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_ROOT.iterdir() if (p / "meta.json").exists())


def resolve_model_dir(path: str | os.PathLike | None = None, pretrained: str | None = None) -> Path:
    """The model directory for a run directory, a model directory, or a shipped pretrained name."""
    if (path is None) == (pretrained is None):
        raise UserError("expected exactly one of a run DIR or --pretrained NAME")
    if pretrained is not None:
        names = available_pretrained()
        if pretrained not in names:
            raise UserError(f"unknown pretrained model '{pretrained}'; available: {', '.join(names) or '(none)'}")
        return PRETRAINED_ROOT / pretrained
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such run or model directory")
    if (p / MODEL_DIR / "meta.json").exists():
        return p / MODEL_DIR
    if (p / "meta.json").exists():
        return p
    if (p / "checkpoint").exists():
        raise CheckpointError(f"{p}: training has not finished (no {MODEL_DIR}/ yet); run `simdiff skild train` "
                              "again with the same config to resume it")
    raise CheckpointError(f"{p}: not a SKILD run or model directory (no {MODEL_DIR}/meta.json)")


def load_model(path: str | os.PathLike | None = None, pretrained: str | None = None,
               device: str | torch.device | None = None) -> SkildModel:
    """A trained model for sampling; ``device`` (``"cuda"``...) puts its network there (default: CPU)."""
    from simdiff.checkpoint import load_checkpoint, load_module_tensors
    from simdiff.training import resolve_device

    mdir = resolve_model_dir(path, pretrained)
    tensors, meta = load_checkpoint(mdir)
    if meta.get("kind") != MODEL_KIND:
        raise CheckpointError(f"{mdir}: not a SKILD model (kind={meta.get('kind')!r}, expected {MODEL_KIND!r})")
    # The checksum covers the weights only: an edited meta.json shows up as a config or network that does not fit.
    try:
        cfg = load_config(SkildConfig, meta["config"])
        net = build_net(cfg)
        load_module_tensors(net, "ema", tensors)
        spectrum = tuple(float(v) for v in meta["spectrum"])
        if len(spectrum) != 3 or not all(map(math.isfinite, spectrum)):
            raise ValueError(f"spectrum: expected 3 finite numbers (C, alpha, k0sq), received {meta['spectrum']}")
    except KeyError as err:
        raise CheckpointError(f"{mdir / 'meta.json'}: expected a key {err} (the file was edited, or written by "
                              "another simdiff version)") from None
    except (TypeError, ValueError, CheckpointError) as err:
        lines = str(err).splitlines()  # torch lists every mismatched tensor: the first one says enough
        detail = " ".join(x.strip() for x in lines[:2]) + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
        raise CheckpointError(f"{mdir / 'meta.json'}: does not fit the saved network (the file was edited, or "
                              f"written by another simdiff version): {detail}") from None
    net.eval().requires_grad_(False)
    dev = resolve_device(device)
    if dev is not None:
        net.to(dev)
    return SkildModel(cfg=cfg, net=net, spectrum=spectrum, meta=meta, path=mdir)


# ----------------------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------------------

def resolve_steps(model: SkildModel, steps: int | None) -> int | None:
    """Reverse jumps of a full generation: ``-1`` = the model's ``sample.steps`` (at most the process steps),
    ``None`` = every step, else an integer in ``1 .. process steps``: more jumps than the process has steps would
    silently mean fewer, so an explicit request for them is an error."""
    if steps == -1:
        return min(int(model.cfg.sample.steps), model.num_steps)
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= model.num_steps:
        raise UserError(f"steps: expected an integer in 1..{model.num_steps} (the model's process steps; 0 on the "
                        f"command line = every step), received {steps!r}")
    return int(steps)


def _steps_for(model: SkildModel, n_start: int, steps: int | None) -> int | None:
    """Same step density as a full generation with ``steps`` jumps."""
    if steps is None:
        return None
    return max(1, math.ceil(steps * n_start / model.num_steps))


def on_net_device(net: torch.nn.Module, fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Wrap ``fn(x, t)`` so its inputs go to ``net``'s device and its output comes back to ``x``'s.

    The samplers keep their state and random draws on the CPU (float64 mode math, one CPU generator), so a
    seed gives the same draws on every device; only the network call moves.
    """
    dev = next(net.parameters()).device
    if dev.type == "cpu":
        return fn

    def moved(x: Tensor, t: Tensor) -> Tensor:
        return fn(x.to(dev), t.to(dev)).to(x.device)
    return moved


def _spectral_eps_fn(model: SkildModel):
    n_steps = model.num_steps
    return on_net_device(model.net, lambda x, n: model.net(x, n.float() / n_steps))


def _gaussian_model_fn(model: SkildModel):
    n_steps = model.num_steps
    return on_net_device(model.net, lambda x, t: model.net(x, (t.float() + 1) / n_steps))


def _batches(n: int, batch_size: int):
    for lo in range(0, n, batch_size):
        yield lo, min(n, lo + batch_size)


def generate(model: SkildModel, n: int, seed: int = 0, steps: int | None = -1, batch_size: int | None = None) -> Tensor:
    """``n`` unconditional samples ``(n, 1, L, L)`` float32 (before sign discretisation).

    ``steps = -1`` uses the model's ``sample.steps``; ``None`` every step.
    """
    from simdiff.utils.progress import progress

    if n < 1:
        raise ValueError(f"n: expected >= 1, received {n}")
    steps = resolve_steps(model, steps)
    bs = batch_size or model.cfg.sample.batch_size
    gen = torch.Generator().manual_seed(int(seed))
    L, out = model.L, []
    for lo, hi in progress(list(_batches(n, bs)), desc=f"generate ({model.kind})"):
        shape = (hi - lo, 1, L, L)
        if model.kind == "spectral":
            proc = model.process()
            x_start = sp.prior_sample(proc, shape, proc.num_steps, generator=gen)
            out.append(sp.sample(proc, _spectral_eps_fn(model), x_start, proc.num_steps, num_steps=steps,
                                 generator=gen, clip_x0=model.cfg.sample.clip_x0,
                                 eps_error=model.cfg.sample.eps_error))
        else:
            sched = model.schedule()
            k = steps if steps is not None else sched.num_steps
            with torch.no_grad():
                out.append(gs.ddim_sample(_gaussian_model_fn(model), shape, sched, "epsilon", k, gen, eta=1.0,
                                          clip=model.cfg.sample.clip_x0))
    return torch.cat(out).float()


def check_lowres(model: SkildModel, x_low: np.ndarray | Tensor) -> Tensor:
    """Validate a low-resolution input ``(N, R, R)`` / ``(N, 1, R, R)``: ``L/8 <= R <= L``; returns ``(N, R, R)``."""
    x = torch.as_tensor(np.asarray(x_low, dtype=np.float32))
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise UserError(f"input: expected lattices (N, R, R) or (N, 1, R, R), received shape {tuple(x.shape)}")
    R, L = int(x.shape[-1]), model.L
    if not math.ceil(L / 8) <= R <= L:
        raise UserError(f"input: expected a resolution R with {math.ceil(L / 8)} <= R <= {L} (the model's L = {L}), "
                        f"received R = {R}")
    return x


SR_CONDITIONING = ("start", "replace")


def superres_tau(model: SkildModel, tau: float | None = None) -> float:
    """The SNR threshold of super-resolution's start: ``tau``, else ``sample.superres_tau``, else ``process.tau``."""
    for v in (tau, model.cfg.sample.superres_tau):
        if v is not None:
            if not v > 0:
                raise UserError(f"superres tau: expected > 0, received {v}")
            return float(v)
    return float(model.cfg.process.tau)


def superres_start(model: SkildModel, R: int, tau: float | None = None) -> int:
    """Start step ``n0``: the first step whose cutoff ``k_tau`` (at :func:`superres_tau`) is at or below the
    input's highest wavenumber."""
    proc = model.process()
    return sp.start_step(proc.lambdas, sp.max_resolved_wavenumber(R, proc.basis), superres_tau(model, tau))


def input_calibration(model: SkildModel, R: int, kind: str) -> tuple[Tensor, Tensor] | None:
    """``(gain, residual variance)`` ``(L, L)`` for inputs of side ``R`` made by ``kind``; ``None`` for raw."""
    if kind not in INPUT_KINDS:
        raise UserError(f"input kind: expected one of {', '.join(INPUT_KINDS)}, received {kind!r}")
    if kind == "raw":
        return None
    L, basis = model.L, model.cfg.process.basis
    table = (model.meta.get("input_calibration") or {}).get(kind, {})
    if L % R or str(L // R) not in table:
        have = ", ".join(f"R={L // int(b)}" for b in table) or "none"
        raise UserError(f"input kind '{kind}': no calibration for R = {R} (this model has {have}); use "
                        "--input-kind raw for other resolutions")
    cal = table[str(L // R)]
    k2 = sp.wavenumber_sq(L, basis)
    keys = torch.as_tensor(cal["k2"], dtype=torch.float64)
    idx = (keys[None, None, :] - k2[..., None]).abs().argmin(dim=-1)   # nearest stored shell of each mode
    known = sp.known_mode_mask(R, L, basis)
    if not bool(torch.allclose(keys[idx][known], k2[known], rtol=1e-6, atol=1e-5)):
        raise CheckpointError(f"{model.path}: input calibration for {kind} R = {R} does not match the mode grid")
    gain = torch.where(known, torch.as_tensor(cal["gain"], dtype=torch.float64)[idx], torch.ones_like(k2))
    resid = torch.where(known, torch.as_tensor(cal["resid"], dtype=torch.float64)[idx], torch.zeros_like(k2))
    return gain, resid


def superres(model: SkildModel, x_low: np.ndarray | Tensor, seed: int = 0, steps: int | None = -1,
             batch_size: int | None = None, input_kind: str = "raw",
             conditioning: str | None = None, tau: float | None = None) -> tuple[Tensor, dict]:
    """Honest SKILD super-resolution of real low-resolution inputs ``(N, R, R)`` -> ``(N, 1, L, L)`` float32.

    1. place the input's modes into the ``L x L`` mode grid (nothing above its resolution is known); for inputs
       made by a known operator (``input_kind`` ``majority`` / ``average``) the placed modes are mapped to their
       LMMSE estimate of the true modes with a residual variance (:func:`measure_input_calibration`, from
       training lattices only); ``raw`` takes them as exact;
    2. ``n0`` = first step with ``k_tau(n0) <=`` the input's highest resolved wavenumber, ``k_tau`` at the SNR
       threshold ``tau`` (default: the model's ``sample.superres_tau``, else ``process.tau``);
    3. draw ``X_{n0}``: known modes from the forward marginal around that estimate, the others from the noise
       prior ``sqrt(S0) eps``; 4. run the reverse process from ``n0``.

    ``conditioning`` (default: the model's ``sample.superres_conditioning``): ``start`` uses the input only in
    ``X_{n0}``, after which the network's ``x0_hat`` drives every mode; ``replace`` draws the known modes' ``X_0``
    once (around the estimate, with its residual variance) and takes every reverse step's posterior around that
    draw on the known modes, so they cannot drift away from the input over the reverse process.
    """
    from simdiff.utils.progress import progress

    if model.kind != "spectral":
        raise UserError("superres: expected a SKILD (spectral) model; the white-noise baseline super-resolves "
                        "through sdedit_superres")
    x = check_lowres(model, x_low)
    R = int(x.shape[-1])
    steps = resolve_steps(model, steps)
    bs = batch_size or model.cfg.sample.batch_size
    proc = model.process()
    cal = input_calibration(model, R, input_kind)
    conditioning = conditioning or model.cfg.sample.superres_conditioning
    if conditioning not in SR_CONDITIONING:
        raise UserError(f"conditioning: expected one of {', '.join(SR_CONDITIONING)}, received {conditioning!r}")
    tau = superres_tau(model, tau)
    n0 = superres_start(model, R, tau)
    k = _steps_for(model, n0, steps)
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for lo, hi in progress(list(_batches(x.shape[0], bs)), desc=f"superres {R}->{model.L}"):
        modes, known = sp.place_modes(x[lo:hi, None].double(), model.L, proc.basis)
        if cal is not None:
            modes = cal[0] * modes
        pinned = None
        if conditioning == "replace":
            if cal is not None:   # one draw of the known modes' X_0 from their Gaussian estimate
                modes = modes + cal[1].sqrt() * torch.randn(modes.shape, generator=gen, dtype=torch.float64)
            pinned = (known, modes)
        x_start = sp.prior_sample(proc, tuple(modes.shape), n0, generator=gen, known_modes=modes, known=known,
                                  known_var=None if cal is None or pinned is not None else cal[1])
        out.append(sp.sample(proc, _spectral_eps_fn(model), x_start, n0, num_steps=k, generator=gen,
                             clip_x0=model.cfg.sample.clip_x0, eps_error=model.cfg.sample.eps_error,
                             pinned=pinned))
    info = {"R": R, "L": model.L, "n0": n0, "num_steps": model.num_steps, "sampler_steps": k,
            "input_kind": input_kind, "conditioning": conditioning,
            "k_max_input": sp.max_resolved_wavenumber(R, proc.basis),
            "tau": tau, "k_tau_n0": float(sp.k_tau(proc.lambdas[n0], tau))}
    return torch.cat(out).float(), info


# ----------------------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------------------

def nearest_upsample(x_low: Tensor, L: int) -> Tensor:
    """Nearest-neighbour upsampling ``(N, R, R) -> (N, L, L)`` for any integer ``R <= L``."""
    R = x_low.shape[-1]
    idx = torch.div(torch.arange(L) * R, L, rounding_mode="floor")
    return x_low[..., idx, :][..., :, idx]


def sdedit_start(model: SkildModel, R: int, tau: float | None = None) -> int:
    """SDEdit start index for the white-noise model: the first step at which the data's SNR at the input's
    highest wavenumber, ``abar S0(k_max) / (1 - abar)``, drops to ``tau`` (the same rule SKILD uses;
    :func:`superres_tau`)."""
    sched = model.schedule()
    basis = model.cfg.process.basis
    k_max = sp.max_resolved_wavenumber(R, basis)
    s_kmax = float(sp.power_spectrum(torch.tensor(k_max**2, dtype=torch.float64), *model.spectrum))
    ab = sched.alpha_bars.double()
    snr = ab * s_kmax / (1.0 - ab)
    hits = torch.nonzero(snr <= superres_tau(model, tau))
    return int(hits[0, 0]) if hits.numel() else sched.num_steps - 1


def sdedit_superres(model: SkildModel, x_low: np.ndarray | Tensor, seed: int = 0, steps: int | None = -1,
                    batch_size: int | None = None, tau: float | None = None) -> tuple[Tensor, dict]:
    """White-noise baseline: nearest-neighbour upsample, noise to ``t0`` (:func:`sdedit_start` at ``tau``),
    denoise."""
    from simdiff.utils.progress import progress

    if model.kind != "gaussian":
        raise UserError("sdedit_superres: expected the white-noise (gaussian) baseline model")
    x = check_lowres(model, x_low)
    R = int(x.shape[-1])
    steps = resolve_steps(model, steps)
    bs = batch_size or model.cfg.sample.batch_size
    sched = model.schedule()
    tau = superres_tau(model, tau)
    t0 = sdedit_start(model, R, tau)
    k = _steps_for(model, t0 + 1, steps) or (t0 + 1)
    ts = torch.unique(torch.round(torch.linspace(0, t0, k)).long()).flip(0).tolist()
    gen = torch.Generator().manual_seed(int(seed))
    model_fn = _gaussian_model_fn(model)
    out = []
    for lo, hi in progress(list(_batches(x.shape[0], bs)), desc=f"sdedit {R}->{model.L}"):
        up = nearest_upsample(x[lo:hi], model.L)[:, None]
        noise = torch.randn(up.shape, generator=gen)
        xt = gs.corrupt(up, torch.full((up.shape[0],), t0, dtype=torch.long), noise, sched)
        with torch.no_grad():
            for i, t in enumerate(ts):
                prev = ts[i + 1] if i + 1 < len(ts) else -1
                tt = torch.full((xt.shape[0],), t, dtype=torch.long)
                xt = gs.ddim_step(model_fn(xt, tt), xt, tt, prev, sched, "epsilon", eta=1.0, generator=gen,
                                  clip=model.cfg.sample.clip_x0)
        out.append(xt)
    return torch.cat(out).float(), {"R": R, "L": model.L, "t0": t0, "tau": tau, "sampler_steps": len(ts)}


__all__ = [
    "MODEL_DIR", "MODEL_KIND", "PRETRAINED_ROOT", "load_lattices", "save_npz", "to_spins",
    "generate_training_data", "augment", "make_batch_fn", "build_net", "fit_spectrum", "build_process",
    "build_gaussian", "spectral_loss_fn", "gaussian_loss_fn", "INPUT_KINDS", "coarse_grain", "sr_factors", "measure_input_calibration", "input_calibration", "train_run", "SkildModel", "available_pretrained",
    "resolve_model_dir", "load_model", "on_net_device", "generate", "check_lowres", "SR_CONDITIONING", "superres_tau", "superres_start", "superres",
    "nearest_upsample", "sdedit_start", "sdedit_superres",
]
