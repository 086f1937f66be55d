from __future__ import annotations

import pytest
import torch

from simdiff.nets import DenoiserMLP, sinusoidal_embedding


def test_sinusoidal_embedding_layout_and_shapes():
    t = torch.tensor([0, 1, 50, 999])
    e = sinusoidal_embedding(t, 16)
    assert e.shape == (4, 16) and e.dtype == torch.float32
    assert torch.equal(e[0, :8], torch.zeros(8)) and torch.equal(e[0, 8:], torch.ones(8))   # sin 0, cos 0
    assert torch.allclose(e[1, 0], torch.sin(torch.tensor(1.0)))                            # w_0 = 1
    assert torch.allclose(e[:, :8] ** 2 + e[:, 8:] ** 2, torch.ones(4, 8), atol=1e-6)
    assert len({tuple(r.tolist()) for r in e}) == 4                                         # distinct steps
    odd = sinusoidal_embedding(t, 7)
    assert odd.shape == (4, 7) and torch.equal(odd[:, -1], torch.zeros(4))
    with pytest.raises(ValueError, match=r"t: expected a 1-D tensor \(B,\), received shape \(4, 1\)"):
        sinusoidal_embedding(t[:, None], 8)
    with pytest.raises(ValueError, match="dim: expected an int >= 1, received 0"):
        sinusoidal_embedding(t, 0)


def test_denoiser_mlp_shapes_conditioning_and_errors():
    torch.manual_seed(0)
    net = DenoiserMLP(3, hidden=32, depth=2, time_dim=16)
    x, t = torch.randn(5, 3), torch.randint(0, 100, (5,))
    out = net(x, t)
    assert out.shape == (5, 3)
    assert not torch.equal(net(x, t), net(x, (t + 1) % 100))                                 # uses the step
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    cnet = DenoiserMLP(3, hidden=32, depth=1, time_dim=16, cond_dim=4)
    c = torch.randn(5, 4)
    assert cnet(x, t, c).shape == (5, 3) and not torch.equal(cnet(x, t, c), cnet(x, t, c + 1))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 3\), received \(5, 2\)"):
        net(torch.randn(5, 2), t)
    with pytest.raises(ValueError, match=r"cond: expected shape \(5, 4\), received None"):
        cnet(x, t)
    with pytest.raises(ValueError, match="built with cond_dim=0"):
        net(x, t, c)
    with pytest.raises(ValueError, match="DenoiserMLP hidden: expected an int >= 1, received 0"):
        DenoiserMLP(3, hidden=0)
