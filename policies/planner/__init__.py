"""LoopMDM planner: masked discrete diffusion over tokenized action plans with a looped transformer.

``config`` (schema), ``tokenizer`` (uniform bins / k-means codebook), ``model`` (looped transformer with an
observation/context prefix), ``policy`` (normalizer, sampling, receding horizon, checkpoint), ``train``
(fitting with the engine's loop).
"""
