"""The official recipes' clip and augmentation specs fitted to a model's input: one function that training,
evaluation, `stts predict` and `stts viz` share, so a model sees the same geometry everywhere."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipelines.augment import AUG_SPECS, AugmentSpec
from pipelines.sampling import ClipSpec

__all__ = ["recipe_for_model"]


def recipe_for_model(
    model_or_cfg,
    *,
    family: str | None = None,
    views: tuple[int, int] | None = None,
    train: bool = False,
    clip: dict[str, Any] | None = None,
    aug: dict[str, Any] | None = None,
) -> tuple[ClipSpec, AugmentSpec]:
    """``(ClipSpec, AugmentSpec)`` of the recipe ``family`` (a key of `AUG_SPECS`; default: the one the model's
    family spec names, `stts.models.spec.Recipe.clip`) with the model's frames and crop size.

    Resizes keep the recipe's ratio to the crop (MViT evaluation 256/224, Swin 224/224 and its training
    resize 256/224), rounded, so a 64² debug model evaluates at short side 73. Stride, time base, placement
    rules and normalisation stay the recipe's. ``views``: ``(num_clips, num_crops)`` instead of the
    recipe's evaluation views (MViT 10×1, Swin 4×3). ``train``: the recipe's training specs (Swin's
    validation during training uses its one-clip ``swin_val`` specs when ``train`` is False and ``views``
    is (1, 1)). ``clip`` / ``aug``: field overrides applied last (lists become tuples)."""
    from stts.registry import input_shape, spec_of

    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    family = family or spec_of(cfg).recipe.clip
    if family not in AUG_SPECS:
        raise ValueError(f"unknown recipe {family!r}; choose one of {', '.join(AUG_SPECS)}")
    base = AUG_SPECS[family]
    _, _, frames, size, _ = input_shape(cfg)

    def scaled(side: int) -> int:
        return side if size == base.clip.crop_size else max(size, round(side * size / base.clip.crop_size))

    spec = replace(base.clip, num_frames=frames, crop_size=size, short_side=scaled(base.clip.short_side))
    if views is not None:
        spec = replace(spec, num_clips=int(views[0]), num_crops=int(views[1]))
    spec = replace(spec, **_tuples(clip or {}))
    changes: dict[str, Any] = {"clip": spec}
    if train and base.train_short_side is not None:
        changes["train_short_side"] = scaled(base.train_short_side)
    changes.update(_tuples(aug or {}))
    return spec, replace(base, **changes)


def _tuples(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
