"""SparkVSR training steps (both stages), checkpoints and export on the tiny preset (CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from sparkvsr_train_helpers import TINY
from sparkvsr_train_helpers import trainer as _trainer
from sparkvsr_train_helpers import training_batch as _batch
from vsrkit.backbones import BackboneConfig
from vsrkit.errors import UserError
from vsrkit.methods.sparkvsr.config import SparkVSRConfig
from vsrkit.methods.sparkvsr.method import SparkVSRMethod, augment_keyframe, training_keyframe_indices


def _one_step(method, batch):
    """Loss, logs and {name: changed?} for the transformer and the VAE after one SGD step."""
    before_t = {k: v.clone() for k, v in method.backbone.transformer.state_dict().items()}
    before_v = {k: v.clone() for k, v in method.backbone.vae.model.state_dict().items()}
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    loss, logs = method.training_step(batch)
    loss.backward()
    optimizer.step()
    changed_t = {k: not torch.equal(v, before_t[k]) for k, v in method.backbone.transformer.state_dict().items()}
    changed_v = [k for k, v in method.backbone.vae.model.state_dict().items() if not torch.equal(v, before_v[k])]
    return loss, logs, changed_t, changed_v


def test_training_keyframe_rule_matches_the_release_dataset():
    seen_counts = set()
    for seed in range(200):
        picks = training_keyframe_indices(33, torch.Generator().manual_seed(seed), dropout=0.1)
        seen_counts.add(len(picks))
        if picks:
            assert picks[0] == 0 and picks == sorted(set(picks)) and picks[-1] <= 32
            assert all(b - a >= 4 for a, b in zip(picks, picks[1:]))
    assert 0 in seen_counts and 9 in seen_counts and max(seen_counts) == 9  # dropout, 1..9 keyframes
    # n = 9 on 33 frames: step 4 -> every multiple of 4.
    for seed in range(500):
        picks = training_keyframe_indices(33, torch.Generator().manual_seed(seed), dropout=0.0)
        if len(picks) == 9:
            assert picks == list(range(0, 33, 4))
            break
    assert training_keyframe_indices(33, torch.Generator(), dropout=1.0) == []


def test_keyframe_augmentation_is_seeded_and_bounded():
    cfg = SparkVSRConfig()
    image = torch.rand(3, 16, 16) * 2 - 1
    a = augment_keyframe(image, torch.Generator().manual_seed(1), cfg)
    b = augment_keyframe(image, torch.Generator().manual_seed(1), cfg)
    c = augment_keyframe(image, torch.Generator().manual_seed(2), cfg)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Only the always-on noise: the residual has the configured std.
    quiet = SparkVSRConfig(keyframe_jitter_p=0.0, keyframe_blur_p=0.0)
    residual = augment_keyframe(image, torch.Generator().manual_seed(3), quiet) - image
    assert float(residual.std()) == pytest.approx(0.05, rel=0.15)


def test_stage1_step_changes_only_the_transformer_and_is_reproducible():
    method = _trainer(stage=1)
    batch = _batch(t=9)
    loss_a, _ = method.training_step(batch)
    loss_b, _ = method.training_step(batch)
    assert torch.equal(loss_a.detach(), loss_b.detach())  # all randomness seeded from (seed, step, index)
    loss_c, _ = method.training_step({**batch, "step": 1})
    assert not torch.equal(loss_a.detach(), loss_c.detach())
    loss, logs, changed_t, changed_v = _one_step(method, batch)
    assert set(logs) == {"latent_mse", "keyframes"} and math.isfinite(float(loss.detach()))
    assert logs["latent_mse"] == pytest.approx(float(loss.detach()))
    assert sum(changed_t.values()) > 0.9 * len(changed_t) and changed_v == []
    assert {id(p) for p in method.trainable_parameters()} == {id(p) for p in method.backbone.transformer.parameters()}


def test_stage1_needs_4k_plus_1_frames():
    method = _trainer(stage=1)
    with pytest.raises(UserError, match="4k\\+1 frames"):
        method.training_step(_batch(t=8))


@pytest.mark.parametrize("decode", ["per_frame", "whole"])
def test_stage2_step_images_without_and_videos_with_frame0_keyframe(decode, monkeypatch):
    method = _trainer(stage=2, dists_weight=0.0, s2_decode=decode)
    seen = {}
    original = method.denoise

    def spy(z_lr, z_kf, generator=None, guidance=1.0):
        seen["z_kf"] = z_kf.clone()
        return original(z_lr, z_kf, generator, guidance)

    monkeypatch.setattr(method, "denoise", spy)
    loss, logs, changed_t, changed_v = _one_step(method, _batch(t=2, is_image=(False, True)))
    assert set(logs) == {"pixel_mse", "frame_diff_l1"} and math.isfinite(float(loss.detach()))
    assert all(math.isfinite(v) for v in logs.values())
    assert sum(changed_t.values()) > 0.9 * len(changed_t) and changed_v == []
    z_kf = seen["z_kf"]  # (2, 16, 2, 4, 6): per-frame latents, sample 0 a video, sample 1 an image
    assert bool((z_kf[0, :, 0] != 0).any()) and bool((z_kf[0, :, 1] == 0).all())
    assert bool((z_kf[1] == 0).all())


def test_stage2_dists_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    method = SparkVSRMethod(SparkVSRConfig(stage=2, dists_weight=1.0), backbone=TINY, scale=4)
    with pytest.raises(UserError, match="method.dists_weight=0"):
        method.setup_training(torch.device("cpu"))


def test_state_dict_round_trip_and_export_loads_back(tmp_path):
    method = _trainer(stage=1)
    _one_step(method, _batch(t=9))
    state = {k: v.clone() for k, v in method.state_dict().items()}
    assert not any(k.startswith(("module.", "_orig_mod.", "transformer.")) for k in state)
    fresh = _trainer(stage=1)
    fresh.load_state_dict(state)
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())

    method.export(str(tmp_path / "export"))
    names = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert names == ["model_index.json", "scheduler", "transformer", "vae"]
    reloaded = SparkVSRMethod(SparkVSRConfig(), backbone=BackboneConfig(
        preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32", path=str(tmp_path / "export")), scale=4)
    reloaded.load(torch.device("cpu"), torch.float32)
    got = reloaded.backbone.transformer.state_dict()
    assert sorted(got) == sorted(state) and all(torch.equal(got[k], state[k]) for k in state)
    assert reloaded.backbone.scheduler_config["rescale_betas_zero_snr"] is True
    assert math.sqrt(reloaded.backbone.alpha_bar(399)) == pytest.approx(0.62733, abs=1e-5)


def test_training_data_spec_follows_the_release_per_stage():
    s1 = SparkVSRMethod(SparkVSRConfig(stage=1), backbone=TINY).training_data_spec()
    s2 = SparkVSRMethod(SparkVSRConfig(stage=2), backbone=TINY).training_data_spec()
    assert s1 == {"num_frames": 33, "hr_size": (320, 640), "frame_multiple": 4, "frame_offset": 1}
    assert s2 == {"num_frames": 2, "hr_size": (320, 640), "frame_multiple": 1, "frame_offset": 0}
    assert SparkVSRMethod(SparkVSRConfig(stage=1, train_frames=9), backbone=TINY).training_data_spec()["num_frames"] == 9
    with pytest.raises(UserError, match="`train_frames` must be 4k\\+1"):
        SparkVSRConfig(stage=1, train_frames=8)
    with pytest.raises(UserError, match="`train_size` must be \\[H, W\\], multiples of 16"):
        SparkVSRConfig(train_size=[320, 650])
