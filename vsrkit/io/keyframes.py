"""Codec keyframe (I-frame) indices, for methods that take reference frames (SparkVSR)."""

from __future__ import annotations

import os
from pathlib import Path

import av

from vsrkit.io.reader import decode_frames, open_source


def iframe_indices(path: str | os.PathLike) -> list[int]:
    """Indices of the frames the codec stored as keyframes or I-frames.

    Indices count decoded frames (0 = first frame the decoder yields, the numbering of
    :meth:`FrameSource.chunks`), so frames an edit list drops are not counted; they are never
    derived from ``pts * fps``. The list can be empty: old_animation_1.mp4 starts on a P-frame
    after its edit list and has no I-frame among its 71 decoded frames. Callers then fall back
    to frame 0. A frames folder or an image has no codec keyframes and also returns ``[]``.

    Args:
        path: A video file.

    Returns:
        Increasing frame indices, e.g. ``[0, 100]`` for onepiece_demo.mp4.

    Raises:
        VideoReadError: The file cannot be read as a video.
    """
    path = Path(path)
    source = open_source(path)  # checks the input and gives the same errors as reading it
    if source.kind != "video":
        return []
    indices = []
    for index, frame in enumerate(decode_frames(path)):
        # PyAV 18 returns pict_type as an int enum (older versions returned "I"/"P" strings).
        if frame.key_frame or frame.pict_type == av.video.frame.PictureType.I:
            indices.append(index)
    return indices
