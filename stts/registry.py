"""The model registry: zoo names → family spec + config. One documented entry point, `build_model`.

Families register themselves beside their model (`stts.models.spec.register_family`, imported by
`stts.models`); this file only looks names, configs and models up in what they registered, and maps the
short override names used by the CLI onto config fields. `spec_of` is how the rest of `stts` learns anything
family-specific (recipe, FLOPs convention, optimizer groups, checkpoint conversion).
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields, replace
from typing import Any

from torch import nn

from .checkpoint import CheckpointError, load_state_dict, read_checkpoint
from .models import FAMILIES, FamilySpec

# short names (CLI flags) → config fields
ALIASES = {
    "t_ratio": "time_left_ratio",
    "s_ratio": "space_left_ratio",
    "time_loc": "time_pruning_loc",
    "space_loc": "space_pruning_loc",
}
_RATIO_LOC = {"time_left_ratio": "time_pruning_loc", "space_left_ratio": "space_pruning_loc"}
_KIND = {"time_pruning_loc": "temporal", "space_pruning_loc": "spatial"}


def list_models(family: str | None = None) -> list[str]:
    """Every registered name (zoo entries and `*_debug` flavours), sorted; `family` is a family's name
    (`list_families()`)."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    return sorted(n for f, spec in FAMILIES.items() if family in (None, f) for n in spec.variants)


def list_families() -> list[str]:
    return list(FAMILIES)


def family_spec(family: str) -> FamilySpec:
    """The spec registered under a family name (``--backbone``, ``--recipe``)."""
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}") from None


def spec_of(what: Any) -> FamilySpec:
    """The family spec of a zoo name, a model (wrappers — DDP, Accelerate, `torch.compile` — looked through)
    or a model config."""
    if isinstance(what, str):
        for spec in FAMILIES.values():
            if what in spec.variants:
                return spec
        raise ValueError(f"unknown model {what!r}; `stts.list_models()` lists the {len(list_models())} names")
    inner = what
    while isinstance(inner, nn.Module) and hasattr(inner, "module"):  # DDP / Accelerate / DeepSpeed
        inner = inner.module
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    for kind in type(inner).__mro__:
        for spec in FAMILIES.values():
            if kind is spec.model or kind is spec.config:
                return spec
    raise TypeError(f"{type(inner).__name__} is not a registered stts model or model config")


def family_of(name: str) -> str:
    """The family name of a zoo name."""
    return spec_of(name).name


def _normalise(spec: FamilySpec, key: str, value: Any) -> tuple[str, Any]:
    field = ALIASES.get(key, key)
    field = spec.legacy_config_keys.get(field, field)
    if field.endswith("_loc") and isinstance(value, int):
        value = (value,)
    return field, value


def override_config(cfg: Any, *, name: str = "model", **overrides: Any):
    """``cfg`` (a family's config) with overrides: config fields or the short names t_ratio, s_ratio,
    time_loc, space_loc. Ratios are literal keep ratios (k = int(T·r)); giving one to a config without that
    selection adds it at the family's default location (spec ``default_locs``)."""
    spec = spec_of(cfg)
    valid = {f.name for f in fields(cfg)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        field, value = _normalise(spec, key, value)
        if field not in valid:
            options = sorted({*valid, *(a for a, f in ALIASES.items() if f in valid)})
            raise ValueError(f"{name} has no option {key!r}; options: {', '.join(options)}")
        changes[field] = value
    for ratio, loc in _RATIO_LOC.items():
        if ratio in changes and loc not in changes and loc in valid and not getattr(cfg, loc):
            default = spec.default_locs.get(loc)
            if not default:
                short = {v: k for k, v in ALIASES.items()}
                kinds = " and ".join(_KIND[k] for k in spec.default_locs) or "no"
                raise ValueError(
                    f"{name}: {spec.name} models have {kinds} selection only by default; "
                    f"{short[ratio]} needs {short[loc]} as well"
                )
            changes[loc] = default
    return replace(cfg, **changes)


def model_config(name: str, *, num_classes: int = 400, **overrides: Any):
    """The zoo entry's config with overrides (`override_config`)."""
    cfg = spec_of(name).variants[name]
    return override_config(cfg, name=name, num_classes=num_classes, **overrides)


def build_model_with_cfg(
    cfg: Any,
    *,
    name: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    strict: bool = True,
) -> nn.Module:
    """The family's model from a config; ``name`` is kept as ``model.model_name``; a checkpoint in any format
    the family knows (`FamilySpec.convert_state`) is loaded, strictly unless ``strict=False``."""
    spec = spec_of(cfg)
    model = spec.model(cfg)
    model.model_name = name
    if checkpoint is not None:
        state, _ = read_checkpoint(checkpoint)
        model.load_report = load_state_dict(model, spec.convert_state(state), strict=strict)
    return model


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
    cfg = model_config(name, num_classes=num_classes, **overrides)
    return build_model_with_cfg(cfg, name=name, checkpoint=checkpoint, strict=strict)


def input_shape(model_or_cfg, batch: int = 1) -> tuple[int, int, int, int, int]:
    """(B, C, T, H, W) of one view for this model (every family's config names its input the same way)."""
    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    return (batch, cfg.in_chans, cfg.num_frames, cfg.crop_size, cfg.crop_size)


def config_from_dict(spec: FamilySpec, config: dict[str, Any]):
    """A config saved by any version (a checkpoint's ``config``) → the family's config dataclass."""
    valid = {f.name for f in fields(spec.config)}
    renamed = dict(_normalise(spec, k, v) for k, v in config.items())
    unknown = sorted(set(renamed) - valid)
    if unknown:
        raise CheckpointError(
            f"checkpoint config has fields this version does not know: {', '.join(unknown)}"
        )
    fixed = {k: tuple(v) if isinstance(v, list) and k.endswith("_loc") else v for k, v in renamed.items()}
    return replace(spec.config(), **fixed)


def checkpoint_meta(model: nn.Module, *, classes: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """What our checkpoints carry besides the weights: ``model_name``, ``family``, the full ``config`` (so
    the model rebuilds without the zoo entry's defaults), ``classes`` and anything in ``extra``."""
    meta: dict[str, Any] = {
        "model_name": getattr(model, "model_name", None),
        "family": spec_of(model).name,
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
    ``(model, meta)``. For official files (pySlowFast ``.pyth``, mmcv ``.pth``, torchvision), which carry no
    model description, give the zoo ``name`` (and overrides such as ``num_classes``); ``meta`` is then
    ``{}``."""
    state, meta = read_checkpoint(path)
    stts_meta = meta.get("stts") if isinstance(meta.get("stts"), dict) else {}
    if stts_meta.get("config") is not None and name is None:
        family = stts_meta.get("family")
        spec = family_spec(family) if family else spec_of(stts_meta["model_name"])
        cfg = config_from_dict(spec, stts_meta["config"])
        if overrides:
            cfg = override_config(cfg, name=stts_meta.get("model_name") or spec.name, **overrides)
        model_name = stts_meta.get("model_name")
    elif name is not None:
        cfg, model_name = model_config(name, **overrides), name
    else:
        raise CheckpointError(
            f"{path} does not say which model it holds (not an stts checkpoint); give the zoo name "
            "(--model NAME, see `stts flops --all` for the names)"
        )
    model = build_model_with_cfg(cfg, name=model_name)
    model.load_report = load_state_dict(model, spec_of(cfg).convert_state(state), strict=strict)
    return model, dict(stts_meta)
