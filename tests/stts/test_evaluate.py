"""`stts.evaluate`: metrics checked by hand on a fake model, selection precision on a tiny synthetic shard."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pipelines.sampling import MVIT_CLIP, eval_clip_indices
from stts.evaluate import aggregation_of, evaluate, read_ground_truth, write_results
from stts.registry import build_model

CLASSES = ["a", "b", "c", "d", "e", "f"]
# per video: label and the softmax of each of its two views (the fake model returns log-probabilities)
VIDEOS = {
    "A": (0, [[0.6, 0.2, 0.05, 0.05, 0.05, 0.05], [0.2, 0.4, 0.1, 0.1, 0.1, 0.1]]),  # top-1 right
    "B": (1, [[0.7, 0.1, 0.05, 0.05, 0.05, 0.05], [0.1, 0.3, 0.15, 0.15, 0.15, 0.15]]),  # top-5 only
    "C": (1, [[0.3, 0.02, 0.2, 0.2, 0.14, 0.14], [0.3, 0.02, 0.2, 0.2, 0.14, 0.14]]),  # label ranked last
    "D": (2, [[0.1, 0.1, 0.5, 0.1, 0.1, 0.1], [0.1, 0.1, 0.5, 0.1, 0.1, 0.1]]),  # right
}
KEYS = sorted(VIDEOS)


class FakeModel(nn.Module):
    """Logits fixed per (video, view): the clip's first value says which."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.table = torch.tensor([VIDEOS[k][1][v] for k in KEYS for v in range(2)]).log()

    def forward(self, x):
        return self.table[x[:, 0, 0, 0, 0].long()] + self.dummy


def fake_loader(batch_size: int = 3):
    items = [(k, v) for v in range(2) for k in KEYS]  # views of one video in different batches
    batches = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        video = torch.zeros(len(chunk), 3, 2, 2, 2)
        for j, (k, v) in enumerate(chunk):
            video[j, 0, 0, 0, 0] = KEYS.index(k) * 2 + v
        label = torch.tensor([VIDEOS[k][0] for k, _ in chunk])
        batches.append(SimpleNamespace(video=video, label=label, key=[k for k, _ in chunk],
                                       view=torch.tensor([v for _, v in chunk])))  # fmt: skip
    return batches


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_metrics_by_hand(mode, tmp_path):
    result = evaluate(FakeModel(), fake_loader(), classes=CLASSES, recipe_aggregation=mode, count_flops=False)
    assert (result.videos, result.views, result.skipped) == (4, 8, 0)
    assert result.top1 == 0.5  # A and D
    assert result.top5 == 0.75  # B's label is second; C's is last of six
    # classes present: a 1/1, b 0/2, c 1/1
    assert result.mean_class_accuracy == pytest.approx(2 / 3)
    rows = {r.class_id: r for r in result.per_class}
    assert (rows[1].videos, rows[1].top1_correct, rows[1].accuracy) == (2, 0, 0.0)
    assert rows[4].videos == 0 and rows[4].accuracy is None
    # the aggregate the recipe names: sum of softmaxes (MViT) or their mean (Swin)
    a = next(v for v in result.per_video if v["key"] == "A")
    assert a["top5"][:2] == [0, 1]
    scale = 1.0 if mode == "sum" else 0.5
    assert a["probs"][:2] == pytest.approx([0.8 * scale, 0.6 * scale])
    assert result.aggregation == mode and result.gflops_per_view is None
    json_path, csv_path = write_results(result, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["top1"] == 0.5 and data["videos"] == 4 and data["selection"] is None
    rows_csv = list(csv.DictReader(csv_path.open()))
    assert rows_csv[0] == {
        "class_id": "0",
        "name": "a",
        "videos": "1",
        "top1_correct": "1",
        "accuracy": "1.000000",
    }
    assert rows_csv[5]["accuracy"] == "" and len(rows_csv) == 6
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_aggregation_names_and_bad_labels():
    assert aggregation_of("mvit") == "sum" and aggregation_of("swin") == "mean"
    with pytest.raises(ValueError, match="aggregation"):
        aggregation_of("max")
    with pytest.raises(ValueError, match="classes"):
        evaluate(FakeModel(), fake_loader(), classes=CLASSES[:2], recipe_aggregation="sum", count_flops=False)
    with pytest.raises(ValueError, match="no views"):
        evaluate(FakeModel(), [], classes=CLASSES, recipe_aggregation="sum", count_flops=False)


def test_flops_counted_in_the_family_convention():
    model = build_model("swin_debug_t0.5", num_classes=2)
    batch = SimpleNamespace(video=torch.zeros(1, 3, 8, 56, 56), label=torch.tensor([0]), key=["x"],
                            view=torch.tensor([0]))  # fmt: skip
    result = evaluate(model, [batch], classes=["p", "q"])  # aggregation and convention: the model's spec
    assert result.flops_convention == "mmcv" and result.gflops_per_view > 0 and result.aggregation == "mean"
    assert result.selection is None  # no clip spec on this loader: nothing to score against


# ---------------------------------------------------------------------------- selection precision
needs_dali = pytest.mark.skipif(
    importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None,
    reason="needs nvidia-dali",
)
SPEC = replace(MVIT_CLIP, num_frames=8, crop_size=64, short_side=64, num_clips=1, num_crops=1)


class FixedScores(nn.Module):
    def __init__(self, scores):
        super().__init__()
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def forward(self, x):
        return self.scores.to(x.dtype).expand(x.shape[0], -1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from shards.build import ShardConfig, build_shards
    from shards.synthetic import SyntheticConfig

    out = tmp_path_factory.mktemp("eval") / "shards"
    synthetic = SyntheticConfig(num_classes=2, train_per_class=0, val_per_class=2, frames=40, size=64)
    build_shards(ShardConfig(src="synthetic", out=str(out), split="val", workers=1, synthetic=synthetic))
    return out


def forced_model(slices_on: bool):
    """mvit_debug_t0.5_s0.5 keeping slices 0, 1 (clip frames 0-3) or 2, 3 (4-7) and the 5x5 window at
    row 3, column 2 of the 8x8 grid: crop pixels (16, 24)-(56, 64), centre (36, 44)."""
    model = build_model("mvit_debug_t0.5_s0.5", num_classes=2)
    time_sel, space_sel = model.selectors()
    time_sel.score_network = FixedScores([3.0, 2.0, 1.0, 0.0] if slices_on else [0.0, 1.0, 2.0, 3.0])
    tokens = torch.zeros(8, 8)
    tokens[3:, 2:7] = 1.0
    space_sel.score_network = FixedScores(tokens.flatten())
    return model


def truth_for(shards, region):
    """The shards' own metadata, with the informative range set to the clip's frames 0-3 and `region`."""
    truth = read_ground_truth(sorted(shards.glob("val-*.tar")))
    assert len(truth) == 4 and all("informative_frames" in m for m in truth.values())
    for meta in truth.values():
        idx = eval_clip_indices(meta["num_frames"], meta["fps"], SPEC, 0)
        assert idx[3] < idx[4]
        meta["informative_frames"] = [int(idx[0]), int(idx[3]) + 1]
        meta["region"] = list(region)
    return truth


@needs_dali
@pytest.mark.parametrize("on", [True, False])
def test_selection_precision_forced_on_and_off(shards, on):
    from pipelines import build_loader
    from pipelines.augment import MVIT_AUG

    loader = build_loader(shards, "val", (SPEC, replace(MVIT_AUG, clip=SPEC, randaugment=None)),
                          batch_size=3, train=False, decoder="dali-cpu")  # fmt: skip
    region = (32, 32, 64, 64) if on else (0, 0, 32, 32)
    result = evaluate(forced_model(on), loader, classes=["p", "q"], ground_truth=truth_for(shards, region),
                      count_flops=False)  # fmt: skip
    sel = result.selection
    assert sel.views == 4 and sel.temporal_kept == 16 and sel.spatial_kept == 16
    assert sel.temporal == (1.0 if on else 0.0)
    assert sel.spatial == (1.0 if on else 0.0)
    # chance: 2 of the 4 slices are hits; of the 16 windows (centres at 20 + 8j), 4 fall in the region
    assert sel.temporal_random == pytest.approx(0.5)
    assert sel.spatial_random == pytest.approx(0.25)
    assert sel.strategy == "learned"


@needs_dali
def test_selection_precision_reads_the_shards_ground_truth(shards):
    from pipelines import build_loader
    from pipelines.augment import MVIT_AUG

    loader = build_loader(shards, "val", (SPEC, replace(MVIT_AUG, clip=SPEC, randaugment=None)),
                          batch_size=4, train=False, decoder="dali-cpu")  # fmt: skip
    result = evaluate(forced_model(True), loader, classes=["p", "q"], count_flops=False)
    truth = read_ground_truth(loader.tars)
    # chance for time = share of each clip's frames in the informative range (slices of equal size)
    expected = []
    for meta in truth.values():
        idx = eval_clip_indices(meta["num_frames"], meta["fps"], SPEC, 0)
        start, end = meta["informative_frames"]
        expected.append(sum(start <= i < end for i in idx) / 8)
    sel = result.selection
    assert sel.temporal_random == pytest.approx(sum(expected) / 4)
    assert 0.0 <= sel.temporal <= 1.0 and 0.0 <= sel.spatial <= 1.0
    assert not math.isnan(result.top1) and result.views == 4 and result.videos == 4
