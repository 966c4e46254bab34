"""Temporal-consistency metrics pyiqa lacks: E*warp, tOF and tLPIPS (tLP).

Each scores consecutive frame pairs: for ``T`` input frames it returns ``(T - 1,)`` float64 values,
value ``i`` for the pair ``(i, i + 1)``; the per-video figure is their mean. The aggregator
(:mod:`vsrkit.metrics.aggregate`) carries the last frame of one chunk into the next, so a long
video gives the same pairs as scoring it whole.

- **E*warp** (``ewarp``, no reference): the variant of the VSR diffusion papers' evaluator
  (SparkVSR/DOVE ``finetune/scripts/eval_all_metrics.py``, class ``Ewarp``): flow ``t -> t+1`` on
  the prediction, frame ``t+1`` warped back to ``t`` with ``grid_sample`` (bilinear, zeros outside,
  ``align_corners=True``), MSE on the [0, 1] scale, *no* occlusion mask (unlike Lai et al. 2018).
  Papers print it x1000 (``ewarp_scaled_1000``); the aggregator reports ``ewarp_x1000`` too.
  Flow is torchvision's RAFT-large (20 iterations, frames padded to a multiple of 8 with RAFT's
  ``InputPadder`` 'sintel' mode) when a weights file is given, otherwise OpenCV Farneback; the
  backend is recorded in ``info['flow']`` because the numbers are not comparable across backends.
- **tOF** (``tof``): TecoGAN (thunil/TecoGAN ``metrics.py``): Farneback flow
  ``(0.5, 3, 15, 3, 5, 1.2, 0)`` between consecutive grey frames of the ground truth and of the
  output, the per-pixel L2 norm of their difference averaged over TecoGAN's ``crop_8x8`` window.
  TecoGAN also skips the first and last two frames of each clip; vsrkit scores every pair.
- **tLPIPS** (``tlpips``): TecoGAN tLP, ``|LPIPS(gt[t-1], gt[t]) - LPIPS(out[t-1], out[t])| * 100``
  with AlexNet LPIPS v0.1 (through pyiqa), on the ``crop_8x8`` window.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vsrkit.errors import UserError, WeightsError
from vsrkit.metrics.config import EwarpConfig, TLPIPSConfig, TOFConfig
from vsrkit.metrics.tensors import check_frames, crop_edges, resolve_device

logger = logging.getLogger(__name__)

# thunil/TecoGAN metrics.py: cv2.calcOpticalFlowFarneback(prev, next, None, 0.5, 3, 15, 3, 5, 1.2, 0)
# (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags).
FARNEBACK_PARAMS = (0.5, 3, 15, 3, 5, 1.2, 0)


def to_uint8_grey(frames: torch.Tensor) -> np.ndarray:
    """Grey 8-bit frames as OpenCV computes them (``cv2.COLOR_RGB2GRAY``).

    Args:
        frames: ``(T, C, H, W)`` float in [0, 1], C = 3 (RGB) or 1.

    Returns:
        ``(T, H, W)`` uint8.
    """
    import cv2

    u8 = (frames.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
    u8 = u8.permute(0, 2, 3, 1).contiguous().numpy()
    if u8.shape[-1] == 1:
        return u8[..., 0]
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in u8])


def farneback_flow(prev_grey: np.ndarray, next_grey: np.ndarray) -> np.ndarray:
    """Dense flow from ``prev_grey`` to ``next_grey``: ``prev(y, x) ~ next(y + f[..., 1], x + f[..., 0])``.

    Args:
        prev_grey: ``(H, W)`` uint8.
        next_grey: ``(H, W)`` uint8.

    Returns:
        ``(H, W, 2)`` float32 flow in pixels, (dx, dy).
    """
    import cv2

    return cv2.calcOpticalFlowFarneback(prev_grey, next_grey, None, *FARNEBACK_PARAMS)


def crop_8x8_window(h: int, w: int) -> tuple[int, int, int, int]:
    """TecoGAN ``crop_8x8``: the centred window, multiple of 32, at least 8 px inside each edge.

    Returns:
        ``(top, left, height, width)``.

    Raises:
        UserError: The frame is too small for a non-empty window (below 48 px).
    """
    ch, cw = (h // 32) * 32, (w // 32) * 32
    while ch > h - 16:
        ch -= 32
    while cw > w - 16:
        cw -= 32
    if ch <= 0 or cw <= 0:
        raise UserError(f"`crop_8x8` leaves nothing of a {h}x{w} frame (needs at least 48x48). Set crop_8x8=false.")
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``image`` by ``flow``: ``out(y, x) = image(y + flow_y, x + flow_x)``.

    Bilinear, zeros outside the frame, ``align_corners=True`` (as the papers' evaluator).

    Args:
        image: ``(B, C, H, W)`` float.
        flow: ``(B, 2, H, W)`` float flow in pixels, channel 0 = dx, 1 = dy.

    Returns:
        ``(B, C, H, W)`` warped image.
    """
    b, _, h, w = image.shape
    gy, gx = torch.meshgrid(torch.arange(h, device=image.device, dtype=flow.dtype),
                            torch.arange(w, device=image.device, dtype=flow.dtype), indexing="ij")
    vx = 2.0 * (gx + flow[:, 0]) / max(w - 1, 1) - 1.0
    vy = 2.0 * (gy + flow[:, 1]) / max(h - 1, 1) - 1.0
    grid = torch.stack((vx, vy), dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def sintel_pad(h: int, w: int) -> list[int]:
    """RAFT ``InputPadder(mode='sintel')`` amounts ``[left, right, top, bottom]`` to reach multiples of 8."""
    pad_h = (((h // 8) + 1) * 8 - h) % 8
    pad_w = (((w // 8) + 1) * 8 - w) % 8
    return [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]


def load_raft_large(weights_path: str, device: torch.device) -> torch.nn.Module:
    """torchvision ``raft_large`` with a local state dict (never downloads).

    Args:
        weights_path: A torchvision RAFT-large state dict, e.g. ``raft_large_C_T_V1-22a6c225.pth``.
        device: Where the model runs.

    Raises:
        WeightsError: The file is absent or is not a torchvision ``raft_large`` state dict.
    """
    from torchvision.models.optical_flow import raft_large

    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise WeightsError(f"`raft_weights_path` names `{path}`, which does not exist. Give a local torchvision "
                           "RAFT-large state dict (raft_large_C_T_V1-22a6c225.pth), or set flow=farneback.")
    model = raft_large(weights=None, progress=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"`raft_weights_path` `{path}` is not a torchvision raft_large state dict (the original "
                           "princeton-vl raft-things.pth has other keys; torchvision's raft_large_C_T_V1-22a6c225.pth "
                           "is its port).") from exc
    return model.eval().to(device)


class EwarpMetric:
    """E*warp per frame pair on the prediction (no reference; lower is better). See the module doc.

    ``metric(pred)`` returns ``(T - 1,)`` MSE values on the [0, 1] scale (multiply by 1000 for the
    papers' unit; the aggregator adds ``ewarp_x1000``). ``info['flow']`` is the flow backend.

    Args:
        config: :class:`~vsrkit.metrics.config.EwarpConfig`.
    """

    higher_is_better = False
    needs_gt = False
    temporal = True
    name = "ewarp"
    report_scales = {"ewarp_x1000": 1000.0}  # the papers' "E*warp (x10^-3)" unit

    def __init__(self, config: EwarpConfig | None = None):
        self.config = config if config is not None else EwarpConfig()
        self.device = resolve_device(self.config.device)
        backend = self.config.flow
        if backend == "auto":
            backend = "raft_large" if self.config.raft_weights_path else "farneback"
        self.backend = backend
        self.raft = load_raft_large(self.config.raft_weights_path, self.device) if backend == "raft_large" else None
        self.info = {"flow": backend}
        if backend == "farneback":
            logger.info("ewarp uses Farneback flow: not comparable with the papers' RAFT numbers")

    @torch.no_grad()
    def _flow(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        # img1, img2: (1, 3, H, W) in [0, 1]; RAFT gets [-1, 1], as raft-things gets 2 * (x / 255) - 1.
        if self.raft is not None:
            return self.raft(img1 * 2.0 - 1.0, img2 * 2.0 - 1.0, num_flow_updates=self.config.raft_iters)[-1]
        grey = to_uint8_grey(torch.cat([img1, img2]))
        flow = farneback_flow(grey[0], grey[1])
        return torch.from_numpy(flow).permute(2, 0, 1)[None].to(img1.device, torch.float32)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        """Warping error of consecutive frames of ``pred`` ``(T, C, H, W)`` in [0, 1]; returns ``(T - 1,)`` float64."""
        check_frames(pred, None, self.name, needs_gt=False)
        frames = crop_edges(pred, self.config.crop_border).float().to(self.device)
        if frames.shape[1] == 1:
            frames = frames.expand(-1, 3, -1, -1)
        if self.raft is not None and min(frames.shape[-2:]) < 121:
            # torchvision RAFT's 4-level correlation pyramid needs >= 16 px at 1/8 scale.
            raise UserError(f"ewarp with RAFT needs frames of at least 128x128 after padding. Got "
                            f"{frames.shape[-1]}x{frames.shape[-2]}; use flow=farneback for small frames.")
        errors = []
        for t in range(frames.shape[0] - 1):
            img1, img2 = frames[t:t + 1], frames[t + 1:t + 2]
            if self.raft is not None:
                # RAFT InputPadder('sintel'): flow and warp on the replicate-padded pair, error on
                # the unpadded frame (eval_all_metrics.py `calculate_warping_error`).
                left, right, top, bottom = pad = sintel_pad(*img1.shape[-2:])
                p1, p2 = F.pad(img1, pad, mode="replicate"), F.pad(img2, pad, mode="replicate")
                warped = warp(p2, self._flow(p1, p2))
                warped = warped[..., top:warped.shape[-2] - bottom, left:warped.shape[-1] - right]
            else:
                warped = warp(img2, self._flow(img1, img2))
            errors.append(((img1.double() - warped.double()) ** 2).mean())
        return torch.stack(errors).cpu() if errors else torch.zeros(0, dtype=torch.float64)


class TOFMetric:
    """TecoGAN tOF per frame pair (lower is better; weight-free, OpenCV Farneback). See the module doc.

    Args:
        config: :class:`~vsrkit.metrics.config.TOFConfig`.
    """

    higher_is_better = False
    needs_gt = True
    temporal = True
    name = "tof"

    def __init__(self, config: TOFConfig | None = None):
        self.config = config if config is not None else TOFConfig()
        self.info = {"flow": "farneback"}

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        """tOF of consecutive pairs, ``pred``/``gt`` ``(T, C, H, W)`` in [0, 1]; returns ``(T - 1,)`` float64 (pixels)."""
        check_frames(pred, gt, self.name, self.needs_gt)
        b = self.config.crop_border
        out_grey, gt_grey = to_uint8_grey(crop_edges(pred, b)), to_uint8_grey(crop_edges(gt, b))
        h, w = out_grey.shape[1:]
        top, left, ch, cw = crop_8x8_window(h, w) if self.config.crop_8x8 else (0, 0, h, w)
        scores = []
        for t in range(1, out_grey.shape[0]):
            gt_flow = farneback_flow(gt_grey[t - 1], gt_grey[t])[top:top + ch, left:left + cw]
            out_flow = farneback_flow(out_grey[t - 1], out_grey[t])[top:top + ch, left:left + cw]
            diff = (gt_flow - out_flow).astype(np.float64)
            scores.append(np.sqrt((diff * diff).sum(-1)).mean())
        return torch.tensor(scores, dtype=torch.float64)


class TLPIPSMetric:
    """TecoGAN tLP x100 per frame pair over pyiqa's LPIPS (lower is better). See the module doc.

    Args:
        config: :class:`~vsrkit.metrics.config.TLPIPSConfig`.
    """

    higher_is_better = False
    needs_gt = True
    temporal = True
    name = "tlpips"

    def __init__(self, config: TLPIPSConfig | None = None):
        from vsrkit.metrics.pyiqa_adapter import build_pyiqa_model

        self.config = config if config is not None else TLPIPSConfig()
        self.lpips = build_pyiqa_model("lpips", self.name, self.config.pretrained_model_path, self.config.torch_home,
                                       self.config.device)
        self.info = {"lpips": "alex-v0.1"}

    def _consecutive_lpips(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.as_tensor(self.lpips(frames[t:t + 1], frames[t - 1:t])).reshape(-1).double().cpu()
                          for t in range(1, frames.shape[0])])

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        """tLP x100 of consecutive pairs, ``pred``/``gt`` ``(T, C, H, W)`` in [0, 1]; returns ``(T - 1,)`` float64."""
        check_frames(pred, gt, self.name, self.needs_gt)
        if pred.shape[0] < 2:
            return torch.zeros(0, dtype=torch.float64)
        b = self.config.crop_border
        pred, gt = crop_edges(pred, b).float().clamp(0, 1), crop_edges(gt, b).float().clamp(0, 1)
        if self.config.crop_8x8:
            top, left, ch, cw = crop_8x8_window(*pred.shape[-2:])
            pred, gt = pred[..., top:top + ch, left:left + cw], gt[..., top:top + ch, left:left + cw]
        # TecoGAN: dist0t = LPIPS(pre_target, target), dist1t = LPIPS(pre_output, output), |d0 - d1| * 100.
        return (self._consecutive_lpips(gt) - self._consecutive_lpips(pred)).abs() * 100.0
