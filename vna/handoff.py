"""Connections spread evenly over the worker processes of ``vna serve``.

With SO_REUSEPORT the kernel picks a worker by hashing each connection's addresses: fair over
thousands of short connections, but a PACS opens a handful of long DIMSE associations, and a
DICOMweb client a handful of keep-alive connections; four of them land on one worker one time
in eight (three on one, half the time).  That worker is then bound to one core by the GIL
while the other idles.  So under the supervisor, the supervisor alone listens on the HTTP and
DIMSE ports and passes each accepted connection (its file descriptor, over a Unix socket per
worker and port, SCM_RIGHTS) to the worker with the fewest open connections; the worker's
aiohttp or pynetdicom server takes it from there exactly as if it had accepted it (TLS
included).  Workers report each closed connection back on the same socket.

Nothing is dealt until every worker is ready: a client that connects during start-up waits in
the listen backlog, and a server that answers at all is serving on every core.

One process on its own (``vna serve`` with one worker, tests) listens as before.  This module
is the supervisor's side and the channel; vna.gateway.handoff_site (aiohttp) and
vna.gateway.dimse.handoff_server (pynetdicom) are the workers' sides.
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: Worker to supervisor: ready to take connections; one connection closed.
_READY = b"+"
_CLOSED = b"-"
_MAX_ADDRESS = 512


def pick(active: list[int], ready: list[bool], turn: int) -> int | None:
    """The worker for the next connection: of those ready, the one with the fewest open;
    among equals, the next in turn after ``turn``, so that short connections rotate instead
    of piling on worker 0.  None while no worker is ready."""
    candidates = [n for n, is_ready in zip(active, ready, strict=True) if is_ready]
    if not candidates:
        return None
    fewest = min(candidates)
    count = len(active)
    for step in range(1, count + 1):
        index = (turn + step) % count
        if ready[index] and active[index] == fewest:
            return index
    return None  # pragma: no cover - a ready worker with the fewest is always found


class Dispatcher:
    """Supervisor side: listen on one port and deal its connections to the workers."""

    def __init__(self, name: str, host: str, port: int, workers: int, backlog: int = 64) -> None:
        #: What the port serves ("HTTP", "DIMSE"), for logs and thread names.
        self.name = name
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=backlog)
        self._channels: list[socket.socket] = []
        #: The worker ends, passed to the worker processes (inheritable) then closed here.
        self.worker_fds: list[int] = []
        for _ in range(workers):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            theirs.set_inheritable(True)
            self._channels.append(ours)
            self.worker_fds.append(theirs.detach())
        self._active = [0] * workers
        #: A worker takes connections once its server runs; until then one dealt to it would
        #: wait through its start-up.
        self._ready = [False] * workers
        self._turn = -1
        self._lock = threading.Condition()
        self._closing = False
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def workers_started(self) -> None:
        """Close the worker ends in this process (each worker has its own copy) and start
        dealing connections once every worker is ready."""
        for fd in self.worker_fds:
            with contextlib.suppress(OSError):
                socket.close(fd)
        self._threads = [
            threading.Thread(target=self._accept_loop, name=f"{self.name}Dispatcher", daemon=True),
            threading.Thread(target=self._feedback_loop, name=f"{self.name}Feedback", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def all_ready(self) -> bool:
        with self._lock:
            return all(self._ready)

    def close(self) -> None:
        """Stop accepting (new connections are refused from now on)."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for channel in self._channels:
            with contextlib.suppress(OSError):
                channel.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        with self._lock:
            self._lock.wait_for(lambda: self._closing or all(self._ready))
        while not self._closing:
            try:
                conn, address = self._listener.accept()
            except OSError:
                if self._closing:
                    return
                log.exception("%s dispatcher: accept failed", self.name)
                time.sleep(0.1)  # out of file descriptors, say: not a busy loop meanwhile
                continue
            with conn:
                self._deal(conn, address)

    def _deal(self, conn: socket.socket, address: Any) -> None:
        peer = json.dumps(list(address[:2])).encode()
        with self._lock:
            while (index := pick(self._active, self._ready, self._turn)) is None:
                if self._closing:
                    return
                self._lock.wait(timeout=1.0)
            self._turn = index
            self._active[index] += 1
        try:
            socket.send_fds(self._channels[index], [peer], [conn.fileno()])
        except OSError as exc:
            # The worker is gone (the supervisor is about to notice and stop): the sender
            # sees the connection close and retries later.
            with self._lock:
                self._active[index] -= 1
            log.error(
                "%s connection from %s dropped: worker %d unreachable: %s",
                self.name,
                peer,
                index,
                exc,
            )

    def _feedback_loop(self) -> None:
        selector = selectors.DefaultSelector()
        for index, channel in enumerate(self._channels):
            selector.register(channel, selectors.EVENT_READ, index)
        while not self._closing and selector.get_map():
            for key, _ in selector.select(timeout=1.0):
                index = key.data
                try:
                    message = key.fileobj.recv(16)  # type: ignore[union-attr]
                except OSError:
                    message = b""
                with self._lock:
                    if not message:  # the worker is gone
                        self._ready[index] = False
                        selector.unregister(key.fileobj)
                        continue
                    if message == _READY:
                        self._ready[index] = True
                        self._lock.notify_all()
                    elif message == _CLOSED:
                        self._active[index] = max(0, self._active[index] - 1)
        selector.close()


def receive_connection(channel: socket.socket) -> tuple[socket.socket, tuple[str, int]]:
    """Worker side: the next connection dealt on ``channel`` and its peer address.  On a
    non-blocking channel, BlockingIOError when none is waiting."""
    message, fds, _flags, _ = socket.recv_fds(channel, _MAX_ADDRESS, 1)
    if not fds:
        # The supervisor is gone; this worker is being stopped or killed with it.  The
        # pause keeps a blocking caller's accept loop from spinning on the closed channel.
        if channel.getblocking():
            time.sleep(1)
        raise ConnectionAbortedError("the supervisor closed the hand-off channel")
    host, port = json.loads(message)
    return socket.socket(fileno=fds[0]), (str(host), int(port))


def report_ready(channel: socket.socket) -> None:
    """Worker side: deal connections to this worker from now on."""
    channel.send(_READY)


def report_closed(channel: socket.socket) -> None:
    """Worker side: one connection ended.  Only balance depends on it: a lost report leaves
    this worker looking busier than it is."""
    with contextlib.suppress(OSError):
        channel.send(_CLOSED)
