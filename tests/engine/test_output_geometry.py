"""``io.output_size`` / ``io.output_fit`` / ``io.output_filter`` (vsrkit/engine/geometry.py).

Golden values come from the SparkVSR release's ``--output_resolution`` code restated here
(``sparkvsr_inference_script.py``: ``max`` of the two ratios, ``int()`` sizes, bilinear
``F.interpolate`` with ``align_corners=False``, ``(scaled - target) // 2`` crop), from numpy
padding, and from PIL's antialiased resize; the CLI runs end to end on a real clip.
"""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vsrkit.engine.geometry import (OutputGeometry, check_output_size, parse_output_size, resized_size)
from vsrkit.engine.settings import IOConfig
from vsrkit.errors import UserError


def release_output_resolution(video: torch.Tensor, target_h: int, target_w: int, mode: str = "bilinear"):
    """The release's resize for ``--output_resolution target_h target_w`` on ``(F, C, H, W)``
    (its VAE padding to a multiple of 8 left out: vsrkit's engine pads and crops on its own)."""
    src_h, src_w = video.shape[-2:]
    scale_factor = max(target_h / src_h, target_w / src_w)
    scaled_h, scaled_w = int(src_h * scale_factor), int(src_w * scale_factor)
    video_up = F.interpolate(video, size=(scaled_h, scaled_w), mode=mode, align_corners=False)
    crop_top, crop_left = (scaled_h - target_h) // 2, (scaled_w - target_w) // 2
    return video_up[:, :, crop_top:crop_top + target_h, crop_left:crop_left + target_w]


def _frames(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """``(3, T, H, W)`` in [-1, 1], smooth enough that resizes differ by more than rounding."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, t, h, w, generator=g) * 2 - 1


def test_crop_matches_the_release_formula_bit_for_bit():
    # 180x318 (DOVE 002 at x1) to 720p: factor max(4, 4.025) -> 724x1280, crop 2 rows off the top.
    frames = _frames(3, 180, 318)
    geometry = OutputGeometry((180, 318), (720, 1280), "crop", "bilinear")
    assert geometry.resized_hw == (724, 1280)
    assert geometry.offset == (2, 0)
    expected = release_output_resolution(frames.transpose(0, 1), 720, 1280).transpose(0, 1)
    out = geometry(frames)
    assert out.shape == (3, 3, 720, 1280)
    assert torch.equal(out, expected)


def test_crop_of_a_wider_source_crops_the_sides():
    # 100x300 to 200x200: factor max(2, 0.667) = 2 -> 200x600, 200 columns off each side.
    frames = _frames(2, 100, 300, seed=1)
    geometry = OutputGeometry((100, 300), (200, 200), "crop", "bicubic")
    assert (geometry.resized_hw, geometry.offset) == ((200, 600), (0, 200))
    expected = release_output_resolution(frames.transpose(0, 1), 200, 200, mode="bicubic").transpose(0, 1)
    assert torch.equal(geometry(frames), expected)


def test_crop_never_falls_short_of_the_target():
    # int(11 * (480 / 11)) == 479: the release would crop a 479-row frame; vsrkit keeps 480.
    assert int(11 * (480 / 11)) == 479
    assert resized_size((11, 11), (480, 480), "crop") == (480, 480)
    assert OutputGeometry((11, 11), (480, 480))(_frames(1, 11, 11)).shape == (3, 1, 480, 480)


def test_pad_centres_the_fitted_picture_on_black():
    # 180x318 into 720x720: factor min(4, 2.264) -> 407x720, 156 black rows above, 157 below.
    frames = _frames(2, 180, 318, seed=2)
    geometry = OutputGeometry((180, 318), (720, 720), "pad", "bilinear")
    assert (geometry.resized_hw, geometry.offset) == ((407, 720), (156, 0))
    resized = F.interpolate(frames.transpose(0, 1), size=(407, 720), mode="bilinear", align_corners=False,
                            antialias=False).transpose(0, 1).numpy()
    expected = np.pad(resized, ((0, 0), (0, 0), (156, 157), (0, 0)), constant_values=-1.0)
    out = geometry(frames)
    assert out.shape == (3, 2, 720, 720)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_stretch_is_one_resize_to_the_target():
    frames = _frames(2, 40, 60, seed=3)
    out = OutputGeometry((40, 60), (90, 70), "stretch", "bilinear")(frames)
    expected = F.interpolate(frames.transpose(0, 1), size=(90, 70), mode="bilinear", align_corners=False,
                             antialias=False).transpose(0, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_shrinking_is_antialiased_like_pil():
    # Shrinking a 4x output (the usual case: x4 model, 1080p target) must not alias; PIL's
    # bilinear resize is the independent reference (torch's antialias follows it).
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, size=(96, 160, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((60, 36), Image.BILINEAR)).astype(np.float32)
    frames = torch.from_numpy(image).float().permute(2, 0, 1)[:, None] / 127.5 - 1
    out = OutputGeometry((96, 160), (36, 60), "stretch", "bilinear")(frames)
    got = ((out[:, 0].permute(1, 2, 0) + 1) * 127.5).round().numpy()
    assert np.abs(got - expected).max() <= 1.0
    aliased = F.interpolate(frames.transpose(0, 1), size=(36, 60), mode="bilinear", align_corners=False)
    aliased = ((aliased[0].permute(1, 2, 0) + 1) * 127.5).round().numpy()
    assert np.abs(aliased - expected).max() > 8  # the reference tells the two apart


def test_many_frames_are_resized_in_batches_with_the_same_result():
    frames = _frames(19, 20, 30, seed=5)  # more than one batch of 8
    geometry = OutputGeometry((20, 30), (50, 60), "crop", "bilinear")
    whole = release_output_resolution(frames.transpose(0, 1), 50, 60).transpose(0, 1)
    assert torch.equal(geometry(frames), whole)


def test_frames_of_another_size_are_refused():
    with pytest.raises(ValueError, match=r"this geometry maps \(20, 30\)"):
        OutputGeometry((20, 30), (50, 60))(_frames(1, 21, 30))


@pytest.mark.parametrize("text", ["720p", "1280*720", "1280x", "0x720", "-2x4", "1280x720x3", ""])
def test_bad_sizes_are_one_line_naming_the_key(text):
    with pytest.raises(UserError) as err:
        parse_output_size(text)
    message = str(err.value)
    assert "`io.output_size` must be WIDTHxHEIGHT" in message and repr(text) in message and "\n" not in message


def test_size_is_width_by_height():
    assert parse_output_size("1280x720") == (1280, 720)
    assert parse_output_size(" 642X480 ") == (642, 480)
    assert parse_output_size(None) is None


def test_config_checks_fit_and_filter():
    with pytest.raises(ValueError, match=r"`io.output_fit` must be one of \['crop', 'pad', 'stretch'\]. Got zoom"):
        IOConfig(output_size="64x64", output_fit="zoom")
    with pytest.raises(ValueError, match=r"`io.output_filter` must be one of"):
        IOConfig(output_size="64x64", output_filter="lanczos3")
    with pytest.raises(UserError, match="io.output_size"):
        IOConfig(output_size="big")


def test_odd_sizes_need_a_full_chroma_video():
    with pytest.raises(UserError, match=r"`io.output_size=641x480` is odd, which h264 yuv420p \(4:2:0\) cannot store"):
        check_output_size(IOConfig(output_size="641x480"), "out.mp4")
    with pytest.raises(UserError, match="h265 yuv420p10le"):
        check_output_size(IOConfig(output_size="640x481", codec="h265", pix_fmt="yuv420p10le"), "out.mkv")
    check_output_size(IOConfig(output_size="641x480", pix_fmt="yuv444p"), "out.mp4")
    check_output_size(IOConfig(output_size="641x481", codec="ffv1"), "out.mkv")
    check_output_size(IOConfig(output_size="641x481"), "frames_folder")
    check_output_size(IOConfig(output_size="641x481"), "still.png")
    check_output_size(IOConfig(output_size="640x480"), "out.mp4")


# --- the command line ------------------------------------------------------------------------


def vsrkit(*args, cwd):
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", *args], capture_output=True, text=True, cwd=cwd)


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_infer_writes_the_target_size_and_every_frame(real_data, tmp_path):
    # DOVE 002: 318x180, 32 frames. bicubic x2 -> 636x360, then crop-fit to 480x480 (scale 480/360,
    # 848x480, 184 columns off the left). The reference applies the release's formula to the
    # x2 output (quantised once more in between, hence +-1).
    clip = real_data / "zhengchen1999_DOVE" / "002.mp4"
    common = ["method=bicubic", "scale=2", f"input={clip}", "max_frames=6", "io.codec=ffv1"]
    plain = vsrkit("infer", *common, "output=x2.mkv", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    sized = vsrkit("infer", *common, "output=sized.mkv", "io.output_size=480x480", cwd=tmp_path)
    assert sized.returncode == 0, sized.stderr
    x2, out = _decode(tmp_path / "x2.mkv"), _decode(tmp_path / "sized.mkv")
    assert x2.shape == (6, 360, 636, 3)
    assert out.shape == (6, 480, 480, 3)
    video = torch.from_numpy(x2).float().permute(0, 3, 1, 2)
    expected = release_output_resolution(video, 480, 480).round().clamp(0, 255).permute(0, 2, 3, 1).numpy()
    diff = np.abs(out.astype(np.float32) - expected)
    assert diff.max() <= 2 and diff.mean() < 0.6


def test_infer_pads_an_image_to_an_odd_size(tmp_path):
    # Images take any size. 318x180 fitted into 101x99: factor 101/318 -> 57x101, 21 black rows
    # above, 21 below.
    rng = np.random.default_rng(6)
    Image.fromarray(rng.integers(60, 200, size=(180, 318, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    out = vsrkit("infer", "method=bicubic", "scale=1", "input=in.png", "output=out.png",
                 "io.output_size=101x99", "io.output_fit=pad", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    image = np.asarray(Image.open(tmp_path / "out.png"))
    assert image.shape == (99, 101, 3)
    assert image[:21].max() == 0 and image[78:].max() == 0 and image[21:78].min() > 20


def test_infer_refuses_odd_sizes_and_bad_strings_before_loading(real_data, tmp_path):
    clip = real_data / "zhengchen1999_DOVE" / "002.mp4"
    odd = vsrkit("infer", "method=bicubic", f"input={clip}", "output=o.mp4", "io.output_size=641x480", cwd=tmp_path)
    assert odd.returncode == 2
    assert odd.stderr.strip().splitlines() == [
        "error: `io.output_size=641x480` is odd, which h264 yuv420p (4:2:0) cannot store in o.mp4; use an even "
        "size like 642x480, or io.pix_fmt=yuv444p, or io.codec=ffv1."]
    bad = vsrkit("infer", "method=bicubic", f"input={clip}", "output=o.mp4", "io.output_size=720p", cwd=tmp_path)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "`io.output_size` must be WIDTHxHEIGHT" in lines[0] and "'720p'" in lines[0]
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resize_runs_on_the_frames_device_and_matches_the_cpu():
    # A 4x 540p output brought to 1080p-wide 16:9 crop, on CUDA: same frames as on the CPU
    # (float32 interpolation; kernels differ only in rounding), and nothing leaves the device.
    frames = _frames(9, 540 * 2, 960 * 2, seed=7)
    geometry = OutputGeometry((1080, 1920), (720, 1280), "crop", "bicubic")
    on_gpu = geometry(frames.cuda())
    assert on_gpu.device.type == "cuda" and on_gpu.shape == (3, 9, 720, 1280)
    torch.testing.assert_close(on_gpu.cpu(), geometry(frames), rtol=0, atol=1e-4)
