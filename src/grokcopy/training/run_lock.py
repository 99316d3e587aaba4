"""One writer per run folder: a lock file held for the whole run, naming the process that holds it.

Two `grokcopy train` processes in one folder (a requeued job beside the one still running, a launch
clicked twice, `--overwrite_output_dir` while the first still trains) would append to the same
histories: steps 0, 0, 1, 1, ... that a report reads as one run. The lock is an exclusive `flock` on
`output_dir/grokcopy.lock`, which also holds the holder's pid, host and command so that a refusal can
name it. The kernel drops a flock when its process dies however it dies, so a lock left by a killed
run is never in the way: the next run takes it over and says so in one line. On a file system without
flock the pid in the file decides (same host: is that process still running?).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from grokcopy.errors import ConfigError
from grokcopy.run_dir import RunFolder

logger = logging.getLogger(__name__)


class RunFolderInUse(ConfigError):
    """Another live process holds the run folder's lock."""


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unreadable: assume the worst
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return True
    return True


def describe_holder(holder: dict) -> str:
    return (f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('started', '?')}: "
            f"{holder.get('command', '?')})")


class RunLock:
    """`with RunLock(output_dir): ...` holds `output_dir/grokcopy.lock` for the block; the file exists only
    while a run holds it (or was killed holding it: then the next run takes it over)."""

    def __init__(self, folder: str | Path, command: str = "grokcopy train"):
        self.folder = Path(folder)
        self.command = command
        self.fd: int | None = None

    @property
    def path(self) -> Path:
        return RunFolder(self.folder).lock

    @property
    def held(self) -> bool:
        return self.fd is not None

    def holder(self) -> dict | None:
        """Who last held the lock: a dict (empty when unreadable), or None when nobody recorded one."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _refuse(self, holder: dict | None) -> None:
        who = describe_holder(holder) if holder else "another process"
        raise RunFolderInUse(f"output_dir: {self.folder} is in use by {who}; two runs in one folder would mix "
                             f"their histories. Wait for it to finish, or stop it first")

    def acquire(self) -> RunLock:
        for _ in range(10):
            if self._try_acquire():
                return self
        raise RunFolderInUse(f"output_dir: could not take the lock {self.path}: other processes keep taking it")

    def _try_acquire(self) -> bool:
        """Lock the file at `path`; False when it was deleted (released) under us: try again."""
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = self.holder()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._refuse(self.holder())
        except OSError:  # no flock here (some network file systems): the recorded pid decides
            if previous and previous.get("pid") != os.getpid() and (
                    previous.get("host") != socket.gethostname() or _alive(previous.get("pid"))):
                os.close(fd)
                self._refuse(previous)
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder released (deleted) it between our open and our lock
            os.close(fd)
            return False
        if previous and previous.get("pid") != os.getpid():
            logger.warning("output_dir %s: took over the lock of %s, which is no longer running", self.folder,
                           describe_holder(previous))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return True

    def release(self) -> None:
        """Delete the lock file, then unlock: whoever opened it meanwhile sees it gone and tries again."""
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
