"""Keyframes per window: carried pseudo-keyframes (WindowSpec.carry_keyframes), positions in the
clip's temporal padding, and the padding values the engine hands a method."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from vsrkit.engine.inference import WindowRunner, model_to_frames, upscale_stream
from vsrkit.engine.keyframes import keyframes_in_window
from vsrkit.methods.protocol import WindowContext, WindowSpec


class _Chunk:
    def __init__(self, frames):
        self.frames, self.pts = frames, None


class _Offset:
    """Nearest x2 plus ``frame_start / 100``: each window's raw output is known; records keyframes."""

    def __init__(self, spec):
        self.spec, self.keyframes, self.inputs = spec, [], []

    def window_spec(self):
        return self.spec

    def upscale(self, lq, context: WindowContext):
        self.keyframes.append({k: v.clone() for k, v in context.keyframes.items()})
        self.inputs.append(lq.clone())
        s = self.spec.scale
        return lq.repeat_interleave(s, -1).repeat_interleave(s, -2) + context.frame_start / 100.0


def _frames(n, h=4, w=6, seed=0):
    return np.random.default_rng(seed).integers(0, 200, (n, h, w, 3), dtype=np.uint8)


def _up(frame: np.ndarray, s: int = 2) -> torch.Tensor:
    x = torch.from_numpy(frame.astype(np.float32)).permute(2, 0, 1) / 255.0 * 2 - 1
    return x.repeat_interleave(s, -1).repeat_interleave(s, -2)


def _stream(method, frames, keyframes):
    runner = WindowRunner(method, method.spec, torch.device("cpu"))
    return torch.cat([o for o, _ in upscale_stream(runner, [_Chunk(frames)], len(frames), keyframes)], dim=1)


def _spec(**changes):
    base = dict(scale=2, frame_multiple=8, frame_offset=1, window=9, overlap=1, stride_multiple=4,
                uses_keyframes=True, carry_keyframes=True)
    return WindowSpec(**{**base, **changes})


def _image(value=0.5):
    return torch.full((3, 8, 12), value)


def test_one_keyframe_reaches_every_window_through_carried_frames():
    frames = _frames(25)  # windows (0, 9), (8, 17), (16, 25)
    method = _Offset(_spec())
    _stream(method, frames, {0: _image()})
    assert [sorted(k) for k in method.keyframes] == [[0], [0], [0]]
    # Window 2's keyframe is window 1's raw output at frame 8; window 3's is window 2's at frame 16.
    torch.testing.assert_close(method.keyframes[1][0], _up(frames[8]) + 0.0)
    torch.testing.assert_close(method.keyframes[2][0], _up(frames[16]) + 0.08)
    torch.testing.assert_close(method.keyframes[0][0], _image())


def test_without_carry_later_windows_get_no_keyframe():
    method = _Offset(_spec(carry_keyframes=False))
    _stream(method, _frames(25), {0: _image()})
    assert [sorted(k) for k in method.keyframes] == [[0], [], []]


def test_a_real_keyframe_in_the_first_slot_wins_over_the_carried_frame():
    method = _Offset(_spec())
    _stream(method, _frames(25), {0: _image(), 11: _image(-0.5)})  # 11 - 8 = 3: slot 0 of window 2
    assert [sorted(k) for k in method.keyframes] == [[0], [3], [0]]
    torch.testing.assert_close(method.keyframes[1][3], _image(-0.5))


def test_nothing_is_carried_out_of_an_unconditioned_window():
    method = _Offset(_spec())
    _stream(method, _frames(25), {})
    assert method.keyframes == [{}, {}, {}]
    method = _Offset(_spec())
    _stream(method, _frames(25), {20: _image()})  # only window 3 has one: windows 1 and 2 stay blind
    assert [sorted(k) for k in method.keyframes] == [[], [], [4]]


def test_windows_without_a_shared_frame_carry_nothing_and_say_so(caplog):
    method = _Offset(_spec(frame_multiple=1, frame_offset=0, window=8, overlap=0))
    with caplog.at_level(logging.WARNING):
        _stream(method, _frames(16), {0: _image()})
    assert [sorted(k) for k in method.keyframes] == [[0], []]
    assert "share no frame" in caplog.text


def test_blending_still_holds_with_carried_keyframes():
    frames = _frames(25)
    out = _stream(_Offset(_spec()), frames, {0: _image()})
    assert out.shape == (3, 25, 8, 12)
    # Frame 3 is only in window 1 (offset 0): the exact upsampled input.
    assert np.array_equal(model_to_frames(out[:, 3:4]), np.repeat(np.repeat(frames[3:4], 2, 1), 2, 2))


# --- positions in the clip's temporal padding ---------------------------------------------------


@pytest.mark.parametrize("num_frames, key, per_window", [
    (10, 16, [[0, 16]]),  # one window: 10 frames padded to 17, the keyframe at its padded index
    (14, 16, [[0], [], [8]]),  # windows (0,9), (4,13), (8,14): the last (start 8) padded to 17 holds 16
    (18, 24, [[0], [], [], [8]]),  # last window (12,18) padded to 21 < 25: at its last padded frame, 20
])
def test_keyframes_in_the_padding_go_to_the_last_window(num_frames, key, per_window):
    window = None if num_frames == 10 else 9
    method = _Offset(_spec(window=window, overlap=5 if window else 0, carry_keyframes=False))
    _stream(method, _frames(num_frames), {0: _image(), key: _image(-0.25)})
    assert [sorted(k) for k in method.keyframes] == per_window
    torch.testing.assert_close(method.keyframes[-1][per_window[-1][-1]], _image(-0.25))


def test_keyframes_in_window_keeps_real_frames_and_maps_padding_positions():
    kf = {0: "a", 8: "b", 20: "c", 24: "d"}
    assert keyframes_in_window(kf, 0, 9, 18, 9) == {0: "a", 8: "b"}
    assert keyframes_in_window(kf, 12, 18, 18, 21) == {20: "c"}  # 24 would go to 20, which a real one holds
    assert keyframes_in_window({0: "a", 24: "d"}, 12, 18, 18, 21) == {20: "d"}


# --- padding values -------------------------------------------------------------------------------


def test_constant_padding_is_black_minus_one_for_frames_and_keyframes():
    spec = WindowSpec(scale=2, frame_multiple=8, frame_offset=1, spatial_multiple=8, pad_mode="constant",
                      uses_keyframes=True)
    method = _Offset(spec)
    frames = np.full((3, 5, 6, 3), 128, np.uint8)
    runner = WindowRunner(method, spec, torch.device("cpu"))
    runner(torch.from_numpy(frames).float().div(255).mul(2).sub(1).permute(3, 0, 1, 2)[None], 0,
           {8: torch.zeros(3, 10, 12)})  # frame 8 lies in the window's padding (3 frames -> 9)
    (lq,) = method.inputs
    assert lq.shape == (1, 3, 9, 8, 8)
    assert bool((lq[..., 5:, :] == -1).all()) and bool((lq[..., :, 6:] == -1).all())  # the release pads 0 in [0, 255]
    assert bool((lq[..., :5, :6] > -1).all())
    keyframe = method.keyframes[0][8]
    assert keyframe.shape == (3, 16, 16)
    assert bool((keyframe[:, 10:] == -1).all()) and bool((keyframe[:, :, 12:] == -1).all())
    assert bool((keyframe[:, :10, :12] == 0).all())
