"""TurboVSR: LTX-Video upscaler with factorized conditioning and a non-uniform shortcut model.

Paper: Wang et al., "TurboVSR: Fantastic Video Upscalers and Where to Find Them", ICCV 2025
(arXiv 2506.23618). No code or weights were released; unpublished constants are options of
:class:`~vsrkit.methods.turbovsr.config.TurboVSRConfig` marked "reconstruction".

One window (``upscale``):

1. the LR frames are upsampled to the output size and VAE-encoded per temporal segment
   (LTX-VAE: 32x32 spatial, 8x temporal, 128 channels; frame 0 of a segment alone is latent 0);
2. **image SR** (factorized conditioning, stage 1): latent 0 of the segment is super-resolved as a
   one-frame video, starting from noise;
3. **video SR** (stage 2): the segment is denoised with its latent frame 0 replaced by that clean
   HR latent (per-token timestep 0) and every frame conditioned on its LR latent;
4. each denoising pass takes ``steps`` Euler steps on the SD3-shifted sigma grid; each step is
   conditioned on its length snapped to the nearest trained step size (non-uniform shortcut
   model); at every step the latent is cut into spatial tiles, each tile predicted on its own and
   the velocities blended with Gaussian weights, all tiles reading the same noise;
5. segments overlap by at least 9 frames (1 + 8); merging drops the first-frame latent of every
   later segment and cross-fades the shared video latents; the merged latent is decoded in
   overlapping chunks so memory stays bounded.

Training (``training_step``): image-SR and video-SR steps alternate; flow matching with
``v = noise - x0`` on shifted timesteps, conditioned on the finest step size, plus shortcut
self-consistency targets (two half steps of the EMA model) for a fraction of each batch; the LR
latent gets 0-300 steps of DDPM noise and is sometimes dropped (text-to-image/video).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Callable

import torch

from vsrkit.backbones.loading import write_pipeline_folder
from vsrkit.errors import UserError, WeightsError
from vsrkit.methods.protocol import WindowContext, WindowSpec
from vsrkit.methods.shared import sample_seed, upsample_frames
from vsrkit.methods.turbovsr.config import TurboVSRConfig

logger = logging.getLogger(__name__)

# Pixel frames per latent frame after the first (LTX-VAE temporal compression).
FRAMES_PER_LATENT = 8
# Output pixels per latent (and token) edge: LTX-VAE spatial compression, transformer patch 1.
SPATIAL_COMPRESSION = 32
# File holding the adapter (condition projection, step-size embedding) beside an exported pipeline.
ADAPTER_FILE = "turbovsr.safetensors"
CONFIG_FILE = "turbovsr.json"
# Options that must match between training and inference (the step grid the model learnt).
_SCHEDULE_FIELDS = ("shift", "finest_steps", "base_steps", "cond_merge", "cond_block", "cond_scale")


# --------------------------------------------------------------------------------------------
# Timesteps and step sizes (non-uniform shortcut model, paper §3.4)
# --------------------------------------------------------------------------------------------


def shift_sigma(tau, shift: float):
    """SD3 time shift: ``sigma = s tau / (1 + (s - 1) tau)`` (tau=1 noise, tau=0 data)."""
    return shift * tau / (1.0 + (shift - 1.0) * tau)


def unshift_sigma(sigma, shift: float):
    """Inverse of :func:`shift_sigma`: ``tau = sigma / (s - (s - 1) sigma)``."""
    return sigma / (shift - (shift - 1.0) * sigma)


def sampling_sigmas(steps: int, shift: float) -> list[float]:
    """The ``steps + 1`` sigmas of an Euler pass: the uniform tau grid ``1 - i/steps`` shifted."""
    return [float(shift_sigma(1.0 - i / steps, shift)) for i in range(steps + 1)]


def base_step_sizes(base: int, finest_steps: int) -> list[float]:
    """Step sizes spanned by base ``base / M``: ``base * 2^k / M`` for ``k >= 0`` while ``<= 1``."""
    sizes, k = [], 0
    while base * 2**k <= finest_steps:
        sizes.append(base * 2**k / finest_steps)
        k += 1
    return sizes


def step_size_set(finest_steps: int, base_steps: list[int]) -> list[float]:
    """Every step size the model is trained on: the union over the bases, sorted."""
    return sorted({size for base in base_steps for size in base_step_sizes(base, finest_steps)})


def select_step_sizes(lengths: list[float], sizes: list[float], mode: str = "nearest") -> list[float]:
    """Step-size conditioning of each Euler step (paper: nearest-neighbour step selection).

    Args:
        lengths: Actual step lengths ``sigma_i - sigma_{i+1}`` on the shifted grid.
        sizes: The trained step sizes (:func:`step_size_set`).
        mode: ``nearest`` snaps each length to the closest trained size (the smaller one on a
            tie); ``exact`` passes the lengths through.
    """
    if mode == "exact":
        return [float(v) for v in lengths]
    return [min(sizes, key=lambda s: (abs(s - v), s)) for v in lengths]


def euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """``x + (sigma_next - sigma) v``: one Euler step of the flow ``dx/dsigma = v`` (``v = noise - x0``)."""
    return x + (sigma_next - sigma) * velocity


def shortcut_target(predict: Callable, x: torch.Tensor, sigma: torch.Tensor, step_size: torch.Tensor,
                    clip: float, keep_clean: Callable | None = None) -> torch.Tensor:
    """Self-consistency target of a shortcut of size ``step_size`` (Frans et al. 2024, Eq. 4).

    Two half steps of the (EMA) model: ``v1 = u(x, sigma, d/2)``, ``x' = x - (d/2) v1``,
    ``v2 = u(x', sigma - d/2, d/2)``; target ``clip((v1 + v2) / 2)``
    (shortcut-models ``targets_shortcut.py``: clip to [-4, 4]).

    Args:
        predict: ``predict(x, sigma (B,), step (B,)) -> velocity``, the teacher, without grad.
        x: ``(B, ...)`` noisy latents at ``sigma``.
        sigma: ``(B,)`` noise levels.
        step_size: ``(B,)`` full step sizes ``d`` (``sigma - d >= 0``).
        clip: Clip of the target (and of ``x'``), as the reference code.
        keep_clean: Applied to ``x'`` to put clean conditioning latents back (frame 0 in video SR).
    """
    half = step_size / 2
    shape = (-1,) + (1,) * (x.dim() - 1)
    v1 = predict(x, sigma, half)
    x_mid = (x - half.reshape(shape) * v1).clamp(-clip, clip)
    if keep_clean is not None:
        x_mid = keep_clean(x_mid)
    v2 = predict(x_mid, sigma - half, half)
    return ((v1 + v2) / 2).clamp(-clip, clip)


def is_image_step(step: int, ratio: float) -> bool:
    """Whether training step ``step`` trains image SR: ``floor((step + 1) r) > floor(step r)``, so a
    ratio of 0.5 alternates video, image, video, image... deterministically (resumable)."""
    return math.floor((step + 1) * ratio) > math.floor(step * ratio)


def ddpm_alphas_cumprod(schedule: str = "linear", num_steps: int = 1000) -> torch.Tensor:
    """``abar_k = prod_{i<k} (1 - beta_i)`` for ``k = 0..num_steps`` (``abar_0 = 1``), float64.

    ``linear``: Ho et al. 2020, betas from 1e-4 to 0.02; ``scaled_linear``: Stable Diffusion,
    betas ``linspace(sqrt(0.00085), sqrt(0.012)) ** 2``.
    """
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, num_steps, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_steps, dtype=torch.float64) ** 2
    else:
        raise ValueError(f"`schedule` must be one of ['linear', 'scaled_linear']. Got {schedule!r}.")
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, dim=0)])


# --------------------------------------------------------------------------------------------
# Tiles, segments and chunked decoding (paper §3.5)
# --------------------------------------------------------------------------------------------


def plan_tiles(extent: int, tile: int | None, overlap: int) -> list[tuple[int, int]]:
    """Cut ``[0, extent)`` into tiles of exactly ``tile`` (the model's size) with at least ``overlap``
    shared; the last tile is aligned to the end. One range when ``tile`` is None or covers it all."""
    if tile is None or extent <= tile:
        return [(0, extent)]
    stride = max(1, tile - overlap)
    starts = list(range(0, extent - tile, stride)) + [extent - tile]
    return [(s, s + tile) for s in starts]


def gaussian_weights(length: int, sigma_fraction: float) -> torch.Tensor:
    """``exp(-(j - c)^2 / (2 (f L)^2))`` for ``j`` in ``[0, L)``, ``c = (L - 1)/2`` (float64)."""
    j = torch.arange(length, dtype=torch.float64)
    centre = (length - 1) / 2
    return torch.exp(-((j - centre) ** 2) / (2.0 * (sigma_fraction * length) ** 2))


def blend_tiles(predict: Callable, x: torch.Tensor, tile: int | None, overlap: int, sigma_fraction: float
                ) -> torch.Tensor:
    """MultiDiffusion: predict every spatial tile of ``x`` and blend with Gaussian weights.

    Args:
        predict: ``predict(y0, y1, x0, x1) -> (B, C, F, y1 - y0, x1 - x0)`` velocity of that tile
            (it slices its own inputs, so every tile reads the same global noise and condition).
        x: ``(B, C, F, h, w)``; only its shape, dtype and device are used.
        tile: Tile edge in latents (``None``: whole).
        overlap: Latents shared by neighbouring tiles.
        sigma_fraction: Gaussian std as a fraction of the tile edge.

    Returns:
        ``sum_k w_k v_k / sum_k w_k`` over the tiles covering each latent position.
    """
    h, w = x.shape[-2:]
    rows, cols = plan_tiles(h, tile, overlap), plan_tiles(w, tile, overlap)
    if len(rows) == 1 and len(cols) == 1:
        return predict(0, h, 0, w)
    total = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    weight_sum = torch.zeros(h, w, dtype=torch.float32, device=x.device)
    for y0, y1 in rows:
        wy = gaussian_weights(y1 - y0, sigma_fraction)
        for x0, x1 in cols:
            weight = (wy[:, None] * gaussian_weights(x1 - x0, sigma_fraction)[None, :]).to(x.device, torch.float32)
            total[..., y0:y1, x0:x1] += predict(y0, y1, x0, x1).float() * weight
            weight_sum[y0:y1, x0:x1] += weight
    return total / weight_sum


def plan_segments(frames: int, segment: int, overlap: int) -> list[tuple[int, int]]:
    """Temporal segments ``[start, stop)`` of a ``8k+1``-frame window: starts are multiples of 8,
    lengths ``8k+1``, consecutive segments share ``overlap`` frames (the last may be shorter)."""
    if (frames - 1) % FRAMES_PER_LATENT or (segment - 1) % FRAMES_PER_LATENT or (overlap - 1) % FRAMES_PER_LATENT:
        raise ValueError(f"frames, segment and overlap must be 8k+1. Got {frames}, {segment}, {overlap}.")
    if frames <= segment:
        return [(0, frames)]
    stride = segment - overlap
    ranges, start = [], 0
    while True:
        stop = min(start + segment, frames)
        ranges.append((start, stop))
        if stop >= frames:
            return ranges
        start += stride


def _ramp(n: int) -> torch.Tensor:
    """Rising cross-fade weights ``(j + 1) / (n + 1)``; with the falling mirror they sum to 1."""
    return torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)


def merge_segments(latents: list[torch.Tensor], starts: list[int], total: int) -> torch.Tensor:
    """Merge denoised segment latents into the window's latent (paper Fig. 4).

    Latent ``j`` of a segment starting at pixel frame ``8m`` covers global latent ``m + j`` for
    ``j >= 1``; its latent 0 (frame ``8m`` alone, the clean first-frame condition) has no global
    counterpart and is dropped, except for the first segment, whose latent 0 is global latent 0.
    Latents shared by consecutive segments are cross-faded linearly (weights normalised where more
    than two segments share a latent).

    Args:
        latents: ``(B, C, F_i, h, w)`` per segment, in order.
        starts: First pixel frame of each segment (multiples of 8, the first 0).
        total: Latent frames of the window.

    Returns:
        ``(B, C, total, h, w)``.
    """
    if not latents or starts[0] != 0:
        raise ValueError("the first segment must start at frame 0.")
    spans = []  # (global first latent, local first latent, count) kept from each segment
    for i, (z, start) in enumerate(zip(latents, starts)):
        if start % FRAMES_PER_LATENT:
            raise ValueError(f"segment starts must be multiples of {FRAMES_PER_LATENT}. Got {start}.")
        local = 0 if i == 0 else 1
        spans.append((start // FRAMES_PER_LATENT + local, local, z.shape[2] - local))
    if spans[-1][0] + spans[-1][2] != total:
        raise ValueError(f"segments end at latent {spans[-1][0] + spans[-1][2]}, the window has {total}.")
    out = torch.zeros(*latents[0].shape[:2], total, *latents[0].shape[3:], dtype=torch.float32,
                      device=latents[0].device)
    weight_sum = torch.zeros(total, dtype=torch.float64)
    for i, ((g0, l0, n), z) in enumerate(zip(spans, latents)):
        weights = torch.ones(n, dtype=torch.float64)
        if i > 0:
            shared = spans[i - 1][0] + spans[i - 1][2] - g0
            weights[:shared] = _ramp(shared)
        if i + 1 < len(spans):
            shared = g0 + n - spans[i + 1][0]
            weights[n - shared:] *= _ramp(shared).flip(0)
        weight_sum[g0:g0 + n] += weights
        fade = weights.to(out.device, torch.float32).reshape(1, 1, n, 1, 1)
        out[:, :, g0:g0 + n] += z[:, :, l0:l0 + n].float() * fade
    if torch.any(weight_sum == 0):
        raise ValueError("the segments leave latent frames uncovered.")
    return out / weight_sum.to(out.device, torch.float32).reshape(1, 1, total, 1, 1)


def plan_decode_chunks(num_latents: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """Latent ranges ``[a, b)`` decoded one at a time; chunks after the first are decoded with latent
    ``a - 1`` in front (whose single output frame is dropped), so chunk ``[a, b)`` yields pixel
    frames ``8a - 7 .. 8(b - 1)``. Consecutive chunks share ``overlap`` latents (``8 overlap`` frames)."""
    if num_latents <= chunk:
        return [(0, num_latents)]
    ranges = [(0, chunk)]
    while ranges[-1][1] < num_latents:
        a = ranges[-1][1] - overlap
        ranges.append((a, min(a + chunk - 1, num_latents)))
    return ranges


def decode_in_chunks(decode: Callable, z: torch.Tensor, chunk: int, overlap: int) -> torch.Tensor:
    """Decode ``z (B, C, F, h, w)`` with :func:`plan_decode_chunks`, cross-fading shared frames.

    Args:
        decode: ``decode(latents) -> (B, 3, 8(n - 1) + 1, H, W)`` for ``n`` latent frames.
        z: The latent.
        chunk: Latents per decode (the first chunk; later ones decode ``chunk`` with their context).
        overlap: Latents shared by consecutive chunks (> 0).

    Returns:
        ``(B, 3, 8(F - 1) + 1, H, W)`` float32.
    """
    ranges = plan_decode_chunks(z.shape[2], chunk, overlap)
    if len(ranges) == 1:
        return decode(z).float()
    out, done = None, 0  # frames of `out` already final
    for i, (a, b) in enumerate(ranges):
        video = decode(z[:, :, max(a - 1, 0):b]).float()
        if a > 0:
            video = video[:, :, 1:]
        first = 0 if a == 0 else FRAMES_PER_LATENT * a - (FRAMES_PER_LATENT - 1)
        if out is None:
            frames = FRAMES_PER_LATENT * (z.shape[2] - 1) + 1
            out = torch.zeros(*video.shape[:2], frames, *video.shape[3:], dtype=torch.float32, device=video.device)
        shared = done - first
        if shared > 0:
            fade = _ramp(shared).to(video.device, torch.float32).reshape(1, 1, shared, 1, 1)
            out[:, :, first:done] = out[:, :, first:done] * (1 - fade) + video[:, :, :shared] * fade
        out[:, :, done:first + video.shape[2]] = video[:, :, max(shared, 0):]
        done = first + video.shape[2]
    return out


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def lr_spatial_multiple(scale: int) -> int:
    """Smallest LR multiple whose upscaled size is a multiple of 32 (8 at x4)."""
    return SPATIAL_COMPRESSION // math.gcd(SPATIAL_COMPRESSION, scale)


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


class TurboVSRMethod:
    """TurboVSR as a vsrkit method (inference at any size and length, and training).

    Args:
        config: The method options.
        backbone: An ``ltx`` :class:`~vsrkit.backbones.config.BackboneConfig` (``ltx-video-2b`` with
            ``path=<LTX-Video 0.9.1 checkpoint or diffusers folder>``, or ``ltx-video-2b-tiny``).
        scale: Upscaling factor (any integer; the LR is padded so the output is a multiple of 32).
    """

    def __init__(self, config: TurboVSRConfig | None = None, backbone=None, scale: int = 4):
        self.config = config if config is not None else TurboVSRConfig()
        if backbone is None:
            raise ValueError("turbovsr needs an ltx backbone (backbone=ltx-video-2b).")
        if getattr(backbone, "family", None) != "ltx":
            raise ValueError(f"turbovsr needs an ltx backbone. Got family {getattr(backbone, 'family', None)!r}.")
        if scale < 1:
            raise ValueError(f"`scale` must be >= 1. Got {scale}.")
        weights = Path(self.config.weights).expanduser() if self.config.weights is not None else None
        if weights is not None and not (weights.is_file() or (weights / ADAPTER_FILE).is_file()):
            raise UserError(f"`method.weights={self.config.weights}` is neither a file nor a folder holding "
                            f"`{ADAPTER_FILE}`; give the file `vsrkit train` exports (in <output_dir>/export/) "
                            f"or leave it null.")
        from vsrkit.backbones.presets import PRESETS

        preset = PRESETS.get(backbone.preset)
        if preset is not None:
            layers = int(backbone.transformer_overrides.get("num_layers", preset.transformer["num_layers"]))
            if self.config.cond_block >= layers:
                raise UserError(f"`method.cond_block` must be below the {layers} transformer blocks of "
                                f"`{backbone.preset}`. Got {self.config.cond_block}.")
        self.backbone_config = backbone
        self.scale = int(scale)
        self.backbone = None  # built by load() or setup_training()
        self.model = None  # TurboVSRTransformer
        self._prompts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._ema = None
        self._frozen: set[int] = set()

    # --- building ------------------------------------------------------------------------------

    def window_spec(self) -> WindowSpec:
        """``8k+1`` frames, LR padded (replicating edges) so the output is a multiple of 32; the
        engine's windows bound memory, the method tiles and segments inside a window itself."""
        c = self.config
        return WindowSpec(
            scale=self.scale, frame_multiple=FRAMES_PER_LATENT, frame_offset=1,
            spatial_multiple=lr_spatial_multiple(self.scale), pad_mode="replicate",
            window=c.window, overlap=c.overlap if c.window is not None else 0, tile=None,
        )

    def _build(self, device: torch.device, dtype: torch.dtype | None) -> None:
        from vsrkit.backbones import build_backbone
        from vsrkit.backbones.runtime import apply_attention, deterministic_init_
        from vsrkit.methods.turbovsr.model import CrossNormalization, TurboVSRAdapter, TurboVSRTransformer

        c = self.config
        self.backbone = bb = build_backbone(self.backbone_config, device, dtype)
        tr = bb.transformer
        if bb.vae.spatial_compression != SPATIAL_COMPRESSION or bb.vae.temporal_compression != FRAMES_PER_LATENT:
            raise WeightsError(f"turbovsr needs the LTX-VAE's 32x spatial / 8x temporal compression. Got "
                               f"{bb.vae.spatial_compression}x / {bb.vae.temporal_compression}x.")
        if tr.config.patch_size != 1 or tr.config.patch_size_t != 1 or tr.config.in_channels != bb.vae.latent_channels:
            raise WeightsError(f"turbovsr needs an LTX transformer with patch size 1 and {bb.vae.latent_channels} "
                               f"input channels. Got patch {tr.config.patch_size}/{tr.config.patch_size_t}, "
                               f"{tr.config.in_channels} channels.")
        dim = tr.config.num_attention_heads * tr.config.attention_head_dim
        adapter = TurboVSRAdapter(bb.vae.latent_channels, dim)
        deterministic_init_(adapter, seed=self.backbone_config.seed + 2)
        with torch.no_grad():
            if c.step_embedding_init == "zero":
                adapter.step_embed.embedder.linear_2.weight.zero_()
                adapter.step_embed.embedder.linear_2.bias.zero_()
            else:
                adapter.step_embed.embedder.load_state_dict(tr.time_embed.emb.timestep_embedder.state_dict())
        self._load_adapter(adapter)
        adapter.to(device=bb.device, dtype=next(tr.parameters()).dtype)
        cross_norm = CrossNormalization(c.cond_scale, c.cond_merge, c.cond_eps)
        try:
            self.model = TurboVSRTransformer(tr, adapter, cross_norm, c.cond_block)
        except ValueError as err:
            raise UserError(f"`method.cond_block`: {err}") from None
        if self.backbone_config.attention in ("cudnn", "flash", "efficient", "math"):
            # These pin one SDPA kernel through hooks on a module's forward; the transformer's own
            # forward is not called here (the loop above replaces it), so pin on the wrapper.
            apply_attention(self.model, self.backbone_config.attention)

    def _adapter_file(self) -> Path | None:
        given = self.config.weights
        if given is not None:
            path = Path(given).expanduser()
            return path / ADAPTER_FILE if path.is_dir() else path
        base = self.backbone_config.path
        if base is not None and (Path(base).expanduser() / ADAPTER_FILE).is_file():
            return Path(base).expanduser() / ADAPTER_FILE
        return None

    def _load_adapter(self, adapter) -> None:
        path = self._adapter_file()
        if path is None:
            if not self.backbone.preset.tiny:
                logger.warning("turbovsr: no `%s` (method.weights, or beside backbone.path): the condition "
                               "projection and step embedding are untrained", ADAPTER_FILE)
            return
        if not path.is_file():
            raise WeightsError(f"`method.weights`: no `{ADAPTER_FILE}` at {path}.")
        from safetensors import safe_open
        from safetensors.torch import load_file

        state = load_file(str(path))
        expected = adapter.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise WeightsError(f"`{path}` is not a TurboVSR adapter for this backbone: "
                               f"{'missing ' + missing[0] if missing else 'unexpected ' + unexpected[0]} "
                               f"({len(missing)} missing, {len(unexpected)} unexpected keys).")
        for key, value in expected.items():
            if tuple(state[key].shape) != tuple(value.shape):
                raise WeightsError(f"`{path}`: `{key}` has shape {tuple(state[key].shape)}, this backbone needs "
                                   f"{tuple(value.shape)}.")
        adapter.load_state_dict(state, strict=True)
        with safe_open(str(path), framework="pt") as f:
            saved = json.loads((f.metadata() or {}).get("turbovsr_config", "{}"))
        now = dataclasses.asdict(self.config)
        differ = [k for k in _SCHEDULE_FIELDS if k in saved and saved[k] != now[k]]
        if differ:
            logger.warning("turbovsr: %s was trained with %s; this run uses %s", path,
                           {k: saved[k] for k in differ}, {k: now[k] for k in differ})
        logger.info("turbovsr: adapter weights from %s", path)

    def load(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        """Build the backbone (weights from ``backbone.path``) and the TurboVSR adapter (weights from
        ``method.weights`` or ``<backbone.path>/turbovsr.safetensors``), and fetch the prompt embedding.

        Args:
            device: Where the models run.
            dtype: Transformer dtype; ``None`` uses ``backbone.dtype``.
        """
        self._build(device, dtype)
        self.model.eval().requires_grad_(False)
        self._prompt(self.config.prompt)

    def _require_loaded(self) -> None:
        if self.model is None:
            raise RuntimeError("TurboVSRMethod.load() (or setup_training()) must run before this call.")

    def _prompt(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeds (1, L, D), mask (1, L))`` on the device (cached on disk by the backbone, here in memory)."""
        if text not in self._prompts:
            self._prompts[text] = self.backbone.prompt_embeds(text)
        return self._prompts[text]

    # --- pieces of inference -----------------------------------------------------------------------

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """VAE-encode ``(B, 3, T, H, W)`` in [-1, 1] (``T = 8k+1``) -> normalised ``(B, C, (T-1)/8+1, H/32, W/32)``."""
        return self.backbone.vae.encode(video, sample=self.config.posterior == "sample", generator=generator)

    def _rope_scale(self) -> tuple:
        vae = self.backbone.vae
        # LTXPipeline's RoPE scale at its default 25 fps: (temporal compression / fps, spatial, spatial).
        return (vae.temporal_compression / 25.0, vae.spatial_compression, vae.spatial_compression)

    def predict_velocity(self, x: torch.Tensor, sigma: torch.Tensor, step_size: torch.Tensor | None,
                         condition: torch.Tensor | None, first_clean: torch.Tensor | None = None,
                         cond_keep: torch.Tensor | None = None, prompt: tuple | None = None) -> torch.Tensor:
        """One transformer forward (no tiles): velocity ``(B, C, F, h, w)`` float32."""
        embeds, mask = prompt if prompt is not None else self._prompt(self.config.prompt)
        return self.model(x, sigma, embeds, mask, step_size=step_size, condition=condition, cond_keep=cond_keep,
                          first_clean=first_clean, rope_scale=self._rope_scale())

    def timed_calls(self) -> list[tuple]:
        """``(object, attribute, label)`` of the calls ``tools/bench_method.py`` times: every
        transformer forward, and the whole stage-1 (image SR) pass."""
        return [(self, "predict_velocity", "transformer"), (self, "super_resolve_image", "stage1_image_sr")]

    def step_schedule(self, steps: int | None = None) -> tuple[list[float], list[float]]:
        """``(sigmas (steps + 1), step-size conditioning (steps))`` of one denoising pass."""
        c = self.config
        sigmas = sampling_sigmas(steps or c.steps, c.shift)
        lengths = [sigmas[i] - sigmas[i + 1] for i in range(len(sigmas) - 1)]
        return sigmas, select_step_sizes(lengths, step_size_set(c.finest_steps, c.base_steps), c.step_selection)

    def denoise(self, x: torch.Tensor, condition: torch.Tensor, first: torch.Tensor | None = None,
                on_step: Callable | None = None) -> torch.Tensor:
        """``steps`` Euler steps from ``x`` (noise) to a clean latent, tiled MultiDiffusion-style.

        Args:
            x: ``(B, C, F, h, w)`` initial noise (the caller draws it once for the whole window).
            condition: ``(B, C, F, h, w)`` LR latent.
            first: ``(B, C, 1, h, w)`` clean HR latent of frame 0 (video SR), or ``None`` (image SR).
            on_step: Called with the number of steps done.

        Returns:
            ``(B, C, F, h, w)`` float32.
        """
        c = self.config
        b = x.shape[0]
        device = x.device
        first_clean = torch.ones(b, dtype=torch.bool, device=device) if first is not None else None
        tile = None if c.tile is None else c.tile // SPATIAL_COMPRESSION
        overlap = c.tile_overlap // SPATIAL_COMPRESSION
        sigmas, sizes = self.step_schedule()
        x = x.float()
        if first is not None:
            x[:, :, :1] = first
        for i, (size, sigma) in enumerate(zip(sizes, sigmas[:-1])):
            sigma_t = torch.full((b,), sigma, device=device)
            size_t = torch.full((b,), size, device=device)

            def tile_velocity(y0, y1, x0, x1, x=x, sigma_t=sigma_t, size_t=size_t):
                return self.predict_velocity(x[..., y0:y1, x0:x1], sigma_t, size_t, condition[..., y0:y1, x0:x1],
                                             first_clean)

            velocity = blend_tiles(tile_velocity, x, tile, overlap, c.tile_sigma)
            x = euler_step(x, velocity, sigma, sigmas[i + 1])
            if first is not None:
                x[:, :, :1] = first
            if on_step is not None:
                on_step(i + 1)
        return x

    def super_resolve_image(self, lr_latent: torch.Tensor, noise: torch.Tensor, on_step: Callable | None = None
                            ) -> torch.Tensor:
        """Factorized conditioning, stage 1: one-frame LR latent ``(B, C, 1, h, w)`` -> HR latent."""
        return self.denoise(noise, lr_latent, None, on_step)

    def decode(self, z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Latent ``(B, C, F, h, w)`` -> ``(B, 3, 8(F-1)+1, 32h, 32w)`` in [-1, 1], in chunks of
        ``decode_frames`` cross-faded over ``decode_overlap`` frames."""
        c = self.config
        chunk = (c.decode_frames - 1) // FRAMES_PER_LATENT + 1
        overlap = c.decode_overlap // FRAMES_PER_LATENT
        return decode_in_chunks(lambda part: self.backbone.vae.decode(part, generator=generator), z, chunk, overlap)

    def _previous_first_frame(self, previous: torch.Tensor, local_latent: int, generator) -> torch.Tensor:
        """HR latent of pixel frame ``8 j`` of the previous segment (``j = local_latent``): latents
        ``j-1, j`` decoded (the last output frame is ``8 j``), that frame re-encoded alone."""
        frames = self.backbone.vae.decode(previous[:, :, local_latent - 1:local_latent + 1], generator=generator)
        return self.encode(frames[:, :, -1:], generator)

    # --- the window --------------------------------------------------------------------------------

    @torch.no_grad()
    def upscale(self, lq: torch.Tensor, context: WindowContext) -> torch.Tensor:
        """One window.

        Args:
            lq: ``(B, 3, T, H, W)`` float32 in [-1, 1], ``T = 8k+1`` (1 for an image), ``H, W`` padded
                so that ``H * scale`` and ``W * scale`` are multiples of 32.
            context: The window's seeded generator (the fixed initial noise) and progress callback.

        Returns:
            ``(B, 3, T, H*scale, W*scale)`` float32 in [-1, 1].
        """
        self._require_loaded()
        c = self.config
        b, _, t, h, w = lq.shape
        size = (h * self.scale, w * self.scale)
        if (t - 1) % FRAMES_PER_LATENT or size[0] % SPATIAL_COMPRESSION or size[1] % SPATIAL_COMPRESSION:
            raise ValueError(f"turbovsr windows must have 8k+1 frames and an output size that is a multiple of 32. "
                             f"Got T={t}, output {size}.")
        generator = context.generator
        device = self.backbone.device
        segments = plan_segments(t, c.segment, c.segment_overlap)
        latent_shape = (b, self.backbone.vae.latent_channels, (t - 1) // FRAMES_PER_LATENT + 1,
                        size[0] // SPATIAL_COMPRESSION, size[1] // SPATIAL_COMPRESSION)
        # The fixed initial noise: drawn once for the window, so overlapping tiles and segments
        # start from the same values.
        noise = torch.randn(latent_shape, generator=generator, device=generator.device if generator else "cpu")
        noise = noise.to(device)
        passes = len(segments) * (1 if t == 1 else 2)
        results = []
        for index, (start, stop) in enumerate(segments):
            context.stage("encode", index, len(segments))
            hr = upsample_frames(lq[:, :, start:stop].to(device).float(), size, c.upscale_mode).clamp(-1.0, 1.0)
            condition = self.encode(hr, generator)
            del hr
            done = index * (1 if t == 1 else 2) * c.steps

            def progress(i, done=done):
                context.stage("denoise", done + i, passes * c.steps)

            if index == 0 or c.segment_condition == "image":
                image_noise = noise[:, :, :1] if index == 0 else torch.randn(
                    (b, *latent_shape[1:2], 1, *latent_shape[3:]), generator=generator,
                    device=generator.device if generator else "cpu").to(device)
                first = self.super_resolve_image(condition[:, :, :1], image_noise, progress)
            else:
                previous_start = segments[index - 1][0]
                first = self._previous_first_frame(results[-1], (start - previous_start) // FRAMES_PER_LATENT,
                                                   generator)
            if t == 1:
                results.append(first)
                continue
            g0 = start // FRAMES_PER_LATENT
            x = noise[:, :, g0:g0 + condition.shape[2]].clone()
            results.append(self.denoise(x, condition, first, lambda i, p=progress: p(c.steps + i)))
        latent = merge_segments(results, [s for s, _ in segments], latent_shape[2])
        context.stage("decode")
        return self.decode(latent, generator).clamp(-1.0, 1.0)

    # --- training ----------------------------------------------------------------------------------

    def setup_training(self, device: torch.device) -> None:
        """Build for training: transformer and adapter in fp32 (trainable master weights), VAE
        frozen in ``backbone.vae_dtype`` (default ``backbone.dtype``); the FFNs frozen if
        ``freeze_ffn``."""
        cfg = self.backbone_config
        if cfg.vae_dtype is None:
            self.backbone_config = dataclasses.replace(cfg, vae_dtype=cfg.dtype)
        try:
            self._build(torch.device(device), torch.float32)
        finally:
            self.backbone_config = cfg
        frozen = []
        if self.config.freeze_ffn:
            for block in self.backbone.transformer.transformer_blocks:
                frozen.extend(block.ff.parameters())
        self._frozen = {id(p) for p in frozen}
        self.model.requires_grad_(False)
        for p in self.trainable_parameters():
            p.requires_grad_(True)
        self.model.train()
        self.backbone.vae.model.requires_grad_(False)
        self.backbone.vae.model.eval()
        self._prompt(self.config.prompt)

    def training_data_spec(self) -> dict:
        """Clips for ``vsrkit.data.build_train_dataset``: ``train_frames`` frames (``8k+1``), HR crops
        ``train_size``."""
        c = self.config
        return {"num_frames": c.train_frames, "hr_size": tuple(c.train_size), "frame_multiple": FRAMES_PER_LATENT,
                "frame_offset": 1}

    def _trainable_named(self) -> list[tuple[str, torch.nn.Parameter]]:
        self._require_loaded()
        return [(n, p) for n, p in self.model.named_parameters() if id(p) not in self._frozen]

    def trainable_parameters(self) -> list:
        """Every transformer and adapter parameter except the blocks' feed-forward layers when
        ``freeze_ffn`` (paper supplementary §6); the VAE and text encoder never train."""
        return [p for _, p in self._trainable_named()]

    def training_modules(self) -> dict:
        """The module owning every trainable parameter (for FSDP)."""
        self._require_loaded()
        return {"model": self.model}

    def attach_ema(self, ema) -> None:
        """Use the training engine's EMA of the trainable parameters as the shortcut teacher
        (shortcut-models ``bootstrap_ema``). Without it (``train.ema_decay=null``) the teacher is the
        current model, without gradient."""
        self._ema = ema

    def _teacher(self) -> Callable:
        """``teacher(*args, **kwargs)``: the model's forward with the EMA weights, without grad."""
        if self._ema is None:
            return self.model
        by_id = {id(p): name for name, p in self.model.named_parameters()}
        weights = {by_id[id(p)]: (s if s.dtype == p.dtype else s.to(p.dtype))
                   for p, s in zip(self._ema.params, self._ema.shadow) if id(p) in by_id}

        def forward(*args, **kwargs):
            return torch.func.functional_call(self.model, weights, args, kwargs, strict=False)

        return forward

    def _generator(self, batch: dict) -> torch.Generator:
        """Seeded from ``config.seed``, the step and the samples' dataset indices (a resumed run draws
        the same numbers)."""
        step = int(batch.get("step", 0))
        indices = batch.get("index")
        b = batch["hq"].shape[0]
        indices = [int(i) for i in (indices.tolist() if torch.is_tensor(indices) else (indices or range(b)))]
        return torch.Generator().manual_seed(sample_seed(self.config.seed, step, *indices))

    def _batch_prompts(self, batch: dict, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        texts = batch.get("prompt") or [""] * b
        pairs = [self._prompt(text or self.config.prompt) for text in texts]
        return torch.cat([e for e, _ in pairs]), torch.cat([m for _, m in pairs])

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """One micro-batch: image SR or video SR (by step), flow matching and shortcut targets.

        Args:
            batch: ``hq (B, 3, T, H, W)`` and ``lq (B, 3, T, h, w)`` float32 in [-1, 1] (``T = 8k+1``,
                ``H, W`` multiples of 32), ``prompt`` list of str, ``index (B,)``, ``step`` int.

        Returns:
            ``(loss, {name: float})``.
        """
        self._require_loaded()
        c = self.config
        hq, lq = batch["hq"], batch["lq"]
        if hq.dim() != 5 or lq.dim() != 5 or hq.shape[:3] != lq.shape[:3]:
            raise ValueError(f"batch `hq`/`lq` must be (B, 3, T, H, W) with equal B and T. "
                             f"Got {tuple(hq.shape)} and {tuple(lq.shape)}.")
        b, _, t, height, width = hq.shape
        if height % SPATIAL_COMPRESSION or width % SPATIAL_COMPRESSION or (t - 1) % FRAMES_PER_LATENT:
            raise UserError(f"turbovsr trains on 8k+1-frame clips with HR crops that are multiples of 32. Got "
                            f"{t} frames of {height}x{width}; set method.train_frames / the dataset's crop size.")
        image_task = t == 1 or is_image_step(int(batch.get("step", 0)), c.image_task_ratio)
        if image_task:
            hq, lq = hq[:, :, :1], lq[:, :, :1]
        gen = self._generator(batch)
        device = hq.device
        with torch.no_grad():
            lq_up = upsample_frames(lq.float(), (height, width), c.upscale_mode).clamp(-1.0, 1.0)
            condition = self.encode(lq_up, gen)
            x0 = self.encode(hq.float(), gen)
            # 0..cond_noise_max_step steps of DDPM noise on the condition latent (paper supp. §6).
            steps = torch.randint(0, c.cond_noise_max_step + 1, (b,), generator=gen)
            abar = ddpm_alphas_cumprod(c.cond_noise_schedule)[steps].float().to(device).reshape(b, 1, 1, 1, 1)
            cond_noise = torch.randn(condition.shape, generator=gen).to(device)
            condition = abar.sqrt() * condition + (1 - abar).sqrt() * cond_noise
            keep = (torch.rand(b, generator=gen) >= c.cond_dropout).to(device)
            first_clean = None if image_task else keep
            # Which samples train on shortcut targets: floor(B f + u) of them, the first ones.
            count = int(math.floor(b * c.sc_fraction + float(torch.rand((), generator=gen))))
            shortcut = torch.arange(b) < count
            sizes, sigmas = self._draw_steps(shortcut, gen)
            sizes, sigmas = sizes.to(device), sigmas.to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            shape = (b, 1, 1, 1, 1)
            x_t = (1 - sigmas.reshape(shape)) * x0 + sigmas.reshape(shape) * noise
            if first_clean is not None:
                x_t[:, :, :1] = torch.where(keep.reshape(shape), x0[:, :, :1], x_t[:, :, :1])
            target = noise - x0
            prompt = self._batch_prompts(batch, b)
            if count:
                teacher = self._teacher()
                n = count
                sub_keep = keep[:n]
                sub_first = None if first_clean is None else first_clean[:n]

                def keep_clean(x, n=n):
                    if sub_first is None:
                        return x
                    x = x.clone()
                    x[:, :, :1] = torch.where(sub_keep.reshape(-1, 1, 1, 1, 1), x0[:n, :, :1], x[:, :, :1])
                    return x

                def predict(x, sigma, step, n=n):
                    return teacher(x, sigma, prompt[0][:n], prompt[1][:n], step_size=step, condition=condition[:n],
                                   cond_keep=sub_keep, first_clean=sub_first, rope_scale=self._rope_scale())

                target[:n] = shortcut_target(predict, x_t[:n], sigmas[:n], sizes[:n], c.target_clip, keep_clean)
        velocity = self.model(x_t, sigmas, prompt[0], prompt[1], step_size=sizes, condition=condition, cond_keep=keep,
                              first_clean=first_clean, rope_scale=self._rope_scale())
        error = (velocity.float() - target.float()) ** 2
        # Clean first-frame latents are conditions, not predictions: they carry no loss.
        weight = torch.ones(b, 1, x0.shape[2], 1, 1, device=device)
        if first_clean is not None:
            weight[:, :, :1] = (~first_clean).float().reshape(b, 1, 1, 1, 1)
        per_sample = (error * weight).sum(dim=(1, 2, 3, 4)) / weight.expand_as(error).sum(dim=(1, 2, 3, 4))
        loss = per_sample.mean()
        logs = {"image_task": float(image_task), "shortcut_fraction": count / b}
        shortcut = shortcut.to(device)
        if count:
            logs["loss_shortcut"] = float(per_sample[shortcut].mean().detach())
        if count < b:
            logs["loss_flow"] = float(per_sample[~shortcut].mean().detach())
        return loss, logs

    def _draw_steps(self, shortcut: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Step sizes and noise levels ``(B,)`` of one batch.

        Flow-matching samples: the finest trained step size, ``sigma = shift(tau)``, ``tau ~ U(0, 1)``.
        Shortcut samples: a base ``b`` drawn uniformly, then ``d = b 2^k / M`` with ``k >= 1`` (so
        ``d / 2`` is trained too) drawn uniformly; ``sigma = shift(tau)`` with ``tau`` uniform on
        ``[unshift(d), 1]`` so that ``sigma - d >= 0`` (paper §3.4, non-uniform bootstrap paths).
        """
        c = self.config
        finest = min(step_size_set(c.finest_steps, c.base_steps))
        bases = [b for b in c.base_steps if len(base_step_sizes(b, c.finest_steps)) >= 2]
        sizes, sigmas = [], []
        for is_shortcut in shortcut.tolist():
            u = float(torch.rand((), generator=gen))
            if is_shortcut and bases:
                base = bases[int(torch.randint(len(bases), (), generator=gen))]
                options = base_step_sizes(base, c.finest_steps)[1:]
                size = options[int(torch.randint(len(options), (), generator=gen))]
                low = float(unshift_sigma(size, c.shift))
                sigma = float(shift_sigma(low + (1 - low) * u, c.shift))
            else:
                size, sigma = finest, float(shift_sigma(u, c.shift))
            sizes.append(size)
            sigmas.append(sigma)
        return torch.tensor(sizes, dtype=torch.float32), torch.tensor(sigmas, dtype=torch.float32)

    def state_dict(self) -> dict:
        """The trainable parameters (``transformer.*`` diffusers names, ``adapter.*``)."""
        return {name: p.detach() for name, p in self._trainable_named()}

    def load_state_dict(self, state: dict) -> None:
        """Load what :meth:`state_dict` saved (same keys and shapes, strict)."""
        params = dict(self._trainable_named())
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"turbovsr state does not match the trainable parameters: "
                             f"{len(missing)} missing (first {missing[:1]}), {len(unexpected)} unexpected "
                             f"(first {unexpected[:1]}); was it saved with another `method.freeze_ffn`?")
        with torch.no_grad():
            for name, p in params.items():
                if tuple(state[name].shape) != tuple(p.shape):
                    raise ValueError(f"turbovsr state `{name}` has shape {tuple(state[name].shape)}, "
                                     f"expected {tuple(p.shape)}.")
                p.copy_(state[name])

    def export(self, directory: str) -> None:
        """Write what inference loads: a diffusers LTX pipeline folder (``model_index.json``,
        ``transformer/``, ``vae/``, ``scheduler/``; ``text_encoder/`` and ``tokenizer/`` linked from
        the base folder when there is one) plus ``turbovsr.safetensors`` (the adapter, with the
        options that fix the step grid in its metadata). Use it with ``backbone.path=<directory>``.
        """
        self._require_loaded()
        from safetensors.torch import save_file

        out = write_pipeline_folder(self.backbone, directory, "LTXPipeline", self.backbone_config.path)
        adapter = {k: v.detach().float().cpu().contiguous() for k, v in self.model.adapter.state_dict().items()}
        options = json.dumps(dataclasses.asdict(self.config))
        save_file(adapter, str(out / ADAPTER_FILE), metadata={"turbovsr_config": options})
        (out / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(self.config), indent=2))
        logger.info("exported TurboVSR to %s", out)
