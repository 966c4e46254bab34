"""InfVSR inference on the tiny preset: chunking, caches, positions, scene resets, numerics, memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from infvsr_helpers import make_method, smooth_clip

from vsrkit.errors import UserError
from vsrkit.methods.infvsr.method import chunk_latent_frames, pad_chunk, upsample
from vsrkit.methods.protocol import StreamContext


class Recorder:
    """Wraps ``denoise_chunk`` and ``reference_tokens`` of a method to record what each chunk saw."""

    def __init__(self, method, monkeypatch):
        self.calls, self.references = [], 0
        denoise, reference = method.denoise_chunk, method.reference_tokens

        def record_denoise(z, tokens, past, position):
            self.calls.append((z.shape[2], position, len(past[0])))
            return denoise(z, tokens, past, position)

        def record_reference(frame):
            self.references += 1
            return reference(frame)

        monkeypatch.setattr(method, "denoise_chunk", record_denoise)
        monkeypatch.setattr(method, "reference_tokens", record_reference)


def run_stream(method, video: torch.Tensor, piece: int = 7) -> torch.Tensor:
    stream = method.open_stream(StreamContext(num_frames=video.shape[2]))
    outs = [stream.push(video[:, :, i:i + piece]) for i in range(0, video.shape[2], piece)]
    return torch.cat(outs + [stream.flush()], dim=2)


def test_chunks_follow_9_then_12_and_rope_counts_padded_latents(loaded, monkeypatch):
    # infvsr.md errata: N=50 -> [0,9) [9,21) [21,33) [33,45) [45,50); the last 5 frames padded to 8 ->
    # 2 latents at RoPE time 12-13; every chunk but the first sees one cached chunk.
    rec = Recorder(loaded, monkeypatch)
    out = run_stream(loaded, smooth_clip(50, 6, 5), piece=16)
    assert out.shape == (1, 3, 50, 24, 20)
    assert rec.calls == [(3, 0, 0), (3, 3, 1), (3, 6, 1), (3, 9, 1), (2, 12, 1)]
    assert rec.references == 1
    assert out.min() >= -1 and out.max() <= 1


def test_streaming_equals_the_parallel_masked_forward(loaded):
    video = smooth_clip(33, 4, 4, seed=1.0)
    streamed = run_stream(loaded, video, piece=5)
    with torch.no_grad():
        hr, _ = pad_chunk(upsample(video, 4), first=True)
        z = loaded.backbone.vae.encode(hr)
        tokens = loaded.reference_tokens(video[:, :, 0])
        x0 = loaded.generate(z, tokens)
        parallel = loaded.backbone.vae.decode(x0)
    assert chunk_latent_frames(z.shape[2]) == [3, 3, 3]
    torch.testing.assert_close(streamed, parallel, rtol=0, atol=2e-4)


@pytest.mark.parametrize("cache_chunks", [0, 1])
def test_cache_window_decides_whether_chunks_see_each_other(cache_chunks):
    # cache_chunks=0 is the paper's "Chunking" ablation: chunk 2 ignores chunk 1; with the cache it must not.
    from collections import deque

    method = make_method(scene_detection=False, cache_chunks=cache_chunks)
    method.load(torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(1, 16, 3, 4, 4, generator=g), torch.randn(1, 16, 3, 4, 4, generator=g)
    tokens = torch.randn(1, 5, 512, generator=g)
    with torch.no_grad():
        past = [deque(), deque()]
        method.denoise_chunk(z1, tokens, past, 0)
        after = method.denoise_chunk(z2, tokens, past, 3)
        alone = method.denoise_chunk(z2, tokens, [deque(), deque()], 3)
    assert len(past[0]) == cache_chunks
    if cache_chunks == 0:
        torch.testing.assert_close(after, alone, rtol=0, atol=0)
    else:
        assert (after - alone).abs().max() > 1e-4


# The release's scene_batches on the top-left 8x8 of test_infvsr_scenes.synthetic_frames (PySceneDetect 0.6.7.1):
CROP_PLAN = [(0, 9, True, True), (9, 21, False, False), (21, 24, False, False), (24, 33, True, True),
             (33, 45, False, False), (45, 57, False, True), (57, 69, False, False), (69, 70, False, True)]


def test_scene_cut_resets_cache_and_positions(loaded_scenes, monkeypatch):
    from test_infvsr_scenes import plan, synthetic_frames

    frames = np.stack(synthetic_frames())[:, :8, :8]
    assert plan(list(frames), (10,)) == CROP_PLAN
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255 * 2 - 1
    rec = Recorder(loaded_scenes, monkeypatch)
    out = run_stream(loaded_scenes, video, piece=10)
    assert out.shape == (1, 3, 70, 32, 32)
    # (latents, RoPE start, cached chunks): 3 frames -> 1 latent (padded to 4), 1 frame -> 1 latent;
    # the cut at 24 starts again at position 0 with an empty cache.
    assert rec.calls == [(3, 0, 0), (3, 3, 1), (1, 6, 1), (3, 0, 0), (3, 3, 1), (3, 6, 1), (3, 9, 1), (1, 12, 1)]
    assert rec.references == 4  # scene starts at 0 and 24, drift refreshes at 45 and 69


@pytest.mark.slow
def test_cache_memory_is_the_same_after_10_and_100_chunks(loaded):
    stream = loaded.open_stream(StreamContext())
    sizes = {}
    for chunk in range(100):
        n = 9 if chunk == 0 else 12
        stream.push(smooth_clip(n, 4, 4, seed=0.1 * chunk))
        if chunk + 1 in (10, 100):
            sizes[chunk + 1] = stream.held_bytes()
    assert sizes[10] > 0
    assert sizes[10] == sizes[100]
    assert stream.scene.position == 300


def test_timestep_and_sigma(loaded):
    assert loaded.timestep_sigma() == (400.0, 0.400390625)  # bf16(399) = 400 -> sigma 0.40082 -> bf16
    assert loaded.backbone.sigma(399, bf16_round=True) == pytest.approx(0.40081525, abs=1e-7)
    loaded.config.bf16_timestep = False
    try:
        t, sigma = loaded.timestep_sigma()
    finally:
        loaded.config.bf16_timestep = True
    s = np.linspace(1, 0, 1001)[:-1]
    grid = 5 * s / (1 + 4 * s)
    assert t == 399.0 and sigma == pytest.approx(grid[np.abs(grid * 1000 - 399).argmin()], abs=1e-12)


def test_upsample_is_pils_antialiased_bicubic():
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.random((7, 9)).astype(np.float32)
    want = np.asarray(Image.fromarray(img, mode="F").resize((36, 28), Image.BICUBIC))
    got = upsample(torch.from_numpy(img)[None, None, None], 4)[0, 0, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("first,length,padded", [(True, 9, 9), (True, 5, 5), (True, 4, 5), (False, 12, 12),
                                                 (False, 5, 8), (False, 1, 4)])
def test_pad_chunk_lengths(first, length, padded):
    video = torch.rand(1, 3, length, 20, 36)
    out, sizes = pad_chunk(video, first)
    assert out.shape == (1, 3, padded, 32, 48) and sizes == (length, 20, 36)
    assert torch.equal(out[:, :, -1, -1, -1], video[:, :, -1, -1, -1])  # replicated, not zeros
    assert torch.equal(out[:, :, :length, :20, :36], video)


def test_bad_options_fail_before_any_weights_load():
    from vsrkit.methods.infvsr.config import InfVSRConfig
    from vsrkit.methods.infvsr.method import InfVSRMethod

    with pytest.raises(UserError, match="`train_frames` must be 9 \\+ 12k"):
        InfVSRConfig(train_frames=20)
    with pytest.raises(UserError, match="`scene_threshold` must be > 0. Got 0"):
        InfVSRConfig(scene_threshold=0)
    with pytest.raises(UserError, match="Unknown visual encoder `ram-swin`"):
        make_method(visual_encoder="ram-swin")
    with pytest.raises(UserError, match="`method.visual_encoder_path=/nowhere/ram.pth` does not exist"):
        make_method(visual_encoder_path="/nowhere/ram.pth")
    from infvsr_helpers import tiny_backbone

    with pytest.raises(UserError, match="text_dim` must be 512"):
        InfVSRMethod(InfVSRConfig(), tiny_backbone(transformer_overrides={"text_dim": 16}), 4)
    with pytest.raises(UserError, match="backbone.compile=regional` is not supported by infvsr"):
        InfVSRMethod(InfVSRConfig(), tiny_backbone(compile="regional"), 4)


def test_stream_rejects_a_size_change(loaded):
    stream = loaded.open_stream(StreamContext())
    stream.push(smooth_clip(3, 4, 4))
    with pytest.raises(ValueError, match="frame size changed"):
        stream.push(smooth_clip(3, 4, 8))


def test_x0_inverts_the_rectified_flow():
    # x_t = (1 - sigma) x0 + sigma eps and v = eps - x0 (Wan / DiffSynth): x0 = x_t - sigma v.
    from vsrkit.methods.infvsr.method import velocity_to_x0

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    sigma = 0.400390625
    torch.testing.assert_close(velocity_to_x0((1 - sigma) * x0 + sigma * eps, eps - x0, sigma), x0)


def test_reference_is_the_lr_frame_in_unit_range(loaded):
    frame = smooth_clip(1, 6, 5)[:, :, 0]
    with torch.no_grad():
        torch.testing.assert_close(loaded.reference_tokens(frame), loaded.encoder((frame + 1) / 2))
