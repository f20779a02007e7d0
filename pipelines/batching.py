"""Pipeline outputs → `Batch`es of the training batch size: copies out of DALI, host memory, re-slicing.

A DALI run yields one decode batch; the loader keeps what it yields as pending chunks of views (`Chunk`)
and cuts `Batch`es of exactly the size asked from them (`take`), whatever the decode batch size.

On the CPU every copy goes into `HostBuffers` memory: numpy's large buffers use huge pages, and a buffer
is handed out again once nothing refers to it (a fresh 77 MB batch buffer costs its page faults and the
kernel's zeroing every time: ~2 ms of CPU per 16x224² clip, measured; ``torch.stack`` / ``torch.cat`` into
fresh memory ~9 ms of page faults per clip each).
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DTYPES", "Batch", "Chunk", "HostBuffers", "interleave", "take", "to_device", "to_torch"]


class Batch(NamedTuple):
    """video: ``(B, 3, T, H, W)`` on the loader's device, in its dtype (float32 unless asked otherwise);
    label: int64 ``(B,)``; key: the sample keys; view: int64 ``(B,)``, the index into
    `pipelines.sampling.eval_views` (0 in training)."""

    video: Any
    label: Any
    key: list[str]
    view: Any


class Chunk(NamedTuple):
    """Views waiting to be batched: ``video`` a tensor on the device, the rest numpy / lists of its length."""

    video: Any
    label: np.ndarray
    key: list[str]
    view: np.ndarray


class HostBuffers:
    """Reusable host memory for the CPU batches. A buffer here is handed out again only once nothing
    refers to it any more: no tensor, view or slice of it alive (``torch.from_numpy`` keeps a reference to
    the array for as long as any tensor shares its storage; CPython's reference counts make the test
    exact). At most ``keep`` buffers are kept."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._bufs: list[np.ndarray] = []
        self.reused = 0

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        for i in range(len(self._bufs)):
            # references when free: the list's and getrefcount's argument
            if (
                self._bufs[i].shape == shape
                and self._bufs[i].dtype == dtype
                and sys.getrefcount(self._bufs[i]) == 2
            ):
                self.reused += 1
                return self._bufs[i]
        buf = np.empty(shape, dtype)  # numpy's large buffers use huge pages: ~4x fewer faults than torch's
        if len(self._bufs) < self.keep:
            self._bufs.append(buf)
        return buf


DTYPES = ("float32", "float16", "bfloat16")  # what a batch's video may arrive in


def to_device(array: np.ndarray, device):
    """A small host array (labels, views, row indices) on ``device``; to a GPU from pinned memory without
    blocking (from pageable memory CUDA synchronises the stream before the copy: one host sync per batch)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(array))
    if torch.device(device).type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def _host_dtype(dtype, source):
    """The numpy dtype a host copy is made in: ``dtype``'s, or ``source``'s for bfloat16 (which numpy lacks:
    torch converts afterwards)."""
    import torch

    return source if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype


def _from_host(arr: np.ndarray, dtype):
    import torch

    out = torch.from_numpy(arr)
    return out if out.dtype == dtype else out.to(dtype)


def to_torch(tensor_list, device, pool: HostBuffers, dtype=None):
    """A dense DALI TensorList → a torch tensor of ``dtype`` (default: its own) on ``device``.

    GPU outputs are taken over without a copy (DLPack) on the stream ``pipe.run`` bound them to (the
    consumer's: `pipelines.loader`), and converted there if need be (DALI has no bfloat16); CPU outputs are
    copied out of DALI's buffers, which the next run reuses, into ``pool``'s memory, numpy converting to
    float16 as it copies."""
    import torch

    if type(tensor_list).__name__ == "TensorListGPU" and torch.device(device).type == "cpu":
        tensor_list = tensor_list.as_cpu()  # decoded on the GPU, wanted on the CPU
    if type(tensor_list).__name__ == "TensorListGPU":
        # DLPack: torch asks DALI for the tensor on torch's current stream, the one the outputs are bound to
        # (nvidia.dali.plugin.pytorch.DALIGenericIterator takes the default executor's outputs so too)
        out = torch.from_dlpack(tensor_list.as_tensor())
        return out if dtype is None or out.dtype == dtype else out.to(dtype)
    view = np.asarray(tensor_list.as_tensor())
    dtype = torch.from_numpy(view[:0]).dtype if dtype is None else dtype
    arr = pool.empty(view.shape, _host_dtype(dtype, view.dtype))
    np.copyto(arr, view, casting="unsafe")
    return _from_host(arr, dtype).to(device)


def interleave(videos: list, device, pool: HostBuffers, dtype=None):
    """The ``num_sample`` outputs of one run, each ``(B, ...)``, as one ``(B * num_sample, ...)`` tensor with
    a video's clips side by side: ``[v0 a, v0 b, v1 a, v1 b, ...]``; on the CPU one copy out of DALI."""
    import torch

    if len(videos) == 1:
        return to_torch(videos[0], device, pool, dtype)
    if type(videos[0]).__name__ == "TensorListGPU" and torch.device(device).type == "cuda":
        return torch.stack([to_torch(v, device, pool, dtype) for v in videos], dim=1).flatten(0, 1)
    videos = [v.as_cpu() if type(v).__name__ == "TensorListGPU" else v for v in videos]
    first = np.asarray(videos[0].as_tensor())
    dtype = torch.from_numpy(first[:0]).dtype if dtype is None else dtype
    out = pool.empty((first.shape[0], len(videos), *first.shape[1:]), _host_dtype(dtype, first.dtype))
    for r, v in enumerate(videos):
        out[:, r] = first if r == 0 else np.asarray(v.as_tensor())
    return _from_host(out, dtype).flatten(0, 1).to(device)


def _cat(tensors: list, pool: HostBuffers):
    """``torch.cat`` that, on the CPU, writes into `HostBuffers` memory."""
    import torch

    if len(tensors) == 1:
        return tensors[0]
    if tensors[0].device.type != "cpu" or tensors[0].dtype == torch.bfloat16:  # numpy has no bfloat16
        return torch.cat(tensors)
    shape = (sum(t.shape[0] for t in tensors), *tensors[0].shape[1:])
    out = pool.empty(shape, tensors[0].numpy().dtype)
    return torch.cat(tensors, out=torch.from_numpy(out))


def take(pending: list[Chunk], n: int, pool: HostBuffers) -> tuple[Batch, list[Chunk], int]:
    """The first ``n`` views of the pending chunks as one `Batch`, the chunks left and their views."""

    videos, labels, keys, views = [], [], [], []
    got = 0
    rest = list(pending)
    while got < n:
        video, label, key, view = rest.pop(0)
        m = min(n - got, len(key))
        videos.append(video[:m])
        labels.append(label[:m])
        keys.extend(key[:m])
        views.append(view[:m])
        if m < len(key):
            rest.insert(0, Chunk(video[m:], label[m:], key[m:], view[m:]))
        got += m
    device = videos[0].device
    batch = Batch(
        video=_cat(videos, pool),
        label=to_device(np.concatenate(labels), device),
        key=keys,
        view=to_device(np.concatenate(views), device),
    )
    return batch, rest, sum(len(c.key) for c in rest)
