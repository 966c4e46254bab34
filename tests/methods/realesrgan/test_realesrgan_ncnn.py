"""The ncnn reader (vsrkit/weights/ncnn.py) and the ncnn -> PyTorch conversion (convert.py), offline:
files written by the test's own writer, graphs evaluated by the test's own interpreter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from realesrgan_helpers import NcnnBuilder, random_state, rrdb_ncnn, run_ncnn, srvgg_ncnn

from vsrkit.errors import WeightsError
from vsrkit.methods.realesrgan.convert import MODELS, build_model, convert_ncnn_files, ncnn_to_state_dict
from vsrkit.methods.realesrgan.model import SRVGGNetCompact
from vsrkit.weights.ncnn import NcnnFormatError, load_ncnn, parse_param, read_bin


def _conv_files(weight: np.ndarray, fp16: bool = True, bias=True) -> tuple[str, bytes]:
    b = NcnnBuilder(fp16)
    b.layer("Input", "in", [], ["data"])
    b.conv("conv", "data", "c", weight, np.arange(weight.shape[0], dtype=np.float32) + 0.5)
    b.prelu("act", "c", "output", np.array([0.25] * weight.shape[0], np.float32))
    param, data = b.files()
    return param.decode(), data


def test_param_parser_reads_types_blobs_and_array_keys():
    text = ("7767517\n2 3\nInput in 0 1 data\n"
            "Convolution Conv_1 1 1 data out 0=32 1=3 4=1 5=1 6=18432 9=2 -23310=1,2.000000e-01\n")
    layers = parse_param(text)
    assert [(layer.type, layer.name, layer.bottoms, layer.tops) for layer in layers] == [
        ("Input", "in", [], ["data"]), ("Convolution", "Conv_1", ["data"], ["out"])]
    assert layers[1].params == {0: 32, 1: 3, 4: 1, 5: 1, 6: 18432, 9: 2, 10: [0.2]}
    assert isinstance(layers[1].params[0], int) and isinstance(layers[1].params[10][0], float)


@pytest.mark.parametrize("fp16", [True, False])
def test_bin_reader_round_trips_fp16_and_fp32_weights_with_padding(fp16):
    # 3 x 1 x 1 x 1 = 3 fp16 weights = 6 bytes: 2 bytes of padding before the bias.
    weight = np.array([1.5, -2.25, 0.125], np.float32).reshape(3, 1, 1, 1)
    param, data = _conv_files(weight, fp16)
    assert len(data) == 4 + (8 if fp16 else 12) + 12 + 12
    conv, act = [layer for layer in load_ncnn(param, data) if layer.weights]
    np.testing.assert_array_equal(conv.weights["weight"], weight)
    np.testing.assert_array_equal(conv.weights["bias"], [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(act.weights["slope"], [0.25, 0.25, 0.25])


@pytest.mark.parametrize("damage,message", [
    (lambda p, d: (p, d + b"\0\0\0\0"), "4 bytes left"),
    (lambda p, d: (p, d[:-4]), "ends at byte"),
    (lambda p, d: (p.replace("PReLU", "ReLU"), d), "type ReLU"),
    (lambda p, d: (p.replace("7767517", "1234"), d), "not an ncnn param file"),
    (lambda p, d: (p.replace("3 ", "4 ", 1), d), "header says 4 layers"),
    (lambda p, d: (p, (0x000D4B38).to_bytes(4, "little") + d[4:]), "int8"),
])
def test_reader_rejects_files_it_cannot_read_exactly(damage, message):
    param, data = _conv_files(np.ones((2, 3, 3, 3), np.float32))
    param, data = damage(param, data)
    with pytest.raises(NcnnFormatError, match=message):
        read_bin(parse_param(param), data)


@pytest.mark.parametrize("name", ["animevideov3", "x4plus-anime"])
def test_conversion_matches_an_independent_interpreter_of_the_graph(name):
    net = build_model(name).eval()
    state = random_state(net, seed=1)
    sizes = MODELS[name].kwargs
    param, data = (srvgg_ncnn(state, sizes["num_conv"]) if MODELS[name].arch == "srvgg"
                   else rrdb_ncnn(state, sizes["num_block"]))
    converted = convert_ncnn_files(name, [param, data])
    assert converted.keys() == state.keys()
    for key in state:
        torch.testing.assert_close(converted[key], state[key], rtol=0, atol=0)
    net.load_state_dict(converted)
    x = torch.rand(1, 3, 7, 9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = run_ncnn(param, data, x)
        got = net(x)
    assert tuple(got.shape) == (1, 3, 28, 36)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_conversion_names_the_layer_that_does_not_fit():
    net = build_model("animevideov3")
    state = random_state(net)
    param, data = srvgg_ncnn(state, 16)
    layers = load_ncnn(param.decode(), data)
    with pytest.raises(WeightsError, match="x4plus-anime"):
        ncnn_to_state_dict("x4plus-anime", layers)  # an SRVGG graph is not an RRDBNet
    # The same layers with 32 features instead of 64.
    narrow_param, narrow_bin = srvgg_ncnn(random_state(SRVGGNetCompact(num_feat=32, num_conv=16)), 16)
    with pytest.raises(WeightsError, match=r"Conv_0 .*weight shape \(32, 3, 3, 3\), expected \(64, 3, 3, 3\)"):
        ncnn_to_state_dict("animevideov3", load_ncnn(narrow_param.decode(), narrow_bin))
    # One convolution of the right size but with a fused LeakyReLU the architecture does not have.
    param_text = param.decode().replace("6=36864", "6=36864 9=2 -23310=1,2.000000e-01", 1)
    with pytest.raises(WeightsError, match=r"Conv_2 .*fused activation 0.2"):
        ncnn_to_state_dict("animevideov3", load_ncnn(param_text, data))
    # A wrong residual coefficient in an RRDB graph.
    anime = build_model("x4plus-anime")
    rparam, rdata = rrdb_ncnn(random_state(anime), 6)
    bad = rparam.decode().replace("2,2.000000e-01,1.000000e+00", "2,3.000000e-01,1.000000e+00", 1)
    with pytest.raises(WeightsError, match=r"out \* 0.2 \+ x"):
        ncnn_to_state_dict("x4plus-anime", load_ncnn(bad, rdata))
