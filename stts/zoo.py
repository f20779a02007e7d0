"""Reference figures of the model zoo (spec §5): what the official README says and what the shipped
configs really cost under each counting convention (GFLOPs per view, batch 1). The README's FLOPs of some
rows cannot be reproduced from the shipped configs with either counter (spec §7.2, [unresolved]); the
`fvcore`/`mmcv` columns are the counts of the configs, which our models must match to ±0.01."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    readme_gflops: float | None  # official README (None: not listed there)
    readme_top1: float | None
    fvcore: float | None  # expected counts of the configs (spec §5, §7.2)
    mmcv: float | None


ZOO: dict[str, ZooEntry] = {
    "mvit_b_16x4": ZooEntry(None, None, 70.80, None),
    "mvit_b_16x4_t0.9_s0.9": ZooEntry(56.4, 78.1, 56.39, None),
    "mvit_b_16x4_t0.8_s0.9": ZooEntry(47.2, 77.9, 47.21, None),
    "mvit_b_16x4_t0.6_s0.9": ZooEntry(38.1, 77.5, 38.46, None),
    "mvit_b_16x4_t0.5_s0.7": ZooEntry(23.3, 76.6, 26.95, None),
    "mvit_b_16x4_t0.4_s0.6": ZooEntry(12.1, 75.6, 18.46, None),
    "swin_b_32x2": ZooEntry(None, None, 281.92, 242.55),
    "swin_b_32x2_t0.9": ZooEntry(252.5, 81.9, 261.51, 222.18),
    "swin_b_32x2_t0.8": ZooEntry(223.4, 81.6, 241.09, 201.81),
    "swin_b_32x2_t0.6": ZooEntry(181.4, 81.4, 220.68, 181.43),
    "swin_b_32x2_t0.5": ZooEntry(121.6, 81.1, 210.47, 171.24),
    "swin_b_32x2_t0.4": ZooEntry(91.4, 80.7, 102.47, 91.36),
}


def default_convention(name: str) -> str:
    """The convention the official README uses for this model's family (its spec's)."""
    from .registry import spec_of

    return spec_of(name).flops_convention
