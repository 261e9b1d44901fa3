-- A batch's items of one status in order: the item list's status tabs page through it.
CREATE INDEX items_batch_status ON items (batch_id, status, position);
