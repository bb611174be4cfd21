"""The terminal: one rich console on stderr for progress and messages, stdout for results.

On a terminal, progress is rich's live display. Where stderr is not a terminal (CI logs, `2> file`), a live
display would write nothing for hours, so progress becomes plain timestamped lines instead: one when each
piece of work starts and finishes, and a status line at least every PLAIN_INTERVAL_SECONDS while it goes
on, as torchvision's MetricLogger does. `-q` (set_quiet) silences both; errors still print.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
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
PLAIN_INTERVAL_SECONDS = 30.0


def set_quiet(quiet: bool) -> None:
    """Silence progress and messages on stderr (errors are printed with `always`)."""
    err.quiet = quiet


def always(markup: str) -> None:
    """One line on stderr even with -q (errors, interruptions)."""
    quiet, err.quiet = err.quiet, False
    try:
        err.print(markup, highlight=False, soft_wrap=True)
    finally:
        err.quiet = quiet


def live() -> bool:
    """Whether progress is a live display (stderr is a terminal and not silenced) or plain lines."""
    return err.is_terminal and not err.quiet


class PlainLog:
    """Progress as plain lines: `line` prints one with a timestamp; while open, a watcher thread prints the
    `status()` line whenever nothing was printed for PLAIN_INTERVAL_SECONDS (long epochs, slow exports)."""

    def __init__(self, status: Callable[[], str | None] = lambda: None):
        self.status = status
        self.last_line = time.monotonic()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def line(self, text: str) -> None:
        """Print one timestamped line."""
        err.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, highlight=False)
        self.last_line = time.monotonic()

    def due(self) -> bool:
        """Whether a status line is owed (nothing printed for an interval)."""
        return time.monotonic() - self.last_line >= PLAIN_INTERVAL_SECONDS

    def __enter__(self):
        if not err.quiet:
            self._watcher = threading.Thread(target=self._watch, name="galbench-progress", daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, PLAIN_INTERVAL_SECONDS)):
            text = self.status() if self.due() else None
            if text:
                self.line(text)


def _rate(done: int, seconds: float, unit: str) -> str:
    """", 126 galaxies/s" or ", 0.21 epochs/s": whole numbers from 10 on, two significant digits below."""
    if not (unit and seconds > 0 and done):
        return ""
    rate = done / seconds
    return f", {rate:,.0f} {unit}/s" if rate >= 10 else f", {rate:.2g} {unit}/s"


@contextlib.contextmanager
def progress_bar(description: str, total: int, unit: str = "") -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (plain lines where stderr is not a terminal); yields `advance(n)`. It
    appears at the first advance, so work that fails its input checks before any progress prints only its
    one error line."""
    if not live():
        with _plain_bar(description, total, unit) as advance:
            yield advance
        return
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


@contextlib.contextmanager
def _plain_bar(description: str, total: int, unit: str, log: PlainLog | None = None):
    """progress_bar as plain lines: at the first advance, at least every interval, and at the end."""
    state = {"done": 0, "start": None}

    def status() -> str | None:
        if state["start"] is None:
            return None
        seconds = time.monotonic() - state["start"]
        share = f" ({100 * state['done'] / total:.0f}%)" if total else ""
        return f"{description}: {state['done']:,}/{total:,}{share}{_rate(state['done'], seconds, unit)}"

    def advance(n: int = 1) -> None:
        if state["start"] is None:
            state["start"] = time.monotonic()
            plain.line(f"{description}: started, {total:,} {unit or 'steps'}")
        state["done"] += n
        if plain.due():
            plain.line(status())

    with contextlib.ExitStack() as stack:
        plain = log or stack.enter_context(PlainLog(status))
        previous, plain.status = plain.status, status
        try:
            yield advance
        finally:
            plain.status = previous
        if state["start"] is not None:
            plain.line(f"{description}: finished {state['done']:,}/{total:,} in "
                       f"{time.monotonic() - state['start']:.0f} s")


class RunDisplay:
    """Progress of a suite: overall runs, the current run's epochs, thresholds reached. Live on a
    terminal; elsewhere a line per run start and finish and a status line at least every interval."""

    def __init__(self):
        self.plain = None if live() else PlainLog(self._status)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=err)
        self.runs_task = None
        self.run_task = None
        self.runs_total, self.runs_done = 0, 0
        self.run_label, self.run_epochs, self.run_started, self.last_eval = "", 0, 0.0, None

    def __enter__(self):
        if self.plain:
            self.plain.__enter__()
        else:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.plain:
            self.plain.__exit__(*exc)
        else:
            self.progress.stop()

    def _status(self) -> str | None:
        if not self.run_label:
            return None
        seconds = time.monotonic() - self.run_started
        if self.last_eval is None:
            return f"{self.run_label}: training, {seconds:.0f} s in, no evaluation yet"
        return (f"{self.run_label}: training, {seconds:.0f} s in; last evaluation at epoch "
                f"{self.last_eval['epochs']:.3g}/{self.run_epochs:.3g}: val acc {self.last_eval['val_accuracy']:.3f}")

    @contextlib.contextmanager
    def bar(self, description: str, total: int, unit: str = ""):
        """A transient sub-bar (data generation, pretraining) inside the live display."""
        if self.plain:
            with _plain_bar(description, total, unit, self.plain) as advance:
                yield advance
            return
        task = self.progress.add_task(description, total=total, note=unit)
        try:
            yield lambda n=1: self.progress.advance(task, n)
        finally:
            self.progress.remove_task(task)

    def start_runs(self, total: int) -> None:
        self.runs_total = total
        if self.plain:
            self.plain.line(f"{total} run{'s' if total != 1 else ''} to do")
            return
        self.runs_task = self.progress.add_task("runs", total=total, note="")

    def start_run(self, variant: str, seed: int, epochs: float) -> None:
        self.run_label = f"{variant} seed {seed}"
        self.run_epochs, self.run_started, self.last_eval = epochs, time.monotonic(), None
        self.reached = "reached:"
        if self.plain:
            self.plain.line(f"{self.run_label}: started ({epochs:.3g} epochs)")
            return
        if self.run_task is not None:
            self.progress.remove_task(self.run_task)
        self.run_task = self.progress.add_task(f"{self.run_label} (epochs)", total=epochs, note="")

    def on_event(self, event: dict) -> None:
        if event["event"] == "eval":
            self.last_eval = event
            if self.plain:
                if self.plain.due():
                    self.plain.line(self._status())
                return
            self.progress.update(self.run_task, completed=event["epochs"],
                                 note=f"val acc {event['val_accuracy']:.3f}  {self.reached}".rstrip())
        elif event["event"] == "threshold_reached":
            self.reached += f" {event['threshold']:g}@{event['epochs']:g}"

    def remote_event(self, run_name: str, event: dict) -> None:
        """A live line for runs on other machines: the latest evaluation of any of them."""
        note = f"{run_name} epoch {event['epochs']:.1f}: val acc {event['val_accuracy']:.3f}"
        if self.plain:
            if self.plain.due():
                self.plain.line(f"{self.runs_done}/{self.runs_total} runs done; {note}")
            return
        self.progress.update(self.runs_task, note=note)

    def finished_earlier(self, label: str, seed: int, result: dict) -> None:
        """A run that an earlier command finished: read back, not redone."""
        self.run_label = f"{label} seed {seed}"
        self.end_run(result, earlier=True)

    def end_run(self, result: dict, earlier: bool = False) -> None:
        """A run (or, before `start_runs`, a pretraining) has finished."""
        counted = self.runs_total > 0
        self.runs_done += counted
        test = result.get("test_accuracy")
        if self.plain:
            accuracy = f", test acc {test:.3f}" if test is not None else ""
            count = f" ({self.runs_done}/{self.runs_total} runs)" if counted else ""
            when = "finished earlier (read back)" if earlier else "finished"
            self.plain.line(f"{self.run_label}: {when}{accuracy}{count}")
            self.run_label = ""
            return
        if not counted:
            return
        self.progress.advance(self.runs_task, 1)
        self.progress.update(self.runs_task, note=f"last test acc {test:.3f}" if test is not None else "")
