"""Conditional diffusion policy (Chi et al. 2023): observation history + domain context -> action chunk.

* :mod:`policies.diffusion.config` -- ``DiffusionPolicyConfig`` (the schema of ``configs/policy/*.yaml``);
* :mod:`policies.diffusion.model` -- the network (1D temporal U-Net with FiLM, optional task embedding);
* :mod:`policies.diffusion.policy` -- ``DiffusionPolicy`` (normalizers, ``compute_loss``,
  ``predict_action``, ``select_action``, checkpoints) and the batched-runner adapter;
* :mod:`policies.diffusion.data` -- demonstrations as training windows;
* :mod:`policies.diffusion.train` -- ``train_policy``: fit normalizers, train, export.
"""

from policies.diffusion.config import DiffusionPolicyConfig, load_policy_config
from policies.diffusion.policy import DiffusionBatchPolicy, DiffusionPolicy

__all__ = ["DiffusionPolicyConfig", "DiffusionPolicy", "DiffusionBatchPolicy", "load_policy_config"]
