"""`TrainConfig`: everything a training run depends on, as one frozen dataclass saved to the run's
``config.yaml``; the official recipes (spec §6) are named instances in `RECIPES`.

Every faithful oddity of the official recipes is a named field whose default in that recipe is the official
value; where the spec marks it [surprising], the docstring of the field says what the sane alternative is.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "RECIPES",
    "TrainConfig",
    "apply_settings",
    "load_config",
    "parse_setting",
    "recipe_for",
    "save_config",
]

LR_SCHEDULES = ("mvit", "swin", "cosine")
PARAM_GROUPS = ("mvit", "swin")
PRECISIONS = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Groups: what to train, data, schedule, optimizer, selection, loss/augmentation,
    system, checkpoints and logging.

    model / model_overrides: a zoo name (`stts.list_models()`) and `build_model` overrides (``t_ratio``,
        ``s_ratio``, ``strategy``, ``time_loc`` ...).
    recipe: ``"mvit"`` or ``"swin"``: picks the clip sampling and augmentation (`pipelines.CLIP_SPECS`,
        `AUG_SPECS`); ``clip`` / ``aug`` override their fields (the clip length and crop follow the model's
        input size unless given).
    init: a checkpoint whose backbone weights start the run (any format `stts.checkpoint` reads, shape-matched;
        the selectors always start fresh, the head too when the class count differs).
    batch_size: videos per process per iteration; ``num_sample`` augmented clips of each (repeated
        augmentation), so the model sees ``batch_size * num_sample`` clips per iteration.
    grad_accum: iterations per optimizer step.
    lr_schedule: ``"mvit"``: the two-rate schedule of spec §6.1 — selectors on cosine(e) from step 0, the
        rest frozen (lr 0) for ``frozen_backbone_epochs`` and then ``min(cosine(e), backbone_lr_ratio·lr)``;
        ``"swin"``: mmcv's per-epoch cosine to ``min_lr`` with a linear warm-up from ``warmup_ratio`` over
        ``warmup_epochs`` counted in iterations, every group scaled by its multiplier; ``"cosine"``: one
        per-iteration cosine for every group (with the same optional warm-up), for training from scratch.
    param_groups: ``"mvit"`` (selectors / decayed ≥2-D / non-decayed 1-D, by module) or ``"swin"`` (mmcv
        custom keys by parameter name: bias tables and norms without decay, selectors at
        ``selector_lr_mult``).
    selector_lr_mult: Swin's official 0.001 [surprising: the selector learns 1000× slower than the backbone];
        1.0 is the sane alternative (what the MViT recipe does).
    sigma / sigma_decay: the perturbed top-k noise scale; MViT decays it linearly to 0 over all iterations,
        Swin keeps 0.05 constant [surprising: the official decay call never reaches the backbone].
    mixup: MixUp/CutMix with ``label_smoothing`` (MViT recipe); off: plain cross entropy on hard labels.
    max_steps: stop after this many optimizer steps (smoke tests); schedules still span ``epochs``.
    checkpoint_every: optimizer steps between checkpoints (0: only at epoch ends); ``keep_last`` of them
        are kept, plus ``best.pt`` by validation top-1.
    eval_every: epochs between validations (and the last epoch); 0: never. ``val_views``: (clips, crops).
    max_bad_steps: consecutive non-finite losses tolerated (each skips its step) before the run stops.
    rank_logs: every process writes ``RUN/rank{r}.jsonl``: the keys of each batch it trained on and, at the
        end, a checksum of its parameters (to check shard splits and that replicas stay in sync).
    """

    # what
    model: str = "mvit_b_16x4_t0.6_s0.9"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    recipe: str = "mvit"
    init: str | None = None
    # data
    data: str = ""
    out: str = "runs/stts"
    train_split: str = "train"
    val_split: str | None = "val"
    clip: dict[str, Any] = field(default_factory=dict)
    aug: dict[str, Any] = field(default_factory=dict)
    decoder: str = "auto"
    num_threads: int = 2
    # schedule
    epochs: int = 20
    batch_size: int = 2
    num_sample: int = 2
    grad_accum: int = 1
    max_steps: int | None = None
    # optimizer
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    param_groups: str = "mvit"
    lr_schedule: str = "mvit"
    frozen_backbone_epochs: float = 3.0
    backbone_lr_ratio: float = 0.1
    warmup_epochs: float = 0.0
    warmup_ratio: float = 0.1
    selector_lr_mult: float = 1.0
    clip_grad: float | None = 1.0
    # selection
    sigma: float = 0.1
    sigma_decay: bool = True
    # loss
    mixup: bool = True
    label_smoothing: float = 0.1
    # system
    mixed_precision: str = "no"
    deepspeed: str | None = None
    zero: int = 0
    seed: int = 0
    # checkpoints and logging
    checkpoint_every: int = 0
    keep_last: int = 2
    eval_every: int = 2
    val_views: tuple[int, int] = (1, 1)
    log_every: int = 10
    max_bad_steps: int = 5
    tensorboard: bool = True
    rank_logs: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML hands back lists
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.recipe in ("mvit", "swin"), f"recipe must be mvit or swin, got {self.recipe!r}")
        need(self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}")
        need(self.param_groups in PARAM_GROUPS, f"param_groups must be one of {PARAM_GROUPS}")
        need(self.mixed_precision in PRECISIONS, f"mixed_precision must be one of {PRECISIONS}")
        need(self.zero in (0, 1, 2), f"zero must be 0, 1 or 2, got {self.zero}")
        need(not (self.zero and self.deepspeed), "give either --zero or --deepspeed, not both")
        for name in ("epochs", "batch_size", "num_sample", "grad_accum", "num_threads", "keep_last"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.lr > 0 and self.min_lr >= 0, "lr must be > 0 and min_lr >= 0")
        need(self.sigma >= 0, f"sigma must be >= 0, got {self.sigma}")
        need(self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1")
        need(len(self.val_views) == 2 and min(self.val_views) >= 1, "val_views must be (clips, crops)")

    @property
    def family(self) -> str:
        from stts.registry import family_of

        return family_of(self.model)

    @property
    def uses_deepspeed(self) -> bool:
        return bool(self.deepspeed or self.zero)

    def to_dict(self) -> dict[str, Any]:
        def plain(value):
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return plain(asdict(self))


# ------------------------------------------------------------------------------------------- recipes

# spec §6.1: 16 videos over 8 GPUs, 2 augmented clips each; 20 epochs; the two-rate schedule; σ 0.1 → 0
MVIT_RECIPE = TrainConfig(
    model="mvit_b_16x4_t0.6_s0.9",
    recipe="mvit",
    epochs=20,
    batch_size=2,
    num_sample=2,
    grad_accum=1,
    lr=1e-4,
    min_lr=1e-6,
    weight_decay=0.05,
    param_groups="mvit",
    lr_schedule="mvit",
    frozen_backbone_epochs=3.0,
    backbone_lr_ratio=0.1,
    clip_grad=1.0,
    sigma=0.1,
    sigma_decay=True,
    mixup=True,
    label_smoothing=0.1,
    eval_every=2,
)

# spec §6.2: 1 video per GPU per iteration, 8 iterations per step; AdamW 3e-4; cosine by epoch with a 0.8-epoch
# warm-up; selectors at 0.001× lr; σ 0.05 constant; no clipping, no mixup; apex O1 (here: fp16 when asked)
SWIN_RECIPE = TrainConfig(
    model="swin_b_32x2_t0.5",
    recipe="swin",
    epochs=10,
    batch_size=1,
    num_sample=1,
    grad_accum=8,
    lr=3e-4,
    min_lr=0.0,
    weight_decay=0.05,
    param_groups="swin",
    lr_schedule="swin",
    warmup_epochs=0.8,
    warmup_ratio=0.1,
    selector_lr_mult=0.001,
    clip_grad=None,
    sigma=0.05,
    sigma_decay=False,
    mixup=False,
    label_smoothing=0.0,
    eval_every=5,
)

RECIPES: dict[str, TrainConfig] = {"mvit": MVIT_RECIPE, "swin": SWIN_RECIPE}


def recipe_for(backbone: str) -> TrainConfig:
    if backbone not in RECIPES:
        raise ValueError(f"unknown recipe {backbone!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[backbone]


# ------------------------------------------------------------------------------- --set and YAML


def _coerce(text: str, annotation: str, default: Any) -> Any:
    """`--set key=value` text → the field's type (YAML scalars, so 1e-4, true, null, [1, 2] all work)."""
    value = yaml.safe_load(text) if text.strip() else None
    if isinstance(value, str) and "float" in annotation:  # YAML 1.1 reads 3e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    if value is None:
        if "None" not in annotation:
            raise ValueError(f"cannot be empty/null (type {annotation})")
        return None
    if annotation.startswith("float") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation.startswith("int") and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation.startswith("str") and not isinstance(value, str):
        return str(value)
    if annotation.startswith("bool") and not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {text!r}")
    return value


def _yaml_value(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # 3e-4
        except ValueError:
            pass
    return value


def parse_setting(text: str) -> tuple[str, Any]:
    """``"lr=3e-4"`` → (``"lr"``, 3e-4); ``"aug.randaugment=null"``, ``"model.t_ratio=0.5"`` address the
    dict fields ``aug``, ``clip`` and ``model_overrides`` (``model.`` is short for it)."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: write key=value, e.g. --set lr=3e-4")
    key, raw = (s.strip() for s in text.split("=", 1))
    return key, raw


def apply_settings(cfg: TrainConfig, settings: dict[str, Any] | list[str]) -> TrainConfig:
    """Overrides as ``{field: value}`` (typed) or ``["key=value", ...]`` (parsed from text)."""
    by_name = {f.name: f for f in fields(TrainConfig)}
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    items = [parse_setting(s) for s in settings] if isinstance(settings, list) else list(settings.items())
    from_text = isinstance(settings, list)
    for key, value in items:
        head, _, sub = key.partition(".")
        if head == "model" and sub:
            head = "model_overrides"
        if sub:
            if head not in ("aug", "clip", "model_overrides"):
                raise ValueError(f"--set {key}: only aug.*, clip.* and model.* take a sub-key")
            nested.setdefault(head, dict(getattr(cfg, head)))[sub] = (
                _yaml_value(value) if from_text else value
            )
            continue
        if head not in by_name:
            close = sorted(n for n in by_name if n.startswith(head[:3]))
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"--set {key}: TrainConfig has no field {key!r}{hint}")
        f = by_name[head]
        if from_text:
            default = f.default if f.default is not MISSING else None
            try:
                value = _coerce(value, str(f.type), default)
            except ValueError as err:
                raise ValueError(f"--set {key}: {err}") from None
        changes[head] = value
    changes.update(nested)
    return replace(cfg, **changes)


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> Path:
    from stts.atomic import write_text

    return write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_config(path: str | os.PathLike) -> TrainConfig:
    data = yaml.safe_load(Path(path).read_text()) or {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown fields {', '.join(unknown)}")
    return TrainConfig(**data)
