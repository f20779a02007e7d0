"""Token selection, the core of STTS (spec §1): one implementation used by every backbone.

A light scorer rates candidates — whole frames (temporal selection) or a×a windows of one frame (spatial
selection). In training a perturbed top-k turns the scores into a soft, differentiable choice (each kept
slot is a convex combination of candidates); in evaluation a hard top-k gathers exactly k candidates.
Kept candidates stay in their original order (indices sorted ascending), so frame order and raster order
survive selection.

Backbones adapt their own layout to two shapes:
- `TemporalSelector`: (B, T, N, C) frames of N tokens → (B, k, N, C);
- `SpatialSelector`: (B, T, H, W, C) token maps → (B, T, a, a, C), one a×a window per frame.
Each has a `score_network` (`Scorer`), named as in the official checkpoints, and `sigma`, the noise scale of
the perturbed top-k that the trainer sets (unused in evaluation). σ lives in a non-persistent 0-dim buffer
so that it moves with the model and changes without a host-device sync or a `torch.compile` recompilation;
the state dict does not change. A model says where its selectors run with `SelectionStep`s (its
``selection_steps()``), which `stts.explain` reads.

Besides the learned selection, each selector offers the two controls that any token-reduction claim
needs, with the definitions of the official code's unused helpers (spec §1.6.3): `random` (k candidates
drawn without replacement per sample, sorted) and `uniform` (linspace(0, n−1, k) truncated). They select
hard, in training too, and do not run the scorer; the scorer's weights stay in the state dict so that the
same checkpoint can be evaluated with learned, random or uniform selection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STRATEGIES = ("learned", "random", "uniform")
NUM_SAMPLES = 500  # noise samples of the perturbed top-k (the official PatchNet default)
MINMAX_EPS = 1e-5
# in every selector's parameter names (the official `time_score_predictor` / `space_score_predictor`): what
# the official optimizers key their selector groups on, and what `--init` leaves to start fresh
SELECTOR_KEY = "predictor"


class Scorer(nn.Module):
    """The official `PredictorLG`: per-token scores from local features and a per-sample global context.

    `in_conv` embeds each token; its first half of channels stays per token ("local"), its second half is
    averaged over the sample's M tokens ("global") and broadcast back; `out_conv` maps [local ‖ global] to
    one raw score. No output activation.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.in_conv = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Linear(dim, dim // 2),
            nn.GELU(),
            nn.Linear(dim // 2, dim // 4),
            nn.GELU(),
            nn.Linear(dim // 4, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B', M, D) → raw scores (B', M)."""
        h = self.in_conv(x)
        half = self.dim // 2
        local = h[..., :half]
        context = h[..., half:].mean(dim=1, keepdim=True).expand(-1, h.shape[1], -1)
        return self.out_conv(torch.cat([local, context], dim=-1)).squeeze(-1)


def minmax_normalise(scores: Tensor, eps: float = MINMAX_EPS) -> Tensor:
    """Per row to [0, ~1): fixes the noise scale of the perturbed top-k relative to the scores."""
    lo = scores.min(dim=-1, keepdim=True).values
    hi = scores.max(dim=-1, keepdim=True).values
    return (scores - lo) / (hi - lo + eps)


def hard_topk(scores: Tensor, k: int) -> Tensor:
    """Indices (b, k) of the k highest scores per row, sorted ascending (original order kept)."""
    return scores.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values


def random_indices(batch: int, n: int, k: int, device: torch.device) -> Tensor:
    """k of n drawn without replacement per sample, sorted ascending."""
    return torch.rand(batch, n, device=device).argsort(dim=-1)[:, :k].sort(dim=-1).values


def uniform_indices(batch: int, n: int, k: int, device: torch.device) -> Tensor:
    """linspace(0, n-1, k) truncated to integers (the official definition), the same for every sample."""
    return torch.linspace(0, n - 1, steps=k, device=device).long().expand(batch, k)


class PerturbedTopK(torch.autograd.Function):
    """Differentiable top-k by perturbed maximum (spec §1.3).

    Forward: A[b, j, c] = fraction of the noise samples Y = s + σZ in which candidate c is the j-th selected
    (selected indices sorted ascending). Backward keeps only the diagonal noise term of the Jacobian,
    J[b, j, c] = Σ_n P[b, n, j, c] Z[b, n, c] / (n σ) — what the official code computes (the full estimator
    would also use Z[b, n, c'] for c' ≠ c); copied on purpose so that training matches.
    """

    @staticmethod
    def forward(ctx, scores: Tensor, k: int, sigma: Tensor, noise: Tensor) -> Tensor:
        b, d = scores.shape
        perturbed = scores.float().unsqueeze(1) + sigma * noise  # (b, n, d)
        indices = hard_topk(perturbed, k)  # (b, n, k)
        one_hot = F.one_hot(indices, d).float()  # (b, n, k, d)
        ctx.save_for_backward(one_hot, noise, sigma)
        ctx.input_dtype = scores.dtype
        return one_hot.mean(dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        one_hot, noise, sigma = ctx.saved_tensors
        n = noise.shape[1]
        jacobian = torch.einsum("bnkd,bnd->bkd", one_hot, noise) / (n * sigma.clamp_min(1e-20))
        grad_scores = (grad.float() * jacobian).sum(dim=1)
        # σ = 0 (the end of the MViT schedule): no gradient, decided on the device (no host sync)
        grad_scores = torch.where(sigma > 1e-20, grad_scores, torch.zeros_like(grad_scores))
        return grad_scores.to(ctx.input_dtype), None, None, None


def perturbed_topk(
    scores: Tensor,
    k: int,
    sigma: float | Tensor,
    *,
    num_samples: int = NUM_SAMPLES,
    noise: Tensor | None = None,
) -> Tensor:
    """Soft top-k indicator (b, k, d) of scores (b, d). ``sigma``: a number or a 0-dim float tensor on the
    scores' device (the selectors pass their buffer). `noise` (b, num_samples, d) may be injected (tests);
    otherwise it is drawn on the scores' device."""
    if noise is None:
        noise = torch.randn(scores.shape[0], num_samples, scores.shape[1], device=scores.device)
    if not isinstance(sigma, Tensor):
        sigma = torch.tensor(float(sigma), device=scores.device)
    return PerturbedTopK.apply(scores, k, sigma.float(), noise.float())


@dataclass(frozen=True)
class SelectionStep:
    """One selection in forward order and the token grid it runs on (nominal footprints: the tiling of the
    strides, see `stts.explain`).

    selector: the `TemporalSelector` or `SpatialSelector`.
    frames_per_slice: input frames per temporal token slice of this grid.
    cell: input pixels between two neighbouring tokens of this grid.
    side: the grid's side (H = W) where the selection is spatial and runs on the full grid; None otherwise.
    """

    selector: nn.Module
    frames_per_slice: int
    cell: int
    side: int | None = None


class _Selector(nn.Module):
    def __init__(self, k: int, strategy: str, num_samples: int):
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.strategy = strategy
        self.num_samples = num_samples
        self.register_buffer("sigma_t", torch.zeros(()), persistent=False)
        self._sigma = 0.0
        # what the last forward chose, for visualisation and selection metrics (detached)
        self.last_indices: Tensor | None = None
        self.last_scores: Tensor | None = None

    @property
    def sigma(self) -> float:
        return self._sigma

    @sigma.setter
    def sigma(self, value: float) -> None:
        # in place: no new tensor (the compiled graph keeps reading the same buffer), no host sync
        self._sigma = float(value)
        self.sigma_t.fill_(self._sigma)

    def _soft(self) -> bool:
        return self.strategy == "learned" and self.training

    def _hard_indices(self, scores: Tensor | None, batch: int, n: int, k: int, device) -> Tensor:
        if self.strategy == "random":
            return random_indices(batch, n, k, device)
        if self.strategy == "uniform":
            return uniform_indices(batch, n, k, device)
        return hard_topk(scores, k)

    def extra_repr(self) -> str:
        return f"k={self.k}, strategy={self.strategy}"


class TemporalSelector(_Selector):
    """Keeps k of T frames (official PatchNet 'tpool'). Frame descriptor: [mean ‖ max] of its tokens."""

    def __init__(self, channels: int, k: int, *, strategy: str = "learned", num_samples: int = NUM_SAMPLES):
        super().__init__(k, strategy, num_samples)
        self.channels = channels
        self.score_network = Scorer(2 * channels)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """x (B, T, N, C) → (B, k, N, C)."""
        b, t, n, c = x.shape
        if self.k > t:
            raise ValueError(f"cannot keep {self.k} of {t} frames")
        scores = None
        if self.strategy == "learned":
            descriptor = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=-1)
            scores = minmax_normalise(self.score_network(descriptor))  # (B, T)
            self.last_scores = scores.detach()
        if self._soft():
            indicator = perturbed_topk(
                scores, self.k, self.sigma_t, num_samples=self.num_samples, noise=noise
            )
            self.last_indices = indicator.argmax(dim=-1).detach()
            out = torch.bmm(indicator.to(x.dtype), x.reshape(b, t, n * c))
            return out.reshape(b, self.k, n, c)
        idx = self._hard_indices(scores, b, t, self.k, x.device)
        self.last_indices = idx
        return torch.gather(x, 1, idx[:, :, None, None].expand(-1, -1, n, c))


class SpatialSelector(_Selector):
    """Keeps one a×a window per frame, a = int(sqrt(k)) (official PatchNet 'spatch').

    Token scores come from the scorer with each frame as its own sample; a window's score is the mean of
    its tokens' scores. Windows are the positions of an a×a kernel sliding with `stride` (default
    max((H − a) // 2, 1)), numbered row-major by their top-left corner.
    """

    def __init__(
        self,
        channels: int,
        k: int,
        *,
        stride: int | None = None,
        strategy: str = "learned",
        num_samples: int = NUM_SAMPLES,
    ):
        super().__init__(k, strategy, num_samples)
        self.channels = channels
        self.anchor = int(math.isqrt(k))
        self.stride = stride
        self.score_network = Scorer(channels)

    def windows(self, size: int) -> tuple[int, int]:
        """(stride, windows per row) for an H = W = size map."""
        a = self.anchor
        if a > size:
            raise ValueError(f"a {a}x{a} window does not fit a {size}x{size} map")
        stride = self.stride if self.stride is not None else max((size - a) // 2, 1)
        return stride, (size - a) // stride + 1

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """x (B, T, H, W, C) → (B, T, a, a, C)."""
        b, t, h, w, c = x.shape
        if h != w:
            raise ValueError(f"spatial selection needs a square map, got {h}x{w}")
        a = self.anchor
        stride, per_row = self.windows(h)
        frames = x.reshape(b * t, h, w, c)
        scores = None
        if self.strategy == "learned":
            token_scores = self.score_network(frames.reshape(b * t, h * w, c)).reshape(b * t, 1, h, w)
            window_scores = F.unfold(token_scores, a, stride=stride).mean(dim=1)  # (BT, L)
            scores = minmax_normalise(window_scores)
            self.last_scores = scores.detach().reshape(b, t, -1)
        if self._soft():
            indicator = perturbed_topk(scores, 1, self.sigma_t, num_samples=self.num_samples, noise=noise)
            self.last_indices = indicator.argmax(dim=-1).detach().reshape(b, t)
            # candidates as (BT, L, C·a·a), channel-major inside a window as unfold lays them out
            candidates = F.unfold(frames.permute(0, 3, 1, 2), a, stride=stride).transpose(1, 2)
            chosen = torch.bmm(indicator.to(x.dtype), candidates)  # (BT, 1, C·a·a)
            return chosen.reshape(b, t, c, a, a).permute(0, 1, 3, 4, 2)
        n_windows = per_row * per_row
        idx = self._hard_indices(scores, b * t, n_windows, 1, x.device)[:, 0]  # (BT,)
        self.last_indices = idx.reshape(b, t)
        # slice each frame's window directly: no copy of the other candidates
        top = (idx // per_row) * stride
        left = (idx % per_row) * stride
        offsets = torch.arange(a, device=x.device)
        rows = (top[:, None] + offsets)[:, :, None]  # (BT, a, 1)
        cols = (left[:, None] + offsets)[:, None, :]  # (BT, 1, a)
        frame = torch.arange(b * t, device=x.device)[:, None, None]
        return frames[frame, rows, cols].reshape(b, t, a, a, c)
