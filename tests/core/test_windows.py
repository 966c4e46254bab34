import numpy as np
import pytest
import torch

from vsrkit.engine.inference import WindowRunner, apply_overrides, frames_to_model, model_to_frames, upscale_stream
from vsrkit.engine.windows import plan_ranges, ramp_weights
from vsrkit.methods.protocol import WindowContext, WindowSpec


@pytest.mark.parametrize("length,window,overlap,multiple", [(100, 33, 8, 4), (33, 33, 8, 4), (10, 4, 1, 1), (57, 17, 5, 4),
                                                             (40, 16, 12, 4), (31, 10, 9, 1), (50, 17, 13, 4)])
@pytest.mark.parametrize("blend", ["linear", "cut"])
def test_plan_covers_and_weights_sum_to_one(length, window, overlap, multiple, blend):
    ranges = plan_ranges(length, window, overlap, multiple)
    assert ranges[0][0] == 0 and ranges[-1][1] == length
    assert all(start % multiple == 0 for start, _ in ranges)
    total = torch.zeros(length, dtype=torch.float64)
    for i, (start, stop) in enumerate(ranges):
        total[start:stop] += ramp_weights(ranges, i, blend)
    assert torch.allclose(total, torch.ones(length, dtype=torch.float64), rtol=0, atol=1e-12)


def test_plan_stride_keeps_keyframe_alignment():
    assert plan_ranges(100, 33, 8, 4) == [(0, 33), (24, 57), (48, 81), (72, 100)]
    assert plan_ranges(20, None, 0) == [(0, 20)]


def test_frame_conversions_round_trip():
    frames = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    video = frames_to_model(frames)
    assert video.shape == (1, 3, 3, 5, 7) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    assert np.array_equal(model_to_frames(video), frames)
    frames16 = (frames.astype(np.uint16) * 257)
    assert np.array_equal(model_to_frames(frames_to_model(frames16), np.uint16), frames16)


class _RecordingMethod:
    """Nearest-neighbour x2 that records what the engine handed over."""

    def __init__(self, spec):
        self.spec, self.calls = spec, []

    def window_spec(self):
        return self.spec

    def load(self, device, dtype):
        pass

    def upscale(self, lq, context: WindowContext):
        self.calls.append((tuple(lq.shape), context.frame_start, sorted(context.keyframes)))
        return lq.repeat_interleave(self.spec.scale, -1).repeat_interleave(self.spec.scale, -2)


class _Chunk:
    def __init__(self, frames, pts):
        self.frames, self.pts = frames, pts


def _stream(method, frames, chunk=4, keyframes=None, blend="linear"):
    runner = WindowRunner(method, method.spec, torch.device("cpu"), blend=blend)
    chunks = [_Chunk(frames[i:i + chunk], list(range(i, min(i + chunk, len(frames))))) for i in range(0, len(frames), chunk)]
    outs = list(upscale_stream(runner, chunks, len(frames), keyframes))
    return torch.cat([o for o, _ in outs], 1), sum((p for _, p in outs), [])


@pytest.mark.parametrize("blend", ["linear", "cut"])
def test_constant_video_stays_constant_across_windows_and_tiles(blend):
    spec = WindowSpec(scale=2, frame_multiple=4, frame_offset=1, spatial_multiple=8, window=9, overlap=4,
                      stride_multiple=4, tile=12, tile_overlap=4)
    frames = np.full((23, 20, 30, 3), 137, np.uint8)
    out, pts = _stream(_RecordingMethod(spec), frames, blend=blend)
    assert tuple(out.shape) == (3, 23, 40, 60)
    assert np.array_equal(model_to_frames(out), np.full((23, 40, 60, 3), 137, np.uint8))
    assert pts == list(range(23))


def test_engine_pads_to_spec_and_reindexes_keyframes():
    spec = WindowSpec(scale=2, frame_multiple=8, frame_offset=1, spatial_multiple=16, pad_mode="constant",
                      window=17, overlap=8, stride_multiple=4)
    method = _RecordingMethod(spec)
    frames = np.zeros((30, 20, 18, 3), np.uint8)
    keyframes = {0: torch.zeros(3, 40, 36), 12: torch.zeros(3, 40, 36), 24: torch.zeros(3, 40, 36)}
    _stream(method, frames, keyframes=keyframes)
    # windows (0,17), (8,25), (16,30): lengths 17, 17, 14 -> padded to 8k+1 = 17; H, W padded to 32.
    assert [c[0] for c in method.calls] == [(1, 3, 17, 32, 32)] * 3
    assert [c[1] for c in method.calls] == [0, 8, 16]
    assert [c[2] for c in method.calls] == [[0, 12], [4, 16], [8]]


class _KeepingMethod(_RecordingMethod):
    """Also keeps the LR window and the keyframes it was given."""

    def upscale(self, lq, context: WindowContext):
        self.inputs = (lq.clone(), {k: v.clone() for k, v in context.keyframes.items()})
        return super().upscale(lq, context)


@pytest.mark.parametrize("mode", ["constant", "replicate"])
def test_spatial_padding_is_black_or_the_edge_and_time_padding_repeats_the_last_frame(mode):
    """SparkVSR pads with ``constant``: black, -1 in the model's range, as the release's ``F.pad`` of
    [0, 255] frames with 0; keyframes the same way. ``replicate`` repeats the edge pixels."""
    spec = WindowSpec(scale=2, frame_multiple=8, frame_offset=1, spatial_multiple=16, pad_mode=mode)
    method = _KeepingMethod(spec)
    frames = np.random.default_rng(1).integers(1, 255, (5, 20, 18, 3), dtype=np.uint8)
    _stream(method, frames, keyframes={0: torch.full((3, 40, 36), 0.5)})
    lq, keyframes = method.inputs
    assert tuple(lq.shape) == (1, 3, 9, 32, 32)
    real = frames_to_model(frames)[0]
    assert torch.equal(lq[0, :, :5, :20, :18], real)
    assert torch.equal(lq[0, :, 5:], lq[0, :, 4:5].expand(-1, 4, -1, -1))  # 5 frames -> 8k+1 = 9
    if mode == "constant":
        assert bool((lq[0, :, :, 20:] == -1).all()) and bool((lq[0, :, :, :, 18:] == -1).all())
        assert bool((keyframes[0][:, 40:] == -1).all()) and bool((keyframes[0][:, :, 36:] == -1).all())
    else:
        assert torch.equal(lq[0, :, :5, 20:, :18], real[:, :, 19:20].expand(-1, -1, 12, -1))
        assert torch.equal(lq[0, :, :5, :20, 18:], real[:, :, :, 17:18].expand(-1, -1, -1, 14))
        assert bool((keyframes[0][:, 40:] == 0.5).all())
    assert bool((keyframes[0][:, :40, :36] == 0.5).all())


def test_linear_blend_mixes_overlapping_windows():
    spec = WindowSpec(scale=1, window=4, overlap=2)

    class Offset(_RecordingMethod):
        def upscale(self, lq, context):
            return lq * 0 + (context.frame_start / 10.0)

    out, _ = _stream(Offset(spec), np.zeros((6, 2, 2, 3), np.uint8))
    values = out[0, :, 0, 0].tolist()
    # windows (0,4) -> 0.0, (2,6) -> 0.2; overlap frames 2 and 3 cross-fade with weights 1/3, 2/3.
    assert values == pytest.approx([0.0, 0.0, 0.2 / 3, 0.4 / 3, 0.2, 0.2], abs=1e-6)


def test_wrong_output_shape_is_reported():
    spec = WindowSpec(scale=2)

    class Bad(_RecordingMethod):
        def upscale(self, lq, context):
            return lq

    with pytest.raises(RuntimeError, match=r"returned shape \(1, 3, 2, 4, 4\), expected \(1, 3, 2, 8, 8\)"):
        _stream(Bad(spec), np.zeros((2, 4, 4, 3), np.uint8))


def test_overrides_disable_tiling_and_windows():
    spec = WindowSpec(scale=4, window=33, overlap=8, tile=64, tile_overlap=16)
    changed = apply_overrides(spec, window=0, overlap=None, tile=0, tile_overlap=None)
    assert changed.window is None and changed.overlap == 0 and changed.tile is None and changed.tile_overlap == 0


def _bicubic_stream(frames, window, overlap, tile, tile_overlap, blend="linear"):
    from vsrkit.methods.baselines.config import BicubicConfig
    from vsrkit.methods.baselines.method import InterpolationMethod

    method = InterpolationMethod(BicubicConfig(), scale=2)
    spec = apply_overrides(method.window_spec(), window, overlap, tile, tile_overlap)
    runner = WindowRunner(method, spec, torch.device("cpu"), blend=blend)
    chunks = [_Chunk(frames[i:i + 3], list(range(i, min(i + 3, len(frames))))) for i in range(0, len(frames), 3)]
    return np.concatenate([model_to_frames(out) for out, _ in upscale_stream(runner, chunks, len(frames))])


@pytest.mark.parametrize("blend", ["linear", "cut"])
@pytest.mark.parametrize("window,overlap,tile,tile_overlap", [
    (4, 3, 0, 0), (5, 4, 0, 0), (6, 2, 0, 0), (7, 5, 0, 0), (9, 8, 0, 0),  # overlap > window / 2 included
    (0, 0, 16, 8), (0, 0, 20, 15), (0, 0, 24, 12), (0, 0, 12, 9),
    (5, 3, 20, 15), (4, 3, 20, 12),
])
def test_windowed_and_tiled_bicubic_equals_whole_clip(window, overlap, tile, tile_overlap, blend):
    # Bicubic is per frame and local (2 input pixels each side): every window/tile plan must give
    # the whole-clip result, whatever the overlap, because the blend weights are normalised by their
    # sum over all windows (not just neighbours) and tile edges (which saw padding) get no weight.
    frames = np.random.default_rng(1).integers(0, 256, (11, 30, 37, 3), dtype=np.uint8)
    whole = _bicubic_stream(frames, 0, None, 0, None)
    assert whole.shape == (11, 60, 74, 3)
    out = _bicubic_stream(frames, window, overlap, tile, tile_overlap, blend)
    assert out.shape == whole.shape
    assert np.abs(out.astype(int) - whole.astype(int)).max() <= 1


def test_stride_the_method_cannot_honour_is_rejected():
    from vsrkit.errors import UserError

    spec = WindowSpec(scale=4, window=33, overlap=9, stride_multiple=4)
    with pytest.raises(UserError, match=r"33 - 10 = 23 must be a multiple of 4 .* engine.overlap=13 or engine.overlap=9"):
        apply_overrides(spec, window=None, overlap=10, tile=None, tile_overlap=None)
    assert apply_overrides(spec, window=17, overlap=13, tile=None, tile_overlap=None).overlap == 13


def test_linear_cross_fade_spans_the_middle_half_of_the_overlap():
    # Two ranges sharing 8 items: the outer quarters (2 items each) go wholly to the range whose
    # edge is further away; the middle 4 items fade 1/5 .. 4/5 (hand-computed).
    ranges = [(0, 12), (4, 16)]
    later = ramp_weights(ranges, 1, "linear")[:8].tolist()
    assert later == pytest.approx([0, 0, 0.2, 0.4, 0.6, 0.8, 1, 1], abs=1e-12)
    earlier = ramp_weights(ranges, 0, "linear")[4:].tolist()
    assert earlier == pytest.approx([1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0], abs=1e-12)


def test_rectangular_tiles_and_their_override():
    # PS-SR's 720x1280 output windows at x4: 180 rows x 320 columns of input per tile.
    spec = WindowSpec(scale=4, tile=180, tile_width=320, tile_overlap=32)
    seen = []

    class Tiles(_RecordingMethod):
        def upscale(self, lq, context):
            seen.append((context.spatial_offset, tuple(lq.shape[-2:])))
            return super().upscale(lq, context)

    _stream(Tiles(spec), np.zeros((1, 200, 600, 3), np.uint8))
    assert seen == [((0, 0), (180, 320)), ((0, 288), (180, 312)), ((148, 0), (52, 320)), ((148, 288), (52, 312))]
    square = apply_overrides(spec, window=None, overlap=None, tile=64, tile_overlap=8)
    assert (square.tile, square.tile_width, square.tile_overlap) == (64, None, 8)
    assert apply_overrides(spec, window=None, overlap=None, tile=0, tile_overlap=None).tile_width is None
    with pytest.raises(ValueError, match="`tile_width` needs `tile`"):
        WindowSpec(scale=4, tile_width=320)
    with pytest.raises(ValueError, match="must be smaller than `tile`"):
        WindowSpec(scale=4, tile=400, tile_width=40, tile_overlap=40)
