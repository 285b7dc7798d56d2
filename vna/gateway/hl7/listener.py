"""The HL7 listener: an asyncio MLLP server whose every block is parsed
(``vna.gateway.hl7.message``), handed to the engine (``vna.admin.adt``) and answered with an
ACK on the same connection (HL7 v2.5.1 2.9.2, original acknowledgment mode).

Nothing a sender does stops the listener: an unreadable message is answered AR and logged, a
block larger than ``hl7.max_message_bytes`` is skipped and answered AR, data outside MLLP
blocks or a block cut off by the peer closes that connection only, and a connection silent
for ``hl7.idle_timeout`` seconds is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING

from vna.admin import adt
from vna.admin.adt import APPLICATION_INTERNAL_ERROR, Refusal
from vna.errors import ConfigError
from vna.gateway.hl7.message import Parsed, Unreadable, build_ack, decide, head_of, read_message
from vna.gateway.hl7.mllp import Block, BlockReader, FramingError, wrap
from vna.security.tls import hl7_context

if TYPE_CHECKING:
    from vna.archive import Archive

log = logging.getLogger(__name__)


#: Connections served at once; a HIS interface engine keeps one or two open.  More are closed
#: on arrival, so that a flood of idle connections cannot hold the listener.
MAX_CONNECTIONS = 32


class Hl7Listener:
    def __init__(self, archive: Archive, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self.archive = archive
        self.max_connections = max_connections
        self.settings = archive.settings.hl7
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the one chosen by the system when ``hl7.port`` is 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        context = hl7_context(self.archive.settings)
        try:
            self._server = await asyncio.start_server(
                self._connection, self.settings.host, self.settings.port, ssl=context
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {self.settings.host}:{self.settings.port} (hl7.port):"
                f" {exc.strerror}"
            ) from exc
        log.info(
            "HL7 (MLLP%s) listening on %s:%d",
            " over TLS" if context is not None else "",
            self.settings.host,
            self.port,
        )
        if not self.settings.senders:
            log.warning("hl7: no [[hl7.senders]] declared: every message is refused (AR)")

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else ""
        if len(self._connections) >= self.max_connections:
            log.warning(
                "hl7: connection from %s closed: %d connections open already",
                peer,
                len(self._connections),
            )
            writer.close()
            return
        self._connections.add(task)
        blocks = BlockReader(
            reader, max_bytes=self.settings.max_message_bytes, timeout=self.settings.idle_timeout
        )
        try:
            while True:
                block = await blocks.next_block()
                if block is None:
                    break
                writer.write(wrap(await self.answer(block, peer)))
                await writer.drain()
        except FramingError as exc:
            log.warning("hl7: closing the connection from %s: %s", peer, exc)
        except TimeoutError:
            log.info("hl7: closing the connection from %s: idle for too long", peer)
        except (ConnectionError, OSError) as exc:
            log.info("hl7: connection from %s lost: %s", peer, exc)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def answer(self, block: Block, peer: str) -> bytes:
        """The ACK for one block; never raises for anything in the block."""
        now = dt.datetime.now(dt.UTC)
        if block.too_large:
            head = head_of(block.content)
            refusal = Refusal(
                "AR",
                APPLICATION_INTERNAL_ERROR,
                f"message larger than {self.settings.max_message_bytes} bytes"
                " (hl7.max_message_bytes)",
            )
            await self._unreadable(peer, block.content, refusal)
            return _ack(head, refusal, now)
        try:
            parsed = read_message(block.content)
        except Unreadable as exc:
            await self._unreadable(peer, block.content, exc.refusal)
            return _ack(exc.head, exc.refusal, now)
        envelope = parsed.envelope(peer)
        if not envelope.sending_facility or not envelope.control_id:
            refusal = Refusal(
                "AR",
                "101",
                "MSH-4 (sending facility) and MSH-10 (message control ID) are required",
                "MSH^1^10" if envelope.sending_facility else "MSH^1^4",
            )
            await self._unreadable(peer, block.content, refusal)
            return _ack(parsed, refusal, now)
        try:
            decision, source = decide(parsed, self.archive.settings)
            outcome = await adt.receive(self.archive, envelope, decision, source=source)
        except Exception:
            # A fault of ours (the catalogue unreachable...): answered AE, so the sender keeps
            # the message and sends it again; the listener goes on.
            log.exception("hl7: message %s from %s failed", envelope.control_id, peer)
            refusal = Refusal("AE", APPLICATION_INTERNAL_ERROR, "the archive could not process it")
            return _ack(parsed, refusal, now)
        return build_ack(
            parsed,
            ack_code=outcome.ack_code,
            text=outcome.text,
            error_code=outcome.error_code,
            location=outcome.location,
            now=now,
        )

    async def _unreadable(self, peer: str, content: bytes, refusal: Refusal) -> None:
        log.warning("hl7: message from %s refused: %s", peer, refusal.text)
        try:
            text = content[:65536].decode("utf-8", "replace")
            await adt.record_unreadable(self.archive, peer=peer, text=text, refusal=refusal)
        except Exception:
            log.exception("hl7: could not log a refused message from %s", peer)


def _ack(parsed: Parsed | None, refusal: Refusal, now: dt.datetime) -> bytes:
    return build_ack(
        parsed,
        ack_code=refusal.ack_code,
        text=refusal.text,
        error_code=refusal.error_code,
        location=refusal.location,
        now=now,
    )
