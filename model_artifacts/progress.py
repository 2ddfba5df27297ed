"""Progress of a build: live bars on a terminal, plain step lines in logs, one line per model in CI.

    reporter = make_reporter()
    with reporter.model("image-classifier", steps=5) as model:
        with model.step("convert to TorchScript (optimized)"):
            ...
        with model.step("package model.tar.gz", total_bytes=n) as advance:
            advance(chunk)        # a byte-count bar during compression
"""
import contextlib
import os
import sys
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

    def say(self, message: str, level: str = "steps") -> None:
        if self.level == "steps" or (self.level == "summary" and level == "summary"):
            print(message, file=self.stream, flush=True)

    @contextlib.contextmanager
    def model(self, name: str, steps: int) -> Iterator["_ModelProgress"]:
        started = time.perf_counter()
        yield _ModelProgress(self, name, steps)
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
    """On a terminal: a spinner per step and a byte bar for compression (rich, already a dependency)."""

    def __init__(self, stream: TextIO):
        super().__init__(stream, level="steps")
        from rich.console import Console

        self.console = Console(file=stream)

    def say(self, message: str, level: str = "steps") -> None:
        if not message.endswith(" ..."):  # the bar shows the running step; print results only
            self.console.print(message, highlight=False)

    @contextlib.contextmanager
    def bar(self, label: str, total: int) -> Iterator[Advance]:
        from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
        if total:
            columns[2:2] = [BarColumn(), DownloadColumn()]
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(label, total=total or None)
            yield lambda n: progress.advance(task, n)
