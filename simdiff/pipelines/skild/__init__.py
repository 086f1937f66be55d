"""SKILD: scale-invariant spectral diffusion on lattices (generation + honest continuous super-resolution).

* :mod:`~simdiff.pipelines.skild.config` -- the run schema (:class:`SkildConfig`);
* :mod:`~simdiff.pipelines.skild.core` -- data, training, loading, generation, super-resolution, baselines;
* :mod:`~simdiff.pipelines.skild.validate` -- comparison with Ising ground truth, report and plots.
"""

from simdiff.pipelines.skild.config import SkildConfig

__all__ = ["SkildConfig"]
