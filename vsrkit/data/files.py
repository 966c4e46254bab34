"""File kinds by extension and natural ordering of frame files (no heavy imports)."""

from __future__ import annotations

import re
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".y4m")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_video(path: Path) -> bool:
    """Whether ``path`` has a video file extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image(path: Path) -> bool:
    """Whether ``path`` has an image file extension."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, in natural order (``2.png`` before ``10.png``)."""
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and is_image(p)), key=_natural_key)
