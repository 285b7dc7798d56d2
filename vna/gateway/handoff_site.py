"""The worker side of the HTTP hand-off (vna.handoff): an aiohttp site that serves the
connections the supervisor deals this worker instead of listening on a port of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from vna.handoff import receive_connection, report_closed, report_ready

log = logging.getLogger(__name__)

#: How often closed connections are looked for and reported.  Only balance depends on it.
_CLOSED_POLL_SECONDS = 0.25


class HandoffSite(web.BaseSite):
    """Serves the connections dealt on ``channel_fd``; ``address`` is the port the supervisor
    listens on, for the site's name."""

    __slots__ = ("_address", "_channel", "_dealt", "_tasks", "_watcher")

    def __init__(
        self,
        runner: web.BaseRunner,
        channel_fd: int,
        address: tuple[str, int],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._channel = socket.socket(fileno=channel_fd)
        self._channel.setblocking(False)
        self._address = address
        #: Connections dealt to this worker and not yet reported closed.
        self._dealt: set[RequestHandler] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host, port = self._address
        return f"{scheme}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        loop.add_reader(self._channel.fileno(), self._take_connections)
        self._watcher = asyncio.create_task(self._report_closed())
        report_ready(self._channel)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._channel.fileno())
        if self._watcher is not None:
            self._watcher.cancel()
        self._channel.close()
        await super().stop()

    def _take_connections(self) -> None:
        while True:
            try:
                conn, _peer = receive_connection(self._channel)
            except BlockingIOError:
                return
            except OSError as exc:
                # The supervisor is gone or stopping: so is this worker (SIGTERM, or SIGKILL
                # with the supervisor).
                log.info("HTTP hand-off channel closed: %s", exc)
                asyncio.get_running_loop().remove_reader(self._channel.fileno())
                return
            task = asyncio.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        server = self._runner.server
        assert server is not None
        try:
            _transport, handler = await asyncio.get_running_loop().connect_accepted_socket(
                server, conn, ssl=self._ssl_context
            )
        except OSError as exc:  # ssl.SSLError and TimeoutError among them
            # A failed TLS handshake, say: the client sees its connection closed; nothing else
            # is affected.
            log.info("HTTP connection dropped before its first request: %s", exc)
            with contextlib.suppress(OSError):
                conn.close()
            report_closed(self._channel)
            return
        self._dealt.add(handler)

    async def _report_closed(self) -> None:
        server = self._runner.server
        assert server is not None
        while True:
            await asyncio.sleep(_CLOSED_POLL_SECONDS)
            if not self._dealt:
                continue
            still_open = set(server.connections)
            for handler in [h for h in self._dealt if h not in still_open]:
                self._dealt.discard(handler)
                report_closed(self._channel)
