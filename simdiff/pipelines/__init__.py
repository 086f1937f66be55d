"""Pipelines compose the engine and the domains into runs that write a run directory.

* :mod:`simdiff.pipelines.demo` -- train and sample a small denoiser on a 2D Gaussian mixture.
"""
