"""Read ncnn models: the ``.param`` graph (text) and the ``.bin`` weights that go with it.

Only what Real-ESRGAN's ncnn exports use is read, and every byte of the ``.bin`` must be
accounted for, so a model with a layer this reader does not know fails loudly instead of being
misread. Formats (ncnn ``src/net.cpp`` ``load_param``, ``src/modelbin.cpp``
``ModelBinFromDataReader::load``):

``.param``::

    7767517                                   # magic
    <layer count> <blob count>
    <type> <name> <n bottoms> <n tops> <bottoms...> <tops...> <k>=<v> ...

A key ``k <= -23300`` holds an array ``n,v1,...,vn`` for the real key ``-k - 23300``; values with a
``.``, ``e`` or ``E`` are floats, the rest ints.

``.bin``, layer by layer in ``.param`` order:

- ``Convolution``: weights ``weight_data_size`` values with a 4-byte tag: ``0x01306B47`` then fp16
  (OIHW, padded to a multiple of 4 bytes) or ``0`` then fp32; then, when ``bias_term``,
  ``num_output`` fp32 bias values without a tag.
- ``PReLU``: ``num_slope`` fp32 slopes without a tag.
- Every other layer Real-ESRGAN uses (``Input``, ``Split``, ``Concat``, ``Eltwise``,
  ``BinaryOp``, ``Interp``, ``PixelShuffle``) has no weights.

Importing this module loads numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAGIC = 7767517
# Tag in front of fp16 weight data (ncnn modelbin.cpp: flag_struct 0x01306B47).
FP16_TAG = 0x01306B47
# Layer types that carry no weights in the .bin (the only other types read are Convolution, PReLU).
WEIGHTLESS = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"})
ARRAY_KEY_BASE = -23300


class NcnnFormatError(ValueError):
    """A ``.param`` or ``.bin`` file does not follow the format (or uses a layer not read here)."""


@dataclass
class NcnnLayer:
    """One line of a ``.param`` file.

    Args:
        type: Layer type (``Convolution``, ``PReLU`` ...).
        name: Layer name.
        bottoms: Input blob names.
        tops: Output blob names.
        params: ``{key: int | float | list}`` (array keys already mapped to their real key).
        weights: Filled by :func:`read_bin`: ``{"weight": array, "bias": array}`` for a
            convolution (weight ``(out, in, kh, kw)`` float32), ``{"slope": array}`` for PReLU.
    """

    type: str
    name: str
    bottoms: list
    tops: list
    params: dict
    weights: dict = field(default_factory=dict)

    def get(self, key: int, default=None):
        return self.params.get(key, default)


def _value(text: str):
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(text: str, source: str = ".param") -> list[NcnnLayer]:
    """Parse the text of a ``.param`` file into its layers, in file order.

    Args:
        text: The file's content.
        source: Name used in error messages.

    Raises:
        NcnnFormatError: Wrong magic, wrong counts, or a malformed line.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != str(MAGIC):
        raise NcnnFormatError(f"{source}: not an ncnn param file (first line must be {MAGIC}).")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise NcnnFormatError(f"{source}: line 2 must be '<layer count> <blob count>'.") from None
    body = lines[2:]
    if len(body) != layer_count:
        raise NcnnFormatError(f"{source}: header says {layer_count} layers, the file has {len(body)}.")
    layers = []
    for number, line in enumerate(body, start=3):
        parts = line.split()
        try:
            kind, name, n_bottom, n_top = parts[0], parts[1], int(parts[2]), int(parts[3])
            blobs = parts[4:4 + n_bottom + n_top]
            if len(blobs) != n_bottom + n_top:
                raise ValueError("missing blob names")
            params: dict = {}
            for item in parts[4 + n_bottom + n_top:]:
                key_text, _, value_text = item.partition("=")
                key = int(key_text)
                if key <= ARRAY_KEY_BASE:
                    count, *values = value_text.split(",")
                    if len(values) != int(count):
                        raise ValueError(f"array {key} says {count} values, has {len(values)}")
                    params[-key + ARRAY_KEY_BASE] = [_value(v) for v in values]
                else:
                    params[key] = _value(value_text)
        except (IndexError, ValueError) as err:
            raise NcnnFormatError(f"{source} line {number}: malformed layer ({err}): {line[:80]}") from None
        layers.append(NcnnLayer(kind, name, blobs[:n_bottom], blobs[n_bottom:], params))
    return layers


class _Cursor:
    def __init__(self, data: bytes, source: str):
        self.data, self.pos, self.source = data, 0, source

    def take(self, size: int, what: str) -> bytes:
        if self.pos + size > len(self.data):
            raise NcnnFormatError(f"{self.source}: ends at byte {len(self.data)} while reading {what} "
                                  f"({size} bytes from {self.pos}); the .bin does not match the .param.")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        """Weights stored with a leading tag (ncnn ``load(w, 0)``): fp16 or plain fp32."""
        tag = int.from_bytes(self.take(4, f"{what} tag"), "little")
        if tag == FP16_TAG:
            raw = self.take(2 * count, what)
            self.take((-2 * count) % 4, f"{what} padding")
            return np.frombuffer(raw, dtype="<f2").astype(np.float32)
        if tag == 0:
            return self.fp32(count, what)
        raise NcnnFormatError(f"{self.source}: {what} has storage tag {tag:#010x}; only fp16 ({FP16_TAG:#010x}) "
                              f"and fp32 (0) weights are read (int8-quantised models are not supported).")


def read_bin(layers: list[NcnnLayer], data: bytes, source: str = ".bin") -> list[NcnnLayer]:
    """Fill ``layer.weights`` of every layer from the bytes of the ``.bin`` file.

    Args:
        layers: Layers from :func:`parse_param`, in file order.
        data: The ``.bin`` content.
        source: Name used in error messages.

    Returns:
        ``layers`` (the same objects, weights filled).

    Raises:
        NcnnFormatError: A layer type this reader does not know, a size mismatch, or bytes left
            over at the end.
    """
    cursor = _Cursor(data, source)
    for layer in layers:
        if layer.type == "Convolution":
            out_ch, k_w = int(layer.get(0, 0)), int(layer.get(1, 0))
            k_h = int(layer.get(11, k_w))
            size = int(layer.get(6, 0))
            if out_ch <= 0 or k_w <= 0 or size % (out_ch * k_w * k_h):
                raise NcnnFormatError(f"{source}: {layer.name} weight_data_size {size} is not "
                                      f"num_output {out_ch} x {k_h}x{k_w} x channels.")
            in_ch = size // (out_ch * k_w * k_h)
            weight = cursor.tagged(size, f"{layer.name} weights").reshape(out_ch, in_ch, k_h, k_w)
            layer.weights = {"weight": weight}
            if int(layer.get(5, 0)):
                layer.weights["bias"] = cursor.fp32(out_ch, f"{layer.name} bias")
        elif layer.type == "PReLU":
            layer.weights = {"slope": cursor.fp32(int(layer.get(0, 1)), f"{layer.name} slopes")}
        elif layer.type not in WEIGHTLESS:
            raise NcnnFormatError(f"{source}: layer {layer.name} has type {layer.type}, which this reader "
                                  f"does not know (known: Convolution, PReLU, {', '.join(sorted(WEIGHTLESS))}).")
    if cursor.pos != len(data):
        raise NcnnFormatError(f"{source}: {len(data) - cursor.pos} bytes left after the last layer "
                              f"(read {cursor.pos} of {len(data)}); the .bin does not match the .param.")
    return layers


def load_ncnn(param_text: str, bin_data: bytes, name: str = "model") -> list[NcnnLayer]:
    """Parse a ``.param`` and read its ``.bin``: the layers with their weights."""
    return read_bin(parse_param(param_text, f"{name}.param"), bin_data, f"{name}.bin")
