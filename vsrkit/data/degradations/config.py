"""Options of the degradation presets (``conf/degradation/<name>.yaml``). No torch import here.

Every degradation works on HQ frames in ``[0, 1]`` and returns LQ frames ``scale`` times smaller
(see :mod:`vsrkit.data.degradations`). Defaults are the published settings:

- ``realbasicvsr``: the second-order RealBasicVSR video pipeline as DOVE and SparkVSR train with it
  (``zhengchen1999/DOVE:finetune/configs/degradation.yaml``, sparkvsr.md §8.3).
- ``realesrgan_video``: PS-SR's per-frame Real-ESRGAN video variant
  (``HiDream-ai/PS-SR:Wan_SR/degradation/realesrgan_video.py`` + ``params_realesrgan.yml``, pssr.md §5.1).
- ``bd``: Gaussian blur (sigma 1.6) then subsampling, the "BD" LR of Vid4 (SOURCES.md §4).
- ``bicubic``: MATLAB ``imresize`` bicubic with antialiasing (BasicSR ``matlab_functions.imresize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

from vsrkit.errors import UserError

KERNEL_TYPES = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso", "sinc"]
INTERPOLATIONS = ["bilinear", "area", "bicubic"]
CODECS = ["libx264", "h264", "mpeg4"]
BD_PADDINGS = ["replicate", "reflect"]

# DOVE degradation.yaml: Real-ESRGAN's six kernel probabilities scaled by 0.9, plus sinc at 0.1.
_KERNEL_PROB = [0.405, 0.225, 0.108, 0.027, 0.108, 0.027, 0.1]
_KERNEL_SIZES = [7, 9, 11, 13, 15, 17, 19, 21]
_THIRDS = [0.3333, 0.3333, 0.3334]


def _check_prob(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise UserError(f"`{key}` must be a probability in [0, 1]. Got {value}.")


def _check_range(key: str, values, low: float = -math.inf) -> None:
    if len(values) != 2 or values[0] > values[1] or values[0] < low:
        raise UserError(f"`{key}` must be [min, max] with min <= max and min >= {low}. Got {list(values)}.")


def _check_choices(key: str, values, choices, probs) -> None:
    for value in values:
        if value not in choices:
            raise UserError(f"`{key}` must be one of {choices}. Got {value}.")
    if len(probs) != len(values) or any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-3:
        raise UserError(f"`{key}` needs one probability per entry, summing to 1. Got {list(values)} "
                        f"with {list(probs)}.")


@dataclass
class BlurConfig:
    """One random blur: a kernel family, then its parameters (BasicSR ``random_mixed_kernels``).

    Args:
        prob: Probability that the blur is applied at all.
        kernel_sizes: Odd kernel sizes, drawn uniformly.
        kernel_list: Kernel families among ``iso``, ``aniso``, ``generalized_iso``,
            ``generalized_aniso``, ``plateau_iso``, ``plateau_aniso``, ``sinc``.
        kernel_prob: Probability of each family in ``kernel_list``.
        sigma_x: Range of the Gaussian standard deviation along x, in pixels.
        sigma_y: Range along y (anisotropic families only).
        rotate_angle: Range of the rotation of anisotropic kernels, radians.
        beta_gaussian: Shape range of the generalized Gaussian (half the draws below 1, half above,
            as BasicSR does).
        beta_plateau: Shape range of the plateau kernel.
        omega: Cutoff range of the sinc kernel in radians; empty: Real-ESRGAN's rule
            ([pi/3, pi] for kernels under 13 taps, [pi/5, pi] otherwise).
        per_frame: Draw a new kernel for every frame (PS-SR) instead of one per clip (RealBasicVSR).
    """

    prob: float = 1.0
    kernel_sizes: List[int] = field(default_factory=lambda: list(_KERNEL_SIZES))
    kernel_list: List[str] = field(default_factory=lambda: list(KERNEL_TYPES))
    kernel_prob: List[float] = field(default_factory=lambda: list(_KERNEL_PROB))
    sigma_x: List[float] = field(default_factory=lambda: [0.2, 3.0])
    sigma_y: List[float] = field(default_factory=lambda: [0.2, 3.0])
    rotate_angle: List[float] = field(default_factory=lambda: [-3.1416, 3.1416])
    beta_gaussian: List[float] = field(default_factory=lambda: [0.5, 4.0])
    beta_plateau: List[float] = field(default_factory=lambda: [1.0, 2.0])
    omega: List[float] = field(default_factory=list)
    per_frame: bool = False

    def check(self, key: str) -> None:
        """Validate; ``key`` is this step's config path for messages (``degradation.blur1``)."""
        _check_prob(f"{key}.prob", self.prob)
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise UserError(f"`{key}.kernel_sizes` must be odd sizes >= 1. Got {list(self.kernel_sizes)}.")
        _check_choices(f"{key}.kernel_list", self.kernel_list, KERNEL_TYPES, self.kernel_prob)
        _check_range(f"{key}.sigma_x", self.sigma_x, low=1e-3)
        _check_range(f"{key}.sigma_y", self.sigma_y, low=1e-3)
        _check_range(f"{key}.rotate_angle", self.rotate_angle)
        _check_range(f"{key}.beta_gaussian", self.beta_gaussian, low=1e-3)
        _check_range(f"{key}.beta_plateau", self.beta_plateau, low=1e-3)
        if self.omega:
            _check_range(f"{key}.omega", self.omega, low=1e-3)


@dataclass
class ResizeConfig:
    """A random resize up, down or not at all (RealBasicVSR ``RandomResize``).

    Args:
        prob: Probability that the step runs.
        mode_prob: Probabilities of scaling up, down, or keeping the size.
        scale: Scale range: up draws from [1, max], down from [min, 1].
        interpolations: Among ``bilinear``, ``area``, ``bicubic`` (``F.interpolate``, no antialias,
            like the ``cv2.resize`` calls of the reference).
        interpolation_prob: Probability of each interpolation.
        even_size: Round the output size down to even numbers (the reference's ``is_size_even``;
            the video codec needs even sizes).
    """

    prob: float = 1.0
    mode_prob: List[float] = field(default_factory=lambda: [0.2, 0.7, 0.1])
    scale: List[float] = field(default_factory=lambda: [0.15, 1.5])
    interpolations: List[str] = field(default_factory=lambda: list(INTERPOLATIONS))
    interpolation_prob: List[float] = field(default_factory=lambda: list(_THIRDS))
    even_size: bool = True

    def check(self, key: str) -> None:
        """Validate; ``key`` is this step's config path for messages."""
        _check_prob(f"{key}.prob", self.prob)
        if len(self.mode_prob) != 3 or abs(sum(self.mode_prob) - 1.0) > 1e-3 or min(self.mode_prob) < 0:
            raise UserError(f"`{key}.mode_prob` must be 3 probabilities (up, down, keep) summing to 1. "
                            f"Got {list(self.mode_prob)}.")
        _check_range(f"{key}.scale", self.scale, low=1e-3)
        _check_choices(f"{key}.interpolations", self.interpolations, INTERPOLATIONS, self.interpolation_prob)


@dataclass
class NoiseConfig:
    """Gaussian or Poisson noise (RealBasicVSR ``RandomNoise`` / Real-ESRGAN ``random_add_*_noise_pt``).

    Args:
        prob: Probability that noise is added at all.
        gaussian_prob: Probability of Gaussian noise; otherwise Poisson.
        gaussian_sigma: Range of the Gaussian standard deviation, in 8-bit levels (0-255).
        gaussian_gray_prob: Probability that the Gaussian noise is the same in all channels.
        poisson_scale: Range of the Poisson noise multiplier.
        poisson_gray_prob: Probability that the Poisson noise is computed on luma and shared.
        poisson_on_255_scale: Compute Poisson noise on 0-255 values, as RealBasicVSR/DOVE do (their
            frames are 0-255 floats), which makes it about 16x weaker than Real-ESRGAN's, computed
            on [0, 1]. False gives Real-ESRGAN's strength (PS-SR).
        per_frame: Draw sigma/scale and the gray choice per frame (PS-SR) instead of per clip.
        clip: Clamp to [0, 1] after adding noise (Real-ESRGAN/PS-SR); RealBasicVSR does not.
    """

    prob: float = 1.0
    gaussian_prob: float = 0.5
    gaussian_sigma: List[float] = field(default_factory=lambda: [1.0, 30.0])
    gaussian_gray_prob: float = 0.4
    poisson_scale: List[float] = field(default_factory=lambda: [0.05, 3.0])
    poisson_gray_prob: float = 0.4
    poisson_on_255_scale: bool = True
    per_frame: bool = False
    clip: bool = False

    def check(self, key: str) -> None:
        """Validate; ``key`` is this step's config path for messages."""
        for name in ("prob", "gaussian_prob", "gaussian_gray_prob", "poisson_gray_prob"):
            _check_prob(f"{key}.{name}", getattr(self, name))
        _check_range(f"{key}.gaussian_sigma", self.gaussian_sigma, low=0.0)
        _check_range(f"{key}.poisson_scale", self.poisson_scale, low=0.0)


@dataclass
class JPEGConfig:
    """JPEG compression of every frame (OpenCV ``imencode``/``imdecode``, 4:2:0, per frame).

    Args:
        prob: Probability that the step runs.
        quality: Quality range; the first frame's quality is drawn uniformly and rounded.
        quality_step: Per-frame random walk of the quality, +-step then clipped (RealBasicVSR
            uses 3). Ignored when ``per_frame`` is true.
        per_frame: Draw every frame's quality independently (PS-SR).
    """

    prob: float = 1.0
    quality: List[float] = field(default_factory=lambda: [30.0, 95.0])
    quality_step: float = 3.0
    per_frame: bool = False

    def check(self, key: str) -> None:
        """Validate; ``key`` is this step's config path for messages."""
        _check_prob(f"{key}.prob", self.prob)
        _check_range(f"{key}.quality", self.quality, low=1.0)
        if self.quality[1] > 100:
            raise UserError(f"`{key}.quality` must lie in [1, 100]. Got {list(self.quality)}.")
        if self.quality_step < 0:
            raise UserError(f"`{key}.quality_step` must be >= 0. Got {self.quality_step}.")


@dataclass
class CodecConfig:
    """Video compression of the whole clip through PyAV, in memory (RealBasicVSR ``RandomVideoCompression``).

    The reference encodes an mp4 at 1 frame per second, so ``bitrate`` is bits per frame.

    Args:
        prob: Probability that the step runs.
        codecs: Encoders among ``libx264``, ``h264`` (FFmpeg maps it to libx264) and ``mpeg4``.
        codec_prob: Probability of each encoder.
        bitrate: Range of the target bit rate (bits per second at 1 fps), drawn as an integer.
    """

    prob: float = 1.0
    codecs: List[str] = field(default_factory=lambda: list(CODECS))
    codec_prob: List[float] = field(default_factory=lambda: list(_THIRDS))
    bitrate: List[int] = field(default_factory=lambda: [10000, 100000])

    def check(self, key: str) -> None:
        """Validate; ``key`` is this step's config path for messages."""
        _check_prob(f"{key}.prob", self.prob)
        _check_choices(f"{key}.codecs", self.codecs, CODECS, self.codec_prob)
        _check_range(f"{key}.bitrate", self.bitrate, low=1000)


def _check_steps(cfg) -> None:
    """Run ``check`` of every nested step config, naming its key (``degradation.blur1``)."""
    for name, value in vars(cfg).items():
        if hasattr(value, "check"):
            value.check(f"degradation.{name}")


def _final_sinc() -> BlurConfig:
    # DOVE degradation.yaml `degradation_with_shuffle`: sinc only, p 0.8, omega [pi/3, pi].
    return BlurConfig(prob=0.8, kernel_list=["sinc"], kernel_prob=[1.0], omega=[1.0472, 3.1416])


@dataclass
class RealBasicVSRConfig:
    """The second-order RealBasicVSR video degradation used by DOVE and SparkVSR.

    Stage 1: blur, resize, noise, JPEG, video codec. Stage 2: blur (p 0.8), resize, noise, JPEG,
    then in random order {video codec} and {resize to the LR size + sinc blur (p 0.8)}. Images
    (``is_image``) skip both codecs and end with resize + sinc, as DOVE's image branch
    (``degradation_image_video.yaml``). Values from sparkvsr.md §8.3 / DOVE ``degradation.yaml``.

    Args:
        name: Registry name (keep it).
        blur1: First-stage blur.
        resize1: First-stage resize.
        noise1: First-stage noise.
        jpeg1: First-stage JPEG.
        codec1: First-stage video codec.
        blur2: Second-stage blur.
        resize2: Second-stage resize.
        noise2: Second-stage noise.
        jpeg2: Second-stage JPEG.
        codec2: Video codec of the shuffled final group.
        final_sinc: Sinc blur after the final resize to the LR size.
        final_interpolations: Interpolations of the final resize to the LR size.
        final_interpolation_prob: Their probabilities.
        shuffle_final: Shuffle {codec2} and {resize + sinc} (the reference does); False keeps
            codec first.
        quantize: Round the output to 8-bit levels (the LR is stored as 8-bit video).
    """

    name: str = "realbasicvsr"
    blur1: BlurConfig = field(default_factory=BlurConfig)
    resize1: ResizeConfig = field(default_factory=ResizeConfig)
    noise1: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg1: JPEGConfig = field(default_factory=JPEGConfig)
    codec1: CodecConfig = field(default_factory=CodecConfig)
    blur2: BlurConfig = field(default_factory=lambda: BlurConfig(prob=0.8, sigma_x=[0.2, 1.5], sigma_y=[0.2, 1.5]))
    resize2: ResizeConfig = field(default_factory=lambda: ResizeConfig(mode_prob=[0.3, 0.4, 0.3], scale=[0.3, 1.2]))
    noise2: NoiseConfig = field(default_factory=lambda: NoiseConfig(gaussian_sigma=[1.0, 25.0],
                                                                    poisson_scale=[0.05, 2.5]))
    jpeg2: JPEGConfig = field(default_factory=JPEGConfig)
    codec2: CodecConfig = field(default_factory=CodecConfig)
    final_sinc: BlurConfig = field(default_factory=_final_sinc)
    final_interpolations: List[str] = field(default_factory=lambda: list(INTERPOLATIONS))
    final_interpolation_prob: List[float] = field(default_factory=lambda: list(_THIRDS))
    shuffle_final: bool = True
    quantize: bool = True

    def __post_init__(self):
        _check_steps(self)
        _check_choices("degradation.final_interpolations", self.final_interpolations, INTERPOLATIONS,
                       self.final_interpolation_prob)


def _pssr_blur(sigma_max: float) -> BlurConfig:
    # params_realesrgan.yml: sinc_prob 0.1 else the six Gaussian-like families with
    # [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]: the same distribution as the 7-entry list above.
    return BlurConfig(sigma_x=[0.2, sigma_max], sigma_y=[0.2, sigma_max], per_frame=True)


def _pssr_noise(sigma_max: float) -> NoiseConfig:
    # realesrgan_video.py: Gaussian noise always (`if True:`), sigma and gray drawn per frame, clipped.
    return NoiseConfig(gaussian_prob=1.0, gaussian_sigma=[1.0, sigma_max], poisson_scale=[0.05, 3.0],
                       poisson_on_255_scale=False, per_frame=True, clip=True)


def _pssr_jpeg() -> JPEGConfig:
    return JPEGConfig(quality=[30.0, 95.0], quality_step=0.0, per_frame=True)


def _pssr_final_sinc() -> BlurConfig:
    # final_sinc_prob 0.8, omega [pi/3, pi], drawn per frame.
    return BlurConfig(prob=0.8, kernel_list=["sinc"], kernel_prob=[1.0], omega=[1.0472, 3.1416], per_frame=True)


@dataclass
class PSSRDegradationConfig:
    """PS-SR's Real-ESRGAN video degradation, every random choice drawn per frame (pssr.md §5.1).

    Sequence of the released ``degrade_process`` (its stage-1 resize is commented out, its noise is
    always Gaussian): blur1, noise1 (clipped), JPEG1, blur2, resize to the LR size (random
    interpolation), noise2, sinc (p 0.8), JPEG2, round to 8 bits. The final "resize back to the
    HQ size" of the release is left to the method (this returns the LR size, like every preset).

    Args:
        name: Registry name (keep it).
        blur1: First blur (sigma 0.2-3).
        noise1: First noise (Gaussian sigma 1-30, gray p 0.4).
        jpeg1: First JPEG (quality 30-95 per frame).
        blur2: Second blur (sigma 0.2-1.5), always applied.
        noise2: Second noise (Gaussian sigma 1-25).
        jpeg2: Second JPEG.
        final_sinc: Sinc blur after the resize to the LR size.
        interpolations: Interpolations of the resize to the LR size.
        interpolation_prob: Their probabilities.
        quantize: Round the output to 8-bit levels (the release does).
    """

    name: str = "realesrgan_video"
    blur1: BlurConfig = field(default_factory=lambda: _pssr_blur(3.0))
    noise1: NoiseConfig = field(default_factory=lambda: _pssr_noise(30.0))
    jpeg1: JPEGConfig = field(default_factory=_pssr_jpeg)
    blur2: BlurConfig = field(default_factory=lambda: _pssr_blur(1.5))
    noise2: NoiseConfig = field(default_factory=lambda: _pssr_noise(25.0))
    jpeg2: JPEGConfig = field(default_factory=_pssr_jpeg)
    final_sinc: BlurConfig = field(default_factory=_pssr_final_sinc)
    interpolations: List[str] = field(default_factory=lambda: list(INTERPOLATIONS))
    interpolation_prob: List[float] = field(default_factory=lambda: list(_THIRDS))
    quantize: bool = True

    def __post_init__(self):
        _check_steps(self)
        _check_choices("degradation.interpolations", self.interpolations, INTERPOLATIONS, self.interpolation_prob)


@dataclass
class BDConfig:
    """Gaussian blur then subsampling ("BD"), as Vid4's ``LR_BDx4``.

    The defaults reproduce ``yhjo09_VSR-DUF_Vid4/calendar/LR_BDx4/001.png`` from ``GT/001.png``
    at 51.1 dB (RGB, 8-bit output): a 13x13 kernel (VSR-DUF ``gkern(13, 1.6)``), replicated
    borders (MATLAB ``imfilter(..., 'replicate')``; reflected borders give 48.2 dB), and the
    samples at rows/columns 0, s, 2s, ...

    Args:
        name: Registry name (keep it).
        sigma: Gaussian standard deviation in HQ pixels.
        kernel_size: Odd kernel size.
        padding: Border handling, ``replicate`` or ``reflect``.
        offset: Index of the first kept row/column, in ``[0, scale)``.
        quantize: Round the output to 8-bit levels.
    """

    name: str = "bd"
    sigma: float = 1.6
    kernel_size: int = 13
    padding: str = "replicate"
    offset: int = 0
    quantize: bool = True

    def __post_init__(self):
        if self.sigma <= 0:
            raise UserError(f"`degradation.sigma` must be > 0. Got {self.sigma}.")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise UserError(f"`degradation.kernel_size` must be odd and >= 1. Got {self.kernel_size}.")
        if self.padding not in BD_PADDINGS:
            raise UserError(f"`degradation.padding` must be one of {BD_PADDINGS}. Got {self.padding}.")
        if self.offset < 0:
            raise UserError(f"`degradation.offset` must be >= 0. Got {self.offset}.")


@dataclass
class BicubicDegradationConfig:
    """Plain bicubic downsampling, MATLAB ``imresize`` style (BasicSR ``matlab_functions.imresize``).

    Args:
        name: Registry name (keep it).
        antialias: Widen the cubic kernel by the scale when downsampling (MATLAB's default).
        quantize: Round the output to 8-bit levels.
    """

    name: str = "bicubic"
    antialias: bool = True
    quantize: bool = True


__all__ = [
    "BlurConfig", "ResizeConfig", "NoiseConfig", "JPEGConfig", "CodecConfig", "RealBasicVSRConfig",
    "PSSRDegradationConfig", "BDConfig", "BicubicDegradationConfig",
]
