-- Subjects and row keys compare byte by byte (COLLATE "C"): the order Go
-- sorts them in, a memcmp per index comparison instead of the locale's
-- strcoll on every write, and LIKE 'prefix%' can use the primary key, so the
-- text_pattern_ops index goes.
DROP VIEW repstream.reputation;
ALTER TABLE repstream.subjects ALTER COLUMN subject TYPE text COLLATE "C";
ALTER TABLE repstream.deltas ALTER COLUMN subject TYPE text COLLATE "C";
ALTER TABLE repstream.rows ALTER COLUMN key TYPE text COLLATE "C";
DROP INDEX repstream.subjects_prefix;

-- Pruning walks the delta log in LSN order (recorded_at grows with it), so
-- recorded_at needs no index of its own: one index fewer per logged delta.
DROP INDEX repstream.deltas_recorded_at;

CREATE VIEW repstream.reputation AS
SELECT subject,
       count,
       sum_micro::numeric / 1000000 AS sum,
       mean,
       bayes,
       version,
       lsn,
       updated_at
FROM repstream.subjects;

COMMENT ON SCHEMA repstream IS 'repstream schema version 2';
