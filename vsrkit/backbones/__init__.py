"""Video diffusion backbones (CogVideoX1.5, Wan2.1, LTX-Video) over diffusers.

``import vsrkit.backbones`` is cheap (no torch): the config dataclass and the preset table are
plain Python, and :func:`build_backbone` imports the family wrapper on first use.

    from vsrkit.backbones import BackboneConfig, build_backbone
    bb = build_backbone(BackboneConfig(preset="wan2.1-t2v-1.3b-tiny", family="wan", dtype="fp32"))
    z = bb.vae.encode(video)            # (B, 3, T, H, W) in [-1, 1] -> normalised latents
    emb = bb.prompt_embeds("")          # cached on disk
    v = bb.predict(z, 400.0, emb)       # one transformer forward, channels-first latents
    video = bb.vae.decode(z)

See docs/design.md ("Backbones") for the full API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vsrkit.backbones.config import BackboneConfig

if TYPE_CHECKING:  # torch stays out of `import vsrkit.backbones`
    import torch

_WRAPPERS = {
    "cogvideox": "vsrkit.backbones.cogvideox:CogVideoXBackbone",
    "wan": "vsrkit.backbones.wan:WanBackbone",
    "ltx": "vsrkit.backbones.ltx:LTXBackbone",
}


def backbone_class(family: str):
    """The wrapper class of ``family`` (``cogvideox``, ``wan``, ``ltx``), imported on first use."""
    from vsrkit.registry import resolve

    if family not in _WRAPPERS:
        raise ValueError(f"`family` must be one of {sorted(_WRAPPERS)}. Got {family!r}.")
    return resolve(_WRAPPERS[family])


def build_backbone(config: BackboneConfig, device: "torch.device | str" = "cpu",
                   dtype: "torch.dtype | str | None" = None):
    """Build the backbone wrapper of ``config``: models, weights, dtype, switches.

    Args:
        config: Which preset and where its weights are.
        device: Where the models run.
        dtype: Transformer dtype (``torch.dtype`` or ``"bf16"``...); ``None`` uses ``config.dtype``.

    Returns:
        A ``CogVideoXBackbone``, ``WanBackbone`` or ``LTXBackbone``.

    Raises:
        vsrkit.errors.UserError: Bad preset/family/switch for this device or model.
        vsrkit.errors.WeightsError: Missing or mismatched weight files.
    """
    return backbone_class(config.family).build(config, device, dtype)


__all__ = ["BackboneConfig", "build_backbone", "backbone_class"]
