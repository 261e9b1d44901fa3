-- Workers claim pending items by position across batches: item 0 of every batch first, so a
-- small batch is never starved behind a large one.
CREATE INDEX items_claim ON items (status, position);
