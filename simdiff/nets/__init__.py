"""Backbones: architecture only (no losses, optimizers or training loops).

* :mod:`simdiff.nets.embeddings` -- ``sinusoidal_embedding(t, dim)`` step features (re-exported here).
* :mod:`simdiff.nets.mlp` -- ``DenoiserMLP`` for low-dimensional data (re-exported here).

Larger backbones live in their own modules and are imported from them directly.
"""

from simdiff.nets.embeddings import sinusoidal_embedding
from simdiff.nets.mlp import DenoiserMLP

__all__ = ["DenoiserMLP", "sinusoidal_embedding"]
