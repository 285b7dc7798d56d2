"""The one place that reads configuration: a TOML file plus ``VNA_*`` environment overrides.

Every scalar key can be overridden from the environment.  Top-level keys map to
``VNA_<KEY>`` (``data_dir`` -> ``VNA_DATA_DIR``); keys in a section map to
``VNA_<SECTION>_<KEY>`` (``[http] port`` -> ``VNA_HTTP_PORT``).  Sources, C-MOVE
destinations, retention rules and tiering rules are lists of tables and come from the file only
(or from ``VNA_CONFIG_TOML``, the whole document in one variable, for container platforms that
cannot mount a file).

The result is a tree of frozen dataclasses; nothing else in the archive reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vna.dicom.coercion import CoercionRule, rule_problem
from vna.errors import ConfigError
from vna.storage.factory import parse_store_url
from vna.tiers import TIERS

ENV_PREFIX = "VNA_"
CONFLICT_POLICIES = ("reject", "replace", "keep-both")
#: Which patients a source's queries and retrieves reach (vna.security.query_scope).
QUERY_SCOPES = ("own", "linked", "all")
#: An origin as browsers send it (RFC 6454 6.1): scheme, host, optional port; nothing else.
_ORIGIN = re.compile(
    r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"
)
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, 16 chars
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # PS3.5 9.1: digits and dots, 64 chars at most
# Modality (0008,0060) is CS: upper-case letters, digits, space and underscore, 16 at most
# (PS3.5 6.2).
_MODALITY = re.compile(r"^[A-Z0-9_ ]{1,16}$")


@dataclass(frozen=True)
class HttpSettings:
    #: Address DICOMweb listens on (0.0.0.0: every interface; needs API tokens).
    host: str = "127.0.0.1"
    #: TCP port of DICOMweb, /healthz and /metrics.
    port: int = 8080
    #: Bytes; a larger STOW-RS request body is refused with 413.
    max_request_bytes: int = 64 * 1024**3
    #: Parts in one multipart request.
    max_parts: int = 100_000
    #: Serve DICOMweb without API tokens to clients other than loopback ones.  Without it,
    #: ``vna serve`` refuses a non-loopback ``host`` until a token exists (vna tokens create).
    allow_unauthenticated: bool = False
    #: PEM certificate chain: HTTPS instead of HTTP (with tls_key).
    tls_cert: Path | None = None
    #: PEM private key of tls_cert.
    tls_key: Path | None = None
    #: Seconds a token lookup is remembered: a revoked token stops working within this delay.
    token_cache_seconds: int = 5
    #: Server processes (the GIL binds each to one core); 0: one per core, at most 8.  The
    #: supervisor deals HTTP and DIMSE connections to them (vna.handoff).
    workers: int = 0
    #: Origins (``https://viewer.example.org``) whose pages may call DICOMweb from a browser
    #: (CORS: a viewer served from another origin).  None by default; ``"*"`` allows any.
    #: Environment: ``VNA_HTTP_CORS_ORIGINS`` as a comma-separated list.
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class DimseSettings:
    #: Address to listen on.  Empty (the default): every interface once sources are declared,
    #: loopback only while none are (any caller would be stored as source DEFAULT).  A
    #: non-loopback address with no sources declared is refused at start-up unless
    #: ``allow_any_caller`` is set.
    host: str = ""
    #: TCP port of DIMSE (104 is the registered dicom port, 2762 dicom-tls).
    port: int = 11112
    #: The archive's own AE title (called AE title; Modifying System of coercions).
    ae_title: str = "VNA"
    #: Associations served at once by one server process.
    max_associations: int = 32
    #: Seconds of silence before an association is aborted.
    network_timeout: int = 60
    #: Start the DIMSE listener with ``vna serve``; 0 disables it.
    enabled: bool = True
    #: DICOM TLS (PS3.15 B.12, BCP 195 TLS secure transport profile) on ``port`` (2762 is the
    #: registered dicom-tls port): PEM certificate chain of the archive (with tls_key).
    tls_cert: Path | None = None
    #: PEM private key of tls_cert.
    tls_key: Path | None = None
    #: PEM CA certificates: when set, a caller must present a certificate one of them signed.
    tls_ca: Path | None = None
    #: Listen on a non-loopback address although no sources are declared, accepting any
    #: calling AE title from anywhere as source DEFAULT (a closed test network).
    allow_any_caller: bool = False
    #: Accept associations whatever called AE title they name, instead of rejecting those
    #: not addressed to ``ae_title`` (PS3.8 9.3.4: called AE title not recognised).
    accept_any_called_ae: bool = False
    #: Storage Commitment (PS3.4 Annex J): an instance is reported committed only once its
    #: object is verified on this many ``[[replicas]]`` too (0: the active store suffices).
    commit_requires_replicas: int = 0
    #: Seconds a commitment report waits for replication before it reports what is not yet
    #: on enough replicas as failed.
    commit_timeout_seconds: int = 300


@dataclass(frozen=True)
class IngestSettings:
    #: Bytes; a larger single instance is refused.
    max_instance_bytes: int = 8 * 1024**3
    #: Instances ingested concurrently per server process: their fsyncs and catalogue
    #: writes overlap.  Parsing and hashing run in one thread per process whatever this says
    #: (they hold the GIL; measured with bench/ingest.py).
    concurrency: int = 8


@dataclass(frozen=True)
class QuerySettings:
    #: Upper bound on results of one QIDO-RS / C-FIND query.
    max_results: int = 10_000
    #: Results of a QIDO-RS query that gives no ``limit``.
    default_limit: int = 1_000


@dataclass(frozen=True)
class ChangeFeedSettings:
    """The change feed (``GET /dicom-web/changefeed``)."""

    #: Days an entry stays in the feed; older ones are dropped by the lifecycle scheduler.  A
    #: consumer away for longer must start again from ``/changefeed/latest``.
    keep_days: int = 90


@dataclass(frozen=True)
class RenderSettings:
    """Rendered images and thumbnails (PS3.18 8.3.5, 10.4.1.1.3; vna.rendering)."""

    #: Bytes of rendered images (JPEG, PNG) kept in memory per server process; the least
    #: recently used go first.  0 keeps none.
    cache_bytes: int = 64 * 1024**2
    #: Threads decoding and encoding images per server process (off the event loop).
    workers: int = 2
    #: Longest side, in pixels, of a thumbnail (PS3.18 10.4.1.1.4 leaves the size to the server).
    thumbnail_size: int = 128
    #: JPEG quality when the request names none (``quality``, PS3.18 8.3.5.1.2).
    jpeg_quality: int = 90


@dataclass(frozen=True)
class TranscodingSettings:
    """Transcoding on retrieve (WADO-RS transfer-syntax, DIMSE fallback; vna.transcoding)."""

    #: Megabytes of transcoded instances and frames kept in memory per server process, keyed
    #: by the stored object's SHA-256 and the syntax made; the least recently used go first.
    #: 0 keeps none.
    cache_mb: int = 256
    #: Threads decoding and encoding per server process (off the event loop).
    workers: int = 2
    #: Whether a request naming a lossy syntax (JPEG-LS near-lossless, JPEG 2000) may have
    #: losslessly stored pixel data compressed lossy.  Off: such a request is answered 406.
    allow_lossy: bool = False


@dataclass(frozen=True)
class UiSettings:
    """The operator web console at ``/ui/`` (vna.ui)."""

    #: Link of "open in viewer" on a study page, with ``{study}`` where the Study Instance UID
    #: goes (``https://ohif.example/viewer?StudyInstanceUIDs={study}``); empty: no link.
    viewer_url: str = ""
    #: Minutes a console session lasts after sign-in, however busy.
    session_minutes: int = 480
    #: Minutes without a request after which a console session ends (automatic log-off).
    idle_minutes: int = 30
    #: Rows per page of the console's long lists.
    page_size: int = 50


#: Console roles an OIDC group may grant (a ``source`` stores; no person signs in as one).
OIDC_ROLES = ("reader", "admin")


@dataclass(frozen=True)
class OidcGroupSettings:
    """``[[oidc.groups]]``: what members of one group (a value of the roles claim) may do in
    the console, in the terms of an API token (vna.security.tokens)."""

    #: A value of the ID token's ``roles_claim`` (a group name, an app role).
    value: str
    #: ``reader`` or ``admin``.
    role: str
    #: A reader's sources (their studies only); omitted: every source.
    read_sources: tuple[str, ...] | None = None


@dataclass(frozen=True)
class OidcSettings:
    """Console sign-in through an OpenID Connect provider (vna.security.oidc); off while
    ``issuer`` is empty."""

    #: The provider's issuer URL (https://, or http:// to a loopback address); its discovery
    #: document is ``{issuer}/.well-known/openid-configuration``.  Empty: no OIDC sign-in.
    issuer: str = ""
    #: The client ID the archive is registered under at the provider.
    client_id: str = ""
    #: The client secret (better from VNA_OIDC_CLIENT_SECRET or ``client_secret_file`` than
    #: in the file); empty with no file: a public client (PKCE only).
    client_secret: str = ""
    #: A file holding the client secret (a mounted secret), read at start-up.
    client_secret_file: Path | None = None
    #: The callback URL registered at the provider (https://vna.example/ui/oidc/callback);
    #: empty: made from the request's scheme and Host.
    redirect_url: str = ""
    #: Scopes asked for; ``openid`` is always sent.
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    #: The ID token claim listing the user's groups or roles.
    roles_claim: str = "groups"
    #: The ID token claim shown as the user's name (the subject when absent).
    name_claim: str = "preferred_username"
    #: The button's wording: "Sign in with <provider_name>".
    provider_name: str = "single sign-on"
    #: PEM CA certificates to verify the provider's HTTPS certificate with, in place of the
    #: system's trust store (a provider with a certificate from the hospital's own CA).
    ca_file: Path | None = None
    #: Seconds of clock difference tolerated on the ID token's ``exp`` and ``iat``.
    leeway_seconds: int = 60
    #: ``[[oidc.groups]]``: group values and the role and sources each grants (file only).
    groups: tuple[OidcGroupSettings, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)


@dataclass(frozen=True)
class LifecycleSettings:
    """The lifecycle engine's workers and schedule (``vna lifecycle run``)."""

    #: Jobs processed at once by one ``vna lifecycle run`` process.
    workers: int = 4
    #: Seconds an idle worker waits before looking for ready jobs again.
    poll_seconds: int = 2
    #: Seconds between scheduler steps: reaping expired leases, queueing forwards and
    #: notifications from the change feed (and so how late a study-stable event may be).
    tick_seconds: int = 30
    #: Seconds after which a running job whose worker stopped renewing it is taken over by
    #: another worker (a killed worker's job is retried, not lost).  Live workers renew every
    #: third of it.
    lease_seconds: int = 300
    #: First retry delay of a failed job; doubles per attempt up to ``retry_max_seconds``.
    retry_base_seconds: int = 30
    #: Longest retry delay of a failed job.
    retry_max_seconds: int = 3600
    #: How often tiering is evaluated over the whole catalogue.
    evaluate_every_seconds: int = 3600
    #: How often the retriever writes the access times it batched in memory.
    access_flush_seconds: int = 60
    #: An object replaced by its compressed form is deleted this long after the swap, so that
    #: retrievals that looked up the old key just before it can still read it.
    delete_grace_seconds: int = 3600
    #: Finished jobs are kept this long for ``vna lifecycle status``.
    keep_done_hours: int = 24
    #: Days a restored copy of an offline (S3 GLACIER / DEEP_ARCHIVE) object stays readable.
    restore_days: int = 3
    #: Run the workers inside ``vna serve`` too (one set, in its first worker process): the
    #: one-machine default.  Deployments that run ``vna lifecycle run`` separately turn it off.
    in_serve: bool = True


#: The values of ``[compression] codec``.
COMPRESSION_CODECS = ("zstd", "jpeg-ls", "jpeg2000", "htj2k")


@dataclass(frozen=True)
class CompressionSettings:
    """Background zstandard compression of instances in uncompressed transfer syntaxes."""

    #: zstandard level, 1 (fastest) to 22 (smallest); 0 turns compression off.
    level: int = 3
    #: Instances smaller than this many bytes are left as they are.
    min_size: int = 4096
    #: The compressed object is kept only when it saves at least this share of the bytes.
    min_saving_percent: int = 5
    #: How objects are compressed at rest: ``zstd`` (the whole object, any transfer syntax)
    #: or a lossless image codec for the pixel data of native little-endian images,
    #: ``jpeg-ls``, ``jpeg2000`` or ``htj2k`` (vna.storage.pixelpack); with an image codec,
    #: a retrieve still returns exactly the bytes received, and instances the codec cannot
    #: rebuild byte for byte are compressed with zstd instead (counted in ``vna lifecycle
    #: status``).
    codec: str = "zstd"


@dataclass(frozen=True)
class RetentionRuleSettings:
    """A declared retention period and the studies it applies to.

    A rule applies when every criterion it names matches (none named: every study).  Of the
    rules that apply, the one keeping the study longest decides, so adding a rule never
    shortens a retention.  A study no rule applies to is kept indefinitely.
    """

    name: str
    #: Any of the study's series modalities (PS3.3 C.7.3.1.1.1 defined terms: CT, MR, MG...).
    modalities: tuple[str, ...] = ()
    #: Glob on Study Description, case-insensitive (``*MAMMO*``).
    study_description: str = ""
    sources: tuple[str, ...] = ()
    #: Patient age in whole years on the study date, both bounds inclusive.
    min_age_at_study: int | None = None
    max_age_at_study: int | None = None
    #: Study date range, both bounds inclusive.
    study_date_from: dt.date | None = None
    study_date_to: dt.date | None = None
    #: Keep this many years after the study date ...
    retain_years: int | None = None
    #: ... and/or until the patient reaches this age; with both, the later date.
    retain_until_age: int | None = None


@dataclass(frozen=True)
class TieringRuleSettings:
    """Move a study's objects to a colder tier once every condition named here holds."""

    tier: str
    name: str = ""
    #: Days since the study date (the date it was received, when the study date is missing).
    min_study_age_days: int | None = None
    #: Days since any instance of the study was last retrieved (or received, if never).
    min_days_since_access: int | None = None
    modalities: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    #: Re-encode the study's objects as they move to this tier: ``zstd`` or a lossless image
    #: codec (``jpeg-ls``, ``jpeg2000``, ``htj2k``), byte-exact as ``[compression] codec``
    #: is; empty keeps them as they are.  An image codec for the cold tier saves storage on
    #: studies rarely read, while recent ones stay in the faster zstd.
    codec: str = ""


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
    #: Issuer of Patient ID Qualifiers Sequence (0010,0024) given with an assigned issuer
    #: (PS3.3 C.7.1.1): Universal Entity ID, its type (ISO, DNS, UUID...) and the Identifier
    #: Type Code (MR...).  Empty: not added.
    issuer_universal_entity_id: str = ""
    issuer_universal_entity_id_type: str = ""
    identifier_type_code: str = ""
    #: Convert text to UTF-8 (ISO_IR 192) at ingest.
    convert_to_utf8: bool = True
    #: Remove insignificant padding spaces from text values (PS3.5 6.2) at ingest.
    trim_padding: bool = True
    coerce: tuple[CoercionRule, ...] = ()
    #: Patients its C-FIND, C-MOVE, C-GET, QIDO-RS and WADO-RS reach: "own" (its issuer's),
    #: "linked" (and identities linked to them), "all" (every issuer's).
    query_scope: str = "own"


#: Senders of an archive that declares no sources: stored as received, bit-exact.
DEFAULT_SOURCE = SourceSettings(name="DEFAULT", convert_to_utf8=False, trim_padding=False)


@dataclass(frozen=True)
class AdminSettings:
    """The administration endpoints (``/admin``: conflicts, patient updates and links)."""

    #: SHA-256 hex digest of the bearer token the endpoints require.  Empty: they are served
    #: to loopback clients only.
    admin_token_sha256: str = ""


@dataclass(frozen=True)
class DestinationSettings:
    """A C-MOVE destination that is not a source (a viewer, a research node, another archive).

    A source with ``host`` and ``port`` is a C-MOVE destination too, under each of its AE titles.
    """

    name: str
    ae_title: str
    host: str
    port: int
    #: A transfer syntax UID this node always receives (C-MOVE and forwarding transcode to
    #: it); empty: the stored syntax where the node accepts it, else an uncompressed one.
    transfer_syntax: str = ""


@dataclass(frozen=True)
class ForwardRuleSettings:
    """``[[forward]]``: send every instance stored (or replaced, or corrected) that matches
    to a ``[[destinations]]`` node by C-STORE (``lifecycle.forwarding``).

    A rule matches when every condition it names holds (none named: every instance).
    """

    name: str
    #: The name of a ``[[destinations]]`` entry (C-STORE); or empty, with ``stow_url``.
    destination: str = ""
    #: A STOW-RS endpoint to POST the instances to instead (``https://pacs2/dicom-web/studies``)
    #: and the bearer token it takes (empty: none).
    stow_url: str = ""
    stow_token: str = ""
    #: PEM CA certificates to verify the STOW-RS endpoint's HTTPS certificate with, in place of
    #: the system's trust store.
    stow_ca_file: Path | None = None
    #: The instance's study's source (``[[sources]] name``), any of these.
    sources: tuple[str, ...] = ()
    #: The series' Modality, any of these (CT, MR...).
    modalities: tuple[str, ...] = ()
    #: SOP Class UIDs, any of these.
    sop_classes: tuple[str, ...] = ()
    #: Glob on Study Description, case-insensitive (``*THORAX*``).
    study_description: str = ""
    #: The AE title that sent the instance by C-STORE, any of these.
    calling_ae_titles: tuple[str, ...] = ()
    #: Wait this long after a change before sending it, so that a study arriving over some
    #: minutes goes out together, after its last instance.
    delay_seconds: int = 0

    @property
    def target(self) -> str:
        """What the outcome is recorded under: the destination's name, or the STOW-RS URL."""
        return self.destination or self.stow_url


#: Events a ``[[notifications]]`` subscription may ask for: the change feed's actions, and
#: ``study-stable`` (no instance of the study has arrived for ``stable_seconds``).
NOTIFICATION_EVENTS = ("create", "update", "delete", "reject", "tier", "study-stable")


@dataclass(frozen=True)
class NotificationSettings:
    """``[[notifications]]``: POST each matching change as a CloudEvents 1.0 JSON envelope,
    signed with HMAC-SHA256 of the body under ``secret`` (``lifecycle.notifications``)."""

    name: str
    #: https://..., or http:// to a loopback address.
    url: str
    secret: str = ""
    events: tuple[str, ...] = ("create", "update", "delete", "reject", "study-stable")
    #: Filters, as for ``[[forward]]``; modality and description apply where the instance is
    #: still held (a deletion is matched by source only).
    sources: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    study_description: str = ""
    #: An event not delivered this long after it was made is given up (dead).
    dead_after_seconds: int = 86400
    #: ``study-stable`` once no instance of a study has arrived for this long.
    stable_seconds: int = 300
    #: PEM CA certificates to verify the receiver's HTTPS certificate with, in place of the
    #: system's trust store (a receiver with a certificate from the hospital's own CA).
    ca_file: Path | None = None


@dataclass(frozen=True)
class ReplicaSettings:
    """A secondary object store (another site, region or provider) that every stored object
    is copied to and verified on, for disaster recovery (``vna dr ...``)."""

    name: str
    #: ``s3://bucket-dr?region=eu-central-1`` or ``file:///mnt/dr/objects``.
    storage_url: str


@dataclass(frozen=True)
class DrSettings:
    """Replication to the ``[[replicas]]`` and reads from them when the active store fails."""

    #: How often the lifecycle scheduler looks for instances without a verified copy on a
    #: replica (the safety net behind the per-instance replication jobs).
    sweep_every_seconds: int = 300
    #: Serve a retrieve from a replica when the active store cannot (missing object, store
    #: error), with a metric and a log line.
    read_fallback: bool = True


@dataclass(frozen=True)
class Hl7SenderSettings:
    """A sending facility (MSH-4) whose HL7 ADT messages are accepted, and the source it speaks
    for: the PatientIDs in its PID-3 are that source's issuer's."""

    sending_facility: str
    source: str


@dataclass(frozen=True)
class Hl7Settings:
    """The HL7 v2 ADT listener over MLLP (vna.gateway.hl7)."""

    #: Run the listener with ``vna serve``: true as soon as ``[hl7]`` (or a ``VNA_HL7_*``
    #: variable) is given; false turns it off again.
    enabled: bool = False
    #: Address the MLLP listener binds to (loopback unless set).
    host: str = "127.0.0.1"
    #: TCP port of the MLLP listener; 2575 is the port IANA registers for HL7.
    port: int = 2575
    #: Bytes; a larger message is answered AR and not read further.
    max_message_bytes: int = 1024**2
    #: Seconds a connection may stay silent (or a message half-sent) before it is closed.
    idle_timeout: int = 300
    #: PEM certificate chain of the listener: MLLP over TLS (as for ``[dimse]``).
    tls_cert: Path | None = None
    #: PEM private key of ``tls_cert``.
    tls_key: Path | None = None
    #: PEM CA certificates: when set, a sender must present a certificate one of them signed.
    tls_ca: Path | None = None
    #: ``[[hl7.senders]]``: the sending facilities accepted (file only).
    senders: tuple[Hl7SenderSettings, ...] = ()

    def sender(self, facility: str) -> Hl7SenderSettings | None:
        return next((s for s in self.senders if s.sending_facility == facility), None)


@dataclass(frozen=True)
class Settings:
    #: The archive's data directory: embedded catalogue (pg/), objects (objects/), scratch.
    data_dir: Path = Path("vna-data")
    #: The catalogue: postgresql://USER:PASSWORD@HOST/DB; empty: embedded PostgreSQL under
    #: ``data_dir/pg``.
    database_url: str = ""
    #: Prepared statements kept per catalogue connection (asyncpg's statement cache).  0 when
    #: ``database_url`` points at a transaction-mode pooler that does not track prepared
    #: statements (PgBouncer before 1.21, or 1.21+ without ``max_prepared_statements``):
    #: statements are then prepared unnamed, once per use (docs/scaling.md).
    database_statement_cache_size: int = 100
    #: The object store: file:///PATH or s3://BUCKET?region=...; empty:
    #: ``file://<data_dir>/objects``.
    storage_url: str = ""
    #: Log level of the servers (DEBUG, INFO, WARNING, ERROR); commands: -v.
    log_level: str = "INFO"
    #: This server's name when several servers of one deployment share ``data_dir`` (a shared
    #: volume) and an external catalogue (``database_url``).  Empty: one ``vna serve`` per
    #: data directory; a second one is refused (vna.server_lock).
    node_name: str = ""
    http: HttpSettings = field(default_factory=HttpSettings)
    dimse: DimseSettings = field(default_factory=DimseSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    query: QuerySettings = field(default_factory=QuerySettings)
    render: RenderSettings = field(default_factory=RenderSettings)
    transcoding: TranscodingSettings = field(default_factory=TranscodingSettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    changefeed: ChangeFeedSettings = field(default_factory=ChangeFeedSettings)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    sources: tuple[SourceSettings, ...] = ()
    destinations: tuple[DestinationSettings, ...] = ()
    retention_rules: tuple[RetentionRuleSettings, ...] = ()
    tiering_rules: tuple[TieringRuleSettings, ...] = ()
    dr: DrSettings = field(default_factory=DrSettings)
    replicas: tuple[ReplicaSettings, ...] = ()
    hl7: Hl7Settings = field(default_factory=Hl7Settings)
    ui: UiSettings = field(default_factory=UiSettings)
    oidc: OidcSettings = field(default_factory=OidcSettings)
    forward: tuple[ForwardRuleSettings, ...] = ()
    notifications: tuple[NotificationSettings, ...] = ()

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

    @property
    def dimse_host(self) -> str:
        """The address DIMSE listens on: ``dimse.host``, or when empty, every interface once
        sources are declared and loopback while none are (closed by default)."""
        if self.dimse.host:
            return self.dimse.host
        return "0.0.0.0" if self.sources else "127.0.0.1"

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

    def destination_syntax(self, ae_title: str) -> str:
        """The transfer syntax a C-MOVE destination always receives (``[[destinations]]
        transfer_syntax``); empty when it takes what it accepts."""
        for dest in self.destinations:
            if dest.ae_title == ae_title:
                return dest.transfer_syntax
        return ""


# --- reading -----------------------------------------------------------------------------------

_SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if dataclasses.is_dataclass(typing.get_type_hints(Settings)[f.name])
}


#: Arrays of tables (``[[sources]]``...): from the file only, never from the environment.
_TABLE_ARRAYS: dict[str, type] = {
    f.name: typing.get_args(typing.get_type_hints(Settings)[f.name])[0]
    for f in dataclasses.fields(Settings)
    if typing.get_origin(typing.get_type_hints(Settings)[f.name]) is tuple
    and dataclasses.is_dataclass(typing.get_args(typing.get_type_hints(Settings)[f.name])[0])
}


def environment_keys() -> list[str]:
    """Every environment variable the archive reads, for documentation and deployment checks."""
    keys = ["VNA_CONFIG", "VNA_CONFIG_TOML"]
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        if f.name in _SECTIONS:
            for sub in dataclasses.fields(_SECTIONS[f.name]):
                if _is_table_list(typing.get_type_hints(_SECTIONS[f.name])[sub.name]):
                    continue  # tables inside a section ([[hl7.senders]]): file only
                keys.append(f"{ENV_PREFIX}{f.name}_{sub.name}".upper())
        elif _is_scalar(hints[f.name]):
            keys.append(f"{ENV_PREFIX}{f.name}".upper())
    return keys


#: Variables of the project's test suite and benchmarks: not the archive's, not misspelt.
_TOOL_VARIABLES = frozenset(
    {"VNA_TEST_DATABASE_URL", "VNA_BENCH_DATABASE_URL", "VNA_SOAK_SECONDS", "VNA_CHECKOV"}
)


@dataclass(frozen=True)
class EnvironmentVariable:
    name: str
    #: The value when the variable is unset (and the file does not set the key), as text.
    default: str
    meaning: str


def environment_variables() -> list[EnvironmentVariable]:
    """Every variable the archive reads, with its default and meaning (the ``#:`` comment of
    its field here, so the documentation cannot drift from the code)."""
    out = [
        EnvironmentVariable("VNA_CONFIG", "", "path of the TOML configuration file"),
        EnvironmentVariable(
            "VNA_CONFIG_TOML", "", "the whole TOML configuration in one variable (no file)"
        ),
    ]
    hints = typing.get_type_hints(Settings)
    top_docs = _field_docs(Settings)
    for f in dataclasses.fields(Settings):
        if f.name in _SECTIONS:
            cls = _SECTIONS[f.name]
            docs = _field_docs(cls)
            for sub in dataclasses.fields(cls):
                if _is_table_list(typing.get_type_hints(cls)[sub.name]):
                    continue  # tables inside a section ([[hl7.senders]]): file only
                out.append(
                    EnvironmentVariable(
                        f"{ENV_PREFIX}{f.name}_{sub.name}".upper(),
                        _default_text(sub),
                        docs.get(sub.name, ""),
                    )
                )
        elif _is_scalar(hints[f.name]):
            out.append(
                EnvironmentVariable(
                    f"{ENV_PREFIX}{f.name}".upper(), _default_text(f), top_docs.get(f.name, "")
                )
            )
    return out


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """``VNA_*`` variables set that the archive does not read (a misspelt ``VNA_HTTP_PROT``
    would otherwise be ignored in silence), each with the known name it is closest to."""
    import difflib

    env = os.environ if environ is None else environ
    known = environment_keys()
    found = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in known or name in _TOOL_VARIABLES:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        found.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return found


def _field_docs(cls: type) -> dict[str, str]:
    """The ``#:`` comment lines above each field of a settings class, joined."""
    import inspect

    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
            continue
        field_line = re.match(r"^([a-z_][a-z0-9_]*)\s*:", text)
        if field_line and pending:
            docs[field_line.group(1)] = " ".join(" ".join(pending).replace("``", "").split())
        if not text.startswith("#"):
            pending = []
    return docs


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is dataclasses.MISSING or f.default is None:
        return ""
    value = f.default
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
    _refuse_unknown(document, dataclasses.fields(Settings), "")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name in _SECTIONS:
            table = document.get(f.name, {})
            if not isinstance(table, dict):
                raise ConfigError(f"'{f.name}' must be a table ([{f.name}])")
            values[f.name] = _build_section(f.name, _SECTIONS[f.name], table, env)
            if f.name == "hl7":
                values[f.name] = _hl7_presence(values[f.name], document, table, env)
        elif f.name in _TABLE_ARRAYS:
            values[f.name] = _build_tables(f.name, _TABLE_ARRAYS[f.name], document.get(f.name, []))
        else:
            _take(values, f.name, hints[f.name], document, env, "")
    values["oidc"] = _oidc_secret(values["oidc"])
    settings = Settings(**values)
    _validate(settings)
    return settings


def _oidc_secret(oidc: OidcSettings) -> OidcSettings:
    """The client secret from ``client_secret_file`` (a mounted secret), read here, once, so
    that nothing else reads files of the configuration."""
    if oidc.client_secret_file is None or not oidc.enabled:
        return oidc
    if oidc.client_secret:
        raise ConfigError("'oidc.client_secret' and 'oidc.client_secret_file': set one, not both")
    try:
        secret = oidc.client_secret_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"'oidc.client_secret_file': cannot read: {exc}") from exc
    if not secret:
        raise ConfigError(f"'oidc.client_secret_file': {oidc.client_secret_file} is empty")
    return dataclasses.replace(oidc, client_secret=secret)


def _build_section(name: str, cls: type, table: dict[str, Any], env: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    _refuse_unknown(table, dataclasses.fields(cls), f"{name}.")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if _is_table_list(hints[f.name]):  # [[hl7.senders]]: from the file only
            if f.name in table:
                values[f.name] = _coerce(table[f.name], hints[f.name], f"{name}.{f.name}", False)
            continue
        _take(values, f.name, hints[f.name], table, env, f"{name}.")
    return cls(**values)


def _refuse_unknown(
    table: Mapping[str, Any], fields: Iterable[dataclasses.Field[Any]], where: str
) -> None:
    """ConfigError naming the first key of ``table`` that is none of ``fields`` (``where``:
    the path before the key, ``""`` at the top, ``"http."``, ``"sources[0]."``)."""
    known = {f.name for f in fields}
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown configuration key '{where}{key}'")


def _take(
    values: dict[str, Any],
    key: str,
    hint: Any,
    table: Mapping[str, Any],
    env: Mapping[str, str],
    where: str,
) -> None:
    """Set ``values[key]`` from its environment variable (``VNA_KEY``, ``VNA_HTTP_PORT`` for
    ``where="http."``) if set, else from the file's ``table``; neither: left to the default."""
    env_name = f"{ENV_PREFIX}{where.replace('.', '_')}{key}".upper()
    if env_name in env:
        values[key] = _coerce(env[env_name], hint, env_name, from_env=True)
    elif key in table:
        values[key] = _coerce(table[key], hint, f"{where}{key}", from_env=False)


def _hl7_presence(
    hl7: Hl7Settings, document: dict[str, Any], table: dict[str, Any], env: Mapping[str, str]
) -> Hl7Settings:
    """The HL7 listener runs when ``[hl7]`` is present (or a ``VNA_HL7_*`` variable is set),
    unless ``enabled`` says otherwise."""
    if "enabled" in table or "VNA_HL7_ENABLED" in env:
        return hl7
    present = "hl7" in document or any(k.startswith("VNA_HL7_") for k in env)
    return dataclasses.replace(hl7, enabled=present)


def _build_tables(name: str, cls: Any, raw: Any) -> tuple[Any, ...]:
    """An array of tables (``[[sources]]``, ``[[destinations]]``) as a tuple of ``cls``."""
    if not isinstance(raw, list):
        raise ConfigError(f"'{name}' must be an array of tables ([[{name}]])")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
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
        _refuse_unknown(table, fields, f"{where}.")
        for key in required:
            if key not in table:
                raise ConfigError(f"'{where}.{key}' is required")
        values = {
            key: _coerce(value, hints[key], f"{where}.{key}", from_env=False)
            for key, value in table.items()
        }
        items.append(cls(**values))
    return tuple(items)


def _is_table_list(tp: Any) -> bool:
    """An array of tables (``[[hl7.senders]]``): from the file only."""
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and bool(args) and dataclasses.is_dataclass(args[0])


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
        if dataclasses.is_dataclass(item_type) and not from_env:
            return _build_tables(key, item_type, value)  # nested tables ([[sources.coerce]])
        if isinstance(value, dict) and not from_env:
            value = [[k, v] for k, v in value.items()]  # an inline table as (key, value) pairs
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
    if tp is dt.date:
        # TOML has dates of its own (1990-01-01); a quoted ISO date is accepted too.
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"'{key}' must be a date (YYYY-MM-DD), got {value!r}")
    raise ConfigError(f"'{key}': unsupported type {tp}")  # a programming error, said plainly


def _validate(s: Settings) -> None:
    for key, port in (("http.port", s.http.port), ("dimse.port", s.dimse.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"'{key}' must be between 0 and 65535, got {port}")
    if not 0 <= s.http.workers <= 64:
        raise ConfigError(
            f"'http.workers' must be between 0 (one per core) and 64, got {s.http.workers}"
        )
    for origin in s.http.cors_origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise ConfigError(
                f"'http.cors_origins': {origin!r} is not an origin"
                ' (scheme://host[:port], no path, or "*")'
            )
    if not _AE_TITLE.match(s.dimse.ae_title) or not s.dimse.ae_title.strip():
        raise ConfigError(f"'dimse.ae_title' is not a valid AE title: {s.dimse.ae_title!r}")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"'log_level' must be DEBUG, INFO, WARNING or ERROR, got {s.log_level!r}")
    if s.database_url and not s.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("'database_url' must be a postgresql:// URL")
    if s.storage_url:
        # Everything a store would refuse at start-up, refused here with the key's name.
        parse_store_url(s.storage_url, "'storage_url'")
    _validate_ports(s)
    if s.database_statement_cache_size < 0:
        raise ConfigError("'database_statement_cache_size' must be 0 or more")

    _validate_ui(s)
    _validate_oidc(s)
    if s.node_name and not _NAME.match(s.node_name):
        raise ConfigError("'node_name' must be 1-64 letters, digits, '_', '.' or '-'")
    for key, n in (
        ("ingest.max_instance_bytes", s.ingest.max_instance_bytes),
        ("ingest.concurrency", s.ingest.concurrency),
        ("http.max_request_bytes", s.http.max_request_bytes),
        ("http.max_parts", s.http.max_parts),
        ("query.max_results", s.query.max_results),
        ("query.default_limit", s.query.default_limit),
        ("render.workers", s.render.workers),
        ("render.thumbnail_size", s.render.thumbnail_size),
        ("dimse.max_associations", s.dimse.max_associations),
        ("lifecycle.workers", s.lifecycle.workers),
        ("lifecycle.poll_seconds", s.lifecycle.poll_seconds),
        ("lifecycle.tick_seconds", s.lifecycle.tick_seconds),
        ("lifecycle.lease_seconds", s.lifecycle.lease_seconds),
        ("lifecycle.retry_base_seconds", s.lifecycle.retry_base_seconds),
        ("lifecycle.retry_max_seconds", s.lifecycle.retry_max_seconds),
        ("lifecycle.evaluate_every_seconds", s.lifecycle.evaluate_every_seconds),
        ("lifecycle.access_flush_seconds", s.lifecycle.access_flush_seconds),
        ("lifecycle.keep_done_hours", s.lifecycle.keep_done_hours),
        ("lifecycle.restore_days", s.lifecycle.restore_days),
        ("changefeed.keep_days", s.changefeed.keep_days),
    ):
        if n <= 0:
            raise ConfigError(f"'{key}' must be positive, got {n}")
    if s.transcoding.cache_mb < 0:
        raise ConfigError(f"'transcoding.cache_mb' must be 0 or more, got {s.transcoding.cache_mb}")
    if not 1 <= s.transcoding.workers <= 64:
        raise ConfigError(
            f"'transcoding.workers' must be between 1 and 64, got {s.transcoding.workers}"
        )
    if s.render.cache_bytes < 0:
        raise ConfigError(f"'render.cache_bytes' must be 0 or more, got {s.render.cache_bytes}")
    if not 1 <= s.render.jpeg_quality <= 100:
        raise ConfigError(
            f"'render.jpeg_quality' must be between 1 and 100, got {s.render.jpeg_quality}"
        )
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
        if src.query_scope not in QUERY_SCOPES:
            raise ConfigError(
                f"'{where}.query_scope' must be one of {', '.join(QUERY_SCOPES)},"
                f" got {src.query_scope!r}"
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
        _validate_source_profile(where, src)
    _validate_destinations(s)
    _validate_forward(s)
    _validate_notifications(s)
    if s.admin.admin_token_sha256 and not re.match(r"^[0-9a-f]{64}$", s.admin.admin_token_sha256):
        raise ConfigError("'admin.admin_token_sha256' must be 64 lowercase hex digits")
    _validate_lifecycle(s)
    _validate_tls(s)
    _validate_replicas(s)
    _validate_hl7(s)
    _validate_commitment(s)


def _validate_ui(s: Settings) -> None:
    ui = s.ui
    if ui.viewer_url:
        parsed = urllib.parse.urlsplit(ui.viewer_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"'ui.viewer_url' must be an http(s) URL, got {ui.viewer_url!r}")
        if "{study}" not in ui.viewer_url:
            raise ConfigError("'ui.viewer_url' must contain {study} (the Study Instance UID)")
    for key, value in (
        ("ui.session_minutes", ui.session_minutes),
        ("ui.idle_minutes", ui.idle_minutes),
    ):
        if not 1 <= value <= 7 * 24 * 60:
            raise ConfigError(f"'{key}' must be between 1 and 10080 minutes, got {value}")
    if not 5 <= ui.page_size <= 1000:
        raise ConfigError(f"'ui.page_size' must be between 5 and 1000, got {ui.page_size}")


def _validate_oidc(s: Settings) -> None:
    o = s.oidc
    if not o.enabled:
        return
    issuer = urllib.parse.urlsplit(o.issuer)
    loopback = issuer.hostname in ("localhost", "127.0.0.1", "::1")
    # The ID token's keys come from the issuer: only over TLS, unless it is this machine.
    if not issuer.netloc or not (
        issuer.scheme == "https" or (issuer.scheme == "http" and loopback)
    ):
        raise ConfigError(
            f"'oidc.issuer' must be an https:// URL (http:// to a loopback address), got"
            f" {o.issuer!r}"
        )
    if not o.client_id:
        raise ConfigError("'oidc.client_id' is required with 'oidc.issuer'")
    if o.redirect_url:
        redirect = urllib.parse.urlsplit(o.redirect_url)
        if redirect.scheme not in ("http", "https") or not redirect.netloc:
            raise ConfigError(f"'oidc.redirect_url' must be an http(s) URL, got {o.redirect_url!r}")
    if not o.roles_claim or not o.name_claim:
        raise ConfigError("'oidc.roles_claim' and 'oidc.name_claim' must not be empty")
    if not 0 <= o.leeway_seconds <= 600:
        raise ConfigError(
            f"'oidc.leeway_seconds' must be between 0 and 600, got {o.leeway_seconds}"
        )
    if o.ca_file is not None and not o.ca_file.is_file():
        raise ConfigError(f"'oidc.ca_file': no such file: {o.ca_file}")
    if not o.groups:
        raise ConfigError(
            "'oidc.groups' is empty: declare [[oidc.groups]] (value, role) so that someone"
            " may sign in"
        )
    known = {src.name for src in s.sources}
    for i, group in enumerate(o.groups):
        where = f"oidc.groups[{i}]"
        if group.role not in OIDC_ROLES:
            raise ConfigError(
                f"'{where}.role' must be one of {', '.join(OIDC_ROLES)}, got {group.role!r}"
            )
        if group.read_sources is not None:
            if group.role == "admin":
                raise ConfigError(f"'{where}.read_sources': an admin reads every source")
            if not group.read_sources:
                raise ConfigError(
                    f"'{where}.read_sources' is empty: name sources, or omit it for every source"
                )
            for name in group.read_sources:
                if name not in known:
                    raise ConfigError(f"'{where}.read_sources': {name!r} is not a declared source")


def _validate_hl7(s: Settings) -> None:
    h = s.hl7
    if not 0 <= h.port <= 65535:
        raise ConfigError(f"'hl7.port' must be between 0 and 65535, got {h.port}")
    for key, n in (
        ("hl7.max_message_bytes", h.max_message_bytes),
        ("hl7.idle_timeout", h.idle_timeout),
    ):
        if n <= 0:
            raise ConfigError(f"'{key}' must be positive, got {n}")
    if (h.tls_cert is None) != (h.tls_key is None):
        raise ConfigError("'hl7.tls_cert' and 'hl7.tls_key' go together")
    if h.tls_ca is not None and h.tls_cert is None:
        raise ConfigError("'hl7.tls_ca' needs 'hl7.tls_cert' and 'hl7.tls_key'")
    known = {src.name for src in s.sources}
    seen: set[str] = set()
    for i, sender in enumerate(h.senders):
        where = f"hl7.senders[{i}]"
        if not sender.sending_facility.strip():
            raise ConfigError(f"'{where}.sending_facility' must not be empty")
        if sender.sending_facility in seen:
            raise ConfigError(
                f"'{where}.sending_facility': {sender.sending_facility!r} is declared twice"
            )
        seen.add(sender.sending_facility)
        # The source decides the issuer of the PatientIDs in PID-3: a typo would apply the
        # HIS's corrections to another hospital's patients, or to none.
        if sender.source not in known:
            raise ConfigError(f"'{where}.source': {sender.source!r} is not a declared source")


def _validate_commitment(s: Settings) -> None:
    """A commitment can only wait for replicas that exist (PS3.4 J.3.3: a report must come)."""
    n = s.dimse.commit_requires_replicas
    if not 0 <= n <= len(s.replicas):
        raise ConfigError(
            f"'dimse.commit_requires_replicas' must be between 0 and the number of [[replicas]]"
            f" ({len(s.replicas)}), got {n}"
        )
    if not 0 < s.dimse.commit_timeout_seconds <= 86400:
        raise ConfigError(
            "'dimse.commit_timeout_seconds' must be between 1 and 86400,"
            f" got {s.dimse.commit_timeout_seconds}"
        )


def _validate_ports(s: Settings) -> None:
    """DICOMweb and DIMSE cannot share a port (port 0: any free port, chosen apart), unless
    they listen on two different specific addresses."""
    if not s.dimse.enabled or s.http.port == 0 or s.http.port != s.dimse.port:
        return
    wildcard = ("", "0.0.0.0", "::", "*")
    if s.http.host == s.dimse.host or s.http.host in wildcard or s.dimse.host in wildcard:
        raise ConfigError(
            f"'dimse.port' {s.dimse.port} is also 'http.port': DICOMweb and DIMSE need two ports"
        )


def _validate_tls(s: Settings) -> None:
    """Certificates and keys go in pairs; the files themselves are read at start-up."""
    for section, cert, key in (
        ("http", s.http.tls_cert, s.http.tls_key),
        ("dimse", s.dimse.tls_cert, s.dimse.tls_key),
    ):
        if (cert is None) != (key is None):
            raise ConfigError(f"'{section}.tls_cert' and '{section}.tls_key' go together")
    if s.dimse.tls_ca is not None and s.dimse.tls_cert is None:
        raise ConfigError("'dimse.tls_ca' needs 'dimse.tls_cert' and 'dimse.tls_key'")
    if s.http.token_cache_seconds < 0:
        raise ConfigError("'http.token_cache_seconds' must not be negative")


def _validate_destination_syntax(uid: str, key: str) -> None:
    """A transfer syntax a destination always receives: a UID the archive can produce from
    any losslessly stored instance (vna.dicom.transcode)."""
    from vna.dicom.transcode import PRODUCIBLE, syntax_name

    if not _UID.match(uid) or len(uid) > 64:
        raise ConfigError(f"'{key}' is not a UID: {uid!r}")
    if uid not in PRODUCIBLE:
        names = ", ".join(PRODUCIBLE)
        raise ConfigError(f"'{key}': the archive cannot send {syntax_name(uid)}; one of {names}")


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
        if dest.transfer_syntax:
            _validate_destination_syntax(dest.transfer_syntax, f"{where}.transfer_syntax")


def _validate_forward(s: Settings) -> None:
    destinations = {d.name for d in s.destinations}
    names: set[str] = set()
    for i, rule in enumerate(s.forward):
        where = f"forward[{i}]"
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", rule.name):
            raise ConfigError(f"'{where}.name' must be 1-64 letters, digits, '_', '.' or '-'")
        if rule.name in names:
            raise ConfigError(f"'{where}.name': forward rule {rule.name!r} is declared twice")
        names.add(rule.name)
        if bool(rule.destination) == bool(rule.stow_url):
            raise ConfigError(f"'{where}' needs one of 'destination' and 'stow_url'")
        if rule.stow_url and not re.match(r"^https?://", rule.stow_url):
            raise ConfigError(f"'{where}.stow_url' must be an http:// or https:// URL")
        if rule.destination and rule.destination not in destinations:
            raise ConfigError(
                f"'{where}.destination': {rule.destination!r} is not a declared [[destinations]]"
                " name"
            )
        if rule.delay_seconds < 0:
            raise ConfigError(f"'{where}.delay_seconds' must not be negative")
        if rule.stow_ca_file is not None and not rule.stow_ca_file.is_file():
            raise ConfigError(f"'{where}.stow_ca_file': no such file: {rule.stow_ca_file}")


def _validate_notifications(s: Settings) -> None:
    names: set[str] = set()
    for i, n in enumerate(s.notifications):
        where = f"notifications[{i}]"
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", n.name):
            raise ConfigError(f"'{where}.name' must be 1-64 letters, digits, '_', '.' or '-'")
        if n.name in names:
            raise ConfigError(f"'{where}.name': {n.name!r} is declared twice")
        names.add(n.name)
        parsed = urllib.parse.urlparse(n.url)
        loopback = parsed.hostname in ("127.0.0.1", "::1", "localhost")
        if not (parsed.scheme == "https" or (parsed.scheme == "http" and loopback)):
            raise ConfigError(f"'{where}.url' must be https:// (http:// only to loopback)")
        unknown = set(n.events) - set(NOTIFICATION_EVENTS)
        if unknown or not n.events:
            raise ConfigError(f"'{where}.events' must be some of {', '.join(NOTIFICATION_EVENTS)}")
        if n.dead_after_seconds <= 0 or n.stable_seconds <= 0:
            raise ConfigError(f"'{where}': dead_after_seconds and stable_seconds must be positive")
        if n.ca_file is not None and not n.ca_file.is_file():
            raise ConfigError(f"'{where}.ca_file': no such file: {n.ca_file}")


def _validate_replicas(s: Settings) -> None:
    """Replica names are what the catalogue records copies under: unique, and never the
    reserved name of the configured store (``primary``)."""
    if s.dr.sweep_every_seconds <= 0:
        raise ConfigError(
            f"'dr.sweep_every_seconds' must be positive, got {s.dr.sweep_every_seconds}"
        )
    names: set[str] = set()
    urls = {s.effective_storage_url.rstrip("/"): "storage_url"}
    for i, replica in enumerate(s.replicas):
        where = f"replicas[{i}]"
        if not _NAME.match(replica.name):
            raise ConfigError(f"'{where}.name' must be 1-64 letters, digits, '_', '.' or '-'")
        if replica.name == "primary":
            raise ConfigError(f"'{where}.name': 'primary' names the store at storage_url")
        if replica.name in names:
            raise ConfigError(f"'{where}.name': replica {replica.name!r} is declared twice")
        names.add(replica.name)
        parse_store_url(replica.storage_url, f"'{where}.storage_url'")
        url = replica.storage_url.rstrip("/")
        if url in urls:
            raise ConfigError(f"'{where}.storage_url' is the same store as {urls[url]}")
        urls[url] = f"replica {replica.name!r}"


def _validate_lifecycle(s: Settings) -> None:
    if s.lifecycle.delete_grace_seconds < 0:
        raise ConfigError("'lifecycle.delete_grace_seconds' must not be negative")
    c = s.compression
    if not 0 <= c.level <= 22:
        raise ConfigError(f"'compression.level' must be 0 (off) to 22, got {c.level}")
    if c.min_size < 0:
        raise ConfigError(f"'compression.min_size' must not be negative, got {c.min_size}")
    if not 0 <= c.min_saving_percent <= 99:
        raise ConfigError(
            f"'compression.min_saving_percent' must be 0 to 99, got {c.min_saving_percent}"
        )
    if c.codec not in COMPRESSION_CODECS:
        raise ConfigError(
            f"'compression.codec' must be one of {', '.join(COMPRESSION_CODECS)}, got {c.codec!r}"
        )
    # A rule naming a source that does not exist would silently never match: a typo in a
    # retention rule must not become a study kept (or deleted) under another rule.
    known_sources = {src.name for src in s.sources} | {DEFAULT_SOURCE.name}
    names: set[str] = set()
    for i, rule in enumerate(s.retention_rules):
        where = f"retention_rules[{i}]"
        if not _NAME.match(rule.name):
            raise ConfigError(f"'{where}.name' must be 1-64 letters, digits, '_', '.' or '-'")
        if rule.name in names:
            raise ConfigError(f"'{where}.name': retention rule {rule.name!r} is declared twice")
        names.add(rule.name)
        _validate_matchers(where, rule.modalities, rule.sources, known_sources)
        if rule.retain_years is None and rule.retain_until_age is None:
            raise ConfigError(f"'{where}': give retain_years, retain_until_age or both")
        for key, value in (
            ("retain_years", rule.retain_years),
            ("retain_until_age", rule.retain_until_age),
        ):
            if value is not None and not 0 < value <= 200:
                raise ConfigError(f"'{where}.{key}' must be between 1 and 200, got {value}")
        for key, value in (
            ("min_age_at_study", rule.min_age_at_study),
            ("max_age_at_study", rule.max_age_at_study),
        ):
            if value is not None and not 0 <= value <= 200:
                raise ConfigError(f"'{where}.{key}' must be between 0 and 200, got {value}")
        if (
            rule.min_age_at_study is not None
            and rule.max_age_at_study is not None
            and rule.min_age_at_study > rule.max_age_at_study
        ):
            raise ConfigError(f"'{where}': min_age_at_study is above max_age_at_study")
        if (
            rule.study_date_from is not None
            and rule.study_date_to is not None
            and rule.study_date_from > rule.study_date_to
        ):
            raise ConfigError(f"'{where}': study_date_from is after study_date_to")
    for i, tiering in enumerate(s.tiering_rules):
        where = f"tiering_rules[{i}]"
        if tiering.tier not in TIERS[1:]:
            raise ConfigError(f"'{where}.tier' must be warm or cold, got {tiering.tier!r}")
        if tiering.min_study_age_days is None and tiering.min_days_since_access is None:
            raise ConfigError(f"'{where}': give min_study_age_days, min_days_since_access or both")
        for key, value in (
            ("min_study_age_days", tiering.min_study_age_days),
            ("min_days_since_access", tiering.min_days_since_access),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"'{where}.{key}' must not be negative, got {value}")
        _validate_matchers(where, tiering.modalities, tiering.sources, known_sources)
        if tiering.codec and tiering.codec not in COMPRESSION_CODECS:
            raise ConfigError(
                f"'{where}.codec' must be one of {', '.join(COMPRESSION_CODECS)}, got"
                f" {tiering.codec!r}"
            )


def _validate_matchers(
    where: str, modalities: tuple[str, ...], sources: tuple[str, ...], known: set[str]
) -> None:
    for modality in modalities:
        if not _MODALITY.match(modality):
            raise ConfigError(
                f"'{where}.modalities': {modality!r} is not a modality (upper-case, e.g. CT, MG)"
            )
    for source in sources:
        if source not in known:
            raise ConfigError(f"'{where}.sources': {source!r} is not a declared source")


def _validate_source_profile(where: str, src: SourceSettings) -> None:
    for j, rule in enumerate(src.coerce):
        problem = rule_problem(rule, f"{where}.coerce[{j}]")
        if problem is not None:
            raise ConfigError(problem)
    if src.issuer_universal_entity_id_type and not src.issuer_universal_entity_id:
        raise ConfigError(f"'{where}.issuer_universal_entity_id_type' needs the entity ID")
