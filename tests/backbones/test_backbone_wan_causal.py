"""Chunk-causal Wan (rolling KV cache + RoPE offset) on the tiny preset, against diffusers itself."""

from __future__ import annotations

import math

import pytest
import torch
from backbone_helpers import tiny_config

from vsrkit.backbones import build_backbone
from vsrkit.backbones.wan_causal import chunk_causal_mask, enable_chunk_causal


@pytest.fixture()
def pair():
    """Two identical tiny Wan transformers; the second is made chunk-causal."""
    plain = build_backbone(tiny_config("wan", transformer_overrides={"rope_max_seq_len": 64}))
    causal = build_backbone(tiny_config("wan", transformer_overrides={"rope_max_seq_len": 64}))
    state = enable_chunk_causal(causal.transformer, window=1)
    return plain, causal, state


def _latents(frames: int, h: int = 4, w: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, frames, h, w, generator=torch.Generator().manual_seed(seed))


def _context(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(seed))


def test_one_chunk_at_offset_zero_equals_diffusers(pair):
    plain, causal, state = pair
    z, ctx = _latents(3), _context()
    expected = plain.predict(z, 400.0, ctx)
    torch.testing.assert_close(causal.predict(z, 400.0, ctx), expected, rtol=1e-5, atol=1e-5)


def test_rope_offset_equals_diffusers_table_rows(pair):
    # diffusers' precomputed table (rope_max_seq_len 64) sliced at rows k..k+f is the offset RoPE.
    plain, causal, state = pair
    hidden = torch.zeros(1, 16, 3, 4, 6)
    table_cos = plain.transformer.rope.freqs_cos
    t_dim = plain.transformer.rope.t_dim
    state.offset = 7
    cos, sin = causal.transformer.rope(hidden)
    assert cos.shape == (1, 3 * 2 * 3, 1, 6)
    # Time part of token (frame 1, row 0, col 0) = diffusers row 7 + 1, every other entry (interleaved pairs).
    torch.testing.assert_close(cos[0, 6, 0, : t_dim // 2], table_cos[8, :t_dim:2].float())
    # The release's own formula (rotary_frequencies): angle = pos / 10000 ** (2i / d_t) with
    # d_h = d_w = head_dim // 3 rounded to even... = 2 * (head_dim // 6), d_t = head_dim - d_h - d_w.
    d_t = 12 - 2 * (2 * (12 // 6))
    angle = 8 / 10000 ** (2 * 1 / d_t)
    assert math.isclose(float(sin[0, 6, 0, 1]), math.sin(angle), rel_tol=1e-6)


def test_streaming_chunks_equal_the_masked_parallel_forward(pair):
    _, causal, state = pair
    z, ctx = _latents(9, seed=3), _context()
    state.reset()
    state.write = True
    streamed = []
    for start in (0, 3, 6):
        state.offset = start
        streamed.append(causal.predict(z[:, :, start:start + 3], 400.0, ctx))
    state.write = False
    assert state.cached_chunks == 1
    state.reset()
    state.mask = chunk_causal_mask([3, 3, 3], tokens_per_frame=4, window=1)
    parallel = causal.predict(z, 400.0, ctx)
    state.mask = None
    torch.testing.assert_close(torch.cat(streamed, dim=2), parallel, rtol=1e-5, atol=1e-5)


def test_cache_holds_exactly_the_previous_chunk(pair):
    _, causal, state = pair
    z, ctx = _latents(9, seed=4), _context()
    state.reset()
    state.write = True
    for start in (0, 3, 6):
        state.offset = start
        causal.predict(z[:, :, start:start + 3], 400.0, ctx)
    state.write = False
    assert state.cached_chunks == 1
    k, v = state.past[0][0]
    assert k.shape == (1, 3 * 4, 2, 12) and v.shape == (1, 3 * 4, 2, 12)


def test_mask_is_block_banded():
    mask = chunk_causal_mask([3, 3, 2], tokens_per_frame=2, window=1)
    assert mask.shape == (16, 16)
    chunk = [0] * 6 + [1] * 6 + [2] * 4
    for i in range(16):
        for j in range(16):
            assert bool(mask[i, j]) == (0 <= chunk[i] - chunk[j] <= 1)


def test_full_attention_differs_from_the_causal_result(pair):
    # The mask matters: without it the first chunk sees the future and its output changes.
    _, causal, state = pair
    z, ctx = _latents(6, seed=5), _context()
    state.reset()
    state.mask = chunk_causal_mask([3, 3], tokens_per_frame=4)
    masked = causal.predict(z, 400.0, ctx)
    state.mask = None
    full = causal.predict(z, 400.0, ctx)
    assert (masked[:, :, :3] - full[:, :, :3]).abs().max() > 1e-4
