-- Read models kept by checkpointed consumers of the global log. Every projection stores typed
-- documents (JSON text written by the `projections` crate) under its own name, so one writer
-- serves every read model and a replay can rebuild them beside the live rows and compare.
CREATE TABLE read_models
(
    projection text NOT NULL,
    kind       text NOT NULL,
    row_key    text NOT NULL,
    scope      text NOT NULL,
    sort_key   text NOT NULL DEFAULT '',
    doc        text NOT NULL,
    PRIMARY KEY (projection, row_key)
);
CREATE INDEX read_models_by_scope ON read_models (projection, kind, scope);
CREATE INDEX read_models_by_sort_key ON read_models (projection, kind, sort_key);

-- Where `seatledger replay` rebuilds every projection before comparing it with the live rows.
CREATE TABLE read_models_replay (LIKE read_models INCLUDING ALL);

-- Each consumer's place in the log, moved in the same transaction as its effects. On
-- PostgreSQL the log is read in (transaction id, position) order below the oldest running
-- transaction, so the checkpoint holds both.
CREATE TABLE consumer_checkpoints
(
    consumer       text PRIMARY KEY,
    transaction_id bigint NOT NULL DEFAULT 0,
    position       bigint NOT NULL DEFAULT 0,
    updated_at     text   NOT NULL DEFAULT ''
);

-- Timers the scheduler has fired (with the outcome), so a timer fires once per deadline even
-- when its action was refused; the timers themselves are a read model.
CREATE TABLE timer_firings
(
    timer_key text NOT NULL,
    due_at    text NOT NULL,
    outcome   text NOT NULL,
    fired_at  text NOT NULL,
    PRIMARY KEY (timer_key, due_at)
);

-- The sandbox clock's offset, shared by every instance and kept across restarts.
CREATE TABLE sandbox_clock
(
    id            integer PRIMARY KEY CHECK (id = 1),
    offset_micros bigint NOT NULL
);

-- Timers used to be written by the command path; the timers projection owns them now.
DROP TABLE timers;
