"""Training validation conditioned on ground-truth keyframes (``validation.keyframes``), tiny SparkVSR.

The release's trainers save the validation clip's GT frames at ``_select_indices`` of the clip's
length; vsrkit's validation hook hands the method those frames through the engine's keyframe path
(``keyframes.source=gt``). Expected keyframes here are the GT frames as written (lossless FFV1),
converted to [-1, 1] by hand.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from vsrkit.backbones import BackboneConfig
from vsrkit.engine.run_infer import validation_hook, validation_keyframes
from vsrkit.engine.settings import ValidationConfig
from vsrkit.errors import UserError
from vsrkit.io import open_source
from vsrkit.methods.sparkvsr.config import SparkVSRConfig
from vsrkit.methods.sparkvsr.method import SparkVSRMethod

TINY = BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32")
FRAMES, LQ_HW, SCALE = 12, (16, 24), 4


def _write_clip(path, frames: np.ndarray) -> None:
    """Lossless RGB clip written with PyAV directly (not vsrkit's writer)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("validation")
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, size=(FRAMES, LQ_HW[0] * SCALE, LQ_HW[1] * SCALE, 3), dtype=np.uint8)
    lq = gt.reshape(FRAMES, LQ_HW[0], SCALE, LQ_HW[1], SCALE, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    _write_clip(folder / "gt.mkv", gt)
    _write_clip(folder / "lq.mkv", lq)
    return folder / "lq.mkv", folder / "gt.mkv", gt


@pytest.fixture(scope="module")
def method():
    method = SparkVSRMethod(SparkVSRConfig(), backbone=TINY, scale=SCALE)
    method.load(torch.device("cpu"))
    return method


def _unit(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame.astype(np.float32)).permute(2, 0, 1) / 255.0 * 2.0 - 1.0


def _recorded_validation(method, monkeypatch, config) -> tuple[list[dict], dict]:
    """Run the validation hook once; what each window's ``upscale`` received, and the scores."""
    seen = []
    upscale = method.upscale

    def spy(lq, context):
        seen.append({k: v.clone() for k, v in context.keyframes.items()})
        return upscale(lq, context)

    monkeypatch.setattr(method, "upscale", spy)
    validate = validation_hook(config, SCALE, spec=method.window_spec())
    scores = validate(method, 1)
    return seen, scores


def test_validation_gets_gt_keyframes_at_the_release_indices(clips, method, monkeypatch):
    lq, gt, gt_frames = clips
    config = ValidationConfig(lq=str(lq), gt=str(gt), metrics=["psnr"], max_frames=FRAMES)
    seen, scores = _recorded_validation(method, monkeypatch, config)
    # 12 frames padded to 17 (8k+1): _select_indices(17) = [0, 8, 16]; 16 is a padded copy of frame 11.
    assert len(seen) == 1  # one window (the default window of 81 holds the clip)
    assert sorted(seen[0]) == [0, 8, 16]
    for index, source in ((0, 0), (8, 8), (16, 11)):
        assert seen[0][index].shape == (3, 64, 96)
        assert torch.equal(seen[0][index], _unit(gt_frames[source]))
    assert np.isfinite(scores["psnr"])


def test_keyframes_steer_the_validation_scores(clips, method, monkeypatch):
    lq, gt, _ = clips
    conditioned = ValidationConfig(lq=str(lq), gt=str(gt), metrics=["psnr"], max_frames=FRAMES)
    blind = ValidationConfig(lq=str(lq), gt=str(gt), metrics=["psnr"], max_frames=FRAMES, keyframes="none")
    seen_blind, blind_scores = _recorded_validation(method, monkeypatch, blind)
    assert seen_blind == [{}]  # the released trainers' loop: an empty index list
    _, conditioned_scores = _recorded_validation(method, monkeypatch, conditioned)
    assert conditioned_scores["psnr"] != blind_scores["psnr"]


def test_manual_keyframes_and_a_short_span(clips, method, monkeypatch):
    lq, gt, gt_frames = clips
    config = ValidationConfig(lq=str(lq), gt=str(gt), metrics=["psnr"], max_frames=9, keyframes="manual",
                              keyframe_indices=[4])
    seen, _ = _recorded_validation(method, monkeypatch, config)
    assert sorted(seen[0]) == [4]
    assert torch.equal(seen[0][4], _unit(gt_frames[4]))
    # The validated 9 frames (not the clip's 12) are already 8k+1: the release's rule gives [0, 4, 8].
    seen, _ = _recorded_validation(method, monkeypatch, ValidationConfig(lq=str(lq), gt=str(gt), metrics=["psnr"],
                                                                         max_frames=9))
    assert sorted(seen[0]) == [0, 4, 8]
    assert torch.equal(seen[0][8], _unit(gt_frames[8]))


def test_bad_keyframe_settings_fail_before_training(clips, method):
    lq, gt, _ = clips
    config = ValidationConfig(lq=str(lq), gt=str(gt), max_frames=FRAMES, keyframes="manual", keyframe_indices=[40])
    with pytest.raises(UserError, match=r"validation.keyframes=manual on the 12 validated frames of .*lq.mkv: .*"
                                        r"\[0, 16\].*Got 40"):
        validation_hook(config, SCALE, spec=method.window_spec())
    with pytest.raises(ValueError, match=r"`validation.keyframe_indices` must list frames"):
        ValidationConfig(lq=str(lq), gt=str(gt), keyframes="manual")
    with pytest.raises(ValueError, match=r"`validation.keyframe_indices` is for `validation.keyframes=manual`"):
        ValidationConfig(lq=str(lq), gt=str(gt), keyframe_indices=[4])


def test_methods_without_keyframes_get_none(clips):
    from vsrkit.methods.protocol import WindowSpec

    lq, gt, _ = clips
    spec = WindowSpec(scale=SCALE)
    assert not spec.uses_keyframes
    assert validation_keyframes(ValidationConfig(lq=str(lq), gt=str(gt)), SCALE, spec, open_source(str(lq)), 9) is None
