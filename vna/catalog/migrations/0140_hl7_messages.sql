-- HL7 v2 ADT messages received over MLLP (vna.gateway.hl7): one row per message, keyed by the
-- sending facility (MSH-4) and the message control ID (MSH-10), which HL7 v2.5.1 2.15.9.10
-- makes unique per sender.  The row is how a retransmitted message (a sender that missed our
-- ACK sends the same control ID again, 2.9.2) is acknowledged without acting twice, and what
-- `vna hl7 log` lists.  A message too broken to name its sender has no key (NULL facility and
-- control ID) and is kept for the log only.
CREATE TABLE hl7_messages (
    id                 bigserial PRIMARY KEY,
    sending_facility   text,
    control_id         text,
    received_at        timestamptz NOT NULL DEFAULT now(),
    last_received_at   timestamptz NOT NULL DEFAULT now(),
    -- How many times this control ID arrived (retransmissions included).
    receipts           integer NOT NULL DEFAULT 1,
    peer               text NOT NULL DEFAULT '',
    message_type       text NOT NULL DEFAULT '',
    source             text,
    patient            text,
    -- processing: being applied now; done: answered.
    state              text NOT NULL DEFAULT 'processing'
                       CHECK (state IN ('processing', 'done')),
    -- AA, AE or AR (HL7 table 0008), and what happened: applied, unchanged, unknown-patient,
    -- error, refused, malformed.
    ack_code           text,
    outcome            text,
    detail             text NOT NULL DEFAULT '',
    -- The patient_changes rows the message made (undo with `vna patients undo`).
    change_ids         bigint[] NOT NULL DEFAULT '{}',
    message            text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX hl7_messages_control_id ON hl7_messages (sending_facility, control_id);
CREATE INDEX hl7_messages_received ON hl7_messages (received_at);
