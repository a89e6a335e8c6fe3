"""Progress reporting: rich bars with rate and ETA on a terminal, silence in logs.

Library code takes a :class:`ProgressReporter` (or ``None``) and never prints;
the CLI decides whether bars are shown (stderr is a terminal and ``CI`` is not
set) so CI logs stay clean.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator


class ProgressReporter:
    """Creates progress tasks; the no-op base class is used when output is not a terminal."""

    @contextmanager
    def task(self, description: str, total: int | None, unit: str = "img") -> Iterator[Callable[[int], None]]:
        yield lambda n=1: None


class RichProgress(ProgressReporter):
    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int | None, unit: str = "img"):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        class Rate(TextColumn):
            def __init__(self):
                super().__init__("")

            def render(self, task):
                from rich.text import Text

                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        ) as p:
            t = p.add_task(description, total=total)
            yield lambda n=1: p.advance(t, n)


def default_reporter(enabled: bool | None = None) -> ProgressReporter:
    """Rich bars when stderr is an interactive terminal and not under CI."""
    if enabled is None:
        enabled = sys.stderr.isatty() and not os.environ.get("CI")
    return RichProgress() if enabled else ProgressReporter()
