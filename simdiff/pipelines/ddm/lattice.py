"""Lattice domain of decentralized diffusion: Ising data, SKILD / Gaussian experts, lattice router, sampling.

Adapter over :mod:`simdiff.pipelines.skild.core` (data loading, network, forward processes, model format): an
expert is a SKILD model (``kind: simdiff.skild.model``) trained on one shard, so ``simdiff skild sample`` and
``skild validate`` read a single expert too. What experts share, written once by the driver into
``shared.json``: the noise spectrum ``S0`` (fitted on all the data, since a mixture needs one forward process
for all experts) and nothing else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from simdiff.config import to_dict
from simdiff.pipelines.ddm.config import DDMConfig
from simdiff.pipelines.ddm.mixture import MixtureStats, gaussian_time, mixture_fn
from simdiff.pipelines.ddm.router import LatticeRouter
from simdiff.pipelines.skild import core
from simdiff.pipelines.skild.config import SkildConfig
from simdiff.processes import gaussian as gs
from simdiff.processes import spectral as sp

SHARD_KEY = "spins"


# ------------------------------------------------------------------------------------------------- data
def training_data(cfg: DDMConfig, run_dir: Path) -> tuple[np.ndarray, Path]:
    """All training lattices ``(N, L, L)`` float32 and their file (generated into the run when ``data.path`` is
    null, with the SKILD data settings)."""
    s = cfg.skild
    if s.data.path is not None:
        path = Path(s.data.path)
    else:
        path = run_dir / "data" / "train.npz"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            core.generate_training_data(s, path)
    data = core.load_lattices(path)
    if data.shape[-1] != s.data.L:
        from simdiff.errors import DatasetError

        raise DatasetError(f"{path}: expected lattices of side skild.data.L = {s.data.L}, received {data.shape[-1]}")
    return data, path


def features(cfg: DDMConfig, data: np.ndarray) -> tuple[np.ndarray, list[str]]:
    from simdiff.pipelines.ddm.partition import lattice_features

    p = cfg.partition
    return lattice_features(data, p.spectral_shells, tuple(p.coarse_factors))


def fingerprint(data: np.ndarray) -> str:
    from simdiff.pipelines.ddm.partition import fingerprint as fp

    return fp(data)


def cluster_samples(data: np.ndarray, part) -> list[int]:
    """Training samples per cluster (one lattice each)."""
    return list(part.sizes)


def shared_stats(cfg: DDMConfig, data: np.ndarray) -> dict:
    """What every expert must share for the mixture to be one diffusion: the noise spectrum ``S0``."""
    s = cfg.skild
    if s.process.spectrum is not None:
        spectrum = list(s.process.spectrum)
    else:
        spectrum = list(core.fit_spectrum(torch.as_tensor(data), s.process.basis))
    return {"spectrum": spectrum}


def write_shard(path: Path, data: np.ndarray, rows: np.ndarray) -> None:
    core.save_npz(path, **{SHARD_KEY: np.where(data[rows] >= 0, 1, -1).astype(np.int8), "rows": rows})


def read_shard(path: Path) -> np.ndarray:
    return core.load_lattices(path, key=SHARD_KEY)


# ---------------------------------------------------------------------------------------------- members
def member_config(cfg: DDMConfig, steps: int, seed: int, spectrum: list[float], shard: str) -> SkildConfig:
    """The SKILD config one member (expert or monolith) trains with: its steps, seed, shard (a path relative to
    the run directory, so a moved run stays valid) and the shared S0."""
    s = cfg.skild
    train = dataclasses.replace(s.train, steps=int(steps), seed=int(seed),
                                warmup_steps=min(s.train.warmup_steps, int(steps)),
                                ckpt_every=min(s.train.ckpt_every, int(steps)) if s.train.ckpt_every else 0)
    return dataclasses.replace(s, data=dataclasses.replace(s.data, path=str(shard)),
                               process=dataclasses.replace(s.process, spectrum=tuple(spectrum)), train=train)


def _noise_fn(scfg: SkildConfig, spectrum: list[float]):
    """``(x0 (B, 1, L, L), generator) -> (x_t pixels, t in (0, 1])``: the experts' forward process."""
    if scfg.process.kind == "spectral":
        proc = core.build_process(scfg, scfg.data.L, tuple(spectrum))
        n_steps = proc.num_steps
        proc_on = sp.device_copies(proc)

        def noise(x0: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
            # CPU generator, then moved: the same draws on every device
            n = torch.randint(1, n_steps + 1, (x0.shape[0],), generator=gen).to(x0.device)
            eps = torch.randn(x0.shape, generator=gen).to(x0.device)
            p = proc_on(x0.device)
            xn = sp.corrupt(p, sp.to_modes(x0, p.basis), n, eps)
            return sp.from_modes(xn, p.basis).float(), n.float() / n_steps
        return noise
    sched = core.build_gaussian(scfg)

    def noise_g(x0: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        t = torch.randint(0, sched.num_steps, (x0.shape[0],), generator=gen).to(x0.device)
        eps = torch.randn(x0.shape, generator=gen).to(x0.device)
        return gs.corrupt(x0, t, eps, sched), gaussian_time(t, sched.num_steps)
    return noise_g


def build_member(scfg: SkildConfig, spectrum: list[float], shard: np.ndarray):
    """``(net, loss_fn, batch_fn)`` of one member, exactly as ``skild train`` would build them."""
    net = core.build_net(scfg)
    if scfg.process.kind == "spectral":
        loss_fn = core.spectral_loss_fn(core.build_process(scfg, scfg.data.L, tuple(spectrum)))
    else:
        loss_fn = core.gaussian_loss_fn(core.build_gaussian(scfg))
    batch_fn = core.make_batch_fn(torch.as_tensor(shard), scfg.train.batch_size, scfg.data.augment,
                                  scfg.model.circular)
    return net, loss_fn, batch_fn


def export_member(out_dir: Path, scfg: SkildConfig, spectrum: list[float], ema: torch.nn.Module, info: dict) -> Path:
    """Write the member's EMA network in the SKILD model format (``core.load_model`` reads it)."""
    from simdiff.checkpoint import module_tensors, save_checkpoint

    meta = {"kind": core.MODEL_KIND, "config": to_dict(scfg), "L": scfg.data.L, "spectrum": list(spectrum),
            "command": info.get("command"), "train": info.get("train"), "data": info.get("data"),
            "ddm": info.get("ddm")}
    return save_checkpoint(out_dir / core.MODEL_DIR, module_tensors("ema", ema), meta)


#: sections of a SKILD config that shape the weights; sampler and validation settings may change afterwards
TRAINING_SECTIONS = ("data", "process", "model", "train")


def model_matches(meta: dict, scfg: SkildConfig) -> bool:
    """An export belongs to this member when its training sections are the member's (sampling may differ)."""
    stored = meta.get("config") or {}
    want = to_dict(scfg)
    return meta.get("kind") == core.MODEL_KIND and all(stored.get(k) == want[k] for k in TRAINING_SECTIONS)


def load_expert(model_dir: Path, sample_cfg=None):
    """A member's export as a ``core.SkildModel``; with ``sample_cfg`` (the run's ``skild.sample``) that section of
    the stored config is replaced before parsing, so exports stay loadable when sampler settings change."""
    from simdiff.checkpoint import load_checkpoint, load_module_tensors
    from simdiff.config import load_config
    from simdiff.errors import CheckpointError

    tensors, meta = load_checkpoint(model_dir)
    if meta.get("kind") != core.MODEL_KIND:
        raise CheckpointError(f"{model_dir}: not a SKILD model (kind={meta.get('kind')!r})")
    stored = dict(meta["config"])
    if sample_cfg is not None:
        stored["sample"] = to_dict(sample_cfg)
    cfg = load_config(SkildConfig, stored)
    net = core.build_net(cfg)
    load_module_tensors(net, "ema", tensors)
    net.eval().requires_grad_(False)
    return core.SkildModel(cfg=cfg, net=net, spectrum=tuple(meta["spectrum"]), meta=meta, path=Path(model_dir))


def with_sampling(model, sample_cfg):
    """``model`` (a SKILD model) sampled with the run's sampler settings ``sample_cfg`` (a SampleConfig)."""
    return dataclasses.replace(model, cfg=dataclasses.replace(model.cfg, sample=sample_cfg))


# ------------------------------------------------------------------------------------------------ router
def build_router(cfg: DDMConfig) -> LatticeRouter:
    r = cfg.router
    return LatticeRouter(cfg.num_experts, channels=r.channels, depth=r.depth, hidden=r.hidden,
                         time_dim=r.time_dim, circular=cfg.skild.model.circular)


def router_batch_fn(cfg: DDMConfig, data: np.ndarray, labels: np.ndarray):
    """``batch_fn(step, gen) -> {"x0": (B, 1, L, L), "label": (B,)}`` over all data, augmented like the experts'
    (augmentations are symmetries that keep a lattice in its cluster)."""
    x = torch.as_tensor(data)
    lab = torch.as_tensor(labels, dtype=torch.long)
    s = cfg.skild
    bs = cfg.router.batch_size

    def batch_fn(step: int, gen: torch.Generator) -> dict:
        idx = torch.randint(0, x.shape[0], (bs,), generator=gen)
        x0 = x[idx]
        if s.data.augment:
            x0 = core.augment(x0, gen, s.model.circular)
        return {"x0": x0[:, None], "label": lab[idx]}
    return batch_fn


def router_noise_fn(cfg: DDMConfig, spectrum: list[float]):
    return _noise_fn(cfg.skild, spectrum)


# ---------------------------------------------------------------------------------------------- sampling
def _eps_fn(net: torch.nn.Module, kind: str, n_steps: int):
    # Time conventions of simdiff.pipelines.skild.core: spectral n / N (n = 1..N), Gaussian (t + 1) / N.
    if kind == "spectral":
        return core.on_net_device(net, lambda x, n: net(x, n.float() / n_steps))
    return core.on_net_device(net, lambda x, t: net(x, gaussian_time(t, n_steps)))


def check_experts(models: list) -> None:
    """Experts of one mixture must share the forward process (config and spectrum) and the lattice size."""
    ref = models[0]
    for k, m in enumerate(models[1:], start=1):
        if (to_dict(m.cfg.process) != to_dict(ref.cfg.process) or list(m.spectrum) != list(ref.spectrum)
                or m.L != ref.L or m.cfg.data.temperature != ref.cfg.data.temperature):
            raise ValueError(f"expert {k} ({m.path}) does not share expert 0's forward process, spectrum or L; "
                             "a mixture needs one diffusion for all experts")


def sample_mixture(models: list, router: torch.nn.Module, routing: str, n: int, seed: int = 0,
                   steps: int | None = -1, batch_size: int | None = None,
                   stats: MixtureStats | None = None) -> Tensor:
    """``n`` lattices ``(n, 1, L, L)`` float32 from the routed mixture of expert ``models`` (SKILD models).

    Same noise stream and sampler settings as ``core.generate`` for a single model (one generator seeded with
    ``seed``: prior draw, then the sampler, batch after batch; ``clip_x0`` and ``eps_error`` from expert 0's
    ``sample`` config), so a mixture of identical experts reproduces it.
    """
    from simdiff.utils.progress import progress

    if n < 1:
        raise ValueError(f"n: expected >= 1, received {n}")
    check_experts(models)
    ref = models[0]
    steps = core.resolve_steps(ref, steps)
    bs = batch_size or ref.cfg.sample.batch_size
    n_steps = ref.num_steps
    router = router.eval()

    def router_call(x: Tensor, t: Tensor) -> Tensor:
        from simdiff.pipelines.ddm.router import router_probs

        tc = t.float() / n_steps if ref.kind == "spectral" else gaussian_time(t, n_steps)
        return router_probs(router, x.float(), tc)
    router_fn = core.on_net_device(router, router_call)

    fn = mixture_fn([_eps_fn(m.net.eval(), ref.kind, n_steps) for m in models], router_fn, routing, stats)
    gen = torch.Generator().manual_seed(int(seed))
    L, out = ref.L, []
    for lo in progress(range(0, n, bs), desc=f"ddm generate ({routing})"):
        shape = (min(n, lo + bs) - lo, 1, L, L)
        if ref.kind == "spectral":
            proc = ref.process()
            x_start = sp.prior_sample(proc, shape, proc.num_steps, generator=gen)
            out.append(sp.sample(proc, fn, x_start, proc.num_steps, num_steps=steps, generator=gen,
                                 clip_x0=ref.cfg.sample.clip_x0,
                                 eps_error=getattr(ref.cfg.sample, "eps_error", 0.0) or 0.0))
        else:
            sched = ref.schedule()
            k = steps if steps is not None else sched.num_steps
            out.append(gs.ddim_sample(fn, shape, sched, "epsilon", k, gen, eta=1.0, clip=ref.cfg.sample.clip_x0))
    return torch.cat(out).float()


def sampler_steps(models: list, steps: int | None) -> int:
    s = core.resolve_steps(models[0], steps)
    return models[0].num_steps if s is None else s


__all__ = ["training_data", "features", "fingerprint", "cluster_samples", "shared_stats", "write_shard",
           "read_shard", "member_config", "build_member", "export_member", "model_matches", "load_expert",
           "with_sampling", "TRAINING_SECTIONS", "build_router",
           "router_batch_fn", "router_noise_fn", "sample_mixture", "check_experts", "sampler_steps",
           "SHARD_KEY"]
