"""API tokens and roles over real HTTP: `vna tokens create|list|revoke`, source, reader and admin
tokens, reader tokens restricted to sources, the configured tokens, and the open archive."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from tests.factory import ct_study, part10
from tests.security_support import (
    ACCEPT_DICOM,
    audit_rows,
    call,
    config_file,
    dicom_parts,
    serving,
    stow,
    vna,
)
from vna.archive import Archive
from vna.config import AdminSettings, HttpSettings, Settings, SourceSettings
from vna.errors import ConfigError
from vna.security import tokens
from vna.security.authn import Authenticator, check_http_exposure

pytestmark = pytest.mark.asyncio

SOURCES = (
    SourceSettings(name="H1", issuer_of_patient_id="HOSP1"),
    SourceSettings(name="H2", issuer_of_patient_id="HOSP2"),
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def settings(archive_settings: Settings) -> Settings:
    # No cache: a revocation is seen by the next request.
    return dataclasses.replace(
        archive_settings, sources=SOURCES, http=HttpSettings(token_cache_seconds=0)
    )


async def test_tokens_and_roles_over_http(settings, tmp_path, capsys):
    config = config_file(settings, tmp_path / "vna.toml")
    archive = await Archive.open(settings)
    try:
        async with serving(archive) as root:
            web = f"{root}/dicom-web"
            # Without any token the archive is open to loopback clients.
            assert (await call("GET", f"{web}/studies")).status == 200

            async def create(name: str, *options: str) -> str:
                code, out, err = await vna(capsys, config, "tokens", "create", name, *options)
                assert code == 0, err
                assert "not shown again" in err
                secret = out.strip()
                assert secret.startswith("vna_") and len(secret) > 40
                return secret

            h1 = await create("h1-sender", "--role", "source", "--source", "H1")
            h2 = await create("h2-sender", "--role", "source", "--source", "H2")
            reader = await create("ris", "--role", "reader")
            reader_h1 = await create("h1-viewer", "--role", "reader", "--read-sources", "H1")
            admin = await create("ops", "--role", "admin")

            # Now every DICOMweb and admin request needs a token.
            no_token = await call("GET", f"{web}/studies")
            assert no_token.status == 401
            assert no_token.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await call("GET", f"{root}/admin/conflicts")).status == 401
            # Health and metrics carry no patient data: open.
            assert (await call("GET", f"{root}/healthz")).status == 200

            # Source tokens store, as their source.
            s1 = ct_study(patient_id="P1", series=1, slices=2)
            s2 = ct_study(patient_id="P2", series=1, slices=1)
            assert (await stow(root, [part10(ds) for ds in s1], token=h1)).status in (200, 202)
            assert (await stow(root, [part10(ds) for ds in s2], token=h2)).status in (200, 202)
            async with archive.db.acquire() as conn:
                stored = dict(await conn.fetch("SELECT study_uid, source FROM studies"))
                actors = {r["actor"] for r in await conn.fetch("SELECT actor FROM audit")}
            assert stored == {s1[0].StudyInstanceUID: "H1", s2[0].StudyInstanceUID: "H2"}
            assert {"h1-sender", "h2-sender"} <= actors

            # ... and read nothing; readers and admins do not store.
            assert (await call("GET", f"{web}/studies", token=h1)).status == 403
            assert (await stow(root, [part10(s1[0])], token=reader)).status == 403
            assert (await stow(root, [part10(s1[0])], token=admin)).status == 403

            # A reader sees every source; a reader restricted to H1 only H1's studies.
            def studies(reply) -> set[str]:
                return {m["0020000D"]["Value"][0] for m in reply.json()}

            everything = {s1[0].StudyInstanceUID, s2[0].StudyInstanceUID}
            assert studies(await call("GET", f"{web}/studies", token=reader)) == everything
            assert studies(await call("GET", f"{web}/studies", token=admin)) == everything
            only_h1 = await call("GET", f"{web}/studies", token=reader_h1)
            assert studies(only_h1) == {s1[0].StudyInstanceUID}
            series = await call("GET", f"{web}/series?PatientID=P2", token=reader_h1)
            assert series.status == 200 and series.json() == []
            instances = await call("GET", f"{web}/instances", token=reader_h1)
            assert {m["00080018"]["Value"][0] for m in instances.json()} == {
                ds.SOPInstanceUID for ds in s1
            }
            # WADO-RS: another source's study does not exist for it.
            h1_study = f"{web}/studies/{s1[0].StudyInstanceUID}"
            h2_study = f"{web}/studies/{s2[0].StudyInstanceUID}"
            got = await call("GET", h1_study, token=reader_h1, accept=ACCEPT_DICOM)
            assert got.status == 200 and len(dicom_parts(got)) == 2
            assert (await call("GET", h2_study, token=reader_h1, accept=ACCEPT_DICOM)).status == 404
            assert (await call("GET", f"{h2_study}/metadata", token=reader_h1)).status == 404
            assert (await call("GET", f"{h2_study}/metadata", token=reader)).status == 200
            denied = await audit_rows(archive, "action = 'access-denied' AND study_uid IS NOT NULL")
            assert [(d["actor"], d["study_uid"]) for d in denied] == [
                ("h1-viewer", s2[0].StudyInstanceUID)
            ] * 2

            # The admin endpoints need the admin role.
            assert (await call("GET", f"{root}/admin/conflicts", token=reader)).status == 403
            assert (await call("GET", f"{root}/admin/conflicts", token=admin)).status == 200

            # A token that is nobody's is refused and audited (without the token itself).
            bogus = await call("GET", f"{web}/studies", token="vna_not-a-token")
            assert bogus.status == 401
            (failed,) = await audit_rows(archive, "action = 'authentication-failed'")
            assert failed["outcome"] == "failure" and failed["origin"] == "127.0.0.1"
            assert "vna_not-a-token" not in str(failed["detail"])
            assert (
                await call("GET", f"{web}/studies", headers={"Authorization": "Basic eDp5"})
            ).status == 401

            # Listing shows names and roles, never a secret; revoking takes effect at once.
            code, out, _ = await vna(capsys, config, "tokens", "list")
            assert code == 0
            assert "h1-viewer" in out and "reads H1" in out and "stores as H2" in out
            assert reader not in out and "vna_" not in out
            code, out, _ = await vna(capsys, config, "tokens", "revoke", "ris")
            assert code == 0 and "revoked" in out
            assert (await call("GET", f"{web}/studies", token=reader)).status == 401
            code, out, _ = await vna(capsys, config, "tokens", "list", "--all")
            assert "revoked" in out
            # The name can be given again; the old token stays dead.
            await create("ris", "--role", "reader")
            assert (await call("GET", f"{web}/studies", token=reader)).status == 401

            actions = [r["action"] for r in await audit_rows(archive, "action LIKE 'token-%'")]
            assert actions == ["token-create"] * 5 + ["token-revoke", "token-create"]
    finally:
        await archive.close()


async def test_token_commands_refuse_what_could_not_work(settings, tmp_path, capsys):
    config = config_file(settings, tmp_path / "vna.toml")
    cases = [
        (["x", "--role", "source"], "needs --source"),
        (["x", "--role", "source", "--source", "NOPE"], "not a declared source"),
        (["x", "--role", "reader", "--source", "H1"], "--source is for source tokens"),
        (["x", "--role", "admin", "--read-sources", "H1"], "reads every source"),
        (["x", "--role", "reader", "--read-sources", "H3"], "not a declared source"),
        (["bad name", "--role", "reader"], "token name"),
        (["x", "--role", "reader", "--expires-days", "0"], "--expires-days"),
    ]
    for argv, message in cases:
        code, out, err = await vna(capsys, config, "tokens", "create", *argv)
        assert code == 1 and message in err and err.count("\n") == 1, (argv, err)
        assert out == ""
    code, _, _ = await vna(capsys, config, "tokens", "create", "x", "--role", "reader")
    assert code == 0
    code, _, err = await vna(capsys, config, "tokens", "create", "x", "--role", "admin")
    assert code == 1 and "exists" in err
    code, _, err = await vna(capsys, config, "tokens", "revoke", "nobody")
    assert code == 1 and "no live token" in err


async def test_configured_tokens_are_tokens_too(settings):
    """A source's token_sha256 stores as that source; [admin] admin_token_sha256 reads and
    administers; neither does the other's work."""
    configured = dataclasses.replace(
        settings,
        sources=(dataclasses.replace(SOURCES[0], token_sha256=_sha("pacs-1")), SOURCES[1]),
        admin=AdminSettings(admin_token_sha256=_sha("root")),
    )
    archive = await Archive.open(configured)
    try:
        async with serving(archive) as root:
            (ds,) = ct_study(series=1, slices=1)
            assert (await stow(root, [part10(ds)])).status == 401
            assert (await stow(root, [part10(ds)], token="pacs-1")).status == 202  # coerced
            assert (await stow(root, [part10(ds)], token="root")).status == 403
            assert (await call("GET", f"{root}/dicom-web/studies", token="pacs-1")).status == 403
            found = await call("GET", f"{root}/dicom-web/studies", token="root")
            assert [m["0020000D"]["Value"][0] for m in found.json()] == [ds.StudyInstanceUID]
            assert (await call("GET", f"{root}/admin/patients", token="root")).status == 200
            assert (await call("GET", f"{root}/admin/patients", token="pacs-1")).status == 403
            actors = {r["actor"] for r in await audit_rows(archive)}
            assert {"token:H1", "admin-token"} <= actors
    finally:
        await archive.close()


async def test_an_open_archive_serves_loopback_only_unless_allowed(archive):
    """No credential anywhere: loopback clients need none; binding beyond loopback is refused
    until a token exists or [http] allow_unauthenticated is set."""
    settings = archive.settings

    def on(host: str, allow: bool = False) -> Authenticator:
        http = dataclasses.replace(settings.http, host=host, allow_unauthenticated=allow)
        return Authenticator(archive.db, dataclasses.replace(settings, http=http))

    assert await check_http_exposure(on("127.0.0.1")) is True
    assert await check_http_exposure(on("localhost")) is True
    with pytest.raises(ConfigError, match="allow_unauthenticated"):
        await check_http_exposure(on("0.0.0.0"))
    assert await check_http_exposure(on("0.0.0.0", allow=True)) is True
    async with archive.db.transaction() as conn:
        await tokens.create_token(conn, name="ops", role="admin", actor="test")
    # A token exists: the archive is closed, whatever the address.
    assert await check_http_exposure(on("0.0.0.0")) is False


async def test_serve_refuses_a_public_address_without_tokens(archive_settings, tmp_path, capsys):
    config = config_file(
        archive_settings,
        tmp_path / "vna.toml",
        '[http]\nhost = "0.0.0.0"\nport = 0\n[dimse]\nenabled = false\n',
    )
    code, _, err = await vna(capsys, config, "serve")
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("vna: configuration error: refusing to serve DICOMweb on 0.0.0.0")
    assert "Traceback" not in err
