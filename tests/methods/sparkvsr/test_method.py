"""SparkVSR on the tiny CogVideoX preset (CPU): conditioning layout, guidance, v->x0, windows."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from vsrkit.backbones import BackboneConfig
from vsrkit.errors import UserError
from vsrkit.methods.protocol import WindowContext
from vsrkit.methods.sparkvsr.config import SparkVSRConfig
from vsrkit.methods.sparkvsr.method import (
    SparkVSRMethod,
    combine_guidance,
    keyframe_slot,
    lr_spatial_multiple,
    place_keyframe_latents,
    prepend_first_frames,
    upsample_frames,
    velocity_to_x0,
)

TINY = BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32")


def _method(**overrides) -> SparkVSRMethod:
    return SparkVSRMethod(SparkVSRConfig(**overrides), backbone=TINY, scale=4)


@pytest.fixture(scope="module")
def loaded() -> SparkVSRMethod:
    method = _method(posterior="mode")
    method.load(torch.device("cpu"), torch.float32)
    return method


def _configure(method: SparkVSRMethod, **changes) -> None:
    for key, value in changes.items():
        setattr(method.config, key, value)


class _Recorder:
    """Wraps ``backbone.predict``: keeps every call's latents and output."""

    def __init__(self, backbone):
        self.backbone, self.original, self.calls = backbone, backbone.predict, []

    def __call__(self, latents, timestep, prompt_embeds, ofs=2.0, image_rotary_emb=None):
        out = self.original(latents, timestep, prompt_embeds, ofs=ofs, image_rotary_emb=image_rotary_emb)
        self.calls.append(SimpleNamespace(latents=latents.clone(), timestep=timestep, ofs=ofs, out=out.clone()))
        return out


@pytest.fixture
def recorder(loaded, monkeypatch):
    rec = _Recorder(loaded.backbone)
    monkeypatch.setattr(loaded.backbone, "predict", rec)
    yield rec
    _configure(loaded, ref_guidance_scale=1.0, keyframe_encoding="repeat", noise_step=0)


def _inputs(seed=0, t=9, h=8, w=12):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(1, 3, t, h, w, generator=g) * 2 - 1
    keyframes = {0: torch.rand(3, h * 4, w * 4, generator=g) * 2 - 1,
                 6: torch.rand(3, h * 4, w * 4, generator=g) * 2 - 1,
                 12: torch.rand(3, h * 4, w * 4, generator=g) * 2 - 1}  # slot 3: outside a 9-frame window
    return lq, keyframes


def _vae_mode(method, video):
    """Posterior mode x 0.7 straight from the diffusers VAE (the release's latent convention)."""
    vae = method.backbone.vae
    return vae.model.encode(video).latent_dist.mode() * vae.model.config.scaling_factor


# --- pure functions ----------------------------------------------------------------------------


def test_pure_functions():
    assert [keyframe_slot(k) for k in (0, 3, 4, 7, 8, 32)] == [0, 0, 1, 1, 2, 8]
    assert [lr_spatial_multiple(s) for s in (1, 2, 3, 4, 8)] == [16, 8, 16, 4, 2]
    x = torch.arange(2 * 1 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 1, 3, 1, 1)
    assert prepend_first_frames(x, 1)[:, 0, :, 0, 0].tolist() == [[0, 0, 1, 2], [3, 3, 4, 5]]
    v_u, v_c = torch.full((2,), 1.0), torch.full((2,), 3.0)
    assert combine_guidance(v_u, v_c, 1.0).tolist() == [3.0, 3.0]
    assert combine_guidance(v_u, v_c, 2.5).tolist() == [6.0, 6.0]
    z, v = torch.tensor([1.0]), torch.tensor([2.0])
    assert velocity_to_x0(z, v, 0.36).item() == pytest.approx(0.6 - 0.8 * 2.0)
    video = torch.rand(1, 3, 2, 4, 6)
    want = F.interpolate(video[:, :, 1], size=(8, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample_frames(video, (8, 12))[:, :, 1], want)


def test_keyframes_in_one_latent_slot_fail_clearly():
    like = torch.zeros(1, 2, 3, 1, 1)
    with pytest.raises(UserError, match="keyframes 4 and 7 fall into the same latent slot 1"):
        place_keyframe_latents({4: torch.ones(2, 1, 1), 7: torch.ones(2, 1, 1)}, 3, like)
    placed = place_keyframe_latents({0: torch.ones(2, 1, 1), 9: 2 * torch.ones(2, 1, 1), 40: torch.ones(2, 1, 1)},
                                    3, like)
    assert placed[0, 0, :, 0, 0].tolist() == [1.0, 0.0, 2.0]


def test_window_spec_and_config_checks():
    spec = _method().window_spec()
    assert (spec.frame_multiple, spec.frame_offset, spec.spatial_multiple, spec.pad_mode) == (8, 1, 4, "constant")
    assert (spec.window, spec.overlap, spec.stride_multiple, spec.uses_keyframes) == (81, 9, 4, True)
    assert spec.carry_keyframes is True and _method(carry_keyframes=False).window_spec().carry_keyframes is False
    assert spec.padded_length(50) == 57 and spec.padded_length(33) == 33
    assert SparkVSRMethod(SparkVSRConfig(), backbone=TINY, scale=2).window_spec().spatial_multiple == 8
    assert _method(tile=64, tile_overlap=8).window_spec().tile == 64
    with pytest.raises(UserError, match="multiple of 4"):
        _method(tile=66).window_spec()
    with pytest.raises(UserError, match=r"`window - overlap` must be a multiple of 4.*try overlap=9"):
        SparkVSRConfig(window=33, overlap=8)
    with pytest.raises(UserError, match=r"`window` must be 8k\+1"):
        SparkVSRConfig(window=32)
    with pytest.raises(UserError, match=r"`posterior` must be one of \['sample', 'mode'\]"):
        SparkVSRConfig(posterior="mean")
    with pytest.raises(ValueError, match="needs a cogvideox backbone"):
        SparkVSRMethod(SparkVSRConfig(), backbone=None)


# --- inference -----------------------------------------------------------------------------------


def test_scheduler_constants_come_from_the_checkpoint_config(loaded):
    abar = loaded.backbone.alpha_bar(399)
    # sparkvsr.md §4.3: zero-SNR rescaled scaled_linear betas (diffusers' class defaults differ).
    assert math.sqrt(abar) == pytest.approx(0.62733, abs=1e-5)
    assert math.sqrt(1 - abar) == pytest.approx(0.77875, abs=1e-5)


def test_conditioning_layout_slots_scaling_and_prepended_frame(loaded, recorder):
    lq, keyframes = _inputs()
    out = loaded.upscale(lq, WindowContext(keyframes=keyframes, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 3, 9, 32, 48) and out.dtype == torch.float32
    assert float(out.min()) >= -1 and float(out.max()) <= 1
    (call,) = recorder.calls
    x = call.latents  # (1, 32, 1 + 3, 4, 6)
    assert x.shape == (1, 32, 4, 4, 6)
    assert call.timestep == 399 and call.ofs == 2.0
    with torch.no_grad():
        z_lr = _vae_mode(loaded, upsample_frames(lq, (32, 48)))
        repeat4 = lambda img: img[None, :, None].expand(1, 3, 4, 32, 48)  # noqa: E731 -- release convention
        z_k0 = _vae_mode(loaded, repeat4(keyframes[0]))[:, :, 0]
        z_k6 = _vae_mode(loaded, repeat4(keyframes[6]))[:, :, 0]
    torch.testing.assert_close(x[:, :16, 1:], z_lr, rtol=1e-4, atol=1e-5)  # LR latent x 0.7
    torch.testing.assert_close(x[:, 16:, 1], z_k0, rtol=1e-4, atol=1e-5)  # frame 0 -> slot 0
    torch.testing.assert_close(x[:, 16:, 2], z_k6, rtol=1e-4, atol=1e-5)  # frame 6 -> slot 6 // 4 = 1
    assert bool((x[:, 16:, 3] == 0).all())  # slot 2: no keyframe (frame 12 is outside the window)
    torch.testing.assert_close(x[:, :, 0], x[:, :, 1])  # one prepended copy of latent frame 0
    # Output = decode(x0) without the prepended frame, x0 = sqrt(abar) z - sqrt(1 - abar) v.
    abar = loaded.backbone.alpha_bar(399)
    x0 = velocity_to_x0(x[:, :16], call.out, abar)[:, :, 1:]
    torch.testing.assert_close(out, loaded.backbone.vae.decode(x0), rtol=1e-4, atol=1e-5)


def test_single_frame_keyframe_encoding_option(loaded, recorder):
    _configure(loaded, keyframe_encoding="single")
    lq, keyframes = _inputs()
    loaded.upscale(lq, WindowContext(keyframes={0: keyframes[0]}, generator=torch.Generator()))
    with torch.no_grad():
        z_k0 = _vae_mode(loaded, keyframes[0][None, :, None])[:, :, 0]
    torch.testing.assert_close(recorder.calls[0].latents[:, 16:, 1], z_k0, rtol=1e-4, atol=1e-5)


def test_guidance_one_is_the_conditional_pass_and_s_combines_in_v_space(loaded, recorder):
    lq, keyframes = _inputs(seed=1)
    context = lambda: WindowContext(keyframes=keyframes, generator=torch.Generator())  # noqa: E731
    out_1 = loaded.upscale(lq, context())
    _configure(loaded, ref_guidance_scale=2.5)
    out_s = loaded.upscale(lq, context())
    single, guided = recorder.calls
    assert single.latents.shape[0] == 1 and guided.latents.shape[0] == 2  # one pass vs one batched pass
    uncond, cond = guided.latents.chunk(2)
    torch.testing.assert_close(cond, single.latents)
    torch.testing.assert_close(uncond[:, :16], single.latents[:, :16])
    assert bool((uncond[:, 16:] == 0).all()) and bool((cond[:, 16:] != 0).any())
    v_u, v_c = guided.out.chunk(2)
    torch.testing.assert_close(v_c, single.out, rtol=1e-4, atol=1e-5)  # batching changes nothing
    abar = loaded.backbone.alpha_bar(399)
    decode = lambda v: loaded.backbone.vae.decode(velocity_to_x0(cond[:, :16], v, abar)[:, :, 1:])  # noqa: E731
    torch.testing.assert_close(out_1, decode(single.out), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_s, decode(v_u + 2.5 * (v_c - v_u)), rtol=1e-4, atol=1e-5)
    assert float((out_s - out_1).abs().max()) > 1e-4


def test_posterior_sample_is_seeded_by_the_context_generator():
    method = _method(posterior="sample")
    method.load(torch.device("cpu"), torch.float32)
    lq, _ = _inputs(t=1)
    run = lambda seed: method.upscale(lq, WindowContext(generator=torch.Generator().manual_seed(seed)))  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_window_shapes_are_rejected(loaded):
    with pytest.raises(ValueError, match="8k\\+1 frames"):
        loaded.upscale(torch.zeros(1, 3, 5, 8, 12), WindowContext())
    with pytest.raises(ValueError, match="multiple of 16"):
        loaded.upscale(torch.zeros(1, 3, 9, 6, 12), WindowContext())


def test_windows_keep_keyframe_slots_aligned_and_reindex_keyframes(loaded, recorder, monkeypatch):
    from vsrkit.engine.inference import WindowRunner, upscale_stream
    from vsrkit.engine.windows import plan_ranges

    _configure(loaded, window=17, overlap=5)
    try:
        spec = loaded.window_spec()
        for frames in range(18, 140):
            starts = [a for a, _ in plan_ranges(frames, spec.window, spec.overlap, spec.stride_multiple)]
            assert all(a % 4 == 0 for a in starts)
        # 29 frames -> windows [0, 17) and [12, 29); global keyframes 0, 16 and 24.
        g = torch.Generator().manual_seed(3)
        keyframes = {k: torch.rand(3, 32, 48, generator=g) * 2 - 1 for k in (0, 16, 24)}
        seen = []
        original = loaded.encode_keyframes

        def spy(kf, z_lr, generator):
            seen.append({k: v.clone() for k, v in kf.items()})
            return original(kf, z_lr, generator)

        monkeypatch.setattr(loaded, "encode_keyframes", spy)
        frames = (torch.rand(29, 8, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
        chunks = [SimpleNamespace(frames=frames[i:i + 10], pts=None) for i in range(0, 29, 10)]
        runner = WindowRunner(loaded, spec, torch.device("cpu"))
        out = torch.cat([o for o, _ in upscale_stream(runner, chunks, 29, keyframes)], dim=1)
        assert out.shape == (3, 29, 32, 48)
        # Window 2 also gets window 1's output at its first frame (12) as a carried keyframe at slot 0.
        assert [sorted(s) for s in seen] == [[0, 16], [0, 4, 12]]
        torch.testing.assert_close(seen[1][4], keyframes[16])
        torch.testing.assert_close(seen[1][12], keyframes[24])
        # Window 2's keyframes land in slots 0, (16 - 12) // 4 = 1 and (24 - 12) // 4 = 3 (+1 for the copy).
        second = recorder.calls[1].latents
        assert [int((second[0, 16:, s] != 0).any()) for s in range(second.shape[2])] == [1, 1, 1, 0, 1, 0]
    finally:
        _configure(loaded, window=81, overlap=9)


@pytest.mark.parametrize("carry", [True, False])
def test_one_keyframe_conditions_every_window_of_a_three_window_clip(loaded, recorder, carry):
    """Issue 14: the release runs the clip whole, so keyframe 0 steers every frame; with windows the
    carried pseudo-keyframe keeps every window conditioned (``carry_keyframes=false`` leaves them blind)."""
    from vsrkit.engine.inference import WindowRunner, upscale_stream

    _configure(loaded, window=9, overlap=1, carry_keyframes=carry)
    try:
        g = torch.Generator().manual_seed(5)
        frames = (torch.rand(25, 8, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
        runner = WindowRunner(loaded, loaded.window_spec(), torch.device("cpu"))
        chunks = [SimpleNamespace(frames=frames, pts=None)]
        out = torch.cat([o for o, _ in upscale_stream(runner, chunks, 25, {0: torch.rand(3, 32, 48, generator=g)})], 1)
    finally:
        _configure(loaded, window=81, overlap=9, carry_keyframes=True)
    assert out.shape == (3, 25, 32, 48)
    conditioned = [bool((call.latents[:, 16:] != 0).any()) for call in recorder.calls]
    assert conditioned == ([True, True, True] if carry else [True, False, False])
    if carry:  # the carried frame sits in slot 0 (and its prepended copy) only
        for call in recorder.calls[1:]:
            assert [bool((call.latents[0, 16:, s] != 0).any()) for s in range(4)] == [True, True, False, False]


def test_default_window_runs_a_50_frame_clip_whole_like_the_release():
    from vsrkit.engine.windows import plan_ranges

    spec = _method().window_spec()
    assert plan_ranges(50, spec.window, spec.overlap, spec.stride_multiple) == [(0, 50)]
    assert spec.padded_length(50) == 57  # one pass over 15 latent frames, as --chunk_len 0
    assert plan_ranges(200, spec.window, spec.overlap, spec.stride_multiple) == [(0, 81), (72, 153), (144, 200)]


def test_window_reports_its_stages(loaded):
    stages = []
    lq, _ = _inputs()
    loaded.upscale(lq, WindowContext(generator=torch.Generator().manual_seed(0), on_stage=lambda *s: stages.append(s)))
    assert stages == [("encode", 0, 1), ("denoise", 0, 1), ("decode", 0, 1)]
