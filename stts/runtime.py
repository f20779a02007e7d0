"""Where a process runs: its device and the process group it joins (evaluation, prediction; training goes
through Accelerate, which does the same for its processes)."""

from __future__ import annotations

import os

__all__ = ["init_distributed"]


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
