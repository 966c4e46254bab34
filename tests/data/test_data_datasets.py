"""Training datasets: item shapes and ranges, determinism in (seed, epoch, index), LR/HR alignment,
images as pseudo-videos, metadata prompts, image/video batch mixing, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datahelpers import REPO
from PIL import Image
from torch.utils.data import DataLoader

from vsrkit.data import HQDataConfig, ImageVideoBatchSampler, PairedDataConfig, build_train_dataset
from vsrkit.data.degradations import build_degradation
from vsrkit.data.degradations.config import BDConfig, RealBasicVSRConfig
from vsrkit.data.media import write_lossless_mkv
from vsrkit.errors import UserError

RULE = {"frame_multiple": 4, "frame_offset": 1}


@pytest.fixture(scope="module")
def demo(real_data):
    """The `demo` preset (HQ clips under ../shared/data/real) with the RealBasicVSR degradation."""
    from test_data_eval_sets import compose

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # the preset's root is relative to the project root
        cfg = compose("data", "demo")
    return build_train_dataset(cfg, RealBasicVSRConfig(), num_frames=5, hr_size=(320, 640), scale=4,
                               seed=7, **RULE)


def test_demo_items(demo):
    assert len(demo) >= 7 and demo.num_images == 0
    for index in (0, len(demo) - 1):
        item = demo[index]
        assert tuple(item["hq"].shape) == (3, 5, 64, 64)  # the preset's 64x64 crop wins
        assert tuple(item["lq"].shape) == (3, 5, 16, 16)
        for key in ("hq", "lq"):
            assert item[key].dtype == torch.float32
            assert -1.0 <= float(item[key].min()) and float(item[key].max()) <= 1.0
        assert item["is_image"] is False and item["index"] == index and isinstance(item["prompt"], str)
        assert float(item["hq"].std()) > 0.01  # real content, not padding


def test_items_are_deterministic_in_seed_epoch_index(demo):
    a, b = demo[(3, 2)], demo[(3, 2)]
    assert torch.equal(a["hq"], b["hq"]) and torch.equal(a["lq"], b["lq"])
    again = build_train_dataset(demo.config, RealBasicVSRConfig(), num_frames=5, hr_size=(64, 64), scale=4,
                                seed=7, **RULE)
    assert torch.equal(again[(3, 2)]["lq"], a["lq"])
    assert not torch.equal(demo[(4, 2)]["hq"], a["hq"])  # another epoch, another crop
    demo.set_epoch(3)
    assert torch.equal(demo[2]["lq"], a["lq"])
    other_seed = build_train_dataset(demo.config, RealBasicVSRConfig(), num_frames=5, hr_size=(64, 64),
                                     scale=4, seed=8, **RULE)
    assert not torch.equal(other_seed[(3, 2)]["hq"], a["hq"])


def test_dataloader_workers_match_in_process(demo):
    demo.set_epoch(0)
    sampler = demo.batch_sampler(2, shuffle=True)
    first = next(iter(sampler))
    loader = DataLoader(demo, batch_sampler=demo.batch_sampler(2, shuffle=True), num_workers=1)
    batch = next(iter(loader))
    assert batch["index"].tolist() == first
    assert torch.equal(batch["lq"], torch.stack([demo[i]["lq"] for i in first]))
    assert tuple(batch["hq"].shape) == (2, 3, 5, 64, 64)


def test_frame_rule_and_sizes_are_checked(demo):
    with pytest.raises(UserError, match=r"`num_frames` must be 4k\+1"):
        build_train_dataset(demo.config, RealBasicVSRConfig(), num_frames=6, hr_size=(64, 64), scale=4, **RULE)
    cfg = HQDataConfig(name="hq", root=demo.config.root, exclude=list(demo.config.exclude))
    with pytest.raises(UserError, match="multiple of scale 4"):
        build_train_dataset(cfg, RealBasicVSRConfig(), num_frames=5, hr_size=(62, 64), scale=4, **RULE)
    with pytest.raises(UserError, match="needs a degradation"):
        build_train_dataset(cfg, None, num_frames=5, hr_size=(64, 64), scale=4, **RULE)
    ok = build_train_dataset(cfg, BDConfig(), num_frames=9, hr_size=(32, 48), scale=4,
                             frame_multiple=8, frame_offset=1)
    assert tuple(ok[0]["hq"].shape) == (3, 9, 32, 48)


def _smooth_video(path, frames=12, size=(96, 128), seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[0] // 8 + 2, size[1] // 8 + 2, 3)).astype(np.uint8)
    big = np.asarray(Image.fromarray(base).resize((size[1] + 64, size[0] + 64), Image.BICUBIC))
    clip = np.stack([big[t:t + size[0], 2 * t:2 * t + size[1]] for t in range(frames)])
    write_lossless_mkv(path, clip)
    return clip


def test_hq_video_lr_and_hr_are_aligned(tmp_path):
    # With the deterministic BD degradation the LR crop must equal BD of the HR crop (away from the
    # crop border, where BD of the larger context saw different neighbours).
    _smooth_video(tmp_path / "a.mkv")
    ds = build_train_dataset(HQDataConfig(root=str(tmp_path)), BDConfig(), num_frames=5, hr_size=(48, 64),
                             scale=4, seed=1, **RULE)
    bd = build_degradation(BDConfig(), scale=4)
    for index in range(len(ds)):
        for epoch in range(3):
            item = ds[(epoch, index)]
            expected = bd((item["hq"] + 1) / 2, None) * 2 - 1
            diff = (expected - item["lq"])[..., 2:-2, 2:-2].abs().max()
            assert float(diff) <= 2.0 / 255 + 1e-6


def test_paired_dataset_alignment_frames_and_video(tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (6, 64, 80, 3), dtype=np.uint8)
    lq = gt[:, ::4, ::4]  # nearest subsampling: LR pixel (i, j) is HR pixel (4i, 4j)
    for clip in ("c1", "c2"):
        for sub, data in (("GT", gt), ("LQ", lq)):
            (tmp_path / "frames" / sub / clip).mkdir(parents=True)
            for i, frame in enumerate(data):
                Image.fromarray(frame).save(tmp_path / "frames" / sub / clip / f"{i:03d}.png")
        for sub, data in (("GT-Video", gt), ("LQ-Video", lq)):
            (tmp_path / "video" / sub).mkdir(parents=True, exist_ok=True)
            write_lossless_mkv(tmp_path / "video" / sub / f"{clip}.mkv", data)
    (tmp_path / "prompts.json").write_text(json.dumps({"c2": "second clip"}))
    for layout in ("frames", "video"):
        cfg = PairedDataConfig(root=str(tmp_path / layout), metadata=str(tmp_path / "prompts.json"), prompt="x")
        ds = build_train_dataset(cfg, None, num_frames=5, hr_size=(32, 48), scale=4, seed=0, **RULE)
        assert len(ds) == 2
        for epoch in range(3):
            item = ds[(epoch, 1)]
            assert tuple(item["hq"].shape) == (3, 5, 32, 48) and tuple(item["lq"].shape) == (3, 5, 8, 12)
            assert torch.equal(item["lq"], item["hq"][..., ::4, ::4])
            assert item["prompt"] == "second clip"
        assert ds[(0, 0)]["prompt"] == "x"
    with pytest.raises(UserError, match=r"GT 80x64 is not 2x LQ 20x16"):
        build_train_dataset(PairedDataConfig(root=str(tmp_path / "frames")), None, num_frames=5,
                            hr_size=(16, 16), scale=2, **RULE)[0]


@pytest.fixture(scope="module")
def baboon_metadata(real_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "images.json"
    path.write_text(json.dumps([{"image": str(real_data / "XPixelGroup_BasicSR" / "baboon.png"),
                                 "prompt": "a baboon"}]))
    return path


def test_images_as_pseudo_videos_and_single_frames(baboon_metadata):
    cfg = HQDataConfig(image_metadata=str(baboon_metadata), repeat=2)
    ds = build_train_dataset(cfg, RealBasicVSRConfig(), num_frames=5, hr_size=(64, 64), scale=4, **RULE)
    assert (ds.num_videos, ds.num_images) == (0, 2)
    item = ds[1]
    assert item["is_image"] is True and item["prompt"] == "a baboon"
    assert tuple(item["hq"].shape) == (3, 5, 64, 64) and tuple(item["lq"].shape) == (3, 5, 16, 16)
    # The window moves: consecutive HR frames differ.
    assert float((item["hq"][:, 1:] - item["hq"][:, :-1]).abs().mean()) > 0.01
    single = HQDataConfig(image_metadata=str(baboon_metadata), image_mode="single_frame")
    one = build_train_dataset(single, RealBasicVSRConfig(), num_frames=5, hr_size=(64, 64), scale=4, **RULE)[0]
    assert tuple(one["hq"].shape) == (3, 1, 64, 64) and tuple(one["lq"].shape) == (3, 1, 16, 16)
    with pytest.raises(UserError, match="single_frame"):
        build_train_dataset(single, RealBasicVSRConfig(), num_frames=4, hr_size=(64, 64), scale=4,
                            frame_multiple=2, frame_offset=0)


def test_video_metadata_prompts_and_errors(real_data, tmp_path):
    dove = real_data / "zhengchen1999_DOVE"
    (tmp_path / "meta.csv").write_text("video,prompt\n002.mp4,hand-held shot\n003.mp4,city pan\n")
    cfg = HQDataConfig(root=str(dove), metadata=str(tmp_path / "meta.csv"))
    ds = build_train_dataset(cfg, BDConfig(), num_frames=5, hr_size=(64, 64), scale=4, **RULE)
    assert [p.name for p, _ in ds.videos] == ["002.mp4", "003.mp4"]
    assert [ds[i]["prompt"] for i in range(2)] == ["hand-held shot", "city pan"]
    (tmp_path / "bad.csv").write_text("video,prompt\n404.mp4,missing\n")
    with pytest.raises(UserError, match="lists 404.mp4, which does not exist"):
        build_train_dataset(HQDataConfig(root=str(dove), metadata=str(tmp_path / "bad.csv")), BDConfig(),
                            num_frames=5, hr_size=(64, 64), scale=4, **RULE)
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as err:
        build_train_dataset(HQDataConfig(root=str(missing)), BDConfig(), num_frames=5, hr_size=(64, 64), scale=4)
    assert str(missing) in str(err.value) and "data.root=" in str(err.value)
    with pytest.raises(UserError, match="needs images"):
        build_train_dataset(HQDataConfig(root=str(dove), image_ratio=0.5), BDConfig(), num_frames=5,
                            hr_size=(64, 64), scale=4)


def test_mixed_batches_are_homogeneous_resumable_and_sharded():
    sampler = ImageVideoBatchSampler(num_videos=30, num_images=50, batch_size=4, image_ratio=0.5, seed=3)
    batches = sampler.epoch_batches(0)
    assert len(batches) == 20 and all(len(b) == 4 for b in batches)
    kinds = [all(i >= 30 for i in b) for b in batches]
    assert all(k or all(i < 30 for i in b) for k, b in zip(kinds, batches))  # each batch one kind
    assert 3 <= sum(kinds) <= 17
    assert sampler.epoch_batches(1) != batches and sampler.epoch_batches(0) == batches
    sampler.set_position(0, 7)
    assert list(sampler) == batches[7:] and len(sampler) == 13
    ranks = [ImageVideoBatchSampler(30, 50, 4, 0.5, num_replicas=2, rank=r, seed=3).epoch_batches(0) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 10
    interleaved = [b for pair in zip(*ranks) for b in pair]
    assert interleaved == ImageVideoBatchSampler(30, 50, 4, 0.5, seed=3).epoch_batches(0)[:20]
    only_videos = ImageVideoBatchSampler(10, 0, 2, 0.8, seed=0).epoch_batches(0)
    assert sorted(i for b in only_videos for i in b) == list(range(10))
    ratio = ImageVideoBatchSampler(1000, 1000, 1, 0.8, seed=0).epoch_batches(0)
    assert 0.75 < np.mean([b[0] >= 1000 for b in ratio]) < 0.85


def test_header_overcount_and_small_sources(real_data, tmp_path, caplog):
    # old_animation_1.mp4's header says 79 frames, the decoder yields 71: windows near the end
    # come back short and are redrawn from the true count, deterministically.
    cfg = HQDataConfig(root=str(real_data / "sczhou_Upscale-A-Video"), exclude=["old_movie*"], extra_frames=60)
    ds = build_train_dataset(cfg, BDConfig(), num_frames=5, hr_size=(64, 64), scale=4, **RULE)
    assert [p.name for p, _ in ds.videos] == ["old_animation_1.mp4"]
    with caplog.at_level("WARNING"):
        for epoch in range(6):
            a, b = ds[(epoch, 0)], ds[(epoch, 0)]
            assert tuple(a["hq"].shape) == (3, 5, 64, 64) and torch.equal(a["lq"], b["lq"])
    assert "repeating its last frame" not in caplog.text
    # A source smaller than the crop is upscaled to cover it, with a warning.
    write_lossless_mkv(tmp_path / "tiny.mkv", np.random.default_rng(0).integers(0, 256, (6, 20, 24, 3), np.uint8))
    tiny = build_train_dataset(HQDataConfig(root=str(tmp_path)), BDConfig(), num_frames=5, hr_size=(32, 32),
                               scale=4, **RULE)
    with caplog.at_level("WARNING"):
        item = tiny[0]
    assert tuple(item["hq"].shape) == (3, 5, 32, 32) and "smaller than the 32x32 crop" in caplog.text
