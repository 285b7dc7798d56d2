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


# --- vna config check / env ----------------------------------------------------------------------

FULL_CONFIG = """
database_url = "postgresql://vna:s3cret-pw@db/vna"
storage_url = "s3://vna-archive?region=eu-west-1"
[compression]
level = 7
[[sources]]
name = "HOSP1"
ae_titles = ["HOSP1PACS"]
issuer_of_patient_id = "HOSP1"
token_sha256 = "7f0c5a1c4d0b2a3e9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a49382"
[[sources.coerce]]
action = "prefix"
attribute = "AccessionNumber"
value = "H1-"
[[destinations]]
name = "viewer"
ae_title = "VIEWER"
host = "10.2.0.9"
port = 104
[[replicas]]
name = "dr"
storage_url = "s3://vna-dr?region=eu-central-1"
[[retention_rules]]
name = "adult-ct"
modalities = ["CT"]
retain_years = 10
[[tiering_rules]]
tier = "cold"
min_days_since_access = 365
"""


def test_config_check_prints_every_setting_with_secrets_masked(tmp_path: Path) -> None:
    (tmp_path / "vna.toml").write_text(FULL_CONFIG, encoding="utf-8")
    result = run_vna("config", "check", "--config", "vna.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "s3cret-pw" not in out
    assert "postgresql://vna:***@db/vna" in out
    assert "7f0c5a1c" not in out  # the token's digest identifies it
    assert 'token_sha256 = "***"' in out
    for shown in (
        "[compression]\nlevel = 7",
        '[[sources.coerce]]\naction = "prefix"\nattribute = "AccessionNumber"\nvalue = "H1-"',
        '[[destinations]]\nname = "viewer"\nae_title = "VIEWER"\nhost = "10.2.0.9"\nport = 104',
        '[[replicas]]\nname = "dr"\nstorage_url = "s3://vna-dr?region=eu-central-1"',
        '[[retention_rules]]\nname = "adult-ct"\nmodalities = ["CT"]',
        '[[tiering_rules]]\ntier = "cold"',
        "min_days_since_access = 365",
        "[lifecycle]\nworkers = 4",
    ):
        assert shown in out


def test_config_check_marks_values_from_the_environment(tmp_path: Path) -> None:
    result = run_vna("config", "check", cwd=tmp_path, env={"VNA_HTTP_PORT": "9999"})
    assert result.returncode == 0, result.stderr
    assert "port = 9999  # VNA_HTTP_PORT" in result.stdout


def test_config_check_json(tmp_path: Path) -> None:
    import json

    (tmp_path / "vna.toml").write_text(FULL_CONFIG, encoding="utf-8")
    for fmt in (("--format", "json"), ("--json",)):
        result = run_vna("config", "check", "--config", "vna.toml", *fmt, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["database_url"] == "postgresql://vna:***@db/vna"
        assert data["sources"][0]["token_sha256"] == "***"
        assert data["replicas"][0]["name"] == "dr"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"VNA_STORAGE_URL": "file://relative/objects"},
            "'storage_url' 'file://relative/objects': a file:// URL takes an absolute local path",
        ),
        (
            {"VNA_STORAGE_URL": "s3://?region=eu-west-1"},
            "'storage_url' 's3://?region=eu-west-1': no bucket named",
        ),
        (
            {"VNA_STORAGE_URL": "s3://b?warm_class=COLDEST"},
            "'storage_url' 's3://b?warm_class=COLDEST': warm_class must be one of",
        ),
        (
            {"VNA_HTTP_PORT": "11112"},
            "'dimse.port' 11112 is also 'http.port'",
        ),
        (
            {"VNA_HTTP_TLS_CERT": "/nonexistent/cert.pem", "VNA_HTTP_TLS_KEY": "/etc/hostname"},
            "'http.tls_cert': no such file: /nonexistent/cert.pem",
        ),
        (
            {"VNA_DATA_DIR": "/etc/hostname"},
            "'data_dir': /etc/hostname is not a directory",
        ),
    ],
)
@pytest.mark.parametrize("command", [("config", "check"), ("serve",)])
def test_what_serve_refuses_config_check_refuses_once(
    tmp_path: Path, env: dict[str, str], expected: str, command: tuple[str, ...]
) -> None:
    result = run_vna(*command, cwd=tmp_path, env={"VNA_DIMSE_HOST": "127.0.0.1", **env})
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()  # once: not again by each worker
    assert line.startswith("vna: configuration error: ")
    assert expected in line
    assert not (tmp_path / "vna-data").exists()  # refused before anything started


def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    result = run_vna("config", "check", cwd=tmp_path, env={"VNA_DATA_DIR": str(blocked / "d")})
    assert result.returncode == 2
    assert f"'data_dir': cannot create {blocked / 'd'}" in result.stderr


def test_config_env_gives_each_variable_a_default_and_a_meaning(tmp_path: Path) -> None:
    result = run_vna("config", "env", cwd=tmp_path)
    assert result.returncode == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert rows["VNA_HTTP_PORT"].split()[1] == "8080"
    assert "TCP port of DICOMweb" in rows["VNA_HTTP_PORT"]
    assert rows["VNA_DIMSE_AE_TITLE"].split()[1] == "VNA"
    assert rows["VNA_DATABASE_URL"].split()[1] == "-"  # no default: embedded PostgreSQL
    assert "embedded PostgreSQL" in rows["VNA_DATABASE_URL"]
    assert all(len(line.split()) >= 3 for line in rows.values())  # none without a meaning


def test_misspelt_variable_is_an_error_in_config_check(tmp_path: Path) -> None:
    result = run_vna("config", "check", cwd=tmp_path, env={"VNA_HTTP_PROT": "9000"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "vna: configuration error: unknown environment variable(s): VNA_HTTP_PROT"
        " (did you mean VNA_HTTP_PORT?)"
    ]


def test_misspelt_variable_is_a_warning_elsewhere(tmp_path: Path) -> None:
    result = run_vna("config", "env", cwd=tmp_path, env={"VNA_HTTP_PROT": "9000"})
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "vna: WARNING: unknown environment variable VNA_HTTP_PROT"
        " (did you mean VNA_HTTP_PORT?): ignored"
    ]
