"""Progress of a screen: samples done, samples/s and ETA (tqdm bar on a terminal, plain lines otherwise)."""
from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_EVERY_S = 10.0


def format_duration(seconds: float) -> str:
    """12 -> '12s', 750 -> '12m30s', 7300 -> '2h01m'."""
    if not seconds == seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts samples as batches finish. The rate counts only this run's samples (not resumed ones)."""

    def __init__(self, total: int, done: int = 0, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total, self.done, self.start_done = total, done, done
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.monotonic()
        self._last_line = 0.0
        self._bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, unit="sample", file=self.stream, dynamic_ncols=True,
                             desc="screen", smoothing=0.1)

    @property
    def rate(self) -> float:
        """Samples per second in this run."""
        elapsed = time.monotonic() - self.t0
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (f"screen: {self.done:,}/{self.total:,} samples ({100 * self.done / max(self.total, 1):.1f}%), "
                f"{rate:.2f} samples/s, ETA {format_duration(eta)}")

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_line >= PLAIN_EVERY_S or self.done >= self.total:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
