"""Resumable batches: which outputs of a run are finished, which must be (re)done.

Outputs are published atomically (written under a hidden partial name and published when
complete, :mod:`vsrkit.io.publish`), so an output that exists under its real name is finished; a
run killed part way leaves at most a partial file, which a rerun deletes and redoes.
"""

from __future__ import annotations

from pathlib import Path

from vsrkit.io.publish import remove_stale_partials


def unfinished(pairs: list) -> tuple[list, list]:
    """Split ``(source, destination)`` pairs into ``(to do, finished)``; the partial outputs that
    dead processes left of the ones to do are deleted (they are redone from the start;
    :func:`vsrkit.io.publish.remove_stale_partials`, the writers' own rule)."""
    todo, done = [], []
    for src, dst in pairs:
        if Path(dst).exists():
            done.append((src, dst))
        else:
            remove_stale_partials(dst)
            todo.append((src, dst))
    return todo, done
