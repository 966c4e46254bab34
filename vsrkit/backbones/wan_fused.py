"""Fused inference forward for the Wan2.1 VAE: same weights, same causal caches, same function.

Where diffusers' ``AutoencoderKLWan`` spends memory traffic that the arithmetic does not need
(read from ``diffusers/models/autoencoders/autoencoder_kl_wan.py``; not profiled here, see
``tools/profile_vae.py``):

- ``WanRMS_norm`` computes ``F.normalize`` on a float32 copy of bf16 activations, casts back,
  then multiplies by ``scale``, by ``gamma`` and adds a zero bias, each a full read and write;
  the SiLU after it is another;
- every ``WanCausalConv3d`` concatenates its cached frames in front (``torch.cat``) and then
  zero-pads time and space with ``F.pad``: two more copies of the activation per convolution;
- ``WanUpsample`` upsamples a float32 copy (nearest-exact copies values, so bf16 gives the same).

:func:`fuse_vae` switches the VAE's modules to subclasses whose inference forward computes the
same thing with less traffic: the norm, its gain and the SiLU are one Triton pass
(:func:`vsrkit.backbones.kernels.rms_norm`) that writes straight into a buffer that already holds
the causal time padding (cached or zero frames), and the convolution pads space itself (cuDNN
padding, no copy). Inside the encoder and decoder activations and weights are channels-last 3D,
the layout cuDNN's Hopper convolutions compute in (channels-first costs a transpose in and out of
every convolution). A residual block's convolutions run without their biases: PyTorch adds a
cuDNN convolution's bias in a broadcast pass of its own, so conv1's goes into norm2's kernel and
conv2's into the residual sum (:func:`~vsrkit.backbones.kernels.add_bias_residual`). The feature caches, their hand-over between chunks and the frame batching
(1, then 4 frames per encoder call; one latent frame per decoder call) are diffusers' own, so
:class:`~vsrkit.backbones.wan.WanEncodeStream`/``WanDecodeStream`` (InfVSR's chunked coding)
run the fused modules unchanged. With autograd on (pixel losses decode with gradients) or
without Triton every module runs diffusers' forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import (
    CACHE_T,
    WanCausalConv3d,
    WanDecoder3d,
    WanEncoder3d,
    WanResidualBlock,
    WanRMS_norm,
    WanUpsample,
)
from torch import nn

from vsrkit.backbones.kernels import add_bias_residual, channels_last_format, fused_path_applies, rms_norm


def _fused(module: nn.Module, x: torch.Tensor) -> bool:
    if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
        return False
    return fused_path_applies(x)


def _gain(norm: WanRMS_norm) -> torch.Tensor:
    """``gamma * scale`` per channel (the two factors ``WanRMS_norm`` applies one after the other)."""
    return norm.gamma.reshape(-1).float() * norm.scale


# Activations and convolution weights in channels-last 3D inside the fused encoder and decoder:
# cuDNN's Hopper convolutions are NDHWC kernels, so channels-first activations are transposed in
# and out of every convolution (about 12% of the fused decode's kernel time, tools/profile_vae.py).
_CHANNELS_LAST = True


def _spatial_padding(conv: WanCausalConv3d) -> tuple[int, int, int]:
    # diffusers keeps the original padding in `_padding` (w, w, h, h, 2 t, 0) and sets `padding` to 0.
    return 0, conv._padding[2], conv._padding[0]


def _conv(conv: WanCausalConv3d, padded: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """The causal conv on an input that already carries its time padding; space is padded by the
    conv. ``bias=False`` leaves the bias out for the next kernel to add (PyTorch adds a cuDNN
    convolution's bias in a separate broadcast pass over the whole output)."""
    return F.conv3d(padded, conv.weight, conv.bias if bias else None, conv.stride, _spatial_padding(conv),
                    conv.dilation, conv.groups)


def _time_padded_buffer(like: torch.Tensor, front: int) -> torch.Tensor:
    """An empty ``like``-shaped buffer with ``front`` more frames, in ``like``'s layout."""
    batch, channels, frames, height, width = like.shape
    return torch.empty(batch, channels, front + frames, height, width, dtype=like.dtype, device=like.device,
                       memory_format=channels_last_format(like) or torch.contiguous_format)


def _to_channels_last(module: nn.Module) -> None:
    """Convolution weights in channels-last (idempotent): cuDNN then keeps activations NDHWC."""
    if getattr(module, "_vsrkit_channels_last", False):
        return
    for conv in module.modules():
        if isinstance(conv, (nn.Conv3d, nn.Conv2d)):
            layout = torch.channels_last_3d if conv.weight.dim() == 5 else torch.channels_last
            conv.weight.data = conv.weight.data.contiguous(memory_format=layout)
    module._vsrkit_channels_last = True


def _fill_front(buffer: torch.Tensor, front: int, cache: torch.Tensor | None) -> None:
    """The first ``front`` frames of ``buffer``: zeros, then the cached frames at the end of them
    (``WanCausalConv3d``: ``cat([cache, x])`` then ``F.pad`` of the remaining time padding)."""
    cached = 0 if cache is None else cache.shape[2]
    if cached > front:
        raise ValueError(f"a causal cache of {cached} frames exceeds the time padding ({front}).")
    if front - cached:
        buffer[:, :, : front - cached].zero_()
    if cached:
        buffer[:, :, front - cached: front] = cache.to(buffer.device)


def norm_silu_conv(norm: WanRMS_norm, conv: WanCausalConv3d, x: torch.Tensor, feat_cache: list | None,
                   feat_idx: list, *, in_bias: torch.Tensor | None = None, conv_bias: bool = True) -> torch.Tensor:
    """``conv(silu(norm(x)), cache)`` with diffusers' cache bookkeeping, in one buffer.

    The norm's output lands in a buffer behind ``conv``'s time padding (cached frames or zeros);
    the new cache is the last ``CACHE_T`` activated frames (with the previous cache's last frame
    in front when only one frame came in), exactly as ``WanResidualBlock`` keeps it.
    """
    front = conv._padding[4]
    cache = None
    if feat_cache is not None:
        idx = feat_idx[0]
        cache = feat_cache[idx]
    buffer = _time_padded_buffer(x, front)
    rms_norm(x, _gain(norm), silu=True, out=buffer[:, :, front:], bias=in_bias)
    _fill_front(buffer, front, cache)
    if feat_cache is not None:
        keep = CACHE_T if x.shape[2] >= CACHE_T or cache is not None else x.shape[2]
        feat_cache[idx] = buffer[:, :, buffer.shape[2] - keep:].clone()
        feat_idx[0] += 1
    return _conv(conv, buffer, bias=conv_bias)


class FusedCausalConv3d(WanCausalConv3d):
    """``WanCausalConv3d`` whose inference forward builds the time padding in one buffer and lets
    the convolution pad space (diffusers: ``torch.cat`` of the cache, then ``F.pad``)."""

    def forward(self, x, cache_x=None):
        if not _fused(self, x):
            return super().forward(x, cache_x)
        front = self._padding[4]
        if front == 0:
            return _conv(self, x)
        buffer = _time_padded_buffer(x, front)
        buffer[:, :, front:] = x
        _fill_front(buffer, front, cache_x)
        return _conv(self, buffer)


class FusedResidualBlock(WanResidualBlock):
    """``WanResidualBlock`` whose inference forward fuses norm, SiLU and causal padding."""

    def forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - diffusers' signature
        if not _fused(self, x) or (self.training and self.dropout.p > 0):
            return super().forward(x, feat_cache, feat_idx)
        h = self.conv_shortcut(x)
        # conv1's bias is added inside norm2's kernel, conv2's with the residual: no bias passes.
        x = norm_silu_conv(self.norm1, self.conv1, x, feat_cache, feat_idx, conv_bias=False)
        x = norm_silu_conv(self.norm2, self.conv2, x, feat_cache, feat_idx, in_bias=self.conv1.bias,
                           conv_bias=False)  # dropout (identity here) skipped
        return add_bias_residual(x, self.conv2.bias, h)


class FusedEncoder3d(WanEncoder3d):
    """``WanEncoder3d`` whose head (``norm_out``, SiLU, ``conv_out``) is :func:`norm_silu_conv`."""

    def forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - diffusers' signature
        if not _fused(self, x):
            return super().forward(x, feat_cache, feat_idx)
        if _CHANNELS_LAST:
            _to_channels_last(self)
        # Copied from diffusers' WanEncoder3d.forward up to the head.
        if feat_cache is not None:
            idx = feat_idx[0]
            cache_x = x[:, :, -CACHE_T:, :, :].clone()
            if cache_x.shape[2] < 2 and feat_cache[idx] is not None:
                cache_x = torch.cat([feat_cache[idx][:, :, -1, :, :].unsqueeze(2).to(cache_x.device), cache_x], dim=2)
            x = self.conv_in(x, feat_cache[idx])
            feat_cache[idx] = cache_x
            feat_idx[0] += 1
        else:
            x = self.conv_in(x)
        for layer in self.down_blocks:
            x = layer(x, feat_cache=feat_cache, feat_idx=feat_idx) if feat_cache is not None else layer(x)
        x = self.mid_block(x, feat_cache=feat_cache, feat_idx=feat_idx)
        return norm_silu_conv(self.norm_out, self.conv_out, x, feat_cache, feat_idx).contiguous()


class FusedDecoder3d(WanDecoder3d):
    """``WanDecoder3d`` whose head (``norm_out``, SiLU, ``conv_out``) is :func:`norm_silu_conv`."""

    def forward(self, x, feat_cache=None, feat_idx=[0], first_chunk=False):  # noqa: B006 - diffusers' signature
        if not _fused(self, x):
            return super().forward(x, feat_cache, feat_idx, first_chunk)
        if _CHANNELS_LAST:
            _to_channels_last(self)
        # Copied from diffusers' WanDecoder3d.forward up to the head.
        if feat_cache is not None:
            idx = feat_idx[0]
            cache_x = x[:, :, -CACHE_T:, :, :].clone()
            if cache_x.shape[2] < 2 and feat_cache[idx] is not None:
                cache_x = torch.cat([feat_cache[idx][:, :, -1, :, :].unsqueeze(2).to(cache_x.device), cache_x], dim=2)
            x = self.conv_in(x, feat_cache[idx])
            feat_cache[idx] = cache_x
            feat_idx[0] += 1
        else:
            x = self.conv_in(x)
        x = self.mid_block(x, feat_cache=feat_cache, feat_idx=feat_idx)
        for up_block in self.up_blocks:
            x = up_block(x, feat_cache=feat_cache, feat_idx=feat_idx, first_chunk=first_chunk)
        return norm_silu_conv(self.norm_out, self.conv_out, x, feat_cache, feat_idx).contiguous()


class FusedUpsample(WanUpsample):
    """``WanUpsample`` without the float32 round trip: nearest-exact copies input values, so
    upsampling bf16 directly gives the same tensor with a quarter of the traffic."""

    def forward(self, x):
        if not _fused(self, x):
            return super().forward(x)
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)


def _norm_is_plain(norm: nn.Module) -> bool:
    return type(norm) is WanRMS_norm and norm.channel_first and isinstance(norm.bias, float) and norm.bias == 0.0


def fuse_vae(vae: nn.Module) -> int:
    """Switch an ``AutoencoderKLWan`` to the fused inference forwards, in place.

    Parameters, state-dict keys and ``_cached_conv_counts`` are unchanged (the fused classes
    subclass diffusers'). Returns the number of modules switched.
    """
    switched = 0
    for module in vae.modules():
        kind = type(module)
        if kind is WanCausalConv3d:
            module.__class__ = FusedCausalConv3d
        elif kind is WanResidualBlock and isinstance(module.nonlinearity, nn.SiLU) \
                and _norm_is_plain(module.norm1) and _norm_is_plain(module.norm2):
            module.__class__ = FusedResidualBlock
        elif kind in (WanEncoder3d, WanDecoder3d) and isinstance(module.nonlinearity, nn.SiLU) \
                and _norm_is_plain(module.norm_out):
            module.__class__ = FusedEncoder3d if kind is WanEncoder3d else FusedDecoder3d
        elif kind is WanUpsample and module.mode == "nearest-exact":
            module.__class__ = FusedUpsample
        else:
            continue
        switched += 1
    return switched
