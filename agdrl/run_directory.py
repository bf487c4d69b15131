"""Who may write a run directory: one writer at a time, and a fresh run never into another
run's files.

A writer holds ``agdrl.lock`` in the directory, a file naming its pid, host and command and
locked with ``flock``: the kernel frees the lock when the process ends however it ends, so a
lock file left by a killed process is stale and the next writer takes it over. A second writer
is refused with the holder's pid. A fresh run refuses a directory that holds another run's
files unless asked to replace them (which deletes them once the new run is built); a resumed
run keeps them. Reading a run (evaluating it, drawing its dreams) needs no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import shutil
import socket
import sys
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agdrl.envs import IncompatibleEnvError
from agdrl.faults import RunDirectoryError

T = TypeVar("T")

LOCK_FILE = "agdrl.lock"
"""The lock file of a run directory's writer."""

RUN_FILES = ("config.json", "evaluations.csv", "train_metrics.csv", "wandb_run_id",
             "checkpoints", "model", "tensorboard", "videos", "dreams", "wandb")
"""What a run writes into its directory: a directory holding any of these holds a run. Other
files (a sweep's log.txt and bench_run.json) are not the run's and are left alone."""


class RunDirectory:
    """Write access to a run directory, held from :meth:`claim` until :meth:`release`."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        # released when given up, when collected (an agent nobody references any more) and
        # at interpreter exit; the kernel frees the lock whatever else ends the process
        self._release = weakref.finalize(self, _unlock, path / LOCK_FILE, fd)

    @classmethod
    def claim(cls, path: str | Path, fresh: bool, overwrite: bool = False) -> RunDirectory:
        """Take the directory's lock (creating the directory). ``fresh``: a new run, refused
        where another run's files are unless ``overwrite`` (then :meth:`clear_earlier_run`
        deletes them); otherwise the run already there is continued."""
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            try:
                fd = _lock(path / LOCK_FILE)
            except HeldByThisProcess:
                gc.collect()  # an agent of this process that nothing references holds it
                fd = _lock(path / LOCK_FILE)
        except RunDirectoryError:
            raise
        except OSError as err:
            raise RunDirectoryError(f"cannot write to the run directory {path}: {err}") from err
        claimed = cls(path, fd)
        found = claimed.earlier_run()
        if fresh and found and not overwrite:
            claimed.release()
            raise RunDirectoryError(
                f"{path} holds another run ({', '.join(found)}): continue it with 'agdrl "
                f"resume {path}' (AGDMBRL.resume), train into another --run-dir, or replace it "
                "with --overwrite (overwrite=True), which deletes it")
        return claimed

    def earlier_run(self) -> list[str]:
        """The run files already in the directory."""
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def clear_earlier_run(self) -> None:
        """Delete the run files of the run this one replaces."""
        for name in self.earlier_run():
            target = self.path / name
            try:
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            except OSError as err:
                raise RunDirectoryError(f"cannot delete the earlier run's {target}: "
                                        f"{err}") from err

    def release(self) -> None:
        """Give the directory up (idempotent); the lock file is removed."""
        self._release()


def _unlock(path: Path, fd: int) -> None:
    # a lock file that cannot be removed is stale once the descriptor closes
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
    os.close(fd)


class HeldByThisProcess(RunDirectoryError):
    """The lock is held through another descriptor of this very process."""


def _lock(path: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive lock, with this process's
    description written into it; RunDirectoryError naming the holder when it is taken."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            error = HeldByThisProcess if "(this process)" in holder else RunDirectoryError
            raise error(
                f"{path.parent} is in use by another writer: {holder} holds {path.name}; "
                "wait for it to finish or stop it (a second writer would mix the two runs' "
                "files)") from None
        except OSError:
            os.close(fd)
            raise
        try:  # the holder may have removed the file between our open and our lock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _holder(fd)
    if stale != "an unknown process":
        warnings.warn(f"{path} was left by {stale}, which no longer holds it (it ended without "
                      "releasing the run directory): taking it over", stacklevel=3)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "command": " ".join(sys.argv)}).encode(), 0)
    os.fsync(fd)
    return fd


def _holder(fd: int) -> str:
    """Who a lock file says holds it: 'pid N on HOST (since …, COMMAND)'."""
    try:
        info = json.loads(os.pread(fd, 1 << 16, 0).decode())
        where = "" if info["host"] == socket.gethostname() else f" on {info['host']}"
        mine = " (this process)" if info["pid"] == os.getpid() and not where else ""
        return (f"pid {info['pid']}{where}{mine} (since {info['since']}: "
                f"{info['command'] or '?'})")
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


def first_loadable(candidates: list[Path], load: Callable[[Path], T], what: str) -> T:
    """``load`` of the first candidate folder that loads; each one that fails (damaged,
    truncated, unreadable) is reported as a warning and skipped, and the last one's error is
    raised when none loads."""
    if not candidates:
        raise ValueError(f"no {what} to load")
    for folder in candidates[:-1]:
        try:
            return load(folder)
        except IncompatibleEnvError:
            raise  # every candidate was trained on the same env
        except ValueError as err:
            warnings.warn(f"skipping {what} {folder.name}: {err}", stacklevel=2)
    return load(candidates[-1])
