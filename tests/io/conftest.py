"""Fixtures for the video IO tests: real clips (through ``real_data``) and synthetic files.

Synthetic clips are written with PyAV directly, not with vsrkit's writer, so reader tests do
not depend on the code they would otherwise share a bug with.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest


@pytest.fixture
def onepiece(real_data) -> Path:
    """640x480 h264, 181 decoded frames at 1199/50 fps, time base 1/19184, AAC audio."""
    return real_data / "xinntao_Real-ESRGAN" / "onepiece_demo.mp4"


@pytest.fixture
def old_animation(real_data) -> Path:
    """320x240 h264; header says 79 frames, the decoder yields 71; AAC audio; no decoded I-frame."""
    return real_data / "sczhou_Upscale-A-Video" / "old_animation_1.mp4"


@pytest.fixture
def old_movie(real_data) -> Path:
    """480x352 h264 yuvj420p (full range), 27 frames, 15 fps."""
    return real_data / "sczhou_Upscale-A-Video" / "old_movie_1.mp4"


@pytest.fixture
def dove_002(real_data) -> Path:
    """318x180 h264, 32 frames, 16 fps, no audio."""
    return real_data / "zhengchen1999_DOVE" / "002.mp4"


def write_planar_clip(path: Path, planes: tuple[int, int, int], size: tuple[int, int], frames: int = 2,
                      pix_fmt: str = "yuv444p", colorspace: int | None = None) -> Path:
    """Lossless FFV1 clip whose every pixel has the YUV values ``planes`` (untagged by default).

    Args:
        path: Output .mkv path.
        planes: ``(Y, U, V)`` 8-bit sample values.
        size: ``(width, height)``.
        frames: Number of frames.
        pix_fmt: A planar 8-bit YUV format FFV1 accepts.
        colorspace: AVColorSpace tag to store (None: unspecified).
    """
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
        for index in range(frames):
            frame = av.VideoFrame(width, height, pix_fmt)
            for plane, value in zip(frame.planes, planes, strict=True):
                plane.update(np.full(plane.buffer_size, value, np.uint8))
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_rgb_clip(path: Path, frames: np.ndarray, fps: Fraction = Fraction(25), codec: str = "libx264",
                   pix_fmt: str = "yuv420p", options: dict | None = None,
                   display_matrix: list[int] | None = None) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames with PyAV's default conversion (test input only);
    ``options``: the encoder's (``{"qp": "0"}`` for lossless x264), ``display_matrix``: the
    stream's rotation/flip, as FFmpeg's 9 ints."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = dict(options or {})
        if display_matrix is not None:
            stream.set_display_matrix(list(display_matrix))
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def gradient_frames(count: int, height: int, width: int, dtype=np.uint8) -> np.ndarray:
    """Smooth moving RGB gradients, ``(T, H, W, 3)``; frame t is shifted by t pixels."""
    top = 255 if dtype == np.uint8 else 65535
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    out = np.empty((count, height, width, 3), dtype)
    for t in range(count):
        shift = t / max(width, 1)
        out[t, ..., 0] = np.round(top * ((x + shift) % 1.0) * np.ones_like(y))
        out[t, ..., 1] = np.round(top * y * np.ones_like(x))
        out[t, ..., 2] = np.round(top * (0.5 + 0.5 * np.sin(6 * (x + y) + t)))
    return out


def psnr(a: np.ndarray, b: np.ndarray, top: float = 255.0) -> float:
    """PSNR in dB between two arrays of the same shape."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(top * top / mse))


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The clip writers and measures above, for tests (conftest modules are not importable)."""
    return SimpleNamespace(
        write_planar_clip=write_planar_clip,
        write_rgb_clip=write_rgb_clip,
        gradient_frames=gradient_frames,
        psnr=psnr,
    )
