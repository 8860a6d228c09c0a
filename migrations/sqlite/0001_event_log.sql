-- The event log: sqlite-es inserts by explicit column list, so the global order, the event id and
-- the recording instant are filled in by defaults and a trigger. SQLite has one writer at a time,
-- so the rowid order is the commit order.
CREATE TABLE events
(
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 0) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    position       integer                       NOT NULL DEFAULT 0,
    event_id       text                          NOT NULL DEFAULT (
        lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||
        substr(lower(hex(randomblob(2))), 2) || '-' ||
        substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' ||
        lower(hex(randomblob(6)))),
    recorded_at    text                          NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE TRIGGER events_position AFTER INSERT ON events
BEGIN
    UPDATE events SET position = NEW.rowid WHERE rowid = NEW.rowid;
END;

CREATE UNIQUE INDEX events_by_position ON events (position) WHERE position > 0;
CREATE UNIQUE INDEX events_by_event_id ON events (event_id);

CREATE TABLE snapshots
(
    aggregate_type   text                                  NOT NULL,
    aggregate_id     text                                  NOT NULL,
    last_sequence    integer CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;

CREATE TABLE personal_keys
(
    key_id       text PRIMARY KEY,
    key_material blob,
    created_at   text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    destroyed_at text
) STRICT;

CREATE TABLE timers
(
    timer_key text PRIMARY KEY,
    due_at    text NOT NULL,
    action    text NOT NULL
) STRICT;

CREATE INDEX timers_by_due ON timers (due_at);
