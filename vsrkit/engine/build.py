"""Turns a composed config into built objects: method, backbone config, engine settings.

Shared by ``vsrkit infer``, ``train`` and ``bench``. Every check on the user's values happens
here, before any weights load.
"""

from __future__ import annotations

from typing import Any

from vsrkit.errors import UserError
from vsrkit.registry import BACKBONES, METHODS


def to_dataclass(node: Any, what: str) -> Any:
    """``OmegaConf.to_object`` with the dataclass's own validation turned into a UserError."""
    from omegaconf import OmegaConf

    if node is None:
        return None
    try:
        return OmegaConf.to_object(node)
    except (ValueError, TypeError) as err:
        raise UserError(f"{what}: {err}") from None
    except Exception as err:  # OmegaConf validation errors (wrong type for a field)
        raise UserError(f"{what}: {str(err).splitlines()[0]}") from None


def compatible_presets(method_name: str) -> list[str]:
    family = METHODS.entry(method_name).meta.get("family")
    return [e.name for e in BACKBONES.entries() if family and e.meta.get("family") == family]


def check_backbone(method_name: str, backbone_name: str | None) -> None:
    """Fail at once when the method cannot run on the chosen backbone preset."""
    family = METHODS.entry(method_name).meta.get("family")
    if family is None:
        if backbone_name not in (None, "none"):
            raise UserError(f"method `{method_name}` takes no backbone. Got backbone={backbone_name}; use backbone=none.")
        return
    if backbone_name in (None, "none"):
        raise UserError(f"method `{method_name}` needs a `{family}` backbone. "
                        f"Compatible presets: {', '.join(compatible_presets(method_name))}.")
    preset_family = BACKBONES.entry(backbone_name).meta.get("family")
    if preset_family != family:
        raise UserError(f"backbone `{backbone_name}` ({preset_family}) is incompatible with method `{method_name}`. "
                        f"Compatible presets: {', '.join(compatible_presets(method_name))}.")


def build_method(cfg: Any, method_name: str, backbone_name: str | None, scale: int) -> Any:
    """Construct (without loading weights) the method named ``method_name`` from ``cfg``."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise UserError(f"`scale` must be an integer >= 1. Got {scale}.")
    check_backbone(method_name, backbone_name)
    method_cfg = to_dataclass(cfg.method, f"method `{method_name}`")
    backbone_cfg = to_dataclass(cfg.backbone if "backbone" in cfg else None, f"backbone `{backbone_name}`")
    method_cls = METHODS.get(method_name)
    try:
        return method_cls(method_cfg, backbone=backbone_cfg, scale=scale)
    except ValueError as err:
        raise UserError(f"method `{method_name}`: {err}") from None


def random_weights_note(backbone: Any) -> str | None:
    """What every summary line of a run says when its backbone has random weights, else None.

    Args:
        backbone: The ``backbone`` config node or :class:`~vsrkit.backbones.config.BackboneConfig`
            (None for methods without a backbone).
    """
    if backbone is None:
        return None
    from vsrkit.backbones.presets import PRESETS

    preset = PRESETS.get(backbone.preset)
    if preset is not None and preset.tiny:
        return f"random weights (tiny preset `{backbone.preset}`): the output is noise"
    if backbone.random_weights and backbone.path is None and backbone.transformer_path is None:
        return "RANDOM weights (backbone.random_weights=true): the output is noise"
    return None


def hydra_choice(group: str) -> str | None:
    """The option the user (or the defaults) picked for config group ``group``."""
    from hydra.core.hydra_config import HydraConfig

    choice = HydraConfig.get().runtime.choices.get(group)
    return None if choice in (None, "null") else str(choice)
