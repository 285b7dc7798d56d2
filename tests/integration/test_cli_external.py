"""The command line on an external PostgreSQL (database_url set): an archive set up on purpose,
which the commands use without the embedded-catalogue refusal, and which ``vna init``
prepares without claiming to have created it."""

from __future__ import annotations

from pathlib import Path

import pytest

from vna.cli import main
from vna.config import Settings


@pytest.fixture
def env(archive_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("VNA_CONFIG", "VNA_CONFIG_TOML"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VNA_DATABASE_URL", archive_settings.database_url)
    monkeypatch.setenv("VNA_DATA_DIR", str(archive_settings.data_dir))
    return archive_settings


def test_init_on_an_external_database(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"archive ready in {Path(env.data_dir).resolve()}: catalogue the")
    assert "schema up to date" in out
    assert env.database_url not in out  # the URL may carry a password


def test_commands_use_an_external_database_without_a_data_directory(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not Path(env.data_dir).exists()
    assert main(["patients", "list", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
