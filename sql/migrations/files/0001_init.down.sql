-- Keeps the schema itself: it holds golang-migrate's version table.
DROP VIEW IF EXISTS repstream.reputation;
DROP TABLE IF EXISTS repstream.rows, repstream.deltas, repstream.subjects, repstream.meta;
COMMENT ON SCHEMA repstream IS 'repstream schema version 0';
