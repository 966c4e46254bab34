"""PS-SR training on the tiny Wan preset (CPU): every loss term against an independent
recomputation on a fixed batch (diffusers modules called directly, the release's formulas written
out), the detached draft chain, what trains, checkpoints and export.

The random draws of a step come from one generator seeded with ``sample_seed(seed, step,
indices)``, in this order: the LR upsampling mode (``train_upscale_mode=random`` only), the pixel
crop (when a pixel weight is > 0), the VSD timestep (redrawn outside [20, 980]) and noise, then
the fake score's timestep and noise. The tests replay that order.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from vsrkit.backbones import BackboneConfig, build_backbone
from vsrkit.backbones.runtime import deterministic_init_
from vsrkit.errors import UserError
from vsrkit.methods.protocol import WindowContext
from vsrkit.methods.pssr.config import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT, PSSRConfig
from vsrkit.methods.pssr.method import PSSRMethod, fake_score_weights, sample_seed, vsd_loss
from vsrkit.methods.pssr.model import LPIPSVGG

SIX = BackboneConfig(preset="wan2.1-t2v-1.3b-tiny", family="wan", dtype="fp32",
                     transformer_overrides={"num_layers": 6})
SIGMA_700, SIGMA_600, SIGMA_500, SIGMA_400 = 0.6998239436619718, 0.6003118503118503, 0.500599520383693, 0.40081521739130443


def _trainer(**overrides) -> PSSRMethod:
    values = dict(train_frames=5, train_size=[32, 32], train_upscale_mode="bilinear")
    values.update(overrides)
    method = PSSRMethod(PSSRConfig(**values), backbone=SIX, scale=4)
    method.setup_training(torch.device("cpu"))
    return method


def _batch(step=0, seed=0, index=4):
    g = torch.Generator().manual_seed(seed)
    return {"hq": torch.rand(1, 3, 5, 32, 32, generator=g) * 2 - 1, "lq": torch.rand(1, 3, 5, 8, 8, generator=g) * 2 - 1,
            "prompt": [""], "is_image": torch.tensor([False]), "index": torch.tensor([index]), "step": step}


@pytest.fixture(scope="module")
def reference():
    """The same tiny Wan built independently (deterministic init), its DiT unmodified (16 channels)."""
    return build_backbone(SIX)


def _widened(reference):
    """The reference DiT with the patch embedding widened by hand (zeros on channels 16-31)."""
    import copy

    t = copy.deepcopy(reference.transformer)
    old = t.patch_embedding
    new = torch.nn.Conv3d(32, old.out_channels, old.kernel_size, old.stride)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :16] = old.weight
        new.bias.copy_(old.bias)
    t.patch_embedding = new
    return t


def _run(transformer, latents, t, emb):
    ts = torch.full((latents.shape[0],), float(t))
    return transformer(hidden_states=latents, timestep=ts, encoder_hidden_states=emb, return_dict=False)[0]


def _latents(reference, batch):
    up = F.interpolate(batch["lq"][0].permute(1, 0, 2, 3), size=(32, 32), mode="bilinear", align_corners=False)
    return reference.vae.encode(up.permute(1, 0, 2, 3)[None].clamp(-1, 1)), reference.vae.encode(batch["hq"])


def _decode(reference, z):
    return reference.vae.model.decode(reference.vae.denormalize(z)).sample


def _release_vsd(x0, real_x0, fake_x0):
    # Wan_SR/pipelines/wan_sr_reg.py training_loss_reg, line for line.
    weighting_factor = torch.abs(x0 - real_x0).mean(dim=[1, 2, 3, 4], keepdim=True)
    grad = (fake_x0 - real_x0) / weighting_factor
    return F.mse_loss(x0, (x0 - grad).detach())


def test_vsd_loss_is_the_release_formula():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 5, 6, generator=g).requires_grad_(True)
    real, fake = torch.randn(2, 4, 3, 5, 6, generator=g), torch.randn(2, 4, 3, 5, 6, generator=g)
    ours = vsd_loss(x0, real, fake)
    theirs = _release_vsd(x0, real, fake)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
    (grad_ours,) = torch.autograd.grad(ours, x0)
    (grad_theirs,) = torch.autograd.grad(theirs, x0)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-4, atol=1e-9)


def test_fake_score_weights_are_diffsynths_bsmntw():
    # Wan_SR/schedulers/flow_match.py set_timesteps(1000, training=True) with shift 5, in float32.
    sigmas = torch.linspace(1.0, 0.0, 1001)[:-1]
    sigmas = 5 * sigmas / (1 + 4 * sigmas)
    x = sigmas * 1000
    y = torch.exp(-2 * ((x - 1000 / 2) / 1000) ** 2)
    y_shifted = y - y.min()
    expected = y_shifted * (1000 / y_shifted.sum())
    ours = fake_score_weights(x.double())
    torch.testing.assert_close(ours.float(), expected, rtol=1e-5, atol=1e-6)


def test_generator_latent_loss(reference):
    method = _trainer(pixel_weight=0, lpips_weight=0, vsd_weight=0)
    assert [g.name for g in method.optimizer_groups()] == ["generator"]
    batch = _batch()
    loss, logs = method.training_step(batch, "generator")
    z_lr, z_hq = _latents(reference, batch)
    with torch.no_grad():
        v = _run(_widened(reference), torch.cat([z_lr, z_lr], 1), 700.0, reference.prompt_embeds(DEFAULT_PROMPT))
    expected = F.mse_loss(z_lr - SIGMA_700 * v, z_hq)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    assert logs["latent_mse"] == pytest.approx(float(expected), rel=1e-5)


def test_generator_pixel_and_lpips_losses(reference):
    # pixel_weight 3 (not the release's 1) so a dropped weight shows.
    method = _trainer(latent_weight=0, vsd_weight=0, pixel_crop=100, lpips_weight=2.0, pixel_weight=3.0)
    batch = _batch(seed=1)
    loss, logs = method.training_step(batch, "generator")
    z_lr, _ = _latents(reference, batch)
    net = deterministic_init_(LPIPSVGG(), seed=0).eval()
    with torch.no_grad():
        v = _run(_widened(reference), torch.cat([z_lr, z_lr], 1), 700.0, reference.prompt_embeds(DEFAULT_PROMPT))
        video = _decode(reference, z_lr - SIGMA_700 * v)
        mse = F.mse_loss(video, batch["hq"])
        flat = [x[0].permute(1, 0, 2, 3) for x in (video, batch["hq"])]
        perceptual = net(*flat).mean()
    torch.testing.assert_close(loss, 3.0 * mse + 2.0 * perceptual, rtol=1e-4, atol=1e-6)
    assert logs["pixel_mse"] == pytest.approx(float(mse), rel=1e-4)


def _vsd_draws(batch, seed=0):
    g = torch.Generator().manual_seed(sample_seed(seed, batch["step"], *batch["index"].tolist()))
    sigmas = torch.linspace(1.0, 0.0, 1001, dtype=torch.float64)[:-1]
    sigmas = 5 * sigmas / (1 + 4 * sigmas)
    timesteps = sigmas * 1000

    def draw(low=-1.0, high=1001.0):
        while True:
            t = float(torch.tensor(float(timesteps[int(torch.randint(0, 1000, (), generator=g))])).bfloat16())
            if low <= t <= high:
                return t, float(sigmas[(timesteps - t).abs().argmin()])
    return g, draw


def test_vsd_against_the_release_with_cfg(reference):
    # vsd_weight 0.5 (not the release's 1) so a dropped weight shows.
    method = _trainer(latent_weight=0, pixel_weight=0, lpips_weight=0, vsd_weight=0.5)
    batch = _batch(seed=2)
    loss, logs = method.training_step(batch, "generator")
    g, draw = _vsd_draws(batch)
    t, sigma = draw(20.0, 980.0)
    z_lr, _ = _latents(reference, batch)
    emb, neg = reference.prompt_embeds(DEFAULT_PROMPT), reference.prompt_embeds(DEFAULT_NEGATIVE_PROMPT)
    with torch.no_grad():
        x0 = z_lr - SIGMA_700 * _run(_widened(reference), torch.cat([z_lr, z_lr], 1), 700.0, emb)
        eps = torch.randn(x0.shape, generator=g)
        x_t = (1 - sigma) * x0 + sigma * eps
        stock = reference.transformer  # fake score at init (LoRA B = 0) and real score: the stock DiT
        v_fake = _run(stock, x_t, t, emb)
        v_pos, v_neg = _run(stock, x_t, t, emb), _run(stock, x_t, t, neg)
        v_real = v_neg + 5.0 * (v_pos - v_neg)
    expected = _release_vsd(x0, x_t - sigma * v_real, x_t - sigma * v_fake)
    torch.testing.assert_close(loss, 0.5 * expected, rtol=1e-4, atol=1e-7)
    assert logs["vsd"] == pytest.approx(float(expected), rel=1e-4)
    assert 20 <= t <= 980 and logs["vsd_t"] == t

    # The fake-score group trains on the generator's (detached) prediction of the same batch.
    loss_f, logs_f = method.training_step(batch, "fake_score")
    t_f, sigma_f = draw()
    eps_f = torch.randn(x0.shape, generator=g)
    x_t = (1 - sigma_f) * x0 + sigma_f * eps_f
    with torch.no_grad():
        v = _run(reference.transformer, x_t, t_f, emb)
    timesteps = torch.tensor([reference.timesteps.tolist()], dtype=torch.float64)[0]
    weight = fake_score_weights(timesteps)[(timesteps - t_f).abs().argmin()]
    torch.testing.assert_close(loss_f, F.mse_loss(v, eps_f - x0) * float(weight), rtol=1e-4, atol=1e-7)
    assert logs_f["t"] == t_f


def test_loss_weights_default_to_the_released_recipe():
    # train_base.sh / the parser (research/pssr.md §5): alpha_l2 1, alpha_pixel_l2 1,
    # alpha_pixel_lpips 2, alpha_reg 1, --cfg_scale 5, LoRA rank 32, a 20-latent (160 px) crop.
    c = PSSRConfig()
    assert (c.latent_weight, c.pixel_weight, c.lpips_weight, c.vsd_weight, c.vsd_cfg) == (1.0, 1.0, 2.0, 1.0, 5.0)
    assert c.lora_rank == 32 and c.pixel_crop == 20  # latent pixels


def test_vsd_timesteps_stay_in_the_configured_range():
    method = _trainer(latent_weight=0, pixel_weight=0, lpips_weight=0, vsd_t_min=300, vsd_t_max=310)
    seen = [method.training_step(_batch(step=s), "generator")[1]["vsd_t"] for s in range(3)]
    assert all(300 <= t <= 310 for t in seen), seen


def test_base_stage_trains_only_its_adapters_patch_embeddings_and_heads():
    method = _trainer()
    groups = method.optimizer_groups()
    assert [g.name for g in groups] == ["generator", "fake_score"]
    assert (groups[0].lr, groups[0].betas, groups[0].weight_decay, groups[0].max_grad_norm) == \
        (5e-5, (0.9, 0.999), 0.01, 1.0)
    names = list(method.state_dict())
    # LoRA on q, k, v, o of both attentions and ffn.0 / ffn.2 of all 6 blocks, plus patch embedding and head.
    assert sum(1 for n in names if n.startswith("generator.") and n.endswith("lora_A.weight")) == 6 * 10
    assert {n for n in names if "lora" not in n} == {
        f"{r}.{m}.{p}" for r in ("generator", "fake_score") for m in ("patch_embedding", "proj_out")
        for p in ("weight", "bias")}
    assert method.state_dict()["generator.patch_embedding.weight"].shape[1] == 32
    assert method.state_dict()["fake_score.patch_embedding.weight"].shape[1] == 16
    frozen = {k: v.clone() for k, v in method.backbone.transformer.state_dict().items() if "lora_" not in k}
    vae = {k: v.clone() for k, v in method.backbone.vae.model.state_dict().items()}
    before = {k: v.clone() for k, v in method.state_dict().items()}
    for group in groups:
        optimizer = torch.optim.SGD(group.params, lr=0.5)
        loss, _ = method.training_step(_batch(), group.name)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = method.state_dict()
    assert all(torch.equal(v, method.backbone.transformer.state_dict()[k]) for k, v in frozen.items())
    assert all(torch.equal(v, method.backbone.vae.model.state_dict()[k]) for k, v in vae.items())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("generator.") and "lora_B" in k for k in changed)
    assert any(k.startswith("fake_score.") and "lora_B" in k for k in changed)
    assert "generator.patch_embedding.weight" in changed and "fake_score.proj_out.weight" in changed


def test_draft_chain_is_detached_and_runs_the_release_timesteps(reference, monkeypatch):
    method = _trainer(stage="draft", pixel_weight=0, lpips_weight=0)
    groups = method.optimizer_groups()
    assert [(g.name, g.repeat) for g in groups] == [("draft", 3)]
    assert len(groups[0].params) == len(list(method.draft.parameters()))
    seen = []
    original = method.draft_velocity

    def record(latents, timestep, embeds, features, draft=None):
        v = original(latents, timestep, embeds, features, draft)
        seen.append((latents.clone(), latents.requires_grad, timestep, v.detach().clone()))
        return v

    monkeypatch.setattr(method, "draft_velocity", record)
    batch = _batch(seed=3)
    losses = [method.training_step({**batch, "repeat": r}, "draft")[0] for r in range(3)]
    z_lr, z_hq = _latents(reference, batch)
    with torch.no_grad():
        v_base = _run(_widened(reference), torch.cat([z_lr, z_lr], 1), 700.0, reference.prompt_embeds(DEFAULT_PROMPT))
    z = z_lr - (SIGMA_700 - SIGMA_600) * v_base
    sigmas = [SIGMA_600, SIGMA_500, SIGMA_400, 0.0049800796812749]
    for i, (latents, requires_grad, t, v) in enumerate(seen):
        assert t == [600.0, 500.0, 400.0][i] and not requires_grad
        torch.testing.assert_close(latents, torch.cat([z, z_lr], 1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(losses[i], F.mse_loss(z - sigmas[i] * v, z_hq), rtol=1e-5, atol=1e-7)
        assert losses[i].requires_grad
        z = z - (sigmas[i] - sigmas[i + 1]) * v
    # Only the draft trains: a step leaves the frozen base untouched.
    frozen = {k: v.clone() for k, v in method.backbone.transformer.state_dict().items()}
    losses[2].backward()
    torch.optim.SGD(groups[0].params, lr=0.5).step()
    assert all(torch.equal(v, method.backbone.transformer.state_dict()[k]) for k, v in frozen.items())


def test_checkpoint_round_trip_and_export_load_in_inference(tmp_path):
    method = _trainer(pixel_weight=0, lpips_weight=0)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = {k: v.clone() for k, v in method.state_dict().items()}
    method.export(str(tmp_path / "base"))
    other = _trainer(pixel_weight=0, lpips_weight=0)
    other.load_state_dict(state)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())
    from safetensors.torch import load_file

    exported = load_file(str(tmp_path / "base" / "base.safetensors"))
    assert "blocks.0.self_attn.q.lora_A.default.weight" in exported and "head.head.weight" in exported
    assert "blocks.5.ffn.0.lora_B.default.weight" in exported and "patch_embedding.weight" in exported
    assert (tmp_path / "base" / "reg.safetensors").is_file()
    # Inference with the exported base computes what the trained generator computes.
    infer = PSSRMethod(PSSRConfig(base_weights=str(tmp_path / "base" / "base.safetensors")), backbone=SIX, scale=4)
    infer.load(torch.device("cpu"), torch.float32)
    latents = torch.randn(1, 32, 2, 4, 4)
    emb = infer.backbone.prompt_embeds(DEFAULT_PROMPT)
    with torch.no_grad(), method._as("generator"):
        trained = method._dit(latents, 700.0, emb)
    torch.testing.assert_close(infer.backbone.predict(latents, 700.0, emb), trained, rtol=1e-4, atol=1e-5)

    draft = _trainer(stage="draft", pixel_weight=0, lpips_weight=0, base_weights=str(tmp_path / "base" / "base.safetensors"))
    with torch.no_grad():
        for p in draft.draft.parameters():
            p.add_(0.01)
    draft.export(str(tmp_path / "draft"))
    names = list(load_file(str(tmp_path / "draft" / "draft.safetensors")))
    assert "fc_layers.1.weight" in names and "head.modulation" in names and "blocks.1.self_attn.o.weight" in names
    assert not any(re.match(r"blocks\.2\.", n) for n in names)  # 2 kept blocks of 6
    run = PSSRMethod(PSSRConfig(base_weights=str(tmp_path / "base" / "base.safetensors"),
                                draft_weights=str(tmp_path / "draft" / "draft.safetensors")), backbone=SIX, scale=4)
    run.load(torch.device("cpu"), torch.float32)
    feats = [torch.randn(1, 8, 24), torch.randn(1, 8, 24)]
    with torch.no_grad():
        expected = draft.draft_velocity(latents, 600.0, emb, feats)
    torch.testing.assert_close(run.draft_velocity(latents, 600.0, emb, feats), expected, rtol=1e-5, atol=1e-6)
    out = run.upscale(torch.rand(1, 3, 5, 4, 4) * 2 - 1, WindowContext(generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 3, 5, 16, 16)


def test_real_preset_without_lpips_weights_fails_before_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real = BackboneConfig(preset="wan2.1-t2v-1.3b", family="wan")
    method = PSSRMethod(PSSRConfig(), backbone=real, scale=4)
    with pytest.raises(UserError, match="vgg16-397923af.pth.*method.lpips_weight=0") as err:
        method.setup_training(torch.device("cpu"))
    assert "\n" not in str(err.value) and method.backbone is None


def test_lpips_matches_the_lpips_package():
    lpips = pytest.importorskip("lpips")
    ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    ours = LPIPSVGG().eval()
    sd = {}
    for key, value in ref.state_dict().items():
        m = re.match(r"net\.slice\d\.(\d+)\.(weight|bias)", key) or re.match(r"lin(\d)\.model\.1\.(weight)", key)
        if m:
            sd[f"features.{m.group(1)}.{m.group(2)}" if key.startswith("net") else f"lins.{m.group(1)}.weight"] = value
    ours.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 40, 48, generator=g) * 2 - 1, torch.rand(2, 3, 40, 48, generator=g) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), ref(x, y), rtol=1e-5, atol=1e-6)


class _Clips(torch.utils.data.Dataset):
    """Four fixed 5-frame clips at 32x32 (HR) / 8x8 (LR)."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(index)
        return {"hq": torch.rand(3, 5, 32, 32, generator=g) * 2 - 1, "lq": torch.rand(3, 5, 8, 8, generator=g) * 2 - 1,
                "prompt": "", "is_image": False, "index": index}


@pytest.mark.slow
@pytest.mark.parametrize("stage,groups", [("base", {"generator": 1, "fake_score": 1}), ("draft", {"draft": 3})])
def test_the_training_engine_runs_both_stages(tmp_path, stage, groups):
    from vsrkit.engine.train import run_training
    from vsrkit.engine.train_config import TrainConfig

    method = PSSRMethod(PSSRConfig(stage=stage, train_frames=5, train_size=[32, 32]), backbone=SIX, scale=4)
    config = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=1, num_workers=0, mixed_precision="no",
                         checkpoint_every=0, lr_warmup_steps=0, lr_scheduler="constant", progress_bar=False,
                         tensorboard=False)
    result = run_training(method, _Clips(), config, seed=0)
    state = torch.load(result.checkpoint / "training_state.pt", weights_only=True)
    for name, steps in groups.items():
        optimizer = state["optimizers"][name]
        assert optimizer["state"][0]["step"].item() == steps  # draft: one optimizer step per draft timestep
        assert optimizer["param_groups"][0]["lr"] == 5e-5 and optimizer["param_groups"][0]["weight_decay"] == 0.01
    files = {"base": {"base.safetensors", "reg.safetensors"}, "draft": {"draft.safetensors"}}[stage]
    assert {p.name for p in result.export_dir.iterdir()} == files
