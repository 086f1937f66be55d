"""Inference-only frozen graphs: a module's forward traced once and frozen by TorchScript.

Why: at batch 1 on a CPU a small denoiser spends more time in PyTorch's per-op dispatch and in Python than
in arithmetic (a 0.3M-parameter 1D U-Net: about 0.8 ms per forward, of which the frozen graph removes about
a third). Freezing inlines the weights as constants and lets the graph optimizer fold the bookkeeping ops.

The frozen graph holds the weights as constants (copies wherever the optimizer folded them), so
:class:`FrozenForward` rebuilds it whenever any parameter or buffer changed (in-place optimizer steps and
``load_state_dict`` bump the tensors' version counters; a ``.to()`` replaces them). The math is the module's
own: same operations, same order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn


def weights_signature(module: nn.Module) -> tuple:
    """Identity + version of every parameter and buffer: changes whenever the weights may have changed."""
    return tuple((t.data_ptr(), t._version, t.dtype, str(t.device), tuple(t.shape))
                 for t in (*module.parameters(), *module.buffers()))


class _Adapter(nn.Module):
    """Wraps ``fn(module, *tensors)`` as a module with a flat tensor signature (what tracing needs)."""

    def __init__(self, module: nn.Module, fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.module = module
        self._fn = fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self._fn(self.module, *args)


def freeze_forward(module: nn.Module, fn: Callable[..., torch.Tensor],
                   example: Sequence[torch.Tensor]) -> torch.jit.ScriptModule:
    """``fn(module, *example)`` traced and frozen. ``module`` is left in the train/eval mode it was in."""
    was_training = module.training
    adapter = _Adapter(module, fn).eval()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # The shape checks in forward() become constants of the trace: expected, not a problem, since
            # the frozen graph is only called with inputs of the traced layout.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            example = [t.clone() for t in example]  # normal tensors: inference tensors cannot be traced
            return torch.jit.freeze(torch.jit.trace(adapter, tuple(example), check_trace=False))
    finally:
        module.train(was_training)


class FrozenForward:
    """Callable ``(*tensors) -> Tensor`` equal to ``fn(module, *tensors)``, run as a frozen graph.

    The graph is built on first use, and again when the inputs' ranks change or after :meth:`refresh` saw
    the weights change (call it once per batch of calls, e.g. once per sampled action chunk: checking the
    weights on every call would cost more than the graph saves). If tracing fails (an op TorchScript cannot
    freeze), it falls back to eager ``fn`` for good and says so once.
    """

    def __init__(self, module: nn.Module, fn: Callable[..., torch.Tensor]):
        self.module, self.fn = module, fn
        self._graph: torch.jit.ScriptModule | None = None
        self._ranks: tuple | None = None
        self._weights: tuple | None = None
        self._broken = False

    def __getstate__(self) -> dict:
        # Copies (deepcopy, pickling to a worker) rebuild their graph on first use: a graph holds the
        # original's weights, and TorchScript graphs do not pickle.
        return {**self.__dict__, "_graph": None, "_ranks": None, "_weights": None}

    def refresh(self) -> FrozenForward:
        """Drop the graph if any weight changed since it was built; returns ``self``."""
        sig = weights_signature(self.module)
        if sig != self._weights:
            self._graph, self._weights = None, sig
        return self

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if self._broken:
            return self.fn(self.module, *args)
        ranks = tuple(a.ndim for a in args)
        if self._graph is None or ranks != self._ranks:
            if self._weights is None:
                self._weights = weights_signature(self.module)
            try:
                self._graph = freeze_forward(self.module, self.fn, args)
            except (RuntimeError, TypeError) as err:  # pragma: no cover - depends on the torch build
                warnings.warn(f"frozen graph unavailable ({err}); running eagerly", RuntimeWarning, stacklevel=2)
                self._broken = True
                return self.fn(self.module, *args)
            self._ranks = ranks
        return self._graph(*args)


__all__ = ["FrozenForward", "freeze_forward", "weights_signature"]
