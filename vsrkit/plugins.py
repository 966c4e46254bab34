"""Third-party components through the entry-point group ``vsrkit.plugins``.

A plugin package declares, in its own packaging metadata::

    [options.entry_points]
    vsrkit.plugins =
        myvsr = myvsr_vsrkit

Importing the named module registers its components (``@METHODS.register("myvsr")``). If the
module defines ``CONFIG_PACKAGE = "myvsr_vsrkit.conf"``, that package joins Hydra's config search
path, so ``method=myvsr`` finds ``conf/method/myvsr.yaml`` there. A plugin that fails to import is
recorded (``vsrkit doctor`` lists it) and never stops vsrkit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points

logger = logging.getLogger(__name__)

GROUP = "vsrkit.plugins"


@dataclass
class PluginReport:
    """What loading the plugins gave.

    Args:
        loaded: ``{entry point name: module name}`` of plugins that imported.
        failed: ``{entry point name: error line}`` of plugins that did not.
        config_packages: Python packages to add to Hydra's search path (``pkg://<name>``).
    """

    loaded: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    config_packages: list = field(default_factory=list)


_report: PluginReport | None = None


def load_plugins() -> PluginReport:
    """Import every ``vsrkit.plugins`` entry point once; failures are recorded, not raised."""
    global _report
    if _report is not None:
        return _report
    report = PluginReport()
    for ep in entry_points(group=GROUP):
        try:
            module = ep.load()
        except Exception as err:  # a broken plugin must never break vsrkit
            report.failed[ep.name] = f"{type(err).__name__}: {err}"
            logger.warning("vsrkit plugin `%s` (%s) failed to load: %s", ep.name, ep.value, err)
            continue
        report.loaded[ep.name] = getattr(module, "__name__", ep.value)
        config_package = getattr(module, "CONFIG_PACKAGE", None)
        if config_package:
            report.config_packages.append(str(config_package))
    _report = report
    return report


def setup_registries() -> PluginReport:
    """Register built-ins, then plugins. Call before any registry lookup."""
    from vsrkit.builtins import register_builtins

    register_builtins()
    return load_plugins()
