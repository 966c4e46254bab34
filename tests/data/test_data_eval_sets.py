"""Evaluation presets: composing conf/data/*.yaml, listing clips, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datahelpers import REPO
from PIL import Image

from vsrkit.data import EvalClip, HQDataConfig, PairedDataConfig, eval_clips
from vsrkit.data.files import list_images
from vsrkit.data.media import write_lossless_mkv
from vsrkit.errors import UserError


def compose(group: str, name: str, *overrides: str):
    """Compose ``<group>=<name>`` from the shipped configs and build its dataclass."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from vsrkit.commands.hydra_app import store_schemas
    from vsrkit.plugins import setup_registries

    setup_registries()
    store_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="vsrkit.conf", version_base="1.3"):
            cfg = hydra_compose(config_name=None, overrides=[f"+{group}={name}", *overrides])
        return OmegaConf.to_object(cfg[group])
    finally:
        GlobalHydra.instance().clear()


DATA_PRESETS = sorted(p.stem for p in (REPO / "conf" / "data").glob("*.yaml"))
DEGRADATION_PRESETS = sorted(p.stem for p in (REPO / "conf" / "degradation").glob("*.yaml"))


def test_every_preset_is_registered_and_composes(tmp_path):
    from vsrkit.builtins import register_builtins
    from vsrkit.registry import DATASETS, DEGRADATIONS

    register_builtins()
    assert len(DATA_PRESETS) >= 9 and len(DEGRADATION_PRESETS) >= 4
    for name in DATA_PRESETS:
        assert name in DATASETS
        cfg = compose("data", name, f"data.root={tmp_path}")
        assert cfg.name == name
        assert cfg.root == str(tmp_path)
    for name in DEGRADATION_PRESETS:
        assert name in DEGRADATIONS
        assert compose("degradation", name).name == name


def test_vid4_calendar_default_root_from_project_root(calendar, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = compose("data", "vid4-calendar")
    assert Path(cfg.root).is_absolute()
    clips = eval_clips(cfg)
    assert clips == [EvalClip("calendar", calendar / "LR_BDx4", calendar / "GT")]
    assert len(list_images(clips[0].gt)) == 20
    assert len(list_images(clips[0].lq)) == 20


def test_missing_root_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    cfg = compose("data", "vid4-calendar", f"data.root={missing}")
    with pytest.raises(UserError) as err:
        eval_clips(cfg)
    assert str(missing) in str(err.value) and "data.root=" in str(err.value)
    unset = compose("data", "udm10")  # root: ??? in the preset
    with pytest.raises(UserError, match=r"`data.root` is not set for dataset `udm10`"):
        eval_clips(unset)


def test_relative_root_resolves_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert PairedDataConfig(root="sets/udm10").root == str(tmp_path / "sets" / "udm10")


def _frames(folder: Path, n: int, size=(16, 24)) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((*size, 3), 10 * i, np.uint8)).save(folder / f"{i:04d}.png")


def test_frames_layout_video_layout_and_lq_only(tmp_path):
    root = tmp_path / "set"
    for clip in ("b", "a"):
        _frames(root / "GT" / clip, 3, (32, 48))
        _frames(root / "LQ" / clip, 3)
    clips = eval_clips(PairedDataConfig(name="udm10", root=str(root)))
    assert [c.name for c in clips] == ["a", "b"]
    assert clips[0].lq == root / "LQ" / "a" and clips[0].gt == root / "GT" / "a"
    assert [c.name for c in eval_clips(PairedDataConfig(root=str(root), clips=["b"]))] == ["b"]
    with pytest.raises(UserError, match=r"`data.clips` names \['c'\]"):
        eval_clips(PairedDataConfig(root=str(root), clips=["c"]))

    videos = tmp_path / "videos"
    for sub in ("GT-Video", "LQ-Video"):
        (videos / sub).mkdir(parents=True)
        write_lossless_mkv(videos / sub / "x.mkv", np.zeros((2, 16, 16, 3), np.uint8))
    (clip,) = eval_clips(PairedDataConfig(root=str(videos)))
    assert clip == EvalClip("x", videos / "LQ-Video" / "x.mkv", videos / "GT-Video" / "x.mkv")

    movie = tmp_path / "movielq"
    _frames(movie / "LQ" / "m1", 2)
    (clip,) = eval_clips(PairedDataConfig(name="movielq", root=str(movie)))
    assert clip.gt is None


def test_malformed_sets_fail_with_one_line(tmp_path):
    root = tmp_path / "set"
    _frames(root / "GT" / "a", 2)
    with pytest.raises(UserError, match="has GT but no LQ folder"):
        eval_clips(PairedDataConfig(root=str(root)))
    _frames(root / "LQ" / "a", 2)
    _frames(root / "LQ" / "z", 2)
    with pytest.raises(UserError, match=r"clips \['z'\] have LQ"):
        eval_clips(PairedDataConfig(root=str(root)))
    with pytest.raises(UserError, match="holds HQ clips only"):
        eval_clips(HQDataConfig(name="demo", root=str(root)))
    with pytest.raises(UserError, match="`data.layout` must be one of"):
        PairedDataConfig(layout="flat")


def test_import_and_eval_clips_load_no_torch(calendar):
    code = ("import sys; from vsrkit.data import eval_clips, PairedDataConfig; "
            f"c = eval_clips(PairedDataConfig(root={str(calendar)!r}, layout='single', lq_dir='LR_BDx4')); "
            "assert len(c) == 1; bad = [m for m in ('torch', 'av', 'cv2') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
