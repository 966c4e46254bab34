"""The modules PS-SR adds to Wan2.1: the pruned draft DiT with its fusion layers, LoRA adapters
that several roles share on one frozen DiT, LPIPS-VGG for the pixel loss and the (weight-free)
frequency-domain update.

Weights are never read here (``method.py`` loads them); shapes and names follow the release's
checkpoints (``fc_layers``) and diffusers' ``WanTransformer3DModel`` (everything else), so a
release file maps onto these modules key for key (``convert.py``).
"""

from __future__ import annotations

import contextlib
import math

import torch
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanRotaryPosEmbed,
    WanTimeTextImageEmbedding,
    WanTransformerBlock,
)
from torch import nn

from vsrkit.backbones.runtime import deterministic_values

# Modules that carry LoRA (release --lora_target_modules q,k,v,o,ffn.0,ffn.2, in diffusers names).
LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")


class PSSRDraftTransformer(nn.Module):
    """Wan2.1 DiT pruned to the kept blocks; before block ``j`` a ``Linear(2d -> d)`` maps
    ``[base feature j, own hidden state]`` back to ``d`` (``model_fn_wan_video_draft``, §3.6).

    The base feature ``j`` is what entered the base's block ``kept[j]`` in its one pass at the
    base timestep; the same features serve every draft step. Module names are diffusers'
    ``WanTransformer3DModel``'s, plus the release's ``fc_layers``.

    Args:
        config: The base transformer's constructor config (``WanTransformer3DModel``: heads,
            head dim, in/out channels, text/freq/ffn dims, patch size, eps, ...).
        num_blocks: Kept blocks (10 for the 30-layer 1.3B at ``k_select=1.5``).
    """

    _keep_in_fp32_modules = ["rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"]
    _repeated_blocks = ["WanTransformerBlock"]

    def __init__(self, config: dict, num_blocks: int):
        super().__init__()
        heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
        inner = heads * head_dim
        patch = tuple(config["patch_size"])
        self.patch_size = patch
        self.inner_dim = inner
        self.rope = WanRotaryPosEmbed(head_dim, patch, config.get("rope_max_seq_len", 1024))
        self.patch_embedding = nn.Conv3d(config["in_channels"], inner, kernel_size=patch, stride=patch)
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=inner, time_freq_dim=config["freq_dim"], time_proj_dim=inner * 6, text_embed_dim=config["text_dim"],
            image_embed_dim=config.get("image_dim"), pos_embed_seq_len=config.get("pos_embed_seq_len"))
        self.blocks = nn.ModuleList([
            WanTransformerBlock(inner, config["ffn_dim"], heads, config.get("qk_norm", "rms_norm_across_heads"),
                                config.get("cross_attn_norm", True), config.get("eps", 1e-6),
                                config.get("added_kv_proj_dim"))
            for _ in range(num_blocks)
        ])
        self.fc_layers = nn.ModuleList([nn.Linear(2 * inner, inner) for _ in range(num_blocks)])
        self.norm_out = FP32LayerNorm(inner, config.get("eps", 1e-6), elementwise_affine=False)
        out_channels = config.get("out_channels") or config["in_channels"]
        self.proj_out = nn.Linear(inner, out_channels * math.prod(patch))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, inner) / inner ** 0.5)
        self.gradient_checkpointing = False

    @torch.no_grad()
    def init_fusion_to_base(self) -> None:
        """``W = [I | 0]``, ``b = 0`` for every fusion layer (``train_draft.py``): at init each
        kept block sees exactly the base's feature (the identity acts on the first half of
        ``[base, own]``; the release's comment says the opposite, its code does this)."""
        for fc in self.fc_layers:
            fc.weight.zero_()
            fc.bias.zero_()
            fc.weight[:, : self.inner_dim] = torch.eye(self.inner_dim, dtype=fc.weight.dtype, device=fc.weight.device)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                base_features: list[torch.Tensor]) -> torch.Tensor:
        """One draft step.

        Args:
            hidden_states: ``(B, C_in, T, h, w)`` latents (``[z_t, condition]``), in the model dtype.
            timestep: ``(B,)`` on the 0..1000 scale.
            encoder_hidden_states: ``(B, L, text_dim)`` prompt embedding.
            base_features: One ``(B, N, d)`` tensor per kept block: the base's hidden state
                entering the matching base block.

        Returns:
            Velocity ``(B, C_out, T, h, w)`` in the model dtype.
        """
        if len(base_features) != len(self.blocks):
            raise ValueError(f"the draft has {len(self.blocks)} blocks but got {len(base_features)} base features.")
        # Copied from diffusers.models.transformers.transformer_wan.WanTransformer3DModel.forward (Wan2.1
        # text-to-video path), with the fusion before each block.
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.patch_size
        frames, rows, cols = num_frames // p_t, height // p_h, width // p_w
        rotary_emb = self.rope(hidden_states)
        hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
        temb, timestep_proj, encoder_hidden_states, _ = self.condition_embedder(timestep, encoder_hidden_states, None)
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        checkpoint = torch.is_grad_enabled() and self.gradient_checkpointing
        for block, fc, feature in zip(self.blocks, self.fc_layers, base_features):
            hidden_states = fc(torch.cat([feature.to(hidden_states.dtype), hidden_states], dim=-1))
            if checkpoint:
                hidden_states = torch.utils.checkpoint.checkpoint(
                    block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb, use_reentrant=False)
            else:
                hidden_states = block(hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_size, frames, rows, cols, p_t, p_h, p_w, -1)
        hidden_states = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` with named low-rank adapters; ``active`` picks the one that adds
    ``scale * B(A(x))`` (``None``: the frozen layer alone).

    One frozen DiT then serves PS-SR's three base-stage roles: the generator (adapter
    ``default``, peft's name in the release's ``base.safetensors``), the VSD fake score (adapter
    ``fake_score``) and the frozen real score (no adapter). The arithmetic is peft's ``Linear``
    LoRA: ``base(x) + lora_B(lora_A(x)) * alpha / r`` with ``alpha = r`` (§5.2).

    Args:
        base_layer: The frozen linear layer.
        adapters: ``{name: rank}``.
    """

    def __init__(self, base_layer: nn.Linear, adapters: dict[str, int]):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.ModuleDict({n: nn.Linear(base_layer.in_features, r, bias=False) for n, r in adapters.items()})
        self.lora_B = nn.ModuleDict({n: nn.Linear(r, base_layer.out_features, bias=False) for n, r in adapters.items()})
        self.scaling = {n: 1.0 for n in adapters}  # alpha = rank
        self.active: str | None = None

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.active is None:
            return out
        a, b = self.lora_A[self.active], self.lora_B[self.active]
        delta = b(a(x.to(a.weight.dtype))) * self.scaling[self.active]
        return out + delta.to(out.dtype)

    @classmethod
    def inject(cls, transformer: nn.Module, adapters: dict[str, int], seed: int = 0) -> dict[str, "LoRALinear"]:
        """Wrap every ``LORA_TARGETS`` linear of every block of ``transformer`` in place.

        Initialisation is peft's: ``A`` uniform in ``+-1/sqrt(in)`` (kaiming-uniform, a = sqrt(5)),
        ``B`` zero, so the adapters start as the identity; ``A`` comes from hash noise so the init
        is the same on every torch version. Adapter weights are float32 and train.

        Args:
            transformer: A diffusers ``WanTransformer3DModel``.
            adapters: ``{name: rank}``.
            seed: Changes every ``A``.

        Returns:
            ``{module path (diffusers names): layer}``.
        """
        layers = {}
        for i, block in enumerate(transformer.blocks):
            for path in LORA_TARGETS:
                parent_path, _, leaf = path.rpartition(".")
                parent = block.get_submodule(parent_path)
                base = parent[int(leaf)] if leaf.isdigit() else getattr(parent, leaf)
                layer = cls(base.requires_grad_(False), adapters).to(base.weight.device)
                for name in adapters:
                    a = layer.lora_A[name].weight
                    noise = deterministic_values(a.shape, f"lora.{i}.{path}.{name}", seed, device=a.device)
                    with torch.no_grad():
                        a.copy_(noise / math.sqrt(3.0 * a.shape[1]))
                        layer.lora_B[name].weight.zero_()
                for module in (layer.lora_A, layer.lora_B):
                    module.float().requires_grad_(True)
                if leaf.isdigit():
                    parent[int(leaf)] = layer
                else:
                    setattr(parent, leaf, layer)
                layers[f"blocks.{i}.{path}"] = layer
        return layers


class LPIPSVGG(nn.Module):
    """LPIPS v0.1 with the VGG16 backbone (``lpips.LPIPS(net='vgg')``, the release's pixel loss).

    ``features`` has torchvision's ``vgg16().features[:30]`` layout (so its weights load by
    name), ``lins`` the five 1x1 linear layers (``lin{k}.model.1`` in LPIPS files). Inputs are
    ``(N, 3, H, W)`` in [-1, 1] (``normalize=False``, as the release calls it); the output is
    ``(N, 1, 1, 1)``. No dropout: the release's network stays in eval mode.
    """

    CHANNELS = (64, 128, 256, 512, 512)
    # Ends of the five slices in `features` (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
    SLICE_ENDS = (4, 9, 16, 23, 30)

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for block, (out_ch, convs) in enumerate(zip((64, 128, 256, 512, 512), (2, 2, 3, 3, 3))):
            if block:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for _ in range(convs):
                layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU()]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.CHANNELS])
        # lpips ScalingLayer constants.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps, start = [], 0
        for end in self.SLICE_ENDS:
            x = self.features[start:end](x)
            taps.append(x)
            start = end
        return taps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        feats_p = self._taps((pred - self.shift) / self.scale)
        feats_t = self._taps((target - self.shift) / self.scale)
        total = 0.0
        for lin, fp, ft in zip(self.lins, feats_p, feats_t):
            fp = fp / (torch.sqrt(torch.sum(fp ** 2, dim=1, keepdim=True)) + 1e-10)
            ft = ft / (torch.sqrt(torch.sum(ft ** 2, dim=1, keepdim=True)) + 1e-10)
            total = total + lin((fp - ft) ** 2).mean(dim=[2, 3], keepdim=True)
        return total


class FrequencyDomainUpdate(nn.Module):
    """The FDU of ``inference_step_2.py`` (``fuse_patch``), frame by frame, in float32 (no weights).

    Luma only: ``Y = LP(Y_c) + alpha (w HP(Y_s) + (1 - w) HP(Y_c))`` with the per-pixel weight
    ``w = |HP(Y_s)| / (|HP(Y_s)| + |HP(Y_c)| + eps)``; chroma (U, V) and the outer ``border``
    pixels of the luma come from the consistent (base) input; RGB is clamped to [0, 1]. ``LP`` is a
    Butterworth low-pass of the centred orthonormal 2-D FFT.

    Args:
        alpha: High-frequency strength (release script 1.0, paper 0.6).
        cutoff: Butterworth cut-off in cycles per pixel.
        order: Butterworth order.
        border: Edge pixels whose luma is the consistent input's.
        eps: Added to the weight's denominator.
    """

    # BT.601 analog YUV of inference_step_2.py; its inverse (yuv_to_rgb) is the release's, not exact.
    RGB_TO_YUV = ((0.299, 0.587, 0.114), (-0.14713, -0.28886, 0.436), (0.615, -0.51499, -0.10001))

    def __init__(self, alpha: float = 1.0, cutoff: float = 0.20, order: int = 2, border: int = 2, eps: float = 1e-6):
        super().__init__()
        self.alpha, self.cutoff, self.order, self.border, self.eps = alpha, cutoff, order, border, eps

    @classmethod
    def rgb_to_yuv(cls, rgb: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` RGB -> YUV with the release's constants (same op order)."""
        r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
        return torch.cat([m[0] * r + m[1] * g + m[2] * b for m in cls.RGB_TO_YUV], dim=1)

    @staticmethod
    def yuv_to_rgb(yuv: torch.Tensor) -> torch.Tensor:
        """The release's inverse: ``R = Y + 1.13983 V``, ``G = Y - 0.39465 U - 0.5806 V``, ``B = Y + 2.03211 U``."""
        y, u, v = yuv[:, 0:1], yuv[:, 1:2], yuv[:, 2:3]
        return torch.cat([y + 1.13983 * v, y - 0.39465 * u - 0.5806 * v, y + 2.03211 * u], dim=1)

    def gain(self, height: int, width: int, device=None) -> torch.Tensor:
        """``(1, 1, H, W)`` gain ``1 / (1 + (r / fc)^(2n))`` on the release's grid: ``linspace(-0.5,
        0.5, N)`` per axis (not the FFT bins; even sizes have no exact DC sample)."""
        u = torch.linspace(-0.5, 0.5, width, device=device).view(1, 1, 1, width)
        v = torch.linspace(-0.5, 0.5, height, device=device).view(1, 1, height, 1)
        r = torch.sqrt(u ** 2 + v ** 2)
        return 1.0 / (1.0 + (r / self.cutoff) ** (2 * self.order))

    @staticmethod
    def lowpass(y: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """Low-pass of ``(N, 1, H, W)`` frames: centred orthonormal FFT, ``* gain``, back.

        The release calls ``fftshift`` without ``dim`` on ``(T, 1, H, W)``; the extra shifts of the
        frame and channel axes cancel in ``ifftshift`` because the gain is the same for every frame.
        """
        spectrum = torch.fft.fftshift(torch.fft.fft2(y, norm="ortho"), dim=(-2, -1))
        return torch.real(torch.fft.ifft2(torch.fft.ifftshift(spectrum * gain, dim=(-2, -1)), norm="ortho"))

    def forward(self, consistent: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
        """``consistent`` (the base's) and ``sharp`` (the draft's) ``(N, 3, H, W)`` in [0, 1] ->
        ``(N, 3, H, W)`` float32 in [0, 1]."""
        if consistent.shape != sharp.shape or consistent.dim() != 4 or consistent.shape[1] != 3:
            raise ValueError(f"FDU inputs must both be (N, 3, H, W). Got {tuple(consistent.shape)} and "
                             f"{tuple(sharp.shape)}.")
        yuv_c = self.rgb_to_yuv(consistent.float())
        y_c, y_s = yuv_c[:, 0:1], self.rgb_to_yuv(sharp.float())[:, 0:1]
        gain = self.gain(y_c.shape[-2], y_c.shape[-1], device=y_c.device)
        low_c = self.lowpass(y_c, gain)
        high_c, high_s = y_c - low_c, y_s - self.lowpass(y_s, gain)
        weight = high_s.abs() / (high_s.abs() + high_c.abs() + self.eps)
        y = low_c + self.alpha * (weight * high_s + (1.0 - weight) * high_c)
        if self.border > 0:
            h, w = y.shape[-2:]
            inside = torch.zeros_like(y, dtype=torch.bool)
            inside[..., self.border:h - self.border, self.border:w - self.border] = True
            y = torch.where(inside, y, y_c)
        return self.yuv_to_rgb(torch.cat([y, yuv_c[:, 1:]], dim=1)).clamp(0.0, 1.0)


class BlockInputTap(nn.Module):
    """Stands in for a block during one forward and keeps the hidden state entering it.

    Args:
        block: The block it wraps.
        store: The list it writes to.
        slot: Its index in ``store``.
    """

    def __init__(self, block: nn.Module, store: list, slot: int):
        super().__init__()
        self.block, self.store, self.slot = block, store, slot

    def forward(self, hidden_states, *args, **kwargs):
        self.store[self.slot] = hidden_states
        return self.block(hidden_states, *args, **kwargs)

    @staticmethod
    @contextlib.contextmanager
    def capture(transformer: nn.Module, indices: list[int]):
        """Within the block, ``transformer.blocks[b]`` for ``b`` in ``indices`` record their input
        hidden states into the yielded list (same order); the blocks are restored afterwards."""
        store: list = [None] * len(indices)
        originals = {b: transformer.blocks[b] for b in indices}
        try:
            for slot, b in enumerate(indices):
                transformer.blocks[b] = BlockInputTap(originals[b], store, slot)
            yield store
        finally:
            for b, block in originals.items():
                transformer.blocks[b] = block
