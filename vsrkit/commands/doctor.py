"""``vsrkit doctor``: versions, GPU, attention backends, plugins loaded or failed."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import platform

PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "peft", "hydra-core",
            "av", "safetensors", "triton", "diffsynth", "pyiqa", "deepspeed", "flash-attn", "sageattention")


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def _gpu_lines() -> list[str]:
    import torch

    lines = [f"torch CUDA build: {torch.version.cuda or 'none'}"]
    if not torch.cuda.is_available():
        return lines + ["GPU: none visible (running on CPU)"]
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        lines.append(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}")
    return lines


def _attention_lines() -> list[str]:
    import torch

    lines = []
    if torch.cuda.is_available():
        from torch.backends import cuda as bc

        lines.append("SDPA backends enabled: " + ", ".join(
            name for name, on in (("flash", bc.flash_sdp_enabled()), ("cudnn", bc.cudnn_sdp_enabled()),
                                  ("mem_efficient", bc.mem_efficient_sdp_enabled()), ("math", bc.math_sdp_enabled()))
            if on))
    try:
        dispatch = importlib.import_module("diffusers.models.attention_dispatch")
        names = sorted(b.value for b in dispatch.AttentionBackendName)
        lines.append(f"diffusers attention backends known: {', '.join(names)}")
    except Exception as err:  # older diffusers: no dispatcher
        lines.append(f"diffusers attention dispatcher unavailable ({type(err).__name__})")
    return lines


def run_doctor(args: list[str]) -> int:
    from vsrkit import __version__
    from vsrkit.plugins import setup_registries

    print(f"vsrkit {__version__} on Python {platform.python_version()} ({platform.platform()})")
    for dist in PACKAGES:
        print(f"  {dist:<16} {_version(dist)}")
    try:
        import av

        print(f"  FFmpeg (PyAV)    {av.ffmpeg_version_info}")
    except Exception as err:
        print(f"  FFmpeg (PyAV)    unavailable: {err}")
    for line in _gpu_lines() + _attention_lines():
        print(line)
    report = setup_registries()
    print(f"plugins loaded: {', '.join(f'{k} ({v})' for k, v in report.loaded.items()) or 'none'}")
    for name, why in report.failed.items():
        print(f"plugin FAILED: {name}: {why}")
    if report.config_packages:
        print(f"plugin config packages on Hydra's search path: {', '.join(report.config_packages)}")
    return 0
