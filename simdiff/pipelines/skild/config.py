"""SKILD run configuration: the schema (values live in ``configs/skild/*.yaml``).

One :class:`SkildConfig` determines a run: the data (an Ising ``.npz`` or generated on the fly), the forward
process (``spectral`` = SKILD, ``gaussian`` = the white-noise DDPM baseline with the same network), the network,
the optimisation (:class:`simdiff.training.TrainConfig`), and the sampler / validation settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from simdiff.config import check_range
from simdiff.training import TrainConfig

T_CRITICAL = 2.0 / math.log(1.0 + math.sqrt(2.0))


@dataclass(frozen=True)
class DataConfig:
    """Training lattices: ``path`` to an ``.npz`` whose key ``spins`` is int8 ``(N, L, L)``, or generated.

    With ``path: null`` the training command draws ``num_samples`` Wolff configurations at ``temperature`` with
    ``seed`` into ``<run>/data/train.npz`` (keep this seed away from the reference set's seed).
    """

    path: str | None = None
    L: int = 16
    temperature: float = T_CRITICAL
    num_samples: int = 4000
    algorithm: str = "wolff"
    seed: int = 1000
    #: random symmetry transforms of every training lattice: D4 and a global spin flip, plus translations when
    #: the lattice is periodic (``model.circular: true``)
    augment: bool = True

    def __post_init__(self) -> None:
        check_range("data.L", self.L, lo=4)
        check_range("data.temperature", self.temperature, lo=0.0, lo_open=True)
        check_range("data.num_samples", self.num_samples, lo=1)
        check_range("data.seed", self.seed, lo=0)


@dataclass(frozen=True)
class ProcessConfig:
    """Forward process. ``spectral`` is SKILD; ``gaussian`` is the white-noise DDPM baseline.

    Spectral: ``abar_n(k) = exp(-max(k^2, k_c^2) lambda_n)``, ``lambda`` from the ``schedule`` with
    ``lambda_i, lambda_f`` (and ``theta`` for ``linear``), noise spectrum ``S0`` fitted to the training data
    unless ``spectrum = [C, alpha, k0sq]`` is given. ``k_c > 0`` makes the DC mode decay too, which generation
    from pure noise needs (with ``k_c = 0`` the mean magnetisation would never be noised).
    """

    kind: Literal["spectral", "gaussian"] = "spectral"
    num_steps: int = 1000
    basis: Literal["dct", "fft"] = "fft"
    schedule: Literal["linear", "loglinear"] = "loglinear"
    lambda_i: float = -3.0
    lambda_f: float = -0.5
    theta: float = 1.0
    k_c: float = 2.0 * math.pi
    tau: float = 0.1
    spectrum: tuple[float, float, float] | None = None
    #: gaussian baseline only
    gaussian_schedule: Literal["linear", "cosine"] = "cosine"

    def __post_init__(self) -> None:
        check_range("process.num_steps", self.num_steps, lo=2)
        check_range("process.k_c", self.k_c, lo=0.0)
        check_range("process.tau", self.tau, lo=0.0, lo_open=True)
        if self.schedule == "linear":
            check_range("process.theta", self.theta, lo=0.0, lo_open=True)
            check_range("process.lambda_f", self.lambda_f, lo=0.0, lo_open=True)
        if self.spectrum is not None and (self.spectrum[0] <= 0 or self.spectrum[2] <= 0):
            raise ValueError(f"process.spectrum: expected [C > 0, alpha, k0sq > 0], received {list(self.spectrum)}")


@dataclass(frozen=True)
class ModelConfig:
    """The 2D U-Net (:class:`simdiff.nets.unet2d.UNet2D`)."""

    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    time_dim: int = 64
    circular: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_range("model.base_channels", self.base_channels, lo=1)
        check_range("model.num_res_blocks", self.num_res_blocks, lo=1)
        check_range("model.time_dim", self.time_dim, lo=2)
        check_range("model.dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        if not self.channel_mults:
            raise ValueError("model.channel_mults: expected at least one level, received []")


@dataclass(frozen=True)
class SampleConfig:
    """Sampler settings shared by generation and super-resolution."""

    #: reverse steps for a full generation (``null``: every one of the ``num_steps``); super-resolution from step
    #: ``n0`` uses the same step density, ``ceil(steps * n0 / N)``
    steps: int | None = 100
    #: clamp ``x0_hat`` to ``[-clip, clip]`` in pixel space (spins live in [-1, 1]); ``null`` disables
    clip_x0: float | None = 1.0
    #: regularisation of ``x0_hat`` (``predict_x0`` in simdiff.processes.spectral): modes with ``abar_n`` below
    #: about ``eps_error^2`` shrink to 0 instead of amplifying the network's error by ``1 / sqrt(abar_n)``;
    #: 0 is the plain inversion. 0.05 was chosen on the L = 16 quick model against training lattices
    #: (0.02 to 0.1 give the same energy and |m|; 0 with clipping collapses to energy -1.0).
    eps_error: float = 0.05
    batch_size: int = 250
    #: how super-resolution holds on to its input: ``start`` (only through ``X_{n0}``) or ``replace`` (every
    #: reverse step's posterior on the input's modes is taken around their known ``X_0``; see ``superres``)
    superres_conditioning: Literal["start", "replace"] = "start"
    #: SNR threshold that picks super-resolution's start step: ``n0`` is the first step whose cutoff
    #: ``k_tau`` at this threshold is at or below the input's highest wavenumber (``null``: ``process.tau``).
    #: Smaller starts later (more noise, more freedom for the network, less copying of the input).
    superres_tau: float | None = None

    def __post_init__(self) -> None:
        if self.steps is not None:
            check_range("sample.steps", self.steps, lo=1)
        if self.clip_x0 is not None:
            check_range("sample.clip_x0", self.clip_x0, lo=0.0, lo_open=True)
        check_range("sample.eps_error", self.eps_error, lo=0.0)
        check_range("sample.batch_size", self.batch_size, lo=1)
        if self.superres_tau is not None:
            check_range("sample.superres_tau", self.superres_tau, lo=0.0, lo_open=True)


@dataclass(frozen=True)
class ValidateConfig:
    """What ``simdiff skild validate`` measures (the reference set comes from the command line)."""

    num_generate: int = 1000
    #: super-resolution factors b (inputs R = L / b made from held-out reference lattices)
    sr_factors: tuple[int, ...] = (2, 4)
    num_superres: int = 500
    #: how low-resolution inputs are made from the reference: block-spin majority or block average
    downsample: Literal["majority", "average"] = "majority"
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("validate.num_generate", self.num_generate, lo=2)
        check_range("validate.num_superres", self.num_superres, lo=2)
        for b in self.sr_factors:
            check_range("validate.sr_factors[]", b, lo=2)


@dataclass(frozen=True)
class SkildConfig:
    name: str = "skild"
    data: DataConfig = field(default_factory=DataConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)

    def __post_init__(self) -> None:
        levels = len(self.model.channel_mults)
        if self.data.L % (2 ** (levels - 1)):
            raise ValueError(f"data.L: expected a multiple of {2 ** (levels - 1)} for {levels} U-Net levels "
                             f"(model.channel_mults), received L={self.data.L}")


__all__ = ["T_CRITICAL", "DataConfig", "ProcessConfig", "ModelConfig", "SampleConfig", "ValidateConfig",
           "SkildConfig"]
