"""Options of the TurboVSR method (LTX-Video upscaler, factorized conditioning, non-uniform shortcut model).

There is no released TurboVSR code or checkpoint. Each field says where its default comes from:
**paper** (Wang et al., "TurboVSR: Fantastic Video Upscalers and Where to Find Them", ICCV 2025,
arXiv 2506.23618; seed ``shared/seeds/turbovsr-paper.txt``), **shortcut-models**
(``kvfrans/shortcut-models`` @6010043, the reference code of the shortcut model the paper adopts),
**ControlNeXt** (``dvlab-research/ControlNeXt`` @ab4b3ac, the cross-normalisation the paper adopts), or
**reconstruction** (a value the paper does not give; our choice, argued in
``shared/research/turbovsr_and_speed.md`` §A.3-A.6 and ``docs/methods/turbovsr.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from vsrkit.errors import UserError

_STEP_SELECTIONS = ["nearest", "exact"]
_COND_MERGES = ["sqrt2", "none"]
_UPSCALE_MODES = ["bicubic", "bilinear", "nearest", "area"]
_SEGMENT_CONDITIONS = ["image", "previous"]
_STEP_EMBEDDING_INITS = ["zero", "copy"]
_COND_NOISE_SCHEDULES = ["linear", "scaled_linear"]
_POSTERIORS = ["mode", "sample"]


def _is_8k1(value: int) -> bool:
    return value >= 1 and (value - 1) % 8 == 0


@dataclass
class TurboVSRConfig:
    """TurboVSR options.

    Args:
        steps: Euler steps of each denoising pass (paper: 4; any count works, the shortcut model
            is conditioned on the step size).
        shift: SD3 time shift ``sigma = s tau / (1 + (s - 1) tau)`` of the timesteps, in training and
            inference alike (paper: "non-uniform", shifted towards noise for long token sequences;
            the value is a reconstruction: SD3's default 3.0). Training and inference must use the
            same value.
        finest_steps: ``M``: step sizes are multiples of ``1 / M`` (shortcut-models: 128).
        base_steps: The base step sizes ``b`` in units of ``1 / M``; each spans the step sizes
            ``b * 2^k / M <= 1`` (paper: "multiple base step sizes"; the set is a reconstruction:
            1, 3, 5, 7 fill the gaps between 1/2 and 1 that powers of two leave).
        step_selection: ``nearest`` conditions each step on the trained step size nearest to its
            actual length on the shifted grid (paper: nearest-neighbour step selection);
            ``exact`` conditions on the actual length.
        upscale_mode: Interpolation that brings the LR frames to the output size before VAE
            encoding (reconstruction: bicubic, ``align_corners=False``).
        posterior: VAE latents of the LR and HR frames: the posterior ``mode`` (deterministic) or a
            seeded ``sample`` (reconstruction).
        prompt: Text prompt of every clip (the paper captions the LR input with Res-Captioner,
            which is not available; reconstruction: one fixed prompt, cached once).
        cond_scale: ``lambda`` of the cross-normalised condition added to the hidden state
            (ControlNeXt: 1.0 for dense controls such as super-resolution).
        cond_merge: ``sqrt2`` multiplies ``hidden + lambda * condition`` by ``1/sqrt(2)`` so two
            terms of equal variance keep unit variance (paper: "scale by a factor of [lost] to
            maintain the variance"; reconstruction), ``none`` adds without rescaling (ControlNeXt).
        cond_eps: Added to the condition's standard deviation (ControlNeXt SD1.5/SDXL: 1e-12).
        cond_block: Index of the transformer block after which the condition is added (paper:
            the first block, 0).
        window: Frames the engine hands over at once (``8k+1``); memory is bounded by it. Longer
            clips are cut into windows cross-faded by the engine. ``None``: the whole clip.
        overlap: Frames shared by consecutive engine windows (cross-faded).
        segment: Frames per temporal segment inside a window (``8k+1``; paper trains on 49-frame
            clips). Segments are denoised one after the other and merged in latent space.
        segment_overlap: Frames shared by consecutive segments (``8k+1`` and at least 9 = 1 + 8,
            paper). The first-frame latent of every later segment is dropped when merging and the
            shared video latents are cross-faded.
        segment_condition: The clean first frame a later segment is conditioned on: ``image``
            super-resolves it as an image, as the first segment's (the training setup); ``previous``
            decodes that frame from the previous segment's result and re-encodes it
            (reconstruction: both; ``image`` keeps segments independent).
        tile: Spatial tile edge in output pixels (multiple of 32) for latent tiles denoised
            separately at each step and blended with Gaussian weights (paper: MultiDiffusion tiles
            "consistent with the fixed resolution of the model"; reconstruction: 2048 px, so
            1080p runs in one tile and 4K in 2 x 2). ``None``: no tiles.
        tile_overlap: Output pixels shared by neighbouring tiles (multiple of 32).
        tile_sigma: Standard deviation of the Gaussian tile weight as a fraction of the tile edge
            (reconstruction; Mixture-of-Diffusers uses 0.1).
        decode_frames: Frames decoded at once (``8k+1``); longer segments are decoded in chunks
            cross-faded over ``decode_overlap`` frames so memory stays bounded (paper: "decoding ...
            in segments").
        decode_overlap: Frames shared by consecutive decode chunks (multiple of 8, > 0).
        weights: TurboVSR weights file (``turbovsr.safetensors`` from ``vsrkit train``'s export) or
            a folder holding it. ``None``: ``<backbone.path>/turbovsr.safetensors`` when present,
            else a deterministic random init of the condition projection and step embedding.
        train_frames: Frames per training clip of the video task (paper: 49, ``8k+1``).
        train_size: HR training crop ``[H, W]`` (multiples of 32; paper: 1024 px).
        image_task_ratio: Fraction of training steps that train image SR (the first frame of the
            clip as a one-frame video); the others train video SR conditioned on the HR first frame
            (paper: alternating batches, 0.5). Clips of one frame always train image SR.
        sc_fraction: Expected fraction of each batch trained on self-consistency (shortcut)
            targets, the rest on flow matching; a batch of ``B`` gets ``floor(B f + u)``, ``u`` uniform
            (reconstruction: 0.25; shortcut-models' code uses 1/8; the paper alternates batches).
        target_clip: Shortcut targets are clipped to ``[-c, c]`` (shortcut-models: 4).
        cond_dropout: Probability that a training sample drops the LR condition (and, for video,
            the first-frame condition) and trains plain text-to-image/video flow matching (paper:
            "randomly dropping the LR condition"; the rate is a reconstruction, shortcut-models'
            label dropout 0.1).
        cond_noise_max_step: The LR latent gets DDPM noise of a random step in ``[0, this]`` during
            training (paper: 0-300).
        cond_noise_schedule: DDPM beta schedule of that noise: ``linear`` (Ho et al.: 1e-4 to
            0.02 over 1000 steps) or ``scaled_linear`` (Stable Diffusion: 0.00085 to 0.012)
            (reconstruction: ``linear``).
        freeze_ffn: Keep the feed-forward layers of every transformer block frozen (paper).
        step_embedding_init: Initial weights of the step-size embedding: ``zero`` (last layer zero,
            so a pretrained LTX is unchanged at the start) or ``copy`` (the timestep embedder's
            weights) (reconstruction).
        seed: Base seed of the training step's random draws, combined with the step and the
            samples' dataset indices (a resumed run draws the same numbers).
    """

    # --- sampling (paper §3.4, reconstruction where noted) ---
    steps: int = 4
    shift: float = 3.0
    finest_steps: int = 128
    base_steps: List[int] = field(default_factory=lambda: [1, 3, 5, 7])
    step_selection: str = "nearest"

    # --- conditioning (paper §3.1 / ControlNeXt) ---
    upscale_mode: str = "bicubic"
    posterior: str = "mode"
    prompt: str = ""
    cond_scale: float = 1.0
    cond_merge: str = "sqrt2"
    cond_eps: float = 1e-12
    cond_block: int = 0

    # --- arbitrary length and size (paper §3.5) ---
    window: Optional[int] = 121
    overlap: int = 9
    segment: int = 49
    segment_overlap: int = 9
    segment_condition: str = "image"
    tile: Optional[int] = 2048
    tile_overlap: int = 256
    tile_sigma: float = 0.25
    decode_frames: int = 33
    decode_overlap: int = 8

    # --- weights ---
    weights: Optional[str] = None

    # --- training (paper §4.1 and supplementary §6) ---
    train_frames: int = 49
    train_size: List[int] = field(default_factory=lambda: [1024, 1024])
    image_task_ratio: float = 0.5
    sc_fraction: float = 0.25
    target_clip: float = 4.0
    cond_dropout: float = 0.1
    cond_noise_max_step: int = 300
    cond_noise_schedule: str = "linear"
    freeze_ffn: bool = True
    step_embedding_init: str = "zero"
    seed: int = 0

    def __post_init__(self):
        for name, choices in (
            ("step_selection", _STEP_SELECTIONS),
            ("cond_merge", _COND_MERGES),
            ("upscale_mode", _UPSCALE_MODES),
            ("posterior", _POSTERIORS),
            ("segment_condition", _SEGMENT_CONDITIONS),
            ("step_embedding_init", _STEP_EMBEDDING_INITS),
            ("cond_noise_schedule", _COND_NOISE_SCHEDULES),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise UserError(f"`method.{name}` must be one of {choices}. Got {value!r}.")
        if self.steps < 1:
            raise UserError(f"`method.steps` must be >= 1. Got {self.steps}.")
        if self.shift <= 0:
            raise UserError(f"`method.shift` must be > 0 (1 = no shift). Got {self.shift}.")
        if self.finest_steps < 1:
            raise UserError(f"`method.finest_steps` must be >= 1. Got {self.finest_steps}.")
        self.base_steps = [int(b) for b in self.base_steps]
        if not self.base_steps or any(not 1 <= b <= self.finest_steps for b in self.base_steps):
            raise UserError(f"`method.base_steps` must be a non-empty list of integers in [1, finest_steps="
                            f"{self.finest_steps}]. Got {self.base_steps}.")
        if self.cond_scale < 0:
            raise UserError(f"`method.cond_scale` must be >= 0. Got {self.cond_scale}.")
        if self.cond_eps < 0:
            raise UserError(f"`method.cond_eps` must be >= 0. Got {self.cond_eps}.")
        if self.cond_block < 0:
            raise UserError(f"`method.cond_block` must be >= 0. Got {self.cond_block}.")
        if self.window is not None:
            if not _is_8k1(self.window):
                raise UserError(f"`method.window` must be 8k+1 (9, 17, ..., 121) or null. Got {self.window}.")
            if not 0 <= self.overlap < self.window:
                raise UserError(f"`method.overlap` must be in [0, window={self.window}). Got {self.overlap}.")
        if not _is_8k1(self.segment) or self.segment < 17:
            raise UserError(f"`method.segment` must be 8k+1 and >= 17 (17, 25, ..., 49). Got {self.segment}.")
        if not _is_8k1(self.segment_overlap) or self.segment_overlap < 9 or self.segment_overlap >= self.segment:
            raise UserError(f"`method.segment_overlap` must be 8k+1, >= 9 (one first frame + 8) and < segment="
                            f"{self.segment}. Got {self.segment_overlap}.")
        if self.tile is not None:
            if self.tile < 64 or self.tile % 32:
                raise UserError(f"`method.tile` must be a multiple of 32 and >= 64 output pixels, or null. "
                                f"Got {self.tile}.")
            if self.tile_overlap % 32 or not 0 <= self.tile_overlap < self.tile:
                raise UserError(f"`method.tile_overlap` must be a multiple of 32 in [0, tile={self.tile}). "
                                f"Got {self.tile_overlap}.")
        if self.tile_sigma <= 0:
            raise UserError(f"`method.tile_sigma` must be > 0. Got {self.tile_sigma}.")
        if not _is_8k1(self.decode_frames) or self.decode_frames < 17:
            raise UserError(f"`method.decode_frames` must be 8k+1 and >= 17. Got {self.decode_frames}.")
        if self.decode_overlap % 8 or not 0 < self.decode_overlap < self.decode_frames - 1:
            raise UserError(f"`method.decode_overlap` must be a positive multiple of 8 below decode_frames - 1 = "
                            f"{self.decode_frames - 1}. Got {self.decode_overlap}.")
        if not _is_8k1(self.train_frames):
            raise UserError(f"`method.train_frames` must be 8k+1 (1, 9, 17, ..., 49). Got {self.train_frames}.")
        self.train_size = [int(v) for v in self.train_size]
        if len(self.train_size) != 2 or any(v < 32 or v % 32 for v in self.train_size):
            raise UserError(f"`method.train_size` must be [H, W], multiples of 32. Got {self.train_size}.")
        for name in ("image_task_ratio", "sc_fraction", "cond_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"`method.{name}` must be in [0, 1]. Got {value}.")
        if self.target_clip <= 0:
            raise UserError(f"`method.target_clip` must be > 0. Got {self.target_clip}.")
        if not 0 <= self.cond_noise_max_step < 1000:
            raise UserError(f"`method.cond_noise_max_step` must be in [0, 999]. Got {self.cond_noise_max_step}.")
