"""Answer a search (QIDO-RS, C-FIND) from the catalogue as DICOM JSON (PS3.18 F.2).

The query comes parsed (:mod:`vna.dicom.qido_params`); this module turns its matching keys into a
WHERE clause of fixed fragments with bound parameters, runs the named queries of
``sql/search.sql`` and builds, per match, the attributes PS3.18 10.6.3.3 requires at the level
(Tables 10.6.3-3 to -5), the matching keys, and any ``includefield`` attributes.  Values the
catalogue indexes come from its columns; anything else from the header of a representative
instance (the first of the study or series, or the instance itself) kept in ``metadata``.

Matching, where PS3.4 C.2.2.2 leaves the choice to the implementation:

* Person names (PN) match case-insensitively, single value and wildcard alike; no fuzzy
  matching.  Other text matches case-sensitively.
* A range or single value on DA/TM/DT never matches an empty value; a value of reduced
  precision covers the whole period it names (``StudyTime=10`` is 10:00 to 10:59:59.999999).
* ModalitiesInStudy matches a study that has a series of (any of) the given modalities.
* Attributes without a column match against the instance headers: at study and series level,
  a study or series matches when any of its instances does.
* With ``includelinked=true`` (a vendor extension, :mod:`vna.dicom.qido_params`) the
  PatientID (and IssuerOfPatientID) match becomes a match of any identity linked to the
  one(s) named.
* A caller that is a source is answered within its patients (``scope``, decided by
  :mod:`vna.security.query_scope`): its issuer's identities, and with ``query_scope =
  "linked"`` the identities linked to them, which for one PatientID of its own replace the
  PatientID match (a linked identity has another PatientID).

Every match carries Instance Availability (0008,0056) of the instances at its level, the least
available of them (PS3.4 C.4.1.1.3.2; :mod:`vna.storage.availability`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from vna.catalog.patient_links import (
    PatientScope,
    ScopedIdentities,
    linked_patient_ids,
    scope_identities,
)
from vna.catalog.queries import q
from vna.dicom.qido_params import (
    ISSUER_OF_PATIENT_ID,
    PATIENT_ID,
    Level,
    Match,
    MatchKind,
    Query,
    attribute_level,
    range_key,
)
from vna.errors import InvalidRequest
from vna.storage.availability import least_available

_MAX_BIGINT = 2**63 - 1

_ColumnKind = Literal["text", "pn", "date", "da_text", "tm_text", "int"]


@dataclass(frozen=True)
class _Column:
    expr: str
    kind: _ColumnKind


# Indexed attributes and their columns.  The table alias (p, st, se, i) is joined at every
# level at or below the attribute's level (vna.dicom.qido_params.attribute_level), which the parser
# enforces for matching keys.
COLUMNS: dict[str, _Column] = {
    "00100010": _Column("p.patient_name", "pn"),
    "00100020": _Column("p.patient_id", "text"),
    "00100021": _Column("p.issuer", "text"),
    "00100030": _Column("p.birth_date", "da_text"),
    "00100040": _Column("p.sex", "text"),
    "00080020": _Column("st.study_date", "date"),
    "00080030": _Column("st.study_time", "tm_text"),
    "00080050": _Column("st.accession_number", "text"),
    "00080090": _Column("st.referring_physician", "pn"),
    "00081030": _Column("st.study_description", "text"),
    "0020000D": _Column("st.study_uid", "text"),
    "00200010": _Column("st.study_id", "text"),
    "00080060": _Column("se.modality", "text"),
    "0008103E": _Column("se.series_description", "text"),
    "00180015": _Column("se.body_part", "text"),
    "0020000E": _Column("se.series_uid", "text"),
    "00200011": _Column("se.series_number", "int"),
    "00080016": _Column("i.sop_class_uid", "text"),
    "00080018": _Column("i.sop_uid", "text"),
    "00200013": _Column("i.instance_number", "int"),
    "00280008": _Column("i.number_of_frames", "int"),
    "00280010": _Column("i.rows", "int"),
    "00280011": _Column("i.columns", "int"),
}
_MODALITIES_IN_STUDY = "00080061"
INSTANCE_AVAILABILITY = "00080056"

# Attributes each level returns from the catalogue's columns (PS3.18 Tables 10.6.3-3 to -5).
STUDY_DEFAULTS = frozenset(
    {
        "00080020",
        "00080030",
        "00080050",
        "00080061",
        "00080090",
        "00081030",
        "00100010",
        "00100020",
        "00100021",
        "00100030",
        "00100040",
        "0020000D",
        "00200010",
        "00201206",
        "00201208",
    }
)
SERIES_DEFAULTS = frozenset(
    {"00080060", "0008103E", "0020000D", "0020000E", "00200011", "00201209"}
)
INSTANCE_DEFAULTS = frozenset(
    {"00080016", "00080018", "0020000D", "0020000E", "00200013", "00280008", "00280010", "00280011"}
)
# Required return attributes that only the header holds, returned when present.
_FROM_HEADER: dict[Level, tuple[str, ...]] = {
    "study": ("00080201",),  # TimezoneOffsetFromUTC
    # PerformedProcedureStepStartDate/Time, RequestAttributesSequence (Table 10.6.3-4)
    "series": ("00080201", "00400244", "00400245", "00400275"),
    "instance": ("00080201", "00280100"),  # BitsAllocated (Table 10.6.3-5)
}


@dataclass(frozen=True)
class SearchPage:
    """One page of matches, and whether more follow it."""

    results: list[dict[str, Any]]
    more: bool


async def search_page(
    conn: asyncpg.Connection,
    query: Query,
    *,
    max_results: int,
    default_limit: int,
    sources: Sequence[str] | None = None,
    offline_tiers: frozenset[str] = frozenset(),
    scope: PatientScope | None = None,
) -> SearchPage:
    """DICOM JSON objects (PS3.18 F.2) of the matches of ``query``, in a deterministic order,
    and whether matches beyond the page exist (PS3.18 8.3.4.4 lets the origin server warn that
    more results can be requested).

    ``limit`` defaults to ``default_limit`` and is capped at ``max_results``.  ``sources``
    restricts the matches to studies those sources sent (a reader token's ``read_sources``).
    ``offline_tiers`` are the tiers the object store must restore before reading
    (``ObjectStore.offline_tiers``), for Instance Availability.  ``scope`` restricts the
    matches to the patients a source may reach (:mod:`vna.security.query_scope`).
    """
    limit = min(query.limit if query.limit is not None else default_limit, max_results)
    if limit <= 0 or query.offset > _MAX_BIGINT:
        return SearchPage([], False)
    where = _Where(first_index=3)
    if sources is not None:
        where.add(f"st.source = ANY({where.param(list(sources))}::text[])")
    identities = await _linked_identities(conn, query) if query.include_linked else None
    scoped = await scope_identities(conn, scope) if scope is not None else None
    _constrain(where, query, identities, scoped)
    sql = q(f"search_{_TABLE[query.level]}").replace("{where}", where.sql())
    rows = await conn.fetch(sql, limit + 1, query.offset, *where.args)
    more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return SearchPage([], more)
    return SearchPage(await _describe(conn, query, rows, offline_tiers), more)


async def _linked_identities(conn: asyncpg.Connection, query: Query) -> list[tuple[str, str]]:
    """The identities named by the PatientID (and IssuerOfPatientID) match, and every identity
    linked to them.  Without an issuer, the PatientID of every issuer is a starting point."""
    patient = query.match(PATIENT_ID)
    if patient is None or patient.kind is not MatchKind.SINGLE:
        raise InvalidRequest("includelinked needs one PatientID value")
    issuer = query.match(ISSUER_OF_PATIENT_ID)
    if issuer is not None and issuer.kind is MatchKind.SINGLE:
        starts = [issuer.value]
    elif issuer is None or issuer.kind is MatchKind.UNIVERSAL:
        starts = [r["issuer"] for r in await conn.fetch(q("search_issuers_of"), patient.value)]
    else:
        raise InvalidRequest("includelinked needs one IssuerOfPatientID value")
    found: dict[tuple[str, str], None] = {}
    for start in starts:
        found.update(dict.fromkeys(await linked_patient_ids(conn, patient.value, start)))
    return list(found)


@dataclass(frozen=True)
class PatientCounts:
    """PS3.4 Table C.6-1: Number of Patient Related Studies, Series and Instances."""

    studies: int
    series: int
    instances: int


async def patient_counts(
    conn: asyncpg.Connection, identities: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], PatientCounts]:
    """The counts of each (PatientID, issuer) the archive holds among ``identities``."""
    rows = await conn.fetch(
        q("search_patient_counts"), [i for i, _ in identities], [s for _, s in identities]
    )
    return {
        (r["patient_id"], r["issuer"]): PatientCounts(r["studies"], r["series"], r["instances"])
        for r in rows
    }


_TABLE: dict[Level, str] = {"study": "studies", "series": "series", "instance": "instances"}


# --- WHERE ---------------------------------------------------------------------------------


class _Where:
    """A conjunction of fixed SQL fragments; values only ever travel as bound parameters."""

    def __init__(self, first_index: int) -> None:
        self._first = first_index
        self.args: list[object] = []
        self.clauses: list[str] = []

    def param(self, value: object) -> str:
        self.args.append(value)
        return f"${self._first + len(self.args) - 1}"

    def add(self, clause: str) -> None:
        self.clauses.append(clause)

    def sql(self) -> str:
        return " AND ".join(f"({c})" for c in self.clauses) or "TRUE"


def _constrain(
    w: _Where,
    query: Query,
    identities: Sequence[tuple[str, str]] | None = None,
    scoped: ScopedIdentities | None = None,
) -> None:
    w.add(VISIBLE[query.level])
    if scoped is not None:
        w.add(scope_condition(w, scoped))
    # Identities standing for the PatientID match (followed links): the keys themselves are
    # not matched again, the linked identities having other PatientIDs and issuers.
    replaced = identities is not None or (scoped is not None and scoped.replaces_patient_keys)
    if query.study_uid is not None:
        w.add(f"st.study_uid = {w.param(query.study_uid)}::text")
    if query.series_uid is not None:
        w.add(f"se.series_uid = {w.param(query.series_uid)}::text")
    if identities is not None:
        # The linked identities replace the PatientID and IssuerOfPatientID matches.
        ids = w.param([i for i, _ in identities])
        issuers = w.param([issuer for _, issuer in identities])
        w.add(
            f"(p.patient_id, p.issuer) IN (SELECT * FROM unnest({ids}::text[], {issuers}::text[]))"
        )
    for match in query.matches.values():
        if match.kind is MatchKind.UNIVERSAL:
            continue
        if replaced and match.tag in (PATIENT_ID, ISSUER_OF_PATIENT_ID):
            continue
        if match.tag == _MODALITIES_IN_STUDY:
            # ModalitiesInStudy lists the modalities of the study's series (PS3.3 C.7.2.2), so
            # a study matches when one of its series has (one of) the asked modalities.
            cond = _text_condition(w, "ms.modality", match, fold_case=False)
            w.add(
                f"EXISTS (SELECT 1 FROM series ms WHERE ms.study_fk = st.id AND {cond}"
                " AND EXISTS (SELECT 1 FROM instances vi WHERE vi.series_fk = ms.id"
                " AND vi.rejection_fk IS NULL))"
            )
        elif match.tag in COLUMNS:
            w.add(_column_condition(w, COLUMNS[match.tag], match))
        else:
            w.add(_header_condition(w, query.level, match))


#: The visibility rule at each level (migration 0160): an instance is visible unless an IOCM
#: rejection note withdrew it (IHE RAD TF-3 4.66.4.1.3, RAD-66; ``i.rejection_fk IS NULL``,
#: the rule the retrieve queries of sql/retrieve.sql test too); a series or study while it
#: has a visible instance, so one whose every instance is rejected is not found at all.
VISIBLE: dict[Level, str] = {
    "instance": "i.rejection_fk IS NULL",
    "series": (
        "EXISTS (SELECT 1 FROM instances vi WHERE vi.series_fk = se.id AND vi.rejection_fk IS NULL)"
    ),
    "study": (
        "EXISTS (SELECT 1 FROM series vs JOIN instances vi ON vi.series_fk = vs.id"
        " WHERE vs.study_fk = st.id AND vi.rejection_fk IS NULL)"
    ),
}


def scope_condition(w: _Where, scoped: ScopedIdentities) -> str:
    """The patients (alias ``p``) in a caller's scope: of its issuers, or one of its
    identities."""
    parts = []
    if scoped.issuers:
        parts.append(f"p.issuer = ANY({w.param(list(scoped.issuers))}::text[])")
    if scoped.identities:
        ids = w.param([i for i, _ in scoped.identities])
        issuers = w.param([issuer for _, issuer in scoped.identities])
        parts.append(
            f"(p.patient_id, p.issuer) IN (SELECT * FROM unnest({ids}::text[], {issuers}::text[]))"
        )
    return " OR ".join(parts) or "FALSE"


def like_pattern(wildcard: str) -> str:
    """A DICOM wildcard (PS3.4 C.2.2.2.4: ``*`` any run, ``?`` one character) as a LIKE pattern
    with backslash escapes, so ``%``, ``_`` and ``\\`` in the value match themselves."""
    out = []
    for ch in wildcard:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _text_condition(w: _Where, expr: str, m: Match, *, fold_case: bool) -> str:
    if fold_case:
        expr = f"lower({expr})"
    if m.kind is MatchKind.SINGLE:
        p = w.param(m.value)
        return f"{expr} = lower({p}::text)" if fold_case else f"{expr} = {p}::text"
    if m.kind is MatchKind.LIST:
        values = list(m.values)
        p = w.param(values)
        if fold_case:
            return f"{expr} = ANY(ARRAY(SELECT lower(v) FROM unnest({p}::text[]) AS v))"
        return f"{expr} = ANY({p}::text[])"
    if m.kind is MatchKind.WILDCARD:
        p = w.param(like_pattern(m.value))
        target = f"lower({p}::text)" if fold_case else f"{p}::text"
        return f"{expr} LIKE {target} ESCAPE '\\'"
    raise InvalidRequest(f"{m.keyword or m.tag}: {m.kind.value} matching is not supported")


def _bounds(m: Match) -> tuple[str, str]:
    """Inclusive range keys of a RANGE match, or of a single DA/TM/DT value as a range."""
    low, high = (m.value, m.value) if m.kind is MatchKind.SINGLE else (m.low, m.high)
    return (
        range_key(m.vr, low, upper=False) if low else "",
        range_key(m.vr, high, upper=True) if high else "",
    )


def _range_condition(w: _Where, key_expr: str, raw_expr: str, m: Match) -> str:
    low, high = _bounds(m)
    parts = [f"{raw_expr} <> ''"]
    if low:
        parts.append(f"{key_expr} >= {w.param(low)}::text")
    if high:
        parts.append(f"{key_expr} <= {w.param(high)}::text")
    return " AND ".join(parts)


def _key_expr(vr: str, raw: str) -> str:
    """SQL for the range key of a stored DA/TM/DT text (the same digits as range_key)."""
    if vr == "DA":
        return f"left(rpad(replace(btrim({raw}), '.', ''), 8, '0'), 8)"
    if vr == "TM":
        return f"left(rpad(translate(btrim({raw}), ':.', ''), 12, '0'), 12)"
    # DT: the digits before any UTC offset.
    return f"left(rpad(replace(substring(btrim({raw}) FROM '^[0-9.]*'), '.', ''), 20, '0'), 20)"


def _column_condition(w: _Where, col: _Column, m: Match) -> str:
    if col.kind == "date":
        if m.kind is MatchKind.SINGLE:
            return f"{col.expr} = {w.param(_date(m.value))}::date"
        parts = [f"{col.expr} IS NOT NULL"]
        if m.low:
            parts.append(f"{col.expr} >= {w.param(_date(m.low))}::date")
        if m.high:
            parts.append(f"{col.expr} <= {w.param(_date(m.high))}::date")
        return " AND ".join(parts)
    if col.kind in ("da_text", "tm_text"):
        vr = "DA" if col.kind == "da_text" else "TM"
        return _range_condition(w, _key_expr(vr, col.expr), col.expr, m)
    if col.kind == "int":
        number = int(m.value)
        if not -_MAX_BIGINT <= number <= _MAX_BIGINT:
            return "FALSE"
        return f"{col.expr} = {w.param(number)}::bigint"
    return _text_condition(w, col.expr, m, fold_case=col.kind == "pn")


# The text of one value of a DICOM JSON element (v.x): a PN's alphabetic group, else the value.
_VALUE_TEXT = (
    "CASE jsonb_typeof(v.x) WHEN 'object' THEN coalesce(v.x ->> 'Alphabetic', '')"
    " ELSE v.x #>> '{}' END"
)


def _header_condition(w: _Where, level: Level, m: Match) -> str:
    """Match against the instance headers (metadata jsonb): any value of the attribute."""
    if m.vr in ("DA", "TM", "DT"):
        cond = _range_condition(w, _key_expr(m.vr, _VALUE_TEXT), _VALUE_TEXT, m)
    elif m.kind is MatchKind.SINGLE and _is_number(m):
        number = w.param(Decimal(m.value))
        text = w.param(m.value)
        # DICOM JSON carries IS, DS and binary numbers as JSON numbers (PS3.18 F.2.3).
        cond = (
            f"CASE WHEN jsonb_typeof(v.x) = 'number' THEN (v.x #>> '{{}}')::numeric = "
            f"{number}::numeric ELSE {_VALUE_TEXT} = {text}::text END"
        )
    else:
        cond = _text_condition(w, _VALUE_TEXT, m, fold_case=m.vr == "PN")
    tag = w.param(m.tag)
    values = f"M -> {tag}::text -> 'Value'"
    one = (
        "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof("
        f"{values}) = 'array' THEN {values} ELSE '[]'::jsonb END) AS v(x) WHERE {cond})"
    )
    if level == "instance":
        return one.replace("M ->", "i.metadata ->")
    inner = one.replace("M ->", "mi.metadata ->")
    # A rejected instance's header matches nothing (VISIBLE).
    if level == "series":
        return (
            "EXISTS (SELECT 1 FROM instances mi WHERE mi.series_fk = se.id"
            f" AND mi.rejection_fk IS NULL AND {inner})"
        )
    return (
        "EXISTS (SELECT 1 FROM series ms JOIN instances mi ON mi.series_fk = ms.id"
        f" WHERE ms.study_fk = st.id AND mi.rejection_fk IS NULL AND {inner})"
    )


def _is_number(m: Match) -> bool:
    return m.vr in ("IS", "DS", "SL", "SS", "UL", "US", "SV", "UV", "FL", "FD")


def _date(value: str) -> dt.date:
    return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))


# --- results -------------------------------------------------------------------------------


async def _describe(
    conn: asyncpg.Connection,
    query: Query,
    rows: Sequence[asyncpg.Record],
    offline_tiers: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    level = query.level
    # PS3.18 10.6.3.3: a search over all series (no study in the path) also returns the study
    # attributes, and one over instances those of the study and series not in the path.
    with_study = level == "study" or query.study_uid is None
    with_series = level == "series" or (level == "instance" and query.series_uid is None)

    study_aggs: dict[int, asyncpg.Record] = {}
    if with_study:
        ids = list(dict.fromkeys(r["study_pk"] for r in rows))
        for a in await conn.fetch(q("search_study_aggregates"), ids):
            study_aggs[a["study_pk"]] = a
    series_aggs: dict[int, asyncpg.Record] = {}
    if with_series:
        ids = list(dict.fromkeys(r["series_pk"] for r in rows))
        for a in await conn.fetch(q("search_series_aggregates"), ids):
            series_aggs[a["series_pk"]] = a

    defaults = set(INSTANCE_DEFAULTS if level == "instance" else ())
    if with_study:
        defaults |= STUDY_DEFAULTS
    if with_series:
        defaults |= SERIES_DEFAULTS
    defaults |= {"0020000D", "0020000E"} if level != "study" else set()
    wanted = [t for t in query.returned_tags if t not in defaults]
    header_keys = list(dict.fromkeys([*_FROM_HEADER[level], *wanted]))
    if with_study and level != "study":
        header_keys.extend(t for t in _FROM_HEADER["study"] if t not in header_keys)
    if with_series and level == "instance":
        header_keys.extend(t for t in _FROM_HEADER["series"] if t not in header_keys)
    pk_name = {"study": "study_pk", "series": "series_pk", "instance": "instance_pk"}[level]
    pks = list(dict.fromkeys(r[pk_name] for r in rows))
    headers: dict[int, dict[str, Any]] = {}
    for h in await conn.fetch(
        q(f"search_{level}_metadata"), pks, None if query.include_all else header_keys
    ):
        headers[h["pk"]] = h["metadata"] or {}

    explicit = set(header_keys)
    allowed = _levels_of_all(level, with_study=with_study, with_series=with_series)
    results = []
    for r in rows:
        out: dict[str, Any] = {}
        if with_study:
            out.update(_study_attributes(r, study_aggs.get(r["study_pk"])))
        else:
            out["0020000D"] = _text("UI", r["study_uid"])
        if level != "study":
            if with_series:
                out.update(_series_attributes(r, series_aggs.get(r["series_pk"])))
            else:
                out["0020000E"] = _text("UI", r["series_uid"])
        if level == "instance":
            out.update(_instance_attributes(r))
        # PS3.4 C.4.1.1.3.2: of the instances at the level of the query, the least available.
        if level == "study":
            agg = study_aggs.get(r["study_pk"])
            tiers = list(agg["tiers"]) if agg else []
        elif level == "series":
            agg = series_aggs.get(r["series_pk"])
            tiers = list(agg["tiers"]) if agg else []
        else:
            tiers = [] if r["restored"] else [r["tier"]]
        out[INSTANCE_AVAILABILITY] = _text("CS", least_available(tiers, offline_tiers))
        for tag, element in headers.get(r[pk_name], {}).items():
            if tag in out:
                continue  # the catalogue's value wins (it is what matching used)
            if tag in explicit or (query.include_all and attribute_level(tag) in allowed):
                out[tag] = element
        results.append(dict(sorted(out.items())))
    return results


def _levels_of_all(level: Level, *, with_study: bool, with_series: bool) -> set[Level]:
    """Which attributes ``includefield=all`` brings from the header at this level."""
    if level == "instance":
        return {"study", "series", "instance"}  # the instance's own header, all of it
    levels: set[Level] = {level}
    if with_study:
        levels.add("study")
    if with_series:
        levels.add("series")
    return levels


def _study_attributes(r: asyncpg.Record, agg: asyncpg.Record | None) -> dict[str, Any]:
    return {
        "00080020": _text("DA", _da(r["study_date"])),
        "00080030": _text("TM", r["study_time"]),
        "00080050": _text("SH", r["accession_number"]),
        "00080061": _values("CS", list(agg["modalities"]) if agg else []),
        "00080090": _pn(r["referring_physician"]),
        "00081030": _text("LO", r["study_description"]),
        "00100010": _pn(r["patient_name"]),
        "00100020": _text("LO", r["patient_id"]),
        "00100021": _text("LO", r["issuer"]),
        "00100030": _text("DA", r["birth_date"]),
        "00100040": _text("CS", r["sex"]),
        "0020000D": _text("UI", r["study_uid"]),
        "00200010": _text("SH", r["study_id"]),
        "00201206": _number("IS", agg["series_count"] if agg else 0),
        "00201208": _number("IS", agg["instance_count"] if agg else 0),
    }


def _series_attributes(r: asyncpg.Record, agg: asyncpg.Record | None) -> dict[str, Any]:
    return {
        "00080060": _text("CS", r["modality"]),
        "0008103E": _text("LO", r["series_description"]),
        "0020000D": _text("UI", r["study_uid"]),
        "0020000E": _text("UI", r["series_uid"]),
        "00200011": _number("IS", r["series_number"]),
        "00201209": _number("IS", agg["instance_count"] if agg else 0),
    }


def _instance_attributes(r: asyncpg.Record) -> dict[str, Any]:
    out = {
        "00080016": _text("UI", r["sop_class_uid"]),
        "00080018": _text("UI", r["sop_uid"]),
        "00200013": _number("IS", r["instance_number"]),
    }
    # Image attributes only where the instance is an image (Table 10.6.3-5: "if present").
    for tag, vr, name in (
        ("00280008", "IS", "number_of_frames"),
        ("00280010", "US", "rows"),
        ("00280011", "US", "columns"),
    ):
        if r[name] is not None:
            out[tag] = _number(vr, r[name])
    return out


def _text(vr: str, value: str | None) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value else {"vr": vr}


def _values(vr: str, values: Iterable[str]) -> dict[str, Any]:
    items = [v for v in values if v]
    return {"vr": vr, "Value": items} if items else {"vr": vr}


def _number(vr: str, value: int | None) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value is not None else {"vr": vr}


def _pn(value: str | None) -> dict[str, Any]:
    """A PN in DICOM JSON (PS3.18 F.2.2): the ``=``-separated component groups by name."""
    if not value:
        return {"vr": "PN"}
    groups = value.split("=")
    name = {
        key: group
        for key, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False)
        if group
    }
    return {"vr": "PN", "Value": [name]} if name else {"vr": "PN"}


def _da(value: dt.date | None) -> str:
    return f"{value.year:04d}{value.month:02d}{value.day:02d}" if value else ""
