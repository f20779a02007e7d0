"""FLOPs per view, in the two conventions the model zoo uses (spec §7.2).

- `fvcore` (the MViT half's numbers): one multiply-accumulate = 1 FLOP; counts matrix products (linear,
  matmul, bmm, einsum, attention), convolutions (no bias) and LayerNorm (5 per element with affine, 4
  without); not softmax, GELU, additions, pooling, top-k or gathers. Counted at the ATen level while the
  model runs, so attention through `scaled_dot_product_attention` counts as its two products.
- `mmcv` (the Video Swin half's numbers): module hooks like mmcv's `get_model_complexity_info`: nn.Linear
  (input elements × output features), convolutions (+ bias), LayerNorm (2 per element with affine, 1
  without), pooling layers (input elements); attention products are not modules and are not counted.

Both run the model once in eval mode on zeros of the given shape (batch 1, one view).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

CONVENTIONS = ("fvcore", "mmcv")
aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(shape)


def _mm(args, out) -> int:
    m, k = args[0].shape
    return m * k * args[1].shape[-1]


def _addmm(args, out) -> int:
    return _mm(args[1:], out)


def _bmm(args, out) -> int:
    b, m, k = args[0].shape
    return b * m * k * args[1].shape[-1]


def _baddbmm(args, out) -> int:
    return _bmm(args[1:], out)


def _conv(args, out) -> int:
    weight = args[1]
    result = out[0] if isinstance(out, tuple | list) else out
    # every output element costs one MAC per weight of its group: (in_channels / groups) × kernel
    return _numel(result.shape) * _numel(weight.shape[1:])


def _sdpa(args, out) -> int:
    q, k, v = args[0], args[1], args[2]
    *batch, lq, d = q.shape
    lk, dv = k.shape[-2], v.shape[-1]
    heads = _numel(batch)
    return heads * lq * lk * d + heads * lq * lk * dv  # q·kᵀ and attention·v


def _layer_norm(args, out) -> int:
    weight = args[2] if len(args) > 2 else None
    return _numel(args[0].shape) * (5 if weight is not None else 4)


_FVCORE: dict = {
    aten.mm.default: _mm,
    aten.addmm.default: _addmm,
    aten.bmm.default: _bmm,
    aten.baddbmm.default: _baddbmm,
    aten.convolution.default: _conv,
    aten.native_layer_norm.default: _layer_norm,
}
for _name in (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
):
    if hasattr(aten, _name):
        _FVCORE[getattr(aten, _name).default] = _sdpa


class _FvcoreCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.total = 0
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = _FVCORE.get(func)
        if rule is not None:
            flops = rule(args, out)
            self.total += flops
            name = str(func.overloadpacket).split(".")[-1]
            self.by_op[name] = self.by_op.get(name, 0) + flops
        return out


def _mmcv_hook(module: nn.Module) -> Callable | None:
    if isinstance(module, nn.Linear):
        return lambda m, i, o: _numel(i[0].shape) * m.out_features
    if isinstance(module, nn.modules.conv._ConvNd):

        def conv(m, i, o):
            positions = o.shape[0] * _numel(o.shape[2:])
            per_position = _numel(m.kernel_size) * m.in_channels * m.out_channels // m.groups
            return positions * per_position + (m.out_channels * positions if m.bias is not None else 0)

        return conv
    if isinstance(module, nn.LayerNorm):
        return lambda m, i, o: _numel(i[0].shape) * (2 if m.elementwise_affine else 1)
    if isinstance(module, nn.modules.pooling._MaxPoolNd | nn.modules.pooling._AvgPoolNd):
        return lambda m, i, o: _numel(i[0].shape)
    if isinstance(module, nn.modules.pooling._AdaptiveAvgPoolNd | nn.modules.pooling._AdaptiveMaxPoolNd):
        return lambda m, i, o: _numel(i[0].shape)
    return None


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...], convention: str = "fvcore") -> int:
    """FLOPs of one forward pass in eval mode on zeros of `input_shape` (e.g. (1, 3, 16, 224, 224))."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    x = torch.zeros(input_shape, device=param.device if param is not None else "cpu")
    try:
        if convention == "fvcore":
            with _FvcoreCounter() as counter:
                model(x)
            return counter.total
        total = 0
        handles = []
        for module in model.modules():
            rule = _mmcv_hook(module)
            if rule is not None:

                def hook(m, i, o, rule=rule):
                    nonlocal total
                    total += rule(m, i, o)

                handles.append(module.register_forward_hook(hook))
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
        return total
    finally:
        model.train(was_training)


def gflops(model: nn.Module, input_shape: tuple[int, ...], convention: str = "fvcore") -> float:
    return count_flops(model, input_shape, convention) / 1e9
