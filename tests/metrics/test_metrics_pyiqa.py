"""pyiqa adapter: optional import, local weights only (never a download), NIQE oracle."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from vsrkit.errors import UserError, WeightsError
from vsrkit.metrics.aggregate import build_metric
from vsrkit.metrics.pyiqa_adapter import expected_files, missing_message

HAS_PYIQA = importlib.util.find_spec("pyiqa") is not None
needs_pyiqa = pytest.mark.skipif(not HAS_PYIQA, reason="pyiqa (optional extra vsrkit[metrics]) not installed")


@pytest.mark.parametrize("name", ["lpips", "dists", "niqe", "musiq", "clipiqa", "pyiqa"])
def test_without_pyiqa_the_error_names_the_extra(monkeypatch, name):
    monkeypatch.setattr("importlib.util.find_spec", lambda mod, *a, **k: None)
    config = {"name": "lpips"} if name == "pyiqa" else None
    with pytest.raises(UserError, match=rf"metric `{name}` needs pyiqa: pip install 'vsrkit\[metrics\]' "
                                        r"\(non-commercial licence\)"):
        build_metric(name, config)


def test_expected_files_follow_pyiqa_s_cache_layout(tmp_path):
    files = expected_files("lpips", "", str(tmp_path))
    assert files == [(tmp_path / "hub" / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth", False),
                     (tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth", False)]
    mine = tmp_path / "my_lpips.pth"
    assert expected_files("lpips", str(mine), str(tmp_path))[0] == (mine, True)
    assert expected_files("clipiqa", str(mine), "")[0] == (mine, True)
    assert expected_files("niqe", "", str(tmp_path)) == [(tmp_path / "hub" / "pyiqa" / "niqe_modelparameters.mat",
                                                          False)]
    message = missing_message("musiq", tmp_path / "hub" / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth")
    assert "$TORCH_HOME/hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth" in message
    assert "metric.musiq.pretrained_model_path" in message


@needs_pyiqa
@pytest.mark.parametrize("name, basename", [
    ("lpips", "LPIPS_v0.1_alex-df73285e.pth"),
    ("dists", "DISTS_weights-f5e65c96.pth"),
    ("niqe", "niqe_modelparameters.mat"),
    ("musiq", "musiq_koniq_ckpt-e95806b9.pth"),
    ("clipiqa", "RN50.pt"),
])
def test_missing_weights_name_the_file_pyiqa_expects(tmp_path, name, basename):
    with pytest.raises(WeightsError, match=rf"metric `{name}` needs the weights file `{tmp_path}.*/{basename}`"):
        build_metric(name, {"torch_home": str(tmp_path)})
    with pytest.raises(WeightsError, match=rf"`metric.{name}.pretrained_model_path` names"):
        build_metric(name, {"pretrained_model_path": str(tmp_path / "absent.pth")})


@needs_pyiqa
def test_an_unlisted_pyiqa_metric_is_stopped_before_it_downloads(tmp_path):
    # brisque's SVM file is not in vsrkit's table: the download guard turns pyiqa's attempt into an error.
    hub_before = torch.hub.get_dir()
    with pytest.raises(WeightsError, match=r"brisque_svm_weights.pth"):
        build_metric("pyiqa", {"name": "brisque", "torch_home": str(tmp_path)})
    assert not any(tmp_path.rglob("*.pth"))
    assert torch.hub.get_dir() == hub_before  # the guard puts torch.hub back
    with pytest.raises(UserError, match=r"'lpipz' is not a pyiqa metric. Did you mean"):
        build_metric("pyiqa", {"name": "lpipz"})
    with pytest.raises(UserError, match="needs `name`"):
        build_metric("pyiqa")


@needs_pyiqa
def test_generic_entry_runs_a_weight_free_pyiqa_metric_per_frame():
    metric = build_metric("pyiqa", {"name": "psnr", "batch_frames": 2})
    assert (metric.higher_is_better, metric.needs_gt, metric.temporal) == (True, True, False)
    gt = torch.rand(3, 3, 16, 16)
    pred = (gt + 0.1).clamp(0, 1)
    scores = metric(pred, gt)
    assert scores.shape == (3,)
    assert torch.isfinite(scores).all()


@needs_pyiqa
def test_niqe_with_basicsr_pristine_params_on_baboon(real_data):
    """BasicSR niqe.py: MATLAB R2021a 5.72957338, BasicSR 5.7295763 (Y of YCbCr); pyiqa's port: 5.7300."""
    from PIL import Image

    params = real_data / "XPixelGroup_BasicSR" / "niqe_pris_params.npz"
    metric = build_metric("niqe", {"pretrained_model_path": str(params), "color_space": "ycbcr"})
    assert (metric.higher_is_better, metric.needs_gt) == (False, False)
    baboon = np.array(Image.open(real_data / "XPixelGroup_BasicSR" / "baboon.png").convert("RGB"))
    score = metric(torch.from_numpy(baboon).permute(2, 0, 1)[None].float() / 255)
    assert score.shape == (1,)
    assert score.item() == pytest.approx(5.7296, abs=1e-3)
