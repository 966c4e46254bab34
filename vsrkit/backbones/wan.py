"""Wan2.1 backbone (PS-SR's and InfVSR's base): transformer, normalised VAE, flow-match grid, prompts.

Layouts: videos are ``(B, 3, T, H, W)`` float in [-1, 1] with ``T = 4k + 1``; latents are
``(B, 16, (T - 1) / 4 + 1, H / 8, W / 8)`` float32 normalised per channel,
``z = (mu - mean_c) / std_c`` with the Wan VAE constants (what DiffSynth's ``WanVideoVAE.encode``
returns and what PS-SR/InfVSR trained on; diffusers' VAE returns raw ``mu``; pssr.md §7.5).
The diffusers transformer takes channels-first latents ``(B, 16, T, h, w)`` directly.
"""

from __future__ import annotations

import logging

import torch

from vsrkit.backbones.build import BuiltModels, build_models
from vsrkit.backbones.config import BackboneConfig
from vsrkit.backbones.runtime import check_video
from vsrkit.backbones.streaming import TiledStream
from vsrkit.backbones.text import PromptEncoder

logger = logging.getLogger(__name__)


class WanVAE:
    """``AutoencoderKLWan`` with per-channel normalised latents and streaming.

    Args:
        model: The diffusers VAE.
        dtype: Its dtype (inputs are cast to it).
        device: Execution device (``None``: where the parameters are; differs under CPU offload).
    """

    spatial_compression = 8
    temporal_compression = 4

    def __init__(self, model, dtype: torch.dtype, device: torch.device | None = None):
        self.model = model
        self.dtype = dtype
        self._device = device
        self.latent_channels = int(model.config.z_dim)
        self.mean = torch.tensor(model.config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(model.config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)

    @property
    def device(self) -> torch.device:
        return self._device if self._device is not None else next(self.model.parameters()).device

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a ``frames``-frame clip (``frames`` must be ``4k + 1``)."""
        if frames < 1 or (frames - 1) % 4:
            raise ValueError(f"Wan VAE needs 4k+1 frames. Got {frames}.")
        return (frames - 1) // 4 + 1

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """Raw VAE mean ``mu`` -> ``(mu - mean) / std`` (float32)."""
        return (mu.float() - self.mean.to(mu.device)) / self.std.to(mu.device)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        return z.float() * self.std.to(z.device) + self.mean.to(z.device)

    def enable_tiling(self, tile: int | None = None, overlap: int | None = None) -> None:
        """Tile frames spatially (diffusers' tiled encode/decode; default 256 px tiles, stride 192).

        Args:
            tile: Tile edge in pixels (multiple of 8).
            overlap: Pixels shared by neighbouring tiles.
        """
        kwargs = {}
        if tile is not None:
            kwargs.update(tile_sample_min_height=tile, tile_sample_min_width=tile)
            if overlap is not None:
                kwargs.update(tile_sample_stride_height=tile - overlap, tile_sample_stride_width=tile - overlap)
        self.model.enable_tiling(**kwargs)

    def disable_tiling(self) -> None:
        self.model.disable_tiling()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Video -> normalised latents.

        Args:
            x: ``(B, 3, T, H, W)`` float in [-1, 1], ``T = 4k + 1``, ``H, W`` multiples of 8.
            sample: Draw from the posterior instead of its mean (PS-SR and InfVSR use the mean).
            generator: Generator for ``sample``.

        Returns:
            ``(B, 16, (T - 1) / 4 + 1, H / 8, W / 8)`` float32, ``(mu - mean) / std``.
        """
        check_video(x)
        self.latent_frames(x.shape[2])
        dist = self.model.encode(x.to(self.device, self.dtype)).latent_dist
        return self.normalize(dist.sample(generator=generator) if sample else dist.mode())

    def decode(self, z: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Normalised latents ``(B, 16, t, h, w)`` -> video ``(B, 3, 4(t - 1) + 1, 8h, 8w)`` float32 in [-1, 1].

        Args:
            z: Latents ``(mu - mean) / std``.
            grad: Keep the autograd graph (pixel losses through the frozen decoder). diffusers'
                Wan decoder clamps to [-1, 1] itself either way.
        """
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            out = self.model.decode(self.denormalize(z).to(self.device, self.dtype)).sample.float()
        return out if grad else out.clamp_(-1.0, 1.0)

    def encode_stream(self, tile: int | None = None, overlap: int = 0):
        """A streaming encoder (causal conv cache kept across chunks; memory independent of length).

        Args:
            tile: Spatial tile edge in pixels (multiple of 8): each tile gets its own stream and
                the latents are blended (:class:`~vsrkit.backbones.streaming.TiledStream`).
            overlap: Pixels shared by neighbouring tiles.
        """
        if tile is None:
            return WanEncodeStream(self)
        return TiledStream(lambda: WanEncodeStream(self), tile, overlap, 1 / self.spatial_compression,
                           self.spatial_compression)

    def decode_stream(self, tile: int | None = None, overlap: int = 0):
        """A streaming decoder (causal conv cache kept across chunks; memory independent of length).

        Args:
            tile: Spatial tile edge in output pixels (multiple of 8), each tile with its own stream
                (InfVSR tiles 1024-px tiles with 144-px overlap above 1024 px, infvsr.md §2.4).
            overlap: Output pixels shared by neighbouring tiles (multiple of 8).
        """
        if tile is None:
            return WanDecodeStream(self)
        sc = self.spatial_compression
        return TiledStream(lambda: WanDecodeStream(self), tile // sc, overlap // sc, sc)


class WanEncodeStream:
    """Encode a long clip chunk by chunk; the result equals :meth:`WanVAE.encode` of the whole clip.

    The first chunk has ``4k + 1`` frames, every later chunk ``4k`` (InfVSR: 9, then 12s). Inside,
    frames go through the encoder as the diffusers VAE does (frame 0 alone, then groups of 4) with
    one cache list that lives as long as the stream. Posterior mean only.

    Args:
        vae: The wrapper.
    """

    def __init__(self, vae: WanVAE):
        self.vae = vae
        self.cache = [None] * vae.model._cached_conv_counts["encoder"]
        self.frames = 0

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Encode the next chunk ``(B, 3, t, H, W)`` in [-1, 1]; returns its normalised latents (float32)."""
        check_video(x)
        t = x.shape[2]
        if self.frames == 0:
            self.vae.latent_frames(t)
            bounds = [0, 1] + list(range(5, t + 1, 4))
        else:
            if t % 4:
                raise ValueError(f"After the first chunk, Wan encode chunks must have a multiple of 4 frames. Got {t}.")
            bounds = list(range(0, t + 1, 4))
        model = self.vae.model
        x = x.to(self.vae.device, self.vae.dtype)
        outs = [model.encoder(x[:, :, a:b], feat_cache=self.cache, feat_idx=[0])
                for a, b in zip(bounds[:-1], bounds[1:])]
        self.frames += t
        h = model.quant_conv(torch.cat(outs, dim=2))  # 1x1x1 conv: no temporal context needed
        return self.vae.normalize(h[:, : self.vae.latent_channels])


class WanDecodeStream:
    """Decode latents chunk by chunk (one latent frame per decoder call, cache kept across chunks).

    The first latent frame gives 1 video frame, each later one 4. The concatenated output equals
    :meth:`WanVAE.decode` of all latents.

    Args:
        vae: The wrapper.
    """

    def __init__(self, vae: WanVAE):
        self.vae = vae
        self.cache = [None] * vae.model._cached_conv_counts["decoder"]
        self.latents = 0

    @torch.no_grad()
    def push(self, z: torch.Tensor) -> torch.Tensor:
        """Decode the next normalised latent chunk ``(B, 16, t, h, w)``; returns ``(B, 3, frames, 8h, 8w)``."""
        model = self.vae.model
        h = model.post_quant_conv(self.vae.denormalize(z).to(self.vae.device, self.vae.dtype))
        outs = []
        for i in range(h.shape[2]):
            outs.append(model.decoder(h[:, :, i:i + 1], feat_cache=self.cache, feat_idx=[0],
                                      first_chunk=self.latents == 0))
            self.latents += 1
        return torch.cat(outs, dim=2).float().clamp_(-1.0, 1.0)


class WanBackbone:
    """Wan2.1 wrapper: what a method needs from the backbone.

    Attributes:
        config: The :class:`BackboneConfig`.
        preset: The preset.
        transformer: diffusers ``WanTransformer3DModel`` (channels-first input).
        vae: :class:`WanVAE` (normalised latents).
        scheduler_config: Flow-match config (``num_train_timesteps`` 1000, ``shift`` 5).
        timesteps: ``(1000,)`` float64 DiffSynth grid ``1000 * sigma`` (decreasing).
        sigmas: ``(1000,)`` float64 ``sigma = shift*s / (1 + (shift-1)*s)``, ``s = linspace(1, 0, 1001)[:-1]``.
        device, dtype, attention: Where, in which dtype and with which attention kernel it runs.
    """

    family = "wan"

    def __init__(self, config: BackboneConfig, built: BuiltModels):
        self.config = config
        self.preset = built.preset
        self.transformer = built.transformer
        self.vae = WanVAE(built.vae, built.vae_dtype, built.device)
        if config.vae_tiling:
            self.vae.enable_tiling(config.vae_tile_size, config.vae_tile_overlap)
        self.scheduler_config = built.scheduler_config
        self.device, self.dtype, self.attention = built.device, built.dtype, built.attention
        self.prompts = PromptEncoder(built.preset, config.prompt_cache_dir,
                                     config.text_encoder_path or built.text_encoder_dir, random=built.random_weights,
                                     device=built.device)
        # DiffSynth FlowMatchScheduler(shift=5, sigma_min=0, extra_one_step=True).set_timesteps(1000)
        # (pssr.md §3.2, infvsr.md §1.4).
        n = int(self.scheduler_config.get("num_train_timesteps", 1000))
        shift = float(self.scheduler_config.get("shift", 5.0))
        s = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)[:-1]
        self.sigmas = shift * s / (1 + (shift - 1) * s)
        self.timesteps = self.sigmas * n

    @classmethod
    def build(cls, config: BackboneConfig, device: torch.device | str = "cpu",
              dtype: torch.dtype | str | None = None) -> "WanBackbone":
        """Build models and wrapper (see :func:`vsrkit.backbones.build_backbone`)."""
        return cls(config, build_models(config, device, dtype))

    def scheduler(self):
        """A fresh diffusers ``FlowMatchEulerDiscreteScheduler`` with the preset's shift."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)

    def sigma(self, timestep: float, bf16_round: bool = False) -> float:
        """sigma of the grid entry nearest to ``timestep`` (DiffSynth's lookup).

        Args:
            timestep: Nominal timestep (e.g. 399).
            bf16_round: Round the timestep to bfloat16 first, as PS-SR/InfVSR do when they build it
                as a bf16 tensor (399 -> 400, sigma 0.40082 instead of 0.39853).
        """
        t = torch.tensor(float(timestep))
        if bf16_round:
            t = t.to(torch.bfloat16).float()
        return float(self.sigmas[(self.timesteps - t.double()).abs().argmin()])

    def prompt_embeds(self, text: str = "") -> torch.Tensor:
        """``(1, 512, 4096)`` umT5 embedding (zero-padded) in the transformer dtype, on its device."""
        embeds, _ = self.prompts(text)
        return embeds.to(self.device, self.dtype)

    def predict(self, latents: torch.Tensor, timestep, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """One transformer forward.

        Args:
            latents: ``(B, C_in, T, h, w)`` normalised latents (``h, w`` even).
            timestep: float or ``(B,)`` tensor on the 0..1000 scale (``1000 * sigma``).
            prompt_embeds: ``(B or 1, L, text_dim)``.

        Returns:
            Flow velocity ``v = noise - x0`` ``(B, C_out, T, h, w)`` float32.
        """
        cfg = self.transformer.config
        b, c, t, h, w = latents.shape
        if c != cfg.in_channels:
            raise ValueError(f"`latents` must have {cfg.in_channels} channels for this transformer. Got {c}.")
        if h % cfg.patch_size[1] or w % cfg.patch_size[2]:
            raise ValueError(f"`latents` height and width must be multiples of {cfg.patch_size[1]}. Got {(h, w)}.")
        timestep = torch.as_tensor(timestep, device=self.device, dtype=torch.float32).reshape(-1).expand(b)
        out = self.transformer(
            hidden_states=latents.to(self.device, self.dtype), timestep=timestep,
            encoder_hidden_states=prompt_embeds.to(self.device, self.dtype).expand(b, -1, -1), return_dict=False,
        )[0]
        return out.float()
