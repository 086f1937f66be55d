"""DRM reward critic for diffusion policies (arXiv 2605.25661), and its two uses.

* :mod:`policies.critic.config` -- ``CriticConfig`` (the schema of ``configs/critic/*.yaml``);
* :mod:`policies.critic.model` -- ``CriticNet``: the policy's denoiser cut after its first blocks + a scalar head;
* :mod:`policies.critic.scorer` -- ``Critic``: network + the policy's observation normalization + checkpoints;
* :mod:`policies.critic.ensemble` -- several critics scored as one (the mean of their scores);
* :mod:`policies.critic.symmetry` -- a critic averaged over the world's mirror symmetry (exactly invariant);
* :mod:`policies.critic.preferences` -- automatic preference pairs from restored simulator states (independent
  chunks, or step-level siblings of one denoising step);
* :mod:`policies.critic.train` -- Bradley-Terry training at noisy timesteps, held-out accuracy per t;
* :mod:`policies.critic.stepwise` -- step-wise sampling and terminal best-of-k as batched policies;
* :mod:`policies.critic.grpo` -- step-wise GRPO and terminal-reward GRPO fine-tuning;
* :mod:`policies.critic.adapter` / :mod:`policies.critic.sim_state` -- the diffusion policy's denoiser as the
  samplers use it; full save/restore of a Push-v0 simulator state.
"""

from policies.critic.config import CriticConfig, load_critic_config

__all__ = ["CriticConfig", "load_critic_config"]
