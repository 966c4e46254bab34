"""Options of the SparkVSR method (keyframe-conditioned one-step CogVideoX video SR).

Every default is the released code's (taco-group/SparkVSR @ d7dac71, read as
``Square-Zero-Labs/SparkVSR-on-Runpod:SparkVSR-base``) unless the field says otherwise; the
research report is ``shared/research/sparkvsr.md`` (sections cited as §n).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from vsrkit.errors import UserError

_POSTERIORS = ["sample", "mode"]
_UPSCALE_MODES = ["bilinear", "bicubic", "nearest", "area"]
_KEYFRAME_ENCODINGS = ["repeat", "single"]
_S2_DECODES = ["per_frame", "whole"]


@dataclass
class SparkVSRConfig:
    """SparkVSR options.

    Args:
        ref_guidance_scale: Keyframe ("reference-free") guidance ``s``. 1.0 runs one conditional
            transformer pass; any other value batches [zero-keyframe, keyframe] inputs and
            combines ``v = v_u + s * (v_c - v_u)`` (§5). > 1 follows the keyframes more closely.
        timestep: Diffusion timestep of the single step (release ``--sr_noise_step 399``).
        noise_step: If > 0, noise is added to the LR latent at this timestep before the step
            (release ``--noise_step``, default 0; DOVE issue #22 advises against it).
        ofs: Value of the I2V transformer's ``ofs`` embedding input (release constant 2.0).
        posterior: How VAE latents are drawn from the encoder posterior: ``"sample"`` (release,
            seeded by the engine's generator) or ``"mode"`` (deterministic).
        upscale_mode: Interpolation that brings the LR window to the output size before VAE
            encoding (release ``--upscale_mode bilinear``, ``align_corners=False``).
        keyframe_encoding: How a keyframe image is VAE-encoded at inference: ``"repeat"``
            (release inference: the frame repeated 4x in time, first latent frame kept) or
            ``"single"`` (release training: a one-frame clip).
        window: Temporal window in input frames, ``8k+1``; ``None`` processes the clip whole
            (release ``--chunk_len 0``). 33 keeps memory near the released 33-frame setting.
        overlap: Frames shared by consecutive windows (blended by the engine). ``window -
            overlap`` must be a multiple of 4 so keyframe latent slots stay aligned (§4.6).
        tile: Spatial tile edge in input pixels (multiple of the spatial multiple, 4 at x4);
            ``None`` runs whole frames.
        tile_overlap: Input pixels shared by neighbouring tiles (blended by the engine).
        stage: Training stage: 1 (latent MSE, §8.1) or 2 (pixel MSE + DISTS + frame
            difference, §8.2).
        train_frames: Frames per training clip; ``None`` uses the release's: 33 in stage 1
            (``4k+1``), 2 in stage 2 (frames are encoded one by one there, any count works).
        train_size: HR training crop ``[H, W]`` (release ``320x640``; multiples of 16).
        keyframe_dropout: Stage 1: probability that a training clip gets no keyframes (0.1).
        keyframe_jitter: Stage 1/2 keyframe augmentation: brightness/contrast/saturation
            jitter amplitude (torchvision ``ColorJitter(0.1, 0.1, 0.1, 0)``).
        keyframe_jitter_p: Probability of the colour jitter (0.5).
        keyframe_blur_p: Probability of a 3x3 Gaussian blur, sigma in [0.1, 1.0] (0.3).
        keyframe_noise_std: Std of the Gaussian noise always added to keyframes in [-1, 1] (0.05).
        mse_weight: Stage 2 weight of the pixel MSE (on [0, 1] frames).
        dists_weight: Stage 2 weight of the per-frame DISTS loss (release 1.0). DISTS needs the
            pyiqa package and its weights; set 0 to train without them.
        frame_diff_weight: Stage 2 weight of the L1 between consecutive-frame differences (1.0).
        s2_decode: Stage 2 decode of the predicted latent: ``"per_frame"`` (each latent frame on
            its own, as DOVE; default) or ``"whole"`` (the released SparkVSR trainer's temporal
            decode of the per-frame latent, truncated to the clip length; issue #27).
        seed: Base seed of the training step's randomness (keyframe choice, augmentation,
            posterior samples), combined with the batch's sample indices.
    """

    # --- inference (§3-§5) ---
    ref_guidance_scale: float = 1.0
    timestep: int = 399
    noise_step: int = 0
    ofs: float = 2.0
    posterior: str = "sample"
    upscale_mode: str = "bilinear"
    keyframe_encoding: str = "repeat"
    window: Optional[int] = 33
    overlap: int = 9
    tile: Optional[int] = None
    tile_overlap: int = 16

    # --- training (§8) ---
    stage: int = 1
    train_frames: Optional[int] = None
    train_size: List[int] = field(default_factory=lambda: [320, 640])
    keyframe_dropout: float = 0.1
    keyframe_jitter: float = 0.1
    keyframe_jitter_p: float = 0.5
    keyframe_blur_p: float = 0.3
    keyframe_noise_std: float = 0.05
    mse_weight: float = 1.0
    dists_weight: float = 1.0
    frame_diff_weight: float = 1.0
    s2_decode: str = "per_frame"
    seed: int = 0

    def __post_init__(self):
        for name, choices in (
            ("posterior", _POSTERIORS),
            ("upscale_mode", _UPSCALE_MODES),
            ("keyframe_encoding", _KEYFRAME_ENCODINGS),
            ("s2_decode", _S2_DECODES),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise UserError(f"`{name}` must be one of {choices}. Got {value!r}.")
        if self.stage not in (1, 2):
            raise UserError(f"`stage` must be one of [1, 2]. Got {self.stage}.")
        if not 0 <= self.timestep < 1000:
            raise UserError(f"`timestep` must be in [0, 999]. Got {self.timestep}.")
        if not 0 <= self.noise_step < 1000:
            raise UserError(f"`noise_step` must be in [0, 999]. Got {self.noise_step}.")
        if self.window is not None:
            if self.window < 1 or (self.window - 1) % 8 != 0:
                raise UserError(f"`window` must be 8k+1 (9, 17, 25, 33, 41, 49, ...) or null. Got {self.window}.")
            if not 0 <= self.overlap < self.window:
                raise UserError(f"`overlap` must be in [0, window={self.window}). Got {self.overlap}.")
            if (self.window - self.overlap) % 4 != 0:
                raise UserError(
                    f"`window - overlap` must be a multiple of 4 so keyframe latent slots stay aligned. "
                    f"Got window={self.window}, overlap={self.overlap} "
                    f"(try overlap={self.overlap + (self.window - self.overlap) % 4})."
                )
        if self.tile is not None:
            if self.tile < 8:
                raise UserError(f"`tile` must be >= 8 input pixels or null. Got {self.tile}.")
            if not 0 <= self.tile_overlap < self.tile:
                raise UserError(f"`tile_overlap` must be in [0, tile={self.tile}). Got {self.tile_overlap}.")
        if self.train_frames is not None:
            if self.train_frames < 1 or (self.stage == 1 and (self.train_frames - 1) % 4):
                raise UserError(f"`train_frames` must be 4k+1 (5, 9, ..., 33) in stage 1 and >= 1 in stage 2, or null. "
                                f"Got {self.train_frames} (stage {self.stage}).")
        self.train_size = [int(v) for v in self.train_size]
        if len(self.train_size) != 2 or any(v < 16 or v % 16 for v in self.train_size):
            raise UserError(f"`train_size` must be [H, W], multiples of 16. Got {self.train_size}.")
        for name in ("keyframe_dropout", "keyframe_jitter_p", "keyframe_blur_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"`{name}` must be in [0, 1]. Got {value}.")
        for name in ("keyframe_jitter", "keyframe_noise_std", "mse_weight", "dists_weight", "frame_diff_weight"):
            value = getattr(self, name)
            if value < 0:
                raise UserError(f"`{name}` must be >= 0. Got {value}.")
