"""Settings of `vsrkit infer` under several processes (the `distributed` config node)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

SPLITS = ("auto", "frames", "files")


@dataclass
class DistributedConfig:
    """How `vsrkit infer` shares work when started with ``accelerate launch`` or ``torchrun``
    (one process per GPU). Ignored in a single process.

    Args:
        split: ``auto``: one input is cut into segments, one per process; several inputs are
            dealt to the processes. ``frames``: every input is cut into segments and all
            processes work on one input at a time (a few long videos). ``files``: inputs are
            dealt round-robin and each process upscales whole inputs (many videos; no traffic
            between processes).
        stream_warmup: Streaming methods (InfVSR): input frames fed before a segment that does
            not start at a scene cut, whose output is thrown away, so the method's caches are warm
            when the segment starts. More frames come closer to one process and cost as much as
            output frames; 0 starts every segment cold. 21 = InfVSR's first two chunks (9 + 12).
        stream_align: Streaming segments that do not start at a scene cut start on frame
            ``stream_offset + k * stream_align``. InfVSR's chunks start at 0, 9, 21, 33, ...
            (12 and 9), and a warm-up of ``9 + 12 j`` frames then makes every kept chunk the same
            frames as in one process.
        stream_offset: See ``stream_align``.
        spool_dir: Folder where processes other than the first keep their finished frames (raw,
            up to one segment) until the first process writes them into the output; ``None`` is
            the system temp folder (``$TMPDIR``).
        timeout_minutes: How long a process waits for another one (partial sums, frames) before
            it fails.
    """

    split: str = "auto"
    stream_warmup: int = 21
    stream_align: int = 12
    stream_offset: int = 9
    spool_dir: Optional[str] = None
    timeout_minutes: int = 120

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"`distributed.split` must be one of {list(SPLITS)}. Got {self.split}.")
        if self.stream_warmup < 0:
            raise ValueError(f"`distributed.stream_warmup` must be >= 0. Got {self.stream_warmup}.")
        if self.stream_align < 1:
            raise ValueError(f"`distributed.stream_align` must be >= 1. Got {self.stream_align}.")
        if self.stream_offset < 0:
            raise ValueError(f"`distributed.stream_offset` must be >= 0. Got {self.stream_offset}.")
        if self.timeout_minutes < 1:
            raise ValueError(f"`distributed.timeout_minutes` must be >= 1. Got {self.timeout_minutes}.")
