"""Where and how a process runs: its device and the process group it joins (evaluation, prediction; training
goes through Accelerate, which does the same for its processes), the precision and TF32 defaults."""

from __future__ import annotations

import os

__all__ = ["PRECISIONS", "allow_tf32", "autocast", "init_distributed", "resolve_precision"]


def init_distributed(device: str = "auto") -> tuple[int, int, str]:
    """(rank, world size, device) of this process; joins the default process group when launched by torchrun
    or ``accelerate launch`` (``WORLD_SIZE`` > 1): NCCL for a CUDA device, gloo for the CPU.

    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` (under several processes: each its
    own ``cuda:LOCAL_RANK``) or an explicit ``"cuda:N"``. A CUDA process makes its device current *before*
    NCCL starts: `torch.distributed.all_gather_object` moves its tensors to `torch.cuda.current_device()`,
    and torch's documentation leaves it to the caller to set one GPU per rank with `torch.cuda.set_device`;
    without it every rank's gather runs on cuda:0 (and NCCL may hang with two ranks on one device)."""
    import torch
    import torch.distributed as dist

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = device.startswith("cuda")
    if cuda and ":" not in device and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if cuda:
        torch.cuda.set_device(torch.device(device))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


PRECISIONS = ("auto", "no", "bf16", "fp16")


def resolve_precision(requested: str, device) -> str:
    """``"no"``, ``"bf16"`` or ``"fp16"`` for a run on ``device``: ``"auto"`` is bf16 autocast on a CUDA GPU
    that supports it (Ampere and later; MViT's attention reaches the fused SDPA kernels only in half
    precision, and bf16 needs no loss scaling), fp32 elsewhere: on our 2-core AMD EPYC CPU a bf16-autocast
    training step was 3.2x slower than fp32 for mvit_debug_t0.5_s0.5 (0.309 vs 0.097 s) and 7x for
    MViT-B (119 vs 17 s), and the CPU results stay the reference."""
    import torch

    if requested not in PRECISIONS:
        raise ValueError(f"mixed precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def allow_tf32(enabled: bool = True) -> None:
    """Let fp32 matrix products and convolutions use TF32 tensor cores on CUDA (Ampere and later): the
    parts of a mixed-precision step that stay in fp32 (and fp32 runs) at ~8x the FP32 rate, with a 10-bit
    mantissa in the products (PyTorch's "high" float32 matmul precision; cuDNN convolutions already
    default to TF32)."""
    import torch

    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


def autocast(device, precision: str):
    """The autocast context of ``precision`` (``"no"``: none) on ``device``'s type."""
    import contextlib

    import torch

    if precision == "no":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype)
