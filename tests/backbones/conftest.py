"""Fixtures of the backbone tests: tiny presets built once per session."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from backbone_helpers import tiny_config  # noqa: E402

from vsrkit.backbones import build_backbone  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cogvideox():
    return build_backbone(tiny_config("cogvideox"))


@pytest.fixture(scope="session")
def tiny_wan():
    return build_backbone(tiny_config("wan"))


@pytest.fixture(scope="session")
def tiny_ltx():
    return build_backbone(tiny_config("ltx"))
