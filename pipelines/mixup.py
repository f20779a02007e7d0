"""Batch-level MixUp / CutMix with label smoothing on the device batch, as the official MViT recipe does it.

Spec §6.1 and §9.19, following pySlowFast's ``slowfast/datasets/mixup.py`` where the spec is silent:

* One decision and one λ per *batch* (per GPU): with probability ``mix_prob`` the batch is mixed; when both
  alphas are positive, CutMix is chosen with probability ``switch_prob``, otherwise Mixup; λ ~ Beta(α, α)
  with the chosen method's alpha. With only one alpha positive that method is always used.
* The partner of sample ``i`` is sample ``B - 1 - i`` (the batch flipped along dim 0). With an odd batch the
  middle sample is its own partner (it is unchanged and keeps its own, smoothed, target); pySlowFast only
  asserts ``B > 1``, which is repeated here. In the MViT recipe the per-GPU batch holds the two
  repeated-augmentation views of each video, so a clip may be paired with a view of another video only.
* CutMix: one box on the last two dims (H, W), shared by every sample, channel and frame. Cut sizes
  ``int(H·√(1−λ))`` and ``int(W·√(1−λ))``; centre ``cy`` uniform in ``[0, H)``, ``cx`` uniform in
  ``[0, W)``; rows ``[clip(cy − cut_h//2), clip(cy + cut_h//2))``, columns likewise, clipped to the frame
  (so an odd cut size loses one pixel: the box side before clipping is ``2·(cut//2)``). λ is then corrected
  to ``1 − box_area / (H·W)``. The box region is copied from the flipped batch.
* Mixup: ``x·λ + flip(x)·(1−λ)``.
* Soft targets: ``λ·smooth(onehot(y)) + (1−λ)·smooth(onehot(flip(y)))`` with ``off = smoothing /
  num_classes`` and ``on = 1 − smoothing + off``; rows sum to 1. Without mixing (λ = 1) the targets are the
  smoothed one-hot labels and the video is returned unchanged.

Randomness: every call draws one 64-bit seed from a ``torch.Generator`` (the module's, if given; otherwise
torch's global CPU generator, so ``torch.manual_seed`` makes runs reproducible) and samples the parameters
with a ``numpy.random.Generator`` seeded by it (torch has no generator-aware Beta sampler). Sampling happens
on the host, so it never synchronises with the device; the module itself never moves tensors between
devices (targets live on the labels' device). pySlowFast used numpy's legacy global RNG instead, so the
streams are not bit-identical to the official run, only identically distributed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MVIT_MIXUP",
    "MixUp",
    "MixupSpec",
    "cutmix_box",
    "mixup_targets",
    "smoothed_one_hot",
    "soft_cross_entropy",
]

Box = tuple[int, int, int, int]  # (y_lo, y_hi, x_lo, x_hi), half-open


@dataclass(frozen=True)
class MixupSpec:
    """MixUp/CutMix hyper-parameters (pySlowFast ``MIXUP.*`` config keys in brackets).

    mixup_alpha: Beta(α, α) for Mixup; 0 disables Mixup [ALPHA].
    cutmix_alpha: Beta(α, α) for CutMix; 0 disables CutMix [CUTMIX_ALPHA].
    mix_prob: probability that a batch is mixed at all [PROB].
    switch_prob: probability of CutMix instead of Mixup when both are enabled [SWITCH_PROB].
    label_smoothing: smoothing applied to each one-hot before mixing [LABEL_SMOOTH_VALUE].
    num_classes: width of the soft targets [MODEL.NUM_CLASSES].
    """

    mixup_alpha: float
    cutmix_alpha: float
    mix_prob: float
    switch_prob: float
    label_smoothing: float
    num_classes: int

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("alphas must be >= 0")
        if not (0.0 <= self.mix_prob <= 1.0 and 0.0 <= self.switch_prob <= 1.0):
            raise ValueError("mix_prob and switch_prob must lie in [0, 1]")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must lie in [0, 1)")
        if self.num_classes < 1:
            raise ValueError("num_classes must be >= 1")


# STTS MViT-B 16x4 on Kinetics-400 (spec §6.1).
MVIT_MIXUP = MixupSpec(
    mixup_alpha=0.8,
    cutmix_alpha=1.0,
    mix_prob=1.0,
    switch_prob=0.5,
    label_smoothing=0.1,
    num_classes=400,
)


def smoothed_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B,) class indices → (B, num_classes) float32 with ``off = s/C`` and ``on = 1 − s + off``."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    idx = labels.long().view(-1, 1)
    out = torch.full((idx.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    return out.scatter_(1, idx, on)


def mixup_targets(labels: torch.Tensor, num_classes: int, lam: float, smoothing: float) -> torch.Tensor:
    """``λ·smooth(onehot(y)) + (1−λ)·smooth(onehot(flip(y)))``, shape (B, num_classes), float32."""
    y1 = smoothed_one_hot(labels, num_classes, smoothing)
    y2 = smoothed_one_hot(labels.flip(0), num_classes, smoothing)
    return y1 * lam + y2 * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float, cy: int, cx: int) -> tuple[Box, float]:
    """The CutMix box for a raw λ and centre (cy, cx), and the area-corrected λ = 1 − area / (H·W)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    y_lo = min(max(cy - cut_h // 2, 0), height)
    y_hi = min(max(cy + cut_h // 2, 0), height)
    x_lo = min(max(cx - cut_w // 2, 0), width)
    x_hi = min(max(cx + cut_w // 2, 0), width)
    area = (y_hi - y_lo) * (x_hi - x_lo)
    return (y_lo, y_hi, x_lo, x_hi), 1.0 - area / float(height * width)


def soft_cross_entropy(
    logits: torch.Tensor, soft_targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """``−Σ_c y_c·log_softmax(logits)_c`` per sample, averaged over the batch (pySlowFast
    ``SoftTargetCrossEntropy``); ``reduction`` is ``"mean"``, ``"sum"`` or ``"none"``."""
    loss = torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}")


class MixUp(nn.Module):
    """Mix a device batch ``video`` (B, ..., H, W), e.g. (B, 3, T, H, W), and its labels (B,).

    ``forward(video, labels) -> (video, soft_targets)``. ``generator``: a CPU ``torch.Generator`` for the
    per-batch parameters, or ``None`` for torch's global RNG. ``inplace=True`` overwrites ``video`` as
    pySlowFast does (saves one batch-sized buffer); the default returns a new tensor and leaves the input
    untouched. Results are identical either way.
    """

    def __init__(
        self,
        spec: MixupSpec = MVIT_MIXUP,
        generator: torch.Generator | None = None,
        inplace: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.generator = generator
        self.inplace = inplace

    def extra_repr(self) -> str:
        return f"{self.spec}, inplace={self.inplace}"

    def _numpy_rng(self) -> np.random.Generator:
        seed = torch.randint(0, 2**62, (1,), generator=self.generator, dtype=torch.int64).item()
        return np.random.default_rng(int(seed))

    def sample_params(self, height: int, width: int) -> tuple[float, Box | None]:
        """Draw one batch's (λ, box): box is ``None`` for Mixup or no mixing (λ = 1); for CutMix λ is
        already area-corrected. Override or monkeypatch this to inject fixed parameters in tests."""
        s = self.spec
        rng = self._numpy_rng()
        if not (s.mixup_alpha > 0.0 or s.cutmix_alpha > 0.0):
            return 1.0, None  # pySlowFast would crash here (unbound lam_mix); mixing is simply off
        if not rng.random() < s.mix_prob:
            return 1.0, None
        if s.mixup_alpha > 0.0 and s.cutmix_alpha > 0.0:
            use_cutmix = bool(rng.random() < s.switch_prob)
        else:
            use_cutmix = s.cutmix_alpha > 0.0
        alpha = s.cutmix_alpha if use_cutmix else s.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if lam == 1.0 or not use_cutmix:
            return lam, None
        cy = int(rng.integers(0, height))
        cx = int(rng.integers(0, width))
        box, lam = cutmix_box(height, width, lam, cy, cx)
        return lam, box

    def apply(
        self, video: torch.Tensor, labels: torch.Tensor, lam: float, box: Box | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix with given parameters: CutMix when ``box`` is given (``lam`` must be its corrected λ), else
        Mixup with ``lam`` (no change at λ = 1)."""
        out = video if self.inplace else video.clone()
        if box is not None:
            y_lo, y_hi, x_lo, x_hi = box
            out[..., y_lo:y_hi, x_lo:x_hi] = out.flip(0)[..., y_lo:y_hi, x_lo:x_hi]
        elif lam != 1.0:
            flipped = out.flip(0).mul_(1.0 - lam)
            out.mul_(lam).add_(flipped)
        targets = mixup_targets(labels, self.spec.num_classes, lam, self.spec.label_smoothing)
        return out, targets

    def forward(self, video: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if video.ndim < 3:
            raise ValueError(f"video must be (B, ..., H, W), got shape {tuple(video.shape)}")
        if video.shape[0] < 2:
            raise ValueError("batch size must be greater than 1 for mixup")  # pySlowFast asserts len(x) > 1
        if labels.shape != (video.shape[0],):
            raise ValueError(f"labels must be ({video.shape[0]},), got {tuple(labels.shape)}")
        if not video.is_floating_point():
            raise TypeError(f"video must be floating point, got {video.dtype}")
        lam, box = self.sample_params(video.shape[-2], video.shape[-1])
        return self.apply(video, labels, lam, box)
