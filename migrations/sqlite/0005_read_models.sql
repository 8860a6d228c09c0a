-- Read models kept by checkpointed consumers of the global log (see the PostgreSQL migration).
CREATE TABLE read_models
(
    projection text NOT NULL,
    kind       text NOT NULL,
    row_key    text NOT NULL,
    scope      text NOT NULL,
    sort_key   text NOT NULL DEFAULT '',
    doc        text NOT NULL,
    PRIMARY KEY (projection, row_key)
) STRICT;
CREATE INDEX read_models_by_scope ON read_models (projection, kind, scope);
CREATE INDEX read_models_by_sort_key ON read_models (projection, kind, sort_key);

CREATE TABLE read_models_replay
(
    projection text NOT NULL,
    kind       text NOT NULL,
    row_key    text NOT NULL,
    scope      text NOT NULL,
    sort_key   text NOT NULL DEFAULT '',
    doc        text NOT NULL,
    PRIMARY KEY (projection, row_key)
) STRICT;
CREATE INDEX read_models_replay_by_scope ON read_models_replay (projection, kind, scope);
CREATE INDEX read_models_replay_by_sort_key ON read_models_replay (projection, kind, sort_key);

-- SQLite has one writer, so the log's position order is its commit order; transaction_id
-- stays 0.
CREATE TABLE consumer_checkpoints
(
    consumer       text PRIMARY KEY,
    transaction_id integer NOT NULL DEFAULT 0,
    position       integer NOT NULL DEFAULT 0,
    updated_at     text    NOT NULL DEFAULT ''
) STRICT;

CREATE TABLE timer_firings
(
    timer_key text NOT NULL,
    due_at    text NOT NULL,
    outcome   text NOT NULL,
    fired_at  text NOT NULL,
    PRIMARY KEY (timer_key, due_at)
) STRICT;

CREATE TABLE sandbox_clock
(
    id            integer PRIMARY KEY CHECK (id = 1),
    offset_micros integer NOT NULL
) STRICT;

DROP TABLE timers;
