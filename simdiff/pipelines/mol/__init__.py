"""MOL: semi-supervised multi-objective learning of conditional diffusion policies (arXiv 2605.25210).

Lightweight specialists are fitted from scarce paired demos, one per domain; they label abundant unlabeled
conditions (states from resets, their own on-policy rollouts and, in DAgger rounds, the generalist's); one
larger generalist is distilled on paired + pseudo-labeled data and evaluated on-policy at every difficulty
level and on the held-out shift range, next to the same generalist trained on the paired demos only.

Modules:

* :mod:`~simdiff.pipelines.mol.config` -- ``MolConfig``, the schema of ``configs/mol/*.yaml``;
* :mod:`~simdiff.pipelines.mol.stages` -- resumable stages (``DIR/stages/<name>.done`` written last) and
  ``run_pipeline``;
* :mod:`~simdiff.pipelines.mol.conditions` / :mod:`~simdiff.pipelines.mol.pseudo` -- unlabeled conditions
  and their pseudo-labels (``.npz``, no pickle);
* :mod:`~simdiff.pipelines.mol.report` -- ``metrics.json`` (fixed schema), tables, plots, ``report.md``;
* :mod:`~simdiff.pipelines.mol.sweep` -- success vs. paired demos and vs. specialist size;
* :mod:`~simdiff.pipelines.mol.adapters` -- the only calls into executors, envs, policies and evaluation.

Command line: ``simdiff mol run CONFIG --out DIR``, ``simdiff mol sweep CONFIG --out DIR``,
``simdiff mol report DIR``, ``simdiff mol status DIR``.
"""
