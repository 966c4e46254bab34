"""``vsrkit infer`` that is killed part way through a batch, for test_batch_resume.py.

Every process dies (``os._exit``, no cleanup, as under SIGKILL) right after writing the first
frames of its second output, once all processes have got there, so the kill leaves a known state:
each process's first output finished, its second a partial file.

    KILL_MARKERS=<empty dir> python kill_batch.py infer ...   (or under accelerate launch)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    from vsrkit.io import writer

    markers = Path(os.environ["KILL_MARKERS"])
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    original = writer.VideoWriter.write
    started: list[Path] = []

    def write(self, frames, pts=None):
        original(self, frames, pts)
        if self.path not in started:
            started.append(self.path)
        if len(started) == 2:
            (markers / f"rank{rank}").touch()
            while len(list(markers.iterdir())) < world:
                time.sleep(0.05)
            os._exit(137)

    writer.VideoWriter.write = write
    import vsrkit.cli
    from vsrkit.cli import main as cli

    # The first process to exit makes the launcher SIGTERM the others, whose handler would remove
    # their partial files (the clean-stop path) before they reach os._exit: under load that race
    # left one partial instead of two. Here every process dies uncleanly, as under SIGKILL.
    vsrkit.cli._on_sigterm = lambda signum, frame: os._exit(137)

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
