from __future__ import annotations

import pytest
import torch

from simdiff.nets.unet2d import UNet2D, count_parameters


def _net(**kw) -> UNet2D:
    torch.manual_seed(0)
    net = UNet2D(base_channels=8, channel_mults=(1, 2), time_dim=16, **kw)
    # The output layer starts at zero; give it weights so the tests see a non-trivial map.
    torch.nn.init.normal_(net.out.weight, std=0.1)
    return net


def test_shapes_and_parameter_count():
    net = _net()
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    assert net(x, t).shape == (3, 1, 8, 8)
    assert net(torch.randn(2, 1, 16, 16), torch.rand(2)).shape == (2, 1, 16, 16)
    assert 0 < count_parameters(net) < 200_000


def test_output_starts_at_zero():
    net = UNet2D(base_channels=8, channel_mults=(1, 2), time_dim=16)
    with torch.no_grad():
        assert float(net(torch.randn(2, 1, 8, 8), torch.rand(2)).abs().max()) == 0.0


def test_circular_padding_makes_the_net_translation_equivariant():
    net = _net(circular=True).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    # Shifts by multiples of the total downsampling factor (2) commute exactly with strided convolutions.
    shifted = net(torch.roll(x, shifts=(2, 4), dims=(2, 3)), t)
    assert torch.allclose(shifted, torch.roll(net(x, t), shifts=(2, 4), dims=(2, 3)), atol=1e-5)
    zero_pad = _net(circular=False).eval()
    shifted = zero_pad(torch.roll(x, shifts=(2, 4), dims=(2, 3)), t)
    assert not torch.allclose(shifted, torch.roll(zero_pad(x, t), shifts=(2, 4), dims=(2, 3)), atol=1e-3)


def test_time_conditioning_changes_the_output():
    net = _net().eval()
    x = torch.randn(1, 1, 8, 8)
    assert not torch.allclose(net(x, torch.tensor([0.1])), net(x, torch.tensor([0.9])))


def test_bad_inputs_are_rejected():
    net = _net()
    with pytest.raises(ValueError, match=r"expected \(B, 1, L, L\)"):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(2, 1, 7, 7), torch.rand(2))
    with pytest.raises(ValueError, match=r"t: expected shape \(2,\)"):
        net(torch.randn(2, 1, 8, 8), torch.rand(3))
    with pytest.raises(ValueError, match="channel_mults"):
        UNet2D(channel_mults=())
    with pytest.raises(ValueError, match="base_channels"):
        UNet2D(base_channels=0)
