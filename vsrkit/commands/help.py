"""``vsrkit <command> --help`` and ``--cfg job``: the chosen method's options, documented.

The help is built from what the command would run: the config is composed with the given
overrides (so ``vsrkit infer method=sparkvsr --help`` shows SparkVSR's options and its backbone's),
each option's one-line description comes from its config dataclass's ``Args:`` docstring (the
same text the code documents it with), top-level keys are described by their comments in
``conf/<command>.yaml``, and Hydra's internal ``schema/*`` groups are hidden.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

from omegaconf import OmegaConf

# Config groups a user picks from, shown with their choices (the schema/* groups stay hidden).
USER_GROUPS = ("method", "backbone", "data", "degradation", "metric")
_DESCRIPTIONS = {
    "infer": "Upscale a video, frames folder, image or folder of videos.",
    "train": "Train a method on a data preset (one process, or `accelerate launch -m vsrkit.cli train ...`).",
    "bench": "Run methods over a dataset and score them; -m sweeps (one job per value) with a summary table.",
    "eval": "Score a prediction (file or folder) against ground truth.",
}
_USAGE = {
    "infer": "vsrkit infer [INPUT OUTPUT] [input=<path>] [output=<path>] [method=<name>] [key=value ...]",
    "train": "vsrkit train method=<name> data=<preset> [key=value ...]",
    "bench": "vsrkit bench [-m] method=<a,b,...> data=<preset> [key=value ...]",
    "eval": "vsrkit eval [PRED GT] [pred=<path>] [gt=<path>] ['metric=[psnr,ssim]'] [key=value ...]",
}


def field_docs(cls) -> dict[str, str]:
    """``{field: first sentence of its Args: entry}`` of a config dataclass's docstring."""
    doc = cls.__doc__ or ""
    if "Args:" not in doc:
        return {}
    body = doc.split("Args:", 1)[1]
    docs: dict[str, str] = {}
    current = None
    for line in body.splitlines():
        match = re.match(r"^\s{4,8}(\w+):\s*(.*)$", line)
        if match and match.group(1) in {f.name for f in dataclasses.fields(cls)}:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current is not None and line.strip():
            docs[current] += " " + line.strip()
        elif not line.strip() and current is not None:
            current = None
    return {name: _first_sentence(text) for name, text in docs.items()}


def _first_sentence(text: str, limit: int = 110) -> str:
    """The first sentence (a period before a capital letter or the end; not "e.g."), at most ``limit`` long."""
    text = text.replace("``", "`")
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.(?=\s+[A-Z0-9(`]|$)", text)
    sentence = text[:match.end()] if match else text
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0].rstrip(",;:(") + " ..."
    return sentence.strip()


def yaml_comments(command: str) -> dict[str, str]:
    """``{key: comment}`` of the top-level keys in ``conf/<command>.yaml``."""
    text = resources.files("vsrkit.conf").joinpath(f"{command}.yaml").read_text()
    comments = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+):[^#]*#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def _value(node, key) -> str:
    if OmegaConf.is_missing(node, key):
        return "???"
    value = node[key]
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    return "null" if value is None else str(value).replace("True", "true").replace("False", "false")


def _options(prefix: str, node, cls, width: int = 34) -> list[str]:
    docs = field_docs(cls)
    lines = []
    for key in node:
        item = node[key] if not OmegaConf.is_missing(node, key) else None
        if OmegaConf.is_dict(item) and dataclasses.is_dataclass(OmegaConf.get_type(item)):
            lines.extend(_options(f"{prefix}{key}.", item, OmegaConf.get_type(item), width))
            continue
        left = f"  {prefix}{key}={_value(node, key)}"
        text = docs.get(str(key), "")
        lines.append(f"{left:<{width}} {text}" if len(left) < width else f"{left}\n{'':<{width}} {text}")
    return lines


def render_help(command: str, cfg) -> str:
    """The help page of ``command`` for the composed ``cfg`` (with its hydra node)."""
    from vsrkit.presets import preset_names

    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if k in USER_GROUPS}
    out = [f"usage: {_USAGE.get(command, f'vsrkit {command} [key=value ...]')}", "", _DESCRIPTIONS.get(command, "")]
    if choices:
        out += ["", "choices (pick with group=<name>):"]
        for group, chosen in choices.items():
            shown = "[" + ", ".join(str(c) for c in chosen) + "]" if isinstance(chosen, (list, tuple)) else chosen
            out.append(f"  {group}={shown}   (one of: {', '.join(preset_names(group))})")
    comments = yaml_comments(command)
    plain = [k for k in cfg if k != "hydra" and k not in USER_GROUPS
             and (OmegaConf.is_missing(cfg, k) or not OmegaConf.is_dict(cfg[k]))]
    if plain:
        out += ["", f"options of `vsrkit {command}`:"]
        for key in plain:
            left = f"  {key}={_value(cfg, key)}"
            out.append(f"{left:<34} {comments.get(str(key), '')}".rstrip())
    for key in cfg:
        if key == "hydra" or OmegaConf.is_missing(cfg, key) or not OmegaConf.is_dict(cfg[key]):
            continue
        node = cfg[key]
        cls = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(cls):
            name = f" ({choices[key]})" if key in choices and not isinstance(choices[key], (list, tuple)) else ""
            out += ["", f"{key}{name} options ({cls.__name__}):"]
            out += _options(f"{key}.", node, cls)
            continue
        for sub in node:  # a multi-select group (metric): one config per chosen option
            item = node[sub]
            if OmegaConf.is_dict(item) and dataclasses.is_dataclass(OmegaConf.get_type(item)):
                out += ["", f"{key}.{sub} options ({OmegaConf.get_type(item).__name__}):"]
                out += _options(f"{key}.{sub}.", item, OmegaConf.get_type(item))
    out += ["", "Options are key=value (a path with spaces or any letters works as typed). `--cfg job` prints the",
            "composed config; `--hydra-help` shows Hydra's own flags. Errors are one line starting `error:`, exit 2."]
    return "\n".join(out) + "\n"


def render_job_config(command: str, cfg) -> str:
    """``--cfg job``: the composed config, headed by the chosen method and presets."""
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if k in USER_GROUPS}
    picked = ", ".join(f"{k}={v}" for k, v in choices.items())
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return f"# vsrkit {command}: {picked}\n" + OmegaConf.to_yaml(job)
