"""A plain (non-editable) install ships the configs, and setup.cfg lists every package."""

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _listed_packages() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return {p.strip() for p in parser["options"]["packages"].split() if p.strip()}


def test_setup_cfg_lists_every_package():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vsrkit").rglob("__init__.py")}
    found.add("vsrkit.conf")
    assert len(found) >= 8
    assert _listed_packages() == found


def test_non_editable_install_ships_conf(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True)
    shipped = {p.relative_to(target / "vsrkit" / "conf").as_posix() for p in (target / "vsrkit" / "conf").rglob("*.yaml")}
    in_repo = {p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert {"infer.yaml", "train.yaml", "bench.yaml", "eval.yaml", "method/bicubic.yaml"} <= shipped
    assert shipped == in_repo
    # The installed copy runs from anywhere, without the source tree on the path.
    # -S skips site-packages' .pth files (an editable install's finder would win otherwise); the
    # dependencies come back through PYTHONPATH after the installed copy.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    code = ("import vsrkit, vsrkit.conf; print('FROM', vsrkit.__file__, vsrkit.conf.__file__); "
            "from vsrkit.cli import main; main(['infer', 'method=lanczos', 'input=a', 'output=b', '--cfg', 'job'])")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": ":".join([str(target), *deps]), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert f"FROM {target}/vsrkit/__init__.py {target}/vsrkit/conf/__init__.py" in out.stdout
    assert "lobes: 3" in out.stdout
