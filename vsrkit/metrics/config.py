"""One config dataclass per registered metric (no torch here, so the CLI can build schemas cheaply).

Field names are the keys of ``conf/metric/<name>.yaml``. Choices are plain ``str`` fields checked
in ``__post_init__``. Weight files are never downloaded: a metric that needs one takes a local
path, and fails with the file's name when it is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from vsrkit.errors import UserError

COLOR_SPACES = ("ycbcr", "yiq")
FLOW_BACKENDS = ("auto", "farneback", "raft_large")


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"`{field}` must be one of {list(choices)}. Got {value!r}.")


def _check_non_negative(field: str, value: int) -> None:
    if value < 0:
        raise UserError(f"`{field}` must be >= 0. Got {value}.")


# --- full-reference, weight-free ------------------------------------------------------------


@dataclass
class PSNRConfig:
    """Options of ``psnr`` (pyiqa ``psnr`` / BasicSR ``calculate_psnr_pt``).

    Args:
        crop_border: Pixels dropped at each image edge before scoring.
        test_y_channel: Score the luma channel only (as BasicSR ``test_y_channel``).
        color_space: Luma definition when ``test_y_channel``: ``"ycbcr"`` is BasicSR's
            ``rgb2ycbcr(y_only=True)`` (BT.601 studio range, Y in [16, 235]/255, the classic VSR
            convention); ``"yiq"`` is pyiqa's default (``0.299 R + 0.587 G + 0.114 B``, full range).
            The two differ by about 1.32 dB (20 log10(255/219)).
        device: Torch device the scores are computed on.
    """

    crop_border: int = 0
    test_y_channel: bool = False
    color_space: str = "ycbcr"
    device: str = "cpu"

    def __post_init__(self):
        _check_non_negative("crop_border", self.crop_border)
        _check_choice("color_space", self.color_space, COLOR_SPACES)


@dataclass
class PSNRYConfig(PSNRConfig):
    """Options of ``psnry``: :class:`PSNRConfig` scored on the luma channel by default.

    Note pyiqa's own ``psnry`` uses ``color_space="yiq"``; set it to reproduce pyiqa numbers.
    """

    test_y_channel: bool = True


@dataclass
class SSIMConfig:
    """Options of ``ssim`` (pyiqa ``ssim``: Gaussian 11x11, sigma 1.5, 'valid' filtering).

    Args:
        crop_border: Pixels dropped at each image edge before scoring.
        test_y_channel: Score the luma channel only (pyiqa ``ssim`` default), else all RGB channels.
        color_space: Luma definition, ``"yiq"`` (pyiqa default) or ``"ycbcr"`` (BasicSR).
        downsample: Average-pool by ``round(min(H, W) / 256)`` first, as the official MATLAB
            ``ssim.m`` does; pyiqa's ``ssim`` leaves this off.
        device: Torch device the scores are computed on.
    """

    crop_border: int = 0
    test_y_channel: bool = True
    color_space: str = "yiq"
    downsample: bool = False
    device: str = "cpu"

    def __post_init__(self):
        _check_non_negative("crop_border", self.crop_border)
        _check_choice("color_space", self.color_space, COLOR_SPACES)


@dataclass
class SSIMCConfig(SSIMConfig):
    """Options of ``ssimc``: :class:`SSIMConfig` on the three RGB channels (pyiqa ``ssimc``)."""

    test_y_channel: bool = False


# --- pyiqa adapter ---------------------------------------------------------------------------


@dataclass
class PyiqaConfig:
    """Options of the generic ``pyiqa`` metric: any metric name pyiqa knows.

    Args:
        name: pyiqa metric name (``pyiqa.list_models()``), e.g. ``"lpips-vgg"``.
        pretrained_model_path: Local weights file handed to pyiqa. Empty: pyiqa's cache,
            ``$TORCH_HOME/hub/pyiqa/<basename>``, must already hold the file.
        torch_home: ``$TORCH_HOME`` to use while the metric is built: pyiqa, torchvision and CLIP
            then look for cached weights under ``<torch_home>/hub/{pyiqa,checkpoints,clip}``.
            Empty: the current ``torch.hub.get_dir()``.
        crop_border: Pixels dropped at each image edge before scoring.
        batch_frames: Frames scored per pyiqa call (pyiqa's evaluators use 1 to avoid 32-bit
            index overflow on large frames).
        device: Torch device the model runs on.
    """

    name: str = ""
    pretrained_model_path: str = ""
    torch_home: str = ""
    crop_border: int = 0
    batch_frames: int = 1
    device: str = "cpu"

    def __post_init__(self):
        _check_non_negative("crop_border", self.crop_border)
        if self.batch_frames < 1:
            raise UserError(f"`batch_frames` must be >= 1. Got {self.batch_frames}.")


@dataclass
class LPIPSConfig(PyiqaConfig):
    """Options of ``lpips`` (pyiqa ``lpips``: AlexNet, v0.1; ``net="vgg"`` picks ``lpips-vgg``).

    Needs ``LPIPS_v0.1_alex-df73285e.pth`` (or ``..._vgg-a78928a0.pth``) and torchvision's
    ImageNet backbone ``alexnet-owt-7be5be79.pth`` (``vgg16-397923af.pth``) under
    ``$TORCH_HOME/hub/checkpoints``.
    """

    net: str = "alex"

    def __post_init__(self):
        super().__post_init__()
        _check_choice("net", self.net, ("alex", "vgg"))


@dataclass
class DISTSConfig(PyiqaConfig):
    """Options of ``dists``: needs ``DISTS_weights-f5e65c96.pth`` and torchvision ``vgg16-397923af.pth``."""


@dataclass
class NIQEConfig(PyiqaConfig):
    """Options of ``niqe`` (pyiqa ``niqe``): needs ``niqe_modelparameters.mat`` (a MATLAB file with
    ``mu_prisparam`` and ``cov_prisparam``), or another pristine model given as
    ``pretrained_model_path``.

    ``pretrained_model_path`` may name BasicSR's ``niqe_pris_params.npz`` (keys ``mu_pris_param``,
    ``cov_pris_param``: the official MATLAB pristine model, no neural weights); it is converted to
    the ``.mat`` layout pyiqa reads. With it and ``color_space="ycbcr"``, baboon.png scores
    5.7300 (BasicSR 5.72958, MATLAB R2021a 5.72957).

    Args:
        color_space: Luma of the RGB input: ``"yiq"`` (pyiqa default) or ``"ycbcr"`` (BasicSR/MATLAB).
    """

    color_space: str = "yiq"

    def __post_init__(self):
        super().__post_init__()
        _check_choice("color_space", self.color_space, COLOR_SPACES)


@dataclass
class MUSIQConfig(PyiqaConfig):
    """Options of ``musiq`` (KonIQ-10k head): needs ``musiq_koniq_ckpt-e95806b9.pth``."""


@dataclass
class CLIPIQAConfig(PyiqaConfig):
    """Options of ``clipiqa``: needs OpenAI CLIP ``RN50.pt`` under ``$TORCH_HOME/hub/clip``
    (or ``pretrained_model_path=<RN50.pt>``, handed to pyiqa as the CLIP ``backbone`` file), and
    the ``openai-clip`` package.
    """


# --- temporal --------------------------------------------------------------------------------


@dataclass
class EwarpConfig:
    """Options of ``ewarp`` (E*warp as the VSR diffusion papers compute it; see temporal.py).

    Args:
        flow: Optical-flow backend: ``"raft_large"`` (torchvision RAFT, needs
            ``raft_weights_path``), ``"farneback"`` (OpenCV, weight-free), or ``"auto"``
            (``raft_large`` when ``raft_weights_path`` is set, else ``farneback``). Numbers are
            not comparable across backends; the backend is recorded with the scores.
        raft_weights_path: torchvision ``raft_large`` state dict, e.g.
            ``raft_large_C_T_V1-22a6c225.pth`` (ported from the original ``raft-things.pth``
            that the papers use).
        raft_iters: RAFT refinement iterations (the papers' evaluator uses 20).
        crop_border: Pixels dropped at each image edge before scoring.
        device: Torch device for flow and warping.
    """

    flow: str = "auto"
    raft_weights_path: str = ""
    raft_iters: int = 20
    crop_border: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check_choice("flow", self.flow, FLOW_BACKENDS)
        _check_non_negative("crop_border", self.crop_border)
        if self.flow == "raft_large" and not self.raft_weights_path:
            raise UserError(
                "`flow` is 'raft_large' but `raft_weights_path` is empty. Give the torchvision "
                "state dict, e.g. raft_large_C_T_V1-22a6c225.pth, or use flow=farneback."
            )
        if self.raft_iters < 1:
            raise UserError(f"`raft_iters` must be >= 1. Got {self.raft_iters}.")


@dataclass
class TOFConfig:
    """Options of ``tof`` (TecoGAN tOF).

    Args:
        crop_8x8: Score only TecoGAN's centred crop of the flow field (``crop_8x8`` in
            thunil/TecoGAN metrics.py: a multiple of 32 at least 16 px inside each edge).
        crop_border: Pixels dropped at each image edge before the flow is computed.
    """

    crop_8x8: bool = True
    crop_border: int = 0

    def __post_init__(self):
        _check_non_negative("crop_border", self.crop_border)


@dataclass
class TLPIPSConfig:
    """Options of ``tlpips`` (TecoGAN tLP, reported x100), over pyiqa's LPIPS (AlexNet, v0.1).

    Args:
        pretrained_model_path: Local ``LPIPS_v0.1_alex-df73285e.pth``; empty: pyiqa's cache.
        torch_home: ``$TORCH_HOME`` to read cached weights from while LPIPS is built (see PyiqaConfig).
        crop_8x8: Score TecoGAN's centred crop of each frame (as TecoGAN does for tLP).
        crop_border: Pixels dropped at each image edge before scoring.
        device: Torch device LPIPS runs on.
    """

    pretrained_model_path: str = ""
    torch_home: str = ""
    crop_8x8: bool = True
    crop_border: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check_non_negative("crop_border", self.crop_border)
