"""Progress bars for long work: one rich layout on a terminal's stderr, none elsewhere.

Owns :func:`step_bar`, the bar the trainer and the evaluation harness show (label, bar,
done/total, optional text fields, elapsed, remaining). Callers treat ``None`` as "no
terminal": they stay quiet or log plain lines instead.
"""

from __future__ import annotations

from typing import Any


def step_bar(label: str = "{task.description:>20}", fields: tuple[str, ...] = ()) -> Any | None:
    """A started-on-demand ``rich.progress.Progress`` counting steps, or None off a terminal.

    label:  format of the first column (``task.description`` is the task's name).
    fields: formats of extra text columns shown after the count (e.g. ``"{task.fields[loss]}"``).
    """
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(),
               *(TextColumn(f) for f in fields), TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console)
