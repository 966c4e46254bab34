"""Fixtures of the InfVSR tests: the method on the tiny Wan preset, loaded once per session."""

from __future__ import annotations

import pytest
import torch
from infvsr_helpers import make_method


@pytest.fixture(scope="session")
def loaded():
    """The tiny method with scene detection off."""
    method = make_method(scene_detection=False)
    method.load(torch.device("cpu"), torch.float32)
    return method


@pytest.fixture(scope="session")
def loaded_scenes():
    """The tiny method with scene detection on (the default)."""
    method = make_method(scene_detection=True)
    method.load(torch.device("cpu"), torch.float32)
    return method
