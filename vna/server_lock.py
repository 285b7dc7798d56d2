"""One ``vna serve`` per data directory (per node): a lock file under ``data_dir``.

Two servers on one data directory would fight over its embedded PostgreSQL, its metrics
directory and its ports, and an administrator who forgot that one was running would believe
the second one served.  The process that owns the server (the supervisor, or the only
process) takes an exclusive ``flock`` on ``data_dir/serve.lock`` before starting anything and
holds it until it exits.  The kernel releases a ``flock`` when its holder dies, however it
dies, so a crash leaves no stale lock behind: the file stays, the lock does not.

Several servers of one deployment may share a data directory (a shared volume) when each is
given its own ``node_name`` and they share an external catalogue (``database_url``): each node
then locks ``serve-<node_name>.lock``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from vna.config import Settings
from vna.errors import ConfigError


def lock_path(settings: Settings) -> Path:
    name = f"serve-{settings.node_name}.lock" if settings.node_name else "serve.lock"
    return settings.data_dir / name


class ServerLock:
    """``with ServerLock(settings):`` holds the data directory's serve lock, or raises
    ConfigError naming the process that holds it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = lock_path(settings)
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.settings.node_name and self.settings.embedded_database:
            raise ConfigError(
                "'node_name' needs a shared catalogue: set database_url (an embedded PostgreSQL"
                " belongs to one server)"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot create the lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            node = f" as node {self.settings.node_name!r}" if self.settings.node_name else ""
            raise ConfigError(
                f"another vna serve{holder} is already running on data directory"
                f" {self.settings.data_dir}{node} (lock {self.path}): stop it, or give this"
                " server its own data_dir, or its own node_name with a shared database_url"
            ) from None
        # Who holds it, for the message a second server prints.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> ServerLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
