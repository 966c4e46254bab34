"""Fixtures of the data tests: one torch thread (the CI machine has 2 shared cores), real frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Intra-op threads on 2 busy cores make small ops ~40x slower; restore afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def calendar(real_data) -> Path:
    """Vid4 calendar folder (GT/ and LR_BDx4/)."""
    return real_data / "yhjo09_VSR-DUF_Vid4" / "calendar"
