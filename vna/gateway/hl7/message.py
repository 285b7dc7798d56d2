"""HL7 v2 ADT messages in and ACKs out, as pure functions (no I/O): bytes of one MLLP block to
a parsed message, a parsed message to the engine's requests (``vna.admin.adt``) or a refusal,
and an outcome to the bytes of the ACK.  Parsing is python-hl7's; this module decides the
character set first and maps fields to DICOM values.

References are to HL7 v2.5.1: chapter 2 (control: MSH 2.15.9, ACK 2.9.2 and 2.14.1, MSA
2.15.8, ERR 2.15.5, escape sequences 2.7, character sets 2.15.9.18 / table 0211) and
chapter 3 (ADT events 3.3, PID 3.4.2, MRG 3.4.3).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import hl7

from vna.admin.adt import (
    DATA_TYPE_ERROR,
    ERROR_TEXT,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_PROCESSING_ID,
    UNSUPPORTED_VERSION_ID,
    AdtRequest,
    ChangeIdentifier,
    Envelope,
    Merge,
    Refusal,
    Unlink,
    UpdateDemographics,
)
from vna.admin.patients import Identity
from vna.config import Settings

#: ADT trigger events the archive acts on (chapter 3.3).
EVENTS = ("A01", "A04", "A08", "A40", "A47", "A37")
#: HL7 table 0211 (MSH-18) to Python codecs.  Empty MSH-18 means ASCII (2.15.9.18); UTF-8 is
#: accepted then too, since many interfaces send it undeclared and ASCII is a subset of it.
CHARSETS = {
    "": "utf-8",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859_2",
    "8859/3": "iso8859_3",
    "8859/4": "iso8859_4",
    "8859/5": "iso8859_5",
    "8859/6": "iso8859_6",
    "8859/7": "iso8859_7",
    "8859/8": "iso8859_8",
    "8859/9": "iso8859_9",
    "8859/15": "iso8859_15",
    "UNICODE UTF-8": "utf-8",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}
#: PID-8 administrative sex (table 0001) to Patient's Sex (0010,0040): M, F, O or empty.
SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": ""}
#: The HL7 null: a field sent as two double quotes is cleared (2.5.3), an empty one is kept.
NULL = '""'
_DEFAULT_SEPARATORS = ("|", "^~\\&")
_SEGMENT_END = re.compile(r"\r\n|\n|\r")
_HEX = re.compile(r"X([0-9A-Fa-f]+)")


class Unreadable(Exception):
    """The bytes are not an HL7 message the archive can answer about; ``head`` is what could
    be read of MSH (None: nothing), to address the ACK."""

    def __init__(self, refusal: Refusal, head: Parsed | None = None) -> None:
        super().__init__(refusal.text)
        self.refusal = refusal
        self.head = head


@dataclass(frozen=True)
class Parsed:
    message: Any  # hl7.Message
    text: str
    charset: str
    field_separator: str
    encoding_characters: str

    def value(self, segment: Any, number: int, rep: int = 0, comp: int = 0, sub: int = 0) -> str:
        """One unescaped value (2.7): field ``number`` of ``segment``, 0-based repetition,
        component and subcomponent; '' when absent."""
        reps = self.field(segment, number)
        try:
            return reps[rep][comp][sub]
        except IndexError:
            return ""

    def field(self, segment: Any, number: int) -> list[list[list[str]]]:
        """Field ``number`` as repetitions of components of subcomponents, unescaped."""
        if number >= len(segment):
            return []
        raw = segment[number]
        if isinstance(raw, str):
            raw = [raw]
        items = list(raw)
        reps = items if items and all(isinstance(i, hl7.Repetition) for i in items) else [raw]
        out = []
        for rep in reps:
            comps = []
            for comp in rep if not isinstance(rep, str) else [rep]:
                subs = [comp] if isinstance(comp, str) else [str(s) for s in comp]
                comps.append([self.unescape(s) for s in subs])
            out.append(comps)
        return out

    def raw(self, segment: Any, number: int) -> str:
        """Field ``number`` as sent (escaped), to echo it back."""
        return str(segment[number]) if number < len(segment) else ""

    def unescape(self, value: str) -> str:
        esc = self.encoding_characters[2]
        if esc not in value:
            return value
        # Highlighting (\H\, \N\) carries no text; hexadecimal data (\Xhh..\) is bytes in the
        # message's character set (2.7.5), which python-hl7 would read as code points.
        app_map = {"H": "", "N": ""}
        for found in _HEX.findall(value):
            if len(found) % 2 == 0:
                app_map["X" + found] = bytes.fromhex(found).decode(self.charset, "replace")
        return str(self.message.unescape(value, app_map))

    @property
    def msh(self) -> Any:
        return self.message.segment("MSH")

    def envelope(self, peer: str) -> Envelope:
        msh = self.msh
        return Envelope(
            sending_facility=self.value(msh, 4),
            control_id=self.value(msh, 10),
            message_type="^".join(v for v in (self.value(msh, 9), self.event) if v),
            peer=peer,
            text=self.text,
        )

    @property
    def event(self) -> str:
        return self.value(self.msh, 9, comp=1)


def read_message(body: bytes) -> Parsed:
    """The message in one MLLP block; :class:`Unreadable` when it cannot be answered about."""
    start = body.lstrip(b"\r\n\t \xef\xbb\xbf")
    if not start.startswith(b"MSH"):
        raise Unreadable(
            _refuse("AR", SEGMENT_SEQUENCE_ERROR, "the message does not begin with MSH")
        )
    # The character set is named inside the message (MSH-18), so MSH is read as bytes first:
    # its fields up to MSH-18 are ASCII in every character set table 0211 allows here.
    first = _SEGMENT_END.split(start.decode("latin-1"), maxsplit=1)[0]
    field_sep = first[3:4]
    encoding_chars = first[4:].split(field_sep, 1)[0] if field_sep else ""
    if not _separators_ok(field_sep, encoding_chars):
        raise Unreadable(
            _refuse(
                "AR",
                DATA_TYPE_ERROR,
                "MSH-1 and MSH-2 must be a field separator and four distinct encoding"
                f" characters (such as |^~\\&), not {first[3:8]!r}",
                "MSH^1^2",
            )
        )
    declared = first.split(field_sep)[17:18]
    charset_name = declared[0].split(encoding_chars[1])[0].strip() if declared else ""
    codec = CHARSETS.get(charset_name.upper())
    if codec is None:
        raise Unreadable(
            _refuse(
                "AR",
                DATA_TYPE_ERROR,
                f"character set {charset_name!r} (MSH-18) is not supported",
                "MSH^1^18",
            ),
            head=_head(first, field_sep, encoding_chars),
        )
    try:
        text = start.decode(codec)
    except UnicodeDecodeError as exc:
        undeclared = "" if charset_name else " (MSH-18 is empty: ASCII or UTF-8)"
        raise Unreadable(
            _refuse(
                "AE",
                DATA_TYPE_ERROR,
                f"bytes at offset {exc.start} are not {charset_name or 'UTF-8'}{undeclared}",
                "MSH^1^18",
            ),
            head=_head(first, field_sep, encoding_chars),
        ) from exc
    # Segments end with CR (2.5.4); LF and CR LF from interface engines are taken as CR.
    # An empty segment (two CRs in a row) carries nothing, and python-hl7 fails on it when it
    # looks segments up, long after parsing: drop it here.
    text = "\r".join(seg for seg in _SEGMENT_END.sub("\r", text.strip()).split("\r") if seg)
    try:
        message = hl7.parse(text)
        message.segment("MSH")  # the lookups below must not fail later on this message
    except Exception as exc:  # python-hl7 raises assorted errors on malformed text
        refusal = _refuse("AR", SEGMENT_SEQUENCE_ERROR, f"not an HL7 message: {exc}")
        raise Unreadable(refusal) from exc
    return Parsed(message, text, codec, field_sep, encoding_chars)


def decide(parsed: Parsed, settings: Settings) -> tuple[list[AdtRequest] | Refusal, str | None]:
    """What the message asks of the archive, or why it is not accepted; and the source its
    sender speaks for (None for a sender not listed in ``[[hl7.senders]]``)."""
    msh = parsed.msh
    facility = parsed.value(msh, 4)
    sender = settings.hl7.sender(facility)
    if sender is None:
        return _refuse(
            "AR", "207", f"sending facility {facility!r} (MSH-4) is not accepted", "MSH^1^4"
        ), None
    source = settings.source_named(sender.source)
    issuer = source.issuer_of_patient_id if source is not None else ""
    kind = parsed.value(msh, 9)
    if kind != "ADT":
        why = f"message type {kind!r} is not accepted (ADT only)"
        return _refuse("AR", UNSUPPORTED_MESSAGE_TYPE, why, "MSH^1^9"), sender.source
    if parsed.event not in EVENTS:
        return _refuse(
            "AR",
            UNSUPPORTED_EVENT_CODE,
            f"event {parsed.event!r} is not supported ({', '.join(EVENTS)})",
            "MSH^1^9^1^2",
        ), sender.source
    if parsed.value(msh, 11) == "T":
        return _refuse(
            "AR",
            UNSUPPORTED_PROCESSING_ID,
            "training messages (MSH-11 T) are not applied",
            "MSH^1^11",
        ), sender.source
    version = parsed.value(msh, 12)
    if not version.startswith("2."):
        return _refuse(
            "AR", UNSUPPORTED_VERSION_ID, f"version {version!r} (MSH-12) is not HL7 v2", "MSH^1^12"
        ), sender.source
    try:
        return requests_for(parsed, issuer), sender.source
    except _FieldError as exc:
        return exc.refusal, sender.source


def requests_for(parsed: Parsed, issuer: str) -> list[AdtRequest]:
    """The engine requests of an ADT message whose PatientIDs are ``issuer``'s."""
    event = parsed.event
    pids = _segments(parsed, "PID")
    if not pids:
        raise _FieldError(_refuse("AE", SEGMENT_SEQUENCE_ERROR, f"ADT^{event} has no PID segment"))
    if event in ("A01", "A04", "A08"):
        pid = pids[0]
        patient, others = _identifiers(parsed, pid, 3, issuer, "PID^1^3")
        return [UpdateDemographics(patient, _demographics(parsed, pid), others)]
    if event == "A37":
        if len(pids) < 2:
            raise _FieldError(
                _refuse("AE", SEGMENT_SEQUENCE_ERROR, "ADT^A37 needs the two patients' PIDs")
            )
        a, _ = _identifiers(parsed, pids[0], 3, issuer, "PID^1^3")
        b, _ = _identifiers(parsed, pids[1], 3, issuer, "PID^2^3")
        return [Unlink(a, b)]
    # A40, A47: PID (the identifier to keep) then MRG (the prior one), possibly repeated
    # (ADT_A39 / ADT_A30 structures: one merge or change per PID/MRG pair).
    requests: list[AdtRequest] = []
    current: Identity | None = None
    n = 0
    for segment in parsed.message:
        name = str(segment[0])
        if name == "PID":
            n += 1
            current, _ = _identifiers(parsed, segment, 3, issuer, f"PID^{n}^3")
        elif name == "MRG":
            if current is None:
                raise _FieldError(_refuse("AE", SEGMENT_SEQUENCE_ERROR, "MRG before PID"))
            prior, _ = _identifiers(parsed, segment, 1, issuer, f"MRG^{n}^1")
            if event == "A40":
                requests.append(Merge(survivor=current, prior=prior))
            else:
                requests.append(ChangeIdentifier(new=current, prior=prior))
            current = None
    if not requests:
        raise _FieldError(
            _refuse("AE", SEGMENT_SEQUENCE_ERROR, f"ADT^{event} has no MRG segment after its PID")
        )
    return requests


def build_ack(
    parsed: Parsed | None,
    *,
    ack_code: str,
    text: str,
    error_code: str = "",
    location: str = "",
    control_id: str = "",
    now: dt.datetime,
) -> bytes:
    """The original-mode ACK (2.9.2, 2.14.1): MSH answering the message's MSH, MSA with the
    acknowledgment code and the message's control ID, and for AE / AR an ERR segment with the
    HL7 error code (table 0357), its location and the explanation."""
    fs, enc = (
        (parsed.field_separator, parsed.encoding_characters) if parsed else _DEFAULT_SEPARATORS
    )
    comp = enc[0]
    charset = "utf-8"
    if parsed is not None:
        msh = parsed.msh
        sender_app, sender_fac = parsed.raw(msh, 3), parsed.raw(msh, 4)
        us_app, us_fac = parsed.raw(msh, 5) or "VNA", parsed.raw(msh, 6) or "VNA"
        event = _escape(parsed.event, fs, enc)
        version = parsed.raw(msh, 12) or "2.5.1"
        declared = parsed.raw(msh, 18)
        charset = parsed.charset
        control_id = control_id or parsed.value(msh, 10)
    else:
        sender_app = sender_fac = event = declared = ""
        us_app = us_fac = "VNA"
        version = "2.5.1"
    stamp = now.strftime("%Y%m%d%H%M%S")
    msh_fields = [
        "MSH",
        enc,
        us_app,
        us_fac,
        sender_app,
        sender_fac,
        stamp,
        "",
        comp.join(["ACK", event, "ACK"]) if event else "ACK",
        f"ACK{now.strftime('%Y%m%d%H%M%S%f')}",
        "P",
        version,
        "",
        "",
        "",
        "",
        "",
        declared,
    ]
    while msh_fields and msh_fields[-1] == "":
        msh_fields.pop()
    segments = [fs.join(msh_fields)]
    msa = ["MSA", ack_code, _escape(control_id, fs, enc)]
    if text:
        # MSA-3 is ST of 80 characters at most (2.15.8.3); ERR-8 carries the whole text.
        msa.append(_escape(text[:80], fs, enc))
    segments.append(fs.join(msa))
    if ack_code != "AA" and error_code:
        err = [
            "ERR",
            "",
            location.replace("^", comp),
            comp.join([error_code, _escape(ERROR_TEXT.get(error_code, ""), fs, enc), "HL70357"]),
            "E",
            "",
            "",
            "",
            _escape(text, fs, enc),
        ]
        segments.append(fs.join(err))
    return ("\r".join(segments) + "\r").encode(charset, "replace")


# --- fields -----------------------------------------------------------------------------------


class _FieldError(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.text)
        self.refusal = refusal


def _refuse(ack: str, code: str, text: str, location: str = "") -> Refusal:
    return Refusal(ack_code=ack, error_code=code, text=text, location=location)


def _segments(parsed: Parsed, name: str) -> list[Any]:
    return [s for s in parsed.message if str(s[0]) == name]


def _identifiers(
    parsed: Parsed, segment: Any, number: int, issuer: str, where: str
) -> tuple[Identity, tuple[Identity, ...]]:
    """The patient's identity among the repetitions of a CX field (PID-3, MRG-1): the
    identifier whose assigning authority (CX-4) is the source's issuer, or failing that the
    one without an authority; the others, under their own authorities, are other IDs of the
    same person (3.4.2.3)."""
    mine: Identity | None = None
    bare: Identity | None = None
    others: list[Identity] = []
    for rep in parsed.field(segment, number):
        ident = rep[0][0].strip() if rep and rep[0] else ""
        authority = rep[3][0].strip() if len(rep) > 3 and rep[3] else ""
        if not ident or ident == NULL:
            continue
        if authority == issuer and mine is None:
            mine = Identity(ident, issuer)
        elif not authority and bare is None:
            bare = Identity(ident, issuer)
        elif authority and authority != issuer:
            others.append(Identity(ident, authority))
    chosen = mine or bare
    if chosen is None:
        whose = f" of assigning authority {issuer!r}" if issuer else ""
        raise _FieldError(
            _refuse("AE", REQUIRED_FIELD_MISSING, f"{where} has no patient ID{whose}", where)
        )
    return chosen, tuple(others)


def _demographics(parsed: Parsed, pid: Any) -> dict[str, str]:
    """Name (PID-5), birth date (PID-7) and sex (PID-8) as DICOM values; a field not sent is
    left out (no change), the HL7 null clears."""
    values: dict[str, str] = {}
    names = parsed.field(pid, 5)
    if any(leaf for rep in names for comp in rep for leaf in comp):
        if names[0] and names[0][0] == [NULL]:
            values["PatientName"] = ""
        else:
            values["PatientName"] = _person_name(names)
    birth = parsed.value(pid, 7)
    if birth == NULL:
        values["PatientBirthDate"] = ""
    elif birth:
        digits = birth[:8]
        if not digits.isdigit() or len(birth) < 4:
            raise _FieldError(
                _refuse("AE", DATA_TYPE_ERROR, f"PID-7 {birth!r} is not a date", "PID^1^7")
            )
        if len(digits) == 8:
            try:
                dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
            except ValueError as exc:
                raise _FieldError(
                    _refuse("AE", DATA_TYPE_ERROR, f"PID-7 {birth!r} is not a date", "PID^1^7")
                ) from exc
            values["PatientBirthDate"] = digits
        # A year or a month alone has no DICOM DA form: the birth date stays as it is.
    sex = parsed.value(pid, 8)
    if sex == NULL:
        values["PatientSex"] = ""
    elif sex:
        if sex.upper() not in SEX:
            raise _FieldError(
                _refuse("AE", DATA_TYPE_ERROR, f"PID-8 {sex!r} is not in HL7 table 0001", "PID^1^8")
            )
        values["PatientSex"] = SEX[sex.upper()]
    return values


def _person_name(names: list[list[list[str]]]) -> str:
    """XPN (family^given^middle^suffix^prefix^degree^type) to DICOM PN
    (family^given^middle^prefix^suffix, PS3.5 6.2.1): the legal name (XPN-7 L) when several
    are sent, else the first."""
    chosen = next((n for n in names if len(n) > 6 and n[6] and n[6][0] == "L"), names[0])

    def part(i: int) -> str:
        # FN.1 is the surname; characters PN reserves are replaced (PS3.5 6.2: ^ = \).
        text = chosen[i][0] if len(chosen) > i and chosen[i] else ""
        return re.sub(r"[\^=\\]", " ", text).strip()

    groups = [part(0), part(1), part(2), part(4), part(3)]
    while groups and not groups[-1]:
        groups.pop()
    return "^".join(groups)


def _separators_ok(field_sep: str, enc: str) -> bool:
    chars = field_sep + enc
    return (
        len(field_sep) == 1
        and len(enc) in (4, 5)  # 2.7+ adds the truncation character
        and len(set(chars)) == len(chars)
        and not any(c.isalnum() or c.isspace() for c in chars)
    )


def _head(first: str, field_sep: str, enc: str) -> Parsed | None:
    """MSH alone, to address an ACK for a message that cannot be read further."""
    try:
        return Parsed(hl7.parse(first), first, "ascii", field_sep, enc)
    except Exception:
        return None


def head_of(body: bytes) -> Parsed | None:
    """MSH of a message read only in part (too large), to address the ACK."""
    start = body.lstrip(b"\r\n\t \xef\xbb\xbf")
    if not start.startswith(b"MSH"):
        return None
    first = _SEGMENT_END.split(start.decode("latin-1"), maxsplit=1)[0]
    field_sep = first[3:4]
    enc = first[4:].split(field_sep, 1)[0] if field_sep else ""
    return _head(first, field_sep, enc) if _separators_ok(field_sep, enc) else None


def _escape(value: str, fs: str, enc: str) -> str:
    """Escape the delimiters in text written into the ACK (2.7.4); the escape character
    first, so that the sequences added are not escaped again."""
    comp, rep, esc, sub = enc[0], enc[1], enc[2], enc[3]
    out = value.replace(esc, f"{esc}E{esc}")
    for char, code in ((fs, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")
