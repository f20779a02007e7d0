"""Progress of long loops (training, evaluation, FLOP counts) that reads well in a terminal and in a log.

On a terminal: rich's live bar. Anywhere else — a log file, SLURM, CI, a pipe — a live bar prints nothing
useful (one line cut at the console width, or nothing at all until the end), so `ProgressLog` prints plain
lines instead, full width, with the same fields as the bar: a line whenever the caller marks one due
(e.g. every ``log_every`` training iterations) and otherwise at least every ``every_seconds``, plus one at
the end.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["MODES", "ProgressLog", "format_duration"]

MODES = ("auto", "bar", "lines", "none")


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:03``, ``1:02:03``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLog:
    """``label completed/total (pct) · info · elapsed · ETA``, as a live bar or as plain lines.

    mode: ``"auto"`` (a bar when ``console`` is a terminal, lines otherwise), ``"bar"``, ``"lines"`` or
        ``"none"``. ``console``: a rich Console (None: plain ``print`` to stdout, lines only).
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        console: Any = None,
        mode: str = "auto",
        unit: str = "",
        every_seconds: float = 30.0,
        transient: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "auto":
            mode = "bar" if console is not None and console.is_terminal else "lines"
        if mode == "bar" and console is None:
            mode = "lines"
        self.mode = mode
        self.label = label
        self.total = total
        self.console = console
        self.unit = f" {unit}" if unit else ""
        self.every_seconds = every_seconds
        self.completed = 0
        self.info = ""
        self._bar = None
        self._start = self._last_line = time.monotonic()
        self._printed = 0  # `completed` at the last line
        self._first: tuple[float, int] | None = None  # (time, count) of the first update: ETA from there
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(f"[bold]{label}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=console,
                transient=transient,
            )
            self._task = self._bar.add_task(label, total=total, info="")

    def __enter__(self) -> ProgressLog:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._start = self._last_line = time.monotonic()
        if self._bar is not None:
            self._bar.start()

    def update(self, completed: int | None = None, info: str | None = None, *, advance: int = 0, line=False):
        """Set (or ``advance``) the count and the info text; ``line``: print a line now (lines mode)."""
        self.completed = (self.completed if completed is None else completed) + advance
        if self._first is None:  # the rate leaves out the start-up (compiling, the first batch)
            self._first = (time.monotonic(), self.completed)
        if info is not None:
            self.info = info.strip()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed, info=self.info)
        elif self.mode == "lines":
            now = time.monotonic()
            if line or now - self._last_line >= self.every_seconds:
                self._line(now)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.mode == "lines" and self.completed != self._printed:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        self._last_line, self._printed = now, self.completed
        elapsed = now - self._start
        parts = [f"{self.label} {self.completed}"]
        if self.total:
            parts[0] += f"/{self.total}{self.unit} ({self.completed / self.total:.0%})"
        else:
            parts[0] += self.unit
        if self.info:
            parts.append(self.info)
        parts.append(f"{format_duration(elapsed)} elapsed")
        if self.total and self._first is not None and self._first[1] < self.completed < self.total:
            t0, n0 = self._first
            eta = (now - t0) / (self.completed - n0) * (self.total - self.completed)
            parts.append(f"ETA {format_duration(eta)}")
        text = " · ".join(parts)
        if self.console is None:
            print(text, flush=True)
        else:  # full width: no wrapping or cropping at the console's width, no markup in the info
            self.console.print(text, soft_wrap=True, highlight=False, markup=False)
