"""Speed of the backbones at full size with random weights: transformer forward, VAE encode, VAE decode.

For each preset and output size it builds the backbone (random deterministic weights, no
download), counts the FLOPs of one eager pass with ``torch.utils.flop_counter``, then times
``--repeats`` runs after ``--warmup`` runs (CUDA events on a GPU, wall clock on CPU) and reports
the median, the peak GPU memory of the timed runs and the achieved TFLOP/s.

Workload per size (a 33-frame clip at the output size, as the methods see it):

* transformer: one forward on the latents of the clip (CogVideoX: 32 input channels, the latent
  frame count padded to the temporal patch as SparkVSR does; prompt of the preset's length);
* VAE encode of the clip ``(1, 3, T, H, W)``; VAE decode of its latents.

Sizes are rounded up to the backbone's spatial multiple (16 for CogVideoX/Wan, 32 for LTX:
1280x720 runs LTX at 1280x736); the table shows the size that ran.

Examples::

    # CPU smoke run on a tiny preset
    python tools/bench_speed.py --preset wan2.1-t2v-1.3b-tiny --frames 5 --height 64 --width 64
    # The GPU table (each preset can run as its own command; merge the JSON files afterwards)
    python tools/bench_speed.py --preset ltx-video-2b --out-json bench-ltx.json
    python tools/bench_speed.py --attention cudnn --compile regional --out-json bench-fast.json
    python tools/bench_speed.py --preset cogvideox1.5-5b-i2v --parts encode,decode --vae-tile-size 512 --vae-tile-overlap 64
    # The Wan VAE, diffusers' modules and the fused path in one run
    python tools/bench_speed.py --preset wan2.1-t2v-1.3b --parts encode,decode --vae-kernels native,fused
    python tools/bench_speed.py --from-json bench-*.json --out-md docs/benchmarks-table.md
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from vsrkit.backbones.config import ATTENTION_BACKENDS  # plain Python, no torch

REAL_PRESETS = ["wan2.1-t2v-1.3b", "cogvideox1.5-5b-i2v", "ltx-video-2b"]
DEFAULT_SIZES = ["1280x720", "1920x1088"]
PARTS = ["transformer", "encode", "decode"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("Examples::")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", help=f"preset to run (repeatable; default: {', '.join(REAL_PRESETS)})")
    p.add_argument("--frames", type=int, default=33, help="clip length in frames (default 33)")
    p.add_argument("--size", action="append", help="output size WxH (repeatable; default 1280x720 and 1920x1088)")
    p.add_argument("--height", type=int, help="output height (with --width, instead of --size)")
    p.add_argument("--width", type=int, help="output width (with --height)")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"],
                   help="compute dtype (default bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--attention", default="auto", choices=ATTENTION_BACKENDS,
                   help="BackboneConfig.attention: auto, or a kernel to force (cudnn is the fastest SDPA on H200)")
    p.add_argument("--compile", default="off", choices=["off", "regional"], help="regional torch.compile of the blocks")
    p.add_argument("--vae-tiling", default="auto", choices=["auto", "on", "off"],
                   help="auto: on for CogVideoX only (the reference numbers' setting), off otherwise")
    p.add_argument("--vae-tile-size", type=int, help="VAE tile edge in pixels when tiling (default: diffusers')")
    p.add_argument("--vae-tile-overlap", type=int, help="pixels shared by VAE tiles (default: diffusers')")
    p.add_argument("--vae-kernels", default="auto",
                   help="backbone.vae_kernels: auto, fused (Triton norms: CogVideoX and Wan VAEs) or native "
                        "(diffusers' modules); a comma list (native,fused) times each in one run")
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of transformer,encode,decode")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (after the FLOP-count pass)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--out-json", type=Path, help="write the records here (JSON)")
    p.add_argument("--out-md", type=Path, help="write the Markdown table here")
    p.add_argument("--from-json", type=Path, nargs="+", help="only render the table of earlier --out-json files")
    args = p.parse_args(argv)
    if (args.height is None) != (args.width is None):
        p.error("--height and --width go together")
    bad = set(args.parts.split(",")) - set(PARTS)
    if bad:
        p.error(f"--parts: unknown {sorted(bad)}; choose from {PARTS}")
    bad = set(args.vae_kernels.split(",")) - {"auto", "fused", "native"}
    if bad:
        p.error(f"--vae-kernels: unknown {sorted(bad)}; choose from auto, fused, native")
    return args


# --- measurement ---------------------------------------------------------------------------------


class Timer:
    """Median time of a callable: CUDA events on GPU, perf_counter on CPU."""

    def __init__(self, device):
        import torch

        self.cuda = torch.device(device).type == "cuda"

    def once(self, fn) -> float:
        import torch

        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def count_flops(fn) -> int | None:
    """FLOPs of one call of ``fn`` (torch.utils.flop_counter; matmuls, convs and SDPA)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            fn()
        return int(counter.get_total_flops())
    except Exception as err:  # an op without a formula must not stop the timing
        print(f"  (flop count failed: {type(err).__name__}: {err})", file=sys.stderr)
        return None


def measure(name: str, fn, device, warmup: int, repeats: int, flops: bool = True) -> dict:
    """FLOP-count pass, warm-up, timed runs; returns ms (median, all), peak memory, FLOPs."""
    import torch

    timer = Timer(device)
    cuda = timer.cuda
    result: dict = {"part": name}
    try:
        result["flops"] = count_flops(fn) if flops else None
        first = [timer.once(fn) for _ in range(warmup)]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times = [timer.once(fn) for _ in range(repeats)]
        result.update(ms=statistics.median(times), ms_all=[round(t, 2) for t in times],
                      warmup_ms=[round(t, 2) for t in first])
        if cuda:
            result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            result["peak_over_weights_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
        if result["flops"]:
            result["tflops_per_s"] = result["flops"] / (result["ms"] / 1e3) / 1e12
    except torch.OutOfMemoryError:
        result["error"] = "OOM"
    except RuntimeError as err:
        result["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    finally:
        if cuda:
            torch.cuda.empty_cache()
    return result


# --- workloads -----------------------------------------------------------------------------------


def spatial_multiple(bb) -> int:
    cfg = bb.transformer.config
    patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[-1]
    return bb.vae.spatial_compression * patch


def bench_one(preset: str, width: int, height: int, args, device, dtype) -> list[dict]:
    import torch

    from vsrkit.backbones import BackboneConfig, build_backbone, runtime
    from vsrkit.backbones.presets import get_preset

    p = get_preset(preset)
    tiling = args.vae_tiling == "on" or (args.vae_tiling == "auto" and p.family == "cogvideox")
    cfg = BackboneConfig(preset=preset, family=p.family, dtype=dtype, attention=args.attention, vae_tiling=tiling,
                         vae_tile_size=args.vae_tile_size, vae_tile_overlap=args.vae_tile_overlap,
                         vae_kernels=args.vae_kernels, random_weights=True)  # speed only: random weights
    t0 = time.perf_counter()
    bb = build_backbone(cfg, device=device)
    build_s = time.perf_counter() - t0
    m = spatial_multiple(bb)
    H, W = -(-height // m) * m, -(-width // m) * m
    frames = args.frames
    tc, sc = bb.vae.temporal_compression, bb.vae.spatial_compression
    latent_t = (frames - 1) // tc + 1
    h, w = H // sc, W // sc
    clip = (runtime.deterministic_values((1, 3, frames, H, W), "bench-clip", device=device) / 1.8).clamp(-1, 1)
    base = {"preset": preset, "family": p.family, "frames": frames, "width": W, "height": H, "dtype": dtype,
            "attention_choice": args.attention, "attention": bb.attention, "compile": args.compile,
            "vae_tiling": tiling, "vae_tile_size": args.vae_tile_size, "vae_kernels": args.vae_kernels,
            "build_s": round(build_s, 1)}
    records = []
    parts = args.parts.split(",")

    if "transformer" in parts:
        tcfg = bb.transformer.config
        c_in = tcfg.in_channels
        t_in = latent_t
        if p.family == "cogvideox":
            p_t = tcfg.patch_size_t or 1
            t_in = -(-latent_t // p_t) * p_t  # SparkVSR prepends one latent frame to reach an even count
        latents = runtime.deterministic_values((1, c_in, t_in, h, w), "bench-latents").to(device)
        spec = p.text
        emb = runtime.deterministic_values((1, spec.max_length, spec.dim), "bench-prompt").to(device, bb.dtype)
        if p.family == "cogvideox":
            rope = bb.rotary_pos_embed(t_in, h, w)
            fn = lambda: bb.predict(latents, 399, emb, image_rotary_emb=rope)  # noqa: E731
            tokens = (t_in // (tcfg.patch_size_t or 1)) * (h // tcfg.patch_size) * (w // tcfg.patch_size)
        elif p.family == "wan":
            fn = lambda: bb.predict(latents, 400.0, emb)  # noqa: E731
            tokens = t_in * (h // tcfg.patch_size[1]) * (w // tcfg.patch_size[2])
        else:
            mask = torch.ones(1, spec.max_length, device=device)
            fn = lambda: bb.predict(latents, 500.0, emb, mask)  # noqa: E731
            tokens = t_in * h * w
        with torch.inference_mode():
            flops = count_flops(fn)
            compile_s = None
            if args.compile != "off":
                runtime.apply_compile(bb.transformer, args.compile, fullgraph=True)
                compile_s = Timer(device).once(fn) / 1e3  # first call compiles
            rec = measure("transformer", fn, device, args.warmup, args.repeats, flops=False)
        rec.update(base, flops=flops, tokens=tokens, latent_shape=[1, c_in, t_in, h, w], compile_s=compile_s)
        if flops and "ms" in rec:
            rec["tflops_per_s"] = flops / (rec["ms"] / 1e3) / 1e12
        records.append(rec)
        del latents, emb, fn
        gc.collect()

    z = None
    if "encode" in parts or "decode" in parts:
        with torch.inference_mode():
            z = bb.vae.encode(clip)
    if "encode" in parts:
        with torch.inference_mode():
            rec = measure("vae encode", lambda: bb.vae.encode(clip), device, args.warmup, args.repeats)
        rec.update(base, latent_shape=list(z.shape))
        records.append(rec)
    if "decode" in parts:
        with torch.inference_mode():
            decode = (lambda: bb.vae.decode(z, generator=torch.Generator(device).manual_seed(0))) \
                if p.family == "ltx" else (lambda: bb.vae.decode(z))
            rec = measure("vae decode", decode, device, args.warmup, args.repeats)
        rec.update(base, latent_shape=list(z.shape))
        records.append(rec)
    del bb, clip, z
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return records


# --- output --------------------------------------------------------------------------------------


def environment(device) -> dict:
    import diffusers
    import torch

    env = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
           "device": str(device)}
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def markdown(records: list[dict], envs: list[dict]) -> str:
    lines = []
    for env in envs:
        lines.append("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    lines += ["",
              "| preset | size (WxHxT) | part | ms (median) | peak GiB | model TFLOP | TFLOP/s | attention | compile |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        size = f"{r['width']}x{r['height']}x{r['frames']}"
        if "error" in r:
            lines.append(f"| {r['preset']} | {size} | {r['part']} | {r['error']} | | | | {r['attention_choice']} "
                         f"| {r['compile']} |")
            continue
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "n/a"
        tf = f"{r['flops'] / 1e12:.4g}" if r.get("flops") else "n/a"
        rate = f"{r['tflops_per_s']:.3g}" if r.get("tflops_per_s") else "n/a"
        part = r["part"]
        if part.startswith("vae"):
            part += " (tiled)" if r.get("vae_tiling") else ""
            part += f" [{r['vae_kernels']} kernels]" if r.get("vae_kernels", "auto") != "auto" else ""
        lines.append(f"| {r['preset']} | {size} | {part} | {r['ms']:.1f} | {peak} | {tf} | {rate} | "
                     f"{r['attention_choice']} | {r['compile']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        records, envs = [], []
        for path in args.from_json:
            data = json.loads(path.read_text())
            records += data["records"]
            envs.append(data["environment"])
        table = markdown(records, envs)
        print(table)
        if args.out_md:
            args.out_md.write_text(table)
        return 0

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bf16" if torch.device(device).type == "cuda" else "fp32")
    presets = args.preset or REAL_PRESETS
    if args.height is not None:
        sizes = [(args.width, args.height)]
    else:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in (args.size or DEFAULT_SIZES)]
    env = environment(device)
    records = []
    for preset in presets:
        for width, height in sizes:
            for kernels in args.vae_kernels.split(","):
                one = argparse.Namespace(**{**vars(args), "vae_kernels": kernels})
                print(f"{preset} {width}x{height}x{args.frames} on {device} ({dtype}, vae_kernels={kernels})",
                      file=sys.stderr)
                for rec in bench_one(preset, width, height, one, device, dtype):
                    records.append(rec)
                    shown = f"{rec['ms']:.1f} ms" if "ms" in rec else rec.get("error")
                    print(f"  {rec['part']}: {shown}", file=sys.stderr)
    table = markdown(records, [env])
    print(table)
    if args.out_json:
        args.out_json.write_text(json.dumps({"environment": env, "command": " ".join(sys.argv),
                                             "records": records}, indent=1))
    if args.out_md:
        args.out_md.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
