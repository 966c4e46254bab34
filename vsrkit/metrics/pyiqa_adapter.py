"""Learned image metrics through pyiqa (an optional extra: ``pip install 'vsrkit[metrics]'``).

pyiqa (chaofengc/IQA-PyTorch) is licensed PolyForm-Noncommercial-1.0.0, so it is imported only
when one of these metrics is built. vsrkit never lets pyiqa download: the weight files a metric
needs are checked before pyiqa is called, and any download pyiqa, torchvision or CLIP would still
attempt while the metric is built is turned into a :class:`~vsrkit.errors.WeightsError` that
names the file and where it is expected.

Where pyiqa looks (``pyiqa/utils/download_util.py``, ``DEFAULT_CACHE_DIR``):
``$TORCH_HOME/hub/pyiqa/<basename>``; torchvision ImageNet backbones:
``$TORCH_HOME/hub/checkpoints/<basename>``; OpenAI CLIP: ``$TORCH_HOME/hub/clip/<basename>``.
``$TORCH_HOME`` defaults to ``~/.cache/torch``; the ``torch_home`` option overrides it for
one metric.

Every metric here scores frames independently: ``metric(pred, gt=None) -> (T,)``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from vsrkit.errors import UserError, WeightsError
from vsrkit.metrics.config import (
    CLIPIQAConfig,
    DISTSConfig,
    LPIPSConfig,
    MUSIQConfig,
    NIQEConfig,
    PyiqaConfig,
)
from vsrkit.metrics.tensors import check_frames, crop_edges, resolve_device

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'vsrkit[metrics]' (non-commercial licence)"

# Files each named metric needs: (folder under $TORCH_HOME/hub, basename). The first "pyiqa" entry
# is the one `pretrained_model_path` replaces. Names from pyiqa/archs/{lpips,dists,niqe,musiq}_arch.py
# `default_model_urls`, torchvision alexnet.py/vgg.py weight URLs, pyiqa/archs/clip_model.py `_MODELS`.
EXPECTED_FILES: dict[str, list[tuple[str, str]]] = {
    "lpips": [("pyiqa", "LPIPS_v0.1_alex-df73285e.pth"), ("checkpoints", "alexnet-owt-7be5be79.pth")],
    "lpips-vgg": [("pyiqa", "LPIPS_v0.1_vgg-a78928a0.pth"), ("checkpoints", "vgg16-397923af.pth")],
    "dists": [("pyiqa", "DISTS_weights-f5e65c96.pth"), ("checkpoints", "vgg16-397923af.pth")],
    "niqe": [("pyiqa", "niqe_modelparameters.mat")],
    "niqe_matlab": [("pyiqa", "niqe_matlab_params.mat")],
    "musiq": [("pyiqa", "musiq_koniq_ckpt-e95806b9.pth")],
    "musiq-koniq": [("pyiqa", "musiq_koniq_ckpt-e95806b9.pth")],
    "clipiqa": [("clip", "RN50.pt")],
}


def import_pyiqa(metric: str) -> Any:
    """Import pyiqa, or raise a UserError saying how to install it.

    Args:
        metric: The vsrkit metric name, used in the message.
    """
    if importlib.util.find_spec("pyiqa") is None:
        raise UserError(f"metric `{metric}` needs pyiqa: {INSTALL_HINT}")
    try:
        return importlib.import_module("pyiqa")
    except ImportError as exc:
        raise UserError(f"metric `{metric}`: pyiqa is installed but does not import ({exc}). "
                        f"Reinstall it: {INSTALL_HINT}") from exc


def hub_dir(torch_home: str) -> Path:
    """``torch.hub``'s folder: ``<torch_home>/hub`` if given, else ``torch.hub.get_dir()``."""
    return Path(torch_home).expanduser() / "hub" if torch_home else Path(torch.hub.get_dir())


def expected_files(name: str, pretrained_model_path: str, torch_home: str) -> list[tuple[Path, bool]]:
    """Local files pyiqa will read to build metric ``name`` (none listed for names we do not know).

    Args:
        name: pyiqa metric name.
        pretrained_model_path: Replaces the metric's own weights file (pyiqa's, or CLIP's) when set.
        torch_home: See :class:`~vsrkit.metrics.config.PyiqaConfig`.

    Returns:
        ``(path, given_by_user)`` pairs.
    """
    files, replaced = [], False
    for folder, basename in EXPECTED_FILES.get(name, []):
        if pretrained_model_path and not replaced and folder in ("pyiqa", "clip"):
            files.append((Path(pretrained_model_path).expanduser(), True))
            replaced = True
        else:
            files.append((hub_dir(torch_home) / folder / basename, False))
    if pretrained_model_path and not replaced:
        files.append((Path(pretrained_model_path).expanduser(), True))
    return files


def missing_message(key: str, path: Path, given_by_user: bool = False) -> str:
    """The one-line error for an absent weights file (names the file and where pyiqa expects it)."""
    if given_by_user:
        return (f"`metric.{key}.pretrained_model_path` names `{path}`, which does not exist. "
                "Give the path of the local weights file.")
    return (f"metric `{key}` needs the weights file `{path}` (pyiqa and torch look for "
            f"`$TORCH_HOME/hub/{path.parent.name}/{path.name}`), which is not there; vsrkit never downloads. "
            f"Place the file there, or set `metric.{key}.pretrained_model_path=<file>` "
            f"(`metric.{key}.torch_home=<dir>` to use another $TORCH_HOME).")


@contextlib.contextmanager
def no_downloads(key: str, torch_home: str) -> Iterator[None]:
    """While building a metric: point every cache at ``hub_dir(torch_home)`` and fail on any download.

    pyiqa computes its cache folder once at import (``DEFAULT_CACHE_DIR``), torchvision and CLIP
    ask ``torch.hub.get_dir()`` on each call; all three download through the functions patched here.

    Args:
        key: vsrkit metric name (``metric.<key>.pretrained_model_path``), for messages.
        torch_home: See :class:`~vsrkit.metrics.config.PyiqaConfig`.
    """
    import torch.hub as hub
    import urllib.request

    download_util = importlib.import_module("pyiqa.utils.download_util")

    def refuse(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        raise WeightsError(missing_message(key, Path(dst)))

    def refuse_urlopen(url: Any, *args: Any, **kwargs: Any) -> None:
        name = os.path.basename(str(getattr(url, "full_url", url)))
        raise WeightsError(missing_message(key, hub_dir(torch_home) / "clip" / name))

    saved = (hub.get_dir(), hub.download_url_to_file, download_util.download_url_to_file,
             download_util.DEFAULT_CACHE_DIR, urllib.request.urlopen)
    hub.set_dir(str(hub_dir(torch_home)))
    hub.download_url_to_file = refuse
    download_util.download_url_to_file = refuse
    download_util.DEFAULT_CACHE_DIR = str(hub_dir(torch_home) / "pyiqa")
    urllib.request.urlopen = refuse_urlopen
    try:
        yield
    finally:
        (old_dir, hub.download_url_to_file, download_util.download_url_to_file,
         download_util.DEFAULT_CACHE_DIR, urllib.request.urlopen) = saved
        hub.set_dir(old_dir)


def build_perceptual_loss(name: str, device: torch.device | str, key: str):
    """pyiqa's DISTS or LPIPS as a differentiable loss on ``(N, C, H, W)`` frames in [0, 1] (the
    releases' ``pyiqa.create_metric(name, as_loss=True)``), built without any download.

    Args:
        name: ``"dists"`` or ``"lpips"``.
        device: Where the loss runs.
        key: The config key whose value > 0 asked for the loss (named in errors with ``=0`` as the
            way out), e.g. ``method.dists_weight``.

    Raises:
        UserError: pyiqa is not installed, or the metric's weights are not in the torch hub cache.
    """
    label = name.upper()
    hint = f"or set {key}=0 to train without {label}"
    try:
        pyiqa = import_pyiqa(name)
    except UserError as err:
        raise UserError(f"{key} > 0: {err}; {hint}.") from None
    for path, _ in expected_files(name, "", ""):
        if not path.is_file():
            raise UserError(f"{key} > 0 needs the {label} weights file {path} (pyiqa looks in "
                            f"$TORCH_HOME/hub/{path.parent.name}/); vsrkit never downloads. Place it there, {hint}.")
    with no_downloads(name, ""):
        metric = pyiqa.create_metric(name, as_loss=True, device=device)
    metric.requires_grad_(False)
    return metric


def niqe_npz_to_mat(npz_path: Path, folder: str) -> Path:
    """Write BasicSR's ``niqe_pris_params.npz`` as the ``.mat`` pyiqa's NIQE reads.

    Args:
        npz_path: File with ``mu_pris_param`` (1x36) and ``cov_pris_param`` (36x36).
        folder: Where to write ``niqe_pris_params.mat``.
    """
    import scipy.io

    with np.load(npz_path) as params:
        if "mu_pris_param" not in params or "cov_pris_param" not in params:
            raise UserError(f"`pretrained_model_path` {npz_path} must hold `mu_pris_param` and `cov_pris_param` "
                            f"(BasicSR niqe_pris_params.npz). Got keys {sorted(params.keys())}.")
        mat = Path(folder) / "niqe_pris_params.mat"
        scipy.io.savemat(mat, {"mu_prisparam": params["mu_pris_param"], "cov_prisparam": params["cov_pris_param"]})
    return mat


def build_pyiqa_model(name: str, key: str, pretrained_model_path: str = "", torch_home: str = "",
                      device: str = "cpu", **options: Any) -> Any:
    """Build ``pyiqa.create_metric(name)`` from local files only.

    Args:
        name: pyiqa metric name.
        key: vsrkit metric name (config key), for messages.
        pretrained_model_path: Local weights file (``""``: pyiqa's cache).
        torch_home: See :class:`~vsrkit.metrics.config.PyiqaConfig`.
        device: Torch device.
        **options: Extra pyiqa metric options (e.g. ``color_space`` for NIQE).

    Returns:
        pyiqa's ``InferenceModel`` in eval mode.

    Raises:
        UserError: pyiqa is missing, or ``name`` is not a pyiqa metric.
        WeightsError: A needed file is absent (named in the message).
    """
    pyiqa = import_pyiqa(key)
    if name not in pyiqa.list_models():
        import difflib

        close = difflib.get_close_matches(name, pyiqa.list_models(), n=3)
        raise UserError(f"`name` {name!r} is not a pyiqa metric." + (f" Did you mean {close}?" if close else "")
                        + " See pyiqa.list_models().")
    for path, given_by_user in expected_files(name, pretrained_model_path, torch_home):
        if not path.is_file():
            raise WeightsError(missing_message(key, path, given_by_user))
    dev = resolve_device(device)
    with contextlib.ExitStack() as stack:
        if pretrained_model_path:
            path = Path(pretrained_model_path).expanduser()
            if name.startswith("niqe") and path.suffix == ".npz":
                path = niqe_npz_to_mat(path, stack.enter_context(tempfile.TemporaryDirectory()))
            # pyiqa's CLIP-IQA takes its CLIP checkpoint as `backbone` (a name or a file).
            options["backbone" if name == "clipiqa" else "pretrained_model_path"] = str(path)
        stack.enter_context(no_downloads(key, torch_home))
        printed = stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # pyiqa prints progress
        try:
            model = pyiqa.create_metric(name, as_loss=False, device=dev, **options)
        except ModuleNotFoundError as exc:
            raise UserError(f"pyiqa metric `{name}` needs the package `{exc.name}`, which is not installed.") from exc
        finally:
            for line in printed.getvalue().splitlines():
                if line.strip():
                    logger.debug("pyiqa: %s", line.strip())
    logger.info("built pyiqa metric %s on %s", name, dev)
    return model


class PyiqaMetric:
    """Any pyiqa metric (``pyiqa``; the pyiqa name is ``config.name``), scored per frame.

    ``higher_is_better`` and ``needs_gt`` come from pyiqa's metric table once built.

    Args:
        config: :class:`~vsrkit.metrics.config.PyiqaConfig`.
    """

    higher_is_better = True
    needs_gt = False
    temporal = False
    name = "pyiqa"
    pyiqa_name = ""

    def __init__(self, config: PyiqaConfig | None = None):
        self.config = config if config is not None else PyiqaConfig()
        pyiqa_name = self.pyiqa_name or self.config.name
        if not pyiqa_name:
            raise UserError("metric `pyiqa` needs `name` (a pyiqa metric, e.g. metric.pyiqa.name=lpips-vgg).")
        self.model = build_pyiqa_model(pyiqa_name, self.name, self.config.pretrained_model_path,
                                       self.config.torch_home, self.config.device, **self._options())
        self.higher_is_better = not bool(self.model.lower_better)
        self.needs_gt = self.model.metric_mode == "FR"
        self.info = {"pyiqa": pyiqa_name}

    def _options(self) -> dict:
        return {}

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        """Score ``pred`` (and ``gt`` for FR metrics), ``(T, C, H, W)`` float in [0, 1]; returns ``(T,)`` float64."""
        check_frames(pred, gt, self.name, self.needs_gt)
        b = self.config.crop_border
        pred = crop_edges(pred, b).float().clamp(0, 1)
        gt = crop_edges(gt, b).float().clamp(0, 1) if (gt is not None and self.needs_gt) else None
        scores = []
        for i in range(0, pred.shape[0], self.config.batch_frames):
            sl = slice(i, i + self.config.batch_frames)
            out = self.model(pred[sl], gt[sl]) if gt is not None else self.model(pred[sl])
            scores.append(torch.as_tensor(out).detach().reshape(-1).double().cpu())
        return torch.cat(scores)


class LPIPSMetric(PyiqaMetric):
    """LPIPS per frame (pyiqa ``lpips``, AlexNet v0.1; lower is better)."""

    higher_is_better = False
    needs_gt = True
    name = "lpips"

    def __init__(self, config: LPIPSConfig | None = None):
        config = config if config is not None else LPIPSConfig()
        self.pyiqa_name = "lpips" if config.net == "alex" else "lpips-vgg"
        super().__init__(config)


class DISTSMetric(PyiqaMetric):
    """DISTS per frame (pyiqa ``dists``; lower is better)."""

    higher_is_better = False
    needs_gt = True
    name = "dists"
    pyiqa_name = "dists"

    def __init__(self, config: DISTSConfig | None = None):
        super().__init__(config if config is not None else DISTSConfig())


class NIQEMetric(PyiqaMetric):
    """NIQE per frame (pyiqa ``niqe``; no reference; lower is better)."""

    higher_is_better = False
    needs_gt = False
    name = "niqe"
    pyiqa_name = "niqe"

    def __init__(self, config: NIQEConfig | None = None):
        super().__init__(config if config is not None else NIQEConfig())

    def _options(self) -> dict:
        return {"color_space": self.config.color_space}


class MUSIQMetric(PyiqaMetric):
    """MUSIQ (KonIQ-10k) per frame (pyiqa ``musiq``; no reference; higher is better)."""

    higher_is_better = True
    needs_gt = False
    name = "musiq"
    pyiqa_name = "musiq"

    def __init__(self, config: MUSIQConfig | None = None):
        super().__init__(config if config is not None else MUSIQConfig())


class CLIPIQAMetric(PyiqaMetric):
    """CLIP-IQA per frame (pyiqa ``clipiqa``, CLIP RN50; no reference; higher is better)."""

    higher_is_better = True
    needs_gt = False
    name = "clipiqa"
    pyiqa_name = "clipiqa"

    def __init__(self, config: CLIPIQAConfig | None = None):
        super().__init__(config if config is not None else CLIPIQAConfig())
