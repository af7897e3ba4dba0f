"""Shared fixtures: where the real data lives, and a skip when a clone has no ../shared."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BUNDLED_DATA = REPO / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (read-only: copy files to tmp_path before anything writes beside them)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it ships beside the repo, not in it)")
    return SHARED_DATA


def run_main(monkeypatch, capsys, *args):
    """Call the `mambaseq` console entry point in-process; return (exit code, stdout, stderr)."""
    from mambaseq.cli import main

    monkeypatch.setattr(sys, "argv", ["mambaseq", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err
