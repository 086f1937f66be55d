from __future__ import annotations

import pytest
import torch

from simdiff.nets.unet1d import ConditionalUnet1D


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: extra intra-op threads only add synchronisation (costly on a busy machine)."""


@pytest.mark.parametrize("dims", [(16,), (16, 32), (16, 32, 64)])
def test_shapes_and_horizon_multiple(dims):
    torch.manual_seed(0)
    net = ConditionalUnet1D(action_dim=3, global_cond_dim=5, down_dims=dims, step_embed_dim=16)
    T = 4 * net.horizon_multiple
    x, t, c = torch.randn(2, T, 3), torch.tensor([0, 7]), torch.randn(2, 5)
    assert net(x, t, c).shape == (2, T, 3)
    if net.horizon_multiple > 1:
        with pytest.raises(ValueError, match="divisible"):
            net(torch.randn(2, T + 1, 3), t, c)


def test_bad_inputs_say_what_was_expected():
    net = ConditionalUnet1D(2, 4, (16, 32), 16)
    x = torch.randn(3, 8, 2)
    with pytest.raises(ValueError, match=r"cond: expected shape \(3, 4\)"):
        net(x, torch.zeros(3, dtype=torch.long), torch.randn(3, 5))
    with pytest.raises(ValueError, match="x: expected shape"):
        net(torch.randn(3, 8, 5), torch.zeros(3, dtype=torch.long), torch.randn(3, 4))
    with pytest.raises(ValueError, match="multiples of n_groups"):
        ConditionalUnet1D(2, 4, (12, 32), 16)


def test_cached_film_matches_full_forward_and_condition_matters():
    torch.manual_seed(1)
    net = ConditionalUnet1D(2, 6, (16, 32), 16).double()
    x, c = torch.randn(4, 8, 2, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    steps = torch.tensor([90, 50, 10])
    step_terms, cond_terms = net.film_terms(steps, c)
    for k, t in enumerate(steps.tolist()):
        full = net(x, torch.full((4,), t), c)
        cached = net(x, film=net.film_at(step_terms, cond_terms, k))
        torch.testing.assert_close(cached, full, rtol=1e-12, atol=1e-12)
    # FiLM really conditions the output (per row) on cond and on the step.
    out = net(x, torch.full((4,), 50), c)
    assert not torch.allclose(out, net(x, torch.full((4,), 50), c + 1.0))
    assert not torch.allclose(out, net(x, torch.full((4,), 10), c))


def test_rows_are_independent():
    torch.manual_seed(2)
    net = ConditionalUnet1D(2, 3, (16, 32), 16).double()
    x, t, c = torch.randn(5, 8, 2).double(), torch.arange(5) * 10, torch.randn(5, 3).double()
    torch.testing.assert_close(net(x, t, c)[2:3], net(x[2:3], t[2:3], c[2:3]), rtol=1e-10, atol=1e-10)


def test_film_steps_matches_film_at():
    torch.manual_seed(3)
    net = ConditionalUnet1D(2, 4, (16, 32), 16)
    terms = net.film_terms(torch.tensor([30, 20, 10]), torch.randn(5, 4))
    all_steps = net.film_steps(*terms)
    assert len(all_steps) == 3
    for k in range(3):
        for (s1, b1), (s2, b2) in zip(all_steps[k], net.film_at(*terms, k)):
            torch.testing.assert_close(s1, s2)
            torch.testing.assert_close(b1, b2)
