-- reload_reason is set, durably, before a reload touches the slot and
-- cleared by the load's own commit: a load that crashed or failed is always
-- redone, never streamed past from the old checkpoint on a new slot.
-- shape_hash fingerprints what the state was derived through besides the
-- configuration (table OIDs, key columns, the publication's row filters and
-- publish_via_partition_root); NULL until written by this version.
ALTER TABLE repstream.meta ADD COLUMN reload_reason text, ADD COLUMN shape_hash text;

COMMENT ON SCHEMA repstream IS 'repstream schema version 3';
