"""What an OpenID Connect user may do in the console: the ``[[oidc.groups]]`` their ID token's
roles claim matches, turned into the terms of an API token (role, readable sources), so that
every page applies to them exactly the rules it applies to a token (vna.security.tokens).

Pure: claims and settings in, a grant (or None: no console role) out.  Conservative by
construction: an unmatched value grants nothing, and only an explicit admin group makes an
admin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vna.config import OidcGroupSettings


@dataclass(frozen=True)
class Grant:
    #: ``reader`` or ``admin``.
    role: str
    #: The sources a reader may read; None: every source.
    read_sources: tuple[str, ...] | None
    #: The configured group values that matched, for the audit row.
    groups: tuple[str, ...]


def claim_values(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The string values of ``claim``, a dotted path for nested claims (Keycloak's
    ``realm_access.roles``); a single string counts as one value, anything else as none."""
    value: Any = claims
    for part in claim.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return ()
        value = value[part]
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def grant_for(values: Sequence[str], groups: Sequence[OidcGroupSettings]) -> Grant | None:
    """The role and sources the matching groups give: admin if any admin group matches; else
    a reader of the union of the matching reader groups' sources (every source if one of them
    names none); None when no group matches."""
    held = set(values)
    matched = [g for g in groups if g.value in held]
    if not matched:
        return None
    names = tuple(g.value for g in matched)
    if any(g.role == "admin" for g in matched):
        return Grant("admin", None, names)
    if any(g.read_sources is None for g in matched):
        return Grant("reader", None, names)
    sources: dict[str, None] = {}
    for g in matched:
        sources.update(dict.fromkeys(g.read_sources or ()))
    return Grant("reader", tuple(sources), names)


def display_name(claims: Mapping[str, Any], name_claim: str) -> str:
    """The name the console shows: the configured claim when it is a non-empty string, else
    the subject."""
    name = claims.get(name_claim)
    return name if isinstance(name, str) and name.strip() else str(claims.get("sub", ""))
