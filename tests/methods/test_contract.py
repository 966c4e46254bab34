"""One contract for every registered method (parametrized over METHODS.names(), never a hand list)."""

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from vsrkit.commands.hydra_app import store_schemas
from vsrkit.engine.build import build_method
from vsrkit.methods.protocol import WindowContext
from vsrkit.plugins import setup_registries
from vsrkit.registry import METHODS

setup_registries()
store_schemas()


def _build(name: str, scale: int = 2):
    GlobalHydra.instance().clear()
    # Methods with trained weights of their own (no backbone) build randomly initialised, as tiny presets do.
    fields = getattr(METHODS.get_config(name), "__dataclass_fields__", {})
    random = ["method.random_weights=true"] if "random_weights" in fields else []
    with initialize_config_module(config_module="vsrkit.conf", version_base="1.3"):
        cfg = compose(config_name="infer", overrides=[f"method={name}", "input=a", "output=b", *random],
                      return_hydra_config=True)
        backbone = cfg.hydra.runtime.choices.backbone
        if backbone != "none":  # CPU tests use each real preset's tiny twin
            cfg = compose(config_name="infer", overrides=[f"method={name}", f"backbone={backbone}-tiny", "input=a",
                                                          "output=b", *random], return_hydra_config=True)
            backbone = f"{backbone}-tiny"
    method = build_method(cfg, name, None if backbone == "none" else backbone, scale)
    method.load(torch.device("cpu"), torch.float32)
    return method


def _window(spec, frames: int = 5, size: int = 16):
    t = spec.padded_length(frames)
    m = spec.spatial_multiple
    h = w = -(-size // m) * m
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("name", METHODS.names())
def test_method_window_contract(name):
    method = _build(name)
    spec = method.window_spec()
    assert spec.scale == 2
    lq = _window(spec)
    outs = []
    for _ in range(2):
        context = WindowContext(frame_start=0, num_valid=lq.shape[2], generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            outs.append(method.upscale(lq.clone(), context))
    out = outs[0]
    b, c, t, h, w = lq.shape
    assert tuple(out.shape) == (b, c, t, h * 2, w * 2)
    assert out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert torch.equal(outs[0], outs[1]), "same seed, same input, different output"


@pytest.mark.parametrize("name", [n for n in METHODS.names() if callable(getattr(METHODS.get(n), "training_step", None))])
def test_trainable_state_round_trips_bit_exactly(name):
    method = _build(name)
    method.setup_training(torch.device("cpu"))
    state = {k: v.clone() for k, v in method.state_dict().items()}
    assert state, "a trainable method must expose what it trains"
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(1.0)
    method.load_state_dict(state)
    after = method.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)


# --- streaming methods (vsrkit.methods.protocol.StreamingMethod) -----------------------------------

from vsrkit.engine.streaming import is_streaming  # noqa: E402
from vsrkit.methods.protocol import FrameStream, StreamContext  # noqa: E402


def _streaming_names() -> list[str]:
    """Registered methods whose class has ``open_stream`` (checked on the class: nothing is built)."""
    return [n for n in METHODS.names() if callable(getattr(METHODS.get(n), "open_stream", None))]


def _run(stream, lq: torch.Tensor, pieces: list[int]) -> tuple[torch.Tensor, list[int]]:
    outs, counts, start = [], [], 0
    for n in pieces:
        out = stream.push(lq[:, :, start:start + n])
        outs.append(out)
        counts.append(out.shape[2])
        start += n
    outs.append(stream.flush())
    return torch.cat(outs, dim=2), counts


def test_some_method_streams():
    assert "infvsr" in _streaming_names()  # keeps the streaming contract below from passing vacuously


@pytest.mark.parametrize("name", _streaming_names())
def test_streaming_contract(name):
    method = _build(name)
    assert is_streaming(method)
    spec = method.window_spec()
    assert spec.scale == 2
    m = spec.spatial_multiple
    h = w = -(-12 // m) * m
    lq = torch.rand(1, 3, 23, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pieces = [1, 7, 4, 11]
    stream = method.open_stream(StreamContext(num_frames=23, generator=torch.Generator().manual_seed(7)))
    assert isinstance(stream, FrameStream)
    with torch.no_grad():
        out, counts = _run(stream, lq, pieces)
    assert tuple(out.shape) == (1, 3, 23, h * 2, w * 2)
    assert out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert all(c <= sum(pieces[:i + 1]) for i, c in enumerate(counts))  # never ahead of its input
    # reset() forgets the clip: the same frames give the same output; so does a fresh stream with other pieces.
    with torch.no_grad():
        stream.push(lq[:, :, 5:16])  # half a clip, then forgotten
        stream.reset()
        again, _ = _run(stream, lq, pieces)
        fresh, _ = _run(method.open_stream(StreamContext(generator=torch.Generator().manual_seed(7))), lq, [23])
    assert torch.equal(out, again), "reset() left state behind"
    torch.testing.assert_close(out, fresh, rtol=0, atol=1e-5)
