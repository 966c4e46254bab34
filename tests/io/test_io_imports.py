"""`import vsrkit.io` is cheap: names load on first use (av then, never torch); the file kinds need no av."""

from __future__ import annotations

import subprocess
import sys


def _loaded(code: str) -> list[str]:
    probe = f"import sys; {code}; print(*[m in sys.modules for m in ('torch', 'av')])"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()


def test_import_loads_av_on_first_use_and_never_torch():
    assert _loaded("import vsrkit.io") == ["False", "False"]
    assert _loaded("from vsrkit.io import open_source") == ["False", "True"]
    assert _loaded("from vsrkit.io.kinds import is_video; from vsrkit.data.files import list_images") == ["False", "False"]


def test_one_list_of_file_kinds():
    import vsrkit.data.files as data_files
    import vsrkit.data.media as media
    import vsrkit.io as vio
    from vsrkit.io import images, kinds

    for name in ("IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "is_image", "is_video", "list_images"):
        assert getattr(data_files, name) is getattr(kinds, name) is getattr(media, name) is getattr(vio, name)
    assert set(kinds.WRITABLE_IMAGE_EXTENSIONS) == set(images._IMAGE_ENCODERS)
    assert set(kinds.WRITABLE_IMAGE_EXTENSIONS) < set(kinds.IMAGE_EXTENSIONS)


def test_outputs_that_cannot_be_written_are_refused_up_front(tmp_path):
    import pytest

    from vsrkit.errors import UserError
    from vsrkit.io import check_output

    for name in ("o.ts", "o.y4m", "o.mpg"):
        with pytest.raises(UserError, match=rf"Output .*{name}: a \.\w+ file cannot hold h264 video"):
            check_output(tmp_path / name, "h264")
    with pytest.raises(UserError, match=r"\.mov file cannot hold ffv1 video \(it holds h264, h265: set io.codec\)"):
        check_output(tmp_path / "o.mov", "ffv1")
    with pytest.raises(UserError, match=r"reads \.webp images but cannot write them"):
        check_output(tmp_path / "o.webp")
    with pytest.raises(UserError, match=r"\.txt is neither a video nor an image type"):
        check_output(tmp_path / "o.txt")
    for name, codec in (("o.mp4", "h264"), ("o.mkv", "ffv1"), ("o.flv", "h264"), ("o.wmv", "h264"), ("o.png", "h264"),
                        ("frames", "h264")):
        check_output(tmp_path / name, codec)
    assert list(tmp_path.iterdir()) == []


def test_training_reader_keeps_sixteen_bits_and_the_colour_tags(tmp_path, real_data):
    import av
    import numpy as np

    from vsrkit.data.media import read_image, read_video_clip
    from vsrkit.io import open_source

    # A 16-bit PNG encoded by PyAV directly (PIL cannot write 48-bit RGB).
    rgb = (np.arange(4 * 6 * 3, dtype=np.uint16).reshape(4, 6, 3) * 997).astype(np.uint16)
    context = av.CodecContext.create("png", "w")
    context.width, context.height, context.pix_fmt = 6, 4, "rgb48be"
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le").reformat(format="rgb48be")
    (tmp_path / "deep.png").write_bytes(b"".join(bytes(p) for p in context.encode(frame) + context.encode(None)))
    deep = read_image(tmp_path / "deep.png")
    assert deep.dtype == np.uint16 and np.array_equal(deep, rgb)
    # BT.709-tagged video: the seek reader converts like the streaming one (not swscale's BT.601 default).
    clip = real_data / "sczhou_Upscale-A-Video/old_animation_1.mp4"
    assert np.array_equal(read_video_clip(clip, 0, 3), open_source(clip).read(3))


def test_lossless_mkv_writer_is_atomic(tmp_path):
    import numpy as np
    import pytest

    from vsrkit.data.media import write_lossless_mkv

    target = tmp_path / "t.mkv"
    with pytest.raises(ValueError):
        write_lossless_mkv(target, np.zeros((2, 8, 8, 3), np.float32))  # not uint8: fails after opening
    assert list(tmp_path.iterdir()) == []
    write_lossless_mkv(target, np.full((2, 8, 8, 3), 7, np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["t.mkv"]
