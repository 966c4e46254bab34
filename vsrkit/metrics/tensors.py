"""Small tensor helpers shared by the metrics: input checks, border crops, luma conversion.

Every metric takes frames ``(T, C, H, W)`` float in [0, 1] (C = 3 RGB, or 1 grey).
"""

from __future__ import annotations

import torch

from vsrkit.errors import UserError


def check_frames(pred: torch.Tensor, gt: torch.Tensor | None, metric: str, needs_gt: bool) -> None:
    """Check the metric input contract.

    Args:
        pred: ``(T, C, H, W)`` float frames in [0, 1].
        gt: ``(T, C, H, W)`` float frames in [0, 1] of the same shape, or None.
        metric: Metric name, used in messages.
        needs_gt: Whether ``gt`` is required.

    Raises:
        UserError: ``gt`` is missing for a full-reference metric.
        ValueError: A layout or dtype contract is broken (a caller bug).
    """
    if not torch.is_tensor(pred) or pred.ndim != 4 or pred.shape[1] not in (1, 3):
        raise ValueError(f"metric `{metric}`: `pred` must be a (T, C, H, W) tensor with C in (1, 3). "
                         f"Got {getattr(pred, 'shape', type(pred))}.")
    if not pred.is_floating_point():
        raise ValueError(f"metric `{metric}`: `pred` must be float in [0, 1]. Got {pred.dtype}.")
    if gt is None:
        if needs_gt:
            raise UserError(f"metric `{metric}` is full-reference and needs ground-truth frames (gt=...). "
                            "Drop it from `metric=[...]` or give gt.")
        return
    if not torch.is_tensor(gt) or gt.shape != pred.shape:
        raise ValueError(f"metric `{metric}`: `gt` must have the shape of `pred` {tuple(pred.shape)}. "
                         f"Got {tuple(getattr(gt, 'shape', ()))}.")
    if not gt.is_floating_point():
        raise ValueError(f"metric `{metric}`: `gt` must be float in [0, 1]. Got {gt.dtype}.")


def crop_edges(x: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels at each edge of ``(..., H, W)`` (pyiqa/BasicSR ``crop_border``)."""
    if border == 0:
        return x
    if 2 * border >= min(x.shape[-2:]):
        raise UserError(f"`crop_border` {border} leaves nothing of a {x.shape[-2]}x{x.shape[-1]} frame.")
    return x[..., border:-border, border:-border]


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``, with a UserError for an unknown or unavailable device."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"`device` must be a torch device such as 'cpu' or 'cuda:0'. Got {device!r}.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"`device` is {device!r} but CUDA is not available here. Use device=cpu.")
    return dev


# BasicSR basicsr/utils/color_util.py `rgb2ycbcr(img, y_only=True)`: Y = 16 + 65.481 R + 128.553 G
# + 24.966 B for RGB in [0, 1], Y in [16, 235], divided by 255.
_YCBCR_Y = (65.481, 128.553, 24.966)
_YCBCR_OFFSET = 16.0
# pyiqa pyiqa/utils/color_util.py `rgb2yiq`: first row of the YIQ matrix (BT.601 luma, full range).
_YIQ_Y = (0.299, 0.587, 0.114)


def rgb_to_y(x: torch.Tensor, color_space: str) -> torch.Tensor:
    """Luma of RGB frames.

    Args:
        x: ``(T, 3, H, W)`` float RGB in [0, 1].
        color_space: ``"ycbcr"`` (BasicSR, Y in [16/255, 235/255]) or ``"yiq"`` (pyiqa, Y in [0, 1]).

    Returns:
        ``(T, 1, H, W)`` luma in the input dtype, on the [0, 1] scale.
    """
    if color_space == "ycbcr":
        w = torch.tensor(_YCBCR_Y, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return ((x * w).sum(1, keepdim=True) + _YCBCR_OFFSET) / 255.0
    if color_space == "yiq":
        w = torch.tensor(_YIQ_Y, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise ValueError(f"`color_space` must be one of ['ycbcr', 'yiq']. Got {color_space!r}.")
