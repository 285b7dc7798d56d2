"""Which console role and sources an OIDC user's groups give (vna.security.oidc_roles), and
the [oidc] settings a hospital writes (vna.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vna.config import OidcGroupSettings, load_settings
from vna.errors import ConfigError
from vna.security.oidc import pkce_challenge
from vna.security.oidc_roles import Grant, claim_values, display_name, grant_for

GROUPS = (
    OidcGroupSettings("vna-admins", "admin"),
    OidcGroupSettings("rad-h1", "reader", ("HOSP1",)),
    OidcGroupSettings("rad-h2", "reader", ("HOSP2",)),
    OidcGroupSettings("rad-all", "reader"),
)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((), None),
        (("nurses",), None),
        (("rad-h1",), Grant("reader", ("HOSP1",), ("rad-h1",))),
        (("rad-h2", "rad-h1"), Grant("reader", ("HOSP1", "HOSP2"), ("rad-h1", "rad-h2"))),
        (("rad-h1", "rad-all"), Grant("reader", None, ("rad-h1", "rad-all"))),
        (("rad-h1", "vna-admins"), Grant("admin", None, ("vna-admins", "rad-h1"))),
        (("VNA-ADMINS",), None),  # values match exactly, case included
    ],
)
def test_grant_for_groups(values: tuple[str, ...], expected: Grant | None) -> None:
    assert grant_for(values, GROUPS) == expected


@pytest.mark.parametrize(
    ("claims", "claim", "expected"),
    [
        ({"groups": ["a", "b"]}, "groups", ("a", "b")),
        ({"groups": "a"}, "groups", ("a",)),
        ({"groups": ["a", 7, None]}, "groups", ("a",)),
        ({"groups": {"a": 1}}, "groups", ()),
        ({}, "groups", ()),
        ({"realm_access": {"roles": ["vna-admins"]}}, "realm_access.roles", ("vna-admins",)),
        ({"realm_access": ["x"]}, "realm_access.roles", ()),
    ],
)
def test_claim_values(claims: dict, claim: str, expected: tuple[str, ...]) -> None:
    assert claim_values(claims, claim) == expected


def test_display_name_falls_back_to_the_subject() -> None:
    assert display_name({"sub": "u1", "preferred_username": "dr.grey"}, "preferred_username") == (
        "dr.grey"
    )
    assert display_name({"sub": "u1", "preferred_username": " "}, "preferred_username") == "u1"
    assert display_name({"sub": "u1"}, "name") == "u1"


def test_pkce_challenge_is_rfc7636_s256() -> None:
    # RFC 7636 Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


HOSPITAL = """
[[sources]]
name = "HOSP1"
ae_titles = ["HOSP1PACS"]
issuer_of_patient_id = "HOSP1"
[oidc]
issuer = "https://login.hospital.example/realms/radiology"
client_id = "vna-console"
roles_claim = "realm_access.roles"
provider_name = "Hospital login"
[[oidc.groups]]
value = "vna-admins"
role = "admin"
[[oidc.groups]]
value = "radiology-hosp1"
role = "reader"
read_sources = ["HOSP1"]
"""


def test_a_hospital_oidc_configuration(tmp_path: Path) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    config = tmp_path / "vna.toml"
    config.write_text(HOSPITAL, encoding="utf-8")
    oidc = load_settings(config, environ={"VNA_OIDC_CLIENT_SECRET_FILE": str(secret)}).oidc
    assert oidc.enabled and oidc.client_secret == "s3cret"
    assert oidc.groups[1] == OidcGroupSettings("radiology-hosp1", "reader", ("HOSP1",))
    assert load_settings(config, environ={"VNA_OIDC_CLIENT_SECRET": "e"}).oidc.client_secret == "e"
    assert not load_settings(None, environ={}).oidc.enabled


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('"https://login', '"http://login'), "oidc.issuer"),
        (('client_id = "vna-console"', ""), "oidc.client_id"),
        (('role = "reader"', 'role = "source"'), r"oidc.groups\[1\].role"),
        (('read_sources = ["HOSP1"]', 'read_sources = ["HOSP9"]'), "HOSP9"),
        (('read_sources = ["HOSP1"]', "read_sources = []"), "read_sources' is empty"),
        (('role = "admin"', 'role = "admin"\nread_sources = ["HOSP1"]'), "admin reads every"),
        (("[oidc]", "[oidc]\nleeway_seconds = 3600"), "leeway_seconds"),
        (("[oidc]", '[oidc]\nca_file = "/nonexistent/ca.pem"'), "oidc.ca_file"),
        (("[oidc]", '[oidc]\nclient_secret_file = "/nonexistent/secret"'), "client_secret_file"),
    ],
)
def test_bad_oidc_settings_name_the_key(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    config = tmp_path / "vna.toml"
    config.write_text(HOSPITAL.replace(*change, 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})


def test_groups_are_required_with_an_issuer(tmp_path: Path) -> None:
    config = tmp_path / "vna.toml"
    config.write_text(HOSPITAL.split("[[oidc.groups]]")[0], encoding="utf-8")
    with pytest.raises(ConfigError, match=r"oidc.groups"):
        load_settings(config, environ={})
