"""The realesrgan method offline: options, weights files (BasicSR .pth layouts), padding, resizing,
batching, tiles through the engine. Networks have random weights here; trained weights are
checked against ncnn in test_realesrgan_conformance.py."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from realesrgan_helpers import random_state

from vsrkit.engine.inference import WindowRunner
from vsrkit.errors import WeightsError
from vsrkit.methods.protocol import WindowContext
from vsrkit.methods.realesrgan.config import RealESRGANConfig
from vsrkit.methods.realesrgan.convert import build_model
from vsrkit.methods.realesrgan.method import RealESRGANMethod, lanczos4_matrix, resize_lanczos4


def _clip(t=3, h=12, w=10, seed=0) -> torch.Tensor:
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _method(tmp_path, model="animevideov3", scale=4, seed=3, **options) -> tuple[RealESRGANMethod, dict]:
    """A method whose weights come from a BasicSR-style .pth (params_ema) written here."""
    state = random_state(build_model(model), seed=seed)
    path = tmp_path / f"{model}-{seed}.pth"
    if not path.exists():
        torch.save({"params_ema": state}, path)
    method = RealESRGANMethod(RealESRGANConfig(model=model, weights=str(path), **options), scale=scale)
    method.load(torch.device("cpu"), torch.float32)
    return method, state


def _reference(state: dict, model: str, lq: torch.Tensor) -> torch.Tensor:
    """The plain network on every frame, [-1, 1] in and out (clamped), as RealESRGANer.process does."""
    net = build_model(model).eval()
    net.load_state_dict(state)
    b, c, t, h, w = lq.shape
    with torch.no_grad():
        y = net((lq[0].permute(1, 0, 2, 3) + 1) / 2)
    return (y.clamp(0, 1) * 2 - 1).permute(1, 0, 2, 3)[None]


def test_config_checks_choices_and_ranges():
    for bad in ({"model": "x2plus"}, {"dtype": "fp8"}, {"pre_pad_sides": "top"}, {"outscale_filter": "area"},
                {"batch_frames": 0}, {"tile": -1}):
        with pytest.raises(ValueError, match=f"`method.{next(iter(bad))}`"):
            RealESRGANConfig(**bad)


def test_window_spec_maps_tile_and_tile_pad_to_engine_tiles():
    spec = RealESRGANMethod(RealESRGANConfig(tile=64, tile_pad=10, window=7), scale=2).window_spec()
    assert (spec.scale, spec.window, spec.overlap, spec.tile, spec.tile_overlap) == (2, 7, 0, 84, 20)
    spec = RealESRGANMethod(RealESRGANConfig(), scale=4).window_spec()
    assert (spec.tile, spec.tile_overlap, spec.window) == (None, 0, 16)


def test_params_ema_is_preferred_and_flat_and_params_layouts_load(tmp_path):
    lq = _clip()
    method, state = _method(tmp_path)
    want = _reference(state, "animevideov3", lq)
    got = method.upscale(lq, WindowContext())
    assert tuple(got.shape) == (1, 3, 3, 48, 40) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # params_ema wins over params (RealESRGANer); params alone and a flat dict load too.
    other = random_state(build_model("animevideov3"), seed=9)
    for content in ({"params": other, "params_ema": state}, {"params": state}, state):
        path = tmp_path / "layout.pth"
        torch.save(content, path)
        m = RealESRGANMethod(RealESRGANConfig(weights=str(path)), scale=4)
        m.load(torch.device("cpu"), torch.float32)
        torch.testing.assert_close(m.upscale(lq, WindowContext()), want, rtol=0, atol=1e-5)


def test_wrong_weights_name_the_file_and_the_right_model(tmp_path):
    path = tmp_path / "anime.pth"
    torch.save({"params_ema": random_state(build_model("x4plus-anime"))}, path)
    method = RealESRGANMethod(RealESRGANConfig(model="animevideov3", weights=str(path)), scale=4)
    with pytest.raises(WeightsError, match=r"anime.pth does not fit .*set method.model=x4plus-anime"):
        method.load(torch.device("cpu"))
    with pytest.raises(ValueError, match="does not exist"):
        RealESRGANMethod(RealESRGANConfig(weights=str(tmp_path / "missing.pth")))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth is not a readable weights file"):
        RealESRGANMethod(RealESRGANConfig(weights=str(tmp_path / "junk.pth"))).load(torch.device("cpu"))


def test_batches_and_channels_last_do_not_change_the_result(tmp_path):
    lq = _clip(t=5)
    base, _ = _method(tmp_path, batch_frames=8, channels_last=False)
    want = base.upscale(lq, WindowContext())
    stages = []
    for options in ({"batch_frames": 2}, {"batch_frames": 1, "channels_last": True}):
        method, _ = _method(tmp_path, **options)
        context = WindowContext(on_stage=lambda *a: stages.append(a))
        torch.testing.assert_close(method.upscale(lq, context), want, rtol=0, atol=1e-5)
    # 5 frames in batches of 2: 3 forwards, then the end; in batches of 1: 5 forwards.
    assert stages[:4] == [("upscale", 0, 3), ("upscale", 1, 3), ("upscale", 2, 3), ("upscale", 3, 3)]
    assert stages[4:] == [("upscale", i, 5) for i in range(6)]


@pytest.mark.parametrize("sides", ["bottom_right", "all"])
def test_pre_pad_reflects_then_crops(tmp_path, sides):
    lq = _clip(t=1, h=9, w=11)
    method, state = _method(tmp_path, pre_pad=3, pre_pad_sides=sides)
    net = build_model("animevideov3").eval()
    net.load_state_dict(state)
    x = (lq[0].permute(1, 0, 2, 3) + 1) / 2
    top = 3 if sides == "all" else 0
    with torch.no_grad():
        y = net(F.pad(x, (top, 3, top, 3), mode="reflect"))[..., 4 * top:4 * top + 36, 4 * top:4 * top + 44]
    want = (y.clamp(0, 1) * 2 - 1).permute(1, 0, 2, 3)[None]
    got = method.upscale(lq, WindowContext())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    unpadded, _ = _method(tmp_path)
    assert (got - unpadded.upscale(lq, WindowContext())).abs().max() > 1e-3  # the padding matters at the border


@pytest.mark.parametrize("size_in,size_out", [(48, 24), (40, 30), (20, 80), (13, 7)])
def test_lanczos4_matches_opencv(size_in, size_out):
    image = np.random.default_rng(0).random((size_in, size_in + 3, 3), dtype=np.float32)
    want = cv2.resize(image, (size_out + 2, size_out), interpolation=cv2.INTER_LANCZOS4)
    got = resize_lanczos4(torch.from_numpy(image).permute(2, 0, 1)[None], size_out, size_out + 2)
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want, atol=2e-5)
    assert torch.allclose(lanczos4_matrix(size_in, size_out).sum(1), torch.ones(size_out, dtype=torch.float64))


@pytest.mark.parametrize("scale", [2, 3, 8])
def test_outscale_lanczos_is_real_esrgans_outscale(tmp_path, scale):
    lq = _clip(t=2, h=10, w=12)
    method, state = _method(tmp_path, scale=scale)
    x4 = _reference(state, "animevideov3", lq)
    got = method.upscale(lq, WindowContext())
    assert tuple(got.shape) == (1, 3, 2, 10 * scale, 12 * scale)
    for frame in range(2):
        # RealESRGANer.enhance: x4 output to uint8, then cv2.resize(..., INTER_LANCZOS4).
        u8 = ((x4[0, :, frame].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        want = cv2.resize(u8, (12 * scale, 10 * scale), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
        mine = ((got[0, :, frame].permute(1, 2, 0) + 1) * 127.5).round().numpy()
        assert np.abs(mine - want).max() <= 1.0


def test_outscale_bicubic_resizes_before_the_crop(tmp_path):
    lq = _clip(t=1, h=10, w=12)
    method, state = _method(tmp_path, scale=2, outscale_filter="bicubic", pre_pad=2, pre_pad_sides="all")
    net = build_model("animevideov3").eval()
    net.load_state_dict(state)
    with torch.no_grad():
        y = net(F.pad((lq[0].permute(1, 0, 2, 3) + 1) / 2, (2, 2, 2, 2), mode="reflect"))
    y = F.interpolate(y, size=(28, 32), mode="bicubic", align_corners=False)[..., 4:24, 4:28]
    want = (y.clamp(0, 1) * 2 - 1).permute(1, 0, 2, 3)[None]
    torch.testing.assert_close(method.upscale(lq, WindowContext()), want, rtol=0, atol=1e-5)


def test_engine_tiles_with_enough_context_equal_the_whole_frame(tmp_path):
    # animevideov3 has 18 3x3 convolutions: 18 input pixels of context make a tile's centre exact.
    lq = _clip(t=1, h=60, w=90)
    whole, _ = _method(tmp_path)
    want = WindowRunner(whole, whole.window_spec(), torch.device("cpu"))(lq, 0)
    tiled, _ = _method(tmp_path, tile=16, tile_pad=18)
    spec = tiled.window_spec()
    assert (spec.tile, spec.tile_overlap) == (52, 36)  # 3 x 4 tiles of 52 px, 16 px apart
    got = WindowRunner(tiled, spec, torch.device("cpu"), blend="cut")(lq, 0)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # With less context than the receptive field, the seams show.
    short = WindowRunner(tiled, dataclasses.replace(spec, tile=36, tile_overlap=20), torch.device("cpu"), blend="cut")
    assert (short(lq, 0) - want).abs().max() > 1e-3


def test_random_weights_say_so(tmp_path, caplog):
    method = RealESRGANMethod(RealESRGANConfig(model="x4plus-anime", random_weights=True), scale=4)
    with caplog.at_level("WARNING"):
        method.load(torch.device("cpu"))
    assert "RANDOM weights" in caplog.text
    assert method.dtype == torch.float32  # dtype auto on CPU
    a = method.upscale(_clip(t=1, h=6, w=6), WindowContext())
    again = RealESRGANMethod(RealESRGANConfig(model="x4plus-anime", random_weights=True), scale=4)
    again.load(torch.device("cpu"))
    assert torch.equal(a, again.upscale(_clip(t=1, h=6, w=6), WindowContext()))


def test_bfloat16_stays_close_to_float32(tmp_path):
    lq = _clip(t=1)
    method, state = _method(tmp_path)
    want = method.upscale(lq, WindowContext())
    method.load(torch.device("cpu"), torch.bfloat16)
    got = method.upscale(lq, WindowContext())
    assert got.dtype == torch.float32
    assert (got - want).abs().max() < 0.1
