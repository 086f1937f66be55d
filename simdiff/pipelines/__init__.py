"""Pipelines compose the engine and the domains into runs that write a run directory.

Each pipeline is a module or package here (e.g. :mod:`simdiff.pipelines.demo`, which trains and samples a
small denoiser on a 2D Gaussian mixture); the CLI in :mod:`simdiff.cli` is their front door.
"""
