"""Triton kernels behind :func:`vsrkit.backbones.kernels.group_norm` and
:func:`vsrkit.backbones.kernels.rms_norm` (imported only where Triton is).

Kernels live at module level because Triton resolves the functions a kernel calls by global name.
"""

import triton
import triton.language as tl


@triton.jit
def welford_combine(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    n = n_a + n_b
    frac = tl.where(n == 0.0, 0.0, n_b / tl.maximum(n, 1.0))
    delta = mean_b - mean_a
    return mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac, n


@triton.jit
def group_stats(x_ptr, part_ptr, row_len, chunk, splits, BLOCK: tl.constexpr):
    """(mean, M2, count) of one ``chunk`` of one (sample, group) row: per-lane Welford, then a tree."""
    row = tl.program_id(0)
    split = tl.program_id(1)
    base = row.to(tl.int64) * row_len
    start = split.to(tl.int64) * chunk
    end = tl.minimum(start + chunk, row_len)
    mean = tl.zeros([BLOCK], dtype=tl.float32)
    m2 = tl.zeros([BLOCK], dtype=tl.float32)
    count = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        mask = idx < end
        v = tl.load(x_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
        new_count = count + mask.to(tl.float32)
        delta = v - mean
        new_mean = mean + tl.where(mask, delta / tl.maximum(new_count, 1.0), 0.0)
        m2 = m2 + tl.where(mask, delta * (v - new_mean), 0.0)
        mean = new_mean
        count = new_count
    mean_r, m2_r, count_r = tl.reduce((mean, m2, count), 0, welford_combine)
    out = part_ptr + (row * splits + split) * 3
    tl.store(out, mean_r)
    tl.store(out + 1, m2_r)
    tl.store(out + 2, count_r)


@triton.jit
def group_apply(x_ptr, out_ptr, coef_ptr, scale_ptr, shift_ptr, it_ptr, ih_ptr, iw_ptr,
                plane, out_plane_stride, height, width, mod_plane, mod_height, mod_width,
                HAS_MOD: tl.constexpr, SILU: tl.constexpr, BLOCK: tl.constexpr):
    """BLOCK elements of one (sample, channel) plane: ``y = x * a + b``, then ``* s + t``, then SiLU.

    The modulation ``s, t`` is read at ``(it[t], ih[h], iw[w])`` of its own (smaller) grid: nearest
    upsampling done by the index maps, so it is never materialised at full size.
    """
    rc = tl.program_id(0)
    a = tl.load(coef_ptr + rc * 2)
    b = tl.load(coef_ptr + rc * 2 + 1)
    idx = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < plane
    y = tl.load(x_ptr + rc.to(tl.int64) * plane + idx, mask=mask, other=0.0).to(tl.float32) * a + b
    if HAS_MOD:
        hw = height * width
        t = idx // hw
        rest = idx - t * hw
        h = rest // width
        w = rest - h * width
        src_t = tl.load(it_ptr + t, mask=mask, other=0)
        src_h = tl.load(ih_ptr + h, mask=mask, other=0)
        src_w = tl.load(iw_ptr + w, mask=mask, other=0)
        src = rc.to(tl.int64) * mod_plane + (src_t.to(tl.int64) * mod_height + src_h) * mod_width + src_w
        s = tl.load(scale_ptr + src, mask=mask, other=0.0).to(tl.float32)
        t_ = tl.load(shift_ptr + src, mask=mask, other=0.0).to(tl.float32)
        y = y * s + t_
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(out_ptr + rc.to(tl.int64) * out_plane_stride + idx, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def split_position(p, plane, width):
    """Frame, row and column of flat positions ``p`` over (t, h, w) planes of ``plane = h * w``."""
    t = p // plane
    rest = p - t * plane
    h = rest // width
    return t, h, rest - h * width


@triton.jit
def rms_norm_channels(x_ptr, out_ptr, gain_ptr, bias_ptr, channels, positions, plane, width,
                      sx_b, sx_c, sx_t, sx_h, sx_w, so_b, so_c, so_t, so_h, so_w, eps,
                      HAS_BIAS: tl.constexpr, PLANES: tl.constexpr, SILU: tl.constexpr, BLOCK: tl.constexpr):
    """BLOCK positions of one sample: ``y_c = x_c / max(||x||_2 over c, eps) * gain_c``, then SiLU
    (``x_c`` plus ``bias_c`` first when HAS_BIAS: the bias of the convolution that produced ``x``).

    Positions (t, h, w) run along the program's block, channels in a loop: with channels-first
    activations every load is a contiguous run of BLOCK values. ``x`` is read twice (norm, then
    output); ``out`` may be a view into a larger (time-padded) buffer: every stride is an argument.
    PLANES: each channel's (t, h, w) plane is contiguous in ``x`` and ``out``, so the offset is the
    position itself; Triton then sees the contiguous runs and issues vector loads (the general
    index arithmetic hides them and gives 2-byte loads).
    """
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = p < positions
    if PLANES:
        x_base = x_ptr + b * sx_b + p
        o_base = out_ptr + b * so_b + p
    else:
        t, h, w = split_position(p, plane, width)
        x_base = x_ptr + b * sx_b + t * sx_t + h * sx_h + w * sx_w
        o_base = out_ptr + b * so_b + t * so_t + h * so_h + w * so_w
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    x_c = x_base
    for c in range(0, channels):  # pointers advance by the channel stride: no 32-bit index overflow
        v = tl.load(x_c, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            v += tl.load(bias_ptr + c)
        acc += v * v
        x_c += sx_c
    norm = tl.maximum(tl.sqrt(acc), eps)
    x_c = x_base
    o_c = o_base
    for c in range(0, channels):
        v = tl.load(x_c, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            v += tl.load(bias_ptr + c)
        g = tl.load(gain_ptr + c)
        y = v / norm * g
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(o_c, y.to(out_ptr.dtype.element_ty), mask=mask)
        x_c += sx_c
        o_c += so_c


@triton.jit
def rms_norm_rows(x_ptr, out_ptr, gain_ptr, bias_ptr, channels, positions, plane, width,
                  sx_b, sx_t, sx_h, sx_w, so_b, so_t, so_h, so_w, eps,
                  HAS_BIAS: tl.constexpr, SILU: tl.constexpr, ROWS: tl.constexpr, CBLOCK: tl.constexpr):
    """:func:`rms_norm_channels` for channels-last ``x`` and ``out`` (channel stride 1): ROWS
    positions x all channels as one tile, read once; each position's channels are one contiguous
    vector load."""
    b = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    c = tl.arange(0, CBLOCK)
    mask = (p < positions)[:, None] & (c < channels)[None, :]
    t, h, w = split_position(p, plane, width)
    x_rows = x_ptr + b * sx_b + t * sx_t + h * sx_h + w * sx_w
    v = tl.load(x_rows[:, None] + c[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(bias_ptr + c, mask=c < channels, other=0.0)[None, :]
    norm = tl.maximum(tl.sqrt(tl.sum(v * v, axis=1)), eps)
    g = tl.load(gain_ptr + c, mask=c < channels, other=0.0)
    y = v / norm[:, None] * g[None, :]
    if SILU:
        y = y * tl.sigmoid(y)
    o_rows = out_ptr + b * so_b + t * so_t + h * so_h + w * so_w
    tl.store(o_rows[:, None] + c[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def add_bias_residual(y_ptr, h_ptr, bias_ptr, n, channels, BLOCK: tl.constexpr):
    """In place on channels-last ``y``: ``y + bias_c + h`` (``h`` laid out like ``y``), one rounding."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    y = tl.load(y_ptr + i, mask=mask, other=0.0).to(tl.float32)
    y += tl.load(bias_ptr + i % channels, mask=mask, other=0.0)
    y += tl.load(h_ptr + i, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + i, y.to(y_ptr.dtype.element_ty), mask=mask)
