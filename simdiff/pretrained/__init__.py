"""Checkpoints shipped with the package (package data), one folder per name: ``<name>/weights.safetensors`` and
``<name>/meta.json`` (the config, fitted noise spectrum and the training command that made them).

Use them with ``simdiff skild sample --pretrained <name> ...``; the list is
:func:`simdiff.pipelines.skild.core.available_pretrained`.
"""
