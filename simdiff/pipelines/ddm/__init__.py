"""Decentralized diffusion (DDM, Paris): isolated experts on data clusters, mixed by a router at sampling time.

* :mod:`~simdiff.pipelines.ddm.config` -- the run schema (:class:`DDMConfig`);
* :mod:`~simdiff.pipelines.ddm.partition` -- features, seeded k-means, the saved partition, compute split;
* :mod:`~simdiff.pipelines.ddm.router` -- the router networks ``r(k | x_t, t)`` and their loss;
* :mod:`~simdiff.pipelines.ddm.mixture` -- routed mixtures (full / top1 / top2) for every process;
* :mod:`~simdiff.pipelines.ddm.trainer` -- experts, router and monolithic baseline as independent jobs;
* :mod:`~simdiff.pipelines.ddm.lattice`, :mod:`~simdiff.pipelines.ddm.trajectories` -- domain adapters
  (SKILD lattices, diffusion policies);
* :mod:`~simdiff.pipelines.ddm.compare` -- decentralized vs monolithic: report.md + metrics.json.
"""

from simdiff.pipelines.ddm.config import DDMConfig

__all__ = ["DDMConfig"]
