"""Display matrices applied to pixels (vsrkit/io/orientation.py), against FFmpeg's own command line.

The golden frames come from the ``ffmpeg`` binary that ``imageio-ffmpeg`` ships (a dependency of
DiffSynth): ``ffmpeg -i clip.mp4 frame.png`` rotates and flips by the display matrix on its own
(``-autorotate`` is its default). Clips are written losslessly (x264 at qp 0, 4:4:4) so any
wrong turn or flip differs by far more than the RGB conversion's rounding.
"""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest

from vsrkit.io import FramesWriter, open_source, read_image
from vsrkit.io.images import probe_image
from vsrkit.io.orientation import display_rotation, orient, swaps_axes

ONE = 1 << 16
W_ONE = 1 << 30
MATRICES = {
    # PyAV's set_display_rotation(90): counter-clockwise quarter turn.
    "ccw90": (0, -ONE, 0, ONE, 0, 0, 0, 0, W_ONE),
    # A phone held upright: the stored landscape frame turned clockwise (rotation -90).
    "cw90": (0, ONE, 0, -ONE, 0, 0, 0, 0, W_ONE),
    "half_turn": (-ONE, 0, 0, 0, -ONE, 0, 0, 0, W_ONE),
    "hflip": (-ONE, 0, 0, 0, ONE, 0, 0, 0, W_ONE),
    "vflip": (ONE, 0, 0, 0, -ONE, 0, 0, 0, W_ONE),
    "transpose": (0, ONE, 0, ONE, 0, 0, 0, 0, W_ONE),
    "antitranspose": (0, -ONE, 0, -ONE, 0, 0, 0, 0, W_ONE),
    "identity": (ONE, 0, 0, 0, ONE, 0, 0, 0, W_ONE),
}
HEIGHT, WIDTH = 48, 80  # not square, so a missing or extra transpose changes the shape


def _pattern(seed: int = 0) -> np.ndarray:
    """Random 8x8-pixel blocks: every turn and flip of it is far from every other."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, 0), 8, 1)


def _write_clip(helpers, path, matrix, frames: int = 2) -> None:
    helpers.write_rgb_clip(path, np.stack([_pattern(index) for index in range(frames)]), fps=10,
                           pix_fmt="yuv444p", options={"qp": "0"}, display_matrix=matrix)


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    return pytest.importorskip("imageio_ffmpeg").get_ffmpeg_exe()


@pytest.mark.parametrize("name", sorted(MATRICES))
def test_frames_match_what_ffmpeg_displays(tmp_path, ffmpeg, helpers, name):
    clip = tmp_path / f"{name}.mp4"
    _write_clip(helpers, clip, MATRICES[name])
    subprocess.run([ffmpeg, "-v", "error", "-i", str(clip), "-frames:v", "1", str(tmp_path / "shown.png")],
                   check=True)
    shown = read_image(tmp_path / "shown.png")
    source = open_source(clip)
    # MP4 leaves an identity matrix out (tkhd's default).
    assert source.info.display_matrix == (None if name == "identity" else MATRICES[name])
    stored = source.read(max_frames=1)
    ours = orient(stored, source.info.display_matrix)[0]
    assert ours.shape == shown.shape
    assert np.abs(ours.astype(int) - shown).max() <= 2
    assert swaps_axes(MATRICES[name]) == (shown.shape[:2] == (WIDTH, HEIGHT))


def test_rotation_angle_follows_ffmpeg_rounding_and_wrap():
    assert display_rotation(MATRICES["ccw90"]) == 270  # av_display_rotation_get 90, negated, wrapped
    assert display_rotation(MATRICES["cw90"]) == 90
    assert display_rotation(MATRICES["half_turn"]) == 180
    assert display_rotation(MATRICES["identity"]) == 0
    # Angles are rounded to whole degrees, then wrapped into [0, 360).
    for degrees, expected in ((-0.4, 0), (-1.3, 359), (0.6, 1)):
        angle = np.radians(degrees)
        matrix = (round(np.cos(angle) * ONE), round(np.sin(angle) * ONE), 0, round(-np.sin(angle) * ONE),
                  round(np.cos(angle) * ONE), 0, 0, 0, W_ONE)
        assert display_rotation(matrix) == expected
    assert np.isnan(display_rotation((0, 0, 0, 0, 0, 0, 0, 0, W_ONE)))


def test_angles_that_are_not_quarter_turns_keep_the_stored_frames(caplog):
    angle = np.radians(30)
    matrix = (round(np.cos(angle) * ONE), round(np.sin(angle) * ONE), 0, round(-np.sin(angle) * ONE),
              round(np.cos(angle) * ONE), 0, 0, 0, W_ONE)
    frames = _pattern()[None]
    assert orient(frames, matrix) is frames
    assert orient(frames, matrix) is frames
    assert caplog.text.count("not a quarter turn") == 1  # once, not once per chunk
    assert orient(frames, None) is frames
    assert not swaps_axes(matrix) and not swaps_axes(None)


def _vsrkit(*args, cwd):
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_output_size_is_the_displayed_size_and_the_matrix_is_kept(tmp_path, helpers):
    # A phone-style clip: 80x48 stored, shown 48x80. io.output_size=96x160 is portrait as shown,
    # so the stored frames are 160x96 and the output keeps the matrix.
    _write_clip(helpers, tmp_path / "phone.mp4", MATRICES["cw90"], frames=3)
    run = _vsrkit("infer", "method=bicubic", "scale=2", "input=phone.mp4", "output=out.mkv", "io.codec=ffv1",
                  "io.output_size=96x160", "io.output_fit=stretch", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    info = open_source(tmp_path / "out.mkv").info
    assert (info.width, info.height, info.display_matrix) == (160, 96, MATRICES["cw90"])
    _write_clip(helpers, tmp_path / "flat.mp4", MATRICES["half_turn"], frames=3)
    run = _vsrkit("infer", "method=bicubic", "scale=2", "input=flat.mp4", "output=flat.mkv", "io.codec=ffv1",
                  "io.output_size=96x160", "io.output_fit=stretch", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (open_source(tmp_path / "flat.mkv").info.width, open_source(tmp_path / "flat.mkv").info.height) == (96, 160)


def test_eval_compares_as_displayed(tmp_path, helpers):
    # Ground truth is a rotated video; the prediction, its frames as shown (what `ffmpeg -i gt.mp4
    # %06d.png` gives). As displayed they are the same picture; as stored the sizes differ and
    # centre-cropping compares different pixels.
    _write_clip(helpers, tmp_path / "gt.mp4", MATRICES["cw90"], frames=2)
    source = open_source(tmp_path / "gt.mp4")
    with FramesWriter(tmp_path / "pred") as writer:
        writer.write(np.rot90(source.read(), k=-1, axes=(1, 2)))
    shown = _vsrkit("eval", "pred=pred", "gt=gt.mp4", "metric=[psnr]", "output=shown.json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    stored = _vsrkit("eval", "pred=pred", "gt=gt.mp4", "metric=[psnr]", "output=stored.json", "autorotate=false",
                     cwd=tmp_path)
    assert stored.returncode == 0, stored.stderr
    import json

    psnr_shown = json.loads((tmp_path / "shown.json").read_text())["summary"]["scores"]["psnr"]
    psnr_stored = json.loads((tmp_path / "stored.json").read_text())["summary"]["scores"]["psnr"]
    assert psnr_shown > 60 and psnr_stored < 30


def test_eval_output_must_be_json_so_an_input_is_never_replaced(tmp_path, helpers):
    _write_clip(helpers, tmp_path / "gt.mp4", MATRICES["identity"], frames=1)
    before = (tmp_path / "gt.mp4").read_bytes()
    run = _vsrkit("eval", "pred=gt.mp4", "gt=gt.mp4", "metric=[psnr]", "output=gt.mp4", cwd=tmp_path)
    assert run.returncode == 2
    assert "`output` is where the scores go, a .json file. Got gt.mp4." in run.stderr
    assert (tmp_path / "gt.mp4").read_bytes() == before


def _exif_image(path, orientation: int, seed: int = 0) -> np.ndarray:
    """Save the pattern with an EXIF Orientation tag; returns the stored pixels."""
    from PIL import Image

    stored = _pattern(seed)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, exif=exif.tobytes(), **({"quality": 100} if path.suffix == ".jpg" else {}))
    return stored


@pytest.mark.parametrize("orientation", range(1, 9))
def test_images_are_read_upright_like_pillow_exif_transpose(tmp_path, orientation):
    from PIL import Image, ImageOps

    path = tmp_path / "photo.png"  # PNG's eXIf chunk: lossless, so the comparison is exact
    _exif_image(path, orientation)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)
    assert probe_image(path)[:2] == (expected.shape[1], expected.shape[0])


def test_a_phone_jpeg_is_upright_like_ffmpeg_shows_it(tmp_path, ffmpeg):
    path = tmp_path / "photo.jpg"
    _exif_image(path, 6)  # the usual portrait phone photo: stored landscape, turn clockwise
    subprocess.run([ffmpeg, "-v", "error", "-i", str(path), str(tmp_path / "shown.png")], check=True)
    with av.open(str(tmp_path / "shown.png")) as container:  # PyAV, not vsrkit's reader
        shown = next(container.decode(video=0)).to_ndarray(format="rgb24")
    ours = read_image(path)
    assert ours.shape == shown.shape == (WIDTH, HEIGHT, 3)
    # Two JPEG decoders differ at the blocks' edges (chroma upsampling); a wrong turn differs by
    # about 85 everywhere.
    assert np.median(np.abs(ours.astype(int) - shown)) <= 2
    assert np.abs(ours.astype(int) - shown).mean() < 12
    assert np.abs(ours[::-1, ::-1].astype(int) - shown).mean() > 40


def test_infer_on_a_folder_of_phone_photos_writes_them_upright(tmp_path):
    (tmp_path / "photos").mkdir()
    stored = [_exif_image(tmp_path / "photos" / f"{i}.png", 6, seed=i) for i in range(2)]
    run = _vsrkit("infer", "method=bicubic", "scale=1", "input=photos", "output=out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    for index, pixels in enumerate(stored):
        np.testing.assert_array_equal(read_image(tmp_path / "out" / f"{index}.png"), np.rot90(pixels, k=-1))
