"""The test guards hold from the first import on: no network, no GPU (issue 9, item 17)."""

from __future__ import annotations

import os

import huggingface_hub.constants  # imported at collection, as diffusers/transformers are by other modules

import pytest

_VISIBLE_AT_COLLECTION = os.environ.get("CUDA_VISIBLE_DEVICES")


def test_hub_is_offline_for_modules_imported_at_collection():
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    import transformers.utils.hub as transformers_hub

    assert transformers_hub.is_offline_mode()


def test_no_gpu_from_collection_on(request):
    if "gpu" in (request.config.getoption("markexpr", default="") or ""):
        pytest.skip("a GPU run")
    assert _VISIBLE_AT_COLLECTION == ""
    import torch

    assert not torch.cuda.is_available()
