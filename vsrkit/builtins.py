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
    METHODS.register("bicubic", "vsrkit.methods.baselines.method:BicubicMethod",
                     config="vsrkit.methods.baselines.config:BicubicConfig")
    METHODS.register("lanczos", "vsrkit.methods.baselines.method:LanczosMethod",
                     config="vsrkit.methods.baselines.config:LanczosConfig")
    # --- end methods ------------------------------------------------------------------

    # --- backbones --------------------------------------------------------------------
    # --- end backbones ----------------------------------------------------------------

    # --- datasets and degradations ----------------------------------------------------
    # --- end datasets and degradations ------------------------------------------------

    # --- metrics ----------------------------------------------------------------------
    # --- end metrics ------------------------------------------------------------------

    # --- keyframes --------------------------------------------------------------------
    # --- end keyframes ----------------------------------------------------------------


__all__ = ["register_builtins", "METHODS", "BACKBONES", "DATASETS", "DEGRADATIONS", "METRICS",
           "KEYFRAME_SELECTORS", "KEYFRAME_SOURCES"]
