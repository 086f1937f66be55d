from __future__ import annotations

import copy

import torch
from torch import nn

from simdiff.nets.frozen import FrozenForward, weights_signature


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(3, 8, 5, padding=2), nn.GroupNorm(2, 8), nn.Mish(), nn.Conv1d(8, 3, 1))


def _fn(net: nn.Module, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return net(x) * scale


def test_frozen_graph_equals_eager_for_any_batch():
    net = _net()
    frozen = FrozenForward(net, _fn)
    with torch.inference_mode():
        for b in (1, 5):
            x, s = torch.randn(b, 3, 16), torch.rand(b, 1, 1)
            torch.testing.assert_close(frozen(x, s), _fn(net, x, s), rtol=0, atol=1e-6)
    assert frozen._graph is not None and net.training  # built, and the module's mode left alone


def test_refresh_rebuilds_after_an_in_place_weight_update():
    net = _net()
    frozen = FrozenForward(net, _fn)
    x, s = torch.randn(2, 3, 16), torch.ones(2, 1, 1)
    with torch.inference_mode():
        before = frozen.refresh()(x, s)
    sig = weights_signature(net)
    with torch.no_grad():
        net[3].bias.add_(1.0)  # what an optimizer step does
    assert weights_signature(net) != sig
    with torch.inference_mode():
        graph = frozen._graph
        fresh = frozen.refresh()(x, s)  # refresh notices the change and rebuilds
    assert frozen._graph is not graph
    torch.testing.assert_close(fresh, before + 1.0, rtol=0, atol=1e-5)


def test_a_deep_copy_rebuilds_its_graph_from_its_own_weights():
    net = _net()
    frozen = FrozenForward(net, _fn)
    x, s = torch.randn(2, 3, 16), torch.ones(2, 1, 1)
    frozen(x, s)
    twin = copy.deepcopy(frozen)
    assert twin._graph is None and twin.module is not net
    with torch.no_grad():
        twin.module[3].bias.sub_(2.0)
    torch.testing.assert_close(twin(x, s), _fn(twin.module, x, s), rtol=0, atol=1e-6)
