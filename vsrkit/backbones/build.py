"""Build the diffusers models of a backbone config: weights or deterministic init, dtype, switches.

The three family wrappers call :func:`build_models` and then wrap the results; this module holds
the steps they share so each wrapper file only holds what is specific to its family.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from vsrkit.backbones import loading, runtime
from vsrkit.backbones.config import BackboneConfig
from vsrkit.backbones.presets import Preset, get_preset
from vsrkit.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class BuiltModels:
    """What :func:`build_models` returns.

    Args:
        preset: The preset.
        transformer: diffusers transformer, on ``device`` in the compute dtype (fp32 islands kept).
        vae: diffusers VAE, on ``device`` in the VAE dtype.
        scheduler_config: The checkpoint's scheduler config (or the preset's).
        text_encoder_dir: Folder with the text encoder, if any.
        attention: One line saying which attention kernel runs.
        device: Where the models run.
        dtype: Transformer compute dtype.
        vae_dtype: VAE dtype.
        random_weights: Whether the transformer got a random init (tiny preset or
            ``backbone.random_weights``): its outputs are noise.
    """

    preset: Preset
    transformer: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    text_encoder_dir: Path | None
    attention: str
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    random_weights: bool = False


def diffusers_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def load_component(model: torch.nn.Module, sd: dict, source: str, what: str, family: str, kind: str) -> torch.nn.Module:
    """Convert ``sd`` to diffusers names (any supported format) and load it strictly (``assign``).

    Args:
        model: Built model (parameters may be ``meta``).
        sd: Weights as read from the file.
        source: File named in errors.
        what: Component description named in errors.
        family: ``cogvideox``, ``wan`` or ``ltx``.
        kind: ``transformer`` or ``vae``.
    """
    if kind == "transformer":
        sd, unmapped = loading.transformer_state_dict(sd, family)
    else:
        sd, unmapped = loading.vae_state_dict(sd, family), []
    return loading.load_into(model, sd, source, what, unmapped)


def _build_one(cls, config: dict, source, preset: Preset, kind: str, device, dtype, seed: int) -> torch.nn.Module:
    model = runtime.build_empty(cls, config)
    what = f"{kind} of preset `{preset.name}` ({cls.__name__})"
    if source is not None:
        sd = loading.read_state_dict(source.path)
        load_component(model, sd, str(source.path), what, preset.family, kind)
        del sd
        runtime.cast_(model, dtype)
        model.to(device)
    else:
        # Random weights: a hash-based init that needs no RNG and runs on the target device.
        runtime.materialize_(model, device, torch.float32)
        runtime.deterministic_init_(model, seed=seed + (0 if kind == "transformer" else 1))
        runtime.cast_(model, dtype)
    model.eval().requires_grad_(False)
    return model


def _apply_vae_kernels(vae: torch.nn.Module, cfg: BackboneConfig, preset, device: torch.device) -> None:
    from vsrkit.backbones.config import FUSED_VAE_FAMILIES

    if cfg.vae_kernels == "native" or preset.family not in FUSED_VAE_FAMILIES:
        return
    from vsrkit.backbones import kernels

    if not kernels.triton_available():
        if cfg.vae_kernels == "fused":
            raise UserError("`backbone.vae_kernels=fused` needs Triton (`pip install triton`, shipped with "
                            "PyTorch's Linux CUDA wheels). Use vae_kernels=native.")
        return
    if preset.family == "wan":
        from vsrkit.backbones.wan_fused import fuse_vae
    else:
        from vsrkit.backbones.cogvideox_fused import fuse_vae

    fused = fuse_vae(vae)
    # The fused kernels only run on CUDA (elsewhere the modules run diffusers' forward): say so there only.
    logger.log(logging.INFO if device.type == "cuda" else logging.DEBUG, "preset %s: fused VAE kernels in %d modules",
               preset.name, fused)


def build_models(cfg: BackboneConfig, device: torch.device | str = "cpu",
                 dtype: torch.dtype | str | None = None) -> BuiltModels:
    """Build transformer and VAE of ``cfg`` (weights, dtype, LoRA, runtime switches).

    Args:
        cfg: The backbone config.
        device: Where the models run.
        dtype: Transformer dtype; ``None`` uses ``cfg.dtype``.

    Raises:
        UserError: Unknown preset, family mismatch, bad switch for this device or model.
        WeightsError: Missing or mismatched weight files.
    """
    try:
        preset = get_preset(cfg.preset)
    except KeyError as err:
        raise UserError(str(err.args[0])) from None
    if preset.family != cfg.family:
        raise UserError(f"`backbone.family` is `{cfg.family}` but preset `{cfg.preset}` is a "
                        f"`{preset.family}` backbone.")
    device = torch.device(device)
    dtype = runtime.torch_dtype(dtype if dtype is not None else cfg.dtype)
    vae_dtype = runtime.torch_dtype(cfg.vae_dtype) if cfg.vae_dtype else dtype
    if cfg.cpu_offload != "none" and device.type != "cuda":
        raise UserError(f"`cpu_offload={cfg.cpu_offload}` needs a CUDA device. Got device `{device}`; "
                        f"use cpu_offload=none.")

    layout = loading.resolve_layout(cfg.path, cfg.transformer_path, cfg.vae_path, cfg.text_encoder_path,
                                    family=preset.family)
    if preset.family == "ltx" and layout.vae is None and layout.transformer is not None \
            and any(k.startswith("vae.") for k in loading.file_keys(layout.transformer.path)):
        # An LTX single-file checkpoint carries its VAE (`vae.*` keys) beside the transformer.
        layout.vae = loading.Source(path=layout.transformer.path)
    random_parts = loading.check_weights_given(preset, layout, cfg.random_weights)

    t_cls = diffusers_class(preset.transformer_class)
    t_config = loading.model_config(t_cls, preset.transformer, layout.transformer, cfg.transformer_overrides)
    # With CPU offload the weights are built in CPU memory: the GPU never has to hold them all.
    home = torch.device("cpu") if cfg.cpu_offload != "none" else device
    transformer = _build_one(t_cls, t_config, layout.transformer, preset, "transformer", home, dtype, cfg.seed)
    for lora in cfg.lora_paths:
        loading.fuse_lora(transformer, lora, cfg.lora_scale, preset.family)

    v_cls = diffusers_class(preset.vae_class)
    v_config = loading.model_config(v_cls, preset.vae, layout.vae)
    vae = _build_one(v_cls, v_config, layout.vae, preset, "vae", home, vae_dtype, cfg.seed)
    if cfg.vae_slicing:
        vae.enable_slicing()
    _apply_vae_kernels(vae, cfg, preset, device)

    scheduler_config = {k: v for k, v in (layout.scheduler_config or preset.scheduler).items() if not k.startswith("_")}

    attention = runtime.apply_attention(transformer, cfg.attention)
    logger.info("preset %s: attention %s", preset.name, attention)
    runtime.apply_gradient_checkpointing(transformer, cfg.gradient_checkpointing)
    if cfg.compile != "off":
        n = runtime.apply_compile(transformer, cfg.compile, fullgraph=True)
        logger.info("preset %s: regional torch.compile of %d blocks", preset.name, n)
    runtime.apply_offload([transformer, vae], cfg.cpu_offload, device)
    return BuiltModels(preset=preset, transformer=transformer, vae=vae, scheduler_config=scheduler_config,
                       text_encoder_dir=layout.text_encoder_dir, attention=attention, device=device, dtype=dtype,
                       vae_dtype=vae_dtype, random_weights="transformer" in random_parts)
