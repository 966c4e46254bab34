"""The released PS-SR checkpoints' key sets load at full size on the meta device (no weights).

``base.safetensors``: what ``export_trainable_state_dict(remove_prefix="dit.")`` writes for a peft
LoRA (rank 32) on q/k/v/o (self and cross attention) and ffn.0/ffn.2 of the 30 blocks, plus the
trainable 32-channel ``patch_embedding`` and ``head.head`` (pssr.md §5.2, §5.5).
``draft.safetensors``: the state dict of DiffSynth's ``WanModel`` (1.3B config) pruned to
``k_select=1.5``'s 10 blocks (renumbered) with ``fc_layers.{0..9}`` ``Linear(3072, 1536)``
(``shave_dit_draft``, ``train_draft.py``). DiffSynth's own model class gives the names and shapes.
"""

from __future__ import annotations

import re

import pytest
import torch

from vsrkit.backbones import loading, runtime
from vsrkit.backbones.build import diffusers_class
from vsrkit.backbones.presets import get_preset
from vsrkit.errors import WeightsError
from vsrkit.methods.pssr.convert import draft_state_to_release, load_draft_state
from vsrkit.methods.pssr.method import (
    kept_blocks,
    widen_patch_embedding,
)
from vsrkit.methods.pssr.model import PSSRDraftTransformer

RELEASE_LORA_MODULES = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                        "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"]
FFN = 8960
DIM = 1536


def diffsynth_wan_meta():
    from diffsynth.models.wan_video_dit import WanModel

    with torch.device("meta"):
        return WanModel(has_image_input=False, patch_size=[1, 2, 2], in_dim=16, dim=DIM, ffn_dim=FFN, freq_dim=256,
                        text_dim=4096, out_dim=16, num_heads=12, num_layers=30, eps=1e-6)


def release_base_keys(rank: int = 32) -> dict:
    sd = {}
    for i in range(30):
        for module in RELEASE_LORA_MODULES:
            out_f, in_f = (FFN, DIM) if module == "ffn.0" else (DIM, FFN) if module == "ffn.2" else (DIM, DIM)
            sd[f"blocks.{i}.{module}.lora_A.default.weight"] = torch.empty(rank, in_f, device="meta")
            sd[f"blocks.{i}.{module}.lora_B.default.weight"] = torch.empty(out_f, rank, device="meta")
    sd["patch_embedding.weight"] = torch.empty(DIM, 32, 1, 2, 2, device="meta")
    sd["patch_embedding.bias"] = torch.empty(DIM, device="meta")
    sd["head.head.weight"] = torch.empty(64, DIM, device="meta")
    sd["head.head.bias"] = torch.empty(64, device="meta")
    return sd


def release_draft_keys(k_select: float = 1.5) -> dict:
    full = diffsynth_wan_meta().state_dict()
    kept = kept_blocks(30, k_select)
    sd = {}
    for key, value in full.items():
        m = re.match(r"blocks\.(\d+)\.(.+)", key)
        if m is None:
            sd[key] = torch.empty(value.shape, device="meta")
        elif int(m.group(1)) in kept:
            sd[f"blocks.{kept.index(int(m.group(1)))}.{m.group(2)}"] = torch.empty(value.shape, device="meta")
    sd["patch_embedding.weight"] = torch.empty(DIM, 32, 1, 2, 2, device="meta")  # widened before shaving
    for j in range(len(kept)):
        sd[f"fc_layers.{j}.weight"] = torch.empty(DIM, 2 * DIM, device="meta")
        sd[f"fc_layers.{j}.bias"] = torch.empty(DIM, device="meta")
    return sd


def meta_transformer():
    preset = get_preset("wan2.1-t2v-1.3b")
    model = runtime.build_empty(diffusers_class(preset.transformer_class), dict(preset.transformer))
    model.patch_embedding = widen_patch_embedding(model.patch_embedding, 32)
    return model


def test_release_base_key_set_fuses_into_the_widened_wan():
    sd = release_base_keys()
    assert len(sd) == 30 * 10 * 2 + 4  # 604 tensors: 300 LoRA pairs and the four full tensors
    model = meta_transformer()
    assert tuple(model.patch_embedding.weight.shape) == (DIM, 32, 1, 2, 2)
    assert loading.fuse_lora_state_dict(model, sd, "base.safetensors", 1.0, "wan") == 300
    # Without the widening the 32-channel patch embedding does not fit: one error naming the tensor.
    preset = get_preset("wan2.1-t2v-1.3b")
    narrow = runtime.build_empty(diffusers_class(preset.transformer_class), dict(preset.transformer))
    with pytest.raises(WeightsError, match="extra tensor `patch_embedding.weight` has shape \\(1536, 32, 1, 2, 2\\)"):
        loading.fuse_lora_state_dict(narrow, sd, "base.safetensors", 1.0, "wan")


def test_release_draft_key_set_loads_into_the_draft():
    sd = release_draft_keys()
    assert sum(1 for k in sd if k.startswith("fc_layers.")) == 20
    assert max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")) == 9
    with torch.device("meta"):
        draft = PSSRDraftTransformer(dict(get_preset("wan2.1-t2v-1.3b").transformer, in_channels=32), 10)
    load_draft_state(draft, dict(sd), "draft.safetensors")
    assert all(p.device.type == "meta" for p in draft.parameters())
    params = sum(p.numel() for p in draft.parameters())
    assert params == pytest.approx(537.5e6, rel=0.01)  # pssr.md §3.6: about 537.5 M parameters


def test_draft_export_names_are_the_release_key_set():
    with torch.device("meta"):
        draft = PSSRDraftTransformer(dict(get_preset("wan2.1-t2v-1.3b").transformer, in_channels=32), 10)
    ours = {k: tuple(v.shape) for k, v in draft_state_to_release(draft.state_dict()).items()}
    theirs = {k: tuple(v.shape) for k, v in release_draft_keys().items()}
    assert ours == theirs


def test_draft_of_another_k_select_is_refused_on_meta():
    with torch.device("meta"):
        draft = PSSRDraftTransformer(dict(get_preset("wan2.1-t2v-1.3b").transformer, in_channels=32), 10)
    with pytest.raises(WeightsError, match="holds a draft with 15 blocks; this k_select keeps 10"):
        load_draft_state(draft, release_draft_keys(k_select=2), "draft_k2.safetensors")
