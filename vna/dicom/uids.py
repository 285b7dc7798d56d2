"""UID syntax (PS3.5 9.1): checked before a UID reaches a key, a path or SQL."""

from __future__ import annotations

import re

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# Some real-world UIDs carry leading zeros in components (a PS3.5 violation PACS do send);
# accept digits and dots, which is all that matters for safety, but refuse anything else.
_UID_LENIENT = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_valid_uid(value: str, strict: bool = False) -> bool:
    if not value or len(value) > 64:
        return False
    return bool((_UID if strict else _UID_LENIENT).match(value))
