"""Visual prompt encoders: one image -> tokens a transformer cross-attends to instead of text.

InfVSR replaces Wan's umT5 text with 145 x 512 tokens of one LR reference frame, from SeeSR's
DAPE: RAM's Swin-L image encoder (``ram_swin_large_14m.pth``, keys ``visual_encoder.*`` and the
1536 -> 512 ``image_proj``) with DAPE's LoRA (``DAPE.pth``) merged into every window
attention's ``qkv`` (Q and V rows, scale 1/8; infvsr.md §1.7, release ``visual_encoder.py``).

Encoders are registered in ``VISUAL_ENCODERS`` (``vsrkit ls`` lists them):

* ``ram-swin-l-dape``: the released encoder; weights from ``path`` (RAM) and ``adapter_path``
  (DAPE), or a deterministic random init when both are absent (speed benchmarks);
* ``swin-tiny-random``: same classes and token layout at toy size, random weights (CPU tests).

Every builder is called as ``build(path, adapter_path, device, dtype, seed)`` and returns a
:class:`VisualPromptEncoder`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vsrkit.backbones.swin import SwinTransformer
from vsrkit.errors import WeightsError

logger = logging.getLogger(__name__)

# ImageNet statistics of RAM's preprocessing (torchvision Normalize in the release).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Width of the tokens every encoder returns (InfVSR's transformer text_dim).
TOKEN_DIM = 512
# DAPE LoRA: scale of the merged delta (lora_alpha / r of the released adapter) and the rows it
# adapts in each qkv projection (Q and V; K is unchanged).
DAPE_SCALE = 1.0 / 8.0


class VisualPromptEncoder(nn.Module):
    """Image in [0, 1] -> prompt tokens.

    Resizes to the backbone's input (bilinear, antialiased as torchvision's tensor ``Resize``),
    normalises with ImageNet statistics, runs the Swin backbone and projects to ``TOKEN_DIM``.

    Args:
        visual_encoder: The Swin backbone (module name = RAM's checkpoint prefix).
        image_size: Input edge of the backbone.
    """

    def __init__(self, visual_encoder: SwinTransformer, image_size: int):
        super().__init__()
        self.visual_encoder = visual_encoder
        self.image_proj = nn.Linear(visual_encoder.num_features, TOKEN_DIM)
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image (B, 3, H, W)`` float in [0, 1] -> ``(B, N, TOKEN_DIM)`` tokens in the encoder's dtype."""
        dtype = self.image_proj.weight.dtype
        x = F.interpolate(image.float(), size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        return self.image_proj(self.visual_encoder(x.to(dtype)))


def merge_dape(weights: dict, adapter: dict) -> dict:
    """Merge DAPE's LoRA into RAM's ``qkv`` weights (returns a new dict; ``weights`` is unchanged).

    Each adapted ``<name>.attn.qkv`` has ``lora_A (2r, C)`` and ``lora_B (2C, r)`` (loralib's
    ``MergedLinear`` with Q and V enabled): ``delta_Q = B[:C] @ A[:r]``, ``delta_V = B[C:] @ A[r:]``,
    added to rows ``[0, C)`` and ``[2C, 3C)`` times :data:`DAPE_SCALE`.

    Raises:
        WeightsError: an adapter tensor has no matching ``qkv`` weight or the wrong shape.
    """
    out = dict(weights)
    names = sorted({k[: -len(".lora_A")] for k in adapter if k.endswith(".lora_A")})
    for name in names:
        key = f"{name}.weight"
        if key not in out or f"{name}.lora_B" not in adapter:
            raise WeightsError(f"DAPE adapter tensor `{name}.lora_A` has no matching `{key}` / `{name}.lora_B`.")
        a, b = adapter[f"{name}.lora_A"].float(), adapter[f"{name}.lora_B"].float()
        weight = out[key].float().clone()
        dim = weight.shape[1]
        r = a.shape[0] // 2
        if weight.shape[0] != 3 * dim or b.shape != (2 * dim, r) or a.shape[1] != dim:
            raise WeightsError(f"DAPE adapter `{name}`: lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)} do not fit "
                               f"qkv weight {tuple(weight.shape)}.")
        weight[:dim] += DAPE_SCALE * (b[:dim] @ a[:r])
        weight[2 * dim:] += DAPE_SCALE * (b[dim:] @ a[r:])
        out[key] = weight.to(weights[key].dtype)
    return out


def _read(path: str | Path) -> dict:
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise WeightsError(f"visual encoder weights `{path}` do not exist. Give the file's path.") from None
    except Exception as err:  # a corrupt or non-torch file
        raise WeightsError(f"visual encoder weights `{path}` could not be read: {err}") from None
    return sd.get("model", sd) if isinstance(sd, dict) else sd


def ram_state_dict(ram: dict, adapter: dict | None) -> dict:
    """RAM checkpoint tensors the encoder uses (``visual_encoder.*``, ``image_proj.*``; index and mask
    buffers dropped), with DAPE merged when ``adapter`` is given."""
    weights = {k: v for k, v in ram.items() if k.startswith(("visual_encoder.", "image_proj."))
               and not k.endswith(("relative_position_index", "attn_mask"))}
    return merge_dape(weights, adapter) if adapter is not None else weights


def load_weights(model: nn.Module, sd: dict, source: str) -> None:
    """Strict load of ``sd`` into ``model``; one ``WeightsError`` naming the file and the first mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        if missing:
            first = f"missing key `{missing[0]}`"
        elif unexpected:
            first = f"unexpected key `{unexpected[0]}`"
        else:
            key = shapes[0]
            first = f"key `{key}` has shape {tuple(sd[key].shape)}, expected {tuple(own[key].shape)}"
        raise WeightsError(f"visual encoder weights `{source}` do not fit the encoder: {first} "
                           f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} mis-shaped).")
    model.load_state_dict(sd, strict=True, assign=True)


def _finish(model: VisualPromptEncoder, sd: dict | None, source: str, device, dtype, seed: int) -> VisualPromptEncoder:
    from vsrkit.backbones import runtime

    if sd is not None:
        load_weights(model, sd, source)
        model.to(device)
    else:
        runtime.materialize_(model, device, torch.float32)
        runtime.deterministic_init_(model, seed=seed + 2)
    runtime.cast_(model, dtype)
    return model.eval().requires_grad_(False)


def _empty(image_size: int, patch: int, embed_dim: int, depths, heads, window: int) -> VisualPromptEncoder:
    """The encoder with parameters on the meta device and real (CPU) buffers: no memory, no init."""
    from vsrkit.backbones import runtime

    def make():
        return VisualPromptEncoder(SwinTransformer(image_size, patch, embed_dim, depths, heads, window), image_size)

    return runtime.build_empty(make, {})


def _build(model: VisualPromptEncoder, name: str, path: str | None, adapter_path: str | None, device,
           dtype: torch.dtype, seed: int) -> VisualPromptEncoder:
    if path is None:
        if adapter_path is not None:
            raise WeightsError(f"visual encoder {name}: the DAPE adapter `{adapter_path}` needs the RAM weights too "
                               f"(method.visual_encoder_path=<ram_swin_large_14m.pth>).")
        return _finish(model, None, "random", device, dtype, seed)
    sd = ram_state_dict(_read(path), _read(adapter_path) if adapter_path is not None else None)
    return _finish(model, sd, str(path), device, dtype, seed)


def build_ram_dape(path: str | None, adapter_path: str | None, device, dtype: torch.dtype,
                   seed: int = 0) -> VisualPromptEncoder:
    """RAM Swin-L (384 px, 145 x 512 tokens) with DAPE merged, the InfVSR release's encoder.

    Args:
        path: ``ram_swin_large_14m.pth`` (``{"model": state dict}`` or a plain state dict); ``None``
            gives deterministic random weights (speed benchmarks only).
        adapter_path: ``DAPE.pth`` (``<module>.lora_A`` / ``.lora_B``); ``None`` runs RAM as is.
        device: Where it runs.
        dtype: Its dtype.
        seed: Seed of the random init.
    """
    model = _empty(384, 4, 192, (2, 2, 18, 2), (6, 12, 24, 48), 12)
    if path is None:
        logger.warning("visual encoder ram-swin-l-dape: no weights given: random weights")
    return _build(model, "ram-swin-l-dape", path, adapter_path, device, dtype, seed)


def build_tiny(path: str | None, adapter_path: str | None, device, dtype: torch.dtype,
               seed: int = 0) -> VisualPromptEncoder:
    """A toy Swin (64 px input, embed 8, one block per stage, 5 x 512 tokens) for CPU tests; weights
    load like the real one's when given."""
    model = _empty(64, 4, 8, (1, 1, 1, 1), (1, 1, 2, 2), 4)
    return _build(model, "swin-tiny-random", path, adapter_path, device, dtype, seed)
