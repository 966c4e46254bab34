"""Pseudo-videos from one image: measured motion (OpenCV Farneback flow) is non-zero and bounded."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from datahelpers import load_rgb

from vsrkit.data.config import MotionConfig
from vsrkit.data.pseudo_video import render, sample_motion


@pytest.fixture(scope="module")
def baboon(real_data) -> torch.Tensor:
    return load_rgb(real_data / "XPixelGroup_BasicSR" / "baboon.png")  # (3, 480, 500)


def flows(video: torch.Tensor) -> list[np.ndarray]:
    """Farneback flow (H, W, 2) between consecutive frames of (C, T, H, W) in [0, 1]."""
    gray = [cv2.cvtColor((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
            for f in video.transpose(0, 1)]
    return [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0) for a, b in zip(gray[:-1], gray[1:])]


def test_motion_is_nonzero_and_bounded(baboon):
    cfg = MotionConfig()
    size, short = (128, 128), min(baboon.shape[-2:])
    # Largest displacement per frame the ranges allow at the window's corners: translation on
    # both axes, plus rotation and zoom acting on the corner radius; 1 px slack for the estimator.
    radius = math.hypot(size[0] / 2, size[1] / 2)
    bound = (math.hypot(cfg.max_translation * short, cfg.max_translation * short)
             + radius * math.radians(cfg.max_rotation) + radius * cfg.max_zoom + 1.0)
    medians = []
    for seed in range(4):
        video = render(baboon, 6, size, cfg, torch.Generator().manual_seed(seed))
        assert tuple(video.shape) == (3, 6, 128, 128)
        for flow in flows(video):
            magnitude = np.linalg.norm(flow, axis=2)[8:-8, 8:-8]
            medians.append(float(np.median(magnitude)))
            assert float(np.percentile(magnitude, 99)) < bound
    assert min(medians) > 0.2, medians  # every clip moves


def test_translation_matches_the_drawn_velocity(baboon):
    cfg = MotionConfig(max_translation=0.008, max_rotation=0.0, max_zoom=0.0)
    generator = torch.Generator().manual_seed(11)
    vx, vy, _, _ = sample_motion(cfg, min(baboon.shape[-2:]), torch.Generator().manual_seed(11))
    video = render(baboon, 5, (128, 160), cfg, generator)
    for flow in flows(video):
        # The window moves by +v, so the content moves by -v in the frame.
        fx, fy = (float(np.median(flow[16:-16, 16:-16, i])) for i in (0, 1))
        assert abs(fx + vx) < 0.3 and abs(fy + vy) < 0.3, (fx, fy, vx, vy)


def test_first_frame_is_an_exact_crop(baboon):
    video = render(baboon, 4, (64, 96), MotionConfig(), torch.Generator().manual_seed(0))
    first = video[:, 0]
    # Find the crop in the image: an exact match exists.
    h, w = first.shape[-2:]
    found = any(torch.equal(baboon[:, y:y + h, x:x + w], first)
                for y in range(baboon.shape[1] - h + 1) for x in range(0, baboon.shape[2] - w + 1)
                if torch.equal(baboon[:, y, x], first[:, 0, 0]))
    assert found


def test_still_and_tiny_images():
    image = torch.rand(3, 40, 40)
    video = render(image, 5, (40, 40), MotionConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(video, image[:, None].expand(3, 5, 40, 40))  # no room to move: a still clip
    one = render(image, 1, (32, 32), MotionConfig(), torch.Generator().manual_seed(0))
    assert tuple(one.shape) == (3, 1, 32, 32)
