"""PS-SR: pseudo-single-step video SR by speculative sampling on Wan2.1-T2V-1.3B.

One window, in one pass in memory (report ``shared/research/pssr.md`` §3-§4; the release needs
two scripts, encodes every window twice and decodes it four times):

1. the LR window is upsampled to the output size and VAE-encoded once: ``z_L`` (normalised Wan
   latents, ``(B, 16, T', h, w)``);
2. base step: the DiT with its patch embedding widened to 32 channels runs on ``[z_L, z_L]`` at
   t = 699 (700 after the release's bf16 rounding) and returns ``v``; the hidden states entering
   the kept blocks (``k_select``) are captured. ``x0_base = z_L - s_b v`` and the next latent is
   ``z = z_L - (s_b - s_1) v``;
3. draft steps at 599, 499, 399: the pruned draft DiT (a ``Linear(2d -> d)`` fusion of
   ``[base feature, own]`` before each kept block) runs on ``[z, z_L]`` with the same base
   features; ``x0 = z - s_i v``, ``z <- z - (s_i - s_{i+1}) v``;
4. only ``x0_base`` and the last draft ``x0`` are decoded; the frequency-domain update (FDU)
   keeps the base's chroma, border and low-frequency luma and mixes in the draft's high
   frequencies (``inference_step_2.py``).

Training (§5): stage ``base`` trains LoRA (rank 32) + the 32-channel patch embedding + head with
latent MSE, VSD (a LoRA fake score and the frozen real score with CFG 5, updated alternately as
two optimizer groups) and pixel MSE + 2 LPIPS on random 160 px crops; stage ``draft`` fine-tunes
the pruned DiT with latent MSE + pixel MSE + 2 LPIPS, one optimizer step per draft timestep on
the detached chain (an optimizer group with ``repeat = 3``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vsrkit.backbones import convert, loading, runtime
from vsrkit.errors import UserError, WeightsError
from vsrkit.methods.protocol import OptimizerGroup, WindowContext, WindowSpec
from vsrkit.methods.pssr.config import PSSRConfig
from vsrkit.methods.pssr.convert import build_lpips, draft_state_to_release, load_draft_state, lora_state_to_release
from vsrkit.methods.pssr.model import BlockInputTap, FrequencyDomainUpdate, LoRALinear, PSSRDraftTransformer
from vsrkit.methods.shared import sample_seed, upsample_frames

logger = logging.getLogger(__name__)

# Channels of the Wan latent; the PS-SR DiT takes twice as many ([latent, condition]).
LATENT_CHANNELS = 16
# Output pixels per DiT token edge (VAE 8x, patch 2x); the release pads to multiples of 16.
HR_MULTIPLE = 16
# Pixels per latent pixel of the Wan VAE (the pixel losses' crop: 20 latents = 160 pixels).
VAE_SCALE = 8
GENERATOR, FAKE_SCORE = "generator", "fake_score"


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


def kept_blocks(num_layers: int, k_select: float) -> list[int]:
    """Blocks of a ``num_layers`` DiT the draft keeps and whose input the base captures.

    The release's predicate, float equality included (``wan_sr_draft.py`` ``shave_dit_draft``,
    ``wan_sr_base.py`` capture): ``b % k_select == k_select - 1``. 30 layers: k 1 -> all, 1.5 or
    3 -> [2, 5, ..., 29], 2 -> [1, 3, ..., 29], 2.5 -> [4, 9, ..., 29] (pssr.md errata).
    """
    return [b for b in range(num_layers) if b % k_select == k_select - 1]


def widen_patch_embedding(conv: nn.Conv3d, in_channels: int) -> nn.Conv3d:
    """A copy of ``conv`` with ``in_channels`` inputs: its weights on the first channels, zeros on
    the new ones, the bias copied (``pipeline_utils.expand_patch_embedding``, §3.3)."""
    if in_channels < conv.in_channels:
        raise ValueError(f"cannot narrow a patch embedding from {conv.in_channels} to {in_channels} channels.")
    new = nn.Conv3d(in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, bias=conv.bias is not None, device=conv.weight.device,
                    dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : conv.in_channels] = conv.weight
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new.requires_grad_(conv.weight.requires_grad)


def bf16_value(value: float) -> float:
    """``value`` rounded to bfloat16, as the release's ``torch.tensor([t], dtype=torch.bfloat16)``."""
    return float(torch.tensor(float(value)).to(torch.bfloat16).float())


def video_fdu(consistent: torch.Tensor, sharp: torch.Tensor, config: PSSRConfig) -> torch.Tensor:
    """The :class:`FrequencyDomainUpdate` of ``config`` on two ``(B, 3, T, H, W)`` videos in
    [-1, 1], frame by frame; returns the same layout and range."""
    b, c, t, h, w = consistent.shape
    flat = [(x.float() * 0.5 + 0.5).permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w) for x in (consistent, sharp)]
    fdu = FrequencyDomainUpdate(alpha=config.fdu_alpha, cutoff=config.fdu_cutoff, order=config.fdu_order,
                                border=config.fdu_border, eps=config.fdu_eps)
    return (fdu(*flat) * 2.0 - 1.0).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def lr_spatial_multiple(scale: int) -> int:
    """Smallest LR multiple whose upscaled size is a multiple of 16 (4 at x4)."""
    return HR_MULTIPLE // math.gcd(HR_MULTIPLE, scale)


def fake_score_weights(timesteps: torch.Tensor) -> torch.Tensor:
    """DiffSynth's ``bsmntw`` timestep weights of the fake-score loss (``FlowMatchScheduler.
    set_timesteps(1000, training=True)``): ``y = exp(-2 ((t - 500) / 1000)^2)``, shifted to a
    minimum of 0 and scaled to a sum of 1000."""
    n = timesteps.numel()
    y = torch.exp(-2 * ((timesteps - n / 2) / n) ** 2)
    shifted = y - y.min()
    return shifted * (n / shifted.sum())


def vsd_loss(x0: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor) -> torch.Tensor:
    """The release's VSD regulariser (``training_loss_reg``, §5.3):
    ``MSE(x0, sg(x0 - (fake - real) / mean|x0 - real|))``.

    Computed with DiffSynth-Studio's ``_variational_score_distillation_loss`` (``diffsynth/
    diffusion/dmd2.py``), which is half of it and adds 1e-6 to the normaliser.
    """
    from diffsynth.diffusion.dmd2 import _variational_score_distillation_loss

    return 2.0 * _variational_score_distillation_loss(x0, real_x0.detach(), fake_x0.detach())


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


class PSSRMethod:
    """PS-SR as a vsrkit method (inference, base and draft training, release loading).

    Args:
        config: The method options.
        backbone: A ``wan`` :class:`~vsrkit.backbones.config.BackboneConfig` (``wan2.1-t2v-1.3b``
            with ``path=<Wan2.1-T2V-1.3B folder>``, or its ``-tiny`` twin).
        scale: Upscaling factor (the release trains x4; any integer works).
    """

    def __init__(self, config: PSSRConfig | None = None, backbone=None, scale: int = 4):
        self.config = config if config is not None else PSSRConfig()
        if backbone is None or getattr(backbone, "family", None) != "wan":
            raise ValueError(f"pssr needs a wan backbone (backbone=wan2.1-t2v-1.3b). "
                             f"Got {getattr(backbone, 'family', None)!r}.")
        if scale < 1:
            raise ValueError(f"`scale` must be >= 1. Got {scale}.")
        self.backbone_config = backbone
        self.scale = int(scale)
        self.backbone = None  # built by load() or setup_training()
        self.draft: PSSRDraftTransformer | None = None
        self.kept: list[int] = []
        self._prompts: dict[str, torch.Tensor] = {}
        self._tagger = None
        # Training only (setup_training): role modules, LPIPS, and the per-batch hand-over
        # between the optimizer groups of one training step (see _handover).
        self._roles: dict[str, dict] = {}
        self._lpips: nn.Module | None = None
        self._handover: dict = {}

    # --- building ----------------------------------------------------------------------------

    def _has_backbone_weights(self) -> bool:
        cfg = self.backbone_config
        return cfg.path is not None or cfg.transformer_path is not None

    def _build_backbone(self, device, dtype):
        from vsrkit.backbones import build_backbone

        bb = build_backbone(self.backbone_config, device, dtype)
        transformer = bb.transformer
        in_channels = transformer.config.in_channels
        if in_channels == LATENT_CHANNELS:
            transformer.patch_embedding = widen_patch_embedding(transformer.patch_embedding, 2 * LATENT_CHANNELS)
            transformer.register_to_config(in_channels=2 * LATENT_CHANNELS)
        elif in_channels != 2 * LATENT_CHANNELS:
            raise WeightsError(f"`backbone` holds a Wan transformer with {in_channels} input channels; PS-SR needs "
                               f"Wan2.1-T2V-1.3B's 16 (widened to 32) or an already widened 32.")
        self.kept = kept_blocks(len(transformer.blocks), self.config.k_select)
        if not self.kept:
            logger.warning("k_select=%s keeps none of the %d blocks of this transformer: the draft is the patch "
                           "embedding and head alone (use k_select 1 or 2 on tiny presets to exercise the fusion).",
                           self.config.k_select, len(transformer.blocks))
        return bb

    def _fuse_base_weights(self, transformer: nn.Module) -> None:
        """Fuse ``base_weights`` into the widened transformer (W += B A, patch embedding and head
        copied; DiffSynth's ``GeneralLoRALoader`` with alpha 1, §5.5)."""
        path = self.config.base_weights
        keys = set(loading.file_keys(Path(path))) if str(path).endswith(".safetensors") else None
        if keys is not None and "patch_embedding.weight" not in keys:
            raise WeightsError(f"`method.base_weights` ({path}) has no `patch_embedding.weight`: it is not a PS-SR base "
                               f"file (peft LoRA + the 32-channel patch embedding + head.head).")
        loading.fuse_lora(transformer, path, 1.0, "wan")

    def _empty_draft(self, transformer: nn.Module) -> PSSRDraftTransformer:
        """A draft for ``transformer``'s config with ``meta`` parameters (real RoPE buffers)."""
        return runtime.build_empty(PSSRDraftTransformer, {"config": dict(transformer.config),
                                                          "num_blocks": len(self.kept)})

    def _new_draft(self, transformer: nn.Module, device, dtype) -> PSSRDraftTransformer:
        """The draft as ``train_draft.py`` builds it: copies of the (merged) base's embeddings,
        kept blocks and head, fusion layers ``[I | 0]``."""
        draft = self._empty_draft(transformer)
        base = transformer.state_dict()
        state = {}
        for key, param in draft.state_dict().items():
            m = re.match(r"blocks\.(\d+)\.(.+)", key)
            if m:
                state[key] = base[f"blocks.{self.kept[int(m.group(1))]}.{m.group(2)}"].clone()
            elif key.startswith("fc_layers."):
                state[key] = torch.zeros(param.shape, device=device, dtype=dtype)
            else:
                state[key] = base[key].clone()
        draft.load_state_dict(state, strict=True, assign=True)
        draft.init_fusion_to_base()
        return runtime.cast_(draft, dtype).to(device)

    def _finish_draft(self, draft: PSSRDraftTransformer) -> PSSRDraftTransformer:
        """The backbone's runtime switches, applied to the draft as to the base: the same SDPA
        kernel pin, or the same diffusers dispatch backend as the base's attention processors."""
        cfg = self.backbone_config
        base_backends = {getattr(m.processor, "_attention_backend", None)
                         for m in self.backbone.transformer.modules() if hasattr(m, "processor")}
        if len(base_backends) == 1 and next(iter(base_backends)) is not None:
            for module in draft.modules():
                if hasattr(module, "processor"):
                    module.processor._attention_backend = next(iter(base_backends))
        else:
            runtime.apply_attention(draft, cfg.attention)
        if cfg.compile != "off":
            runtime.apply_compile(draft, cfg.compile, fullgraph=True)
        return draft

    def load(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        """Build the backbone and the draft and load the PS-SR weights.

        Args:
            device: Where the models run.
            dtype: Compute dtype of both DiTs; ``None`` uses ``backbone.dtype``.

        Raises:
            UserError: A backbone with weights but no ``method.base_weights`` /
                ``method.draft_weights`` (a plain Wan T2V is not PS-SR), checked before any load.
            WeightsError: A weights file does not match.
        """
        c = self.config
        if self.uses_tagger and importlib.util.find_spec("ram") is None:
            raise UserError("the RAM/DAPE tagger needs SeeSR's `ram` package (ram.models.ram_lora, ram.inference_ram), "
                            "which vsrkit does not ship; install it or use method.tagger=none.")
        if self._has_backbone_weights():
            missing = [n for n in ("base_weights", "draft_weights") if getattr(c, n) is None]
            if missing:
                raise UserError(f"pssr with backbone weights needs {' and '.join('method.' + n for n in missing)} "
                                f"(the released base.safetensors / draft.safetensors).")
        bb = self._build_backbone(device, dtype)
        self.backbone = bb
        if c.base_weights is not None:
            self._fuse_base_weights(bb.transformer)
        if c.draft_weights is not None:
            draft = self._empty_draft(bb.transformer)
            load_draft_state(draft, loading.read_state_dict(c.draft_weights), c.draft_weights)
            draft = runtime.cast_(draft, bb.dtype).to(device)
        else:
            draft = self._new_draft(bb.transformer, device, bb.dtype)
        self.draft = self._finish_draft(draft.eval().requires_grad_(False))
        if not self.uses_tagger:
            logger.info("pssr prompt: %r (%s)", self._prompt_text(None),
                        "with method.tags" if c.tags else "no RAM/DAPE tagger: the fixed prompt alone")

    def _require_loaded(self) -> None:
        if self.backbone is None:
            raise RuntimeError("PSSRMethod.load() (or setup_training()) must run before this call.")

    # --- prompts -----------------------------------------------------------------------------

    def _prompt_text(self, tags: str | None, prompt: str | None = None) -> str:
        base = prompt or self.config.prompt
        tags = tags if tags is not None else self.config.tags
        return f"{base}, {tags}" if tags else base

    def _embed(self, text: str) -> torch.Tensor:
        if text not in self._prompts:
            self._prompts[text] = self.backbone.prompt_embeds(text)
        return self._prompts[text]

    @property
    def uses_tagger(self) -> bool:
        """Whether windows get RAM/DAPE tags (``tagger=ram``, or ``auto`` with both weight files)."""
        c = self.config
        return c.tagger == "ram" or (c.tagger == "auto" and c.ram_weights is not None and c.dape_weights is not None)

    def _window_embeds(self, hr: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.uses_tagger:
            return self._embed(self._prompt_text(None))
        return self._embed(self._prompt_text(self._ram_tags(hr, generator)))

    def _ram_tags(self, hr: torch.Tensor, generator: torch.Generator | None) -> str:
        """RAM + DAPE tags of one frame of the window, as the release draws them (``ram_sample=1``:
        one random frame, resized to 384x384, ImageNet-normalised, bf16; §3.1). The frame comes
        from the window's seeded generator (the release's is unseeded)."""
        if self._tagger is None:
            from ram.models.ram_lora import ram as build_ram

            c = self.config
            model = build_ram(pretrained=c.ram_weights, pretrained_condition=c.dape_weights, image_size=384,
                              vit="swin_l")
            self._tagger = model.eval().to(hr.device, torch.bfloat16)
        from ram import inference_ram
        from torchvision.transforms import functional as TF

        t = hr.shape[2]
        gen_device = generator.device if generator is not None else "cpu"
        index = int(torch.randint(0, t, (1,), generator=generator, device=gen_device))
        frame = (hr[:1, :, index].float() + 1) / 2
        frame = TF.resize(frame, [384, 384])
        frame = TF.normalize(frame, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        captions = inference_ram(frame.to(torch.bfloat16), self._tagger)
        words = [w for s in captions for w in s.split(", ")]
        return ", ".join(dict.fromkeys(words))  # the release's set(), in a stable order

    # --- inference ---------------------------------------------------------------------------

    def window_spec(self) -> WindowSpec:
        """``4k+1`` frames (last frame repeated), LR padded (replicate) so the output is a multiple
        of 16; 33-frame windows overlapping by 16 and 720x1280 output tiles overlapping by 128."""
        c = self.config
        m = lr_spatial_multiple(self.scale)
        tile = tile_width = None
        overlap = 0
        if c.tile is not None:
            tile, tile_width = (max(m, round(v / self.scale / m) * m) for v in c.tile)
            overlap = min(round(c.tile_overlap / self.scale), min(tile, tile_width) - 1)
            tile_width = None if tile_width == tile else tile_width
        return WindowSpec(scale=self.scale, frame_multiple=4, frame_offset=1, spatial_multiple=m,
                          pad_mode="replicate", window=c.window, overlap=c.overlap if c.window is not None else 0,
                          tile=tile, tile_overlap=overlap, tile_width=tile_width)

    def schedule(self) -> list[tuple[float, float]]:
        """``(model timestep, sigma)`` of the base step, each draft step and the final 0.

        sigma is the shift-5 grid entry nearest to the (bf16-rounded) timestep (DiffSynth's
        ``argmin`` lookup, ``Wan_SR/schedulers/flow_match.py``): 0.69982, 0.60031, 0.50060, 0.40082
        and 0.00498 with the release's rounding (pssr.md §3.2).
        """
        c, bb = self.config, self.backbone
        steps = [c.timestep_base, *c.timesteps_draft, 0]
        return [(bf16_value(t) if c.bf16_timesteps else float(t), bb.sigma(t, bf16_round=c.bf16_timesteps))
                for t in steps]

    def base_velocity(self, latents: torch.Tensor, timestep: float, embeds: torch.Tensor,
                      capture: bool = False) -> tuple[torch.Tensor, list]:
        """The base DiT on ``[z, cond]`` ``(B, 32, T, h, w)``; returns ``v`` (float32) and, with
        ``capture``, the hidden states entering the kept blocks."""
        if not capture:
            return self.backbone.predict(latents, timestep, embeds), []
        with BlockInputTap.capture(self.backbone.transformer, self.kept) as features:
            v = self.backbone.predict(latents, timestep, embeds)
        return v, list(features)

    def draft_velocity(self, latents: torch.Tensor, timestep: float, embeds: torch.Tensor,
                       features: list, draft: nn.Module | None = None) -> torch.Tensor:
        """The draft DiT on ``[z, cond]`` with the base features; ``v`` in float32."""
        draft = draft if draft is not None else self.draft
        dtype = draft.patch_embedding.weight.dtype
        device = draft.patch_embedding.weight.device
        b = latents.shape[0]
        t = torch.full((b,), float(timestep), device=device, dtype=torch.float32)
        v = draft(latents.to(device, dtype), t, embeds.to(device, dtype).expand(b, -1, -1), features)
        return v.float()

    def condition(self, z_lr: torch.Tensor) -> torch.Tensor:
        """The draft's condition channels: ``z_L`` or zeros (``draft_condition``)."""
        return z_lr if self.config.draft_condition == "lq" else torch.zeros_like(z_lr)

    @torch.no_grad()
    def upscale(self, lq: torch.Tensor, context: WindowContext) -> torch.Tensor:
        """One window.

        Args:
            lq: ``(B, 3, T, H, W)`` float32 in [-1, 1], ``T = 4k+1``, ``H * scale`` and
                ``W * scale`` multiples of 16.
            context: Seeded generator (the tagger's frame choice) and the progress callback.

        Returns:
            ``(B, 3, T, H*scale, W*scale)`` float32 in [-1, 1].
        """
        self._require_loaded()
        c, bb = self.config, self.backbone
        b, _, t, h, w = lq.shape
        size = (h * self.scale, w * self.scale)
        if (t - 1) % 4 or size[0] % HR_MULTIPLE or size[1] % HR_MULTIPLE:
            raise ValueError(f"pssr windows must have 4k+1 frames and an output size that is a multiple of 16. "
                             f"Got T={t}, output {size}.")
        hr = upsample_frames(lq.to(bb.device, torch.float32), size, c.upscale_mode).clamp_(-1.0, 1.0)
        embeds = self._window_embeds(hr, context.generator)
        steps = self.schedule()
        n = len(c.timesteps_draft) + 1

        context.stage("encode")
        z_lr = bb.vae.encode(hr)
        del hr
        context.stage("denoise", 0, n)
        (t_b, s_b), (_, s_next) = steps[0], steps[1]
        v, features = self.base_velocity(torch.cat([z_lr, z_lr], dim=1), t_b, embeds, capture=True)
        x0_base = z_lr - s_b * v
        z = z_lr - (s_b - s_next) * v
        del v
        cond = self.condition(z_lr)
        sharp = []
        for i in range(1, n):
            context.stage("denoise", i, n)
            (t_i, s_i), (_, s_next) = steps[i], steps[i + 1]
            v = self.draft_velocity(torch.cat([z, cond], dim=1), t_i, embeds, features)
            x0 = z - s_i * v
            z = z - (s_i - s_next) * v
            if c.fdu_mode == "every_step" or i == n - 1:
                sharp.append(x0)
        del features, z, v, cond, z_lr

        context.stage("decode")
        out = bb.vae.decode(x0_base)
        for x0 in sharp:
            context.stage("decode")
            draft_video = bb.vae.decode(x0)
            context.stage("fdu")
            out = video_fdu(out, draft_video, c)
        return out.float().clamp_(-1.0, 1.0)

    # --- training: setup ------------------------------------------------------------------------

    def training_data_spec(self) -> dict:
        """33-frame (``4k+1``) clips at 720x1280 (release ``--num_frames 33 --height 720 --width 1280``)."""
        c = self.config
        return {"num_frames": c.train_frames, "hr_size": tuple(c.train_size), "frame_multiple": 4, "frame_offset": 1}

    def setup_training(self, device: torch.device) -> None:
        """Build the models of the configured stage.

        ``base``: the frozen Wan DiT (backbone dtype) gets two LoRA adapters (generator and, with
        VSD, the fake score); the generator's 32-channel patch embedding and head and the fake
        score's 16-channel ones are trainable float32 copies; the stock patch embedding and head
        serve the frozen real score. ``draft``: the base (``base_weights`` fused) is frozen and
        the draft, built from it, trains in float32.
        """
        c = self.config
        device = torch.device(device)
        if c.stage == "draft" and c.base_weights is None and self._has_backbone_weights():
            raise UserError("method.stage=draft needs method.base_weights (the trained base.safetensors) to build "
                            "the draft from.")
        if c.lpips_weight > 0:  # fails before the big load when files are missing
            from vsrkit.backbones.presets import get_preset

            self._lpips = build_lpips(c, get_preset(self.backbone_config.preset).tiny, device)
        bb = self._build_backbone(device, None)
        self.backbone = bb
        transformer = bb.transformer
        vae = bb.vae.model
        vae.requires_grad_(False).eval()
        if c.stage == "draft":
            if c.base_weights is not None:
                self._fuse_base_weights(transformer)
            self.draft = self._finish_draft(self._new_draft(transformer, device, torch.float32))
            self.draft.requires_grad_(True).train()
            self.draft.gradient_checkpointing = self.backbone_config.gradient_checkpointing
            return
        # Base stage: the stock 16-channel patch embedding and head stay for the real score.
        widened = transformer.patch_embedding
        stock_patch = nn.Conv3d(LATENT_CHANNELS, widened.out_channels, kernel_size=widened.kernel_size,
                                stride=widened.stride, device=widened.weight.device, dtype=widened.weight.dtype)
        with torch.no_grad():
            stock_patch.weight.copy_(widened.weight[:, :LATENT_CHANNELS])
            stock_patch.bias.copy_(widened.bias)
        stock_head = transformer.proj_out
        adapters = {GENERATOR: c.lora_rank, **({FAKE_SCORE: c.lora_rank} if c.vsd_weight > 0 else {})}
        layers = LoRALinear.inject(transformer, adapters, seed=c.seed)
        self._roles = {
            GENERATOR: {"patch": _trainable_copy(transformer.patch_embedding), "head": _trainable_copy(stock_head),
                        "adapter": GENERATOR},
            "real_score": {"patch": stock_patch.requires_grad_(False), "head": stock_head, "adapter": None},
        }
        if FAKE_SCORE in adapters:
            self._roles[FAKE_SCORE] = {"patch": _trainable_copy(stock_patch), "head": _trainable_copy(stock_head),
                                       "adapter": FAKE_SCORE}
        self._lora_layers = layers
        if c.base_weights is not None:
            self._load_release_lora(GENERATOR, loading.read_state_dict(c.base_weights), c.base_weights)
        transformer.train()

    # --- training: roles and parameters -----------------------------------------------------------

    def _role_params(self, role: str) -> dict[str, nn.Parameter]:
        r = self._roles[role]
        params = {f"{role}.patch_embedding.{k}": p for k, p in r["patch"].named_parameters()}
        params.update({f"{role}.proj_out.{k}": p for k, p in r["head"].named_parameters()})
        for name, layer in self._lora_layers.items():
            params[f"{role}.{name}.lora_A.weight"] = layer.lora_A[r["adapter"]].weight
            params[f"{role}.{name}.lora_B.weight"] = layer.lora_B[r["adapter"]].weight
        return params

    def _named_trainable(self) -> dict[str, nn.Parameter]:
        if self.config.stage == "draft":
            return {f"draft.{k}": p for k, p in self.draft.named_parameters()}
        out = self._role_params(GENERATOR)
        if FAKE_SCORE in self._roles:
            out.update(self._role_params(FAKE_SCORE))
        return out

    def optimizer_groups(self) -> list[OptimizerGroup]:
        """``base``: generator, then fake score (VSD's alternating updates, §5.3). ``draft``: one
        group stepping once per draft timestep of each clip (``repeat``), §5.4."""
        self._require_loaded()
        c = self.config
        kw = dict(lr=c.lr, betas=tuple(c.betas) if c.betas is not None else None, weight_decay=c.weight_decay,
                  max_grad_norm=c.max_grad_norm)
        if c.stage == "draft":
            return [OptimizerGroup("draft", list(self.draft.parameters()), repeat=len(c.timesteps_draft), **kw)]
        groups = [OptimizerGroup(GENERATOR, list(self._role_params(GENERATOR).values()), **kw)]
        if FAKE_SCORE in self._roles:
            groups.append(OptimizerGroup(FAKE_SCORE, list(self._role_params(FAKE_SCORE).values()), ema=False, **kw))
        return groups

    def trainable_parameters(self) -> list:
        """Every parameter any optimizer group trains."""
        self._require_loaded()
        return list(self._named_trainable().values())

    def training_modules(self) -> dict:
        """The draft (FSDP, draft stage only; the base stage has two optimizer groups)."""
        if self.config.stage != "draft":
            raise UserError("FSDP trains PS-SR's draft stage only; use the DDP preset for the base stage.")
        return {"draft": self.draft}

    @contextlib.contextmanager
    def _as(self, role: str):
        """Run the shared DiT as ``role``: its patch embedding, head and LoRA adapter swapped in."""
        transformer, r = self.backbone.transformer, self._roles[role]
        saved = (transformer.patch_embedding, transformer.proj_out)
        transformer.patch_embedding, transformer.proj_out = r["patch"], r["head"]
        for layer in self._lora_layers.values():
            layer.active = r["adapter"]
        try:
            yield
        finally:
            transformer.patch_embedding, transformer.proj_out = saved
            for layer in self._lora_layers.values():
                layer.active = None

    def _dit(self, latents: torch.Tensor, timestep: float, embeds: torch.Tensor) -> torch.Tensor:
        """One forward of the shared DiT as the current role (float32 velocity)."""
        bb = self.backbone
        b = latents.shape[0]
        t = torch.full((b,), float(timestep), device=bb.device, dtype=torch.float32)
        out = bb.transformer(hidden_states=latents.to(bb.device, bb.dtype), timestep=t,
                             encoder_hidden_states=embeds.to(bb.device, bb.dtype).expand(b, -1, -1),
                             return_dict=False)[0]
        return out.float()

    # --- training: one step -------------------------------------------------------------------

    def _generators(self, batch: dict) -> torch.Generator:
        step = int(batch.get("step", 0))
        indices = batch.get("index")
        b = batch["hq"].shape[0]
        indices = [int(i) for i in (indices.tolist() if torch.is_tensor(indices) else (indices or range(b)))]
        return torch.Generator().manual_seed(sample_seed(self.config.seed, step, *indices))

    @staticmethod
    def _batch_key(batch: dict) -> tuple:
        indices = batch.get("index")
        indices = tuple(int(i) for i in indices.tolist()) if torch.is_tensor(indices) else tuple(indices or ())
        return int(batch.get("step", 0)), indices, tuple(batch["hq"].shape)

    def _prepare(self, batch: dict) -> dict:
        """LR upsampled to the HR size, both clips encoded, the prompt embedded; kept for the
        other groups (and repeats) of the same training step."""
        key = self._batch_key(batch)
        entry = self._handover.get(key)
        if entry is not None:
            return entry
        # Only the current step's batches are kept (several with gradient accumulation).
        self._handover = {k: v for k, v in self._handover.items() if k[0] == key[0]}
        c, bb = self.config, self.backbone
        hq, lq = batch["hq"], batch["lq"]
        if hq.dim() != 5 or lq.dim() != 5 or hq.shape[:3] != lq.shape[:3]:
            raise ValueError(f"batch `hq`/`lq` must be (B, 3, T, H, W) with equal B and T. "
                             f"Got {tuple(hq.shape)} and {tuple(lq.shape)}.")
        if (hq.shape[2] - 1) % 4 or hq.shape[-2] % HR_MULTIPLE or hq.shape[-1] % HR_MULTIPLE:
            raise UserError(f"pssr trains on 4k+1-frame clips with HR sizes that are multiples of 16. "
                            f"Got {tuple(hq.shape[2:])}.")
        gen = self._generators(batch)
        modes = ["area", "bilinear", "bicubic"]
        ups = []
        for i in range(lq.shape[0]):
            mode = c.train_upscale_mode
            if mode == "random":
                mode = modes[int(torch.randint(0, 3, (), generator=gen))]
            ups.append(upsample_frames(lq[i:i + 1].float(), hq.shape[-2:], mode))
        lq_up = torch.cat(ups).clamp(-1.0, 1.0)
        prompts = batch.get("prompt") or [""] * hq.shape[0]
        with torch.no_grad():
            entry = {
                "z_lr": bb.vae.encode(lq_up), "z_hq": bb.vae.encode(hq.float()), "hq": hq.float(),
                "embeds": torch.cat([self._embed(self._prompt_text(None, p or None)) for p in prompts]),
                "gen": gen,
            }
        self._handover[key] = entry
        return entry

    def _pixel_losses(self, x0: torch.Tensor, hq: torch.Tensor, gen: torch.Generator) -> dict:
        """Pixel MSE and LPIPS on one random ``pixel_crop`` latent crop decoded with gradients
        (``training_loss_pixel``: 20 latents = 160 pixels, all frames, LPIPS per frame); nothing
        (no decode, no random draw) when both weights are 0, as the release skips them."""
        c = self.config
        if c.pixel_weight == 0 and c.lpips_weight == 0:
            return {}
        _, _, _, h, w = x0.shape
        ch, cw = min(c.pixel_crop, h), min(c.pixel_crop, w)
        top = int(torch.randint(0, h - ch + 1, (), generator=gen))
        left = int(torch.randint(0, w - cw + 1, (), generator=gen))
        pred = self.backbone.vae.decode(x0[..., top:top + ch, left:left + cw], grad=True).float()
        target = hq[..., top * VAE_SCALE:(top + ch) * VAE_SCALE, left * VAE_SCALE:(left + cw) * VAE_SCALE]
        out = {"pixel_mse": F.mse_loss(pred, target)}
        if c.lpips_weight > 0:
            b, k, t, hh, ww = pred.shape
            flat = [x.permute(0, 2, 1, 3, 4).reshape(b * t, k, hh, ww) for x in (pred, target)]
            out["lpips"] = self._lpips(*flat).mean()
        return out

    def _weighted(self, latent_mse: torch.Tensor, pixel: dict) -> torch.Tensor:
        c = self.config
        loss = c.latent_weight * latent_mse
        if "pixel_mse" in pixel:
            loss = loss + c.pixel_weight * pixel["pixel_mse"]
        if "lpips" in pixel:
            loss = loss + c.lpips_weight * pixel["lpips"]
        return loss

    def training_step(self, batch: dict, optimizer_name: str | None = None) -> tuple[torch.Tensor, dict]:
        """One micro-batch for one optimizer group.

        Args:
            batch: ``hq (B, 3, T, H, W)`` and ``lq (B, 3, T, h, w)`` float32 in [-1, 1],
                ``prompt``, ``index (B,)``, ``step`` int; ``repeat`` (draft stage: which draft step).
            optimizer_name: ``generator`` / ``fake_score`` (base) or ``draft``; ``None`` = the first.

        Returns:
            ``(loss, {name: float})``.
        """
        self._require_loaded()
        if self.config.stage == "draft":
            return self._draft_step(batch, int(batch.get("repeat", 0)))
        name = optimizer_name or GENERATOR
        if name == GENERATOR:
            return self._generator_step(batch)
        if name == FAKE_SCORE and FAKE_SCORE in self._roles:
            return self._fake_score_step(batch)
        raise ValueError(f"pssr (stage base) has no optimizer group `{name}`.")

    def _generator_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        c = self.config
        p = self._prepare(batch)
        steps = self.schedule()
        t_b, s_b = steps[0]
        with self._as(GENERATOR):
            v = self._dit(torch.cat([p["z_lr"], p["z_lr"]], dim=1), t_b, p["embeds"])
        x0 = p["z_lr"] - s_b * v
        latent_mse = F.mse_loss(x0, p["z_hq"])
        pixel = self._pixel_losses(x0, p["hq"], p["gen"])
        loss = self._weighted(latent_mse, pixel)
        logs = {"latent_mse": float(latent_mse.detach()), **{k: float(v_.detach()) for k, v_ in pixel.items()}}
        if FAKE_SCORE in self._roles:
            reg, logs["vsd_t"] = self._vsd(x0, p)
            loss = loss + c.vsd_weight * reg
            logs["vsd"] = float(reg.detach())
        p["x0"] = x0.detach()  # the fake score trains on this prediction (release order)
        return loss, logs

    def _grid_timestep(self, gen: torch.Generator, low: float = -1.0, high: float = 1001.0) -> tuple[float, float]:
        """A timestep drawn uniformly from the 1000-step grid (redrawn outside [low, high]); the
        model timestep and its sigma, with the release's bf16 rounding when configured."""
        c, bb = self.config, self.backbone
        while True:
            t = float(bb.timesteps[int(torch.randint(0, len(bb.timesteps), (), generator=gen))])
            t_model = bf16_value(t) if c.bf16_timesteps else t
            if low <= t_model <= high:
                return t_model, bb.sigma(t_model)

    def _vsd(self, x0: torch.Tensor, p: dict) -> tuple[torch.Tensor, float]:
        """VSD (``training_loss_reg``): noise ``sg(x0)`` at a random t in [20, 980], compare the
        fake score's and the CFG real score's clean predictions (both without gradients).
        Returns the loss and the timestep."""
        from diffsynth.diffusion.dmd2 import _forward_process, flow_to_x0

        c = self.config
        t, sigma = self._grid_timestep(p["gen"], c.vsd_t_min, c.vsd_t_max)
        eps = torch.randn(x0.shape, generator=p["gen"]).to(x0.device)
        x_t = _forward_process(x0.detach(), eps, sigma)
        with torch.no_grad():
            with self._as(FAKE_SCORE):
                fake_x0 = flow_to_x0(x_t, self._dit(x_t, t, p["embeds"]), sigma)
            with self._as("real_score"):
                v = self._dit(x_t, t, p["embeds"])
                if c.vsd_cfg != 1.0:
                    v_neg = self._dit(x_t, t, self._embed(c.negative_prompt))
                    v = v_neg + c.vsd_cfg * (v - v_neg)
            real_x0 = flow_to_x0(x_t, v, sigma)
        return vsd_loss(x0, real_x0, fake_x0), t

    def _fake_score_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """``training_loss_diff``: flow matching of the fake score on ``sg(x0)`` over the whole
        grid, weighted by DiffSynth's bsmntw timestep weights."""
        from diffsynth.diffusion.dmd2 import _forward_process

        p = self._prepare(batch)
        x0 = p.get("x0")
        if x0 is None:  # the generator group did not run on this batch: predict with it now
            with torch.no_grad(), self._as(GENERATOR):
                t_b, s_b = self.schedule()[0]
                x0 = p["z_lr"] - s_b * self._dit(torch.cat([p["z_lr"], p["z_lr"]], dim=1), t_b, p["embeds"])
        t, sigma = self._grid_timestep(p["gen"])
        eps = torch.randn(x0.shape, generator=p["gen"]).to(x0.device)
        x_t = _forward_process(x0, eps, sigma)
        with self._as(FAKE_SCORE):
            v = self._dit(x_t, t, p["embeds"])
        bb = self.backbone
        weight = float(fake_score_weights(bb.timesteps)[(bb.timesteps - t).abs().argmin()])
        flow = F.mse_loss(v, eps - x0)
        return flow * weight, {"flow_mse": float(flow.detach()), "t": t}

    def _draft_step(self, batch: dict, repeat: int) -> tuple[torch.Tensor, dict]:
        """Draft step ``repeat`` of the chain (``training_loss_l2_draft``): input ``[z_t, cond]``,
        loss on its ``x0``; the next step starts from this step's detached ``z``."""
        c = self.config
        p = self._prepare(batch)
        steps = self.schedule()
        chain = p.get("chain")
        if chain is None or chain["next"] != repeat:
            chain = p["chain"] = self._draft_chain(p, repeat)
        (t_i, s_i), (_, s_next) = steps[repeat + 1], steps[repeat + 2]
        z = chain["z"]
        v = self.draft_velocity(torch.cat([z, self.condition(p["z_lr"])], dim=1), t_i, p["embeds"],
                                chain["features"])
        x0 = z - s_i * v
        chain["z"], chain["next"] = (z - (s_i - s_next) * v).detach(), repeat + 1
        latent_mse = F.mse_loss(x0, p["z_hq"])
        pixel = self._pixel_losses(x0, p["hq"], p["gen"])
        logs = {f"latent_mse_{c.timesteps_draft[repeat]}": float(latent_mse.detach())}
        logs.update({f"{k}_{c.timesteps_draft[repeat]}": float(v_.detach()) for k, v_ in pixel.items()})
        return self._weighted(latent_mse, pixel), logs

    @torch.no_grad()
    def _draft_chain(self, p: dict, upto: int) -> dict:
        """The frozen base's step (features, next latent), then ``upto`` draft steps without
        gradients: the input of draft step ``upto``."""
        steps = self.schedule()
        (t_b, s_b), (_, s_next) = steps[0], steps[1]
        v, features = self.base_velocity(torch.cat([p["z_lr"], p["z_lr"]], dim=1), t_b, p["embeds"], capture=True)
        z = p["z_lr"] - (s_b - s_next) * v
        for i in range(upto):
            (t_i, s_i), (_, s_next) = steps[i + 1], steps[i + 2]
            v = self.draft_velocity(torch.cat([z, self.condition(p["z_lr"])], dim=1), t_i, p["embeds"], features)
            z = z - (s_i - s_next) * v
        return {"z": z, "features": features, "next": upto}

    # --- training: state and export ------------------------------------------------------------

    def state_dict(self) -> dict:
        """What trains, with clean keys (``generator.*``/``fake_score.*`` or ``draft.*``)."""
        self._require_loaded()
        return {k: p.detach() for k, p in self._named_trainable().items()}

    def load_state_dict(self, state: dict) -> None:
        """Load what :meth:`state_dict` saved (strict)."""
        self._require_loaded()
        params = self._named_trainable()
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise WeightsError(f"pssr checkpoint does not match the {self.config.stage} stage: missing "
                               f"{missing[:3]}, unexpected {unexpected[:3]}.")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state[k].to(p.dtype))

    def _load_release_lora(self, role: str, sd: dict, source: str) -> None:
        """A release-format LoRA file (``base.safetensors`` / ``latest_reg.safetensors``) into the
        trainable adapter, patch embedding and head of ``role`` (to continue training)."""
        lora = convert.parse_lora(sd)
        params = self._role_params(role)
        with torch.no_grad():
            for module, (a, b, _) in lora.pairs.items():
                name = convert.wan_module_to_diffusers(module) or module
                key_a, key_b = f"{role}.{name}.lora_A.weight", f"{role}.{name}.lora_B.weight"
                if key_a not in params or params[key_a].shape != a.shape or params[key_b].shape != b.shape:
                    raise WeightsError(f"`{source}`: LoRA `{module}` does not match the rank-{self.config.lora_rank} "
                                       f"adapter of the {role}.")
                params[key_a].copy_(a)
                params[key_b].copy_(b)
            for key, value in lora.extras.items():
                name = convert.wan_key_to_diffusers(key) or key
                target = f"{role}.{name}"
                if target not in params or params[target].shape != value.shape:
                    raise WeightsError(f"`{source}`: tensor `{key}` has no counterpart of shape {tuple(value.shape)} "
                                       f"in the {role}.")
                params[target].copy_(value)

    def release_lora_state(self, role: str) -> dict:
        """The ``role``'s adapter, patch embedding and head in the release's file format."""
        return lora_state_to_release({k[len(role) + 1:]: p for k, p in self._role_params(role).items()})

    def export(self, directory: str) -> None:
        """Write what inference (vsrkit's and the release's) loads.

        ``base`` stage: ``base.safetensors`` (load it with ``method.base_weights=``) and
        ``reg.safetensors`` (the fake score, the release's ``latest_reg.safetensors``). ``draft``
        stage: ``draft.safetensors`` (``method.draft_weights=``), DiffSynth names, float32.
        """
        self._require_loaded()
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if self.config.stage == "draft":
            state = {k: v.detach().float().contiguous().cpu() for k, v in self.draft.state_dict().items()}
            save_file(draft_state_to_release(state), str(out / "draft.safetensors"))
        else:
            save_file(self.release_lora_state(GENERATOR), str(out / "base.safetensors"))
            if FAKE_SCORE in self._roles:
                save_file(self.release_lora_state(FAKE_SCORE), str(out / "reg.safetensors"))
        logger.info("exported PS-SR %s weights to %s", self.config.stage, out)


def _trainable_copy(module: nn.Module) -> nn.Module:
    """A float32 copy of ``module`` whose parameters train (the frozen original stays)."""
    import copy

    return copy.deepcopy(module).float().requires_grad_(True)


