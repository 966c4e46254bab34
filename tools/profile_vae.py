"""Profile a backbone's VAE by CUDA kernel: where encode and decode spend their time.

Builds the preset's VAE (random weights, real size) through the backbone (so ``--vae-kernels``,
tiling and dtype are the ones vsrkit runs), encodes and decodes a random clip once to warm up,
then records one encode and one decode with ``torch.profiler`` and prints each kernel's share.

Example (one H200; the figures in docs/benchmarks.md)::

    python tools/profile_vae.py --preset cogvideox1.5-5b-i2v --size 1280x720 --frames 33 \\
        --vae-tile-size 768 --vae-tile-overlap 64 --vae-kernels native --out $OUT/native
    # The Wan2.1 VAE (PS-SR's and InfVSR's), untiled at PS-SR's 720x1280 window, both kernel paths
    python tools/profile_vae.py --preset wan2.1-t2v-1.3b --size 1280x720 --frames 33 --vae-kernels native --rows 12
    python tools/profile_vae.py --preset wan2.1-t2v-1.3b --size 1280x720 --frames 33 --vae-kernels fused --rows 12
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cogvideox1.5-5b-i2v")
    p.add_argument("--size", default="1280x720", help="output size WxH")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--vae-tile-size", type=int, default=None, help="tile edge in pixels (tiling off when omitted)")
    p.add_argument("--vae-tile-overlap", type=int, default=None)
    p.add_argument("--vae-kernels", default="auto", choices=["auto", "fused", "native"])
    p.add_argument("--rows", type=int, default=15, help="kernels listed per table")
    p.add_argument("--out", type=Path, default=None, help="folder for the full tables (encode.txt, decode.txt)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: this tool profiles CUDA kernels.", file=sys.stderr)
        return 2

    from torch.profiler import ProfilerActivity, profile

    from vsrkit.backbones import BackboneConfig, build_backbone
    from vsrkit.backbones.presets import get_preset

    preset = get_preset(args.preset)
    cfg = BackboneConfig(preset=args.preset, family=preset.family, dtype=args.dtype,
                         vae_tiling=args.vae_tile_size is not None, vae_tile_size=args.vae_tile_size,
                         vae_tile_overlap=args.vae_tile_overlap, vae_kernels=args.vae_kernels,
                         random_weights=True)  # kernel times only: random weights
    vae = build_backbone(cfg, device="cuda").vae
    width, height = (int(v) for v in args.size.lower().split("x"))
    clip = torch.rand(1, 3, args.frames, height, width, device="cuda") * 2 - 1
    with torch.no_grad():
        latents = vae.encode(clip)
        vae.decode(latents)
        for name, run in (("encode", lambda: vae.encode(clip)), ("decode", lambda: vae.decode(latents))):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                run()
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
            events = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total, reverse=True)
            total = sum(e.self_device_time_total for e in events)
            print(f"== {args.preset} {name} {width}x{height}x{args.frames}, vae_kernels={args.vae_kernels}: "
                  f"{total / 1e3:.0f} ms of kernels, {wall * 1e3:.0f} ms wall (profiled)")
            for e in events[: args.rows]:
                print(f"{e.self_device_time_total / 1e3:9.1f} ms {100 * e.self_device_time_total / total:5.1f}% "
                      f"{e.count:6d}x  {e.key[:100]}")
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"{name}.txt").write_text(
                    prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=60, max_name_column_width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
