"""Model configs of every backbone preset, shipped inside vsrkit so no hub download is needed.

Each :class:`Preset` names the diffusers classes and gives their exact constructor configs
(transformer, VAE, scheduler), the text encoder's shape, and the VAE latent normalisation. The
real presets copy the released models' configs; each ``-tiny`` twin uses the same classes with
2 layers, 2 heads and tiny VAEs so the CPU tests run in seconds. Pure Python: no torch import.

Sources (see ``/work/shared/research``):

* CogVideoX1.5-5B-I2V: sparkvsr.md §2 (transformer/vae/scheduler ``config.json`` of
  ``zai-org/CogVideoX1.5-5B-I2V``, as vendored by smthemex/ComfyUI_SparkVSR_SM) and §4.3
  (zero-SNR rescale, v-prediction, ``snr_shift_scale`` 1.0).
* Wan2.1-T2V-1.3B: pssr.md §7.1 and §8.1 (diffusers ``convert_wan_to_diffusers.py``
  ``Wan-T2V-1.3B``), §8.4 (``AutoencoderKLWan``), §3.2 (flow-match grid, shift 5);
  infvsr.md §1.1.
* LTX-Video 2B (0.9.1): turbovsr_and_speed.md §A.2 (transformer = diffusers defaults; 0.9.1
  timestep-conditioned VAE, per-channel latent statistics; scheduler of the checkpoint), VAE
  config of diffusers ``scripts/convert_ltx_to_diffusers.py`` ``get_vae_config("0.9.1")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Wan2.1 VAE per-channel latent statistics (diffusers AutoencoderKLWan defaults = DiffSynth
# WanVideoVAE constants; pssr.md §7.5: mean[0] = -0.7571, std[0] = 2.8184).
WAN_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
WAN_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


@dataclass(frozen=True)
class TextSpec:
    """What the text encoder of a backbone produces.

    Args:
        encoder: ``t5`` (T5 v1.1 XXL encoder) or ``umt5`` (umT5-XXL encoder).
        max_length: Tokens per prompt (padding ``max_length``, truncation on).
        dim: Embedding width.
        zero_padding: Whether the padded positions are zeroed (Wan does this; CogVideoX keeps
            the T5 outputs of the pad tokens).
        uses_mask: Whether the transformer takes an attention mask over the text (LTX).
    """

    encoder: str
    max_length: int
    dim: int
    zero_padding: bool = False
    uses_mask: bool = False


@dataclass(frozen=True)
class Preset:
    """One backbone preset.

    Args:
        name: Registry name.
        family: ``cogvideox``, ``wan`` or ``ltx``.
        tiny: Whether this is a CPU-test twin (random weights only).
        transformer_class: diffusers class name of the transformer.
        transformer: Its constructor config.
        vae_class: diffusers class name of the VAE.
        vae: Its constructor config.
        scheduler_class: diffusers class name of the training scheduler.
        scheduler: Its config (as in the checkpoint's ``scheduler_config.json``).
        text: Text encoder output spec.
        vae_extra: Family-specific VAE constants (decode timestep and noise for LTX).
        description: One line shown by ``vsrkit ls``.
    """

    name: str
    family: str
    tiny: bool
    transformer_class: str
    transformer: dict
    vae_class: str
    vae: dict
    scheduler_class: str
    scheduler: dict
    text: TextSpec
    vae_extra: dict = field(default_factory=dict)
    description: str = ""


# --- CogVideoX1.5-5B-I2V -------------------------------------------------------------------

_COGVIDEOX_SCHEDULER = {
    # zai-org/CogVideoX1.5-5B-I2V scheduler/scheduler_config.json (sparkvsr.md §2, §4.3).
    # diffusers' class defaults differ (snr_shift_scale 3.0, no zero-SNR, epsilon): never use them.
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
    "rescale_betas_zero_snr": True,
    "snr_shift_scale": 1.0,
}

COGVIDEOX15_5B_I2V = Preset(
    name="cogvideox1.5-5b-i2v",
    family="cogvideox",
    tiny=False,
    transformer_class="CogVideoXTransformer3DModel",
    transformer={
        # zai-org/CogVideoX1.5-5B-I2V transformer/config.json (sparkvsr.md §2): 42 layers,
        # 48 heads x 64, 32 input channels (16 noisy latent + 16 image condition), ofs embedding.
        "num_attention_heads": 48,
        "attention_head_dim": 64,
        "in_channels": 32,
        "out_channels": 16,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "time_embed_dim": 512,
        "ofs_embed_dim": 512,
        "text_embed_dim": 4096,
        "num_layers": 42,
        "dropout": 0.0,
        "attention_bias": True,
        "sample_width": 170,
        "sample_height": 96,
        "sample_frames": 81,
        "patch_size": 2,
        "patch_size_t": 2,
        "temporal_compression_ratio": 4,
        "max_text_seq_length": 226,
        "activation_fn": "gelu-approximate",
        "timestep_activation_fn": "silu",
        "norm_elementwise_affine": True,
        "norm_eps": 1e-5,
        "spatial_interpolation_scale": 1.875,
        "temporal_interpolation_scale": 1.0,
        "use_rotary_positional_embeddings": True,
        "use_learned_positional_embeddings": False,
        "patch_bias": False,
    },
    vae_class="AutoencoderKLCogVideoX",
    vae={
        # zai-org/CogVideoX1.5-5B-I2V vae/config.json (sparkvsr.md §2).
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["CogVideoXDownBlock3D"] * 4,
        "up_block_types": ["CogVideoXUpBlock3D"] * 4,
        "block_out_channels": [128, 256, 256, 512],
        "latent_channels": 16,
        "layers_per_block": 3,
        "act_fn": "silu",
        "norm_eps": 1e-6,
        "norm_num_groups": 32,
        "temporal_compression_ratio": 4,
        "sample_height": 480,
        "sample_width": 720,
        "scaling_factor": 0.7,
        "shift_factor": None,
        "latents_mean": None,
        "latents_std": None,
        "force_upcast": True,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "invert_scale_latents": True,
    },
    scheduler_class="CogVideoXDDIMScheduler",
    scheduler=_COGVIDEOX_SCHEDULER,
    text=TextSpec(encoder="t5", max_length=226, dim=4096),
    description="CogVideoX1.5-5B image-to-video (SparkVSR's base), 5.6B transformer",
)

COGVIDEOX15_5B_I2V_TINY = Preset(
    name="cogvideox1.5-5b-i2v-tiny",
    family="cogvideox",
    tiny=True,
    transformer_class="CogVideoXTransformer3DModel",
    transformer={
        **COGVIDEOX15_5B_I2V.transformer,
        # CogVideoX's 3D RoPE splits head_dim as dim/4 (t) + 3*dim/8 (h) + 3*dim/8 (w): 16 works.
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "time_embed_dim": 32,
        "ofs_embed_dim": 32,
        "text_embed_dim": 32,
        "num_layers": 2,
        "sample_width": 16,
        "sample_height": 16,
        "sample_frames": 9,
        "max_text_seq_length": 8,
    },
    vae_class="AutoencoderKLCogVideoX",
    vae={
        **COGVIDEOX15_5B_I2V.vae,
        # Same 4 blocks (8x spatial, 4x temporal compression) and 16 latent channels, 8 features.
        "block_out_channels": [8, 8, 8, 8],
        "layers_per_block": 1,
        "norm_num_groups": 2,
        "sample_height": 64,
        "sample_width": 64,
    },
    scheduler_class="CogVideoXDDIMScheduler",
    scheduler=_COGVIDEOX_SCHEDULER,
    text=TextSpec(encoder="t5", max_length=8, dim=32),
    description="CPU-test twin of cogvideox1.5-5b-i2v (2 layers, random weights)",
)

# --- Wan2.1-T2V-1.3B -----------------------------------------------------------------------

_WAN_SCHEDULER = {
    # DiffSynth FlowMatchScheduler(shift=5, sigma_min=0.0, extra_one_step=True), the scheduler
    # PS-SR and InfVSR use (pssr.md §3.2, infvsr.md §1.4): grid linspace(1, 0, 1001)[:-1],
    # sigma = shift*s / (1 + (shift-1)*s), timestep = 1000*sigma.
    "num_train_timesteps": 1000,
    "shift": 5.0,
    "use_dynamic_shifting": False,
}

_WAN_VAE = {
    # Wan2.1 VAE (pssr.md §8.4): z_dim 16, 8x spatial / 4x causal temporal compression.
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": WAN_LATENTS_MEAN,
    "latents_std": WAN_LATENTS_STD,
}

WAN21_T2V_13B = Preset(
    name="wan2.1-t2v-1.3b",
    family="wan",
    tiny=False,
    transformer_class="WanTransformer3DModel",
    transformer={
        # diffusers convert_wan_to_diffusers.py "Wan-T2V-1.3B" (pssr.md §8.1) = DiffSynth
        # WanModel(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in/out 16, text 4096).
        "patch_size": [1, 2, 2],
        "num_attention_heads": 12,
        "attention_head_dim": 128,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 8960,
        "num_layers": 30,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
    },
    vae_class="AutoencoderKLWan",
    vae=_WAN_VAE,
    scheduler_class="FlowMatchEulerDiscreteScheduler",
    scheduler=_WAN_SCHEDULER,
    # umT5-XXL, padded with zeros to 512 tokens (pssr.md §7.5).
    text=TextSpec(encoder="umt5", max_length=512, dim=4096, zero_padding=True),
    description="Wan2.1 text-to-video 1.3B (PS-SR's and InfVSR's base)",
)

WAN21_T2V_13B_TINY = Preset(
    name="wan2.1-t2v-1.3b-tiny",
    family="wan",
    tiny=True,
    transformer_class="WanTransformer3DModel",
    transformer={
        **WAN21_T2V_13B.transformer,
        # head_dim 12: DiffSynth's RoPE split needs head_dim // 3 even (pssr.md §7.4).
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "text_dim": 16,
        "ffn_dim": 32,
        "num_layers": 2,
        "rope_max_seq_len": 1024,  # the real value: RoPE tables only, no weights; lets tiny runs reach 1024 px
    },
    vae_class="AutoencoderKLWan",
    # The real block layout (so the original-format converter applies) with 4 base channels instead of 96.
    vae={**_WAN_VAE, "base_dim": 4},
    scheduler_class="FlowMatchEulerDiscreteScheduler",
    scheduler=_WAN_SCHEDULER,
    text=TextSpec(encoder="umt5", max_length=8, dim=16, zero_padding=True),
    description="CPU-test twin of wan2.1-t2v-1.3b (2 layers, random weights)",
)

# --- LTX-Video 2B (0.9.1) ------------------------------------------------------------------

_LTX_SCHEDULER = {
    # LTX-Video checkpoint scheduler (turbovsr_and_speed.md §A.2; diffusers convert script).
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}

_LTX_VAE_091 = {
    # diffusers scripts/convert_ltx_to_diffusers.py get_vae_config("0.9.1"): timestep-
    # conditioned decoder with noise injection; 32x spatial, 8x temporal, 128 latent channels.
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["LTXVideoDownBlock3D"] * 4,
    "decoder_block_out_channels": [256, 512, 1024],
    "layers_per_block": [4, 3, 3, 3, 4],
    "decoder_layers_per_block": [5, 6, 7, 8],
    "spatio_temporal_scaling": [True, True, True, False],
    "decoder_spatio_temporal_scaling": [True, True, True],
    "decoder_inject_noise": [True, True, True, False],
    "downsample_type": ["conv", "conv", "conv", "conv"],
    "upsample_residual": [True, True, True],
    "upsample_factor": [2, 2, 2],
    "timestep_conditioning": True,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-6,
    "scaling_factor": 1.0,
    "encoder_causal": True,
    "decoder_causal": False,
}

LTX_VIDEO_2B = Preset(
    name="ltx-video-2b",
    family="ltx",
    tiny=False,
    transformer_class="LTXVideoTransformer3DModel",
    transformer={
        # LTX-Video 2B = diffusers LTXVideoTransformer3DModel defaults (turbovsr_and_speed.md §A.2).
        "in_channels": 128,
        "out_channels": 128,
        "patch_size": 1,
        "patch_size_t": 1,
        "num_attention_heads": 32,
        "attention_head_dim": 64,
        "cross_attention_dim": 2048,
        "num_layers": 28,
        "activation_fn": "gelu-approximate",
        "qk_norm": "rms_norm_across_heads",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
        "caption_channels": 4096,
        "attention_bias": True,
        "attention_out_bias": True,
    },
    vae_class="AutoencoderKLLTXVideo",
    vae=_LTX_VAE_091,
    scheduler_class="FlowMatchEulerDiscreteScheduler",
    scheduler=_LTX_SCHEDULER,
    # T5 v1.1 XXL, 128 tokens, with an attention mask (diffusers LTXPipeline max_sequence_length).
    text=TextSpec(encoder="t5", max_length=128, dim=4096, uses_mask=True),
    # Decode timestep 0.05 and noise 0.025 recommended for the 0.9.1 VAE (turbovsr_and_speed.md §A.2).
    vae_extra={"decode_timestep": 0.05, "decode_noise_scale": 0.025},
    description="LTX-Video 2B (0.9.1 timestep-conditioned VAE; TurboVSR's base)",
)

LTX_VIDEO_2B_TINY = Preset(
    name="ltx-video-2b-tiny",
    family="ltx",
    tiny=True,
    transformer_class="LTXVideoTransformer3DModel",
    transformer={
        **LTX_VIDEO_2B.transformer,
        "in_channels": 8,
        "out_channels": 8,
        "num_attention_heads": 2,
        "attention_head_dim": 8,
        "cross_attention_dim": 16,
        "num_layers": 2,
        "caption_channels": 16,
    },
    vae_class="AutoencoderKLLTXVideo",
    vae={
        **_LTX_VAE_091,
        # Same block layout (32x spatial, 8x temporal, timestep-conditioned decoder), 8 latents.
        "latent_channels": 8,
        "block_out_channels": [8, 8, 8, 8],
        "decoder_block_out_channels": [8, 16, 32],
        "layers_per_block": [1, 1, 1, 1, 1],
        "decoder_layers_per_block": [1, 1, 1, 1],
    },
    scheduler_class="FlowMatchEulerDiscreteScheduler",
    scheduler=_LTX_SCHEDULER,
    text=TextSpec(encoder="t5", max_length=8, dim=16, uses_mask=True),
    vae_extra={"decode_timestep": 0.05, "decode_noise_scale": 0.025},
    description="CPU-test twin of ltx-video-2b (2 layers, random weights)",
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (COGVIDEOX15_5B_I2V, COGVIDEOX15_5B_I2V_TINY, WAN21_T2V_13B, WAN21_T2V_13B_TINY,
              LTX_VIDEO_2B, LTX_VIDEO_2B_TINY)
}


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``.

    Raises:
        KeyError: ``name`` is not a preset (the message lists the presets).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"Unknown backbone preset `{name}`. Known: {', '.join(sorted(PRESETS))}.") from None


def preset_meta(name: str) -> dict[str, Any]:
    """Facts shown by ``vsrkit ls`` for preset ``name``."""
    p = get_preset(name)
    return {"family": p.family, "tiny": p.tiny, "description": p.description}
