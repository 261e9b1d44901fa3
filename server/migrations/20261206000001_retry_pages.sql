-- A retry of every failed item queues them again a page at a time, by position: the position
-- up to which it has, while one is under way (NULL otherwise).
ALTER TABLE batches ADD COLUMN retry_after BIGINT;
