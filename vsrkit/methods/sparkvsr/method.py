"""SparkVSR: keyframe-conditioned one-step video super-resolution on CogVideoX1.5-5B-I2V.

One window (report ``shared/research/sparkvsr.md`` §3-§5; release
``SV:sparkvsr_inference_script.py`` ``process_video_ref_i2v``):

1. the LR window is upsampled to the output size (bilinear, ``align_corners=False``) and
   VAE-encoded: ``z_LR = posterior * 0.7``, ``(B, 16, T, h, w)``;
2. each HR keyframe ``k`` (window-local pixel index) is VAE-encoded the same way and written to
   latent slot ``k // 4`` of an otherwise all-zero ``z_KF``;
3. ``[z_LR ‖ z_KF]`` (32 channels) gets one copy of its first latent frame prepended (CogVideoX1.5
   patches time by 2 and ``T`` is odd), then one transformer pass at ``t = 399`` with the cached
   empty-prompt embedding and ``ofs = 2.0`` predicts ``v``;
4. keyframe guidance ``s != 1`` batches [zero keyframes, keyframes] and uses
   ``v = v_u + s (v_c - v_u)``;
5. ``x0 = sqrt(abar_t) z_t - sqrt(1 - abar_t) v`` (``abar`` from the checkpoint's scheduler
   config; computed in the model dtype as the release's ``scheduler.get_velocity``, so 0.625 /
   0.78125 at t = 399 in bf16, or 0.62733 / 0.77875 with ``x0_dtype=fp32``), the prepended frame is
   dropped, and the VAE decodes.

Training (§8): stage 1 regresses ``x0`` on the HR latent (latent MSE at t = 399, 1..9 augmented
ground-truth keyframes, 10% keyframe dropout); stage 2 decodes ``x0`` and trains on pixel MSE +
DISTS + frame-difference L1, with images keyframe-free and videos conditioned on frame 0.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
import torch.nn.functional as F

from vsrkit.backbones.loading import write_pipeline_folder
from vsrkit.errors import UserError, WeightsError
from vsrkit.methods.protocol import WindowContext, WindowSpec
from vsrkit.methods.shared import sample_seed, upsample_frames
from vsrkit.methods.sparkvsr.config import SparkVSRConfig
from vsrkit.metrics.pyiqa_adapter import build_perceptual_loss

logger = logging.getLogger(__name__)

# Pixel frames per latent frame (the CogVideoX VAE compresses time 4x). Keyframe k goes to latent
# slot k // 4 in inference and training alike (SV:sparkvsr_inference_script.py#L430-L455,
# SV:finetune/models/SparkVSR/sparkvsr_s1_ref_trainer.py `_prepare_ref_latent_i2v`).
FRAMES_PER_LATENT = 4
# Latent channels of the CogVideoX VAE; the I2V transformer takes twice as many (LR ‖ keyframes).
LATENT_CHANNELS = 16
# Output pixels per transformer token edge: VAE 8x spatial compression times patch size 2.
HR_MULTIPLE = 16


# --------------------------------------------------------------------------------------------
# Pure tensor functions (no model)
# --------------------------------------------------------------------------------------------


def keyframe_slot(index: int) -> int:
    """Latent frame that holds the keyframe at window-local pixel frame ``index`` (``index // 4``)."""
    return int(index) // FRAMES_PER_LATENT


def place_keyframe_latents(latents: dict, num_latent_frames: int, like: torch.Tensor) -> torch.Tensor:
    """Build the keyframe channel group: each keyframe latent at its slot, zeros elsewhere.

    Args:
        latents: ``{window-local pixel index: (C, h, w) or (B, C, h, w) latent}``.
        num_latent_frames: ``T`` of the LR latent.
        like: ``(B, C, T, h, w)`` tensor whose shape, dtype and device the result takes.

    Returns:
        ``(B, C, T, h, w)``: zeros except ``[:, :, index // 4] = latent``. Keyframes whose slot is
        outside ``[0, T)`` are skipped (they belong to another window).

    Raises:
        UserError: Two keyframes fall into the same latent slot (they are closer than 4 frames).
    """
    out = torch.zeros_like(like)
    taken: dict[int, int] = {}
    for index in sorted(latents):
        slot = keyframe_slot(index)
        if not 0 <= slot < num_latent_frames:
            continue
        if slot in taken:
            raise UserError(f"keyframes {taken[slot]} and {index} fall into the same latent slot {slot} "
                            f"(slot = frame // 4); keyframes must be at least 4 frames apart.")
        taken[slot] = index
        out[:, :, slot] = latents[index].to(out.dtype)
    return out


def combine_guidance(v_uncond: torch.Tensor, v_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Keyframe ("reference-free") guidance in v space: ``v_u + s (v_c - v_u)`` (report §5), in
    the inputs' dtype (the release combines the bf16 model outputs)."""
    return v_uncond + scale * (v_cond - v_uncond)


def velocity_to_x0(z_t: torch.Tensor, v: torch.Tensor, alpha_bar: float,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """Clean latent from a v-prediction: ``sqrt(abar) z_t - sqrt(1 - abar) v`` (DOVE Eq. 2).

    The release calls ``scheduler.get_velocity(v, z_t, t)``, which computes exactly this in the
    dtype of ``v``: diffusers casts the float32 ``alphas_cumprod`` to it, takes both square roots
    there, and rounds each product and the difference to it. With the bf16 model output that is
    0.625 / 0.78125 at t = 399 (``abar`` 0.39354 -> 0.39258; ``1 - abar`` -> 0.60938).

    Args:
        z_t: ``(B, C, T, h, w)`` noisy (here: LR) latent.
        v: The model's v-prediction, same shape.
        alpha_bar: ``abar_t`` (the float32 scheduler value, as a Python float).
        dtype: ``None``: float64 coefficients on the inputs' dtype (float32). A dtype: the
            release's arithmetic in it (``z_t`` and ``v`` are cast to it first).

    Returns:
        ``x0`` in ``z_t``'s dtype (``dtype=None``) or in ``dtype``.
    """
    if dtype is None:
        return math.sqrt(alpha_bar) * z_t - math.sqrt(1.0 - alpha_bar) * v
    abar = torch.tensor(alpha_bar, dtype=torch.float32).to(dtype)
    return (abar ** 0.5) * z_t.to(dtype) - ((1 - abar) ** 0.5) * v.to(dtype)


def sobel_edges(frames: torch.Tensor) -> torch.Tensor:
    """Edge map of the release's edge-aware perceptual losses (``EdgeDetectionModel``, SV
    finetune/utils/metric_utils.py): grey image (torchvision ``rgb_to_grayscale``), 3x3 Sobel in x
    and y with zero padding, ``sqrt(gx^2 + gy^2 + 1e-6)``.

    Args:
        frames: ``(N, 3, H, W)`` float in [0, 1].

    Returns:
        ``(N, 1, H, W)`` float, >= 1e-3.
    """
    from torchvision.transforms import functional as TF

    grey = TF.rgb_to_grayscale(frames)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=grey.dtype, device=grey.device)
    gx = F.conv2d(grey, kx.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(grey, kx.t().contiguous().view(1, 1, 3, 3), padding=1)
    return torch.sqrt(gx ** 2 + gy ** 2 + 1e-6)


def prepend_first_frames(x: torch.Tensor, copies: int) -> torch.Tensor:
    """Prepend ``copies`` copies of frame 0 along dim 2 of ``(B, C, T, h, w)`` (release ``ncopy``)."""
    if copies <= 0:
        return x
    return torch.cat([x[:, :, :1].expand(-1, -1, copies, -1, -1), x], dim=2)


def lr_spatial_multiple(scale: int) -> int:
    """Smallest LR multiple whose upscaled size is a multiple of 16 (4 at x4, as the release pads)."""
    return HR_MULTIPLE // math.gcd(HR_MULTIPLE, scale)


def training_keyframe_indices(num_frames: int, generator: torch.Generator, dropout: float) -> list[int]:
    """Keyframes of one stage-1 clip, the release's dataset rule (SV:finetune/datasets/ref_real_sr_dataset.py).

    With probability ``dropout`` none; else ``n ~ U{1..(F-1)//4+1}`` keyframes: frame 0 and
    ``int(i (F-1)/(n-1))``, each pushed to at least 4 after the previous one, clipped to ``F-1``.

    Args:
        num_frames: Frames ``F`` of the clip.
        generator: CPU generator all draws come from.
        dropout: Probability of no keyframes.
    """
    if float(torch.rand((), generator=generator)) < dropout:
        return []
    upper = max(1, (num_frames - 1) // FRAMES_PER_LATENT + 1)
    count = int(torch.randint(1, upper + 1, (), generator=generator))
    indices = [0]
    if count > 1:
        step = (num_frames - 1) / (count - 1)
        for i in range(1, count):
            index = int(i * step)
            if index - indices[-1] < FRAMES_PER_LATENT:
                index = indices[-1] + FRAMES_PER_LATENT
            indices.append(min(index, num_frames - 1))
    return sorted(set(indices))


def augment_keyframe(image: torch.Tensor, generator: torch.Generator, config: SparkVSRConfig) -> torch.Tensor:
    """The release's training keyframe augmentation, drawn from ``generator``.

    In [0, 1]: colour jitter (brightness, contrast, saturation factors in ``[1 - j, 1 + j]``, applied
    in random order as torchvision's ``ColorJitter(0.1, 0.1, 0.1, 0)``) with probability
    ``keyframe_jitter_p``; 3x3 Gaussian blur with sigma in [0.1, 1.0] with probability
    ``keyframe_blur_p``; back to [-1, 1] and clamped; then Gaussian noise of std
    ``keyframe_noise_std`` always, not clamped (SV sparkvsr_s1_ref_trainer.py
    ``_prepare_ref_latent_i2v``).

    Args:
        image: ``(C, H, W)`` float in [-1, 1].
        generator: CPU generator.
        config: The method config (augmentation strengths).

    Returns:
        ``(C, H, W)`` float32, roughly in [-1, 1].
    """
    from torchvision.transforms import functional as TF

    device = image.device
    x = ((image.float() + 1.0) * 0.5).clamp(0.0, 1.0)
    if float(torch.rand((), generator=generator)) < config.keyframe_jitter_p:
        j = config.keyframe_jitter
        factors = (1.0 - j + 2.0 * j * torch.rand(3, generator=generator)).tolist()
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
        for k in torch.randperm(3, generator=generator).tolist():
            x = ops[k](x, factors[k])
    if float(torch.rand((), generator=generator)) < config.keyframe_blur_p:
        sigma = 0.1 + 0.9 * float(torch.rand((), generator=generator))
        x = TF.gaussian_blur(x, kernel_size=[3, 3], sigma=[sigma, sigma])
    x = (x * 2.0 - 1.0).clamp(-1.0, 1.0)
    noise = torch.randn(x.shape, generator=generator).to(device)
    return x + config.keyframe_noise_std * noise


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


class SparkVSRMethod:
    """SparkVSR as a vsrkit method (inference and both training stages).

    Args:
        config: The method options.
        backbone: A ``cogvideox`` :class:`~vsrkit.backbones.config.BackboneConfig` (preset
            ``cogvideox1.5-5b-i2v`` with ``path=<SparkVSR folder>``, or its ``-tiny`` twin).
        scale: Upscaling factor (the release uses 4; any integer works, the LR is padded so the
            output is a multiple of 16).
    """

    def __init__(self, config: SparkVSRConfig | None = None, backbone=None, scale: int = 4):
        self.config = config if config is not None else SparkVSRConfig()
        if backbone is None:
            raise ValueError("sparkvsr needs a cogvideox backbone (backbone=cogvideox1.5-5b-i2v).")
        if getattr(backbone, "family", None) != "cogvideox":
            raise ValueError(f"sparkvsr needs a cogvideox backbone. Got family {getattr(backbone, 'family', None)!r}.")
        if scale < 1:
            raise ValueError(f"`scale` must be >= 1. Got {scale}.")
        self.backbone_config = backbone
        self.scale = int(scale)
        self.backbone = None  # built by load() or setup_training()
        self._prompt = None
        self._perceptual = None  # stage 2: pyiqa DISTS or LPIPS as a loss

    # --- inference -------------------------------------------------------------------------

    def window_spec(self) -> WindowSpec:
        """8k+1 frames (odd latent count: exactly one prepended latent frame, as in training),
        LR padded with zeros (-1 after normalisation, the release's ``F.pad`` of [0, 255] frames)
        so the output is a multiple of 16, window starts on multiples of 4 (keyframe slots)."""
        c = self.config
        multiple = lr_spatial_multiple(self.scale)
        tile = c.tile
        if tile is not None and tile % multiple:
            raise UserError(f"`method.tile` must be a multiple of {multiple} at scale {self.scale}. Got {tile}.")
        return WindowSpec(
            scale=self.scale, frame_multiple=8, frame_offset=1, spatial_multiple=multiple, pad_mode="constant",
            window=c.window, overlap=c.overlap if c.window is not None else 0, stride_multiple=FRAMES_PER_LATENT,
            tile=tile, tile_overlap=c.tile_overlap if tile is not None else 0, uses_keyframes=True,
            carry_keyframes=c.carry_keyframes,
        )

    def load(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        """Build the backbone (weights from ``backbone.path``), check it is a SparkVSR/I2V
        transformer, and fetch the empty-prompt embedding (disk cache; T5 only on a miss).

        Args:
            device: Where the models run.
            dtype: Transformer dtype; ``None`` uses ``backbone.dtype``.
        """
        from vsrkit.backbones import build_backbone

        self.backbone = build_backbone(self._backbone_config(), device, dtype)
        self._check_release()
        self._prompt = self.backbone.prompt_embeds("")

    def _backbone_config(self):
        """The backbone config with ``vae_tiles=release`` applied: diffusers' default VAE tiles
        (``enable_tiling()`` without arguments: 240 x 360 for CogVideoX1.5) and slicing, as the
        release's ``--is_vae_st`` (``pipe.vae.enable_slicing(); pipe.vae.enable_tiling()``)."""
        cfg = self.backbone_config
        if self.config.vae_tiles == "release":
            check_release_tiles(cfg.preset)
            if cfg.vae_tile_size is not None or cfg.vae_tile_overlap is not None:
                logger.info("method.vae_tiles=release: diffusers' default VAE tiles instead of "
                            "backbone.vae_tile_size=%s, vae_tile_overlap=%s", cfg.vae_tile_size, cfg.vae_tile_overlap)
            cfg = dataclasses.replace(cfg, vae_tiling=True, vae_tile_size=None, vae_tile_overlap=None, vae_slicing=True)
        return cfg

    def _x0_dtype(self, device: torch.device) -> torch.dtype | None:
        """Dtype of the ``x0`` arithmetic: ``None`` (float32, ``x0_dtype=fp32``) or the dtype the
        transformer computes in (the autocast dtype while training under autocast, else its weights')."""
        if self.config.x0_dtype == "fp32":
            return None
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return next(self.backbone.transformer.parameters()).dtype

    def _check_release(self) -> None:
        """The released SparkVSR transformer is CogVideoX1.5-5B-I2V's: 32 input channels
        (LR ‖ keyframes), 16 output channels, an ``ofs`` embedding, time patch 2 (§2)."""
        cfg = self.backbone.transformer.config
        source = self.backbone_config.path or self.backbone_config.transformer_path or "random init"
        if cfg.in_channels != 2 * LATENT_CHANNELS or cfg.out_channels != LATENT_CHANNELS:
            raise WeightsError(
                f"`backbone.path` ({source}) holds a transformer with in/out channels {cfg.in_channels}/"
                f"{cfg.out_channels}; SparkVSR needs the I2V layout 32/16 (JiongzeYu/SparkVSR or CogVideoX1.5-5B-I2V)."
            )
        if cfg.ofs_embed_dim is None:
            raise WeightsError(f"`backbone.path` ({source}) holds a transformer without the `ofs` embedding; "
                               f"SparkVSR needs CogVideoX1.5-5B-I2V's (ofs_embed_dim 512).")

    def _require_loaded(self) -> None:
        if self.backbone is None:
            raise RuntimeError("SparkVSRMethod.load() (or setup_training()) must run before this call.")

    def encode(self, video: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """VAE-encode ``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, 16, t, H/8, W/8)`` float32, x0.7.

        ``T = 4k+1`` gives ``k+1`` latent frames; ``T = 4`` (a keyframe repeated 4x, the release's
        inference convention) gives one. ``posterior`` picks ``.sample()`` (seeded) or ``.mode()``.
        """
        return self.backbone.vae.encode(video, sample=self.config.posterior == "sample", generator=generator)

    def encode_keyframes(self, keyframes: dict, z_lr: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Keyframe channel group of one window (inference convention).

        Args:
            keyframes: ``{window-local index: (3, H, W) float in [-1, 1]}`` at the window's output size.
            z_lr: ``(B, 16, T, h, w)`` LR latent (gives the shape).
            generator: For posterior sampling.

        Returns:
            ``(B, 16, T, h, w)``: encoded keyframes at slot ``index // 4``, zeros elsewhere.
        """
        t, h, w = z_lr.shape[2:]
        inside = {k: v for k, v in keyframes.items() if 0 <= keyframe_slot(k) < t}
        if not inside:
            return torch.zeros_like(z_lr)
        order = sorted(inside)
        images = torch.stack([inside[k].float() for k in order])  # (K, 3, H, W)
        if tuple(images.shape[-2:]) != (h * 8, w * 8):
            raise ValueError(f"keyframes must be (3, {h * 8}, {w * 8}) like the window's output. "
                             f"Got {tuple(images.shape[1:])}.")
        frames = FRAMES_PER_LATENT if self.config.keyframe_encoding == "repeat" else 1
        clip = images[:, :, None].expand(-1, -1, frames, -1, -1).contiguous()
        latents = self.encode(clip, generator)[:, :, 0]  # (K, 16, h, w)
        return place_keyframe_latents({k: latents[i] for i, k in enumerate(order)}, t, z_lr)

    def denoise(self, z_lr: torch.Tensor, z_kf: torch.Tensor, generator: torch.Generator | None = None,
                guidance: float = 1.0) -> tuple[torch.Tensor, int]:
        """The one-step prediction.

        Args:
            z_lr: ``(B, 16, T, h, w)`` LR latent (x0.7).
            z_kf: ``(B or 1, 16, T, h, w)`` keyframe latents (zeros where none).
            generator: For ``noise_step > 0`` noise.
            guidance: Keyframe guidance scale (1 = one conditional pass).

        Returns:
            ``(x0 (B, 16, T + n, h, w) float32, n)``: the clean-latent estimate including the ``n``
            prepended copies of frame 0 (callers drop them; stage 1 trains on them, as the release).
        """
        bb, c = self.backbone, self.config
        p_t = bb.transformer.config.patch_size_t or 1
        copies = z_lr.shape[2] % p_t
        z_t = prepend_first_frames(z_lr, copies)
        kf = prepend_first_frames(z_kf.expand(z_lr.shape[0], -1, -1, -1, -1), copies)
        if c.noise_step > 0:
            # Release: scheduler.add_noise on the 16 LR channels (incl. the prepended copy). One
            # draw shared by both guidance branches, so they see the same z_t.
            noise = torch.randn(z_t.shape, generator=generator, device=generator.device if generator else "cpu")
            abar = bb.alpha_bar(c.noise_step)
            z_t = math.sqrt(abar) * z_t + math.sqrt(1.0 - abar) * noise.to(z_t)
        guided = abs(guidance - 1.0) > 1e-3  # release threshold
        x = torch.cat([z_t, kf], dim=1)
        if guided:
            x = torch.cat([torch.cat([z_t, torch.zeros_like(kf)], dim=1), x], dim=0)
        rope = bb.rotary_pos_embed(*x.shape[2:])
        v = bb.predict(x, c.timestep, self._prompt, ofs=c.ofs, image_rotary_emb=rope)[:, :LATENT_CHANNELS]
        dtype = self._x0_dtype(v.device)
        if dtype is not None:
            v = v.to(dtype)  # the model's own output dtype (predict hands it over as float32, exactly)
        if guided:
            v_uncond, v_cond = v.chunk(2)
            v = combine_guidance(v_uncond, v_cond, guidance)
        return velocity_to_x0(z_t, v, bb.alpha_bar(c.timestep), dtype).float(), copies

    @torch.no_grad()
    def upscale(self, lq: torch.Tensor, context: WindowContext) -> torch.Tensor:
        """One window.

        Args:
            lq: ``(B, 3, T, H, W)`` float32 in [-1, 1], ``T = 8k+1``, ``H, W`` padded so that
                ``H * scale`` and ``W * scale`` are multiples of 16.
            context: Keyframes ``{window-local index: (3, H*scale, W*scale) in [-1, 1]}`` and the
                window's seeded generator (posterior samples).

        Returns:
            ``(B, 3, T, H*scale, W*scale)`` float32 in [-1, 1].
        """
        self._require_loaded()
        b, _, t, h, w = lq.shape
        size = (h * self.scale, w * self.scale)
        if (t - 1) % 8 or size[0] % HR_MULTIPLE or size[1] % HR_MULTIPLE:
            raise ValueError(f"sparkvsr windows must have 8k+1 frames and an output size that is a multiple of 16. "
                             f"Got T={t}, output {size}.")
        generator = context.generator
        context.stage("encode")
        hr = upsample_frames(lq.float(), size, self.config.upscale_mode)
        z_lr = self.encode(hr, generator)
        z_kf = self.encode_keyframes(context.keyframes or {}, z_lr[:1], generator)
        context.stage("denoise", 0, 1)
        x0, copies = self.denoise(z_lr, z_kf, generator, self.config.ref_guidance_scale)
        context.stage("decode")
        out = self.backbone.vae.decode(x0[:, :, copies:])
        return out.float().clamp(-1.0, 1.0)

    # --- training ----------------------------------------------------------------------------

    def setup_training(self, device: torch.device) -> None:
        """Build the backbone for training: transformer in fp32 (trainable master weights, the
        release casts trainable parameters to fp32), VAE frozen in ``backbone.vae_dtype`` (default:
        ``backbone.dtype``); DISTS or LPIPS for stage 2 when its weight is > 0."""
        from vsrkit.backbones import build_backbone

        cfg = self._backbone_config()
        if cfg.vae_dtype is None:
            cfg = dataclasses.replace(cfg, vae_dtype=cfg.dtype)
        if self.config.stage == 2 and self._perceptual_name() is not None:
            # Fail before the big load when pyiqa or the loss's weights are missing.
            self._perceptual = self._build_perceptual(self._perceptual_name(), torch.device(device))
        self.backbone = build_backbone(cfg, device, torch.float32)
        self._check_release()
        self._prompt = self.backbone.prompt_embeds("")
        transformer = self.backbone.transformer
        transformer.requires_grad_(True)
        transformer.train()
        self.backbone.vae.model.requires_grad_(False)
        self.backbone.vae.model.eval()

    def training_data_spec(self) -> dict:
        """What the training clips must look like, for ``vsrkit.data.build_train_dataset``.

        Returns:
            ``{"num_frames", "hr_size", "frame_multiple", "frame_offset"}``: stage 1 takes 33-frame
            ``4k+1`` clips (whole-clip VAE encoding), stage 2 two-frame clips of any length rule
            (frame-by-frame encoding); HR crops 320x640 (release ``train_resolution``, §8).
        """
        c = self.config
        frames = c.train_frames if c.train_frames is not None else (33 if c.stage == 1 else 2)
        multiple, offset = (FRAMES_PER_LATENT, 1) if c.stage == 1 else (1, 0)
        return {"num_frames": frames, "hr_size": tuple(c.train_size), "frame_multiple": multiple,
                "frame_offset": offset}

    def trainable_parameters(self) -> list:
        """Every transformer parameter (full fine-tune; VAE and text encoder frozen, §8)."""
        self._require_loaded()
        return list(self.backbone.transformer.parameters())

    def training_modules(self) -> dict:
        """The module owning every trainable parameter (for FSDP)."""
        self._require_loaded()
        return {"transformer": self.backbone.transformer}

    def _generators(self, batch: dict) -> tuple[torch.Generator, list[torch.Generator]]:
        """A batch generator (posterior samples) and one per sample (keyframes, augmentation),
        seeded from ``config.seed``, the step and the samples' dataset indices, so a resumed run
        draws the same numbers."""
        step = int(batch.get("step", 0))
        indices = batch.get("index")
        b = batch["hq"].shape[0]
        indices = [int(i) for i in (indices.tolist() if torch.is_tensor(indices) else (indices or range(b)))]
        batch_gen = torch.Generator().manual_seed(sample_seed(self.config.seed, step, *indices))
        sample_gens = [torch.Generator().manual_seed(sample_seed(self.config.seed, step, i, 1)) for i in indices]
        return batch_gen, sample_gens

    def _train_keyframe_latents(self, images: dict, z_lr: torch.Tensor, generators, batch_gen) -> torch.Tensor:
        """Keyframe channel group for a training batch (training convention: augmented images
        encoded as single frames, SV trainers ``_prepare_ref_latent_i2v``).

        Args:
            images: ``{sample b: {pixel index: (3, H, W) in [-1, 1]}}``.
            z_lr: ``(B, 16, T, h, w)``.
            generators: Per-sample generators (augmentation).
            batch_gen: Generator of the posterior samples.
        """
        entries = [(b, k, augment_keyframe(img, generators[b], self.config))
                   for b in sorted(images) for k, img in sorted(images[b].items())]
        out = torch.zeros_like(z_lr)
        if not entries:
            return out
        clip = torch.stack([e[2] for e in entries])[:, :, None]  # (K, 3, 1, H, W)
        latents = self.encode(clip, batch_gen)[:, :, 0]
        for b in sorted(images):
            own = {k: latents[i] for i, (bb, k, _) in enumerate(entries) if bb == b}
            out[b:b + 1] = place_keyframe_latents(own, z_lr.shape[2], z_lr[b:b + 1])
        return out

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """One micro-batch of the configured stage.

        Args:
            batch: ``hq (B, 3, T, H, W)`` and ``lq (B, 3, T, h, w)`` float32 in [-1, 1],
                ``is_image (B,)`` bool, ``index (B,)`` dataset indices, ``step`` int.

        Returns:
            ``(loss, {name: float})``.
        """
        self._require_loaded()
        hq, lq = batch["hq"], batch["lq"]
        if hq.dim() != 5 or lq.dim() != 5 or hq.shape[:3] != lq.shape[:3]:
            raise ValueError(f"batch `hq`/`lq` must be (B, 3, T, H, W) with equal B and T. "
                             f"Got {tuple(hq.shape)} and {tuple(lq.shape)}.")
        if hq.shape[-2] % HR_MULTIPLE or hq.shape[-1] % HR_MULTIPLE:
            raise UserError(f"sparkvsr trains on HR crops that are multiples of 16. Got {tuple(hq.shape[-2:])}; "
                            f"set the dataset's crop size accordingly.")
        if self.config.stage == 1:
            return self._stage1_step(batch)
        return self._stage2_step(batch)

    def _stage1_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        hq, lq = batch["hq"], batch["lq"]
        b, _, t = hq.shape[:3]
        if (t - 1) % FRAMES_PER_LATENT:
            raise UserError(f"sparkvsr stage 1 needs clips of 4k+1 frames (the release trains on 33). Got {t}.")
        batch_gen, gens = self._generators(batch)
        lq_up = upsample_frames(lq.float(), hq.shape[-2:], self.config.upscale_mode)
        with torch.no_grad():
            z_lr = self.encode(lq_up, batch_gen)
            z_hr = self.encode(hq.float(), batch_gen)
            images = {}
            for i in range(b):
                picks = training_keyframe_indices(t, gens[i], self.config.keyframe_dropout)
                images[i] = {k: hq[i, :, k] for k in picks}
            z_kf = self._train_keyframe_latents(images, z_lr, gens, batch_gen)
        x0, copies = self.denoise(z_lr, z_kf, batch_gen)
        target = prepend_first_frames(z_hr, copies)  # the release also regresses the copy
        loss = F.mse_loss(x0.float(), target.float())
        count = sum(len(v) for v in images.values()) / b
        return loss, {"latent_mse": float(loss.detach()), "keyframes": float(count)}

    def _decode_train(self, z: torch.Tensor) -> torch.Tensor:
        """Decode with autograd through the frozen VAE (stage 2): ``(B, 16, t, h, w)`` ->
        ``(B, 3, T', 8h, 8w)`` float32, not clamped (the loss clamps after mapping to [0, 1])."""
        return self.backbone.vae.decode(z, grad=True)

    def _stage2_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        c = self.config
        hq, lq = batch["hq"], batch["lq"]
        b, _, t, hh, ww = hq.shape
        is_image = batch.get("is_image")
        is_image = [bool(x) for x in (is_image.tolist() if torch.is_tensor(is_image) else (is_image or [False] * b))]
        batch_gen, gens = self._generators(batch)
        lq_up = upsample_frames(lq.float(), (hh, ww), c.upscale_mode)
        with torch.no_grad():
            # Each frame is its own 1-frame clip (DOVE's frame-by-frame encoding): latent T = T.
            frames = lq_up.permute(0, 2, 1, 3, 4).reshape(b * t, 3, 1, hh, ww)
            z_lr = self.encode(frames, batch_gen)
            z_lr = z_lr.reshape(b, t, *z_lr.shape[1:2], *z_lr.shape[3:]).permute(0, 2, 1, 3, 4)
            # Images train without keyframes; videos with their first HQ frame at slot 0 (SV2).
            images = {i: ({} if is_image[i] else {0: hq[i, :, 0]}) for i in range(b)}
            z_kf = self._train_keyframe_latents(images, z_lr, gens, batch_gen)
        x0, copies = self.denoise(z_lr, z_kf, batch_gen)
        x0 = x0[:, :, copies:]
        if c.s2_decode == "per_frame":
            flat = x0.permute(0, 2, 1, 3, 4).reshape(b * t, LATENT_CHANNELS, 1, *x0.shape[3:])
            video = self._decode_train(flat).reshape(b, t, 3, hh, ww).permute(0, 2, 1, 3, 4)
        else:
            # Release SparkVSR S2: the per-frame latent decoded as one temporal clip, then both
            # truncated to the shorter length (taco-group/SparkVSR#27).
            video = self._decode_train(x0)
        n = min(video.shape[2], t)
        pred = (video[:, :, :n] * 0.5 + 0.5).clamp(0.0, 1.0)
        gt = (hq[:, :, :n].float() * 0.5 + 0.5).clamp(0.0, 1.0)
        mse = F.mse_loss(pred, gt)
        loss = c.mse_weight * mse
        logs = {"pixel_mse": float(mse.detach())}
        name = self._perceptual_name()
        if name is not None:
            if self._perceptual is None:
                self._perceptual = self._build_perceptual(name, pred.device)
            # Every frame of every sample, averaged (the release averages its per-frame losses).
            flat_pred = pred.permute(0, 2, 1, 3, 4).reshape(-1, 3, hh, ww)
            flat_gt = gt.permute(0, 2, 1, 3, 4).reshape(-1, 3, hh, ww)
            perceptual = self._perceptual(flat_pred, flat_gt).mean()
            logs[name] = float(perceptual.detach())
            if c.edge_aware:
                edges = self._perceptual(sobel_edges(flat_pred), sobel_edges(flat_gt)).mean()
                logs[f"edge_{name}"] = float(edges.detach())
                perceptual = (perceptual + edges) / 2
            loss = loss + (c.dists_weight if name == "dists" else c.lpips_weight) * perceptual
        if c.frame_diff_weight > 0 and n > 1:
            diff = F.l1_loss(pred[:, :, 1:] - pred[:, :, :-1], gt[:, :, 1:] - gt[:, :, :-1])
            loss = loss + c.frame_diff_weight * diff
            logs["frame_diff_l1"] = float(diff.detach())
        return loss, logs

    def _perceptual_name(self) -> str | None:
        """``"dists"``, ``"lpips"`` or ``None``: the stage-2 perceptual loss in use (at most one)."""
        if self.config.dists_weight > 0:
            return "dists"
        return "lpips" if self.config.lpips_weight > 0 else None

    @staticmethod
    def _build_perceptual(name: str, device: torch.device):
        """pyiqa's ``name`` loss; errors name ``method.<name>_weight`` as the switch that asked for it."""
        return build_perceptual_loss(name, device, f"method.{name}_weight")

    def state_dict(self) -> dict:
        """The transformer's weights (diffusers key names, no wrapper prefix)."""
        self._require_loaded()
        return self.backbone.transformer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Load transformer weights saved by :meth:`state_dict` (strict)."""
        self._require_loaded()
        self.backbone.transformer.load_state_dict(state, strict=True)

    def export(self, directory: str) -> None:
        """Write a diffusers pipeline folder that both the release and vsrkit load.

        ``model_index.json`` (``CogVideoXImageToVideoPipeline``), ``transformer/`` (trained
        weights, safetensors), ``vae/`` and ``scheduler/``; ``text_encoder/`` and ``tokenizer/``
        are linked from the base folder when the backbone came from one (the release's
        ``prepare_sft_ckpt.py`` copies the base pipeline and swaps the transformer, §8.4). Load it
        with ``backbone.path=<directory>``.
        """
        self._require_loaded()
        out = write_pipeline_folder(self.backbone, directory, "CogVideoXImageToVideoPipeline", self.backbone_config.path)
        logger.info("exported SparkVSR pipeline folder to %s", out)


def check_release_tiles(preset: str) -> None:
    """Raise a :class:`UserError` unless diffusers' default VAE tiles work for ``preset``.

    ``enable_tiling()`` tiles at half the VAE's sample size with overlaps of 1/6 and 1/5 of a tile
    (CogVideoX1.5: 240 x 360 px, strides 200 and 288 px). diffusers' tiled encode then stitches
    ``stride / 8`` latent rows per tile, so a stride that is not a multiple of 8 (the tiny preset's
    32-px tiles: 26 and 25 px) returns latents of the wrong size.
    """
    from vsrkit.backbones.presets import get_preset

    vae = get_preset(preset).vae
    tile_h, tile_w = vae.get("sample_height", 480) // 2, vae.get("sample_width", 720) // 2
    strides = (int(tile_h * (1 - 1 / 6)), int(tile_w * (1 - 1 / 5)))
    if strides[0] % 8 or strides[1] % 8:
        raise UserError(f"`method.vae_tiles=release` uses diffusers' default VAE tiles, {tile_h}x{tile_w} px with "
                        f"strides {strides[0]}/{strides[1]} px for preset `{preset}`; diffusers' tiled encode needs "
                        f"strides that are multiples of 8 (the real preset's are 200/288). Use method.vae_tiles=backbone.")
