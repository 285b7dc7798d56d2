"""The command line as a user meets it: options before or after the subcommand, no archive
created by accident, one line per error.  The real ``vna`` in a subprocess, in an empty
directory, with no ``VNA_*`` variables from the test environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

VNA = Path(sys.executable).with_name("vna")


def run_vna(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VNA), *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


CONFIG = '[http]\nport = 9191\n[dimse]\nport = 11119\nae_title = "ARCHIVE"\n'


@pytest.mark.parametrize(
    "args",
    [
        ("--config", "vna.toml", "config", "check"),
        ("config", "--config", "vna.toml", "check"),
        ("config", "check", "--config", "vna.toml"),
    ],
)
def test_config_option_before_or_after_the_subcommand(tmp_path: Path, args: tuple[str]) -> None:
    (tmp_path / "vna.toml").write_text(CONFIG, encoding="utf-8")
    result = run_vna(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "9191" in result.stdout
    assert "ARCHIVE on port 11119" in result.stdout


def test_config_after_serve_is_read(tmp_path: Path) -> None:
    # `vna serve --config FILE` used to be refused by argparse; now the file is read (and a
    # missing one named), before anything starts.
    result = run_vna("serve", "--config", "absent.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "vna: configuration error: configuration file not found: absent.toml"
    ]


def test_verbose_after_the_subcommand_is_accepted(tmp_path: Path) -> None:
    result = run_vna("config", "env", "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("patients", "list"),
        ("tokens", "create", "x", "--role", "admin"),
        ("audit",),
        ("lifecycle", "status"),
        ("retention", "review"),
        ("dr", "status"),
        ("verify",),
    ],
)
def test_commands_refuse_to_create_an_archive(tmp_path: Path, args: tuple[str]) -> None:
    result = run_vna(*args, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert str(tmp_path / "vna-data") in line
    for hint in ("--config", "VNA_CONFIG", "VNA_DATA_DIR", "vna init"):
        assert hint in line
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing created: no vna-data, no database


def test_import_refuses_to_create_an_archive(tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    result = run_vna("import", "scans", cwd=tmp_path)
    assert result.returncode == 2
    assert "no archive at" in result.stderr
    assert not (tmp_path / "vna-data").exists()


def test_the_refusal_names_the_data_directory_of_the_environment(tmp_path: Path) -> None:
    result = run_vna(
        "patients", "list", cwd=tmp_path, env={"VNA_DATA_DIR": str(tmp_path / "archive")}
    )
    assert result.returncode == 2
    assert f"no archive at {tmp_path / 'archive'}" in result.stderr
    assert not (tmp_path / "archive").exists()
