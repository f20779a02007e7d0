"""What the rest of `stts` may know about a model family: one `FamilySpec`, registered beside the model.

Each family file (`stts/models/mvit.py`, `stts/models/swin.py`) ends with ``register_family(FamilySpec(...))``
— timm's `register_model` pattern, with the variants as data — and `stts/models/__init__.py` imports the
files. Code outside `stts/models/` asks the spec (`stts.registry.spec_of`) and never branches on a family
name or a model class: the registry's own lookup is the only place that maps a name or a config class to
a family.

A family's model class follows one small protocol, which the registry-wide tests check for every name:

- ``Model(cfg)`` builds it from its config dataclass; the config has ``num_classes``, ``num_frames``,
  ``crop_size`` (the input side: the model takes ``(B, in_chans, num_frames, crop_size, crop_size)``),
  ``in_chans``, ``strategy``, ``time_left_ratio`` / ``space_left_ratio`` and ``time_pruning_loc`` /
  ``space_pruning_loc`` (an empty tuple: no such selection);
- ``model.cfg`` is that config; ``forward`` returns logits in train and eval mode;
- ``model.selectors()`` lists its selectors (temporal first); ``model.selection_steps()`` says, for each, the
  token grid it runs on (`stts.selection.SelectionStep`), so that `stts.explain` can map a choice back to
  input frames and pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["FAMILIES", "FamilySpec", "Recipe", "register_family"]

AGGREGATIONS = ("sum", "mean")


@dataclass(frozen=True)
class Recipe:
    """A family's official training and evaluation protocol (spec §6, §7), as data.

    clip: the key of the clip sampling and augmentation in `pipelines` (``CLIP_SPECS`` / ``AUG_SPECS``):
        frames, stride, time base, evaluation views (clips × crops), resizes, normalisation.
    val_clip: the same for validation during training (Swin validates one centre clip of a 256 resize).
    aggregation: how the per-view softmaxes of a video are reduced: ``"sum"`` (pySlowFast) or ``"mean"``
        (mmaction); the ranking is the same, the reported probabilities differ.
    train: the `stts.engine.TrainConfig` sections of the official training run, as in ``config.yaml``
        (only what differs from the defaults); `stts.engine.recipe_for` builds the config from it.
    default_model / plain_model: what ``stts train --backbone NAME`` trains without ratios, and the
        all-token entry that ``--t-ratio`` / ``--s-ratio`` add selection to.
    """

    clip: str
    val_clip: str
    aggregation: str
    train: Mapping[str, Mapping[str, Any]]
    default_model: str
    plain_model: str

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")


def _same(state: dict) -> dict:
    return state


@dataclass(frozen=True)
class FamilySpec:
    """Everything family-specific that code outside the model file needs.

    name: the family's name (``stts train --backbone NAME``, ``--recipe NAME``, ``list_models(NAME)``).
    model / config: the model class and its config dataclass; ``variants``: zoo name → config (data, not
        subclasses); every family has a ``*_debug`` variant small enough for CPU tests.
    recipe: the official protocol (`Recipe`).
    flops_convention: the counting convention of the family's README (``stts.flops.CONVENTIONS``).
    param_groups: ``(model, weight_decay, selector_lr_mult) → groups`` for ``torch.optim.AdamW``, each group a
        dict with ``params``, ``weight_decay``, ``name``, ``lr_mult`` and ``kind`` (``"selector"`` or
        ``"backbone"``: the lr schedules treat them differently) — the official optimizer's grouping.
    head_prefixes: state-dict prefixes of the classifier: ``--init`` loads everything else and starts these
        fresh when the class count differs.
    default_locs: where a keep ratio given to a variant without that selection puts it (``t_ratio`` →
        ``time_pruning_loc``, ``s_ratio`` → ``space_pruning_loc``); a ratio whose location is not listed
        needs the location too.
    convert_state: foreign checkpoint layouts → our parameter names (a pure function; returns our own
        layout unchanged), applied wherever a checkpoint is loaded by name (``build_model(checkpoint=)``,
        ``--init``, official files in ``stts eval``).
    legacy_config_keys: config field names of older versions → today's, for configs saved in checkpoints
        and run folders.
    """

    name: str
    model: type[nn.Module]
    config: type
    variants: Mapping[str, Any]
    recipe: Recipe
    flops_convention: str
    param_groups: Callable[[nn.Module, float, float], list[dict]]
    head_prefixes: tuple[str, ...]
    default_locs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    convert_state: Callable[[dict], dict] = _same
    legacy_config_keys: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, cfg in self.variants.items():
            if type(cfg) is not self.config:
                raise TypeError(
                    f"{self.name}: variant {name} is a {type(cfg).__name__}, not {self.config.__name__}"
                )
        for name in (self.recipe.default_model, self.recipe.plain_model):
            if name not in self.variants:
                raise ValueError(f"{self.name}: the recipe's model {name} is not one of its variants")


FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    """Add a family to the registry (at import of its model file); names must be new everywhere."""
    if spec.name in FAMILIES:
        raise ValueError(f"model family {spec.name!r} is registered twice")
    taken = {n for f in FAMILIES.values() for n in f.variants}
    clash = sorted(taken & set(spec.variants))
    if clash:
        raise ValueError(f"{spec.name}: model names already registered by another family: {', '.join(clash)}")
    if any(f.config is spec.config or f.model is spec.model for f in FAMILIES.values()):
        raise ValueError(f"{spec.name}: its model or config class belongs to another family already")
    FAMILIES[spec.name] = spec
    return spec
