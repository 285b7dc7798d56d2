"""Transcoded instances and frames for retrieves that ask for another transfer syntax, off the
event loop and behind a bounded cache.

Protocol-free like vna/retrieve.py, through which every byte is read: the gateways negotiate
the syntax (vna.gateway.media with the rules of vna/dicom/transcode.py) and frame the answer.
The transcoding itself is the pure code of vna/dicom/transcode.py, run in a small thread pool
(the codecs and zlib release the GIL for the heavy parts), so the event loop keeps serving
while a study is decoded and encoded.  What was made is cached by content (the stored
object's SHA-256 and the syntax made, and the frame for frames), bounded by
``[transcoding] cache_mb``: the same instance asked again soon is not decoded twice, and
concurrent requests for one instance transcode it once.  A study is transcoded instance by
instance as it streams (:meth:`Transcoder.stream`), the next one while the current one is
sent, never the whole study in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vna.config import TranscodingSettings
from vna.dicom import transcode
from vna.rendering import ByteCache
from vna.retrieve import Retriever, StoredInstance


class Transcoder:
    def __init__(self, retriever: Retriever, settings: TranscodingSettings) -> None:
        self.retriever = retriever
        self.settings = settings
        self.cache = ByteCache(settings.cache_mb * 1024**2)
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="vna-transcode")
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}
        #: Instances transcoded (not served from the cache); for tests and metrics.
        self.made = 0

    @property
    def allow_lossy(self) -> bool:
        return self.settings.allow_lossy

    def choose(
        self,
        stored: str,
        acceptable: Sequence[tuple[str, float]],
        facts: transcode.PixelFacts | None = None,
    ) -> str | list[str]:
        """The cheapest acceptable syntax for an instance stored in ``stored`` (with these
        pixel facts, when known), or why none can be made (vna.dicom.transcode.choose)."""
        return transcode.choose(
            stored, acceptable, allow_lossy=self.settings.allow_lossy, facts=facts
        )

    async def instance(self, instance: StoredInstance, target: str) -> bytes:
        """The instance as a Part 10 file in ``target`` (its stored bytes when it is stored
        so); CannotTranscode / TranscodeFailed naming the reason."""
        if target == instance.transfer_syntax:
            return await self.retriever.read(instance)
        key = (instance.sha256, target)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        return await self._once(key, lambda: self._make_instance(instance, target))

    async def _make_instance(self, instance: StoredInstance, target: str) -> bytes:
        data = await self.retriever.read(instance)
        loop = asyncio.get_running_loop()
        made = await loop.run_in_executor(
            self._pool, _transcode, data, target, self.settings.allow_lossy
        )
        self.made += 1
        self.cache.put((instance.sha256, target), made)
        return made

    async def stream(
        self, instances: Sequence[StoredInstance], targets: Sequence[str | None]
    ) -> AsyncIterator[tuple[StoredInstance, str, AsyncIterator[bytes] | bytes]]:
        """Each instance with its syntax and its bytes, in order: the stored chunks when its
        target is None (as stored), else the transcoded file, the next one being made while
        the caller sends this one."""
        ahead: asyncio.Task[bytes] | None = None

        def start(index: int) -> asyncio.Task[bytes] | None:
            for j in range(index, len(instances)):
                target = targets[j]
                if target is not None:
                    return asyncio.ensure_future(self.instance(instances[j], target))
            return None

        ahead_index = -1
        try:
            for index, (instance, target) in enumerate(zip(instances, targets, strict=True)):
                if target is None:
                    yield instance, instance.transfer_syntax, await self.retriever.open(instance)
                    continue
                if ahead is not None and ahead_index == index:
                    task, ahead = ahead, None
                else:
                    task = asyncio.ensure_future(self.instance(instance, target))
                data = await task
                # The next instance to transcode starts before this one goes out.
                nxt = next((j for j in range(index + 1, len(instances)) if targets[j]), None)
                if nxt is not None and ahead is None:
                    ahead, ahead_index = start(nxt), nxt
                yield instance, target, data
        finally:
            if ahead is not None:
                if ahead.done() and not ahead.cancelled():
                    ahead.exception()  # not sent: its failure is not an unretrieved error
                ahead.cancel()

    async def frames(
        self, instance: StoredInstance, numbers: Sequence[int], target: str
    ) -> list[bytes]:
        """Frames ``numbers`` of the instance, each in ``target`` (native targets: the little
        endian pixel bytes; compressed: each frame's codestream)."""
        found = {n: self.cache.get((instance.sha256, target, n)) for n in numbers}
        missing = tuple(dict.fromkeys(n for n, v in found.items() if v is None))
        if missing:
            key = (instance.sha256, target, missing)
            made = await self._once(key, lambda: self._make_frames(instance, missing, target))
            found.update(zip(missing, made, strict=True))
        return [found[n] for n in numbers]  # type: ignore[misc]

    async def _make_frames(
        self, instance: StoredInstance, numbers: Sequence[int], target: str
    ) -> list[bytes]:
        loop = asyncio.get_running_loop()
        layout = await self.retriever.layout(instance)
        pixels = layout.pixels if layout is not None else None
        if pixels is None or pixels.number_of_frames == 0:
            # No layout maps onto the object (deflated, big endian): from the whole file.
            data = await self._whole_native(instance, target)
            made = await loop.run_in_executor(self._pool, _frames_of, data, numbers, target)
        else:
            header, values = await self.retriever.header_and_frames(instance, pixels, numbers)
            made = await loop.run_in_executor(
                self._pool,
                _transcode_frames,
                header,
                pixels.encapsulated,
                values,
                target,
                self.settings.allow_lossy,
            )
        for n, frame in zip(numbers, made, strict=True):
            self.cache.put((instance.sha256, target, n), frame)
        return made

    async def _whole_native(self, instance: StoredInstance, target: str) -> bytes:
        return await self.instance(instance, target)

    async def _once(self, key: Hashable, make: Any) -> Any:
        """``make()`` once for concurrent callers of one key, in a task of its own: a caller
        that goes away (a client disconnecting) neither cancels it for the others nor loses
        what it made (it is cached)."""
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._pending[key] = task

            def done(finished: asyncio.Future[Any]) -> None:
                self._pending.pop(key, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved: no "never retrieved" warning

            task.add_done_callback(done)
        return await asyncio.shield(task)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _transcode(data: bytes, target: str, allow_lossy: bool) -> bytes:
    return transcode.transcode(data, target, allow_lossy=allow_lossy)


def _transcode_frames(
    header: bytes, encapsulated: bool, values: list[bytes], target: str, allow_lossy: bool
) -> list[bytes]:
    return transcode.transcode_frames(header, encapsulated, values, target, allow_lossy=allow_lossy)


def _frames_of(data: bytes, numbers: Sequence[int], target: str) -> list[bytes]:
    return transcode.frames_of_file(data, numbers, target)
