"""The logging window's rates: clips/s, steps/s, mean loss, and the share of time spent waiting for data.

Data wait, on a CPU: host time blocked in the loader's ``next()`` over that plus the iterations' own work
(schedule, step, bookkeeping; logging and checkpoints excluded).

Data wait, on CUDA: host timers would say little, since the host runs ahead of the GPU and its ``next()``
may return a batch whose copy is still queued. What counts is how long the GPU has nothing to do because
the next batch is not there: a CUDA event is recorded on the training stream just before the loader is
asked for the next batch, and another right after it returns (the loader works on its own stream and
hands the batch over on the consumer's: a copy or a stream wait enqueued before ``next()`` returns). The
GPU reaches the second event only when the previous step's kernels are done, the host has enqueued the
batch hand-over and the hand-over has run; the time between the two events is the step blocked on the
next batch (0 when the loader is ahead). The share is their sum over the window's GPU time (first event to
the window's end), read when the window is logged (the host has synchronised then anyway).
"""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["WindowMeter"]


class WindowMeter:
    def __init__(self, device=None):
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.restart(0)

    def restart(self, optimizer_steps: int) -> None:
        self.start = time.perf_counter()
        self.steps_at_start = optimizer_steps
        self.wait = self.compute = 0.0
        self.clips = 0
        self.loss_sum = 0.0
        self.loss_count = 0
        self._mark = self.start
        self._events: list[tuple[Any, Any]] = []  # (asked for a batch, got it) on the training stream

    # ---- around the loader's next()
    def wait_begins(self) -> None:
        self._mark = time.perf_counter()
        if self.cuda:
            asked = torch.cuda.Event(enable_timing=True)
            asked.record()
            self._events.append((asked, None))

    def wait_ends(self) -> None:
        now = time.perf_counter()
        self.wait += now - self._mark
        self._mark = now
        if self.cuda:
            got = torch.cuda.Event(enable_timing=True)
            got.record()
            self._events[-1] = (self._events[-1][0], got)

    def step_done(self, clips: int) -> None:
        self.compute += time.perf_counter() - self._mark
        self.clips += clips

    def add_losses(self, total: float, count: int) -> None:
        self.loss_sum += total
        self.loss_count += count

    # ---- the window's figures
    def data_wait(self) -> tuple[float, str]:
        """(share of the window spent waiting for batches, what measured it: ``"cuda_events"``/``"host"``)."""
        pairs = [(a, b) for a, b in self._events if b is not None]
        if self.cuda and pairs:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            total = pairs[0][0].elapsed_time(end)
            waited = sum(a.elapsed_time(b) for a, b in pairs)
            return (waited / total if total > 0 else 0.0), "cuda_events"
        busy = self.wait + self.compute
        return (self.wait / busy if busy > 0 else 0.0), "host"

    def figures(self, optimizer_steps: int) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.start
        share, how = self.data_wait()
        return {
            "loss": self.loss_sum / self.loss_count if self.loss_count else None,
            "clips_per_s": self.clips / elapsed if elapsed > 0 else None,
            "steps_per_s": (optimizer_steps - self.steps_at_start) / elapsed if elapsed > 0 else None,
            "data_wait": share,
            "data_wait_measured_by": how,
        }
