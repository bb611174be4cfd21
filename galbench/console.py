"""The terminal: one rich console on stderr for progress and messages, stdout for results."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Piped or redirected output (CI logs, files) gets a wide page rather than rich's 80 columns, so tables stay
# readable; a terminal keeps its own width.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160)))
err = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(description: str, total: int, unit: str = "") -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields `advance(n)`. It appears at the first advance, so work that
    fails its input checks before any progress prints only its one error line."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn("{task.fields[rate]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    progress = Progress(*columns, console=err, transient=False)
    task = progress.add_task(description, total=total, rate="")

    def advance(n: int = 1) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.advance(task, n)
        if unit:
            speed = progress.tasks[0].speed
            progress.update(task, rate=f"{speed:,.0f} {unit}/s" if speed else "")

    try:
        yield advance
    finally:
        if progress.live.is_started:
            progress.stop()


class RunDisplay:
    """Live progress of a suite: overall runs, the current run's epochs, thresholds reached."""

    def __init__(self):
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=err)
        self.runs_task = None
        self.run_task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    @contextlib.contextmanager
    def bar(self, description: str, total: int, unit: str = ""):
        """A transient sub-bar (data generation, pretraining) inside the live display."""
        task = self.progress.add_task(description, total=total, note=unit)
        try:
            yield lambda n=1: self.progress.advance(task, n)
        finally:
            self.progress.remove_task(task)

    def start_runs(self, total: int) -> None:
        self.runs_task = self.progress.add_task("runs", total=total, note="")

    def start_run(self, variant: str, seed: int, epochs: int) -> None:
        if self.run_task is not None:
            self.progress.remove_task(self.run_task)
        self.run_label = f"{variant} seed {seed}"
        self.reached = "reached:"
        self.run_task = self.progress.add_task(f"{self.run_label} (epochs)", total=epochs, note="")

    def on_event(self, event: dict) -> None:
        if event["event"] == "eval":
            self.progress.update(self.run_task, completed=event["epochs"],
                                 note=f"val acc {event['val_accuracy']:.3f}  {self.reached}".rstrip())
        elif event["event"] == "threshold_reached":
            self.reached += f" {event['threshold']:g}@{event['epochs']:g}"

    def remote_event(self, run_name: str, event: dict) -> None:
        """A live line for runs on other machines: the latest evaluation of any of them."""
        self.progress.update(self.runs_task, note=f"{run_name} epoch {event['epochs']:.1f}: "
                                                  f"val acc {event['val_accuracy']:.3f}")

    def end_run(self, result: dict) -> None:
        self.progress.advance(self.runs_task, 1)
        test = result.get("test_accuracy")
        self.progress.update(self.runs_task, note=f"last test acc {test:.3f}" if test is not None else "")
