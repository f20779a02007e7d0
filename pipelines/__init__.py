"""Data pipelines: sampling, decoding, augmentation and the loader."""

from pipelines.loader import Batch, build_loader

__all__ = ["Batch", "build_loader"]
