"""Chunk-causal attention for diffusers' ``WanTransformer3DModel``: a rolling KV cache and RoPE
time positions that continue across chunks, without forking the model.

Two pieces are swapped into an existing transformer by :func:`enable_chunk_causal`:

* :class:`ChunkCausalWanAttnProcessor` on every block's self-attention (``attn1``): it computes
  q, k, v exactly as diffusers' ``WanAttnProcessor`` (projections, RMSNorm across heads, RoPE),
  then attends to the K/V of the previous ``window`` chunks kept in a :class:`ChunkCausalState`
  as well as to its own, and stores its own K/V (after norm and RoPE) for the next chunk. In a
  training forward over many chunks at once, a block-banded mask gives the same result
  (:func:`chunk_causal_mask`).
* :class:`OffsetWanRotaryPosEmbed` as ``transformer.rope``: the 3D RoPE of diffusers'
  ``WanRotaryPosEmbed`` (head split time 44 / height 42 / width 42 at head_dim 128), computed on the
  fly with the time positions starting at ``state.offset``, so there is no 1024-frame cap.

Cross-attention and every weight are untouched: the state dict keeps diffusers' keys. This is
the structure of InfVSR's causal DiT (infvsr.md §1.5-1.6; release ``wan_video_dit.py``
``SelfAttention``: cache = the previous chunk's k after RMSNorm and RoPE, and v).
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn as nn

ROPE_THETA = 10000.0


class ChunkCausalState:
    """What the processors and the RoPE module of one transformer share.

    Attributes:
        window: Previous chunks each chunk attends to (InfVSR: 1, no sink).
        offset: Latent-frame index of the first frame of the chunk being processed (RoPE time).
        write: Whether a forward stores its K/V as the newest cached chunk (streaming).
        mask: ``(S, S)`` bool mask (True = attend) used by a forward over many chunks at once;
            ``None`` in streaming.
        past: Per layer, the cached ``(k, v)`` of up to ``window`` chunks, oldest first, each
            ``(B, S_chunk, heads, head_dim)``.
    """

    def __init__(self, num_layers: int, window: int = 1):
        if window < 0:
            raise ValueError(f"`window` must be >= 0. Got {window}.")
        self.window = window
        self.offset = 0
        self.write = False
        self.mask: torch.Tensor | None = None
        self.past: list[deque] = [deque() for _ in range(num_layers)]

    def reset(self) -> None:
        """Drop every cached chunk and start the time positions at 0 again (a new clip or scene)."""
        for layer in self.past:
            layer.clear()
        self.offset = 0
        self.mask = None

    @property
    def cached_chunks(self) -> int:
        return len(self.past[0]) if self.past else 0

    def held_bytes(self) -> int:
        """Bytes held by the cache (for memory checks)."""
        return sum(t.numel() * t.element_size() for layer in self.past for kv in layer for t in kv)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs ``(x[2i], x[2i+1])`` of ``x (B, S, H, D)`` by the angles whose
    ``cos``/``sin`` are ``(1, S, 1, D/2)`` (diffusers' Wan convention = the release's complex product),
    computed in float32 and returned in ``x``'s dtype."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.type_as(x)


class OffsetWanRotaryPosEmbed(nn.Module):
    """diffusers' ``WanRotaryPosEmbed`` with the time positions starting at ``state.offset``.

    Returns ``(cos, sin)``, each ``(1, f*h*w, 1, head_dim / 2)`` float32: per axis the angles
    ``pos / theta**(2i / d)`` (time ``d = head_dim - 2*(head_dim // 6)``, height and width
    ``d = 2*(head_dim // 6)``), for time positions ``offset .. offset + f - 1`` and spatial positions
    ``0 .. h-1``, ``0 .. w-1``. Angles are formed in float64 as diffusers and the release do.

    Args:
        state: The shared :class:`ChunkCausalState` (its ``offset``).
        attention_head_dim: Head dimension.
        patch_size: The transformer's ``(p_t, p_h, p_w)``.
        theta: RoPE base.
    """

    def __init__(self, state: ChunkCausalState, attention_head_dim: int, patch_size, theta: float = ROPE_THETA):
        super().__init__()
        self.state = state
        self.patch_size = tuple(patch_size)
        self.h_dim = self.w_dim = 2 * (attention_head_dim // 6)
        self.t_dim = attention_head_dim - self.h_dim - self.w_dim
        self.theta = theta

    def _angles(self, dim: int, start: int, count: int, device) -> torch.Tensor:
        freqs = 1.0 / (self.theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device)[: dim // 2] / dim))
        positions = torch.arange(start, start + count, dtype=torch.float64, device=device)
        return torch.outer(positions, freqs)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.patch_size
        f, h, w = frames // p_t, height // p_h, width // p_w
        device = hidden_states.device
        t = self._angles(self.t_dim, int(self.state.offset), f, device)
        y = self._angles(self.h_dim, 0, h, device)
        x = self._angles(self.w_dim, 0, w, device)
        angles = torch.cat([
            t.view(f, 1, 1, -1).expand(f, h, w, -1),
            y.view(1, h, 1, -1).expand(f, h, w, -1),
            x.view(1, 1, w, -1).expand(f, h, w, -1),
        ], dim=-1).reshape(1, f * h * w, 1, -1)
        return angles.cos().float(), angles.sin().float()


class ChunkCausalWanAttnProcessor:
    """Self-attention of one Wan block over the current chunk and the cached previous chunks.

    Args:
        state: The shared :class:`ChunkCausalState`.
        layer: Index of the block (which cache slot is this layer's).
    """

    # diffusers' set_attention_backend sets these on every processor that has them.
    _attention_backend = None
    _parallel_config = None

    def __init__(self, state: ChunkCausalState, layer: int):
        self.state = state
        self.layer = layer

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, rotary_emb=None) -> torch.Tensor:
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        if encoder_hidden_states is not None:
            raise ValueError("ChunkCausalWanAttnProcessor is for self-attention (attn1) only.")
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = apply_rotary(query, *rotary_emb)
            key = apply_rotary(key, *rotary_emb)

        state = self.state
        past = state.past[self.layer]
        current = (key.detach(), value.detach()) if state.write else None
        if past:
            key = torch.cat([*(k for k, _ in past), key], dim=1)
            value = torch.cat([*(v for _, v in past), value], dim=1)
        mask = attention_mask if attention_mask is not None else state.mask
        if mask is not None and mask.shape != (query.shape[1], key.shape[1]):
            raise ValueError(f"chunk-causal mask has shape {tuple(mask.shape)}, expected "
                             f"{(query.shape[1], key.shape[1])}.")
        out = dispatch_attention_fn(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                    backend=self._attention_backend)
        if current is not None and state.window > 0:
            past.append(current)
            while len(past) > state.window:
                past.popleft()
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def enable_chunk_causal(transformer: nn.Module, window: int = 1) -> ChunkCausalState:
    """Make a diffusers ``WanTransformer3DModel`` chunk-causal (in place; idempotent).

    Every block's ``attn1`` gets a :class:`ChunkCausalWanAttnProcessor` (keeping the attention
    backend chosen at build time) and ``transformer.rope`` becomes an :class:`OffsetWanRotaryPosEmbed`.
    With an empty cache, offset 0 and no mask the transformer computes what it computed before.

    Args:
        transformer: The diffusers Wan transformer.
        window: Previous chunks each chunk attends to.

    Returns:
        The shared :class:`ChunkCausalState`.
    """
    state = getattr(transformer, "_vsrkit_chunk_causal", None)
    if state is not None:
        state.window = window
        return state
    cfg = transformer.config
    state = ChunkCausalState(len(transformer.blocks), window)
    for i, block in enumerate(transformer.blocks):
        old = block.attn1.processor
        processor = ChunkCausalWanAttnProcessor(state, i)
        processor._attention_backend = getattr(old, "_attention_backend", None)
        block.attn1.set_processor(processor)
    transformer.rope = OffsetWanRotaryPosEmbed(state, cfg.attention_head_dim, cfg.patch_size)
    transformer._vsrkit_chunk_causal = state
    return state


def chunk_causal_mask(chunk_frames: list[int], tokens_per_frame: int, window: int = 1,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The block-banded mask under which one forward over consecutive chunks equals streaming them.

    Args:
        chunk_frames: Latent frames of each chunk, in order (InfVSR: ``[3, 3, ...]``).
        tokens_per_frame: Tokens of one latent frame (``h/2 * w/2``).
        window: Previous chunks each chunk sees.
        device: Device of the mask.

    Returns:
        ``(S, S)`` bool, ``S = sum(chunk_frames) * tokens_per_frame``: query token of chunk ``c``
        may attend key token of chunk ``j`` iff ``c - window <= j <= c``.
    """
    ids = torch.repeat_interleave(torch.arange(len(chunk_frames), device=device),
                                  torch.tensor(chunk_frames, device=device) * tokens_per_frame)
    diff = ids[:, None] - ids[None, :]
    return (diff >= 0) & (diff <= window)
