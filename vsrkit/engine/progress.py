"""What a run shows: a training run's tqdm bar and tensorboard scalars (main process only), and an
inference run's progress per window and stage with fps and ETA."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from pathlib import Path

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``3725.2 -> '1:02:05'``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class TrainProgress:
    """Progress bar, running means of the logged values, and tensorboard output.

    On processes other than the main one every call is a no-op.

    Args:
        enabled: Whether this is the main process.
        start_step: Steps already done (a resumed run starts there).
        max_steps: Last step of the run.
        log_dir: Folder for tensorboard event files; None disables tensorboard.
        show_bar: Show the tqdm bar.
    """

    def __init__(self, enabled: bool, start_step: int, max_steps: int, log_dir: Path | None, show_bar: bool):
        self.enabled = enabled
        self.start_step = start_step
        self.max_steps = max_steps
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._step_times: list[float] = []
        self._started = time.perf_counter()
        self.writer = None
        self.bar = None
        if not enabled:
            return
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))
        if show_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, desc="train", dynamic_ncols=True, unit="step")

    def logging_context(self):
        """While the bar shows, route console log lines through it so they do not break it."""
        if self.bar is None:
            return contextlib.nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm()

    def record(self, values: dict[str, float]) -> None:
        """Add one step's values to the running means (logged at the next :meth:`flush`)."""
        for key, value in values.items():
            self._sums[key] += float(value)
            self._counts[key] += 1

    def step_done(self, step: int, step_seconds: float, postfix: dict[str, float]) -> None:
        """Advance the bar to ``step`` and show ``postfix`` (e.g. the loss) and the step time."""
        self._step_times.append(step_seconds)
        if self.bar is not None:
            shown = {k: f"{v:.4g}" for k, v in postfix.items()}
            shown["s/step"] = f"{step_seconds:.3g}"
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(step - self.bar.n)

    def elapsed_seconds(self) -> float:
        """Seconds since this object was made (the run's start)."""
        return time.perf_counter() - self._started

    def eta_seconds(self, step: int) -> float:
        """Remaining time from the mean of the recent step times."""
        recent = self._step_times[-50:]
        if not recent:
            return float("nan")
        return (self.max_steps - step) * sum(recent) / len(recent)

    def flush(self, step: int) -> dict[str, float]:
        """Write the running means since the last flush to tensorboard; returns what was written."""
        means = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        if self.enabled:
            if self.writer is not None:
                for key, value in means.items():
                    self.writer.add_scalar(key, value, step)
            if self.bar is None:  # without a bar, say it in the log
                text = " ".join(f"{k}={v:.4g}" for k, v in sorted(means.items()))
                logger.info("step %d/%d %s eta %s", step, self.max_steps, text, format_duration(self.eta_seconds(step)))
        return means

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Write ``values`` (e.g. validation metrics) to tensorboard now."""
        if self.enabled and self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, float(value), step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


class InferProgress:
    """Progress of one file through the inference engine: per window, per stage, fps and ETA.

    The engine reports windows and finished frames; methods report stages inside a window through
    :meth:`vsrkit.methods.protocol.WindowContext.stage` (``encode``, ``denoise 3/4``, ``decode``),
    which the engine routes to :meth:`stage`. On a terminal it is a tqdm bar over frames whose
    postfix names the window, tile and stage; elsewhere (a log file, a pipe) it logs one line per
    window at most every ``log_every`` seconds, so nothing is glued to other output.

    Args:
        total_frames: Frames the file has (after any range).
        label: What is being done (``in.mp4 -> out.mp4``).
        enabled: Show anything at all.
        terminal: Draw a bar (default: when stderr is a terminal).
        log_every: Seconds between log lines without a terminal.
    """

    def __init__(self, total_frames: int, label: str, enabled: bool = True, terminal: bool | None = None,
                 log_every: float = 10.0):
        import sys

        self.total_frames, self.label, self.enabled = total_frames, label, enabled
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.log_every = log_every
        self.frames_done = 0
        self.window = (0, 1)  # (index, count)
        self.window_frames = 0
        self.tile = (0, 1)
        self.stage_text = ""
        self.stage_fraction = 0.0
        self._started = time.perf_counter()
        self._window_started = self._started
        self._window_seconds: list[float] = []
        self._last_log = self._started
        self.bar = None
        self._redirect = None
        if enabled and self.terminal:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=total_frames, desc=label, unit="frame", leave=False, dynamic_ncols=True)
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

    # --- what the engine reports ---------------------------------------------------------------
    def begin_window(self, index: int, count: int, frames: int) -> None:
        """Window ``index`` of ``count`` (``frames`` long) starts."""
        self.window, self.window_frames, self.tile = (index, count), frames, (0, 1)
        self.stage_text, self.stage_fraction = "", 0.0
        self._window_started = time.perf_counter()
        self._show()

    def begin_tile(self, index: int, count: int) -> None:
        """Spatial tile ``index`` of ``count`` of the current window starts."""
        self.tile = (index, count)
        self.stage_text, self.stage_fraction = "", 0.0
        self._show()

    def stage(self, name: str, done: int = 0, total: int = 1) -> None:
        """The method is in stage ``name`` with ``done`` of ``total`` steps finished."""
        self.stage_text = name if total <= 1 else f"{name} {done}/{total}"
        # Rough position inside a tile: the usual three stages take a third each.
        order = {"encode": 0, "denoise": 1, "decode": 2}.get(name)
        if order is not None:
            self.stage_fraction = (order + (done / total if total else 0.0)) / 3
        self._show()

    def frames_finished(self, done: int) -> None:
        """``done`` frames of the file are finished (blended and handed to the writer)."""
        now = time.perf_counter()
        self._window_seconds.append(now - self._window_started)
        if self.bar is not None:
            self.bar.update(done - self.frames_done)
        self.frames_done = done
        self._show()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    # --- estimates ------------------------------------------------------------------------------
    def fps(self) -> float:
        """Frames finished per second of wall time so far."""
        elapsed = time.perf_counter() - self._started
        return self.frames_done / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float:
        """Seconds left: the time per frame so far, counting the running window's progress."""
        elapsed = time.perf_counter() - self._started
        in_window = self._window_fraction() * self.window_frames
        done = self.frames_done + in_window
        if done <= 0:
            return float("nan")
        return elapsed / done * (self.total_frames - done)

    def _window_fraction(self) -> float:
        if self._window_seconds:  # a window takes about as long as the ones before it
            typical = sum(self._window_seconds[-5:]) / len(self._window_seconds[-5:])
            return min(0.95, (time.perf_counter() - self._window_started) / typical) if typical > 0 else 0.0
        tile, tiles = self.tile
        return min(0.95, (tile + self.stage_fraction) / max(tiles, 1))

    def describe(self) -> str:
        """``window 2/9, tile 1/4, denoise 3/4, 1.9 fps, ETA 0:01:10``."""
        parts = [f"window {self.window[0] + 1}/{self.window[1]}"]
        if self.tile[1] > 1:
            parts.append(f"tile {self.tile[0] + 1}/{self.tile[1]}")
        if self.stage_text:
            parts.append(self.stage_text)
        parts.append(f"{self.fps():.2f} fps")
        parts.append(f"ETA {format_duration(self.eta_seconds())}")
        return ", ".join(parts)

    def _show(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(self.describe(), refresh=True)
            return
        now = time.perf_counter()
        if now - self._last_log >= self.log_every and self.frames_done < self.total_frames:
            self._last_log = now
            logger.info("%s: %d/%d frames, %s", self.label, self.frames_done, self.total_frames, self.describe())
