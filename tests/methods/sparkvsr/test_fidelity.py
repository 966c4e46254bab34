"""SparkVSR against the release's own rules (sparkvsr_release.py restates them on diffusers directly).

Issue 14: what the released weights produce depends on the x0 arithmetic (bf16 in the release), the
VAE tiles, the conditioning layout and the keyframe slots; each is compared here with the release's
computation, not with vsrkit's own output.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

import sparkvsr_release as release
from vsrkit.backbones import BackboneConfig
from vsrkit.errors import UserError
from vsrkit.methods.protocol import WindowContext
from vsrkit.methods.sparkvsr.config import SparkVSRConfig
from vsrkit.methods.sparkvsr.method import SparkVSRMethod, combine_guidance, velocity_to_x0

TINY = BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32")


def _method(backbone=TINY, **overrides) -> SparkVSRMethod:
    method = SparkVSRMethod(SparkVSRConfig(posterior="mode", **overrides), backbone=backbone, scale=4)
    method.load(torch.device("cpu"))
    return method


@pytest.fixture(scope="module")
def fp32_method() -> SparkVSRMethod:
    return _method()


def _inputs():
    """A formula window (9 frames of 8x12) and keyframes at 0 and 8 (slots 0 and 2)."""
    lq = torch.sin(torch.arange(3 * 9 * 8 * 12, dtype=torch.float32) * 0.37).reshape(1, 3, 9, 8, 12)
    keyframes = {0: torch.cos(torch.arange(3 * 32 * 48, dtype=torch.float32) * 0.11).reshape(3, 32, 48),
                 8: torch.sin(torch.arange(3 * 32 * 48, dtype=torch.float32) * 0.05).reshape(3, 32, 48)}
    return lq, keyframes


def _run(method, lq, keyframes, guidance):
    """vsrkit's window output and its x0 (prepended latent copy removed)."""
    method.config.ref_guidance_scale = guidance
    seen = {}
    original = method.denoise

    def spy(*args, **kwargs):
        x0, copies = original(*args, **kwargs)
        seen["x0"] = x0[:, :, copies:]
        return x0, copies

    method.denoise = spy
    try:
        with torch.no_grad():
            out = method.upscale(lq, WindowContext(keyframes=keyframes, generator=torch.Generator().manual_seed(0)))
    finally:
        del method.denoise
        method.config.ref_guidance_scale = 1.0
    return out, seen["x0"]


# --- x0 arithmetic ----------------------------------------------------------------------------
def _scheduler_config() -> dict:
    from vsrkit.backbones.presets import get_preset

    return dict(get_preset("cogvideox1.5-5b-i2v").scheduler)




def test_release_x0_is_get_velocity_in_bf16_with_coefficients_0_625_and_0_78125():
    sched = release.scheduler(_scheduler_config())
    t = torch.full((1,), 399, dtype=torch.long)
    one, zero = torch.ones(1, 1, 1, 1, 1, dtype=torch.bfloat16), torch.zeros(1, 1, 1, 1, 1, dtype=torch.bfloat16)
    # get_velocity(sample=v, noise=z) = sqrt(abar) z - sqrt(1 - abar) v: read both coefficients off it.
    assert sched.get_velocity(zero, one, t).item() == 0.625
    assert -sched.get_velocity(one, zero, t).item() == 0.78125
    abar = float(sched.alphas_cumprod[399])
    assert math.sqrt(abar) == pytest.approx(0.62733, abs=1e-5)  # the fp32 option's coefficients
    assert math.sqrt(1 - abar) == pytest.approx(0.77875, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    z, v = torch.randn(2, 16, 3, 4, 6, generator=g), torch.randn(2, 16, 3, 4, 6, generator=g)
    want = sched.get_velocity(v.bfloat16(), z.bfloat16(), t)
    got = velocity_to_x0(z, v, abar, torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)  # bit for bit
    # The guidance combination in bf16, then x0, as the release orders it.
    v_u, v_c = torch.randn(2, 16, 3, 4, 6, generator=g).bfloat16().chunk(2)
    want = sched.get_velocity(v_u + 2.5 * (v_c - v_u), z[:1].bfloat16(), t)
    assert torch.equal(velocity_to_x0(z[:1], combine_guidance(v_u, v_c, 2.5), abar, torch.bfloat16), want)
    # fp32 option: float64 coefficients.
    torch.testing.assert_close(velocity_to_x0(z, v, abar), math.sqrt(abar) * z - math.sqrt(1 - abar) * v)


# --- one window against the release pipeline ----------------------------------------------------


@pytest.fixture(scope="module")
def windows(fp32_method) -> dict:
    """``{guidance: (vsrkit out, vsrkit x0, release out, release x0)}`` for _inputs()."""
    lq, keyframes = _inputs()
    runs = {}
    for guidance in (1.0, 2.0):
        out, x0 = _run(fp32_method, lq, keyframes, guidance)
        with torch.no_grad():
            want_out, want_x0 = release.window(fp32_method.backbone, fp32_method._prompt, lq, keyframes,
                                               guidance=guidance)
        runs[guidance] = (out, x0, want_out, want_x0.float())
    return runs


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_window_equals_the_release_pipeline_on_diffusers(windows, guidance):
    out, x0, want_out, want_x0 = windows[guidance]
    # float32 rounding only (the transformer sees the same values in another memory layout)
    torch.testing.assert_close(x0, want_x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(out, want_out, rtol=0, atol=1e-4)


# 16 evenly spaced values of x0 (the latent before decoding: never clamped, unlike the decoded
# pixels of the random tiny VAE, a third of which sit on +-1) for _inputs() on the tiny preset
# (hash-initialised: the same on every torch version), posterior mode. Source: the release pipeline
# restated on diffusers (sparkvsr_release.window), not vsrkit. Regenerate after an intended change of
# the tiny preset with: x0 = sparkvsr_release.window(m.backbone, m._prompt, lq, kf, guidance=g)[1]
# and x0.flatten()[torch.linspace(0, x0.numel() - 1, 16).long()], rounded to 4 decimals.
GOLDEN_X0 = {
    1.0: [-1.4285, -0.461, 0.7397, -1.1522, 0.6142, -0.3327, -0.8372, 1.9371, 0.3258, -1.6793, -0.9184, 1.893,
          0.4732, 2.1095, 0.6411, -1.0888],
    2.0: [-1.5951, 0.026, 1.3478, -1.6185, 0.4929, -1.1733, -1.1568, 2.0823, -0.1332, -1.5603, -1.7741, 1.7005,
          1.0896, 2.4826, 1.3718, -2.4202],
}


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_golden_x0_values(windows, guidance):
    _, x0, _, want_x0 = windows[guidance]
    for latent in (x0, want_x0):  # vsrkit's and the restated release's
        flat = latent.flatten()
        values = flat[torch.linspace(0, flat.numel() - 1, 16).long()]
        assert float(values.abs().max()) > 1.5  # far from any clamp
        torch.testing.assert_close(values, torch.tensor(GOLDEN_X0[guidance]), rtol=0, atol=1e-3)


def test_bf16_window_equals_the_release_pipeline_bit_for_bit():
    """The released weights run in bf16: x0 and the guidance combination in bf16 as the release."""
    method = _method(BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="bf16"))
    lq, keyframes = _inputs()
    lq, keyframes = lq[..., :4, :4], {k: v[:, :16, :16] for k, v in keyframes.items()}
    out, x0 = _run(method, lq, keyframes, 2.0)
    with torch.no_grad():
        want_out, want_x0 = release.window(method.backbone, method._prompt, lq, keyframes, guidance=2.0)
    assert want_x0.dtype == torch.bfloat16
    assert torch.equal(x0, want_x0.float()) and torch.equal(out, want_out)
    method.config.x0_dtype = "fp32"  # the option: float32 arithmetic, other numbers
    out_fp32, _ = _run(method, lq, keyframes, 2.0)
    assert float((out_fp32 - out).abs().max()) > 1e-3


def test_x0_dtype_follows_the_model_and_the_fp32_option(fp32_method, monkeypatch):
    assert SparkVSRConfig().x0_dtype == "model"
    assert fp32_method._x0_dtype(torch.device("cpu")) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # training under autocast computes in bf16
        assert fp32_method._x0_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(fp32_method.config, "x0_dtype", "fp32")
    assert fp32_method._x0_dtype(torch.device("cpu")) is None
    with pytest.raises(Exception, match=r"`x0_dtype` must be one of \['model', 'fp32'\]"):
        SparkVSRConfig(x0_dtype="bf16")


# --- VAE tiles ----------------------------------------------------------------------------------


def test_vae_tiles_release_is_diffusers_default_tiling_and_slicing():
    real = BackboneConfig(preset="cogvideox1.5-5b-i2v", family="cogvideox", vae_tiling=True, vae_tile_size=768,
                          vae_tile_overlap=64)
    method = SparkVSRMethod(SparkVSRConfig(vae_tiles="release"), backbone=real, scale=4)
    cfg = method._backbone_config()  # what load() and setup_training() build from
    assert (cfg.vae_tiling, cfg.vae_tile_size, cfg.vae_tile_overlap, cfg.vae_slicing) == (True, None, None, True)
    assert SparkVSRMethod(SparkVSRConfig(), backbone=real, scale=4)._backbone_config() is real
    # tile None / overlap None builds diffusers' enable_tiling() defaults, as the release's
    # pipe.vae.enable_slicing(); pipe.vae.enable_tiling() (inference --is_vae_st and finetune/trainer.py).
    from vsrkit.backbones import build_backbone

    tiny = BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32", vae_tiling=True,
                          vae_slicing=True)
    built = build_backbone(tiny, "cpu").vae.model
    reference = AutoencoderKLCogVideoX(**{k: v for k, v in built.config.items() if not k.startswith("_")})
    reference.enable_slicing()
    reference.enable_tiling()
    for name in ("use_tiling", "use_slicing", "tile_sample_min_height", "tile_sample_min_width",
                 "tile_overlap_factor_height", "tile_overlap_factor_width"):
        assert getattr(built, name) == getattr(reference, name), name
    with pytest.raises(Exception, match=r"`vae_tiles` must be one of \['backbone', 'release'\]"):
        SparkVSRConfig(vae_tiles="diffusers")


def test_vae_tiles_release_fails_before_loading_where_diffusers_tiles_break():
    """The tiny VAE's default tiles (32 px, strides 26/25 px) make diffusers' tiled encode return
    latents of the wrong size (96 px -> 14 latent rows, not 12), so vsrkit refuses before building."""
    tiny = BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32")
    for action in ("load", "setup_training"):
        method = SparkVSRMethod(SparkVSRConfig(vae_tiles="release", dists_weight=0.0), backbone=tiny, scale=4)
        with pytest.raises(UserError, match=r"strides 26/25 px for preset `cogvideox1.5-5b-i2v-tiny`.*"
                                            r"method.vae_tiles=backbone"):
            getattr(method, action)(torch.device("cpu"))
        assert method.backbone is None
    from vsrkit.backbones import build_backbone

    vae = build_backbone(BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32",
                                        vae_tiling=True), "cpu").vae.model
    with torch.no_grad():  # the failure it prevents
        z = vae.encode(torch.zeros(1, 3, 1, 96, 96)).latent_dist.mode()
    assert tuple(z.shape[-2:]) == (14, 14)  # not 96 / 8 = 12


def test_release_tiles_match_the_real_preset_240_by_360():
    from vsrkit.backbones.presets import get_preset

    vae_config = get_preset("cogvideox1.5-5b-i2v").vae
    with torch.device("meta"):
        vae = AutoencoderKLCogVideoX(**vae_config)
    vae.enable_tiling()
    assert (vae.tile_sample_min_height, vae.tile_sample_min_width) == (240, 360)


def test_a_keyframe_repeated_4_times_encodes_to_its_one_frame_latent(fp32_method):
    """Why the release's inference (image x4) and training (one frame) keyframe encodings agree, and
    why swapping them cannot change a result beyond float rounding: the CogVideoX VAE is causal
    (time padding repeats the first frame), pools equal frames to the same frame, and its GroupNorm
    statistics over equal frames are the one frame's. So ``keyframe_encoding`` only costs time."""
    vae = fp32_method.backbone.vae.model
    image = torch.rand(2, 3, 1, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        one = vae.encode(image).latent_dist.mode()
        four = vae.encode(image.expand(-1, -1, 4, -1, -1).contiguous()).latent_dist.mode()
        moving = vae.encode(torch.cat([image, -image, image, -image], dim=2)).latent_dist.mode()
    assert one.shape == four.shape == (2, 16, 1, 4, 6)
    torch.testing.assert_close(four, one, rtol=0, atol=2e-5)
    assert float((moving - one).abs().max()) > 0.1  # a real 4-frame clip does differ
