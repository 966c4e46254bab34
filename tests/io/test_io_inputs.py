"""Pairing inputs with outputs: the four input forms, mirrored outputs, refused outputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from vsrkit.errors import UserError, VideoReadError
from vsrkit.io import list_inputs, write_image


@pytest.fixture
def frames_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in (1, 2, 10):
        write_image(folder / f"{index}.png", np.zeros((4, 4, 3), np.uint8))
    return folder


def test_video_file(tmp_path, dove_002):
    assert list_inputs(dove_002, tmp_path / "up.mp4") == [(dove_002, tmp_path / "up.mp4")]
    # An existing folder receives the input's name.
    assert list_inputs(dove_002, tmp_path) == [(dove_002, tmp_path / "002.mp4")]


def test_video_file_needs_a_video_output(tmp_path, dove_002):
    with pytest.raises(UserError, match="must be a video file"):
        list_inputs(dove_002, tmp_path / "up")


def test_image_file(tmp_path, real_data):
    image = real_data / "XPixelGroup_BasicSR" / "baboon.png"
    assert list_inputs(image, tmp_path / "up.png") == [(image, tmp_path / "up.png")]
    with pytest.raises(UserError, match="must be an image file"):
        list_inputs(image, tmp_path / "up.mp4")


def test_frames_folder_maps_to_a_frames_folder(tmp_path, frames_folder):
    assert list_inputs(frames_folder, tmp_path / "out") == [(frames_folder, tmp_path / "out")]


def test_folder_of_videos_keeps_names(tmp_path, dove_002, onepiece):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("clip10.mp4", "clip2.mkv"):
        shutil.copy(dove_002, videos / name)
    (videos / "readme.txt").write_text("not a video")
    pairs = list_inputs(videos, tmp_path / "out")
    assert pairs == [
        (videos / "clip2.mkv", tmp_path / "out" / "clip2.mkv"),
        (videos / "clip10.mp4", tmp_path / "out" / "clip10.mp4"),
    ]


def test_folder_of_frame_folders(tmp_path, frames_folder):
    root = tmp_path / "dataset"
    root.mkdir()
    shutil.copytree(frames_folder, root / "seq_b")
    shutil.copytree(frames_folder, root / "seq_a")
    assert list_inputs(root, tmp_path / "out") == [
        (root / "seq_a", tmp_path / "out" / "seq_a"),
        (root / "seq_b", tmp_path / "out" / "seq_b"),
    ]


def test_output_equal_to_input_is_refused(tmp_path, dove_002, frames_folder):
    with pytest.raises(UserError, match="is the input itself"):
        list_inputs(dove_002, dove_002)
    with pytest.raises(UserError, match="is the input itself"):
        list_inputs(frames_folder, tmp_path / "frames" / ".." / "frames")
    # A symlink to the input resolves to the same file.
    link = tmp_path / "link.mp4"
    link.symlink_to(dove_002)
    with pytest.raises(UserError, match="is the input itself"):
        list_inputs(dove_002, link)
    # An existing folder that holds the input would receive the same name.
    with pytest.raises(UserError, match="is the input itself"):
        list_inputs(dove_002, dove_002.parent)


def test_output_inside_a_frames_input_is_refused(frames_folder):
    with pytest.raises(UserError, match="inside the input frames folder"):
        list_inputs(frames_folder, frames_folder / "upscaled")


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(VideoReadError, match="does not exist"):
        list_inputs(tmp_path / "nope.mp4", tmp_path / "out.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="contains no frames or videos"):
        list_inputs(tmp_path / "empty", tmp_path / "out")


def test_mixed_folder_is_refused(tmp_path, frames_folder, dove_002):
    shutil.copy(dove_002, frames_folder / "clip.mp4")
    with pytest.raises(UserError, match="holds both images and videos"):
        list_inputs(frames_folder, tmp_path / "out")
