DROP VIEW repstream.reputation;
ALTER TABLE repstream.subjects ALTER COLUMN subject TYPE text COLLATE "default";
ALTER TABLE repstream.deltas ALTER COLUMN subject TYPE text COLLATE "default";
ALTER TABLE repstream.rows ALTER COLUMN key TYPE text COLLATE "default";
CREATE INDEX subjects_prefix ON repstream.subjects (subject text_pattern_ops);
CREATE INDEX deltas_recorded_at ON repstream.deltas (recorded_at);

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

COMMENT ON SCHEMA repstream IS 'repstream schema version 1';
