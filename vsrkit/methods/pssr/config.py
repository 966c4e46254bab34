"""Options of the PS-SR method (speculative base/draft sampling with a frequency-domain update).

Every default is the released code's (``HiDream-ai/PS-SR`` @ 3ea208b: ``inference_step_1.py``,
``inference_step_2.py``, ``train_base.sh``, ``train_draft.sh``, ``Wan_SR/``) unless the field says
otherwise; the research report is ``shared/research/pssr.md`` (sections cited as §n). Where the
release and the paper disagree, the release is the default and the paper's choice is an option
(``fdu_alpha``, ``fdu_mode``); where the release contradicts itself, the field says which side
vsrkit takes (``k_select``, ``draft_condition``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from vsrkit.errors import UserError

# inference_step_1.py --prompt; the README asks for the same prompt in training and inference.
DEFAULT_PROMPT = "4K Ultra-clear, Sharp, Fine Details Restored, Temporal Consistency, Natural Colors"
# inference_step_1.py / trainers/utils.py --negative_prompt (the VSD real score's CFG, §5.3).
DEFAULT_NEGATIVE_PROMPT = (
    "painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, 3D render, unreal engine, "
    "blurring, dirty, messy, worst quality, low quality, frames, watermark, signature, jpeg artifacts, deformed, "
    "lowres, over-smooth"
)

_STAGES = ["base", "draft"]
_DRAFT_CONDITIONS = ["lq", "zeros"]
_FDU_MODES = ["final", "every_step"]
_UPSCALE_MODES = ["bicubic", "bilinear", "area", "nearest"]
_TRAIN_UPSCALE_MODES = ["random", *_UPSCALE_MODES]
_TAGGERS = ["auto", "ram", "none"]


@dataclass
class PSSRConfig:
    """PS-SR options.

    Args:
        base_weights: The released (or trained) ``base.safetensors``: peft LoRA (rank 32) on the
            Wan DiT's q/k/v/o/ffn.0/ffn.2 plus the full 32-channel ``patch_embedding`` and
            ``head.head`` (§5.5). Fused into ``backbone.path``'s Wan2.1-T2V-1.3B after its patch
            embedding is widened to 32 channels. Required when the backbone has weights; ``None``
            on a random backbone (tiny presets, speed benchmarks).
        draft_weights: The released (or trained) ``draft.safetensors``: the full state dict of the
            pruned DiT with its fusion layers, DiffSynth names (§5.5). ``None`` builds the draft
            from the base as training does (kept blocks, fusion ``[I | 0]``): only on a random
            backbone for inference; the draft stage of training always starts that way.
        timestep_base: Timestep of the one full base step (release ``--timestep_base 699``).
        timesteps_draft: Timesteps of the draft steps (release ``[599, 499, 399]``); each step
            moves the latent to the next one, the last to 0.
        bf16_timesteps: Round timesteps to bfloat16 before the sigma lookup and the timestep
            embedding, as the release does by building them as bf16 tensors (699 -> 700,
            sigma 0.69982; §3.2). ``False`` uses the nominal values (sigma 0.69885).
        k_select: Draft pruning: base block ``b`` is kept (and its input captured) when
            ``b % k_select == k_select - 1`` (§3.5). 1.5 keeps 10 of 30 blocks, the inference
            default; the release's training parser defaults to 1 (all 30 blocks), which its
            inference cannot load (§3.9 item 3): vsrkit uses 1.5 for both.
        draft_condition: What fills the draft's 16 condition channels: ``"lq"`` (the LR latent,
            the release's inference) or ``"zeros"`` (the release's training, §3.9 item 2). One
            value for training and inference, so a draft trained by vsrkit runs as it was
            trained; ``lq`` keeps the released ``draft.safetensors`` at parity.
        fdu_alpha: High-frequency strength of the frequency-domain update. 1.0 is the released
            script's default; 0.6 is the paper's and the README's (§3.9 item 1).
        fdu_cutoff: Butterworth low-pass cut-off in cycles per pixel (release ``--fc 0.20``).
        fdu_order: Butterworth order (release ``--order 2``).
        fdu_border: Pixels at each tile edge whose luma is the base's (release ``--border 2``).
        fdu_eps: Added to the weight denominator ``|h_s| + |h_c|`` (release ``--eps 1e-6``).
        fdu_mode: ``"final"`` (release: one update of the base output with the last draft's
            output) or ``"every_step"`` (the paper: after every draft step the running output is
            updated with that step's decoded prediction; two more VAE decodes per window).
        upscale_mode: Interpolation that brings the LR window to the output size before VAE
            encoding. The release takes input already at the output size and does not say how it
            was upsampled; its training resizes the degraded clip back with a random choice of
            area/bilinear/bicubic. Bicubic output is clamped to [-1, 1].
        prompt: The fixed prompt (release default; the README asks for the training prompt).
        tags: Extra comma-separated tags appended as ``"<prompt>, <tags>"`` (the release appends
            RAM/DAPE tags that way). ``None`` uses the prompt alone.
        tagger: ``"auto"``, ``"ram"`` or ``"none"``. ``ram`` tags each window from one frame with
            RAM + DAPE through SeeSR's ``ram`` package (not a vsrkit dependency), as the release
            does, and needs ``ram_weights`` and ``dape_weights``; each window then has its own
            prompt, so the umT5 encoder runs on every prompt-cache miss. ``none`` uses the prompt
            (and ``tags``) alone. ``auto`` is ``ram`` when both weight files are given, else
            ``none`` (said in the log).
        ram_weights: ``ram_swin_large_14m.pth`` (for the tagger).
        dape_weights: ``DAPE.pth`` (for the tagger).
        window: Temporal window in input frames, ``4k+1`` (release ``--window_t 33``); ``None``
            runs the clip whole.
        overlap: Frames shared by consecutive windows (release ``--overlap_t 16``).
        tile: Spatial window ``[H, W]`` in output pixels (release 720x1280, the size PS-SR was
            trained at); converted to input pixels at the run's scale. ``None`` runs whole frames.
        tile_overlap: Output pixels shared by neighbouring tiles (release 128).
        stage: Training stage: ``"base"`` (LoRA + widened patch embedding + head; latent MSE,
            VSD, pixel MSE, LPIPS; §5.2-5.3) or ``"draft"`` (full fine-tune of the pruned DiT
            with fusion layers, one optimizer step per draft timestep; §5.4).
        train_frames: Frames per training clip (release ``--num_frames 33``), ``4k+1``.
        train_size: HR training crop ``[H, W]`` (release 720x1280; multiples of 16).
        train_upscale_mode: How the degraded LR clip is brought back to the HR size in training:
            ``"random"`` (release: area, bilinear or bicubic with equal probability) or one mode.
        lora_rank: LoRA rank of the base and of the VSD fake score (release 32, alpha = rank).
        latent_weight: Weight of the latent MSE between the predicted and the HQ latent
            (release ``alpha_l2`` 1).
        pixel_weight: Weight of the pixel MSE on the decoded crop (release ``alpha_pixel_l2`` 1).
        lpips_weight: Weight of LPIPS-VGG on the decoded crop (release ``alpha_pixel_lpips`` 2).
            Needs the LPIPS weights (``lpips_weights``, ``vgg16_weights``) on real presets; 0
            trains without it. Tiny presets use an LPIPS network with random weights, like their
            backbone.
        vsd_weight: Weight of the VSD regulariser in the base stage (release ``alpha_reg`` 1; the
            base stage trains the fake score only when > 0).
        pixel_crop: Edge of the random latent crop decoded for the pixel losses (release 20
            latents = 160 pixels); clipped to the latent size.
        vsd_cfg: Classifier-free guidance of the frozen real score in VSD (release ``--cfg_scale
            5.0``; negative prompt ``negative_prompt``).
        negative_prompt: The VSD real score's negative prompt (release default).
        vsd_t_min: VSD timesteps below this are redrawn (release 20).
        vsd_t_max: VSD timesteps above this are redrawn (release 980).
        lpips_weights: File with the LPIPS v0.1 VGG linear layers (``lin{0..4}.model.1.weight``:
            the ``lpips`` package's ``weights/v0.1/vgg.pth`` or pyiqa's
            ``LPIPS_v0.1_vgg-a78928a0.pth``). ``None`` looks for pyiqa's file under
            ``$TORCH_HOME/hub/pyiqa/``, then for the installed ``lpips`` package's file.
        vgg16_weights: torchvision's ``vgg16-397923af.pth`` (the LPIPS backbone). ``None`` looks
            under ``$TORCH_HOME/hub/checkpoints/``.
        lr: Learning rate of every PS-SR optimizer (release 5e-5); ``None`` uses
            ``train.optimizer.lr``.
        betas: AdamW betas (release: torch defaults [0.9, 0.999]); ``None`` uses ``train.*``.
        weight_decay: AdamW weight decay (release: torch default 0.01); ``None`` uses ``train.*``.
        max_grad_norm: Gradient clipping of each optimizer (release 1.0); ``None`` uses ``train.*``.
        seed: Base seed of the training step's randomness (crops, VSD timesteps and noise, LR
            upsampling mode), combined with the step and the samples' dataset indices.
    """

    # --- weights (§5.5) ---
    base_weights: Optional[str] = None
    draft_weights: Optional[str] = None

    # --- speculative sampling (§3) ---
    timestep_base: int = 699
    timesteps_draft: List[int] = field(default_factory=lambda: [599, 499, 399])
    bf16_timesteps: bool = True
    k_select: float = 1.5
    draft_condition: str = "lq"

    # --- frequency-domain update (§4) ---
    fdu_alpha: float = 1.0
    fdu_cutoff: float = 0.20
    fdu_order: int = 2
    fdu_border: int = 2
    fdu_eps: float = 1e-6
    fdu_mode: str = "final"

    # --- input, prompt, windows (§3.1) ---
    upscale_mode: str = "bicubic"
    prompt: str = DEFAULT_PROMPT
    tags: Optional[str] = None
    tagger: str = "auto"
    ram_weights: Optional[str] = None
    dape_weights: Optional[str] = None
    window: Optional[int] = 33
    overlap: int = 16
    tile: Optional[List[int]] = field(default_factory=lambda: [720, 1280])
    tile_overlap: int = 128

    # --- training (§5) ---
    stage: str = "base"
    train_frames: int = 33
    train_size: List[int] = field(default_factory=lambda: [720, 1280])
    train_upscale_mode: str = "random"
    lora_rank: int = 32
    latent_weight: float = 1.0
    pixel_weight: float = 1.0
    lpips_weight: float = 2.0
    vsd_weight: float = 1.0
    pixel_crop: int = 20
    vsd_cfg: float = 5.0
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    vsd_t_min: float = 20.0
    vsd_t_max: float = 980.0
    lpips_weights: Optional[str] = None
    vgg16_weights: Optional[str] = None
    lr: Optional[float] = 5e-5
    betas: Optional[List[float]] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: Optional[float] = 0.01
    max_grad_norm: Optional[float] = 1.0
    seed: int = 0

    def __post_init__(self):
        for name, choices in (("draft_condition", _DRAFT_CONDITIONS), ("fdu_mode", _FDU_MODES),
                              ("upscale_mode", _UPSCALE_MODES), ("train_upscale_mode", _TRAIN_UPSCALE_MODES),
                              ("tagger", _TAGGERS), ("stage", _STAGES)):
            value = getattr(self, name)
            if value not in choices:
                raise UserError(f"`method.{name}` must be one of {choices}. Got {value!r}.")
        for name in ("base_weights", "draft_weights", "ram_weights", "dape_weights", "lpips_weights",
                     "vgg16_weights"):
            value = getattr(self, name)
            if value is not None and not Path(value).expanduser().is_file():
                raise UserError(f"`method.{name}` names `{value}`, which is not a file. Give the path of the "
                                f"local weights file (vsrkit never downloads).")
        given = (self.ram_weights is not None) + (self.dape_weights is not None)
        if (self.tagger == "ram" and given < 2) or (self.tagger == "auto" and given == 1):
            raise UserError("the RAM/DAPE tagger needs both `method.ram_weights=<ram_swin_large_14m.pth>` and "
                            "`method.dape_weights=<DAPE.pth>`; or use method.tagger=none (the fixed prompt, "
                            "optionally with method.tags).")
        self.timesteps_draft = [int(t) for t in self.timesteps_draft]
        steps = [self.timestep_base, *self.timesteps_draft]
        if not self.timesteps_draft:
            raise UserError("`method.timesteps_draft` must list at least one timestep (release [599, 499, 399]).")
        if any(not 0 < t < 1000 for t in steps) or any(a <= b for a, b in zip(steps, steps[1:])):
            raise UserError(f"`method.timestep_base` and `method.timesteps_draft` must decrease within (0, 1000). "
                            f"Got {self.timestep_base} then {self.timesteps_draft}.")
        if not 1.0 <= self.k_select <= 30.0 or round(self.k_select * 2) != self.k_select * 2:
            raise UserError(f"`method.k_select` must be a multiple of 0.5 in [1, 30] (1.5 keeps 10 of 30 blocks). "
                            f"Got {self.k_select}.")
        if self.fdu_cutoff <= 0 or self.fdu_order < 1 or self.fdu_border < 0 or self.fdu_eps <= 0:
            raise UserError(f"FDU needs `fdu_cutoff` > 0, `fdu_order` >= 1, `fdu_border` >= 0 and `fdu_eps` > 0. "
                            f"Got {self.fdu_cutoff}, {self.fdu_order}, {self.fdu_border}, {self.fdu_eps}.")
        if self.fdu_alpha < 0:
            raise UserError(f"`method.fdu_alpha` must be >= 0 (1.0 release, 0.6 paper). Got {self.fdu_alpha}.")
        if self.window is not None:
            if self.window < 1 or (self.window - 1) % 4:
                raise UserError(f"`method.window` must be 4k+1 (5, 9, ..., 33) or null. Got {self.window}.")
            if not 0 <= self.overlap < self.window:
                raise UserError(f"`method.overlap` must be in [0, window={self.window}). Got {self.overlap}.")
        if self.tile is not None:
            self.tile = [int(v) for v in self.tile]
            if len(self.tile) != 2 or any(v < 16 or v % 16 for v in self.tile):
                raise UserError(f"`method.tile` must be [H, W] in output pixels, multiples of 16, or null. "
                                f"Got {self.tile}.")
            if not 0 <= self.tile_overlap < min(self.tile):
                raise UserError(f"`method.tile_overlap` must be in [0, {min(self.tile)}). Got {self.tile_overlap}.")
        if self.train_frames < 1 or (self.train_frames - 1) % 4:
            raise UserError(f"`method.train_frames` must be 4k+1 (5, 9, ..., 33). Got {self.train_frames}.")
        self.train_size = [int(v) for v in self.train_size]
        if len(self.train_size) != 2 or any(v < 16 or v % 16 for v in self.train_size):
            raise UserError(f"`method.train_size` must be [H, W], multiples of 16. Got {self.train_size}.")
        if self.lora_rank < 1:
            raise UserError(f"`method.lora_rank` must be >= 1. Got {self.lora_rank}.")
        if self.pixel_crop < 1:
            raise UserError(f"`method.pixel_crop` must be >= 1 latent pixel. Got {self.pixel_crop}.")
        for name in ("latent_weight", "pixel_weight", "lpips_weight", "vsd_weight", "vsd_cfg"):
            if getattr(self, name) < 0:
                raise UserError(f"`method.{name}` must be >= 0. Got {getattr(self, name)}.")
        if not 0 <= self.vsd_t_min < self.vsd_t_max <= 1000:
            raise UserError(f"`method.vsd_t_min` < `method.vsd_t_max` within [0, 1000]. "
                            f"Got {self.vsd_t_min}, {self.vsd_t_max}.")
        if self.betas is not None:
            self.betas = [float(b) for b in self.betas]
            if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
                raise UserError(f"`method.betas` must be two numbers in [0, 1) or null. Got {self.betas}.")
        for name in ("lr", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if value is not None and value < 0 or (name == "lr" and value is not None and value == 0):
                raise UserError(f"`method.{name}` must be {'> 0' if name == 'lr' else '>= 0'} or null. Got {value}.")
