"""Both FLOP conventions on a hand-checked model (the zoo's figures are tested beside each model)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stts.flops import count_flops, gflops


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1))
        self.lin = nn.Linear(8, 16)
        self.ln = nn.LayerNorm(16)
        self.pool = nn.MaxPool1d(2)
        self.w = nn.Parameter(torch.randn(16, 6))

    def forward(self, x):
        y = self.conv(x)  # (1, 4, 2, 5, 5): 50 positions
        t = F.pad(y.flatten(2).transpose(1, 2), (0, 4))  # (1, 50, 8)
        h = self.ln(self.lin(t))  # (1, 50, 16)
        q = h.view(1, 2, 50, 8)
        a = F.scaled_dot_product_attention(q, q, q)  # 2 heads, 50 tokens, dim 8
        e = torch.einsum("btc,cd->btd", h, self.w)  # (1, 50, 6)
        p = self.pool(h.transpose(1, 2))  # input 16 × 50
        return F.gelu(a).sum() + e.softmax(-1).sum() + p.sum()


CONV = (4 * 2 * 5 * 5) * (3 * 1 * 3 * 3)  # output elements × weights per output
LINEAR = 50 * 8 * 16
EINSUM = 50 * 16 * 6
ATTENTION = 2 * (2 * 50 * 50 * 8)  # q·kᵀ and attention·v


def test_fvcore_counts_products_convs_and_layernorm():
    assert count_flops(Toy(), (1, 3, 2, 5, 5), "fvcore") == CONV + LINEAR + 50 * 16 * 5 + ATTENTION + EINSUM


def test_mmcv_counts_modules_only():
    # conv + its bias, linear, LayerNorm at 2 per element, pooling at its input size; no attention, no einsum
    expected = CONV + 4 * 50 + LINEAR + 50 * 16 * 2 + 16 * 50
    assert count_flops(Toy(), (1, 3, 2, 5, 5), "mmcv") == expected


def test_counting_restores_the_mode_and_rejects_unknown_conventions():
    model = Toy().train()
    assert gflops(model, (1, 3, 2, 5, 5)) == pytest.approx((CONV + LINEAR + 4000 + ATTENTION + EINSUM) / 1e9)
    assert model.training
    with pytest.raises(ValueError, match="convention"):
        count_flops(model, (1, 3, 2, 5, 5), "thop")
