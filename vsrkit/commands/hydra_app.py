"""Runs ``vsrkit infer|train|bench|eval`` as Hydra apps over the configs in ``conf/``.

Before handing over to Hydra this module (1) registers built-ins and plugins, (2) stores every
registered config dataclass in Hydra's ConfigStore as ``schema/<group>/<name>`` (so YAML presets
are type-checked and unknown keys fail), (3) adds plugin config packages to the search path,
(4) turns the arguments as users type them into Hydra overrides (positional input and output,
paths with spaces, commas or non-ASCII letters quoted, ``+key=`` only for keys that exist) and
(5) composes the config once with the first value of each sweep, so unknown names, bad values
and missing ``input=``/``output=`` fail with one line and exit status 2 instead of Hydra's
multi-line report. Inside the job, a full disk or a folder it may not write is one line too.
"""

from __future__ import annotations

import errno
import importlib
import re
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
# Hydra flags followed by a value (the value is not a positional argument).
_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                "--experimental-rerun")
# What positional arguments mean, per command (`vsrkit infer in.mp4 out.mp4`).
POSITIONAL_KEYS = {"infer": ("input", "output"), "eval": ("pred", "gt")}
# Config keys (last dotted part) that hold paths: their values are quoted for Hydra's grammar, so
# spaces, commas, brackets, quotes and non-ASCII letters in file names need no care.
PATH_KEYS = {"input", "output", "pred", "gt", "root", "output_dir", "path", "transformer_path", "vae_path",
             "text_encoder_path", "prompt_cache_dir", "lq", "command_cwd", "pretrained_model_path",
             "start", "end"}  # start/end: times like 1:02.5 are not Hydra values either
# OSError numbers that are the user's to fix, with what to do next.
_OS_ERRORS = {
    errno.ENOSPC: "the disk is full; free space or write the output elsewhere",
    errno.EDQUOT: "the disk quota is used up; free space or write the output elsewhere",
    errno.EACCES: "permission denied; choose an output folder you can write to",
    errno.EPERM: "operation not permitted; choose an output folder you can write to",
    errno.EROFS: "the file system is read-only; choose an output folder on a writable disk",
}

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


def _dry_compose(command: str, overrides: list[str]):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    # Hydra's own settings don't change the job's config; the search path does (plugin configs).
    hydra_overrides = [o for o in overrides
                       if o.startswith("hydra.searchpath=") or not o.startswith(("hydra.", "hydra/"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name=command, overrides=hydra_overrides)
    except Exception as err:  # Hydra/OmegaConf composition errors -> one line
        message = " ".join(str(err).split("\n")[0:1]).strip()
        detail = [line.strip() for line in str(err).splitlines()[1:] if line.strip() and "full_key" not in line]
        if detail and len(message) < 60:
            message = f"{message} {detail[0]}"
        raise UserError(f"bad option for `vsrkit {command}`: {message}") from None
    finally:
        GlobalHydra.instance().clear()


def quote_value(value: str) -> str:
    """``value`` as a Hydra quoted string (Hydra unescapes backslashes only before quotes and at the end)."""
    value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + value.replace("'", "\\'") + "'"


def normalize_arguments(command: str, args: list[str]) -> list[str]:
    """The command line as Hydra must see it.

    * positional arguments become the command's keys (``infer in.mp4 out.mp4`` ->
      ``input=... output=...``, ``eval pred gt``);
    * values of path keys (:data:`PATH_KEYS`) are quoted, so any file name works as typed;

    Raises:
        UserError: More positional arguments than the command takes.
    """
    keys = POSITIONAL_KEYS.get(command, ())
    sweeping = any(a in ("-m", "--multirun") for a in args)
    out, positional, skip_next = [], [], False
    for arg in args:
        if skip_next:
            out.append(arg)
            skip_next = False
            continue
        if arg.startswith("-"):
            out.append(arg)
            skip_next = arg in _VALUE_FLAGS
            continue
        if "=" not in arg:
            positional.append(arg)
            continue
        key, value = arg.split("=", 1)
        leaf = key.lstrip("+~").rsplit(".", 1)[-1]
        # Left as typed: quoted values, interpolations, sweep functions, and comma lists in a -m sweep.
        as_typed = (not value or value[0] in "'\"" or "${" in value or value == "null"
                    or re.match(r"^(choice|range|glob|interval|tag|sort|shuffle)\(", value) is not None
                    or sweeping and "," in value)
        if leaf in PATH_KEYS and not as_typed:
            arg = f"{key}={quote_value(value)}"
        out.append(arg)
    if len(positional) > len(keys):
        extra = positional[len(keys)]
        taken = " and ".join(f"{k}" for k in keys) if keys else "none"
        raise UserError(f"unexpected argument `{extra}` for `vsrkit {command}` (positional arguments it takes: "
                        f"{taken}); give options as key=value, e.g. `vsrkit infer in.mp4 out.mp4 scale=2`.")
    given = {a.split("=", 1)[0].lstrip("+") for a in out if "=" in a and not a.startswith("-")}
    for key, value in zip(keys, positional):
        if key in given:
            raise UserError(f"`{value}` and `{key}=` both give the {key}; give it once.")
        out.append(f"{key}={quote_value(value)}")
    return out


def _plus_key(text: str) -> str | None:
    """The config key of a ``+key=...`` / ``++key=...`` override that vsrkit must check (None for
    other overrides, Hydra's own settings and config groups)."""
    if not text.startswith("+"):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    key = OverridesParser.create().parse_overrides([text])[0].key_or_group
    if key.startswith(("hydra.", "hydra/")) or key in GROUP_REGISTRIES:
        return None
    return key


def _check_plus_keys(command: str, overrides: list[str], cfg) -> None:
    """``+key=value`` of a key the config lacks is an error (Hydra would add it, and the run would
    silently ignore it); of a key it has, the ``+`` is dropped by the caller."""
    import difflib

    from omegaconf import OmegaConf

    missing = object()
    for text in overrides:
        key = _plus_key(text)
        if key is None or OmegaConf.select(cfg, key, default=missing) is not missing:
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        known = [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=2)
        prefix = f"{parent}." if parent else ""
        hint = f" Did you mean {' or '.join(f'`{prefix}{c}`' for c in close)}?" if close else ""
        raise UserError(f"unknown key `{key}` (from `{text}`): vsrkit's configs take no new keys, with or without "
                        f"`+`.{hint} See `vsrkit {command} --help`.")


def _dry_compose_checked(command: str, overrides: list[str]) -> list[str]:
    """Compose once (first sweep values) with ``+`` keys checked; returns the overrides for Hydra.

    Raises:
        UserError: An unknown key or option, a bad value, or a missing mandatory key (``output``).
    """
    from omegaconf import OmegaConf

    first = _first_values(overrides)
    _check_plus_keys(command, first, _dry_compose(command, [o for o in first if _plus_key(o) is None]))
    unplussed = [o.lstrip("+") if _plus_key(o) else o for o in overrides]
    cfg = _dry_compose(command, _first_values(unplussed))
    missing = [k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra")]
    if missing:
        example = {"infer": "vsrkit infer in.mp4 out.mp4", "eval": "vsrkit eval pred=out/ gt=GT/"}.get(command, "")
        raise UserError(f"`vsrkit {command}` needs {' and '.join(f'`{k}=`' for k in sorted(missing))}"
                        + (f", e.g. `{example}`." if example else "."))
    return unplussed


def user_error_from_os_error(err: OSError) -> UserError | None:
    """A one-line :class:`UserError` for an OSError the user must fix (a full disk, a folder they may
    not write, a read-only file system), naming the output rather than its temporary file; else None."""
    reason = _OS_ERRORS.get(getattr(err, "errno", None))
    if reason is None:
        return None
    from vsrkit.io.publish import public_path

    name = public_path(err.filename) if getattr(err, "filename", None) else None
    return UserError(f"cannot write {name or 'the output'}: {reason}. Nothing partial was left behind.")


def _override_positions(args: list[str]) -> list[int]:
    """Indices of the overrides in ``args`` (not flags, not the values that follow value flags)."""
    where, skip_next = [], False
    for i, arg in enumerate(args):
        if skip_next:
            skip_next = False
        elif arg.startswith("-"):
            skip_next = arg in _VALUE_FLAGS
        else:
            where.append(i)
    return where


def _own_page(command: str, args: list[str], overrides: list[str], packages: list[str]) -> str | None:
    """``--help`` / ``-h`` and ``--cfg job`` are vsrkit's own pages (Hydra's list its internal groups
    and no option descriptions, and its job config does not say which method runs); None otherwise."""
    wants_help = any(a in ("--help", "-h") for a in args)
    cfg_flag = next((i for i, a in enumerate(args) if a in ("--cfg", "-c")), None)
    wants_job = cfg_flag is not None and args[cfg_flag + 1: cfg_flag + 2] == ["job"] \
        and not any(a in ("--package", "-p") for a in args)
    if not (wants_help or wants_job):
        return None
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from vsrkit.commands.help import render_help, render_job_config

    _check_group_choices(overrides, packages)
    first = [o.lstrip("+") for o in _first_values(overrides) if not o.startswith(("hydra.", "hydra/"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name=command, overrides=first, return_hydra_config=True)
    except Exception as err:  # Hydra/OmegaConf composition errors -> one line
        raise UserError(f"bad option for `vsrkit {command}`: {str(err).splitlines()[0]}") from None
    finally:
        GlobalHydra.instance().clear()
    return render_help(command, cfg) if wants_help else render_job_config(command, cfg)


def run_hydra_command(command: str, args: list[str]) -> int:
    from vsrkit.plugins import setup_registries

    report = setup_registries()
    store_schemas()
    args = normalize_arguments(command, _with_searchpath(args, report.config_packages))
    where = _override_positions(args)
    overrides = [args[i] for i in where]
    page = _own_page(command, args, overrides, report.config_packages)
    if page is not None:
        print(page, end="")
        return 0
    if not any(a.split("=", 1)[0] in _INFO_FLAGS for a in args):
        _check_group_choices(overrides, report.config_packages)
        for i, checked in zip(where, _dry_compose_checked(command, overrides)):
            args[i] = checked

    task = importlib.import_module(f"vsrkit.commands.{command}").run

    def task_with_errors(cfg) -> None:
        try:
            task(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except OSError as err:
            user_error = user_error_from_os_error(err)
            if user_error is None:
                raise
            print(f"error: {user_error}", file=sys.stderr)
            sys.exit(2)

    import hydra

    sys.argv = [f"vsrkit-{command}"] + args
    hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=command)(task_with_errors)()
    return 0
