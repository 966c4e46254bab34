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
_X0_DTYPES = ["model", "fp32"]
_VAE_TILES = ["backbone", "release"]


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
            ``"single"`` (release training: a one-frame clip, 4x less encoding work). The causal
            CogVideoX VAE gives both the same latent up to float rounding.
        x0_dtype: Arithmetic of ``x0 = sqrt(abar) z - sqrt(1 - abar) v`` (and of the guidance
            combination). ``"model"`` (release): the transformer's compute dtype, as the release's
            ``scheduler.get_velocity`` on the bf16 model output: ``abar`` rounded to bf16, then
            ``sqrt`` in bf16, i.e. 0.625 / 0.78125 at t = 399, every product rounded to bf16; the
            released weights were trained with the same. ``"fp32"``: float32 with float64
            coefficients (0.62733 / 0.77875).
        window: Temporal window in input frames, ``8k+1``. Clips up to this length run whole, in
            one transformer pass, as the release runs every clip (``--chunk_len 0``): one keyframe
            steers every frame. Longer clips are cut into windows of this length. 81 is
            CogVideoX1.5's training length (``sample_frames``); ``None`` runs every clip whole
            (memory grows with the clip).
        overlap: Frames shared by consecutive windows (blended by the engine). ``window -
            overlap`` must be a multiple of 4 so keyframe latent slots stay aligned (§4.6); a
            multiple of 8 also keeps padded-length keyframe positions in the last window.
        carry_keyframes: With windows, give each window after a keyframe-conditioned one the
            previous window's output at its first frame (in the overlap) as a keyframe at slot 0,
            so keyframe content reaches every later window (the release has no windows by default;
            vsrkit's 33-frame windows used to leave later windows unconditioned). Real keyframes in
            that slot win. Windows then run strictly in order. No effect without keyframes or
            windows.
        vae_tiles: VAE tiling. ``"backbone"``: the backbone preset's settings (768-pixel tiles,
            64-pixel overlap on ``cogvideox1.5-5b-i2v``: about 1.3x faster end to end, but about
            twice the peak memory and other seams). ``"release"``: diffusers' default tiles
            (240 x 360 pixels, overlap 1/6 and 1/5 of a tile) and VAE slicing, as every official
            release command (``--is_vae_st``) and the release's training run; replaces
            ``backbone.vae_tiling`` / ``vae_tile_size`` / ``vae_tile_overlap`` / ``vae_slicing``.
            Real-size presets only: the tiny preset's default tiles break diffusers' tiled encode
            (refused before loading).
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
        lpips_weight: Stage 2 weight of the per-frame LPIPS loss (pyiqa ``lpips``, AlexNet; the
            release's ``--lpips_weight``, default 0). The release uses one perceptual loss: at most
            one of ``dists_weight`` and ``lpips_weight`` may be > 0.
        edge_aware: Stage 2: the perceptual loss becomes ``(P(pred, gt) + P(E(pred), E(gt))) / 2``
            with ``E`` the Sobel gradient magnitude of the grey image (the release's
            ``--ea_dists_weight`` / ``--ea_lpips_weight`` with ``EdgeDetectionModel``).
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
    x0_dtype: str = "model"
    window: Optional[int] = 81
    overlap: int = 9
    carry_keyframes: bool = True
    tile: Optional[int] = None
    tile_overlap: int = 16
    vae_tiles: str = "backbone"

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
    lpips_weight: float = 0.0
    edge_aware: bool = False
    frame_diff_weight: float = 1.0
    s2_decode: str = "per_frame"
    seed: int = 0

    def __post_init__(self):
        for name, choices in (
            ("posterior", _POSTERIORS),
            ("upscale_mode", _UPSCALE_MODES),
            ("keyframe_encoding", _KEYFRAME_ENCODINGS),
            ("s2_decode", _S2_DECODES),
            ("x0_dtype", _X0_DTYPES),
            ("vae_tiles", _VAE_TILES),
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
        for name in ("keyframe_jitter", "keyframe_noise_std", "mse_weight", "dists_weight", "lpips_weight",
                     "frame_diff_weight"):
            value = getattr(self, name)
            if value < 0:
                raise UserError(f"`{name}` must be >= 0. Got {value}.")
        if self.dists_weight > 0 and self.lpips_weight > 0:
            raise UserError(f"`dists_weight` ({self.dists_weight}) and `lpips_weight` ({self.lpips_weight}) are "
                            f"both > 0; stage 2 uses one perceptual loss, as the release. Set one of them to 0.")
