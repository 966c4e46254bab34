"""Scale-out figures on a multi-GPU machine: one clip over 1, 2, 4 ... GPUs, and full-size training
steps under FSDP / DeepSpeed ZeRO-2 (random weights), as docs/benchmarks.md reports them.

Everything runs through the real command line (``vsrkit infer`` / ``vsrkit train``, under
``accelerate launch`` for several GPUs) on inputs this tool makes itself (no data needed on the
machine). Full-size backbones get random weights, and the prompt-embedding cache gets a random
tensor for each prompt in ``--prompt`` (the text encoder is not timed, as in perf-notes.md).

Inference (``infer``): a synthetic ``--frames``-frame clip of ``--lr`` pixels is upscaled by each
process count; the tool prints, per count, the file time (first frame read to output closed,
model loading excluded: the ``ms/frame`` line ``vsrkit infer`` prints), frames per second, speed-up
and scaling efficiency against one process, and the largest pixel difference (and PSNR) of the
output against the one-process output (0 / inf for windowed methods)::

    python tools/bench_scaleout.py infer --method sparkvsr --processes 1,2 --frames 330 --lr 180x320 \\
        --out $OUT/scale-sparkvsr.json

Training (``train``): ``--steps`` optimizer steps of ``--method`` at full size under
``conf/accelerate/<--config>.yaml`` on ``--processes`` GPUs, with validation at the last step
(exercises the gathered-weights path) and the exported weights loaded back by ``vsrkit infer``;
prints the step times, the peak GPU memory of every process, and the load-back result::

    python tools/bench_scaleout.py train --method sparkvsr --config fsdp --processes 2 --out $OUT/fsdp.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def synthetic_clip(path: Path, frames: int, height: int, width: int, seed: int = 0) -> Path:
    """A lossless clip with motion and texture (drifting sinusoids plus fixed noise), 24 fps."""
    from vsrkit.io import VideoWriter

    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 12, (height, width, 3))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    with VideoWriter(path, width=width, height=height, fps=24, codec="ffv1") as writer:
        for start in range(0, frames, 16):
            batch = []
            for t in range(start, min(frames, start + 16)):
                base = [128 + 90 * np.sin((xx + 3 * t) / (9 + 4 * c) + (yy - 2 * t) / (13 + 3 * c)) for c in range(3)]
                batch.append(np.clip(np.stack(base, -1) + noise, 0, 255).astype(np.uint8))
            writer.write(np.stack(batch))
    return path


def _backbone_preset(command: str, method: str, overrides: list[str]) -> str | None:
    from hydra import compose, initialize_config_module

    from vsrkit.commands.hydra_app import store_schemas
    from vsrkit.plugins import setup_registries

    setup_registries()
    store_schemas()
    with initialize_config_module(config_module="vsrkit.conf", version_base="1.3"):
        extra = ["input=-", "output=-"] if command == "infer" else []
        cfg = compose(config_name=command, overrides=[f"method={method}", *extra, *overrides], return_hydra_config=True)
    choice = cfg.hydra.runtime.choices.get("backbone")
    return None if choice in (None, "none") else str(choice)


def random_prompt_cache(cache_root: Path, preset_name: str | None, prompts: list[str]) -> None:
    """Write a random embedding for each prompt where the preset's cache looks (VSRKIT_CACHE)."""
    if preset_name is None:
        return
    sys.path.insert(0, str(REPO / "tools"))
    from random_prompt_cache import write_random_embeddings

    write_random_embeddings(preset_name, cache_root / "prompt_embeds", prompts, overwrite=True)


def _random_weights_flag(method: str, overrides: list[str]) -> list[str]:
    """``backbone.random_weights=true`` for a method with a backbone (issue 9: a real preset without
    weights refuses to run; speed needs none), unless the caller set it."""
    if any(o.startswith("backbone.random_weights=") for o in overrides):
        return []
    sys.path.insert(0, str(REPO / "tools"))
    from bench_method import compose

    return ["backbone.random_weights=true"] if compose(method, None, list(overrides)).backbone is not None else []


def _launch(processes: int, target: list[str], config: str | None = None) -> list[str]:
    if processes == 1 and config is None:
        return [sys.executable, *target]
    head = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
            "--num_machines", "1", "--dynamo_backend", "no"]
    head += ["--config_file", str(REPO / "conf" / "accelerate" / f"{config}.yaml")] if config else ["--multi_gpu"]
    return [*head, *target]


def _run(cmd: list[str], env: dict, log: Path, timeout: int) -> tuple[int, str, float]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    seconds = time.perf_counter() - started
    text = proc.stdout + proc.stderr
    log.write_text(" ".join(cmd) + "\n\n" + text)
    return proc.returncode, text, seconds


def _decode(path: Path) -> np.ndarray:
    from vsrkit.io import open_source

    return open_source(path).read()


def _compare(a: Path, b: Path) -> dict:
    x, y = _decode(a), _decode(b)
    if x.shape != y.shape:
        return {"same_shape": False}
    diff = np.abs(x.astype(np.int32) - y.astype(np.int32))
    mse = float((diff.astype(np.float64) ** 2).mean())
    return {"same_shape": True, "max_abs_diff": int(diff.max()), "psnr_db": math.inf if mse == 0 else 10 * math.log10(255**2 / mse),
            "frames_differing": int((diff.reshape(len(x), -1).max(1) > 0).sum())}


def bench_infer(args, env: dict, work: Path) -> list[dict]:
    h, w = _size(args.lr)
    clip = synthetic_clip(work / "clip.mkv", args.frames, h, w)
    flags = _random_weights_flag(args.method, args.set) + [f"scale={args.scale}", "io.codec=ffv1", *args.set]
    rows, base = [], None
    for n in args.processes:
        out = work / f"out-{n}.mkv"
        target = ["-m", "vsrkit.cli", "infer", f"method={args.method}", f"input={clip}", f"output={out}", *flags]
        rc, text, wall = _run(_launch(n, target), env, work / f"infer-{n}.log", args.timeout)
        match = re.search(r": (\d+) frames, ([\d.]+) s \(([\d.]+) ms/frame", text)
        if rc != 0 or match is None:
            print(f"{n} process(es) failed (rc {rc}); log: {work / f'infer-{n}.log'}\n{text[-3000:]}", file=sys.stderr)
            rows.append({"processes": n, "ok": False})
            continue
        frames, seconds = int(match.group(1)), float(match.group(2))
        row = {"processes": n, "ok": True, "frames": frames, "file_seconds": seconds, "wall_seconds": wall,
               "fps": frames / seconds, "ms_per_frame": seconds / frames * 1000,
               "segments": re.findall(r"segment \d+ \(process \d+\) computed .*? in [\d.]+ s", text)}
        if base is None:
            base = row
        row["speedup"] = base["file_seconds"] / seconds
        row["efficiency"] = row["speedup"] / n * base["processes"]
        row["vs_first"] = _compare(work / f"out-{base['processes']}.mkv", out) if base is not row else {"max_abs_diff": 0}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _synthetic_dataset(work: Path, clips: int, frames: int, hr: tuple[int, int], scale: int) -> dict:
    data = work / "data"
    data.mkdir(exist_ok=True)
    for i in range(clips):
        synthetic_clip(data / f"clip{i}.mkv", frames, *hr, seed=i)
    # Validation pair: GT and its bicubic-downscaled LQ (PIL), 9 frames.
    from PIL import Image

    from vsrkit.io import VideoWriter

    gt = _decode(synthetic_clip(work / "val-gt.mkv", 9, hr[0], hr[1], seed=100))
    lh, lw = hr[0] // scale, hr[1] // scale
    lq = np.stack([np.asarray(Image.fromarray(f).resize((lw, lh), Image.BICUBIC)) for f in gt])
    with VideoWriter(work / "val-lq.mkv", width=lw, height=lh, fps=Fraction(24), codec="ffv1") as writer:
        writer.write(lq)
    return {"root": data, "gt": work / "val-gt.mkv", "lq": work / "val-lq.mkv"}


def bench_train(args, env: dict, work: Path) -> dict:
    hr = _size(args.hr)
    data = _synthetic_dataset(work, args.clips, args.clip_frames, hr, args.scale)
    run_dir = work / f"run-{args.config}"
    target = ["-m", "vsrkit.cli", "train", f"method={args.method}", "data=hq", f"data.root={data['root']}",
              f"scale={args.scale}", f"train.max_steps={args.steps}", f"train.output_dir={run_dir}",
              "train.progress_bar=false", "train.tensorboard=false", "train.log_every=1", "train.checkpoint_every=0",
              f"train.validate_every={args.steps}", f"validation.lq={data['lq']}", f"validation.gt={data['gt']}",
              "validation.max_frames=9", *_random_weights_flag(args.method, args.set), *args.set]
    rc, text, wall = _run(_launch(args.processes, target, args.config), env, work / "train.log", args.timeout)
    steps = [float(v) for v in re.findall(r"time/step_s=([\d.e+-]+)", text)]
    peaks = re.search(r"peak GPU memory per process \(GiB\): ([\d. ]+)", text)
    result = {"method": args.method, "config": args.config, "processes": args.processes, "ok": rc == 0,
              "wall_seconds": wall, "step_seconds": steps, "peak_gib_per_process":
              [float(v) for v in peaks.group(1).split()] if peaks else None,
              "validation": re.findall(r"validation step \d+: .*", text)}
    if rc != 0:
        print(f"training failed (rc {rc}); log: {work / 'train.log'}\n{text[-3000:]}", file=sys.stderr)
        return result
    # The exported weights load back for inference (one process).
    out = work / "loadback.mkv"
    infer_set = [o for o in args.set if not o.startswith(("train.", "data", "validation.", "degradation"))]
    target = ["-m", "vsrkit.cli", "infer", f"method={args.method}", f"backbone.path={run_dir / 'export'}",
              f"input={data['lq']}", f"output={out}", f"scale={args.scale}", "io.codec=ffv1", *infer_set]
    rc, text, _ = _run(_launch(1, target), env, work / "loadback.log", args.timeout)
    result["loadback_ok"] = rc == 0 and out.is_file()
    result["loadback_frames"] = len(_decode(out)) if result["loadback_ok"] else 0
    if not result["loadback_ok"]:
        print(f"load-back failed; log: {work / 'loadback.log'}\n{text[-3000:]}", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("infer", "train"):
        p = sub.add_parser(name)
        p.add_argument("--method", required=True)
        p.add_argument("--scale", type=int, default=4)
        p.add_argument("--set", action="append", default=[], help="extra Hydra override (repeatable)")
        p.add_argument("--prompt", action="append", default=None, help="prompts to give a random cached embedding")
        p.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
        p.add_argument("--timeout", type=int, default=1800, help="seconds per vsrkit command")
        p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    infer = sub.choices["infer"]
    infer.add_argument("--processes", default="1,2", help="comma-separated process (GPU) counts; the first is the base")
    infer.add_argument("--frames", type=int, default=330)
    infer.add_argument("--lr", default="180x320", help="input size HxW")
    train = sub.choices["train"]
    train.add_argument("--config", default="fsdp", help="conf/accelerate/<name>.yaml: fsdp, deepspeed_zero2, ddp")
    train.add_argument("--processes", type=int, default=2)
    train.add_argument("--steps", type=int, default=2)
    train.add_argument("--hr", default="352x672", help="HR size of the synthetic training clips")
    train.add_argument("--clips", type=int, default=4)
    train.add_argument("--clip-frames", type=int, default=40)
    args = parser.parse_args(argv)
    if args.mode == "infer":
        args.processes = [int(v) for v in args.processes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="vsrkit-scaleout-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, VSRKIT_CACHE=str(work / "cache"), PYTHONUNBUFFERED="1")
    random_prompt_cache(work / "cache", _backbone_preset(args.mode, args.method, args.set), args.prompt or [""])
    if args.mode == "infer":
        result: object = bench_infer(args, env, work)
    else:
        result = bench_train(args, env, work)
        print(json.dumps(result), flush=True)
    try:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 -- only a label
        gpu = "unknown"
    if args.out:
        args.out.write_text(json.dumps({"gpu": gpu, "argv": sys.argv, "result": result}, indent=2, default=str))
    ok = all(r.get("ok") for r in result) if isinstance(result, list) else result.get("ok") and result.get("loadback_ok")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
