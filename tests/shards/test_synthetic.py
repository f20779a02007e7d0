"""The synthetic dataset: determinism, balance, ground truth, and that the class cue sits only in the
informative frames inside the region box (which is what makes it a test of spatial-temporal selection)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from shards.encode import CODECS, extension_for
from shards.synthetic import (
    DISTRACTOR_MAX_SATURATION,
    MAX_CLASSES,
    SyntheticConfig,
    SyntheticSample,
    class_names,
    extension,
    generate_file,
    plan,
    render,
)

REPO = Path(__file__).resolve().parents[2]
# Small enough that a whole render takes a few milliseconds.
SMALL = SyntheticConfig(
    num_classes=8, train_per_class=3, val_per_class=2, frames=16, size=64, informative_frames=4
)


def saturation(frames: np.ndarray) -> np.ndarray:
    return frames.max(axis=-1).astype(np.int16) - frames.min(axis=-1)


def some_samples(cfg: SyntheticConfig, n: int = 8) -> list[SyntheticSample]:
    return (plan(cfg, "train") + plan(cfg, "val"))[:n]


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_defaults_are_valid_and_splits():
    cfg = SyntheticConfig()
    assert cfg.splits() == {"train": 32, "val": 8}
    assert cfg.codec in CODECS
    assert extension(cfg) == extension_for(cfg.codec) == "webm"


@pytest.mark.parametrize("n", [2, 8, MAX_CLASSES])
def test_class_names_sorted_unique(n):
    names = class_names(dataclasses.replace(SMALL, num_classes=n))
    assert len(names) == n
    assert names == sorted(names)
    assert len(set(names)) == n
    assert all(" moving " in name for name in names)


def test_two_classes_differ_only_in_direction():
    # The smallest class set must still need motion (several frames), not just one frame's shape.
    names = class_names(dataclasses.replace(SMALL, num_classes=2))
    assert {name.split(" moving ")[0] for name in names} == {"square"}


@pytest.mark.parametrize(
    "bad",
    [
        {"num_classes": 1},
        {"num_classes": MAX_CLASSES + 1},
        {"train_per_class": -1},
        {"val_per_class": -1},
        {"frames": 1},
        {"size": 30},
        {"size": 65},
        {"fps": 0},
        {"codec": "av1x"},
        {"seed": -1},
        {"informative_frames": 1},
        {"informative_frames": 17},
        {"grid": 0},
        {"grid": 5},
        {"num_classes": 2.0},
    ],
)
def test_invalid_configs_raise(bad):
    with pytest.raises(ValueError):
        dataclasses.replace(SMALL, **bad)


def test_plan_balanced_deterministic_unique():
    cfg = SMALL
    samples = {split: plan(cfg, split) for split in cfg.splits()}
    for split, per_class in cfg.splits().items():
        counts = Counter(s.label for s in samples[split])
        assert counts == {label: per_class for label in range(cfg.num_classes)}
        assert [s.index for s in samples[split]] == list(range(per_class * cfg.num_classes))
        assert all(s.split == split for s in samples[split])
        assert plan(cfg, split) == samples[split]
    keys = [s.key for split_samples in samples.values() for s in split_samples]
    assert len(keys) == len(set(keys))
    assert not any("." in key for key in keys)
    # Shuffled: a shard of consecutive samples mixes classes.
    assert [s.label for s in samples["train"]] != sorted(s.label for s in samples["train"])
    assert plan(dataclasses.replace(cfg, seed=1), "train") != samples["train"]


def test_unknown_split_or_label():
    with pytest.raises(ValueError):
        plan(SMALL, "test")
    with pytest.raises(ValueError):
        render(SMALL, SyntheticSample(key="synthetic_test_000000", split="test", index=0, label=0))
    with pytest.raises(ValueError):
        render(SMALL, SyntheticSample(key="synthetic_train_000000", split="train", index=0, label=8))


def test_render_deterministic_and_seed_dependent():
    sample = plan(SMALL, "train")[0]
    frames1, truth1 = render(SMALL, sample)
    frames2, truth2 = render(SMALL, sample)
    assert frames1.dtype == np.uint8
    assert frames1.shape == (SMALL.frames, SMALL.size, SMALL.size, 3)
    np.testing.assert_array_equal(frames1, frames2)
    assert truth1 == truth2
    other = render(SMALL, dataclasses.replace(sample, index=1))[0]
    assert not np.array_equal(frames1, other)
    reseeded = render(dataclasses.replace(SMALL, seed=7), sample)[0]
    assert not np.array_equal(frames1, reseeded)


def test_render_identical_in_another_process():
    sample = plan(SMALL, "val")[1]
    frames, _ = render(SMALL, sample)
    code = (
        "import dataclasses, hashlib, sys\n"
        "from shards.synthetic import SyntheticConfig, SyntheticSample, render\n"
        f"cfg = SyntheticConfig(**{dataclasses.asdict(SMALL)!r})\n"
        f"frames, _ = render(cfg, SyntheticSample(**{dataclasses.asdict(sample)!r}))\n"
        "sys.stdout.write(hashlib.sha256(frames.tobytes()).hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout == hashlib.sha256(frames.tobytes()).hexdigest()


@pytest.mark.parametrize("grid", [1, 2, 3])
def test_ground_truth_in_bounds(grid):
    cfg = dataclasses.replace(SMALL, size=96, grid=grid)
    names = class_names(cfg)
    cells = set()
    for sample in some_samples(cfg, 12):
        _, truth = render(cfg, sample)
        assert json.loads(json.dumps(truth)) == truth
        assert truth["label"] == sample.label
        assert truth["label_name"] == names[sample.label]
        start, end = truth["informative_frames"]
        assert 0 <= start < end <= cfg.frames
        assert end - start == cfg.informative_frames
        row, col = truth["grid_cell"]
        assert 0 <= row < grid and 0 <= col < grid
        assert truth["grid"] == grid
        x0, y0, x1, y1 = truth["region"]
        assert 0 <= x0 < x1 <= cfg.size and 0 <= y0 < y1 <= cfg.size
        # The region is the grid cell itself (cells tile the frame).
        assert (x0, y0) == (round(col * cfg.size / grid), round(row * cfg.size / grid))
        assert (x1, y1) == (round((col + 1) * cfg.size / grid), round((row + 1) * cfg.size / grid))
        assert len(truth["object_boxes"]) == cfg.informative_frames
        for bx0, by0, bx1, by1 in truth["object_boxes"]:
            assert x0 <= bx0 < bx1 <= x1 and y0 <= by0 < by1 <= y1
        cells.add((row, col))
    if grid > 1:
        assert len(cells) > 1


@pytest.mark.parametrize("cfg", [SMALL, SyntheticConfig(train_per_class=1, val_per_class=1)])
def test_cue_only_in_region_and_informative_frames(cfg):
    for sample in some_samples(cfg):
        frames, truth = render(cfg, sample)
        sat = saturation(frames)
        cue = sat > 2 * DISTRACTOR_MAX_SATURATION
        start, end = truth["informative_frames"]
        x0, y0, x1, y1 = truth["region"]
        outside = cue.copy()
        outside[start:end, y0:y1, x0:x1] = False
        assert not outside.any()
        # Nothing is even mildly saturated outside the event: distractors and background stay grey.
        assert sat[:start].max(initial=0) <= DISTRACTOR_MAX_SATURATION
        assert sat[end:].max(initial=0) <= DISTRACTOR_MAX_SATURATION
        for t, (bx0, by0, bx1, by1) in zip(range(start, end), truth["object_boxes"], strict=True):
            box = np.zeros(cue.shape[1:], bool)
            box[by0:by1, bx0:bx1] = True
            assert cue[t].sum() >= 4
            assert not (cue[t] & ~box).any()
            assert (frames[t][cue[t]] == truth["color"]).all()


def test_label_changes_only_event_pixels():
    # Stronger than "the class is not in the other frames": they are bit-identical whatever the label.
    cfg = SMALL
    for sample in some_samples(cfg, 4):
        base, truth = render(cfg, sample)
        start, end = truth["informative_frames"]
        x0, y0, x1, y1 = truth["region"]
        for label in range(cfg.num_classes):
            frames, other = render(cfg, dataclasses.replace(sample, label=label))
            changed = (frames != base).any(axis=-1)
            assert not changed[:start].any() and not changed[end:].any()
            assert not changed[:, :y0].any() and not changed[:, y1:].any()
            assert not changed[:, :, :x0].any() and not changed[:, :, x1:].any()
            assert (other["informative_frames"], other["region"]) == (
                truth["informative_frames"],
                truth["region"],
            )


def test_region_has_distractors_outside_the_window():
    # The region must not be findable as "where something starts moving": it is busy in every frame.
    for sample in some_samples(SMALL):
        frames, truth = render(SMALL, sample)
        x0, y0, x1, y1 = truth["region"]
        cell = frames[:, y0:y1, x0:x1].astype(np.int16)
        moving = (np.abs(np.diff(cell, axis=0)).sum(axis=-1) > 0).any(axis=(1, 2))
        # A bounce can leave a shape in place for one step, so not quite every step.
        assert moving.mean() >= 0.75


def test_event_moves_in_labelled_direction():
    cfg = SMALL
    steps = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    seen = set()
    for sample in some_samples(cfg, 16):
        frames, truth = render(cfg, sample)
        start, end = truth["informative_frames"]
        centres = []
        for t in range(start, end):
            ys, xs = np.nonzero(saturation(frames[t]) > 2 * DISTRACTOR_MAX_SATURATION)
            centres.append((xs.mean(), ys.mean()))
        motion = np.diff(np.array(centres), axis=0)
        dx, dy = steps[truth["direction"]]
        along = motion @ np.array([dx, dy])
        across = motion @ np.array([dy, dx])
        assert (along >= 1).all()
        np.testing.assert_allclose(across, 0, atol=0.75)
        seen.add(truth["direction"])
    assert seen == set(steps)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_generate_file_decodes_and_is_byte_identical(tmp_path, codec):
    cfg = dataclasses.replace(SMALL, codec=codec, size=48, frames=8, informative_frames=3)
    sample = plan(cfg, "val")[3]
    first = tmp_path / f"a.{extension(cfg)}"
    second = tmp_path / f"b.{extension(cfg)}"
    truth = generate_file(cfg, sample, first)
    assert generate_file(cfg, sample, second) == truth == render(cfg, sample)[1]
    assert first.read_bytes() == second.read_bytes()

    decoded = decode(first)
    assert decoded.shape == (cfg.frames, cfg.size, cfg.size, 3)
    # The cue survives lossy coding: the informative frames are the most saturated ones, and their most
    # saturated pixel lies in the region.
    sat = saturation(decoded)
    start, end = truth["informative_frames"]
    per_frame = sat.reshape(cfg.frames, -1).max(axis=1)
    assert set(np.argsort(per_frame)[-cfg.informative_frames :]) == set(range(start, end))
    x0, y0, x1, y1 = truth["region"]
    for t in range(start, end):
        y, x = np.unravel_index(np.argmax(sat[t]), sat[t].shape)
        assert x0 <= x < x1 and y0 <= y < y1
        assert sat[t].max() > 160


COLOR = dataclasses.replace(SMALL, num_classes=4, cue="color", object_size=0.3)


def test_color_cue_class_names_and_hues():
    assert class_names(COLOR) == ["red object", "chartreuse object", "cyan object", "violet object"]
    assert len(set(class_names(dataclasses.replace(COLOR, num_classes=12)))) == 12
    for sample in some_samples(COLOR):
        frames, truth = render(COLOR, sample)
        expected = {0: [255, 0, 0], 2: [0, 255, 255]}.get(sample.label)
        if expected is not None:
            assert truth["color"] == expected
        assert truth["cue"] == "color" and truth["label_name"] == class_names(COLOR)[sample.label]
        assert truth["shape"] in ("square", "circle", "triangle", "cross")


@pytest.mark.parametrize("cfg", [COLOR])
def test_color_cue_only_in_region_and_informative_frames(cfg):
    test_cue_only_in_region_and_informative_frames(cfg)


def test_color_cue_label_changes_only_event_pixels():
    for sample in some_samples(COLOR, 4):
        base, truth = render(COLOR, sample)
        start, end = truth["informative_frames"]
        for label in range(COLOR.num_classes):
            frames, other = render(COLOR, dataclasses.replace(sample, label=label))
            changed = (frames != base).any(axis=-1)
            assert not changed[:start].any() and not changed[end:].any()
            assert (other["shape"], other["direction"]) == (truth["shape"], truth["direction"])


def test_object_size_scales_the_event_and_defaults_are_unchanged():
    small, _ = render(SMALL, plan(SMALL, "train")[0])
    again, _ = render(dataclasses.replace(SMALL, object_size=0.14), plan(SMALL, "train")[0])
    assert np.array_equal(small, again)  # 0.14 is the default: old datasets render as before
    big_cfg = dataclasses.replace(SMALL, object_size=0.3)
    _, t_small = render(SMALL, plan(SMALL, "train")[0])
    _, t_big = render(big_cfg, plan(big_cfg, "train")[0])
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in (t_small["object_boxes"][0], t_big["object_boxes"][0])]
    assert area[1] > 3 * area[0]
    for bad in ({"cue": "sound"}, {"object_size": 0.5}, {"cue": "color", "num_classes": 13}):
        with pytest.raises(ValueError):
            dataclasses.replace(SMALL, **bad)
