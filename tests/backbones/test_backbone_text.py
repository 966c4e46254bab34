"""Prompt embeddings: disk cache keyed by encoder and text, encoder loaded only on a miss."""

from __future__ import annotations

import hashlib

import pytest
import torch
from backbone_helpers import tiny_config
from safetensors.torch import load_file, save_file

from vsrkit.backbones import build_backbone
from vsrkit.backbones.presets import get_preset
from vsrkit.backbones.text import PromptEncoder, encoder_key, text_hash
from vsrkit.errors import WeightsError


def make_tiny_t5(folder, d_model: int, umt5: bool = False):
    """A random 1-layer T5 encoder + word-level tokenizer saved in the diffusers layout (offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4, "sharp": 5, "video": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])  # as T5
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder / "tokenizer")
    cfg_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    torch.manual_seed(0)
    model = model_cls(cfg_cls(vocab_size=len(vocab), d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    model.save_pretrained(folder / "text_encoder")
    return folder


def test_cache_key_is_sha256_of_the_text():
    assert text_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert encoder_key(get_preset("cogvideox1.5-5b-i2v").text) == "t5-v1_1-xxl_226"
    assert encoder_key(get_preset("wan2.1-t2v-1.3b").text) == "umt5-xxl_512"
    assert encoder_key(get_preset("ltx-video-2b").text) == "t5-v1_1-xxl_128"


def test_real_preset_miss_without_encoder_is_one_clear_error(tmp_path):
    enc = PromptEncoder(get_preset("wan2.1-t2v-1.3b"), cache_dir=tmp_path)
    with pytest.raises(WeightsError) as err:
        enc("a cat")
    message = str(err.value)
    assert str(tmp_path / "umt5-xxl_512" / f"{text_hash('a cat')}.safetensors") in message
    assert "backbone.text_encoder_path" in message and "\n" not in message


def test_dove_style_cache_file_is_read(tmp_path):
    # DOVE ships pretrained_models/prompt_embeddings/<sha256("")>.safetensors with key `prompt_embedding`.
    folder = tmp_path / "t5-v1_1-xxl_226"
    folder.mkdir()
    emb = torch.linspace(-1, 1, 226 * 4096).reshape(226, 4096).to(torch.bfloat16)
    save_file({"prompt_embedding": emb}, str(folder / f"{text_hash('')}.safetensors"))
    embeds, mask = PromptEncoder(get_preset("cogvideox1.5-5b-i2v"), cache_dir=tmp_path)("")
    assert embeds.shape == (1, 226, 4096) and embeds.dtype == torch.float32
    torch.testing.assert_close(embeds[0], emb.float())
    assert mask.shape == (1, 226) and bool(mask.all())


def test_wrong_shape_in_cache_is_reported(tmp_path):
    folder = tmp_path / "t5-v1_1-xxl_226"
    folder.mkdir()
    save_file({"prompt_embedding": torch.zeros(1, 77, 4096)}, str(folder / f"{text_hash('')}.safetensors"))
    with pytest.raises(WeightsError, match="shape \\(1, 77, 4096\\), expected \\(1, 226, 4096\\)"):
        PromptEncoder(get_preset("cogvideox1.5-5b-i2v"), cache_dir=tmp_path)("")


def test_encoder_loads_once_then_the_cache_serves(tmp_path):
    make_tiny_t5(tmp_path / "te", d_model=32)
    bb = build_backbone(tiny_config("cogvideox", text_encoder_path=str(tmp_path / "te"),
                                    prompt_cache_dir=str(tmp_path / "cache")))
    first = bb.prompt_embeds("a sharp video")
    assert bb.prompts.encoder_loads == 1
    file = tmp_path / "cache" / "t5-v1_1-xxl_8" / f"{hashlib.sha256(b'a sharp video').hexdigest()}.safetensors"
    assert file.is_file()
    stored = load_file(str(file))
    assert stored["prompt_embedding"].shape == (1, 8, 32) and stored["prompt_embedding"].dtype == torch.bfloat16
    second = bb.prompt_embeds("a sharp video")
    assert bb.prompts.encoder_loads == 1  # served from disk, no second load
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    bb.prompt_embeds("a cat")
    assert bb.prompts.encoder_loads == 2
    assert not torch.equal(bb.prompt_embeds("a cat"), first)


def test_umt5_embeddings_are_zero_padded(tmp_path):
    make_tiny_t5(tmp_path / "te", d_model=16, umt5=True)
    bb = build_backbone(tiny_config("wan", text_encoder_path=str(tmp_path / "te"),
                                    prompt_cache_dir=str(tmp_path / "c")))
    emb = bb.prompt_embeds("a cat")  # 2 words + </s> = 3 tokens of 8
    assert emb.shape == (1, 8, 16)
    assert emb[0, 2].abs().sum() > 0  # </s> is a real token
    assert torch.count_nonzero(emb[0, 3:]) == 0


def test_ltx_keeps_the_attention_mask(tmp_path):
    make_tiny_t5(tmp_path / "te", d_model=16)
    bb = build_backbone(tiny_config("ltx", text_encoder_path=str(tmp_path / "te"),
                                    prompt_cache_dir=str(tmp_path / "c")))
    _, mask = bb.prompt_embeds("a cat")
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]
    _, cached_mask = bb.prompt_embeds("a cat")  # from disk
    assert cached_mask.tolist() == mask.tolist()


def test_missing_text_encoder_folder_is_reported(tmp_path):
    bb = build_backbone(tiny_config("wan", text_encoder_path=str(tmp_path / "empty"), prompt_cache_dir=str(tmp_path)))
    with pytest.raises(WeightsError, match="Text encoder not found: expected .*config.json"):
        bb.prompt_embeds("x")


def test_original_umt5_pth_gets_a_specific_message(tmp_path):
    (tmp_path / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"")
    enc = PromptEncoder(get_preset("wan2.1-t2v-1.3b"), cache_dir=tmp_path / "c", text_encoder_path=tmp_path)
    with pytest.raises(WeightsError, match="original-format umT5"):
        enc("")


def test_text_encoder_runs_on_the_backbone_device(tmp_path, monkeypatch):
    # engine.device=cpu on a machine with a GPU: the T5 on a cache miss must stay on the CPU too.
    make_tiny_t5(tmp_path / "te", d_model=32)
    bb = build_backbone(tiny_config("cogvideox", text_encoder_path=str(tmp_path / "te"),
                                    prompt_cache_dir=str(tmp_path / "cache")), device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # "a GPU is there"
    embeds = bb.prompt_embeds("a cat")
    assert bb.prompts.encoder_loads == 1 and embeds.device.type == "cpu" and bb.prompts.device == torch.device("cpu")
