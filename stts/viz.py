"""Draw what STTS kept in one view: frames, temporal drops, spatial windows, scores (for `stts viz`).

`select_view(model, view)` runs one view ``(3, T, H, W)`` through the model in eval mode (hard top-k) and
reads the selection back with `stts.explain.explain`; `draw_selection` renders the view's un-normalised
crop pixels (what the model saw) as a strip of tiles:

* tiles in rows of `PER_ROW`, each frame upscaled by an integer factor to at least `TILE_MIN` pixels
  (nearest neighbour: the model's pixels, enlarged);
* frames dropped by temporal selection dimmed to 35 % with a grey veil; kept ones framed in blue;
* on each kept frame the window kept by spatial selection, outlined in yellow (3 px, with a dark edge so
  that it shows on any content);
* under each tile: the clip position and video frame, the selector's score and "kept"/"dropped";
* ground truth where known (synthetic shards): the event region as a thin dashed green box on the frames
  of the informative range, and a green tick under those frames;
* a title (model, top-1 class and probability of this view, where the view sits) and a legend line.

The PNG size is `canvas_size(T, crop)`; everything is laid out from the constants below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .explain import Box, ClipSelection, explain

__all__ = [
    "ViewTruth",
    "canvas_size",
    "draw_selection",
    "select_view",
    "tile_size",
    "truth_in_view",
]

TILE_MIN = 160  # smallest tile side: 64² debug frames become 192² tiles, 224² frames stay 224²
PER_ROW = 8
MARGIN = 14
GAP = 10
FONT_SIZE = 14
TITLE_SIZE = 16
LINE = 18  # text line height
HEADER = 2 * LINE + 12  # title + legend, then a gap
CAPTION = 3 * LINE + 6  # three lines under each tile

BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)
MUTED = (150, 150, 150)
KEPT_WINDOW = (255, 214, 0)  # bright yellow outline of the kept spatial window
WINDOW_EDGE = (0, 0, 0)  # 1 px dark edge outside the outline
TRUTH = (60, 220, 90)  # ground truth: dashed region box, tick under informative frames
DROPPED_TEXT = (230, 110, 100)
KEPT_TEXT = (120, 200, 255)
DIM = 0.35  # brightness of frames dropped by temporal selection
VEIL = (128, 128, 128)  # grey blended over dropped frames
VEIL_ALPHA = 0.25
OUTLINE = 3


@dataclass(frozen=True)
class ViewTruth:
    """Ground truth in the view's terms: per clip frame whether it lies in the informative range, and the
    event region in crop pixels (may reach outside the crop)."""

    informative: tuple[bool, ...]
    region: tuple[float, float, float, float] | None
    label: str | None = None


def select_view(model: nn.Module, view: torch.Tensor) -> tuple[torch.Tensor, ClipSelection]:
    """Logits ``(num_classes,)`` of one view ``(3, T, H, W)`` (eval mode, hard selection) and what the
    selectors kept (`stts.explain.explain`)."""
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(view.unsqueeze(0).to(device))[0].float().cpu()
    return logits, explain(model, batch_size=1)[0]


def truth_in_view(
    meta: Mapping[str, Any],
    frame_indices: Sequence[int],
    frame_size: tuple[int, int],
    resized: tuple[int, int],
    crop_box: Box,
) -> ViewTruth | None:
    """A synthetic sample's ground truth (its ``.json``: ``informative_frames`` [start, end), ``region``
    (x0, y0, x1, y1)) for the clip frames ``frame_indices`` of a view whose frames (``frame_size`` = stored
    width, height) were resized to ``resized`` and cropped at ``crop_box``. None without ground truth.
    A re-encoded sample's truth is in the source's frames and pixels: rescaled to the stored video."""
    # the selection-precision metric's own reading of the truth, so the picture and the numbers agree
    from .evaluate import _has_truth, _truth_in_stored_video

    if not _has_truth(meta):
        return None
    (start, end), (x0, y0, x1, y1) = _truth_in_stored_video(meta)
    (w, h), (rw, rh) = frame_size, resized
    fx, fy = rw / w, rh / h
    region = (x0 * fx - crop_box[0], y0 * fy - crop_box[1], x1 * fx - crop_box[0], y1 * fy - crop_box[1])
    informative = tuple(bool(start <= int(i) < end) for i in frame_indices)
    return ViewTruth(informative, region, meta.get("label_name"))


# ------------------------------------------------------------------------------------------- layout


def tile_size(crop: int) -> int:
    """Side of a frame's tile: the crop upscaled by the smallest integer factor reaching `TILE_MIN`."""
    return crop * max(1, math.ceil(TILE_MIN / crop))


def canvas_size(num_frames: int, crop: int, per_row: int = PER_ROW) -> tuple[int, int]:
    """(width, height) of the PNG for a clip of ``num_frames`` frames of ``crop``² pixels."""
    tile = tile_size(crop)
    cols = min(per_row, num_frames)
    rows = math.ceil(num_frames / per_row)
    width = 2 * MARGIN + cols * tile + (cols - 1) * GAP
    height = 2 * MARGIN + HEADER + rows * (tile + CAPTION) + (rows - 1) * GAP
    return width, height


def tile_origin(index: int, num_frames: int, crop: int, per_row: int = PER_ROW) -> tuple[int, int]:
    """Top-left pixel of frame ``index``'s tile."""
    tile = tile_size(crop)
    row, col = divmod(index, per_row)
    return MARGIN + col * (tile + GAP), MARGIN + HEADER + row * (tile + CAPTION + GAP)


def _font(size: int = FONT_SIZE):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # no FreeType: the bitmap font
        return ImageFont.load_default()


def _dashed_rect(draw, box, color, dash: int = 6, width: int = 1) -> None:
    x0, y0, x1, y1 = box
    for a, b, fixed, horizontal in ((x0, x1, y0, True), (x0, x1, y1, True), (y0, y1, x0, False),
                                    (y0, y1, x1, False)):  # fmt: skip
        pos = a
        while pos < b:
            end = min(pos + dash, b)
            if horizontal:
                draw.line([(pos, fixed), (end, fixed)], fill=color, width=width)
            else:
                draw.line([(fixed, pos), (fixed, end)], fill=color, width=width)
            pos += 2 * dash


def _tick(draw, x: int, y: int, color, size: int = 12) -> None:
    """A check mark with its top-left corner at (x, y)."""
    draw.line([(x, y + size * 0.55), (x + size * 0.38, y + size * 0.9), (x + size, y + size * 0.1)],
              fill=color, width=3, joint="curve")  # fmt: skip


def draw_selection(
    pixels: np.ndarray,
    sel: ClipSelection,
    *,
    title: str,
    frame_indices: Sequence[int] | None = None,
    truth: ViewTruth | None = None,
    per_row: int = PER_ROW,
):
    """The picture (a PIL RGB image of `canvas_size`) of one view: ``pixels`` uint8 ``(T, crop, crop, 3)``
    as the model saw them, ``sel`` what it kept, ``frame_indices`` each clip frame's index in the video
    (captions), ``truth`` the ground truth if any."""
    from PIL import Image, ImageDraw

    t, crop = pixels.shape[0], pixels.shape[1]
    if pixels.shape[1:] != (crop, crop, 3) or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8 (T, crop, crop, 3), got {pixels.dtype} {pixels.shape}")
    if (sel.num_frames, sel.crop_size) != (t, crop):
        raise ValueError(f"selection is for {sel.num_frames}x{sel.crop_size}², pixels are {t}x{crop}²")
    tile = tile_size(crop)
    scale = tile // crop
    canvas = Image.new("RGB", canvas_size(t, crop, per_row), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font, small = _font(TITLE_SIZE), _font(FONT_SIZE - 1)
    kept = set(sel.kept_frames)

    draw.text((MARGIN, MARGIN), title, fill=TEXT, font=font)
    legend = []
    if sel.temporal:
        legend.append(f"blue frame: kept by temporal selection, dimmed: dropped ({len(kept)} of {t} kept)")
    if sel.spatial:
        legend.append("yellow box: window kept by spatial selection")
    if not legend:
        legend.append("this model selects nothing: every frame and pixel is kept")
    if truth is not None:
        legend.append("green dashes / tick: ground-truth region / informative frame")
    draw.text((MARGIN, MARGIN + LINE), "   ·   ".join(legend), fill=MUTED, font=small)

    for f in range(t):
        x, y = tile_origin(f, t, crop, per_row)
        img = pixels[f]
        dropped = sel.temporal and f not in kept
        if dropped:
            veil = np.asarray(VEIL, np.float32)
            img = img.astype(np.float32) * DIM * (1 - VEIL_ALPHA) + veil * VEIL_ALPHA
            img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        canvas.paste(Image.fromarray(img).resize((tile, tile), Image.NEAREST), (x, y))
        if sel.temporal and not dropped:  # a frame around kept tiles, in the gap: the pixels stay as seen
            draw.rectangle((x - 3, y - 3, x + tile + 2, y + tile + 2), outline=KEPT_TEXT, width=2)
        if truth is not None and truth.region is not None and truth.informative[f]:
            rx0, ry0, rx1, ry1 = (v * scale for v in truth.region)
            box = (x + max(rx0, 0), y + max(ry0, 0), x + min(rx1, tile) - 1, y + min(ry1, tile) - 1)
            if box[0] < box[2] and box[1] < box[3]:
                _dashed_rect(draw, box, TRUTH, width=2)
        if f in sel.boxes:
            bx0, by0, bx1, by1 = (v * scale for v in sel.boxes[f])
            outer = (x + bx0 - 1, y + by0 - 1, x + bx1, y + by1)  # the dark edge may overhang the tile
            draw.rectangle(outer, outline=WINDOW_EDGE, width=1)
            draw.rectangle((x + bx0, y + by0, x + bx1 - 1, y + by1 - 1), outline=KEPT_WINDOW, width=OUTLINE)

        # caption
        cy = y + tile + 4
        where = f"#{f}" + (f" · frame {int(frame_indices[f])}" if frame_indices is not None else "")
        draw.text((x, cy), where, fill=TEXT, font=small)
        score = sel.frame_scores[f] if f < len(sel.frame_scores) else None
        if sel.temporal:
            status, colour = ("dropped", DROPPED_TEXT) if dropped else ("kept", KEPT_TEXT)
            text = ("score —" if score is None else f"score {score:.2f}") + f"  {status}"
            draw.text((x, cy + LINE), text, fill=colour, font=small)
        if f in sel.box_scores and sel.box_scores[f] is not None:
            draw.text((x, cy + 2 * LINE), f"window {sel.box_scores[f]:.2f}", fill=KEPT_WINDOW, font=small)
        if truth is not None and truth.informative[f]:
            _tick(draw, x + tile - 16, cy + 2, TRUTH)
    return canvas
