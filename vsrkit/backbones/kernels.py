"""Fused GroupNorm and channel RMS norm for the video VAEs (Triton), with the torch references
they must match (the RMS norm is at the end of this file; :mod:`vsrkit.backbones.wan_fused`).

Why: PyTorch's CUDA GroupNorm reduces each (sample, group) row with one thread block. A VAE runs
one sample at a time with 32 groups, so 32 blocks reduce rows of ~18M elements on a 132-SM GPU:
profiled on an H200, that statistics kernel is 36% of the CogVideoX VAE decode and 41% of its
encode at 720p (docs/benchmarks.md, ``tools/profile_vae.py``).

:func:`group_norm` computes the same function as ``F.group_norm`` followed, optionally, by the
spatial modulation ``y * scale + shift`` of CogVideoX's ``SpatialNorm3D`` and by SiLU, in one
pass after a split Welford reduction:

- statistics in float32 (Welford per lane, Chan's combination across lanes and splits), as
  PyTorch's kernel does; the normalisation ``x * a + b`` with ``a = rstd * weight`` and
  ``b = bias - mean * a`` is PyTorch's own formula;
- modulation and SiLU are applied to the float32 value before the one rounding to the output
  dtype (the unfused modules round after each op), so results agree with the unfused modules
  within the output dtype's rounding.

The Triton path needs a CUDA tensor (or ``TRITON_INTERPRET=1``, which the tests use on CPU) and
no autograd: training falls back to the torch reference, which is exactly the unfused modules.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16)


def nearest_index(in_size: int, out_size: int) -> torch.Tensor:
    """Source index of each output position under ``F.interpolate(mode="nearest")`` (PyTorch's rule)."""
    grid = torch.arange(in_size, dtype=torch.float64).view(1, 1, in_size)
    return F.interpolate(grid, size=out_size, mode="nearest").view(out_size).long()


def expand_modulation(m: torch.Tensor, index: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``m`` (``(B, C, t, h, w)``) gathered to full size by per-axis source indices."""
    it, ih, iw = (i.to(m.device) for i in index)
    return m.index_select(2, it).index_select(3, ih).index_select(4, iw)


def reference_group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         eps: float, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                         index: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                         silu: bool = False) -> torch.Tensor:
    """``F.group_norm``, then ``* scale + shift``, then SiLU: the unfused modules' arithmetic."""
    y = F.group_norm(x, num_groups, weight, bias, eps)
    if scale is not None:
        if index is not None:
            scale, shift = expand_modulation(scale, index), expand_modulation(shift, index)
        y = y * scale + shift
    return F.silu(y) if silu else y


@functools.cache
def _triton():
    """The Triton kernels module, or ``None`` where Triton is not installed."""
    try:
        from vsrkit.backbones import triton_kernels
    except ImportError:
        return None
    return triton_kernels


def interpreting() -> bool:
    """Triton's CPU interpreter is on (``TRITON_INTERPRET=1``): kernels run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET") == "1"


# Set when the first Triton launch of the process fails (no C compiler for Triton's launcher, an
# unsupported GPU...): the process then computes the reference, which is the same function.
_toolchain_error: str | None = None
_launched = False


def triton_available() -> bool:
    return _triton() is not None and _toolchain_error is None


def fused_path_applies(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """Whether :func:`group_norm` takes the Triton path for these inputs."""
    if x.dtype not in _FLOAT_TYPES or not triton_available():
        return False
    if not (x.is_cuda or (interpreting() and x.device.type == "cpu")):
        return False
    tensors = [x, *(p for p in params if p is not None)]
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


# Elements per Triton program step (module attributes so the tests can shrink them).
STATS_BLOCK = 1024
APPLY_BLOCK = 2048


_index_cache: dict = {}


def _device_index(index, device) -> tuple[torch.Tensor, ...]:
    # Index maps are tiny but a host-to-device copy per call would stall the stream: keep them.
    key = (tuple(tuple(i.tolist()) for i in index), str(device))
    cached = _index_cache.get(key)
    if cached is None:
        cached = _index_cache[key] = tuple(i.to(device=device, dtype=torch.int32) for i in index)
    return cached


def _triton_group_norm(x, num_groups, weight, bias, eps, scale, shift, index, silu, out):
    kernels = _triton()
    cdiv = kernels.triton.cdiv
    batch, channels = x.shape[:2]
    x = x.contiguous()
    plane = x.numel() // (batch * channels)
    rows, row_len = batch * num_groups, (channels // num_groups) * plane

    # Enough programs to fill the GPU several times over, each reducing whole blocks.
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
    splits = max(1, min(cdiv(4 * sms, rows), cdiv(row_len, 8 * STATS_BLOCK)))
    chunk = cdiv(cdiv(row_len, splits), STATS_BLOCK) * STATS_BLOCK
    splits = cdiv(row_len, chunk)
    parts = torch.empty(rows, splits, 3, device=x.device, dtype=torch.float32)
    kernels.group_stats[(rows, splits)](x, parts, row_len, chunk, splits, BLOCK=STATS_BLOCK)

    # Chan's combination of the splits, in float64 on a (rows, splits) tensor.
    parts = parts.double()
    mean_i, m2_i, n_i = parts.unbind(-1)
    n = n_i.sum(1, keepdim=True)
    mean = (mean_i * n_i).sum(1, keepdim=True) / n
    var = ((m2_i + n_i * (mean_i - mean) ** 2).sum(1, keepdim=True) / n).clamp_min(0.0)
    rstd = torch.rsqrt(var + eps)  # PyTorch's formula: biased variance, eps inside the root
    per_channel = channels // num_groups
    mean = mean.view(batch, num_groups, 1).expand(-1, -1, per_channel).reshape(batch, channels)
    rstd = rstd.view(batch, num_groups, 1).expand(-1, -1, per_channel).reshape(batch, channels)
    a = rstd * (weight.double() if weight is not None else 1.0)
    b = (bias.double() if bias is not None else 0.0) - mean * a
    coef = torch.stack([a, b], dim=-1).float().contiguous()

    if out is None:
        out = torch.empty_like(x)
    out_plane_stride = out.stride(1)
    has_mod = scale is not None
    if has_mod:
        if index is None:
            scale, shift = scale.expand_as(x), shift.expand_as(x)
            index = tuple(torch.arange(n) for n in x.shape[2:])
        scale, shift = scale.contiguous(), shift.contiguous()
        it, ih, iw = _device_index(index, x.device)
        mod_shape = scale.shape[2:]
    else:
        it = ih = iw = coef
        mod_shape = (1, 1, 1)
    height, width = x.shape[-2:] if x.dim() >= 4 else (1, 1)
    kernels.group_apply[(batch * channels, cdiv(plane, APPLY_BLOCK))](
        x, out, coef, scale if has_mod else x, shift if has_mod else x, it, ih, iw,
        plane, out_plane_stride, height, width,
        mod_shape[0] * mod_shape[1] * mod_shape[2], mod_shape[1], mod_shape[2],
        HAS_MOD=has_mod, SILU=silu, BLOCK=APPLY_BLOCK)
    return out


def _check_out(out: torch.Tensor, x: torch.Tensor) -> None:
    # Each (sample, channel) plane of `out` must be contiguous; planes may be spaced apart (a view
    # into a time-padded buffer), with sample stride = channels x plane stride.
    plane = x[0, 0].numel() if x.dim() > 2 else 1
    ok = (out.shape == x.shape and out.dtype == x.dtype and out.device == x.device and out.stride(1) >= plane
          and out.stride(0) == out.stride(1) * x.shape[1] and out[0, 0].is_contiguous())
    if not ok:
        raise ValueError("group_norm: `out` must have x's shape, dtype and device, with contiguous channel planes.")


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5, *, scale: torch.Tensor | None = None,
               shift: torch.Tensor | None = None, index: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
               silu: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """GroupNorm of ``x`` (``(B, C, ...)``), then optionally ``* scale + shift`` and SiLU.

    Args:
        x: Input, channels second.
        num_groups: Groups (must divide ``C``).
        weight, bias: Per-channel affine (``None``: identity).
        eps: Added to the variance.
        scale, shift: The spatial modulation (both or neither): broadcastable to ``x``, or, with
            ``index``, a smaller ``(B, C, t, h, w)`` grid read at ``index``.
        index: Source position along time, height and width of every output position (nearest
            upsampling of ``scale``/``shift``, see :func:`nearest_index`); ``x`` must be 5-D.
        silu: Apply SiLU last.
        out: Where to write (e.g. a view into a time-padded buffer); a new tensor if ``None``.

    Returns:
        ``out``, or a new tensor like ``x``. Fused (Triton) on CUDA without autograd, else the torch
        reference (which then copies into ``out``).
    """
    if (scale is None) != (shift is None):
        raise ValueError("group_norm: give both `scale` and `shift` or neither.")
    if x.shape[1] % num_groups:
        raise ValueError(f"group_norm: {x.shape[1]} channels do not split into {num_groups} groups.")
    if index is not None and (x.dim() != 5 or scale is None or scale.dim() != 5
                              or [len(i) for i in index] != list(x.shape[2:])):
        raise ValueError("group_norm: `index` needs 5-D `x`, 5-D `scale`/`shift` and one map per x axis.")
    if out is not None:
        _check_out(out, x)
    fusable = scale is None or x.dim() == 5  # the kernel's modulation addressing is 5-D
    if x.numel() and fusable and fused_path_applies(x, weight, bias, scale, shift):
        global _launched, _toolchain_error
        try:
            y = _triton_group_norm(x, num_groups, weight, bias, eps, scale, shift, index, silu, out)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - only the first launch: a toolchain problem, not data
            if _launched:
                raise
            _toolchain_error = f"{type(err).__name__}: {err}"
            logger.warning("Fused GroupNorm (Triton) failed on its first launch, so this process uses "
                           "PyTorch's GroupNorm (same function, slower): %s", _toolchain_error)
        else:
            _launched = True
            return y
    y = reference_group_norm(x, num_groups, weight, bias, eps, scale, shift, index, silu)
    return y if out is None else out.copy_(y)


# --- channel RMS norm (the Wan VAE's WanRMS_norm) ----------------------------------------------

# Positions per Triton program of the channel RMS norm on channels-first activations, and
# elements (positions x channels, padded to a power of two) per program on channels-last ones
# (module attributes so tests can shrink them).
RMS_BLOCK = 1024
RMS_TILE = 4096
RESIDUAL_BLOCK = 2048


def reference_rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float = 1e-12, silu: bool = False,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.normalize(x + bias, dim=1) * gain`` (per channel), then SiLU: ``WanRMS_norm`` (whose gain
    is ``gamma * sqrt(C)``) with the activation after it, in float32 then cast back."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    x = x.float() if bias is None else x.float() + bias.float().view(shape)
    y = F.normalize(x, dim=1, eps=eps) * gain.float().view(shape)
    return (F.silu(y) if silu else y).to(x.dtype)


def channels_last_format(x: torch.Tensor) -> torch.memory_format | None:
    """``x``'s channels-last memory format (3D for 5-D tensors) when its channel stride is 1 and it
    has several channels, else ``None``."""
    if x.dim() not in (4, 5) or x.shape[1] < 2 or x.stride(1) != 1:
        return None
    return torch.channels_last_3d if x.dim() == 5 else torch.channels_last


def _planes_contiguous(t: torch.Tensor) -> bool:
    """Each channel's (t, h, w) plane of a 5-D tensor is one contiguous run."""
    _, _, frames, height, width = t.shape
    return ((width == 1 or t.stride(4) == 1) and (height == 1 or t.stride(3) == width)
            and (frames == 1 or t.stride(2) == height * width))


def _triton_rms_norm(x, gain, eps, silu, out, bias=None):
    kernels = _triton()
    if out is None:
        # Channels-last in, channels-last out (the fused Wan VAE keeps that layout for cuDNN).
        out = torch.empty_like(x, memory_format=channels_last_format(x) or torch.contiguous_format)
    x5 = x if x.dim() == 5 else x.unsqueeze(2)
    o5 = out if out.dim() == 5 else out.unsqueeze(2)
    batch, channels, frames, height, width = x5.shape
    positions = frames * height * width
    gain = gain.float().contiguous()
    has_bias = bias is not None
    bias = bias.float().contiguous() if has_bias else gain  # an unused pointer when there is none
    if channels > 1 and x5.stride(1) == 1 and o5.stride(1) == 1:
        cblock = kernels.triton.next_power_of_2(channels)
        rows = max(1, RMS_TILE // cblock)
        kernels.rms_norm_rows[(kernels.triton.cdiv(positions, rows), batch)](
            x5, o5, gain, bias, channels, positions, height * width, width,
            x5.stride(0), *x5.stride()[2:], o5.stride(0), *o5.stride()[2:], eps,
            HAS_BIAS=has_bias, SILU=silu, ROWS=rows, CBLOCK=cblock)
    else:
        planes = _planes_contiguous(x5) and _planes_contiguous(o5)
        kernels.rms_norm_channels[(kernels.triton.cdiv(positions, RMS_BLOCK), batch)](
            x5, o5, gain, bias, channels, positions, height * width, width,
            *x5.stride(), *o5.stride(), eps, HAS_BIAS=has_bias, PLANES=planes, SILU=silu, BLOCK=RMS_BLOCK)
    return out


def rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float = 1e-12, *, silu: bool = False,
             out: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Normalise ``x`` (``(B, C, T, H, W)`` or ``(B, C, H, W)``) to unit L2 norm over channels,
    scale channel ``c`` by ``gain[c]``, optionally apply SiLU: one pass, one rounding.

    Args:
        x: Input, channels second, any strides.
        gain: ``(C,)`` per-channel factor (``WanRMS_norm``: ``gamma * sqrt(C)``).
        eps: Lower bound of the norm (``F.normalize``'s 1e-12).
        silu: Apply SiLU last.
        out: Where to write (any strides, e.g. a view into a time-padded buffer); a new
            tensor in ``x``'s layout (channels-last or contiguous) if ``None``.
        bias: ``(C,)`` added to ``x`` before normalising: the bias of the convolution that
            produced ``x``, left out of that convolution so it costs no pass of its own.

    Returns:
        ``out``, or a new tensor like ``x``. Fused (Triton) on CUDA without autograd, else the
        torch reference (then copied into ``out``).
    """
    if x.dim() not in (4, 5) or gain.numel() != x.shape[1] or (bias is not None and bias.numel() != x.shape[1]):
        raise ValueError(f"rms_norm: x must be (B, C, [T,] H, W), gain and bias (C,). Got {tuple(x.shape)}, "
                         f"{tuple(gain.shape)}, {None if bias is None else tuple(bias.shape)}.")
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype or out.device != x.device):
        raise ValueError("rms_norm: `out` must have x's shape, dtype and device.")
    if x.numel() and fused_path_applies(x, gain, bias):
        global _launched, _toolchain_error
        try:
            y = _triton_rms_norm(x, gain, eps, silu, out, bias)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - only the first launch: a toolchain problem, not data
            if _launched:
                raise
            _toolchain_error = f"{type(err).__name__}: {err}"
            logger.warning("Fused RMS norm (Triton) failed on its first launch, so this process uses PyTorch "
                           "(same function, slower): %s", _toolchain_error)
        else:
            _launched = True
            return y
    y = reference_rms_norm(x, gain, eps, silu, bias)
    return y if out is None else out.copy_(y)


def add_bias_residual(y: torch.Tensor, bias: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``y + bias (per channel) + h``, in place on ``y`` and returned: a residual block's output
    when its last convolution ran without its bias. One pass where the Triton kernel applies
    (``y`` and ``h`` channels-last with the same strides), else two PyTorch ops."""
    if (y.dim() == 5 and h.shape == y.shape and h.stride() == y.stride() and bias.numel() == y.shape[1]
            and y.is_contiguous(memory_format=torch.channels_last_3d) and fused_path_applies(y, bias, h)
            and _toolchain_error is None):
        kernels = _triton()
        n = y.numel()
        kernels.add_bias_residual[(kernels.triton.cdiv(n, RESIDUAL_BLOCK),)](
            y, h, bias.float().contiguous(), n, y.shape[1], BLOCK=RESIDUAL_BLOCK)
        return y
    return y.add_(bias.view((1, -1) + (1,) * (y.dim() - 2)).to(y.dtype)).add_(h)
