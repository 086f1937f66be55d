from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from simdiff.nets.looped_transformer import LoopedTransformer


def _net(**kw) -> LoopedTransformer:
    args = dict(vocab_size=9, seq_len=6, d_model=32, n_heads=4, n_prelude=1, n_loop=2, n_coda=1, cond_dim=5,
                max_cond=3)
    args.update(kw)
    torch.manual_seed(0)
    return LoopedTransformer(**args)


def _inputs(B=2):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 9, (B, 6), generator=g), torch.randn(B, 3, 5, generator=g)


def test_shapes_and_any_loop_count():
    net = _net(out_dim=8)
    tok, cond = _inputs()
    outs = [net(tok, cond, loops=s) for s in (1, 2, 5)]
    assert all(o.shape == (2, 6, 8) for o in outs)
    assert not torch.allclose(outs[0], outs[1])
    assert torch.equal(net(tok, cond, loops=2), outs[1])


def test_parameter_count_is_independent_of_loops_and_matches_same_parameter_baseline():
    looped = _net(n_loop=2, default_loops=4)
    assert looped.num_parameters() == _net(n_loop=2, default_loops=1).num_parameters()
    deeper = _net(n_loop=8)
    assert deeper.num_parameters() > looped.num_parameters()
    tok, cond = _inputs()
    n0 = looped.num_parameters()
    looped(tok, cond, loops=7).sum().backward()
    assert looped.num_parameters() == n0


def test_flops_linear_in_loops_and_equal_to_measured():
    net = _net()
    f = [net.flops(loops=s) for s in range(1, 6)]
    d = [b - a for a, b in zip(f, f[1:])]
    assert len(set(d)) == 1 and d[0] == net.n_loop * net.layer_flops(6 + 3)
    tok, cond = _inputs(B=3)
    for s in (1, 3):
        with FlopCounterMode(display=False) as fc:
            net(tok, cond, loops=s)
        assert fc.get_total_flops() == net.flops(loops=s, batch=3)
    # same-FLOPs deeper baseline: k layers looped S times costs what k*S layers cost once
    assert _net(n_loop=2).flops(loops=4) == _net(n_loop=8).flops(loops=1)


def test_attention_is_bidirectional_and_uses_the_prefix():
    net = _net()
    tok, cond = _inputs(B=1)
    base = net(tok, cond)
    tok2 = tok.clone()
    tok2[0, -1] = (tok2[0, -1] + 1) % 9
    assert not torch.allclose(net(tok2, cond)[0, 0], base[0, 0])  # a later token changes earlier logits
    assert not torch.allclose(net(tok, cond + 1.0), base)
    assert net(tok, cond[:, :1]).shape == base.shape  # shorter prefix allowed


def test_input_errors_say_expected_and_received():
    net = _net()
    tok, cond = _inputs()
    with pytest.raises(ValueError, match="tokens: expected"):
        net(tok[:, :4], cond)
    with pytest.raises(ValueError, match="cond: expected"):
        net(tok, None)
    with pytest.raises(ValueError, match="cond: expected"):
        net(tok, torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="loops: expected"):
        net(tok, cond, loops=0)
    with pytest.raises(ValueError, match="divisor"):
        _net(n_heads=5)
    with pytest.raises(ValueError, match="unconditional"):
        _net(cond_dim=0, max_cond=0)(tok, cond)
