"""Progress of a build: live bars on a terminal, plain step lines in logs, one line per model in CI.

    reporter = make_reporter()
    with reporter.model("image-classifier", steps=5) as model:
        with model.step("convert to TorchScript (optimized)"):
            ...
        with model.step("package model.tar.gz", total_bytes=n) as advance:
            advance(chunk)        # a byte-count bar during compression

Thread-safe: models built in parallel (build --jobs N) print whole lines, each prefixed with its
model's name, and on a terminal share one live display with a row per running step.
"""
import contextlib
import os
import sys
import threading
import time
from typing import Callable, Iterator, Optional, TextIO

Advance = Callable[[int], None]


def make_reporter(stream: TextIO = sys.stderr) -> "Reporter":
    if os.environ.get("CI"):  # CI logs want a line per model, not a line per step
        return Reporter(stream, level="summary")
    if stream.isatty():
        return RichReporter(stream)
    return Reporter(stream, level="steps")


class Reporter:
    """Plain text. level "steps": `[name 2/5] convert ...: done in 3.1s`; "summary": the final line only; "none": silent."""

    def __init__(self, stream: Optional[TextIO] = None, level: str = "steps"):
        self.stream, self.level = stream or sys.stderr, level
        self._lock = threading.Lock()

    def say(self, message: str, level: str = "steps") -> None:
        if self.level == "steps" or (self.level == "summary" and level == "summary"):
            with self._lock:  # one whole line at a time, whatever the threads
                print(message, file=self.stream, flush=True)

    @contextlib.contextmanager
    def model(self, name: str, steps: int, summary: bool = True) -> Iterator["_ModelProgress"]:
        """summary=False: the caller reports the model's outcome itself (a batch build's [k/N] line)."""
        started = time.perf_counter()
        yield _ModelProgress(self, name, steps)
        if summary:
            self.say(f"[{name}] built in {time.perf_counter() - started:.1f}s", level="summary")

    @contextlib.contextmanager
    def bar(self, label: str, total: int) -> Iterator[Advance]:
        yield lambda n: None


class _ModelProgress:
    def __init__(self, reporter: Reporter, name: str, steps: int):
        self.reporter, self.name, self.steps, self.index = reporter, name, steps, 0

    @contextlib.contextmanager
    def step(self, label: str, total_bytes: Optional[int] = None) -> Iterator[Advance]:
        self.index += 1
        prefix = f"[{self.name} {self.index}/{self.steps}] {label}"
        self.reporter.say(f"{prefix} ...")
        started = time.perf_counter()
        with self.reporter.bar(prefix, total_bytes or 0) as advance:
            yield advance
        self.reporter.say(f"{prefix}: done in {time.perf_counter() - started:.1f}s")


class RichReporter(Reporter):
    """On a terminal: a spinner per running step and a byte bar for compression (rich, already a dependency).

    One live display for all of them, started by the first running step and stopped after the last: a row per step in progress, so
    parallel builds show a row per model; finished steps print above it as plain lines."""

    def __init__(self, stream: TextIO):
        super().__init__(stream, level="steps")
        from rich.console import Console

        self.console = Console(file=stream)
        self._live = None  # the shared rich Progress while any step runs
        self._running = 0

    def say(self, message: str, level: str = "steps") -> None:
        if not message.endswith(" ..."):  # the live rows show the running steps; print results only
            # markup=False: "[model-001 2/4]" is text, not a rich style tag (which would swallow the model's name).
            self.console.print(message, highlight=False, markup=False)  # thread-safe; prints above the live rows

    @contextlib.contextmanager
    def bar(self, label: str, total: int) -> Iterator[Advance]:
        progress = self._enter()
        task = progress.add_task(label, total=total or None)
        try:
            yield lambda n: progress.advance(task, n)
        finally:
            progress.remove_task(task)
            self._exit()

    def _enter(self):
        with self._lock:
            if self._live is None:
                self._live = _progress(self.console)
                self._live.start()
            self._running += 1
            return self._live

    def _exit(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self._live.stop()
                self._live = None


def _progress(console):
    """Spinner, step, [bar + bytes when the step has a byte total], elapsed time."""
    from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class WithTotal(ProgressColumn):
        def __init__(self, column):
            super().__init__()
            self.column = column

        def render(self, task):
            return self.column.render(task) if task.total else Text("")

    columns = [SpinnerColumn(), TextColumn("{task.description}", markup=False), WithTotal(BarColumn()), WithTotal(DownloadColumn()), TimeElapsedColumn()]
    return Progress(*columns, console=console, transient=True)
