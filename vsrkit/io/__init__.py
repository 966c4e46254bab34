"""Video IO over PyAV: streaming readers, atomic writers, audio passthrough, I-frame indices.

Frames cross this package's edge as ``(T, H, W, 3)`` numpy RGB, uint8 in [0, 255] (uint16 in
[0, 65535] for sources above 8 bits). Its names load on first use (av and numpy then), never
torch; the file kinds (:mod:`vsrkit.io.kinds`) need neither.

Typical use (what ``vsrkit infer`` does)::

    for src, dst in list_inputs(input, output):
        source = open_source(src)
        info = source.info
        with VideoWriter(dst, width=4 * info.width, height=4 * info.height, fps=info.fps,
                         time_base=info.time_base, audio_from=src) as writer:
            for chunk in source.chunks(16):
                writer.write(upscale(chunk.frames), pts=chunk.pts)
"""

import importlib

# Where each public name lives. Names load on first use, so `import vsrkit.io` (and the av-free
# vsrkit.io.kinds, which the data presets use) does not load FFmpeg.
_EXPORTS = {
    "CODECS": "writer",
    "IMAGE_EXTENSIONS": "kinds",
    "VIDEO_EXTENSIONS": "kinds",
    "Chunk": "reader",
    "FrameSource": "reader",
    "FramesWriter": "writer",
    "VideoInfo": "reader",
    "VideoWriter": "writer",
    "check_output": "writer",
    "decode_frames": "reader",
    "iframe_indices": "keyframes",
    "is_image": "kinds",
    "is_video": "kinds",
    "list_images": "kinds",
    "list_inputs": "inputs",
    "list_videos": "inputs",
    "natural_key": "kinds",
    "open_source": "reader",
    "read_image": "images",
    "writable_image": "kinds",
    "write_image": "images",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vsrkit.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vsrkit.io.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "CODECS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Chunk",
    "FrameSource",
    "FramesWriter",
    "VideoInfo",
    "VideoWriter",
    "check_output",
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
    "writable_image",
    "write_image",
]
