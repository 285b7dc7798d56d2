"""The worker side of the DIMSE hand-off (vna.handoff): a pynetdicom server that takes the
associations the supervisor deals it instead of listening on a port of its own."""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import ThreadedAssociationServer

from vna.handoff import receive_connection, report_closed, report_ready


def handoff_server_class(channel_fd: int, address: tuple[str, int]) -> type[Any]:
    """A server class taking its connections from the supervisor on ``channel_fd``; it
    reports itself as serving ``address``, the port the supervisor listens on."""
    channel = socket.socket(fileno=channel_fd)

    class HandoffServer(ThreadedAssociationServer):
        def server_bind(self) -> None:
            # The socket socketserver made for listening is never used: the supervisor listens.
            assert self.socket is not None
            self.socket.close()
            self.socket = channel
            self.server_address = address

        def server_activate(self) -> None:
            # Queued until serve_forever reads the channel, which the listener starts next.
            report_ready(channel)

        def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
            conn, peer = receive_connection(channel)
            if self.ssl_context:
                # As pynetdicom's own get_request does with the connections it accepts.
                try:
                    conn = self.ssl_context.wrap_socket(conn, server_side=True)
                except (OSError, ValueError):
                    conn.close()
                    report_closed(channel)
                    raise
            return conn, peer

    return HandoffServer


def closed_handler(channel_fd: int) -> tuple[Any, Any]:
    """``evt.EVT_CONN_CLOSE`` handler telling the supervisor that an association ended."""
    channel = socket.socket(fileno=socket.dup(channel_fd))

    def on_close(_event: Any) -> None:
        report_closed(channel)

    return (evt.EVT_CONN_CLOSE, on_close)
