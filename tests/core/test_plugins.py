"""A throwaway plugin package, installed into a temporary folder, extends vsrkit end to end."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PLUGIN_SETUP = """
[metadata]
name = vsrkit-demo-plugin
version = 0.0.1

[options]
packages = vsrkit_demo_plugin, vsrkit_demo_plugin.conf

[options.package_data]
vsrkit_demo_plugin.conf = */*.yaml

[options.entry_points]
vsrkit.plugins =
    demo = vsrkit_demo_plugin
    broken = vsrkit_broken_plugin
"""

PLUGIN_INIT = '''
from dataclasses import dataclass

from vsrkit.registry import METHODS

CONFIG_PACKAGE = "vsrkit_demo_plugin.conf"


@dataclass
class NearestConfig:
    """Nearest-neighbour upscaling.

    Args:
        gain: Multiplies the output (to show config values arrive).
    """

    gain: float = 1.0


@METHODS.register("nearest-demo", config=NearestConfig, summary="plugin test method")
class NearestMethod:
    def __init__(self, config, backbone=None, scale=4):
        self.config, self.scale = config, scale

    def window_spec(self):
        from vsrkit.methods.protocol import WindowSpec

        return WindowSpec(scale=self.scale, window=8)

    def load(self, device, dtype):
        pass

    def upscale(self, lq, context):
        s = self.scale
        out = lq.repeat_interleave(s, -1).repeat_interleave(s, -2)
        return (out + 1) * self.config.gain - 1
'''

PLUGIN_METHOD_YAML = """# @package _global_
# vsrkit infer method=nearest-demo input=in.png output=out.png
defaults:
  - /schema/method@method: nearest-demo
  - override /backbone: none
  - _self_
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("plugin_src")
    (src / "setup.cfg").write_text(PLUGIN_SETUP)
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n')
    pkg = src / "vsrkit_demo_plugin"
    (pkg / "conf" / "method").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(PLUGIN_INIT))
    (pkg / "conf" / "__init__.py").write_text("")
    (pkg / "conf" / "method" / "nearest-demo.yaml").write_text(PLUGIN_METHOD_YAML)
    site = tmp_path_factory.mktemp("plugin_site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(src)], check=True, capture_output=True)
    return site


def _vsrkit(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(cwd or site)}
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or site)


def test_plugin_method_is_listed_and_broken_plugin_is_not_fatal(plugin_site):
    out = _vsrkit(plugin_site, "ls")
    assert out.returncode == 0, out.stderr
    assert "nearest-demo" in out.stdout and "plugin test method" in out.stdout
    assert "plugins that failed to load: broken" in out.stdout
    doctor = _vsrkit(plugin_site, "doctor")
    assert doctor.returncode == 0, doctor.stderr
    assert "demo (vsrkit_demo_plugin)" in doctor.stdout
    assert "plugin FAILED: broken: ModuleNotFoundError" in doctor.stdout
    assert "vsrkit_demo_plugin.conf" in doctor.stdout


def test_plugin_method_runs_through_its_own_config(plugin_site, tmp_path):
    Image.fromarray(np.full((6, 5, 3), 100, np.uint8)).save(tmp_path / "in.png")
    out = _vsrkit(plugin_site, "infer", "method=nearest-demo", "input=in.png", "output=out.png", "scale=2",
                  "method.gain=0.5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = np.asarray(Image.open(tmp_path / "out.png"))
    assert result.shape == (12, 10, 3)
    assert int(result[0, 0, 0]) == 50  # gain from the command line reached the plugin's config
