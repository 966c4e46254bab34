"""`import vsrkit.io` loads av and numpy but not torch."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_load_torch():
    code = "import sys, vsrkit.io; print('torch' in sys.modules, 'av' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
