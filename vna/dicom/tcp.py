"""TCP options for DIMSE connections, set through pynetdicom's transport events.

A C-STORE is a request-response exchange in which small writes follow each other, the pattern
where Nagle's algorithm and delayed acknowledgement hold each other up (RFC 896, RFC 1122
4.2.3.2): one side waits for the other's ACK, which the other delays (40 ms on Linux).
Measured on a C-MOVE to dcmtk's ``storescp`` (which since DCMTK 3.6.2 leaves Nagle on), two
such stalls made up most of each sub-operation, not the 0.5 MB sent:

- ours: the data set goes out as P-DATA PDUs of the peer's maximum length (16 KiB for dcmtk),
  each smaller than a loopback segment, so with Nagle the last ones waited for an ACK the
  peer delayed.  TCP_NODELAY sends each PDU at once (DCMTK built with
  DISABLE_NAGLE_ALGORITHM, as Orthanc's is, does the same).
- the peer's: ``storescp`` writes its C-STORE-RSP in two (the PDU header, then the rest), and
  with Nagle the second waits until we acknowledge the first; Linux delays that ACK because
  the exchange has put the connection in "interactive" (ping-pong) mode.  TCP_QUICKACK
  leaves that mode, but the kernel enters it again whenever it transmits our data shortly
  after receiving, so it is set after every message we send, once the kernel has
  transmitted all of it: a PDU pynetdicom has handed to the socket may still be queued
  there when the peer's receive window is full (it was, for one sub-operation in six).

Plain socket options on the association's socket, set from ``EVT_CONN_OPEN`` and
``EVT_DATA_SENT`` handlers: the bytes sent are the same.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import sys
import time
from typing import Any

from pynetdicom import evt

log = logging.getLogger(__name__)

# Linux only (TCP_QUICKACK, SIOCOUTQNSD); elsewhere only TCP_NODELAY is set.
_LINUX = sys.platform == "linux" and hasattr(socket, "TCP_QUICKACK")
#: linux/sockios.h: bytes in the socket's send queue not yet transmitted.
_SIOCOUTQNSD = 0x894B
#: How long to wait for the kernel to transmit the end of a message: no longer than the
#: delayed ACK it is meant to avoid, and in practice a fraction of a millisecond.
_TRANSMIT_WAIT_SECONDS = 0.04
_TRANSMIT_POLL_SECONDS = 0.0002
# PS3.8 9.3.5.1: P-DATA-TF PDU type; E.2: message control header bit "last fragment".
_P_DATA_TF = 0x04
_LAST_FRAGMENT = 0x02


def transport_handlers() -> list[Any]:
    """pynetdicom ``evt_handlers`` for an association (requested or accepted) to send
    without Nagle and acknowledge at once."""
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, _no_delay)]
    if _LINUX:
        handlers.append((evt.EVT_DATA_SENT, _quick_ack))
    return handlers


def _no_delay(event: Any) -> None:
    sock = _socket(event)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # not TCP, or already closed
        log.debug("cannot set TCP_NODELAY: %s", exc)


def _quick_ack(event: Any) -> None:
    """After a message is sent: acknowledge the peer's answer as it arrives."""
    if not ends_message(event.data):
        return
    sock = _socket(event)
    if sock is None:
        return
    try:
        _wait_transmitted(sock)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except OSError:
        pass  # closed under us: the association is ending anyway


def ends_message(pdu: bytes) -> bool:
    """Whether these bytes are a P-DATA-TF PDU whose last fragment ends a command or data
    set (PS3.8 9.3.5, E.2), after which the peer may answer."""
    if len(pdu) < 12 or pdu[0] != _P_DATA_TF:
        return False
    offset, control = 6, 0
    while offset + 6 <= len(pdu):  # each PDV item: length (4), context ID, control header
        (length,) = struct.unpack_from(">I", pdu, offset)
        control = pdu[offset + 5]
        offset += 4 + length
    return bool(control & _LAST_FRAGMENT)


def _wait_transmitted(sock: socket.socket) -> None:
    """Until the kernel has transmitted all that was written (it may be waiting for the
    peer's receive window), or ``_TRANSMIT_WAIT_SECONDS``."""
    deadline = time.monotonic() + _TRANSMIT_WAIT_SECONDS
    while _unsent(sock) and time.monotonic() < deadline:
        time.sleep(_TRANSMIT_POLL_SECONDS)


def _unsent(sock: socket.socket) -> int:
    (count,) = struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, b"\0\0\0\0"))
    return int(count)


def _socket(event: Any) -> socket.socket | None:
    """The association's connected socket (``AssociationSocket.socket``), if any."""
    transport = getattr(event.assoc.dul, "socket", None)
    return getattr(transport, "socket", None)
