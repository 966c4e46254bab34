"""The tiny SparkVSR trainer and batch that the training tests share (CPU, fp32)."""

from __future__ import annotations

import torch

from vsrkit.backbones import BackboneConfig
from vsrkit.methods.sparkvsr.config import SparkVSRConfig
from vsrkit.methods.sparkvsr.method import SparkVSRMethod

TINY = BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32")


def trainer(**overrides) -> SparkVSRMethod:
    """A tiny SparkVSR set up for training on the CPU with ``SparkVSRConfig(**overrides)``."""
    method = SparkVSRMethod(SparkVSRConfig(**overrides), backbone=TINY, scale=4)
    method.setup_training(torch.device("cpu"))
    return method


def training_batch(t: int, is_image=(False, False), step=0, seed=0) -> dict:
    """A random x4 batch: HQ 32x48, LQ 8x12, ``t`` frames, one sample per ``is_image`` entry."""
    g = torch.Generator().manual_seed(seed)
    b = len(is_image)
    return {"hq": torch.rand(b, 3, t, 32, 48, generator=g) * 2 - 1,
            "lq": torch.rand(b, 3, t, 8, 12, generator=g) * 2 - 1,
            "is_image": torch.tensor(is_image), "index": torch.arange(b) + 5, "step": step}
