"""Configuration: one TOML file, ``VNA_*`` environment overrides, one clear error per mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vna.config import (
    DEFAULT_SOURCE,
    ConfigError,
    Settings,
    SourceSettings,
    environment_keys,
    load_settings,
)

VNA = Path(sys.executable).with_name("vna")

ADMIN_CONFIG = """
data_dir = "/var/lib/vna"
database_url = "postgresql://vna@db/vna"
storage_url = "s3://vna-archive?region=eu-west-1"

[http]
port = 8081
[dimse]
port = 11113
ae_title = "ARCHIVE"

[[sources]]
name = "HOSP1"
ae_titles = ["HOSP1PACS", "HOSP1CT"]
issuer_of_patient_id = "HOSP1"
host = "10.1.0.5"
port = 104
on_conflict = "reject"

[[sources]]
name = "HOSP2"
ae_titles = ["HOSP2PACS"]
issuer_of_patient_id = "HOSP2"
on_conflict = "keep-both"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
"""

SOURCE = '[[sources]]\nname = "HOSP1"\nae_titles = ["HOSP1PACS"]\n'


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "vna.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ={} if environ is None else environ)


# --- defaults and values -----------------------------------------------------------------------


def test_defaults_with_no_file_and_empty_environment() -> None:
    s = load_settings(None, environ={})
    assert s.data_dir == Path("vna-data")
    assert s.embedded_database
    assert s.effective_storage_url == (Path("vna-data").resolve() / "objects").as_uri()
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert (s.dimse.port, s.dimse.ae_title, s.dimse.enabled) == (11112, "VNA", True)
    assert s.sources == ()
    assert s.incoming_dir == Path("vna-data") / "incoming"


def test_file_values_are_read(tmp_path: Path) -> None:
    s = load_text(tmp_path, ADMIN_CONFIG)
    assert s.data_dir == Path("/var/lib/vna")
    assert s.database_url == "postgresql://vna@db/vna"
    assert not s.embedded_database
    assert s.effective_storage_url == "s3://vna-archive?region=eu-west-1"
    assert s.http.port == 8081
    assert (s.dimse.port, s.dimse.ae_title) == (11113, "ARCHIVE")
    assert s.sources == (
        SourceSettings(
            name="HOSP1",
            ae_titles=("HOSP1PACS", "HOSP1CT"),
            issuer_of_patient_id="HOSP1",
            host="10.1.0.5",
            port=104,
            on_conflict="reject",
        ),
        SourceSettings(
            name="HOSP2",
            ae_titles=("HOSP2PACS",),
            issuer_of_patient_id="HOSP2",
            on_conflict="keep-both",
            token_sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
    )


def test_query_scope_defaults_to_own_and_is_read(tmp_path: Path) -> None:
    s = load_text(tmp_path, SOURCE + SOURCE.replace("HOSP1", "HOSP2") + 'query_scope = "linked"\n')
    assert [(src.name, src.query_scope) for src in s.sources] == [
        ("HOSP1", "own"),
        ("HOSP2", "linked"),
    ]


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_text(tmp_path, ADMIN_CONFIG)
    with pytest.raises(AttributeError):
        s.http.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("VNA_DATA_DIR", "/srv/vna", lambda s: s.data_dir == Path("/srv/vna")),
        (
            "VNA_DATABASE_URL",
            "postgresql://other@pg/vna",
            lambda s: s.database_url == "postgresql://other@pg/vna",
        ),
        (
            "VNA_STORAGE_URL",
            "file:///mnt/objects",
            lambda s: s.storage_url == "file:///mnt/objects",
        ),
        ("VNA_HTTP_PORT", "9090", lambda s: s.http.port == 9090),
        ("VNA_DIMSE_PORT", "4242", lambda s: s.dimse.port == 4242),
    ],
)
def test_environment_overrides_win_over_the_file(
    tmp_path: Path, variable: str, value: str, read: object
) -> None:
    s = load_text(tmp_path, ADMIN_CONFIG, {variable: value})
    assert read(s)  # type: ignore[operator]
    # Everything not overridden still comes from the file.
    assert s.sources[0].name == "HOSP1"


def test_empty_database_url_from_environment_selects_the_embedded_database(
    tmp_path: Path,
) -> None:
    s = load_text(tmp_path, ADMIN_CONFIG, {"VNA_DATABASE_URL": ""})
    assert s.embedded_database


def test_storage_url_defaults_under_the_data_dir_from_the_environment(tmp_path: Path) -> None:
    s = load_settings(None, environ={"VNA_DATA_DIR": str(tmp_path / "d")})
    assert s.effective_storage_url == (tmp_path / "d" / "objects").as_uri()


@pytest.mark.parametrize(
    ("value", "expected"), [("0", False), ("false", False), ("yes", True), ("ON", True)]
)
def test_boolean_environment_values(value: str, expected: bool) -> None:
    assert load_settings(None, environ={"VNA_DIMSE_ENABLED": value}).dimse.enabled is expected


def test_config_path_from_vna_config(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(ADMIN_CONFIG, encoding="utf-8")
    s = load_settings(None, environ={"VNA_CONFIG": str(path)})
    assert s.http.port == 8081


def test_whole_document_from_vna_config_toml() -> None:
    s = load_settings(None, environ={"VNA_CONFIG_TOML": ADMIN_CONFIG})
    assert [src.name for src in s.sources] == ["HOSP1", "HOSP2"]
    assert s.dimse.ae_title == "ARCHIVE"


def test_explicit_path_wins_over_vna_config_and_vna_config_toml(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.toml"
    chosen.write_text("[http]\nport = 1111\n", encoding="utf-8")
    other = tmp_path / "other.toml"
    other.write_text("[http]\nport = 2222\n", encoding="utf-8")
    env = {"VNA_CONFIG": str(other), "VNA_CONFIG_TOML": "[http]\nport = 3333\n"}
    assert load_settings(chosen, environ=env).http.port == 1111
    assert load_settings(None, environ=env).http.port == 2222


def test_environment_keys_lists_the_documented_variables() -> None:
    keys = environment_keys()
    for documented in (
        "VNA_CONFIG",
        "VNA_CONFIG_TOML",
        "VNA_DATA_DIR",
        "VNA_DATABASE_URL",
        "VNA_STORAGE_URL",
        "VNA_HTTP_PORT",
        "VNA_DIMSE_PORT",
        "VNA_DIMSE_AE_TITLE",
    ):
        assert documented in keys
    assert len(keys) == len(set(keys))
    assert not any(k.startswith("VNA_SOURCES") for k in keys)  # sources come from TOML only


def _valid_value_for(variable: str) -> str:
    special = {
        "VNA_DATA_DIR": "/srv/vna-env",
        "VNA_DATABASE_URL": "postgresql://env@db/vna",
        "VNA_STORAGE_URL": "file:///srv/objects-env",
        "VNA_LOG_LEVEL": "DEBUG",
        "VNA_DIMSE_AE_TITLE": "ENVAE",
        "VNA_DIMSE_ENABLED": "false",
        "VNA_HTTP_HOST": "0.0.0.0",
        "VNA_DIMSE_HOST": "127.0.0.2",
        "VNA_ADMIN_ADMIN_TOKEN_SHA256": "ab" * 32,
        "VNA_HTTP_CORS_ORIGINS": "https://viewer.example.org",
        "VNA_COMPRESSION_CODEC": "jpeg-ls",
        "VNA_UI_VIEWER_URL": "https://ohif.example/viewer?StudyInstanceUIDs={study}",
        "VNA_OIDC_ISSUER": "https://login.example/realms/hospital",
    }
    if variable in special:
        return special[variable]
    # Otherwise a value of the field's type that differs from its default.
    import dataclasses

    default = load_settings(None, environ={})
    for section in dataclasses.fields(default):
        prefix = f"VNA_{section.name.upper()}_"
        value = getattr(default, section.name)
        if variable.startswith(prefix) and dataclasses.is_dataclass(value):
            current = getattr(value, variable.removeprefix(prefix).lower())
            if isinstance(current, bool):
                return "false" if current else "true"
            if isinstance(current, int):
                return str(current + 1)
            return "/srv/vna-env-value"
    return "7"


@pytest.mark.parametrize(
    "variable", [k for k in environment_keys() if k not in ("VNA_CONFIG", "VNA_CONFIG_TOML")]
)
def test_every_listed_variable_is_actually_read(variable: str) -> None:
    """A deployment that sets a documented variable must see it take effect."""
    default = load_settings(None, environ={})
    environ = {variable: _valid_value_for(variable)}
    # Keys that are only valid together are set together.
    for group in _COMPANIONS:
        if variable in group:
            environ.update({v: _valid_value_for(v) for v in group if v not in environ})
    if variable == "VNA_DIMSE_COMMIT_REQUIRES_REPLICAS":
        # Commitment can only wait for replicas that are declared (from the document only).
        environ["VNA_CONFIG_TOML"] = (
            '[[replicas]]\nname = "dr"\nstorage_url = "file:///srv/dr-objects"\n'
        )
        default = load_settings(None, environ={"VNA_CONFIG_TOML": environ["VNA_CONFIG_TOML"]})
    if variable == "VNA_OIDC_ISSUER":
        # OIDC sign-in needs a client ID and at least one group mapping (from the document).
        environ["VNA_CONFIG_TOML"] = (
            '[oidc]\nclient_id = "vna"\n[[oidc.groups]]\nvalue = "g"\nrole = "admin"\n'
        )
        default = load_settings(None, environ={"VNA_CONFIG_TOML": environ["VNA_CONFIG_TOML"]})
    changed = load_settings(None, environ=environ)
    assert changed != default


_COMPANIONS = (
    ("VNA_HTTP_TLS_CERT", "VNA_HTTP_TLS_KEY"),
    ("VNA_DIMSE_TLS_CERT", "VNA_DIMSE_TLS_KEY", "VNA_DIMSE_TLS_CA"),
    ("VNA_HL7_TLS_CERT", "VNA_HL7_TLS_KEY", "VNA_HL7_TLS_CA"),
)


def test_source_for_ae_title(tmp_path: Path) -> None:
    s = load_text(tmp_path, ADMIN_CONFIG)
    hosp1 = s.source_for_ae("HOSP1CT")
    assert hosp1 is not None and hosp1.name == "HOSP1"
    hosp2 = s.source_for_ae("HOSP2PACS")
    assert hosp2 is not None and hosp2.issuer_of_patient_id == "HOSP2"
    assert s.source_for_ae("STRANGER") is None  # declared sources: unknown senders refused
    assert s.source_named("HOSP2") == hosp2
    assert s.source_named("NOPE") is None


def test_without_declared_sources_any_ae_title_is_the_default_source() -> None:
    s = load_settings(None, environ={})
    assert s.source_for_ae("ANYONE") == DEFAULT_SOURCE


# --- invalid configurations: ConfigError naming the key ----------------------------------------


INVALID_FILES = [
    ("unknown top-level key", 'data_dri = "/x"\n', "data_dri"),
    ("unknown compression codec", '[compression]\ncodec = "jpeg"\n', "compression.codec"),
    (
        "unknown tiering codec",
        '[[tiering_rules]]\ntier = "cold"\nmin_study_age_days = 1\ncodec = "webp"\n',
        "tiering_rules[0].codec",
    ),
    ("unknown section key", "[http]\nprot = 8080\n", "http.prot"),
    ("unknown source key", SOURCE + 'isuer = "X"\n', "sources[0].isuer"),
    ("port out of range", "[http]\nport = 70000\n", "http.port"),
    ("negative port", "[dimse]\nport = -1\n", "dimse.port"),
    ("port as text", '[dimse]\nport = "11112"\n', "dimse.port"),
    ("port as boolean", "[http]\nport = true\n", "http.port"),
    ("AE title too long", '[dimse]\nae_title = "ABCDEFGHIJKLMNOPQ"\n', "dimse.ae_title"),
    ("AE title with backslash", '[dimse]\nae_title = "A\\\\B"\n', "dimse.ae_title"),
    ("AE title blank", '[dimse]\nae_title = "   "\n', "dimse.ae_title"),
    ("source AE title invalid", SOURCE.replace("HOSP1PACS", "WAY_TOO_LONG_AE_TITLE"), "ae_titles"),
    ("duplicate source name", SOURCE + SOURCE.replace("HOSP1PACS", "OTHER"), "sources[1].name"),
    (
        "AE title claimed by two sources",
        SOURCE + SOURCE.replace('"HOSP1"', '"HOSP2"'),
        "sources[1].ae_titles",
    ),
    ("bad on_conflict", SOURCE + 'on_conflict = "overwrite"\n', "sources[0].on_conflict"),
    ("bad query_scope", SOURCE + 'query_scope = "everyone"\n', "sources[0].query_scope"),
    ("query_scope not text", SOURCE + "query_scope = true\n", "sources[0].query_scope"),
    ("host without port", SOURCE + 'host = "10.0.0.1"\n', "sources[0]"),
    ("port without host", SOURCE + "port = 104\n", "sources[0]"),
    ("source port zero", SOURCE + 'host = "h"\nport = 0\n', "sources[0].port"),
    ("short token hash", SOURCE + 'token_sha256 = "abc123"\n', "sources[0].token_sha256"),
    (
        "upper-case token hash",
        SOURCE + f'token_sha256 = "{"A" * 64}"\n',
        "sources[0].token_sha256",
    ),
    ("source without name", '[[sources]]\nae_titles = ["X"]\n', "sources[0].name"),
    ("source name with spaces", '[[sources]]\nname = "HOSP 1"\n', "sources[0].name"),
    ("ae_titles not a list", '[[sources]]\nname = "H"\nae_titles = "X"\n', "sources[0].ae_titles"),
    ("sources as a table", '[sources]\nname = "H"\n', "sources"),
    ("section as a scalar", "http = 8080\n", "http"),
    ("bad log level", 'log_level = "LOUD"\n', "log_level"),
    ("database URL not postgresql", 'database_url = "mysql://db/vna"\n', "database_url"),
    ("storage URL scheme", 'storage_url = "ftp://x/y"\n', "storage_url"),
    ("empty data_dir", 'data_dir = ""\n', "data_dir"),
    ("non-positive limit", "[query]\nmax_results = 0\n", "query.max_results"),
]


@pytest.mark.parametrize(
    ("text", "key"), [(t, k) for _, t, k in INVALID_FILES], ids=[c for c, _, _ in INVALID_FILES]
)
def test_invalid_file_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert key in message
    assert "\n" not in message


INVALID_ENVIRONMENT = [
    ("VNA_HTTP_PORT", "eighty", "VNA_HTTP_PORT"),
    ("VNA_HTTP_PORT", "65536", "http.port"),
    ("VNA_DIMSE_PORT", "", "VNA_DIMSE_PORT"),
    ("VNA_DIMSE_AE_TITLE", "THIS_AE_IS_TOO_LONG", "dimse.ae_title"),
    ("VNA_DIMSE_ENABLED", "maybe", "VNA_DIMSE_ENABLED"),
    ("VNA_DATA_DIR", "", "VNA_DATA_DIR"),
    ("VNA_DATABASE_URL", "sqlite:///vna.db", "database_url"),
    ("VNA_STORAGE_URL", "/just/a/path", "storage_url"),
]


@pytest.mark.parametrize(("variable", "value", "key"), INVALID_ENVIRONMENT)
def test_invalid_environment_value_names_the_key(variable: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={variable: value})
    assert key in str(info.value)


def test_invalid_environment_value_wins_over_a_valid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VNA_HTTP_PORT"):
        load_text(tmp_path, ADMIN_CONFIG, {"VNA_HTTP_PORT": "http"})


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_settings(missing, environ={})
    assert str(missing) in str(info.value)


def test_missing_file_named_by_vna_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(None, environ={"VNA_CONFIG": str(tmp_path / "gone.toml")})


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize(
    "text",
    [
        '{"http": {"port": 8080}}',  # JSON
        "http:\n  port: 8080\n",  # YAML
        "[http\nport = 8080\n",  # broken TOML
    ],
    ids=["json", "yaml", "broken-toml"],
)
def test_non_toml_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "vna.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value)


def test_binary_file_is_not_toml(tmp_path: Path) -> None:
    """A DICOM image passed as --config by mistake: a config error, not a decode traceback."""
    path = tmp_path / "image.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, environ={})


def test_invalid_vna_config_toml_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="VNA_CONFIG_TOML"):
        load_settings(None, environ={"VNA_CONFIG_TOML": "port = = 1"})


# --- the command line ---------------------------------------------------------------------------


def run_vna(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VNA), *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[http]\nport = 99999\n", "http.port"),
        (SOURCE + 'on_conflict = "merge"\n', "sources[0].on_conflict"),
        ("unknown_key = 1\n", "unknown_key"),
    ],
)
def test_cli_bad_config_prints_one_line_and_exits_2(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "bad.toml").write_text(text, encoding="utf-8")
    result = run_vna("--config", "bad.toml", "config", "check", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_missing_config_file(tmp_path: Path) -> None:
    result = run_vna("--config", "absent.toml", "config", "check", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "absent.toml" in result.stderr


def test_cli_binary_config_file(tmp_path: Path) -> None:
    (tmp_path / "image.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)))
    result = run_vna("--config", "image.dcm", "config", "check", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_cli_bad_environment_value(tmp_path: Path) -> None:
    result = run_vna("config", "check", cwd=tmp_path, env={"VNA_DIMSE_PORT": "x"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert "VNA_DIMSE_PORT" in result.stderr


def test_cli_config_check_prints_effective_values(tmp_path: Path) -> None:
    (tmp_path / "vna.toml").write_text(ADMIN_CONFIG, encoding="utf-8")
    result = run_vna(
        "--config", "vna.toml", "config", "check", cwd=tmp_path, env={"VNA_HTTP_PORT": "9999"}
    )
    assert result.returncode == 0, result.stderr
    assert "9999" in result.stdout
    assert "ARCHIVE on port 11113" in result.stdout
    assert "HOSP1, HOSP2" in result.stdout


def test_cli_config_env_lists_variables(tmp_path: Path) -> None:
    result = run_vna("config", "env", cwd=tmp_path)
    assert result.returncode == 0
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["variable", "default", "meaning"]
    assert [line.split()[0] for line in lines] == environment_keys()


def test_commitment_keys_validated(tmp_path: Path) -> None:
    """[dimse] commit_requires_replicas cannot ask for more replicas than are declared (a
    PACS would wait for a report that can never say committed)."""
    with pytest.raises(ConfigError, match="commit_requires_replicas"):
        load_text(tmp_path, "[dimse]\ncommit_requires_replicas = 1\n")
    with pytest.raises(ConfigError, match="commit_timeout_seconds"):
        load_text(tmp_path, "[dimse]\ncommit_timeout_seconds = 0\n")
    s = load_text(
        tmp_path,
        "[dimse]\ncommit_requires_replicas = 1\ncommit_timeout_seconds = 60\n"
        '[[replicas]]\nname = "dr"\nstorage_url = "file:///srv/dr"\n',
    )
    assert s.dimse.commit_requires_replicas == 1
    assert s.dimse.commit_timeout_seconds == 60
    assert load_settings(None, environ={}).dimse.commit_requires_replicas == 0


def test_cors_origins_none_by_default_read_from_file_and_environment(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).http.cors_origins == ()
    s = load_text(
        tmp_path,
        '[http]\ncors_origins = ["https://viewer.example.org", "http://localhost:3000"]\n',
    )
    assert s.http.cors_origins == ("https://viewer.example.org", "http://localhost:3000")
    s = load_text(
        tmp_path, "", {"VNA_HTTP_CORS_ORIGINS": "https://a.example.org, https://b.example.org:8443"}
    )
    assert s.http.cors_origins == ("https://a.example.org", "https://b.example.org:8443")
    assert load_text(tmp_path, '[http]\ncors_origins = ["*"]\n').http.cors_origins == ("*",)


@pytest.mark.parametrize(
    "origin", ["viewer.example.org", "https://viewer.example.org/", "https://v.org/ohif", "ftp://x"]
)
def test_cors_origins_must_be_origins(tmp_path: Path, origin: str) -> None:
    with pytest.raises(ConfigError, match="cors_origins"):
        load_text(tmp_path, f'[http]\ncors_origins = ["{origin}"]\n')
