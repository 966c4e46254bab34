"""Fused inference forward for the CogVideoX VAE: same weights, same frame batching, same function.

Profiled on an H200 (SparkVSR's 720p workload, docs/benchmarks.md), diffusers'
``AutoencoderKLCogVideoX`` spends 37% of its decode and 42% of its encode in PyTorch's GroupNorm
statistics kernel, which reduces each of the 32 group rows with a single thread block. The rest
of the non-convolution time goes to copies that the arithmetic does not need. :func:`fuse_vae`
switches the VAE's blocks to forwards that compute the same thing with less traffic:

- GroupNorm, SpatialNorm3D's modulation and the SiLU after it are one fused pass
  (:func:`vsrkit.backbones.kernels.group_norm`);
- SpatialNorm3D's two 1x1x1 convolutions run on the latent ``zq`` *before* its nearest upsampling
  (a pointwise convolution commutes with nearest upsampling), and the fused pass reads the small
  result through index maps instead of two full-resolution tensors;
- the causal convolution's time padding (``conv_cache`` or the repeated first frame) is written
  in front of the normalised activations in one buffer, instead of a ``torch.cat`` copy.

Frame batching (8 frames per encoder call, 2 latent frames per decoder call), tiling and the
``conv_cache`` hand-over are diffusers' own, so the GroupNorm statistics cover the same frames.
With autograd on (Stage-2 training decodes with gradients) or without Triton every block runs
diffusers' forward unchanged.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import (
    CogVideoXCausalConv3d,
    CogVideoXDecoder3D,
    CogVideoXEncoder3D,
    CogVideoXResnetBlock3D,
    CogVideoXSpatialNorm3D,
)
from torch import nn

from vsrkit.backbones.kernels import fused_path_applies, group_norm, nearest_index


def _fused(module: nn.Module, x: torch.Tensor, zq: torch.Tensor | None = None) -> bool:
    if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
        return False
    return fused_path_applies(x, zq)


@functools.lru_cache(maxsize=256)
def spatial_norm_index(z_size: tuple[int, int, int], f_size: tuple[int, int, int]) -> tuple[torch.Tensor, ...]:
    """Where ``CogVideoXSpatialNorm3D`` reads ``zq`` for each position of ``f`` (its interpolation rule).

    An odd frame count above 1 maps the first frame to latent frame 0 and the rest, separately,
    onto latent frames 1...; otherwise all frames are interpolated together.
    """
    (zt, zh, zw), (ft, fh, fw) = z_size, f_size
    if ft > 1 and ft % 2 == 1:
        it = torch.cat([torch.zeros(1, dtype=torch.long), 1 + nearest_index(zt - 1, ft - 1)])
    else:
        it = nearest_index(zt, ft)
    return it, nearest_index(zh, fh), nearest_index(zw, fw)


def _norm_silu(norm: nn.Module, x: torch.Tensor, zq: torch.Tensor | None, out: torch.Tensor | None = None):
    """``silu(norm(x[, zq]))`` of a GroupNorm or a SpatialNorm3D, in one fused pass."""
    if isinstance(norm, CogVideoXSpatialNorm3D):
        gn = norm.norm_layer
        scale, shift = norm.conv_y.conv(zq), norm.conv_b.conv(zq)  # 1x1x1 convs at the latent size
        index = spatial_norm_index(tuple(zq.shape[2:]), tuple(x.shape[2:]))
        return group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps, scale=scale, shift=shift, index=index,
                          silu=True, out=out)
    return group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps, silu=True, out=out)


def _norm_silu_conv(norm: nn.Module, conv: CogVideoXCausalConv3d, x: torch.Tensor, zq: torch.Tensor | None,
                    conv_cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``conv(silu(norm(x)))`` with the causal time padding written in front of the norm's output."""
    pad = conv.time_kernel_size - 1
    batch, channels, frames, height, width = x.shape
    padded = x.new_empty(batch, channels, frames + pad, height, width)
    _norm_silu(norm, x, zq, out=padded[:, :, pad:])
    if pad:
        padded[:, :, :pad] = conv_cache if conv_cache is not None else padded[:, :, pad:pad + 1]
    new_cache = padded[:, :, -pad:].clone() if pad else None
    return conv.conv(padded), new_cache


class FusedResnetBlock3D(CogVideoXResnetBlock3D):
    """``CogVideoXResnetBlock3D`` whose inference forward fuses norm, SiLU and causal padding."""

    def forward(self, inputs: torch.Tensor, temb: torch.Tensor | None = None, zq: torch.Tensor | None = None,
                conv_cache: dict[str, torch.Tensor] | None = None):
        if temb is not None or not _fused(self, inputs, zq):
            return super().forward(inputs, temb, zq, conv_cache)
        conv_cache = conv_cache or {}
        new_conv_cache = {}
        hidden, new_conv_cache["conv1"] = _norm_silu_conv(self.norm1, self.conv1, inputs, zq, conv_cache.get("conv1"))
        hidden, new_conv_cache["conv2"] = _norm_silu_conv(self.norm2, self.conv2, hidden, zq, conv_cache.get("conv2"))
        if self.in_channels != self.out_channels:
            if self.use_conv_shortcut:
                inputs, new_conv_cache["conv_shortcut"] = self.conv_shortcut(
                    inputs, conv_cache=conv_cache.get("conv_shortcut"))
            else:
                inputs = self.conv_shortcut(inputs)
        return hidden + inputs, new_conv_cache


class FusedGroupNormSiLU(nn.GroupNorm):
    """``silu(GroupNorm(x))``: an encoder's ``norm_out`` with its ``conv_act`` folded in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fused(self, x):
            return _norm_silu(self, x, None)
        return F.silu(super().forward(x))


class FusedSpatialNorm3DSiLU(CogVideoXSpatialNorm3D):
    """``silu(SpatialNorm3D(f, zq))``: a decoder's ``norm_out`` with its ``conv_act`` folded in."""

    def forward(self, f: torch.Tensor, zq: torch.Tensor, conv_cache: dict[str, torch.Tensor] | None = None):
        if _fused(self, f, zq):
            # The 1x1x1 convs keep no useful cache (time kernel 1): diffusers' entries are never read.
            return _norm_silu(self, f, zq), {}
        new_f, new_conv_cache = super().forward(f, zq, conv_cache)
        return F.silu(new_f), new_conv_cache


def _fusable_resnet(block: CogVideoXResnetBlock3D) -> bool:
    convs = (block.conv1, block.conv2)
    return (isinstance(block.nonlinearity, nn.SiLU) and not hasattr(block, "temb_proj")
            and all(c.pad_mode != "replicate" for c in convs))


def fuse_vae(vae: nn.Module) -> int:
    """Switch an ``AutoencoderKLCogVideoX`` to the fused inference forwards, in place.

    Parameters and state-dict keys are unchanged. Returns the number of modules switched.
    """
    switched = 0
    for module in vae.modules():
        if type(module) is CogVideoXResnetBlock3D and _fusable_resnet(module):
            module.__class__ = FusedResnetBlock3D
            switched += 1
        elif type(module) in (CogVideoXEncoder3D, CogVideoXDecoder3D) and isinstance(module.conv_act, nn.SiLU):
            norm = module.norm_out
            if type(norm) is nn.GroupNorm:
                norm.__class__ = FusedGroupNormSiLU
            elif type(norm) is CogVideoXSpatialNorm3D:
                norm.__class__ = FusedSpatialNorm3DSiLU
            else:
                continue
            module.conv_act = nn.Identity()  # the SiLU now happens inside norm_out
            switched += 1
    return switched
