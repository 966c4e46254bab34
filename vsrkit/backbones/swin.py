"""Swin Transformer image encoder with the module names of RAM's ``visual_encoder`` (Liu et al. 2021).

RAM (recognize-anything, ``ram_swin_large_14m.pth``) and SeeSR's DAPE use Swin-L at 384 px:
patch 4, embed 192, depths (2, 2, 18, 2), heads (6, 12, 24, 48), window 12, no absolute position
embedding. The forward returns the tokens InfVSR cross-attends to: the average-pooled token
followed by the final 12 x 12 grid, ``(B, 1 + (S/32)**2, 8 * embed_dim)``.

Inference only (no dropout or drop-path). Names follow the checkpoint keys, so its state dict
loads as is; ``relative_position_index`` and ``attn_mask`` are non-persistent buffers (the release
filters them out of the file too).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * H/size * W/size, size*size, C)`` (row-major windows)."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def _unwindows(x: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_windows`."""
    c = x.shape[-1]
    b = x.shape[0] // ((h // size) * (w // size))
    x = x.view(b, h // size, w // size, size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class SwinMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinWindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1],
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n_win, n, c = x.shape
        q, k, v = self.qkv(x).view(n_win, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = (q * self.scale) @ k.transpose(-2, -1) + bias.permute(2, 0, 1)[None]
        if mask is not None:
            w = mask.shape[0]
            attn = (attn.view(n_win // w, w, self.heads, n, n) + mask[None, :, None]).view(n_win, self.heads, n, n)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(n_win, n, c))


class SwinBlock(nn.Module):
    """Window attention (shifted by half a window in odd blocks) and an MLP, both pre-norm residual."""

    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:  # the whole map fits one window: no shift
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SwinWindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, int(dim * mlp_ratio))
        mask = None
        if shift > 0:
            h, w = resolution
            region = torch.zeros(1, h, w, 1)
            label = 0
            for ys in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                for xs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                    region[:, ys, xs] = label
                    label += 1
            ids = _windows(region, window).squeeze(-1)
            mask = (ids[:, None, :] != ids[:, :, None]).float() * -100.0
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        mask = self.attn_mask.to(y.dtype) if self.attn_mask is not None else None
        y = _unwindows(self.attn(_windows(y, self.window), mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class SwinPatchMerging(nn.Module):
    """2x2 neighbourhoods concatenated (order (0,0), (1,0), (0,1), (1,1)), normed, projected to 2C."""

    def __init__(self, resolution: tuple[int, int], dim: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int,
                 mlp_ratio: float, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio)
            for i in range(depth)
        ])
        self.downsample = SwinPatchMerging(resolution, dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class SwinPatchEmbed(nn.Module):
    def __init__(self, image_size: int, patch: int, embed_dim: int):
        super().__init__()
        self.image_size = image_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"Swin input must be {self.image_size}x{self.image_size}. Got {tuple(x.shape[-2:])}.")
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(nn.Module):
    """Swin backbone returning ``[avg-pooled token, grid tokens]`` after the final norm.

    Args:
        image_size: Input edge in pixels.
        patch: Patch edge.
        embed_dim: Channels of stage 1 (doubling per stage).
        depths: Blocks per stage.
        heads: Heads per stage.
        window: Window edge in tokens.
        mlp_ratio: MLP hidden size / channels.
    """

    def __init__(self, image_size: int = 384, patch: int = 4, embed_dim: int = 192, depths=(2, 2, 18, 2),
                 heads=(6, 12, 24, 48), window: int = 12, mlp_ratio: float = 4.0):
        super().__init__()
        self.patch_embed = SwinPatchEmbed(image_size, patch, embed_dim)
        grid = image_size // patch
        self.layers = nn.ModuleList([
            SwinStage(embed_dim * 2 ** i, (grid // 2 ** i, grid // 2 ** i), depth, heads[i], window, mlp_ratio,
                      downsample=i < len(depths) - 1)
            for i, depth in enumerate(depths)
        ])
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised image -> ``(B, 1 + (S / (patch * 8))**2, num_features)``."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
