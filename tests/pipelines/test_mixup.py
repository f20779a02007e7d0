"""MixUp/CutMix with label smoothing against spec §6.1 / §9.19 and pySlowFast's ``datasets/mixup.py``."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from pipelines.mixup import (
    MVIT_MIXUP,
    MixUp,
    MixupSpec,
    cutmix_box,
    mixup_targets,
    smoothed_one_hot,
    soft_cross_entropy,
)

C = 7
SPEC = dataclasses.replace(MVIT_MIXUP, num_classes=C)


def _batch(b: int = 4, t: int = 3, h: int = 12, w: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, 3, t, h, w, generator=g)
    labels = torch.randint(0, C, (b,), generator=g)
    return video, labels


def _fixed(module: MixUp, lam: float, box):
    module.sample_params = lambda h, w: (lam, box)  # type: ignore[method-assign]
    return module


def test_mvit_values():
    assert MixupSpec(0.8, 1.0, 1.0, 0.5, 0.1, 400) == MVIT_MIXUP


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mixup_alpha=-1.0),
        dict(mix_prob=1.5),
        dict(switch_prob=-0.1),
        dict(label_smoothing=1.0),
        dict(num_classes=0),
    ],
)
def test_spec_validation(kwargs):
    with pytest.raises(ValueError):
        dataclasses.replace(MVIT_MIXUP, **kwargs)


def test_label_smoothing_values():
    y = smoothed_one_hot(torch.tensor([0, 399]), 400, 0.1)
    off = 0.1 / 400
    assert y.dtype == torch.float32
    assert y[0, 0].item() == pytest.approx(1 - 0.1 + off)
    assert y[0, 1].item() == pytest.approx(off)
    assert y[1, 399].item() == pytest.approx(0.90025)
    torch.testing.assert_close(y.sum(1), torch.ones(2))


def test_targets_formula_fixed_lambda():
    labels = torch.tensor([1, 3, 3, 6, 0])
    lam, s = 0.3, 0.1
    t = mixup_targets(labels, C, lam, s)
    off, on = s / C, 1 - s + s / C
    expected = torch.full((5, C), off)
    for i in range(5):
        expected[i, labels[i]] += lam * (on - off)
        expected[i, labels[4 - i]] += (1 - lam) * (on - off)
    torch.testing.assert_close(t, expected)
    torch.testing.assert_close(t.sum(1), torch.ones(5))


def test_mixup_is_convex_combination_with_flipped_batch():
    video, labels = _batch()
    m = _fixed(MixUp(SPEC), 0.35, None)
    out, targets = m(video, labels)
    torch.testing.assert_close(out, 0.35 * video + 0.65 * video.flip(0))
    torch.testing.assert_close(targets, mixup_targets(labels, C, 0.35, 0.1))
    torch.testing.assert_close(targets.sum(1), torch.ones(4))


def test_cutmix_box_same_for_all_frames_and_lambda_is_area():
    video, labels = _batch(b=4, t=5, h=12, w=10)
    box, lam = cutmix_box(12, 10, 0.6, cy=3, cx=8)
    # cut_h = int(12 * sqrt(.4)) = 7, cut_w = int(10 * sqrt(.4)) = 6; half sizes 3 and 3; clipped at x = 10
    assert box == (0, 6, 5, 10)
    assert lam == pytest.approx(1 - 6 * 5 / 120)
    out, targets = _fixed(MixUp(SPEC), lam, box)(video, labels)
    inside = torch.zeros(12, 10, dtype=torch.bool)
    inside[0:6, 5:10] = True
    for i in range(4):
        for t in range(5):
            for c in range(3):
                torch.testing.assert_close(out[i, c, t][inside], video[3 - i, c, t][inside], rtol=0, atol=0)
                torch.testing.assert_close(out[i, c, t][~inside], video[i, c, t][~inside], rtol=0, atol=0)
    torch.testing.assert_close(targets, mixup_targets(labels, C, lam, 0.1))


def test_cutmix_box_geometry():
    # interior box: side 2 * (cut // 2) on each axis
    box, lam = cutmix_box(224, 224, 0.75, cy=112, cx=100)
    cut = int(224 * 0.5)
    assert box == (112 - cut // 2, 112 + cut // 2, 100 - cut // 2, 100 + cut // 2)
    assert lam == pytest.approx(0.75)
    # odd cut size loses a pixel
    box, lam = cutmix_box(10, 10, 1 - 0.49, cy=5, cx=5)  # cut = 7 -> half 3 -> side 6
    assert box == (2, 8, 2, 8) and lam == pytest.approx(1 - 36 / 100)
    # tiny box -> empty, lambda corrected back to 1
    box, lam = cutmix_box(10, 10, 0.999, cy=5, cx=5)
    assert lam == 1.0


def test_sampled_cutmix_lambda_matches_box_area():
    spec = dataclasses.replace(SPEC, mixup_alpha=0.0)
    m = MixUp(spec, generator=torch.Generator().manual_seed(3))
    for _ in range(50):
        lam, box = m.sample_params(16, 20)
        assert box is not None
        area = (box[1] - box[0]) * (box[3] - box[2])
        assert lam == pytest.approx(1 - area / 320)
        assert 0 <= box[0] <= box[1] <= 16 and 0 <= box[2] <= box[3] <= 20


def test_sampled_mode_frequencies_and_lambda_range():
    m = MixUp(SPEC, generator=torch.Generator().manual_seed(0))
    n = 2000
    cut = 0
    for _ in range(n):
        lam, box = m.sample_params(224, 224)
        assert 0.0 <= lam <= 1.0
        cut += box is not None
    assert abs(cut / n - 0.5) < 0.05  # switch_prob 0.5
    only_mixup = MixUp(
        dataclasses.replace(SPEC, cutmix_alpha=0.0), generator=torch.Generator().manual_seed(0)
    )
    assert all(only_mixup.sample_params(8, 8)[1] is None for _ in range(100))


def test_mix_prob_zero_is_identity_with_smoothed_targets():
    video, labels = _batch()
    m = MixUp(dataclasses.replace(SPEC, mix_prob=0.0))
    out, targets = m(video, labels)
    torch.testing.assert_close(out, video, rtol=0, atol=0)
    torch.testing.assert_close(targets, smoothed_one_hot(labels, C, 0.1))
    no_alpha = MixUp(dataclasses.replace(SPEC, mixup_alpha=0.0, cutmix_alpha=0.0))
    assert no_alpha.sample_params(8, 8) == (1.0, None)


def test_odd_batch_middle_sample_pairs_with_itself():
    video, labels = _batch(b=5)
    out, targets = _fixed(MixUp(SPEC), 0.4, None)(video, labels)
    torch.testing.assert_close(out[2], video[2])
    torch.testing.assert_close(targets[2], smoothed_one_hot(labels[2:3], C, 0.1)[0])
    torch.testing.assert_close(out[0], 0.4 * video[0] + 0.6 * video[4])


def test_batch_of_one_rejected():
    video, labels = _batch(b=1)
    with pytest.raises(ValueError):
        MixUp(SPEC)(video, labels)
    with pytest.raises(ValueError):
        MixUp(SPEC)(video[:, 0, 0, 0], labels)  # too few dims
    with pytest.raises(TypeError):
        MixUp(SPEC)(torch.zeros(2, 3, 2, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]))


def test_reproducible_with_seeded_generator_and_global_rng():
    video, labels = _batch()
    a = MixUp(SPEC, generator=torch.Generator().manual_seed(42))
    b = MixUp(SPEC, generator=torch.Generator().manual_seed(42))
    for _ in range(5):
        oa, ta = a(video, labels)
        ob, tb = b(video, labels)
        torch.testing.assert_close(oa, ob, rtol=0, atol=0)
        torch.testing.assert_close(ta, tb, rtol=0, atol=0)
    g = MixUp(SPEC)
    torch.manual_seed(7)
    p1 = [g.sample_params(32, 32) for _ in range(5)]
    torch.manual_seed(7)
    p2 = [g.sample_params(32, 32) for _ in range(5)]
    assert p1 == p2
    assert len(set(p1)) > 1


def test_inplace_matches_out_of_place_and_input_untouched():
    video, labels = _batch()
    for lam, box in [(0.3, None), (0.75, (2, 8, 1, 7))]:
        copy = video.clone()
        out, _ = _fixed(MixUp(SPEC), lam, box)(video, labels)
        torch.testing.assert_close(video, copy, rtol=0, atol=0)
        out2, _ = _fixed(MixUp(SPEC, inplace=True), lam, box)(copy, labels)
        assert out2.data_ptr() == copy.data_ptr()
        torch.testing.assert_close(out, out2, rtol=0, atol=0)


def test_soft_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, C, generator=g)
    labels = torch.randint(0, C, (6,), generator=g)
    hard = smoothed_one_hot(labels, C, 0.0)
    torch.testing.assert_close(soft_cross_entropy(logits, hard), F.cross_entropy(logits, labels))
    smooth = smoothed_one_hot(labels, C, 0.1)
    torch.testing.assert_close(
        soft_cross_entropy(logits, smooth), F.cross_entropy(logits, labels, label_smoothing=0.1)
    )
    per = soft_cross_entropy(logits, smooth, reduction="none")
    assert per.shape == (6,)
    torch.testing.assert_close(soft_cross_entropy(logits, smooth, reduction="sum"), per.sum())
    with pytest.raises(ValueError):
        soft_cross_entropy(logits, smooth, reduction="bogus")


def test_end_to_end_targets_rows_sum_to_one_and_lambda_consistent():
    video, labels = _batch(b=4, h=16, w=16)
    labels = torch.tensor([0, 1, 2, 3])  # distinct, so λ can be read back from the targets
    m = MixUp(SPEC, generator=torch.Generator().manual_seed(5))
    off = 0.1 / C
    for _ in range(20):
        out, targets = m(video, labels)
        torch.testing.assert_close(targets.sum(1), torch.ones(4))
        lam = (targets[0, 0].item() - off) / (1 - 0.1)
        assert 0.0 <= lam <= 1.0 + 1e-6
        if not math.isclose(lam, 1.0):
            assert not torch.equal(out, video)
