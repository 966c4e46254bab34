#!/usr/bin/env python
"""Make a paired test set ``<out>/{GT,LQ}/<clip>/`` from a folder of GT clips.

Examples::

    python tools/make_testset.py GT_DIR OUT_DIR --degradation bd --scale 4
    python tools/make_testset.py videos/ udm_like/ --degradation realbasicvsr --seed 1 --videos
    python tools/make_testset.py GT_DIR OUT_DIR --degradation realbasicvsr --set codec1.prob=0

``GT_DIR`` holds one clip per sub-folder of frames or per video file, or is itself one folder of
frames (one clip named after it). Each GT frame is cropped at the bottom/right to a multiple of
``--scale`` (written to ``GT/``), degraded with the preset (written to ``LQ/``), as 8-digit PNGs.
``--videos`` also writes lossless ``GT-Video/<clip>.mkv`` and ``LQ-Video/<clip>.mkv`` (FFV1).
Random presets are seeded per clip from ``(--seed, clip name)``, so adding clips changes no other.
Then: ``vsrkit bench data=paired data.root=OUT_DIR``.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vsrkit.builtins import register_builtins
from vsrkit.data.degradations import build_degradation
from vsrkit.data.draws import item_generator
from vsrkit.data.files import is_image, is_video, list_images
from vsrkit.data.clips import to_tensor as clip_to_tensor
from vsrkit.data.media import read_frames_clip, read_video_clip, write_lossless_mkv
from vsrkit.errors import UserError
from vsrkit.registry import DEGRADATIONS


def find_clips(gt_dir: Path) -> list[tuple[str, Path]]:
    """``(clip name, frames folder or video file)`` for every clip in ``gt_dir``."""
    if not gt_dir.is_dir():
        raise UserError(f"GT folder {gt_dir} does not exist.")
    clips = []
    for entry in sorted(gt_dir.iterdir()):
        if entry.is_dir() and list_images(entry):
            clips.append((entry.name, entry))
        elif entry.is_file() and is_video(entry):
            clips.append((entry.stem, entry))
    if not clips and any(is_image(p) for p in gt_dir.iterdir()):
        clips.append((gt_dir.name, gt_dir))
    if not clips:
        raise UserError(f"{gt_dir} holds no clips: expected sub-folders of frames, video files, or frames.")
    names = [n for n, _ in clips]
    if len(set(names)) != len(names):
        raise UserError(f"{gt_dir} has clips with the same name (a folder and a video?): {sorted(names)}.")
    return clips


def read_clip(source: Path, max_frames: int) -> np.ndarray:
    limit = max_frames if max_frames > 0 else 1 << 30
    if source.is_dir():
        return read_frames_clip(list_images(source), 0, limit)
    return read_video_clip(source, 0, limit)


def degradation_config(name: str, overrides: list[str]):
    register_builtins()
    if name not in DEGRADATIONS:
        raise UserError(DEGRADATIONS.unknown_message(name))
    schema = OmegaConf.structured(DEGRADATIONS.get_config(name))
    try:
        merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(overrides))
    except Exception as err:  # OmegaConf validation errors -> one line
        raise UserError(f"bad --set for degradation `{name}`: {str(err).splitlines()[0]}") from None
    return OmegaConf.to_object(merged)


def write_pngs(folder: Path, frames: np.ndarray) -> None:
    from vsrkit.io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        write_image(folder / f"{i:08d}.png", frame, overwrite=True)  # 8- or 16-bit PNG, atomically


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("gt_dir", type=Path, help="folder of GT clips (frame folders or videos)")
    parser.add_argument("out_dir", type=Path, help="output dataset folder")
    parser.add_argument("--degradation", default="bd", help="degradation preset (default: bd)")
    parser.add_argument("--scale", type=int, default=4, help="GT size / LQ size (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random presets (default: 0)")
    parser.add_argument("--max-frames", type=int, default=0, help="frames per clip, 0 for all")
    parser.add_argument("--videos", action="store_true", help="also write GT-Video/ and LQ-Video/ lossless MKVs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a degradation option, e.g. --set blur1.prob=0 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace clips already in OUT_DIR")
    args = parser.parse_args(argv)
    try:
        cfg = degradation_config(args.degradation, args.overrides)
        degrade = build_degradation(cfg, scale=args.scale)
        clips = find_clips(args.gt_dir.resolve())
        out = args.out_dir.resolve()
        gt_root = args.gt_dir.resolve()
        if out == gt_root or gt_root in out.parents:
            raise UserError(f"output {out} must not be the GT folder {gt_root} or inside it.")
        for name, _ in clips:
            existing = [out / d / name for d in ("GT", "LQ") if (out / d / name).exists()]
            if existing and not args.overwrite:
                raise UserError(f"{existing[0]} already exists; pass --overwrite to replace it.")
        for name, source in clips:
            frames = read_clip(source, args.max_frames)
            if len(frames) == 0:
                raise UserError(f"clip {source} has no frames.")
            h, w = (frames.shape[1] // args.scale) * args.scale, (frames.shape[2] // args.scale) * args.scale
            frames = np.ascontiguousarray(frames[:, :h, :w])
            hq = clip_to_tensor(frames)  # uint8 or uint16 (16-bit sources keep their precision)
            generator = item_generator(args.seed, 0, zlib.crc32(name.encode()))
            with torch.no_grad():
                lq = degrade(hq, generator)
            lq_frames = (lq * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
            write_pngs(out / "GT" / name, frames)
            write_pngs(out / "LQ" / name, lq_frames)
            if args.videos:
                for sub, data in (("GT-Video", frames), ("LQ-Video", lq_frames)):
                    (out / sub).mkdir(parents=True, exist_ok=True)
                    target = out / sub / f"{name}.mkv"
                    if target.exists():
                        target.unlink()
                    write_lossless_mkv(target, data)
            print(f"{name}: {len(frames)} frames, GT {w}x{h} -> LQ {lq_frames.shape[2]}x{lq_frames.shape[1]}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(clips)} clip(s) to {out} (degradation {args.degradation}, x{args.scale}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
