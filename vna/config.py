"""The one place that reads configuration: a TOML file plus ``VNA_*`` environment overrides.

Every scalar key can be overridden from the environment.  Top-level keys map to
``VNA_<KEY>`` (``data_dir`` -> ``VNA_DATA_DIR``); keys in a section map to
``VNA_<SECTION>_<KEY>`` (``[http] port`` -> ``VNA_HTTP_PORT``).  Sources and C-MOVE
destinations are lists of tables and come from the file only (or from ``VNA_CONFIG_TOML``, the
whole document in one variable, for container platforms that cannot mount a file).

The result is a tree of frozen dataclasses; nothing else in the archive reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vna.errors import ConfigError

ENV_PREFIX = "VNA_"
CONFLICT_POLICIES = ("reject", "replace", "keep-both")
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, 16 chars


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    #: Bytes; a larger STOW-RS request body is refused with 413.
    max_request_bytes: int = 64 * 1024**3
    #: Parts in one multipart request.
    max_parts: int = 100_000


@dataclass(frozen=True)
class DimseSettings:
    host: str = "0.0.0.0"
    port: int = 11112
    ae_title: str = "VNA"
    max_associations: int = 32
    #: Seconds of silence before an association is aborted.
    network_timeout: int = 60
    #: Start the DIMSE listener with ``vna serve``; 0 disables it.
    enabled: bool = True


@dataclass(frozen=True)
class IngestSettings:
    #: Bytes; a larger single instance is refused.
    max_instance_bytes: int = 8 * 1024**3
    #: Instances ingested concurrently per server process.
    concurrency: int = 16


@dataclass(frozen=True)
class QuerySettings:
    #: Upper bound on results of one QIDO-RS / C-FIND query.
    max_results: int = 10_000
    default_limit: int = 1_000


@dataclass(frozen=True)
class SourceSettings:
    """One hospital PACS or modality group sending to the archive."""

    name: str
    ae_titles: tuple[str, ...] = ()
    issuer_of_patient_id: str = ""
    #: Keep an IssuerOfPatientID the instance already carries instead of assigning ours.
    trust_issuer: bool = False
    host: str | None = None
    port: int | None = None
    on_conflict: str = "reject"
    #: SHA-256 hex digest of the bearer token that identifies this source on STOW-RS.
    token_sha256: str | None = None


DEFAULT_SOURCE = SourceSettings(name="DEFAULT")


@dataclass(frozen=True)
class DestinationSettings:
    """A C-MOVE destination that is not a source (a viewer, a research node, another archive).

    A source with ``host`` and ``port`` is a C-MOVE destination too, under each of its AE titles.
    """

    name: str
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("vna-data")
    #: Empty: embedded PostgreSQL under ``data_dir/pg``.
    database_url: str = ""
    #: Empty: ``file://<data_dir>/objects``.
    storage_url: str = ""
    log_level: str = "INFO"
    http: HttpSettings = field(default_factory=HttpSettings)
    dimse: DimseSettings = field(default_factory=DimseSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    query: QuerySettings = field(default_factory=QuerySettings)
    sources: tuple[SourceSettings, ...] = ()
    destinations: tuple[DestinationSettings, ...] = ()

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or (self.data_dir.resolve() / "objects").as_uri()

    @property
    def embedded_database(self) -> bool:
        return not self.database_url

    @property
    def incoming_dir(self) -> Path:
        """Scratch space for uploads being received; on the data volume so a rename is cheap."""
        return self.data_dir / "incoming"

    def source_named(self, name: str) -> SourceSettings | None:
        return next((s for s in self.sources if s.name == name), None)

    def source_for_ae(self, ae_title: str) -> SourceSettings | None:
        """The declared source for a calling AE title; the default source when none declared."""
        if not self.sources:
            return DEFAULT_SOURCE
        return next((s for s in self.sources if ae_title in s.ae_titles), None)

    def move_destination(self, ae_title: str) -> tuple[str, int] | None:
        """Host and port of a C-MOVE destination AE title (PS3.4 C.4.2.2.1: the SCP knows the
        destinations by AE title); None when it is not declared."""
        for src in self.sources:
            if ae_title in src.ae_titles and src.host is not None and src.port is not None:
                return src.host, src.port
        for dest in self.destinations:
            if dest.ae_title == ae_title:
                return dest.host, dest.port
        return None


# --- reading -----------------------------------------------------------------------------------

_SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if dataclasses.is_dataclass(typing.get_type_hints(Settings)[f.name])
}


def environment_keys() -> list[str]:
    """Every environment variable the archive reads, for documentation and deployment checks."""
    keys = ["VNA_CONFIG", "VNA_CONFIG_TOML"]
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        if f.name in _SECTIONS:
            for sub in dataclasses.fields(_SECTIONS[f.name]):
                keys.append(f"{ENV_PREFIX}{f.name}_{sub.name}".upper())
        elif _is_scalar(hints[f.name]):
            keys.append(f"{ENV_PREFIX}{f.name}".upper())
    return keys


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the configuration file (if any) and apply environment overrides.

    Raises ConfigError with one line naming the key for anything invalid.
    """
    env = os.environ if environ is None else environ
    document: dict[str, Any] = {}
    if path is None and env.get("VNA_CONFIG"):
        path = env["VNA_CONFIG"]
    if path is not None:
        document = _read_toml_file(Path(path))
    elif env.get("VNA_CONFIG_TOML"):
        document = _parse_toml(env["VNA_CONFIG_TOML"], "VNA_CONFIG_TOML")
    return _build(document, env)


def _read_toml_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        # TOML is UTF-8 text; a binary file (an image, an archive) passed by mistake.
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from exc
    return _parse_toml(text, str(path))


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc


def _build(document: dict[str, Any], env: Mapping[str, str]) -> Settings:
    hints = typing.get_type_hints(Settings)
    known = {f.name for f in dataclasses.fields(Settings)}
    for key in document:
        if key not in known:
            raise ConfigError(f"unknown configuration key '{key}'")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name in _SECTIONS:
            table = document.get(f.name, {})
            if not isinstance(table, dict):
                raise ConfigError(f"'{f.name}' must be a table ([{f.name}])")
            values[f.name] = _build_section(f.name, _SECTIONS[f.name], table, env)
        elif f.name == "sources":
            values[f.name] = _build_tables("sources", SourceSettings, document.get("sources", []))
        elif f.name == "destinations":
            values[f.name] = _build_tables(
                "destinations", DestinationSettings, document.get("destinations", [])
            )
        else:
            env_name = f"{ENV_PREFIX}{f.name}".upper()
            if env_name in env:
                values[f.name] = _coerce(env[env_name], hints[f.name], env_name, from_env=True)
            elif f.name in document:
                values[f.name] = _coerce(document[f.name], hints[f.name], f.name, from_env=False)
    settings = Settings(**values)
    _validate(settings)
    return settings


def _build_section(name: str, cls: type, table: dict[str, Any], env: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown configuration key '{name}.{key}'")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env_name = f"{ENV_PREFIX}{name}_{f.name}".upper()
        if env_name in env:
            values[f.name] = _coerce(env[env_name], hints[f.name], env_name, from_env=True)
        elif f.name in table:
            values[f.name] = _coerce(table[f.name], hints[f.name], f"{name}.{f.name}", False)
    return cls(**values)


def _build_tables(name: str, cls: type, raw: Any) -> tuple[Any, ...]:
    """An array of tables (``[[sources]]``, ``[[destinations]]``) as a tuple of ``cls``."""
    if not isinstance(raw, list):
        raise ConfigError(f"'{name}' must be an array of tables ([[{name}]])")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    items = []
    for i, table in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"'{where}' must be a table")
        for key in table:
            if key not in known:
                raise ConfigError(f"unknown configuration key '{where}.{key}'")
        for key in required:
            if key not in table:
                raise ConfigError(f"'{where}.{key}' is required")
        values = {
            key: _coerce(value, hints[key], f"{where}.{key}", from_env=False)
            for key, value in table.items()
        }
        items.append(cls(**values))
    return tuple(items)


def _is_scalar(tp: Any) -> bool:
    return not dataclasses.is_dataclass(tp) and typing.get_origin(tp) is not tuple


def _coerce(value: Any, tp: Any, key: str, from_env: bool) -> Any:
    """Convert a TOML or environment value to the declared type, or name the key in an error."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (from_env and value == ""):
            return None
        return _coerce(value, args[0], key, from_env)
    if origin is tuple:
        (item_type, _) = typing.get_args(tp)
        if from_env:
            items: list[Any] = [v.strip() for v in str(value).split(",") if v.strip()]
        elif isinstance(value, list):
            items = value
        else:
            raise ConfigError(f"'{key}' must be a list")
        return tuple(_coerce(v, item_type, key, from_env) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_env and str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if from_env and str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"'{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if from_env:
            try:
                return int(str(value).strip())
            except ValueError:
                pass
        raise ConfigError(f"'{key}' must be an integer, got {value!r}")
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"'{key}' must be a non-empty path")
        return Path(value).expanduser()
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"'{key}': unsupported type {tp}")  # a programming error, said plainly


def _validate(s: Settings) -> None:
    for key, port in (("http.port", s.http.port), ("dimse.port", s.dimse.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"'{key}' must be between 0 and 65535, got {port}")
    if not _AE_TITLE.match(s.dimse.ae_title) or not s.dimse.ae_title.strip():
        raise ConfigError(f"'dimse.ae_title' is not a valid AE title: {s.dimse.ae_title!r}")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"'log_level' must be DEBUG, INFO, WARNING or ERROR, got {s.log_level!r}")
    if s.database_url and not s.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("'database_url' must be a postgresql:// URL")
    if s.storage_url and not s.storage_url.startswith(("file://", "s3://")):
        raise ConfigError("'storage_url' must start with file:// or s3://")
    for key, n in (
        ("ingest.max_instance_bytes", s.ingest.max_instance_bytes),
        ("ingest.concurrency", s.ingest.concurrency),
        ("http.max_request_bytes", s.http.max_request_bytes),
        ("http.max_parts", s.http.max_parts),
        ("query.max_results", s.query.max_results),
        ("query.default_limit", s.query.default_limit),
        ("dimse.max_associations", s.dimse.max_associations),
    ):
        if n <= 0:
            raise ConfigError(f"'{key}' must be positive, got {n}")
    names: set[str] = set()
    ae_owner: dict[str, str] = {}
    for i, src in enumerate(s.sources):
        where = f"sources[{i}]"
        if not src.name or not re.match(r"^[A-Za-z0-9_.-]{1,64}$", src.name):
            raise ConfigError(f"'{where}.name' must be 1-64 letters, digits, '_', '.' or '-'")
        if src.name in names:
            raise ConfigError(f"'{where}.name': source {src.name!r} is declared twice")
        names.add(src.name)
        if src.on_conflict not in CONFLICT_POLICIES:
            raise ConfigError(
                f"'{where}.on_conflict' must be one of {', '.join(CONFLICT_POLICIES)},"
                f" got {src.on_conflict!r}"
            )
        for ae in src.ae_titles:
            if not _AE_TITLE.match(ae):
                raise ConfigError(f"'{where}.ae_titles': not a valid AE title: {ae!r}")
            if ae in ae_owner:
                raise ConfigError(
                    f"'{where}.ae_titles': {ae!r} already belongs to source {ae_owner[ae]!r}"
                )
            ae_owner[ae] = src.name
        if (src.host is None) != (src.port is None):
            raise ConfigError(f"'{where}': host and port go together (a C-MOVE destination)")
        if src.port is not None and not 0 < src.port <= 65535:
            raise ConfigError(f"'{where}.port' must be between 1 and 65535, got {src.port}")
        if src.token_sha256 is not None and not re.match(r"^[0-9a-f]{64}$", src.token_sha256):
            raise ConfigError(f"'{where}.token_sha256' must be 64 lowercase hex digits")
    _validate_destinations(s)


def _validate_destinations(s: Settings) -> None:
    """C-MOVE destinations: each AE title leads to one host and port (PS3.4 C.4.2.2.1)."""
    # AE titles already reachable as a source (a source with host and port).
    reachable = {
        ae: f"source {src.name!r}"
        for src in s.sources
        if src.host is not None
        for ae in src.ae_titles
    }
    names: set[str] = set()
    for i, dest in enumerate(s.destinations):
        where = f"destinations[{i}]"
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", dest.name):
            raise ConfigError(f"'{where}.name' must be 1-64 letters, digits, '_', '.' or '-'")
        if dest.name in names:
            raise ConfigError(f"'{where}.name': destination {dest.name!r} is declared twice")
        names.add(dest.name)
        if not _AE_TITLE.match(dest.ae_title) or not dest.ae_title.strip():
            raise ConfigError(f"'{where}.ae_title' is not a valid AE title: {dest.ae_title!r}")
        if dest.ae_title in reachable:
            raise ConfigError(
                f"'{where}.ae_title': {dest.ae_title!r} already leads to {reachable[dest.ae_title]}"
            )
        reachable[dest.ae_title] = f"destination {dest.name!r}"
        if not dest.host.strip():
            raise ConfigError(f"'{where}.host' must not be empty")
        if not 0 < dest.port <= 65535:
            raise ConfigError(f"'{where}.port' must be between 1 and 65535, got {dest.port}")
