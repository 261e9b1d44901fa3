-- Workers take batches with pending items in turn, user by user: the batches with work, by
-- owner (a batch made before accounts has no owner, is shown to nobody and is not worked on).
CREATE INDEX batches_with_work ON batches (owner_id, id) WHERE queued > 0;
