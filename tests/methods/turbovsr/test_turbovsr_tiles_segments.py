"""Latent tiles (Gaussian-blended per step), temporal segments and chunked decoding (no model)."""

from __future__ import annotations

import math

import pytest
import torch

from vsrkit.methods.turbovsr.method import (
    blend_tiles,
    decode_in_chunks,
    gaussian_weights,
    merge_segments,
    plan_decode_chunks,
    plan_segments,
    plan_tiles,
)


def test_tiles_have_the_model_size_and_cover_everything():
    assert plan_tiles(40, 64, 8) == [(0, 40)]
    assert plan_tiles(40, None, 8) == [(0, 40)]
    assert plan_tiles(100, 64, 8) == [(0, 64), (36, 100)]
    tiles = plan_tiles(200, 64, 16)
    assert all(b - a == 64 for a, b in tiles)
    assert tiles[0][0] == 0 and tiles[-1][1] == 200
    assert all(tiles[i + 1][0] <= tiles[i][1] - 16 for i in range(len(tiles) - 1))


def test_gaussian_weights_formula():
    w = gaussian_weights(8, 0.25)
    j = torch.arange(8, dtype=torch.float64)
    assert torch.allclose(w, torch.exp(-((j - 3.5) ** 2) / (2 * 2.0**2)))
    assert torch.allclose(w, w.flip(0))


def _tiled(values: torch.Tensor, tile, overlap, sigma=0.25, record=None):
    """blend_tiles over a predictor that returns ``values`` (a global map) sliced to the tile."""

    def predict(y0, y1, x0, x1):
        if record is not None:
            record.append((y0, y1, x0, x1))
        return values[..., y0:y1, x0:x1].clone()

    return blend_tiles(predict, values, tile, overlap, sigma)


def test_blending_a_constant_latent_gives_the_constant():
    x = torch.full((1, 4, 3, 20, 30), 0.37)
    record = []
    out = _tiled(x, 8, 3, record=record)
    assert len(record) > 4
    assert torch.allclose(out, x, atol=1e-6)


def test_tiles_agree_at_overlaps_with_the_untiled_prediction():
    # A predictor that depends only on the global position (same noise, same condition in every
    # tile): blending the overlapping tiles must reproduce the untiled result everywhere.
    g = torch.Generator().manual_seed(0)
    field = torch.randn(2, 4, 3, 21, 34, generator=g)
    assert torch.allclose(_tiled(field, 8, 4), field, atol=1e-5)
    assert torch.allclose(_tiled(field, 10, 2), field, atol=1e-5)


def test_overlaps_are_blended_with_gaussian_weights():
    # Each tile predicts its own index: inside an overlap the result is the Gaussian-weighted mean.
    h, w, tile, overlap, sigma = 4, 12, 8, 4, 0.25
    tiles = plan_tiles(w, tile, overlap)
    assert tiles == [(0, 8), (4, 12)]

    def predict(y0, y1, x0, x1):
        return torch.full((1, 1, 1, y1 - y0, x1 - x0), float(tiles.index((x0, x1))))

    out = blend_tiles(predict, torch.zeros(1, 1, 1, h, w), tile, overlap, sigma)
    j = torch.arange(8, dtype=torch.float64)
    weight = torch.exp(-((j - 3.5) ** 2) / (2 * (sigma * 8) ** 2))
    for x in range(4, 8):  # covered by tile 0 at x and tile 1 at x - 4
        w0, w1 = weight[x], weight[x - 4]
        assert out[0, 0, 0, 0, x].item() == pytest.approx((w1 / (w0 + w1)).item(), abs=1e-6)
    assert out[0, 0, 0, 0, :4].eq(0).all() and out[0, 0, 0, 0, 8:].eq(1).all()


@pytest.mark.parametrize("frames", [9, 17, 33, 105])
def test_segments_cover_the_window_with_9_frame_overlaps(frames):
    segments = plan_segments(frames, 17, 9)
    assert segments[0][0] == 0 and segments[-1][1] == frames
    for start, stop in segments:
        assert start % 8 == 0 and (stop - start - 1) % 8 == 0
    for (a0, a1), (b0, b1) in zip(segments, segments[1:]):
        assert a1 - b0 >= 9
    assert plan_segments(frames, 49, 9) == ([(0, frames)] if frames <= 49 else plan_segments(frames, 49, 9))


def _labelled_segments(frames: int, segment: int, overlap: int):
    """Per segment, latents whose value is the global latent index they stand for; the dropped
    first-frame latent of later segments holds -100 so using it would show."""
    segments = plan_segments(frames, segment, overlap)
    latents = []
    for i, (start, stop) in enumerate(segments):
        n = (stop - start - 1) // 8 + 1
        values = torch.tensor([start // 8 + j for j in range(n)], dtype=torch.float32)
        if i > 0:
            values[0] = -100.0
        latents.append(values.reshape(1, 1, n, 1, 1).expand(1, 2, n, 3, 2).clone())
    return segments, latents


@pytest.mark.parametrize("frames", [9, 17, 33, 100])
@pytest.mark.parametrize("segment,overlap", [(17, 9), (25, 17), (49, 9)])
def test_segment_fusion_keeps_frame_count_and_order(frames, segment, overlap):
    padded = frames + (-(frames - 1)) % 8  # the engine pads a window to 8k+1
    segments, latents = _labelled_segments(padded, segment, overlap)
    total = (padded - 1) // 8 + 1
    merged = merge_segments(latents, [s for s, _ in segments], total)
    assert merged.shape == (1, 2, total, 3, 2)
    expected = torch.arange(total, dtype=torch.float32).reshape(1, 1, total, 1, 1).expand_as(merged)
    assert torch.allclose(merged, expected, atol=1e-6), "latent frames out of order or first-frame latent kept"
    assert 8 * (merged.shape[2] - 1) + 1 == padded


def test_overlapping_segment_latents_are_cross_faded():
    # Two segments of 25 frames sharing 17 (two video latents: global 2 and 3).
    segments = plan_segments(33, 25, 17)
    assert segments == [(0, 25), (8, 33)]
    a = torch.zeros(1, 1, 4, 1, 1)
    b = torch.ones(1, 1, 4, 1, 1)
    merged = merge_segments([a, b], [0, 8], 5).flatten().tolist()
    assert merged == pytest.approx([0.0, 0.0, 1 / 3, 2 / 3, 1.0])


def test_decode_chunks_align_with_latent_groups():
    assert plan_decode_chunks(5, 5, 1) == [(0, 5)]
    assert plan_decode_chunks(13, 5, 1) == [(0, 5), (4, 8), (7, 11), (10, 13)]
    for n in (6, 13, 20):
        chunks = plan_decode_chunks(n, 5, 2)
        assert chunks[0][0] == 0 and chunks[-1][1] == n
        assert all(b - a <= 4 for a, b in chunks[1:])


def _fake_decode(z):
    """Latent j -> 8 frames valued j (latent 0 -> one frame): what a perfect LTX decoder does to
    a latent that encodes frame index. Records the calls."""
    _fake_decode.calls.append(z.shape[2])
    values = z[:, :1, :, 0, 0]  # (B, 1, F)
    frames = torch.cat([values[:, :, :1], values[:, :, 1:].repeat_interleave(8, dim=2)], dim=2)
    return frames[:, :, :, None, None].expand(-1, 3, -1, 2, 2)


@pytest.mark.parametrize("latents,chunk,overlap", [(5, 5, 1), (13, 5, 1), (13, 3, 1), (20, 5, 2)])
def test_chunked_decode_keeps_frame_count_and_order(latents, chunk, overlap):
    _fake_decode.calls = []
    z = torch.arange(latents, dtype=torch.float32).reshape(1, 1, latents, 1, 1).expand(1, 4, latents, 1, 1)
    video = decode_in_chunks(_fake_decode, z, chunk, overlap)
    assert video.shape == (1, 3, 8 * (latents - 1) + 1, 2, 2)
    expected = torch.tensor([math.ceil(k / 8) for k in range(video.shape[2])], dtype=torch.float32)
    assert torch.allclose(video[0, 0, :, 0, 0], expected)
    assert max(_fake_decode.calls) <= chunk  # memory is bounded by the chunk


def test_chunked_decode_cross_fades_shared_frames():
    def decode(z):
        marker = float(z.shape[2] == 5 and z[0, 0, 0, 0, 0] == 0)  # the first chunk says 1, later ones 0
        return torch.full((1, 1, 8 * (z.shape[2] - 1) + 1, 1, 1), marker)

    z = torch.arange(9, dtype=torch.float32).reshape(1, 1, 9, 1, 1)
    video = decode_in_chunks(decode, z, 5, 1)[0, 0, :, 0, 0]
    # Chunk 0 gives frames 0..32, chunk [4, 8) gives 25..56: frames 25..32 fade from 1 to 0.
    assert video[:25].eq(1).all() and video[33:].eq(0).all()
    assert video[25:33].tolist() == pytest.approx([1 - (j + 1) / 9 for j in range(8)])
