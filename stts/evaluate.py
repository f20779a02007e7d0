"""Multi-view evaluation (spec §7.1): every view of every video through the model, softmax per view,
reduced per video over its views, then accuracy over videos.

`evaluate(model, loader, classes=...)` returns an `EvalResult`; `write_results` puts ``eval.json`` and
``per_class.csv`` into a folder (each written to a temporary name, then renamed). How the per-view softmaxes
are reduced is the recipe's (`stts.models.spec.Recipe.aggregation`: the MViT recipe sums them, the Swin
recipe averages them); the ranking, hence top-k, is the same, and the reported probabilities are the
aggregate the recipe names.

Selection precision. On a dataset whose samples' ``.json`` carry the ground truth (the synthetic set:
``informative_frames`` = [start, end) in video frames, ``region`` = (x0, y0, x1, y1) in frame pixels),
each view's selection (`stts.explain`) is scored:

* temporal precision: of the clip frames kept by temporal selection, the share whose source video frame
  (the clip's frame indices, `pipelines.sampling.eval_clip_indices`) lies in the informative range;
* spatial precision: of the kept windows (one per kept frame), the share whose centre, mapped back to the
  original frame through the view's resize and crop, lies inside the region.

Both are pooled over all views (total hits / total kept). Beside them, what uniformly random selection of
the same k would score on the same clips, exactly: for time, each view's mean over its token slices of the
share of a slice's frames that are hits (times its kept frames); for space, the share of candidate windows
that are hits. Under `torch.distributed`, each rank evaluates its slice and the per-video results and
counters are gathered, so every rank returns the same `EvalResult`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .explain import box_centre, explain, point_in_box, slice_hit_fraction, view_geometry

__all__ = [
    "AGGREGATIONS",
    "eval_specs",
    "load_eval_model",
    "ClassRow",
    "EvalResult",
    "SelectionPrecision",
    "aggregation_of",
    "evaluate",
    "read_ground_truth",
    "write_results",
]

AGGREGATIONS = ("sum", "mean")  # of the per-view softmaxes of a video (spec §7.1)


def aggregation_of(recipe_or_mode: str) -> str:
    """ "sum" or "mean" from the mode itself or a family's name (its recipe's aggregation)."""
    if recipe_or_mode in AGGREGATIONS:
        return recipe_or_mode
    from .registry import FAMILIES

    if recipe_or_mode in FAMILIES:
        return FAMILIES[recipe_or_mode].recipe.aggregation
    raise ValueError(
        f"unknown aggregation {recipe_or_mode!r}; give {', '.join(AGGREGATIONS)} or a recipe "
        f"({', '.join(FAMILIES)})"
    )


@dataclass(frozen=True)
class ClassRow:
    class_id: int
    name: str
    videos: int
    top1_correct: int
    accuracy: float | None  # None where the class has no video


@dataclass
class SelectionPrecision:
    """Pooled hit counts; the precision properties are None where nothing was kept or counted."""

    strategy: str | None = None
    views: int = 0  # views with ground truth that were scored
    temporal_kept: int = 0
    temporal_hits: int = 0
    temporal_chance_hits: float = 0.0
    spatial_kept: int = 0
    spatial_hits: int = 0
    spatial_chance_hits: float = 0.0

    @staticmethod
    def _ratio(a: float, b: int) -> float | None:
        return a / b if b else None

    @property
    def temporal(self) -> float | None:
        return self._ratio(self.temporal_hits, self.temporal_kept)

    @property
    def temporal_random(self) -> float | None:
        return self._ratio(self.temporal_chance_hits, self.temporal_kept)

    @property
    def spatial(self) -> float | None:
        return self._ratio(self.spatial_hits, self.spatial_kept)

    @property
    def spatial_random(self) -> float | None:
        return self._ratio(self.spatial_chance_hits, self.spatial_kept)

    def merge(self, other: SelectionPrecision) -> None:
        for name in ("views", "temporal_kept", "temporal_hits", "temporal_chance_hits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("spatial_kept", "spatial_hits", "spatial_chance_hits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.strategy = self.strategy or other.strategy

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "temporal_precision": self.temporal,
            "temporal_random": self.temporal_random,
            "spatial_precision": self.spatial,
            "spatial_random": self.spatial_random,
        }


@dataclass
class EvalResult:
    model: str | None
    aggregation: str
    videos: int
    views: int
    skipped: int
    top1: float
    top5: float
    mean_class_accuracy: float
    per_class: list[ClassRow]
    seconds: float
    clips_per_second: float
    gflops_per_view: float | None
    flops_convention: str | None
    selection: SelectionPrecision | None = None
    # key → (label, top-5 class ids, their aggregated probabilities), sorted by key
    per_video: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("per_class", "selection", "per_video")}
        out["per_class"] = [asdict(r) for r in self.per_class]
        out["selection"] = None if self.selection is None else self.selection.to_dict()
        out["per_video"] = self.per_video
        return out

    def per_class_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["class_id", "name", "videos", "top1_correct", "accuracy"])
        for r in self.per_class:
            acc = "" if r.accuracy is None else f"{r.accuracy:.6f}"
            writer.writerow([r.class_id, r.name, r.videos, r.top1_correct, acc])
        return buf.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(result: EvalResult, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``eval.json`` and ``per_class.csv`` into ``out_dir`` (created), each atomically; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, cs = out / "eval.json", out / "per_class.csv"
    _atomic_write(js, json.dumps(result.to_dict(), indent=1) + "\n")
    _atomic_write(cs, result.per_class_csv())
    return js, cs


# ------------------------------------------------------------------------------------- model and recipe


def load_eval_model(
    checkpoint: str | os.PathLike | None,
    model_name: str | None,
    classes: list[str],
    strategy: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """(model, checkpoint meta) to evaluate on a dataset of ``classes``: an stts checkpoint (its model
    rebuilt from its config), an official file with the zoo ``model_name``, or the zoo model with fresh
    weights when no checkpoint is given. ``strategy`` overrides the selection (random / uniform controls).
    Raises ValueError or `stts.checkpoint.CheckpointError` with a one-line reason."""
    from .registry import build_model, family_of, model_from_checkpoint

    overrides: dict[str, Any] = {"strategy": strategy} if strategy else {}
    if model_name is not None:
        family_of(model_name)  # an unknown name fails before any file is read
    if checkpoint is None:
        if model_name is None:
            raise ValueError(
                "give --checkpoint PATH (an stts checkpoint, or an official file with --model NAME)"
            )
        return build_model(model_name, num_classes=len(classes), **overrides), {}
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ValueError(f"checkpoint {checkpoint}: no such file")
    if model_name is not None:
        overrides["num_classes"] = len(classes)
    model, meta = model_from_checkpoint(checkpoint, name=model_name, **overrides)
    saved = meta.get("classes")
    if saved is not None and len(saved) != len(classes):
        raise ValueError(
            f"{checkpoint} was trained on {len(saved)} classes, the shards have {len(classes)}: "
            "evaluate on shards of the same dataset"
        )
    if model.cfg.num_classes != len(classes):
        raise ValueError(
            f"{checkpoint} predicts {model.cfg.num_classes} classes, the shards have {len(classes)}: "
            "evaluate on shards of the same dataset"
        )
    return model, meta


def eval_specs(model: nn.Module, recipe: str | None = None, views: tuple[int, int] | None = None):
    """``(ClipSpec, AugmentSpec)`` of a family's evaluation protocol (default: the model's family's recipe)
    fitted to the model's input (`pipelines.recipes.recipe_for_model`); ``views`` (clips, crops) instead of
    the recipe's."""
    from pipelines.recipes import recipe_for_model

    from .registry import family_spec, spec_of

    spec = family_spec(recipe) if recipe is not None else spec_of(model)
    return recipe_for_model(model, family=spec.recipe.clip, views=views)


# ------------------------------------------------------------------------------------------ ground truth


def read_ground_truth(tars: Iterable[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """key → the sample's ``.json`` metadata, from the tars' ``.json`` members (eval sets are small)."""
    out: dict[str, dict[str, Any]] = {}
    for tar in tars:
        with tarfile.open(tar) as tf:
            for member in tf:
                if not member.isfile() or not member.name.endswith(".json"):
                    continue
                key = Path(member.name).name.partition(".")[0]
                data = tf.extractfile(member)
                if data is not None:
                    out[key] = json.loads(data.read())
    return out


def _has_truth(meta: Mapping[str, Any] | None) -> bool:
    return bool(meta) and "informative_frames" in meta and "region" in meta


def _truth_in_stored_video(meta: Mapping[str, Any]) -> tuple[tuple[float, float], tuple[float, ...]]:
    """(informative [start, end), region box) in the stored video's frames and pixels: a re-encoded
    sample's ground truth is in the source's, rescaled here by the frame-count and width/height ratios."""
    start, end = meta["informative_frames"]
    region = tuple(float(v) for v in meta["region"])
    src = meta.get("source_video")
    if meta.get("reencoded") and isinstance(src, Mapping):
        ft = meta["num_frames"] / src["num_frames"]
        sx, sy = meta["width"] / src["width"], meta["height"] / src["height"]
        start, end = start * ft, end * ft
        region = (region[0] * sx, region[1] * sy, region[2] * sx, region[3] * sy)
    return (start, end), region


def _score_view(sel, meta: Mapping[str, Any], spec, clip_idx: int, crop_idx: int, acc: SelectionPrecision):
    from pipelines.sampling import eval_clip_indices  # lazy: stts needs torch only

    (start, end), region = _truth_in_stored_video(meta)
    acc.views += 1
    if sel.temporal:
        frames = eval_clip_indices(int(meta["num_frames"]), float(meta["fps"]), spec, clip_idx)
        hits = [bool(start <= frames[f] < end) for f in range(sel.num_frames)]
        kept = len(sel.kept_frames)
        acc.temporal_kept += kept
        acc.temporal_hits += sum(hits[f] for f in sel.kept_frames)
        acc.temporal_chance_hits += kept * slice_hit_fraction(sel.frames_per_slice, sel.num_frames, hits)
    if sel.spatial:
        geo = view_geometry(int(meta["width"]), int(meta["height"]), spec, crop_idx, input_size=sel.crop_size)

        def hit(box) -> bool:
            return point_in_box(geo.to_frame_point(*box_centre(box)), region)

        for f in sel.kept_frames:
            candidates = sel.candidate_boxes[f]
            acc.spatial_kept += 1
            acc.spatial_hits += hit(sel.boxes[f])
            acc.spatial_chance_hits += sum(map(hit, candidates)) / len(candidates)


# ------------------------------------------------------------------------------------------- evaluation


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    classes: list[str],
    recipe_aggregation: str | None = None,
    gflops: float | None = None,
    flops_convention: str | None = None,
    count_flops: bool = True,
    ground_truth: Mapping[str, Mapping[str, Any]] | None = None,
    selection_metrics: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on every `Batch` of ``loader`` (an eval loader: `pipelines.build_loader(...,
    train=False)`, or any iterable of objects with ``video``, ``label``, ``key``, ``view``).

    classes: the class names (their count is the number of classes; labels index it).
    recipe_aggregation: ``"sum"`` / ``"mean"``, or a family's name for its recipe's; default: the model's
        recipe's.
    gflops / flops_convention: GFLOPs per view to report; by default counted with `stts.flops` in the
        convention of the model's family (what ``stts flops`` prints), unless ``count_flops`` is False.
    ground_truth: key → sample metadata for selection precision; by default read from the loader's tars
        (``loader.tars``) when the loader has a ``clip`` spec and ``views`` and the model has selectors.
    on_batch: called with the number of views of each batch (progress).
    """
    inner = getattr(model, "module", model)  # DDP / Accelerate wrappers
    if recipe_aggregation is None:
        from .registry import spec_of

        recipe_aggregation = spec_of(inner).recipe.aggregation
    mode = aggregation_of(recipe_aggregation)
    num_classes = len(classes)
    if num_classes < 1:
        raise ValueError("classes is empty: give the dataset's class names")
    device = _model_device(model)
    name = getattr(inner, "model_name", None)

    if gflops is None and count_flops:
        from .flops import gflops as count
        from .registry import input_shape, spec_of

        flops_convention = flops_convention or spec_of(inner).flops_convention
        gflops = count(inner, input_shape(inner), flops_convention)

    selectors = list(getattr(inner, "selectors", lambda: [])())
    spec = getattr(loader, "clip", None)
    views_of = getattr(loader, "views", None)
    precision = None
    if selection_metrics and selectors and spec is not None and views_of is not None:
        if ground_truth is None and getattr(loader, "tars", None):
            ground_truth = read_ground_truth(loader.tars)
        if ground_truth and any(_has_truth(m) for m in ground_truth.values()):
            precision = SelectionPrecision(strategy=selectors[0].strategy)

    probs: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    labels: dict[str, int] = {}
    num_views = 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for batch in loader:
                video = batch.video.to(device, non_blocking=True)
                p = torch.softmax(model(video).float(), dim=-1).cpu()
                if p.shape[1] != num_classes:
                    raise ValueError(
                        f"the model predicts {p.shape[1]} classes, the dataset has {num_classes}"
                    )
                label = [int(v) for v in torch.as_tensor(batch.label).tolist()]
                view = [int(v) for v in torch.as_tensor(batch.view).tolist()]
                chosen = explain(model) if precision is not None else None
                for i, key in enumerate(batch.key):
                    if not 0 <= label[i] < num_classes:
                        raise ValueError(f"{key}: label {label[i]} outside the {num_classes} classes")
                    probs[key] = probs[key] + p[i] if key in probs else p[i].clone()
                    counts[key] = counts.get(key, 0) + 1
                    labels[key] = label[i]
                    meta = ground_truth.get(key) if chosen is not None else None
                    if _has_truth(meta):
                        clip_idx, crop_idx = views_of[view[i]]
                        _score_view(chosen[i], meta, spec, clip_idx, crop_idx, precision)
                num_views += len(batch.key)
                if on_batch is not None:
                    on_batch(len(batch.key))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    if num_views == 0 and not _distributed()[1] > 1:
        raise ValueError("the loader yielded no views: check the split and the shards")
    skipped = int(getattr(loader, "skipped", 0) or 0)

    rank, world = _distributed()
    if world > 1:
        mine = {
            "videos": {k: (labels[k], probs[k].tolist(), counts[k]) for k in probs},
            "views": num_views,
            "seconds": seconds,
            "skipped": skipped,
            "precision": None if precision is None else asdict(precision),
        }
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        probs, counts, labels, num_views, skipped = {}, {}, {}, 0, 0
        precision = None
        for part in gathered:
            for key, (lab, pr, n) in part["videos"].items():
                t = torch.tensor(pr)
                probs[key] = probs[key] + t if key in probs else t
                counts[key] = counts.get(key, 0) + n
                labels[key] = lab
            num_views += part["views"]
            skipped += part["skipped"]
            if part["precision"] is not None:
                other = SelectionPrecision(**part["precision"])
                if precision is None:
                    precision = other
                else:
                    precision.merge(other)
        seconds = max(part["seconds"] for part in gathered)

    return _summarise(
        probs, counts, labels, classes, mode, name, num_views, skipped, seconds, gflops, flops_convention,
        precision,
    )  # fmt: skip


def _summarise(
    probs, counts, labels, classes, mode, name, num_views, skipped, seconds, gflops, convention, precision
) -> EvalResult:
    num_classes = len(classes)
    keys = sorted(probs)
    per_class_videos = [0] * num_classes
    per_class_correct = [0] * num_classes
    top1 = top5 = 0
    per_video = []
    k = min(5, num_classes)
    for key in keys:
        agg = probs[key] / counts[key] if mode == "mean" else probs[key]
        values, ids = agg.topk(k)
        label = labels[key]
        hit1 = int(ids[0]) == label
        top1 += hit1
        top5 += label in ids.tolist()
        per_class_videos[label] += 1
        per_class_correct[label] += hit1
        per_video.append(
            {
                "key": key,
                "label": label,
                "views": counts[key],
                "top5": ids.tolist(),
                "probs": [round(float(v), 6) for v in values],
            }
        )
    rows = [
        ClassRow(c, classes[c], per_class_videos[c], per_class_correct[c],
                 per_class_correct[c] / per_class_videos[c] if per_class_videos[c] else None)
        for c in range(num_classes)
    ]  # fmt: skip
    present = [r.accuracy for r in rows if r.accuracy is not None]
    n = len(keys)
    return EvalResult(
        model=name,
        aggregation=mode,
        videos=n,
        views=num_views,
        skipped=skipped,
        top1=top1 / n if n else 0.0,
        top5=top5 / n if n else 0.0,
        mean_class_accuracy=sum(present) / len(present) if present else 0.0,
        per_class=rows,
        seconds=seconds,
        clips_per_second=num_views / seconds if seconds > 0 else 0.0,
        gflops_per_view=gflops,
        flops_convention=convention if gflops is not None else None,
        selection=precision,
        per_video=per_video,
    )
