"""Checkpoint key conversion between the formats users download and diffusers' module names.

* Wan2.1 DiT: the original (Wan repo = DiffSynth ``WanModel``) names <-> diffusers
  ``WanTransformer3DModel`` names, both directions (pssr.md §8.2; diffusers
  ``convert_wan_transformer_to_diffusers``). The reverse direction lets tests and the
  ``tools/`` converter produce original-format files.
* LTX-Video single file (``model.diffusion_model.*`` + ``vae.*``): diffusers' own in-library
  converters; the reverse maps exist for the key-set tests.
* Wan2.1 VAE ``Wan2.1_VAE.pth``: diffusers' ``convert_wan_vae_to_diffusers``.
* LoRA files in peft (``lora_A/lora_B``, optionally ``.default``), DiffSynth (peft names on
  original Wan modules, plus extra full tensors, as PS-SR's ``base.safetensors``) and
  kohya/diffusers (``lora_down/lora_up`` + ``alpha``) naming -> one normal form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# --- Wan2.1 DiT ---------------------------------------------------------------------------------

# Module paths inside a block: original -> diffusers (the norm2/norm3 swap: the original's affine
# `norm3` sits before cross-attention and is diffusers' `norm2`; norm1/norm2 of the original and
# norm1/norm3 of diffusers carry no weights).
_WAN_BLOCK_MODULES = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
_WAN_TOP_MODULES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
# Parameters that are tensors of a module rather than modules of their own.
_WAN_TOP_PARAMS = {"head.modulation": "scale_shift_table"}
_WAN_BLOCK_PARAMS = {"modulation": "scale_shift_table"}

_WAN_BLOCK_MODULES_INV = {v: k for k, v in _WAN_BLOCK_MODULES.items()}
_WAN_TOP_MODULES_INV = {v: k for k, v in _WAN_TOP_MODULES.items()}
_WAN_TOP_PARAMS_INV = {v: k for k, v in _WAN_TOP_PARAMS.items()}
_WAN_BLOCK_PARAMS_INV = {v: k for k, v in _WAN_BLOCK_PARAMS.items()}

# Prefixes that wrap the original DiT keys in the files people ship (ComfyUI repacks, DiffSynth
# exports, PS-SR's `dit.`).
WAN_ORIGINAL_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "dit.")


def _map_module(name: str, top: dict, block: dict) -> str | None:
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m:
        mapped = block.get(m.group(2))
        return None if mapped is None else f"blocks.{m.group(1)}.{mapped}"
    return top.get(name)


def wan_module_to_diffusers(name: str) -> str | None:
    """Original Wan module path -> diffusers (``blocks.3.self_attn.q`` -> ``blocks.3.attn1.to_q``)."""
    return _map_module(name, _WAN_TOP_MODULES, _WAN_BLOCK_MODULES)


def wan_module_to_original(name: str) -> str | None:
    """diffusers Wan module path -> original (inverse of :func:`wan_module_to_diffusers`)."""
    return _map_module(name, _WAN_TOP_MODULES_INV, _WAN_BLOCK_MODULES_INV)


def _map_key(key: str, to_diffusers: bool) -> str | None:
    if to_diffusers:
        top_p, block_p = _WAN_TOP_PARAMS, _WAN_BLOCK_PARAMS
    else:
        top_p, block_p = _WAN_TOP_PARAMS_INV, _WAN_BLOCK_PARAMS_INV
    if key in top_p:
        return top_p[key]
    m = re.fullmatch(r"blocks\.(\d+)\.([A-Za-z_]+)", key)
    if m and m.group(2) in block_p:
        return f"blocks.{m.group(1)}.{block_p[m.group(2)]}"
    module, _, param = key.rpartition(".")
    mapped = wan_module_to_diffusers(module) if to_diffusers else wan_module_to_original(module)
    return None if mapped is None else f"{mapped}.{param}"


def wan_key_to_diffusers(key: str) -> str | None:
    """One original Wan DiT key -> diffusers, or ``None`` when it has no diffusers counterpart."""
    for prefix in WAN_ORIGINAL_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return _map_key(key, to_diffusers=True)


def wan_key_to_original(key: str) -> str | None:
    """One diffusers Wan DiT key -> original, or ``None`` when it has no original counterpart."""
    return _map_key(key, to_diffusers=False)


def is_wan_original(keys) -> bool:
    """Whether a Wan DiT state dict uses the original names (``head.modulation`` is unique to them)."""
    return any(k.endswith("head.modulation") or re.search(r"blocks\.\d+\.self_attn\.q\.", k) for k in keys)


def convert_wan_to_diffusers(state_dict: dict) -> tuple[dict, list[str]]:
    """Rename an original-format Wan DiT state dict to diffusers names.

    Returns:
        The renamed dict and the original keys that have no counterpart (reported by the loader).
    """
    out, unknown = {}, []
    for key, value in state_dict.items():
        new = wan_key_to_diffusers(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    return out, unknown


def convert_wan_to_original(state_dict: dict) -> dict:
    """Rename a diffusers Wan DiT state dict to the original names (every key must map)."""
    out = {}
    for key, value in state_dict.items():
        new = wan_key_to_original(key)
        if new is None:
            raise KeyError(f"diffusers Wan key `{key}` has no original-format counterpart.")
        out[new] = value
    return out


def convert_wan_vae_to_diffusers(state_dict: dict) -> dict:
    """Original ``Wan2.1_VAE.pth`` keys -> diffusers ``AutoencoderKLWan`` (diffusers' converter)."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers as _convert

    return _convert(dict(state_dict))


# --- LTX-Video single file ----------------------------------------------------------------------

LTX_TRANSFORMER_PREFIX = "model.diffusion_model."
LTX_VAE_PREFIX = "vae."
_LTX_TRANSFORMER_RENAMES = {"patchify_proj": "proj_in", "adaln_single": "time_embed", "q_norm": "norm_q",
                            "k_norm": "norm_k"}
# diffusers 0.9.1 VAE <-> original LTX names (inverse of diffusers' VAE_KEYS_RENAME_DICT +
# VAE_091_RENAME_DICT); the encoder blocks are numbered 0..9 in the original.
_LTX_VAE091_DECODER_INV = [
    ("mid_block", "up_blocks.0"),
    ("up_blocks.0.upsamplers.0", "up_blocks.1"),
    ("up_blocks.0", "up_blocks.2"),
    ("up_blocks.1.upsamplers.0", "up_blocks.3"),
    ("up_blocks.1", "up_blocks.4"),
    ("up_blocks.2.upsamplers.0", "up_blocks.5"),
    ("up_blocks.2", "up_blocks.6"),
    ("up_blocks.3.upsamplers.0", "up_blocks.7"),
    ("up_blocks.3", "up_blocks.8"),
]
_LTX_VAE_ENCODER_INV = [
    ("down_blocks.0.downsamplers.0", "down_blocks.1"),
    ("down_blocks.0.conv_out", "down_blocks.2"),
    ("down_blocks.0", "down_blocks.0"),
    ("down_blocks.1.downsamplers.0", "down_blocks.4"),
    ("down_blocks.1.conv_out", "down_blocks.5"),
    ("down_blocks.1", "down_blocks.3"),
    ("down_blocks.2.downsamplers.0", "down_blocks.7"),
    ("down_blocks.2", "down_blocks.6"),
    ("down_blocks.3", "down_blocks.8"),
    ("mid_block", "down_blocks.9"),
]


def is_ltx_single_file(keys) -> bool:
    """Whether a state dict is an original LTX-Video checkpoint (``patchify_proj`` / ``vae.`` keys)."""
    return any("patchify_proj" in k or k.startswith(LTX_VAE_PREFIX) for k in keys)


def convert_ltx_transformer_to_diffusers(state_dict: dict) -> dict:
    """Transformer part of an LTX single file -> diffusers (diffusers' converter; drops ``vae.*``)."""
    from diffusers.loaders.single_file_utils import convert_ltx_transformer_checkpoint_to_diffusers

    return convert_ltx_transformer_checkpoint_to_diffusers(dict(state_dict))


def convert_ltx_vae_to_diffusers(state_dict: dict) -> dict:
    """``vae.*`` part of an LTX single file -> diffusers ``AutoencoderKLLTXVideo`` (diffusers' converter)."""
    from diffusers.loaders.single_file_utils import convert_ltx_vae_checkpoint_to_diffusers

    vae_part = {k: v for k, v in state_dict.items() if k.startswith(LTX_VAE_PREFIX)}
    return convert_ltx_vae_checkpoint_to_diffusers(vae_part)


def ltx_transformer_key_to_original(key: str) -> str:
    """diffusers LTX transformer key -> the single file's name (``model.diffusion_model.`` prefix)."""
    for orig, new in _LTX_TRANSFORMER_RENAMES.items():
        key = key.replace(new, orig)
    return LTX_TRANSFORMER_PREFIX + key


def ltx_vae091_key_to_original(key: str) -> str:
    """diffusers 0.9.1 LTX VAE key -> the single file's ``vae.*`` name."""
    if key in ("latents_mean", "latents_std"):
        return {"latents_mean": "vae.per_channel_statistics.mean-of-means",
                "latents_std": "vae.per_channel_statistics.std-of-means"}[key]
    part, _, rest = key.partition(".")
    table = _LTX_VAE091_DECODER_INV if part == "decoder" else _LTX_VAE_ENCODER_INV if part == "encoder" else []
    for new, orig in table:
        if rest == new or rest.startswith(new + "."):
            rest = orig + rest[len(new):]
            break
    key = f"{part}.{rest}" if rest else part
    key = (key.replace("resnets", "res_blocks").replace("conv_shortcut.conv", "conv_shortcut")
              .replace(".scale1", ".per_channel_scale1").replace(".scale2", ".per_channel_scale2")
              .replace("decoder.time_embedder", "decoder.last_time_embedder")
              .replace("decoder.scale_shift_table", "decoder.last_scale_shift_table"))
    key = re.sub(r"\.norm3(\.|$)", r".norm3.norm\1", key) if ".norm3" in key and "res_blocks" in key else key
    return LTX_VAE_PREFIX + key


# --- LoRA ---------------------------------------------------------------------------------------

_LORA_PREFIXES = ("base_model.model.", "transformer.", "model.diffusion_model.", "diffusion_model.", "dit.", "unet.")
_LORA_PAIR = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(?:\.default)?\.weight$")


@dataclass
class LoraSet:
    """A LoRA file in one normal form.

    Args:
        pairs: ``{module path: (A (r, in), B (out, r), scale)}`` in the file's module naming,
            ``scale`` = ``alpha / r`` when the file stores alphas, else 1.
        extras: Full tensors (no LoRA) to copy into the model, by key in the file's naming.
    """

    pairs: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)


def parse_lora(state_dict: dict) -> LoraSet:
    """Group a LoRA state dict into (A, B, scale) per module plus extra full tensors.

    Accepts peft names (``<m>.lora_A[.default].weight``), kohya/diffusers names
    (``<m>.lora_down.weight``, ``<m>.lora_up.weight``, ``<m>.alpha``), and the common prefixes
    (``transformer.``, ``diffusion_model.``, ``base_model.model.``...).

    Raises:
        ValueError: A module has A without B (or the reverse); the message names the key.
    """
    def strip(key: str) -> str:
        for prefix in _LORA_PREFIXES:
            if key.startswith(prefix):
                return key[len(prefix):]
        return key

    a, b, alphas, extras = {}, {}, {}, {}
    for key, value in state_dict.items():
        k = strip(key)
        m = _LORA_PAIR.match(k)
        if m:
            (a if m.group("kind") in ("lora_A", "lora_down") else b)[m.group("module")] = value
        elif k.endswith(".alpha"):
            alphas[k[: -len(".alpha")]] = value
        else:
            extras[k] = value
    if set(a) != set(b):
        odd = sorted(set(a) ^ set(b))[0]
        raise ValueError(f"LoRA module `{odd}` has only one of its two matrices (lora_A/lora_down, lora_B/lora_up).")
    pairs = {}
    for module in a:
        rank = a[module].shape[0]
        alpha = alphas.pop(module, None)
        scale = float(alpha) / rank if alpha is not None else 1.0
        pairs[module] = (a[module], b[module], scale)
    for module in alphas:  # an alpha without matrices is not a weight to copy
        raise ValueError(f"LoRA alpha `{module}.alpha` has no lora_A/lora_B matrices.")
    return LoraSet(pairs=pairs, extras=extras)
