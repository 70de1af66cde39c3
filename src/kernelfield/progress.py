"""Progress of long runs: the cores report :class:`ProgressEvent` s to a callback and never draw.

Every long-running function (``sample``, ``train``, the particle solver, sweeps, studies) takes
``progress``: ``False``/``None`` (silent), ``True`` (rich progress bars in the terminal, drawn by
:class:`RichBars`) or any callable ``progress(event)``. :func:`reporter` turns that argument into
a callback for the duration of the run::

    with reporter(progress) as report:
        for i in range(n):
            ...
            report(ProgressEvent("sampling", i + 1, n, {"acceptance": 0.8}))

The CLI passes one :class:`RichBars` to everything it runs, so nested runs share one display.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Union

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["ProgressEvent", "ProgressCallback", "ProgressArg", "RichBars", "reporter", "silent"]


@dataclass(frozen=True)
class ProgressEvent:
    """``completed`` of ``total`` units of the run named ``task`` are done (``total = None``: unknown);
    ``info``: diagnostics worth showing beside the bar (e.g. acceptance rate, residual)."""

    task: str
    completed: int
    total: int | None = None
    info: Mapping[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]
ProgressArg = Union[bool, None, ProgressCallback]


def silent(event: ProgressEvent) -> None:
    """The callback that ignores every event."""


class RichBars:
    """A callback that draws one rich progress bar per ``task`` name (a context manager)."""

    def __init__(self, console: Console | None = None, transient: bool = False):
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=console, transient=transient)
        self._ids: dict[str, int] = {}

    def __enter__(self) -> "RichBars":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        info = "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.info.items())
        if event.task not in self._ids:
            self._ids[event.task] = self._progress.add_task(event.task, total=event.total, info=info)
        self._progress.update(self._ids[event.task], completed=event.completed, total=event.total, info=info)


@contextmanager
def reporter(progress: ProgressArg, transient: bool = False) -> Iterator[ProgressCallback]:
    """The callback for a ``progress`` argument: ``True`` draws rich bars while the block runs,
    ``False``/``None`` is :func:`silent`, a callable is used as it is."""
    if progress is True:
        with RichBars(transient=transient) as bars:
            yield bars
    elif progress is False or progress is None:
        with nullcontext(silent) as cb:
            yield cb
    elif callable(progress):
        yield progress
    else:
        raise ValueError(f"progress: must be True, False, None or a callable taking a ProgressEvent, got {progress!r}")
