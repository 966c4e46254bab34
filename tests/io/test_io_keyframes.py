"""Codec keyframe (I-frame) indices in decoded-frame numbering."""

from __future__ import annotations

import numpy as np
import pytest

from vsrkit.errors import VideoReadError
from vsrkit.io import iframe_indices, write_image


def test_onepiece_has_two_iframes(onepiece):
    assert iframe_indices(onepiece) == [0, 100]


def test_old_animation_has_none_among_decoded_frames(old_animation):
    # Its edit list drops the leading packets; the first decoded frame is a P-frame.
    assert iframe_indices(old_animation) == []


def test_single_gop_clip(dove_002):
    assert iframe_indices(dove_002) == [0]


def test_frames_folder_has_no_codec_keyframes(tmp_path):
    write_image(tmp_path / "f" / "1.png", np.zeros((4, 4, 3), np.uint8))
    assert iframe_indices(tmp_path / "f") == []


def test_unreadable_video(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_text("no video")
    with pytest.raises(VideoReadError, match="is not a readable video"):
        iframe_indices(path)
