"""Runs ``vsrkit infer|train|bench|eval`` as Hydra apps over the configs in ``conf/``.

Before handing over to Hydra this module (1) registers built-ins and plugins, (2) stores every
registered config dataclass in Hydra's ConfigStore as ``schema/<group>/<name>`` (so YAML presets
are type-checked and unknown keys fail), (3) adds plugin config packages to the search path and
(4) composes the config once with the first value of each sweep, so unknown names and bad values
fail with one line and exit status 2 instead of Hydra's multi-line report.
"""

from __future__ import annotations

import importlib
import sys

from vsrkit.errors import UserError
from vsrkit.registry import BACKBONES, DATASETS, DEGRADATIONS, METHODS, METRICS, Registry

CONFIG_MODULE = "vsrkit.conf"
# Config groups whose options are checked before Hydra runs (one clear line instead of Hydra's report).
CHECKED_GROUPS = ("method", "backbone", "data", "degradation", "metric")
# Config group -> registry whose config dataclasses become `schema/<group>/<name>`.
GROUP_REGISTRIES: dict[str, Registry] = {
    "method": METHODS,
    "backbone": BACKBONES,
    "data": DATASETS,
    "degradation": DEGRADATIONS,
    "metric": METRICS,
}
# Flags that make Hydra print something and exit; the dry compose is skipped for them.
_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc")

_schemas_stored = False


def store_schemas() -> None:
    """Put every registered config dataclass into Hydra's ConfigStore (idempotent)."""
    global _schemas_stored
    if _schemas_stored:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, registry in GROUP_REGISTRIES.items():
        for entry in registry.entries():
            config_cls = registry.get_config(entry.name)
            if config_cls is not None:
                store.store(group=f"schema/{group}", name=entry.name, node=config_cls)
    from vsrkit.engine.settings import register_settings_schemas

    register_settings_schemas(store)
    _schemas_stored = True


def _with_searchpath(args: list[str], packages: list[str]) -> list[str]:
    if not packages:
        return args
    extra = [f"pkg://{p}" for p in packages]
    for i, arg in enumerate(args):
        if arg.startswith("hydra.searchpath="):
            current = arg.split("=", 1)[1].strip().strip("[]")
            items = [s for s in (x.strip() for x in current.split(",")) if s]
            args = list(args)
            args[i] = f"hydra.searchpath=[{','.join(items + extra)}]"
            return args
    return args + [f"hydra.searchpath=[{','.join(extra)}]"]


def _first_values(overrides: list[str]) -> list[str]:
    """The overrides with every sweep reduced to its first value (for the dry compose)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    first = []
    for override, text in zip(parsed, overrides):
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            first.append(f"{override.get_key_element()}={value}")
        else:
            first.append(text)
    return first


def _check_group_choices(overrides: list[str], packages: list[str]) -> None:
    """`method=foo` with an unknown `foo` -> one line naming close matches."""
    import difflib

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from vsrkit.presets import preset_names

    for override in OverridesParser.create().parse_overrides(overrides):
        group = override.key_or_group
        if group not in CHECKED_GROUPS or override.package is not None:
            continue
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            value = override.value()
            values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        options = preset_names(group, packages)
        for value in values:
            if value not in options:
                close = difflib.get_close_matches(value, options, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
                raise UserError(f"Unknown {group} `{value}`.{hint} Known: {', '.join(options)}.")


def _dry_compose(command: str, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    # Hydra's own settings don't change the job's config; the search path does (plugin configs).
    hydra_overrides = [o for o in overrides
                       if o.startswith("hydra.searchpath=") or not o.startswith(("hydra.", "hydra/"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            compose(config_name=command, overrides=hydra_overrides)
    except Exception as err:  # Hydra/OmegaConf composition errors -> one line
        message = " ".join(str(err).split("\n")[0:1]).strip()
        detail = [line.strip() for line in str(err).splitlines()[1:] if line.strip() and "full_key" not in line]
        if detail and len(message) < 60:
            message = f"{message} {detail[0]}"
        raise UserError(f"bad option for `vsrkit {command}`: {message}") from None
    finally:
        GlobalHydra.instance().clear()


def run_hydra_command(command: str, args: list[str]) -> int:
    from vsrkit.plugins import setup_registries

    report = setup_registries()
    store_schemas()
    args = _with_searchpath(args, report.config_packages)
    overrides = [a for a in args if not a.startswith("-")]
    if not any(a.split("=", 1)[0] in _INFO_FLAGS for a in args):
        _check_group_choices(overrides, report.config_packages)
        _dry_compose(command, _first_values(overrides))

    task = importlib.import_module(f"vsrkit.commands.{command}").run

    def task_with_errors(cfg) -> None:
        try:
            task(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    import hydra

    sys.argv = [f"vsrkit-{command}"] + args
    hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=command)(task_with_errors)()
    return 0
