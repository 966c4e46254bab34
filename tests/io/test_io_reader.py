"""Reading videos, frames folders and images: counts, rates, colour, streaming, errors."""

from __future__ import annotations

import logging
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import vsrkit.io.reader as reader_module
from vsrkit.errors import VideoReadError
from vsrkit.io import Chunk, open_source, read_image, write_image


# -- real clips -----------------------------------------------------------------------------
def test_onepiece_info(onepiece):
    info = open_source(onepiece).info
    assert (info.kind, info.width, info.height) == ("video", 640, 480)
    assert info.num_frames == 181
    assert info.fps == Fraction(1199, 50)
    assert info.time_base == Fraction(1, 19184)
    assert (info.pix_fmt, info.bit_depth, info.dtype) == ("yuv420p", 8, np.uint8)
    assert info.has_audio is True


def test_old_animation_counts_decoded_frames_not_header(old_animation):
    with av.open(str(old_animation)) as container:
        assert container.streams.video[0].frames == 79  # what the header claims
    source = open_source(old_animation)
    assert source.info.num_frames == 71
    assert len(source.frame_pts()) == 71
    assert sum(len(chunk) for chunk in source.chunks(16)) == 71


def test_chunks_shapes_pts_and_max_frames(onepiece):
    source = open_source(onepiece)
    chunks = list(source.chunks(16, max_frames=40))
    assert [len(c) for c in chunks] == [16, 16, 8]
    assert [c.start for c in chunks] == [0, 16, 32]
    assert chunks[0].frames.shape == (16, 480, 640, 3)
    assert chunks[0].frames.dtype == np.uint8
    pts = [p for c in chunks for p in c.pts]
    assert pts == source.frame_pts()[:40]
    # onepiece is constant rate: 19184 / (1199 / 50) = 800 ticks per frame.
    assert pts[:3] == [0, 800, 1600]


def test_chunks_rejects_bad_arguments(onepiece):
    source = open_source(onepiece)
    with pytest.raises(ValueError, match="size"):
        next(source.chunks(0))
    assert list(source.chunks(4, max_frames=0)) == []


def test_full_range_yuvj_is_not_stretched(old_movie):
    # A grey-scale yuvj420p film: chroma is 128, so full-range RGB equals the luma plane.
    with av.open(str(old_movie)) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "yuvj420p"
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : frame.width]
    rgb = open_source(old_movie).read(max_frames=1)[0]
    assert int(luma.max()) == 212  # a limited-range reading would stretch this to 229
    np.testing.assert_array_equal(rgb[..., 0], luma)
    np.testing.assert_array_equal(rgb[..., 1], luma)


# -- colour matrix --------------------------------------------------------------------------
# (Y, U, V) = (100, 90, 200), limited range. Exact float references:
# BT.709 -> (227.3, 68.1, 17.7), BT.601 -> (213.4, 54.1, 21.0).
@pytest.mark.parametrize(
    ("size", "tag", "expected"),
    [
        ((1280, 720), None, (227, 68, 18)),  # untagged HD -> BT.709
        ((320, 240), None, (213, 54, 21)),  # untagged SD -> BT.601
        ((320, 240), 1, (227, 68, 18)),  # tagged BT.709 wins over the size
        ((1280, 720), 6, (213, 54, 21)),  # tagged SMPTE 170M (BT.601) wins over the size
    ],
)
def test_colour_matrix_follows_tag_then_size(tmp_path, helpers, size, tag, expected):
    path = helpers.write_planar_clip(tmp_path / "c.mkv", (100, 90, 200), size, colorspace=tag)
    rgb = open_source(path).read()[0]
    assert np.abs(rgb[size[1] // 2, size[0] // 2].astype(int) - np.array(expected)).max() <= 2


# -- frames folders and images ----------------------------------------------------------------
def test_frames_folder_natural_order_and_fps(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for value, name in [(10, "f1.png"), (20, "f2.png"), (100, "f10.png")]:
        write_image(folder / name, np.full((6, 8, 3), value, np.uint8))
    (folder / "notes.txt").write_text("ignored")
    source = open_source(folder)
    assert (source.info.kind, source.info.num_frames, source.info.fps) == ("frames", 3, None)
    chunk = next(source.chunks(8))
    assert [int(f[0, 0, 0]) for f in chunk.frames] == [10, 20, 100]
    assert chunk.pts == [0, 1, 2]
    timed = open_source(folder, frames_fps=Fraction(30000, 1001))
    assert timed.info.fps == Fraction(30000, 1001)
    assert timed.info.time_base == Fraction(1001, 30000)


def test_real_frames_folder(real_data):
    info = open_source(real_data / "yhjo09_VSR-DUF_Vid4" / "calendar" / "LR_BDx4").info
    assert (info.kind, info.width, info.height, info.num_frames) == ("frames", 180, 144, 20)


def test_frames_folder_with_a_differently_sized_frame(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    write_image(folder / "1.png", np.zeros((6, 8, 3), np.uint8))
    write_image(folder / "2.png", np.zeros((6, 10, 3), np.uint8))
    with pytest.raises(VideoReadError, match="2.png is 10x6"):
        list(open_source(folder).chunks(4))


def test_sixteen_bit_frames_come_as_uint16(tmp_path, helpers):
    folder = tmp_path / "frames16"
    folder.mkdir()
    frames = helpers.gradient_frames(2, 12, 16, dtype=np.uint16)
    for index, frame in enumerate(frames):
        write_image(folder / f"{index}.png", frame)
    source = open_source(folder)
    assert (source.info.bit_depth, source.info.dtype) == (16, np.uint16)
    np.testing.assert_array_equal(source.read(), frames)


def test_single_image(real_data):
    source = open_source(real_data / "XPixelGroup_BasicSR" / "baboon.png")
    info = source.info
    assert (info.kind, info.num_frames, info.fps, info.time_base) == ("image", 1, None, None)
    (chunk,) = list(source.chunks(4))
    assert isinstance(chunk, Chunk)
    assert chunk.pts is None
    assert chunk.frames.shape == (1, info.height, info.width, 3)
    np.testing.assert_array_equal(chunk.frames[0], read_image(info.path))


def test_image_formats_read_back(tmp_path, helpers):
    frame = helpers.gradient_frames(1, 20, 30)[0]
    for suffix in (".png", ".bmp", ".tif"):
        np.testing.assert_array_equal(read_image(write_image(tmp_path / f"x{suffix}", frame)), frame)
    assert helpers.psnr(read_image(write_image(tmp_path / "x.jpg", frame)), frame) > 35


# -- streaming is lazy ----------------------------------------------------------------------
def test_first_chunk_decodes_only_a_few_frames(onepiece, monkeypatch):
    decoded = []
    real_decode = reader_module.decode_frames

    def counting_decode(path):
        for frame in real_decode(path):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(reader_module, "decode_frames", counting_decode)
    source = open_source(onepiece)
    chunk = next(source.chunks(4))
    assert len(chunk) == 4
    assert len(decoded) == 4  # of 181


def test_streaming_memory_stays_far_below_the_clip(onepiece):
    whole_clip = 181 * 480 * 640 * 3  # 167 MB as uint8
    source = open_source(onepiece)
    tracemalloc.start()
    try:
        frames = sum(len(chunk) for chunk in source.chunks(8))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == 181
    assert peak < whole_clip / 8  # a few 7.4 MB chunks at most


# -- bad inputs -----------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(VideoReadError, match=r"nothing\.mp4 does not exist"):
        open_source(tmp_path / "nothing.mp4")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")
    with pytest.raises(VideoReadError, match=r"notes\.mp4 is not a readable video"):
        open_source(path)


def test_truncated_mp4(tmp_path, onepiece):
    data = onepiece.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: int(len(data) * 0.4)])
    with pytest.raises(VideoReadError, match=r"cut\.mp4 is not a readable video"):
        open_source(path)


def test_zero_decodable_frames(tmp_path, helpers):
    # A real container whose video packets are all zeros: it opens, but nothing decodes.
    good = helpers.write_rgb_clip(tmp_path / "good.mp4", helpers.gradient_frames(4, 32, 32))
    bad = tmp_path / "zeros.mkv"
    with av.open(str(good)) as source, av.open(str(bad), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(video=0):
            if packet.dts is None:
                continue
            blank = av.Packet(bytes(packet.size))
            blank.pts, blank.dts, blank.time_base = packet.pts, packet.dts, packet.time_base
            blank.stream = stream
            out.mux(blank)
    with pytest.raises(VideoReadError, match=r"zeros\.mkv has no decodable video frames"):
        open_source(bad)


def test_audio_only_file(tmp_path, onepiece):
    path = tmp_path / "sound.m4a"
    with av.open(str(onepiece)) as source, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(audio=0):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    with pytest.raises(VideoReadError, match=r"sound\.m4a is not a readable video: it has no video stream"):
        open_source(path)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="contains no frames or videos"):
        open_source(tmp_path / "empty")


def test_unreadable_image(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(VideoReadError, match=r"broken\.png is not a readable image"):
        open_source(path)
    folder = tmp_path / "frames"
    folder.mkdir()
    path.rename(folder / "0001.png")
    with pytest.raises(VideoReadError, match=r"0001\.png is not a readable image"):
        open_source(folder)


def test_error_messages_are_one_line(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("x")
    with pytest.raises(VideoReadError) as caught:
        open_source(path)
    assert "\n" not in str(caught.value)


def test_raw_stream_without_timestamps_gets_increasing_pts(tmp_path, dove_002, caplog):
    raw = tmp_path / "raw.h264"
    with av.open(str(dove_002)) as source, av.open(str(raw), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(video=0):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    source = open_source(raw)
    # A raw H.264 stream has no timing: FFmpeg assumes 25 fps in a 1/1200000 time base.
    assert (source.fps, source.time_base) == (Fraction(25), Fraction(1, 1200000))
    pts = [p for chunk in source.chunks(8) for p in chunk.pts]
    assert pts == [i * 48000 for i in range(32)]
    assert "missing or repeated timestamps" in caplog.text


def test_header_facts_need_no_decoding(onepiece, monkeypatch):
    source = open_source(onepiece)
    monkeypatch.setattr(reader_module, "decode_frames", None)  # any decoding would fail now
    assert (source.width, source.height, source.fps) == (640, 480, Fraction(1199, 50))
    assert (source.time_base, source.dtype, source.has_audio) == (Fraction(1, 19184), np.uint8, True)


def test_hd_jpeg_uses_jfif_colours(tmp_path):
    # JFIF is BT.601 at every size; a BT.709 encode would shift colours in PIL and browsers.
    from PIL import Image

    colour = np.array([200, 60, 30], np.uint8)
    path = write_image(tmp_path / "hd.jpg", np.broadcast_to(colour, (720, 1280, 3)).copy())
    seen_by_pil = np.asarray(Image.open(path).convert("RGB"))[360, 640].astype(int)
    assert np.abs(seen_by_pil - colour).max() <= 2
    assert np.abs(read_image(path)[360, 640].astype(int) - colour).max() <= 2


def _faststart_copy(src: Path, dst: Path) -> Path:
    """Remux ``src`` with the index (moov) first, as streaming sites serve MP4s."""
    with av.open(str(src)) as source, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def _pyav_frames(path: Path) -> list:
    # Independent reference: PyAV's own decode loop, single-threaded, stopping at the first error.
    frames = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError:
            pass
    return frames


def test_faststart_mp4_cut_in_half_is_reported_with_both_counts(tmp_path, dove_002):
    whole = _faststart_copy(dove_002, tmp_path / "fs.mp4")
    data = whole.read_bytes()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    source = open_source(cut)
    info = source.info
    assert (info.num_frames, info.declared_frames) == (17, 32)
    assert info.truncated == ("truncated: decoding stopped early (packet 17 is cut short); 17 frames decoded, the "
                              "container declares 32")
    frames = source.read()
    assert frames.shape[0] == 17
    # What decoded is the start of the clip, frame for frame, and as many frames as PyAV's own
    # single-threaded decode of the cut file gives before its error.
    assert np.array_equal(frames, open_source(dove_002).read(17))
    assert len(_pyav_frames(cut)) <= 17
    assert open_source(whole).info.truncated is None


def test_matroska_cut_short_is_reported_from_its_duration(tmp_path, helpers):
    clip = helpers.write_rgb_clip(tmp_path / "a.mkv", helpers.gradient_frames(20, 32, 48), codec="ffv1",
                                  pix_fmt="bgr0")
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    info = open_source(cut).info
    assert info.declared_frames == 20 and info.num_frames < 12
    assert "the file ends" in info.truncated and "the container declares 20" in info.truncated
    assert open_source(clip).info.truncated is None


def test_header_count_mismatch_is_information_not_truncation(old_animation, caplog):
    with caplog.at_level(logging.INFO, logger="vsrkit.io.reader"):
        info = open_source(old_animation).info
    assert (info.num_frames, info.declared_frames, info.truncated) == (71, 79, None)
    assert any("declares 79 frames and 71 decode, without a decoding error" in r.getMessage() for r in caplog.records)


def test_resolution_change_mid_stream_is_one_clear_error(tmp_path, helpers):
    parts = []
    for name, (h, w) in (("a", (32, 48)), ("b", (48, 64))):
        path = tmp_path / f"{name}.h264"
        with av.open(str(path), "w", format="h264") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for rgb in helpers.gradient_frames(3, h, w):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode(None))
        parts.append(path.read_bytes())
    joined = tmp_path / "joined.h264"
    joined.write_bytes(parts[0] + parts[1])
    with pytest.raises(VideoReadError, match=r"joined\.h264 changes resolution at frame 3: 64x48 after 48x32"):
        open_source(joined).read()


def _damage_packets(src: Path, dst: Path, damaged: set[int], how: str = "random") -> Path:
    """Copy ``src`` with the payload of the packets numbered in ``damaged`` (decoding order)
    replaced: random bytes after the first four, or cut to a third."""
    rng = np.random.default_rng(0)
    with av.open(str(src)) as source, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        index = 0
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is None:
                continue
            if index in damaged:
                data = bytearray(bytes(packet))
                if how == "random":
                    data[4:] = rng.integers(0, 256, len(data) - 4, dtype=np.uint8).tobytes()
                else:
                    data = data[: len(data) // 3]
                broken = av.Packet(bytes(data))
                broken.pts, broken.dts, broken.time_base = packet.pts, packet.dts, packet.time_base
                broken.is_keyframe = packet.is_keyframe
                packet = broken
            packet.stream = stream
            out.mux(packet)
            index += 1
    return dst


def _ffmpeg_frames(path: Path) -> list[tuple[int, str]]:
    """``(pts, md5 of the raw decoded frame)`` of every frame FFmpeg's command line decodes."""
    import subprocess

    ffmpeg = pytest.importorskip("imageio_ffmpeg").get_ffmpeg_exe()
    listing = subprocess.run([ffmpeg, "-v", "quiet", "-i", str(path), "-fps_mode", "passthrough", "-copyts",
                              "-f", "framemd5", "-"], capture_output=True, text=True, check=True).stdout
    rows = [line.split(",") for line in listing.splitlines() if line and not line.startswith("#")]
    return [(int(row[2]), row[5].strip()) for row in rows]


@pytest.mark.parametrize("how", ["random", "cut"])
def test_a_damaged_packet_costs_its_frame_and_decoding_goes_on_like_ffmpeg(tmp_path, dove_002, how):
    # DOVE 002 has 32 frames. Packet 12's payload is destroyed: FFmpeg's command line skips it and
    # decodes the other 31; so does vsrkit, frame for frame (md5 of the raw decoded picture, pts
    # in FFmpeg's 1/16 output time base). The release's habit of stopping at the first error
    # would have kept 12.
    import hashlib

    bad = _damage_packets(dove_002, tmp_path / "bad.mp4", {12}, how)
    expected = _ffmpeg_frames(bad)
    assert len(expected) == 31
    source = open_source(bad)
    info = source.info
    assert (info.num_frames, info.declared_frames) == (31, 32)
    assert info.truncated.startswith("damaged: 1 packet could not be decoded and decoding went on (the first "
                                     "reported at packet ")
    assert info.truncated.endswith("; 31 frames decoded, the container declares 32")
    ours = [(pts * 16 // 16384, hashlib.md5(frame.to_ndarray().tobytes()).hexdigest())
            for pts, frame in zip(source.frame_pts(), reader_module.decode_frames(bad))]
    assert ours == expected
    assert source.read().shape[0] == 31


def test_the_report_names_the_first_of_several_damaged_packets(tmp_path, dove_002):
    import re

    bad = _damage_packets(dove_002, tmp_path / "bad.mp4", {2, 28})
    info = open_source(bad).info
    assert info.num_frames == len(_ffmpeg_frames(bad)) == 30
    found = re.fullmatch(r"damaged: 2 packets could not be decoded and decoding went on \(the first reported at "
                         r"packet (\d+): .+\); 30 frames decoded, the container declares 32", info.truncated)
    assert found, info.truncated
    # Frame threads report a refused packet a few packets late (at most 16, FFmpeg's thread cap),
    # so the first is named near packet 2, well before packet 28.
    assert 2 <= int(found.group(1)) < 2 + 16


def test_damaged_and_truncated_are_one_line(tmp_path, dove_002):
    bad = _faststart_copy(_damage_packets(dove_002, tmp_path / "damaged.mp4", {5, 9}), tmp_path / "bad.mp4")
    with av.open(str(bad)) as container:
        ends = [p.pos + p.size for p in container.demux(video=0) if p.dts is not None]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(bad.read_bytes()[: ends[19]])
    info = open_source(cut).info
    assert info.truncated.startswith("truncated: decoding stopped early (the file ends after 20 of the 32 packets "
                                     "its index lists); 2 packets could not be decoded and decoding went on")
    assert info.num_frames == len(_ffmpeg_frames(cut)) == 18


def test_a_damaged_first_packet_is_skipped_by_the_probe_too(tmp_path, helpers):
    # An all-intra clip whose first packet is destroyed: the probe must find frame 1, not give up.
    clip = helpers.write_rgb_clip(tmp_path / "intra.mp4", helpers.gradient_frames(6, 32, 48), options={"g": "1"})
    bad = _damage_packets(clip, tmp_path / "bad.mp4", {0})
    info = open_source(bad).info
    assert info.num_frames == len(_ffmpeg_frames(bad)) == 5
    assert info.truncated.startswith("damaged: 1 packet could not be decoded")


def test_mp4_cut_between_packets_is_reported_from_its_index(tmp_path, dove_002):
    # Cut exactly after packet 10: no packet is damaged, but the index lists 32.
    whole = _faststart_copy(dove_002, tmp_path / "fs.mp4")
    with av.open(str(whole)) as container:
        ends = [p.pos + p.size for p in container.demux(video=0) if p.dts is not None]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: ends[9]])
    info = open_source(cut).info
    assert info.truncated == ("truncated: decoding stopped early (the file ends after 10 of the 32 packets its index "
                              "lists); 10 frames decoded, the container declares 32")
    assert info.num_frames == 10
