"""Keyframe selectors and sources (vsrkit/engine/keyframes.py), as SparkVSR uses them."""

from __future__ import annotations

import shlex
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsrkit.engine.keyframes import (
    KeyframesConfig,
    center_crop_to_aspect,
    fit_keyframe,
    prepare_keyframes,
    select_first_middle_last,
    select_iframes,
    select_manual,
    select_random,
    snap_and_space,
)
import sparkvsr_release as release
from vsrkit.errors import UserError
from vsrkit.io.images import write_image


def _frames(t=9, h=6, w=10, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, h, w, generator=g) * 2 - 1


def _prepare(cfg, frames, scale=2, out_hw=None, content_hw=None, input_path=None, padded_frames=None):
    t, _, h, w = frames.shape
    return prepare_keyframes(cfg, input_path=input_path, num_frames=t, lq_frame=lambda i: frames[i],
                             out_hw=out_hw or (h * scale, w * scale), content_hw=content_hw, scale=scale,
                             padded_frames=padded_frames)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


# --- selectors -------------------------------------------------------------------------------


def test_first_middle_last_matches_release_on_8k_plus_1_and_snaps_otherwise():
    cfg = KeyframesConfig()
    # Release _select_indices(F) = [0, F//2, F-1]; for F = 8k+1 these are multiples of 4.
    assert select_first_middle_last(cfg, num_frames=33) == [0, 16, 32]
    assert select_first_middle_last(cfg, num_frames=49) == [0, 24, 48]
    # Other lengths are snapped down to multiples of 4 (ComfyUI port rule): [0, 25, 49] -> [0, 24, 48].
    assert select_first_middle_last(cfg, num_frames=50) == [0, 24, 48]
    assert select_first_middle_last(cfg, num_frames=6) == [0, 4]
    assert select_first_middle_last(cfg, num_frames=2) == [0]
    assert select_first_middle_last(cfg, num_frames=1) == [0]


def test_manual_dedupes_sorts_and_keeps_indices_as_given():
    cfg = KeyframesConfig(selector="manual", indices=[32, 0, 7, 32])
    assert select_manual(cfg, num_frames=40) == [0, 7, 32]


@pytest.mark.parametrize("indices, fragment", [
    ([0, 3], "at least 4 frames apart"),
    ([0, 8, 10], "Got 8 and 10 (gap 2)"),
    ([0, 40], "in [0, 32]"),
    ([-4, 8], "Got -4"),
])
def test_manual_bad_indices_fail_clearly(indices, fragment):
    cfg = KeyframesConfig(selector="manual", source="lr", indices=indices)
    with pytest.raises(UserError, match=r"keyframes\.indices") as err:
        select_manual(cfg, num_frames=33)
    assert fragment in str(err.value)
    # prepare_keyframes surfaces the same error before any source runs.
    with pytest.raises(UserError, match=r"keyframes\.indices"):
        _prepare(cfg, _frames(t=33, h=2, w=2))


def test_manual_without_indices_is_an_error():
    with pytest.raises(UserError, match="at least one frame"):
        select_manual(KeyframesConfig(selector="manual"), num_frames=9)


def test_random_is_seeded_aligned_and_spaced():
    cfg = KeyframesConfig(selector="random", count=4, seed=3)
    first = select_random(cfg, num_frames=101)
    assert first == select_random(cfg, num_frames=101)
    assert first == sorted(first) and len(set(first)) == 4
    assert all(i % 4 == 0 and 0 <= i < 101 for i in first)
    others = {tuple(select_random(KeyframesConfig(selector="random", count=4, seed=s), num_frames=101))
              for s in range(5)}
    assert len(others) > 1  # the seed matters
    # A wider min_gap draws from a coarser grid.
    wide = select_random(KeyframesConfig(selector="random", count=3, seed=0, min_gap=10), num_frames=101)
    assert all(i % 12 == 0 for i in wide) and all(b - a >= 10 for a, b in zip(wide, wide[1:]))


def test_random_with_too_few_candidates_uses_all(caplog):
    cfg = KeyframesConfig(selector="random", count=5)
    assert select_random(cfg, num_frames=9) == [0, 4, 8]
    assert "only 3 candidates" in caplog.text


def test_snap_and_space_keeps_earliest():
    assert snap_and_space([13, 1, 2, 9, 100], align=4, min_gap=4) == [0, 8, 12, 100]
    assert snap_and_space([0, 4, 8, 12], align=4, min_gap=8) == [0, 8]


def test_iframes_on_onepiece_are_0_and_100(real_data):
    path = real_data / "xinntao_Real-ESRGAN" / "onepiece_demo.mp4"
    assert select_iframes(KeyframesConfig(selector="iframes"), num_frames=181, input_path=str(path)) == [0, 100]


def test_iframes_fall_back_to_frame_0_without_a_video(tmp_path, caplog):
    assert select_iframes(KeyframesConfig(selector="iframes"), num_frames=9, input_path=str(tmp_path)) == [0]
    assert "not a video" in caplog.text


# --- sources ---------------------------------------------------------------------------------


def test_source_none_gives_no_keyframes():
    assert _prepare(KeyframesConfig(), _frames()) == {}


def test_unknown_names_fail_with_close_matches():
    with pytest.raises(UserError, match=r"keyframes\.source.*Did you mean `images`"):
        _prepare(KeyframesConfig(source="imags"), _frames())
    with pytest.raises(UserError, match=r"keyframes\.selector.*Unknown keyframe selector `iframe`"):
        _prepare(KeyframesConfig(selector="iframe", source="lr"), _frames())


def test_source_lr_is_the_bilinear_upsampled_frame():
    frames = _frames(t=9)
    got = _prepare(KeyframesConfig(source="lr"), frames, scale=2)
    assert sorted(got) == [0, 4, 8]
    want = F.interpolate(frames[4:5], scale_factor=2, mode="bilinear", align_corners=False)[0]
    assert got[4].shape == (3, 12, 20) and got[4].dtype == torch.float32
    torch.testing.assert_close(got[4], want.clamp(-1, 1))


def test_center_crop_to_aspect_crops_the_middle():
    image = torch.zeros(3, 10, 30)
    image[:, :, 10:20] = 1.0  # the middle third
    crop = center_crop_to_aspect(image, 10, 10)
    assert crop.shape == (3, 10, 10) and bool((crop == 1).all())
    assert center_crop_to_aspect(image, 20, 60) is image


def test_fit_keyframe_pads_with_black_to_the_padded_size():
    image = torch.full((3, 40, 80), 0.5)
    out = fit_keyframe(image, content_hw=(20, 40), out_hw=(24, 48))
    assert out.shape == (3, 24, 48)
    torch.testing.assert_close(out[:, :20, :40], torch.full((3, 20, 40), 0.5))
    assert bool((out[:, 20:] == -1).all()) and bool((out[:, :, 40:] == -1).all())


def test_source_images_pairs_files_in_order_and_checks_the_count(tmp_path):
    frames = _frames(t=9)
    colours = {0: 0.2, 8: -0.6}
    for n, (index, value) in enumerate(colours.items()):
        img = torch.full((3, 24, 60), value)  # wider than 12x20 -> centre-cropped, then resized
        img[:, :, :6] = 1.0  # left band is cropped away
        write_image(tmp_path / f"key{n + 1}.png", _to_uint8(img))
    cfg = KeyframesConfig(selector="manual", indices=[0, 8], source="images", images=[str(tmp_path)])
    got = _prepare(cfg, frames, scale=2)
    assert sorted(got) == [0, 8]
    for index, value in colours.items():
        assert got[index].shape == (3, 12, 20)
        assert abs(float(got[index].mean()) - value) < 0.02
    cfg_bad = KeyframesConfig(selector="manual", indices=[0, 4, 8], source="images", images=[str(tmp_path)])
    with pytest.raises(UserError, match=r"has 2 image\(s\) but the selector chose 3"):
        _prepare(cfg_bad, frames, scale=2)
    with pytest.raises(UserError, match="x.txt does not exist"):  # missing is not "not an image" (item 9)
        _prepare(KeyframesConfig(selector="manual", indices=[0], source="images", images=[str(tmp_path / "x.txt")]),
                 frames, scale=2)
    (tmp_path / "x.txt").write_text("notes")
    with pytest.raises(UserError, match="not an image file"):
        _prepare(KeyframesConfig(selector="manual", indices=[0], source="images", images=[str(tmp_path / "x.txt")]),
                 frames, scale=2)


def test_source_gt_reads_frames_of_a_folder(tmp_path):
    frames = _frames(t=9)
    gt = torch.rand(9, 3, 12, 20) * 2 - 1
    for i in range(9):
        write_image(tmp_path / f"{i:03d}.png", _to_uint8(gt[i]))
    cfg = KeyframesConfig(source="gt", gt=str(tmp_path))
    got = _prepare(cfg, frames, scale=2, out_hw=(16, 24), content_hw=(12, 20))
    assert sorted(got) == [0, 4, 8]
    quantised = torch.from_numpy(_to_uint8(gt[4])).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(got[4][:, :12, :20], quantised)
    assert bool((got[4][:, 12:] == -1).all())


def _phone_clip(path, frames: np.ndarray) -> None:
    """A lossless clip of ``frames (T, H, W, 3)`` stored as given, shown turned clockwise (a
    phone held upright: display matrix of rotation -90)."""
    import av

    one = 1 << 16
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264rgb", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        stream.options = {"qp": "0"}
        stream.set_display_matrix([0, one, 0, -one, 0, 0, 0, 0, 1 << 30])
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))


def test_keyframes_line_up_with_the_stored_frames_of_a_rotated_input(tmp_path):
    # The input is a phone clip: 20x12 stored, shown 12x20 (portrait). A keyframe photo, a GT
    # frames folder (both upright) and a GT video with the same rotation must all reach the method
    # as the input stores its frames: the photo turned back counter-clockwise, the GT video as stored.
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 256, (9, 12, 20, 3), dtype=np.uint8)
    _phone_clip(tmp_path / "in.mp4", stored)
    shown = np.rot90(stored, k=-1, axes=(1, 2))  # what a player shows: a clockwise quarter turn
    frames = torch.from_numpy(stored).permute(0, 3, 1, 2).float() / 127.5 - 1

    def expected(index):
        return torch.from_numpy(stored[index]).permute(2, 0, 1).float() / 127.5 - 1

    (tmp_path / "photos").mkdir()
    write_image(tmp_path / "photos" / "key.png", np.ascontiguousarray(shown[4]))
    got = _prepare(KeyframesConfig(selector="manual", indices=[4], source="images",
                                   images=[str(tmp_path / "photos")]), frames, scale=1,
                   input_path=str(tmp_path / "in.mp4"))
    torch.testing.assert_close(got[4], expected(4))
    (tmp_path / "gt").mkdir()
    for index in range(9):
        write_image(tmp_path / "gt" / f"{index:03d}.png", np.ascontiguousarray(shown[index]))
    got = _prepare(KeyframesConfig(source="gt", gt=str(tmp_path / "gt")), frames, scale=1,
                   input_path=str(tmp_path / "in.mp4"))
    assert sorted(got) == [0, 4, 8]
    torch.testing.assert_close(got[8], expected(8))
    got = _prepare(KeyframesConfig(source="gt", gt=str(tmp_path / "in.mp4")), frames, scale=1,
                   input_path=str(tmp_path / "in.mp4"))
    torch.testing.assert_close(got[0], expected(0))


def test_source_gt_too_short_fails(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"{i}.png", np.zeros((12, 20, 3), np.uint8))
    with pytest.raises(UserError, match="fewer frames"):
        _prepare(KeyframesConfig(source="gt", gt=str(tmp_path)), _frames(t=9), scale=2)


def test_source_method_runs_a_registered_method_in_image_mode():
    from vsrkit.methods.baselines.config import BicubicConfig
    from vsrkit.methods.baselines.method import InterpolationMethod, resize_frames

    frames = _frames(t=5)
    got = _prepare(KeyframesConfig(source="method", method="bicubic"), frames, scale=2)
    assert sorted(got) == [0, 4]
    want = resize_frames(frames[4][None, :, None], 12, 20, "cubic", -0.5)[0, :, 0]
    torch.testing.assert_close(got[4], want.clamp(-1, 1))
    assert isinstance(InterpolationMethod(BicubicConfig()), InterpolationMethod)
    with pytest.raises(UserError, match="keyframes.method"):
        _prepare(KeyframesConfig(source="method", method="bicubc"), frames, scale=2)


def test_source_method_with_a_backbone_runs_sparkvsr_itself_in_image_mode():
    frames = _frames(t=1, h=4, w=4)
    tiny = {"preset": "cogvideox1.5-5b-i2v-tiny", "family": "cogvideox", "dtype": "fp32"}
    cfg = KeyframesConfig(source="method", method="sparkvsr", method_backbone=tiny,
                          method_options={"posterior": "mode"})
    got = _prepare(cfg, frames, scale=4)
    assert sorted(got) == [0] and got[0].shape == (3, 16, 16) and bool(torch.isfinite(got[0]).all())
    with pytest.raises(UserError, match="set keyframes.method_backbone"):
        _prepare(KeyframesConfig(source="method", method="sparkvsr"), frames, scale=4)


_NEAREST_X2 = (
    "import sys, numpy as np; from vsrkit.io.images import read_image, write_image; "
    "a = read_image(sys.argv[1]); write_image(sys.argv[2], a.repeat(2, 0).repeat(2, 1))"
)


def test_source_command_runs_the_template_and_reads_its_output():
    frames = _frames(t=5)
    cfg = KeyframesConfig(source="command", command=f"{shlex.quote(sys.executable)} -c {shlex.quote(_NEAREST_X2)} "
                                                    "{input} {output}")
    got = _prepare(cfg, frames, scale=2)
    assert sorted(got) == [0, 4]
    lr = torch.from_numpy(_to_uint8(frames[4])).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(got[4], lr.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_source_command_failures_are_user_errors():
    frames = _frames(t=1)
    py = shlex.quote(sys.executable)
    failing = KeyframesConfig(source="command", command=py + " -c 'import sys; sys.exit(\"boom\")' {input} {output}")
    with pytest.raises(UserError, match=r"failed for keyframe 0 \(exit 1\): boom"):
        _prepare(failing, frames, scale=2)
    silent = KeyframesConfig(source="command", command=py + " -c 'pass' {input} {output_dir}")
    with pytest.raises(UserError, match="wrote 0 images"):
        _prepare(silent, frames, scale=2)
    with pytest.raises(UserError, match=r"must contain \{input\}"):
        _prepare(KeyframesConfig(source="command", command="true {output}"), frames, scale=2)
    with pytest.raises(UserError, match="not found"):
        _prepare(KeyframesConfig(source="command", command="no-such-program-xyz {input} {output}"), frames, scale=2)


# --- the release's automatic rule on the padded length (issue 14) --------------------------------


@pytest.mark.parametrize("frames", [1, 2, 9, 17, 32, 33, 50, 57, 100])
def test_automatic_keyframes_are_the_release_rule_on_the_8k_plus_1_padded_length(frames):
    padded = release.padded_to_8k_plus_1(frames)
    got = _prepare(KeyframesConfig(source="lr"), _frames(t=frames, h=2, w=2), padded_frames=padded)
    assert sorted(got) == release.select_indices(padded)


def test_32_and_50_frames_give_the_releases_indices_and_real_length_is_the_option():
    assert sorted(_prepare(KeyframesConfig(source="lr"), _frames(t=32, h=2, w=2), padded_frames=33)) == [0, 16, 32]
    assert sorted(_prepare(KeyframesConfig(source="lr"), _frames(t=50, h=2, w=2), padded_frames=57)) == [0, 28, 56]
    real = KeyframesConfig(source="lr", length="real")
    assert sorted(_prepare(real, _frames(t=50, h=2, w=2), padded_frames=57)) == [0, 24, 48]
    with pytest.raises(UserError, match=r"`keyframes.length` must be one of \['padded', 'real'\]"):
        KeyframesConfig(length="clip")


def test_a_keyframe_in_the_padding_is_made_from_the_last_real_frame(tmp_path):
    frames = _frames(t=50, h=2, w=3)
    got = _prepare(KeyframesConfig(source="lr"), frames, padded_frames=57)
    want = F.interpolate(frames[49:50], scale_factor=2, mode="bilinear", align_corners=False)[0].clamp(-1, 1)
    torch.testing.assert_close(got[56], want)  # the release reads min(idx, F - 1) / the padded video
    gt = torch.rand(50, 3, 4, 6) * 2 - 1
    for i in range(50):
        write_image(tmp_path / f"{i:03d}.png", _to_uint8(gt[i]))
    got = _prepare(KeyframesConfig(source="gt", gt=str(tmp_path)), frames, padded_frames=57)
    torch.testing.assert_close(got[56], torch.from_numpy(_to_uint8(gt[49])).permute(2, 0, 1).float() / 127.5 - 1)


def test_manual_indices_past_the_padded_clip_name_both_lengths():
    cfg = KeyframesConfig(selector="manual", indices=[0, 60], source="lr")
    with pytest.raises(UserError, match=r"50 real frames, 57 with the method's padding"):
        _prepare(cfg, _frames(t=50, h=2, w=2), padded_frames=57)


def test_infer_selects_0_28_56_on_a_real_50_frame_clip(real_data, caplog):
    """The acceptance check's clip: vsrkit infer's keyframes on the SparkVSR spec's padded length."""
    from omegaconf import OmegaConf

    from vsrkit.backbones import BackboneConfig
    from vsrkit.engine.run_infer import keyframes_from_config
    from vsrkit.io import open_source
    from vsrkit.methods.sparkvsr.config import SparkVSRConfig
    from vsrkit.methods.sparkvsr.method import SparkVSRMethod

    spec = SparkVSRMethod(SparkVSRConfig(), backbone=BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny"),
                          scale=4).window_spec()
    source = open_source(real_data / "zhengchen1999_DOVE" / "003.mp4")
    assert source.info.num_frames == 50
    make = keyframes_from_config(OmegaConf.structured(KeyframesConfig(source="lr")), scale=4,
                                 padded_length=spec.padded_length)
    with caplog.at_level("INFO"):
        keyframes = make(source, 50)
    assert sorted(keyframes) == [0, 28, 56]
    assert "chose [0, 28, 56]" in caplog.text
    assert keyframes[56].shape == (3, source.info.height * 4, source.info.width * 4)


def test_keyframes_are_made_on_the_engine_device(monkeypatch, real_data):
    from vsrkit.engine import keyframes as keyframes_module
    from vsrkit.engine.run_infer import keyframes_from_config
    from vsrkit.io import open_source

    seen = {}
    monkeypatch.setattr(keyframes_module, "prepare_keyframes", lambda config, **kwargs: seen.update(kwargs) or {})
    from omegaconf import OmegaConf

    node = OmegaConf.structured(KeyframesConfig(source="lr"))
    make = keyframes_from_config(node, scale=2, device=torch.device("cpu", 0))
    make(open_source(real_data / "zhengchen1999_DOVE/002.mp4"), 9)
    assert seen["device"] == torch.device("cpu", 0)
