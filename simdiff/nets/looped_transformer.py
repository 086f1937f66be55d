"""Bidirectional transformer with a looped (weight-shared) middle block: prelude -> block x S -> coda.

The layout follows Geiping et al. (2025, prelude / recurrent block / coda) and LoopMDM (looping early-to-
middle layers of a masked diffusion model): ``n_prelude`` layers run once, the ``n_loop`` layers of the block
run ``S`` times with shared weights, ``n_coda`` layers run once. ``S`` is an argument of ``forward`` so it can
be fixed or randomized per batch during training and set to any value at inference; the parameter count
does not depend on it. :meth:`LoopedTransformer.flops` counts the matmul FLOPs of one forward pass
analytically (``fixed + S * per_loop``), so training compute can be matched across architectures.

Conditioning enters as a prefix: ``cond`` (B, P, cond_dim) vectors (e.g. observation history steps and a
domain-context vector) are projected to ``d_model`` and prepended; attention is full (no causal mask) over
prefix and tokens; logits are returned for the token positions only.

Architecture only: no losses, no sampling, no optimizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """Pre-LayerNorm transformer layer: multi-head self-attention + GELU MLP, both residual.

    Attention is written with explicit matmuls (not ``scaled_dot_product_attention``) so that
    ``torch.utils.flop_counter`` sees every FLOP on CPU and the analytic count can be checked; at planner
    sequence lengths (tens of tokens) it costs nothing.
    """

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, mlp_ratio * d_model)
        self.fc2 = nn.Linear(mlp_ratio * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, N, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // self.n_heads), dim=-1)
        h = (att @ v).transpose(1, 2).reshape(B, N, D)
        x = x + self.drop(self.proj(h))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))


class LoopedTransformer(nn.Module):
    """Token denoiser ``(tokens (B, L), cond (B, P, cond_dim) | None, loops S) -> logits (B, L, out_dim)``.

    Args:
        vocab_size: number of input token ids (for masked diffusion: data vocabulary + 1 for [MASK]).
        seq_len: number of token positions L (learned position embeddings).
        d_model, n_heads, mlp_ratio: layer width, heads (must divide d_model), MLP expansion.
        n_prelude, n_loop, n_coda: layers before, inside (shared, run S times) and after the loop.
        cond_dim: width of each conditioning vector (0: unconditional).
        max_cond: largest prefix length P accepted (one learned position embedding each).
        out_dim: logits per position (default ``vocab_size``).
        default_loops: S used when ``forward`` is called with ``loops=None``.
    """

    def __init__(self, vocab_size: int, seq_len: int, d_model: int = 64, n_heads: int = 4, n_prelude: int = 1,
                 n_loop: int = 2, n_coda: int = 1, mlp_ratio: int = 4, cond_dim: int = 0, max_cond: int = 0,
                 out_dim: int | None = None, default_loops: int = 1, dropout: float = 0.0):
        super().__init__()
        for name, val, lo in (("vocab_size", vocab_size, 1), ("seq_len", seq_len, 1), ("d_model", d_model, 1),
                              ("n_heads", n_heads, 1), ("n_prelude", n_prelude, 0), ("n_loop", n_loop, 1),
                              ("n_coda", n_coda, 0), ("mlp_ratio", mlp_ratio, 1), ("cond_dim", cond_dim, 0),
                              ("max_cond", max_cond, 0), ("default_loops", default_loops, 1)):
            if not isinstance(val, int) or val < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, received {val!r}")
        if d_model % n_heads:
            raise ValueError(f"n_heads: expected a divisor of d_model={d_model}, received {n_heads}")
        if (cond_dim == 0) != (max_cond == 0):
            raise ValueError(f"cond_dim and max_cond: expected both 0 or both > 0, received {cond_dim}, {max_cond}")
        self.vocab_size, self.seq_len, self.d_model = vocab_size, seq_len, d_model
        self.n_prelude, self.n_loop, self.n_coda = n_prelude, n_loop, n_coda
        self.mlp_ratio, self.cond_dim, self.max_cond = mlp_ratio, cond_dim, max_cond
        self.out_dim = vocab_size if out_dim is None else out_dim
        self.default_loops = default_loops
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Parameter(torch.zeros(seq_len, d_model))
        if cond_dim:
            self.cond_proj = nn.Linear(cond_dim, d_model)
            self.cond_pos = nn.Parameter(torch.zeros(max_cond, d_model))
        self.prelude = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_prelude))
        self.loop = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_loop))
        self.coda = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_coda))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.out_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)
        if self.cond_dim:
            nn.init.normal_(self.cond_pos, std=0.02)

    def _check_inputs(self, tokens: torch.Tensor, cond: torch.Tensor | None, loops: int) -> None:
        if tokens.dim() != 2 or tokens.shape[1] != self.seq_len or tokens.dtype != torch.long:
            raise ValueError(f"tokens: expected a long tensor (B, {self.seq_len}), received "
                             f"{tuple(tokens.shape)} {tokens.dtype}")
        if self.cond_dim and cond is None:
            raise ValueError(f"cond: expected (B, P<={self.max_cond}, {self.cond_dim}), received None")
        if cond is not None:
            if not self.cond_dim:
                raise ValueError("cond: this network is unconditional (cond_dim=0), received a tensor")
            if (cond.dim() != 3 or cond.shape[0] != tokens.shape[0] or cond.shape[2] != self.cond_dim
                    or not 1 <= cond.shape[1] <= self.max_cond):
                raise ValueError(f"cond: expected ({tokens.shape[0]}, P<={self.max_cond}, {self.cond_dim}), "
                                 f"received {tuple(cond.shape)}")
        if not isinstance(loops, int) or loops < 1:
            raise ValueError(f"loops: expected an int >= 1, received {loops!r}")

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor | None = None,
                loops: int | None = None) -> torch.Tensor:
        """``tokens`` (B, L) long, ``cond`` (B, P, cond_dim) or None, ``loops`` S -> logits (B, L, out_dim)."""
        loops = self.default_loops if loops is None else loops
        self._check_inputs(tokens, cond, loops)
        x = self.tok_emb(tokens) + self.pos_emb
        n_prefix = 0
        if cond is not None:
            n_prefix = cond.shape[1]
            x = torch.cat([self.cond_proj(cond.to(x.dtype)) + self.cond_pos[:n_prefix], x], dim=1)
        for blk in self.prelude:
            x = blk(x)
        for _ in range(loops):  # same weights every pass: depth without parameters
            for blk in self.loop:
                x = blk(x)
        for blk in self.coda:
            x = blk(x)
        return self.head(self.ln_f(x[:, n_prefix:]))

    # ------------------------------------------------------------------------------------------ compute
    def num_parameters(self) -> int:
        """Trainable parameters; independent of the loop count by construction."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def layer_flops(self, n_tokens: int) -> int:
        """Matmul FLOPs of one layer on one sequence of ``n_tokens`` (2 FLOPs per multiply-add)."""
        d, n, h = self.d_model, n_tokens, self.mlp_ratio * self.d_model
        qkv, attn, proj, mlp = 2 * n * d * 3 * d, 2 * 2 * n * n * d, 2 * n * d * d, 2 * 2 * n * d * h
        return qkv + attn + proj + mlp

    def flops(self, loops: int | None = None, n_cond: int | None = None, batch: int = 1) -> int:
        """Analytic matmul FLOPs of one forward pass: ``batch * (fixed + loops * n_loop * layer_flops)``.

        Counts every matrix product (projections, attention scores and mixing, MLP, conditioning projection,
        output head); LayerNorm, softmax, GELU, embeddings and residual adds are O(N d) and excluded, as in
        the usual ``6 N D`` accounting. ``n_cond`` defaults to ``max_cond``. Training costs about
        3x this (forward + backward).
        """
        loops = self.default_loops if loops is None else loops
        n_cond = self.max_cond if n_cond is None else n_cond
        if loops < 1 or batch < 1 or not 0 <= n_cond <= self.max_cond:
            raise ValueError(f"flops: expected loops >= 1, batch >= 1, 0 <= n_cond <= {self.max_cond}, "
                             f"received {loops}, {batch}, {n_cond}")
        n = self.seq_len + n_cond
        fixed = (self.n_prelude + self.n_coda) * self.layer_flops(n)
        fixed += 2 * n_cond * self.cond_dim * self.d_model + 2 * self.seq_len * self.d_model * self.out_dim
        return batch * (fixed + loops * self.n_loop * self.layer_flops(n))


__all__ = ["Block", "LoopedTransformer"]
