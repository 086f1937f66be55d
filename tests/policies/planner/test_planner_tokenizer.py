from __future__ import annotations

import pytest
import torch

from policies.planner.config import TokenizerConfig
from policies.planner.tokenizer import (
    KMeansTokenizer,
    UniformTokenizer,
    build_tokenizer,
    kmeans,
    tokenizer_from_state,
)


def _actions(n=200, T=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.tanh(torch.randn(n, T, 2, generator=g)) * torch.tensor([1.0, 0.5])


@pytest.mark.parametrize("bins", [4, 17, 64])
def test_uniform_round_trip_error_at_most_half_a_bin(bins):
    acts = _actions()
    tok = UniformTokenizer.fit(acts, bins)
    ids = tok.encode(acts)
    assert ids.shape == (200, 16) and ids.min() >= 0 and ids.max() < bins
    err = (tok.decode(ids) - acts).abs()
    assert torch.all(err <= tok.bin_width / 2 + 1e-6)
    rec = tok.reconstruction_error(acts)
    assert rec["max_abs"] <= float(tok.bin_width.max()) / 2 + 1e-6
    # the bound is attained up to sampling: with many points some sit near a bin edge
    assert rec["max_abs"] > 0.8 * float(tok.bin_width.min()) / 2


def test_uniform_layout_is_step_major_and_clamps_out_of_range():
    tok = UniformTokenizer(torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]), bins=4)
    a = torch.tensor([[[-0.9, 0.9], [0.1, -0.1], [5.0, -5.0]]])
    assert tok.encode(a).tolist() == [[0, 3, 2, 1, 3, 0]]
    assert torch.allclose(tok.decode(tok.encode(a))[0, 0], torch.tensor([-0.75, 0.75]))
    with pytest.raises(ValueError, match="expected ids in"):
        tok.decode(torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match=r"expected a float tensor \(B, T, Da\)"):
        tok.encode(torch.zeros(3, 2))


def test_kmeans_recovers_a_finite_set_exactly_and_error_falls_with_codebook_size():
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(6, 2, generator=g)
    acts = pts[torch.randint(6, (300, 4), generator=g)]  # (300, 4, 2), six distinct vectors
    tok = KMeansTokenizer.fit(acts, 6, generator=torch.Generator().manual_seed(0))
    assert tok.reconstruction_error(acts)["max_abs"] < 1e-5
    cont = _actions(n=300)
    errs = [KMeansTokenizer.fit(cont, k, generator=torch.Generator().manual_seed(0)).reconstruction_error(cont)["rmse"]
            for k in (4, 16, 64)]
    assert errs[0] > errs[1] > errs[2]


def test_kmeans_chunks_and_codes_all_used():
    acts = _actions(n=100, T=8)
    tok = KMeansTokenizer.fit(acts, 32, chunk=2, generator=torch.Generator().manual_seed(0))
    ids = tok.encode(acts)
    assert ids.shape == (100, 4) and tok.num_tokens(8) == 4
    assert tok.decode(ids).shape == acts.shape
    assert torch.unique(ids).numel() == 32
    with pytest.raises(ValueError, match="divisor of the horizon"):
        KMeansTokenizer.fit(acts, 8, chunk=3)
    x = torch.tensor([[0.0], [0.0], [0.0], [1.0]])
    assert kmeans(x, 2, 10, torch.Generator().manual_seed(0)).sort(0).values.flatten().tolist() == [0.0, 1.0]


@pytest.mark.parametrize("kind", ["uniform", "kmeans"])
def test_state_round_trip(kind):
    acts = _actions()
    tok = build_tokenizer(TokenizerConfig(kind=kind, bins=8, codebook_size=16), acts,
                          torch.Generator().manual_seed(0))
    meta, tensors = tok.state()
    again = tokenizer_from_state(meta, tensors)
    assert torch.equal(again.encode(acts), tok.encode(acts))
    with pytest.raises(ValueError, match="tokenizer kind"):
        tokenizer_from_state({"kind": "bpe"}, {})
