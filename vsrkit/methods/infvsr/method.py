"""InfVSR: causal one-step streaming video super-resolution on Wan2.1-T2V-1.3B.

Per chunk (release ``Kai-Liu001/InfVSR`` @a5b9342 ``diffsynth_wan/pipeline.py``; report
``shared/research/infvsr.md`` §1-§2, errata):

1. the clip is cut into chunks of 9 frames at a scene start, then 12 (3 latent frames each;
   shorter only before a scene cut or at the end); a scene cut (PySceneDetect's ContentDetector
   rule, :mod:`vsrkit.methods.scenes`) resets every cache and the RoPE position;
2. at a scene start, or when the content drifted far from it, the chunk's first LR frame becomes
   the reference: a visual encoder (RAM Swin-L + DAPE) turns it into 145 x 512 tokens that the
   transformer cross-attends to instead of text;
3. the LR chunk is upsampled x``scale`` (bicubic, antialiased), replicate-padded to multiples of 16
   and to ``1 + 4k`` (first chunk) / ``4k`` frames, and VAE-encoded (posterior mean) by a streaming
   encoder whose causal cache lives as long as the scene;
4. one transformer forward at t = 399 (bf16: 400) on that latent ``z`` predicts ``v``; self-attention
   sees the chunk and the cached keys/values of the previous chunk, with RoPE time positions counted
   from the scene start (:mod:`vsrkit.backbones.wan_causal`); ``x0 = z - sigma * v``;
5. a streaming decoder (tiled above 1024 px) turns ``x0`` into frames, cropped to the chunk.

Training (no code is public; §3 reconstructed): one forward over all chunks of a clip under the
block-banded mask (equal to streaming them), patch-wise pixel losses on a random latent crop
decoded by the frozen VAE, and cross-chunk distribution matching against the frozen Wan2.1 (real
score) with a trainable copy (fake score), DMD2's estimator.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import deque
from pathlib import Path

import torch
import torch.nn.functional as F

from vsrkit.errors import UserError, WeightsError
from vsrkit.methods.infvsr.config import InfVSRConfig
from vsrkit.methods.protocol import OptimizerGroup, StreamContext, WindowContext, WindowSpec
from vsrkit.methods.scenes import SceneChunker, to_uint8
from vsrkit.metrics.pyiqa_adapter import build_perceptual_loss

logger = logging.getLogger(__name__)

# Pixel frames of the first chunk of a scene (1 + 4*2) and of every later one (4*3): each is
# three latent frames of the causal Wan VAE (release video.py frame_batches, scenes.py).
FIRST_CHUNK = 9
CHUNK = 12
LATENTS_PER_CHUNK = 3
# Output H and W are padded to this (VAE 8x times patch 2), replicating the border (release pad_chunk).
SPATIAL_MULTIPLE = 16
# Width of the visual-prompt tokens: the transformer's text_dim (release config.json "text_dim": 512).
TOKEN_DIM = 512
# Frames a reference is kept before it may be replaced without a cut (release scenes.py: 15).
REFERENCE_GAP = 15


# --------------------------------------------------------------------------------------------
# Pure tensor functions
# --------------------------------------------------------------------------------------------


def upsample(video: torch.Tensor, scale: int) -> torch.Tensor:
    """``(B, C, T, h, w)`` -> ``(B, C, T, h*scale, w*scale)``, bicubic with antialiasing, as the release
    (``F.interpolate(scale_factor, mode="bicubic", antialias=True, align_corners=False)``, float32,
    no clamp). The antialiased kernel is PIL's (a = -0.5), also when enlarging."""
    b, c, t, h, w = video.shape
    flat = video.float().permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    flat = F.interpolate(flat, size=(h * scale, w * scale), mode="bicubic", align_corners=False, antialias=True)
    return flat.reshape(b, t, c, h * scale, w * scale).permute(0, 2, 1, 3, 4)


def pad_chunk(video: torch.Tensor, first: bool) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Replicate-pad ``(B, C, T, H, W)`` to H, W multiples of 16 and T to ``1 + 4k`` (``first``) or ``4k``.

    Returns:
        ``(padded, (T, H, W))`` with the unpadded sizes (to crop the decoded frames).
    """
    length, height, width = video.shape[-3:]
    pad_t = (int(first) - length) % 4
    pad = (0, (-width) % SPATIAL_MULTIPLE, 0, (-height) % SPATIAL_MULTIPLE, 0, pad_t)
    if any(pad):
        video = F.pad(video, pad, mode="replicate")
    return video, (length, height, width)


def chunk_latent_frames(latent_frames: int) -> list[int]:
    """Latent frames of each chunk of a clip of whole chunks (``[3, 3, ...]``, the last one shorter if needed)."""
    full, rest = divmod(latent_frames, LATENTS_PER_CHUNK)
    return [LATENTS_PER_CHUNK] * full + ([rest] if rest else [])


def velocity_to_x0(z_t: torch.Tensor, v: torch.Tensor, sigma: float) -> torch.Tensor:
    """Rectified flow: ``x_t = (1 - sigma) x0 + sigma eps`` and ``v = eps - x0`` give ``x0 = x_t - sigma v``."""
    return z_t - sigma * v


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (FNV-style), identical on every platform."""
    value = 0xCBF29CE484222325
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3 % (1 << 64)
    return value & ((1 << 63) - 1)


def vsd_loss(generated: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor) -> torch.Tensor:
    """DMD's generator loss (DMD2 / Self-Forcing; DiffSynth ``_variational_score_distillation_loss``).

    ``grad = (fake - real) / (mean|generated - real| + 1e-6)`` per sample, and
    ``0.5 * mean((generated - sg(generated - grad))**2)``, whose gradient w.r.t. ``generated`` is
    ``grad / numel``: it moves the generator's samples from the fake score's toward the real score's.
    """
    dims = tuple(range(1, generated.dim()))
    with torch.no_grad():
        weight = 1.0 / ((generated.float() - real_x0.float()).abs().mean(dim=dims, keepdim=True) + 1e-6)
        target = generated.float() - (fake_x0.float() - real_x0.float()) * weight
    return 0.5 * F.mse_loss(generated.float(), target, reduction="mean")


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


class _Scene:
    """Per-scene state: VAE coder caches, the transformer's KV cache and the RoPE position."""

    def __init__(self, method: "InfVSRMethod", hr_height: int):
        vae = method.backbone.vae
        c = method.config
        tile = c.vae_tile_size if hr_height > c.vae_tile_threshold else None
        overlap = c.vae_tile_overlap if tile is not None else 0
        self.encoder = vae.encode_stream(tile, overlap)
        self.decoder = vae.decode_stream(tile, overlap)
        self.past: list[deque] = [deque() for _ in range(len(method.backbone.transformer.blocks))]
        self.position = 0
        self.first = True

    def held_bytes(self) -> int:
        def size(obj) -> int:
            if torch.is_tensor(obj):
                return obj.numel() * obj.element_size()
            if isinstance(obj, (list, tuple, deque)):
                return sum(size(o) for o in obj)
            if isinstance(obj, dict):
                return sum(size(o) for o in obj.values())
            if hasattr(obj, "streams"):  # TiledStream
                return size(obj.streams)
            if hasattr(obj, "cache"):  # WanEncodeStream / WanDecodeStream
                return size(obj.cache)
            return 0

        return size(self.past) + size(self.encoder) + size(self.decoder)


class InfVSRStream:
    """One clip through InfVSR (see :class:`vsrkit.methods.protocol.FrameStream`).

    Input frames wait until the chunk planner decides their chunk (up to ``min_scene_len`` + one
    chunk of frames with scene detection on); every chunk is output as soon as it is decoded.
    """

    def __init__(self, method: "InfVSRMethod", context: StreamContext):
        self.method = method
        self.context = context
        self.reset()

    def reset(self) -> None:
        c = self.method.config
        self.chunker = SceneChunker(FIRST_CHUNK, CHUNK, detect=c.scene_detection, scene_threshold=c.scene_threshold,
                                    reference_threshold=c.reference_threshold, min_scene_len=c.min_scene_len,
                                    reference_gap=REFERENCE_GAP)
        self.frames: deque[torch.Tensor] = deque()  # LR frames (3, H, W) not yet run
        self.scene: _Scene | None = None
        self.tokens: torch.Tensor | None = None
        self.size: tuple[int, int] | None = None
        self.done = 0

    def held_bytes(self) -> int:
        """Bytes of everything the stream keeps between pushes (caches, waiting frames, planner)."""
        frames = sum(f.numel() * f.element_size() for f in self.frames)
        tokens = self.tokens.numel() * self.tokens.element_size() if self.tokens is not None else 0
        scene = self.scene.held_bytes() if self.scene is not None else 0
        return frames + tokens + scene + self.chunker.held_bytes()

    @torch.no_grad()
    def push(self, lq: torch.Tensor) -> torch.Tensor:
        if lq.dim() != 5 or lq.shape[0] != 1 or lq.shape[1] != 3:
            raise ValueError(f"infvsr streams take (1, 3, t, H, W) frames. Got {tuple(lq.shape)}.")
        if self.size is None:
            self.size = (lq.shape[3], lq.shape[4])
        elif (lq.shape[3], lq.shape[4]) != self.size:
            raise ValueError(f"frame size changed within a stream from {self.size} to {tuple(lq.shape[3:])}.")
        frames = lq[0].transpose(0, 1)  # (t, 3, H, W)
        self.frames.extend(frames.unbind(0))
        planned = self.chunker.push(to_uint8(frames) if self.method.config.scene_detection else frames)
        return self._run(planned)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        if self.size is None:
            raise ValueError("flush() on a stream that got no frames.")
        return self._run(self.chunker.finish())

    def _run(self, planned) -> torch.Tensor:
        outs = [self._chunk(p.stop - p.start, p.new_scene, p.update_reference) for p in planned]
        if outs:
            return torch.cat(outs, dim=2)
        s = self.method.scale
        device = self.frames[0].device if self.frames else self.method.device
        return torch.zeros(1, 3, 0, self.size[0] * s, self.size[1] * s, device=device)

    def _chunk(self, n: int, new_scene: bool, update_reference: bool) -> torch.Tensor:
        m, ctx = self.method, self.context
        video = torch.stack([self.frames.popleft() for _ in range(n)], dim=1)[None]  # (1, 3, n, H, W)
        ctx.stage("encode")
        hr = upsample(video, m.scale)
        if new_scene or self.scene is None:
            self.scene = _Scene(m, hr.shape[-2] + (-hr.shape[-2]) % SPATIAL_MULTIPLE)
        if update_reference or self.tokens is None:
            self.tokens = m.reference_tokens(video[:, :, 0])
        padded, (length, height, width) = pad_chunk(hr, first=self.scene.first)
        self.scene.first = False
        z = self.scene.encoder.push(padded)
        ctx.stage("denoise", 0, 1)
        x0 = m.denoise_chunk(z, self.tokens, self.scene.past, self.scene.position)
        self.scene.position += z.shape[2]
        ctx.stage("decode")
        out = self.scene.decoder.push(x0)[:, :, :length, :height, :width]
        self.done += n
        return out


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


class InfVSRMethod:
    """InfVSR as a vsrkit method: streaming inference and both training stages.

    Args:
        config: The method options.
        backbone: A ``wan`` :class:`~vsrkit.backbones.config.BackboneConfig` (``wan2.1-t2v-1.3b``
            with ``transformer_path=InfVSR.ckpt`` and ``vae_path=Wan2.1_VAE.pth``, or the ``-tiny``
            twin). Its transformer gets ``text_dim`` 512 (the visual-prompt width).
        scale: Upscaling factor (release default 4; any integer >= 1).
    """

    def __init__(self, config: InfVSRConfig | None = None, backbone=None, scale: int = 4):
        from vsrkit.backbones.presets import PRESETS
        from vsrkit.registry import VISUAL_ENCODERS

        self.config = config if config is not None else InfVSRConfig()
        if backbone is None or getattr(backbone, "family", None) != "wan":
            raise ValueError(f"infvsr needs a wan backbone (backbone=wan2.1-t2v-1.3b). "
                             f"Got family {getattr(backbone, 'family', None)!r}.")
        if scale < 1:
            raise ValueError(f"`scale` must be >= 1. Got {scale}.")
        overrides = dict(backbone.transformer_overrides)
        if overrides.get("text_dim", TOKEN_DIM) != TOKEN_DIM:
            raise UserError(f"`backbone.transformer_overrides.text_dim` must be {TOKEN_DIM} for infvsr (its "
                            f"transformer reads {TOKEN_DIM}-d visual tokens). Got {overrides['text_dim']}.")
        if getattr(backbone, "compile", "off") != "off":
            # Measured on an H200 (docs/benchmarks.md): each block's causal processor reads its cache
            # slot by an integer layer index, which torch.compile specialises, so 30 blocks hit
            # dynamo's recompile limit with fullgraph and fail instead of getting faster.
            raise UserError(f"`backbone.compile={backbone.compile}` is not supported by infvsr: its causal attention "
                            f"keeps per-block cache state that torch.compile recompiles for every block. "
                            f"Use backbone.compile=off.")
        self.user_backbone = backbone
        self.backbone_config = dataclasses.replace(backbone, transformer_overrides={**overrides, "text_dim": TOKEN_DIM})
        self.scale = int(scale)
        preset = PRESETS.get(backbone.preset)
        self.tiny = bool(preset is not None and preset.tiny)
        c = self.config
        self.encoder_name = c.visual_encoder or ("swin-tiny-random" if self.tiny else "ram-swin-l-dape")
        from vsrkit.plugins import setup_registries

        setup_registries()
        if self.encoder_name not in VISUAL_ENCODERS:
            raise UserError(f"`method.visual_encoder`: {VISUAL_ENCODERS.unknown_message(self.encoder_name)}")
        for key in ("visual_encoder_path", "visual_adapter_path", "base_path"):
            value = getattr(c, key)
            if value is not None and not Path(value).expanduser().exists():
                raise UserError(f"`method.{key}={value}` does not exist; give the weights file's path.")
        if not self.tiny and c.visual_encoder_path is None and getattr(backbone, "random_weights", None) is False:
            raise UserError("`method.visual_encoder_path` is not set: infvsr needs RAM's ram_swin_large_14m.pth (and "
                            "method.visual_adapter_path=DAPE.pth); pass backbone.random_weights=true for speed "
                            "benchmarks with random weights.")
        if c.visual_adapter_path is not None and c.visual_encoder_path is None:
            raise UserError(f"`method.visual_adapter_path={c.visual_adapter_path}` needs method.visual_encoder_path "
                            f"(the RAM weights it adapts).")
        self.backbone = None
        self.encoder = None
        self.device = torch.device("cpu")
        self._causal = None
        self._real = self._fake = None
        self._dists = None

    # --- inference -------------------------------------------------------------------------

    def window_spec(self) -> WindowSpec:
        """Streams choose their own chunks and pad after upsampling: the engine only needs the scale."""
        return WindowSpec(scale=self.scale, frame_multiple=1, frame_offset=0, spatial_multiple=1,
                          pad_mode="replicate", window=None)

    def timestep_sigma(self) -> tuple[float, float]:
        """``(timestep fed to the transformer, sigma of the update)`` (see ``bf16_timestep``)."""
        c = self.config
        t = float(torch.tensor(float(c.timestep)).to(torch.bfloat16)) if c.bf16_timestep else float(c.timestep)
        sigma = self.backbone.sigma(c.timestep, bf16_round=c.bf16_timestep)
        if c.bf16_timestep:
            sigma = float(torch.tensor(sigma).to(torch.bfloat16))
        return t, sigma

    def load(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        """Build the backbone (transformer with ``text_dim`` 512, made chunk-causal) and the visual encoder.

        Args:
            device: Where the models run.
            dtype: Transformer and encoder dtype; ``None`` uses ``backbone.dtype``.
        """
        from vsrkit.backbones import build_backbone
        from vsrkit.backbones.wan_causal import enable_chunk_causal

        self.device = torch.device(device)
        self.backbone = build_backbone(self.backbone_config, device, dtype)
        self._causal = enable_chunk_causal(self.backbone.transformer, window=self.config.cache_chunks)
        self.encoder = self._build_encoder(self.backbone.dtype)

    def _build_encoder(self, dtype: torch.dtype):
        from vsrkit.registry import VISUAL_ENCODERS

        c = self.config
        build = VISUAL_ENCODERS.get(self.encoder_name)
        return build(c.visual_encoder_path, c.visual_adapter_path, self.device, dtype, self.backbone_config.seed)

    def _require_loaded(self) -> None:
        if self.backbone is None:
            raise RuntimeError("InfVSRMethod.load() (or setup_training()) must run before this call.")

    def reference_tokens(self, frame: torch.Tensor) -> torch.Tensor:
        """``frame (B, 3, H, W)`` LR in [-1, 1] -> visual tokens ``(B, N, 512)`` (release: the frame in [0, 1])."""
        return self.encoder(frame.float() * 0.5 + 0.5)

    def denoise_chunk(self, z: torch.Tensor, tokens: torch.Tensor, past: list, position: int) -> torch.Tensor:
        """One streaming step: the transformer on chunk latents ``z (1, 16, t, h, w)`` with the cached K/V
        ``past`` (updated in place) at RoPE time ``position``; returns ``x0`` float32."""
        state = self._causal
        t, sigma = self.timestep_sigma()
        state.past, state.offset, state.write, state.mask = past, position, True, None
        try:
            v = self.backbone.predict(z, t, tokens)
        finally:
            state.write = False
        return velocity_to_x0(z, v, sigma)

    def open_stream(self, context: StreamContext) -> InfVSRStream:
        self._require_loaded()
        return InfVSRStream(self, context)

    @torch.no_grad()
    def upscale(self, lq: torch.Tensor, context: WindowContext) -> torch.Tensor:
        """One window as a fresh stream (for window-based callers; ``vsrkit infer`` streams instead).

        Args:
            lq: ``(1, 3, T, H, W)`` float32 in [-1, 1].
            context: The window's generator and progress callback.

        Returns:
            ``(1, 3, T, H*scale, W*scale)`` float32 in [-1, 1].
        """
        self._require_loaded()
        if lq.shape[0] != 1:
            return torch.cat([self.upscale(lq[i:i + 1], context) for i in range(lq.shape[0])])
        stream = self.open_stream(StreamContext(num_frames=lq.shape[2], generator=context.generator,
                                                on_stage=context.on_stage))
        return torch.cat([stream.push(lq), stream.flush()], dim=2)

    # --- training ----------------------------------------------------------------------------

    def training_data_spec(self) -> dict:
        """Clips of ``train_frames`` (``9 + 12k``: whole chunks) at ``train_size`` HR crops."""
        c = self.config
        return {"num_frames": c.train_frames, "hr_size": tuple(c.train_size), "frame_multiple": CHUNK,
                "frame_offset": FIRST_CHUNK}

    @property
    def uses_dmd(self) -> bool:
        return self.config.dmd_weight > 0

    def setup_training(self, device: torch.device) -> None:
        """Build the generator (fp32 master weights, chunk-causal), the frozen VAE and visual encoder, and
        with DMD the frozen real score and the trainable fake score (both Wan2.1-T2V-1.3B)."""
        from vsrkit.backbones import build_backbone
        from vsrkit.backbones.wan_causal import enable_chunk_causal

        c = self.config
        self.device = torch.device(device)
        if c.dists_weight > 0:
            self._dists = build_perceptual_loss("dists", self.device, "method.dists_weight")  # fail before the big load
        has_weights = self.backbone_config.path is not None or self.backbone_config.transformer_path is not None
        if (self.uses_dmd or not has_weights) and c.base_path is None and not self.tiny:
            raise UserError("infvsr training needs `method.base_path` (Wan2.1-T2V-1.3B transformer weights: the real "
                            "score, and the start of the generator when backbone.transformer_path is not set).")
        cfg = self.backbone_config
        if cfg.vae_dtype is None:
            cfg = dataclasses.replace(cfg, vae_dtype=cfg.dtype)
        self.backbone = build_backbone(cfg, device, torch.float32)
        base = None
        if self.uses_dmd or not has_weights:
            base_overrides = {k: v for k, v in self.user_backbone.transformer_overrides.items() if k != "text_dim"}
            base_cfg = dataclasses.replace(cfg, path=c.base_path, transformer_path=None,
                                           transformer_overrides=base_overrides)
            base = build_backbone(base_cfg, device, torch.float32)
        if base is not None and not has_weights:
            self._init_from_base(base.transformer)
        self._causal = enable_chunk_causal(self.backbone.transformer, window=c.cache_chunks)
        self.encoder = self._build_encoder(torch.float32)
        transformer = self.backbone.transformer
        transformer.requires_grad_(True)
        transformer.train()
        self.backbone.vae.model.requires_grad_(False).eval()
        if self.uses_dmd:
            self._real = base
            self._fake = copy.deepcopy(base.transformer).requires_grad_(True).train()
            self._prompt = base.prompt_embeds(c.dmd_prompt).float()
            self._negative = base.prompt_embeds(c.dmd_negative_prompt).float() if c.dmd_guidance > 1 else None

    def _init_from_base(self, base: torch.nn.Module) -> None:
        """Copy every Wan2.1 weight into the generator except the new 512-d prompt projection's first layer."""
        own = self.backbone.transformer.state_dict()
        src = base.state_dict()
        skipped = [k for k in own if k not in src or src[k].shape != own[k].shape]
        self.backbone.transformer.load_state_dict({k: src[k] for k in own if k not in skipped}, strict=False)
        logger.info("infvsr generator starts from the base Wan2.1 weights; kept at init: %s", ", ".join(skipped))

    def optimizer_groups(self) -> list[OptimizerGroup]:
        """The generator; with DMD also the fake score, the generator stepping every ``generator_every``-th step."""
        self._require_loaded()
        c = self.config
        groups = [OptimizerGroup(name="generator", params=list(self.backbone.transformer.parameters()),
                                 every=c.generator_every if self.uses_dmd else 1)]
        if self.uses_dmd:
            groups.append(OptimizerGroup(name="fake_score", params=list(self._fake.parameters()), lr=c.fake_score_lr,
                                         ema=False))
        return groups

    def trainable_parameters(self) -> list:
        """Every parameter that trains (generator, and the fake score with DMD)."""
        return [p for g in self.optimizer_groups() for p in g.params]

    def training_modules(self) -> dict:
        self._require_loaded()
        modules = {"generator": self.backbone.transformer}
        if self.uses_dmd:
            modules["fake_score"] = self._fake
        return modules

    def _generator(self, batch: dict, kind: int) -> torch.Generator:
        step = int(batch.get("step", 0))
        indices = batch.get("index")
        b = batch["hq"].shape[0]
        indices = [int(i) for i in (indices.tolist() if torch.is_tensor(indices) else (indices or range(b)))]
        return torch.Generator().manual_seed(mix_seed(self.config.seed, step, kind, *indices))

    def generate(self, z_lr: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """All chunks of a clip in one forward under the block-banded mask (equal to streaming them).

        Args:
            z_lr: ``(B, 16, T, h, w)`` LR latents of a whole clip (``T = 3k``).
            tokens: ``(B, N, 512)`` visual tokens of the clip's first LR frame.

        Returns:
            ``x0 (B, 16, T, h, w)`` float32 (with autograd when enabled).
        """
        from vsrkit.backbones.wan_causal import chunk_causal_mask

        state = self._causal
        p = self.backbone.transformer.config.patch_size
        tokens_per_frame = (z_lr.shape[3] // p[1]) * (z_lr.shape[4] // p[2])
        t, sigma = self.timestep_sigma()
        state.past = [deque() for _ in state.past]
        state.offset, state.write = 0, False
        state.mask = chunk_causal_mask(chunk_latent_frames(z_lr.shape[2]), tokens_per_frame, self.config.cache_chunks,
                                       z_lr.device)
        try:
            v = self.backbone.predict(z_lr, t, tokens)
        finally:
            state.mask = None
        return velocity_to_x0(z_lr, v, sigma)

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_lr, tokens)`` of a batch, without autograd."""
        hq, lq = batch["hq"], batch["lq"]
        if hq.dim() != 5 or lq.dim() != 5 or hq.shape[:3] != lq.shape[:3]:
            raise ValueError(f"batch `hq`/`lq` must be (B, 3, T, H, W) with equal B and T. "
                             f"Got {tuple(hq.shape)} and {tuple(lq.shape)}.")
        t, hh, ww = hq.shape[2:]
        if hh % SPATIAL_MULTIPLE or ww % SPATIAL_MULTIPLE or t < FIRST_CHUNK or (t - FIRST_CHUNK) % CHUNK:
            raise UserError(f"infvsr trains on clips of 9 + 12k frames with HR crops that are multiples of 16. "
                            f"Got {t} frames of {hh}x{ww}; set method.train_frames / the dataset's crop size.")
        if (lq.shape[3] * self.scale, lq.shape[4] * self.scale) != (hh, ww):
            raise UserError(f"batch `lq` is {tuple(lq.shape[3:])}, not `hq` {hh}x{ww} / scale {self.scale}.")
        with torch.no_grad():
            z_lr = self.backbone.vae.encode(upsample(lq, self.scale))
            tokens = self.reference_tokens(lq[:, :, 0])
        return z_lr, tokens

    def _score_x0(self, model, x_t: torch.Tensor, timestep: torch.Tensor, sigma: torch.Tensor,
                  prompt: torch.Tensor) -> torch.Tensor:
        """x0 of a bidirectional Wan2.1 (real or fake score) at noise level ``sigma (B,)``."""
        v = model(hidden_states=x_t, timestep=timestep, encoder_hidden_states=prompt.expand(x_t.shape[0], -1, -1),
                  return_dict=False)[0].float()
        return x_t - sigma.view(-1, 1, 1, 1, 1) * v

    def _noised(self, x0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, timestep, sigma)``: ``s ~ U[min, max)``, ``sigma = 5s / (1 + 4s)`` (Wan's shift,
        Self-Forcing's ``timestep_shift``), ``x_t = (1 - sigma) x0 + sigma eps``."""
        c = self.config
        b = x0.shape[0]
        s = c.dmd_min_step + (c.dmd_max_step - c.dmd_min_step) * torch.rand(b, generator=gen, dtype=torch.float64)
        shift = float(self.backbone.scheduler_config.get("shift", 5.0))
        sigma = (shift * s / (1 + (shift - 1) * s)).to(x0.device, torch.float32)
        eps = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
        x_t = (1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * eps
        return x_t, sigma * 1000.0, sigma

    def _real_x0(self, x_t, timestep, sigma) -> torch.Tensor:
        c = self.config
        x0 = self._score_x0(self._real.transformer, x_t, timestep, sigma, self._prompt)
        if self._negative is not None:
            neg = self._score_x0(self._real.transformer, x_t, timestep, sigma, self._negative)
            x0 = neg + c.dmd_guidance * (x0 - neg)
        return x0

    def training_step(self, batch: dict, optimizer_name: str = "generator") -> tuple[torch.Tensor, dict]:
        """One micro-batch for the optimizer group ``optimizer_name``.

        Args:
            batch: ``hq (B, 3, T, H, W)`` and ``lq (B, 3, T, H/s, W/s)`` float32 in [-1, 1], ``index (B,)``,
                ``step`` int.
            optimizer_name: ``"generator"`` (pixel losses, plus DMD) or ``"fake_score"`` (its denoising loss).

        Returns:
            ``(loss, {name: float})``.
        """
        self._require_loaded()
        z_lr, tokens = self._inputs(batch)
        if optimizer_name == "fake_score":
            return self._fake_score_step(batch, z_lr, tokens)
        if optimizer_name != "generator":
            raise ValueError(f"infvsr has optimizer groups generator and fake_score. Got {optimizer_name!r}.")
        c = self.config
        x0 = self.generate(z_lr, tokens)
        gen = self._generator(batch, 1)
        loss, logs = self._pixel_losses(x0, batch["hq"], gen)
        if self.uses_dmd:
            x_t, timestep, sigma = self._noised(x0.detach(), gen)
            with torch.no_grad():
                real = self._real_x0(x_t, timestep, sigma)
                fake = self._score_x0(self._fake, x_t, timestep, sigma, self._prompt)
            dmd = vsd_loss(x0, real, fake)
            loss = loss + c.dmd_weight * dmd
            logs["dmd"] = float(dmd.detach())
        return loss, logs

    def _pixel_losses(self, x0: torch.Tensor, hq: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Patch-wise pixel supervision: a random ``pixel_crop``-square latent window of every frame, decoded
        by the frozen VAE (gradients flow through it), against the matching HR crop."""
        c = self.config
        h, w = x0.shape[-2:]
        ch, cw = min(c.pixel_crop, h), min(c.pixel_crop, w)
        y = int(torch.randint(0, h - ch + 1, (), generator=gen))
        x = int(torch.randint(0, w - cw + 1, (), generator=gen))
        video = self.backbone.vae.decode(x0[..., y:y + ch, x:x + cw], grad=True)
        n = min(video.shape[2], hq.shape[2])
        pred = (video[:, :, :n] * 0.5 + 0.5).clamp(0.0, 1.0)
        gt = (hq[:, :, :n, 8 * y:8 * (y + ch), 8 * x:8 * (x + cw)].float() * 0.5 + 0.5).clamp(0.0, 1.0)
        mse = F.mse_loss(pred, gt)
        loss = c.mse_weight * mse
        logs = {"pixel_mse": float(mse.detach())}
        if c.frame_diff_weight > 0 and n > 1:
            diff = F.l1_loss(pred[:, :, 1:] - pred[:, :, :-1], gt[:, :, 1:] - gt[:, :, :-1])
            loss = loss + c.frame_diff_weight * diff
            logs["frame_diff_l1"] = float(diff.detach())
        if c.dists_weight > 0:
            flat_pred = pred.permute(0, 2, 1, 3, 4).flatten(0, 1)
            flat_gt = gt.permute(0, 2, 1, 3, 4).flatten(0, 1)
            dists = self._dists(flat_pred, flat_gt).mean()
            loss = loss + c.dists_weight * dists
            logs["dists"] = float(dists.detach())
        return loss, logs

    def _fake_score_step(self, batch: dict, z_lr: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The fake score learns the generator's current output distribution: denoise ``sg(x0)`` noised to a
        random level, regressing x0 (DiffSynth DMD2's fake-score loss)."""
        with torch.no_grad():
            x0 = self.generate(z_lr, tokens)
        x_t, timestep, sigma = self._noised(x0, self._generator(batch, 2))
        pred = self._score_x0(self._fake, x_t, timestep, sigma, self._prompt)
        loss = F.mse_loss(pred.float(), x0.float())
        return loss, {"fake_score_mse": float(loss.detach())}

    def state_dict(self) -> dict:
        """The generator's weights (diffusers names); with DMD also the fake score's (``fake_score.`` prefix)."""
        self._require_loaded()
        sd = dict(self.backbone.transformer.state_dict())
        if self._fake is not None:
            sd.update({f"fake_score.{k}": v for k, v in self._fake.state_dict().items()})
        return sd

    def load_state_dict(self, state: dict) -> None:
        """Load weights saved by :meth:`state_dict` (strict)."""
        self._require_loaded()
        fake = {k[len("fake_score."):]: v for k, v in state.items() if k.startswith("fake_score.")}
        own = {k: v for k, v in state.items() if not k.startswith("fake_score.")}
        self.backbone.transformer.load_state_dict(own, strict=True)
        if self._fake is not None:
            self._fake.load_state_dict(fake, strict=True)
        elif fake:
            raise WeightsError("the state has fake-score weights but this run trains without DMD (dmd_weight 0).")

    def export(self, directory: str) -> None:
        """Write ``InfVSR.ckpt``: the generator in the release's format (a plain state dict with the
        original Wan names, as ``Kai-Liu001/InfVSR`` ``pipeline.py`` loads it). Load it with
        ``backbone.transformer_path=<directory>/InfVSR.ckpt``."""
        self._require_loaded()
        from vsrkit.backbones.convert import convert_wan_to_original

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        sd = convert_wan_to_original({k: v.detach().cpu().contiguous()
                                      for k, v in self.backbone.transformer.state_dict().items()})
        torch.save(sd, out / "InfVSR.ckpt")
        logger.info("exported the InfVSR generator to %s", out / "InfVSR.ckpt")
