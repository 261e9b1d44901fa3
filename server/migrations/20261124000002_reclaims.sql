-- Times an item was claimed again after its worker was lost: past MAX_RECLAIMS it fails for
-- good (an item that kills its worker must not loop forever).
ALTER TABLE items ADD COLUMN reclaims BIGINT NOT NULL DEFAULT 0;
