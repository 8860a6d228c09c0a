-- The event log: postgres-es inserts by explicit column list, so the global order, the event id,
-- the recording instant and the writing transaction are columns with defaults.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    position       bigserial                    NOT NULL UNIQUE,
    event_id       uuid                         NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    -- Readers of the global log only read below the oldest transaction still running, so an
    -- event committed late with a lower position is never skipped.
    transaction_id xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX events_by_transaction ON events (transaction_id, position);

CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Per-user keys that seal personal data; destroyed at purge (crypto-shredding).
CREATE TABLE personal_keys
(
    key_id       uuid        PRIMARY KEY,
    key_material bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz
);

-- Durable timers of the process managers (purge after 30 days, trial expiry, grace end).
CREATE TABLE timers
(
    timer_key text        PRIMARY KEY,
    due_at    timestamptz NOT NULL,
    action    json        NOT NULL
);

CREATE INDEX timers_by_due ON timers (due_at);
