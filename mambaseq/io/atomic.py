"""Atomic file writes: a temporary file in the target's folder, flushed to disk, then renamed over the target.

A reader (or a rerun after a crash) sees the old file or the whole new one, never a half-written one.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def open_atomic(path: str | Path, mode: str = "w"):
    """A file handle whose content replaces `path` only when the block ends without an error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with open_atomic(path, "wb") as handle:
        handle.write(data)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_figure_atomic(fig, path: str | Path, dpi: int = 120) -> None:
    """Write a matplotlib figure as PNG atomically, then close it (figures pile up in memory otherwise)."""
    import matplotlib.pyplot as plt

    try:
        with open_atomic(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=dpi)
    finally:
        plt.close(fig)
