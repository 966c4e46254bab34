"""Degradation operations on frame stacks ``(T, C, H, W)`` float32 in ``[0, 1]`` (values may leave
the range between steps, as in the references; :func:`quantize` ends a pipeline).

Filtering, resizing and noise are torch ops (any device). JPEG goes through OpenCV per frame and the
video codec through PyAV in memory; both run on the CPU and return the input's device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import logging
import math
import threading

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vsrkit.data import draws
from vsrkit.data.degradations.config import (
    BlurConfig,
    CodecConfig,
    JPEGConfig,
    NoiseConfig,
    ResizeConfig,
)
from vsrkit.data.degradations.kernels import pad_kernel, random_kernel

logger = logging.getLogger(__name__)

# Luma weights of cv2.COLOR_BGR2GRAY (ITU-R BT.601), used for RealBasicVSR's gray Poisson noise.
_LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------- filtering


def filter2d(frames: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every frame with a kernel, reflected borders (``cv2.filter2D``'s default).

    Args:
        frames: ``(T, C, H, W)`` float.
        kernel: ``(k, k)`` for all frames or ``(T, k, k)`` one per frame, ``k`` odd.

    Returns:
        ``(T, C, H, W)``.
    """
    t, c, h, w = frames.shape
    k = kernel.shape[-1]
    pad = k // 2
    # Reflection needs the pad to be smaller than the frame; tiny intermediate frames (a 0.15x
    # resize of a small crop) fall back to replicated borders.
    mode = "reflect" if pad < h and pad < w else "replicate"
    kernel = kernel.to(device=frames.device, dtype=frames.dtype)
    padded = F.pad(frames, (pad, pad, pad, pad), mode=mode)
    if kernel.dim() == 2:
        weight = kernel.expand(c, 1, k, k)
        return F.conv2d(padded, weight, groups=c)
    weight = kernel.unsqueeze(1).repeat_interleave(c, dim=0)  # (T*C, 1, k, k)
    out = F.conv2d(padded.reshape(1, t * c, h + 2 * pad, w + 2 * pad), weight, groups=t * c)
    return out.reshape(t, c, h, w)


def random_blur(frames: torch.Tensor, cfg: BlurConfig, generator: torch.Generator) -> torch.Tensor:
    """Blur with a kernel drawn from ``cfg``: one per clip, or with ``cfg.per_frame`` one per frame
    (each frame then passes ``cfg.prob`` on its own and an unblurred frame gets a unit pulse, as
    PS-SR's ``pulse_tensor``)."""
    if not cfg.per_frame:
        if not draws.bernoulli(generator, cfg.prob):
            return frames
        return filter2d(frames, random_kernel(cfg, generator))
    size = max(cfg.kernel_sizes)
    pulse = torch.zeros(size, size)
    pulse[size // 2, size // 2] = 1.0
    kernels = [pad_kernel(random_kernel(cfg, generator), size) if draws.bernoulli(generator, cfg.prob) else pulse
               for _ in range(frames.shape[0])]
    return filter2d(frames, torch.stack(kernels))


# ----------------------------------------------------------------------------- resizing


def resize(frames: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """Resize to ``size = (H, W)`` with ``F.interpolate`` (no antialias, half-pixel centres, as
    ``cv2.resize`` with INTER_LINEAR / INTER_CUBIC / INTER_AREA)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    if interpolation == "area":
        return F.interpolate(frames, size=size, mode="area")
    return F.interpolate(frames, size=size, mode=interpolation, align_corners=False)


def random_resize(frames: torch.Tensor, cfg: ResizeConfig, generator: torch.Generator) -> torch.Tensor:
    """Scale up, down or keep (RealBasicVSR ``RandomResize``), one size for the whole clip."""
    if not draws.bernoulli(generator, cfg.prob):
        return frames
    interpolation = draws.choice(generator, list(cfg.interpolations), list(cfg.interpolation_prob))
    mode = draws.choice(generator, ["up", "down", "keep"], list(cfg.mode_prob))
    if mode == "up":
        factor = draws.uniform(generator, 1.0, cfg.scale[1])
    elif mode == "down":
        factor = draws.uniform(generator, cfg.scale[0], 1.0)
    else:
        factor = 1.0
    h, w = frames.shape[-2:]
    out_h, out_w = h * factor, w * factor
    if cfg.even_size:
        out_h, out_w = 2 * (out_h // 2), 2 * (out_w // 2)
    # Never below 2 pixels: the reference would crash on an empty image.
    return resize(frames, (max(int(out_h), 2), max(int(out_w), 2)), interpolation)


def matlab_resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True,
                         dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``(out_len, in_len)`` matrix of MATLAB ``imresize`` bicubic along one axis.

    Port of BasicSR ``calculate_weights_indices`` (``basicsr/utils/matlab_functions.py``): cubic
    kernel with a = -0.5, widened by ``1/scale`` when downsampling with antialiasing, weights
    normalised per output sample, ``symmetric`` borders (the edge sample is repeated).
    """
    kernel_width = 4.0
    wide = scale < 1 and antialias
    if wide:
        kernel_width /= scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    index = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    distance = u[:, None] - index
    if wide:
        distance = distance * scale
    a = distance.abs()
    weights = ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))
    if wide:
        weights = weights * scale
    weights = weights / weights.sum(dim=1, keepdim=True)
    j = index.long() - 1  # 1-based (MATLAB) -> 0-based
    for _ in range(2):  # mirror twice so even very short axes stay in range
        j = torch.where(j < 0, -j - 1, j)
        j = torch.where(j >= in_len, 2 * in_len - 1 - j, j)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64).scatter_add_(1, j, weights)
    return matrix.to(dtype=dtype, device=device)


def matlab_imresize(frames: torch.Tensor, scale: float, antialias: bool = True) -> torch.Tensor:
    """MATLAB-style bicubic resize of ``(..., H, W)`` by ``scale`` (output ``ceil(H * scale)``)."""
    h, w = frames.shape[-2:]
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    mh = matlab_resize_matrix(h, out_h, scale, antialias, dtype=frames.dtype, device=frames.device)
    mw = matlab_resize_matrix(w, out_w, scale, antialias, dtype=frames.dtype, device=frames.device)
    return mh @ frames @ mw.T


# ----------------------------------------------------------------------------- noise


def _per_frame_or_clip(n: int, per_frame: bool, draw) -> list:
    """``n`` values: ``n`` draws if ``per_frame``, else one draw repeated."""
    if per_frame:
        return [draw() for _ in range(n)]
    value = draw()
    return [value] * n


def gaussian_noise(frames: torch.Tensor, sigmas: list[float], grays: list[bool],
                   generator: torch.Generator) -> torch.Tensor:
    """Add N(0, sigma^2) noise, ``sigma`` in 8-bit levels; gray frames share one noise map.

    Args:
        frames: ``(T, C, H, W)`` in ~[0, 1].
        sigmas: One sigma per frame (0-255 scale).
        grays: One flag per frame: same noise in every channel.
        generator: CPU generator; noise on another device comes from a derived generator.
    """
    g = draws.device_generator(generator, frames.device)
    noise = torch.randn(frames.shape, generator=g, device=frames.device, dtype=frames.dtype)
    gray = torch.tensor(grays, device=frames.device).view(-1, 1, 1, 1)
    noise = torch.where(gray, noise[:, :1].expand_as(noise), noise)
    sigma = torch.tensor(sigmas, device=frames.device, dtype=frames.dtype).view(-1, 1, 1, 1) / 255.0
    return frames + noise * sigma


def poisson_noise(frames: torch.Tensor, scales: list[float], grays: list[bool], generator: torch.Generator,
                  on_255_scale: bool) -> torch.Tensor:
    """Add Poisson (shot) noise as RealBasicVSR (``on_255_scale``) or Real-ESRGAN do.

    The noise of a frame ``x`` is ``Poisson(x' * v) / v - x'`` with ``x'`` the frame rounded to
    8-bit levels and ``v = 2^ceil(log2(#distinct levels))``, times ``scale``. RealBasicVSR
    computes it on 0-255 values, Real-ESRGAN on [0, 1] (about 16x stronger).

    Args:
        frames: ``(T, C, H, W)`` in ~[0, 1].
        scales: One multiplier per frame.
        grays: One flag per frame: noise computed on luma and shared by the channels.
        generator: CPU generator (see :func:`gaussian_noise`).
        on_255_scale: Compute on 0-255 values (RealBasicVSR) rather than [0, 1].
    """
    g = draws.device_generator(generator, frames.device)
    unit = 255.0 if on_255_scale else 1.0
    out = []
    for i in range(frames.shape[0]):
        frame = frames[i]
        if grays[i]:
            luma = torch.tensor(_LUMA, device=frame.device, dtype=frame.dtype).view(3, 1, 1)
            source = (frame * luma).sum(0, keepdim=True) if frame.shape[0] == 3 else frame[:1]
        else:
            source = frame
        levels = torch.clamp(torch.round(source * 255.0), 0, 255)
        vals = 2.0 ** math.ceil(math.log2(max(len(torch.unique(levels)), 1)))
        base = levels / 255.0 * unit
        noise = (torch.poisson(base * vals, generator=g) / vals - base) / unit
        out.append(frame + noise.expand_as(frame) * scales[i])
    return torch.stack(out)


def random_noise(frames: torch.Tensor, cfg: NoiseConfig, generator: torch.Generator) -> torch.Tensor:
    """Gaussian (p ``gaussian_prob``) or Poisson noise with parameters drawn from ``cfg``."""
    if not draws.bernoulli(generator, cfg.prob):
        return frames
    n, g = frames.shape[0], generator
    if draws.bernoulli(g, cfg.gaussian_prob):
        sigmas = _per_frame_or_clip(n, cfg.per_frame, lambda: draws.uniform(g, *cfg.gaussian_sigma))
        grays = _per_frame_or_clip(n, cfg.per_frame, lambda: draws.bernoulli(g, cfg.gaussian_gray_prob))
        out = gaussian_noise(frames, sigmas, grays, g)
    else:
        scales = _per_frame_or_clip(n, cfg.per_frame, lambda: draws.uniform(g, *cfg.poisson_scale))
        grays = _per_frame_or_clip(n, cfg.per_frame, lambda: draws.bernoulli(g, cfg.poisson_gray_prob))
        out = poisson_noise(frames, scales, grays, g, cfg.poisson_on_255_scale)
    return out.clamp(0.0, 1.0) if cfg.clip else out


# ----------------------------------------------------------------------------- compression


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(T, C, H, W)`` float ~[0, 1] -> ``(T, H, W, C)`` uint8 (clamped and rounded)."""
    return (frames.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``(T, H, W, C)`` uint8 -> ``(T, C, H, W)`` float in [0, 1] on ``like``'s device and dtype."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    return tensor.to(device=like.device, dtype=like.dtype) / 255.0


def jpeg(frames: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """JPEG-compress every frame with OpenCV (baseline JPEG, 4:2:0 chroma) at its quality.

    Args:
        frames: ``(T, 3, H, W)`` ~[0, 1] (clamped and rounded to 8 bits first).
        qualities: One quality in [1, 100] per frame.
    """
    arrays = to_uint8(frames)
    out = np.empty_like(arrays)
    for i, (rgb, quality) in enumerate(zip(arrays, qualities)):
        ok, encoded = cv2.imencode(".jpg", rgb[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
        if not ok:
            raise RuntimeError(f"OpenCV could not JPEG-encode a {rgb.shape} frame.")
        out[i] = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    return from_uint8(out, frames)


def random_jpeg(frames: torch.Tensor, cfg: JPEGConfig, generator: torch.Generator) -> torch.Tensor:
    """JPEG with qualities drawn from ``cfg`` (a random walk of ``quality_step``, or per frame)."""
    if not draws.bernoulli(generator, cfg.prob):
        return frames
    low, high = cfg.quality
    if cfg.per_frame:
        qualities = [round(draws.uniform(generator, low, high)) for _ in range(frames.shape[0])]
    else:
        quality = round(draws.uniform(generator, low, high))
        qualities = []
        for _ in range(frames.shape[0]):
            qualities.append(quality)
            step = draws.uniform(generator, -cfg.quality_step, cfg.quality_step)
            quality = round(min(max(quality + step, low), high))
    return jpeg(frames, qualities)


class _InitialisedAllocations:
    """Within the block, glibc fills every new allocation with a fixed byte (``mallopt(M_PERTURB)``).

    libx264 (PyAV 18.1 / FFmpeg 8.1) reads memory it never wrote while encoding: the same input
    gave different bytes from run to run (about 1 run in 10 on 38x50 frames; always the same
    bytes with ``MALLOC_PERTURB_`` set). Filling the encoder's allocations makes the codec step,
    and so the whole degradation, reproducible. A no-op where glibc's ``mallopt`` is missing.
    The setting is process-wide: nested or concurrent blocks are counted, the last one resets it.
    """

    _M_PERTURB = -6  # glibc malloc.h
    _libc = None
    _lock = threading.Lock()
    _depth = 0

    @classmethod
    def _mallopt(cls, value: int) -> None:
        if cls._libc is None:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.mallopt  # noqa: B018 (raises AttributeError off glibc)
                cls._libc = libc
            except (OSError, AttributeError):
                cls._libc = False
        if cls._libc:
            cls._libc.mallopt(cls._M_PERTURB, value)

    def __enter__(self):
        with self._lock:
            if _InitialisedAllocations._depth == 0:
                self._mallopt(0xA5)
            _InitialisedAllocations._depth += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            _InitialisedAllocations._depth -= 1
            if _InitialisedAllocations._depth == 0:
                self._mallopt(0)
        return False


def _codec_frame(array: np.ndarray) -> av.VideoFrame:
    """A yuv420p frame from ``(H, W, 3)`` uint8 RGB whose whole buffer (line padding included) is
    written. (The encoder's own rgb24 -> yuv420p conversion also varied from run to run.)"""
    converted = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p")
    frame = av.VideoFrame(converted.width, converted.height, "yuv420p")
    for src, dst in zip(converted.planes, frame.planes):
        rows = np.frombuffer(src, np.uint8).reshape(src.height, src.line_size)[:, :src.width]
        full = np.empty((dst.height, dst.line_size), np.uint8)
        full[:, :dst.width] = rows
        full[:, dst.width:] = rows[:, -1:]
        dst.update(full.tobytes())
    return frame


def compress_video(frames: torch.Tensor, codec: str, bitrate: int) -> torch.Tensor:
    """Encode the clip to an in-memory mp4 with PyAV and decode it back.

    As RealBasicVSR's ``RandomVideoCompression``: 1 frame per second (so ``bitrate`` is bits per
    frame), yuv420p, odd sizes padded by reflection and cropped back. One encoder thread keeps it
    light inside dataloader workers; see :class:`_InitialisedAllocations` for reproducibility.

    Args:
        frames: ``(T, 3, H, W)`` ~[0, 1] (clamped and rounded to 8 bits first).
        codec: PyAV encoder name (``libx264``, ``h264``, ``mpeg4``).
        bitrate: Target bits per second.
    """
    arrays = to_uint8(frames)
    t, h, w, _ = arrays.shape
    arrays = np.ascontiguousarray(np.pad(arrays, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="symmetric"))
    buffer = io.BytesIO()
    with _InitialisedAllocations(), av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=1)
        stream.height, stream.width = arrays.shape[1], arrays.shape[2]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = int(bitrate)
        stream.codec_context.thread_count = 1
        for i, array in enumerate(arrays):
            frame = _codec_frame(array)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buffer.seek(0)
    decoded = []
    with av.open(buffer, "r", format="mp4") as container:
        for frame in container.decode(video=0):
            decoded.append(frame.to_ndarray(format="rgb24")[:h, :w])
    if len(decoded) != t:
        raise RuntimeError(f"{codec} round trip returned {len(decoded)} frames for {t}.")
    return from_uint8(np.stack(decoded), frames)


def random_codec(frames: torch.Tensor, cfg: CodecConfig, generator: torch.Generator) -> torch.Tensor:
    """Video compression with an encoder and bit rate drawn from ``cfg``."""
    if not draws.bernoulli(generator, cfg.prob):
        return frames
    codec = draws.choice(generator, list(cfg.codecs), list(cfg.codec_prob))
    bitrate = draws.randint(generator, int(cfg.bitrate[0]), int(cfg.bitrate[1]))
    return compress_video(frames, codec, bitrate)


def quantize(frames: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels."""
    return torch.round(frames.clamp(0.0, 1.0) * 255.0) / 255.0
