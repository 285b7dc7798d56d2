"""``[[forward]]`` rules and ``[changefeed]`` in the configuration, as the README writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from vna.config import ForwardRuleSettings, load_settings
from vna.errors import ConfigError

PACS2 = '[[destinations]]\nname = "pacs2"\nae_title = "PACS2"\nhost = "10.2.0.9"\nport = 104\n'
RULE = """
[[forward]]
name = "hosp1-ct-to-pacs2"
destination = "pacs2"
sources = ["HOSP1"]
modalities = ["CT"]
study_description = "*THORAX*"
delay_seconds = 300
"""


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    path = tmp_path / "vna.toml"
    path.write_text(text)
    return load_settings(path, environ=environ or {})


def test_a_rule_is_read(tmp_path: Path) -> None:
    s = load(tmp_path, PACS2 + RULE)
    assert s.forward == (
        ForwardRuleSettings(
            name="hosp1-ct-to-pacs2",
            destination="pacs2",
            sources=("HOSP1",),
            modalities=("CT",),
            study_description="*THORAX*",
            delay_seconds=300,
        ),
    )


def test_a_rule_needs_a_declared_destination(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"forward\[0\]\.destination.*'pacs2'"):
        load(tmp_path, RULE)


def test_rule_names_are_unique(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="declared twice"):
        load(tmp_path, PACS2 + RULE + RULE)


def test_change_feed_retention_from_file_and_environment(tmp_path: Path) -> None:
    assert load(tmp_path, "").changefeed.keep_days == 90
    assert load(tmp_path, "[changefeed]\nkeep_days = 30\n").changefeed.keep_days == 30
    s = load(tmp_path, "", {"VNA_CHANGEFEED_KEEP_DAYS": "7"})
    assert s.changefeed.keep_days == 7
    with pytest.raises(ConfigError, match=r"changefeed\.keep_days"):
        load(tmp_path, "[changefeed]\nkeep_days = 0\n")


def test_a_rule_sends_to_a_destination_or_a_stow_rs_url(tmp_path: Path) -> None:
    stow = '[[forward]]\nname = "r"\nstow_url = "https://pacs2/dicom-web/studies"\n'
    s = load(tmp_path, stow + 'stow_token = "secret"\n')
    assert s.forward[0].target == "https://pacs2/dicom-web/studies"
    with pytest.raises(ConfigError, match="one of 'destination' and 'stow_url'"):
        load(tmp_path, PACS2 + stow + 'destination = "pacs2"\n')
    with pytest.raises(ConfigError, match="one of 'destination' and 'stow_url'"):
        load(tmp_path, '[[forward]]\nname = "r"\n')
    with pytest.raises(ConfigError, match="http:// or https://"):
        load(tmp_path, '[[forward]]\nname = "r"\nstow_url = "ftp://x"\n')


def test_notifications_are_read_and_checked(tmp_path: Path) -> None:
    sub = '[[notifications]]\nname = "ai"\nsecret = "k"\nmodalities = ["CT"]\n'
    s = load(tmp_path, sub + 'url = "https://ai.example/events"\n')
    assert s.notifications[0].url == "https://ai.example/events"
    assert "study-stable" in s.notifications[0].events
    assert load(tmp_path, sub + 'url = "http://127.0.0.1:9000/e"\n').notifications
    with pytest.raises(ConfigError, match="https://"):
        load(tmp_path, sub + 'url = "http://ai.example/events"\n')
    with pytest.raises(ConfigError, match="events"):
        load(tmp_path, sub + 'url = "https://ai.example/e"\nevents = ["created"]\n')


def test_ca_files_must_exist(tmp_path: Path) -> None:
    """``[[notifications]] ca_file`` and ``[[forward]] stow_ca_file`` name PEM files that must
    be there; a missing one is a one-line error naming the key."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    sub = '[[notifications]]\nname = "ai"\nurl = "https://ai.example/e"\n'
    assert load(tmp_path, sub + f'ca_file = "{ca}"\n').notifications[0].ca_file == ca
    with pytest.raises(ConfigError, match=r"notifications\[0\]\.ca_file.*no such file"):
        load(tmp_path, sub + f'ca_file = "{tmp_path / "missing.pem"}"\n')
    stow = '[[forward]]\nname = "r"\nstow_url = "https://pacs2/dicom-web/studies"\n'
    assert load(tmp_path, stow + f'stow_ca_file = "{ca}"\n').forward[0].stow_ca_file == ca
    with pytest.raises(ConfigError, match=r"forward\[0\]\.stow_ca_file.*no such file"):
        load(tmp_path, stow + f'stow_ca_file = "{tmp_path / "missing.pem"}"\n')


def test_the_scheduler_interval(tmp_path: Path) -> None:
    assert load(tmp_path, "").lifecycle.tick_seconds == 30
    assert load(tmp_path, "[lifecycle]\ntick_seconds = 5\n").lifecycle.tick_seconds == 5
    with pytest.raises(ConfigError, match=r"lifecycle\.tick_seconds"):
        load(tmp_path, "[lifecycle]\ntick_seconds = 0\n")
