"""The release's checkpoint formats <-> vsrkit's modules (pssr.md §5.5).

* ``draft.safetensors``: the pruned DiT's full state dict in DiffSynth (original Wan) names plus
  ``fc_layers.*``; :class:`~vsrkit.methods.pssr.model.PSSRDraftTransformer` uses diffusers' names
  for the Wan parts and the release's ``fc_layers``.
* ``base.safetensors`` / ``latest_reg.safetensors``: peft LoRA pairs on the original Wan module
  names (adapter ``default``) plus the full ``patch_embedding`` and ``head.head`` tensors.
* LPIPS v0.1 VGG weights: the ``lpips`` package's (or pyiqa's) linear layers and torchvision's VGG16.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import torch

from vsrkit.backbones import convert, loading, runtime
from vsrkit.errors import UserError, WeightsError
from vsrkit.methods.pssr.model import LPIPSVGG, PSSRDraftTransformer

logger = logging.getLogger(__name__)

# The LoRA adapter name inside the release's files (peft's default adapter).
RELEASE_ADAPTER = "default"


def draft_state_from_release(sd: dict) -> tuple[dict, list[str]]:
    """``draft.safetensors`` (DiffSynth names, §5.5) -> :class:`PSSRDraftTransformer` names.

    Returns:
        The renamed dict and the keys that have no counterpart.
    """
    fc = {k: v for k, v in sd.items() if k.startswith("fc_layers.")}
    rest, unknown = convert.convert_wan_to_diffusers({k: v for k, v in sd.items() if k not in fc})
    return {**rest, **fc}, unknown


def draft_state_to_release(sd: dict) -> dict:
    """:class:`PSSRDraftTransformer` names -> the release's DiffSynth names (inverse of the above)."""
    fc = {k: v for k, v in sd.items() if k.startswith("fc_layers.")}
    return {**convert.convert_wan_to_original({k: v for k, v in sd.items() if k not in fc}), **fc}


def load_draft_state(draft: PSSRDraftTransformer, sd: dict, source: str) -> None:
    """Strictly load a release-format draft state dict (tensors may be ``meta``: assigned).

    Raises:
        WeightsError: The block count differs from the draft's (another ``k_select``), or a key is
            missing, unexpected or mis-shaped.
    """
    blocks = {int(m.group(1)) for k in sd for m in [re.match(r"(?:blocks|fc_layers)\.(\d+)\.", k)] if m}
    if blocks and max(blocks) + 1 != len(draft.blocks):
        raise WeightsError(f"`{source}` holds a draft with {max(blocks) + 1} blocks; this k_select keeps "
                           f"{len(draft.blocks)}. Set method.k_select to the value it was trained with "
                           f"(the release's draft.safetensors: 1.5).")
    mapped, unknown = draft_state_from_release(sd)
    loading.load_into(draft, mapped, source, "PS-SR draft transformer", unknown)


def load_lpips_weights(net: LPIPSVGG, lins: Path, vgg: Path) -> None:
    """LPIPS linear layers (``lin{k}.model.1.weight``, any prefix) and torchvision's VGG16
    ``features.*`` into ``net``; every tensor must be there with the right shape.

    Raises:
        WeightsError: A file misses a tensor or has another shape.
    """
    lin_sd = loading.read_state_dict(lins)
    found = {}
    for key, value in lin_sd.items():
        m = re.search(r"(?:^|\.)lin(\d)\.model\.1\.weight$", key)
        if m:
            found[f"lins.{m.group(1)}.weight"] = value
    vgg_sd = loading.read_state_dict(vgg)
    found.update({k: v for k, v in vgg_sd.items() if k.startswith("features.") and k in net.state_dict()})
    expected = net.state_dict()
    missing = [k for k in expected if k not in found]
    wrong = [k for k in found if tuple(found[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        raise WeightsError(f"LPIPS weights `{lins}` + `{vgg}` do not match LPIPS-VGG v0.1: "
                           f"missing {missing[:3]}, mis-shaped {wrong[:3]}.")
    net.load_state_dict(found, strict=True)


def lora_state_to_release(named: dict) -> dict:
    """One role's trainable tensors (``blocks.N.<diffusers module>.lora_{A,B}.weight``,
    ``patch_embedding.*``, ``proj_out.*``) -> the release's LoRA file names
    (``blocks.N.self_attn.q.lora_A.default.weight``, ``patch_embedding.*``, ``head.head.*``),
    as detached contiguous float32 CPU tensors."""
    out = {}
    for name, tensor in named.items():
        m = re.fullmatch(r"(.+)\.(lora_[AB])\.weight", name)
        key = (f"{convert.wan_module_to_original(m.group(1))}.{m.group(2)}.{RELEASE_ADAPTER}.weight" if m
               else convert.wan_key_to_original(name))
        if key is None or key.startswith("None."):
            raise ValueError(f"`{name}` has no name in the release's format.")
        out[key] = tensor.detach().float().contiguous().cpu()
    return out


def lpips_files(lpips_weights: str | None, vgg16_weights: str | None) -> tuple[Path | None, Path | None]:
    """Where the LPIPS v0.1 VGG linear layers and torchvision's VGG16 are (``None``: not found).

    Args:
        lpips_weights: ``method.lpips_weights``; ``None`` looks for pyiqa's file under
            ``$TORCH_HOME/hub/pyiqa/``, then for the installed ``lpips`` package's.
        vgg16_weights: ``method.vgg16_weights``; ``None`` looks under ``$TORCH_HOME/hub/checkpoints/``.
    """
    hub = Path(torch.hub.get_dir())
    lins = Path(lpips_weights).expanduser() if lpips_weights else None
    if lins is None:
        candidates = [hub / "pyiqa" / "LPIPS_v0.1_vgg-a78928a0.pth"]
        spec = importlib.util.find_spec("lpips")
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth")
        lins = next((p for p in candidates if p.is_file()), None)
    vgg = Path(vgg16_weights).expanduser() if vgg16_weights else hub / "checkpoints" / "vgg16-397923af.pth"
    return lins, (vgg if vgg.is_file() else None)


def build_lpips(config, tiny: bool, device) -> LPIPSVGG:
    """LPIPS-VGG with the release's weights; on a tiny preset, random like its backbone.

    Args:
        config: The :class:`~vsrkit.methods.pssr.config.PSSRConfig` (weight files, weight, seed).
        tiny: Whether the backbone preset is a random tiny one.
        device: Where the network runs.

    Raises:
        UserError: A real preset without the two weight files (named in the message), so a run
            never trains with a different loss than asked for.
    """
    net = LPIPSVGG()
    if tiny:
        runtime.deterministic_init_(net, seed=config.seed)
        logger.info("tiny preset: the LPIPS network has random weights, like the backbone")
    else:
        lins, vgg = lpips_files(config.lpips_weights, config.vgg16_weights)
        if lins is None or vgg is None:
            hub = Path(torch.hub.get_dir())
            want = [] if lins else ["the LPIPS v0.1 VGG layers (method.lpips_weights=<lpips/weights/v0.1/vgg.pth> "
                                    f"or {hub / 'pyiqa' / 'LPIPS_v0.1_vgg-a78928a0.pth'})"]
            want += [] if vgg else [f"torchvision's VGG16 (method.vgg16_weights=<vgg16-397923af.pth> or "
                                    f"{hub / 'checkpoints' / 'vgg16-397923af.pth'})"]
            raise UserError(f"method.lpips_weight={config.lpips_weight} needs {' and '.join(want)}; vsrkit never "
                            f"downloads. Place the files there, or set method.lpips_weight=0 to train without LPIPS.")
        load_lpips_weights(net, lins, vgg)
    return net.to(device).eval().requires_grad_(False)
