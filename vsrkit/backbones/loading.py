"""Find, read, convert and strictly load backbone weights (no hub access).

Sources a :class:`~vsrkit.backbones.config.BackboneConfig` may point at:

* a diffusers pipeline folder (``model_index.json`` + ``transformer/ vae/ scheduler/
  text_encoder/ tokenizer/``; the SparkVSR release is one);
* a diffusers component folder (``config.json`` + ``diffusion_pytorch_model*.safetensors``,
  single or sharded with ``*.safetensors.index.json``);
* the original Wan2.1 folder (``diffusion_pytorch_model.safetensors`` in the original key
  format, ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth``);
* a single file: ``.safetensors`` / ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin``, in diffusers or
  original names (Wan DiT, LTX single file with its ``vae.*`` part), or a sharded
  ``*.safetensors.index.json``.

Configs come from the preset (:mod:`vsrkit.backbones.presets`) unless a component folder ships
its own ``config.json``. Every load is strict: a missing, unexpected or mis-shaped key raises one
:class:`~vsrkit.errors.WeightsError` naming the file and the key.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from vsrkit.backbones import convert
from vsrkit.errors import UserError, WeightsError

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
WAN_ORIGINAL_VAE = "Wan2.1_VAE.pth"
# What a real preset's weights look like, per family (named when they are missing or unreadable).
EXPECTED_WEIGHTS = {
    "cogvideox": "a diffusers folder with `model_index.json`, `transformer/` and `vae/` (the SparkVSR release "
                 "JiongzeYu/SparkVSR, or zai-org/CogVideoX1.5-5B-I2V)",
    "wan": "a diffusers folder with `model_index.json`, `transformer/` and `vae/` (Wan-AI/Wan2.1-T2V-1.3B-Diffusers), "
           f"or the original Wan2.1 folder with `diffusion_pytorch_model.safetensors` and `{WAN_ORIGINAL_VAE}`",
    "ltx": "a diffusers folder with `model_index.json`, `transformer/` and `vae/`, or the single file "
           "`ltx-video-2b-v0.9.1.safetensors` (it carries its VAE)",
}


@dataclass
class Source:
    """Where one component's weights are.

    Args:
        path: A folder (diffusers component with ``config.json``), a weights file or an index json.
        config: The component config from the folder's ``config.json`` (``None``: use the preset).
    """

    path: Path
    config: dict | None = None


@dataclass
class Layout:
    """What a config's weight paths resolve to.

    Args:
        transformer: Transformer weights, or ``None`` for a random init.
        vae: VAE weights, or ``None`` for a random init.
        scheduler_config: The checkpoint's scheduler config, or ``None`` to use the preset's.
        text_encoder_dir: Folder holding the text encoder (and tokenizer), if any.
    """

    transformer: Source | None = None
    vae: Source | None = None
    scheduler_config: dict | None = None
    text_encoder_dir: Path | None = None


# --- reading ---------------------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"Could not read `{path}`: {err}.") from err


def _unwrap(sd: dict) -> dict:
    # Training checkpoints wrap the weights (`state_dict`, `module`, `model`; diffusers' convert scripts
    # unwrap the same three).
    for key in ("state_dict", "module", "model"):
        if key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a diffusers component folder (index json first, else one file).

    Raises:
        WeightsError: None found, or an index names a shard that is missing.
    """
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        return shard_files(indexes[0])
    for pattern in ("diffusion_pytorch_model.safetensors", "*.safetensors", "diffusion_pytorch_model.bin", "*.bin",
                    "*.pth", "*.ckpt"):
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found
        if len(found) > 1:
            raise WeightsError(f"`{folder}` holds several weight files ({', '.join(p.name for p in found[:3])}) and "
                               f"no `*.safetensors.index.json`; point the path at one file.")
    raise WeightsError(
        f"No weights in `{folder}`: expected `diffusion_pytorch_model.safetensors` or a sharded "
        f"`diffusion_pytorch_model.safetensors.index.json`."
    )


def shard_files(index: Path) -> list[Path]:
    """Shard files listed by a ``*.safetensors.index.json`` (all must exist)."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"`{index}` has no `weight_map`; expected a safetensors shard index.")
    files = []
    for name in sorted(set(weight_map.values())):
        shard = index.parent / name
        if not shard.is_file():
            key = next(k for k, v in weight_map.items() if v == name)
            raise WeightsError(f"Shard `{shard}` listed in `{index}` (holding key `{key}`) is missing.")
        files.append(shard)
    return files


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """All tensors of a weights file, a shard index, or a diffusers component folder (on CPU).

    Raises:
        WeightsError: The path does not exist or is not a weights file.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"Weights path `{path}` does not exist.")
    if path.is_dir():
        files = weight_files(path)
    elif path.name.endswith(".index.json"):
        files = shard_files(path)
    elif path.suffix in WEIGHT_SUFFIXES:
        files = [path]
    else:
        raise WeightsError(f"`{path}` is not a weights file; expected one of {list(WEIGHT_SUFFIXES)} or *.index.json.")
    sd: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                part = load_file(str(file))
            else:
                part = _unwrap(torch.load(str(file), map_location="cpu", weights_only=True, mmap=True))
        except Exception as err:  # corrupt or truncated files: one clear line instead of a deep traceback
            raise WeightsError(f"Could not read weights file `{file}`: {err}.") from err
        sd.update(part)
    return sd


def file_keys(path: Path) -> list[str]:
    """Tensor names of a ``.safetensors`` file without reading the tensors (other files: ``[]``)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return []
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


# --- layout ----------------------------------------------------------------------------------------


def _component(folder: Path, name: str) -> Source:
    sub = folder / name
    if not (sub / "config.json").is_file():
        raise WeightsError(f"`{folder}` has a model_index.json but no `{name}/config.json`; expected a diffusers "
                           f"pipeline folder with `{name}/`.")
    return Source(path=sub, config=read_json(sub / "config.json"))


def resolve_layout(path: str | None, transformer_path: str | None = None, vae_path: str | None = None,
                   text_encoder_path: str | None = None, family: str | None = None) -> Layout:
    """Work out which files hold which component (no weights are read).

    Args:
        path: ``BackboneConfig.path``.
        transformer_path: ``BackboneConfig.transformer_path`` (wins over ``path``).
        vae_path: ``BackboneConfig.vae_path`` (wins over ``path``).
        text_encoder_path: ``BackboneConfig.text_encoder_path`` (wins over ``path``).
        family: The preset's family, so an error names the layout that family's weights come in.

    Raises:
        WeightsError: A path is missing or has an unknown layout.
    """
    layout = Layout()
    if path is not None:
        root = Path(path).expanduser()
        if not root.exists():
            raise WeightsError(f"`backbone.path={path}` does not exist; expected a diffusers folder or a weights file.")
        if root.is_dir() and (root / "model_index.json").is_file():
            layout.transformer = _component(root, "transformer")
            layout.vae = _component(root, "vae")
            sched = root / "scheduler" / "scheduler_config.json"
            layout.scheduler_config = read_json(sched) if sched.is_file() else None
            if (root / "text_encoder").is_dir():
                layout.text_encoder_dir = root
        elif root.is_dir() and (root / "config.json").is_file():
            layout.transformer = Source(path=root, config=read_json(root / "config.json"))
        elif root.is_dir():
            # Original Wan2.1 release folder: DiT in original names, VAE .pth beside it.
            indexes = sorted(root.glob("diffusion_pytorch_model*.safetensors.index.json"))
            singles = sorted(root.glob("diffusion_pytorch_model*.safetensors"))
            if indexes:
                layout.transformer = Source(path=indexes[0])
            elif len(singles) == 1:
                layout.transformer = Source(path=singles[0])
            else:
                raise WeightsError(_unknown_folder(root, path, family))
            if (root / WAN_ORIGINAL_VAE).is_file():
                layout.vae = Source(path=root / WAN_ORIGINAL_VAE)
        else:
            layout.transformer = Source(path=root)
    if transformer_path is not None:
        p = Path(transformer_path).expanduser()
        if not p.exists():
            raise WeightsError(f"`backbone.transformer_path={transformer_path}` does not exist.")
        config = read_json(p / "config.json") if (p / "config.json").is_file() else None
        layout.transformer = Source(path=p, config=config)
    if vae_path is not None:
        p = Path(vae_path).expanduser()
        if not p.exists():
            raise WeightsError(f"`backbone.vae_path={vae_path}` does not exist.")
        layout.vae = Source(path=p, config=read_json(p / "config.json") if (p / "config.json").is_file() else None)
    if text_encoder_path is not None:
        layout.text_encoder_dir = Path(text_encoder_path).expanduser()
    return layout


def write_pipeline_folder(backbone, directory: str | Path, pipeline_class: str, base: str | None) -> Path:
    """Write ``backbone`` as a diffusers pipeline folder that diffusers and :func:`resolve_layout` load.

    ``model_index.json`` (naming ``pipeline_class``), ``transformer/`` and ``vae/`` (safetensors),
    ``scheduler/``; ``text_encoder/`` and ``tokenizer/`` are linked from ``base`` when it is a pipeline
    folder (the way the releases' checkpoint scripts reuse the base model's text encoder).

    Args:
        backbone: A loaded backbone (``transformer``, ``vae.model``, ``preset.scheduler_class``,
            ``scheduler_config``).
        directory: The folder to write (created).
        pipeline_class: diffusers class name for ``model_index.json``.
        base: ``backbone.path`` the backbone was loaded from, if any.
    """
    import os

    import diffusers

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    backbone.transformer.save_pretrained(out / "transformer", safe_serialization=True)
    backbone.vae.model.save_pretrained(out / "vae", safe_serialization=True)
    (out / "scheduler").mkdir(exist_ok=True)
    scheduler = {"_class_name": backbone.preset.scheduler_class, "_diffusers_version": diffusers.__version__,
                 **backbone.scheduler_config}
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    index = {"_class_name": pipeline_class, "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", backbone.preset.scheduler_class],
             "transformer": ["diffusers", type(backbone.transformer).__name__],
             "vae": ["diffusers", type(backbone.vae.model).__name__]}
    base_path = Path(base).expanduser() if base else None
    if base_path is not None and (base_path / "model_index.json").is_file():
        base_index = read_json(base_path / "model_index.json")
        for part in ("text_encoder", "tokenizer"):
            if (base_path / part).is_dir() and part in base_index:
                link = out / part
                if not link.exists():
                    os.symlink((base_path / part).resolve(), link, target_is_directory=True)
                index[part] = base_index[part]
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def _unknown_folder(root: Path, path: str, family: str | None) -> str:
    entries = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    expected = EXPECTED_WEIGHTS.get(family, "a diffusers folder with `model_index.json`, or a weights file")
    if not entries:
        return f"`backbone.path={path}` is an empty folder; expected {expected}."
    shown = ", ".join(f"`{e}`" for e in entries[:4]) + (f" (+{len(entries) - 4} more)" if len(entries) > 4 else "")
    return (f"`backbone.path={path}` holds no `model_index.json`, `config.json` or `diffusion_pytorch_model*.safetensors` "
            f"(it holds {shown}); expected {expected}.")


def check_weights_given(preset, layout: Layout, random_weights: bool) -> list[str]:
    """Refuse a real preset whose weights are not all given, before anything is built.

    Args:
        preset: The :class:`~vsrkit.backbones.presets.Preset`.
        layout: What the config's paths resolve to.
        random_weights: ``backbone.random_weights``: build what is missing with a random init.

    Returns:
        The components that get random weights (``"transformer"``, ``"vae"``); logged loudly.

    Raises:
        WeightsError: A real preset misses weights and ``random_weights`` is off.
    """
    missing = [kind for kind, source in (("transformer", layout.transformer), ("vae", layout.vae)) if source is None]
    if not missing:
        return []
    if preset.tiny:
        logger.info("preset %s: random %s weights (a tiny test preset: its outputs are noise)", preset.name,
                    " and ".join(missing))
        return missing
    if not random_weights:
        switch = "or `backbone.random_weights=true` for a speed benchmark with random weights (its output is noise)"
        if len(missing) == 2:
            raise WeightsError(f"preset `{preset.name}` has no weights: set `backbone.path` to "
                               f"{EXPECTED_WEIGHTS[preset.family]}, {switch}.")
        if missing == ["vae"]:
            vae = "a diffusers `vae/` folder" + (f" or `{WAN_ORIGINAL_VAE}`" if preset.family == "wan" else "")
            raise WeightsError(f"preset `{preset.name}`: the weights given hold a transformer but no VAE; set "
                               f"`backbone.vae_path` to {vae}, {switch}.")
        raise WeightsError(f"preset `{preset.name}`: the weights given hold a VAE but no transformer; set "
                           f"`backbone.path` or `backbone.transformer_path` to {EXPECTED_WEIGHTS[preset.family]}, "
                           f"{switch}.")
    logger.warning("preset %s: RANDOM %s weights (backbone.random_weights=true): outputs are noise, for speed "
                   "benchmarks only", preset.name, " and ".join(missing))
    return missing


def model_config(cls, preset_config: dict, source: Source | None, overrides: dict | None = None) -> dict:
    """Constructor kwargs: the source folder's ``config.json`` (if any) else the preset, then overrides.

    Keys that ``cls.__init__`` does not take (``_class_name``, ``_diffusers_version``...) are dropped.

    Raises:
        WeightsError: The folder's config names another class than ``cls``.
        UserError: ``overrides`` has a key ``cls`` does not take.
    """
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    base = dict(preset_config)
    if source is not None and source.config is not None:
        declared = source.config.get("_class_name")
        if declared and declared != cls.__name__:
            raise WeightsError(f"`{source.path}/config.json` is a `{declared}`; this backbone expects "
                               f"`{cls.__name__}`.")
        base = {k: v for k, v in source.config.items() if k in params}
    unknown = set(overrides or {}) - params
    if unknown:
        raise UserError(f"`backbone.transformer_overrides` has keys {sorted(unknown)} that {cls.__name__} does not "
                        f"take; expected some of {sorted(params)}.")
    base.update(overrides or {})
    return base


# --- conversion and strict loading ---------------------------------------------------------------


def transformer_state_dict(sd: dict, family: str) -> tuple[dict, list[str]]:
    """A transformer state dict in diffusers names, from any supported format.

    Returns:
        The converted dict and the keys that could not be mapped (reported as unexpected).
    """
    keys = list(sd)
    if family == "wan" and convert.is_wan_original(keys):
        return convert.convert_wan_to_diffusers(sd)
    if family == "ltx" and convert.is_ltx_single_file(keys):
        return convert.convert_ltx_transformer_to_diffusers(sd), []
    return sd, []


def vae_state_dict(sd: dict, family: str) -> dict:
    """A VAE state dict in diffusers names, from any supported format."""
    keys = list(sd)
    if family == "ltx" and any(k.startswith(convert.LTX_VAE_PREFIX) for k in keys):
        return convert.convert_ltx_vae_to_diffusers(sd)
    if family == "wan" and any(k.startswith(("encoder.downsamples.", "decoder.upsamples.")) for k in keys):
        return convert.convert_wan_vae_to_diffusers(sd)
    return sd


def check_state_dict(model: torch.nn.Module, sd: dict, source: str, what: str, unmapped: list[str] = ()) -> None:
    """Raise one :class:`WeightsError` if ``sd`` does not match ``model`` key for key and shape.

    Args:
        model: The model the weights are for.
        sd: Weights in the model's names.
        source: File or folder named in the message.
        what: Component description (``transformer of preset wan2.1-t2v-1.3b``).
        unmapped: Keys of the file the converter could not map (reported as unexpected).
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(list(unmapped) + [k for k in sd if k not in expected])
    wrong = sorted(k for k in sd if k in expected and tuple(sd[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"missing key `{missing[0]}`" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        more = f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        problems.append(f"unexpected key `{unexpected[0]}`{more}")
    if wrong:
        k = wrong[0]
        problems.append(f"key `{k}` has shape {tuple(sd[k].shape)}, expected {expected[k]}"
                        + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    if problems:
        hint = " (or set `backbone.transformer_overrides` for a modified one)" if what.startswith("transformer") else ""
        raise WeightsError(f"`{source}` does not match the {what}: {'; '.join(problems)}. Check that the file is "
                           f"that model's checkpoint{hint}.")


def load_into(model: torch.nn.Module, sd: dict, source: str, what: str, unmapped: list[str] = ()) -> torch.nn.Module:
    """Strictly load ``sd`` into ``model`` (parameters may be ``meta``: tensors are assigned)."""
    check_state_dict(model, sd, source, what, unmapped)
    model.load_state_dict(sd, strict=True, assign=True)
    return model


# --- LoRA ------------------------------------------------------------------------------------------


@torch.no_grad()
def fuse_lora(model: torch.nn.Module, path: str | Path, scale: float, family: str) -> int:
    """Fuse a LoRA file into ``model``: ``W += scale * s * B @ A``; copy its extra full tensors.

    Module names may be diffusers names or (Wan) original names. ``s`` is ``alpha / rank`` when
    the file stores alphas, else 1 (DiffSynth's ``GeneralLoRALoader`` rule, pssr.md §5.5).

    Returns:
        How many modules received a LoRA delta.

    Raises:
        WeightsError: A LoRA module or extra tensor has no counterpart or the wrong shape.
    """
    return fuse_lora_state_dict(model, read_state_dict(path), str(path), scale, family)


@torch.no_grad()
def fuse_lora_state_dict(model: torch.nn.Module, sd: dict, path: str, scale: float, family: str) -> int:
    """:func:`fuse_lora` of a state dict already in memory (``path`` is named in errors); the
    tensors may be ``meta`` (key-set checks without weights)."""
    try:
        lora = convert.parse_lora(sd)
    except ValueError as err:
        raise WeightsError(f"`{path}`: {err}") from err
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())

    def module_name(name: str) -> str | None:
        if name in modules:
            return name
        if family == "wan":
            mapped = convert.wan_module_to_diffusers(name)
            if mapped in modules:
                return mapped
        return None

    for name, (a, b, s) in lora.pairs.items():
        target = module_name(name)
        if target is None or not hasattr(modules[target], "weight"):
            raise WeightsError(f"`{path}`: LoRA module `{name}` has no counterpart in the {type(model).__name__}.")
        weight = modules[target].weight
        if (b.shape[0], a.shape[1]) != tuple(weight.shape[:2]) or weight.dim() != 2:
            raise WeightsError(f"`{path}`: LoRA `{name}` gives a {(b.shape[0], a.shape[1])} delta for weight "
                               f"`{target}.weight` of shape {tuple(weight.shape)}.")
        delta = (b.to(weight.device, torch.float32) @ a.to(weight.device, torch.float32)) * (scale * s)
        weight.copy_((weight.float() + delta).to(weight.dtype))
    for key, value in lora.extras.items():
        target = key if key in params else (convert.wan_key_to_diffusers(key) if family == "wan" else None)
        if target not in params:
            raise WeightsError(f"`{path}`: extra tensor `{key}` has no counterpart in the {type(model).__name__}.")
        if tuple(params[target].shape) != tuple(value.shape):
            raise WeightsError(
                f"`{path}`: extra tensor `{key}` has shape {tuple(value.shape)}, the model's `{target}` has "
                f"{tuple(params[target].shape)} (a widened patch embedding needs `backbone.transformer_overrides."
                f"in_channels`)."
            )
        params[target].copy_(value.to(params[target].dtype))
    logger.info("fused LoRA %s: %d modules, %d full tensors, scale %.3g", path, len(lora.pairs), len(lora.extras),
                scale)
    return len(lora.pairs)
