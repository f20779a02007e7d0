"""Embedded synthetic video-classification dataset, built to test spatial-temporal token selection.

Every clip shows a few grey shapes drifting over a static, dimly textured background. Inside one short
window of frames (``informative_frames`` long, at a random position per video) and inside one cell of a
``grid x grid`` split of the frame (chosen at random per video), a single *event* object appears: a
shape painted in a fully saturated colour that travels in a straight line across the cell. The class is
``shape x direction`` ("circle moving left"); nothing else in the clip depends on it.

``cue="color"`` makes the event's hue the class instead (class i has hue i / num_classes; shape and
direction are drawn at random): recognising the class is then easy once the event is seen, so what a
small model achieves depends on *finding* the informative frames and cell — the variant the CPU demo
uses, where a debug-size model trains in minutes (with ``shape_motion`` it needs far longer).

Why this exercises STTS:

* Temporal selection. The class exists only in the informative frames, and a single one of them is not
  enough: the shape is visible in one frame, but the direction needs at least two (start positions are
  randomised so that, over a whole window, where the object sits says nothing about where it goes).
  A selector that keeps k of T frames must find the window; a random choice of k frames mostly misses it.
* Spatial selection. The event never leaves its grid cell, so a window of about one cell (half the side
  of the frame with the default 2x2 grid) around it holds all the evidence, while every other cell holds
  only distractors.
* Distractors carry no label information. They use the same shapes and sizes as events and also move
  (some along the four class directions), both everywhere in the frame and inside the event cell during
  the whole clip, but they are grey: their colour saturation (max - min over RGB) stays below
  ``DISTRACTOR_MAX_SATURATION`` while the event's is 255. Saturation is therefore the cue a light scorer
  can learn to find the informative frames and region, and shape/motion the cue the classifier needs.
* Stronger than "no information": every random draw is made in the same order whatever the label, so
  two samples that differ only in label are pixel-identical outside the event's own pixels.

Each sample's ground truth (label, informative frame range, region box, grid cell, per-frame object
boxes) is returned by `render`, so selectors can later be scored on whether they pick the right frames
and window.

Determinism: each sample draws from its own ``numpy.random.Generator`` seeded by
``SeedSequence(cfg.seed, spawn_key=(purpose, split, index))``; nothing reads global random state or
Python's (salted) string hashes, so the same config gives bit-identical frames in any process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.encode import CODECS, extension_for, write_video

SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
# name -> unit (dx, dy) in image coordinates (y grows downwards)
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# Direction varies fastest so that even the smallest class sets need motion, i.e. several frames.
_COMBOS: tuple[tuple[str, str], ...] = tuple((s, d) for s in SHAPES for d in DIRECTIONS)
MAX_CLASSES = len(_COMBOS)

# Integer ids instead of hash(split): str hashes are salted per process.
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1}
_PURPOSE_PLAN = 0
_PURPOSE_RENDER = 1

CUES = ("shape_motion", "color")
# cue "color": hue names at 30° steps; class i takes the name nearest to its hue i / num_classes
COLOR_NAMES = (
    "red", "orange", "yellow", "chartreuse", "green", "spring green",
    "cyan", "azure", "blue", "violet", "magenta", "rose",
)  # fmt: skip

DISTRACTOR_MAX_SATURATION = 30
EVENT_SATURATION = 255
# Free-roaming distractors on top of one cell-bound distractor per grid cell.
_FREE_DISTRACTORS = (2, 4)
_MIN_CELL = 16


@dataclass(frozen=True)
class SyntheticConfig:
    num_classes: int = 8
    train_per_class: int = 32
    val_per_class: int = 8
    frames: int = 32
    size: int = 112
    fps: float = 30.0
    codec: str = "vp9"
    seed: int = 0
    informative_frames: int = 8
    grid: int = 2
    cue: str = "shape_motion"  # what decides the class: "shape_motion" or "color" (the event's hue)
    object_size: float = 0.14  # radius of the event (and distractors) as a fraction of a grid cell's side

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"SyntheticConfig: {msg}")

        for field in dataclasses.fields(self):
            if field.type == "int":
                value = getattr(self, field.name)
                is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                need(is_int, f"{field.name} must be an int, got {value!r}")
        need(
            2 <= self.num_classes <= MAX_CLASSES,
            f"num_classes must be in [2, {MAX_CLASSES}] (shapes x directions), got {self.num_classes}",
        )
        need(self.train_per_class >= 0 and self.val_per_class >= 0, "videos per class must be >= 0")
        need(self.frames >= 2, f"frames must be >= 2, got {self.frames}")
        need(self.size >= 32 and self.size % 2 == 0, f"size must be even and >= 32, got {self.size}")
        need(self.fps > 0, f"fps must be > 0, got {self.fps}")
        need(self.codec in CODECS, f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        need(0.05 <= self.object_size <= 0.3, f"object_size must be in [0.05, 0.3], got {self.object_size}")
        need(self.cue in CUES, f"cue must be one of {', '.join(CUES)}, got {self.cue!r}")
        if self.cue == "color":
            need(
                self.num_classes <= len(COLOR_NAMES),
                f"cue 'color' has at most {len(COLOR_NAMES)} classes, got {self.num_classes}",
            )
        need(
            2 <= self.informative_frames <= self.frames,
            f"informative_frames must be in [2, frames={self.frames}], got {self.informative_frames}",
        )
        need(
            self.grid >= 1 and self.size // self.grid >= _MIN_CELL,
            f"grid must be >= 1 with cells of at least {_MIN_CELL} px, got grid={self.grid} for size={self.size}",
        )

    def splits(self) -> dict[str, int]:
        return {"train": self.train_per_class, "val": self.val_per_class}


@dataclass(frozen=True)
class SyntheticSample:
    key: str
    split: str
    index: int
    label: int


def _hue(cfg: SyntheticConfig, label: int) -> float:
    """cue "color": class i has hue i / num_classes (evenly spaced around the colour wheel)."""
    return label / cfg.num_classes


def _color_name(cfg: SyntheticConfig, label: int) -> str:
    return COLOR_NAMES[round(_hue(cfg, label) * len(COLOR_NAMES)) % len(COLOR_NAMES)]


def _combos(cfg: SyntheticConfig) -> list[tuple[str, str]]:
    """(shape, direction) per class id: the first num_classes combos, ordered by their names."""
    return sorted(_COMBOS[: cfg.num_classes], key=lambda c: _name(*c))


def _name(shape: str, direction: str) -> str:
    return f"{shape} moving {direction}"


def class_names(cfg: SyntheticConfig) -> list[str]:
    if cfg.cue == "color":
        return [f"{_color_name(cfg, i)} object" for i in range(cfg.num_classes)]
    return [_name(*c) for c in _combos(cfg)]


def extension(cfg: SyntheticConfig) -> str:
    return extension_for(cfg.codec)


def _rng(cfg: SyntheticConfig, purpose: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_IDS)}")
    seq = np.random.SeedSequence(int(cfg.seed), spawn_key=(purpose, SPLIT_IDS[split], int(index)))
    return np.random.default_rng(seq)


def plan(cfg: SyntheticConfig, split: str) -> list[SyntheticSample]:
    """The samples of `split`: per_class of every class, labels shuffled so that any shard mixes classes."""
    per_class = cfg.splits().get(split)
    if per_class is None:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(cfg.splits())}")
    labels = np.repeat(np.arange(cfg.num_classes), per_class)
    labels = _rng(cfg, _PURPOSE_PLAN, split, 0).permutation(labels)
    return [
        SyntheticSample(key=f"synthetic_{split}_{i:06d}", split=split, index=i, label=int(label))
        for i, label in enumerate(labels)
    ]


# --- drawing -------------------------------------------------------------------------------------------


def _shape_masks(shape: str, cx: np.ndarray, cy: np.ndarray, r: float, size: int) -> np.ndarray:
    """Boolean (T, size, size) masks of `shape` with half-size r centred at (cx[t], cy[t])."""
    coords = np.arange(size, dtype=np.float32)
    dx = coords[None, None, :] - np.asarray(cx, np.float32)[:, None, None]
    dy = coords[None, :, None] - np.asarray(cy, np.float32)[:, None, None]
    adx, ady = np.abs(dx), np.abs(dy)
    if shape == "square":
        # Shrunk so that its area is close to the circle's: size must not give the shape away.
        return (adx <= 0.9 * r) & (ady <= 0.9 * r)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "triangle":
        return (ady <= r) & (adx <= (dy + r) / 2)
    if shape == "cross":
        arm = r / 2.5
        return ((adx <= arm) & (ady <= r)) | ((ady <= arm) & (adx <= r))
    raise ValueError(f"unknown shape {shape!r}")


def _bounce(start: np.ndarray, step: np.ndarray, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions of a point moving at constant speed and reflecting off [lo, hi] (a triangle wave)."""
    span = hi - lo
    q = np.mod(start - lo + step * t, 2 * span)
    return lo + span - np.abs(q - span)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static grey (zero-saturation) low-frequency texture, so that 'not background' is no cue itself."""
    coarse = rng.uniform(-1.0, 1.0, size=(5, 5))
    pos = np.linspace(0, coarse.shape[0] - 1, size)
    i0 = np.minimum(pos.astype(int), coarse.shape[0] - 2)
    f = pos - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    smooth = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
    base = rng.uniform(35.0, 75.0)
    grey = np.clip(np.rint(base + 20.0 * smooth), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _saturated_color(hue: float) -> np.ndarray:
    """RGB of a fully saturated, full-value hue in [0, 1): one channel 255, one channel 0."""
    h6 = 6.0 * hue
    rgb = np.clip([abs(h6 - 3) - 1, 2 - abs(h6 - 2), 2 - abs(h6 - 4)], 0.0, 1.0)
    return np.rint(rgb * 255).astype(np.uint8)


def _grey_color(rng: np.random.Generator) -> np.ndarray:
    level = rng.uniform(95.0, 215.0)
    tint = rng.uniform(-DISTRACTOR_MAX_SATURATION / 2, DISTRACTOR_MAX_SATURATION / 2, size=3)
    return np.clip(np.rint(level + tint), 0, 255).astype(np.uint8)


def _cell_box(cfg: SyntheticConfig, row: int, col: int) -> tuple[int, int, int, int]:
    edges = [round(i * cfg.size / cfg.grid) for i in range(cfg.grid + 1)]
    return edges[col], edges[row], edges[col + 1], edges[row + 1]


def _box(mask: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1] (exclusive ends) of a 2-D mask's true pixels."""
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]


def render(cfg: SyntheticConfig, sample: SyntheticSample) -> tuple[np.ndarray, dict]:
    """Frames (T, size, size, 3) uint8 RGB and the JSON-serialisable ground truth of `sample`."""
    if not 0 <= sample.label < cfg.num_classes:
        raise ValueError(f"label {sample.label} out of range for {cfg.num_classes} classes")
    shape, direction = _combos(cfg)[sample.label] if cfg.cue == "shape_motion" else ("", "")
    rng = _rng(cfg, _PURPOSE_RENDER, sample.split, sample.index)
    # Every draw below happens in a fixed order and count whatever the label, so that the label changes
    # nothing but the event's own pixels.
    T, S, n = cfg.frames, cfg.size, cfg.informative_frames
    start = int(rng.integers(0, T - n + 1))
    row, col = (int(v) for v in rng.integers(0, cfg.grid, size=2))
    x0, y0, x1, y1 = _cell_box(cfg, row, col)
    cell = min(x1 - x0, y1 - y0)
    r = max(2.0, cfg.object_size * cell)
    # Centres in [lo, hi] keep every pixel of the shape (|d| <= r) at least one pixel inside the cell.
    lo_x, hi_x, lo_y, hi_y = x0 + r + 1, x1 - 2 - r, y0 + r + 1, y1 - 2 - r
    travel = min(0.5 * cell, hi_x - lo_x, hi_y - lo_y)
    speed = travel / (n - 1)
    frames = np.empty((T, S, S, 3), np.uint8)
    frames[:] = _background(rng, S)

    t = np.arange(T, dtype=np.float64)
    num_free = int(rng.integers(_FREE_DISTRACTORS[0], _FREE_DISTRACTORS[1] + 1))
    # One distractor confined to each cell keeps every cell, the event's included, busy in every frame.
    bounds = [_cell_box(cfg, i, j) for i in range(cfg.grid) for j in range(cfg.grid)]
    bounds += [(0, 0, S, S)] * num_free
    for bx0, by0, bx1, by1 in bounds:
        d_shape = SHAPES[int(rng.integers(len(SHAPES)))]
        d_r = r * rng.uniform(0.8, 1.25)
        d_speed = speed * rng.uniform(0.6, 1.4)
        # Half move along a class direction, so "shape moving left" also happens in grey.
        angle = rng.choice([0.0, 0.5, 1.0, 1.5]) * np.pi if rng.random() < 0.5 else rng.uniform(0, 2 * np.pi)
        u = rng.random(2)
        dlo_x, dhi_x = bx0 + d_r, bx1 - 1 - d_r
        dlo_y, dhi_y = by0 + d_r, by1 - 1 - d_r
        cx = _bounce(dlo_x + u[0] * (dhi_x - dlo_x), d_speed * np.cos(angle), t, dlo_x, dhi_x)
        cy = _bounce(dlo_y + u[1] * (dhi_y - dlo_y), d_speed * np.sin(angle), t, dlo_y, dhi_y)
        frames[_shape_masks(d_shape, cx, cy, d_r, S)] = _grey_color(rng)

    hue = float(rng.random())
    if cfg.cue == "color":  # the hue is the class; shape and direction are drawn, in the same order
        hue = _hue(cfg, sample.label)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        direction = tuple(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
    color = _saturated_color(hue)
    u_along, u_across = rng.random(2)
    dx, dy = DIRECTIONS[direction]
    j = np.arange(n, dtype=np.float64)

    def along(lo: float, hi: float, sign: int) -> np.ndarray:
        # Mirrored start ranges for opposite directions: one frame's position says nothing of the direction.
        slack = (hi - lo - travel) * u_along
        return lo + slack + speed * j if sign > 0 else hi - slack - speed * j

    cx = along(lo_x, hi_x, dx) if dx else np.full(n, lo_x + u_across * (hi_x - lo_x))
    cy = along(lo_y, hi_y, dy) if dy else np.full(n, lo_y + u_across * (hi_y - lo_y))
    masks = _shape_masks(shape, cx, cy, r, S)
    # Drawn last: distractors never hide the event, so the ground truth is exactly what is visible.
    frames[start : start + n][masks] = color

    truth = {
        "key": sample.key,
        "split": sample.split,
        "index": int(sample.index),
        "label": int(sample.label),
        "label_name": class_names(cfg)[sample.label],
        "cue": cfg.cue,
        "shape": shape,
        "direction": direction,
        "informative_frames": [start, start + n],
        "region": [x0, y0, x1, y1],
        "grid_cell": [row, col],
        "grid": int(cfg.grid),
        "object_boxes": [_box(m) for m in masks],
        "color": [int(c) for c in color],
        "frames": int(T),
        "size": int(S),
    }
    return frames, truth


def generate_file(cfg: SyntheticConfig, sample: SyntheticSample, path: str | Path) -> dict:
    """Render `sample` and encode it to `path` (see `extension`); returns its ground truth."""
    frames, truth = render(cfg, sample)
    write_video(path, frames, codec=cfg.codec, fps=cfg.fps)
    return truth
