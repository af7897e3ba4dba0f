"""Kill -9 in the middle of a command: start it, wait for a sign of progress, SIGKILL it.

One helper for every crash test (pretraining's resume, batch prediction's rerun), so each test states only
what it runs and which file or manifest entry shows that the run is far enough along to be killed.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable


def mambaseq_command(*args) -> list[str]:
    """The console entry point as a user runs it, in a child process."""
    return [sys.executable, "-m", "mambaseq", *map(str, args)]


def kill_when(command: list[str], ready: Callable[[], bool], *, timeout: float = 300,
              poll: float = 0.01, **popen_kwargs) -> subprocess.CompletedProcess:
    """Run `command`, SIGKILL it as soon as `ready()` is true; return its (stdout, stderr) and status.

    Fails the test if the command ends on its own before `ready()` (it was never killed mid-run) or if
    `ready()` stays false for `timeout` seconds.
    """
    # output goes to files, not pipes: a chatty child never blocks on a full pipe while we wait for `ready`
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, **popen_kwargs)
        deadline = time.monotonic() + timeout
        try:
            while not ready():
                if process.poll() is not None:
                    err.seek(0)
                    raise AssertionError(f"{command[3:]} ended (status {process.returncode}) before it could be "
                                         f"killed:\n{err.read()[-2000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{command[3:]}: no sign of progress after {timeout} s")
                time.sleep(poll)
            process.send_signal(signal.SIGKILL)
        finally:
            if process.poll() is None:  # killed above, or a failed assertion: never leave the child running
                process.kill()
            process.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert process.returncode == -signal.SIGKILL, f"expected death by SIGKILL, got status {process.returncode}"
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
