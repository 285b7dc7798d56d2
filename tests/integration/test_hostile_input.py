"""Hostile input: every configured limit answers with a clear error naming it, UIDs and QIDO
parameters are checked before they reach a key, a path or SQL, and random requests (property
based) never get a 500, never hang, and leave the server healthy."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from tests.conftest import free_port
from tests.factory import ct_study, part10, stow_body
from tests.integration.test_dimse import find, scu, store, study_keys
from tests.security_support import call, serving, stow
from vna.archive import Archive
from vna.config import DimseSettings, HttpSettings, IngestSettings, QuerySettings, Settings
from vna.gateway.dimse import DimseListener


@contextlib.asynccontextmanager
async def gateways(settings: Settings) -> AsyncIterator[tuple[Archive, str, int]]:
    settings = dataclasses.replace(
        settings,
        dimse=dataclasses.replace(settings.dimse, host="127.0.0.1", port=0, network_timeout=10),
    )
    archive = await Archive.open(settings)
    listener = DimseListener(archive)
    await listener.start()
    try:
        async with serving(archive) as root:
            yield archive, root, listener.port
    finally:
        await listener.stop(grace_seconds=5)
        await archive.close()


async def test_request_size_and_part_limits(archive_settings):
    limited = dataclasses.replace(
        archive_settings,
        http=HttpSettings(max_request_bytes=200_000, max_parts=2),
        ingest=IngestSettings(max_instance_bytes=20_000),
    )
    async with gateways(limited) as (archive, root, port):
        small = [part10(ds) for ds in ct_study(series=1, slices=3, size=32)]
        # http.max_parts: the third part is refused, with the key named.
        reply = await stow(root, small)
        assert reply.status == 413 and b"http.max_parts" in reply.body
        # http.max_request_bytes: a declared length over it, and a streamed body over it.
        big = [part10(ds) for ds in ct_study(series=1, slices=1, size=400)]
        body, content_type = stow_body(big)
        reply = await call(
            "POST",
            f"{root}/dicom-web/studies",
            data=body,
            headers={"Content-Type": content_type},
        )
        assert reply.status == 413

        async def chunked():  # no Content-Length: the limit is enforced while streaming
            for i in range(0, len(body), 65536):
                yield body[i : i + 65536]

        reply = await call(
            "POST",
            f"{root}/dicom-web/studies",
            data=chunked(),  # type: ignore[arg-type]
            headers={"Content-Type": content_type},
        )
        assert reply.status == 413 and b"http.max_request_bytes" in reply.body
        # ingest.max_instance_bytes, over DIMSE too (STOW-RS: test_dicomweb).
        (large,) = ct_study(series=1, slices=1, size=128)
        assert await scu(store, port, [large]) == [0xA700]
        assert await scu(store, port, [ct_study(series=1, slices=1, size=32)[0]]) == [0]
        # The admin endpoints take JSON bodies of 1 MiB at most.
        reply = await call(
            "POST",
            f"{root}/admin/patients/update",
            data=b'{"x": "' + b"a" * (2 * 1024**2) + b'"}',
            headers={"Content-Type": "application/json"},
        )
        assert reply.status == 413
        async with archive.db.acquire() as conn:
            # The two parts before the refused third were stored (each part is ingested as it
            # arrives; a resend finds them), the one small DIMSE instance too.
            assert await conn.fetchval("SELECT count(*) FROM instances") == 3


async def test_association_limit(archive_settings):
    limited = dataclasses.replace(archive_settings, dimse=DimseSettings(max_associations=2))
    async with gateways(limited) as (_, root, port):

        def hold_two_then_try_a_third() -> tuple[list[bool], bool, bool]:
            def open_one() -> object:
                ae = AE(ae_title="SCU")
                ae.acse_timeout = ae.network_timeout = 10
                ae.add_requested_context(Verification, [ImplicitVRLittleEndian])
                return ae.associate("127.0.0.1", port, ae_title="VNA")

            held = [open_one(), open_one()]
            third = open_one()
            rejected = bool(third.is_rejected)  # type: ignore[attr-defined]
            for assoc in held:
                assoc.release()  # type: ignore[attr-defined]
            time.sleep(0.3)
            after = open_one()
            ok = bool(after.is_established)  # type: ignore[attr-defined]
            if ok:
                after.release()  # type: ignore[attr-defined]
            return [bool(a.is_established) for a in held], rejected, ok  # type: ignore[attr-defined]

        held, rejected, after = await scu(hold_two_then_try_a_third)
        assert held == [False, False] or held == [True, True]  # released by now
        assert rejected is True and after is True
        assert (await call("GET", f"{root}/healthz")).status == 200


async def test_query_result_limit(archive_settings):
    limited = dataclasses.replace(archive_settings, query=QuerySettings(max_results=3))
    async with gateways(limited) as (_, root, port):
        for _ in range(5):
            assert await scu(store, port, ct_study(patient_id="MANY", series=1, slices=1)) == [0]
        reply = await call("GET", f"{root}/dicom-web/studies?PatientID=MANY&limit=100")
        assert reply.status == 200 and len(reply.json()) == 3
        assert "more results" in reply.headers["Warning"]
        found, status = await scu(
            find,
            port,
            StudyRootQueryRetrieveInformationModelFind,
            study_keys("STUDY", StudyInstanceUID="", PatientID="MANY"),
        )
        assert status == 0 and len(found) == 3


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/dicom-web/studies/1.2.x", b"not a valid UID"),
        ("/dicom-web/studies/1.2.3/series/..%2F..%2Fetc", b"not a valid UID"),
        ("/dicom-web/studies/1.2.3/series/1.2.4/instances/1'%20OR%201=1", b"not a valid UID"),
        ("/dicom-web/studies/" + "1." * 40 + "1", b"not a valid UID"),
        ("/dicom-web/studies/1.2.3/metadata%00", b"not a valid UID"),
        ("/dicom-web/studies?StudyInstanceUID=1.2.3%5C..%2Fx", b"StudyInstanceUID"),
        ("/dicom-web/studies?limit=-1", b"limit"),
        ("/dicom-web/studies?offset=abc", b"offset"),
        ("/dicom-web/studies?StudyDate=20241350", b"StudyDate"),
        ("/dicom-web/studies?includefield=NoSuchThing", b"NoSuchThing"),
        ("/dicom-web/studies?00100010=a&00100010=b", b"00100010"),
        ("/dicom-web/studies/1.2.3/series?PatientID=%25%27", None),
    ],
)
async def test_uids_and_query_parameters_are_checked(archive, dicomweb, path, named):
    root = dicomweb.removesuffix("/dicom-web")
    reply = await call("GET", root + path, accept="*/*")
    if named is None:
        assert reply.status == 200  # odd but harmless: matched literally, finds nothing
        return
    assert reply.status in (400, 404), (path, reply.status, reply.body)
    if reply.status == 400:
        assert named in reply.body, reply.body


# --- property based: random requests against the running server ----------------------------


class BackgroundServer:
    """The archive and its DICOMweb gateway on a loop of their own, in a thread, so that a
    synchronous property test can drive it over real sockets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzzed-server", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        assert self._ready.wait(60), "the server did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        from aiohttp import web

        from vna.gateway.web import create_app

        self._stop = asyncio.Event()
        try:
            archive = await Archive.open(self.settings)
            runner = web.AppRunner(create_app(archive))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await archive.close()

    def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str, pg_template: str):
    import asyncpg

    from tests.conftest import with_database

    name = "vna_test_fuzz"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(run(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        database_url=with_database(pg_admin_url, name),
        http=HttpSettings(max_request_bytes=1_000_000, max_parts=20),
        query=QuerySettings(max_results=50),
    )
    with BackgroundServer(settings) as server:
        # Something to find, so that matches and retrieves run too.
        body, content_type = stow_body([part10(ds) for ds in ct_study(series=1, slices=2)])
        status, _ = server.request(
            "POST", "/dicom-web/studies", {"Content-Type": content_type}, body
        )
        assert status == 200
        yield server
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


_UIDISH = st.one_of(
    st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,12}){1,6}\Z"),
    st.text(max_size=80),
    st.sampled_from(["..", "%00", "1.2.3'--", "*", "1.2.840.10008.1.2", "0" * 70]),
)
_PARAM_NAMES = st.one_of(
    st.sampled_from(
        [
            "PatientID",
            "PatientName",
            "StudyDate",
            "StudyTime",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "ModalitiesInStudy",
            "AccessionNumber",
            "IssuerOfPatientID",
            "00100020",
            "00080020",
            "0020000D",
            "00081030",
            "limit",
            "offset",
            "includefield",
            "fuzzymatching",
            "StudyDescription",
            "InstanceNumber",
            "Rows",
            "ReferencedSOPSequence.ReferencedSOPInstanceUID",
        ]
    ),
    st.text(max_size=30),
)
_PARAM_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["*", "?", "-", "20240101-", "-20241231", "all", "1.2.3\\1.2.4", "\\", ""]),
    st.integers(-(2**70), 2**70).map(str),
    st.from_regex(r"\A[0-9]{0,8}-[0-9]{0,8}\Z"),
)
_PATHS = st.one_of(
    st.builds(lambda: "/dicom-web/studies"),
    st.builds(lambda: "/dicom-web/series"),
    st.builds(lambda: "/dicom-web/instances"),
    st.builds(lambda u: f"/dicom-web/studies/{u}", _UIDISH),
    st.builds(lambda u: f"/dicom-web/studies/{u}/metadata", _UIDISH),
    st.builds(lambda u, v: f"/dicom-web/studies/{u}/series/{v}", _UIDISH, _UIDISH),
    st.builds(
        lambda u, v, w: f"/dicom-web/studies/{u}/series/{v}/instances/{w}",
        _UIDISH,
        _UIDISH,
        _UIDISH,
    ),
    st.builds(lambda u: f"/dicom-web/studies/{u}/instances", _UIDISH),
    st.builds(lambda t: f"/admin/{t}", st.sampled_from(["conflicts", "patients", "x", ""])),
    st.builds(lambda t: f"/admin/conflicts/{t}", st.text(max_size=20)),
    st.builds(lambda t: f"/{t}", st.text(max_size=40)),
)
_ACCEPTS = st.sampled_from(
    [
        "application/dicom+json",
        'multipart/related; type="application/dicom"; transfer-syntax=*',
        'multipart/related; type="application/dicom"',
        "application/json",
        "*/*",
        "image/jpeg",
        "text/html, */*;q=0.1",
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.3',
        "",
        ";;;",
    ]
)
_CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            'multipart/related; type="application/dicom"; boundary=BOUND',
            "multipart/related; boundary=BOUND",
            'multipart/related; type="application/dicom+json"; boundary=BOUND',
            "application/dicom",
            "application/json",
            'multipart/related; type="application/dicom"; boundary=""',
        ]
    ),
    st.text(max_size=60),
)


def _body(parts: list[bytes], tail: bytes) -> bytes:
    out = b""
    for part in parts:
        out += b"--BOUND\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
    return out + tail


_BODIES = st.one_of(
    st.none(),
    st.binary(max_size=2000),
    st.builds(
        _body,
        st.lists(st.binary(max_size=400), max_size=4),
        st.sampled_from([b"--BOUND--\r\n", b"", b"--BOUND", b"garbage"]),
    ),
)


def _header_safe(text: str) -> str:
    return "".join(c for c in text if 32 <= ord(c) < 127)


# Mostly what the routes take (searches, retrieves, stores), so that requests get past routing
# and authentication into the handlers; now and then anything.
_REQUESTS = st.one_of(
    st.tuples(st.just("GET"), _PATHS),
    st.tuples(st.just("GET"), _PATHS),
    st.tuples(st.just("POST"), st.sampled_from(["/dicom-web/studies"])),
    st.tuples(st.just("POST"), st.builds(lambda u: f"/dicom-web/studies/{u}", _UIDISH)),
    st.tuples(st.sampled_from(["POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]), _PATHS),
)


@given(
    request=_REQUESTS,
    params=st.lists(st.tuples(_PARAM_NAMES, _PARAM_VALUES), max_size=5),
    accept=_ACCEPTS,
    content_type=_CONTENT_TYPES,
    body=_BODIES,
    token=st.one_of(st.none(), st.none(), st.none(), st.text(max_size=20)),
)
@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_random_requests_never_break_the_server(
    fuzzed: BackgroundServer,
    request: tuple[str, str],
    params: list[tuple[str, str]],
    accept: str,
    content_type: str,
    body: bytes | None,
    token: str | None,
) -> None:
    method, path = request
    target = urllib.parse.quote(path, safe="/%") + (
        "?" + urllib.parse.urlencode(params) if params else ""
    )
    headers = {"Accept": accept, "Content-Type": _header_safe(content_type)}
    if token is not None:
        headers["Authorization"] = "Bearer " + _header_safe(token)
    started = time.monotonic()
    status, answer = fuzzed.request(method, target, headers, body)
    assert time.monotonic() - started < 10
    assert status < 500, (method, target, headers, status, answer[:300])


def test_the_server_is_healthy_after_the_random_requests(fuzzed: BackgroundServer) -> None:
    # Runs after the property test (same module fixture): the server still answers.
    status, body = fuzzed.request("GET", "/healthz", {}, None)
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, body = fuzzed.request(
        "GET", "/dicom-web/studies", {"Accept": "application/dicom+json"}, None
    )
    assert status == 200 and len(json.loads(body)) == 1
