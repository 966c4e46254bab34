"""Prompt embeddings, cached on disk so a run needs the text encoder only on a cache miss.

The methods use fixed prompts (often the empty one), and the T5 / umT5 encoders weigh about as
much as the transformers. Embeddings are therefore stored once per (text encoder, text):

    <cache_dir>/<encoder key>/<sha256(text)>.safetensors   keys: prompt_embedding (1, L, D),
                                                                 attention_mask (1, L)

``<encoder key>`` names the encoder and its token length (``t5-v1_1-xxl_226`` for CogVideoX,
``umt5-xxl_512`` for Wan, ``t5-v1_1-xxl_128`` for LTX). The file name and the
``prompt_embedding`` key are those of DOVE/SparkVSR's ``pretrained_models/prompt_embeddings``
(sparkvsr.md §4.4), so their shipped empty-prompt file can be dropped into the CogVideoX folder.
On a miss the text encoder is loaded, used and released (memory returned) before returning.

Tiny presets and real presets built with ``backbone.random_weights`` have random transformers, so
their "embedding" is deterministic hash noise of the right shape, derived from the text (no text
encoder, no cache), unless a text encoder is given.
"""

from __future__ import annotations

import gc
import hashlib
import html
import logging
import os
import re
from pathlib import Path

import torch

from vsrkit.backbones.presets import Preset, TextSpec
from vsrkit.backbones.runtime import deterministic_values
from vsrkit.errors import WeightsError

logger = logging.getLogger(__name__)

_ENCODER_NAMES = {"t5": "t5-v1_1-xxl", "umt5": "umt5-xxl"}


def default_cache_dir() -> Path:
    """``$VSRKIT_CACHE/prompt_embeds``, else ``~/.cache/vsrkit/prompt_embeds``."""
    root = os.environ.get("VSRKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "vsrkit") / "prompt_embeds"


def encoder_key(spec: TextSpec) -> str:
    """Cache namespace of a text encoder spec, e.g. ``t5-v1_1-xxl_226``."""
    return f"{_ENCODER_NAMES[spec.encoder]}_{spec.max_length}"


def text_hash(text: str) -> str:
    """sha256 of the UTF-8 text (the cache file name; sha256("") = e3b0c442...b855)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _clean_wan(text: str) -> str:
    # diffusers WanPipeline `prompt_clean`: HTML-unescape and collapse whitespace (ftfy is optional there).
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


class PromptEncoder:
    """Prompt text -> ``(embeds (1, L, D), mask (1, L))`` through the on-disk cache.

    Args:
        preset: The backbone preset (gives the encoder kind, ``L`` and ``D``).
        cache_dir: Cache root (``None``: :func:`default_cache_dir`).
        text_encoder_path: Folder with ``text_encoder/`` and ``tokenizer/`` (a diffusers
            pipeline folder), or a text encoder folder that also holds the tokenizer files;
            ``None`` means a cache miss is an error (real presets) or noise (tiny presets).
        random: The transformer has random weights (``backbone.random_weights``): embeddings are
            noise like a tiny preset's, unless a text encoder is given.
        device: Where the text encoder runs on a cache miss (the backbone's device, i.e.
            ``engine.device``); None: CUDA when available.
    """

    def __init__(self, preset: Preset, cache_dir: str | os.PathLike | None = None,
                 text_encoder_path: str | os.PathLike | None = None, random: bool = False,
                 device: torch.device | str | None = None):
        self.preset = preset
        self.spec = preset.text
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.text_encoder_path = Path(text_encoder_path) if text_encoder_path else None
        self.random = random or preset.tiny
        self.device = torch.device(device) if device is not None else None
        self.encoder_loads = 0  # how many times a text encoder was loaded (tests, logs)

    def cache_file(self, text: str) -> Path:
        """Where the embedding of ``text`` is (or would be) cached."""
        return self.cache_dir / encoder_key(self.spec) / f"{text_hash(text)}.safetensors"

    def __call__(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding of ``text``.

        Returns:
            ``embeds`` ``(1, L, D)`` float32 (bf16-exact values when produced by a bf16 encoder),
            ``mask`` ``(1, L)`` int64 with 1 on real tokens and 0 on padding (all ones for
            encoders whose transformer takes no mask).

        Raises:
            WeightsError: Cache miss on a real preset and no text encoder configured.
        """
        if self.random and self.text_encoder_path is None:
            return self._tiny(text)
        path = self.cache_file(text)
        if path.is_file():
            return self._read(path)
        if self.text_encoder_path is None:
            raise WeightsError(
                f"No cached prompt embedding `{path}` for text {text[:60]!r} of preset `{self.preset.name}`, and "
                f"no text encoder is configured: set `backbone.text_encoder_path=<folder with text_encoder/ and "
                f"tokenizer/>` (a {_ENCODER_NAMES[self.spec.encoder]} encoder) or put the embedding file there."
            )
        embeds, mask = self._encode(text)
        self._write(path, text, embeds, mask)
        return embeds.float(), mask

    # --- tiny presets -----------------------------------------------------------------------

    def _tiny(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.spec.max_length, self.spec.dim)
        embeds = deterministic_values(shape, f"prompt:{text_hash(text)}")
        return embeds, torch.ones(1, self.spec.max_length, dtype=torch.int64)

    # --- cache files --------------------------------------------------------------------------

    def _read(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors.torch import load_file

        data = load_file(str(path))
        if "prompt_embedding" not in data:
            raise WeightsError(f"`{path}` has no `prompt_embedding` tensor (keys: {sorted(data)}); "
                               f"delete it to re-encode.")
        embeds = data["prompt_embedding"]
        if embeds.dim() == 2:  # DOVE stores (L, D)
            embeds = embeds.unsqueeze(0)
        expected = (1, self.spec.max_length, self.spec.dim)
        if tuple(embeds.shape) != expected:
            raise WeightsError(
                f"`{path}`: `prompt_embedding` has shape {tuple(embeds.shape)}, expected {expected} for preset "
                f"`{self.preset.name}`; delete it to re-encode."
            )
        mask = data.get("attention_mask")
        if mask is None:
            mask = torch.ones(1, self.spec.max_length, dtype=torch.int64)
        return embeds.float(), mask.to(torch.int64).reshape(1, -1)

    def _write(self, path: Path, text: str, embeds: torch.Tensor, mask: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"prompt_embedding": embeds.contiguous().cpu(), "attention_mask": mask.contiguous().cpu()},
                  str(tmp), metadata={"text": text, "encoder": encoder_key(self.spec)})
        os.replace(tmp, path)  # atomic: parallel jobs never read a half-written file
        logger.info("cached prompt embedding %s", path)

    # --- text encoder -------------------------------------------------------------------------

    def _locate(self) -> tuple[Path, Path]:
        root = self.text_encoder_path
        if (root / "text_encoder").is_dir():
            enc, tok = root / "text_encoder", root / "tokenizer"
        else:
            enc, tok = root, root
        if any(enc.glob("models_t5_umt5-xxl-enc-*.pth")):
            raise WeightsError(
                f"`{enc}` holds the original-format umT5 (`models_t5_umt5-xxl-enc-bf16.pth`), which vsrkit does not "
                f"read; set `backbone.text_encoder_path` to a transformers folder with `text_encoder/` and "
                f"`tokenizer/` (as in Wan-AI/Wan2.1-T2V-1.3B-Diffusers)."
            )
        if not (enc / "config.json").is_file():
            raise WeightsError(
                f"Text encoder not found: expected `{enc / 'config.json'}` (a transformers "
                f"{_ENCODER_NAMES[self.spec.encoder]} encoder folder) under `text_encoder_path={root}`."
            )
        has_tokenizer = tok.is_dir() and (any(tok.glob("*token*")) or any(tok.glob("spiece.model")))
        if not has_tokenizer:
            raise WeightsError(f"Tokenizer not found: expected tokenizer files in `{tok}` (text_encoder_path={root}).")
        return enc, tok

    @torch.no_grad()
    def _encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        from transformers import AutoTokenizer, T5EncoderModel, UMT5EncoderModel

        enc_dir, tok_dir = self._locate()
        device = self.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        cls = UMT5EncoderModel if self.spec.encoder == "umt5" else T5EncoderModel
        logger.info("prompt cache miss: loading %s from %s", cls.__name__, enc_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        model = cls.from_pretrained(str(enc_dir), torch_dtype=dtype).to(device).eval()
        self.encoder_loads += 1
        try:
            if self.spec.encoder == "umt5":
                text = _clean_wan(text)
            tokens = tokenizer([text], padding="max_length", max_length=self.spec.max_length, truncation=True,
                               add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
            ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
            if self.spec.encoder == "umt5":
                # diffusers WanPipeline._get_t5_prompt_embeds: masked encoder, padded positions zeroed.
                embeds = model(ids, mask).last_hidden_state
            else:
                # CogVideoX and LTX pipelines run T5 without a mask over the padded ids.
                embeds = model(ids)[0]
            if self.spec.zero_padding:
                embeds = embeds * mask.unsqueeze(-1).to(embeds.dtype)
            if not self.spec.uses_mask:
                mask = torch.ones_like(mask)
            if embeds.shape[-1] != self.spec.dim:
                raise WeightsError(
                    f"Text encoder `{enc_dir}` gives {embeds.shape[-1]}-d embeddings; preset "
                    f"`{self.preset.name}` expects {self.spec.dim}."
                )
            return embeds.to(torch.bfloat16).cpu(), mask.to(torch.int64).cpu()
        finally:
            del model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
