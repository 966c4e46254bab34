"""TurboVSR's modules around the diffusers LTX-Video transformer (no file reads, no weight loading).

* :class:`CrossNormalization`: ControlNeXt's cross normalisation of the condition to the hidden
  state's statistics, then TurboVSR's merge ``(h + lambda c~) * alpha``.
* :class:`StepSizeEmbedding`: the shortcut model's step-size conditioning, the same embedder as
  LTX's timestep (sinusoid of ``1000 d``, 256 channels, two-layer MLP), added to the embedded
  timestep before the adaLN projection (shortcut-models ``c = t_emb + dt_emb``).
* :class:`TurboVSRAdapter`: what TurboVSR adds to LTX: the condition projection
  ``Linear(latent channels -> hidden)`` and the step-size embedding.
* :class:`TurboVSRTransformer`: the LTX transformer's forward loop written out so the condition
  can be added after a block and the step size joins the timestep embedding; with no condition and
  no step size it computes exactly ``LTXVideoTransformer3DModel.forward``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, F, h, w)`` -> tokens ``(B, F*h*w, C)`` in (f, h, w) order (LTX-2B has patch size 1)."""
    b, c = latents.shape[:2]
    return latents.reshape(b, c, -1).transpose(1, 2)


def unpack_tokens(tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents`."""
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, frames, height, width)


class CrossNormalization(nn.Module):
    """Add a condition to a hidden state after matching its mean and standard deviation.

    ControlNeXt (``ControlNeXt-SD1.5-Training/models/unet.py`` L1237-1244):
    ``c~ = (c - mean_c) * std_h / (std_c + eps) + mean_h`` with mean and (unbiased) std of each
    sample over all its tokens and channels, in float32. TurboVSR then adds it and rescales:
    ``h' = (h + scale * c~) * alpha`` with ``alpha = 1/sqrt(2)`` (``merge="sqrt2"``) or 1.

    Args:
        scale: ``lambda``, the weight of the normalised condition.
        merge: ``"sqrt2"`` or ``"none"``.
        eps: Added to the condition's std.
    """

    def __init__(self, scale: float = 1.0, merge: str = "sqrt2", eps: float = 1e-12):
        super().__init__()
        if merge not in ("sqrt2", "none"):
            raise ValueError(f"`merge` must be one of ['sqrt2', 'none']. Got {merge!r}.")
        self.scale = float(scale)
        self.alpha = 1.0 / math.sqrt(2.0) if merge == "sqrt2" else 1.0
        self.eps = float(eps)

    def normalize(self, condition: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """``condition`` ``(B, S, D)`` moved to ``hidden``'s per-sample mean and std; float32."""
        h = hidden.float()
        c = condition.float()
        dims = tuple(range(1, h.dim()))
        mean_h, std_h = h.mean(dim=dims, keepdim=True), h.std(dim=dims, keepdim=True)
        mean_c, std_c = c.mean(dim=dims, keepdim=True), c.std(dim=dims, keepdim=True)
        return (c - mean_c) * (std_h / (std_c + self.eps)) + mean_h

    def forward(self, hidden: torch.Tensor, condition: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Merged hidden state ``(B, S, D)`` in ``hidden``'s dtype.

        Args:
            hidden: Hidden state after the conditioned block.
            condition: Projected condition tokens, aligned 1:1 with ``hidden``'s tokens.
            keep: ``(B,)`` bool: samples whose condition is used; the others pass ``hidden``
                through unchanged (condition dropout). ``None``: all.
        """
        merged = (hidden.float() + self.scale * self.normalize(condition, hidden)) * self.alpha
        if keep is not None:
            merged = torch.where(keep.reshape(-1, *([1] * (hidden.dim() - 1))), merged, hidden.float())
        return merged.to(hidden.dtype)


class StepSizeEmbedding(nn.Module):
    """Step size ``d`` in [0, 1] -> ``(B, dim)``, built like LTX's timestep embedder.

    ``Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)`` of ``1000 d`` (the scale of the
    timestep, diffusers ``PixArtAlphaCombinedTimestepSizeEmbeddings``), then
    ``TimestepEmbedding(256, dim)`` (Linear, SiLU, Linear). shortcut-models embeds its step level
    with a separate instance of its timestep embedder, too (``model.py`` L53-90, L261-264).

    Args:
        dim: Hidden size of the transformer.
    """

    def __init__(self, dim: int):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.embedder = TimestepEmbedding(in_channels=256, time_embed_dim=dim)

    def forward(self, step_size: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.embedder(self.proj(step_size.float().reshape(-1) * 1000.0).to(dtype))


class TurboVSRAdapter(nn.Module):
    """What TurboVSR adds to LTX-Video: the LR-latent projection and the step-size embedding.

    Args:
        latent_channels: VAE latent channels (128 for LTX).
        dim: Transformer hidden size (2048 for LTX-2B).
    """

    def __init__(self, latent_channels: int, dim: int):
        super().__init__()
        self.cond_proj = nn.Linear(latent_channels, dim)
        self.step_embed = StepSizeEmbedding(dim)


class TurboVSRTransformer(nn.Module):
    """LTX-Video transformer with TurboVSR's condition injection and step-size conditioning.

    Args:
        transformer: diffusers ``LTXVideoTransformer3DModel``.
        adapter: The :class:`TurboVSRAdapter` (same hidden size).
        cross_norm: How the condition is merged.
        cond_block: Index of the block after which the condition is added (0: the first).
    """

    def __init__(self, transformer: nn.Module, adapter: TurboVSRAdapter, cross_norm: CrossNormalization,
                 cond_block: int = 0):
        super().__init__()
        num_blocks = len(transformer.transformer_blocks)
        if not 0 <= cond_block < num_blocks:
            raise ValueError(f"`cond_block` must be in [0, {num_blocks}) for this transformer. Got {cond_block}.")
        self.transformer = transformer
        self.adapter = adapter
        self.cross_norm = cross_norm
        self.cond_block = cond_block

    def _time_embedding(self, sigma: torch.Tensor, step_size: torch.Tensor | None, batch: int, dtype: torch.dtype):
        """``(temb (B, 6D), embedded (B, D))`` of ``1000 sigma`` plus the step-size embedding."""
        time_embed = self.transformer.time_embed
        embedded = time_embed.emb(sigma.float().reshape(-1) * 1000.0, resolution=None, aspect_ratio=None,
                                  batch_size=batch, hidden_dtype=dtype)
        if step_size is not None:
            embedded = embedded + self.adapter.step_embed(step_size, embedded.dtype)
        return time_embed.linear(time_embed.silu(embedded)), embedded

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, prompt_embeds: torch.Tensor,
                prompt_mask: torch.Tensor | None = None, step_size: torch.Tensor | None = None,
                condition: torch.Tensor | None = None, cond_keep: torch.Tensor | None = None,
                first_clean: torch.Tensor | None = None, rope_scale: tuple | None = None) -> torch.Tensor:
        """Velocity of the flow at ``sigma`` (``v = noise - x0``).

        Args:
            latents: ``(B, C, F, h, w)`` normalised latents ``(1 - sigma) x0 + sigma noise``.
            sigma: ``(B,)`` noise level in [0, 1] (the transformer sees ``1000 sigma``).
            prompt_embeds: ``(B or 1, L, caption_channels)``.
            prompt_mask: ``(B or 1, L)`` 1 on real tokens; ``None``: all ones.
            step_size: ``(B,)`` shortcut step size in [0, 1]; ``None``: no step-size embedding.
            condition: ``(B, C, F, h, w)`` LR latents aligned with ``latents``; ``None``: none.
            cond_keep: ``(B,)`` bool, samples that use ``condition`` (``None``: all).
            first_clean: ``(B,)`` bool, samples whose latent frame 0 is a clean condition: its
                tokens get timestep 0 (per-token timesteps, as LTXConditionPipeline freezes
                conditioning frames). ``None``: none.
            rope_scale: RoPE interpolation scale ``(temporal compression / fps, spatial, spatial)``.

        Returns:
            ``(B, C, F, h, w)`` float32.
        """
        tr = self.transformer
        b, _, f, h, w = latents.shape
        dtype = tr.proj_in.weight.dtype
        tokens = pack_latents(latents.to(dtype))
        rope = tr.rope(tokens, f, h, w, rope_scale, None)
        embeds = prompt_embeds.to(tokens.device, dtype).expand(b, -1, -1)
        mask = torch.ones(embeds.shape[:2], device=tokens.device) if prompt_mask is None else prompt_mask
        # LTXVideoTransformer3DModel.forward: a 0/1 mask becomes an additive bias of -10000.
        bias = ((1 - mask.to(tokens.device, tokens.dtype).expand(b, -1)) * -10000.0).unsqueeze(1)

        hidden = tr.proj_in(tokens)
        temb, embedded = self._time_embedding(sigma, step_size, b, hidden.dtype)
        temb, embedded = temb.view(b, 1, -1), embedded.view(b, 1, -1)
        if first_clean is not None:
            # Tokens of latent frame 0 (the first h*w, in (f, h, w) order) of flagged samples get
            # the embedding of timestep 0; the rest keep sigma's.
            temb0, embedded0 = self._time_embedding(torch.zeros_like(sigma), step_size, b, hidden.dtype)
            clean = torch.arange(f * h * w, device=tokens.device) < h * w
            clean = (clean[None, :] & first_clean.to(tokens.device).reshape(b, 1))[..., None]
            temb = torch.where(clean, temb0.view(b, 1, -1), temb)
            embedded = torch.where(clean, embedded0.view(b, 1, -1), embedded)

        encoder_hidden = tr.caption_projection(embeds).view(b, -1, hidden.size(-1))
        for index, block in enumerate(tr.transformer_blocks):
            if torch.is_grad_enabled() and tr.gradient_checkpointing:
                hidden = tr._gradient_checkpointing_func(block, hidden, encoder_hidden, temb, rope, bias)
            else:
                hidden = block(hidden_states=hidden, encoder_hidden_states=encoder_hidden, temb=temb,
                               image_rotary_emb=rope, encoder_attention_mask=bias)
            if index == self.cond_block and condition is not None:
                projected = self.adapter.cond_proj(pack_latents(condition.to(hidden.device, hidden.dtype)))
                hidden = self.cross_norm(hidden, projected, cond_keep)

        scale_shift = tr.scale_shift_table[None, None] + embedded[:, :, None]
        shift, scale = scale_shift[:, :, 0], scale_shift[:, :, 1]
        hidden = tr.norm_out(hidden)
        hidden = hidden * (1 + scale) + shift
        return unpack_tokens(tr.proj_out(hidden).float(), f, h, w)
