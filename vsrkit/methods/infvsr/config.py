"""Options of the InfVSR method (causal one-step streaming video SR on Wan2.1-T2V-1.3B).

Inference defaults are the released code's (``Kai-Liu001/InfVSR`` @ a5b9342; research report
``shared/research/infvsr.md``, sections cited as §n). No training code is public: the training
defaults are reconstructions (§3), marked as such, and every one of them is an option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from vsrkit.errors import UserError

# The two-stage curriculum (§3.4, reconstructed): stage 1 adapts the model on short clips at HR
# crops with pixel losses; stage 2 trains on longer multi-chunk clips at a lower resolution and
# adds cross-chunk distribution matching. Fields left at None take these values.
STAGE_PRESETS = {
    1: {"train_frames": 21, "train_size": [256, 256], "dmd_weight": 0.0},
    2: {"train_frames": 45, "train_size": [128, 128], "dmd_weight": 1.0},
}


@dataclass
class InfVSRConfig:
    """InfVSR options.

    Args:
        timestep: Timestep of the single step (release 399; the LR latent is fed as ``x_t``).
        bf16_timestep: Round the timestep to bfloat16 as the release does (it builds it as a bf16
            tensor): 399 -> 400 for the time embedding and the sigma lookup (grid index 882,
            sigma 0.400815), and the update ``x0 = z - sigma * v`` uses bf16(sigma) = 0.400391 as
            the release's bf16 multiply on CUDA does. ``false``: t = 399, sigma 0.398533 (the paper's t).
        cache_chunks: Previous chunks whose keys/values each chunk attends to (release 1, no sink).
            0 processes chunks independently (the paper's "Chunking" ablation).
        scene_detection: Cut the clip into scenes (PySceneDetect ContentDetector rule, §errata):
            a cut resets caches and RoPE positions and recomputes the reference frame. ``false``
            runs one scene with one reference (release ``--no_scene_detection``).
        scene_threshold: Content score at or above which a frame starts a new scene (release 27).
        reference_threshold: Content score between the reference frame and a chunk's first frame
            at or above which the reference is recomputed without a cut (release 27).
        min_scene_len: Frames a scene lasts at least (PySceneDetect's default 15); cut decisions wait
            this many frames, and a reference is kept at least this long.
        vae_tile_threshold: Tile the streaming VAE when the padded output height is above this many
            pixels. vsrkit 1088: 1080p streams untiled (on an H100 2.2x faster and 1.8x smaller
            than tiled: 32 against 58 GiB). The release's 1024 tiles 1080p (its tile seams); vsrkit
            keeps every tile's causal caches on the GPU, so tiles do not save memory here.
        vae_tile_size: VAE tile edge in output pixels (release 128 latent px = 1024 px).
        vae_tile_overlap: Output pixels shared by neighbouring VAE tiles (release 18 latent px = 144 px).
        visual_encoder: Registered visual encoder (``vsrkit ls``) that turns the reference frame into
            the 512-d tokens replacing text; ``None`` picks ``ram-swin-l-dape`` (the release's), or
            ``swin-tiny-random`` on a tiny backbone preset.
        visual_encoder_path: The encoder's weights (``ram_swin_large_14m.pth``); ``None`` = random.
        visual_adapter_path: Its adapter (``DAPE.pth``, merged into RAM's attention); ``None`` = none.
        stage: Training stage of the curriculum (1 or 2); picks the defaults of ``train_frames``,
            ``train_size`` and ``dmd_weight`` (``STAGE_PRESETS``).
        train_frames: Frames per training clip, ``9 + 12k`` (whole chunks); ``None``: stage 1 21,
            stage 2 45.
        train_size: HR training crop ``[H, W]`` (multiples of 16); ``None``: stage 1 [256, 256],
            stage 2 [128, 128] (stage 2 "uses low-resolution videos", §3.1).
        pixel_crop: Edge in latent pixels of the random crop decoded for the pixel losses
            (patch-wise supervision: only this window goes through the frozen decoder; 32 = 256 px).
        mse_weight: Weight of the pixel MSE on the decoded crop (in [0, 1] units).
        dists_weight: Weight of DISTS on the decoded crop frames (pyiqa with local weights). The
            paper's perceptual term is unpublished; DOVE (same lab) uses 1.0. 0 trains without it.
        frame_diff_weight: Weight of the local temporal loss: L1 between adjacent-frame differences
            of prediction and ground truth (DOVE's form).
        dmd_weight: Weight of the cross-chunk distribution-matching loss on the generator; ``None``:
            stage 1 0, stage 2 1.0. The real score is the frozen Wan2.1-T2V-1.3B, the fake score a
            trainable copy of it, both bidirectional over all chunks of the clip.
        dmd_min_step: Lower end of the matching noise level before the shift, as a fraction of 1000
            (Self-Forcing's 0.02): ``s ~ U[min, max)``, ``sigma = 5s / (1 + 4s)``.
        dmd_max_step: Upper end (0.98).
        dmd_guidance: Classifier-free guidance of the real score between ``dmd_prompt`` and
            ``dmd_negative_prompt`` (1 = one conditional pass).
        dmd_prompt: Prompt of the real and fake scores (umT5 embedding, cached on disk).
        dmd_negative_prompt: Negative prompt for ``dmd_guidance > 1``.
        generator_every: With DMD on, the generator steps once per this many fake-score steps
            (DMD2 / Self-Forcing: 5).
        fake_score_lr: Learning rate of the fake score; ``None`` = ``train.optimizer.lr``.
        base_path: Wan2.1-T2V-1.3B transformer weights (file or folder, original or diffusers
            names): the real score, the fake score's start and, when the backbone gives no
            transformer weights, the generator's start (all but the new 512-d prompt projection).
            ``None`` on a tiny preset = its deterministic init.
        seed: Seed of the training step's random draws (crops, DMD noise), mixed with the step
            and the samples' indices.
    """

    # --- inference (§1.3-§2.4) ---
    timestep: int = 399
    bf16_timestep: bool = True
    cache_chunks: int = 1
    scene_detection: bool = True
    scene_threshold: float = 27.0
    reference_threshold: float = 27.0
    min_scene_len: int = 15
    vae_tile_threshold: int = 1088
    vae_tile_size: int = 1024
    vae_tile_overlap: int = 144
    visual_encoder: Optional[str] = None
    visual_encoder_path: Optional[str] = None
    visual_adapter_path: Optional[str] = None

    # --- training (§3, reconstructed) ---
    stage: int = 1
    train_frames: Optional[int] = None
    train_size: Optional[List[int]] = None
    pixel_crop: int = 32
    mse_weight: float = 1.0
    dists_weight: float = 0.0
    frame_diff_weight: float = 1.0
    dmd_weight: Optional[float] = None
    dmd_min_step: float = 0.02
    dmd_max_step: float = 0.98
    dmd_guidance: float = 1.0
    dmd_prompt: str = ""
    dmd_negative_prompt: str = ""
    generator_every: int = 5
    fake_score_lr: Optional[float] = None
    base_path: Optional[str] = None
    seed: int = 0

    def __post_init__(self):
        if self.stage not in STAGE_PRESETS:
            raise UserError(f"`stage` must be one of {sorted(STAGE_PRESETS)}. Got {self.stage}.")
        for name, value in STAGE_PRESETS[self.stage].items():
            if getattr(self, name) is None:
                setattr(self, name, list(value) if isinstance(value, list) else value)
        if not 0 <= self.timestep < 1000:
            raise UserError(f"`timestep` must be in [0, 999]. Got {self.timestep}.")
        if self.cache_chunks < 0:
            raise UserError(f"`cache_chunks` must be >= 0. Got {self.cache_chunks}.")
        for name in ("scene_threshold", "reference_threshold"):
            if getattr(self, name) <= 0:
                raise UserError(f"`{name}` must be > 0. Got {getattr(self, name)}.")
        if self.min_scene_len < 0:
            raise UserError(f"`min_scene_len` must be >= 0. Got {self.min_scene_len}.")
        if self.vae_tile_size < 64 or self.vae_tile_size % 8:
            raise UserError(f"`vae_tile_size` must be a multiple of 8, >= 64. Got {self.vae_tile_size}.")
        if self.vae_tile_overlap % 8 or not 0 <= self.vae_tile_overlap < self.vae_tile_size:
            raise UserError(f"`vae_tile_overlap` must be a multiple of 8 in [0, vae_tile_size). "
                            f"Got {self.vae_tile_overlap}.")
        if self.train_frames < 9 or (self.train_frames - 9) % 12:
            raise UserError(f"`train_frames` must be 9 + 12k (9, 21, 33, 45, ...): whole chunks. "
                            f"Got {self.train_frames}.")
        self.train_size = [int(v) for v in self.train_size]
        if len(self.train_size) != 2 or any(v < 16 or v % 16 for v in self.train_size):
            raise UserError(f"`train_size` must be [H, W], multiples of 16. Got {self.train_size}.")
        if self.pixel_crop < 1:
            raise UserError(f"`pixel_crop` must be >= 1 latent pixel. Got {self.pixel_crop}.")
        for name in ("mse_weight", "dists_weight", "frame_diff_weight", "dmd_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"`{name}` must be >= 0. Got {getattr(self, name)}.")
        if not 0.0 <= self.dmd_min_step < self.dmd_max_step <= 1.0:
            raise UserError(f"`dmd_min_step` and `dmd_max_step` must satisfy 0 <= min < max <= 1. "
                            f"Got {self.dmd_min_step}, {self.dmd_max_step}.")
        if self.dmd_guidance < 1.0:
            raise UserError(f"`dmd_guidance` must be >= 1. Got {self.dmd_guidance}.")
        if self.generator_every < 1:
            raise UserError(f"`generator_every` must be >= 1. Got {self.generator_every}.")
