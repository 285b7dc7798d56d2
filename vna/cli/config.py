"""``vna config check`` and ``vna config env``, and the checks ``vna serve`` makes before it
starts anything (so that a mistake is reported once, by the command, not by every worker).

``check`` validates everything ``serve`` validates: the settings (``vna.config``: keys, types,
ranges, store URLs, ports), then what needs the file system: the data directory and
filesystem stores can be created or written, TLS files are readable PEM.  Connecting to the
database or the bucket is left to ``serve`` and ``/readyz``: a check run on a build machine
must not need them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vna.config import (
    ENV_PREFIX,
    Settings,
    environment_variables,
    unknown_environment,
)
from vna.errors import ConfigError

#: Keys whose values are secrets, or as good as (a token's digest identifies it).
_SECRET_KEYS = frozenset({"token_sha256", "admin_token_sha256"})
_URL_PASSWORD = re.compile(r"(?P<user>//[^/:@]*):[^/@]*@")


def preflight(settings: Settings) -> None:
    """What ``serve`` would refuse at start-up, beyond the settings themselves: ConfigError
    naming the key."""
    from vna.security.tls import dimse_context, http_context
    from vna.storage.factory import parse_store_url

    _check_directory("data_dir", settings.data_dir)
    stores = [("storage_url", settings.effective_storage_url)] + [
        (f"replicas[{i}].storage_url", r.storage_url) for i, r in enumerate(settings.replicas)
    ]
    for key, url in stores:
        spec = parse_store_url(url, f"'{key}'")
        if spec.root is not None:
            _check_directory(key, spec.root)
            for tier, root in spec.tier_roots.items():
                _check_directory(f"{key} {tier}_root", root)
    http_context(settings)  # TLS files readable and a matching PEM chain and key
    if settings.dimse.enabled:
        dimse_context(settings)


def _check_directory(key: str, path: Path) -> None:
    """``path`` is a writable directory, or can be created."""
    path = path.expanduser().absolute()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"'{key}': {path} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"'{key}': {path} is not writable")
        return
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"'{key}': cannot create {path}: {parent} is not a writable directory")


def check(settings: Settings, fmt: str) -> int:
    # An error here, not the warning of the other commands: `config check` is the gate before
    # a deployment, and a misspelt variable is a setting the administrator believes applied.
    unknown = unknown_environment()
    if unknown:
        raise ConfigError(f"unknown environment variable(s): {', '.join(unknown)}")
    preflight(settings)
    if fmt == "json":
        print(json.dumps(_masked(dataclasses.asdict(settings)), indent=2, default=str))
        return 0
    database = (
        f"embedded under {settings.data_dir.resolve() / 'pg'}"
        if settings.embedded_database
        else mask_url(settings.database_url)
    )
    names = ", ".join(s.name for s in settings.sources)
    print(f"data_dir      {settings.data_dir.resolve()}")
    print(f"database      {database}")
    print(f"storage_url   {mask_url(settings.effective_storage_url)}")
    print(f"http          {settings.http.host}:{settings.http.port}")
    print(f"dimse         {settings.dimse.ae_title} on port {settings.dimse.port}")
    print(f"sources       {names or '(none: any sender accepted as DEFAULT)'}")
    print()
    print(f"# every effective setting; secrets masked; '# {ENV_PREFIX}...': from the environment")
    for line in _toml_lines(settings):
        print(line)
    return 0


def env() -> int:
    variables = environment_variables()
    name_width = max(len(v.name) for v in variables)
    default_width = min(24, max(len(v.default or "-") for v in variables))
    print(f"{'variable':<{name_width}}  {'default':<{default_width}}  meaning")
    for v in variables:
        print(f"{v.name:<{name_width}}  {v.default or '-':<{default_width}}  {v.meaning}")
    return 0


def mask_url(url: str) -> str:
    """A URL with its password replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<user>:***@", url)


def _masked(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v, key) for v in value]
    if key in _SECRET_KEYS and value:
        return "***"
    if isinstance(value, str) and urlparse(value).scheme:
        return mask_url(value)
    return value


def _toml_lines(settings: Settings) -> Iterator[str]:
    """The settings as TOML (what a configuration file holding them would say)."""
    yield from _table_lines(settings, "", env_prefix=ENV_PREFIX)
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            yield f"[{f.name}]"
            yield from _table_lines(value, f.name, env_prefix=f"{ENV_PREFIX}{f.name}_")
        elif _is_table_array(settings, f.name):
            yield from _array_lines(f.name, value)
            if not value:
                yield f"# no [[{f.name}]]"


def _array_lines(name: str, items: tuple[Any, ...]) -> Iterator[str]:
    for item in items:
        yield f"[[{name}]]"
        yield from _table_lines(item, name, env_prefix=None)
        for f in dataclasses.fields(item):
            value = getattr(item, f.name)
            if _is_table_array(item, f.name):
                yield from _array_lines(f"{name}.{f.name}", value)


def _table_lines(obj: Any, section: str, env_prefix: str | None) -> Iterator[str]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) or _is_table_array(obj, f.name):
            continue
        if value is None:
            line = f"# {f.name}: not set"
        else:
            shown = "***" if f.name in _SECRET_KEYS and value else value
            line = f"{f.name} = {_toml_value(shown, f.name == 'data_dir')}"
        if env_prefix is not None and f"{env_prefix}{f.name}".upper() in os.environ:
            line += f"  # {env_prefix}{f.name}".upper()
        yield line


def _is_table_array(obj: Any, name: str) -> bool:
    """Whether field ``name`` of ``obj`` is an array of tables (``tuple[Dataclass, ...]``),
    told by its declared type so that an empty one is told too."""
    hint = typing.get_type_hints(type(obj))[name]
    args = typing.get_args(hint)
    return typing.get_origin(hint) is tuple and bool(args) and dataclasses.is_dataclass(args[0])


def _toml_value(value: Any, resolve: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Path):
        return json.dumps(str(value.resolve() if resolve else value))
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return "{" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value) + "}"
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(mask_url(str(value)) if urlparse(str(value)).scheme else str(value))
