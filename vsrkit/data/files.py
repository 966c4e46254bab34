"""File kinds by extension and natural ordering of frame files, for the data pipeline.

The lists are :mod:`vsrkit.io`'s (one list of supported file kinds for the whole toolkit).
"""

from __future__ import annotations

from vsrkit.io.kinds import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image, is_video, list_images

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "is_image", "is_video", "list_images"]
