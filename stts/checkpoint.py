"""Checkpoints in, checkpoints out: official files load as they are, mismatches are reported loudly.

Formats read (spec §2.6, §3.5):
- pySlowFast / official STTS-MViT: `{"model_state": state_dict, "optimizer_state", "cfg", "epoch"}` (`.pyth`);
- mmcv / official STTS-Swin: `{"state_dict": state_dict, "meta", "optimizer", "amp"}`, keys `backbone.*` and
  `cls_head.*` — the names our Video Swin uses, so nothing is renamed;
- our own checkpoints: `{"model": state_dict, "stts": {"model_name", "config", "classes", ...}}`;
- a bare state dict; any of these saved from a DDP/DeepSpeed wrapper (`module.` prefixes).

The official loaders skip every key whose name or shape does not match without a word (spec §9.21), which
hides naming errors; here loading is strict by default and the error lists what is missing, unexpected and
mismatched. `strict=False` loads what matches and returns the same report.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

STATE_KEYS = ("model_state", "state_dict", "model", "module")  # where wrappers keep the weights


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit the model; the message lists why."""


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        def few(items: list) -> str:
            shown = ", ".join(str(i) for i in items[:limit])
            return shown + (f" … (+{len(items) - limit})" if len(items) > limit else "")

        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {few(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {few(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} with other shapes: {few(shapes)}")
        return "; ".join(parts)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


_STEP_FOLDER = re.compile(r"^step-\d+$")


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` when it is a file; otherwise a `CheckpointError` saying what it is and what to give instead
    (nothing there, a run folder, a training checkpoint folder of `stts train`, another folder)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a regular file; give a .pt, .pyth or .pth file")
    run = None
    if _STEP_FOLDER.match(path.name) and path.parent.name == "checkpoints":
        run = path.parent.parent
        what = (
            "a training checkpoint folder of `stts train` (optimizer, RNG and data position to resume from)"
        )
    elif path.name == "checkpoints" and any(_STEP_FOLDER.match(p.name) for p in path.iterdir()):
        run = path.parent
        what = "the checkpoints folder of a training run"
    elif (path / "model.pt").is_file() or (path / "config.yaml").is_file():
        run = path
        what = "a training run folder"
    if run is None:
        raise CheckpointError(
            f"checkpoint {path} is a folder; give a checkpoint file (.pt, .pyth or .pth) in it"
        )
    weights = [str(run / n) for n in ("best.pt", "model.pt") if (run / n).is_file()]
    use = " or ".join(weights) if weights else f"{run / 'model.pt'} (written at each epoch end)"
    raise CheckpointError(
        f"checkpoint {path} is {what}: use {use}, or continue training with `stts train --out {run}` "
        "(it resumes from the newest checkpoint; add --resume to insist)"
    )


def _is_safetensors(path: Path) -> bool:
    """safetensors' layout: an 8-byte little-endian header length, then the JSON header."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    return (
        len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size
    )


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    """What a file torch cannot load is, from its first bytes and torch's error, and what to do."""
    size = path.stat().st_size
    if size == 0:
        return CheckpointError(
            f"checkpoint {path} is empty (0 bytes): an interrupted copy or download; copy it again"
        )
    with open(path, "rb") as fh:
        head = fh.read(16)
    reason = " ".join(str(err).split())
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", reason)
    if unsafe:  # a pickle of more than tensors and plain data: never run as code
        return CheckpointError(
            f"checkpoint {path} holds Python objects besides tensors ({unsafe[1]}); stts reads checkpoints as "
            "data only (torch.load weights_only=True). If you trust the file, save its state dict alone: "
            f"torch.save(torch.load('{path}', weights_only=False)['model_state'], 'weights.pt')"
        )
    kind = None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip, or its legacy pickle
        kind = "PyTorch"
    elif head[8:9] == b"{":
        kind = "safetensors"
    if kind:
        return CheckpointError(
            f"checkpoint {path} is a damaged or truncated {kind} file ({size:,} bytes; {reason[:120]}); "
            "copy it again"
        )
    return CheckpointError(
        f"checkpoint {path} is not a PyTorch checkpoint (neither torch.save's zip nor a pickle; it starts "
        f"with {head[:8]!r}): give a .pt, .pyth or .pth file written by torch.save"
    )


def read_checkpoint(source: str | os.PathLike | Mapping) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict with wrapper prefixes removed, everything else in the file)."""
    if isinstance(source, Mapping):
        obj = source
    else:
        path = checkpoint_file(source)
        try:
            if _is_safetensors(path):  # e.g. Accelerate's model.safetensors in a training checkpoint
                from safetensors.torch import load_file

                obj = load_file(path, device="cpu")
            else:
                # weights_only: a checkpoint is data, never code to run (official files hold only tensors,
                # numbers and strings)
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file: say what it is instead
            raise _unreadable(path, err) from None
    if _is_state_dict(obj):
        state, rest = dict(obj), {}
    else:
        key = next((k for k in STATE_KEYS if isinstance(obj, Mapping) and _is_state_dict(obj.get(k))), None)
        if key is None:
            found = ", ".join(map(str, obj.keys())) if isinstance(obj, Mapping) else type(obj).__name__
            where = "the checkpoint" if isinstance(source, Mapping) else f"checkpoint {source}"
            raise CheckpointError(
                f"{where} holds no state dict (looked for {', '.join(STATE_KEYS)}; found {found})"
            )
        state = dict(obj[key])
        rest = {k: v for k, v in obj.items() if k != key}
    return strip_prefix(state, "module."), rest


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove `prefix` when every key carries it (DDP's `module.`), possibly more than once."""
    state = dict(state)
    while state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool = True
) -> LoadReport:
    """Copy matching tensors into the model. Strict: any missing, unexpected or mismatched key is an error
    listing them all (nothing is copied then)."""
    own = model.state_dict()
    report = LoadReport()
    matching = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            matching[key] = value
    report.missing = [k for k in own if k not in state]
    report.loaded = list(matching)
    if strict and not report.ok:
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__}: {report.summary()}")
    model.load_state_dict(matching, strict=False)
    return report


def load_checkpoint(model: nn.Module, source, *, strict: bool = True, convert=None) -> LoadReport:
    """Read any supported format, optionally `convert` the state dict (foreign names → ours), load it."""
    state, _ = read_checkpoint(source)
    if convert is not None:
        state = convert(state)
    return load_state_dict(model, state, strict=strict)


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, *, meta: Mapping[str, Any] | None = None
) -> Path:
    """Our format: {"model": state_dict, "stts": meta}; written to a temporary name, then renamed."""
    return _save_dict(path, {"model": _cpu_state(model), "stts": dict(meta or {})})


def export_pyslowfast(model: nn.Module, path: str | os.PathLike, *, epoch: int = 0, cfg: str = "") -> Path:
    """The official MViT format: {"epoch", "model_state", "optimizer_state", "cfg"} (no `module.`)."""
    return _save_dict(
        path, {"epoch": epoch, "model_state": _cpu_state(model), "optimizer_state": {}, "cfg": cfg}
    )


def export_mmcv(model: nn.Module, path: str | os.PathLike, *, meta: Mapping[str, Any] | None = None) -> Path:
    """The official Swin (mmcv) format: {"meta", "state_dict"}; our Video Swin already uses its key names."""
    return _save_dict(path, {"meta": dict(meta or {}), "state_dict": _cpu_state(model)})


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _save_dict(path: str | os.PathLike, payload: dict) -> Path:
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
