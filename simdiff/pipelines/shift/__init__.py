"""Evaluation under distribution shift: ``simdiff shift sweep | grid | covariate``.

* :mod:`.sweep`, :mod:`.grid`: success (95% Wilson interval), return and episode length against one or two
  domain parameters, for several policies on the same seeds;
* :mod:`.covariate`: the statistics (normalized k-NN distance, RBF MMD with a permutation test, compounding
  error), pure functions on arrays; :mod:`.covariate_eval` runs them on rollouts vs. training data;
* :mod:`.policies`: POLICY arguments (policy dirs, MOL run dirs, ``expert``); :mod:`.values`: ``--values``;
* :mod:`.runner`: the only contact with the batched evaluation runner (``simdiff.pipelines.evaluate``);
* :mod:`.plots`, :mod:`.report`: PNG plots, ``metrics.json`` and ``report.md``.
"""
