"""Token selection against the spec's formulas (spec §1)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from stts.selection import (
    PerturbedTopK,
    Scorer,
    SpatialSelector,
    TemporalSelector,
    hard_topk,
    minmax_normalise,
    perturbed_topk,
    random_indices,
    uniform_indices,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------ scorer
def test_scorer_names_and_shapes_match_the_official_predictor():
    shapes = {k: tuple(v.shape) for k, v in Scorer(192).state_dict().items()}
    assert shapes == {
        "in_conv.0.weight": (192,),
        "in_conv.0.bias": (192,),
        "in_conv.1.weight": (192, 192),
        "in_conv.1.bias": (192,),
        "out_conv.0.weight": (96, 192),
        "out_conv.0.bias": (96,),
        "out_conv.2.weight": (48, 96),
        "out_conv.2.bias": (48,),
        "out_conv.4.weight": (1, 48),
        "out_conv.4.bias": (1,),
    }
    assert isinstance(Scorer(8).in_conv[0], nn.LayerNorm) and Scorer(8).in_conv[0].eps == 1e-5


def test_scorer_local_first_then_global_mean():
    scorer = Scorer(8)
    x = torch.randn(3, 5, 8)
    h = scorer.in_conv(x)
    joined = torch.cat([h[..., :4], h[..., 4:].mean(1, keepdim=True).expand(-1, 5, -1)], -1)
    expected = scorer.out_conv(joined)[..., 0]
    torch.testing.assert_close(scorer(x), expected)
    # the global half is per sample: changing sample 1 leaves sample 0's scores alone
    y = x.clone()
    y[1] += 1
    torch.testing.assert_close(scorer(y)[0], scorer(x)[0])


def test_minmax_normalise():
    s = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])
    out = minmax_normalise(s)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 2 / (2 + 1e-5), 1 / (2 + 1e-5)]))
    assert torch.equal(out[1], torch.zeros(3))


# ---------------------------------------------------------------------------------------- perturbed top-k
def _reference_forward(s, k, sigma, z):
    """The spec's forward, one noise sample at a time."""
    b, n, d = z.shape
    a = torch.zeros(b, k, d)
    for i, j in itertools.product(range(b), range(n)):
        y = s[i] + sigma * z[i, j]
        chosen = sorted(torch.topk(y, k).indices.tolist())
        for slot, c in enumerate(chosen):
            a[i, slot, c] += 1 / n
    return a


def test_perturbed_topk_forward_matches_the_formula():
    s = torch.rand(2, 6)
    z = torch.randn(2, 50, 6)
    a = perturbed_topk(s, 3, 0.3, noise=z)
    torch.testing.assert_close(a, _reference_forward(s, 3, 0.3, z))
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 3))  # each slot is a distribution over candidates


def test_perturbed_topk_with_vanishing_sigma_is_the_sorted_hard_one_hot():
    s = torch.rand(4, 8)
    a = perturbed_topk(s, 3, 1e-9, num_samples=20)
    expected = torch.nn.functional.one_hot(hard_topk(s, 3), 8).float()
    assert torch.equal(a, expected)
    idx = hard_topk(s, 3)
    assert torch.equal(idx, idx.sort(-1).values)  # ascending: original order kept
    assert torch.equal(idx, torch.topk(s, 3).indices.sort(-1).values)


def test_perturbed_topk_backward_is_the_diagonal_formula():
    s = torch.rand(2, 5, requires_grad=True)
    z = torch.randn(2, 40, 5)
    sigma, k = 0.2, 2
    g = torch.randn(2, k, 5)
    (perturbed_topk(s, k, sigma, noise=z) * g).sum().backward()
    # J[b, j, c] = 1/(n σ) Σ_n P[b, n, j, c] Z[b, n, c];  ∂L/∂s[b, c] = Σ_j G[b, j, c] J[b, j, c]
    expected = torch.zeros(2, 5)
    for b, m in itertools.product(range(2), range(40)):
        y = s.detach()[b] + sigma * z[b, m]
        for slot, c in enumerate(sorted(torch.topk(y, k).indices.tolist())):
            expected[b, c] += g[b, slot, c] * z[b, m, c] / (40 * sigma)
    torch.testing.assert_close(s.grad, expected)


def test_zero_sigma_gives_zero_gradient():
    s = torch.rand(2, 5, requires_grad=True)
    PerturbedTopK.apply(s, 2, torch.tensor(0.0), torch.randn(2, 10, 5)).sum().backward()
    assert torch.equal(s.grad, torch.zeros(2, 5))


def test_controls():
    idx = random_indices(64, 10, 4, torch.device("cpu"))
    assert idx.shape == (64, 4) and torch.equal(idx, idx.sort(-1).values)
    assert all(len(set(row.tolist())) == 4 for row in idx) and int(idx.max()) <= 9
    assert len({tuple(r.tolist()) for r in idx}) > 10  # really random per sample
    assert uniform_indices(2, 8, 3, torch.device("cpu")).tolist() == [
        [0, 3, 7],
        [0, 3, 7],
    ]  # linspace 0, 3.5, 7


# ---------------------------------------------------------------------------------------------- temporal
def test_temporal_selector_parameters_and_keys():
    sel = TemporalSelector(96, 7)
    assert sum(p.numel() for p in sel.parameters()) == 60_673  # spec §10
    assert all(k.startswith("score_network.") for k in sel.state_dict())


def test_temporal_descriptor_is_mean_then_max():
    sel = TemporalSelector(4, 2).eval()
    seen = {}

    class Probe(nn.Module):
        def forward(self, d):
            seen["d"] = d
            return d[..., 0]

    sel.score_network = Probe()
    x = torch.randn(2, 5, 3, 4)
    sel(x)
    torch.testing.assert_close(seen["d"], torch.cat([x.mean(2), x.amax(2)], -1))


def test_temporal_eval_gathers_the_top_frames_in_order():
    sel = TemporalSelector(4, 3).eval()
    x = torch.randn(2, 6, 3, 4)
    out = sel(x)
    scores = minmax_normalise(sel.score_network(torch.cat([x.mean(2), x.amax(2)], -1)))
    idx = torch.topk(scores, 3).indices.sort(-1).values
    assert torch.equal(sel.last_indices, idx)
    assert torch.equal(out, torch.stack([x[b, idx[b]] for b in range(2)]))


def test_temporal_train_is_the_convex_combination_of_the_indicator():
    sel = TemporalSelector(4, 2).train()
    sel.sigma = 0.5
    x = torch.randn(2, 5, 3, 4)
    z = torch.randn(2, 500, 5)
    out = sel(x, noise=z)
    scores = minmax_normalise(sel.score_network(torch.cat([x.mean(2), x.amax(2)], -1)))
    a = _reference_forward(scores.detach(), 2, 0.5, z)
    torch.testing.assert_close(out, torch.einsum("bkt,btnc->bknc", a, x))


def test_every_parameter_and_the_input_get_gradients_in_training():
    for sel, x in (
        (TemporalSelector(4, 2), torch.randn(2, 5, 3, 4, requires_grad=True)),
        (SpatialSelector(4, 4), torch.randn(2, 3, 5, 5, 4, requires_grad=True)),
    ):
        sel.train()
        sel.sigma = 0.1
        (sel(x) ** 2).sum().backward()
        for name, p in sel.named_parameters():
            assert p.grad is not None, name
            # min-max normalisation removes any constant added to all scores, so the last bias of the
            # scorer gets an exactly zero gradient (as in the official model); every other one moves
            if name != "score_network.out_conv.4.bias":
                assert p.grad.abs().sum() > 0, name
        assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("strategy", ["random", "uniform"])
def test_controls_select_hard_without_the_scorer(strategy):
    sel = TemporalSelector(4, 3, strategy=strategy).train()
    x = torch.randn(16, 8, 2, 4)
    out = sel(x)
    assert sel.last_scores is None
    idx = sel.last_indices
    assert torch.equal(out, torch.stack([x[b, idx[b]] for b in range(16)]))
    if strategy == "uniform":
        assert idx.tolist() == [[0, 3, 7]] * 16
    assert set(TemporalSelector(4, 3, strategy=strategy).state_dict()) == set(
        TemporalSelector(4, 3).state_dict()
    )


def test_unknown_strategy_and_too_many_frames():
    with pytest.raises(ValueError, match="strategy"):
        TemporalSelector(4, 2, strategy="best")
    with pytest.raises(ValueError, match="cannot keep"):
        TemporalSelector(4, 6).eval()(torch.randn(1, 4, 2, 4))


# ----------------------------------------------------------------------------------------------- spatial
def test_spatial_selector_parameters():
    assert sum(p.numel() for p in SpatialSelector(384, 169).parameters()) == 241_153  # spec §10


@pytest.mark.parametrize(
    ("size", "k", "stride", "windows"), [(14, 169, 1, 4), (14, 144, 1, 9), (14, 121, 1, 16)]
)
def test_spatial_candidates_for_the_shipped_configs(size, k, stride, windows):
    sel = SpatialSelector(8, k)
    s, per_row = sel.windows(size)
    assert (s, per_row * per_row) == (stride, windows)


class _FixedScores(nn.Module):
    """Token scores: 1 at one position of a 14×14 map, 0 elsewhere."""

    def __init__(self, row, col):
        super().__init__()
        self.row, self.col = row, col

    def forward(self, x):
        s = torch.zeros(x.shape[0], 14, 14)
        s[:, self.row, self.col] = 1
        return s.reshape(x.shape[0], -1)


@pytest.mark.parametrize(
    ("corner", "window", "offset"),
    [((0, 0), 0, (0, 0)), ((0, 13), 1, (0, 1)), ((13, 0), 2, (1, 0)), ((13, 13), 3, (1, 1))],
)
def test_spatial_windows_are_numbered_row_major(corner, window, offset):
    """14×14 map, a = 13: exactly 4 candidates at offsets (0,0), (0,1), (1,0), (1,1) in that order; a
    corner token belongs to one window only, so scoring it alone picks that window."""
    sel = SpatialSelector(6, 169).eval()
    sel.score_network = _FixedScores(*corner)
    x = torch.randn(2, 3, 14, 14, 6)
    out = sel(x)
    assert sel.last_indices.tolist() == [[window] * 3] * 2
    r, c = offset
    assert torch.equal(out, x[:, :, r : r + 13, c : c + 13])
    # training with vanishing noise picks the same window as a soft (one-hot) combination
    sel.train()
    sel.sigma = 1e-9
    torch.testing.assert_close(sel(x), out)


def test_spatial_window_score_is_the_mean_token_score():
    sel = SpatialSelector(4, 4).eval()  # a = 2 on a 4×4 map: stride max((4-2)//2, 1) = 1, 3×3 windows
    x = torch.randn(1, 2, 4, 4, 4)
    sel(x)
    tokens = sel.score_network(x.reshape(2, 16, 4)).reshape(2, 4, 4)
    means = torch.stack([tokens[:, i : i + 2, j : j + 2].mean((1, 2)) for i in range(3) for j in range(3)], 1)
    torch.testing.assert_close(sel.last_scores.reshape(2, 9), minmax_normalise(means), atol=1e-4, rtol=0)


def test_eval_is_deterministic_and_per_sample():
    for sel, x in (
        (TemporalSelector(4, 2), torch.randn(4, 5, 3, 4)),
        (SpatialSelector(4, 9), torch.randn(4, 2, 6, 6, 4)),
    ):
        sel.eval()
        full = sel(x)
        assert torch.equal(full, sel(x))
        assert torch.equal(full[1:2], sel(x[1:2]))
