"""PS-SR inference on the tiny Wan preset (CPU): kept blocks, sigma table, base/draft steps, fusion
init, draft forward against diffusers, windows, weights, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vsrkit.backbones import BackboneConfig
from vsrkit.errors import UserError, WeightsError
from vsrkit.methods.protocol import WindowContext
from vsrkit.methods.pssr.config import PSSRConfig
from vsrkit.methods.pssr.convert import draft_state_to_release
from vsrkit.methods.pssr.method import (
    PSSRMethod,
    bf16_value,
    kept_blocks,
    video_fdu,
)

# Six layers so that k_select 1.5 keeps two blocks ({2, 5}); the preset itself has two.
SIX = BackboneConfig(preset="wan2.1-t2v-1.3b-tiny", family="wan", dtype="fp32",
                     transformer_overrides={"num_layers": 6})


def _method(backbone=SIX, scale=4, **overrides) -> PSSRMethod:
    method = PSSRMethod(PSSRConfig(**overrides), backbone=backbone, scale=scale)
    method.load(torch.device("cpu"), torch.float32)
    return method


@pytest.fixture(scope="module")
def loaded() -> PSSRMethod:
    return _method()


def _lq(t=5, h=4, w=8, seed=0):
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _context(stages=None):
    return WindowContext(generator=torch.Generator().manual_seed(3),
                         on_stage=None if stages is None else (lambda *a: stages.append(a)))


def test_kept_blocks_follow_the_release_predicate():
    assert kept_blocks(30, 1) == list(range(30))
    assert kept_blocks(30, 1.5) == [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]
    assert kept_blocks(30, 2) == list(range(1, 30, 2))
    assert kept_blocks(30, 3) == kept_blocks(30, 1.5)
    assert kept_blocks(30, 2.5) == [4, 9, 14, 19, 24, 29]
    # The tiny preset's two layers: k 1.5 keeps none (the draft is embedding + head).
    assert (kept_blocks(2, 1), kept_blocks(2, 1.5), kept_blocks(2, 2)) == ([0, 1], [], [1])
    assert kept_blocks(6, 1.5) == [2, 5]


def test_sigma_table_matches_the_report(loaded):
    # pssr.md errata: bf16 timesteps 700/600/500/400, sigma on the shift-5 grid; last "next" t = 0.
    expected = [(700.0, 0.699824), (600.0, 0.600312), (500.0, 0.500600), (400.0, 0.400815), (0.0, 0.004980)]
    for (t, s), (t_ref, s_ref) in zip(loaded.schedule(), expected):
        assert t == t_ref and s == pytest.approx(s_ref, abs=1e-6)
    plain = _method(bf16_timesteps=False).schedule()
    assert [t for t, _ in plain[:4]] == [699.0, 599.0, 499.0, 399.0]
    assert [s for _, s in plain[:4]] == pytest.approx([0.698854, 0.598958, 0.498798, 0.398501], abs=1e-6)
    assert bf16_value(699) == 700.0 and bf16_value(399) == 400.0


class _Recorder:
    """Wraps the base and draft velocity calls: their inputs and outputs."""

    def __init__(self, method, monkeypatch):
        self.calls = []
        base_fn, draft_fn = method.base_velocity, method.draft_velocity

        def base_call(latents, timestep, embeds, capture=False):
            v, feats = base_fn(latents, timestep, embeds, capture)
            self.calls.append(("base", latents.clone(), timestep, v.clone(), [f.clone() for f in feats]))
            return v, feats

        def draft_call(latents, timestep, embeds, features, draft=None):
            v = draft_fn(latents, timestep, embeds, features, draft)
            self.calls.append(("draft", latents.clone(), timestep, v.clone(), None))
            return v

        monkeypatch.setattr(method, "base_velocity", base_call)
        monkeypatch.setattr(method, "draft_velocity", draft_call)


def test_one_window_runs_the_speculative_chain(loaded, monkeypatch):
    rec = _Recorder(loaded, monkeypatch)
    decoded = []
    vae = loaded.backbone.vae
    real_decode = vae.decode
    monkeypatch.setattr(vae, "decode", lambda z, grad=False: decoded.append(z.clone()) or real_decode(z, grad))
    stages = []
    lq = _lq()
    out = loaded.upscale(lq, _context(stages))
    assert out.shape == (1, 3, 5, 16, 32) and out.dtype == torch.float32
    assert [s[0] for s in stages] == ["encode", "denoise", "denoise", "denoise", "denoise", "decode", "decode", "fdu"]

    hr = torch.nn.functional.interpolate(lq[0].permute(1, 0, 2, 3), size=(16, 32), mode="bicubic",
                                         align_corners=False).clamp(-1, 1)
    z_lr = vae.encode(hr.permute(1, 0, 2, 3)[None])
    (kind, x, t, v, feats) = rec.calls[0]
    assert kind == "base" and t == 700.0
    torch.testing.assert_close(x, torch.cat([z_lr, z_lr], 1), rtol=0, atol=1e-6)
    assert len(feats) == 2  # inputs of base blocks 2 and 5
    sigmas = [s for _, s in loaded.schedule()]
    z = z_lr - (sigmas[0] - sigmas[1]) * v
    x0_base = z_lr - sigmas[0] * v
    for i, (kind, x, t, v, _) in enumerate(rec.calls[1:], start=1):
        assert kind == "draft" and t == [600.0, 500.0, 400.0][i - 1]
        torch.testing.assert_close(x, torch.cat([z, z_lr], 1), rtol=0, atol=1e-5)
        x0 = z - sigmas[i] * v
        z = z - (sigmas[i] - sigmas[i + 1]) * v
    # Two decodes: the base's x0 and the last draft's x0; the output is their FDU.
    assert len(decoded) == 2
    torch.testing.assert_close(decoded[0], x0_base, rtol=0, atol=1e-5)
    torch.testing.assert_close(decoded[1], x0, rtol=0, atol=1e-5)
    expected = video_fdu(real_decode(x0_base), real_decode(x0), loaded.config)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_base_features_are_the_inputs_of_the_kept_blocks(loaded):
    transformer = loaded.backbone.transformer
    seen = {}
    handles = [transformer.blocks[b].register_forward_pre_hook(
        lambda m, args, b=b: seen.__setitem__(b, args[0].clone())) for b in range(6)]
    try:
        latents = torch.randn(1, 32, 2, 4, 6)
        emb = loaded.backbone.prompt_embeds("x")
        _, feats = loaded.base_velocity(latents, 700.0, emb, capture=True)
    finally:
        for h in handles:
            h.remove()
    assert [type(b).__name__ for b in transformer.blocks] == ["WanTransformerBlock"] * 6  # taps removed
    for feature, b in zip(feats, [2, 5]):
        torch.testing.assert_close(feature, seen[b], rtol=0, atol=0)
    assert not torch.equal(seen[2], seen[5])


def test_fusion_init_makes_the_draft_see_the_base_features(loaded):
    draft = loaded.draft
    emb = loaded.backbone.prompt_embeds("x")
    feats = [torch.randn(1, 12, 24), torch.randn(1, 12, 24)]
    seen = {}
    handles = [blk.register_forward_pre_hook(lambda m, args, j=j: seen.__setitem__(j, args[0].clone()))
               for j, blk in enumerate(draft.blocks)]
    try:
        a = loaded.draft_velocity(torch.randn(1, 32, 2, 4, 6), 600.0, emb, feats)
        b = loaded.draft_velocity(torch.randn(1, 32, 2, 4, 6), 600.0, emb, feats)
    finally:
        for h in handles:
            h.remove()
    for j in range(2):
        torch.testing.assert_close(seen[j], feats[j], rtol=0, atol=0)
    # At init the draft ignores its own stream: its output depends on the base features only.
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    w = draft.fc_layers[0].weight
    assert torch.equal(w[:, :24], torch.eye(24)) and not w[:, 24:].any() and not draft.fc_layers[0].bias.any()
    # The draft's blocks are copies of the base's kept blocks.
    base_block = loaded.backbone.transformer.blocks[5].state_dict()
    assert all(torch.equal(v, base_block[k]) for k, v in draft.blocks[1].state_dict().items())


def test_draft_with_every_block_and_own_stream_is_the_diffusers_transformer():
    # k_select 1 keeps all blocks; with fusion weights [0 | I] each block sees the draft's own state,
    # so the draft must compute exactly what diffusers' WanTransformer3DModel computes.
    method = _method(k_select=1)
    for fc in method.draft.fc_layers:
        with torch.no_grad():
            fc.weight.zero_()
            fc.weight[:, 24:] = torch.eye(24)
    latents = torch.randn(1, 32, 3, 4, 6)
    emb = method.backbone.prompt_embeds("y")
    ours = method.draft_velocity(latents, 500.0, emb, [torch.randn(1, 18, 24)] * 6)
    theirs = method.backbone.predict(latents, 500.0, emb)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_draft_condition_zeros_replaces_the_lr_latent(monkeypatch):
    method = _method(draft_condition="zeros")
    rec = _Recorder(method, monkeypatch)
    method.upscale(_lq(), _context())
    for kind, x, *_ in rec.calls[1:]:
        assert kind == "draft" and not x[:, 16:].any() and x[:, :16].abs().sum() > 0


def test_every_step_fdu_decodes_each_draft_prediction(monkeypatch):
    method = _method(fdu_mode="every_step", fdu_alpha=0.6)
    decoded = []
    vae = method.backbone.vae
    real_decode = vae.decode
    monkeypatch.setattr(vae, "decode", lambda z, grad=False: decoded.append(z.clone()) or real_decode(z, grad))
    out = method.upscale(_lq(), _context())
    assert len(decoded) == 4
    expected = real_decode(decoded[0])
    for z in decoded[1:]:
        expected = video_fdu(expected, real_decode(z), method.config)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_window_spec_is_the_release_windows():
    spec = PSSRMethod(PSSRConfig(), backbone=SIX, scale=4).window_spec()
    assert (spec.window, spec.overlap, spec.frame_multiple, spec.frame_offset) == (33, 16, 4, 1)
    assert (spec.tile, spec.tile_width, spec.tile_overlap, spec.spatial_multiple) == (180, 320, 32, 4)
    assert spec.pad_mode == "replicate"
    whole = PSSRMethod(PSSRConfig(tile=None, window=None), backbone=SIX, scale=2).window_spec()
    assert (whole.tile, whole.window, whole.spatial_multiple) == (None, None, 8)


def test_blending_a_constant_video_is_constant():
    # The engine with PS-SR's windows (33 / 16 frames, 720x1280 output tiles overlapping by 128,
    # here at x2 on a small canvas) and a method returning one constant per window.
    from vsrkit.engine.inference import WindowRunner, model_to_frames, upscale_stream

    class Constant:
        def __init__(self):
            self.spec = PSSRMethod(PSSRConfig(tile=[64, 96], tile_overlap=16), backbone=SIX, scale=2).window_spec()
            self.calls = 0

        def window_spec(self):
            return self.spec

        def upscale(self, lq, context):
            self.calls += 1
            b, c, t, h, w = lq.shape
            return torch.full((b, c, t, h * 2, w * 2), 0.25)

    class Chunk:
        def __init__(self, f):
            self.frames, self.pts = f, None

    method = Constant()
    frames = np.full((70, 50, 90, 3), 7, dtype=np.uint8)
    runner = WindowRunner(method, method.spec, torch.device("cpu"))
    outs = [model_to_frames(o) for o, _ in upscale_stream(runner, [Chunk(frames)], 70)]
    video = np.concatenate(outs)
    assert video.shape == (70, 100, 180, 3)
    # windows [0,33) [17,50) [34,67) [51,70); input rows [0,32) [24,50); columns [0,48) [40,88) [80,90)
    assert method.calls == 4 * 2 * 3
    assert (video == round((0.25 + 1) * 127.5)).all()


def test_backbone_weights_need_the_release_files(tmp_path):
    folder = tmp_path / "wan"
    folder.mkdir()
    with pytest.raises(UserError, match="method.base_weights and method.draft_weights"):
        PSSRMethod(PSSRConfig(), backbone=BackboneConfig(preset="wan2.1-t2v-1.3b-tiny", family="wan",
                                                         path=str(folder)), scale=4).load(torch.device("cpu"))
    with pytest.raises(UserError, match="method.base_weights` names `.*nope.safetensors`, which is not a file"):
        PSSRConfig(base_weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ValueError, match="wan backbone"):
        PSSRMethod(PSSRConfig(), backbone=BackboneConfig(preset="ltx-video-2b-tiny", family="ltx"), scale=4)


@pytest.mark.parametrize("field,value,message", [
    ("k_select", 1.2, "multiple of 0.5"), ("timesteps_draft", [599, 650], "must decrease"),
    ("window", 32, "4k\\+1"), ("tile", [720, 1000], "multiples of 16"), ("fdu_mode", "paper", "fdu_mode"),
    ("draft_condition", "hq", "draft_condition"), ("tagger", "ram", "tagger needs both `method.ram_weights"),
])
def test_bad_options_are_one_line_user_errors(field, value, message):
    with pytest.raises(UserError, match=message) as err:
        PSSRConfig(**{field: value})
    assert "\n" not in str(err.value)


def _release_base_file(method: PSSRMethod, path, rank=2, seed=0):
    """A base.safetensors as the release exports it: peft names on the original Wan modules
    (adapter ``default``), the 32-channel patch embedding and head.head."""
    g = torch.Generator().manual_seed(seed)
    transformer = method.backbone.transformer
    sd, expected = {}, {}
    for i, block in enumerate(transformer.blocks):
        for orig, mod in (("self_attn.q", block.attn1.to_q), ("cross_attn.o", block.attn2.to_out[0]),
                          ("ffn.2", block.ffn.net[2])):
            a = torch.randn(rank, mod.weight.shape[1], generator=g) * 0.1
            b = torch.randn(mod.weight.shape[0], rank, generator=g) * 0.1
            sd[f"blocks.{i}.{orig}.lora_A.default.weight"] = a
            sd[f"blocks.{i}.{orig}.lora_B.default.weight"] = b
            expected[id(mod)] = mod.weight.detach().clone() + b @ a
    sd["patch_embedding.weight"] = torch.randn(24, 32, 1, 2, 2, generator=g)
    sd["patch_embedding.bias"] = torch.randn(24, generator=g)
    sd["head.head.weight"] = torch.randn(64, 24, generator=g)
    sd["head.head.bias"] = torch.randn(64, generator=g)
    save_file(sd, str(path))
    return sd, expected


def test_release_base_and_draft_files_load(tmp_path):
    plain = _method()
    sd, expected = _release_base_file(plain, tmp_path / "base.safetensors")
    # The draft file: a draft's state in the release's DiffSynth names.
    draft_sd = draft_state_to_release({k: v.clone() for k, v in plain.draft.state_dict().items()})
    draft_sd["fc_layers.1.bias"] = torch.full((24,), 0.01)
    assert "blocks.1.self_attn.q.weight" in draft_sd and "head.modulation" in draft_sd
    assert "text_embedding.0.weight" in draft_sd and "fc_layers.0.weight" in draft_sd
    save_file(draft_sd, str(tmp_path / "draft.safetensors"))
    method = _method(base_weights=str(tmp_path / "base.safetensors"), draft_weights=str(tmp_path / "draft.safetensors"))
    transformer = method.backbone.transformer
    for i, block in enumerate(transformer.blocks):
        ref_block = plain.backbone.transformer.blocks[i]
        for mod, ref in ((block.attn1.to_q, ref_block.attn1.to_q), (block.ffn.net[2], ref_block.ffn.net[2])):
            torch.testing.assert_close(mod.weight, expected[id(ref)])
        assert torch.equal(block.attn1.to_k.weight, ref_block.attn1.to_k.weight)
    assert torch.equal(transformer.patch_embedding.weight, sd["patch_embedding.weight"])
    assert torch.equal(transformer.proj_out.bias, sd["head.head.bias"])
    assert torch.equal(method.draft.fc_layers[1].bias, torch.full((24,), 0.01))
    assert torch.equal(method.draft.blocks[0].attn1.to_q.weight, plain.draft.blocks[0].attn1.to_q.weight)


def test_mismatched_release_files_are_weights_errors(tmp_path):
    plain = _method()
    sd, _ = _release_base_file(plain, tmp_path / "base.safetensors")
    del sd["patch_embedding.weight"], sd["patch_embedding.bias"]
    save_file(sd, str(tmp_path / "lora_only.safetensors"))
    with pytest.raises(WeightsError, match="not a PS-SR base file"):
        _method(base_weights=str(tmp_path / "lora_only.safetensors"))
    # A draft trained with k_select 2 (3 blocks of 6) does not fit k_select 1.5 (2 blocks).
    other = _method(k_select=2)
    save_file(draft_state_to_release(other.draft.state_dict()), str(tmp_path / "draft3.safetensors"))
    with pytest.raises(WeightsError, match="holds a draft with 3 blocks; this k_select keeps 2"):
        _method(draft_weights=str(tmp_path / "draft3.safetensors"))


def test_ram_tags_join_the_prompt_per_window(tmp_path, monkeypatch):
    # SeeSR's `ram` package as the release calls it: ram(pretrained=, pretrained_condition=,
    # image_size=384, vit="swin_l") and inference_ram(frames, model) -> tags per image.
    import importlib.machinery
    import sys
    import types

    for name in ("ram.pth", "dape.pth"):
        (tmp_path / name).write_bytes(b"x")
    files = dict(ram_weights=str(tmp_path / "ram.pth"), dape_weights=str(tmp_path / "dape.pth"))
    with pytest.raises(UserError, match="needs SeeSR's `ram` package"):
        _method(**files)  # auto: both files given -> the tagger, checked before anything loads
    seen = {}

    class FakeRam(torch.nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            seen["kwargs"] = kwargs

    def inference_ram(frames, model):
        seen["frames"] = frames
        return ["building, sky, tree"]

    ram = types.ModuleType("ram")
    ram.__spec__ = importlib.machinery.ModuleSpec("ram", None)
    ram.inference_ram = inference_ram
    lora = types.ModuleType("ram.models.ram_lora")
    lora.ram = FakeRam
    monkeypatch.setitem(sys.modules, "ram", ram)
    monkeypatch.setitem(sys.modules, "ram.models", types.ModuleType("ram.models"))
    monkeypatch.setitem(sys.modules, "ram.models.ram_lora", lora)
    method = _method(**files)
    prompts = []
    original = method._embed
    monkeypatch.setattr(method, "_embed", lambda text: prompts.append(text) or original(text))
    method.upscale(_lq(), _context())
    assert prompts == ["4K Ultra-clear, Sharp, Fine Details Restored, Temporal Consistency, Natural Colors, "
                       "building, sky, tree"]
    assert seen["kwargs"] == {"pretrained": files["ram_weights"], "pretrained_condition": files["dape_weights"],
                              "image_size": 384, "vit": "swin_l"}
    assert seen["frames"].shape == (1, 3, 384, 384) and seen["frames"].dtype == torch.bfloat16
    assert _method(tagger="none", **files).uses_tagger is False
