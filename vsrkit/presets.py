"""The YAML presets of each config group (``conf/<group>/*.yaml``, plus plugins' config packages).

A preset is what users type after ``group=`` on the command line; listing them needs no Hydra
and no torch.
"""

from __future__ import annotations

from importlib.resources import files

CONFIG_PACKAGE = "vsrkit.conf"


def preset_names(group: str, extra_packages: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Sorted preset names of ``group`` across vsrkit's and the plugins' config packages."""
    names = set()
    for package in (CONFIG_PACKAGE, *extra_packages):
        try:
            folder = files(package) / group
        except ModuleNotFoundError:
            continue
        if folder.is_dir():
            names.update(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".yaml"))
    return sorted(names)
