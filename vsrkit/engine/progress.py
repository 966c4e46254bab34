"""What a training run shows and records: a tqdm bar and tensorboard scalars (main process only)."""

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
