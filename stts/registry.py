"""The model registry: zoo names → model class + config. One documented entry point, `build_model`.

Variants are data (the config dicts beside each model); this file only knows which family a name belongs
to and how the short override names used by the CLI map onto config fields.
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields, replace
from typing import Any

from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from .models.mvit import MVIT_CONFIGS, MViT, MViTConfig
from .models.swin import SWIN_CONFIGS, SwinConfig, VideoSwin

FAMILIES: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "mvit": (MViT, MVIT_CONFIGS),
    "swin": (VideoSwin, SWIN_CONFIGS),
}
# short names (CLI flags) → config fields
ALIASES = {
    "t_ratio": "time_left_ratio",
    "s_ratio": "space_left_ratio",
    "time_loc": "time_pruning_loc",
    "space_loc": "space_pruning_loc",
}
# where a selection goes when a ratio is asked of a zoo entry that has none: the paper's locations
DEFAULT_LOCS = {
    "mvit": {
        "time_pruning_loc": MViTConfig().time_pruning_loc,
        "space_pruning_loc": MViTConfig().space_pruning_loc,
    },
    "swin": {"time_pruning_loc": SwinConfig().time_pruning_loc},
}
_RATIO_LOC = {"time_left_ratio": "time_pruning_loc", "space_left_ratio": "space_pruning_loc"}


def list_models(family: str | None = None) -> list[str]:
    """Every registered name (zoo entries and `*_debug` flavours), sorted; `family` is mvit or swin."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    return sorted(n for f, (_, cfgs) in FAMILIES.items() if family in (None, f) for n in cfgs)


def family_of(name: str) -> str:
    for family, (_, cfgs) in FAMILIES.items():
        if name in cfgs:
            return family
    raise ValueError(f"unknown model {name!r}; `stts.list_models()` lists the {len(list_models())} names")


def model_config(name: str, *, num_classes: int = 400, **overrides: Any):
    """The zoo entry's config with overrides. `t_ratio`/`s_ratio` are literal keep ratios (k = int(T·r));
    giving one to an entry without that selection adds it at the paper's location."""
    family = family_of(name)
    cfg = FAMILIES[family][1][name]
    valid = {f.name for f in fields(cfg)}
    changes: dict[str, Any] = {"num_classes": num_classes}
    for key, value in overrides.items():
        field = ALIASES.get(key, key)
        if field not in valid:
            options = sorted({*valid, *(a for a, f in ALIASES.items() if f in valid)})
            raise ValueError(f"{name} has no option {key!r}; options: {', '.join(options)}")
        if field.endswith("_loc") and isinstance(value, int):
            value = (value,)
        changes[field] = value
    for ratio, loc in _RATIO_LOC.items():
        if ratio in changes and loc not in changes and loc in valid and not getattr(cfg, loc):
            default = DEFAULT_LOCS[family].get(loc)
            if not default:
                raise ValueError(f"{name}: no default location for {ratio}; give {loc} as well")
            changes[loc] = default
    return replace(cfg, **changes)


def selection_counts(cfg) -> dict[str, tuple[int, int]]:
    """What each selection of a model config chooses from and keeps: ``{"t": (candidates, k)}`` for
    temporal selection (candidates: the temporal slices of the patch grid), ``{"s": (candidates, k)}``
    for spatial selection (candidates: the tokens per frame at the selection block; one
    int(sqrt(k)) × int(sqrt(k)) window is kept). k = int(candidates · ratio), so a ratio below
    1 / candidates keeps nothing."""
    from .models.mvit import selection_sizes

    counts: dict[str, tuple[int, int]] = {}
    if isinstance(cfg, MViTConfig):
        k_t, k_s = selection_sizes(cfg)
        n_t, n_s = selection_sizes(replace(cfg, time_left_ratio=1.0, space_left_ratio=1.0))
        if k_t is not None:
            counts["t"] = (n_t, k_t)
        if k_s is not None:
            counts["s"] = (n_s, k_s)
    elif isinstance(cfg, SwinConfig) and cfg.time_k is not None:
        counts["t"] = (cfg.num_patches[0], cfg.time_k)
    return counts


def build_model(
    name: str,
    *,
    num_classes: int = 400,
    checkpoint: str | os.PathLike | None = None,
    strict: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Build a zoo model, e.g. `build_model("swin_b_32x2", t_ratio=0.5)` or
    `build_model("mvit_b_16x4_t0.9_s0.9", checkpoint="t0_0.9_s4_0.9.pyth")`. Overrides are config fields or
    the short names t_ratio, s_ratio, time_loc, space_loc (and e.g. strategy="random", num_frames=8).
    A checkpoint in any supported format is loaded strictly unless `strict=False`."""
    family = family_of(name)
    model = FAMILIES[family][0](model_config(name, num_classes=num_classes, **overrides))
    model.model_name = name
    if checkpoint is not None:
        model.load_report = load_checkpoint(model, checkpoint, strict=strict)
    return model


def input_shape(model_or_cfg, batch: int = 1) -> tuple[int, int, int, int, int]:
    """(B, 3, T, H, W) of one view for this model."""
    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    size = cfg.crop_size if isinstance(cfg, MViTConfig) else cfg.image_size
    return (batch, 3, cfg.num_frames, size, size)


def _config_from_dict(family: str, config: dict[str, Any]):
    cls = type(next(iter(FAMILIES[family][1].values())))
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise CheckpointError(
            f"checkpoint config has fields this version does not know: {', '.join(unknown)}"
        )
    fixed = {k: tuple(v) if isinstance(v, list) and k.endswith("_loc") else v for k, v in config.items()}
    return replace(cls(), **fixed)


def checkpoint_meta(model: nn.Module, *, classes: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """What our checkpoints carry besides the weights: ``model_name``, ``family``, the full ``config`` (so
    the model rebuilds without the zoo entry's defaults), ``classes`` and anything in ``extra``."""
    name = getattr(model, "model_name", None)
    meta: dict[str, Any] = {
        "model_name": name,
        "family": family_of(name) if name else ("mvit" if isinstance(model, MViT) else "swin"),
        "config": asdict(model.cfg),
    }
    if classes is not None:
        meta["classes"] = list(classes)
    meta.update(extra)
    return meta


def model_from_checkpoint(
    path: str | os.PathLike, *, name: str | None = None, strict: bool = True, **overrides: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model an `stts` checkpoint describes (its saved config) and load its weights; returns
    ``(model, meta)``. For official files (pySlowFast ``.pyth``, mmcv ``.pth``), which carry no model
    description, give the zoo ``name`` (and overrides such as ``num_classes``); ``meta`` is then ``{}``."""
    state, meta = read_checkpoint(path)
    stts_meta = meta.get("stts") if isinstance(meta.get("stts"), dict) else {}
    if stts_meta.get("config") is not None and name is None:
        family = stts_meta.get("family") or family_of(stts_meta["model_name"])
        cfg = _config_from_dict(family, stts_meta["config"])
        if overrides:
            cfg = replace(cfg, **{ALIASES.get(k, k): v for k, v in overrides.items()})
        model = FAMILIES[family][0](cfg)
        model.model_name = stts_meta.get("model_name")
    elif name is not None:
        model = FAMILIES[family_of(name)][0](model_config(name, **overrides))
        model.model_name = name
    else:
        raise CheckpointError(
            f"{path} does not say which model it holds (not an stts checkpoint); give the zoo name "
            "(--model NAME, see `stts flops --all` for the names)"
        )
    from .checkpoint import load_state_dict

    model.load_report = load_state_dict(model, state, strict=strict)
    return model, dict(stts_meta)
