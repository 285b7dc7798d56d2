"""TCP options for DIMSE connections, set through pynetdicom's transport events.

A C-STORE is a request-response exchange of small PDUs between large ones, the pattern where
Nagle's algorithm and delayed acknowledgement hold each other up (RFC 896, RFC 1122 4.2.3.2):
each side waits up to the peer's delayed-ACK timeout (40 ms on Linux) for the other.  Measured
on a C-MOVE to dcmtk's ``storescp`` (which since DCMTK 3.6.2 leaves Nagle on), two stalls made
up most of each sub-operation:

- ours: the data set goes out as P-DATA PDUs of the peer's maximum length (16 KiB for
  dcmtk), each smaller than the loopback MSS, so with Nagle the last ones waited for the ACK
  the peer delays.  TCP_NODELAY sends every PDU at once (DCMTK built with
  DISABLE_NAGLE_ALGORITHM, as Orthanc's is, does the same).
- the peer's: ``storescp`` writes its C-STORE-RSP as two segments (PDU header, then the
  rest); with Nagle on its side the second waits until we acknowledge the first, and Linux
  delays that ACK in "interactive" (ping-pong) mode, which every request-response exchange
  puts the connection in.  TCP_QUICKACK leaves that mode; it does not last (the kernel
  re-enters it when we next send), so it is set again after every send, just before the
  response is due.  It helps most of the time, not always: the kernel may still be
  transmitting the tail of the data set when it is set.

Both are plain socket options on the association's socket, set from ``EVT_CONN_OPEN`` and
``EVT_DATA_SENT`` handlers; bit for bit the same bytes go over the wire.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom import evt

log = logging.getLogger(__name__)

# Linux only; elsewhere the peer's Nagle stall remains (TCP_NODELAY is portable).
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def transport_handlers() -> list[Any]:
    """pynetdicom ``evt_handlers`` for an association (requested or accepted) to send
    without Nagle and acknowledge at once."""
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, _no_delay)]
    if _TCP_QUICKACK is not None:
        handlers.append((evt.EVT_DATA_SENT, _quick_ack))
    return handlers


def _no_delay(event: Any) -> None:
    sock = _socket(event)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # not TCP (a test's socket pair), or already closed
        log.debug("cannot set TCP_NODELAY: %s", exc)


def _quick_ack(event: Any) -> None:
    sock = _socket(event)
    if sock is None or _TCP_QUICKACK is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
    except OSError:
        pass  # closed under us: the association is ending anyway


def _socket(event: Any) -> socket.socket | None:
    """The association's connected socket (``AssociationSocket.socket``), if any."""
    transport = getattr(event.assoc.dul, "socket", None)
    return getattr(transport, "socket", None)
