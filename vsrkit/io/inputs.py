"""Pair every input of a run with its output path (``input=`` / ``output=`` on the command line)."""

from __future__ import annotations

import os
from pathlib import Path

from vsrkit.errors import UserError, VideoReadError
from vsrkit.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image, is_video, list_images, natural_key


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """Video files directly inside ``folder`` (by extension, hidden files skipped), natural order."""
    found = [
        entry
        for entry in Path(folder).iterdir()
        if entry.is_file() and not entry.name.startswith(".") and is_video(entry)
    ]
    return sorted(found, key=natural_key)


def _frame_folders(folder: Path) -> list[Path]:
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((p for p in subfolders if list_images(p)), key=natural_key)


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    return child.resolve().is_relative_to(parent.resolve())


def _refuse_same(src: Path, dst: Path) -> None:
    if _same(src, dst):
        raise UserError(f"`output` {dst} is the input itself; choose a different output path.")


def list_inputs(input: str | os.PathLike, output: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Pair each input with the output it becomes; the output mirrors the input's form.

    ========================== ============================================================
    input                      pairs
    ========================== ============================================================
    a video file               ``[(video, output)]``; output is a video file name, or an
                               existing folder (then ``output/<video name>``)
    an image                   ``[(image, output)]``; output is an image file name or an
                               existing folder
    a folder of frames         ``[(folder, output)]``; output is a frames folder
    a folder of videos         ``[(folder/a.mp4, output/a.mp4), ...]``, same names
    a folder of frame folders  ``[(folder/seq, output/seq), ...]`` (e.g. Vid4, REDS layout)
    ========================== ============================================================

    A folder holding images counts as a frames folder; one holding videos (and no images) as
    a folder of videos. Only the folder's own files are looked at (no recursion), except for
    the frame-folder layout, which is one level deep.

    Args:
        input: The ``input`` path.
        output: The ``output`` path.

    Returns:
        ``(source, destination)`` pairs in natural order; destinations may not exist yet.

    Raises:
        VideoReadError: The input is missing, or a folder holds no frames or videos.
        UserError: The output is the input (or inside an input frames folder), or has the
            wrong form (e.g. a video input with an output that is not a video file name).
    """
    src, dst = Path(input), Path(output)
    if not src.exists():
        raise VideoReadError(f"Input {src} does not exist.")
    _refuse_same(src, dst)
    if src.is_file():
        return [(src, _file_output(src, dst))]

    images = list_images(src)
    videos = list_videos(src)
    if images and videos:
        raise UserError(
            f"Input folder {src} holds both images and videos ({images[0].name}, {videos[0].name}); "
            f"put the frames and the videos in separate folders."
        )
    if images:
        if _inside(dst, src):
            raise UserError(f"`output` {dst} is inside the input frames folder {src}; choose a folder outside it.")
        if dst.is_file():
            raise UserError(f"`output` {dst} is a file; a frames folder input needs an output folder.")
        return [(src, dst)]
    if dst.is_file():
        raise UserError(f"`output` {dst} is a file; a folder input needs an output folder.")
    if videos:
        return [(video, dst / video.name) for video in videos]
    sequences = _frame_folders(src)
    if sequences:
        return [(sequence, dst / sequence.name) for sequence in sequences]
    raise VideoReadError(
        f"Folder {src} contains no frames or videos (expected {', '.join(IMAGE_EXTENSIONS)} "
        f"images or {', '.join(VIDEO_EXTENSIONS[:4])} ... videos)."
    )


def _file_output(src: Path, dst: Path) -> Path:
    if dst.is_dir():
        dst = dst / src.name
        _refuse_same(src, dst)
        return dst
    if is_image(src):
        if not is_image(dst):
            raise UserError(
                f"`output` {dst} must be an image file ({', '.join(IMAGE_EXTENSIONS)}) or an existing "
                f"folder, because the input {src.name} is an image."
            )
        return dst
    if not is_video(dst):
        raise UserError(
            f"`output` {dst} must be a video file ({', '.join(VIDEO_EXTENSIONS[:4])} ...) or an "
            f"existing folder, because the input {src.name} is a video."
        )
    return dst
