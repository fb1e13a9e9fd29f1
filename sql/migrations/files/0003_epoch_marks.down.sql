ALTER TABLE repstream.meta DROP COLUMN reload_reason, DROP COLUMN shape_hash;

COMMENT ON SCHEMA repstream IS 'repstream schema version 2';
