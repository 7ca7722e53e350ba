"""One writer per data directory, across processes and threads: the app, ``python -m ingest`` (and its
``--rebuild``) and ``rag delete`` take it around every change to the store and the registry; searches never do.

The lock is ``fcntl.flock`` on ``writer.lock`` in the data directory. The kernel drops it when its holder exits,
however it exits (a crash, SIGKILL), so a lock left by a dead process is taken over at once. The file itself only
says who holds it (process id, what it does, since when), for the message a second writer shows while it waits,
or refuses with when asked not to wait.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "writer.lock"


class WriterBusy(RuntimeError):
    """Another process is writing to the data directory and the caller asked not to wait."""


class WriterLock:
    """``hold(what)``: the data directory's write lock for the ``with`` block; waits for another holder unless
    ``wait`` is False (then WriterBusy). ``on_wait`` hears once, with the holder named, when a hold has to wait."""

    def __init__(self, data_dir: Path | None, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> None:
        self.path = Path(data_dir) / LOCK_FILE if data_dir is not None else None  # None: this process only
        self.wait = wait
        self.on_wait = on_wait
        self._threads = threading.RLock()  # one writer per process too; the same thread may nest holds
        self._depth = 0  # holds of the thread that has ``_threads`` (read and written only under it)

    @contextmanager
    def hold(self, what: str, wait: bool | None = None) -> Iterator[None]:
        """``wait`` overrides the lock's own choice for this hold (False: WriterBusy at once if taken)."""
        wait = self.wait if wait is None else wait
        if not self._threads.acquire(blocking=wait):
            raise WriterBusy(f"another writer of this process is busy with {self.path.parent if self.path else 'it'}")
        try:
            if self._depth or self.path is None:  # nested in this thread (the file lock is ours), or no file
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._acquire(fd, wait)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {time.strftime('%H:%M:%S')} {what}\n".encode(), 0)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    os.ftruncate(fd, 0)
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            self._threads.release()

    def holder(self) -> str:
        """Who holds the lock, as its file says ("" when nobody wrote it)."""
        if self.path is None:
            return ""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""
        pid, _, rest = text.partition(" ")
        since, _, what = rest.partition(" ")
        return f"process {pid} ({what}, since {since})" if pid.isdigit() else ""

    def _acquire(self, fd: int, wait: bool) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = self.holder() or "another process"
        message = f"another zhiku process is writing to {self.path.parent}: {holder}"
        if not wait:
            raise WriterBusy(message)
        if self.on_wait is not None:
            self.on_wait(f"{message}; waiting for it to finish")
        fcntl.flock(fd, fcntl.LOCK_EX)


def command_lock(data_dir: Path, wait: bool) -> WriterLock:
    """The lock as a command line takes it: waiting (saying on stderr for whom) or, with ``wait`` False, not."""
    return WriterLock(data_dir, wait=wait, on_wait=lambda message: print(message, file=sys.stderr))
