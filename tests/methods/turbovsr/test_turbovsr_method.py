"""TurboVSR inference on the tiny LTX preset (CPU): windows, the two factorized passes, the shifted
step schedule, latent tiles, segments and the export/load round trip."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vsrkit.backbones import BackboneConfig
from vsrkit.errors import UserError, WeightsError
from vsrkit.methods.protocol import WindowContext
from vsrkit.methods.turbovsr.config import TurboVSRConfig
from vsrkit.methods.turbovsr.method import TurboVSRMethod

TINY = BackboneConfig(preset="ltx-video-2b-tiny", family="ltx", dtype="fp32")


@pytest.fixture(scope="module")
def loaded() -> TurboVSRMethod:
    method = TurboVSRMethod(TurboVSRConfig(), backbone=TINY, scale=4)
    method.load(torch.device("cpu"), torch.float32)
    return method


@pytest.fixture
def configure(loaded):
    saved = dataclasses.replace(loaded.config)

    def apply(**changes):
        loaded.config = dataclasses.replace(loaded.config, **changes)

    yield apply
    loaded.config = saved


class _Recorder:
    """Wraps ``predict_velocity``: keeps every call's inputs."""

    def __init__(self, method):
        self.original, self.calls = method.predict_velocity, []

    def __call__(self, x, sigma, step_size, condition, first_clean=None, cond_keep=None, prompt=None):
        self.calls.append(SimpleNamespace(x=x.clone(), sigma=sigma.clone(), step=step_size.clone(),
                                          condition=condition.clone(),
                                          first_clean=None if first_clean is None else first_clean.clone()))
        return self.original(x, sigma, step_size, condition, first_clean, cond_keep, prompt)


@pytest.fixture
def recorder(loaded, monkeypatch):
    rec = _Recorder(loaded)
    monkeypatch.setattr(loaded, "predict_velocity", rec)
    return rec


def _lq(t=9, h=8, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, t, h, w, generator=g) * 2 - 1


def _context(seed=7):
    return WindowContext(frame_start=0, num_valid=0, generator=torch.Generator().manual_seed(seed))


def test_window_spec():
    spec = TurboVSRMethod(TurboVSRConfig(), backbone=TINY, scale=4).window_spec()
    assert (spec.frame_multiple, spec.frame_offset, spec.spatial_multiple) == (8, 1, 8)
    assert spec.padded_length(50) == 57 and spec.padded_length(1) == 1
    assert (spec.window, spec.overlap, spec.tile, spec.pad_mode) == (121, 9, None, "replicate")
    assert TurboVSRMethod(TurboVSRConfig(), backbone=TINY, scale=2).window_spec().spatial_multiple == 16
    assert TurboVSRMethod(TurboVSRConfig(), backbone=TINY, scale=3).window_spec().spatial_multiple == 32


def test_bad_options_fail_before_any_weights_load(tmp_path):
    with pytest.raises(UserError, match="segment_overlap"):
        TurboVSRConfig(segment_overlap=8)
    with pytest.raises(UserError, match="tile"):
        TurboVSRConfig(tile=100)
    with pytest.raises(UserError, match="step_selection"):
        TurboVSRConfig(step_selection="closest")
    with pytest.raises(UserError, match="method.weights"):
        TurboVSRMethod(TurboVSRConfig(weights=str(tmp_path / "nope.safetensors")), backbone=TINY)
    with pytest.raises(UserError, match="turbovsr.safetensors"):
        TurboVSRMethod(TurboVSRConfig(weights=str(tmp_path)), backbone=TINY)  # a folder without the file
    with pytest.raises(UserError, match="cond_block"):
        TurboVSRMethod(TurboVSRConfig(cond_block=2), backbone=TINY)  # the tiny preset has 2 blocks
    with pytest.raises(ValueError, match="ltx"):
        TurboVSRMethod(TurboVSRConfig(), backbone=BackboneConfig(preset="wan2.1-t2v-1.3b-tiny", family="wan"))


def test_image_is_one_image_sr_pass_on_the_shifted_schedule(loaded, recorder):
    out = loaded.upscale(_lq(t=1), _context())
    assert out.shape == (1, 3, 1, 32, 64) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert len(recorder.calls) == 4
    assert [c.sigma.item() for c in recorder.calls] == pytest.approx([1.0, 0.9, 0.75, 0.5])
    assert [c.step.item() for c in recorder.calls] == pytest.approx([12 / 128, 20 / 128, 32 / 128, 64 / 128])
    assert all(c.first_clean is None and c.x.shape[2] == 1 for c in recorder.calls)


def test_video_is_conditioned_on_the_super_resolved_first_frame(loaded, recorder, monkeypatch):
    results = []
    original = loaded.super_resolve_image
    monkeypatch.setattr(loaded, "super_resolve_image", lambda *a, **k: results.append(original(*a, **k)) or
                        results[-1])
    out = loaded.upscale(_lq(t=17), _context())
    assert out.shape == (1, 3, 17, 32, 64)
    image_calls, video_calls = recorder.calls[:4], recorder.calls[4:]
    assert len(video_calls) == 4 and len(results) == 1
    lr = loaded.encode(torch.nn.functional.interpolate(_lq(t=17)[0].permute(1, 0, 2, 3), size=(32, 64),
                                                       mode="bicubic", align_corners=False).clamp(-1, 1)
                       .permute(1, 0, 2, 3)[None])
    # Stage 1 sees latent 0 of the LR latent; stage 2 all of it, with frame 0 the stage-1 result.
    assert torch.allclose(image_calls[0].condition, lr[:, :, :1], atol=1e-5)
    for call in video_calls:
        assert torch.allclose(call.condition, lr, atol=1e-5)
        assert call.first_clean is not None and bool(call.first_clean.all())
        assert torch.equal(call.x[:, :, :1], results[0])


def test_same_seed_same_output_and_the_seed_matters(loaded):
    a = loaded.upscale(_lq(t=9), _context(3))
    assert torch.equal(a, loaded.upscale(_lq(t=9), _context(3)))
    assert not torch.equal(a, loaded.upscale(_lq(t=9), _context(4)))


def test_tiles_are_denoised_separately_from_one_fixed_noise(loaded, recorder, configure):
    configure(tile=64, tile_overlap=32, steps=1)  # 2 x 2 latents per tile on a 2 x 4 latent
    out = loaded.upscale(_lq(t=1, h=16, w=32), _context())
    assert out.shape == (1, 3, 1, 64, 128)
    shapes = [tuple(c.x.shape[-2:]) for c in recorder.calls]
    assert shapes == [(2, 2), (2, 2), (2, 2)]  # columns [0,2), [1,3), [2,4)
    assert torch.equal(recorder.calls[0].x[..., 1:2], recorder.calls[1].x[..., 0:1])  # same noise at the overlap


def test_later_segments_reuse_the_window_noise_and_drop_their_first_latent(loaded, recorder, configure):
    configure(segment=17, segment_overlap=9, steps=1)
    out = loaded.upscale(_lq(t=25), _context())  # segments [0, 17) and [8, 25)
    assert out.shape == (1, 3, 25, 32, 64)
    video = [c for c in recorder.calls if c.first_clean is not None]
    assert [c.x.shape[2] for c in video] == [3, 3]
    # Segment 2's latents 1, 2 are global latents 2, 3; latent 2 was segment 1's latent 2: same noise.
    assert torch.equal(video[1].x[:, :, 1], video[0].x[:, :, 2])


@pytest.mark.parametrize("mode", ["image", "previous"])
@pytest.mark.parametrize("frames", [9, 17, 33, 100])
def test_window_frames_keep_count_and_order(loaded, configure, monkeypatch, frames, mode):
    """Through the engine's window runner, with a VAE that stores frame ``8j`` in latent ``j`` and a
    denoiser that returns its condition, the output frame ``k`` must be input frame ``8 ceil(k/8)``."""
    from vsrkit.engine.inference import WindowRunner, apply_overrides, upscale_stream

    configure(segment=17, segment_overlap=9, segment_condition=mode, decode_frames=17, decode_overlap=8)
    c = loaded.backbone.vae.latent_channels

    def encode(video, generator=None):
        picks = video[:, :1, ::8, ::32, ::32]  # frame 8j -> latent j
        return picks.expand(-1, c, -1, -1, -1).clone()

    def decode(z, generator=None, **_):
        frames = torch.cat([z[:, :1, :1], z[:, :1, 1:].repeat_interleave(8, dim=2)], dim=2)
        return frames.repeat_interleave(32, dim=3).repeat_interleave(32, dim=4).expand(-1, 3, -1, -1, -1)

    monkeypatch.setattr(loaded, "encode", encode)
    monkeypatch.setattr(loaded.backbone.vae, "decode", decode)
    monkeypatch.setattr(loaded, "super_resolve_image", lambda lr, noise, on_step=None: lr)
    monkeypatch.setattr(loaded, "denoise",
                        lambda x, cond, first=None, on_step=None: torch.cat([first, cond[:, :, 1:]], dim=2))
    monkeypatch.setattr("vsrkit.methods.turbovsr.method.upsample_frames", lambda v, size, mode: v.repeat_interleave(
        size[0] // v.shape[3], dim=3).repeat_interleave(size[1] // v.shape[4], dim=4))
    values = np.linspace(0, 250, frames).round().astype(np.uint8)
    clip = np.broadcast_to(values[:, None, None, None], (frames, 8, 8, 3)).copy()
    spec = apply_overrides(loaded.window_spec(), None, None, None, None)
    runner = WindowRunner(loaded, spec, torch.device("cpu"))
    chunks = [SimpleNamespace(frames=clip, pts=None)]
    out = torch.cat([o for o, _ in upscale_stream(runner, chunks, frames)], dim=1)
    assert out.shape == (3, frames, 32, 32)
    got = ((out[0, :, 0, 0] + 1) * 127.5).round().numpy()
    expected = [values[min(8 * -(-k // 8), frames - 1)] for k in range(frames)]
    assert np.allclose(got, expected, atol=1.0)


def test_export_loads_back(loaded, tmp_path):
    method = TurboVSRMethod(TurboVSRConfig(step_embedding_init="copy"), backbone=TINY, scale=4)
    method.load(torch.device("cpu"), torch.float32)
    with torch.no_grad():
        method.model.adapter.cond_proj.weight.add_(0.5)
        method.backbone.transformer.proj_out.bias.add_(0.25)
    method.export(str(tmp_path / "export"))
    files = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert files == ["model_index.json", "scheduler", "transformer", "turbovsr.json", "turbovsr.safetensors", "vae"]
    again = TurboVSRMethod(TurboVSRConfig(), backbone=dataclasses.replace(TINY, path=str(tmp_path / "export")))
    again.load(torch.device("cpu"), torch.float32)
    for name, value in method.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value), name
    lq = _lq(t=9)
    assert torch.equal(method.upscale(lq, _context()), again.upscale(lq, _context()))


def test_adapter_of_another_size_is_a_weights_error(loaded, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in loaded.model.adapter.state_dict().items()}
    state["cond_proj.weight"] = torch.zeros(5, 3)
    save_file(state, str(tmp_path / "turbovsr.safetensors"))
    method = TurboVSRMethod(TurboVSRConfig(weights=str(tmp_path)), backbone=TINY)
    with pytest.raises(WeightsError, match="cond_proj.weight"):
        method.load(torch.device("cpu"), torch.float32)
