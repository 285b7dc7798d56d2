"""Source profiles in the configuration: coercion rules, issuer qualifiers, the admin token."""

from __future__ import annotations

import pytest

from vna.config import DEFAULT_SOURCE, Settings, load_settings
from vna.dicom.coercion import CoercionRule
from vna.errors import ConfigError

PROFILE = """
[[sources]]
name = "HOSP1"
ae_titles = ["HOSP1PACS"]
issuer_of_patient_id = "HOSP1"
issuer_universal_entity_id = "1.2.826.0.1.3680043.10.1"
identifier_type_code = "MR"
on_conflict = "keep-both"

[[sources.coerce]]
action = "prefix"
attribute = "AccessionNumber"
value = "H1-"

[[sources.coerce]]
action = "map"
attribute = "InstitutionName"
map = { "ST MARYS" = "St Mary's Hospital", "SMH" = "St Mary's Hospital" }

[[sources.coerce]]
action = "remove"
attribute = "00081040"

[admin]
admin_token_sha256 = "%s"
""" % ("ab" * 32)


def load(text: str) -> Settings:
    return load_settings(None, environ={"VNA_CONFIG_TOML": text})


def test_a_source_profile_with_coercion_rules() -> None:
    s = load(PROFILE)
    (src,) = s.sources
    assert src.coerce == (
        CoercionRule("prefix", "AccessionNumber", "H1-"),
        CoercionRule(
            "map",
            "InstitutionName",
            map=(("ST MARYS", "St Mary's Hospital"), ("SMH", "St Mary's Hospital")),
        ),
        CoercionRule("remove", "00081040"),
    )
    assert (src.issuer_universal_entity_id, src.identifier_type_code) == (
        "1.2.826.0.1.3680043.10.1",
        "MR",
    )
    assert src.convert_to_utf8 and src.trim_padding  # on for declared sources
    assert s.admin.admin_token_sha256 == "ab" * 32
    assert not DEFAULT_SOURCE.convert_to_utf8 and not DEFAULT_SOURCE.trim_padding


SOURCE = '[[sources]]\nname = "H1"\n[[sources.coerce]]\n'
INVALID = [
    ("unknown action", SOURCE + 'action = "append"\nattribute = "StudyID"\n', "coerce[0].action"),
    ("unknown attribute", SOURCE + 'action = "set"\nattribute = "Nope"\nvalue = "x"\n', "Nope"),
    (
        "identity",
        SOURCE + 'action = "set"\nattribute = "SOPInstanceUID"\nvalue = "1"\n',
        "may not be coerced",
    ),
    ("file meta", SOURCE + 'action = "remove"\nattribute = "00020010"\n', "coerce[0].attribute"),
    (
        "binary",
        SOURCE + 'action = "set"\nattribute = "PixelData"\nvalue = "1"\n',
        "not a text value",
    ),
    ("prefix without value", SOURCE + 'action = "prefix"\nattribute = "StudyID"\n', "value"),
    ("map without map", SOURCE + 'action = "map"\nattribute = "StudyID"\n', "map"),
    (
        "unknown key",
        SOURCE + 'action = "set"\nattribute = "StudyID"\nvalu = "1"\n',
        "sources[0].coerce[0].valu",
    ),
    ("missing attribute", SOURCE + 'action = "set"\n', "coerce[0].attribute"),
    ("bad admin token", '[admin]\nadmin_token_sha256 = "xyz"\n', "admin.admin_token_sha256"),
]


@pytest.mark.parametrize("text,needle", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_profiles_name_the_key(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load(text)
