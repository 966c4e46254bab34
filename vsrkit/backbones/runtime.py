"""Model building and runtime switches shared by the three backbone wrappers.

* building a diffusers model with no memory (``meta`` parameters), then either loading weights
  into it or giving it a deterministic random init that does not depend on torch's RNG;
* casting to the compute dtype while keeping a model's ``_keep_in_fp32_modules`` in fp32;
* the switches of :class:`~vsrkit.backbones.config.BackboneConfig`: attention kernel,
  gradient checkpointing, CPU offload and regional ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from typing import Iterable

import torch

from vsrkit.errors import UserError

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Repeated blocks for regional compilation where diffusers does not declare them
# (CogVideoXTransformer3DModel has no `_repeated_blocks` in diffusers 0.42).
REPEATED_BLOCKS = {
    "CogVideoXTransformer3DModel": ["CogVideoXBlock"],
    "WanTransformer3DModel": ["WanTransformerBlock"],
    "LTXVideoTransformer3DModel": ["LTXVideoTransformerBlock"],
}

# `attention` choices that restrict PyTorch's scaled_dot_product_attention to one kernel.
_SDPA_KERNELS = {
    "cudnn": "CUDNN_ATTENTION",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "math": "MATH",
}
# `attention` choices served by diffusers' attention dispatcher (`set_attention_backend`).
_DISPATCH_BACKENDS = {
    "native": "native",
    "flash-attn": "flash",
    "flash-attn-3": "_flash_3",
    "sage": "sage",
    "xformers": "xformers",
    "flex": "flex",
}


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bf16"`` -> ``torch.bfloat16`` (a ``torch.dtype`` passes through)."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"`dtype` must be one of {list(DTYPES)}. Got {name!r}.") from None


# --- building ---------------------------------------------------------------------------------


def build_empty(cls, config: dict):
    """Construct ``cls(**config)`` with parameters on the ``meta`` device (no memory, no init).

    Buffers are real (CPU) so that values computed in ``__init__`` (RoPE tables, latent
    statistics) survive.
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return cls(**config)


def materialize_(model: torch.nn.Module, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """Replace every ``meta`` parameter by an uninitialised one on ``device``; move buffers."""
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.device.type == "meta":
                module._parameters[name] = torch.nn.Parameter(
                    torch.empty(param.shape, device=device, dtype=dtype), requires_grad=param.requires_grad
                )
    return model.to(device)


def _hash_uniform(n: int, key: int, device: torch.device) -> torch.Tensor:
    """``n`` values in [-1, 1) from integer hashing of ``arange(n)``: identical on every torch version.

    A multiplicative hash with two xor-shift/multiply rounds, all in int64 below 2**62 so
    nothing overflows.
    """
    mask = (1 << 31) - 1
    x = torch.arange(n, dtype=torch.int64, device=device)
    x = (x * 1103515245 + (key & mask)) & mask
    x = x ^ (x >> 13)
    x = (x * 1274126177) & mask
    x = x ^ (x >> 16)
    x = (x * 668265261) & mask
    x = x ^ (x >> 15)
    return x.to(torch.float64) / float(1 << 30) - 1.0


def deterministic_values(shape: Iterable[int], key: str, seed: int = 0, device="cpu") -> torch.Tensor:
    """Hash-noise of ``shape`` with unit variance, a pure function of ``(key, seed)`` (float32)."""
    shape = tuple(shape)
    n = math.prod(shape)
    k = zlib.crc32(key.encode()) ^ (seed * 0x9E3779B1)
    return (_hash_uniform(n, k, torch.device(device)) * math.sqrt(3.0)).to(torch.float32).reshape(shape)


def check_video(x: torch.Tensor) -> None:
    """Raise unless ``x`` is ``(B, 3, T, H, W)`` (what every backbone VAE takes)."""
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(f"`x` must be (B, 3, T, H, W). Got shape {tuple(x.shape)}.")


@torch.no_grad()
def deterministic_init_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with hash noise so tiny presets give the same numbers on any torch.

    Weights (2+ dims) get std ``1/sqrt(fan_in)``; normalisation weights ``1 + 0.1 * noise``;
    other vectors (biases, tables) ``0.02 * noise``. Buffers are left as the model built them.

    Args:
        model: Module whose parameters are already materialised (not ``meta``).
        seed: Changes every value.
    """
    for name, param in model.named_parameters():
        noise = deterministic_values(param.shape, name, seed, device=param.device)
        if param.dim() >= 2:
            fan_in = max(1, param.numel() // param.shape[0])
            values = noise / math.sqrt(fan_in)
        elif "norm" in name and name.endswith("weight"):
            values = 1.0 + 0.1 * noise
        else:
            values = 0.02 * noise
        param.copy_(values.to(param.dtype))
    return model


def keep_fp32_names(model: torch.nn.Module) -> list[str]:
    """Module names the model asks to keep in fp32 (diffusers ``_keep_in_fp32_modules``)."""
    return list(getattr(model, "_keep_in_fp32_modules", None) or [])


def cast_(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast floating parameters and buffers to ``dtype``, keeping ``_keep_in_fp32_modules`` in fp32.

    Same rule as diffusers' ``from_pretrained(torch_dtype=...)``: a tensor stays fp32 when one of
    the dotted parts of its name is in the model's ``_keep_in_fp32_modules``.
    """
    keep = set(keep_fp32_names(model)) if dtype in (torch.float16, torch.bfloat16) else set()
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if not tensor.is_floating_point():
            continue
        target = torch.float32 if keep & set(name.split(".")) else dtype
        if tensor.dtype != target:
            tensor.data = tensor.data.to(target)
    return model


# --- runtime switches -------------------------------------------------------------------------


def apply_attention(model: torch.nn.Module, choice: str) -> str:
    """Select the attention kernel of ``model`` and return a one-line description of it.

    ``cudnn`` / ``flash`` / ``efficient`` / ``math`` wrap every forward of ``model`` in
    ``torch.nn.attention.sdpa_kernel`` with only that kernel allowed, so the run fails loudly
    instead of silently falling back when the kernel cannot serve the shapes. Other choices
    go through diffusers' ``set_attention_backend``.

    Raises:
        UserError: The backend is not usable with this model or this diffusers version.
    """
    cls = type(model).__name__
    if choice == "auto":
        return "auto (PyTorch SDPA picks the kernel per call)"
    if choice in _SDPA_KERNELS:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, _SDPA_KERNELS[choice])
        state: dict = {}

        def enter(module, args, kwargs=None):
            stack = contextlib.ExitStack()
            stack.enter_context(sdpa_kernel([backend]))
            state.setdefault("stacks", []).append(stack)

        def leave(module, args, output, kwargs=None):
            stacks = state.get("stacks")
            if stacks:
                stacks.pop().close()

        handles = getattr(model, "_vsrkit_attention_hooks", [])
        for h in handles:
            h.remove()
        model._vsrkit_attention_hooks = [
            model.register_forward_pre_hook(enter),
            model.register_forward_hook(leave, always_call=True),
        ]
        return f"PyTorch SDPA restricted to the {_SDPA_KERNELS[choice]} kernel (fails if it cannot run)"
    diffusers_name = _DISPATCH_BACKENDS[choice]
    processors = [m.processor for m in model.modules() if hasattr(m, "processor")]
    if not any(hasattr(p, "_attention_backend") for p in processors):
        if choice == "native":
            return "PyTorch SDPA (the model's processor calls it directly; PyTorch picks the kernel)"
        raise UserError(
            f"`attention={choice}` is not supported by {cls}: its attention processor calls PyTorch SDPA "
            f"directly. Use one of [auto, cudnn, flash, efficient, math]."
        )
    if not hasattr(model, "set_attention_backend"):
        raise UserError(f"`attention={choice}` needs diffusers' `set_attention_backend` (diffusers >= 0.35).")
    try:
        model.set_attention_backend(diffusers_name)
    except (ImportError, RuntimeError, ValueError) as err:
        raise UserError(f"`attention={choice}` (diffusers backend `{diffusers_name}`) is not available: {err}") from err
    return f"diffusers attention dispatch backend `{diffusers_name}`"


def apply_gradient_checkpointing(model: torch.nn.Module, enabled: bool) -> None:
    """Turn gradient checkpointing of the transformer blocks on (or off)."""
    if enabled:
        model.enable_gradient_checkpointing()
    elif getattr(model, "is_gradient_checkpointing", False):
        model.disable_gradient_checkpointing()


def apply_compile(model: torch.nn.Module, mode: str, **compile_kwargs) -> int:
    """``regional``: ``torch.compile`` each repeated block of ``model``; returns how many.

    Args:
        model: A diffusers transformer.
        mode: ``off`` or ``regional``.
        **compile_kwargs: Passed to ``torch.compile`` (``fullgraph``, ``backend``, ``mode``...).
    """
    if mode == "off":
        return 0
    names = getattr(model, "_repeated_blocks", None) or REPEATED_BLOCKS.get(type(model).__name__)
    if not names:
        raise UserError(f"`compile=regional` does not know the repeated blocks of {type(model).__name__}.")
    count = 0
    for module in model.modules():
        if type(module).__name__ in names:
            module.compile(**compile_kwargs)
            count += 1
    if count == 0:
        raise UserError(f"`compile=regional`: no {names} block found in {type(model).__name__}.")
    return count


def apply_offload(models: list[torch.nn.Module], mode: str, device: torch.device) -> None:
    """Keep the weights of ``models`` in CPU memory and bring them to ``device`` when used.

    Args:
        models: Transformer first, then the VAE (``model`` offload moves one model at a time;
            ``group`` offloads the transformer only).
        mode: ``none``, ``model``, ``sequential`` or ``group``.
        device: The CUDA device that runs the models.

    Raises:
        UserError: ``mode`` is not ``none`` and ``device`` is not a CUDA device.
    """
    if mode == "none":
        return
    if torch.device(device).type != "cuda":
        raise UserError(f"`cpu_offload={mode}` needs a CUDA device. Got device `{device}`; use cpu_offload=none.")
    if mode == "model":
        from accelerate import cpu_offload_with_hook

        hook = None
        for m in models:
            m.to("cpu")
            _, hook = cpu_offload_with_hook(m, device, prev_module_hook=hook)
    elif mode == "sequential":
        from accelerate import cpu_offload

        for m in models:
            cpu_offload(m, execution_device=device)
    elif mode == "group":
        # Block groups of the transformer stream in on a side CUDA stream while the previous group
        # computes; the VAE (a few hundred MB) stays on the device.
        models[0].enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                       offload_type="block_level", num_blocks_per_group=1, use_stream=True)
        for m in models[1:]:
            m.to(device)
    else:
        raise ValueError(f"`cpu_offload` must be one of ['none', 'model', 'sequential', 'group']. Got {mode!r}.")
