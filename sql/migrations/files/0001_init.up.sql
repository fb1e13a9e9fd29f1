-- repstream's own schema: derived state, delta log, row shadow and checkpoint.
-- Schema repstream itself is created before (migrations.ensureSchema), only
-- when missing: CREATE SCHEMA IF NOT EXISTS would need CREATE on the database
-- even where the schema exists.

-- One row: the history this store belongs to and how far it has applied.
CREATE TABLE repstream.meta (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch          text        NOT NULL,
    system_id      text        NOT NULL,
    timeline       integer     NOT NULL,
    slot           text        NOT NULL,
    sources_hash   text        NOT NULL,
    -- end LSN of the last source transaction applied: replication resumes
    -- here, and it is the stream's head (every delta at or below it is stored).
    checkpoint_lsn pg_lsn      NOT NULL,
    -- deltas at or below this LSN are not in the log (snapshot load or pruning).
    log_from_lsn   pg_lsn      NOT NULL,
    loaded_at      timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE repstream.subjects (
    subject    text             PRIMARY KEY,
    count      bigint           NOT NULL,
    sum_micro  bigint           NOT NULL,
    mean       double precision NOT NULL,
    bayes      double precision NOT NULL,
    hist       bigint[],
    version    bigint           NOT NULL,
    lsn        pg_lsn           NOT NULL,
    updated_at timestamptz      NOT NULL
);
CREATE INDEX subjects_bayes ON repstream.subjects (bayes DESC);
CREATE INDEX subjects_prefix ON repstream.subjects (subject text_pattern_ops);

CREATE TABLE repstream.deltas (
    subject      text             NOT NULL,
    lsn          pg_lsn           NOT NULL,
    version      bigint           NOT NULL,
    count        bigint           NOT NULL,
    sum_micro    bigint           NOT NULL,
    mean         double precision NOT NULL,
    bayes        double precision NOT NULL,
    hist         bigint[],
    d_count      bigint           NOT NULL,
    d_sum_micro  bigint           NOT NULL,
    d_mean       double precision NOT NULL,
    d_bayes      double precision NOT NULL,
    committed_at timestamptz      NOT NULL,
    recorded_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, lsn)
);
CREATE INDEX deltas_lsn ON repstream.deltas (lsn);
CREATE INDEX deltas_recorded_at ON repstream.deltas (recorded_at);

-- What each source row currently contributes, so UPDATE and DELETE under the
-- DEFAULT replica identity (which sends only the key) yield exact deltas.
CREATE TABLE repstream.rows (
    source smallint NOT NULL,
    key    text     NOT NULL,
    vals   text[]   NOT NULL,
    PRIMARY KEY (source, key)
) WITH (fillfactor = 70); -- room on each page for HOT updates of vals

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

-- Every migration ends by recording its version here, in the same
-- transaction: after a crash mid-migration the marker says whether it
-- committed (see migrations.Up).
COMMENT ON SCHEMA repstream IS 'repstream schema version 1';
