"""Real-ESRGAN's two generator architectures, with BasicSR's module names.

Module and parameter names are those of ``basicsr/archs/srvgg_arch.py`` (``SRVGGNetCompact``) and
``basicsr/archs/rrdbnet_arch.py`` (``RRDBNet``) as vendored by xinntao/Real-ESRGAN @ a5e4a2a, so
the official ``.pth`` files (``params_ema`` / ``params``) load key for key. Both take ``(N, 3, h,
w)`` RGB in [0, 1] and return ``(N, 3, h * 4, w * 4)``, unclamped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SRVGGNetCompact(nn.Module):
    """Compact VGG-style SR network (realesr-animevideov3, realesr-general-x4v3).

    ``num_conv`` 3x3 convolutions with PReLU at low resolution, one convolution to
    ``3 * upscale**2`` channels, pixel shuffle, plus the nearest-upsampled input (the network
    learns a residual).

    Args:
        num_in_ch: Input channels.
        num_out_ch: Output channels.
        num_feat: Feature channels (64 in animevideov3).
        num_conv: Body convolutions between the first and the last (16 in animevideov3).
        upscale: Upscaling factor (4).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4):
        super().__init__()
        self.upscale = upscale
        self.body = nn.ModuleList([nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)])
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(nn.PReLU(num_parameters=num_feat))
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        # The nearest-upsampled input: the body only predicts the residual.
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions; the output is scaled by 0.2 and added to the input.

    Args:
        num_feat: Feature channels.
        num_grow_ch: Channels each of the first four convolutions adds.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        # ESRGAN's residual scaling (0.2), kept by Real-ESRGAN.
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, scaled by 0.2 and added to the input.

    Args:
        num_feat: Feature channels.
        num_grow_ch: Growth channels of each dense block.
    """

    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator at x4 (RealESRGAN_x4plus: 23 blocks; x4plus_anime_6B: 6 blocks).

    Args:
        num_in_ch: Input channels.
        num_out_ch: Output channels.
        num_feat: Feature channels (64).
        num_block: RRDB blocks in the trunk.
        num_grow_ch: Growth channels of the dense blocks (32).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 23,
                 num_grow_ch: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        # Two nearest x2 upsamplings, each followed by a convolution (x4 in all).
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
