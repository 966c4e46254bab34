"""tools/make_testset.py: GT folder -> <out>/{GT,LQ}/<clip>/ (and lossless MKVs), usable by eval_clips."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from datahelpers import REPO
from PIL import Image

from vsrkit.data import PairedDataConfig, eval_clips
from vsrkit.data.files import list_images
from vsrkit.data.media import read_image, read_video_clip, write_lossless_mkv


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("make_testset", REPO / "tools" / "make_testset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def gt_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "gt"
    (folder / "frames_clip").mkdir(parents=True)
    for i in range(3):  # 70x50: not a multiple of 4, cropped to 68x48
        Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(folder / "frames_clip" / f"{i}.png")
    write_lossless_mkv(folder / "video_clip.mkv", rng.integers(0, 256, (4, 32, 48, 3), dtype=np.uint8))
    return folder


def test_bd_testset_layout_and_content(tool, gt_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert tool([str(gt_dir), str(out), "--degradation", "bd", "--scale", "4", "--videos"]) == 0
    assert "wrote 2 clip(s)" in capsys.readouterr().out
    clips = eval_clips(PairedDataConfig(root=str(out)))
    assert [c.name for c in clips] == ["frames_clip", "video_clip"]
    gt_frames = list_images(out / "GT" / "frames_clip")
    lq_frames = list_images(out / "LQ" / "frames_clip")
    assert len(gt_frames) == len(lq_frames) == 3
    assert read_image(gt_frames[0]).shape == (48, 68, 3)
    assert read_image(lq_frames[0]).shape == (12, 17, 3)
    source = np.asarray(Image.open(gt_dir / "frames_clip" / "0.png"))
    assert np.array_equal(read_image(gt_frames[0]), source[:48, :68])
    assert len(list_images(out / "LQ" / "video_clip")) == 4
    # The MKVs hold exactly the PNG frames.
    mkv = read_video_clip(out / "LQ-Video" / "video_clip.mkv", 0, 10)
    assert np.array_equal(mkv, np.stack([read_image(p) for p in list_images(out / "LQ" / "video_clip")]))
    videos = eval_clips(PairedDataConfig(root=str(out), layout="video"))
    assert videos[1].lq == out / "LQ-Video" / "video_clip.mkv"


def test_random_preset_seeding_and_refusals(tool, gt_dir, tmp_path, capsys):
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert tool([str(gt_dir), str(tmp_path / name), "--degradation", "realbasicvsr", "--seed", str(seed)]) == 0
        runs[name] = np.stack([read_image(p) for p in list_images(tmp_path / name / "LQ" / "frames_clip")])
    assert np.array_equal(runs["a"], runs["b"]) and not np.array_equal(runs["a"], runs["c"])
    capsys.readouterr()
    assert tool([str(gt_dir), str(tmp_path / "a"), "--degradation", "realbasicvsr"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert tool([str(gt_dir), str(tmp_path / "d"), "--degradation", "bdd"]) == 2
    assert "Unknown degradation `bdd`" in capsys.readouterr().err
    assert tool([str(gt_dir), str(gt_dir / "out")]) == 2
    assert "must not be the GT folder" in capsys.readouterr().err
