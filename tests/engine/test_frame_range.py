"""Segments: `start`/`end` as frame indices or times pick the frames, and the audio follows (item 13)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from vsrkit.engine.run_infer import FrameRange, frame_range, parse_position
from vsrkit.errors import UserError
from vsrkit.io import open_source


@pytest.fixture(scope="module")
def onepiece_times(real_data):
    path = real_data / "xinntao_Real-ESRGAN/onepiece_demo.mp4"
    with av.open(str(path)) as container:  # independent: PyAV's own frame times
        times = [Fraction(f.pts) * f.time_base for f in container.decode(video=0)]
    return path, [t - times[0] for t in times]


def test_positions_parse():
    assert parse_position(120, "start") == ("frame", 120)
    assert parse_position("120", "start") == ("frame", 120)
    assert parse_position("4.5s", "start") == ("time", Fraction(9, 2))
    assert parse_position("1:02.5", "end") == ("time", Fraction(125, 2))
    assert parse_position("01:00:02", "end") == ("time", Fraction(3602))
    assert parse_position(None, "end") is None
    for bad in ("4.5", "-3", "1:2:3:4", "soon"):
        with pytest.raises(UserError, match=r"`start` must be"):
            parse_position(bad, "start")


def test_frame_range_from_indices_times_and_max_frames(onepiece_times):
    path, times = onepiece_times
    source = open_source(path)
    first_after_2s = next(i for i, t in enumerate(times) if t >= 2)
    first_after_3_5s = next(i for i, t in enumerate(times) if t >= Fraction(7, 2))
    assert frame_range(source) == FrameRange(0, 181, 181)
    assert frame_range(source, "2s", "3.5s") == FrameRange(first_after_2s, first_after_3_5s, 181)
    assert frame_range(source, 10, 20) == FrameRange(10, 20, 181)
    assert frame_range(source, "0s", 3) == FrameRange(0, 3, 181)  # a time on a frame's timestamp takes that frame
    assert frame_range(source, 10, None, max_frames=5) == FrameRange(10, 15, 181)
    assert frame_range(source, "0:05", 10_000) == FrameRange(next(i for i, t in enumerate(times) if t >= 5), 181, 181)
    with pytest.raises(UserError, match=r"`start=181` is at or past the end of .* which has 181 frames"):
        frame_range(source, 181)
    with pytest.raises(UserError, match=r"`end=3s` must come after `start=4s`"):
        frame_range(source, "4s", "3s")


@pytest.mark.slow
def test_segment_with_audio_end_to_end(onepiece_times, tmp_path):
    path, times = onepiece_times
    out = tmp_path / "seg.mkv"
    run = subprocess.run([sys.executable, "-m", "vsrkit.cli", "infer", "method=bicubic", "scale=1", "io.codec=ffv1",
                          f"input={path}", f"output={out}", "start=2s", "end=3.5s"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    first, stop = frame_range(open_source(path), "2s", "3.5s").start, frame_range(open_source(path), "2s", "3.5s").stop
    assert f"frames {first}-{stop - 1} of 181" in run.stdout
    # Scale 1 bicubic is the identity and FFV1 is lossless: the segment's frames exactly.
    assert np.array_equal(open_source(out).read(), open_source(path).read()[first:stop])
    with av.open(str(out)) as container:
        video = [Fraction(f.pts) * f.time_base for f in container.decode(video=0)]
    with av.open(str(out)) as container:
        audio = [Fraction(p.pts) * p.time_base for p in container.demux(audio=0) if p.pts is not None]
    assert video[0] == 0 and video[-1] == pytest.approx(float(times[stop - 1] - times[first]), abs=1e-3)
    # The audio kept is the source's from the segment's first frame on, on the same clock as the video.
    with av.open(str(path)) as container:
        source_audio = [Fraction(p.pts) * p.time_base for p in container.demux(audio=0) if p.pts is not None]
    wanted = [t - times[first] for t in source_audio if times[first] <= t < times[stop - 1] + Fraction(50, 1199)]
    assert len(audio) == len(wanted) and audio[0] == pytest.approx(float(wanted[0]), abs=1e-3)


def test_frames_folder_segment_keeps_names(real_data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(1, 7):
        shutil.copy(real_data / f"yhjo09_VSR-DUF_Vid4/calendar/LR_BDx4/{i:03d}.png", folder / f"{i:03d}.png")
    run = subprocess.run([sys.executable, "-m", "vsrkit.cli", "infer", "method=bicubic", "scale=1", f"input={folder}",
                          f"output={tmp_path / 'out'}", "start=2", "end=5"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["003.png", "004.png", "005.png"]
