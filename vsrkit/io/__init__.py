"""Video IO over PyAV: streaming readers, atomic writers, audio passthrough, I-frame indices.

Frames cross this package's edge as ``(T, H, W, 3)`` numpy RGB, uint8 in [0, 255] (uint16 in
[0, 65535] for sources above 8 bits). Importing it loads av and numpy, never torch.

Typical use (what ``vsrkit infer`` does)::

    for src, dst in list_inputs(input, output):
        source = open_source(src)
        info = source.info
        with VideoWriter(dst, width=4 * info.width, height=4 * info.height, fps=info.fps,
                         time_base=info.time_base, audio_from=src) as writer:
            for chunk in source.chunks(16):
                writer.write(upscale(chunk.frames), pts=chunk.pts)
"""

from vsrkit.io.images import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    is_image,
    is_video,
    list_images,
    natural_key,
    read_image,
    write_image,
)
from vsrkit.io.inputs import list_inputs, list_videos
from vsrkit.io.keyframes import iframe_indices
from vsrkit.io.reader import Chunk, FrameSource, VideoInfo, decode_frames, open_source
from vsrkit.io.writer import CODECS, FramesWriter, VideoWriter

__all__ = [
    "CODECS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Chunk",
    "FrameSource",
    "FramesWriter",
    "VideoInfo",
    "VideoWriter",
    "decode_frames",
    "iframe_indices",
    "is_image",
    "is_video",
    "list_images",
    "list_inputs",
    "list_videos",
    "natural_key",
    "open_source",
    "read_image",
    "write_image",
]
