"""`TrainConfig`: everything a training run depends on, as typed sections owned by the parts that read them,
saved to the run's ``config.yaml`` and reloadable; the official recipes (spec §6) come from the families'
specs (`recipe_for`, `RECIPES`).

Sections (YAML keys):

- ``model`` (`ModelSection`): the zoo name, the model-config fields it overrides (checked and typed against
  the family's own config class: `MViTConfig`, `SwinConfig` ...) and ``init``, a checkpoint to start from;
- ``data`` (`DataSection`): the shards, splits, decoder, and ``recipe``: whose clip sampling, augmentation
  and view aggregation are used;
- ``clip`` / ``aug`` (`ClipOverrides` / `AugmentOverrides`): fields of the recipe's `pipelines.ClipSpec` /
  `pipelines.AugmentSpec` that the run changes (typed by those classes);
- ``training`` (`TrainingSection`): epochs, batch, repeated augmentation, accumulation, limits, seed;
- ``optim`` (`OptimSection`): AdamW, its groups, the lr schedule, clipping;
- ``selection`` (`SelectionSection`): σ of the perturbed top-k and its decay;
- ``loss`` (`LossSection`): mixup/cutmix and label smoothing;
- ``system`` (`SystemSection`): precision, DeepSpeed;
- ``checkpoint`` (`CheckpointSection`): the run folder and what is kept there;
- ``eval`` (`EvalSection`): validation cadence and views;
- ``logging`` (`LoggingSection`): log cadence, TensorBoard, per-rank logs.

Every faithful oddity of the official recipes is a named field whose value in that recipe is the official
one; where the spec marks it [surprising], the field's comment says what the sane alternative is.

``--set KEY=VALUE`` (`apply_settings`) takes a dotted key (``optim.lr``, ``aug.randaugment``,
``model.t_ratio``) or, as before, a field's own name (``lr``, ``grad_accum``: every field name is unique
across sections). A bad key or value raises `ConfigError` naming the key. ``config.yaml`` files written by
earlier versions (one flat mapping) still load (`load_config`).
"""

from __future__ import annotations

import difflib
import os
import tempfile
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from pipelines.augment import AugmentSpec
from pipelines.sampling import ClipSpec

__all__ = [
    "RECIPES",
    "AugmentOverrides",
    "CheckpointSection",
    "ClipOverrides",
    "ConfigError",
    "DataSection",
    "EvalSection",
    "LoggingSection",
    "LossSection",
    "ModelSection",
    "OptimSection",
    "SelectionSection",
    "SystemSection",
    "TrainConfig",
    "TrainingSection",
    "apply_settings",
    "load_config",
    "parse_setting",
    "recipe_for",
    "save_config",
]

# "two_rate": pySlowFast STTS (spec §6.1) — selectors on cosine(e) from step 0, the rest frozen (lr 0) for
#     ``frozen_backbone_epochs`` and then min(cosine(e), backbone_lr_ratio · lr);
# "cosine_epoch": mmcv's CosineAnnealing by epoch (spec §6.2), changing at epoch boundaries only, with a
#     linear warm-up counted in iterations;
# "cosine": one per-iteration cosine for every group (with the same optional warm-up), for training from
#     scratch.
LR_SCHEDULES = ("two_rate", "cosine_epoch", "cosine")
LEGACY_LR_SCHEDULES = {"mvit": "two_rate", "swin": "cosine_epoch"}  # their names in older config.yaml
PRECISIONS = ("no", "bf16", "fp16")


class ConfigError(ValueError):
    """A bad key or value in a training config (``--set``, a YAML file, a dict of settings).

    ``key``: the dotted key it is about, as the user can write it (``optim.lr``, ``aug.foo``); ``reason``:
    what is wrong and what is accepted. ``str(err)`` is ``"{key}: {reason}"``."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


# ------------------------------------------------------------------------------------------ typed values


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list [{', '.join(_type_name(a) for a in args)}]"
    if origin is not None and issubclass(origin, Mapping):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (from YAML or Python) as the type ``tp`` of a config field: ints for floats, lists for
    tuples, 3e-4 written without a dot (YAML 1.1 reads a string); anything else is a `ConfigError`."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(key, f"cannot be null; give {_type_name(tp)}")
        for option in args:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if value is None:
        raise ConfigError(key, f"cannot be null; give {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(key, f"expected one of {', '.join(map(repr, args))}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"expected a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(key, f"expected {_type_name(tp)} ({len(args)} values), got {value!r}")
        return tuple(coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return dict(value)
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _plain(value: Any) -> Any:
    """YAML-safe: tuples → lists, mappings → dicts."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------- sections


class _Section:
    """A typed part of `TrainConfig` (a frozen dataclass); ``NAME`` is its YAML key."""

    NAME: ClassVar[str]

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):  # YAML hands back lists and ints where tuples and floats are meant
            value = coerce(getattr(self, f.name), hints[f.name], f"{self.NAME}.{f.name}")
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Ranges and combinations; raise `ConfigError` via `need`."""

    def need(self, ok: bool, name: str, reason: str) -> None:
        if not ok:
            raise ConfigError(f"{self.NAME}.{name}", reason)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None):
        data = dict(data or {})
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(
                    f"{cls.NAME}.{key}",
                    f"no such field{_suggest(key, names)}; {cls.NAME} has {', '.join(names)}",
                )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class ModelSection(_Section):
    """What to train. ``overrides``: fields of the family's config (or the short names ``t_ratio``,
    ``s_ratio``, ``time_loc``, ``space_loc``), stored under the config's own field names; checked and typed
    against that config class. ``init``: a checkpoint whose backbone weights start the run (any format the
    family reads, shape-matched; the selectors always start fresh, the head too when the class count
    differs)."""

    NAME: ClassVar[str] = "model"
    name: str = "mvit_b_16x4_t0.6_s0.9"
    overrides: dict[str, Any] = field(default_factory=dict)
    init: str | None = None

    def check(self) -> None:
        from stts.registry import ALIASES, spec_of

        try:
            spec = spec_of(self.name)
        except ValueError as err:
            raise ConfigError("model.name", str(err)) from None
        hints = _hints(spec.config)
        normal: dict[str, Any] = {}
        written: dict[str, str] = {}  # config field → the key as the user wrote it (t_ratio)
        for key, value in self.overrides.items():
            name = spec.legacy_config_keys.get(ALIASES.get(key, key), ALIASES.get(key, key))
            if name not in hints or name == "num_classes":  # the class count is the dataset's
                options = sorted([*(n for n in hints if n != "num_classes"), *ALIASES])
                raise ConfigError(
                    f"model.{key}",
                    f"{self.name} has no such option{_suggest(key, options)}; options: {', '.join(options)}",
                )
            if name.endswith("_loc") and isinstance(value, int) and not isinstance(value, bool):
                value = (value,)
            normal[name] = coerce(value, hints[name], f"model.{key}")
            written[name] = key
        object.__setattr__(self, "overrides", normal)
        try:  # the config's own checks (ranges, locations), without building the model
            self.config()
        except ValueError as err:
            raise ConfigError(f"model.{self._culprit(written)}", str(err)) from None

    def _culprit(self, written: dict[str, str]) -> str:
        """The override that fails on its own (the key to name in an error), else ``overrides``."""
        from stts.registry import model_config

        for name, value in self.overrides.items():
            try:
                model_config(self.name, **{name: value})
            except ValueError:
                return written[name]
        return "overrides"

    def config(self, num_classes: int = 400):
        """The model's config (the zoo entry with the overrides); ValueError where they do not fit."""
        from stts.registry import model_config

        return model_config(self.name, num_classes=num_classes, **self.overrides)


@dataclass(frozen=True)
class DataSection(_Section):
    """Where the clips come from. ``recipe``: a family's name, whose recipe's clip sampling, augmentation,
    views and aggregation are used (`stts.models.spec.Recipe`); null: the model's family's."""

    NAME: ClassVar[str] = "data"
    shards: str = ""
    train_split: str = "train"
    val_split: str | None = "val"
    recipe: str | None = None
    decoder: str = "auto"
    num_threads: int = 2

    def check(self) -> None:
        from stts.registry import list_families

        families = list_families()
        self.need(
            self.recipe is None or self.recipe in families,
            "recipe",
            f"must be one of {', '.join(families)} (or null: the model's), got {self.recipe!r}",
        )
        self.need(self.num_threads >= 1, "num_threads", f"must be >= 1, got {self.num_threads}")


class _Overrides:
    """Fields of a typed config that a run changes: ``values`` holds only those, checked and typed against
    ``TARGET``'s fields when set (unknown names and wrong types are a `ConfigError` naming the key); `apply`
    puts them on the recipe's instance, whose own checks then run. YAML: the changed fields only (so null
    can mean "off", e.g. ``aug.randaugment: null``)."""

    NAME: ClassVar[str]
    TARGET: ClassVar[type]
    EXCLUDE: ClassVar[tuple[str, ...]] = ()

    def __init__(self, values: Mapping[str, Any] | None = None):
        hints = {k: v for k, v in _hints(self.TARGET).items() if k not in self.EXCLUDE}
        typed = {}
        for key, value in dict(values or {}).items():
            if key not in hints:
                raise ConfigError(
                    f"{self.NAME}.{key}",
                    f"no such field of {self.TARGET.__name__}{_suggest(key, hints)}; fields: {', '.join(hints)}",
                )
            typed[key] = coerce(value, hints[key], f"{self.NAME}.{key}")
        self._values = typed

    @property
    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def apply(self, base):
        """``base`` (a ``TARGET``) with the changed fields."""
        return replace(base, **self._values)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self._values)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None):
        return cls(data)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"{self.NAME}.{name} is not set (the recipe's value applies)")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values == self._values

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self._values))))

    def __bool__(self) -> bool:
        return bool(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"


class ClipOverrides(_Overrides):
    """`pipelines.ClipSpec` fields that a run changes (the clip length and crop follow the model's input
    unless given here)."""

    NAME = "clip"
    TARGET = ClipSpec


class AugmentOverrides(_Overrides):
    """`pipelines.AugmentSpec` fields that a run changes (``randaugment: null`` turns RandAugment off)."""

    NAME = "aug"
    TARGET = AugmentSpec
    EXCLUDE = ("clip",)  # the ClipSpec is the `clip` section's


@dataclass(frozen=True)
class TrainingSection(_Section):
    """How much and in which batches. ``batch_size``: videos per process per iteration, ``num_sample``
    augmented clips of each (repeated augmentation), so the model sees ``batch_size * num_sample`` clips per
    iteration; ``grad_accum``: iterations per optimizer step; ``max_steps``: stop after this many optimizer
    steps (smoke tests; the schedules still span ``epochs``); ``max_bad_steps``: consecutive non-finite
    losses tolerated (each skips its step) before the run stops."""

    NAME: ClassVar[str] = "training"
    epochs: int = 20
    batch_size: int = 2
    num_sample: int = 2
    grad_accum: int = 1
    max_steps: int | None = None
    max_bad_steps: int = 5
    seed: int = 0

    def check(self) -> None:
        for name in ("epochs", "batch_size", "num_sample", "grad_accum", "max_bad_steps"):
            self.need(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        self.need(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1 (or null)")


@dataclass(frozen=True)
class OptimSection(_Section):
    """AdamW and its schedule.

    param_groups: a family's name: its official optimizer groups (MViT: selectors / decayed ≥2-D /
        non-decayed 1-D, by module; Swin: mmcv custom keys by parameter name, bias tables and norms without
        decay, selectors at ``selector_lr_mult``); null: the model's family's.
    lr_schedule: ``two_rate`` (spec §6.1), ``cosine_epoch`` (spec §6.2) or ``cosine`` (see
        `LR_SCHEDULES`; ``mvit`` / ``swin``, their names before, still read).
    selector_lr_mult: Swin's official 0.001 [surprising: the selector learns 1000× slower than the
        backbone]; 1.0 is the sane alternative (what the MViT recipe does).
    clip_grad: global L2 norm (null: no clipping).
    """

    NAME: ClassVar[str] = "optim"
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    param_groups: str | None = None
    lr_schedule: str = "two_rate"
    frozen_backbone_epochs: float = 3.0
    backbone_lr_ratio: float = 0.1
    warmup_epochs: float = 0.0
    warmup_ratio: float = 0.1
    selector_lr_mult: float = 1.0
    clip_grad: float | None = 1.0

    def check(self) -> None:
        from stts.registry import list_families

        if self.lr_schedule in LEGACY_LR_SCHEDULES:
            object.__setattr__(self, "lr_schedule", LEGACY_LR_SCHEDULES[self.lr_schedule])
        families = list_families()
        self.need(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        self.need(self.min_lr >= 0, "min_lr", f"must be >= 0, got {self.min_lr}")
        self.need(
            self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}"
        )
        self.need(
            self.param_groups is None or self.param_groups in families,
            "param_groups",
            f"must be one of {', '.join(families)} (or null: the model's), got {self.param_groups!r}",
        )
        self.need(self.clip_grad is None or self.clip_grad > 0, "clip_grad", "must be > 0 (or null: off)")


@dataclass(frozen=True)
class SelectionSection(_Section):
    """The perturbed top-k's noise scale: MViT decays it linearly to 0 over all iterations (``sigma_decay``),
    Swin keeps 0.05 constant [surprising: the official decay call never reaches the backbone]."""

    NAME: ClassVar[str] = "selection"
    sigma: float = 0.1
    sigma_decay: bool = True

    def check(self) -> None:
        self.need(self.sigma >= 0, "sigma", f"must be >= 0, got {self.sigma}")


@dataclass(frozen=True)
class LossSection(_Section):
    """``mixup``: MixUp/CutMix with ``label_smoothing`` (MViT recipe); off: cross entropy on hard labels
    (with ``label_smoothing``)."""

    NAME: ClassVar[str] = "loss"
    mixup: bool = True
    label_smoothing: float = 0.1

    def check(self) -> None:
        self.need(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")


@dataclass(frozen=True)
class SystemSection(_Section):
    """How the run uses the machine: ``mixed_precision`` (``no``, ``bf16``, ``fp16``); DeepSpeed through
    Accelerate: ``zero`` 1 or 2 with the shipped configs, or ``deepspeed``, a JSON file."""

    NAME: ClassVar[str] = "system"
    mixed_precision: str = "no"
    deepspeed: str | None = None
    zero: int = 0

    def check(self) -> None:
        self.need(
            self.mixed_precision in PRECISIONS, "mixed_precision", f"must be one of {', '.join(PRECISIONS)}"
        )
        self.need(self.zero in (0, 1, 2), "zero", f"must be 0, 1 or 2, got {self.zero}")
        self.need(not (self.zero and self.deepspeed), "zero", "give either --zero or --deepspeed, not both")


@dataclass(frozen=True)
class CheckpointSection(_Section):
    """The run folder ``out`` and what is kept there: a checkpoint every ``checkpoint_every`` optimizer
    steps (0: only at epoch ends), the last ``keep_last`` of them, plus ``best.pt`` by validation top-1."""

    NAME: ClassVar[str] = "checkpoint"
    out: str = "runs/stts"
    checkpoint_every: int = 0
    keep_last: int = 2

    def check(self) -> None:
        self.need(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0 (0: at epoch ends only)")
        self.need(self.keep_last >= 1, "keep_last", f"must be >= 1, got {self.keep_last}")


@dataclass(frozen=True)
class EvalSection(_Section):
    """Validation every ``eval_every`` epochs (and at the last one; 0: never) on ``val_views`` (clips, crops)
    per video."""

    NAME: ClassVar[str] = "eval"
    eval_every: int = 2
    val_views: tuple[int, int] = (1, 1)

    def check(self) -> None:
        self.need(self.eval_every >= 0, "eval_every", "must be >= 0 (0: never)")
        self.need(min(self.val_views) >= 1, "val_views", "must be [clips, crops], both >= 1")


@dataclass(frozen=True)
class LoggingSection(_Section):
    """``metrics.jsonl`` (and TensorBoard) every ``log_every`` iterations; ``rank_logs``: every process writes
    ``RUN/rank{r}.jsonl``, the keys of each batch it trained on and at the end a checksum of its parameters
    (to check shard splits and that replicas stay in sync)."""

    NAME: ClassVar[str] = "logging"
    log_every: int = 10
    tensorboard: bool = True
    rank_logs: bool = False

    def check(self) -> None:
        self.need(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")


# ------------------------------------------------------------------------------------------ TrainConfig

SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "clip": ClipOverrides,
    "aug": AugmentOverrides,
    "training": TrainingSection,
    "optim": OptimSection,
    "selection": SelectionSection,
    "loss": LossSection,
    "system": SystemSection,
    "checkpoint": CheckpointSection,
    "eval": EvalSection,
    "logging": LoggingSection,
}
# a field's own name → its section (``--set lr=...``); model.overrides, clip and aug take dotted keys only
LEAVES: dict[str, str] = {}
for _name, _cls in SECTIONS.items():
    if issubclass(_cls, _Section):
        for _f in fields(_cls):
            if _f.name != "overrides":
                assert _f.name not in LEAVES, f"field name {_f.name} in two sections"
                LEAVES[_f.name] = _name
# flat keys of the config.yaml of earlier versions that are neither a section's field name nor the same path
LEGACY_KEYS = {"model": "model.name", "model_overrides": "model.overrides", "data": "data.shards"}
# fields that may differ when a run is resumed: they do not change what is computed up to the resume point
RESUMABLE = frozenset(
    {
        "training.epochs",
        "training.max_steps",
        "checkpoint.checkpoint_every",
        "checkpoint.keep_last",
        "logging.log_every",
        "data.num_threads",
        "data.decoder",
    }
)


@dataclass(frozen=True)
class TrainConfig:
    """One training run: typed sections (see the module docstring); ``to_dict`` is ``config.yaml``."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    clip: ClipOverrides = field(default_factory=ClipOverrides)
    aug: AugmentOverrides = field(default_factory=AugmentOverrides)
    training: TrainingSection = field(default_factory=TrainingSection)
    optim: OptimSection = field(default_factory=OptimSection)
    selection: SelectionSection = field(default_factory=SelectionSection)
    loss: LossSection = field(default_factory=LossSection)
    system: SystemSection = field(default_factory=SystemSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    eval: EvalSection = field(default_factory=EvalSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                object.__setattr__(self, name, cls.from_dict(value))

    @property
    def family(self) -> str:
        from stts.registry import family_of

        return family_of(self.model.name)

    @property
    def recipe(self) -> str:
        """The family whose recipe's data protocol (clips, augmentation, views, aggregation) the run uses."""
        return self.data.recipe or self.family

    @property
    def uses_deepspeed(self) -> bool:
        return bool(self.system.deepspeed or self.system.zero)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_dict() for name in SECTIONS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainConfig:
        """From ``config.yaml``'s mapping, this version's (sections) or an earlier one's (flat)."""
        data = dict(data or {})
        if _is_flat(data):
            data = _from_flat(data)
        for key in data:
            if key not in SECTIONS:
                raise ConfigError(
                    key, f"no such section{_suggest(key, SECTIONS)}; sections: {', '.join(SECTIONS)}"
                )
        return cls(**{name: SECTIONS[name].from_dict(data.get(name)) for name in SECTIONS})

    def resolved(self) -> dict[str, Any]:
        """`to_dict` with the defaults that follow the model filled in (``data.recipe``,
        ``optim.param_groups``): what two configs must share to compute the same run."""
        out = self.to_dict()
        out["data"]["recipe"] = self.recipe
        out["optim"]["param_groups"] = self.optim.param_groups or self.family
        return out


def _is_flat(data: Mapping[str, Any]) -> bool:
    return (
        any(k not in SECTIONS for k in data)
        or isinstance(data.get("model"), str)
        or isinstance(data.get("data"), str)
    )


def _from_flat(data: Mapping[str, Any]) -> dict[str, Any]:
    """An earlier version's flat ``config.yaml`` → sections."""
    nested: dict[str, dict[str, Any]] = {}
    unknown = []
    for key, value in data.items():
        if key in ("clip", "aug"):
            nested.setdefault(key, {}).update(value or {})
            continue
        path = LEGACY_KEYS.get(key) or (f"{LEAVES[key]}.{key}" if key in LEAVES else None)
        if path is None:
            unknown.append(key)
            continue
        section, _, name = path.partition(".")
        nested.setdefault(section, {})[name] = value
    if unknown:
        raise ConfigError(
            unknown[0],
            f"unknown field{_suggest(unknown[0], [*LEAVES, *LEGACY_KEYS])} (a config.yaml of another version?)",
        )
    return nested


# ------------------------------------------------------------------------------------------------ recipes


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def recipe_for(backbone: str) -> TrainConfig:
    """The official training run of a family (its spec's `Recipe`): the recipe's model, data protocol,
    optimizer groups and the values of spec §6."""
    from stts.registry import family_spec

    spec = family_spec(backbone)
    data = _merge(TrainConfig().to_dict(), spec.recipe.train)
    data = _merge(
        data,
        {
            "model": {"name": spec.recipe.default_model},
            "data": {"recipe": spec.name},
            "optim": {"param_groups": spec.name},
        },
    )
    return TrainConfig.from_dict(data)


def _recipes() -> dict[str, TrainConfig]:
    from stts.registry import list_families

    return {name: recipe_for(name) for name in list_families()}


RECIPES: dict[str, TrainConfig] = _recipes()


# ------------------------------------------------------------------------------------- --set and YAML


def _yaml_value(text: str) -> Any:
    """``--set`` text → a value: YAML scalars and lists (1e-4, true, null, [1, 2]); empty text is null."""
    text = text.strip()
    if not text:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_setting(text: str) -> tuple[str, str]:
    """``"lr=3e-4"`` → (``"lr"``, ``"3e-4"``)."""
    if "=" not in text:
        raise ConfigError(
            text.strip() or "--set", "write key=value, e.g. --set lr=3e-4 or --set aug.randaugment=null"
        )
    key, raw = (s.strip() for s in text.split("=", 1))
    return key, raw


def _path(key: str, value: Any) -> list[tuple[str, str, Any]]:
    """A settings key → [(section, field, value)]: dotted (``optim.lr``, ``model.t_ratio``, ``aug.foo``), a
    field's own name (``lr``), a key of earlier versions (``model``, ``model_overrides``, ``data``), or a
    section with a mapping of its fields."""
    head, dot, sub = key.partition(".")
    if dot:
        if head not in SECTIONS:
            options = [*SECTIONS, *LEAVES]
            raise ConfigError(
                key, f"no such section {head!r}{_suggest(head, options)}; sections: {', '.join(SECTIONS)}"
            )
        cls = SECTIONS[head]
        if head == "model" and sub not in {f.name for f in fields(ModelSection)}:
            return [("model", "overrides", {sub: value})]
        if issubclass(cls, _Section) and sub not in {f.name for f in fields(cls)}:
            names = [f.name for f in fields(cls)]
            raise ConfigError(key, f"no such field{_suggest(sub, names)}; {head} has {', '.join(names)}")
        return [(head, sub, value)]
    if key in LEGACY_KEYS and not (key in SECTIONS and isinstance(value, Mapping)):
        section, _, name = LEGACY_KEYS[key].partition(".")
        return [(section, name, value)]
    if key in LEAVES:
        return [(LEAVES[key], key, value)]
    if key in SECTIONS and isinstance(value, Mapping):
        return [item for sub, v in value.items() for item in _path(f"{key}.{sub}", v)]
    raise ConfigError(
        key,
        f"no such setting{_suggest(key, [*LEAVES, *SECTIONS])}; write a field (lr) or section.field (optim.lr, aug.randaugment, model.t_ratio)",
    )


def apply_settings(cfg: TrainConfig, settings: Mapping[str, Any] | list[str]) -> TrainConfig:
    """``cfg`` with changes: ``{key: value}`` (typed values) or ``["key=value", ...]`` (``--set`` text, read as
    YAML scalars). Keys as in `_path`; mappings for ``model.overrides``, ``clip`` and ``aug`` are merged into
    what is there. Every change is checked: a bad key or value raises `ConfigError` naming it."""
    if isinstance(settings, list):
        items = [(k, _yaml_value(v)) for k, v in map(parse_setting, settings)]
    else:
        items = list(settings.items())
    data = cfg.to_dict()
    for key, value in items:
        for section, name, v in _path(key, value):
            if section in ("clip", "aug"):
                data[section] = {**data[section], name: v}
            elif section == "model" and name == "overrides":
                data["model"]["overrides"] = {**data["model"]["overrides"], **(v or {})}
            else:
                data[section][name] = v
    return TrainConfig.from_dict(data)


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load_config(path: str | os.PathLike) -> TrainConfig:
    """A run's ``config.yaml``, written by this version or an earlier one (flat); `ConfigError` names a key
    this version does not know."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(str(path), "not a mapping of settings")
    return TrainConfig.from_dict(data)
