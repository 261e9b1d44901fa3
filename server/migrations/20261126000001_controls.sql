-- Cancelled items (a cancelled batch's unfinished ones), counted like the other statuses. A
-- paused batch says so in its `status`; items say `cancelled` in theirs.
ALTER TABLE batches ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0;
