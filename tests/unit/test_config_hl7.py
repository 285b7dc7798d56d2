"""The [hl7] section: the listener runs only when it is present; errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from vna.config import Settings, environment_keys, load_settings
from vna.errors import ConfigError

SOURCES = '[[sources]]\nname = "HOSP1"\nissuer_of_patient_id = "HOSP1"\n'


def settings_from(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "vna.toml"
    path.write_text(SOURCES + text, encoding="utf-8")
    return load_settings(path, environ=env or {})


def test_no_hl7_section_no_listener(tmp_path: Path) -> None:
    assert not settings_from(tmp_path, "").hl7.enabled


def test_the_section_turns_the_listener_on_with_its_senders(tmp_path: Path) -> None:
    hl7 = settings_from(
        tmp_path,
        '[hl7]\nhost = "0.0.0.0"\nport = 2575\n'
        '[[hl7.senders]]\nsending_facility = "HIS1"\nsource = "HOSP1"\n',
        {"VNA_HL7_PORT": "2600"},
    ).hl7
    assert hl7.enabled and hl7.host == "0.0.0.0" and hl7.port == 2600
    his1 = hl7.sender("HIS1")
    assert his1 is not None and his1.source == "HOSP1"
    assert hl7.sender("OTHER") is None


def test_an_environment_variable_alone_turns_it_on_and_enabled_false_off(tmp_path: Path) -> None:
    assert settings_from(tmp_path, "", {"VNA_HL7_PORT": "2601"}).hl7.enabled
    assert not settings_from(tmp_path, "[hl7]\nenabled = false\n").hl7.enabled


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            '[hl7]\n[[hl7.senders]]\nsending_facility = "HIS1"\nsource = "NOPE"\n',
            "hl7.senders[0].source",
        ),
        ('[hl7]\n[[hl7.senders]]\nsource = "HOSP1"\n', "hl7.senders[0].sending_facility"),
        (
            '[hl7]\n[[hl7.senders]]\nsending_facility = "A"\nsource = "HOSP1"\n'
            '[[hl7.senders]]\nsending_facility = "A"\nsource = "HOSP1"\n',
            "hl7.senders[1].sending_facility",
        ),
        ("[hl7]\nport = 70000\n", "hl7.port"),
        ("[hl7]\nmax_message_bytes = 0\n", "hl7.max_message_bytes"),
        ('[hl7]\ntls_cert = "/x.pem"\n', "hl7.tls_cert"),
        ("[hl7]\ncolour = 1\n", "hl7.colour"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        settings_from(tmp_path, text)


def test_environment_keys_list_the_scalars_only() -> None:
    keys = environment_keys()
    assert {"VNA_HL7_HOST", "VNA_HL7_PORT", "VNA_HL7_TLS_CA"} <= set(keys)
    assert "VNA_HL7_SENDERS" not in keys
