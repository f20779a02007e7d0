"""Layers shared by the model families."""

from __future__ import annotations

from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth per sample: drop the whole residual branch of a sample with probability p and
    scale the survivors by 1 / (1 - p); identity in eval or when p = 0."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


class Mlp(nn.Module):
    """fc1 → GELU → fc2; `dim_out` defaults to `dim` (MViT's dim-changing blocks widen here)."""

    def __init__(self, dim: int, hidden: int, dim_out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out or dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def init_linear_and_norm(module: nn.Module) -> None:
    """The official init of both families' transformer layers: every Linear trunc-normal(0.02) with zero
    bias, every LayerNorm weight 1 / bias 0, over ``module`` and its children (selectors included)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
