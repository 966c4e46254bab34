"""`vsrkit infer method=turbovsr` as users type it (tiny preset, CPU, subprocess): a video keeps its
frame count, an image comes out as an image, both at 4x; bad options end with one error line."""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def _vsrkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", *args], capture_output=True, text=True, cwd=cwd)


def _write_video(path, frames: int, height: int, width: int):
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_infer_video_and_image_on_the_tiny_preset(tmp_path):
    video = tmp_path / "clip.mp4"
    _write_video(video, frames=11, height=24, width=40)
    out = _vsrkit("infer", "method=turbovsr", "backbone=ltx-video-2b-tiny", f"input={video}",
                  f"output={tmp_path / 'up.mp4'}", "method.segment=17", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    with av.open(str(tmp_path / "up.mp4")) as c:
        stream = c.streams.video[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        count = sum(1 for _ in c.decode(video=0))
    assert (size, count) == ((160, 96), 11)

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 36, 3), dtype=np.uint8)).save(image)
    out = _vsrkit("infer", "method=turbovsr", "backbone=ltx-video-2b-tiny", f"input={image}",
                  f"output={tmp_path / 'photo_x4.png'}", "method.tile=64", "method.tile_overlap=32", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Image.open(tmp_path / "photo_x4.png").size == (144, 80)


def test_bad_option_is_one_error_line_before_loading(tmp_path):
    _write_video(tmp_path / "a.mp4", frames=2, height=16, width=16)
    out = _vsrkit("infer", "method=turbovsr", "backbone=ltx-video-2b-tiny", "input=a.mp4", "output=b.mp4",
                  "method.segment_overlap=8", cwd=tmp_path)
    assert out.returncode == 2
    assert "segment_overlap" in out.stderr and "Got 8" in out.stderr
    assert "Traceback" not in out.stderr
