"""InfVSR training on the tiny preset: losses, DMD against DiffSynth's DMD2, groups, export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from infvsr_helpers import make_method, smooth_clip

from vsrkit.methods.infvsr.method import vsd_loss


def _batch(frames: int = 21, size: int = 32, scale: int = 4, step: int = 0) -> dict:
    hq = smooth_clip(frames, size, size)
    lq = F.avg_pool3d(hq, (1, scale, scale))
    return {"hq": hq, "lq": lq, "index": torch.tensor([3]), "step": step}


@pytest.fixture(scope="module")
def stage2():
    method = make_method(stage=2, train_frames=21, scene_detection=False)
    method.setup_training(torch.device("cpu"))
    return method


def test_stage_presets():
    from vsrkit.methods.infvsr.config import InfVSRConfig

    one, two = InfVSRConfig(stage=1), InfVSRConfig(stage=2)
    assert (one.train_frames, one.train_size, one.dmd_weight) == (21, [256, 256], 0.0)
    assert (two.train_frames, two.train_size, two.dmd_weight) == (45, [128, 128], 1.0)
    assert InfVSRConfig(stage=2, dmd_weight=0.5).dmd_weight == 0.5


@pytest.mark.slow  # importing diffsynth.diffusion takes ~15 s
def test_vsd_loss_equals_diffsynth_dmd2():
    dmd2 = pytest.importorskip("diffsynth.diffusion.dmd2")
    g = torch.Generator().manual_seed(0)
    gen = torch.randn(2, 16, 3, 4, 4, generator=g, requires_grad=True)
    real, fake = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    ours = vsd_loss(gen, real, fake)
    theirs = dmd2._variational_score_distillation_loss(gen, real, fake)
    torch.testing.assert_close(ours, theirs)
    (grad,) = torch.autograd.grad(ours, gen)
    # d/dx 0.5 mean((x - sg(x - g))^2) = g / numel, g = (fake - real) / (mean|x - real| + 1e-6) per sample.
    weight = 1 / ((gen - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True) + 1e-6)
    torch.testing.assert_close(grad, ((fake - real) * weight / gen.numel()).detach())


def test_groups_steps_and_what_each_trains(stage2):
    groups = stage2.optimizer_groups()
    assert [(g.name, g.every) for g in groups] == [("generator", 5), ("fake_score", 1)]
    gen_params, fake_params = groups[0].params, groups[1].params
    assert not {id(p) for p in gen_params} & {id(p) for p in fake_params}
    batch = _batch()
    for name, own, other in (("generator", gen_params, fake_params), ("fake_score", fake_params, gen_params)):
        for p in gen_params + fake_params:
            p.grad = None
        loss, logs = stage2.training_step(batch, name)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in other)
    assert set(logs) == {"fake_score_mse"}


def test_generator_losses_and_dmd_term(stage2):
    # The fake score starts as a copy of the real one (DMD term 0); move it away so the term counts.
    batch = _batch()
    weight = stage2._fake.proj_out.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    c = stage2.config
    c.mse_weight, c.frame_diff_weight, c.dmd_weight = 2.0, 0.5, 0.25  # not 1, so a dropped weight shows
    try:
        loss, logs = stage2.training_step(batch, "generator")
    finally:
        c.mse_weight, c.frame_diff_weight, c.dmd_weight = 1.0, 1.0, 1.0
        with torch.no_grad():
            weight.copy_(saved)
    assert set(logs) == {"pixel_mse", "frame_diff_l1", "dmd"}
    assert logs["dmd"] > 1e-3
    total = 2.0 * logs["pixel_mse"] + 0.5 * logs["frame_diff_l1"] + 0.25 * logs["dmd"]
    assert float(loss.detach()) == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_dmd_term_is_dmd2_at_a_shifted_noise_level(stage2, guidance):
    # Restated from the recipe (DMD2 / Self-Forcing): s ~ U[0.02, 0.98), Wan's shift 5,
    # x_t = (1 - sigma) x0 + sigma eps, real x0 with CFG between the prompts, fake x0, then DMD2.
    method = stage2
    if guidance != 1.0:
        method = make_method(stage=2, train_frames=21, scene_detection=False, dmd_guidance=guidance,
                             dmd_prompt="sharp, detailed", dmd_negative_prompt="blurry, noisy")
        method.setup_training(torch.device("cpu"))
    batch = _batch()
    weight = method._fake.proj_out.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    try:
        _, logs = method.training_step(batch, "generator")
        with torch.no_grad():
            z_lr, tokens = method._inputs(batch)
            x0 = method.generate(z_lr, tokens)
            g = method._generator(batch, 1)
            h, w = x0.shape[-2:]
            for edge in (h, w):  # the pixel crop's two draws come first
                torch.randint(0, edge - min(method.config.pixel_crop, edge) + 1, (), generator=g)
            s = 0.02 + 0.96 * torch.rand(1, generator=g, dtype=torch.float64)
            sigma = float(5 * s / (1 + 4 * s))
            eps = torch.randn(x0.shape, generator=g)
            x_t = (1 - sigma) * x0 + sigma * eps
            t = torch.tensor([sigma * 1000.0])

            def x0_of(model, prompt):
                v = model(hidden_states=x_t, timestep=t, encoder_hidden_states=prompt, return_dict=False)[0]
                return x_t - sigma * v.float()

            real = x0_of(method._real.transformer, method._prompt)
            if guidance != 1.0:
                assert not torch.equal(method._prompt, method._negative)
                neg = x0_of(method._real.transformer, method._negative)
                real = neg + guidance * (real - neg)
            fake = x0_of(method._fake, method._prompt)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert logs["dmd"] == pytest.approx(float(vsd_loss(x0, real, fake)), rel=1e-4)


def test_pixel_loss_compares_the_decoded_crop_with_the_matching_hr_crop(stage2):
    # Draw the crop with the same generator, decode it by hand and compare with the HR pixels at 8x.
    c = stage2.config
    x0 = torch.randn(1, 16, 6, 4, 4, generator=torch.Generator().manual_seed(1))
    hq = _batch()["hq"]
    c.pixel_crop = 2
    try:
        gen = torch.Generator().manual_seed(5)
        loss, logs = stage2._pixel_losses(x0, hq, gen)
        gen = torch.Generator().manual_seed(5)
        y = int(torch.randint(0, 3, (), generator=gen))
        x = int(torch.randint(0, 3, (), generator=gen))
    finally:
        c.pixel_crop = 32
    with torch.no_grad():
        video = stage2.backbone.vae.decode(x0[..., y:y + 2, x:x + 2])
    pred = (video * 0.5 + 0.5).clamp(0, 1)
    gt = (hq[:, :, :, 8 * y:8 * y + 16, 8 * x:8 * x + 16] * 0.5 + 0.5).clamp(0, 1)
    assert logs["pixel_mse"] == pytest.approx(float(F.mse_loss(pred, gt)), rel=1e-5)
    diff = F.l1_loss(pred[:, :, 1:] - pred[:, :, :-1], gt[:, :, 1:] - gt[:, :, :-1])
    assert logs["frame_diff_l1"] == pytest.approx(float(diff), rel=1e-5)


def test_fake_score_regresses_the_generators_output(stage2, monkeypatch):
    # The fake-score target is sg(x0) of the generator (DiffSynth DMD2), not the HR latent.
    batch = _batch()
    seen = {}
    original = stage2._score_x0

    def spy(model, x_t, timestep, sigma, prompt):
        out = original(model, x_t, timestep, sigma, prompt)
        seen["pred"] = out
        return out

    monkeypatch.setattr(stage2, "_score_x0", spy)
    loss, _ = stage2.training_step(batch, "fake_score")
    with torch.no_grad():
        z_lr, tokens = stage2._inputs(batch)
        x0 = stage2.generate(z_lr, tokens)
    assert float(loss.detach()) == pytest.approx(float(F.mse_loss(seen["pred"], x0)), rel=1e-5)


def test_export_writes_the_release_format(stage2, tmp_path):
    from vsrkit.backbones.convert import is_wan_original

    stage2.export(str(tmp_path))
    sd = torch.load(tmp_path / "InfVSR.ckpt", weights_only=True)
    assert is_wan_original(sd.keys())
    assert tuple(sd["text_embedding.0.weight"].shape)[1] == 512
    state = stage2.state_dict()
    assert any(k.startswith("fake_score.") for k in state)
    stage2.load_state_dict(state)
