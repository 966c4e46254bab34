"""How outputs appear: written under a hidden partial name, then published without replacing.

Every writer in :mod:`vsrkit.io` writes to :func:`partial_path` beside the target and calls
:func:`publish` when the output is complete. Without ``overwrite`` the rename never replaces a
file or folder that appeared meanwhile (a second job, a user's copy): Linux ``renameat2`` with
``RENAME_NOREPLACE``, else a hard link (files) or an exclusive ``mkdir`` (folders), both of which
fail atomically when the name is taken. A run killed with SIGKILL (or a crash of the machine)
leaves its partial behind; :func:`remove_stale_partials` deletes those whose process is gone the
next time the same output is written.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import socket
from pathlib import Path

from vsrkit.errors import UserError

logger = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)(?:\.[^.]*)?$")


def _load_renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not Linux, or a libc older than glibc 2.28
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


_renameat2 = _load_renameat2()


def partial_path(final: str | os.PathLike, kind: str = "partial") -> Path:
    """The hidden temporary name of ``final`` for this process: ``.<name>.partial-<host>-<pid><suffix>``.

    The real suffix stays last so FFmpeg picks the same muxer as for the final name; host and pid
    let a later run tell a dead run's leftover from a live one's.
    """
    final = Path(final)
    return final.with_name(f".{final.name}.{kind}-{_HOST}-{os.getpid()}{final.suffix}")


def public_path(path: str | os.PathLike) -> Path:
    """The output a temporary name stands for (``.out.mp4.partial-host-1234.mp4`` -> ``out.mp4``);
    other paths unchanged. Messages name outputs, never their temporary files."""
    path = Path(path)
    match = _TEMPORARY.match(path.name)
    return path.with_name(match["name"]) if match else path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_partials(final: str | os.PathLike) -> list[Path]:
    """Temporary outputs of ``final`` (:func:`partial_path` names, files or folders) left by runs of
    this host whose process is gone, sorted; a live process's partial is in use and not listed."""
    final = Path(final)
    folder = final.parent
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or match["name"] != final.name or match["host"] != _HOST:
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and not _alive(pid):
            found.append(entry)
    return sorted(found)


def remove_stale_partials(final: str | os.PathLike) -> list[Path]:
    """Delete the :func:`stale_partials` of ``final``.

    Returns:
        The paths removed.
    """
    removed = stale_partials(final)
    for entry in removed:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        logger.info("removed %s, left by an interrupted run (process %s is gone)", entry,
                    _TEMPORARY.match(entry.name)["pid"])
    return removed


def _rename_noreplace(source: Path, target: Path) -> bool:
    """``renameat2(RENAME_NOREPLACE)``; False where the system or file system lacks it."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(target))


def _link_noreplace(source: Path, target: Path) -> None:
    """Files without renameat2: a hard link fails atomically if ``target`` exists."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # No hard links on this file system: claim the name with an exclusive create, then move in.
        with open(target, "xb"):
            pass
        os.replace(source, target)
        return
    source.unlink()


def _mkdir_noreplace(source: Path, target: Path) -> None:
    """Folders without renameat2: an exclusive mkdir claims the name, then the files move in."""
    target.mkdir()
    for entry in source.iterdir():
        os.replace(entry, target / entry.name)
    source.rmdir()


def publish(partial: str | os.PathLike, final: str | os.PathLike, overwrite: bool) -> Path:
    """Give the finished ``partial`` (file or folder) its real name ``final``.

    Args:
        partial: The complete temporary output.
        final: Its real name.
        overwrite: Replace an existing ``final`` (a folder is swapped aside and deleted).

    Returns:
        ``final``.

    Raises:
        UserError: ``final`` exists (it appeared while this run was writing) and ``overwrite`` is
            false; it is left untouched and this run's output is kept beside it under a visible
            name that the message gives.
    """
    partial, final = Path(partial), Path(final)
    if overwrite:
        if partial.is_dir() and final.exists():
            old = partial_path(final, "old")
            os.replace(final, old)
            os.replace(partial, final)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(partial, final)
        return final
    try:
        if not _rename_noreplace(partial, final):
            (_mkdir_noreplace if partial.is_dir() else _link_noreplace)(partial, final)
    except FileExistsError:
        kept = final.with_name(f"{final.stem}.vsrkit-{os.getpid()}{final.suffix}")
        os.replace(partial, kept)
        raise UserError(f"Output {final} appeared while this run was writing it (another job, or a copy?); it was "
                        f"not replaced, and this run's output is {kept}. Pass overwrite=true to replace outputs.") \
            from None
    return final
