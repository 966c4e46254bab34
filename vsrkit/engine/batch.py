"""Resumable batches: which outputs of a run are finished, which must be (re)done.

Outputs are published atomically (written under a temporary ``.<name>.partial-<pid>`` name and
renamed when complete, :mod:`vsrkit.io.writer`), so an output that exists under its real name is
finished; a run killed part way leaves at most a partial file, which a rerun deletes and redoes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

_PARTIAL = re.compile(r"\.partial-(\d+)")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_partials(dst: str | os.PathLike) -> list[Path]:
    """Partial outputs of ``dst`` left by processes that no longer run (killed runs).

    A partial output is ``.<name>.partial-<pid>[<suffix>]`` beside ``dst`` (file or folder); one
    whose process is still alive on this machine is in use and is not listed.
    """
    dst = Path(dst)
    if not dst.parent.is_dir():
        return []
    prefix = f".{dst.name}.partial-"
    found = []
    for entry in dst.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        match = _PARTIAL.match(entry.name[len(dst.name) + 1:])
        if match and not _alive(int(match.group(1))):
            found.append(entry)
    return sorted(found)


def remove_partials(dst: str | os.PathLike) -> list[Path]:
    """Delete :func:`stale_partials` of ``dst``; returns what was deleted."""
    removed = stale_partials(dst)
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        logger.info("removed the partial output %s of an interrupted run", path)
    return removed


def unfinished(pairs: list) -> tuple[list, list]:
    """Split ``(source, destination)`` pairs into ``(to do, finished)``; the partial outputs of
    the ones to do are deleted (they are redone from the start)."""
    todo, done = [], []
    for src, dst in pairs:
        if Path(dst).exists():
            done.append((src, dst))
        else:
            remove_partials(dst)
            todo.append((src, dst))
    return todo, done
