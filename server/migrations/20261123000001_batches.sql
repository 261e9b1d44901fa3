-- One schema for SQLite and PostgreSQL: ids and statuses as text, times as Unix milliseconds.
CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    percent     BIGINT NOT NULL,
    queued      BIGINT NOT NULL,
    processing  BIGINT NOT NULL,
    completed   BIGINT NOT NULL,
    failed      BIGINT NOT NULL,
    total       BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- The list: newest first.
CREATE INDEX batches_created ON batches (created_at DESC, id DESC);

CREATE TABLE items (
    id          TEXT PRIMARY KEY,
    batch_id    TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT,
    attempts    BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL
);

-- A batch's items in order (snapshots), and the unique position of each.
CREATE UNIQUE INDEX items_batch_position ON items (batch_id, position);
