-- A batch belongs to the user who created it. Batches made before accounts existed have no
-- owner and are shown to nobody.
ALTER TABLE batches ADD COLUMN owner_id TEXT REFERENCES users (id) ON DELETE CASCADE;

-- A user's list: newest first.
CREATE INDEX batches_owner_created ON batches (owner_id, created_at DESC, id DESC);

-- Every list is one user's now.
DROP INDEX batches_created;
