"""CogVideoX1.5 backbone (SparkVSR's base): transformer, normalised VAE, scheduler constants, prompts.

Layouts: videos are ``(B, 3, T, H, W)`` float in [-1, 1] with ``T = 4k + 1``; latents are
``(B, 16, (T - 1) / 4 + 1, H / 8, W / 8)`` float32, already multiplied by the VAE scaling factor
0.7 (SparkVSR multiplies both the LR and the keyframe latents by ``vae.config.scaling_factor``;
sparkvsr.md §2, "Scaling convention"). The diffusers transformer itself takes
``(B, T, C, h, w)``; :meth:`CogVideoXBackbone.predict` does that permutation.
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

# The diffusers CogVideoX VAE processes 8 frames (1 latent pair) per encoder call and 2 latent
# frames per decoder call, carrying `conv_cache` between calls; the first call also takes the
# remainder (`frames % 8`, `latents % 2`). See AutoencoderKLCogVideoX._encode/_decode.
_ENC_BATCH = 8
_DEC_BATCH = 2


def _batch_bounds(t: int, batch: int, first_chunk: bool, what: str, unit: str) -> list[int]:
    """Frame-batch boundaries of a ``t``-long chunk: the clip's first batch takes the remainder."""
    if first_chunk:
        first = t if t < batch else batch + t % batch
        return [0, first] + list(range(first + batch, t + 1, batch))
    if t % batch:
        raise ValueError(f"After the first chunk, CogVideoX {what} must have a multiple of {batch} {unit}. Got {t}.")
    return list(range(0, t + 1, batch))


class CogVideoXVAE:
    """``AutoencoderKLCogVideoX`` with normalised latents and streaming.

    Args:
        model: The diffusers VAE.
        dtype: Its dtype (inputs are cast to it).
        device: Execution device (``None``: where the parameters are; differs under CPU offload).
    """

    latent_channels = 16
    spatial_compression = 8
    temporal_compression = 4

    def __init__(self, model, dtype: torch.dtype, device: torch.device | None = None):
        self.model = model
        self.dtype = dtype
        self._device = device
        # 0.7 for CogVideoX1.5 (vae/config.json). `invert_scale_latents` (the I2V pipeline's 1/0.7 on
        # image latents) is deliberately ignored: SparkVSR was trained with x0.7 on every latent.
        self.scaling_factor = float(model.config.scaling_factor)
        self.latent_channels = int(model.config.latent_channels)

    @property
    def device(self) -> torch.device:
        return self._device if self._device is not None else next(self.model.parameters()).device

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a ``frames``-frame clip (``frames`` must be ``4k + 1``)."""
        if frames < 1 or (frames - 1) % 4:
            raise ValueError(f"CogVideoX VAE needs 4k+1 frames. Got {frames}.")
        return (frames - 1) // 4 + 1

    def enable_tiling(self, tile: int | None = None, overlap: int | None = None) -> None:
        """Tile frames spatially (diffusers' tiled encode/decode).

        Args:
            tile: Tile edge in pixels (``None``: diffusers default, 240 x 360 for this VAE).
            overlap: Pixels shared by neighbouring tiles (``None``: diffusers' 1/6 and 1/5 of the tile).
        """
        kwargs = {}
        if tile is not None:
            kwargs.update(tile_sample_min_height=tile, tile_sample_min_width=tile)
            if overlap is not None:
                kwargs.update(tile_overlap_factor_height=overlap / tile, tile_overlap_factor_width=overlap / tile)
        self.model.enable_tiling(**kwargs)

    def disable_tiling(self) -> None:
        self.model.disable_tiling()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Video -> normalised latents.

        Args:
            x: ``(B, 3, T, H, W)`` float in [-1, 1], ``H, W`` multiples of 8; ``T = 4k + 1`` gives
                ``k + 1`` latent frames, ``T = 4k`` gives ``k`` (SparkVSR encodes a keyframe as the
                image repeated 4 times: one latent frame).
            sample: Draw from the posterior (SparkVSR's official ``.sample()``) instead of its mean.
            generator: Generator for ``sample``.

        Returns:
            ``(B, 16, t, H / 8, W / 8)`` float32, ``posterior * 0.7``.
        """
        check_video(x)
        if x.shape[2] < 1 or x.shape[2] % 4 not in (0, 1):
            raise ValueError(f"CogVideoX VAE needs 4k or 4k+1 frames. Got {x.shape[2]}.")
        dist = self.model.encode(x.to(self.device, self.dtype)).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mode()
        return z.float() * self.scaling_factor

    def decode(self, z: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Normalised latents ``(B, 16, t, h, w)`` -> video ``(B, 3, T, 8h, 8w)`` float32 in [-1, 1].

        ``T = 4(t - 1) + 1`` for odd ``t`` (clips of ``8k + 1`` frames, what SparkVSR uses); the
        diffusers decoder gives ``T = 4t`` for even ``t``.

        Args:
            z: Latents (``posterior * 0.7``).
            grad: Keep the autograd graph (pixel losses through the frozen decoder, SparkVSR
                stage 2); the output is then not clamped, so the loss sees the decoder's output.
        """
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            out = self.model.decode((z / self.scaling_factor).to(self.device, self.dtype)).sample.float()
        return out if grad else out.clamp_(-1.0, 1.0)

    def encode_stream(self, sample: bool = False, generator: torch.Generator | None = None,
                      tile: int | None = None, overlap: int = 0):
        """A streaming encoder (causal conv cache kept across chunks; memory independent of length).

        Args:
            sample: Sample the posterior instead of taking its mean.
            generator: Generator for ``sample``.
            tile: Spatial tile edge in pixels (multiple of 8): each tile gets its own stream and
                the latents are blended (:class:`~vsrkit.backbones.streaming.TiledStream`).
            overlap: Pixels shared by neighbouring tiles.
        """
        if tile is None:
            return CogVideoXEncodeStream(self, sample, generator)
        return TiledStream(lambda: CogVideoXEncodeStream(self, sample, generator), tile, overlap,
                           1 / self.spatial_compression, self.spatial_compression)

    def decode_stream(self, tile: int | None = None, overlap: int = 0):
        """A streaming decoder (causal conv cache kept across chunks; memory independent of length).

        Args:
            tile: Spatial tile edge in output pixels (multiple of 8), each tile with its own stream.
            overlap: Output pixels shared by neighbouring tiles (multiple of 8).
        """
        if tile is None:
            return CogVideoXDecodeStream(self)
        sc = self.spatial_compression
        return TiledStream(lambda: CogVideoXDecodeStream(self), tile // sc, overlap // sc, sc)


class CogVideoXEncodeStream:
    """Encode a long clip chunk by chunk; the result equals :meth:`CogVideoXVAE.encode` of the whole clip.

    The first chunk has ``8k + r`` frames with ``r`` in {1, 5} (any ``4k + 1`` count); every later
    chunk has a multiple of 8 frames. Each chunk goes through the encoder in diffusers' own
    batches (``8 + r``, then 8s), so the whole-clip batching is reproduced exactly.
    Tiling is not applied inside a stream (tile the frames outside).

    Args:
        vae: The wrapper.
        sample: Sample the posterior instead of taking its mean.
        generator: Generator for ``sample``.
    """

    def __init__(self, vae: CogVideoXVAE, sample: bool = False, generator: torch.Generator | None = None):
        self.vae, self.sample, self.generator = vae, sample, generator
        self.cache = None
        self.frames = 0

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Encode the next chunk ``(B, 3, t, H, W)`` in [-1, 1]; returns its latents (normalised, float32)."""
        check_video(x)
        t = x.shape[2]
        if self.frames == 0:
            self.vae.latent_frames(t)
        bounds = _batch_bounds(t, _ENC_BATCH, self.frames == 0, "encode chunks", "frames")
        model = self.vae.model
        x = x.to(self.vae.device, self.vae.dtype)
        outs = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            h, self.cache = model.encoder(x[:, :, a:b], conv_cache=self.cache)
            if model.quant_conv is not None:
                h = model.quant_conv(h)
            outs.append(h)
        self.frames += t
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        dist = DiagonalGaussianDistribution(torch.cat(outs, dim=2))
        z = dist.sample(generator=self.generator) if self.sample else dist.mode()
        return z.float() * self.vae.scaling_factor


class CogVideoXDecodeStream:
    """Decode latents chunk by chunk; the result equals :meth:`CogVideoXVAE.decode` of all latents.

    The first chunk may have any number of latent frames; later chunks an even number (the
    decoder's batch is 2 latent frames, the first batch takes the odd remainder).

    Args:
        vae: The wrapper.
    """

    def __init__(self, vae: CogVideoXVAE):
        self.vae = vae
        self.cache = None
        self.latents = 0

    @torch.no_grad()
    def push(self, z: torch.Tensor) -> torch.Tensor:
        """Decode the next latent chunk ``(B, 16, t, h, w)``; returns ``(B, 3, frames, 8h, 8w)`` in [-1, 1]."""
        t = z.shape[2]
        bounds = _batch_bounds(t, _DEC_BATCH, self.latents == 0, "decode chunks", "latent frames")
        model = self.vae.model
        z = (z / self.vae.scaling_factor).to(self.vae.device, self.vae.dtype)
        outs = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            h = z[:, :, a:b]
            if model.post_quant_conv is not None:
                h = model.post_quant_conv(h)
            h, self.cache = model.decoder(h, conv_cache=self.cache)
            outs.append(h)
        self.latents += t
        return torch.cat(outs, dim=2).float().clamp_(-1.0, 1.0)


class CogVideoXBackbone:
    """CogVideoX1.5 wrapper: what a method needs from the backbone.

    Build it with :func:`vsrkit.backbones.build_backbone` (or :meth:`build`).

    Attributes:
        config: The :class:`BackboneConfig`.
        preset: The :class:`~vsrkit.backbones.presets.Preset`.
        transformer: diffusers ``CogVideoXTransformer3DModel`` (inputs ``(B, T, C, h, w)``).
        vae: :class:`CogVideoXVAE` (normalised latents).
        scheduler_config: The checkpoint's scheduler config (zero-SNR, v-prediction, snr_shift 1.0).
        alphas_cumprod: ``(1000,)`` float64 tensor of ``abar_t`` from that config (CPU).
        device, dtype: Where and in which dtype the transformer runs.
        attention: Which attention kernel runs (one line).
    """

    family = "cogvideox"

    def __init__(self, config: BackboneConfig, built: BuiltModels):
        self.config = config
        self.preset = built.preset
        self.transformer = built.transformer
        self.vae = CogVideoXVAE(built.vae, built.vae_dtype, built.device)
        if config.vae_tiling:
            self.vae.enable_tiling(config.vae_tile_size, config.vae_tile_overlap)
        self.scheduler_config = built.scheduler_config
        self.device, self.dtype, self.attention = built.device, built.dtype, built.attention
        self.prompts = PromptEncoder(built.preset, config.prompt_cache_dir,
                                     config.text_encoder_path or built.text_encoder_dir, random=built.random_weights,
                                     device=built.device)
        self.alphas_cumprod = self.scheduler().alphas_cumprod.to(torch.float64)

    @classmethod
    def build(cls, config: BackboneConfig, device: torch.device | str = "cpu",
              dtype: torch.dtype | str | None = None) -> "CogVideoXBackbone":
        """Build models and wrapper (see :func:`vsrkit.backbones.build_backbone`)."""
        return cls(config, build_models(config, device, dtype))

    def scheduler(self):
        """A fresh ``CogVideoXDPMScheduler`` from the checkpoint's config (what SparkVSR/DOVE use)."""
        from diffusers import CogVideoXDPMScheduler

        return CogVideoXDPMScheduler.from_config(self.scheduler_config)

    def alpha_bar(self, t: int) -> float:
        """``abar_t`` (e.g. ``sqrt(abar_399) = 0.62733`` for CogVideoX1.5, sparkvsr.md §4.3)."""
        return float(self.alphas_cumprod[int(t)])

    def prompt_embeds(self, text: str = "") -> torch.Tensor:
        """``(1, 226, 4096)`` T5 embedding of ``text`` in the transformer dtype, on its device (cached on disk)."""
        embeds, _ = self.prompts(text)
        return embeds.to(self.device, self.dtype)

    def rotary_pos_embed(self, latent_frames: int, latent_height: int,
                         latent_width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """3D RoPE ``(cos, sin)``, each ``(frames/p_t * h/p * w/p, head_dim)`` float32, on the device.

        As diffusers' CogVideoX1.5 pipelines (``grid_type="slice"``), with the table grown to the
        grid when the grid exceeds the model's base size (SparkVSR's ``max(48, h/16)``, ``max(85, w/16)``).

        Args:
            latent_frames: Latent frames given to the transformer (multiple of ``patch_size_t``).
            latent_height: Latent height (``H / 8``).
            latent_width: Latent width (``W / 8``).
        """
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        cfg = self.transformer.config
        p, p_t = cfg.patch_size, cfg.patch_size_t or 1
        grid_h, grid_w = latent_height // p, latent_width // p
        base_h, base_w = cfg.sample_height // p, cfg.sample_width // p
        return get_3d_rotary_pos_embed(
            embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=(grid_h, grid_w),
            temporal_size=(latent_frames + p_t - 1) // p_t, grid_type="slice",
            max_size=(max(base_h, grid_h), max(base_w, grid_w)), device=self.device,
        )

    def predict(self, latents: torch.Tensor, timestep, prompt_embeds: torch.Tensor, ofs: float | None = 2.0,
                image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One transformer forward on channels-first latents.

        Args:
            latents: ``(B, C_in, T, h, w)`` (``C_in`` = 32 for the I2V model: noisy latent then
                condition latent); ``T`` must be a multiple of ``patch_size_t`` (2), ``h, w`` of 2.
            timestep: int/float or ``(B,)`` tensor on the 0..999 scale.
            prompt_embeds: ``(B or 1, L, D)`` text embedding.
            ofs: The I2V model's ``ofs`` input (2.0 in diffusers' I2V pipeline and SparkVSR);
                ignored by models without an ofs embedding.
            image_rotary_emb: Precomputed :meth:`rotary_pos_embed` (computed when ``None``).

        Returns:
            The model output (v-prediction) ``(B, C_out, T, h, w)`` float32.
        """
        cfg = self.transformer.config
        b, c, t, h, w = latents.shape
        if c != cfg.in_channels:
            raise ValueError(f"`latents` must have {cfg.in_channels} channels for this transformer. Got {c}.")
        p_t = cfg.patch_size_t or 1
        if t % p_t or h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"`latents` frames must be a multiple of {p_t} and height/width of {cfg.patch_size}. "
                             f"Got {(t, h, w)} (prepend a copy of frame 0, as SparkVSR does, for odd T).")
        if image_rotary_emb is None and cfg.use_rotary_positional_embeddings:
            image_rotary_emb = self.rotary_pos_embed(t, h, w)
        timestep = torch.as_tensor(timestep, device=self.device).reshape(-1).expand(b)
        # One contiguous copy per sample, as the pipelines' `repeat` (SparkVSR's guidance batch): a
        # stride-0 expanded text batch takes other matmul kernels and changes bf16 results.
        prompt_embeds = prompt_embeds.to(self.device, self.dtype)
        if prompt_embeds.shape[0] != b:
            prompt_embeds = prompt_embeds.repeat(b // prompt_embeds.shape[0], 1, 1)
        ofs_t = None
        if cfg.ofs_embed_dim is not None and ofs is not None:
            ofs_t = torch.full((b,), float(ofs), device=self.device, dtype=self.dtype)
        out = self.transformer(
            hidden_states=latents.to(self.device, self.dtype).permute(0, 2, 1, 3, 4),
            encoder_hidden_states=prompt_embeds, timestep=timestep, ofs=ofs_t,
            image_rotary_emb=image_rotary_emb, return_dict=False,
        )[0]
        return out.permute(0, 2, 1, 3, 4).float()
