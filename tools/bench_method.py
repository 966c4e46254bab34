"""Time a vsrkit method end to end at full size (random weights), as docs/benchmarks.md reports it.

The clock runs from the first input frame handed to the engine to the last output frame as uint8
numpy on the CPU (model loading and file encoding excluded), the same span as the release timings
in perf-notes.md. Each workload is run once to warm up, then ``--repeats`` times; the median is
reported with peak GPU memory and, for backbone methods, the time inside VAE encode, transformer
and VAE decode, and (``stages_seconds``) the time of each stage the method reports through
``context.stage`` (PS-SR: ``encode``, ``denoise[0]`` = base step, ``denoise[1..3]`` = draft steps,
``decode``, ``fdu``; InfVSR: ``encode``, ``denoise``, ``decode``).

Streaming methods (InfVSR) are run through the engine's streaming path, fed 16 frames at a time;
``--frames`` may repeat (one warm-up per size, on the shortest length), ``parts_seconds`` then holds
the time inside each stage the method reports (``encode``, ``denoise``, ``decode``), and
``--file-to-file N`` also times, for the N-frame workloads, a real file round trip: decoding the
input alone, encoding the output alone, and the whole ``vsrkit infer`` path with the three overlapped.

Example (one H200)::

    python tools/bench_method.py --method sparkvsr --backbone cogvideox1.5-5b-i2v \\
        --lr 180x320 --lr 270x480 --frames 33 --sweep method.ref_guidance_scale=1,2 --out $OUT/spark.json
    python tools/bench_method.py --method infvsr --backbone wan2.1-t2v-1.3b --lr 180x320 \\
        --frames 33 --frames 330 --frames 1000 --repeats 1 --file-to-file 330 --out $OUT/infvsr.json
    # PS-SR in its 720x1280 windows, native and fused VAE kernels in one run (a backbone.* sweep reloads)
    python tools/bench_method.py --method pssr --backbone wan2.1-t2v-1.3b --lr 180x320 --lr 270x480 \\
        --frames 33 --method-tiles --random-prompts --sweep backbone.vae_kernels=native,fused
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def compose(method: str, backbone: str | None, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from vsrkit.commands.hydra_app import store_schemas
    from vsrkit.plugins import setup_registries

    setup_registries()
    store_schemas()
    args = [f"method={method}", "input=-", "output=-", *overrides]
    if backbone:
        args.append(f"backbone={backbone}")
    with initialize_config_module(config_module="vsrkit.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="infer", overrides=args, return_hydra_config=True)
    if cfg.backbone is not None and not any(o.startswith("backbone.random_weights=") for o in overrides):
        # Speed figures need no trained weights: a real preset without `backbone.path` gets a random
        # init (and says so in its log) instead of failing; tiny presets are random anyway.
        cfg.backbone.random_weights = True
    return cfg


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timers:
    """Wall time (CUDA-synchronised) spent inside wrapped callables."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, obj, attr: str, name: str) -> None:
        original = getattr(obj, attr)

        def timed(*args, **kwargs):
            _sync()
            start = time.perf_counter()
            out = original(*args, **kwargs)
            _sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            return out

        setattr(obj, attr, timed)


def random_prompt_embeddings() -> None:
    """Prompt-cache misses return deterministic noise of the encoder's shape instead of loading the
    text encoder (speed runs with random weights only: the DiT cost does not depend on the values)."""
    from vsrkit.backbones import text
    from vsrkit.backbones.runtime import deterministic_values

    original = text.PromptEncoder.__call__

    def call(self, prompt):
        if self.preset.tiny or self.cache_file(prompt).is_file() or self.text_encoder_path is not None:
            return original(self, prompt)
        shape = (1, self.spec.max_length, self.spec.dim)
        return deterministic_values(shape, f"bench-prompt:{prompt}"), torch.ones(1, shape[1], dtype=torch.int64)

    text.PromptEncoder.__call__ = call


@contextmanager
def cuda_span():
    _sync()
    start = time.perf_counter()
    box = {}
    yield box
    _sync()
    box["seconds"] = time.perf_counter() - start


class Chunk:
    def __init__(self, f):
        self.frames, self.pts = f, None


def run_once(runner, frames: np.ndarray, keyframes: dict, on_stage=None) -> float:
    from vsrkit.engine.inference import model_to_frames
    from vsrkit.engine.streaming import upscale_frames

    # 16 frames at a time, as the video reader hands them over (decode_chunk).
    chunks = [Chunk(frames[i:i + 16]) for i in range(0, len(frames), 16)]
    with cuda_span() as span:
        for out, _ in upscale_frames(runner, chunks, len(frames), keyframes, on_stage=on_stage):
            model_to_frames(out)
    return span["seconds"]


class StageTimer:
    """``WindowContext.on_stage`` callback: CUDA-synchronised seconds per reported stage
    (``name`` or ``name[done]`` for stages with several steps), summed over windows."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.peaks: dict[str, int] = {}  # peak bytes allocated within each stage (max over windows)
        self.overall_peak = 0  # the stages' peaks are reset one by one: this keeps the run's
        self.current: str | None = None
        self.start = 0.0

    def reset_peaks(self) -> None:
        self.peaks, self.overall_peak = {}, 0

    def __call__(self, name: str, done: int = 0, total: int = 1) -> None:
        self.close()
        self.current = name if total <= 1 else f"{name}[{done}]"
        self.start = time.perf_counter()

    def stop(self) -> dict:
        self.close()
        return dict(self.seconds)

    def close(self) -> None:
        if self.current is not None:
            _sync()
            self.seconds[self.current] = self.seconds.get(self.current, 0.0) + time.perf_counter() - self.start
            if torch.cuda.is_available():
                peak = torch.cuda.max_memory_allocated()
                self.peaks[self.current] = max(self.peaks.get(self.current, 0), peak)
                self.overall_peak = max(self.overall_peak, peak)
                torch.cuda.reset_peak_memory_stats()
            self.current = None

    def wrap(self, method) -> None:
        """Make every ``method.upscale`` call report its stages here."""
        original = method.upscale

        def staged(lq, context):
            context.on_stage = self
            try:
                return original(lq, context)
            finally:
                self.close()

        method.upscale = staged


def input_frames(content: str, n: int, h: int, w: int) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 benchmark input: seeded noise, or a low-contrast tinted wave pattern
    that drifts one pixel per frame (a pan with no cut; hue-stable, so PySceneDetect-style content
    scores stay low, as within a real shot)."""
    if content == "noise":
        return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    t = np.arange(n, dtype=np.float32)[:, None, None, None]
    y = np.arange(h, dtype=np.float32)[None, :, None, None]
    x = np.arange(w, dtype=np.float32)[None, None, :, None]
    waves = np.sin((x + t) / 20.0) + np.cos((y - 0.5 * t) / 28.0)
    tint = np.array([12.0, 0.0, -12.0], dtype=np.float32)
    return np.clip(127.5 + tint + 30.0 * waves, 0, 255).astype(np.uint8)


def file_round_trip(runner, frames: np.ndarray, scale: int, folder: Path) -> dict:
    """Seconds to decode the input file alone, to encode the output alone, and file to file (overlapped)."""
    from vsrkit.engine.run_infer import upscale_file
    from vsrkit.engine.settings import IOConfig
    from vsrkit.io import VideoWriter, open_source

    n, h, w, _ = frames.shape
    src, dst, enc = folder / f"in_{h}x{w}_{n}.mp4", folder / f"out_{h}x{w}_{n}.mp4", folder / f"enc_{h}x{w}_{n}.mp4"
    with VideoWriter(src, width=w, height=h, fps=24, overwrite=True) as writer:
        for i in range(0, n, 16):
            writer.write(frames[i:i + 16])
    start = time.perf_counter()
    for _ in open_source(src).chunks(16):
        pass
    decode = time.perf_counter() - start
    hr = np.repeat(np.repeat(frames[:16], scale, axis=1), scale, axis=2)
    start = time.perf_counter()
    with VideoWriter(enc, width=w * scale, height=h * scale, fps=24, overwrite=True) as writer:
        for i in range(0, n, 16):
            writer.write(hr[: min(16, n - i)])
    encode = time.perf_counter() - start
    with cuda_span() as span:
        upscale_file(runner, src, dst, io_cfg=IOConfig(), overwrite=True, max_frames=None, decode_chunk=16,
                     progress=False)
    return {"decode_s": decode, "encode_s": encode, "file_to_file_s": span["seconds"],
            "file_to_file_ms_per_frame": span["seconds"] / n * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True)
    parser.add_argument("--backbone", default=None, help="backbone preset (default: the method's)")
    parser.add_argument("--lr", action="append", required=True, help="input size HxW, e.g. 180x320 (repeatable)")
    parser.add_argument("--frames", type=int, action="append", default=None,
                        help="clip length (repeatable; default 33)")
    parser.add_argument("--file-to-file", type=int, default=None, metavar="FRAMES",
                        help="for the workloads of this length, also time decoding, encoding and the overlapped "
                             "file-to-file path (streaming methods)")
    parser.add_argument("--content", default="noise", choices=["noise", "moving"],
                        help="input frames: i.i.d. noise (the figures so far), or a smooth pattern drifting "
                             "one pixel per frame (no scene change, as within a real shot: streaming methods "
                             "that refresh references on content changes do less work than on noise)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--keyframes", default="0", help="comma-separated keyframe indices ('' for none)")
    parser.add_argument("--sweep", action="append", default=[], help="key=v1,v2: one workload per value")
    parser.add_argument("--set", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="cuda (figures) or cpu (smoke run with a -tiny backbone)")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--vae-channels-last", action="store_true", help="VAE weights in channels_last_3d")
    parser.add_argument("--vae-compile", action="store_true", help="torch.compile the VAE encoder and decoder")
    parser.add_argument("--method-tiles", action="store_true",
                        help="keep the method's spatial tiles (PS-SR's 720x1280 windows) instead of whole frames")
    parser.add_argument("--random-prompts", action="store_true",
                        help="prompt-cache misses give random embeddings instead of needing the text encoder")
    args = parser.parse_args(argv)
    args.frames = sorted(args.frames or [33])
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU: speed figures are GPU benchmarks (use --device cpu for a smoke run).", file=sys.stderr)
        return 2

    from vsrkit.engine.build import build_method, to_dataclass
    from vsrkit.engine.inference import WindowRunner, apply_overrides
    from vsrkit.engine.streaming import is_streaming

    sweeps = [[]]
    for item in args.sweep:
        key, values = item.split("=", 1)
        sweeps = [s + [f"{key}={v}"] for s in sweeps for v in values.split(",")]
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.random_prompts:
        random_prompt_embeddings()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    on_gpu = device.type == "cuda"
    results = []
    method, loaded_for = None, None
    for sweep in sweeps:
        cfg = compose(args.method, args.backbone, [*args.set, *sweep, f"scale={args.scale}"])
        backbone_name = cfg.hydra.runtime.choices.backbone
        key = (backbone_name, tuple(args.set), tuple(s for s in sweep if s.startswith("backbone.")))
        method_cfg = to_dataclass(cfg.method, "method")
        if method is None or loaded_for != key:
            # Every reference to the previous sweep's models goes first: a peak measured with two
            # models resident is the sum of both (a sweep once reported 3.9 GiB that was not there).
            method = runner = backbone = timers = stages = None
            gc.collect()
            if on_gpu:
                torch.cuda.empty_cache()
            method = build_method(cfg, args.method, backbone_name, args.scale)
            load_start = time.perf_counter()
            method.load(device, dtype)
            print(f"loaded {args.method} on {backbone_name} in {time.perf_counter() - load_start:.1f} s", flush=True)
            loaded_for = key
            timers = Timers()
            stages = StageTimer()
            if not is_streaming(method):
                stages.wrap(method)  # streaming methods report through the stream's on_stage instead
            backbone = getattr(method, "backbone", None)
            if backbone is not None and args.vae_channels_last:
                for module in backbone.vae.model.modules():
                    if isinstance(module, torch.nn.Conv3d):
                        module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
            if backbone is not None and args.vae_compile:
                vae_model = backbone.vae.model
                vae_model.encoder = torch.compile(vae_model.encoder)
                vae_model.decoder = torch.compile(vae_model.decoder)
            if backbone is not None:
                timers.wrap(backbone.vae, "encode", "vae_encode")
                timers.wrap(backbone.vae, "decode", "vae_decode")
                timers.wrap(backbone, "predict", "transformer")
            # Methods with their own transformer loop (turbovsr) name the calls to time.
            for obj, attr, name in getattr(method, "timed_calls", lambda: [])():
                timers.wrap(obj, attr, name)
        method.config = method_cfg  # swept method options take effect without reloading weights
        streaming = is_streaming(method)
        if streaming:
            spec = method.window_spec()
        else:  # one window over the clip; whole frames unless --method-tiles
            spec = apply_overrides(method.window_spec(), window=0, overlap=None,
                                   tile=None if args.method_tiles else 0, tile_overlap=None)
        runner = WindowRunner(method, spec, device)
        for size in args.lr:
            h, w = (int(v) for v in size.lower().split("x"))
            keyframes = {} if streaming else {int(k): torch.rand(3, h * args.scale, w * args.scale) * 2 - 1
                                              for k in args.keyframes.split(",") if k.strip()}
            warm = input_frames(args.content, args.frames[0], h, w)
            run_once(runner, warm, keyframes, on_stage=stages if streaming else None)  # warm-up (kernels, autotune)
            stages.stop()  # the warm-up's last stage must not run into the first timed one
            for n_frames in args.frames:
                frames = input_frames(args.content, n_frames, h, w)
                if on_gpu:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                stages.reset_peaks()
                times, parts, stage_parts = [], [], []
                for _ in range(args.repeats):
                    timers.seconds, stages.seconds = {}, {}
                    times.append(run_once(runner, frames, keyframes, on_stage=stages if streaming else None))
                    stage_parts.append(stages.stop())
                    parts.append(dict(stage_parts[-1]) if streaming else dict(timers.seconds))
                median = statistics.median(times)
                part = {k: statistics.median(p.get(k, 0.0) for p in parts) for k in parts[0]}
                stage = {k: statistics.median(p.get(k, 0.0) for p in stage_parts) for k in stage_parts[0]}
                flags = [f for f, on in (("cudnn_benchmark", args.cudnn_benchmark),
                                         ("vae_channels_last", args.vae_channels_last),
                                         ("vae_compile", args.vae_compile), ("method_tiles", args.method_tiles)) if on]
                row = {"method": args.method, "backbone": backbone_name, "options": sweep + args.set + flags,
                       "random_weights": cfg.backbone is not None and bool(cfg.backbone.random_weights),
                       "lr": [h, w], "hr": [h * args.scale, w * args.scale], "frames": n_frames,
                       "keyframes": sorted(keyframes), "seconds": median, "ms_per_frame": median / n_frames * 1000,
                       "parts_seconds": part, "stages_seconds": stage,
                       "peak_gib": max(torch.cuda.max_memory_allocated(), stages.overall_peak) / 2**30 if on_gpu else 0.0,
                       "stage_peak_gib": {k: round(v / 2**30, 2) for k, v in stages.peaks.items()},
                       "gpu": torch.cuda.get_device_name() if on_gpu else "cpu", "torch": torch.__version__,
                       "runs": times}
                if args.file_to_file == n_frames and streaming:
                    import tempfile

                    with tempfile.TemporaryDirectory() as folder:
                        row["file"] = file_round_trip(runner, frames, args.scale, Path(folder))
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
