"""Decode, model and encode side by side: a prefetching reader thread and a background writer thread.

File-to-file inference has three stages: decoding the input (PyAV), the method (usually on a GPU)
and encoding the output (PyAV/x264). Run one after another, a file takes the sum of the three;
overlapped, about the slowest one. :class:`Prefetcher` pulls items from an iterator (the decoder's
chunks) in a thread, :class:`BackgroundWriter` hands frames to a writer in another thread, each
through a bounded queue, so memory stays bounded and the method never waits for IO that could
have happened earlier. FFmpeg's decoders, swscale and encoders release the GIL while they work.

Errors cross over: an exception in the reader thread is raised from ``next()`` in the consumer,
one in the writer thread from the next ``write()`` or from leaving the ``with`` block, each with
its original traceback. Leaving either ``with`` block early (an error elsewhere, Ctrl-C) stops and
joins its thread, and the iterator is closed in the thread that ran it.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Iterator

# How long a blocked queue operation waits before checking whether the other side stopped.
_POLL_SECONDS = 0.05
_END = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead of the consumer.

    Use as a context manager and iterate it::

        with Prefetcher(source.chunks(16), depth=2) as chunks:
            for chunk in chunks:
                ...

    Args:
        iterable: Any iterable; its iterator runs (and is closed) in the background thread.
        depth: Items held ready at most (the queue bound).
        name: Thread name (shows in tracebacks and debuggers).
    """

    def __init__(self, iterable: Iterable, depth: int = 2, name: str = "vsrkit-prefetch"):
        if depth < 1:
            raise ValueError(f"`depth` must be >= 1. Got {depth}.")
        self._iterable = iterable
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        iterator = iter(self._iterable)
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            self._put(_Failure(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread (dropping what it read ahead) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                pass
        self._done = True

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close()


class BackgroundWriter:
    """Call ``writer.write(frames, pts=pts)`` in a background thread, at most ``depth`` calls behind.

    Use inside the writer's own ``with`` (which publishes or removes the output)::

        with VideoWriter(...) as writer, BackgroundWriter(writer) as sink:
            for frames, pts in results:
                sink.write(frames, pts=pts)

    Leaving the block normally waits until every frame is written and raises the writer's error,
    if any; leaving it with an exception drops the frames still queued.

    Args:
        writer: Object with ``write(frames, pts=None)`` (:class:`vsrkit.io.VideoWriter`,
            :class:`vsrkit.io.FramesWriter`, ...).
        depth: Calls queued at most (each holds one batch of frames in memory).
        name: Thread name.
    """

    def __init__(self, writer, depth: int = 2, name: str = "vsrkit-writer"):
        if depth < 1:
            raise ValueError(f"`depth` must be >= 1. Got {depth}.")
        self._writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _END or self._stop.is_set():
                return
            frames, pts = item
            try:
                self._writer.write(frames, pts=pts)
            except BaseException as error:  # raised in the caller's thread at its next call
                self._error = error
                self._stop.set()
                return

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def write(self, frames, pts=None) -> None:
        """Queue ``frames`` (and their ``pts``) for the writer; blocks while the queue is full.

        Raises:
            Whatever the writer raised on an earlier call.
        """
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError("BackgroundWriter.write() after the writer thread ended.")
            try:
                self._queue.put((frames, pts), timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self._stop.set()
            self._thread.join()
            return
        while self._thread.is_alive():
            try:
                self._queue.put(_END, timeout=_POLL_SECONDS)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise_error()
