"""One still image -> a pseudo-video: a window moving over the image with constant affine velocity.

Frame ``t`` samples the image at ``c + t*v + z^t R(t*w) p`` for the window pixel offsets ``p``
(relative to the window centre ``c``): translation ``v`` px/frame, rotation ``w`` rad/frame and
zoom ``z`` per frame, drawn per clip from :class:`~vsrkit.data.config.MotionConfig`. Frame 0 is an
exact crop (integer window corner); later frames are bicubic resamplings. The window is placed so
that the whole trajectory stays inside the image; a trajectory that cannot fit is slowed down.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vsrkit.data import draws
from vsrkit.data.config import MotionConfig

# Bicubic sampling reads 2 pixels beyond the sample point: keep this margin inside the image.
_MARGIN = 2
_SHRINK, _TRIES = 0.7, 12


def sample_motion(cfg: MotionConfig, short_side: int, generator: torch.Generator) -> tuple[float, float, float, float]:
    """Draw ``(vx, vy, w, z)``: px/frame, px/frame, radians/frame and zoom factor per frame."""
    vx = draws.uniform(generator, -cfg.max_translation, cfg.max_translation) * short_side
    vy = draws.uniform(generator, -cfg.max_translation, cfg.max_translation) * short_side
    w = math.radians(draws.uniform(generator, -cfg.max_rotation, cfg.max_rotation))
    z = draws.log_uniform_sym(generator, cfg.max_zoom)
    return vx, vy, w, z


def _offsets(num_frames: int, size: tuple[int, int], motion: tuple[float, float, float, float]) -> torch.Tensor:
    """Source offsets from the window centre, ``(T, H, W, 2)`` as ``(x, y)``, float64."""
    h, w = size
    vx, vy, omega, zoom = motion
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    t = torch.arange(num_frames, dtype=torch.float64).view(-1, 1, 1)
    scale = zoom ** t
    cos, sin = torch.cos(omega * t), torch.sin(omega * t)
    x = vx * t + scale * (cos * px - sin * py)
    y = vy * t + scale * (sin * px + cos * py)
    return torch.stack([x, y], dim=-1)


def render(image: torch.Tensor, num_frames: int, size: tuple[int, int], cfg: MotionConfig,
           generator: torch.Generator) -> torch.Tensor:
    """Make a pseudo-video from one image.

    Args:
        image: ``(C, H, W)`` float in [0, 1], at least ``size``.
        num_frames: Frames ``T`` to render.
        size: Window ``(h, w)``.
        cfg: Motion ranges.
        generator: Source of the motion and the window position.

    Returns:
        ``(C, T, h, w)`` float32 in [0, 1]; frame 0 equals ``image`` cropped at the window.
    """
    _, height, width = image.shape
    h, w = size
    cx0, cy0 = (w - 1) / 2, (h - 1) / 2  # window centre = integer corner + these (frame 0 exact)
    motion = sample_motion(cfg, min(height, width), generator)
    box = None
    if num_frames > 1:
        for _ in range(_TRIES):
            off = _offsets(num_frames, size, motion)
            left_lo = max(math.ceil(_MARGIN - float(off[..., 0].min()) - cx0), 0)
            left_hi = min(math.floor(width - 1 - _MARGIN - float(off[..., 0].max()) - cx0), width - w)
            top_lo = max(math.ceil(_MARGIN - float(off[..., 1].min()) - cy0), 0)
            top_hi = min(math.floor(height - 1 - _MARGIN - float(off[..., 1].max()) - cy0), height - h)
            if left_lo <= left_hi and top_lo <= top_hi:
                box = (left_lo, left_hi, top_lo, top_hi)
                break
            vx, vy, omega, zoom = motion
            motion = (vx * _SHRINK, vy * _SHRINK, omega * _SHRINK, zoom ** _SHRINK)
    if box is None:  # one frame, or an image barely larger than the window: a still clip
        left, top = draws.randint(generator, 0, width - w), draws.randint(generator, 0, height - h)
        return image[:, top:top + h, left:left + w].unsqueeze(1).repeat(1, num_frames, 1, 1).float()
    left = draws.randint(generator, box[0], box[1])
    top = draws.randint(generator, box[2], box[3])

    # Sample only the part of the image the trajectory covers.
    src_x = off[..., 0] + left + cx0
    src_y = off[..., 1] + top + cy0
    x0 = max(int(math.floor(float(src_x.min()))) - _MARGIN, 0)
    x1 = min(int(math.ceil(float(src_x.max()))) + _MARGIN, width - 1)
    y0 = max(int(math.floor(float(src_y.min()))) - _MARGIN, 0)
    y1 = min(int(math.ceil(float(src_y.max()))) + _MARGIN, height - 1)
    region = image[:, y0:y1 + 1, x0:x1 + 1].unsqueeze(0).float()
    rw, rh = x1 - x0 + 1, y1 - y0 + 1
    grid = torch.stack([2 * (src_x - x0) / max(rw - 1, 1) - 1, 2 * (src_y - y0) / max(rh - 1, 1) - 1], dim=-1)
    frames = [F.grid_sample(region, grid[t:t + 1].float(), mode="bicubic", padding_mode="border", align_corners=True)
              for t in range(num_frames)]
    out = torch.cat(frames, dim=0).clamp(0.0, 1.0)  # (T, C, h, w)
    # Frame 0 sits on integer pixels: copy it exactly (bicubic there is exact only up to rounding).
    out[0] = image[:, top:top + h, left:left + w]
    return out.transpose(0, 1).contiguous()
