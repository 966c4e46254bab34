"""Time the Wan2.1 VAE's encode and decode of one clip, diffusers' modules against vsrkit's fused path.

Random weights at the real size; one warm-up, then ``--repeats`` timed calls of each part; peak
memory is ``torch.cuda.max_memory_allocated`` during the timed calls (and above the weights).
One JSON line per variant. Example (the figures in docs/benchmarks.md, one H100)::

    python tools/bench_wan_vae.py --size 1280x720 --frames 33 --variant native --variant fused \\
        --variant fused-channels-first --variant fused+cudnn-benchmark

``fused-channels-first`` keeps activations and weights channels-first inside the fused encoder
and decoder (``vsrkit.backbones.wan_fused._CHANNELS_LAST = False``): what the layout buys.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

VARIANTS = ("native", "fused", "fused-channels-first", "fused+cudnn-benchmark")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="wan2.1-t2v-1.3b")
    p.add_argument("--size", action="append", help="output size WxH (repeatable; default 1280x720)")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--variant", action="append", choices=VARIANTS, help="repeatable; default: all")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: this tool times CUDA kernels.", file=sys.stderr)
        return 2

    import vsrkit.backbones.wan_fused as wan_fused
    from vsrkit.backbones import BackboneConfig, build_backbone

    for variant in args.variant or VARIANTS:
        wan_fused._CHANNELS_LAST = variant != "fused-channels-first"
        torch.backends.cudnn.benchmark = variant.endswith("cudnn-benchmark")
        cfg = BackboneConfig(preset=args.preset, family="wan", dtype="bf16", random_weights=True,
                             vae_kernels="native" if variant == "native" else "fused")
        vae = build_backbone(cfg, device="cuda").vae
        for size in args.size or ["1280x720"]:
            width, height = (int(v) for v in size.lower().split("x"))
            torch.manual_seed(0)
            clip = torch.rand(1, 3, args.frames, height, width, device="cuda", dtype=torch.bfloat16) * 2 - 1
            record = {"variant": variant, "size": f"{width}x{height}x{args.frames}", "gpu": torch.cuda.get_device_name()}
            with torch.no_grad():
                latents = vae.encode(clip)
                vae.decode(latents)  # warm-up of both parts
                for part, call in (("encode", lambda: vae.encode(clip)), ("decode", lambda: vae.decode(latents))):
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    times = []
                    for _ in range(args.repeats):
                        torch.cuda.synchronize()
                        start = time.perf_counter()
                        call()
                        torch.cuda.synchronize()
                        times.append(round((time.perf_counter() - start) * 1e3, 1))
                    peak = torch.cuda.max_memory_allocated()
                    record[f"{part}_ms"] = times
                    record[f"{part}_peak_gib"] = round(peak / 2**30, 2)
                    record[f"{part}_peak_over_weights_gib"] = round((peak - base) / 2**30, 2)
            print(json.dumps(record), flush=True)
        del vae
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
