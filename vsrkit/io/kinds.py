"""The file kinds vsrkit knows, by extension: the one list every part of vsrkit uses.

Plain Python (no av, numpy or torch), so the data presets and the command line can sort files
without loading FFmpeg. Every kind here can be read; :data:`WRITABLE_IMAGE_EXTENSIONS` says which
images can be written, and :func:`vsrkit.io.check_output` whether a video container can hold the
chosen codec.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".y4m")
# Image types vsrkit encodes (vsrkit.io.images._IMAGE_ENCODERS has the encoder of each; WebP is read only).
WRITABLE_IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")


def is_image(path: str | os.PathLike) -> bool:
    """Whether the path's extension is one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def writable_image(path: str | os.PathLike) -> bool:
    """Whether vsrkit can write an image of this type (PNG, TIFF, BMP, JPEG; not WebP)."""
    return Path(path).suffix.lower() in WRITABLE_IMAGE_EXTENSIONS


def is_video(path: str | os.PathLike) -> bool:
    """Whether the path's extension is one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def natural_key(path: str | os.PathLike) -> list:
    """Sort key that orders ``frame2.png`` before ``frame10.png``."""
    parts = re.split(r"(\d+)", Path(path).name)
    return [int(part) if part.isdigit() else part.lower() for part in parts]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive, hidden files skipped), natural order."""
    found = [
        entry
        for entry in Path(folder).iterdir()
        if entry.is_file() and not entry.name.startswith(".") and is_image(entry)
    ]
    return sorted(found, key=natural_key)
