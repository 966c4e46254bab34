import numpy as np
import pytest
import torch
from PIL import Image

from vsrkit.engine.inference import frames_to_model, model_to_frames
from vsrkit.methods.baselines.config import BicubicConfig, LanczosConfig
from vsrkit.methods.baselines.method import InterpolationMethod, resize_matrix
from vsrkit.methods.protocol import WindowContext


@pytest.mark.parametrize("config,pil_filter", [(BicubicConfig(), Image.BICUBIC), (LanczosConfig(), Image.LANCZOS)])
def test_matches_pil_on_a_real_frame(real_data, config, pil_filter):
    lr = np.asarray(Image.open(real_data / "yhjo09_VSR-DUF_Vid4/calendar/LR_BDx4/001.png").convert("RGB"))
    method = InterpolationMethod(config, scale=4)
    out = model_to_frames(method.upscale(frames_to_model(lr[None]), WindowContext()))[0]
    ref = np.asarray(Image.fromarray(lr).resize((lr.shape[1] * 4, lr.shape[0] * 4), pil_filter))
    assert out.shape == (576, 720, 3)
    diff = np.abs(out.astype(int) - ref.astype(int))
    # PIL rounds and clips its horizontal pass to 8 bits before the vertical one; we do not,
    # which matters most where Lanczos overshoots.
    assert diff.max() <= 4 and diff.mean() < 0.3


def test_rows_of_resize_matrix_sum_to_one():
    for n_in, n_out in [(7, 28), (180, 720), (30, 7)]:
        m = resize_matrix(n_in, n_out, "cubic", -0.5)
        assert m.shape == (n_out, n_in)
        assert torch.allclose(m.sum(1), torch.ones(n_out, dtype=torch.float64))


def test_baseline_refuses_a_backbone():
    with pytest.raises(ValueError, match="take no backbone"):
        InterpolationMethod(BicubicConfig(), backbone=object(), scale=4)


def test_config_validation():
    with pytest.raises(ValueError, match=r"`a` must be in \[-1, 0\]. Got 1.0."):
        BicubicConfig(a=1.0)
