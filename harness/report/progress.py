"""Progress bars for the long suites (CoQA generation takes minutes per implementation on a CPU).

pytest captures output, so the bar is drawn on the process's real stderr, and only when that is a
terminal (never in CI logs or redirected output); it is transient, so pytest's own output is left as it was.
``FOURBIT_NO_PROGRESS=1`` turns it off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["progress_bar"]


def _wanted() -> bool:
    stream = sys.__stderr__
    return stream is not None and stream.isatty() and not os.environ.get("FOURBIT_NO_PROGRESS")


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a rich progress bar of ``total`` steps when stderr is a terminal, else a no-op."""
    if not _wanted():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=sys.__stderr__)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
