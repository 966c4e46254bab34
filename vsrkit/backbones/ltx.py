"""LTX-Video 2B backbone (TurboVSR's base): transformer, normalised VAE, scheduler, prompts with masks.

Layouts: videos are ``(B, 3, T, H, W)`` float in [-1, 1] with ``T = 8k + 1`` and ``H, W``
multiples of 32; latents are ``(B, 128, (T - 1) / 8 + 1, H / 32, W / 32)`` float32 normalised
per channel as diffusers' LTX pipelines do: ``z = (mu - mean_c) * scaling_factor / std_c`` with
the checkpoint's ``latents_mean/std`` (random-init VAEs have mean 0, std 1). The 0.9.1 decoder
is timestep-conditioned: :meth:`LTXVAE.decode` mixes noise into the latents and passes a decode
timestep (0.05 / 0.025 by default, turbovsr_and_speed.md §A.2). The transformer takes packed
tokens; :meth:`LTXBackbone.predict` packs and unpacks.

The LTX decoder is not causal, so there is no exact streaming decoder: long clips go through
diffusers' temporal tiling (:meth:`LTXVAE.enable_framewise`, overlapping frame tiles blended
linearly), which bounds memory by the tile length instead of the clip length.
"""

from __future__ import annotations

import logging

import torch

from vsrkit.backbones.build import BuiltModels, build_models
from vsrkit.backbones.config import BackboneConfig
from vsrkit.backbones.text import PromptEncoder

logger = logging.getLogger(__name__)


class LTXVAE:
    """``AutoencoderKLLTXVideo`` with normalised latents, decode timestep/noise and tiling switches.

    Args:
        model: The diffusers VAE.
        dtype: Its dtype.
        decode_timestep: Default timestep of the timestep-conditioned decoder.
        decode_noise_scale: Default share of noise mixed into the latents before decoding.
        device: Execution device (``None``: where the parameters are; differs under CPU offload).
    """

    def __init__(self, model, dtype: torch.dtype, decode_timestep: float = 0.0, decode_noise_scale: float = 0.0,
                 device: torch.device | None = None):
        self.model = model
        self.dtype = dtype
        self._device = device
        self.latent_channels = int(model.config.latent_channels)
        self.spatial_compression = int(model.spatial_compression_ratio)
        self.temporal_compression = int(model.temporal_compression_ratio)
        self.scaling_factor = float(model.config.scaling_factor)
        self.decode_timestep = decode_timestep
        self.decode_noise_scale = decode_noise_scale

    @property
    def device(self) -> torch.device:
        return self._device if self._device is not None else next(self.model.parameters()).device

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a ``frames``-frame clip (``frames`` must be ``8k + 1``)."""
        m = self.temporal_compression
        if frames < 1 or (frames - 1) % m:
            raise ValueError(f"LTX VAE needs {m}k+1 frames. Got {frames}.")
        return (frames - 1) // m + 1

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """Raw VAE mean -> ``(mu - mean) * scaling / std`` (float32)."""
        mean = self.model.latents_mean.view(1, -1, 1, 1, 1).to(mu.device, torch.float32)
        std = self.model.latents_std.view(1, -1, 1, 1, 1).to(mu.device, torch.float32)
        return (mu.float() - mean) * self.scaling_factor / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        mean = self.model.latents_mean.view(1, -1, 1, 1, 1).to(z.device, torch.float32)
        std = self.model.latents_std.view(1, -1, 1, 1, 1).to(z.device, torch.float32)
        return z.float() * std / self.scaling_factor + mean

    def enable_tiling(self, tile: int | None = None, overlap: int | None = None) -> None:
        """Tile frames spatially (diffusers default 512 px tiles, stride 448).

        Args:
            tile: Tile edge in pixels (multiple of 32).
            overlap: Pixels shared by neighbouring tiles (multiple of 32).
        """
        kwargs = {}
        if tile is not None:
            kwargs.update(tile_sample_min_height=tile, tile_sample_min_width=tile)
            if overlap is not None:
                kwargs.update(tile_sample_stride_height=tile - overlap, tile_sample_stride_width=tile - overlap)
        self.model.enable_tiling(**kwargs)
        self.model.use_framewise_encoding = self.model.use_framewise_decoding = False

    def enable_framewise(self, tile_frames: int = 16, overlap_frames: int = 8) -> None:
        """Process long clips in overlapping temporal tiles (memory bounded by ``tile_frames``).

        Args:
            tile_frames: Frames per tile (multiple of 8).
            overlap_frames: Frames shared by consecutive tiles, blended linearly.
        """
        if tile_frames % self.temporal_compression or overlap_frames % self.temporal_compression \
                or not 0 < overlap_frames < tile_frames:
            raise ValueError(f"`tile_frames` and `overlap_frames` must be multiples of {self.temporal_compression} "
                             f"with 0 < overlap < tile. Got {tile_frames}, {overlap_frames}.")
        self.model.tile_sample_min_num_frames = tile_frames
        self.model.tile_sample_stride_num_frames = tile_frames - overlap_frames
        # diffusers' _encode checks `use_framewise_decoding` for the encoder too; set both.
        self.model.use_framewise_encoding = self.model.use_framewise_decoding = True

    def disable_tiling(self) -> None:
        self.model.disable_tiling()
        self.model.use_framewise_encoding = self.model.use_framewise_decoding = False

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Video ``(B, 3, T, H, W)`` in [-1, 1] (``T = 8k + 1``, ``H, W`` multiples of 32) -> normalised latents.

        Args:
            x: The video.
            sample: Draw from the posterior instead of its mean.
            generator: Generator for ``sample``.

        Returns:
            ``(B, C, (T - 1) / 8 + 1, H / 32, W / 32)`` float32.
        """
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"`x` must be (B, 3, T, H, W). Got shape {tuple(x.shape)}.")
        self.latent_frames(x.shape[2])
        s = self.spatial_compression
        if x.shape[3] % s or x.shape[4] % s:
            raise ValueError(f"LTX VAE needs height and width multiples of {s}. Got {tuple(x.shape[3:])}.")
        dist = self.model.encode(x.to(self.device, self.dtype)).latent_dist
        return self.normalize(dist.sample(generator=generator) if sample else dist.mode())

    def decode(self, z: torch.Tensor, timestep: float | None = None, noise_scale: float | None = None,
               generator: torch.Generator | None = None, grad: bool = False) -> torch.Tensor:
        """Normalised latents ``(B, C, t, h, w)`` -> video ``(B, 3, 8(t - 1) + 1, 32h, 32w)`` float32 in [-1, 1].

        Args:
            z: Latents.
            timestep: Decode timestep of a timestep-conditioned decoder (``None``: the preset's 0.05).
            noise_scale: Noise mixed in first, ``(1 - s) z + s n`` on raw latents as in
                ``LTXPipeline`` (``None``: the preset's 0.025).
            generator: Generator of that noise and of the decoder's own noise injection (which
                diffusers draws from the global RNG: it is run under a seed taken from
                ``generator``, so a seeded generator makes the decode reproducible).
            grad: Keep the autograd graph (pixel losses through the frozen decoder); the output
                is then not clamped.
        """
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            out = self._decode(z, timestep, noise_scale, generator)
        return out if grad else out.clamp_(-1.0, 1.0)

    def _decode(self, z, timestep, noise_scale, generator) -> torch.Tensor:
        raw = self.denormalize(z).to(self.device)
        temb = None
        if self.model.config.timestep_conditioning:
            t = self.decode_timestep if timestep is None else timestep
            s = self.decode_noise_scale if noise_scale is None else noise_scale
            if s:
                noise_device = generator.device if generator is not None else raw.device
                noise = torch.randn(raw.shape, generator=generator, device=noise_device)
                raw = (1 - s) * raw + s * noise.to(raw.device)
            temb = torch.full((raw.shape[0],), float(t), device=self.device, dtype=self.dtype)
        if generator is None:
            out = self.model.decode(raw.to(self.dtype), temb, return_dict=False)[0]
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                out = self.model.decode(raw.to(self.dtype), temb, return_dict=False)[0]
        return out.float()


class LTXBackbone:
    """LTX-Video wrapper: what a method needs from the backbone.

    Attributes:
        config: The :class:`BackboneConfig`.
        preset: The preset.
        transformer: diffusers ``LTXVideoTransformer3DModel`` (packed-token input).
        vae: :class:`LTXVAE`.
        scheduler_config: The checkpoint's ``FlowMatchEulerDiscreteScheduler`` config.
        device, dtype, attention: Where, in which dtype and with which attention kernel it runs.
    """

    family = "ltx"

    def __init__(self, config: BackboneConfig, built: BuiltModels):
        self.config = config
        self.preset = built.preset
        self.transformer = built.transformer
        extra = built.preset.vae_extra
        self.vae = LTXVAE(built.vae, built.vae_dtype, extra.get("decode_timestep", 0.0),
                          extra.get("decode_noise_scale", 0.0), built.device)
        if config.vae_tiling:
            self.vae.enable_tiling(config.vae_tile_size, config.vae_tile_overlap)
        self.scheduler_config = built.scheduler_config
        self.device, self.dtype, self.attention = built.device, built.dtype, built.attention
        self.prompts = PromptEncoder(built.preset, config.prompt_cache_dir,
                                     config.text_encoder_path or built.text_encoder_dir, random=built.random_weights,
                                     device=built.device)

    @classmethod
    def build(cls, config: BackboneConfig, device: torch.device | str = "cpu",
              dtype: torch.dtype | str | None = None) -> "LTXBackbone":
        """Build models and wrapper (see :func:`vsrkit.backbones.build_backbone`)."""
        return cls(config, build_models(config, device, dtype))

    def scheduler(self):
        """A fresh ``FlowMatchEulerDiscreteScheduler`` from the checkpoint's config (dynamic shifting)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)

    def prompt_embeds(self, text: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeds (1, 128, 4096) in the transformer dtype, mask (1, 128) int64)`` on the device."""
        embeds, mask = self.prompts(text)
        return embeds.to(self.device, self.dtype), mask.to(self.device)

    @staticmethod
    def pack(latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, h, w)`` -> tokens ``(B, T*h*w, C)`` in (t, h, w) order (patch size 1, as LTX-2B)."""
        b, c = latents.shape[:2]
        return latents.reshape(b, c, -1).transpose(1, 2)

    @staticmethod
    def unpack(tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`pack`."""
        b, _, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, frames, height, width)

    def predict(self, latents: torch.Tensor, timestep, prompt_embeds: torch.Tensor,
                prompt_mask: torch.Tensor | None = None, frame_rate: float = 25.0) -> torch.Tensor:
        """One transformer forward on channels-first latents.

        Args:
            latents: ``(B, C, T, h, w)`` normalised latents.
            timestep: float, ``(B,)`` or per-token ``(B, T*h*w)`` on the 0..1000 scale (``1000 * sigma``).
            prompt_embeds: ``(B or 1, L, D)``.
            prompt_mask: ``(B or 1, L)`` 1 for real tokens (``None``: all ones).
            frame_rate: Frames per second for the RoPE time scale (``LTXPipeline`` default 25).

        Returns:
            Flow velocity ``(B, C, T, h, w)`` float32.
        """
        cfg = self.transformer.config
        b, c, t, h, w = latents.shape
        if c != cfg.in_channels:
            raise ValueError(f"`latents` must have {cfg.in_channels} channels for this transformer. Got {c}.")
        timestep = torch.as_tensor(timestep, device=self.device, dtype=torch.float32)
        timestep = timestep.reshape(b, -1) if timestep.dim() == 2 else timestep.reshape(-1).expand(b)
        emb = prompt_embeds.to(self.device, self.dtype).expand(b, -1, -1)
        mask = torch.ones(emb.shape[:2], device=self.device) if prompt_mask is None else prompt_mask.to(self.device)
        # LTXPipeline: (temporal compression / fps, spatial compression, spatial compression).
        rope_scale = (self.vae.temporal_compression / frame_rate, self.vae.spatial_compression,
                      self.vae.spatial_compression)
        out = self.transformer(
            hidden_states=self.pack(latents.to(self.device, self.dtype)), encoder_hidden_states=emb,
            timestep=timestep, encoder_attention_mask=mask.expand(b, -1), num_frames=t, height=h, width=w,
            rope_interpolation_scale=rope_scale, return_dict=False,
        )[0]
        return self.unpack(out.float(), t, h, w)
