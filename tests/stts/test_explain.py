"""`stts.explain`: what the selectors kept, mapped to input frames and crop pixels, with forced scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipelines.sampling import MVIT_CLIP, SWIN_CLIP
from stts.explain import ViewGeometry, box_centre, explain, slice_hit_fraction, view_geometry
from stts.registry import build_model, input_shape


class FixedScores(nn.Module):
    """Stands in for a selector's scorer: returns given raw scores, whatever the features."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores.to(x.dtype).expand(x.shape[0], -1) if self.scores.dim() == 1 else self.scores


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _run(model, batch=2):
    model.eval()
    with torch.inference_mode():
        model(torch.randn(input_shape(model, batch)))
    return explain(model)


def test_mvit_debug_forced_frames_and_window():
    model = build_model("mvit_debug_t0.5_s0.5", num_classes=3)
    time_sel, space_sel = model.selectors()
    assert (time_sel.k, space_sel.anchor) == (2, 5)  # 2 of 4 slices; 5x5 windows on the 8x8 grid
    # slices 1 and 3 win → input frames 2,3 and 6,7 (temporal patch stride 2)
    time_sel.score_network = FixedScores(torch.tensor([0.0, 3.0, 1.0, 2.0]))
    # token scores high in rows 3..7, columns 2..6 of the 8x8 grid → window (top 3, left 2), number 3*4+2
    tokens = torch.zeros(8, 8)
    tokens[3:, 2:7] = 1.0
    space_sel.score_network = FixedScores(tokens.flatten())
    out = _run(model)
    assert len(out) == 2
    for sel in out:
        assert sel.kept_frames == (2, 3, 6, 7)
        assert sel.kept_slices == (1, 3) and sel.num_slices == 4 and sel.frames_per_slice == 2
        assert sel.frame_scores[2] == pytest.approx(1.0, abs=1e-4)
        assert sel.frame_scores[0] == sel.frame_scores[1] == pytest.approx(0.0)
        assert sel.frame_scores[4] == pytest.approx(1 / 3, abs=1e-4)
        # cells 8 px apart (patch stride 4 x q stride 2): columns 2..6 → x 16..56, rows 3..7 → y 24..64
        assert sel.boxes == {f: (16, 24, 56, 64) for f in (2, 3, 6, 7)}
        assert len(sel.candidate_boxes[2]) == 16 and sel.candidate_boxes[2][0] == (0, 0, 40, 40)
        assert sel.candidate_boxes[2][14] == sel.boxes[2]
        assert sel.box_scores[6] == pytest.approx(1.0, abs=1e-4)
        assert sel.temporal and sel.spatial


def test_mvit_random_strategy_has_no_scores_and_valid_frames():
    model = build_model("mvit_debug_t0.5_s0.5", num_classes=3, strategy="random")
    out = _run(model, batch=3)
    for sel in out:
        assert len(sel.kept_frames) == 4 and all(s is None for s in sel.frame_scores)
        assert sel.temporal_strategy == "random"
        assert set(sel.boxes) == set(sel.kept_frames)
        assert all(b in sel.candidate_boxes[f] for f, b in sel.boxes.items())


def test_swin_debug_temporal_only():
    model = build_model("swin_debug_t0.5", num_classes=3)
    (time_sel,) = model.selectors()
    time_sel.score_network = FixedScores(torch.tensor([5.0, 4.0, 0.0, 1.0]))
    out = _run(model)
    assert out[0].kept_frames == (0, 1, 2, 3) and out[0].kept_slices == (0, 1)
    assert out[0].boxes == {} and not out[0].spatial and out[0].crop_size == 56


def test_swin_spatial_extension_boxes_compose():
    # spatial at stage 0 (14x14 grid, 4 px cells; a = 9, stride 2: 3x3 windows) and stage 1 (the kept
    # 9x9 merged to 5x5, 8 px cells from the first window's corner; a = 3, stride 1)
    model = build_model("swin_debug", num_classes=3, space_pruning_loc=(0, 1), space_left_ratio=0.5)
    first, second = model.selectors()
    assert first.anchor == 9 and second.anchor == 3
    tokens = torch.zeros(14, 14)
    tokens[4:, 4:] = 1.0  # window (top 4, left 4): pixels 16..52
    first.score_network = FixedScores(tokens.flatten())
    second.score_network = FixedScores(torch.linspace(1, 0, 25))  # top-left window wins
    out = _run(model, batch=1)[0]
    assert out.kept_frames == tuple(range(8)) and out.kept_slices is None
    assert out.boxes == {f: (16, 16, 40, 40) for f in range(8)}
    assert out.candidate_boxes[0][-1] == (32, 32, 56, 56)


def test_model_without_selectors():
    model = build_model("mvit_debug", num_classes=3)
    model.eval()
    with pytest.raises(ValueError, match="batch_size"):
        explain(model)
    out = explain(model, batch_size=2)
    assert len(out) == 2 and out[0].kept_frames == tuple(range(8)) and not out[0].temporal


def test_explain_before_forward_says_so():
    with pytest.raises(ValueError, match="right after model"):
        explain(build_model("swin_debug_t0.5", num_classes=3))


def test_view_geometry_maps_crop_pixels_to_the_frame():
    # MViT: 320x240 → short side 256: 341x256, centre crop 224 at x ceil(117/2) = 59, y 16
    geo = view_geometry(320, 240, MVIT_CLIP)
    assert geo.resized == (341, 256) and geo.crop_box == (59, 16, 283, 240)
    x, y = geo.to_frame_point(0, 0)
    assert x == pytest.approx(59 * 320 / 341) and y == pytest.approx(16 * 240 / 256)
    # Swin 3 crops of 340x256 → 298x224: left 0, right 2*37, middle 37
    assert view_geometry(340, 256, SWIN_CLIP, 1).crop_box == (74, 0, 298, 224)
    small = ViewGeometry(frame=(64, 64), resized=(64, 64), crop_box=(0, 0, 64, 64))
    assert small.to_frame_box((16, 24, 56, 64)) == (16, 24, 56, 64)
    assert box_centre((16, 24, 56, 64)) == (36, 44)
    with pytest.raises(ValueError, match="crop_index"):
        view_geometry(320, 240, MVIT_CLIP, 1)


def test_slice_hit_fraction():
    assert slice_hit_fraction(2, 8, [False] * 4 + [True] * 4) == 0.5
    assert slice_hit_fraction(2, 6, [True, False, True, True, False, False]) == pytest.approx(0.5)
