"""Every built-in component, registered by dotted path (nothing heavy is imported here).

Explicit on purpose: no folder scanning. Each area keeps its entries in its own section.
Third-party components come in through the entry-point group ``vsrkit.plugins``
(see :mod:`vsrkit.plugins`).
"""

from __future__ import annotations

from vsrkit.registry import (
    BACKBONES,
    DATASETS,
    DEGRADATIONS,
    KEYFRAME_SELECTORS,
    KEYFRAME_SOURCES,
    METHODS,
    METRICS,
)

_registered = False


def register_builtins() -> None:
    """Register the built-ins once (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True

    # --- methods ----------------------------------------------------------------------
    METHODS.register("bicubic", "vsrkit.methods.baselines.method:InterpolationMethod",
                     config="vsrkit.methods.baselines.config:BicubicConfig",
                     summary="bicubic interpolation (PIL/MATLAB kernel), no weights")
    METHODS.register("lanczos", "vsrkit.methods.baselines.method:InterpolationMethod",
                     config="vsrkit.methods.baselines.config:LanczosConfig",
                     summary="Lanczos-3 interpolation (PIL kernel), no weights")
    METHODS.register("sparkvsr", "vsrkit.methods.sparkvsr.method:SparkVSRMethod",
                     config="vsrkit.methods.sparkvsr.config:SparkVSRConfig", family="cogvideox",
                     summary="keyframe-conditioned one-step CogVideoX1.5-5B-I2V video SR (SparkVSR)")
    # --- end methods ------------------------------------------------------------------

    # --- backbones --------------------------------------------------------------------
    # --- end backbones ----------------------------------------------------------------

    # --- datasets and degradations ----------------------------------------------------
    # --- end datasets and degradations ------------------------------------------------

    # --- metrics ----------------------------------------------------------------------
    # --- end metrics ------------------------------------------------------------------

    # --- keyframes --------------------------------------------------------------------
    kf, kf_config = "vsrkit.engine.keyframes", "vsrkit.engine.keyframes:KeyframesConfig"
    KEYFRAME_SELECTORS.register("first_middle_last", f"{kf}:select_first_middle_last", config=kf_config,
                                summary="first, middle and last frame (release default)")
    KEYFRAME_SELECTORS.register("manual", f"{kf}:select_manual", config=kf_config,
                                summary="the frame indices in keyframes.indices")
    KEYFRAME_SELECTORS.register("iframes", f"{kf}:select_iframes", config=kf_config,
                                summary="codec I-frames of the input video")
    KEYFRAME_SELECTORS.register("random", f"{kf}:select_random", config=kf_config,
                                summary="seeded random multiples of 4")
    KEYFRAME_SOURCES.register("none", f"{kf}:source_none", config=kf_config,
                              summary="no keyframes (release --ref_mode no_ref)")
    KEYFRAME_SOURCES.register("images", f"{kf}:source_images", config=kf_config,
                              summary="user-supplied HR images")
    KEYFRAME_SOURCES.register("lr", f"{kf}:source_lr", config=kf_config,
                              summary="the upsampled LR frame")
    KEYFRAME_SOURCES.register("gt", f"{kf}:source_gt", config=kf_config,
                              summary="ground-truth frames (evaluation)")
    KEYFRAME_SOURCES.register("method", f"{kf}:source_method", config=kf_config,
                              summary="a registered vsrkit method on the LR frame")
    KEYFRAME_SOURCES.register("command", f"{kf}:source_command", config=kf_config,
                              summary="an external program (e.g. PiSA-SR)")
    # --- end keyframes ----------------------------------------------------------------


__all__ = ["register_builtins", "METHODS", "BACKBONES", "DATASETS", "DEGRADATIONS", "METRICS",
           "KEYFRAME_SELECTORS", "KEYFRAME_SOURCES"]
