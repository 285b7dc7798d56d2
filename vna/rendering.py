"""Rendered images and thumbnails of stored instances (PS3.18 8.3.5, 10.4.1.1.3), off the
event loop and behind a bounded cache.

Protocol-free like vna/retrieve.py, through which every byte is read: the gateways decide
what to render and how to frame it.  The rendering itself is the pure function in
vna/dicom/render.py, run in a small thread pool (numpy, the codecs and Pillow release the GIL
for the heavy parts); rendered bytes are cached by content (the instance's SHA-256, the frame
and the options), so a corrected instance is never served from a stale picture, and
concurrent requests for one picture render it once.
"""

from __future__ import annotations

import asyncio
import copy
import io
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError

from vna.config import RenderSettings
from vna.dicom.render import (
    NotRenderable,
    Region,
    RenderOptions,
    Undecodable,
    Window,
    encapsulated_document,
    frame_count,
    render,
    video_stream,
)
from vna.errors import NotFound
from vna.retrieve import Retriever, StoredInstance


class ByteCache:
    """A least-recently-used map of keys to bytes, bounded by the bytes it holds."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.capacity:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self._items[key] = value
        self.size += len(value)
        while self.size > self.capacity:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)

    def __len__(self) -> int:
        return len(self._items)


class Renderer:
    def __init__(self, retriever: Retriever, settings: RenderSettings) -> None:
        self.retriever = retriever
        self.settings = settings
        self.cache = ByteCache(settings.cache_bytes)
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="vna-render")
        self._pending: dict[Hashable, asyncio.Future[list[tuple[int, bytes]]]] = {}

    def options(
        self,
        media_type: str,
        *,
        window: Window | None = None,
        quality: int | None = None,
        viewport: tuple[int, int] | None = None,
        region: Region | None = None,
    ) -> RenderOptions:
        """Render options with the configured defaults for what the request leaves out."""
        return RenderOptions(
            media_type=media_type,
            window=window,
            quality=quality or self.settings.jpeg_quality,
            viewport=viewport,
            region=region,
        )

    def thumbnail_options(self, media_type: str, viewport: tuple[int, int] | None) -> RenderOptions:
        size = self.settings.thumbnail_size
        return RenderOptions(
            media_type=media_type,
            quality=min(self.settings.jpeg_quality, 80),
            viewport=viewport or (size, size),
        )

    async def frames(
        self, instance: StoredInstance, frames: Sequence[int] | None, options: RenderOptions
    ) -> list[tuple[int, bytes]]:
        """The 1-based ``frames`` of ``instance`` rendered (repeats allowed; None: every
        frame), each with its number; NotFound naming a frame past the instance's Number of
        Frames."""
        if frames is not None:
            found = {f: self.cache.get((instance.sha256, f, options)) for f in frames}
            missing: tuple[int, ...] | None = tuple(f for f, d in found.items() if d is None)
            if not missing:
                return [(f, found[f]) for f in frames]  # type: ignore[misc]
        else:
            found, missing = {}, None
        flight = (instance.sha256, missing, options)
        pending = self._pending.get(flight)
        if pending is not None:
            rendered = await asyncio.shield(pending)
        else:
            pending = asyncio.get_running_loop().create_future()
            self._pending[flight] = pending
            try:
                rendered = await self._render(instance, missing, options)
                pending.set_result(rendered)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: no "never retrieved" warning
                raise
            finally:
                del self._pending[flight]
            for frame, image in rendered:
                self.cache.put((instance.sha256, frame, options), image)
        if frames is None:
            return rendered
        found.update(rendered)
        return [(f, found[f]) for f in frames]  # type: ignore[misc]

    async def _render(
        self, instance: StoredInstance, frames: Sequence[int] | None, options: RenderOptions
    ) -> list[tuple[int, bytes]]:
        """Render from the header and the frames' own bytes when the object's layout is known
        (a frame of a 300-frame object costs one ranged read, not the object), else from the
        whole object (deflated or big endian data, whose offsets are not the object's)."""
        loop = asyncio.get_running_loop()
        layout = await self.retriever.layout(instance)
        pixels = layout.pixels if layout is not None else None
        if pixels is None or pixels.number_of_frames == 0:
            # No layout maps, or it counts no whole frame (a truncated value, or one it sizes
            # otherwise than the decoder, like native YBR_FULL_422: PS3.3 C.7.6.3.1.2): the
            # decoder reads the whole object and says what is wrong, if anything.
            data = await self.retriever.read(instance)
            return await loop.run_in_executor(self._pool, _render_frames, data, frames, options)
        count = pixels.number_of_frames
        wanted = list(range(1, count + 1)) if frames is None else list(frames)
        past = [f for f in wanted if not 1 <= f <= count]
        if past:
            # PS3.18 10.4.1.1.2 (frame list): a frame the instance does not have is not found.
            raise NotFound(f"frame {past[0]} is not in the instance, which has {count} frame(s)")
        header, values = await self.retriever.header_and_frames(instance, pixels, wanted)
        return await loop.run_in_executor(
            self._pool, _render_frame_values, header, pixels.encapsulated, wanted, values, options
        )

    async def video(self, instance: StoredInstance) -> tuple[str, bytes]:
        """The media type and stream of a video instance (it renders as itself)."""
        data = await self.retriever.read(instance)
        return await asyncio.get_running_loop().run_in_executor(self._pool, _video, data)

    async def document(self, instance: StoredInstance) -> tuple[str, bytes] | None:
        """The encapsulated document an instance holds (its MIME type and bytes), or None."""
        data = await self.retriever.read(instance)
        return await asyncio.get_running_loop().run_in_executor(self._pool, _document, data)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _parsed(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError, KeyError) as exc:
        raise Undecodable(f"the stored instance could not be parsed: {exc}") from exc


def _render_frames(
    data: bytes, frames: Sequence[int] | None, options: RenderOptions
) -> list[tuple[int, bytes]]:
    dataset = _parsed(data)
    if "PixelData" not in dataset:
        raise NotRenderable("the instance has no Pixel Data to render")
    count = frame_count(dataset)
    wanted = list(range(1, count + 1)) if frames is None else list(frames)
    past = [f for f in wanted if not 1 <= f <= count]
    if past:
        # PS3.18 10.4.1.1.2 (frame list): a frame the instance does not have is not found.
        raise NotFound(f"frame {past[0]} is not in the instance, which has {count} frame(s)")
    return [(f, render(dataset, f - 1, options)) for f in wanted]


def _render_frame_values(
    header: bytes,
    encapsulated: bool,
    frames: list[int],
    values: list[bytes],
    options: RenderOptions,
) -> list[tuple[int, bytes]]:
    """Each frame rendered from the header and its own bytes, as a one-frame data set: the
    decoders see exactly what a whole-object decode would give them for that frame."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, KeyError) as exc:
        raise Undecodable(f"the stored instance's header could not be parsed: {exc}") from exc
    out = []
    for number, value in zip(frames, values, strict=True):
        one = copy.copy(dataset)
        one.NumberOfFrames = 1
        # PS3.5 A.4: one frame in its own fragment, after an empty Basic Offset Table.
        one.PixelData = encapsulate([value]) if encapsulated else value
        if encapsulated:
            one["PixelData"].VR = "OB"
            one["PixelData"].is_undefined_length = True
        out.append((number, render(one, 0, options)))
    return out


def _video(data: bytes) -> tuple[str, bytes]:
    return video_stream(_parsed(data))


def _document(data: bytes) -> tuple[str, bytes] | None:
    return encapsulated_document(_parsed(data))
