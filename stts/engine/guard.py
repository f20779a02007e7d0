"""The non-finite-loss policy of training, without a host sync per step.

What it does (the policy of `stts train`): a loss that is not finite on any rank skips that iteration on
every rank — its gradients and those accumulated earlier in its window are dropped, and where it ends an
accumulation window the optimizer step is skipped (parameters and AdamW moments untouched);
``max_bad_steps`` such iterations in a row stop the run with the last good checkpoint intact (exit 3).

How, on the device (`NonFiniteGuard.deferred`): the finite flag is reduced across ranks with a MIN
all-reduce (NCCL enqueues it on the stream: no host wait); gradients are dropped with ``masked_fill_``; the
optimizer step is guarded by the fused AdamW's ``found_inf`` tensor — the mechanism `torch.amp.GradScaler`
uses (torch/optim/adam.py, ``_fused_adam``: the fused kernel returns without touching parameters or moments
when ``found_inf`` is 1, and the step counters are rolled back); a device counter of bad iterations in a
row latches a stop flag at ``max_bad_steps`` after which no update happens at all. The host reads the flags
once per logging window, checkpoint or epoch end (`settle`) and replays them in order into its counters,
the ``nonfinite`` log lines and the stop decision, so the outcome is the one of a per-step check.

Where the optimizer is not a fused torch AdamW (DeepSpeed's) or fp16's GradScaler owns ``found_inf``, the
flag is read at once, every step (``deferred`` False: one host sync per step, as before).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["NonFiniteGuard", "supports_deferred_skip"]


def _inner(optimizer):
    """The torch optimizer inside Accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def supports_deferred_skip(optimizer, precision: str) -> bool:
    """True when the step can be skipped on the device: a fused torch optimizer whose ``found_inf`` nobody
    else sets (fp16's GradScaler sets and deletes it around each step)."""
    inner = _inner(optimizer)
    return (
        precision != "fp16"
        and getattr(inner, "_step_supports_amp_scaling", False)
        and all(g.get("fused") for g in inner.param_groups)
    )


class NonFiniteGuard:
    """Device-side flags and counters of one run (see the module docstring)."""

    def __init__(self, device, max_bad_steps: int, *, deferred: bool):
        self.deferred = deferred
        self.max_bad_steps = max_bad_steps
        zeros = {"device": device}
        self.bad_run = torch.zeros((), dtype=torch.int32, **zeros)  # non-finite iterations in a row
        self.stopped = torch.zeros((), dtype=torch.bool, **zeros)  # latched at max_bad_steps in a row
        self.loss_sum = torch.zeros((), dtype=torch.float32, **zeros)  # finite losses since the last settle
        self.loss_count = torch.zeros((), dtype=torch.float32, **zeros)
        self.pending: list[tuple[int, bool, torch.Tensor | bool]] = []  # (iteration, stepped, finite)

    @staticmethod
    def agree(finite: torch.Tensor) -> torch.Tensor:
        """``finite`` (0-dim bool) and-ed over every rank: the same decision everywhere."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = finite.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            return flag.bool()
        return finite

    def keep(self, finite: torch.Tensor) -> torch.Tensor:
        """Whether this iteration may change anything: its loss is finite and the run has not latched."""
        return finite & ~self.stopped

    @staticmethod
    def drop_unless(keep: torch.Tensor, params: Iterable[torch.nn.Parameter]) -> None:
        """Zero every gradient unless ``keep`` (NaN-safe: a fill, not a product)."""
        drop = ~keep
        for p in params:
            if p.grad is not None:
                p.grad.masked_fill_(drop, 0)

    @staticmethod
    def arm(optimizer, keep: torch.Tensor) -> None:
        """The next fused step updates nothing unless ``keep``."""
        inner = _inner(optimizer)
        inner.grad_scale = None
        inner.found_inf = (~keep).to(torch.float32)

    def update(self, iteration: int, stepped: bool, finite: torch.Tensor | bool, loss: torch.Tensor) -> None:
        """Count one iteration (on the device when ``finite`` is a tensor)."""
        finite_t = torch.tensor(finite, device=self.stopped.device) if isinstance(finite, bool) else finite
        counted = finite_t & ~self.stopped
        self.loss_sum += torch.where(counted, loss.float(), torch.zeros_like(self.loss_sum))
        self.loss_count += counted.to(torch.float32)
        self.bad_run = torch.where(finite_t, torch.zeros_like(self.bad_run), self.bad_run + 1)
        self.stopped |= self.bad_run >= self.max_bad_steps
        self.pending.append((iteration, stepped, finite))

    def settle(self) -> tuple[list[tuple[int, bool, bool]], float, int]:
        """The pending iterations as ``(iteration, stepped, finite)`` in order, and the finite losses' sum
        and count since the last settle — one read from the device — then a fresh window."""
        flags = [f for _, _, f in self.pending]
        tensors = [f.to(torch.float32).reshape(1) for f in flags if isinstance(f, torch.Tensor)]
        values = torch.cat([*tensors, self.loss_sum.reshape(1), self.loss_count.reshape(1)]).tolist()
        read = iter(values[:-2])
        records = [
            (it, stepped, bool(next(read)) if isinstance(f, torch.Tensor) else f)
            for it, stepped, f in self.pending
        ]
        self.pending.clear()
        self.loss_sum.zero_()
        self.loss_count.zero_()
        return records, values[-2], int(values[-1])
