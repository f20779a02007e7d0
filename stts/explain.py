"""What the selectors kept, mapped back to the input clip (for `stts viz` and the selection metrics).

Call `explain(model)` right after `model(x)` with ``x`` of `stts.registry.input_shape(model)`; it reads the
selectors' ``last_indices`` / ``last_scores`` and returns one `ClipSelection` per batch item. Meant for
evaluation mode (hard top-k); after a training-mode forward the soft choice is read as its arg-max.

Geometry (nominal footprints, the tiling of the strides — not receptive fields, which are wider):

* Time. A token slice t of a grid with temporal stride s (MViT: the patch embed's temporal stride times
  any temporal q-pooling before the selection block, i.e. 2; Swin: the temporal patch size, 2) covers the
  input frames ``[t·s, (t+1)·s)`` (cut at the clip's T frames).
* Space. A grid whose tokens are ``c`` input pixels apart (MViT: patch stride 4 times the spatial q
  strides of the blocks before the selection block, e.g. 8 before block 2 of the debug model, 16 before
  block 4 of MViT-B; Swin: 4·2^stage) maps cell (row r, column j) to pixels ``x ∈ [j·c, (j+1)·c)``,
  ``y ∈ [r·c, (r+1)·c)`` of the model's input crop. An a×a window with top-left cell (r, j) is therefore the
  box ``(j·c, r·c, (j+a)·c, (r+a)·c)``, cut at the crop size (Swin's padded cells can overhang it).
  After a spatial selection (Swin's extension, several stages), the next stage's grid starts at the kept
  window's top-left pixel; boxes compose accordingly.

Boxes are ``(x0, y0, x1, y1)``, end exclusive, in crop pixels. `ViewGeometry` maps them to the original
frame through the evaluation resize and crop of a view (`view_geometry` builds it from
`pipelines.sampling`, imported lazily so that `stts` stays importable with torch alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from .selection import SelectionStep, TemporalSelector

Box = tuple[int, int, int, int]

__all__ = [
    "Box",
    "ClipSelection",
    "ViewGeometry",
    "box_centre",
    "explain",
    "point_in_box",
    "slice_hit_fraction",
    "view_geometry",
]


@dataclass(frozen=True)
class ClipSelection:
    """What one clip kept.

    num_frames, crop_size: the model's input clip (T frames of crop_size²).
    frames_per_slice: input frames per temporal token slice (s).
    kept_frames: input frame positions (0..T-1, ascending) that survive temporal selection; all T frames
        when the model has no temporal selector.
    kept_slices: token slices kept by temporal selection (None without temporal selection);
        num_slices: slices it chose from.
    frame_scores: per input frame (length T), the min-max normalised score of its slice; None for frames
        of a non-learned strategy (random, uniform) or without temporal selection.
    boxes: kept frame → the window kept by spatial selection, in crop pixels; empty without spatial
        selection.
    candidate_boxes: kept frame → every window that (last) spatial selector could choose from, in its
        numbering order; the chosen one is among them.
    box_scores: kept frame → the chosen window's normalised score (None for non-learned strategies).
    temporal_strategy, spatial_strategy: the selectors' strategy, None where there is none.
    """

    num_frames: int
    crop_size: int
    frames_per_slice: int
    kept_frames: tuple[int, ...]
    kept_slices: tuple[int, ...] | None = None
    num_slices: int | None = None
    frame_scores: tuple[float | None, ...] = ()
    boxes: dict[int, Box] = field(default_factory=dict)
    candidate_boxes: dict[int, tuple[Box, ...]] = field(default_factory=dict)
    box_scores: dict[int, float | None] = field(default_factory=dict)
    temporal_strategy: str | None = None
    spatial_strategy: str | None = None

    @property
    def temporal(self) -> bool:
        return self.temporal_strategy is not None

    @property
    def spatial(self) -> bool:
        return self.spatial_strategy is not None

    def to_dict(self) -> dict:
        """JSON-friendly (dict keys as strings)."""
        return {
            "num_frames": self.num_frames,
            "crop_size": self.crop_size,
            "frames_per_slice": self.frames_per_slice,
            "kept_frames": list(self.kept_frames),
            "kept_slices": None if self.kept_slices is None else list(self.kept_slices),
            "num_slices": self.num_slices,
            "frame_scores": list(self.frame_scores),
            "boxes": {str(f): list(b) for f, b in self.boxes.items()},
            "box_scores": {str(f): s for f, s in self.box_scores.items()},
            "temporal_strategy": self.temporal_strategy,
            "spatial_strategy": self.spatial_strategy,
        }


def _steps(model: nn.Module) -> tuple[list[SelectionStep], int, int]:
    """(selection steps in forward order, input frames T, crop size)."""
    inner = getattr(model, "module", model)  # DDP / Accelerate wrappers
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    if not hasattr(inner, "selection_steps"):
        raise TypeError(f"explain needs a registered stts model, got {type(inner).__name__}")
    return list(inner.selection_steps()), inner.cfg.num_frames, inner.cfg.crop_size


def explain(model: nn.Module, batch_size: int | None = None) -> list[ClipSelection]:
    """One `ClipSelection` per item of the last forward's batch. ``batch_size`` is needed only for a model
    without selectors (every frame kept, no boxes); otherwise it comes from the selectors."""
    steps, num_frames, crop = _steps(model)
    for step in steps:
        if step.selector.last_indices is None:
            raise ValueError("the selectors have not run yet: call explain(model) right after model(x)")
    if steps:
        batch = steps[0].selector.last_indices.shape[0]
        if batch_size is not None and batch_size != batch:
            raise ValueError(f"batch_size {batch_size} differs from the last forward's batch of {batch}")
    elif batch_size is None:
        raise ValueError("this model has no selectors: give batch_size (the last forward's batch)")
    else:
        batch = batch_size
    fps = steps[0].frames_per_slice if steps else 1
    return [_explain_item(steps, num_frames, crop, fps, b) for b in range(batch)]


def _window_box(origin: tuple[int, int], cell: int, top: int, left: int, a: int, crop: int) -> Box:
    ox, oy = origin
    x0, y0 = ox + left * cell, oy + top * cell
    return (min(x0, crop), min(y0, crop), min(x0 + a * cell, crop), min(y0 + a * cell, crop))


def _explain_item(steps: list[SelectionStep], num_frames: int, crop: int, fps: int, b: int) -> ClipSelection:
    num_slices = -(-num_frames // fps)
    # slice positions currently in the token grid (indices into the full slice range), and per slice the
    # pixel origin of the current spatial grid
    slices = list(range(num_slices))
    origins = {t: (0, 0) for t in slices}
    kept_slices = None
    slice_scores: dict[int, float | None] = {}
    temporal_strategy = spatial_strategy = None
    boxes: dict[int, Box] = {}
    candidates: dict[int, tuple[Box, ...]] = {}
    box_scores: dict[int, float | None] = {}
    for step in steps:
        sel = step.selector
        idx = sel.last_indices[b].tolist()
        scores = None if sel.last_scores is None or sel.strategy != "learned" else sel.last_scores[b]
        if isinstance(sel, TemporalSelector):
            temporal_strategy = sel.strategy
            if scores is not None:
                slice_scores = {slices[i]: float(s) for i, s in enumerate(scores.tolist())}
            slices = [slices[i] for i in idx]
            kept_slices = tuple(slices)
            continue
        spatial_strategy = sel.strategy
        a = sel.anchor
        side = step.side
        stride, per_row = sel.windows(side)
        for j, t in enumerate(slices):
            origin = origins[t]
            grid = [
                _window_box(origin, step.cell, (w // per_row) * stride, (w % per_row) * stride, a, crop)
                for w in range(per_row * per_row)
            ]
            chosen = idx[j]
            boxes[t] = grid[chosen]
            candidates[t] = tuple(grid)
            box_scores[t] = None if scores is None else float(scores[j, chosen])
            origins[t] = boxes[t][:2]
    kept_frames = tuple(f for t in slices for f in range(t * fps, min((t + 1) * fps, num_frames)))
    slice_of = {f: f // fps for f in kept_frames}
    return ClipSelection(
        num_frames=num_frames,
        crop_size=crop,
        frames_per_slice=fps,
        kept_frames=kept_frames,
        kept_slices=kept_slices,
        num_slices=num_slices if temporal_strategy else None,
        frame_scores=tuple(slice_scores.get(f // fps) for f in range(num_frames)),
        boxes={f: boxes[slice_of[f]] for f in kept_frames} if spatial_strategy else {},
        candidate_boxes={f: candidates[slice_of[f]] for f in kept_frames} if spatial_strategy else {},
        box_scores={f: box_scores[slice_of[f]] for f in kept_frames} if spatial_strategy else {},
        temporal_strategy=temporal_strategy,
        spatial_strategy=spatial_strategy,
    )


def box_centre(box: Box) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    return ((x0 + x1) / 2, (y0 + y1) / 2)


@dataclass(frozen=True)
class ViewGeometry:
    """How one evaluation view's crop sits in the original frame: the frame (width × height) is resized to
    ``resized`` and the crop ``crop_box`` (in resized pixels) is fed to the model. The input crop may be
    resampled to ``input_size`` (normally the crop's own size)."""

    frame: tuple[int, int]
    resized: tuple[int, int]
    crop_box: Box
    input_size: int | None = None

    def _scale(self) -> tuple[float, float, float]:
        side = self.crop_box[2] - self.crop_box[0]
        zoom = side / self.input_size if self.input_size else 1.0
        return zoom, self.frame[0] / self.resized[0], self.frame[1] / self.resized[1]

    def to_frame_point(self, x: float, y: float) -> tuple[float, float]:
        """A crop-pixel point → original-frame pixels (continuous coordinates)."""
        zoom, sx, sy = self._scale()
        return ((self.crop_box[0] + x * zoom) * sx, (self.crop_box[1] + y * zoom) * sy)

    def to_frame_box(self, box: Box) -> tuple[float, float, float, float]:
        """A crop-pixel box → original-frame pixels (floats; round as the caller needs)."""
        x0, y0 = self.to_frame_point(box[0], box[1])
        x1, y1 = self.to_frame_point(box[2], box[3])
        return (x0, y0, x1, y1)


def view_geometry(width: int, height: int, spec, crop_index: int = 0, *, input_size: int | None = None):
    """`ViewGeometry` of crop ``crop_index`` (the spatial index of `pipelines.sampling.eval_views`) of a
    ``width`` × ``height`` video under the evaluation `ClipSpec` ``spec``."""
    from pipelines.sampling import eval_crop_boxes, eval_resize_size  # lazy: stts needs torch only

    boxes = eval_crop_boxes(width, height, spec)
    if not 0 <= crop_index < len(boxes):
        raise ValueError(f"crop_index must be in [0, {len(boxes)}), got {crop_index}")
    return ViewGeometry(
        frame=(width, height),
        resized=eval_resize_size(width, height, spec),
        crop_box=boxes[crop_index],
        input_size=input_size,
    )


def point_in_box(point: tuple[float, float], box) -> bool:
    """Whether a point lies in a box (end exclusive)."""
    x, y = point
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def slice_hit_fraction(frames_per_slice: int, num_frames: int, hits: list[bool]) -> float:
    """Mean over a clip's token slices of the share of their frames for which ``hits`` is True: the
    expected share of hits among the frames kept by k slices drawn uniformly at random (equal slices)."""
    n = math.ceil(num_frames / frames_per_slice)
    per_slice = []
    for t in range(n):
        part = hits[t * frames_per_slice : min((t + 1) * frames_per_slice, num_frames)]
        per_slice.append(sum(part) / len(part))
    return sum(per_slice) / n
