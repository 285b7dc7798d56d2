-- The catalogue schema as the migrations leave it: generated, do not edit.
-- Refresh after adding a migration: .venv/bin/python -m vna.catalog.schema --write
-- (vna/catalog/schema.py; a test compares it with a freshly migrated database.)

-- Migrations applied:
--   0001_initial
--   0002_query_indexes
--   0010_lifecycle
--   0020_federation
--   0030_disaster_recovery
--   0040_security
--   0050_study_changes
--   0051_restored_objects
--   0060_search_covering_index
--   0070_filing_functions
--   0080_hierarchy_share_locks
--   0090_file_new_instances
--   0100_pending_patient_links
--   0120_study_set_source
--   0130_object_layouts
--   0140_hl7_messages
--   0150_storage_commitment
--   0160_rejections
--   0170_change_feed
--   0171_forwarding
--   0172_notifications
--   0185_compression_fallbacks
--   0195_read_repairs
--   0200_console_sessions
--   0205_audit_action
--   0210_object_layouts_cleanup
--   0211_viewer_upkeep
--   0215_forward_study_batches
--   0216_notification_studies
--   0217_console_oidc

CREATE TABLE api_tokens (
    id bigint NOT NULL DEFAULT nextval('api_tokens_id_seq'::regclass),
    name text NOT NULL,
    token_sha256 text NOT NULL,
    role text NOT NULL,
    source text,
    read_sources text[],
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    expires_at timestamp with time zone,
    revoked_at timestamp with time zone,
    revoked_by text,
    CONSTRAINT api_tokens_check CHECK (((role = 'source'::text) = (source IS NOT NULL))),
    CONSTRAINT api_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT api_tokens_role_check CHECK ((role = ANY (ARRAY['source'::text, 'reader'::text, 'admin'::text]))),
    CONSTRAINT api_tokens_token_sha256_key UNIQUE (token_sha256)
);

CREATE TABLE audit (
    id bigint NOT NULL DEFAULT nextval('audit_id_seq'::regclass),
    at timestamp with time zone NOT NULL DEFAULT now(),
    actor text NOT NULL,
    origin text NOT NULL DEFAULT ''::text,
    action text NOT NULL,
    outcome text NOT NULL DEFAULT 'success'::text,
    patient_id text,
    issuer text,
    study_uid text,
    series_uid text,
    sop_uid text,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    study_uids text[],
    patient_ids text[],
    CONSTRAINT audit_pkey PRIMARY KEY (id)
);

CREATE TABLE change_log (
    sequence bigint NOT NULL,
    action text NOT NULL,
    study_uid text NOT NULL,
    series_uid text NOT NULL,
    sop_uid text NOT NULL,
    source text NOT NULL DEFAULT ''::text,
    changed_at timestamp with time zone NOT NULL,
    logged_at timestamp with time zone NOT NULL,
    CONSTRAINT change_log_action_check CHECK ((action = ANY (ARRAY['create'::text, 'update'::text, 'delete'::text, 'reject'::text, 'tier'::text]))),
    CONSTRAINT change_log_pkey PRIMARY KEY (sequence)
);

CREATE TABLE change_pending (
    id bigint NOT NULL DEFAULT nextval('change_pending_id_seq'::regclass),
    action text NOT NULL,
    study_uid text NOT NULL,
    series_uid text NOT NULL,
    sop_uid text NOT NULL,
    source text NOT NULL DEFAULT ''::text,
    changed_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT change_pending_pkey PRIMARY KEY (id)
);

CREATE TABLE change_sequencer (
    one boolean NOT NULL DEFAULT true,
    last_sequence bigint NOT NULL,
    last_logged_at timestamp with time zone NOT NULL,
    CONSTRAINT change_sequencer_one_check CHECK (one),
    CONSTRAINT change_sequencer_pkey PRIMARY KEY (one)
);

CREATE TABLE commitments (
    id bigint NOT NULL DEFAULT nextval('commitments_id_seq'::regclass),
    transaction_uid text NOT NULL,
    source text NOT NULL,
    calling_ae text NOT NULL,
    origin text NOT NULL DEFAULT ''::text,
    requested_at timestamp with time zone NOT NULL DEFAULT now(),
    required_replicas integer NOT NULL DEFAULT 0,
    state text NOT NULL DEFAULT 'pending'::text,
    refs jsonb NOT NULL,
    instances integer NOT NULL,
    committed integer,
    failed integer,
    result jsonb,
    reported_via text,
    reported_at timestamp with time zone,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    CONSTRAINT commitments_pkey PRIMARY KEY (id),
    CONSTRAINT commitments_state_check CHECK ((state = ANY (ARRAY['pending'::text, 'reported'::text, 'undeliverable'::text])))
);

CREATE TABLE compression_fallbacks (
    instance_fk bigint NOT NULL,
    codec text NOT NULL,
    reason text NOT NULL,
    at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT compression_fallbacks_pkey PRIMARY KEY (instance_fk),
    CONSTRAINT compression_fallbacks_instance_fk_fkey FOREIGN KEY (instance_fk) REFERENCES instances(id) ON DELETE CASCADE
);

CREATE TABLE conflicts (
    id bigint NOT NULL DEFAULT nextval('conflicts_id_seq'::regclass),
    sop_uid text NOT NULL,
    study_uid text NOT NULL,
    series_uid text NOT NULL,
    source text NOT NULL,
    actor text NOT NULL,
    sha256 text NOT NULL,
    received_sha256 text NOT NULL,
    data_set_sha256 text NOT NULL,
    size bigint NOT NULL,
    object_key text NOT NULL,
    transfer_syntax text NOT NULL,
    header jsonb NOT NULL,
    issuer text NOT NULL,
    metadata jsonb NOT NULL,
    received_at timestamp with time zone NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'open'::text,
    resolved_at timestamp with time zone,
    resolved_by text,
    CONSTRAINT conflicts_pkey PRIMARY KEY (id),
    CONSTRAINT conflicts_state_check CHECK ((state = ANY (ARRAY['open'::text, 'accepted'::text, 'discarded'::text]))),
    CONSTRAINT conflicts_version UNIQUE (sop_uid, received_sha256)
);

CREATE TABLE console_oidc_states (
    state_sha256 text NOT NULL,
    browser_sha256 text NOT NULL,
    nonce text NOT NULL,
    code_verifier text NOT NULL,
    redirect_url text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT console_oidc_states_pkey PRIMARY KEY (state_sha256)
);

CREATE TABLE console_sessions (
    session_sha256 text NOT NULL,
    token_sha256 text,
    actor text NOT NULL,
    csrf text NOT NULL,
    origin text NOT NULL DEFAULT ''::text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    last_seen timestamp with time zone NOT NULL DEFAULT now(),
    expires_at timestamp with time zone NOT NULL,
    oidc_issuer text,
    oidc_subject text,
    display_name text,
    role text,
    read_sources text[],
    CONSTRAINT console_sessions_credential CHECK ((((token_sha256 IS NOT NULL) AND (oidc_subject IS NULL) AND (role IS NULL)) OR ((token_sha256 IS NULL) AND (oidc_subject IS NOT NULL) AND (oidc_issuer IS NOT NULL) AND (role = ANY (ARRAY['reader'::text, 'admin'::text]))))),
    CONSTRAINT console_sessions_pkey PRIMARY KEY (session_sha256)
);

CREATE TABLE dr_drills (
    id bigint NOT NULL DEFAULT nextval('dr_drills_id_seq'::regclass),
    store text NOT NULL,
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone NOT NULL,
    actor text NOT NULL,
    mode text NOT NULL,
    checked integer NOT NULL,
    verified integer NOT NULL,
    defects integer NOT NULL,
    rpo_seconds double precision,
    rto_seconds double precision,
    lost_instances integer NOT NULL,
    lost_bytes bigint NOT NULL,
    report jsonb NOT NULL,
    CONSTRAINT dr_drills_pkey PRIMARY KEY (id)
);

CREATE TABLE dr_state (
    singleton boolean NOT NULL DEFAULT true,
    active_store text NOT NULL DEFAULT 'primary'::text,
    changed_at timestamp with time zone,
    changed_by text,
    CONSTRAINT dr_state_pkey PRIMARY KEY (singleton),
    CONSTRAINT dr_state_singleton_check CHECK (singleton)
);

CREATE TABLE forwards (
    id bigint NOT NULL DEFAULT nextval('forwards_id_seq'::regclass),
    destination text NOT NULL,
    rule text NOT NULL,
    change_sequence bigint NOT NULL,
    study_uid text NOT NULL,
    sop_uid text NOT NULL,
    state text NOT NULL DEFAULT 'queued'::text,
    attempts integer NOT NULL DEFAULT 0,
    status integer,
    error text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT forwards_destination_change_sequence_key UNIQUE (destination, change_sequence),
    CONSTRAINT forwards_pkey PRIMARY KEY (id),
    CONSTRAINT forwards_state_check CHECK ((state = ANY (ARRAY['queued'::text, 'sent'::text, 'failed'::text])))
);

CREATE TABLE hl7_messages (
    id bigint NOT NULL DEFAULT nextval('hl7_messages_id_seq'::regclass),
    sending_facility text,
    control_id text,
    received_at timestamp with time zone NOT NULL DEFAULT now(),
    last_received_at timestamp with time zone NOT NULL DEFAULT now(),
    receipts integer NOT NULL DEFAULT 1,
    peer text NOT NULL DEFAULT ''::text,
    message_type text NOT NULL DEFAULT ''::text,
    source text,
    patient text,
    state text NOT NULL DEFAULT 'processing'::text,
    ack_code text,
    outcome text,
    detail text NOT NULL DEFAULT ''::text,
    change_ids bigint[] NOT NULL DEFAULT '{}'::bigint[],
    message text NOT NULL DEFAULT ''::text,
    CONSTRAINT hl7_messages_pkey PRIMARY KEY (id),
    CONSTRAINT hl7_messages_state_check CHECK ((state = ANY (ARRAY['processing'::text, 'done'::text])))
);

CREATE TABLE instance_versions (
    id bigint NOT NULL DEFAULT nextval('instance_versions_id_seq'::regclass),
    instance_fk bigint NOT NULL,
    sop_uid text NOT NULL,
    series_fk bigint NOT NULL,
    sop_class_uid text NOT NULL,
    instance_number integer,
    transfer_syntax text NOT NULL,
    sha256 text NOT NULL,
    received_sha256 text NOT NULL,
    data_set_sha256 text,
    size bigint NOT NULL,
    object_key text NOT NULL,
    stored_size bigint NOT NULL,
    compression text NOT NULL,
    tier text NOT NULL,
    source text NOT NULL,
    received_at timestamp with time zone NOT NULL,
    metadata jsonb NOT NULL,
    reason text NOT NULL,
    change_fk bigint,
    superseded_by text NOT NULL,
    superseded_at timestamp with time zone NOT NULL DEFAULT now(),
    actor text NOT NULL,
    CONSTRAINT instance_versions_pkey PRIMARY KEY (id)
);

CREATE TABLE instances (
    id bigint NOT NULL DEFAULT nextval('instances_id_seq'::regclass),
    sop_uid text NOT NULL,
    series_fk bigint NOT NULL,
    sop_class_uid text NOT NULL,
    instance_number integer,
    transfer_syntax text NOT NULL,
    rows integer,
    columns integer,
    number_of_frames integer,
    has_pixel_data boolean NOT NULL DEFAULT false,
    sha256 text NOT NULL,
    received_sha256 text NOT NULL,
    size bigint NOT NULL,
    object_key text NOT NULL,
    tier text NOT NULL DEFAULT 'hot'::text,
    compression text NOT NULL DEFAULT 'none'::text,
    stored_size bigint NOT NULL,
    source text NOT NULL,
    received_at timestamp with time zone NOT NULL DEFAULT now(),
    last_accessed_at timestamp with time zone,
    metadata jsonb NOT NULL,
    data_set_sha256 text,
    restored_until timestamp with time zone,
    rejection_fk bigint,
    CONSTRAINT instances_pkey PRIMARY KEY (id),
    CONSTRAINT instances_sop_uid_key UNIQUE (sop_uid),
    CONSTRAINT instances_rejection_fk_fkey FOREIGN KEY (rejection_fk) REFERENCES rejection_notes(id) ON DELETE SET NULL,
    CONSTRAINT instances_series_fk_fkey FOREIGN KEY (series_fk) REFERENCES series(id) ON DELETE CASCADE
);

CREATE TABLE jobs (
    id bigint NOT NULL DEFAULT nextval('jobs_id_seq'::regclass),
    kind text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    state text NOT NULL DEFAULT 'queued'::text,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 8,
    run_after timestamp with time zone NOT NULL DEFAULT now(),
    locked_by text,
    locked_at timestamp with time zone,
    last_error text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    dedup_key text,
    CONSTRAINT jobs_pkey PRIMARY KEY (id),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['queued'::text, 'running'::text, 'done'::text, 'dead'::text])))
);

CREATE TABLE layout_backlog (
    instance_fk bigint NOT NULL,
    queued boolean NOT NULL DEFAULT false,
    CONSTRAINT layout_backlog_pkey PRIMARY KEY (instance_fk),
    CONSTRAINT layout_backlog_instance_fk_fkey FOREIGN KEY (instance_fk) REFERENCES instances(id) ON DELETE CASCADE
);

CREATE TABLE legal_holds (
    id bigint NOT NULL DEFAULT nextval('legal_holds_id_seq'::regclass),
    scope text NOT NULL,
    patient_id text,
    issuer text,
    study_uid text,
    reason text NOT NULL,
    set_by text NOT NULL,
    set_at timestamp with time zone NOT NULL DEFAULT now(),
    released_by text,
    released_at timestamp with time zone,
    CONSTRAINT legal_holds_check CHECK ((((scope = 'patient'::text) AND (patient_id IS NOT NULL) AND (issuer IS NOT NULL)) OR ((scope = 'study'::text) AND (study_uid IS NOT NULL)))),
    CONSTRAINT legal_holds_pkey PRIMARY KEY (id),
    CONSTRAINT legal_holds_scope_check CHECK ((scope = ANY (ARRAY['patient'::text, 'study'::text])))
);

CREATE TABLE lifecycle_state (
    key text NOT NULL,
    value text NOT NULL,
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT lifecycle_state_pkey PRIMARY KEY (key)
);

CREATE TABLE notification_studies (
    target text NOT NULL,
    study_uid text NOT NULL,
    last_sequence bigint NOT NULL,
    last_change timestamp with time zone NOT NULL,
    stable_sequence bigint,
    CONSTRAINT notification_studies_pkey PRIMARY KEY (target, study_uid)
);

CREATE TABLE notifications (
    id bigint NOT NULL DEFAULT nextval('notifications_id_seq'::regclass),
    target text NOT NULL,
    change_sequence bigint NOT NULL,
    event_type text NOT NULL,
    study_uid text NOT NULL,
    data jsonb NOT NULL,
    event_time timestamp with time zone NOT NULL,
    state text NOT NULL DEFAULT 'pending'::text,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT notifications_pkey PRIMARY KEY (id),
    CONSTRAINT notifications_state_check CHECK ((state = ANY (ARRAY['pending'::text, 'delivered'::text, 'dead'::text]))),
    CONSTRAINT notifications_target_change_sequence_event_type_key UNIQUE (target, change_sequence, event_type)
);

CREATE TABLE object_layouts (
    sha256 text NOT NULL,
    layout jsonb NOT NULL,
    recorded_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT object_layouts_pkey PRIMARY KEY (sha256)
);

CREATE TABLE patient_changes (
    id bigint NOT NULL DEFAULT nextval('patient_changes_id_seq'::regclass),
    kind text NOT NULL,
    patient_id text NOT NULL,
    issuer text NOT NULL,
    target_patient_id text NOT NULL,
    target_issuer text NOT NULL,
    previous jsonb NOT NULL,
    changes jsonb NOT NULL,
    state text NOT NULL DEFAULT 'applied'::text,
    actor text NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    undone_by text,
    undone_at timestamp with time zone,
    study_uid text,
    CONSTRAINT patient_changes_kind_check CHECK ((kind = ANY (ARRAY['update'::text, 'merge'::text, 'study-update'::text, 'study-move'::text, 'study-set-source'::text]))),
    CONSTRAINT patient_changes_pkey PRIMARY KEY (id),
    CONSTRAINT patient_changes_state_check CHECK ((state = ANY (ARRAY['applied'::text, 'undone'::text])))
);

CREATE TABLE patient_links (
    id bigint NOT NULL DEFAULT nextval('patient_links_id_seq'::regclass),
    patient_id_a text NOT NULL,
    issuer_a text NOT NULL,
    patient_id_b text NOT NULL,
    issuer_b text NOT NULL,
    reason text NOT NULL DEFAULT ''::text,
    created_by text NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    removed_by text,
    removed_at timestamp with time zone,
    CONSTRAINT patient_links_check CHECK ((ROW(patient_id_a, issuer_a) < ROW(patient_id_b, issuer_b))),
    CONSTRAINT patient_links_pkey PRIMARY KEY (id)
);

CREATE TABLE patients (
    id bigint NOT NULL DEFAULT nextval('patients_id_seq'::regclass),
    patient_id text NOT NULL,
    issuer text NOT NULL DEFAULT ''::text,
    patient_name text NOT NULL DEFAULT ''::text,
    birth_date text NOT NULL DEFAULT ''::text,
    sex text NOT NULL DEFAULT ''::text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT patients_identity UNIQUE (patient_id, issuer),
    CONSTRAINT patients_pkey PRIMARY KEY (id)
);

CREATE TABLE pending_patient_links (
    id bigint NOT NULL DEFAULT nextval('pending_patient_links_id_seq'::regclass),
    patient_id_a text NOT NULL,
    issuer_a text NOT NULL,
    patient_id_b text NOT NULL,
    issuer_b text NOT NULL,
    sop_uid text NOT NULL,
    study_uid text NOT NULL,
    source text NOT NULL,
    sightings integer NOT NULL DEFAULT 1,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    last_seen_at timestamp with time zone NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'pending'::text,
    decided_by text,
    decided_at timestamp with time zone,
    link_fk bigint,
    CONSTRAINT pending_patient_links_check CHECK ((ROW(patient_id_a, issuer_a) < ROW(patient_id_b, issuer_b))),
    CONSTRAINT pending_patient_links_pkey PRIMARY KEY (id),
    CONSTRAINT pending_patient_links_state_check CHECK ((state = ANY (ARRAY['pending'::text, 'accepted'::text, 'rejected'::text])))
);

CREATE TABLE read_repairs (
    id bigint NOT NULL DEFAULT nextval('read_repairs_id_seq'::regclass),
    store text NOT NULL,
    object_key text NOT NULL,
    outcome text NOT NULL,
    detail text NOT NULL DEFAULT ''::text,
    served_from text,
    detected_at timestamp with time zone NOT NULL DEFAULT now(),
    detections integer NOT NULL DEFAULT 1,
    resolved_at timestamp with time zone,
    resolution text,
    repaired_from text,
    CONSTRAINT read_repairs_pkey PRIMARY KEY (id)
);

CREATE TABLE rejected_instances (
    note_fk bigint NOT NULL,
    sop_uid text NOT NULL,
    study_uid text NOT NULL,
    series_uid text NOT NULL,
    CONSTRAINT rejected_instances_pkey PRIMARY KEY (note_fk, sop_uid),
    CONSTRAINT rejected_instances_note_fk_fkey FOREIGN KEY (note_fk) REFERENCES rejection_notes(id) ON DELETE CASCADE
);

CREATE TABLE rejection_notes (
    id bigint NOT NULL DEFAULT nextval('rejection_notes_id_seq'::regclass),
    note_sop_uid text NOT NULL,
    study_uid text NOT NULL,
    series_uid text NOT NULL,
    code text NOT NULL,
    meaning text NOT NULL,
    actor text NOT NULL,
    received_at timestamp with time zone NOT NULL DEFAULT now(),
    undone_at timestamp with time zone,
    undone_by text,
    undo_reason text,
    CONSTRAINT rejection_notes_note_sop_uid_key UNIQUE (note_sop_uid),
    CONSTRAINT rejection_notes_pkey PRIMARY KEY (id)
);

CREATE TABLE replicas (
    store text NOT NULL,
    object_key text NOT NULL,
    instance_fk bigint,
    sha256 text NOT NULL,
    size bigint NOT NULL,
    copied_at timestamp with time zone NOT NULL DEFAULT now(),
    verified_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT replicas_pkey PRIMARY KEY (store, object_key)
);

CREATE TABLE retention_review_items (
    review_fk bigint NOT NULL,
    study_fk bigint NOT NULL,
    study_uid text NOT NULL,
    patient_id text NOT NULL,
    issuer text NOT NULL,
    patient_name text NOT NULL,
    accession_number text NOT NULL,
    study_date date,
    study_description text NOT NULL,
    modalities text[] NOT NULL,
    source text NOT NULL,
    rule text NOT NULL,
    rule_fingerprint text NOT NULL,
    retain_until date NOT NULL,
    basis text NOT NULL,
    instances integer NOT NULL,
    max_instance_id bigint NOT NULL,
    bytes bigint NOT NULL,
    stored_bytes bigint NOT NULL,
    hold text,
    state text NOT NULL,
    outcome text,
    done_at timestamp with time zone,
    CONSTRAINT retention_review_items_pkey PRIMARY KEY (review_fk, study_fk),
    CONSTRAINT retention_review_items_state_check CHECK ((state = ANY (ARRAY['due'::text, 'held'::text, 'pending'::text, 'deleted'::text, 'skipped'::text]))),
    CONSTRAINT retention_review_items_review_fk_fkey FOREIGN KEY (review_fk) REFERENCES retention_reviews(id) ON DELETE CASCADE
);

CREATE TABLE retention_review_rejections (
    review_fk bigint NOT NULL,
    instance_fk bigint NOT NULL,
    sop_uid text NOT NULL,
    study_uid text NOT NULL,
    series_uid text NOT NULL,
    patient_id text NOT NULL,
    issuer text NOT NULL,
    note_fk bigint NOT NULL,
    note_sop_uid text NOT NULL,
    code text NOT NULL,
    meaning text NOT NULL,
    bytes bigint NOT NULL,
    hold text,
    state text NOT NULL,
    outcome text,
    done_at timestamp with time zone,
    CONSTRAINT retention_review_rejections_pkey PRIMARY KEY (review_fk, instance_fk),
    CONSTRAINT retention_review_rejections_state_check CHECK ((state = ANY (ARRAY['due'::text, 'held'::text, 'deleted'::text, 'skipped'::text]))),
    CONSTRAINT retention_review_rejections_review_fk_fkey FOREIGN KEY (review_fk) REFERENCES retention_reviews(id) ON DELETE CASCADE
);

CREATE TABLE retention_reviews (
    id bigint NOT NULL DEFAULT nextval('retention_reviews_id_seq'::regclass),
    as_of date NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    rules_fingerprint text NOT NULL,
    state text NOT NULL DEFAULT 'open'::text,
    approved_by text,
    approved_at timestamp with time zone,
    CONSTRAINT retention_reviews_pkey PRIMARY KEY (id),
    CONSTRAINT retention_reviews_state_check CHECK ((state = ANY (ARRAY['open'::text, 'approved'::text])))
);

CREATE TABLE schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (version)
);

CREATE TABLE series (
    id bigint NOT NULL DEFAULT nextval('series_id_seq'::regclass),
    series_uid text NOT NULL,
    study_fk bigint NOT NULL,
    modality text NOT NULL DEFAULT ''::text,
    series_number integer,
    series_description text NOT NULL DEFAULT ''::text,
    body_part text NOT NULL DEFAULT ''::text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT series_pkey PRIMARY KEY (id),
    CONSTRAINT series_series_uid_key UNIQUE (series_uid),
    CONSTRAINT series_study_fk_fkey FOREIGN KEY (study_fk) REFERENCES studies(id) ON DELETE CASCADE
);

CREATE TABLE studies (
    id bigint NOT NULL DEFAULT nextval('studies_id_seq'::regclass),
    study_uid text NOT NULL,
    patient_fk bigint NOT NULL,
    study_date date,
    study_time text NOT NULL DEFAULT ''::text,
    accession_number text NOT NULL DEFAULT ''::text,
    study_id text NOT NULL DEFAULT ''::text,
    study_description text NOT NULL DEFAULT ''::text,
    referring_physician text NOT NULL DEFAULT ''::text,
    source text NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT studies_pkey PRIMARY KEY (id),
    CONSTRAINT studies_study_uid_key UNIQUE (study_uid),
    CONSTRAINT studies_patient_fk_fkey FOREIGN KEY (patient_fk) REFERENCES patients(id)
);

CREATE TABLE study_retention (
    study_fk bigint NOT NULL,
    rule text NOT NULL DEFAULT ''::text,
    rule_fingerprint text NOT NULL DEFAULT ''::text,
    retain_until date,
    basis text NOT NULL DEFAULT ''::text,
    rules_fingerprint text NOT NULL,
    computed_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT study_retention_pkey PRIMARY KEY (study_fk),
    CONSTRAINT study_retention_study_fk_fkey FOREIGN KEY (study_fk) REFERENCES studies(id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX api_tokens_live_name ON public.api_tokens USING btree (name) WHERE (revoked_at IS NULL);

CREATE INDEX audit_action ON public.audit USING btree (action, at);

CREATE INDEX audit_actor ON public.audit USING btree (actor, at);

CREATE INDEX audit_at ON public.audit USING btree (at);

CREATE INDEX audit_patient ON public.audit USING btree (patient_id, issuer);

CREATE INDEX audit_patient_ids ON public.audit USING gin (patient_ids);

CREATE INDEX audit_study ON public.audit USING btree (study_uid);

CREATE INDEX audit_study_uids ON public.audit USING gin (study_uids);

CREATE INDEX change_log_logged_at ON public.change_log USING btree (logged_at);

CREATE INDEX change_log_sop_uid ON public.change_log USING btree (sop_uid, sequence);

CREATE INDEX commitments_pending ON public.commitments USING btree (state) WHERE (state <> 'reported'::text);

CREATE INDEX commitments_requested ON public.commitments USING btree (requested_at DESC);

CREATE INDEX conflicts_object_key ON public.conflicts USING btree (object_key);

CREATE INDEX conflicts_open ON public.conflicts USING btree (received_at) WHERE (state = 'open'::text);

CREATE INDEX console_oidc_states_expires ON public.console_oidc_states USING btree (expires_at);

CREATE INDEX console_sessions_expires ON public.console_sessions USING btree (expires_at);

CREATE INDEX dr_drills_store ON public.dr_drills USING btree (store, started_at DESC);

CREATE INDEX forwards_destination_state ON public.forwards USING btree (destination, state);

CREATE INDEX forwards_queued_study ON public.forwards USING btree (destination, study_uid, id) WHERE (state = 'queued'::text);

CREATE INDEX forwards_sent_at ON public.forwards USING btree (updated_at) WHERE (state = 'sent'::text);

CREATE UNIQUE INDEX hl7_messages_control_id ON public.hl7_messages USING btree (sending_facility, control_id);

CREATE INDEX hl7_messages_received ON public.hl7_messages USING btree (received_at);

CREATE INDEX instance_versions_change ON public.instance_versions USING btree (change_fk) WHERE (change_fk IS NOT NULL);

CREATE INDEX instance_versions_object_key ON public.instance_versions USING btree (object_key);

CREATE INDEX instance_versions_sop ON public.instance_versions USING btree (sop_uid);

CREATE INDEX instances_object_key ON public.instances USING btree (object_key);

CREATE INDEX instances_rejected ON public.instances USING btree (rejection_fk) WHERE (rejection_fk IS NOT NULL);

CREATE INDEX instances_series_tier ON public.instances USING btree (series_fk) INCLUDE (tier, restored_until);

CREATE INDEX instances_single_frame_zstd ON public.instances USING btree (id) WHERE ((compression = 'zstd'::text) AND (object_key !~~ '%.szst'::text));

CREATE INDEX instances_sop_class ON public.instances USING btree (sop_class_uid);

CREATE INDEX jobs_dead ON public.jobs USING btree (updated_at DESC) WHERE (state = 'dead'::text);

CREATE UNIQUE INDEX jobs_dedup ON public.jobs USING btree (dedup_key) WHERE (state = ANY (ARRAY['queued'::text, 'running'::text]));

CREATE INDEX jobs_ready ON public.jobs USING btree (run_after, id) WHERE (state = 'queued'::text);

CREATE INDEX jobs_running_lease ON public.jobs USING btree (locked_at) WHERE (state = 'running'::text);

CREATE INDEX jobs_state ON public.jobs USING btree (state, kind);

CREATE INDEX legal_holds_patient ON public.legal_holds USING btree (patient_id, issuer) WHERE (released_at IS NULL);

CREATE INDEX legal_holds_study ON public.legal_holds USING btree (study_uid) WHERE (released_at IS NULL);

CREATE INDEX notification_studies_settled ON public.notification_studies USING btree (last_change) WHERE (stable_sequence = last_sequence);

CREATE INDEX notification_studies_unsettled ON public.notification_studies USING btree (target, last_change) WHERE (stable_sequence IS DISTINCT FROM last_sequence);

CREATE INDEX notifications_created ON public.notifications USING btree (target, created_at);

CREATE INDEX notifications_delivered_at ON public.notifications USING btree (updated_at) WHERE (state = 'delivered'::text);

CREATE INDEX notifications_pending ON public.notifications USING btree (target, study_uid, id) WHERE (state = 'pending'::text);

CREATE INDEX patient_changes_patient ON public.patient_changes USING btree (patient_id, issuer);

CREATE INDEX patient_changes_study ON public.patient_changes USING btree (study_uid) WHERE (study_uid IS NOT NULL);

CREATE INDEX patient_changes_target ON public.patient_changes USING btree (target_patient_id, target_issuer);

CREATE UNIQUE INDEX patient_links_active ON public.patient_links USING btree (patient_id_a, issuer_a, patient_id_b, issuer_b) WHERE (removed_at IS NULL);

CREATE INDEX patient_links_b ON public.patient_links USING btree (patient_id_b, issuer_b) WHERE (removed_at IS NULL);

CREATE INDEX patients_name_lower ON public.patients USING btree (lower(patient_name) text_pattern_ops);

CREATE UNIQUE INDEX pending_patient_links_open ON public.pending_patient_links USING btree (patient_id_a, issuer_a, patient_id_b, issuer_b) WHERE (state = 'pending'::text);

CREATE INDEX pending_patient_links_pair ON public.pending_patient_links USING btree (patient_id_a, issuer_a, patient_id_b, issuer_b);

CREATE INDEX read_repairs_detected ON public.read_repairs USING btree (detected_at);

CREATE UNIQUE INDEX read_repairs_open ON public.read_repairs USING btree (store, object_key) WHERE (resolved_at IS NULL);

CREATE INDEX rejected_instances_sop_uid ON public.rejected_instances USING btree (sop_uid);

CREATE INDEX replicas_object_key ON public.replicas USING btree (object_key);

CREATE INDEX replicas_verified ON public.replicas USING btree (store, verified_at);

CREATE INDEX retention_review_items_pending ON public.retention_review_items USING btree (retain_until) WHERE (state = 'pending'::text);

CREATE INDEX series_modality ON public.series USING btree (modality);

CREATE INDEX series_study ON public.series USING btree (study_fk);

CREATE INDEX studies_accession ON public.studies USING btree (accession_number);

CREATE INDEX studies_date ON public.studies USING btree (study_date);

CREATE INDEX studies_date_desc ON public.studies USING btree (study_date DESC NULLS LAST, id);

CREATE INDEX studies_patient ON public.studies USING btree (patient_fk);

CREATE INDEX studies_referring_lower ON public.studies USING btree (lower(referring_physician) text_pattern_ops);

CREATE INDEX study_retention_rules ON public.study_retention USING btree (rules_fingerprint);

CREATE INDEX study_retention_until ON public.study_retention USING btree (retain_until);

CREATE OR REPLACE FUNCTION public.vna_active_rejection(p_sop_uid text, p_series_fk bigint)
 RETURNS bigint
 LANGUAGE sql
 STABLE
AS $function$
    SELECT min(r.note_fk)
    FROM rejected_instances r
    JOIN rejection_notes n ON n.id = r.note_fk AND n.undone_at IS NULL
    JOIN series se ON se.id = p_series_fk
    JOIN studies st ON st.id = se.study_fk AND st.study_uid = r.study_uid
    WHERE r.sop_uid = p_sop_uid
$function$;

CREATE OR REPLACE FUNCTION public.vna_file_hierarchy(p_patient_id text, p_issuer text, p_patient_name text, p_birth_date text, p_sex text, p_study_uid text, p_study_date date, p_study_time text, p_accession_number text, p_study_id text, p_study_description text, p_referring_physician text, p_source text, p_series_uid text, p_modality text, p_series_number integer, p_series_description text, p_body_part text, OUT patient_fk bigint, OUT study_id bigint, OUT study_patient_fk bigint, OUT series_id bigint, OUT series_study_fk bigint)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
BEGIN
    -- Each loop reads the row, else inserts it; an insert that finds a row another sender
    -- committed since the read (ON CONFLICT DO NOTHING returns nothing) reads again.
    LOOP
        SELECT p.id INTO patient_fk FROM patients p
        WHERE p.patient_id = p_patient_id AND p.issuer = p_issuer
        FOR SHARE;
        EXIT WHEN FOUND;
        INSERT INTO patients (patient_id, issuer, patient_name, birth_date, sex)
        VALUES (p_patient_id, p_issuer, p_patient_name, p_birth_date, p_sex)
        ON CONFLICT ON CONSTRAINT patients_identity DO NOTHING
        RETURNING id INTO patient_fk;
        EXIT WHEN patient_fk IS NOT NULL;
    END LOOP;

    LOOP
        SELECT st.id, st.patient_fk INTO study_id, study_patient_fk FROM studies st
        WHERE st.study_uid = p_study_uid
        FOR SHARE;
        EXIT WHEN FOUND;
        INSERT INTO studies (study_uid, patient_fk, study_date, study_time, accession_number,
                             study_id, study_description, referring_physician, source)
        VALUES (p_study_uid, patient_fk, p_study_date, p_study_time, p_accession_number,
                p_study_id, p_study_description, p_referring_physician, p_source)
        ON CONFLICT (study_uid) DO NOTHING
        RETURNING id, studies.patient_fk INTO study_id, study_patient_fk;
        EXIT WHEN study_id IS NOT NULL;
    END LOOP;

    LOOP
        SELECT se.id, se.study_fk INTO series_id, series_study_fk FROM series se
        WHERE se.series_uid = p_series_uid
        FOR SHARE;
        EXIT WHEN FOUND;
        INSERT INTO series (series_uid, study_fk, modality, series_number, series_description,
                            body_part)
        VALUES (p_series_uid, study_id, p_modality, p_series_number, p_series_description,
                p_body_part)
        ON CONFLICT (series_uid) DO NOTHING
        RETURNING id, series.study_fk INTO series_id, series_study_fk;
        EXIT WHEN series_id IS NOT NULL;
    END LOOP;
END
$function$;

CREATE OR REPLACE FUNCTION public.vna_file_new_instance(p_patient_id text, p_issuer text, p_patient_name text, p_birth_date text, p_sex text, p_study_uid text, p_study_date date, p_study_time text, p_accession_number text, p_study_id text, p_study_description text, p_referring_physician text, p_source text, p_series_uid text, p_modality text, p_series_number integer, p_series_description text, p_body_part text, p_sop_uid text, p_sop_class_uid text, p_instance_number integer, p_transfer_syntax text, p_rows integer, p_columns integer, p_number_of_frames integer, p_has_pixel_data boolean, p_sha256 text, p_received_sha256 text, p_size bigint, p_object_key text, p_metadata jsonb, p_data_set_sha256 text, p_actor text, p_origin text, p_audit_detail jsonb)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    h record;
    new_id bigint;
BEGIN
    SELECT * INTO h FROM vna_file_hierarchy(
        p_patient_id, p_issuer, p_patient_name, p_birth_date, p_sex,
        p_study_uid, p_study_date, p_study_time, p_accession_number, p_study_id,
        p_study_description, p_referring_physician, p_source,
        p_series_uid, p_modality, p_series_number, p_series_description, p_body_part);
    IF h.study_patient_fk <> h.patient_fk OR h.series_study_fk <> h.study_id THEN
        RAISE EXCEPTION 'instance % does not fit the archived hierarchy', p_sop_uid
            USING ERRCODE = 'VN409';
    END IF;
    new_id := vna_insert_instance(
        p_sop_uid, h.series_id, p_sop_class_uid, p_instance_number, p_transfer_syntax,
        p_rows, p_columns, p_number_of_frames, p_has_pixel_data, p_sha256, p_received_sha256,
        p_size, p_object_key, p_size, p_source, p_metadata, p_data_set_sha256);
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'instance % was filed meanwhile', p_sop_uid USING ERRCODE = 'VN409';
    END IF;
    INSERT INTO jobs (kind, payload)
    VALUES ('instance-stored', jsonb_build_object(
        'instance_id', new_id, 'object_key', p_object_key, 'sop_uid', p_sop_uid));
    INSERT INTO audit (actor, origin, action, outcome, patient_id, issuer, study_uid,
                       series_uid, sop_uid, detail)
    VALUES (p_actor, p_origin, 'store', 'success', p_patient_id, p_issuer, p_study_uid,
            p_series_uid, p_sop_uid, p_audit_detail);
    RETURN new_id;
END
$function$;

CREATE OR REPLACE FUNCTION public.vna_file_new_instances(p_batch jsonb)
 RETURNS bigint[]
 LANGUAGE plpgsql
AS $function$
DECLARE
    r record;
    ids bigint[] := array_fill(NULL::bigint, ARRAY[jsonb_array_length(p_batch)]);
BEGIN
    FOR r IN
        SELECT e.n, x.*
        FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS e(item, n),
             LATERAL jsonb_to_record(e.item) AS x(
                 patient_id text, issuer text, patient_name text, birth_date text, sex text,
                 study_uid text, study_date date, study_time text, accession_number text,
                 study_id text, study_description text, referring_physician text,
                 source text, series_uid text, modality text, series_number integer,
                 series_description text, body_part text, sop_uid text, sop_class_uid text,
                 instance_number integer, transfer_syntax text, rows integer,
                 columns integer, number_of_frames integer, has_pixel_data boolean,
                 sha256 text, received_sha256 text, size bigint, object_key text,
                 metadata jsonb, data_set_sha256 text, actor text, origin text,
                 audit_detail jsonb)
        ORDER BY e.n
    LOOP
        BEGIN
            ids[r.n] := vna_file_new_instance(
                r.patient_id, r.issuer, r.patient_name, r.birth_date, r.sex,
                r.study_uid, r.study_date, r.study_time, r.accession_number, r.study_id,
                r.study_description, r.referring_physician, r.source,
                r.series_uid, r.modality, r.series_number, r.series_description, r.body_part,
                r.sop_uid, r.sop_class_uid, r.instance_number, r.transfer_syntax,
                r.rows, r.columns, r.number_of_frames, r.has_pixel_data,
                r.sha256, r.received_sha256, r.size, r.object_key, r.metadata,
                r.data_set_sha256, r.actor, r.origin, r.audit_detail);
        EXCEPTION WHEN SQLSTATE 'VN409' THEN
            ids[r.n] := NULL;
        END;
    END LOOP;
    RETURN ids;
END
$function$;

CREATE OR REPLACE FUNCTION public.vna_insert_instance(p_sop_uid text, p_series_fk bigint, p_sop_class_uid text, p_instance_number integer, p_transfer_syntax text, p_rows integer, p_columns integer, p_number_of_frames integer, p_has_pixel_data boolean, p_sha256 text, p_received_sha256 text, p_size bigint, p_object_key text, p_stored_size bigint, p_source text, p_metadata jsonb, p_data_set_sha256 text)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO instances (sop_uid, series_fk, sop_class_uid, instance_number, transfer_syntax,
                           rows, columns, number_of_frames, has_pixel_data, sha256,
                           received_sha256, size, object_key, stored_size, source, metadata,
                           data_set_sha256)
    VALUES (p_sop_uid, p_series_fk, p_sop_class_uid, p_instance_number, p_transfer_syntax,
            p_rows, p_columns, p_number_of_frames, p_has_pixel_data, p_sha256,
            p_received_sha256, p_size, p_object_key, p_stored_size, p_source, p_metadata,
            p_data_set_sha256)
    ON CONFLICT (sop_uid) DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NOT NULL THEN
        INSERT INTO change_pending (action, study_uid, series_uid, sop_uid, source)
        SELECT 'create', st.study_uid, se.series_uid, p_sop_uid, st.source
        FROM series se JOIN studies st ON st.id = se.study_fk
        WHERE se.id = p_series_fk;
    END IF;
    RETURN new_id;
END
$function$;

CREATE OR REPLACE FUNCTION public.vna_instance_rejection()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(160, hashtext(NEW.sop_uid));
    NEW.rejection_fk := vna_active_rejection(NEW.sop_uid, NEW.series_fk);
    RETURN NEW;
END
$function$;

CREATE OR REPLACE FUNCTION public.vna_object_layouts_of_deleted()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    DELETE FROM object_layouts l USING gone WHERE l.sha256 = gone.sha256;
    RETURN NULL;
END
$function$;

CREATE OR REPLACE FUNCTION public.vna_sequence_changes(p_max integer)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    last bigint;
    last_at timestamptz;
    at timestamptz;
    n bigint;
BEGIN
    -- Waits for a running sequencer to commit.  The statements below take a new snapshot
    -- (READ COMMITTED), which sees what that sequencer and every writer before it committed.
    SELECT last_sequence, last_logged_at INTO last, last_at FROM change_sequencer FOR UPDATE;
    at := greatest(clock_timestamp(), last_at);
    WITH moved AS (
        DELETE FROM change_pending
        WHERE id IN (SELECT id FROM change_pending ORDER BY id LIMIT p_max)
        RETURNING *
    )
    INSERT INTO change_log (sequence, action, study_uid, series_uid, sop_uid, source,
                            changed_at, logged_at)
    SELECT last + row_number() OVER (ORDER BY m.id), m.action, m.study_uid, m.series_uid,
           m.sop_uid, m.source, m.changed_at, at
    FROM moved m;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        UPDATE change_sequencer SET last_sequence = last + n, last_logged_at = at;
    END IF;
    RETURN n;
END
$function$;

CREATE TRIGGER instances_layouts_deleted AFTER DELETE ON public.instances REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION vna_object_layouts_of_deleted();

CREATE TRIGGER instances_rejection BEFORE INSERT ON public.instances FOR EACH ROW EXECUTE FUNCTION vna_instance_rejection();
