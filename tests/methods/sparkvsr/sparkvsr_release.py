"""The SparkVSR release's rules, restated for tests from its code (taco-group/SparkVSR @ d7dac71, read
as Square-Zero-Labs/SparkVSR-on-Runpod @ cd30891 ``SparkVSR-base/``), on diffusers directly.

Nothing here imports vsrkit's SparkVSR code: expected values come from these functions, so a test
that compares vsrkit with them checks vsrkit against the release's rule, not against itself.
Only the models (a vsrkit-built tiny backbone's diffusers ``transformer`` and ``vae.model``) and the
cached prompt embedding are shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import CogVideoXDPMScheduler
from diffusers.models.embeddings import get_3d_rotary_pos_embed


def select_indices(total_frames: int) -> list[int]:
    """``finetune/utils/ref_utils.py:_select_indices``: first, middle, last."""
    if total_frames <= 0:
        return []
    if total_frames <= 2:
        return list(range(total_frames))
    return [0, total_frames // 2, total_frames - 1]


def padded_to_8k_plus_1(frames: int) -> int:
    """``preprocess_video_match(is_match=True)``: the last frame repeated up to 8k+1 frames."""
    remainder = (frames - 1) % 8
    return frames + (8 - remainder if remainder else 0)


def training_indices(num_frames: int, num_ref: int) -> list[int]:
    """``finetune/datasets/ref_real_sr_dataset.py``: the keyframes of a clip once ``num_ref`` is drawn."""
    if num_ref == 0:
        return []
    indices = [0]
    if num_ref > 1:
        step = (num_frames - 1) / (num_ref - 1)
        for i in range(1, num_ref):
            idx = int(i * step)
            if idx - indices[-1] < 4:
                idx = indices[-1] + 4
            indices.append(min(idx, num_frames - 1))
    return sorted(indices)


def scheduler(scheduler_config: dict) -> CogVideoXDPMScheduler:
    """The release's ``CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")``."""
    return CogVideoXDPMScheduler.from_config(scheduler_config, timestep_spacing="trailing")


def rotary(transformer_config, latent_frames: int, latent_h: int, latent_w: int):
    """``prepare_rotary_positional_embeddings`` of the inference script (CogVideoX1.5 branch)."""
    p, p_t = transformer_config.patch_size, transformer_config.patch_size_t
    grid_h, grid_w = latent_h // p, latent_w // p
    base_h, base_w = transformer_config.sample_height // p, transformer_config.sample_width // p
    return get_3d_rotary_pos_embed(
        embed_dim=transformer_config.attention_head_dim, crops_coords=None, grid_size=(grid_h, grid_w),
        temporal_size=(latent_frames + p_t - 1) // p_t, grid_type="slice",
        max_size=(max(base_h, grid_h), max(base_w, grid_w)),
    )


def predict(transformer, latents: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """One transformer call as the release makes it: ``latents (B, 32, T, h, w)`` -> ``v (B, T, 16, h, w)``."""
    dtype = next(transformer.parameters()).dtype
    b, _, t, h, w = latents.shape
    x = latents.permute(0, 2, 1, 3, 4).to(dtype)
    return transformer(
        hidden_states=x, encoder_hidden_states=prompt.to(dtype).repeat(b, 1, 1),
        timestep=torch.full((b,), 399, dtype=torch.long), image_rotary_emb=rotary(transformer.config, t, h, w),
        ofs=torch.full((b,), 2.0, dtype=dtype), return_dict=False,
    )[0][:, :, :16]


def window(backbone, prompt: torch.Tensor, lq: torch.Tensor, keyframes: dict, scale: int = 4,
           guidance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``process_video_ref_i2v`` for one window with the posterior mode instead of ``.sample()``.

    Args:
        backbone: A built CogVideoX backbone (only its diffusers models and scheduler config are used).
        prompt: The empty-prompt embedding ``(1, L, D)``.
        lq: ``(1, 3, T, h, w)`` in [-1, 1], ``T = 8k+1``.
        keyframes: ``{window-local index: (3, h*scale, w*scale)}`` in [-1, 1].
        scale: Upscaling factor (bilinear, ``align_corners=False``).
        guidance: ``ref_guidance_scale``.

    Returns:
        ``(video (1, 3, T, H, W) float32 in [-1, 1], x0 (1, 16, t, h, w) in the model dtype)``.
    """
    vae, transformer = backbone.vae.model, backbone.transformer
    dtype = next(transformer.parameters()).dtype
    sf = vae.config.scaling_factor
    _, c, t, h, w = lq.shape
    frames = F.interpolate(lq[0].permute(1, 0, 2, 3), size=(h * scale, w * scale), mode="bilinear",
                           align_corners=False)
    video = frames.permute(1, 0, 2, 3)[None].to(dtype)
    lq_latent = vae.encode(video).latent_dist.mode() * sf
    latent_frames = lq_latent.shape[2]
    ref_latent = torch.zeros_like(lq_latent)
    for index, image in sorted(keyframes.items()):
        slot = index // 4
        if 0 <= slot < latent_frames:
            chunk = image.to(dtype)[None, :, None].repeat(1, 1, 4, 1, 1)
            ref_latent[:, :, slot] = (vae.encode(chunk).latent_dist.mode() * sf)[0, :, 0]
    guided = abs(guidance - 1.0) > 1e-3
    x = torch.cat([lq_latent, ref_latent], dim=1)
    if guided:
        x = torch.cat([torch.cat([lq_latent, torch.zeros_like(ref_latent)], dim=1), x], dim=0)
    ncopy = x.shape[2] % transformer.config.patch_size_t
    x = torch.cat([x[:, :, :1].repeat(1, 1, ncopy, 1, 1), x], dim=2)
    v = predict(transformer, x, prompt).transpose(1, 2)  # (B, 16, T', h, w)
    z = x[:, :16].to(dtype)
    if guided:
        v_uncond, v_cond = v.chunk(2)
        v = v_uncond + guidance * (v_cond - v_uncond)
        z = z.chunk(2)[1]
    timesteps = torch.full((1,), 399, dtype=torch.long)
    x0 = scheduler(backbone.scheduler_config).get_velocity(v, z, timesteps)[:, :, ncopy:]
    out = vae.decode(x0 / sf).sample
    return out.float().clamp(-1.0, 1.0), x0
