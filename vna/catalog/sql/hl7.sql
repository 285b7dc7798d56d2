-- HL7 ADT messages (migration 0140), through vna/catalog/hl7_messages.py.

-- name: hl7_claim_message
-- Take a message for processing.  A new control ID inserts a row; one seen before is taken
-- again only when its earlier receipt did not succeed (AE, AR) or was interrupted long ago
-- (a server stopped mid-message); otherwise no row comes back and the caller answers as
-- before.  Receipts are counted either way (hl7_count_receipt).
INSERT INTO hl7_messages (sending_facility, control_id, peer, message_type, message)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (sending_facility, control_id) DO UPDATE
    SET state = 'processing', receipts = hl7_messages.receipts + 1,
        last_received_at = now(), peer = EXCLUDED.peer,
        message_type = EXCLUDED.message_type, message = EXCLUDED.message
    WHERE hl7_messages.ack_code IS DISTINCT FROM 'AA'
      AND (hl7_messages.state = 'done' OR hl7_messages.last_received_at < now() - $6::interval)
RETURNING id;

-- name: hl7_count_receipt
-- A retransmission that is not acted upon: counted, and its earlier answer returned.
UPDATE hl7_messages
SET receipts = receipts + 1, last_received_at = now()
WHERE sending_facility = $1 AND control_id = $2
RETURNING id, state, ack_code, outcome, detail, change_ids;

-- name: hl7_insert_unkeyed
-- A message without sending facility or control ID: logged, never matched.
INSERT INTO hl7_messages (peer, message_type, message)
VALUES ($1, $2, $3)
RETURNING id;

-- name: hl7_finish_message
UPDATE hl7_messages
SET state = 'done', ack_code = $2, outcome = $3, detail = $4, change_ids = $5,
    source = $6, patient = $7
WHERE id = $1;

-- name: hl7_list_messages
-- Newest first; $2 limits to one outcome (NULL: all).
SELECT id, received_at, last_received_at, receipts, peer, sending_facility, control_id,
       message_type, source, patient, state, ack_code, outcome, detail, change_ids
FROM hl7_messages
WHERE $2::text IS NULL OR outcome = $2
ORDER BY id DESC
LIMIT $1;

-- name: hl7_show_message
SELECT id, received_at, last_received_at, receipts, peer, sending_facility, control_id,
       message_type, source, patient, state, ack_code, outcome, detail, change_ids, message
FROM hl7_messages
WHERE id = $1;
