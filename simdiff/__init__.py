"""simdiff: diffusion models for robotics and scientific simulation.

The engine (processes, samplers, nets, training, checkpoints, executors, config) lives here; worlds are in
``envs``, physics ground truth in ``physics``, agents in ``policies``. Importing this package is cheap: heavy
dependencies are imported by the modules that need them.
"""

__version__ = "0.1.0"
