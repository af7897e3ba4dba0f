"""A rich progress bar for training loops: step, loss in bits (per base or value), tokens/s, held-out bits, ETA."""
from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainingProgress:
    def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True, description: str = "training",
                 unit: str = "bits/base"):
        self._unit = unit
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            disable=not enabled, transient=False)
        self._task = self._progress.add_task(description, total=total_steps, completed=start_step, status="")
        self._valid = None

    def __enter__(self) -> "TrainingProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._progress.stop()

    def update(self, step: int, train_bits: float, tokens_per_s: float, valid_bits: float | None = None) -> None:
        if valid_bits is not None:
            self._valid = valid_bits
        status = f"{train_bits:.3f} {self._unit}  {tokens_per_s:,.0f} tok/s"
        if self._valid is not None:
            status += f"  held-out {self._valid:.3f}"
        self._progress.update(self._task, completed=step, status=status)
