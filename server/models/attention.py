# SPDX-License-Identifier: GPL-3.0-or-later
"""Transformer encoder layers whose attention always *adds* a float bias to the logits.

EMOTE's regressor and FLINT's encoder/decoder are ``nn.TransformerEncoder`` stacks with an ALiBi
style additive bias. On current PyTorch, ``nn.TransformerEncoder`` in eval mode under
``no_grad`` takes a native fast path that treats a float mask as a boolean one (every non-zero
entry blocked): the official code then sees only the diagonal (FLINT) or a hard ±29-frame window
(EMOTE). Here attention is ``softmax(QKᵀ/√d + bias) V`` in every mode, through
``scaled_dot_product_attention`` with a float ``attn_mask``. Parameter names match
``nn.TransformerEncoderLayer`` so official state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .slopes import alibi_slopes

__all__ = ["BiasedEncoderLayer", "BiasedSelfAttention", "BiasedTransformerEncoder",
           "alibi_slopes", "temporal_bias"]


def temporal_bias(frames: int, n_heads: int, period: int = 1,
                  device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive attention bias (heads, T, T): ``−m_h · floor(|i − j| / period)``.

    ``period=30`` is EMOTE's regressor (its "faceformer_future" mask); ``period=1`` is FLINT's
    (``alibi_future``). Symmetric, zero on the diagonal, never −inf; computed for any length.
    """
    idx = torch.arange(frames, device=device)
    distance = torch.div((idx[None, :] - idx[:, None]).abs(), period, rounding_mode="floor")
    slopes = torch.tensor(alibi_slopes(n_heads), device=device, dtype=dtype)
    return -slopes[:, None, None] * distance.to(dtype)[None]


class BiasedSelfAttention(nn.Module):
    """Multi-head self-attention plus an additive float bias (``nn.MultiheadAttention`` names)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        batch, frames, d_model = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        # (B, T, D) → (B, H, T, D/H)
        q, k, v = (t.reshape(batch, frames, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        mask = None if bias is None else bias.to(x.dtype).unsqueeze(0)  # (1, H, T, T)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, d_model))


class BiasedEncoderLayer(nn.Module):
    """Post-LN encoder layer with the maths of ``nn.TransformerEncoderLayer(batch_first=True)``."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = BiasedSelfAttention(d_model, n_heads, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.self_attn(x, bias)))
        feed_forward = self.linear2(self.dropout(F.gelu(self.linear1(x))))  # exact (erf) GELU
        return self.norm2(x + self.dropout2(feed_forward))


class BiasedTransformerEncoder(nn.Module):
    """A stack of :class:`BiasedEncoderLayer` (keys ``layers.N.*``) sharing one temporal bias."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, num_layers: int = 1,
                 dropout: float = 0.0, period: int = 1) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.period = period
        self.layers = nn.ModuleList(
            BiasedEncoderLayer(d_model, n_heads, dim_feedforward, dropout)
            for _ in range(num_layers))

        self._bias_cache: tuple[tuple, torch.Tensor] | None = None

    def bias(self, frames: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The temporal bias for ``frames``, kept for the next call of the same length (a
        re-generation decodes the same windows again)."""
        key = (frames, device, dtype)
        if self._bias_cache is None or self._bias_cache[0] != key:
            self._bias_cache = (key, temporal_bias(frames, self.n_heads, self.period, device,
                                                   dtype))
        return self._bias_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias(x.shape[1], x.device, x.dtype)
        for layer in self.layers:
            x = layer(x, bias)
        return x
