"""Spatial tiles over streaming VAE coders: bounded memory in both length and resolution.

A streaming coder (``CogVideoXEncodeStream``, ``WanDecodeStream``...) keeps a causal cache so
memory does not grow with the clip's length, but one chunk of a 1080p or 4K frame can still be
too large. :class:`TiledStream` cuts every chunk into overlapping spatial tiles, gives each tile
its own streaming coder (so each tile keeps its own causal cache, as InfVSR's tiled VAE does,
infvsr.md §2.4) and blends the tiles' outputs with linear ramps over the overlap.
"""

from __future__ import annotations

from typing import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of edge ``tile`` covering ``[0, size)`` with at least ``overlap`` shared.

    The last tile is aligned to the end; offsets are multiples of ``multiple``.
    """
    if tile >= size:
        return [0]
    stride = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, size - tile, stride))
    last = (size - tile) // multiple * multiple
    if not starts or starts[-1] != last:
        starts.append(last)
    return starts


def _ramp(length: int, lo: int, hi: int, device) -> torch.Tensor:
    """Weights over ``length`` rising over the first ``lo`` and falling over the last ``hi`` samples."""
    w = torch.ones(length, device=device)
    if lo > 0:
        w[:lo] = torch.arange(1, lo + 1, device=device, dtype=torch.float32) / (lo + 1)
    if hi > 0:
        w[length - hi:] = torch.minimum(w[length - hi:], torch.arange(hi, 0, -1, device=device,
                                                                          dtype=torch.float32) / (hi + 1))
    return w


class TiledStream:
    """Run one streaming coder per spatial tile and blend their outputs.

    Args:
        make_stream: Creates a fresh streaming coder (an object with ``push(chunk) -> out``).
        tile: Tile edge in input pixels (or latent pixels when decoding).
        overlap: Input pixels shared by neighbouring tiles.
        scale: Output pixels per input pixel (1/8 when encoding, 8 when decoding).
        multiple: Tile offsets and sizes are multiples of this (8 when encoding; 1 when decoding).
    """

    def __init__(self, make_stream: Callable[[], object], tile: int, overlap: int, scale: float, multiple: int = 1):
        if tile % multiple or overlap < 0 or overlap >= tile:
            raise ValueError(f"`tile` must be a multiple of {multiple} and 0 <= `overlap` < `tile`. "
                             f"Got tile={tile}, overlap={overlap}.")
        self.make_stream, self.tile, self.overlap = make_stream, tile, overlap
        self.scale, self.multiple = scale, multiple
        self.streams: dict[tuple[int, int], object] = {}
        self.grid: tuple[list[int], list[int]] | None = None

    @torch.no_grad()
    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Code the next chunk ``(B, C, t, H, W)``; returns the blended ``(B, C', t', H*scale, W*scale)``."""
        h, w = chunk.shape[-2:]
        ys = tile_starts(h, self.tile, self.overlap, self.multiple)
        xs = tile_starts(w, self.tile, self.overlap, self.multiple)
        if self.grid is None:
            self.grid = (ys, xs)
        elif self.grid != (ys, xs):
            raise ValueError(f"Chunk size {(h, w)} differs from the first chunk's; a tiled stream keeps one tile grid.")
        s = self.scale
        out = weight = None
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                th, tw = min(self.tile, h - y), min(self.tile, w - x)
                stream = self.streams.get((y, x))
                if stream is None:
                    stream = self.streams[(y, x)] = self.make_stream()
                piece = stream.push(chunk[..., y:y + th, x:x + tw]).float()
                if out is None:
                    shape = (*piece.shape[:3], round(h * s), round(w * s))
                    out = torch.zeros(shape, device=piece.device)
                    weight = torch.zeros(shape[-2:], device=piece.device)
                oy, ox = round(y * s), round(x * s)
                ph, pw = piece.shape[-2:]
                # Ramps only on sides that touch a neighbour, over the overlap actually shared.
                top = round((ys[iy - 1] + self.tile - y) * s) if iy > 0 else 0
                bottom = round((y + th - ys[iy + 1]) * s) if iy + 1 < len(ys) else 0
                left = round((xs[ix - 1] + self.tile - x) * s) if ix > 0 else 0
                right = round((x + tw - xs[ix + 1]) * s) if ix + 1 < len(xs) else 0
                wy = _ramp(ph, max(0, min(top, ph)), max(0, min(bottom, ph)), piece.device)
                wx = _ramp(pw, max(0, min(left, pw)), max(0, min(right, pw)), piece.device)
                w2 = wy[:, None] * wx[None, :]
                out[..., oy:oy + ph, ox:ox + pw] += piece * w2
                weight[oy:oy + ph, ox:ox + pw] += w2
        return out / weight
