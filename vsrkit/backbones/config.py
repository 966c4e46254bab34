"""The backbone config: which preset, where its weights come from, and the runtime switches.

This module imports nothing heavy (no torch), so the command line can build and validate a
:class:`BackboneConfig` before anything loads. The model architectures behind each preset live
in :mod:`vsrkit.backbones.presets`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

FAMILIES = ["cogvideox", "wan", "ltx"]
DTYPES = ["fp32", "bf16", "fp16"]
ATTENTION_BACKENDS = ["auto", "native", "cudnn", "flash", "efficient", "math", "flash-attn", "flash-attn-3",
                      "sage", "xformers", "flex"]
CPU_OFFLOAD = ["none", "model", "sequential", "group"]
COMPILE = ["off", "regional"]
VAE_KERNELS = ["auto", "fused", "native"]
FUSED_VAE_FAMILIES = ["cogvideox", "wan"]  # VAEs with a fused forward (backbone.vae_kernels)


def _check_choice(name: str, value: Any, choices: list) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}. Got {value!r}.")


@dataclass
class BackboneConfig:
    """One video diffusion backbone: preset, weights, precision and speed/memory switches.

    Args:
        preset: Registered preset name (``vsrkit ls`` lists them), e.g. ``cogvideox1.5-5b-i2v``.
        family: ``cogvideox``, ``wan`` or ``ltx``; must match the preset's family.
        path: Where the weights come from. A local diffusers folder (``model_index.json`` with
            ``transformer/``, ``vae/``, ``scheduler/``...; the SparkVSR release is one), a
            single-file checkpoint (``.safetensors``/``.pth``/``.ckpt``, e.g. Wan2.1's original
            ``diffusion_pytorch_model.safetensors`` or an LTX single file), a sharded
            ``*.safetensors.index.json``. ``None`` on a real preset is an error unless
            ``random_weights`` is on; tiny presets are always random.
        transformer_path: Transformer weights that override the ones under ``path`` (a method's
            released checkpoint, e.g. InfVSR's full DiT). Same formats as ``path``.
        vae_path: VAE weights that override the ones under ``path`` (e.g. ``Wan2.1_VAE.pth``).
        text_encoder_path: Folder with the text encoder (a diffusers folder, or one holding
            ``text_encoder/`` and ``tokenizer/``). Only read when a prompt embedding is missing
            from the cache. ``None`` uses ``path`` when that is a diffusers folder.
        random_weights: Build a real preset with a deterministic random init where no weights are
            given (speed benchmarks: the compute is the real model's, the output is noise; every log
            and summary line says so). Off: a real preset without weights fails before anything is
            built. Tiny presets are random models whatever this says.
        prompt_cache_dir: Folder of cached prompt embeddings; ``None`` uses
            ``$VSRKIT_CACHE/prompt_embeds`` or ``~/.cache/vsrkit/prompt_embeds``.
        dtype: Compute dtype of the transformer: ``fp32``, ``bf16`` or ``fp16``.
        vae_dtype: Dtype of the VAE; ``None`` uses ``dtype``.
        attention: Attention kernel. ``auto`` lets PyTorch pick; ``native`` is PyTorch SDPA with
            its own choice; ``cudnn``, ``flash``, ``efficient``, ``math`` force one PyTorch SDPA
            kernel; ``flash-attn``, ``flash-attn-3``, ``sage``, ``xformers``, ``flex`` use diffusers'
            attention dispatch (needs the package, and a model whose processor supports it).
        gradient_checkpointing: Recompute transformer blocks in backward (training memory).
        cpu_offload: ``none``; ``model`` (whole models moved to the GPU when used); ``sequential``
            (weights streamed per module, slowest, least memory); ``group`` (diffusers group
            offload of block groups with CUDA streams). Needs a CUDA device.
        vae_tiling: Split frames spatially for the VAE (bounded memory at high resolution).
        vae_tile_size: Tile edge in output pixels when ``vae_tiling`` is on; ``None`` keeps the
            diffusers default of each VAE.
        vae_tile_overlap: Pixels shared by neighbouring tiles; ``None`` keeps the default.
        vae_slicing: Encode/decode one batch element at a time.
        vae_kernels: ``fused`` runs the VAE's norms through Triton kernels that fuse the norm
            (CogVideoX: GroupNorm and its spatial modulation; Wan: the channel RMS norm), the SiLU
            and the causal padding (same weights, caches and frame batching, equal within bf16
            rounding; see :mod:`vsrkit.backbones.cogvideox_fused` and
            :mod:`vsrkit.backbones.wan_fused`); ``native`` runs diffusers' modules unchanged;
            ``auto`` is ``fused`` where it applies (a CogVideoX or Wan VAE, Triton installed),
            else ``native``. Without Triton, on CPU, or with autograd on, the fused modules run
            diffusers' forward.
        compile: ``off`` or ``regional`` (``torch.compile`` of each repeated transformer block:
            compiles once, in seconds, instead of the whole graph).
        transformer_overrides: Changes to the preset's transformer config, e.g.
            ``{in_channels: 32}`` (PS-SR's widened patch embedding) or ``{text_dim: 512}``
            (InfVSR's visual prompt).
        lora_paths: LoRA files fused into the transformer after loading (peft, DiffSynth or
            diffusers naming; extra full tensors in the file are copied).
        lora_scale: Multiplier of every LoRA delta.
        seed: Seed of the deterministic random init used when no weights are given.
    """

    preset: str = "cogvideox1.5-5b-i2v"
    family: str = "cogvideox"

    # --- weights -------------------------------------------------------------------------
    path: Optional[str] = None
    transformer_path: Optional[str] = None
    vae_path: Optional[str] = None
    text_encoder_path: Optional[str] = None
    random_weights: bool = False
    prompt_cache_dir: Optional[str] = None

    # --- precision and kernels -------------------------------------------------------------
    dtype: str = "bf16"
    vae_dtype: Optional[str] = None
    attention: str = "auto"

    # --- memory ----------------------------------------------------------------------------
    gradient_checkpointing: bool = False
    cpu_offload: str = "none"
    vae_tiling: bool = False
    vae_tile_size: Optional[int] = None
    vae_tile_overlap: Optional[int] = None
    vae_slicing: bool = False
    vae_kernels: str = "auto"

    # --- speed -----------------------------------------------------------------------------
    compile: str = "off"

    # --- model changes ---------------------------------------------------------------------
    transformer_overrides: Dict[str, Any] = field(default_factory=dict)
    lora_paths: List[str] = field(default_factory=list)
    lora_scale: float = 1.0
    seed: int = 0

    def __post_init__(self):
        _check_choice("family", self.family, FAMILIES)
        from vsrkit.backbones.presets import PRESETS  # plain Python, no torch

        known = PRESETS.get(self.preset)
        if known is not None and known.family != self.family:
            raise ValueError(f"`family` must be `{known.family}` for preset `{self.preset}`. Got {self.family!r}.")
        _check_choice("dtype", self.dtype, DTYPES)
        if self.vae_dtype is not None:
            _check_choice("vae_dtype", self.vae_dtype, DTYPES)
        _check_choice("attention", self.attention, ATTENTION_BACKENDS)
        _check_choice("cpu_offload", self.cpu_offload, CPU_OFFLOAD)
        _check_choice("compile", self.compile, COMPILE)
        _check_choice("vae_kernels", self.vae_kernels, VAE_KERNELS)
        if self.vae_kernels == "fused" and self.family not in FUSED_VAE_FAMILIES:
            raise ValueError(f"`vae_kernels=fused` exists for the CogVideoX and Wan VAEs only; the {self.family} "
                             f"VAE runs native. Use vae_kernels=auto or native.")
        if self.vae_tile_size is not None and self.vae_tile_size < 32:
            raise ValueError(f"`vae_tile_size` must be >= 32 pixels. Got {self.vae_tile_size}.")
        if self.vae_tile_overlap is not None and self.vae_tile_size is not None \
                and not 0 <= self.vae_tile_overlap < self.vae_tile_size:
            raise ValueError(f"`vae_tile_overlap` must be in [0, vae_tile_size={self.vae_tile_size}). "
                             f"Got {self.vae_tile_overlap}.")
        if self.lora_scale < 0:
            raise ValueError(f"`lora_scale` must be >= 0. Got {self.lora_scale}.")
        # OmegaConf hands over ListConfig/DictConfig; keep plain containers.
        self.lora_paths = [str(p) for p in self.lora_paths]
        self.transformer_overrides = dict(self.transformer_overrides)
