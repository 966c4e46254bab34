"""Writing videos and frames: exact rates and timestamps, audio, lossless mode, atomic output."""

from __future__ import annotations

import logging
import os
from fractions import Fraction

import av
import numpy as np
import pytest

from vsrkit.errors import UserError
from vsrkit.io import FramesWriter, VideoWriter, open_source, read_image, write_image
from vsrkit.io.publish import partial_path


def _partials(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def _audio_packets(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(audio=0) if packet.dts is not None)


def _copy(source, path, max_frames=None, **kwargs):
    """Read ``source`` and write it back with its timestamps (the `vsrkit infer` data path)."""
    info = source.info
    with VideoWriter(path, width=info.width, height=info.height, fps=info.fps,
                     time_base=info.time_base, **kwargs) as writer:
        for chunk in source.chunks(32, max_frames=max_frames):
            writer.write(chunk.frames, pts=chunk.pts)
    return path


def test_onepiece_round_trip_keeps_count_rate_pts_and_audio(tmp_path, onepiece, helpers):
    source = open_source(onepiece)
    out = _copy(source, tmp_path / "out.mp4", audio_from=onepiece)
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert video.average_rate == Fraction(1199, 50)
        assert video.time_base == Fraction(1, 19184)
        assert video.codec_context.name == "h264"
        assert [a.codec_context.name for a in container.streams.audio] == ["aac"]
    result = open_source(out)
    assert result.info.num_frames == 181
    assert result.frame_pts() == source.frame_pts()
    assert _audio_packets(out) == _audio_packets(onepiece)
    assert helpers.psnr(result.read(8), source.read(8)) > 38  # crf 18, same colour matrix


def test_output_is_faststart(tmp_path, onepiece):
    out = _copy(open_source(onepiece), tmp_path / "out.mp4", max_frames=4)
    data = out.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_old_animation_keeps_71_frames_and_its_audio(tmp_path, old_animation):
    source = open_source(old_animation)
    out = _copy(source, tmp_path / "out.mp4", audio_from=old_animation)
    result = open_source(out)
    assert result.info.num_frames == 71
    assert result.frame_pts() == source.frame_pts()
    assert result.info.has_audio
    assert _audio_packets(out) == _audio_packets(old_animation)


def test_upscaled_dove_clip(tmp_path, dove_002):
    source = open_source(dove_002)
    assert (source.info.width, source.info.height) == (318, 180)
    info = source.info
    path = tmp_path / "x4.mp4"
    with VideoWriter(path, width=1272, height=720, fps=info.fps, time_base=info.time_base) as writer:
        for chunk in source.chunks(4, max_frames=8):
            writer.write(chunk.frames.repeat(4, axis=1).repeat(4, axis=2), pts=chunk.pts)
    result = open_source(path).info
    assert (result.width, result.height, result.num_frames, result.fps) == (1272, 720, 8, Fraction(16))


def test_odd_size_falls_back_to_yuv444p(tmp_path, helpers, caplog):
    frames = helpers.gradient_frames(3, 47, 65)
    with caplog.at_level(logging.WARNING, logger="vsrkit.io.writer"):
        with VideoWriter(tmp_path / "odd.mp4", width=65, height=47, fps=25) as writer:
            writer.write(frames)
    assert "yuv444p" in caplog.text
    info = open_source(tmp_path / "odd.mp4").info
    assert (info.width, info.height, info.pix_fmt) == (65, 47, "yuv444p")


def test_explicit_pix_fmt_is_checked(tmp_path):
    with pytest.raises(UserError, match="needs an even size"):
        VideoWriter(tmp_path / "odd.mp4", width=65, height=47, fps=25, pix_fmt="yuv420p")
    with pytest.raises(UserError, match="not supported by ffv1"):
        VideoWriter(tmp_path / "a.mkv", width=64, height=48, fps=25, codec="ffv1", pix_fmt="gbrp")


def test_ffv1_bgr0_mkv_is_bit_exact(tmp_path, real_data):
    source = open_source(real_data / "zhengchen1999_DOVE" / "003.mp4")
    out = _copy(source, tmp_path / "lossless.mkv", max_frames=10, codec="ffv1")
    result = open_source(out)
    assert result.info.pix_fmt == "bgr0"
    np.testing.assert_array_equal(result.read(), source.read(max_frames=10))


def test_ffv1_sixteen_bit_is_bit_exact(tmp_path):
    frames = np.random.default_rng(0).integers(0, 65536, (3, 24, 32, 3)).astype(np.uint16)
    with VideoWriter(tmp_path / "deep.mkv", width=32, height=24, fps=25, codec="ffv1") as writer:
        writer.write(frames)
    result = open_source(tmp_path / "deep.mkv")
    assert result.info.bit_depth == 16
    np.testing.assert_array_equal(result.read(), frames)


def test_sixteen_bit_h264_is_ten_bit(tmp_path, helpers):
    frames = helpers.gradient_frames(2, 32, 32, dtype=np.uint16)
    with VideoWriter(tmp_path / "deep.mp4", width=32, height=32, fps=25) as writer:
        writer.write(frames)
    info = open_source(tmp_path / "deep.mp4").info
    assert (info.pix_fmt, info.dtype) == ("yuv420p10le", np.uint16)


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_ntsc_rate_without_pts(tmp_path, helpers, suffix):
    rate = Fraction(24000, 1001)
    path = tmp_path / f"ntsc{suffix}"
    with VideoWriter(path, width=32, height=32, fps=rate) as writer:
        writer.write(helpers.gradient_frames(12, 32, 32))
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == rate
    source = open_source(path)
    assert source.info.fps == rate
    assert source.frame_pts() == [i * 1001 for i in range(12)]  # time base 1/24000


def test_ntsc_rate_from_source_pts(tmp_path, helpers):
    rate = Fraction(24000, 1001)
    clip = helpers.write_rgb_clip(tmp_path / "in.mp4", helpers.gradient_frames(10, 32, 32), fps=rate)
    source = open_source(clip)
    assert source.info.fps == rate
    out = _copy(source, tmp_path / "out.mp4")
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == rate
    assert open_source(out).frame_pts() == source.frame_pts()


def test_h265_in_mp4_is_tagged_hvc1(tmp_path, helpers):
    with VideoWriter(tmp_path / "x.mp4", width=32, height=32, fps=25, codec="h265") as writer:
        writer.write(helpers.gradient_frames(3, 32, 32))
    with av.open(str(tmp_path / "x.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.codec_tag) == ("hevc", "hvc1")
    assert open_source(tmp_path / "x.mp4").info.num_frames == 3


@pytest.mark.parametrize(("size", "tag"), [((1280, 720), 1), ((320, 240), 6)])
def test_colours_survive_and_stream_is_tagged(tmp_path, size, tag):
    width, height = size
    colour = np.array([200, 60, 30], np.uint8)
    frames = np.broadcast_to(colour, (2, height, width, 3)).copy()
    with VideoWriter(tmp_path / "c.mp4", width=width, height=height, fps=25) as writer:
        writer.write(frames)
    with av.open(str(tmp_path / "c.mp4")) as container:
        context = container.streams.video[0].codec_context
        assert (int(context.colorspace), int(context.color_range)) == (tag, 1)
    rgb = open_source(tmp_path / "c.mp4").read()[0]
    assert np.abs(rgb[height // 2, width // 2].astype(int) - colour).max() <= 2


def test_trim_audio_drops_audio_past_the_last_frame(tmp_path, onepiece):
    source = open_source(onepiece)
    trimmed = _copy(source, tmp_path / "trim.mp4", max_frames=24, audio_from=onepiece, trim_audio=True)
    untrimmed = _copy(source, tmp_path / "full.mp4", max_frames=24, audio_from=onepiece)
    with av.open(str(trimmed)) as container:
        audio = container.streams.audio[0]
        seconds = float(audio.duration * audio.time_base)
    assert abs(seconds - 24 * 50 / 1199) < 0.05  # 24 frames at 1199/50 fps = 1.0008 s
    assert _audio_packets(untrimmed) == _audio_packets(onepiece) > _audio_packets(trimmed)


def test_audio_the_container_cannot_hold_is_skipped(tmp_path, helpers, caplog):
    # MP4 has no mapping for 8-bit unsigned PCM; MKV does.
    source = tmp_path / "pcm.mkv"
    with av.open(str(source), "w") as container:
        audio = container.add_stream("pcm_u8", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.full((1, 800), 128, np.uint8), format="u8", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    with caplog.at_level(logging.WARNING, logger="vsrkit.io.audio"):
        with VideoWriter(tmp_path / "out.mp4", width=32, height=32, fps=25, audio_from=source) as writer:
            writer.write(helpers.gradient_frames(2, 32, 32))
    assert "Audio skipped" in caplog.text
    assert open_source(tmp_path / "out.mp4").info.has_audio is False
    with VideoWriter(tmp_path / "out.mkv", width=32, height=32, fps=25, audio_from=source) as writer:
        writer.write(helpers.gradient_frames(2, 32, 32))
    assert open_source(tmp_path / "out.mkv").info.has_audio is True


# -- atomic output ----------------------------------------------------------------------------
def test_existing_output_refused_unless_overwrite(tmp_path, helpers):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old")
    with pytest.raises(UserError, match=r"out\.mp4 already exists"):
        VideoWriter(path, width=32, height=32, fps=25)
    with VideoWriter(path, width=32, height=32, fps=25, overwrite=True) as writer:
        writer.write(helpers.gradient_frames(2, 32, 32))
    assert open_source(path).info.num_frames == 2


@pytest.mark.parametrize(("name", "codec"), [("out.mkv", "ffv1"), ("out.mp4", "h264")])
def test_exception_inside_the_writer_removes_the_temporary_file(tmp_path, helpers, name, codec):
    path = tmp_path / name
    with pytest.raises(RuntimeError, match="model failed"):
        with VideoWriter(path, width=32, height=32, fps=25, codec=codec) as writer:
            writer.write(helpers.gradient_frames(3, 32, 32))
            if codec == "ffv1":  # intra-only: its first packets are on disk already
                assert _partials(tmp_path) == [partial_path(path).name]
                assert partial_path(path).name.endswith(f"-{os.getpid()}{path.suffix}")
            raise RuntimeError("model failed")
    assert list(tmp_path.iterdir()) == []


def test_bad_writer_arguments(tmp_path, helpers):
    with pytest.raises(UserError, match="`codec` must be one of"):
        VideoWriter(tmp_path / "a.mp4", width=32, height=32, fps=25, codec="vp9")
    with pytest.raises(UserError, match="cannot hold ffv1"):
        with VideoWriter(tmp_path / "a.webm", width=32, height=32, fps=25, codec="ffv1"):
            pass
    with VideoWriter(tmp_path / "a.mp4", width=32, height=32, fps=25) as writer:
        with pytest.raises(ValueError, match="writer was made for 32x32"):
            writer.write(helpers.gradient_frames(1, 16, 16))
        writer.write(helpers.gradient_frames(1, 32, 32))
    assert _partials(tmp_path) == []


# -- frames and images ----------------------------------------------------------------------
def test_frames_writer_round_trip(tmp_path, helpers):
    frames = helpers.gradient_frames(3, 10, 12)
    with FramesWriter(tmp_path / "out") as writer:
        writer.write(frames[:2])
        writer.write(frames[2:])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    np.testing.assert_array_equal(open_source(tmp_path / "out").read(), frames)
    assert _partials(tmp_path) == []


def test_frames_writer_overwrite_rules(tmp_path, helpers):
    frames = helpers.gradient_frames(1, 10, 12)
    target = tmp_path / "out"
    target.mkdir()
    write_image(target / "old.png", frames[0])
    with pytest.raises(UserError, match="already exists"):
        FramesWriter(target)
    with FramesWriter(target, overwrite=True) as writer:
        writer.write(frames)
    assert sorted(p.name for p in target.iterdir()) == ["000000.png"]
    (target / "keep.txt").write_text("not a frame")
    with pytest.raises(UserError, match="holds more than frames"):
        FramesWriter(target, overwrite=True)


def test_frames_writer_exception_leaves_nothing(tmp_path, helpers):
    with pytest.raises(RuntimeError):
        with FramesWriter(tmp_path / "out") as writer:
            writer.write(helpers.gradient_frames(2, 10, 12))
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_write_image_is_atomic_and_refuses_existing(tmp_path, helpers):
    frame = helpers.gradient_frames(1, 10, 12, dtype=np.uint16)[0]
    path = write_image(tmp_path / "a.png", frame)
    np.testing.assert_array_equal(read_image(path), frame)
    with pytest.raises(UserError, match="already exists"):
        write_image(path, frame)
    with pytest.raises(UserError, match="16-bit images cannot be written as .jpg"):
        write_image(tmp_path / "a.jpg", frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_rotation_and_colour_description_are_carried(tmp_path, old_animation, dove_002):
    # A source tagged rotate=90 (display matrix) keeps it; old_animation_1.mp4 is BT.709 limited at
    # 320x240, where the size alone would pick BT.601 (smpte170m): its tags must win.
    rotated = tmp_path / "rot.mp4"
    with av.open(str(dove_002)) as source, av.open(str(rotated), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        stream.set_display_rotation(90)
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    info = open_source(rotated).info
    assert info.display_matrix == (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)  # FFmpeg's 90 degree matrix
    _copy(open_source(rotated), tmp_path / "r.mp4", max_frames=2, colour=info.colour, display_matrix=info.display_matrix)
    with av.open(str(tmp_path / "r.mp4")) as container:
        assert next(container.decode(video=0)).rotation == 90
    source = open_source(old_animation)
    _copy(source, tmp_path / "oa.mp4", max_frames=2, colour=source.info.colour)
    with av.open(str(tmp_path / "oa.mp4")) as container:
        context = container.streams.video[0].codec_context
        assert (int(context.colorspace), int(context.color_primaries), int(context.color_trc),
                int(context.color_range)) == (1, 1, 1, 1)


def test_full_range_bt709_source_is_written_full_range_bt709(tmp_path):
    from vsrkit.io.convert import ColourTags

    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), 4, 1), 4, 2)
    with VideoWriter(tmp_path / "f.mkv", width=32, height=32, fps=25, codec="h264", crf=0, pix_fmt="yuv444p",
                     colour=ColourTags(matrix=1, primaries=1, transfer=1, range=2)) as writer:
        writer.write(frames)
    with av.open(str(tmp_path / "f.mkv")) as container:
        context = container.streams.video[0].codec_context
        assert (int(context.colorspace), int(context.color_range)) == (1, 2)
        frame = next(container.decode(video=0))
        # Independent decode: swscale told explicitly "BT.709, full range" (not vsrkit's reader).
        from av.video.reformatter import ColorRange, Colorspace
        rgb = frame.to_ndarray(format="rgb24", src_colorspace=Colorspace.ITU709, src_color_range=ColorRange.JPEG,
                               dst_color_range=ColorRange.JPEG)
    assert np.abs(rgb.astype(int) - frames[0].astype(int)).max() <= 3


def test_colour_tags_of_an_untagged_yuvj_frame_are_full_range():
    from vsrkit.io.convert import ColourTags

    assert ColourTags.of(av.VideoFrame(16, 16, "yuvj420p")) == ColourTags(matrix=2, primaries=2, transfer=2, range=2)
    assert ColourTags.of(av.VideoFrame(16, 16, "yuv420p")).range == 0


def test_frames_writer_uses_the_given_names(tmp_path, helpers):
    frames = helpers.gradient_frames(2, 8, 8)
    with FramesWriter(tmp_path / "out", names=["a_001.png", "a_002.tif"]) as writer:
        writer.write(frames)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_001.png", "a_002.tif"]
    assert np.array_equal(read_image(tmp_path / "out" / "a_002.tif"), frames[1])
    with pytest.raises(ValueError, match="got frame 2 but only 1 names"):
        with FramesWriter(tmp_path / "short", names=["x.png"]) as writer:
            writer.write(frames)
    assert not (tmp_path / "short").exists() and not _partials(tmp_path)
